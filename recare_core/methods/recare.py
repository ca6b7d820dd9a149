"""ReCARE unlearning end to end (spec section 2) against any :class:`~recare_core.training.backend.DiffusionBackend`.

Stage 1, for each round: erase the current concept (ESD, normalised negative guidance), then learn an adversarial
token on the erased model by textual inversion; the next round erases that token, its teacher being the model
erased so far. Stage 2 restarts from the original weights and erases the concept together with the first
``num_adv_concepts`` learned tokens, anchored on and retaining the CARE-set. The model's own weights are never
changed: the update lives in hooks (:class:`~recare_core.training.weight_update.WeightUpdate`) that are removed before
returning, also on error or interruption; the result carries the stage-2 update as erasure increments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from ..training.backend import DiffusionBackend
from ..training.checkpointing import gradient_checkpointing
from ..erasure.increments import WeightIncrement
from .stage_erase import erase_stage, robust_erase_stage
from .textual_inversion import (
    adversarial_token_name,
    encode_images_once,
    prepare_images,
    round_image_indices,
    textual_inversion,
)
from ..training.run import (
    NonFiniteLossError,
    ProgressCallback,
    StageRecord,
    StopCallback,
    TrainingInterrupted,
    TrainingOutOfMemoryError,
    TrainingRun,
    out_of_memory_as_error,
)
from .recare_config import CONCEPT_TYPES, PRESETS, ReCAREConfig
from ..training.weight_update import WeightUpdate

__all__ = [
    "CONCEPT_TYPES", "PRESETS", "NonFiniteLossError", "ReCAREConfig", "ReCAREResult", "TrainingInterrupted",
    "TrainingOutOfMemoryError", "run_recare",
]


@dataclass
class ReCAREResult:
    """What a run produced: stage-2 increments (keyed by the backend's parameter names), the learned adversarial
    tokens (``{placeholder: (1, token_dim)}`` on the CPU), the concepts stage 2 erased, and per-stage records."""

    increments: dict[str, WeightIncrement]
    learned_tokens: dict[str, torch.Tensor]
    erase_concepts: list[str]
    stages: dict[str, StageRecord] = field(default_factory=dict)

    @property
    def losses(self) -> dict[str, list[float]]:
        """Loss curve per name (``stage1_round0_erase``, ``stage1_round0_ti``, ..., ``stage2_total``,
        ``stage2_erase``, ``stage2_retain``)."""
        return {name: list(values) for record in self.stages.values() for name, values in record.losses.items()}

    @property
    def timings(self) -> dict[str, float]:
        return {name: record.seconds for name, record in self.stages.items()}

    @property
    def evaluations(self) -> dict[str, dict[str, int]]:
        """UNet sample-evaluations (batch rows) per stage and role (sampling / teacher / student)."""
        return {name: dict(record.evaluations) for name, record in self.stages.items()}


class EmptyCareSetError(ValueError):
    """The CARE-set has no anchor or no retain prompts."""


def _require_tokens(backend: DiffusionBackend, word: str, what: str) -> None:
    try:
        rows = backend.token_embedding(word).shape[0]
    except ValueError as error:
        raise ValueError(f"The {what} '{word}' tokenises to nothing: {error}") from error
    if not word.strip() or rows == 0:
        raise ValueError(f"The {what} '{word}' tokenises to nothing; use a word or phrase made of letters.")


def _validate_inputs(backend: DiffusionBackend, images: torch.Tensor, anchors: Sequence[str],
                     retains: Sequence[str], concept: str, config: ReCAREConfig) -> None:
    config.validate()
    _require_tokens(backend, concept, "concept to erase")
    if config.robust_steps and (not anchors or not retains):
        raise EmptyCareSetError(
            f"The CARE-set is empty ({len(anchors)} anchor and {len(retains)} retain prompts): build it from "
            "images of the concept first, or give at least one anchor and one retain prompt.")
    if config.n_rounds and config.ti_steps:
        _require_tokens(backend, config.initializer_token, "initializer token")
        if images is None or images.dim() != 4 or images.shape[0] == 0:
            raise ValueError("No target images: generate images of the concept to erase with the original model first.")
        if images.shape[0] < config.n_rounds:
            raise ValueError(
                f"{images.shape[0]} target images are too few for {config.n_rounds} rounds: each round's textual "
                f"inversion needs its own images. Give at least {config.n_rounds} images (the paper uses hundreds) "
                "or lower n_rounds.")


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for ``module``'s own parameters inside the block; flags restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _checkpoint_blocks(backend: DiffusionBackend) -> list[nn.Module]:
    """The backend's checkpointable blocks; none when it does not offer any (checkpointing then refuses)."""
    finder = getattr(backend, "checkpoint_blocks", None)
    return list(finder()) if finder is not None else []


def _new_update(backend: DiffusionBackend, config: ReCAREConfig, seed: int) -> WeightUpdate:
    with out_of_memory_as_error(f"the setup of the '{config.update}' weight update"):
        return WeightUpdate(backend.trainable_modules(config.train_method), config.update, rank=config.lora_rank,
                            alpha=config.lora_alpha, train_bias=config.train_bias, device=backend.device,
                            seed=seed)


def _encode_round_images(run: TrainingRun, images: torch.Tensor, config: ReCAREConfig
                         ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each round's ``(latents, flipped latents)``, every image encoded once, before any training starts (so the
    autoencoder is not needed again while the denoiser trains)."""
    slices = [round_image_indices(images.shape[0], r, config.n_rounds) for r in range(config.n_rounds)]
    used = sorted({index for indices in slices for index in indices})
    with run.stage("stage1_encode_images"):
        prepared = prepare_images(images[used], config.image_size, config.center_crop)
        latents, flipped = encode_images_once(run, prepared, config.ti_flip)
    rows = {index: row for row, index in enumerate(used)}
    picks = [[rows[index] for index in indices] for indices in slices]
    return [(latents[p], None if flipped is None else flipped[p]) for p in picks]


def _stage_one(run: TrainingRun, images: torch.Tensor, concept: str, config: ReCAREConfig) -> dict[str, torch.Tensor]:
    """Erase / attack rounds; returns the learned tokens in round order. The update is removed afterwards."""
    learned: dict[str, torch.Tensor] = {}
    round_latents = _encode_round_images(run, images, config) if config.ti_steps else []
    update = _new_update(run.backend, config, config.seed)
    try:
        current = concept
        initial = run.backend.token_embedding(config.initializer_token).float().mean(dim=0, keepdim=True)
        for r in range(config.n_rounds):
            if r:
                update.commit()  # the model erased so far becomes this round's teacher
            update.requires_grad_(True)
            erase_stage(run, update, current, config, learned_tokens=learned, name=f"stage1_round{r}_erase",
                        seed=config.seed + 10 * r + 1)
            update.requires_grad_(False)
            placeholder = adversarial_token_name(r)
            token = initial.clone()
            if config.ti_steps:
                latents, flipped = round_latents[r]
                token = textual_inversion(run, latents, placeholder, initial, config, name=f"stage1_round{r}_ti",
                                          seed=config.seed + 10 * r + 2, flipped_latents=flipped)
            learned[placeholder] = token.cpu()
            current = placeholder
    finally:
        update.detach()
    return learned


def run_recare(backend: DiffusionBackend, target_images: torch.Tensor, care_set_anchor_prompts: Sequence[str],
               care_set_retain_prompts: Sequence[str], erase_concept: str, config: ReCAREConfig | None = None,
               progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> ReCAREResult:
    """Erase ``erase_concept`` with ReCARE. ``target_images``: ``(B, H, W, 3)`` in [0, 1], images of the concept
    made with the original model. Leaves the backend's model exactly as it was (also when interrupted: raises
    :class:`TrainingInterrupted`). Errors: ``ValueError`` for bad input, :class:`NonFiniteLossError` (names stage,
    step and the learning rate to lower), :class:`TrainingOutOfMemoryError` (names memory-saving options)."""
    config = config or ReCAREConfig()
    concept = (erase_concept or "").strip()
    if not concept:
        raise ValueError("No concept to erase: give the concept as a word or short prompt (e.g. 'nudity').")
    anchors = [p.strip() for p in care_set_anchor_prompts if p and p.strip()]
    retains = [p.strip() for p in care_set_retain_prompts if p and p.strip()]
    _validate_inputs(backend, target_images, anchors, retains, concept, config)
    run = TrainingRun(backend, total_steps=config.total_steps, mixed_precision=config.mixed_precision,
                      progress=progress, should_stop=should_stop)
    blocks = _checkpoint_blocks(backend) if config.gradient_checkpointing else []
    with out_of_memory_as_error("ReCARE training"), torch.inference_mode(False), torch.enable_grad(), \
            _frozen(backend.denoiser()), gradient_checkpointing(blocks, config.gradient_checkpointing):
        images = target_images.detach().clone() if target_images is not None else None
        run.check_stop()
        learned = _stage_one(run, images, concept, config) if config.n_rounds else {}
        erase_concepts = [concept] + list(learned)[:config.num_adv_concepts]
        update = _new_update(backend, config, config.seed + 3)
        try:
            if config.robust_steps:
                robust_erase_stage(run, update, erase_concepts, anchors, retains, config, learned_tokens=learned,
                                   name="stage2", seed=config.seed + 3)
            increments = update.to_erasure_increments()
        finally:
            update.detach()
    return ReCAREResult(increments=increments, learned_tokens=learned, erase_concepts=erase_concepts,
                        stages=run.records)
