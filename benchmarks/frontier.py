"""Erasure-CARE frontier benchmark in the toy world (issue 13): every method of
``recare_core.toyworld.frontier.FRONTIER_METHODS`` swept in strength, each setting attacked and measured on
>= 200 images per rate, several seeds. Resumable: one JSON per (method, setting, seed) under
``benchmarks/results/frontier/<world>/``; present ones are skipped. One worker process per seed (one thread).

    OMP_NUM_THREADS=1 python benchmarks/frontier.py run --seeds 0 1 2 3 4 --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/frontier.py run --world partial --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/frontier.py summary      # table (CARE at matched target rates), plot, from what is there
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.cli_args import non_negative_int, positive_int  # noqa: E402
from recare_core.toyworld.default import WORLD_WEIGHTS_DIRS, load_world, world_weights_dir  # noqa: E402
from recare_core.toyworld.frontier import (  # noqa: E402
    FRONTIER_METHODS,
    METHOD_NAMES,
    FrontierSettings,
    SeedContext,
    method_by_name,
    run_method_seed,
)
from recare_core.toyworld.frontier_summary import load_results, matched_table, render_frontier_plot  # noqa: E402
from recare_core.worker_pool import spawn_pool  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "frontier"


def run_seed(job: tuple[Path, Path, FrontierSettings, tuple[str, ...], int]) -> int:
    """Every missing (method, setting) of one seed, in table order; returns the number of files written."""
    weights, folder, settings, methods, seed = job
    torch.set_num_threads(1)
    models = load_world(weights)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - start:5.0f}s] {message}", flush=True)

    context = SeedContext(models, settings, seed, folder / "shared", log)
    written = 0
    for name in methods:
        log(f"seed {seed}: {name}")
        written += len(run_method_seed(models, settings, method_by_name(name), seed, folder, context, log))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "summary"])
    parser.add_argument("--world", default="cooccurrence", choices=sorted(WORLD_WEIGHTS_DIRS),
                        help="the shipped toy world to run in (also the results sub-folder)")
    parser.add_argument("--weights", type=Path, help="another trained folder of that world (default: the shipped)")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    parser.add_argument("--jobs", type=positive_int, default=2, help="seeds run in parallel (one CPU thread each)")
    parser.add_argument("--images", type=positive_int, default=FrontierSettings.images, help="least images per rate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    folder = args.out / args.world
    if args.command == "run":
        settings = FrontierSettings(images=args.images)
        weights = args.weights or world_weights_dir(args.world)
        jobs = [(weights, folder, settings, tuple(args.methods), seed) for seed in args.seeds]
        with spawn_pool(min(args.jobs, len(jobs))) as pool:
            written = sum(pool.imap_unordered(run_seed, jobs))
        print(f"wrote {written} result files under {folder}")
    results = load_results(folder)
    order = [m.name for m in FRONTIER_METHODS if m.name in {r["method"] for r in results}]
    table = matched_table(results, order)
    (folder / "table.md").write_text(table + "\n", encoding="utf-8")
    render_frontier_plot(results, order).save(folder / "frontier.png")
    print(table)
    print(f"table and plot in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
