"""AGE's adaptive anchor (Bui et al., ICLR 2025, "Fantastic targets for concept erasure") for ReCARE's stage 2.

Instead of one CARE-set prompt per step, the anchor (and the concept retained) is a mixture of the CARE-set's
conditionings, weighted by a Gumbel-softmax over learned logits ``pi`` restricted to the ``top_k`` largest
weights, as in AGE's ``train_age.py``. ``pi`` is trained adversarially: it ascends the retain loss (the student's
deviation from the teacher on the mixture), so the anchor moves to the nearby concepts the erasure disturbs
most, while the weights descend it. AGE alternates the two updates; here both come from the same backward pass
each step (simultaneous gradient descent-ascent), which costs no extra UNet evaluation.
"""

from __future__ import annotations

from typing import Sequence

import torch


class AdaptiveAnchor:
    """A Gumbel-softmax mixture of ``anchor_conds`` / ``retain_conds`` (paired rows, ``(n, ...)`` each) with
    learned logits. ``temperature``, ``top_k`` and ``lr`` are AGE's ``gumbel_temp`` (2), ``gumbel_topk`` (5)
    and ``gumbel_lr`` (1e-3)."""

    def __init__(self, anchor_conds: torch.Tensor, retain_conds: torch.Tensor, *, temperature: float = 2.0,
                 top_k: int = 5, lr: float = 1e-3, seed: int = 0):
        if anchor_conds.shape[0] != retain_conds.shape[0]:
            raise ValueError(
                f"The AGE anchor needs a CARE-set whose anchor and retain prompts pair up word by word; this one has "
                f"{anchor_conds.shape[0]} anchor and {retain_conds.shape[0]} retain prompts.")
        if temperature <= 0 or top_k < 1 or lr <= 0:
            raise ValueError("age_temperature and age_lr must be positive and age_top_k at least 1.")
        self.anchors, self.retains = anchor_conds.detach(), retain_conds.detach()
        self.temperature, self.top_k = temperature, min(top_k, anchor_conds.shape[0])
        self.logits = torch.zeros(anchor_conds.shape[0], device=anchor_conds.device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=lr, maximize=True)
        self.generator = torch.Generator().manual_seed(seed)

    def sample_weights(self) -> torch.Tensor:
        """Gumbel-softmax weights kept on their ``top_k`` largest entries and renormalised (differentiable)."""
        uniform = torch.rand(self.logits.shape, generator=self.generator).to(self.logits.device)
        gumbel = -torch.log(-torch.log(uniform + 1e-10) + 1e-10)
        weights = torch.softmax((self.logits + gumbel) / self.temperature, dim=-1)
        keep = weights >= torch.topk(weights, self.top_k).values[-1]
        weights = weights * keep
        return weights / weights.sum()

    def conditionings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(anchor, retain)`` conditionings ``(1, ...)`` of one draw of the mixture (gradients reach ``pi``)."""
        weights = self.sample_weights()

        def mix(conds: torch.Tensor) -> torch.Tensor:
            return torch.tensordot(weights.to(conds.dtype), conds, dims=1).unsqueeze(0)

        return mix(self.anchors), mix(self.retains)

    def ascend(self) -> None:
        """One ascent step of ``pi`` on the gradient the last backward left in it."""
        if self.logits.grad is not None:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def weights(self) -> list[float]:
        """The current mixture weights without noise (softmax of ``pi``), for reports."""
        return torch.softmax(self.logits.detach() / self.temperature, dim=-1).tolist()

    def top_prompts(self, prompts: Sequence[str], count: int = 3) -> list[tuple[str, float]]:
        """The ``count`` prompts with the largest current weights."""
        ranked = sorted(zip(prompts, self.weights()), key=lambda item: -item[1])
        return [(prompt, round(weight, 4)) for prompt, weight in ranked[:count]]
