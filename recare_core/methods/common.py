"""What every erasure method's run shares: input checks, the frozen-denoiser / gradient / checkpointing / OOM
context, and the weight update a training method trains."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..training.backend import DiffusionBackend
from ..training.checkpointing import gradient_checkpointing
from ..training.run import out_of_memory_as_error
from ..training.weight_update import WeightUpdate


def require_concept(concept: str) -> str:
    """``concept`` stripped; ``ValueError`` telling the user what to type when it is empty."""
    concept = (concept or "").strip()
    if not concept:
        raise ValueError("No concept to erase: give the concept as a word or short prompt (e.g. 'nudity').")
    return concept


def require_tokens(backend: DiffusionBackend, word: str, what: str) -> None:
    """``ValueError`` naming ``what`` when ``word`` tokenises to nothing in the backend's text encoder."""
    try:
        rows = backend.token_embedding(word).shape[0]
    except ValueError as error:
        raise ValueError(f"The {what} '{word}' tokenises to nothing: {error}") from error
    if not word.strip() or rows == 0:
        raise ValueError(f"The {what} '{word}' tokenises to nothing; use a word or phrase made of letters.")


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for ``module``'s own parameters inside the block; flags restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def checkpoint_blocks(backend: DiffusionBackend) -> list[nn.Module]:
    """The backend's checkpointable blocks; none when it does not offer any (checkpointing then refuses)."""
    finder = getattr(backend, "checkpoint_blocks", None)
    return list(finder()) if finder is not None else []


@contextlib.contextmanager
def training_context(backend: DiffusionBackend, label: str, use_checkpointing: bool = False) -> Iterator[None]:
    """Gradients on (also inside ComfyUI's inference mode), the denoiser's own weights frozen, optional gradient
    checkpointing, and an out-of-memory error during ``label`` re-raised in plain language."""
    blocks = checkpoint_blocks(backend) if use_checkpointing else []
    with out_of_memory_as_error(label), torch.inference_mode(False), torch.enable_grad(), \
            frozen(backend.denoiser()), gradient_checkpointing(blocks, use_checkpointing):
        yield


def new_update(backend: DiffusionBackend, config: Any, seed: int) -> WeightUpdate:
    """The weight update of ``config`` (``train_method``, ``update``, ``lora_rank``, ``lora_alpha``,
    ``train_bias``) on the backend's layers, on its device."""
    with out_of_memory_as_error(f"the setup of the '{config.update}' weight update"):
        return WeightUpdate(backend.trainable_modules(config.train_method), config.update, rank=config.lora_rank,
                            alpha=config.lora_alpha, train_bias=config.train_bias, device=backend.device,
                            seed=seed)
