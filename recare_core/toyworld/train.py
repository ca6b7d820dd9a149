"""Train the whole toy world (attribute checker, CLIP, text-to-image model), measure it, and write the weights
folder that :mod:`recare_core.toyworld.default` reads.

    nice -n 19 python -m recare_core.toyworld.train --out recare_core/toyworld/weights

Seeded and single-threaded (``torch.set_num_threads(1)``): the same arguments give the same weights on the same
torch build. Each part seeds itself, so parts may also be trained by separate runs (``--parts``). The defaults
are the shipped model's; they take about an hour on one CPU core, most of it the text-to-image model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..careset.clip_model import CareClip
from ..cli_args import non_negative_int, positive_int
from ..progress import console_progress
from .torch_backend import TorchBackend
from .checkers import AttributeChecker, train_checker
from .default import CHECKER_FILE, CLIP_DIR, CLIP_FILE, REPORT_FILE, T2I_FILE, load_checker, load_clip, \
    load_text_to_image
from .evaluate import care_cases, generate_cases, quality_cases, target_cases, utility_cases
from .render import render_batch
from .train_clip import ClipTrainConfig, save_clip, train_clip
from .train_t2i import TextToImageTrainConfig, default_model_config, train_text_to_image
from .world import ATTRIBUTES, CARE_ATTRIBUTE, CARE_VALUE, TARGET_ATTRIBUTE, TARGET_VALUE, WORLDS, sample_scene, \
    vocabulary_words

PARTS: tuple[str, ...] = ("checker", "clip", "t2i")
ZERO_SHOT_TEMPLATES: dict[str, str] = {
    "shape": "a photo of a {}", "colour": "a {} shape", "texture": "a {} shape",
    "background": "a shape on a {} background",
}


def clip_zero_shot_accuracy(clip: CareClip, count: int = 1000, seed: int = 4321, image_size: int = 16,
                            striped_elsewhere: float = 0.0) -> dict[str, float]:
    """Zero-shot accuracy of ``clip`` per attribute on ``count`` held-out co-occurrence-world renders."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, image_size, cooccurrence=True, striped_elsewhere=striped_elsewhere)
              for _ in range(count)]
    features = clip.embed_images(render_batch(scenes, image_size))
    accuracy = {}
    for name, values in ATTRIBUTES.items():
        labels = clip.embed_texts([ZERO_SHOT_TEMPLATES[name].format(v) for v in values])
        predicted = (features @ labels.T).argmax(dim=1).tolist()
        accuracy[name] = round(float(np.mean([values[p] == s.attributes()[name]
                                              for p, s in zip(predicted, scenes)])), 4)
    return accuracy


def text_to_image_quality(backend: TorchBackend, checker: AttributeChecker, images_per_prompt: int = 4,
                          seed: int = 0, striped_elsewhere: float = 0.0) -> dict:
    """Checker-measured quality of generated images: attribute accuracy on full descriptions of random scenes,
    the target and CARE rates of the unerased model, and attribute accuracy on the utility prompts."""
    cases = quality_cases(striped_elsewhere=striped_elsewhere)
    quality = generate_cases(backend, checker, cases, images_per_prompt, seed)
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


@dataclass(frozen=True)
class WorldTraining:
    """What to train: the world variant (a name of :data:`~.world.WORLDS`), step counts and the options that
    distinguish the fairer world (a checker with a ``none`` shape, more CLIP distractor words, a text-to-image
    UNet with pooled text conditioning)."""

    world: str = "cooccurrence"
    seed: int = 0
    checker_steps: int = 1500
    clip_steps: int = ClipTrainConfig.steps
    t2i_steps: int = TextToImageTrainConfig.steps
    no_shape_checker: bool = False
    distractor_words: int = ClipTrainConfig.distractor_words
    pooled_context: bool = False
    min_snr_gamma: float = TextToImageTrainConfig.min_snr_gamma
    channel_mult: tuple[int, ...] = default_model_config().channel_mult

    @classmethod
    def from_report(cls, report: dict) -> "WorldTraining":
        """The options a trained world's ``report.json`` was trained with (to retrain it)."""
        return cls(world=report.get("world", {}).get("name", "cooccurrence"), seed=report["seed"],
                   checker_steps=report["checker"]["steps"], clip_steps=report["clip"]["config"]["steps"],
                   t2i_steps=report["t2i"]["config"]["steps"],
                   no_shape_checker=bool(report["checker"].get("no_shape", False)),
                   distractor_words=report["clip"]["config"]["distractor_words"],
                   pooled_context=bool(report["t2i"]["config"]["model"].get("pooled_context", False)),
                   min_snr_gamma=float(report["t2i"]["config"].get("min_snr_gamma", 0.0)),
                   channel_mult=tuple(report["t2i"]["config"]["model"]["channel_mult"]))

    def text_to_image_config(self) -> TextToImageTrainConfig:
        """The text-to-image training these options ask for, validated (``ValueError`` says what is wrong)."""
        model = dataclasses.replace(default_model_config(), pooled_context=self.pooled_context,
                                    channel_mult=self.channel_mult)
        config = TextToImageTrainConfig(model=model, steps=self.t2i_steps, seed=self.seed,
                                        striped_elsewhere=self.striped_elsewhere, min_snr_gamma=self.min_snr_gamma)
        config.validate()
        return config

    @property
    def striped_elsewhere(self) -> float:
        if self.world not in WORLDS:
            raise ValueError(f"Unknown toy world '{self.world}'; choose among {', '.join(WORLDS)}.")
        return WORLDS[self.world]


def care_set_words(out: Path, striped_elsewhere: float, count: int = 32, seed: int = 100_000) -> dict:
    """The CARE-set built with the saved CLIP from ``count`` target images of the saved text-to-image model, and
    the share of its words that are words of the world (what the CARE-set should be made of)."""
    from ..careset.build import build_care_set
    from .experiment import generate_target_images, experiment_settings

    backend = TorchBackend(load_text_to_image(out))
    images = generate_target_images(backend, count, seed, experiment_settings("cpu", 0))
    built = build_care_set(images, load_clip(out), TARGET_VALUE, "object")
    world = set(vocabulary_words())
    return {"target_images": count, "words": built.words,
            "world_word_share": round(sum(w in world for w in built.words) / max(1, len(built.words)), 4)}


def measure_world(out: Path, report: dict) -> dict:
    """Add the quality of every part found in ``out`` to ``report``."""
    striped_elsewhere = float(report.get("world", {}).get("striped_elsewhere", 0.0))
    if (out / CLIP_DIR / CLIP_FILE).is_file():
        print("measuring the saved CLIP", flush=True)
        clip = load_clip(out)
        report.setdefault("clip", {})["zero_shot_accuracy"] = clip_zero_shot_accuracy(
            clip, striped_elsewhere=striped_elsewhere)
        report["clip"]["identity"] = clip.identity
        print("CLIP zero-shot accuracy:", report["clip"]["zero_shot_accuracy"], flush=True)
    if (out / T2I_FILE).is_file() and (out / CHECKER_FILE).is_file():
        print("measuring the saved text-to-image model", flush=True)
        quality = text_to_image_quality(TorchBackend(load_text_to_image(out)), load_checker(out),
                                        striped_elsewhere=striped_elsewhere)
        report.setdefault("t2i", {})["quality"] = quality
        print("text-to-image quality:", json.dumps(quality), flush=True)
    if (out / T2I_FILE).is_file() and (out / CLIP_DIR / CLIP_FILE).is_file():
        report["care_set_check"] = care_set_words(out, striped_elsewhere)
        print("CARE-set of generated target images:", json.dumps(report["care_set_check"]), flush=True)
    return report


def train_world(out: Path, parts: tuple[str, ...], options: WorldTraining = WorldTraining(),
                log_every: int = 50) -> dict:
    """Train ``parts`` into ``out``, then measure every part found there; returns and writes the report
    (``report.json``, merged with what an earlier run wrote)."""
    t2i_config = options.text_to_image_config()  # a bad option fails before anything is trained or written
    seed, elsewhere = options.seed, options.striped_elsewhere
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / REPORT_FILE
    new: dict = {"seed": seed, "torch_version": torch.__version__,
                 "world": {"name": options.world, "striped_elsewhere": elsewhere}}
    if "checker" in parts:
        checker, checker_report = train_checker(steps=options.checker_steps, seed=seed,
                                                progress=console_progress(log_every * 4),
                                                no_shape=options.no_shape_checker)
        checker.save(out / CHECKER_FILE, checker_report)
        new["checker"] = checker_report
        print("checker held-out accuracy:", checker_report["held_out_accuracy"], flush=True)
    if "clip" in parts:
        clip_config = ClipTrainConfig(steps=options.clip_steps, seed=seed, distractor_words=options.distractor_words,
                                      striped_elsewhere=elsewhere)
        clip, clip_report = train_clip(clip_config, progress=console_progress(log_every * 2))
        save_clip(clip, out / CLIP_DIR, clip_config.model)
        new["clip"] = clip_report
    if "t2i" in parts:
        model, t2i_report = train_text_to_image(t2i_config, progress=console_progress(log_every))
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
    parser.add_argument("--world", choices=sorted(WORLDS), default="cooccurrence")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--checker-steps", type=int, default=WorldTraining.checker_steps)
    parser.add_argument("--clip-steps", type=int, default=WorldTraining.clip_steps)
    parser.add_argument("--t2i-steps", type=int, default=WorldTraining.t2i_steps)
    parser.add_argument("--no-shape-checker", action="store_true", help="the checker can answer 'none' for shape")
    parser.add_argument("--distractor-words", type=int, default=WorldTraining.distractor_words,
                        help="vocabulary entries drawn per CLIP step as extra negatives")
    parser.add_argument("--pooled-context", action="store_true",
                        help="the UNet also adds its mean text context to the timestep embedding")
    parser.add_argument("--min-snr-gamma", type=float, default=WorldTraining.min_snr_gamma,
                        help="> 0: weight the text-to-image loss by min(SNR, gamma) / SNR (0: plain eps loss)")
    parser.add_argument("--channel-mult", type=int, nargs="+", default=list(WorldTraining.channel_mult),
                        help="the text-to-image UNet's channel multiplier per level (one more level halves the "
                             "smallest feature map: 1 2 2 reaches 4x4)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    options = WorldTraining(world=args.world, seed=args.seed, checker_steps=args.checker_steps,
                            clip_steps=args.clip_steps, t2i_steps=args.t2i_steps,
                            no_shape_checker=args.no_shape_checker, distractor_words=args.distractor_words,
                            pooled_context=args.pooled_context, min_snr_gamma=args.min_snr_gamma,
                            channel_mult=tuple(args.channel_mult))
    try:
        options.text_to_image_config()
    except ValueError as error:
        parser.error(str(error))
    train_world(args.out, parts, options)
    print(f"done in {time.perf_counter() - start:.0f} s; weights and report.json in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
