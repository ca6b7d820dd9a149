"""Textual inversion: attack strength against wall time, the reference's 3000 steps vs shorter options.

In the toy world, the original model is erased as stage 1's first round erases it (ESD at ReCARE's stage-1
settings, the paper's 200 steps); each TI option then learns a token on that erased model from the same 64
target images, and its **attack rate** is the share of images (adversarial prompts ``a <token>``, ``a photo of
a <token>``, ...; 8 seeds each) in which the checker sees the target texture again. Every option runs for
every ``--seeds`` value (TI seed); the table gives the mean attack rate with its spread (min-max) and the
median seconds (wall and process CPU) TI took. Options: the reference (batch 1, lr 5e-3, 3000 steps) and its
shorter prefixes, larger learning rates, batches, and early stopping on a held-out loss.

    python benchmarks/ti_speed.py --seeds 0 1 2 --out benchmarks/results/ti_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.methods.textual_inversion import encode_images_once, prepare_images, textual_inversion  # noqa: E402
from recare_core.toyworld.default import load_world  # noqa: E402
from recare_core.toyworld.evaluate import adversarial_cases, generate_cases  # noqa: E402
from recare_core.methods.registry import MethodInputs, get_method  # noqa: E402
from recare_core.toyworld.experiment import (  # noqa: E402
    TokenBackend, erased_backend, esd_config, experiment_settings, generate_target_images)
from recare_core.toyworld.torch_backend import TorchBackend  # noqa: E402
from recare_core.toyworld.world import TARGET_ATTRIBUTE, TARGET_VALUE  # noqa: E402
from recare_core.training.run import TrainingRun  # noqa: E402

PLACEHOLDER = "toyattack"
# name -> TI settings (ReCAREConfig fields). "reference" is the paper's; the "reference_N" rows are its prefixes.
OPTIONS: dict[str, dict] = {
    "reference": dict(ti_steps=3000),
    "reference_1000": dict(ti_steps=1000),
    "reference_300": dict(ti_steps=300),
    "lr2e-2_300": dict(ti_steps=300, ti_lr=2e-2),
    "lr2e-2_100": dict(ti_steps=100, ti_lr=2e-2),
    "batch4_lr2e-2_150": dict(ti_steps=150, ti_lr=2e-2, ti_batch_size=4),
    "batch8_lr2e-2_100": dict(ti_steps=100, ti_lr=2e-2, ti_batch_size=8),
    "lr2e-2_stop": dict(ti_steps=600, ti_lr=2e-2, ti_patience=3, ti_check_every=25),
    "batch4_lr2e-2_stop": dict(ti_steps=300, ti_lr=2e-2, ti_batch_size=4, ti_patience=3, ti_check_every=25),
}


def attack_rate(backend: TorchBackend, checker, token: torch.Tensor, settings, seed: int) -> float:
    attacked = generate_cases(TokenBackend(backend, {PLACEHOLDER: token}), checker, adversarial_cases(PLACEHOLDER),
                              settings.images_per_prompt, seed, settings.sample_steps, settings.guidance_scale)
    return attacked.share_showing(TARGET_ATTRIBUTE, TARGET_VALUE)


def run_option(backend: TorchBackend, images: torch.Tensor, settings, options: dict, seed: int) -> dict:
    config = dataclasses.replace(settings.recare, **options)
    run = TrainingRun(backend, total_steps=config.ti_steps, mixed_precision=False)
    with torch.inference_mode(False), torch.enable_grad():
        latents, flipped = encode_images_once(run, prepare_images(images, config.image_size), config.ti_flip)
        initial = backend.token_embedding(config.initializer_token).mean(dim=0, keepdim=True)
        wall, cpu = time.perf_counter(), time.process_time()
        token = textual_inversion(run, latents, PLACEHOLDER, initial, config, name="ti", seed=seed,
                                  flipped_latents=flipped)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"token": token, "seconds": wall, "cpu_seconds": cpu, "steps": run.records["ti"].steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--options", nargs="+", choices=sorted(OPTIONS), default=list(OPTIONS))
    parser.add_argument("--erase-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON file for the raw figures (written after every option)")
    parser.add_argument("--table", type=Path, nargs="+", help="only print the table of saved --out files")
    args = parser.parse_args()
    if args.table:
        merged: dict[str, list[dict]] = {}
        for path in args.table:
            for name, rows in json.loads(path.read_text())["results"].items():
                merged.setdefault(name, []).extend(rows)
        print_table(merged)
        return
    torch.set_num_threads(args.threads)
    world = load_world()
    settings = experiment_settings("paper", 0, n_rounds=1, erase_steps=args.erase_steps)
    original = TorchBackend(world.model)
    images = generate_target_images(original, settings.target_images, 100_000, settings)
    start = time.perf_counter()
    # stage 1's first erase is plain ESD at ReCARE's stage-1 settings (no tokens learned yet)
    erase = get_method("esd").run(original, MethodInputs(TARGET_VALUE), esd_config(settings.recare, settings))
    erased = erased_backend(world.model, erase.increments)
    print(f"erased the toy model with {args.erase_steps} stage-1 steps in {time.perf_counter() - start:.0f} s; "
          f"attack rate of the initialiser token: "
          f"{attack_rate(erased, world.checker, original.token_embedding('shape').mean(0, keepdim=True), settings, 7):.3f}",
          flush=True)
    results: dict[str, list[dict]] = {}
    for name in args.options:
        for seed in args.seeds:
            row = run_option(erased, images, settings, OPTIONS[name], seed)
            row["attack_rate"] = attack_rate(erased, world.checker, row.pop("token"), settings, 200_000 + seed)
            results.setdefault(name, []).append({"seed": seed, **row})
            print(f"{name} seed {seed}: attack {row['attack_rate']:.3f}, {row['steps']} steps, "
                  f"{row['seconds']:.1f} s", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"options": {n: OPTIONS[n] for n in results}, "results": results},
                                           indent=1))
    print_table(results)


def print_table(results: dict[str, list[dict]]) -> None:
    """One row per option: attack rate mean (min-max over seeds), steps, median wall / CPU seconds, CPU time
    relative to the reference's."""
    header = f"{'option':20} {'attack rate':>19} {'steps':>6} {'wall s':>8} {'cpu s':>8} {'time vs ref':>11}"
    print(header)
    print("-" * len(header))
    reference = statistics.median(r["cpu_seconds"] for r in results.get("reference", [{"cpu_seconds": float("nan")}]))
    for name, rows in results.items():
        rates = [r["attack_rate"] for r in rows]
        cpu = statistics.median(r["cpu_seconds"] for r in rows)
        print(f"{name:20} {statistics.mean(rates):6.3f} ({min(rates):.2f}-{max(rates):.2f}) "
              f"{statistics.median(r['steps'] for r in rows):6.0f} "
              f"{statistics.median(r['seconds'] for r in rows):8.1f} {cpu:8.1f} {cpu / reference:10.2f}x")
    print("attack rate: mean (min-max) over seeds; times: median over seeds; 'time vs ref' uses CPU seconds")


if __name__ == "__main__":
    main()
