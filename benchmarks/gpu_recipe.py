"""GPU figures of the ReCARE recipe on real-size SD1.5 and SDXL UNets, in one short run written to a file.

The UNets are ComfyUI's own ``UNetModel`` built from ComfyUI's SD1.5 / SDXL configurations and randomly
initialised (cost does not depend on the weights; nothing is downloaded). Text encoders are CLIP-shaped causal
transformers of the real sizes (CLIP-L for SD1.5; CLIP-L + a bigG-sized one for SDXL, concatenated to 2048
channels, with a fixed pooled/size vector), so textual inversion pays for its text forward and backward. For
each model and configuration (``full`` / ``lora`` update, mixed precision on / off, gradient checkpointing on /
off) it times the three loops (stage-1 erase, TI, stage-2 robust erase; ``k`` fixed at 24, the mean of the
paper's uniform 1..48, as a step's cost is linear in ``k``) and records peak accelerator memory, then projects
the paper recipe (2 x (200 erase + 3000 TI) + 200 robust) and the ``fast`` preset. A configuration that runs out of memory is recorded as such.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_recipe.py --out gpu_recipe.json      # on a GPU
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_recipe.py --tiny --device cpu --out /tmp/r.json

``--tiny`` shrinks the UNets and text encoders so the same code path runs on a CPU in seconds (tested).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recare_core.methods.recare_config import PRESETS, ReCAREConfig  # noqa: E402
from recare_core.methods.stage_erase import erase_stage, robust_erase_stage  # noqa: E402
from recare_core.methods.textual_inversion import textual_inversion  # noqa: E402
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage  # noqa: E402
from recare_core.training.checkpointing import gradient_checkpointing  # noqa: E402
from recare_core.training.run import TrainingRun, is_out_of_memory  # noqa: E402
from recare_core.training.train_methods import select_trainable_modules  # noqa: E402
from recare_core.training.weight_update import WeightUpdate  # noqa: E402
from unlearn_steps import projected_seconds  # noqa: E402

STAGES = ("erase", "ti", "robust")
ANCHORS = ["a person", "a tree", "a dog", "a house"]
RETAINS = ["a photo of person", "a photo of tree", "a photo of dog", "a photo of house"]
TOKENS = ["recare_adv_1", "recare_adv_2"]
# (name, update, mixed precision, gradient checkpointing)
CONFIGURATIONS = [("full", True, False), ("lora", True, False), ("full", False, False), ("full", True, True),
                  ("lora", True, True)]


SD15_UNET = dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=2, num_heads=8, num_head_channels=-1,
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], context_dim=768,
                 use_linear_in_transformer=False, adm_in_channels=None)
SDXL_UNET = dict(model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=2, num_heads=-1, num_head_channels=64,
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                 transformer_depth_output=[10, 10, 10, 2, 2, 2, 0, 0, 0], context_dim=2048,
                 use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential")
TINY = dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=1, num_heads=-1, num_head_channels=8,
            transformer_depth=[0, 1], transformer_depth_middle=1, transformer_depth_output=[1, 1, 0, 0])


def model_specs(tiny: bool) -> dict[str, dict]:
    """ComfyUI ``UNetModel`` arguments (SD1.5's and SDXL's, as ComfyUI detects them from real checkpoints),
    text towers ``(width, layers, heads)``, resolution and partial-sampling depth ``k`` per model (the paper's
    mean depth 24 of its uniform 1..48; 2 for the tiny models)."""
    if tiny:
        return {"sd15": dict(unet=dict(SD15_UNET, **TINY, context_dim=32), text=[(32, 1, 2)], image_size=32, k=2),
                "sdxl": dict(unet=dict(SDXL_UNET, **TINY, context_dim=48, adm_in_channels=64),
                             text=[(16, 1, 2), (32, 1, 2)], image_size=32, k=2)}
    return {"sd15": dict(unet=SD15_UNET, text=[(768, 12, 12)], image_size=512, k=24),
            "sdxl": dict(unet=SDXL_UNET, text=[(768, 12, 12), (1280, 32, 20)], image_size=1024, k=24)}


class RecipeBackend:
    """A :class:`~recare_core.training.backend.DiffusionBackend` over a bare UNet and CLIP-shaped text towers."""

    def __init__(self, unet: nn.Module, towers: Sequence[ToyTextToImage], adm: int, device: torch.device,
                 dtype: torch.dtype):
        self.unet, self.towers, self.adm = unet, list(towers), adm
        self._device, self._dtype = device, dtype
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        self._alphas = torch.cumprod(1.0 - betas, dim=0)
        self._pooled = torch.randn(1, adm, generator=torch.Generator().manual_seed(0)) if adm else None

    device = property(lambda self: self._device)
    dtype = property(lambda self: self._dtype)
    alphas_cumprod = property(lambda self: self._alphas)

    def latent_shape(self, batch: int, image_size: int) -> tuple[int, ...]:
        return (batch, 4, image_size // 8, image_size // 8)

    def denoiser(self) -> nn.Module:
        return self.unet

    def trainable_modules(self, method: str) -> dict[str, nn.Module]:
        return select_trainable_modules({f"diffusion_model.{n}": m for n, m in self.unet.named_modules()}, method)

    def checkpoint_blocks(self) -> list[nn.Module]:
        containers = [*self.unet.input_blocks, self.unet.middle_block, *self.unet.output_blocks]
        return [layer for container in containers for layer in container]

    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        extra = {}
        if self._pooled is not None:
            extra["y"] = self._pooled.to(self.device, self.dtype).expand(x_t.shape[0], -1)
        return self.unet(x_t.to(self.device, self.dtype), timesteps.to(self.device), context=cond.to(self.device,
                         self.dtype), transformer_options={}, **extra).float()

    def encode_text(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        learned = dict(learned_tokens or {})
        parts, start = [], 0
        for tower in self.towers:  # a learned token spans every tower's width, as SDXL embeddings do
            width = tower.config.text_width
            mine = {name: value.reshape(-1, value.shape[-1])[:, start:start + width] for name, value in learned.items()}
            parts.append(tower.encode_text(prompts, mine).float())
            start += width
        return torch.cat(parts, dim=-1)

    def token_embedding(self, word: str) -> torch.Tensor:
        return torch.cat([tower.word_embedding(word).float() for tower in self.towers], dim=-1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("The recipe benchmark passes latents to textual inversion directly.")


def build_backend(spec: dict, device: torch.device, dtype: torch.dtype) -> RecipeBackend:
    """ComfyUI's UNet of ``spec`` (random weights in ``dtype``) and the text towers (float32, frozen)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
                     dtype=dtype, device=device, operations=comfy.ops.disable_weight_init, **spec["unet"])
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.normal_(0.0, 0.02)
    towers = [ToyTextToImage(ToyModelConfig(text_width=width, text_layers=layers, text_heads=heads,
                                            context_length=77, model_channels=8, num_heads=1, channel_mult=(1,)),
                             seed=i).to(device).requires_grad_(False) for i, (width, layers, heads) in
              enumerate(spec["text"])]
    return RecipeBackend(unet.eval().requires_grad_(False), towers, spec["unet"]["adm_in_channels"] or 0, device,
                         dtype)


def time_stage(backend: RecipeBackend, stage: str, kind: str, mixed: bool, checkpointing: bool, spec: dict,
               steps: int) -> dict:
    """Seconds per step (first step untimed) and peak memory of ``steps`` steps of ``stage``."""
    image_size = spec["image_size"]
    config = ReCAREConfig(erase_steps=steps, ti_steps=steps, robust_steps=steps, fixed_k=spec["k"],
                          image_size=image_size,
                          update=kind, mixed_precision=mixed, gradient_checkpointing=checkpointing, seed=0)
    stamps: list[float] = []
    cuda = backend.device.type == "cuda"

    def stamp(*_: object) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    run = TrainingRun(backend, total_steps=steps, mixed_precision=mixed, progress=stamp)
    initial = backend.token_embedding("person").mean(0, keepdim=True)
    learned = {TOKENS[0]: initial, TOKENS[1]: initial + 0.01}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    update = WeightUpdate(backend.trainable_modules(config.train_method), kind, rank=config.lora_rank,
                          device=backend.device)
    start = time.perf_counter()
    try:
        with torch.enable_grad(), gradient_checkpointing(backend.checkpoint_blocks(), checkpointing):
            if stage == "erase":
                erase_stage(run, update, "nudity", config, learned_tokens={}, name=stage, seed=0)
            elif stage == "ti":
                update.requires_grad_(False)
                latents = torch.randn(backend.latent_shape(4, image_size)).to(backend.device)
                textual_inversion(run, latents, "recare_adv_3", initial, config, name=stage, seed=0,
                                  flipped_latents=latents.flip(-1))
            else:
                robust_erase_stage(run, update, ["nudity", *TOKENS], ANCHORS, RETAINS, config,
                                   learned_tokens=learned, name=stage, seed=0)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        return {"out_of_memory": True}
    finally:
        update.detach()
    times = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    timed = times[1:] or times
    return {"seconds_per_step": sum(timed) / len(timed),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def projection(rows: dict[str, dict], config: ReCAREConfig) -> float | None:
    """Wall seconds of a whole run of ``config`` from the rows' per-step figures; None if a stage did not run."""
    if any("seconds_per_step" not in rows[s] for s in STAGES):
        return None
    return projected_seconds({s: rows[s]["seconds_per_step"] for s in STAGES}, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models: the same code path in seconds on a CPU")
    parser.add_argument("--steps", type=int, default=3, help="steps per stage (the first is not timed)")
    parser.add_argument("--models", nargs="+", choices=("sd15", "sdxl"), default=["sd15", "sdxl"])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining rows are skipped")
    args = parser.parse_args()
    from comfy_harness import find_comfyui, import_comfy_in_process

    root = find_comfyui()
    if root is None:
        raise SystemExit("gpu_recipe.py builds ComfyUI's UNet: set COMFYUI_PATH to a ComfyUI checkout.")
    import_comfy_in_process(root, cpu=args.device == "cpu")
    device = torch.device(args.device)
    began = time.perf_counter()
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "tiny": args.tiny, "steps": args.steps, "models": {}}
    for name, spec in model_specs(args.tiny).items():
        if name not in args.models:
            continue
        for mixed in (True, False):
            dtype = torch.float16 if mixed and device.type == "cuda" else torch.float32
            backend = build_backend(spec, device, dtype)
            for kind, want_mixed, checkpointing in CONFIGURATIONS:
                if want_mixed != mixed:
                    continue
                label = f"{kind} mixed-precision {'on' if mixed else 'off'} checkpointing {'on' if checkpointing else 'off'}"
                rows = {}
                for stage in STAGES:
                    if time.perf_counter() - began > args.budget:
                        rows[stage] = {"skipped": "time budget"}
                        continue
                    rows[stage] = time_stage(backend, stage, kind, mixed, checkpointing, spec, args.steps)
                    print(f"{name} {label} {stage}: {rows[stage]}", flush=True)
                if all("seconds_per_step" in rows[s] or "out_of_memory" in rows[s] for s in STAGES):
                    rows["projected_seconds"] = {preset: projection(rows, PRESETS[preset])
                                                 for preset in ("paper", "fast")}
                report["models"].setdefault(name, {})[label] = rows
                args.out.write_text(json.dumps(report, indent=1))
            del backend
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["seconds"] = time.perf_counter() - began
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} after {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
