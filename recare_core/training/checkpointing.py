"""Optional gradient checkpointing of a denoiser's blocks, without touching the denoiser's code.

The backend names the blocks (:meth:`~recare_core.training.backend.DiffusionBackend.checkpoint_blocks`). Each gets an
instance-level ``forward`` that runs the original under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant,
so the weight update's forward hooks and autocast are replayed faithfully) whenever gradients are recorded; the
activations inside a block are then recomputed during backward instead of being kept.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def gradient_checkpointing(blocks: Sequence[nn.Module], enabled: bool = True) -> Iterator[int]:
    """Inside the block, recompute the activations of ``blocks`` during backward. Yields how many are wrapped."""
    if not enabled:
        yield 0
        return
    blocks = list(blocks)
    if not blocks:
        raise ValueError("Gradient checkpointing is not available for this model; turn it off.")
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
