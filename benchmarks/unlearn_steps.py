"""Per-step cost of ReCARE's three training loops: stage-1 erase, textual inversion (TI), stage-2 robust erase.

For each update kind (``full``, ``lora``) and stage it prints seconds per step, peak memory and UNet
sample-evaluations per step split into partial sampling / teacher / student. Every (kind, stage) runs in its own
subprocess so that peak memory belongs to that stage alone: on CUDA ``torch.cuda.max_memory_allocated``, on CPU
the process's peak resident set size (``ru_maxrss``) with the baseline before the stage in brackets.
The partial-sampling depth is fixed (``--k``) so runs compare at equal work; stage 2 erases three concepts
(the target and two learned tokens) as with the paper's defaults.

    python benchmarks/unlearn_steps.py --image-size 32 --k 10 --steps 6
    python benchmarks/unlearn_steps.py --backend comfy --family sdxl --image-size 64 --k 2 --steps 3

``--op-profile`` adds where the timed steps' CPU time goes (torch profiler): the share spent in dense kernels
(convolutions, matrix products and their backward passes), whose work the rows the maths needs fix, and the
GFLOP/s those kernels reach where the profiler counts their operations (forward convolutions and matmuls): a
loop whose dense share is high and whose kernels run at the machine's rate has little left to win per row.

``--family`` (``--backend comfy``) picks the model family: ``sd15`` (the tests' tiny SD1.5), ``sd2`` or ``sdxl``
(the tests' tiny SD 2.x / SDXL-family checkpoints, cached in ~/.cache/recare/checkpoints/), or give a real
``--checkpoint`` of that family.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recare_core.training.backend import DiffusionBackend  # noqa: E402
from recare_core.methods.stage_erase import erase_stage, robust_erase_stage  # noqa: E402
from recare_core.methods.textual_inversion import encode_images_once, prepare_images, textual_inversion  # noqa: E402
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage  # noqa: E402
from recare_core.toyworld.torch_backend import TorchBackend  # noqa: E402
from recare_core.training.run import TrainingRun  # noqa: E402
from recare_core.methods.recare import PRESETS, ReCAREConfig  # noqa: E402
from recare_core.training.weight_update import WeightUpdate  # noqa: E402

STAGES = ("erase", "ti", "robust")
DENSE_KERNELS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::convolution_backward",
                 "aten::_slow_conv2d_backward", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                 "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
"""The kernels whose cost the evaluated rows fix (self time, so wrappers such as ``aten::conv2d`` are not
counted twice)."""
FLOP_COUNTED = ("aten::conv2d", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
"""Dense operations whose FLOPs the profiler counts (forward; elementwise counts are left out of the rate)."""
KINDS = ("full", "lora")
ANCHORS = ["a person", "a tree", "a dog", "a house"]
RETAINS = ["a photo of person", "a photo of tree", "a photo of dog", "a photo of house"]


def make_torch_backend(args: argparse.Namespace) -> DiffusionBackend:
    """The tiny plain-torch model at ``--image-size`` (random weights: cost does not depend on them)."""
    config = ToyModelConfig(image_size=args.image_size, model_channels=args.model_channels)
    return TorchBackend(ToyTextToImage(config, seed=0), device=args.device)


def make_comfy_backend(args: argparse.Namespace) -> DiffusionBackend:
    """ComfyUI's own MODEL/CLIP/VAE (``--checkpoint``, default: the tests' tiny random checkpoint of ``--family``,
    written once to ~/.cache/recare/) through the pack's ComfyUI backend."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from comfy_harness import find_comfyui, import_comfy_in_process, import_pack_in_process, \
        write_tiny_sd15_checkpoint

    root = find_comfyui()
    if root is None:
        raise SystemExit("--backend comfy needs a ComfyUI checkout at $COMFYUI_PATH or ~/ComfyUI.")
    import_comfy_in_process(root, cpu=args.device == "cpu")
    import_pack_in_process()
    import comfy.sd
    from comfyui_recare.nodes.comfy_backend import ComfyBackend

    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    elif args.family == "sd15":
        checkpoint = Path.home() / ".cache/recare/tiny_sd15.safetensors"
        if not checkpoint.exists():
            write_tiny_sd15_checkpoint(checkpoint)
    else:
        from tiny_checkpoints import cached_tiny_checkpoint

        checkpoint = cached_tiny_checkpoint(args.family)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=True, output_clip=True)
    backend = ComfyBackend(model, clip, vae)
    backend.load()
    return backend


BACKENDS = {"torch": make_torch_backend, "comfy": make_comfy_backend}


def matmul_gflops(device: torch.device, size: int = 1024, repeats: int = 10) -> float:
    """The rate of a plain ``size``-square float32 matmul here: the yardstick for the loops' dense kernels."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def dense_kernel_figures(profiler: torch.profiler.profile) -> dict[str, float]:
    """``dense_share`` (self CPU time in :data:`DENSE_KERNELS` over all self CPU time) and ``dense_gflops``
    (operations per second of the profiled kernels that report a FLOP count) of a finished CPU profile."""
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dense = sum(e.self_cpu_time_total for e in events if e.key in DENSE_KERNELS)
    counted = [e for e in profiler.events() if e.name in FLOP_COUNTED and e.flops and e.cpu_time_total > 0]
    flops = sum(e.flops for e in counted)
    seconds = sum(e.cpu_time_total for e in counted) / 1e6
    return {"dense_share": dense / total if total else 0.0,
            "dense_gflops": flops / seconds / 1e9 if seconds else 0.0}


PROJECTED_PRESETS = ("paper", "fast")


def profile_cells(row: dict) -> str:
    """The table's op-profile columns of one row (zeros where a one-step run had no timed step to profile)."""
    return f" {row.get('dense_share', 0):6.1%} {row.get('dense_gflops', 0):8.1f}"


def projected_seconds(seconds_per_step: dict[str, float], config: ReCAREConfig) -> float:
    """Wall seconds of a whole run of ``config`` from per-step seconds of ``erase`` / ``ti`` (at batch size 1;
    a TI batch costs about its size in steps) / ``robust``. Early stopping can only shorten TI further."""
    ti = seconds_per_step["ti"] * config.ti_batch_size
    return (config.n_rounds * (config.erase_steps * seconds_per_step["erase"] + config.ti_steps * ti)
            + config.robust_steps * seconds_per_step["robust"])


def measure(args: argparse.Namespace, kind: str, stage: str) -> dict:
    """Run ``args.steps`` steps of ``stage`` with a ``kind`` update; returns the figures of one table row."""
    torch.manual_seed(0)
    backend = BACKENDS[args.backend](args)
    config = ReCAREConfig(erase_steps=args.steps, ti_steps=args.steps, robust_steps=args.steps, fixed_k=args.k,
                          ddim_steps=args.ddim_steps, image_size=args.image_size, update=kind,
                          lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing, seed=0,
                          sampling_reuse=getattr(args, "sampling_reuse", 1))
    stamps: list[float] = []
    cpu_stamps: list[float] = []
    # the timed steps only (the first includes warm-up), so nothing to profile in a one-step run
    profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
                if getattr(args, "op_profile", False) and args.steps > 1 else None)

    def stamp(step: int, total: int, message: str) -> None:
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
        if profiler is not None and len(stamps) == 1:
            profiler.start()

    run = TrainingRun(backend, total_steps=args.steps, mixed_precision=not args.no_mixed_precision, progress=stamp)
    initial = backend.token_embedding(config.initializer_token).float().mean(0, keepdim=True)
    learned = {"recare_adv_1": initial, "recare_adv_2": initial + 0.01 * torch.randn_like(initial)}
    update = WeightUpdate(backend.trainable_modules(config.train_method), kind, rank=config.lora_rank,
                          device=backend.device)
    images = torch.rand(4, args.image_size, args.image_size, 3)
    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    if stage == "erase":
        erase_stage(run, update, "nudity", config, learned_tokens={}, name=stage, seed=0)
    elif stage == "ti":
        update.requires_grad_(False)  # as in stage 1: TI trains only the token, on the erased model
        latents, flipped = encode_images_once(run, prepare_images(images, args.image_size), config.ti_flip)
        textual_inversion(run, latents, "recare_adv_3", initial, config, name=stage, seed=0, flipped_latents=flipped)
    else:
        robust_erase_stage(run, update, ["nudity", *learned], ANCHORS, RETAINS, config, learned_tokens=learned,
                           name=stage, seed=0)
    if cuda:
        torch.cuda.synchronize()
    profile = {}
    if profiler is not None:
        profiler.stop()
        profile = dense_kernel_figures(profiler)
    steps = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    cpu_steps = [b - a for a, b in zip([cpu_start] + cpu_stamps[:-1], cpu_stamps)]
    timed = steps[1:] if len(steps) > 1 else steps  # the first step includes warm-up
    record = run.records[stage]
    return {
        "backend": args.backend, "device": str(backend.device),
        "family": getattr(getattr(backend, "family", None), "name", "toy"), "kind": kind, "stage": stage,
        "seconds_per_step": sum(timed) / len(timed), "first_step_seconds": steps[0], "step_seconds": steps,
        "step_cpu_seconds": cpu_steps,
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20 if cuda
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "baseline_mb": None if cuda else baseline_rss,
        "evaluations_per_step": record.evaluations_per_step(),
        "trainable_parameters": update.num_parameters(),
        **profile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="torch")
    parser.add_argument("--checkpoint", help="checkpoint for --backend comfy (default: the tiny random one of --family)")
    parser.add_argument("--family", choices=("sd15", "sd2", "sdxl"), default="sd15",
                        help="model family of the tiny checkpoint for --backend comfy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model-channels", type=int, default=32, help="width of the tiny torch model's UNet")
    parser.add_argument("--k", type=int, default=10, help="fixed partial-sampling depth (DDIM steps per x_t)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=6, help="steps per stage (the first is not timed)")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--sampling-reuse", type=int, default=1,
                        help="one partial-sampling trajectory per N erase steps (give --steps 1 + a multiple of N)")
    parser.add_argument("--no-mixed-precision", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--op-profile", action="store_true",
                        help="also print the timed steps' dense-kernel share of CPU time and their GFLOP/s")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args, *args.worker)))
        return
    forwarded = [a for a in sys.argv[1:]]
    family = f" ({args.checkpoint or 'tiny ' + args.family})" if args.backend == "comfy" else ""
    print(f"backend {args.backend}{family} on {args.device}, image {args.image_size}px, k={args.k} of {args.ddim_steps}, "
          f"{args.steps} steps per stage (first untimed), lora rank {args.lora_rank}, "
          f"checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    header = (f"{'kind':5} {'stage':7} {'s/step':>8} {'peak MB':>16} {'sampling':>9} {'teacher':>8} "
              f"{'student':>8} {'total':>6} {'trainable':>11}")
    if args.op_profile:
        header += f" {'dense':>6} {'GFLOP/s':>8}"
    print(header)
    print("-" * len(header))
    per_step: dict[str, dict[str, float]] = {}
    for kind in args.kinds:
        for stage in args.stages:
            output = subprocess.run([sys.executable, __file__, *forwarded, "--worker", kind, stage],
                                    check=True, capture_output=True, text=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            per_step.setdefault(kind, {})[stage] = row["seconds_per_step"]
            evals = row["evaluations_per_step"]
            memory = (f"{row['peak_mb']:.0f}" if row["baseline_mb"] is None
                      else f"{row['peak_mb']:.0f} ({row['baseline_mb']:.0f})")
            print(f"{kind:5} {stage:7} {row['seconds_per_step']:8.3f} {memory:>16} {evals['sampling']:9.1f} "
                  f"{evals['teacher']:8.1f} {evals['student']:8.1f} {sum(evals.values()):6.1f} "
                  f"{row['trainable_parameters']:11,d}" + (profile_cells(row) if args.op_profile else ""), flush=True)
    if args.op_profile:
        rate = matmul_gflops(torch.device(args.device))
        print(f"yardstick: a 1024-square float32 matmul runs at {rate:.1f} GFLOP/s on {args.threads} thread(s) here")
    for kind, seconds in per_step.items():
        if set(seconds) == set(STAGES):
            projections = ", ".join(f"{name} {projected_seconds(seconds, PRESETS[name]) / 3600:.2f} h"
                                    for name in PROJECTED_PRESETS)
            print(f"{kind:5} whole recipe at k={args.k}: {projections}")


if __name__ == "__main__":
    main()
