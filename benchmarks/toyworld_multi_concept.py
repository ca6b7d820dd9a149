"""Multi-concept erasure in the toy world: how much erasing one concept disturbs the others, separate vs stacked.

Two concepts of different attributes, the texture ``striped`` and the colour ``red``, are erased with plain ESD
one at a time (``recare_core.methods.multi_concept.erase_each``: one separable increment per concept, from the
original weights). Four models are measured with the attribute checker on the same prompts and seeds: the
original, each concept's increment alone, and both increments stacked. Columns: share of ``striped`` prompts
still drawn striped, share of ``red`` prompts still drawn red (lower = erased), and attribute accuracy on
prompts with neither (higher = intact). Reading: in the row of one erased concept, the other concept's column
against the original's says how much that erasure disturbs it; the stacked row against the single rows says
whether the increments add up without interfering.

    python benchmarks/toyworld_multi_concept.py                 # seeds 0 1, 120 ESD steps per concept
    python benchmarks/toyworld_multi_concept.py --steps 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.safe_files import new_numbered_folder, write_new_file  # noqa: E402
from recare_core.methods.esd import ESDConfig  # noqa: E402
from recare_core.methods.multi_concept import erase_each  # noqa: E402
from recare_core.methods.registry import get_method  # noqa: E402
from recare_core.toyworld.default import DEFAULT_WEIGHTS_DIR, load_world  # noqa: E402
from recare_core.toyworld.evaluate import PromptCase, generate_cases, target_cases, utility_cases  # noqa: E402
from recare_core.toyworld.torch_backend import TorchBackend, apply_increments  # noqa: E402
from recare_core.toyworld.world import SHAPES  # noqa: E402

CONCEPTS = {"striped": ("texture", "striped"), "red": ("colour", "red")}


def concept_cases() -> dict[str, list[PromptCase]]:
    """Prompts naming each erased concept, and utility prompts naming neither."""
    red = [PromptCase(f"a red {shape}", {"colour": "red"}) for shape in SHAPES]
    red += [PromptCase(f"a photo of a red {shape}", {"colour": "red"}) for shape in SHAPES]
    neither = [case for case in utility_cases() if case.expected["colour"] != "red"]
    return {"striped": target_cases(), "red": red, "utility": neither}


def measure(backend: TorchBackend, checker, seed: int, images: int, steps: int) -> dict[str, float]:
    cases = concept_cases()
    figures = {}
    for concept, (attribute, value) in CONCEPTS.items():
        figures[concept] = generate_cases(backend, checker, cases[concept], images, seed, steps).share_showing(
            attribute, value)
    figures["utility"] = generate_cases(backend, checker, cases["utility"], images, seed, steps
                                        ).attribute_accuracy()["mean"]
    return figures


def run_seed(weights: Path, seed: int, config: ESDConfig, images: int, sample_steps: int) -> dict:
    models = load_world(weights)
    start = time.perf_counter()
    separate = erase_each(get_method("esd"), TorchBackend(copy.deepcopy(models.model)), list(CONCEPTS),
                          config=dataclasses.replace(config, seed=seed))
    erase_seconds = time.perf_counter() - start
    variants = {"original": [], **{f"{c} only": [c] for c in CONCEPTS}, "stacked": list(CONCEPTS)}
    rows = {}
    for name, concepts in variants.items():
        model = copy.deepcopy(models.model)
        if concepts:
            apply_increments(model, separate.increments(concepts))
        rows[name] = measure(TorchBackend(model), models.checker, 200_000 + 1000 * seed, images, sample_steps)
        print(f"seed {seed}: {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
    return {"seed": seed, "rows": rows, "erase_seconds": round(erase_seconds, 1)}


def table(results: list[dict]) -> str:
    columns = [*CONCEPTS, "utility"]
    lines = ["| model | " + " | ".join(f"{c} {'↑' if c == 'utility' else '↓'}" for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name in results[0]["rows"]:
        cells = []
        for column in columns:
            values = np.array([r["rows"][name][column] for r in results])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.2f} ± {spread:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines.append(f"\nmean ± sample standard deviation over seeds {seeds}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="trained toy-world folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=120, help="ESD steps per concept")
    parser.add_argument("--lr", type=float, default=6e-5, help="ESD learning rate (the toy benchmark's)")
    parser.add_argument("--guidance", type=float, default=3.0, help="ESD negative guidance s (eta = s - 2)")
    parser.add_argument("--images", type=int, default=4, help="images per prompt")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/toyworld_multi"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = ESDConfig(erase_steps=args.steps, erase_lr=args.lr, negative_guidance=args.guidance, ddim_steps=25,
                       image_size=16, mixed_precision=False)
    start = time.perf_counter()
    results = [run_seed(args.weights, seed, config, args.images, 20) for seed in args.seeds]
    wall = time.perf_counter() - start
    text = table(results)
    folder = new_numbered_folder(args.out, "esd")
    document = json.dumps(
        {"settings": {**dataclasses.asdict(config), "images_per_prompt": args.images},
         "seeds": args.seeds, "wall_seconds": round(wall, 1), "torch": torch.__version__, "results": results},
        indent=1)
    write_new_file(folder / "results.json", lambda path: path.write_text(document, encoding="utf-8"))
    write_new_file(folder / "table.md", lambda path: path.write_text(text + "\n", encoding="utf-8"))
    print(text)
    print(f"wall time {wall:.0f}s; results and table in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
