"""The tiny plain-torch model (:mod:`recare_core.toyworld.toy_model`) as a :class:`~recare_core.training.backend.DiffusionBackend`.

Used by the tests and benchmarks: the whole method runs on it without ComfyUI. Increment keys are parameter
names of :class:`~recare_core.toyworld.toy_model.ToyTextToImage`'s state dict (``unet.<module>.weight``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..erasure.increments import WeightIncrement
from ..training.train_methods import cross_attention_projections, select_trainable_modules
from .toy_model import ToyTextToImage, word_token_ids


class TorchBackend:
    """Runs a :class:`ToyTextToImage` on ``device`` in ``dtype``; its weights are frozen (``requires_grad=False``)."""

    def __init__(self, model: ToyTextToImage, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.model.requires_grad_(False)
        self._device, self._dtype = torch.device(device), dtype
        self._alphas_cumprod = model.alphas_cumprod()

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    def latent_shape(self, batch: int, image_size: int) -> tuple[int, ...]:
        return (batch, self.model.config.in_channels, image_size, image_size)

    def denoiser(self) -> nn.Module:
        return self.model.unet

    def trainable_modules(self, method: str) -> dict[str, nn.Module]:
        named = {f"unet.{name}": module for name, module in self.model.unet.named_modules()}
        return select_trainable_modules(named, method)

    def checkpoint_blocks(self) -> list[nn.Module]:
        unet = self.model.unet
        return [*unet.down_blocks, unet.mid_block, *unet.up_blocks]

    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model.unet(x_t.to(self.device, self.dtype), timesteps.to(self.device),
                               cond.to(self.device, self.dtype)).float()

    def encode_text(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        return self.model.encode_text(prompts, learned_tokens)

    def token_embedding(self, word: str) -> torch.Tensor:
        return self.model.word_embedding(word).float()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.images_to_latents(images.to(self.device, torch.float32))

    def cross_attention_projections(self) -> dict[str, nn.Linear]:
        return cross_attention_projections(self.trainable_modules("xattn"))

    def last_token_index(self, prompt: str) -> int:
        return min(len(word_token_ids(prompt)), self.model.config.context_length - 2)


@torch.no_grad()
def apply_increments(model: nn.Module, increments: Mapping[str, WeightIncrement], strength: float = 1.0) -> None:
    """Add ``increments`` (keyed by ``model``'s parameter names) into its weights, in place."""
    parameters = dict(model.named_parameters())
    missing = [key for key in increments if key not in parameters]
    if missing:
        raise KeyError(f"{len(missing)} increments name no parameter of this model, e.g. {missing[:3]}.")
    for key, increment in increments.items():
        weight = parameters[key]
        weight.add_(increment.delta(weight.shape).to(weight.device, weight.dtype), alpha=strength)
