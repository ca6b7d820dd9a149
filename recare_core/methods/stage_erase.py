"""The two erasure losses of ReCARE: stage 1 (ESD with normalised negative guidance) and stage 2 (robust erase
with compositional guidance anchored on, and a retain loss over, the CARE-set)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..training.guidance import normalized_negative_guidance, weighted_compositional_guidance
from ..training.sampling import evaluation_timestep, partial_ddim_sample
from ..training.run import TrainingRun, describe_stage
from .age import AdaptiveAnchor
from .doco import GradientSurgery
from .recare_config import ReCAREConfig
from ..training.weight_update import WeightUpdate


def balanced_draw(items: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` draws where each item appears about equally often: whole repeats shuffled, then the remainder
    as distinct random items appended (the reference's order)."""
    if not items:
        raise ValueError("Cannot draw from an empty list.")
    drawn = list(items) * (count // len(items))
    rng.shuffle(drawn)
    remainder = count - len(drawn)
    drawn.extend(items[i] for i in rng.choice(len(items), remainder, replace=False))
    return drawn


def training_point(run: TrainingRun, cond: torch.Tensor, uncond: torch.Tensor, config: ReCAREConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, timesteps)``: ``k`` DDIM steps with the current (student) weights, CFG ``sampling_cfg``, from
    fresh noise; the timestep of the predictions follows ``config.timestep_mapping``."""
    backend = run.backend
    if config.fixed_k is not None:
        k = config.fixed_k
    else:
        k = int(torch.randint(1, config.ddim_steps - 1, (1,), generator=generator))
    noise = torch.randn(backend.latent_shape(1, config.image_size), generator=generator).to(backend.device)
    x_t = partial_ddim_sample(run.sampler(), noise, cond, uncond, k, config.ddim_steps, backend.alphas_cumprod,
                              config.sampling_cfg)
    t = evaluation_timestep(k, config.ddim_steps, backend.alphas_cumprod.shape[0], config.timestep_mapping)
    return x_t, torch.tensor([t], dtype=torch.long)


def erase_stage(run: TrainingRun, update: WeightUpdate, concept: str, config: ReCAREConfig, *,
                learned_tokens: Mapping[str, torch.Tensor], name: str, seed: int) -> list[float]:
    """Stage-1 erasure of ``concept`` for ``config.erase_steps`` steps; returns the losses.

    loss = MSE(student e(x_t | concept), e_c - (s - 1) * normalised update) with teacher (update off) e_c, e_u.
    With ``config.sampling_reuse`` N > 1 one partial-sampling trajectory (and its target) serves N steps.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(update.parameters(), lr=config.erase_lr)
    uncond, cond = run.conditionings(["", concept], learned_tokens).split(1)
    with run.stage(name) as record:
        for step in range(config.erase_steps):
            if step % config.sampling_reuse == 0:  # a reused x_t keeps its (frozen) teacher's target too
                x_t, t = training_point(run, cond, uncond, config, generator)
                with torch.no_grad(), update.enabled(False):
                    e_uncond, e_cond = run.predict("teacher", torch.cat([x_t, x_t]), t.repeat(2),
                                                   torch.cat([uncond, cond])).chunk(2)
                target = normalized_negative_guidance(e_cond, e_uncond, config.negative_guidance,
                                                      config.guidance_eta)
            student = run.predict("student", x_t, t, cond)
            loss = F.mse_loss(student, target)
            value = run.optimise(loss, optimizer, stage=name, step=step + 1, lr_name="erase_lr")
            run.step_done(name, {name: value},
                          f"{describe_stage(name)}: step {step + 1}/{config.erase_steps}, loss {value:.4g}")
    return list(record.losses.get(name, []))


def stage_two_weights(config: ReCAREConfig, n_erase_concepts: int) -> tuple[list[float], float, list[float]]:
    """``(erase coefficients, anchor coefficient, erase-loss weights)`` of the stage-2 target and loss.

    Erase concept 0 is the concept, the rest are learned adversarial tokens with relative weight
    ``adversarial_weight`` ``a``: concept ``j`` gets the coefficient ``-E * n * w_j / sum(w)`` (``w_0 = 1``,
    ``w_j = a``; ``E = stage2_erase_weight``), so the erase group's mean is ``-E`` times the ``w``-weighted mean
    of their updates, and its erase loss is multiplied by ``w_j``. The anchor's coefficient is
    ``stage2_anchor_weight``. At the defaults (``a = 1``) the coefficients are exactly the reference's
    ``(-S - 1)`` and ``(S - 1)`` and every loss weight is 1.
    """
    if n_erase_concepts < 1:
        raise ValueError("Stage 2 needs at least one erase concept.")
    shares = [1.0] + [float(config.adversarial_weight)] * (n_erase_concepts - 1)
    norm = n_erase_concepts / sum(shares)
    erase = [-config.stage2_erase_weight * (share * norm) for share in shares]
    return erase, config.stage2_anchor_weight, shares


def robust_erase_stage(run: TrainingRun, update: WeightUpdate, erase_concepts: Sequence[str],
                       anchor_prompts: Sequence[str], retain_prompts: Sequence[str], config: ReCAREConfig, *,
                       learned_tokens: Mapping[str, torch.Tensor], name: str = "stage2", seed: int,
                       anchor_mixture: AdaptiveAnchor | None = None, surgery: GradientSurgery | None = None
                       ) -> dict[str, list[float]]:
    """Stage-2 robust erase for ``config.robust_steps`` steps; returns ``{"<name>_total"|"_erase"|"_retain": losses}``.

    Each step draws (balanced) one erase concept, one anchor and one retain prompt; x_t comes from the student
    conditioned on the erase concept. erase loss = MSE(student e(x_t | erase concept), compositional target with
    every erase concept negative (reference: -S, i.e. weight S + 1) and the anchor positive (reference: +S, i.e.
    weight S - 1) around teacher e_u, weights from :func:`stage_two_weights`); retain loss =
    MSE(student e(x_t | retain), teacher e(x_t | retain)); total = w * erase + retain_weight * retain, with ``w``
    the drawn erase concept's loss weight (1 for the concept, ``adversarial_weight`` for a learned token).
    Options: ``anchor_mixture`` (AGE, :mod:`.age`) replaces the drawn anchor and retain prompts by its adaptive
    mixture and ascends the retain loss; ``surgery`` (DoCo, :mod:`.doco`) replaces the plain optimiser step.
    With ``config.sampling_reuse`` N > 1 one partial-sampling trajectory serves N steps (the teacher still sees
    each step's prompts).
    """
    if not erase_concepts or not anchor_prompts or not retain_prompts:
        raise ValueError("Stage 2 needs at least one erase concept, one anchor prompt and one retain prompt.")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    steps = config.robust_steps
    erase_draw = balanced_draw(list(erase_concepts), steps, rng)
    anchor_draw = balanced_draw(list(anchor_prompts), steps, rng)
    retain_draw = balanced_draw(list(retain_prompts), steps, rng)
    negatives = list(erase_concepts)
    erase_coefficients, anchor_coefficient, loss_weights = stage_two_weights(config, len(negatives))
    coefficients = erase_coefficients + [anchor_coefficient]
    positive = [False] * len(negatives) + [True]
    loss_weight = dict(zip(negatives, loss_weights))
    uncond = run.conditionings([""], learned_tokens)
    run.conditionings(negatives + list(anchor_prompts) + list(retain_prompts), learned_tokens)
    optimizer = torch.optim.AdamW(update.parameters(), lr=config.robust_lr)
    with run.stage(name) as record:
        for step in range(steps):
            erase_cond, anchor_cond, retain_cond = run.conditionings(
                [erase_draw[step], anchor_draw[step], retain_draw[step]], learned_tokens).split(1)
            if anchor_mixture is not None:
                anchor_cond, retain_cond = anchor_mixture.conditionings()
            if step % config.sampling_reuse == 0:
                x_t, t = training_point(run, erase_cond, uncond, config, generator)
            teacher_conds = torch.cat([uncond, run.conditionings(negatives, learned_tokens), anchor_cond, retain_cond])
            rows = teacher_conds.shape[0]
            with torch.no_grad(), update.enabled(False):
                teacher = run.predict("teacher", torch.cat([x_t] * rows), t.repeat(rows), teacher_conds)
            e_uncond, e_negatives, e_anchor, e_retain = teacher.split([1, len(negatives), 1, 1])
            target = weighted_compositional_guidance([*e_negatives.split(1), e_anchor], e_uncond, coefficients,
                                                     positive, config.guidance_eta)
            student = run.predict("student", torch.cat([x_t, x_t]), t.repeat(2), torch.cat([erase_cond, retain_cond]))
            erase_loss = F.mse_loss(student[:1], target)
            retain_loss = F.mse_loss(student[1:], e_retain)
            erase_term = loss_weight[erase_draw[step]] * erase_loss
            loss = erase_term + config.retain_weight * retain_loss
            if surgery is None:
                value = run.optimise(loss, optimizer, stage=name, step=step + 1, lr_name="robust_lr")
            else:
                value = surgery.step(run, erase_term, config.retain_weight * retain_loss, optimizer,
                                     update.parameters(), stage=name, step=step + 1, lr_name="robust_lr",
                                     retain_only=[anchor_mixture.logits] if anchor_mixture is not None else [])
            values = {f"{name}_total": value, f"{name}_erase": float(erase_loss.detach()),
                      f"{name}_retain": float(retain_loss.detach())}
            if anchor_mixture is not None:
                anchor_mixture.ascend()
                values[f"{name}_age_max_weight"] = max(anchor_mixture.weights())
            if surgery is not None:
                values[f"{name}_doco_conflict_share"] = surgery.last_conflict_share
            run.step_done(name, values, f"{describe_stage(name)}: step {step + 1}/{steps}, loss {value:.4g} "
                                        f"(erase {values[f'{name}_erase']:.4g}, retain {values[f'{name}_retain']:.4g})")
    return {key: list(values) for key, values in record.losses.items()}
