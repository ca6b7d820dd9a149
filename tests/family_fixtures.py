"""Fixtures for the SDXL-family and SD 2.x tests (imported by ``conftest.py``).

The tiny checkpoints come from :mod:`tiny_checkpoints` (generated once per machine into a cache). A family's
MODEL/CLIP/VAE are loaded in-process by :func:`load_family` inside a module-scoped fixture of the test module that
needs them, so at most one tiny SDXL (about 5 GB of RAM) is held at a time. The live server is the session's
shared ``comfy_server``: :func:`family_server` links the cached files into its ``models/checkpoints`` under the
names ``tiny_sdxl.safetensors`` / ``tiny_sd2.safetensors``.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from tiny_checkpoints import cached_tiny_checkpoint

FAMILY_CHECKPOINTS = {"sdxl": "tiny_sdxl.safetensors", "sd2": "tiny_sd2.safetensors"}


def load_family(path: Path, inference: bool = True) -> dict[str, Any]:
    """MODEL, CLIP, VAE of a checkpoint through ComfyUI's own loader (inside inference mode, as its executor)."""
    import comfy.sd
    import torch

    with torch.inference_mode(inference):
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return {"model": model, "clip": clip, "vae": vae}


def release(models: dict[str, Any]) -> None:
    """Drop loaded models and let ComfyUI forget them (frees the RAM before the next family loads)."""
    import comfy.model_management

    models.clear()
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()


@pytest.fixture(scope="session")
def sdxl_checkpoint(comfy_root: Path) -> Path:
    """The tiny SDXL-family checkpoint (KOALA_700M layout, real CLIP-L + CLIP-G), from the per-machine cache."""
    return cached_tiny_checkpoint("sdxl")


@pytest.fixture(scope="session")
def sd2_checkpoint(comfy_root: Path) -> Path:
    """The tiny SD 2.x checkpoint (SD20, real OpenCLIP-H), from the per-machine cache."""
    return cached_tiny_checkpoint("sd2")


@pytest.fixture(scope="session")
def family_server(comfy_server, sdxl_checkpoint: Path, sd2_checkpoint: Path):
    """The shared live server with the tiny SDXL and SD 2.x checkpoints in its checkpoint folder."""
    folder = comfy_server.base_dir / "models" / "checkpoints"
    for family, path in (("sdxl", sdxl_checkpoint), ("sd2", sd2_checkpoint)):
        link = folder / FAMILY_CHECKPOINTS[family]
        if not link.exists():
            link.symlink_to(path)
    return comfy_server
