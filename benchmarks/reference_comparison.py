"""Per-step time of the reference implementation's stage-1 and stage-2 loops against the pack's, side by side.

The reference (``github:damilab/CARE``) is *not* part of this repository: clone it anywhere outside it and name
the checkout with ``--reference`` (or ``RECARE_REFERENCE_CARE``); it needs ``diffusers`` (not a dependency of
the pack: run this script with an environment that has it, e.g. a venv layered on the shared one). Its
``train_erasing`` and ``robust_erase_for_care`` run unmodified on a randomly initialised diffusers UNet of the
tiny checkpoint's shape (320 channels, one level; full-size CLIP-L text tower), with three things pinned from
outside: the partial-sampling depth ``k`` (its ``torch.randint`` draw), the sampling resolution (its
``get_initial_latents`` hard-codes 512 px) and a clock on each optimiser step. The pack runs the same loops
through its ComfyUI backend on the tiny SD1.5 checkpoint (``benchmarks/unlearn_steps.py``). Workers alternate
(reference, pack, reference, pack, ...) in fresh processes, ``--repeats`` times, so load from other programs
on the machine hits both alike; per-step figures are medians over the timed steps (the first is warm-up).
``--sampling-reuse N`` runs the pack with that measured option (whole cycles of N steps, figures are means).

    RECARE_REFERENCE_CARE=/path/to/CARE COMFYUI_PATH=/path/to/ComfyUI python benchmarks/reference_comparison.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("erase", "robust")
ADVERSARIAL_TOKENS = ["token_advone00", "token_advtwo00"]


class _PinnedTorch:
    """``torch`` as the reference module sees it: its depth draw ``torch.randint(1, nsteps - 1, (1,))`` returns
    ``k`` and its ``torch.optim.AdamW`` stamps the clock after every step; everything else is torch itself."""

    def __init__(self, k: int, stamps: list[tuple[float, float]]):
        self._k = k

        class ClockedAdamW(torch.optim.AdamW):
            def step(self, *args, **kwargs):
                result = super().step(*args, **kwargs)
                stamps.append((time.perf_counter(), time.process_time()))
                return result

        self.optim = SimpleNamespace(**{**vars(torch.optim), "AdamW": ClockedAdamW})

    def randint(self, low, high=None, size=None, **kwargs):
        if low == 1 and size == (1,) and high is not None and high > self._k:
            return torch.tensor([self._k])
        return torch.randint(low, high, size, **kwargs)

    def __getattr__(self, name):
        return getattr(torch, name)


def _reference_diffuser(reference: Path, image_size: int, comfy_root: Path):
    """The reference's ``StableDiffuser`` built locally: random UNet / CLIP-L of the tiny checkpoint's shape,
    SD1.4's DDIM scheduler config, CLIP's tokenizer files as shipped with ComfyUI (nothing is downloaded)."""
    sys.path.insert(0, str(reference))
    import types

    import transformers
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # The reference imports (never uses) CLIPFeatureExtractor, gone in transformers 5: lend it a stand-in.
    shim = types.ModuleType("transformers")
    shim.__getattr__ = lambda name: getattr(transformers, name)
    shim.CLIPFeatureExtractor = transformers.CLIPImageProcessor
    sys.modules["transformers"] = shim
    try:
        from utils.utils import StableDiffuser
    finally:
        sys.modules["transformers"] = transformers

    class LocalDiffuser(StableDiffuser):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.tokenizer = CLIPTokenizer.from_pretrained(str(comfy_root / "comfy" / "sd1_tokenizer"),
                                                           model_max_length=77)
            self.text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
            self.unet = UNet2DConditionModel(
                sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(320,), down_block_types=("CrossAttnDownBlock2D",),
                up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=768, attention_head_dim=8)
            self.scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           clip_sample=False, set_alpha_to_one=False, steps_offset=1)
            self.eval()

        def get_initial_latents(self, n_imgs, img_size, n_prompts, generator=None):
            return super().get_initial_latents(n_imgs, image_size, n_prompts, generator)

    diffuser = LocalDiffuser()
    diffuser.tokenizer.add_tokens(ADVERSARIAL_TOKENS)
    diffuser.text_encoder.resize_token_embeddings(len(diffuser.tokenizer))
    return diffuser


def reference_worker(args: argparse.Namespace, stage: str) -> dict:
    """``args.steps`` steps of the reference's own loop for ``stage``; returns per-step seconds."""
    from unlearn_steps import ANCHORS, RETAINS

    comfy_root = Path(os.environ.get("COMFYUI_PATH", ""))
    diffuser = _reference_diffuser(args.reference, args.image_size, comfy_root)
    import utils.recare as reference_loops

    stamps: list[tuple[float, float]] = []
    reference_loops.torch = _PinnedTorch(args.k, stamps)
    trained = sum(p.numel() for name, m in diffuser.unet.named_modules() if isinstance(m, (torch.nn.Linear,
              torch.nn.Conv2d)) and "attn2" not in name for p in m.parameters())
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        start = (time.perf_counter(), time.process_time())
        if stage == "erase":
            reference_loops.train_erasing("nudity", "nudity", "noxattn", args.steps, 2.0, 5e-6,
                                          os.path.join(scratch, "unet.pt"), diffuser, "cpu")
        else:
            care = os.path.join(scratch, "care.json")
            with open(care, "w") as handle:
                json.dump({"anchor": ANCHORS, "retain photo": RETAINS}, handle)
            reference_loops.robust_erase_for_care(["nudity", *ADVERSARIAL_TOKENS], "noxattn", args.steps, 2.0,
                                                  2e-5, os.path.join(scratch, "unet.pt"), diffuser, care)
    marks = [start] + stamps
    return {"step_seconds": [b[0] - a[0] for a, b in zip(marks, marks[1:])],
            "step_cpu_seconds": [b[1] - a[1] for a, b in zip(marks, marks[1:])], "trainable_parameters": trained}


def pack_worker(args: argparse.Namespace, stage: str) -> dict:
    """The same loop through the pack's ComfyUI backend (``benchmarks/unlearn_steps.py``'s measurement)."""
    from unlearn_steps import measure

    row = measure(SimpleNamespace(backend="comfy", family="sd15", checkpoint=None, device="cpu", image_size=args.image_size,
                                  model_channels=32, k=args.k, ddim_steps=50, steps=pack_steps(args), lora_rank=4,
                                  gradient_checkpointing=False, no_mixed_precision=False,
                                  sampling_reuse=args.sampling_reuse), "full", stage)
    return {"step_seconds": row["step_seconds"], "step_cpu_seconds": row["step_cpu_seconds"],
            "trainable_parameters": row["trainable_parameters"],
            "evaluations_per_step": row["evaluations_per_step"]}


def pack_steps(args: argparse.Namespace) -> int:
    """The pack worker's step count: with ``--sampling-reuse`` N, 1 + whole cycles of N steps (at least
    ``--steps - 1`` timed), so that the timed steps hold sampling steps in their true share 1/N."""
    reuse = args.sampling_reuse
    return 1 + reuse * -(-(args.steps - 1) // reuse)


WORKERS = {"reference": reference_worker, "pack": pack_worker}
CLOCKS = {"wall": "step_seconds", "cpu": "step_cpu_seconds"}


def _run_worker(args: argparse.Namespace, side: str, stage: str) -> dict:
    command = [sys.executable, __file__, "--reference", str(args.reference), "--image-size", str(args.image_size),
               "--k", str(args.k), "--steps", str(args.steps), "--threads", str(args.threads),
               "--sampling-reuse", str(args.sampling_reuse), "--worker", side, stage]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=os.environ.get("RECARE_REFERENCE_CARE"),
                        help="checkout of github:damilab/CARE (outside this repository)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--k", type=int, default=10, help="fixed partial-sampling depth")
    parser.add_argument("--steps", type=int, default=4, help="steps per worker (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of reference and pack per stage")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sampling-reuse", type=int, default=1,
                        help="the pack's sampling_reuse (1: the faithful loop); >1 is compared on the mean step")
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference is None or not (Path(args.reference) / "utils" / "recare.py").is_file():
        raise SystemExit("Name a checkout of github:damilab/CARE with --reference or RECARE_REFERENCE_CARE.")
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("Set COMFYUI_PATH to a ComfyUI checkout (the pack's backend and CLIP's tokenizer files).")
    args.reference = Path(args.reference).resolve()
    torch.set_num_threads(args.threads)
    if args.worker:
        side, stage = args.worker
        print(json.dumps(WORKERS[side](args, stage)))
        return
    print(f"reference {args.reference} vs pack (ComfyUI backend), {args.image_size}px, k={args.k} fixed, "
          f"{args.threads} threads, {args.steps} steps per worker (first untimed; pack {pack_steps(args)}), "
          f"{args.repeats} alternations, pack sampling_reuse {args.sampling_reuse}")
    average = statistics.median if args.sampling_reuse == 1 else statistics.mean
    print("per worker: seconds of each step (the first is warm-up), then the table", flush=True)
    header = (f"{'stage':7} {'clock':5} {'reference s/step':>24} {'pack s/step':>24} {'speed-up':>9} "
              f"{'evals ref':>9} {'evals pack':>10}")
    print(header)
    print("-" * len(header))
    reference_rows = {"erase": 28, "robust": 38}  # predict_noise always runs an unconditional + conditional pair
    for stage in args.stages:
        samples = {(side, clock): [] for side in WORKERS for clock in CLOCKS}
        medians = {(side, clock): [] for side in WORKERS for clock in CLOCKS}
        evaluations = 0.0
        for _ in range(args.repeats):
            for side in WORKERS:
                result = _run_worker(args, side, stage)
                print(f"  {stage} {side}: wall " + " ".join(f"{v:.2f}" for v in result["step_seconds"])
                      + " | cpu " + " ".join(f"{v:.2f}" for v in result["step_cpu_seconds"]), flush=True)
                for clock, key in CLOCKS.items():
                    timed = result[key][1:] or result[key]
                    samples[side, clock].extend(timed)
                    medians[side, clock].append(average(timed))
                evaluations = sum(result.get("evaluations_per_step", {}).values()) or evaluations
        for clock in CLOCKS:
            cells = {side: f"{average(samples[side, clock]):.2f} "
                           f"({min(medians[side, clock]):.2f}-{max(medians[side, clock]):.2f})" for side in WORKERS}
            ratio = average(samples["reference", clock]) / average(samples["pack", clock])
            print(f"{stage:7} {clock:5} {cells['reference']:>24} {cells['pack']:>24} {ratio:8.2f}x "
                  f"{reference_rows[stage]:9d} {evaluations:10.1f}", flush=True)
    print(f"cells: {average.__name__} over all timed steps (range of the per-worker {average.__name__}s); "
          "wall = elapsed seconds, cpu = process CPU seconds (all threads), less sensitive to other programs' load")


if __name__ == "__main__":
    main()
