"""What a CARE-set built from toy-world images is made of: words of the world, and is the co-occurring ``circle``
found (counted among the candidates) and kept (past the cluster rules)?

Per seed, ``--images`` target images (``striped`` prompts, made by the world's text-to-image model as the frontier
makes them) give CARE-sets under several construction settings: the reference's (the whole CLIP vocabulary, top
50 per image, top 100), and with the candidates restricted to the words the toy CLIP was trained on (the world's
vocabulary, ``candidate_words``) at sizes scaled to that vocabulary. Printed per setting: the share of CARE words
that are world words, and on how many seeds ``circle`` was a candidate, its count, and whether it was kept (else
the rule that dropped it).

    python benchmarks/careset_vocabulary.py --world cooccurrence --seeds 0 1 2 3 4
    python benchmarks/careset_vocabulary.py --world partial --out benchmarks/results/careset_vocabulary/partial.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.careset.build import CareSetSettings, build_care_set  # noqa: E402
from recare_core.toyworld.default import WORLD_WEIGHTS_DIRS, load_world, world_weights_dir  # noqa: E402
from recare_core.toyworld.experiment import experiment_settings, generate_target_images  # noqa: E402
from recare_core.toyworld.torch_backend import TorchBackend  # noqa: E402
from recare_core.toyworld.world import CARE_VALUE, TARGET_VALUE, vocabulary_words  # noqa: E402

WORLD = tuple(vocabulary_words())
SETTINGS: dict[str, CareSetSettings] = {
    "reference (whole vocabulary, 50/100/7)": CareSetSettings(),
    "world words, 8/12/4": CareSetSettings(top_k_per_image=8, top_n_tokens=12, n_clusters=4, candidate_words=WORLD),
    "world words, 5/10/3": CareSetSettings(top_k_per_image=5, top_n_tokens=10, n_clusters=3, candidate_words=WORLD),
    "world words, 5/10/3, no cluster drop": CareSetSettings(top_k_per_image=5, top_n_tokens=10, n_clusters=3,
                                                            k_each_side=0, candidate_words=WORLD),
}
"""Construction settings compared (top_k_per_image / top_n_tokens / n_clusters). The world has 23 caption words,
of which word hygiene leaves the ~16 nouns and adjectives."""


def measure(world_name: str, seeds: list[int], images: int) -> dict[str, list[dict]]:
    """``{setting: [per-seed row]}``; a row: the CARE words, their world-word share and ``circle``'s fate."""
    models = load_world(world_weights_dir(world_name))
    original = TorchBackend(models.model)
    rows: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for seed in seeds:
        experiment = experiment_settings("cpu", seed)
        target_images = generate_target_images(original, images, 100_000 + 1000 * seed, experiment)
        for name, settings in SETTINGS.items():
            built = build_care_set(target_images, models.clip, TARGET_VALUE, "object", settings)
            circle = next((c for c in built.candidates if c.word == CARE_VALUE), None)
            rows[name].append({
                "seed": seed, "words": built.words,
                "world_word_share": sum(w in WORLD for w in built.words) / len(built.words),
                "circle_count": circle.count if circle else 0,
                "circle": "kept" if circle and circle.kept else (circle.reason if circle else "not a candidate")})
            print(f"seed {seed} | {name}: {built.words[:12]}{' ...' if len(built.words) > 12 else ''} | "
                  f"circle: {rows[name][-1]['circle']}", flush=True)
    return rows


def print_table(rows: dict[str, list[dict]], images: int) -> None:
    header = f"{'setting':40} {'world-word share':>16} {'circle a candidate':>18} {'in images':>9} {'kept':>5}"
    print(header)
    print("-" * len(header))
    for name, seeds in rows.items():
        n = len(seeds)
        share = sum(r["world_word_share"] for r in seeds) / n
        candidate = sum(r["circle"] != "not a candidate" for r in seeds)
        counted = sum(r["circle_count"] for r in seeds) / n / images
        kept = sum(r["circle"] == "kept" for r in seeds)
        print(f"{name:40} {share:16.2f} {candidate:>13}/{n:<4} {counted:9.2f} {kept:>3}/{n}")
    print(f"share: mean over seeds; 'in images': share of the {images} images whose top-k list held circle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLD_WEIGHTS_DIRS), default="cooccurrence")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--images", type=int, default=64, help="target images per seed (the frontier's count)")
    parser.add_argument("--out", type=Path, help="JSON file for the rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.world, args.seeds, args.images)
    print_table(rows, args.images)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"world": args.world, "images": args.images, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
