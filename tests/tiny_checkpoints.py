"""Tiny randomly initialised SDXL-family and SD 2.x checkpoints that ComfyUI's own loader detects, cached per machine.

Each file is built in-process from ComfyUI's own classes: the model config from ``comfy.supported_models``
(``KOALA_700M``, an ``SDXL`` subclass, for the SDXL family; ``SD20`` for SD 2.x), the text encoders through the
config's ``clip_target`` and ``comfy.sd.CLIP`` at their real shapes (CLIP-L + CLIP-G; OpenCLIP-H), SD's VAE, all
weights ~N(0, 1/fan_in) with unit norms and zero biases; ``comfy.sd.save_checkpoint`` writes it with ComfyUI's own
key conversion, so ``CheckpointLoaderSimple`` / ``load_checkpoint_guess_config`` detect the family from the keys
and shapes alone. Only the keys in each supported model's ``unet_config`` must match, so the UNets are shallow
(SDXL 68.5M params, 1.9 GB fp16 with its text towers; SD 2.x 26.4M params, 0.9 GB).

Files go to ``~/.cache/recare/checkpoints/`` (``RECARE_CHECKPOINT_CACHE`` overrides it), named by family and a
hash of the generating code and configs, so a change of the generator makes a new file and an old one is never reused. Writes
are atomic and serialised by a lock file, so parallel test processes build each file once. Never commit them.
Random weights prove plumbing only; they say nothing about whether erasure works.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
from pathlib import Path

import torch

from comfy_harness import _sd_vae_state_dict

CACHE_ENV_VAR = "RECARE_CHECKPOINT_CACHE"

# Full UNet configs; only the keys of each target config's ``unet_config`` decide the detection.
_COMMON_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1, 1],
    "dropout": 0.0, "use_spatial_transformer": True, "legacy": False, "num_heads": -1, "num_head_channels": 64,
    "use_linear_in_transformer": True, "use_temporal_resblock": False, "use_temporal_attention": False,
}
UNET_CONFIGS: dict[str, dict] = {
    # KOALA_700M: model_channels 320, transformer_depth [0, 2, 5] over the three input blocks, context 2048, adm 2816.
    "sdxl": {**_COMMON_UNET, "model_channels": 320, "channel_mult": [1, 1, 1], "transformer_depth": [0, 2, 5],
             "transformer_depth_output": [5, 5, 2, 2, 0, 0], "transformer_depth_middle": 1, "context_dim": 2048,
             "adm_in_channels": 2816, "num_classes": "sequential"},
    # SD20: context 1024, linear transformers, no adm; one level of one block.
    "sd2": {**_COMMON_UNET, "model_channels": 320, "channel_mult": [1], "num_res_blocks": [1],
            "transformer_depth": [1], "transformer_depth_output": [1, 1], "transformer_depth_middle": 1,
            "context_dim": 1024, "adm_in_channels": None},
}
FAMILY_CONFIG = {"sdxl": "KOALA_700M", "sd2": "SD20"}


def _random_init_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Weights ~ N(0, 1/fan_in), norm scales 1, biases 0, scalars (CLIP's logit scale) kept; deterministic."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() == 0:
                continue
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "recare" / "checkpoints").expanduser()


def checkpoint_path(family: str) -> Path:
    if family not in UNET_CONFIGS:
        raise ValueError(f"No tiny checkpoint for '{family}'; choose one of {', '.join(UNET_CONFIGS)}.")
    return cache_dir() / f"tiny_{family}-{generator_version()}.safetensors"


def _model_patcher(family: str, seed: int):
    import comfy.model_patcher
    import comfy.supported_models

    config_class = getattr(comfy.supported_models, FAMILY_CONFIG[family])
    model_config = config_class(dict(UNET_CONFIGS[family]))
    model_config.set_inference_dtype(torch.float16, None)
    base_model = model_config.get_model({})
    _random_init_(base_model.diffusion_model, torch.Generator().manual_seed(seed))
    device = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base_model, load_device=device, offload_device=device), model_config


def _clip(model_config, seed: int):
    import comfy.sd

    clip = comfy.sd.CLIP(model_config.clip_target({}), model_options={"dtype": torch.float16})
    _random_init_(clip.cond_stage_model, torch.Generator().manual_seed(seed + 1))
    return clip


def _vae(seed: int):
    import comfy.sd

    state = {k.removeprefix("first_stage_model."): v.to(torch.float16)
             for k, v in _sd_vae_state_dict(torch.Generator().manual_seed(seed + 2)).items()}
    return comfy.sd.VAE(sd=state)


def write_tiny_checkpoint(family: str, path: Path, seed: int = 0) -> Path:
    """Write the tiny ``family`` (``"sdxl"`` or ``"sd2"``) checkpoint to ``path`` (atomically)."""
    import comfy.sd

    model, model_config = _model_patcher(family, seed)
    clip = _clip(model_config, seed)
    vae = _vae(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    comfy.sd.save_checkpoint(str(tmp), model, clip, vae)
    os.replace(tmp, path)
    return path


def generator_version() -> str:
    """Hash of everything that decides a file's content (configs and generating functions, not the docs)."""
    parts = [repr(UNET_CONFIGS), repr(FAMILY_CONFIG)] + [inspect.getsource(f) for f in (
        _random_init_, _model_patcher, _clip, _vae, write_tiny_checkpoint, _sd_vae_state_dict)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def cached_tiny_checkpoint(family: str) -> Path:
    """The cached tiny ``family`` checkpoint, generated on first use (ComfyUI must be importable)."""
    path = checkpoint_path(family)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.is_file():
                write_tiny_checkpoint(family, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path
