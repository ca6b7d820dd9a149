"""What a long-running node needs inside ComfyUI's executor: leave inference mode, make frozen weights usable by
autograd, report progress, stop on Interrupt, and free memory afterwards."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

import comfy.model_management
import comfy.utils

from ..recare_core.progress import Interrupted


def make_weights_autograd_safe(*modules: nn.Module) -> int:
    """Replace parameters/buffers created under ``torch.inference_mode`` by ordinary tensors with equal values.

    ComfyUI loads checkpoints inside inference mode; autograd refuses to save such tensors for backward, and the
    frozen weights must be saved to back-propagate to the trained increments. The swap is one tensor at a time
    (no second copy of the model) and leaves every value unchanged. Returns how many tensors were swapped."""
    swapped = 0
    with torch.inference_mode(False):
        for module in modules:
            for sub in module.modules():
                for name, param in list(sub._parameters.items()):
                    if param is not None and param.is_inference():
                        sub._parameters[name] = nn.Parameter(param.detach().clone(), requires_grad=False)
                        swapped += 1
                for name, buffer in list(sub._buffers.items()):
                    if buffer is not None and buffer.is_inference():
                        sub._buffers[name] = buffer.clone()
                        swapped += 1
    return swapped


class ComfyProgress:
    """Adapts the core's ``progress(step, total, message)`` callback to ComfyUI's progress bar; the bar's length
    follows the ``total`` the callback reports (``total`` here is only its length before the first report)."""

    def __init__(self, total: int = 1):
        self.total = max(1, total)
        self.bar = comfy.utils.ProgressBar(self.total)
        self.last_message = ""

    def __call__(self, step: int, total: int, message: str) -> None:
        self.last_message = message
        self.total = max(1, total)
        self.bar.update_absolute(min(step, self.total), self.total)


def interrupted() -> bool:
    """True once the user pressed Cancel/Interrupt in ComfyUI."""
    return comfy.model_management.processing_interrupted()


@contextlib.contextmanager
def stops_as_comfy_interrupt() -> Iterator[None]:
    """Hand the core's :class:`~recare_core.progress.Interrupted` back to ComfyUI's executor, which reports the
    run as interrupted (rather than failed)."""
    try:
        yield
    except Interrupted:
        comfy.model_management.throw_exception_if_processing_interrupted()
        raise


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Leave ComfyUI's inference mode and enable gradients; free cached memory on the way out."""
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        comfy.model_management.soft_empty_cache()
