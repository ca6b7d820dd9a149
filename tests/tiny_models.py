"""Tiny random toy models and probes shared by the tests of the erasure methods (seconds on a CPU)."""

from __future__ import annotations

import torch

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
