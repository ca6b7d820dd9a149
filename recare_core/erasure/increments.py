"""An erasure: the trained weight increments of one erased concept, plus everything needed to audit them.

Keys of ``increments`` are parameter names of the denoiser's state dict as the backend names them (for ComfyUI:
``diffusion_model.input_blocks.1.1.proj_in.weight``). An increment is either a full delta (same shape as the
weight) or a LoRA pair whose product is the delta. Increments are per concept and additive, so erasures stack
and each can be removed again (SepME-style separable increments).

An erasure imported from a released full-UNet checkpoint (the paper's ``ReCARE-Diffusers-UNet.pt``) holds whole
weights instead (``diffusers_unet``, diffusers key names); its increments are their difference to the model it
is applied to, so it needs that base model before it can be applied, saved, compressed or converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


class IncrementShapeError(ValueError):
    """A LoRA pair whose matrices do not fit each other or the weight they change."""


@dataclass
class WeightIncrement:
    """The change of one weight: ``full`` delta, or ``up @ down * (alpha / rank)`` for a LoRA pair."""

    full: torch.Tensor | None = None
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        if (self.full is None) == (self.down is None or self.up is None):
            raise ValueError("A weight increment is either a full delta or a LoRA (down, up) pair, not both.")
        if self.full is None:
            if self.down.dim() < 2 or self.up.dim() < 2:
                raise IncrementShapeError(f"down {tuple(self.down.shape)} and up {tuple(self.up.shape)} must both "
                                          "be matrices (2-D) or convolution kernels (4-D).")
            if self.up.shape[1] != self.down.shape[0] or self.down.shape[0] == 0:
                raise IncrementShapeError(f"up {tuple(self.up.shape)} does not fit down {tuple(self.down.shape)} "
                                          "(up's second size must equal down's first, the rank).")

    @property
    def is_lora(self) -> bool:
        return self.full is None

    @property
    def rank(self) -> int | None:
        return None if self.down is None else int(self.down.shape[0])

    def delta(self, weight_shape: torch.Size | tuple[int, ...] | None = None) -> torch.Tensor:
        """The dense delta. For LoRA on a conv weight pass ``weight_shape`` to reshape the product."""
        if self.full is not None:
            return self.full
        rank = self.down.shape[0]
        scale = (self.alpha if self.alpha is not None else rank) / rank
        product = self.up.flatten(1).float() @ self.down.flatten(1).float() * scale
        shape = tuple(weight_shape) if weight_shape is not None else (self.up.shape[0], *self.down.shape[1:])
        if product.numel() != math.prod(shape):
            raise IncrementShapeError(f"a LoRA of up {tuple(self.up.shape)} and down {tuple(self.down.shape)} "
                                      f"cannot form a weight of shape {shape}")
        return product.reshape(shape).to(self.up.dtype)


class NeedsBaseModelError(ValueError):
    """An imported full-UNet erasure was used where weight increments are needed."""


@dataclass
class Erasure:
    """Weight increments that erase ``concept``; ``metadata`` holds CARE-set, settings, base-model identity,
    pack version; ``adversarial_embeddings`` the learned textual-inversion tokens (name -> (n, token_dim));
    ``diffusers_unet`` whole erased UNet weights (diffusers names) still to be differenced against a base model."""

    concept: str
    increments: dict[str, WeightIncrement]
    metadata: dict[str, Any] = field(default_factory=dict)
    adversarial_embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    diffusers_unet: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.increments and not self.diffusers_unet:
            raise ValueError(f"The erasure of '{self.concept}' has no weight increments.")

    @property
    def needs_base_model(self) -> bool:
        """True for an imported full-UNet checkpoint whose increments are not yet known (no base model given)."""
        return bool(self.diffusers_unet)

    def require_increments(self, action: str) -> None:
        """Raise a plain-language error when ``action`` needs increments this erasure does not have yet."""
        if self.needs_base_model:
            raise NeedsBaseModelError(
                f"Cannot {action}: the erasure of '{self.concept}' was imported from a full UNet checkpoint and "
                "holds whole weights, not changes. Connect it to ApplyErasedUNet with the base model it was "
                "trained from, and use that node's 'erasure' output (the difference to that model) instead."
            )

