"""Which shape the shipped toy text-to-image model draws for each shape it is asked for, as the attribute checker
sees it: a confusion table per world (rows: the prompt's shape; columns: the checker's answer, ``none`` included
where the world's checker has it). The frontier's CARE rate is the ``circle`` row's ``circle`` share; this shows
how much of it a model would reach by drawing round blobs for every shape.

    python benchmarks/toyworld_shape_confusion.py --world partial --out benchmarks/results/toyworld_shapes/partial.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.cli_args import positive_int  # noqa: E402
from recare_core.toyworld.default import WORLD_WEIGHTS_DIRS, load_world, world_weights_dir  # noqa: E402
from recare_core.toyworld.generate import generate_images  # noqa: E402
from recare_core.toyworld.torch_backend import TorchBackend  # noqa: E402
from recare_core.toyworld.world import SHAPES  # noqa: E402

PROMPTS: tuple[str, ...] = ("a red plain {} on a dark background", "a blue dotted {} on a light background",
                            "a green plain {}", "a {}")
"""Prompt styles per shape: full descriptions, a partial one and the bare shape (no stripes: the target is not
asked for)."""


def confusion(world: str, images_per_prompt: int, guidance_scale: float, steps: int) -> dict[str, dict[str, int]]:
    """``{asked shape: {checker's shape: count}}`` over every prompt style, seeds ``0..images_per_prompt-1``."""
    models = load_world(world_weights_dir(world))
    backend = TorchBackend(models.model)
    table: dict[str, dict[str, int]] = {}
    for shape in SHAPES:
        counts: collections.Counter = collections.Counter()
        for style in PROMPTS:
            images = generate_images(backend, [style.format(shape)] * images_per_prompt,
                                     list(range(images_per_prompt)), steps=steps, guidance_scale=guidance_scale)
            counts.update(models.checker.classify(images)["shape"])
        table[shape] = dict(sorted(counts.items()))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="partial", choices=sorted(WORLD_WEIGHTS_DIRS))
    parser.add_argument("--images", type=positive_int, default=16, help="images per prompt (4 prompts per shape)")
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--steps", type=positive_int, default=25, help="DDIM steps")
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = confusion(args.world, args.images, args.guidance_scale, args.steps)
    answers = sorted({answer for row in table.values() for answer in row})
    print(f"world {args.world}, DDIM {args.steps}, CFG {args.guidance_scale:g}, {args.images} images x "
          f"{len(PROMPTS)} prompts per shape")
    print(f"{'asked':10}" + "".join(f"{a:>10}" for a in answers) + f"{'right':>8}")
    for shape, row in table.items():
        total = sum(row.values())
        print(f"{shape:10}" + "".join(f"{row.get(a, 0):>10}" for a in answers) + f"{row.get(shape, 0) / total:>8.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"world": args.world, "guidance_scale": args.guidance_scale,
                                        "steps": args.steps, "images_per_prompt": args.images,
                                        "prompts": list(PROMPTS), "confusion": table}, indent=1) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
