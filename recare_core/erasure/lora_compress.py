"""Turn an erasure's full weight deltas into LoRA pairs of a chosen rank (truncated SVD), measuring the error.

A delta ``D`` of a linear weight ``(out, in)`` or a conv weight ``(out, in, kh, kw)`` is flattened to the matrix
``(out, in*kh*kw)`` and replaced by ``up @ down`` with ``up = U_r * S_r`` (``(out, r[, 1, 1])``) and
``down = V_r^T`` (``(r, in[, kh, kw])``), ``alpha = r`` (scale 1) — the best rank-``r`` approximation in the
Frobenius norm (Eckart–Young). The relative error ``||D - up @ down||_F / ||D||_F`` is measured on the factors as
stored (after casting back to the delta's dtype), per layer and over the whole erasure.

Left as they are (exact): 1-D deltas (biases, norms), deltas whose rank-``r`` LoRA would not be smaller than
the delta itself (``r * (out + in*kh*kw) >= out * in*kh*kw``), and LoRA increments whose rank is already
``<= rank``. Higher-rank LoRA increments are re-compressed from their product.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from ..progress import ProgressCallback, StopCallback, check_stop
from .increments import Erasure, WeightIncrement


@dataclass
class CompressionReport:
    """Relative Frobenius errors: per compressed layer and overall (over every increment, exact ones included)."""

    rank: int
    layer_errors: dict[str, float] = field(default_factory=dict)
    kept_exact: list[str] = field(default_factory=list)
    overall_error: float = 0.0
    parameters_before: int = 0
    parameters_after: int = 0

    def summary(self, worst: int = 5) -> str:
        """A few plain lines for a person: overall error, size change and the worst layers."""
        lines = [
            f"LoRA rank {self.rank}: overall relative error {self.overall_error:.3%} "
            f"({len(self.layer_errors)} weights compressed, {len(self.kept_exact)} kept exact)",
            f"parameters {self.parameters_before:,} -> {self.parameters_after:,} "
            f"({self.parameters_after / max(self.parameters_before, 1):.1%})",
        ]
        ranked = sorted(self.layer_errors.items(), key=lambda item: item[1], reverse=True)[:worst]
        lines += [f"  {error:.3%}  {key}" for key, error in ranked]
        return "\n".join(lines)


def low_rank_factors(delta: torch.Tensor, rank: int, device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of the best rank-``rank`` approximation of ``delta`` (2-D or conv 4-D), in ``delta``'s dtype."""
    if delta.ndim < 2:
        raise ValueError(f"A delta of shape {tuple(delta.shape)} has no matrix to factorise.")
    compute_dtype = torch.float64 if delta.dtype == torch.float64 else torch.float32
    matrix = delta.detach().to(device=device or delta.device, dtype=compute_dtype).flatten(1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = min(rank, s.shape[0])
    up = (u[:, :r] * s[:r]).reshape(delta.shape[0], r, *([1] * (delta.ndim - 2)))
    down = vh[:r].reshape(r, *delta.shape[1:])
    return down.to(device=delta.device, dtype=delta.dtype), up.to(device=delta.device, dtype=delta.dtype)


def compress_erasure(
    erasure: Erasure,
    rank: int,
    device: torch.device | str | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
) -> tuple[Erasure, CompressionReport]:
    """A copy of ``erasure`` with each full matrix delta replaced by a rank-``rank`` LoRA, and the error report.

    ``device`` is where the SVDs run (the results return to each delta's device)."""
    if rank < 1:
        raise ValueError(f"The LoRA rank must be at least 1, not {rank}.")
    erasure.require_increments("compress it to a LoRA")
    report = CompressionReport(rank=rank)
    increments: dict[str, WeightIncrement] = {}
    squared_error = squared_norm = 0.0
    total = len(erasure.increments)
    for step, (key, increment) in enumerate(erasure.increments.items()):
        check_stop(should_stop, "Compression was stopped before it finished; nothing was changed.")
        if progress is not None:
            progress(step, total, f"compressing {key}")
        delta = increment.delta()
        norm_sq = float(delta.double().pow(2).sum())
        squared_norm += norm_sq
        report.parameters_before += _parameter_count(increment)
        if not _worth_compressing(increment, delta, rank):
            increments[key] = increment
            report.kept_exact.append(key)
        else:
            down, up = low_rank_factors(delta, rank, device)
            compressed = WeightIncrement(down=down, up=up, alpha=float(down.shape[0]))
            error_sq = float((compressed.delta(delta.shape).double() - delta.double()).pow(2).sum())
            squared_error += error_sq
            report.layer_errors[key] = math.sqrt(error_sq / norm_sq) if norm_sq > 0 else 0.0
            increments[key] = compressed
        report.parameters_after += _parameter_count(increments[key])
    if progress is not None:
        progress(total, total, "compression done")
    report.overall_error = math.sqrt(squared_error / squared_norm) if squared_norm > 0 else 0.0
    metadata = {**erasure.metadata, "lora_compression": {
        "rank": rank, "overall_relative_error": report.overall_error,
        "compressed_weights": len(report.layer_errors), "kept_exact": len(report.kept_exact)}}
    return dataclasses.replace(erasure, increments=increments, metadata=metadata), report


def _worth_compressing(increment: WeightIncrement, delta: torch.Tensor, rank: int) -> bool:
    if delta.ndim < 2:
        return False
    if increment.is_lora:
        return increment.rank > rank
    rows, columns = delta.shape[0], delta[0].numel()
    return rank * (rows + columns) < rows * columns


def _parameter_count(increment: WeightIncrement) -> int:
    if increment.is_lora:
        return increment.down.numel() + increment.up.numel()
    return increment.full.numel()
