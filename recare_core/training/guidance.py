"""Normalised (APG-style) guidance that builds the erasure targets of both ReCARE stages.

For a conditional prediction ``e_c`` and the unconditional ``e_u`` the guidance direction ``diff = e_c - e_u`` is
split, per sample over all non-batch dimensions and in float64, into its component parallel to ``e_c`` and the
orthogonal rest; the update is ``orth + eta * par``. Results come back in the dtype of the inputs.
"""

from __future__ import annotations

from typing import Sequence

import torch


def project(vector: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(parallel, orthogonal)`` parts of ``vector`` with respect to ``direction``, per sample, in float64."""
    if vector.shape != direction.shape:
        raise ValueError(f"Cannot project a {tuple(vector.shape)} tensor on a {tuple(direction.shape)} one.")
    if vector.dim() < 2:
        raise ValueError("Guidance needs batched predictions: (batch, ...) with at least one dim per sample.")
    dims = tuple(range(1, vector.dim()))
    vector, direction = vector.double(), direction.double()
    unit = torch.nn.functional.normalize(direction.flatten(1), dim=1).view_as(direction)
    parallel = (vector * unit).sum(dim=dims, keepdim=True) * unit
    return parallel, vector - parallel


def normalized_update(pred_cond: torch.Tensor, pred_uncond: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """``orth + eta * par`` of ``pred_cond - pred_uncond`` relative to ``pred_cond``, in float64."""
    parallel, orthogonal = project(pred_cond.double() - pred_uncond.double(), pred_cond)
    return orthogonal + eta * parallel


def normalized_negative_guidance(
    pred_cond: torch.Tensor, pred_uncond: torch.Tensor, scale: float, eta: float = 1.0
) -> torch.Tensor:
    """Stage-1 target: ``e_c - (scale - 1) * update`` (pushes away from the condition)."""
    guided = pred_cond.double() - (scale - 1.0) * normalized_update(pred_cond, pred_uncond, eta)
    return guided.to(pred_cond.dtype)


def normalized_compositional_guidance(
    pred_conds: Sequence[torch.Tensor], pred_uncond: torch.Tensor, scales: Sequence[float], eta: float = 1.0
) -> torch.Tensor:
    """Stage-2 target in the reference's terms: ``e_u + mean_pos + mean_neg``.

    Each condition ``j`` contributes ``(scales[j] - 1) * update_j``; contributions of positive scales are averaged
    over the positive conditions and those of the others (negatives, and zero) over the negatives.
    """
    if len(pred_conds) != len(scales):
        raise ValueError(f"{len(pred_conds)} conditional predictions but {len(scales)} guidance scales.")
    return weighted_compositional_guidance(pred_conds, pred_uncond, [s - 1.0 for s in scales],
                                           [s > 0 for s in scales], eta)


def weighted_compositional_guidance(
    pred_conds: Sequence[torch.Tensor], pred_uncond: torch.Tensor, coefficients: Sequence[float],
    positive: Sequence[bool], eta: float = 1.0
) -> torch.Tensor:
    """``e_u + mean over positive conditions of c_j * update_j + mean over the others of c_j * update_j``.

    ``coefficients[j]`` multiplies condition ``j``'s normalised update directly (the reference's scale ``s`` is
    the coefficient ``s - 1``); ``positive[j]`` says which of the two groups it is averaged in.
    """
    if not len(pred_conds) == len(coefficients) == len(positive):
        raise ValueError(f"{len(pred_conds)} conditional predictions but {len(coefficients)} coefficients and "
                         f"{len(positive)} group flags.")
    if not pred_conds:
        raise ValueError("Compositional guidance needs at least one conditional prediction.")
    updates = [(c, normalized_update(e, pred_uncond, eta), p) for e, c, p in zip(pred_conds, coefficients, positive)]
    guided = pred_uncond.double()
    for flag in (True, False):
        group = [c * update for c, update, p in updates if p == flag]
        if group:
            guided = guided + torch.stack(group).mean(dim=0)
    return guided.to(pred_uncond.dtype)
