"""Optional gradient checkpointing of a denoiser, without touching its code.

The blocks to recompute are the children of the denoiser's outermost ``nn.ModuleList``s: ``input_blocks`` /
``output_blocks`` in ComfyUI's UNet, ``down_blocks`` / ``up_blocks`` in diffusers' and the toy UNet. Each gets an
instance-level ``forward`` that runs the original under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant,
so forward hooks and autocast are replayed faithfully) whenever gradients are being recorded.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def checkpoint_blocks(root: nn.Module) -> list[nn.Module]:
    """Children of the outermost ``ModuleList``s below ``root``."""
    blocks: list[nn.Module] = []
    inside: list[str] = []
    for name, module in root.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, nn.ModuleList):
            inside.append(name)
            blocks.extend(module)
    return blocks


@contextlib.contextmanager
def gradient_checkpointing(root: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Inside the block, recompute :func:`checkpoint_blocks` activations during backward. Yields their count."""
    if not enabled:
        yield 0
        return
    blocks = checkpoint_blocks(root)
    if not blocks:
        raise ValueError("Gradient checkpointing found no blocks (nn.ModuleList children) in this model.")
    own_forwards = [block.__dict__.get("forward") for block in blocks]
    for block in blocks:
        original = block.forward

        def forward(*args, _original=original, **kwargs):
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    try:
        yield len(blocks)
    finally:
        for block, own in zip(blocks, own_forwards):
            del block.forward
            if own is not None:
                block.forward = own
