"""Toy-world erasure benchmark: the original model and every registered erasure method on the trained toy world.

For every seed (one worker process each, single-threaded) it generates target images with the original model,
erases the target texture ``striped`` with each method of ``recare_core.toyworld.experiment.TOY_METHODS`` (found
through the method registry): plain ESD (stage-1 erase only, empty-prompt target), UCE (closed-form
cross-attention edit towards the empty prompt, preserving the built CARE-set), ReCARE (CARE-set built
automatically from those images with the toy CLIP, then both stages) and, as an ablation, ReCARE given the
world's true CARE-set (``circle``) instead of the built one, and ReCARE with AGE's adaptive anchor / DoCo's
gradient surgery in stage 2 (``recare_age``, ``recare_doco``), attacks every model with a
fresh textual inversion, and measures with the attribute checker (ground truth). Prints one table, mean ± sample
standard deviation over the seeds, and writes ``results.json``, ``table.md`` and ``grid.png`` (seed 0's images of
``a striped circle`` and ``a circle`` through each model) into a new folder under ``--out``.

    python benchmarks/toyworld_erasure.py                    # schedule "cpu", seeds 0 1 2, two workers
    python benchmarks/toyworld_erasure.py --schedule paper   # the reference step counts (hours on a CPU)

Columns: target = share of target-prompt images still striped (lower is better); attack = share striped under
the learned adversarial token (lower is better); CARE = share of ``a circle``-style prompts drawn as circles by
the checker (higher is better); CARE (CLIP) = the pack's zero-shot CAREScore with the toy CLIP over the four
shapes; utility = attribute accuracy on prompts with neither stripes nor circles; time = seconds to erase.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.safe_files import new_numbered_folder, write_new_file  # noqa: E402
from recare_core.toyworld.generate import generate_images  # noqa: E402
from recare_core.toyworld.image_grid import labelled_rows_grid  # noqa: E402
from recare_core.toyworld.default import DEFAULT_WEIGHTS_DIR, load_world  # noqa: E402
from recare_core.toyworld.experiment import METHODS, SCHEDULES, experiment_settings, run_experiment  # noqa: E402
from recare_core.toyworld.world import CARE_VALUE, TARGET_VALUE  # noqa: E402
from recare_core.worker_pool import spawn_pool  # noqa: E402

COLUMNS = (("target_rate", "target ↓"), ("adversarial_rate", "attack ↓"), ("care_rate", "CARE ↑"),
           ("care_clip_score", "CARE (CLIP) ↑"), ("utility", "utility ↑"), ("erase_seconds", "time s"))
GRID_PROMPTS = (f"a {TARGET_VALUE} {CARE_VALUE}", f"a {CARE_VALUE}")
GRID_IMAGES = 8


def run_seed(job: tuple[Path, str, int, dict, dict, tuple[str, ...], bool]) -> dict:
    """One seed in a worker: the experiment's figures, plus grid images when asked."""
    weights, schedule, seed, overrides, esd, methods, with_grid = job
    torch.set_num_threads(1)
    models = load_world(weights)
    grid: dict[str, list] = {}

    def keep_images(name: str, backend) -> None:
        if with_grid:
            for prompt in GRID_PROMPTS:
                images = generate_images(backend, [prompt] * GRID_IMAGES, list(range(GRID_IMAGES)), steps=25,
                                         guidance_scale=5.0)
                grid[f"{name}: {prompt}"] = images.numpy().tolist()

    start = time.perf_counter()
    settings = dataclasses.replace(experiment_settings(schedule, seed, **overrides), **esd)
    result = run_experiment(models, settings, seed, methods=methods,
                            log=lambda message: print(f"[{time.perf_counter() - start:6.0f}s] {message}", flush=True),
                            on_model=keep_images)
    result["grid"] = grid
    return result


def summarise(results: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {column: (mean, sample std)}}`` over the seeds."""
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for method in results[0]["methods"]:
        summary[method] = {}
        for key, _ in COLUMNS:
            values = np.array([r["methods"][method][key] for r in results], dtype=float)
            spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[method][key] = (float(values.mean()), spread)
    return summary


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]], seeds: list[int]) -> str:
    header = "| method | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for method, figures in summary.items():
        cells = [f"{m:.0f} ± {s:.0f}" if key == "erase_seconds" else f"{m:.2f} ± {s:.2f}"
                 for key, (m, s) in figures.items()]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append(f"\nmean ± sample standard deviation over seeds {', '.join(map(str, seeds))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="trained toy-world folder")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run in parallel (one CPU thread each)")
    parser.add_argument("--erase-lr", type=float, default=None, help="override the toy world's stage-1 lr")
    parser.add_argument("--robust-lr", type=float, default=None, help="override the toy world's stage-2 lr")
    parser.add_argument("--esd-lr", type=float, default=None, help="plain ESD's lr (default: ReCARE's stage-1 lr)")
    parser.add_argument("--esd-guidance", type=float, default=None,
                        help="plain ESD's negative guidance s (default: ReCARE's, 2; the ESD paper's eta=1 is s=3)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/toyworld"))
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("erase_lr", args.erase_lr), ("robust_lr", args.robust_lr)) if v is not None}
    esd = dict(esd_lr=args.esd_lr, esd_guidance=args.esd_guidance)
    jobs = [(args.weights, args.schedule, seed, overrides, esd, tuple(args.methods), index == 0)
            for index, seed in enumerate(args.seeds)]
    start = time.perf_counter()
    with spawn_pool(min(args.jobs, len(jobs))) as pool:
        results = pool.map(run_seed, jobs)
    wall = time.perf_counter() - start
    summary = summarise(results)
    table = markdown_table(summary, args.seeds)
    settings = dataclasses.asdict(dataclasses.replace(
        experiment_settings(args.schedule, args.seeds[0], **overrides), **esd))
    folder = new_numbered_folder(args.out, args.schedule)
    grid = results[0].pop("grid")
    for result in results[1:]:
        result.pop("grid")
    image = labelled_rows_grid([(label, torch.tensor(images)) for label, images in grid.items()])
    document = json.dumps({"schedule": args.schedule, "settings": settings, "seeds": args.seeds,
                           "wall_seconds": round(wall, 1), "torch": torch.__version__, "results": results,
                           "summary": summary}, indent=1)
    write_new_file(folder / "grid.png", lambda path: image.save(path, format="PNG"))
    write_new_file(folder / "results.json", lambda path: path.write_text(document, encoding="utf-8"))
    write_new_file(folder / "table.md", lambda path: path.write_text(table + "\n", encoding="utf-8"))
    print(table)
    for result in results:
        if "care_set" in result:
            print(f"seed {result['seed']} CARE-set: {', '.join(result['care_set'])}")
    print(f"wall time {wall:.0f}s; results, table and grid in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
