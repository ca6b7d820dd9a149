"""Retrain the toy world from scratch and compare its measured quality with the shipped weights' report.

    python benchmarks/toyworld_retrain.py                 # all parts, shipped seed and step counts (~30-60 min)
    python benchmarks/toyworld_retrain.py --parts checker # one part only (the others are not compared)

Trains into a new folder under ``--out`` (never over the shipped weights), measures it exactly as the shipped
report was measured, and prints one line per quality figure: shipped, fresh, difference. It also says whether
each part's tensors came out bit-identical (expected on the same torch build, since training is seeded and
single-threaded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.safe_files import new_numbered_folder  # noqa: E402
from recare_core.toyworld.default import CHECKER_FILE, CLIP_DIR, CLIP_FILE, DEFAULT_WEIGHTS_DIR, T2I_FILE, \
    load_report  # noqa: E402
from recare_core.toyworld.train import PARTS, WorldTraining, train_world  # noqa: E402

PART_FILES = {"checker": CHECKER_FILE, "clip": f"{CLIP_DIR}/{CLIP_FILE}", "t2i": T2I_FILE}
# (report path, label) of every quality figure compared, by part.
QUALITY = {
    "checker": [(("checker", "held_out_accuracy", "all"), "checker held-out accuracy (all attributes)")],
    "clip": [(("clip", "zero_shot_accuracy", name), f"CLIP zero-shot accuracy, {name}")
             for name in ("shape", "colour", "texture", "background")],
    "t2i": [(("t2i", "quality", "attribute_accuracy", "all"), "text-to-image attribute accuracy (all)"),
            (("t2i", "quality", "target_prompts_striped"), "target prompts drawn striped"),
            (("t2i", "quality", "care_prompts_circle"), "CARE prompts drawn as circles"),
            (("t2i", "quality", "utility_prompts_accuracy", "all"), "utility prompts attribute accuracy")],
}


def lookup(report: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    return float(report)


def same_tensors(first: Path, second: Path) -> bool:
    """Whether two safetensors files hold bit-identical tensors (their metadata, e.g. training times, may differ)."""
    if not (first.is_file() and second.is_file()):
        return False
    a, b = load_file(first), load_file(second)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shipped", type=Path, default=DEFAULT_WEIGHTS_DIR, help="weights folder to compare with")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to retrain")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/toyworld"))
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    shipped = load_report(args.shipped)
    folder = new_numbered_folder(args.out, "retrain")
    torch.set_num_threads(1)
    start = time.perf_counter()
    fresh = train_world(folder, parts, WorldTraining.from_report(shipped))
    print(f"\nretrained {', '.join(parts)} in {time.perf_counter() - start:.0f} s into {folder}")
    print(f"{'figure':48s} {'shipped':>8s} {'fresh':>8s} {'diff':>8s}")
    for part in parts:
        for path, label in QUALITY[part]:
            old, new = lookup(shipped, path), lookup(fresh, path)
            if old is None or new is None:
                print(f"{label:48s} {'n/a' if old is None else f'{old:.4f}':>8s} "
                      f"{'n/a' if new is None else f'{new:.4f}':>8s}")
            else:
                print(f"{label:48s} {old:8.4f} {new:8.4f} {new - old:+8.4f}")
        same = same_tensors(args.shipped / PART_FILES[part], folder / PART_FILES[part])
        print(f"{part} weights bit-identical to the shipped ones: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
