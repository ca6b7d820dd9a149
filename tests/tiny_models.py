"""Tiny randomly initialised models shared by the tests (seconds on a CPU, nothing downloaded): toy
text-to-image models and probes for the erasure methods, and a tiny open_clip CLIP with the real vocabulary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from recare_core.careset.clip_model import CareClip
from recare_core.careset.clip_loading import CONFIG_FILE_NAME
from recare_core.toyworld.toy_model import ToyModelConfig, ToyTextToImage


def conditioned_model(seed: int = 0) -> ToyTextToImage:
    """A tiny random model whose cross-attention is strengthened so that prompts change its predictions by
    ~10-20 % (as in a trained model), which makes directions measurable."""
    model = ToyTextToImage(ToyModelConfig(image_size=8, model_channels=16, text_width=16), seed=seed)
    with torch.no_grad():
        for name, parameter in model.unet.named_parameters():
            if name.endswith(("attn2.to_v.weight", "attn2.to_out.weight")):
                parameter.mul_(4.0)
    return model


def target_images(count: int = 4) -> torch.Tensor:
    images = torch.zeros(count, 12, 12, 3)
    images[..., 0] = 0.9
    images[..., 2] = torch.linspace(0, 1, 12)
    return images


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: ToyTextToImage, before: dict[str, torch.Tensor], x, t, cond, expected) -> None:
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.equal(model.unet(x, t, cond), expected)


def probe(model: ToyTextToImage):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    t = torch.tensor([500, 80])
    cond = model.encode_text(["nudity", "a photo of tree"])
    return x, t, cond, model.unet(x, t, cond)


TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A tiny open_clip config (same dict format as open_clip's ``model_configs/*.json``) with the real vocabulary."""


def build_tiny_care_clip(seed: int = 0, device: str | torch.device = "cpu") -> CareClip:
    """A tiny randomly initialised CLIP with the real 49,408-entry BPE vocabulary (tests; no download)."""
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**TINY_CLIP_CONFIG)
    return CareClip(model, f"tiny-clip/random-seed-{seed}", device=device)


def save_tiny_care_clip(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny CLIP as ``open_clip_config.json`` + ``open_clip_model.safetensors`` into ``directory``
    (the layout of an open_clip Hugging Face repository); returns the weights path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clip = build_tiny_care_clip(seed)
    (directory / CONFIG_FILE_NAME).write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}, indent=2), encoding="utf-8")
    weights = directory / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(weights))
    return weights
