"""An erasure: the trained weight increments of one erased concept, plus everything needed to audit them.

Keys of ``increments`` are parameter names of the denoiser's state dict as the backend names them (for ComfyUI:
``diffusion_model.input_blocks.1.1.proj_in.weight``). An increment is either a full delta (same shape as the
weight) or a LoRA pair whose product is the delta. Increments are per concept and additive, so erasures stack
and each can be removed again (SepME-style separable increments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


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
        shape = weight_shape if weight_shape is not None else (self.up.shape[0], *self.down.shape[1:])
        return product.reshape(shape).to(self.up.dtype)


@dataclass
class Erasure:
    """Weight increments that erase ``concept``; ``metadata`` holds CARE-set, settings, base-model identity,
    pack version; ``adversarial_embeddings`` the learned textual-inversion tokens (name -> (n, token_dim))."""

    concept: str
    increments: dict[str, WeightIncrement]
    metadata: dict[str, Any] = field(default_factory=dict)
    adversarial_embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.increments:
            raise ValueError(f"The erasure of '{self.concept}' has no weight increments.")
