"""Several concepts erased in one run, SepME-style (arXiv 2402.05947): one separable increment per concept.

Each concept is erased by the chosen registered method on its own, from the original weights, with the same
settings and seed whatever the other concepts are, so its increment does not depend on them. The erasure of a
set of concepts is the sum of their increments; removing a concept recomposes the others from the original
weights (as ComfyUI re-applies patches to its backed-up weights), which gives exactly the model that erased only
the others. What a sum of separately trained increments costs in interference is measured, not assumed
(``benchmarks/toyworld_multi_concept.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..erasure.increments import WeightIncrement
from ..progress import ProgressCallback, StopCallback
from ..training.backend import DiffusionBackend
from .registry import ErasureMethod, MethodInputs, MethodResult


@dataclass
class SeparableErasure:
    """Per-concept results of one multi-concept run, in the order the concepts were given."""

    results: dict[str, MethodResult]

    @property
    def concepts(self) -> list[str]:
        return list(self.results)

    def increments(self, concepts: Sequence[str] | None = None) -> dict[str, WeightIncrement]:
        """The summed increments of ``concepts`` (default: all), as dense deltas, added in run order."""
        chosen = self.concepts if concepts is None else list(concepts)
        unknown = [c for c in chosen if c not in self.results]
        if unknown:
            raise ValueError(f"No increment for {unknown}; this erasure holds {self.concepts}.")
        total: dict[str, torch.Tensor] = {}
        for concept in self.concepts:
            if concept not in chosen:
                continue
            for key, increment in self.results[concept].increments.items():
                delta = increment.delta().float()
                total[key] = delta.clone() if key not in total else total[key] + delta
        return {key: WeightIncrement(full=delta) for key, delta in total.items()}

    def without(self, concept: str) -> "SeparableErasure":
        """The erasure of every concept but ``concept``."""
        if concept not in self.results:
            raise ValueError(f"'{concept}' is not erased here; this erasure holds {self.concepts}.")
        return SeparableErasure({c: r for c, r in self.results.items() if c != concept})


def _sub_progress(progress: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
    """Concept ``index`` of ``count``'s progress on one scale of ``1000 * count``."""
    if progress is None:
        return None

    def report(step: int, total: int, message: str) -> None:
        progress(1000 * index + 1000 * min(step, total) // max(total, 1), 1000 * count,
                 f"concept {index + 1}/{count}: {message}")

    return report


def erase_each(method: ErasureMethod, backend: DiffusionBackend, concepts: Sequence[str],
               inputs: Callable[[str], MethodInputs] | None = None, config: Any | None = None,
               progress: ProgressCallback | None = None, should_stop: StopCallback | None = None
               ) -> SeparableErasure:
    """Erase every concept of ``concepts`` with ``method`` separately; ``inputs(concept)`` gives each concept's
    inputs (default: the concept alone, for methods that need nothing else)."""
    names = [c.strip() for c in concepts if c and c.strip()]
    if not names:
        raise ValueError("No concepts to erase: give one or more concepts.")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ValueError(f"Each concept may be erased once; repeated: {duplicates}.")
    make_inputs = inputs or (lambda concept: MethodInputs(concept))
    results = {}
    for index, concept in enumerate(names):
        results[concept] = method.run(backend, make_inputs(concept), config,
                                      progress=_sub_progress(progress, index, len(names)), should_stop=should_stop)
    return SeparableErasure(results)
