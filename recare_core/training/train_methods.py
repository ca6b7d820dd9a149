"""Which layers of the denoiser erasure fine-tunes ("train method"), by module name.

Names follow ComfyUI's / the LDM UNet naming (``...transformer_blocks.N.attn2...`` for cross-attention, like
diffusers), so one rule serves every backend.
"""

from __future__ import annotations

from typing import Callable, Mapping

from torch import nn

TRAIN_METHODS: dict[str, str] = {
    "noxattn": "every Linear/Conv layer except cross-attention (ESD-u, the paper's default)",
    "xattn": "cross-attention layers only (ESD-x)",
    "selfattn": "self-attention layers only",
    "full": "every Linear/Conv layer",
}


def _is_cross_attention(name: str) -> bool:
    return ".attn2." in f".{name}."


def _is_self_attention(name: str) -> bool:
    return ".attn1." in f".{name}."


_RULES: dict[str, Callable[[str], bool]] = {
    "noxattn": lambda name: not _is_cross_attention(name),
    "xattn": _is_cross_attention,
    "selfattn": _is_self_attention,
    "full": lambda name: True,
}


def select_trainable_modules(named_modules: Mapping[str, nn.Module], method: str) -> dict[str, nn.Module]:
    """The Linear/Conv2d modules among ``named_modules`` that ``method`` trains, in their original order."""
    if method not in _RULES:
        raise ValueError(f"Unknown train method '{method}'. Choose one of: {', '.join(TRAIN_METHODS)}.")
    rule = _RULES[method]
    selected = {name: module for name, module in named_modules.items()
                if isinstance(module, (nn.Linear, nn.Conv2d)) and rule(name)}
    if not selected:
        raise ValueError(f"Train method '{method}' selects no layer of this model.")
    return selected


def cross_attention_projections(cross_attention_layers: Mapping[str, nn.Module]) -> dict[str, nn.Linear]:
    """The key/value projections (names ending ``attn2.to_k`` / ``attn2.to_v``) among the cross-attention layers
    (``select_trainable_modules(..., "xattn")``); ``ValueError`` when there are none."""
    selected = {name: module for name, module in cross_attention_layers.items()
                if isinstance(module, nn.Linear) and name.endswith((".to_k", ".to_v")) and _is_cross_attention(name)}
    if not selected:
        raise ValueError("This model has no cross-attention key/value projections (attn2.to_k / attn2.to_v).")
    return selected
