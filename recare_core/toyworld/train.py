"""Train the whole toy world (attribute checker, CLIP, text-to-image model), measure it, and write the weights
folder that :mod:`recare_core.toyworld.default` reads.

    nice -n 19 python -m recare_core.toyworld.train --out recare_core/toyworld/weights

Seeded and single-threaded (``torch.set_num_threads(1)``): the same arguments give the same weights on the same
torch build. Each part seeds itself, so parts may also be trained by separate runs (``--parts``). The defaults
are the shipped model's; they take about an hour on one CPU core, most of it the text-to-image model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..careset.clip_model import CareClip
from ..progress import ProgressCallback
from .torch_backend import TorchBackend
from .checkers import AttributeChecker, train_checker
from .default import CHECKER_FILE, CLIP_DIR, CLIP_FILE, REPORT_FILE, T2I_FILE, load_checker, load_clip, \
    load_text_to_image
from .evaluate import care_cases, generate_cases, quality_cases, target_cases, utility_cases
from .render import render_batch
from .train_clip import ClipTrainConfig, save_clip, train_clip
from .train_t2i import TextToImageTrainConfig, train_text_to_image
from .world import ATTRIBUTES, CARE_ATTRIBUTE, CARE_VALUE, TARGET_ATTRIBUTE, TARGET_VALUE, sample_scene

PARTS: tuple[str, ...] = ("checker", "clip", "t2i")
ZERO_SHOT_TEMPLATES: dict[str, str] = {
    "shape": "a photo of a {}", "colour": "a {} shape", "texture": "a {} shape",
    "background": "a shape on a {} background",
}


def clip_zero_shot_accuracy(clip: CareClip, count: int = 1000, seed: int = 4321, image_size: int = 16
                            ) -> dict[str, float]:
    """Zero-shot accuracy of ``clip`` per attribute on ``count`` held-out co-occurrence-world renders."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, image_size, cooccurrence=True) for _ in range(count)]
    features = clip.embed_images(render_batch(scenes, image_size))
    accuracy = {}
    for name, values in ATTRIBUTES.items():
        labels = clip.embed_texts([ZERO_SHOT_TEMPLATES[name].format(v) for v in values])
        predicted = (features @ labels.T).argmax(dim=1).tolist()
        accuracy[name] = round(float(np.mean([values[p] == s.attributes()[name]
                                              for p, s in zip(predicted, scenes)])), 4)
    return accuracy


def text_to_image_quality(backend: TorchBackend, checker: AttributeChecker, images_per_prompt: int = 4,
                          seed: int = 0) -> dict:
    """Checker-measured quality of generated images: attribute accuracy on full descriptions of random scenes,
    the target and CARE rates of the unerased model, and attribute accuracy on the utility prompts."""
    quality = generate_cases(backend, checker, quality_cases(), images_per_prompt, seed)
    target = generate_cases(backend, checker, target_cases(), images_per_prompt, seed)
    care = generate_cases(backend, checker, care_cases(), images_per_prompt, seed)
    utility = generate_cases(backend, checker, utility_cases(), images_per_prompt, seed)
    return {
        "images_per_prompt": images_per_prompt, "sampler": "DDIM 25 steps, CFG 5",
        "attribute_accuracy": {k: round(v, 4) for k, v in quality.attribute_accuracy().items()},
        "target_prompts_striped": round(target.share_showing(TARGET_ATTRIBUTE, TARGET_VALUE), 4),
        "care_prompts_circle": round(care.share_showing(CARE_ATTRIBUTE, CARE_VALUE), 4),
        "utility_prompts_accuracy": {k: round(v, 4) for k, v in utility.attribute_accuracy().items()},
    }


def _printer(every: int) -> ProgressCallback:
    start = time.perf_counter()

    def report(step: int, total: int, message: str) -> None:
        if step % every == 0 or step == total:
            print(f"[{time.perf_counter() - start:7.0f}s] {message}", flush=True)

    return report


def measure_world(out: Path, report: dict) -> dict:
    """Add the quality of every part found in ``out`` to ``report``."""
    if (out / CLIP_DIR / CLIP_FILE).is_file():
        print("measuring the saved CLIP", flush=True)
        clip = load_clip(out)
        report.setdefault("clip", {})["zero_shot_accuracy"] = clip_zero_shot_accuracy(clip)
        report["clip"]["identity"] = clip.identity
        print("CLIP zero-shot accuracy:", report["clip"]["zero_shot_accuracy"], flush=True)
    if (out / T2I_FILE).is_file() and (out / CHECKER_FILE).is_file():
        print("measuring the saved text-to-image model", flush=True)
        quality = text_to_image_quality(TorchBackend(load_text_to_image(out)), load_checker(out))
        report.setdefault("t2i", {})["quality"] = quality
        print("text-to-image quality:", json.dumps(quality), flush=True)
    return report


def train_world(out: Path, parts: tuple[str, ...], seed: int, checker_steps: int, clip_steps: int, t2i_steps: int,
                log_every: int = 50) -> dict:
    """Train ``parts`` into ``out``, then measure every part found there; returns and writes the report
    (``report.json``, merged with what an earlier run wrote)."""
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / REPORT_FILE
    new: dict = {"seed": seed, "torch_version": torch.__version__}
    if "checker" in parts:
        checker, checker_report = train_checker(steps=checker_steps, seed=seed, progress=_printer(log_every * 4))
        checker.save(out / CHECKER_FILE, checker_report)
        new["checker"] = checker_report
        print("checker held-out accuracy:", checker_report["held_out_accuracy"], flush=True)
    if "clip" in parts:
        clip_config = ClipTrainConfig(steps=clip_steps, seed=seed)
        clip, clip_report = train_clip(clip_config, progress=_printer(log_every * 2))
        save_clip(clip, out / CLIP_DIR, clip_config.model)
        new["clip"] = clip_report
    if "t2i" in parts:
        t2i_config = TextToImageTrainConfig(steps=t2i_steps, seed=seed)
        model, t2i_report = train_text_to_image(t2i_config, progress=_printer(log_every))
        model.half().save(out / T2I_FILE)
        new["t2i"] = t2i_report
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    report.update(new)
    report = measure_world(out, report)
    report_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="weights folder to write")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to train (the others are only measured): {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checker-steps", type=int, default=1500)
    parser.add_argument("--clip-steps", type=int, default=ClipTrainConfig.steps)
    parser.add_argument("--t2i-steps", type=int, default=TextToImageTrainConfig.steps)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train_world(args.out, parts, args.seed, args.checker_steps, args.clip_steps, args.t2i_steps)
    print(f"done in {time.perf_counter() - start:.0f} s; weights and report.json in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
