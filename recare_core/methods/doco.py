"""DoCo's concept-preserving gradient surgery (Wu et al., AAAI 2025, arXiv 2405.15304) for ReCARE's stage 2.

Where the erase gradient conflicts with the retain gradient (negative dot product, per parameter tensor as in
DoCo's ``adjust_gradient``), the erase gradient loses ``lambda`` times its component along the retain gradient,
so that erasing no longer undoes what retaining asks for; the retain gradient is then added unchanged. DoCo's
own code subtracts ``cos * unit(retain)`` (a unit-length step whatever the gradients' sizes) and steps on the
erase gradient alone; here the removed part is the erase gradient's projection (at ``lambda = 1`` the result is
exactly orthogonal to the retain gradient) and the retain loss keeps training, as stage 2's loss asks.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..training.run import NonFiniteLossError, TrainingRun


def project_conflict(erase: torch.Tensor, retain: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``erase`` minus ``strength`` times its projection on ``retain`` when the two point against each other;
    ``erase`` unchanged otherwise (or when ``retain`` is zero)."""
    dot = torch.dot(erase.flatten().double(), retain.flatten().double())
    norm_sq = retain.double().pow(2).sum()
    if dot >= 0 or norm_sq == 0:
        return erase
    return (erase.double() - strength * (dot / norm_sq) * retain.double()).to(erase.dtype)


class GradientSurgery:
    """The optimiser step of stage 2 with DoCo's surgery between its erase and (weighted) retain losses."""

    def __init__(self, strength: float = 1.0):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"doco_lambda must be within 0..1, got {strength}.")
        self.strength = strength
        self.last_conflict_share = 0.0

    def step(self, run: TrainingRun, erase_loss: torch.Tensor, retain_loss: torch.Tensor,
             optimizer: torch.optim.Optimizer, parameters: Sequence[torch.nn.Parameter], *, stage: str, step: int,
             lr_name: str, retain_only: Sequence[torch.Tensor] = ()) -> float:
        """Gradients of both losses, surgery per parameter tensor, one optimiser step; returns the total loss
        value. ``retain_only`` tensors (AGE's mixture logits) get the retain loss's gradient and no step here.
        Raises :class:`NonFiniteLossError` on a NaN/inf loss, like :meth:`TrainingRun.optimise`."""
        total = erase_loss + retain_loss
        value = float(total.detach())
        if not torch.isfinite(total.detach()):
            raise NonFiniteLossError(stage, step, value, lr_name)
        scale = run.scaler.scale if run.scaler is not None else (lambda loss: loss)
        parameters, extra = list(parameters), list(retain_only)
        erase_grads = torch.autograd.grad(scale(erase_loss), parameters, retain_graph=True, allow_unused=True)
        retain_grads = torch.autograd.grad(scale(retain_loss), parameters + extra, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for tensor, grad in zip(extra, retain_grads[len(parameters):]):
            tensor.grad = grad
        conflicts = shared = 0
        for parameter, erase, retain in zip(parameters, erase_grads, retain_grads):
            if erase is None and retain is None:
                continue
            if erase is not None and retain is not None:
                adjusted = project_conflict(erase, retain, self.strength)
                shared += 1
                conflicts += adjusted is not erase
                parameter.grad = adjusted + retain
            else:
                parameter.grad = erase if erase is not None else retain
        self.last_conflict_share = conflicts / max(1, shared)
        if run.scaler is not None:
            run.scaler.step(optimizer)
            run.scaler.update()
        else:
            optimizer.step()
        return value
