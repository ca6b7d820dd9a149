"""The main job, headless: the whole ReCARE pipeline on the pack's built-in tiny model, on a CPU in minutes.

``python -m recare_core.toyworld.main_job --out out/main_job`` generates images of the target with the original model,
builds the CARE-set from them, runs ReCARE (a reduced schedule), and writes the CARE-set JSON, the erasure file,
the CARE score report and a before/after image grid to ``--out``, printing where they are.

The built-in model is the trained toy text-to-image world shipped in ``recare_core/toyworld/weights`` (or
another folder written by ``python -m recare_core.toyworld.train``, given with ``--weights``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from .. import __version__
from ..scoring.care_score import care_score
from ..careset.build import CareSetSettings, build_care_set
from ..careset.io import save_care_set
from ..careset.clip_model import CareClip
from ..erasure.increments import Erasure
from ..erasure.io import save_numbered_erasure
from ..safe_files import write_numbered_file
from .generate import generate_images
from .image_grid import labelled_rows_grid
from .torch_backend import TorchBackend, apply_increments
from .checkers import AttributeChecker
from .default import DEFAULT_WEIGHTS_DIR
from .default import load_world as load_toy_world
from .experiment import toy_recare_config
from .world import CARE_ATTRIBUTE, CARE_VALUE, TARGET_ATTRIBUTE, TARGET_VALUE
from ..methods.recare import ReCAREConfig, run_recare


MAIN_JOB_SCHEDULE = dict(n_rounds=1, erase_steps=40, ti_steps=100, robust_steps=60, ddim_steps=10)
"""The reduced ReCARE schedule of the main job (every other setting from ``toy_recare_config``)."""


@dataclasses.dataclass
class World:
    """The model, the CLIP, the attribute checker and the prompts the main job runs on."""

    backend: TorchBackend
    clip: CareClip
    target: str
    target_prompt: str
    care_concept: str
    care_prompt: str
    checker: AttributeChecker


def load_world(weights: Path = DEFAULT_WEIGHTS_DIR) -> World:
    """The trained toy world in ``weights`` (default: the one shipped with the pack)."""
    models = load_toy_world(weights)
    return World(TorchBackend(models.model), models.clip, target=TARGET_VALUE,
                 target_prompt=f"a {TARGET_VALUE} {CARE_VALUE}", care_concept=CARE_VALUE,
                 care_prompt=f"a {CARE_VALUE}", checker=models.checker)


def _checker_lines(world: World, rows: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Ground truth from the toy world's attribute checker: share of striped and of circle images per row."""
    lines = ["--- attribute checker (ground truth) ---"]
    for label, images in rows:
        verdicts = world.checker.classify(images)
        share = {name: sum(v == value for v in verdicts[attribute]) / len(verdicts[attribute])
                 for name, attribute, value in (("target", TARGET_ATTRIBUTE, TARGET_VALUE),
                                                ("CARE", CARE_ATTRIBUTE, CARE_VALUE))}
        lines.append(f"{label}: {share['target']:.0%} show '{TARGET_VALUE}', {share['CARE']:.0%} show "
                     f"'{CARE_VALUE}'")
    return lines + [""]


def run_main_job(out: Path, seed: int = 0, n_images: int = 12, sample_steps: int = 20,
                 config: ReCAREConfig | None = None, weights: Path = DEFAULT_WEIGHTS_DIR) -> dict[str, Path]:
    """Run the pipeline and write its outputs into ``out`` (created): ``careset_00001.json``,
    ``erasure.safetensors``, ``care_score_report.txt`` and ``before_after.png``; when a name is taken the next
    free ``_00001``-style number is used, so existing files are never overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    world = load_world(weights)
    backend = world.backend
    size = backend.model.config.image_size
    config = config or toy_recare_config(seed, image_size=size, num_adv_concepts=1, **MAIN_JOB_SCHEDULE)
    timings: dict[str, float] = {}
    seeds = list(range(seed, seed + n_images))

    def sample(prompt: str) -> torch.Tensor:
        return generate_images(backend, [prompt] * n_images, seeds, steps=sample_steps, guidance_scale=5.0)

    start = time.perf_counter()
    target_before, care_before = sample(world.target_prompt), sample(world.care_prompt)
    timings["generate original"] = time.perf_counter() - start

    start = time.perf_counter()
    care_set = build_care_set(target_before, world.clip, world.target, "object",
                              CareSetSettings(top_k_per_image=20, top_n_tokens=40, n_clusters=5, seed=seed))
    timings["build CARE-set"] = time.perf_counter() - start

    start = time.perf_counter()
    result = run_recare(backend, target_before, care_set.anchor_prompts, care_set.retain_prompts, world.target,
                        config)
    timings["ReCARE unlearning"] = time.perf_counter() - start

    erasure = Erasure(concept=world.target, increments=result.increments, metadata={
        "erased_concept": world.target, "method": "ReCARE", "care_set": care_set.to_json_dict(),
        "settings": dataclasses.asdict(config), "base_model": "recare toy world (trained)",
        "pack_version": __version__}, adversarial_embeddings=result.learned_tokens)
    apply_increments(backend.model, result.increments)
    target_after, care_after = sample(world.target_prompt), sample(world.care_prompt)

    scores = {
        name: care_score(world.clip, images, world.care_concept, labels=[world.care_concept, world.target, "square",
                                                                           "triangle"], erase_concept=world.target)
        for name, images in (("original", care_before), ("erased", care_after))
    }
    report = [f"ReCARE main job (pack {__version__}) on the trained toy world",
              f"erased concept: '{world.target}'   CARE concept: '{world.care_concept}'",
              f"CARE-set words: {', '.join(care_set.words)}", ""]
    for name, score in scores.items():
        report += [f"--- {name} model, prompt '{world.care_prompt}' ---", score.report(), ""]
    report += _checker_lines(world, [(f"original, '{world.target_prompt}'", target_before),
                                     (f"erased, '{world.target_prompt}'", target_after),
                                     (f"original, '{world.care_prompt}'", care_before),
                                     (f"erased, '{world.care_prompt}'", care_after)])
    report += [f"{stage}: {seconds:.1f}s" for stage, seconds in timings.items()]
    grid = labelled_rows_grid([(f"original: {world.target_prompt}", target_before),
                               (f"erased: {world.target_prompt}", target_after),
                               (f"original: {world.care_prompt}", care_before),
                               (f"erased: {world.care_prompt}", care_after)])
    text = "\n".join(report) + "\n"
    return {
        "care_set": save_care_set(care_set, out, prefix="careset"),
        "erasure": save_numbered_erasure(erasure, out, "erasure", plain_first=True),
        "report": write_numbered_file(out, "care_score_report", ".txt",
                                      lambda path: path.write_text(text, encoding="utf-8"), "report name",
                                      plain_first=True),
        "grid": write_numbered_file(out, "before_after", ".png", lambda path: grid.save(path, format="PNG"),
                                    "grid name", plain_first=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/main_job"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=12, help="images per prompt")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help="a trained toy-world folder (default: the one shipped in recare_core/toyworld/weights)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started = time.perf_counter()
    paths = run_main_job(args.out, args.seed, args.images, weights=args.weights)
    print(f"main job finished in {time.perf_counter() - started:.0f}s; outputs:")
    for name, path in paths.items():
        print(f"  {name:9s} {path}")


if __name__ == "__main__":
    main()
