"""ReCARE unlearning end to end (spec section 2) against any :class:`~recare_core.training.backend.DiffusionBackend`.

Stage 1, for each round: erase the current concept (ESD, normalised negative guidance), then learn an adversarial
token on the erased model by textual inversion; the next round erases that token, its teacher being the model
erased so far. Stage 2 restarts from the original weights and erases the concept together with the first
``num_adv_concepts`` learned tokens, anchored on and retaining the CARE-set. The model's own weights are never
changed: the update lives in hooks (:class:`~recare_core.training.weight_update.WeightUpdate`) that are removed before
returning, also on error or interruption; the result carries the stage-2 update as erasure increments.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..progress import Interrupted, ProgressCallback, StopCallback
from ..training.backend import DiffusionBackend
from ..training.run import NonFiniteLossError, TrainingOutOfMemoryError, TrainingRun
from .age import AdaptiveAnchor
from .common import new_update, require_concept, require_tokens, training_context
from .recare_config import CONCEPT_TYPES, PRESETS, ReCAREConfig
from .doco import GradientSurgery
from .registry import ErasureMethod, MethodInputs, MethodResult, register
from .stage_erase import erase_stage, robust_erase_stage
from .textual_inversion import (
    adversarial_token_name,
    encode_images_once,
    prepare_images,
    round_image_indices,
    textual_inversion,
)

__all__ = [
    "CONCEPT_TYPES", "PRESETS", "Interrupted", "NonFiniteLossError", "ReCAREConfig", "TrainingOutOfMemoryError",
    "run_recare",
]


class EmptyCareSetError(ValueError):
    """The CARE-set has no anchor or no retain prompts."""


def _validate_inputs(backend: DiffusionBackend, images: torch.Tensor, anchors: Sequence[str],
                     retains: Sequence[str], concept: str, config: ReCAREConfig) -> None:
    config.validate()
    require_tokens(backend, concept, "concept to erase")
    if config.robust_steps and (not anchors or not retains):
        raise EmptyCareSetError(
            f"The CARE-set is empty ({len(anchors)} anchor and {len(retains)} retain prompts): build it from "
            "images of the concept first, or give at least one anchor and one retain prompt.")
    if config.n_rounds and config.ti_steps:
        require_tokens(backend, config.initializer_token, "initializer token")
        if images is None or images.dim() != 4 or images.shape[0] == 0:
            raise ValueError("No target images: generate images of the concept to erase with the original model first.")
        if images.shape[0] < config.n_rounds:
            raise ValueError(
                f"{images.shape[0]} target images are too few for {config.n_rounds} rounds: each round's textual "
                f"inversion needs its own images. Give at least {config.n_rounds} images (the paper uses hundreds) "
                "or lower n_rounds.")


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
    update = new_update(run.backend, config, config.seed)
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
               progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> MethodResult:
    """Erase ``erase_concept`` with ReCARE. ``target_images``: ``(B, H, W, 3)`` in [0, 1], images of the concept
    made with the original model. Leaves the backend's model exactly as it was (also when interrupted: raises
    :class:`Interrupted`). Errors: ``ValueError`` for bad input, :class:`NonFiniteLossError` (names stage,
    step and the learning rate to lower), :class:`TrainingOutOfMemoryError` (names memory-saving options)."""
    config = config or ReCAREConfig()
    inputs = MethodInputs(erase_concept, target_images, care_set_anchor_prompts, care_set_retain_prompts).cleaned()
    concept = require_concept(inputs.concept)
    anchors, retains = list(inputs.anchor_prompts), list(inputs.retain_prompts)
    _validate_inputs(backend, target_images, anchors, retains, concept, config)
    run = TrainingRun(backend, total_steps=config.total_steps, mixed_precision=config.mixed_precision,
                      progress=progress, should_stop=should_stop)
    with training_context(backend, "ReCARE training", config.gradient_checkpointing):
        images = target_images.detach().clone() if target_images is not None else None
        run.check_stop()
        learned = _stage_one(run, images, concept, config) if config.n_rounds else {}
        erase_concepts = [concept] + list(learned)[:config.num_adv_concepts]
        update = new_update(backend, config, config.seed + 3)
        try:
            if config.robust_steps:
                robust_erase_stage(run, update, erase_concepts, anchors, retains, config, learned_tokens=learned,
                                   name="stage2", seed=config.seed + 3,
                                   **stage_two_options(run, anchors, retains, learned, config))
            increments = update.to_erasure_increments()
        finally:
            update.detach()
    return MethodResult(increments=increments, learned_tokens=learned, erase_concepts=erase_concepts,
                        stages=run.records)


def stage_two_options(run: TrainingRun, anchors: Sequence[str], retains: Sequence[str],
                      learned: dict[str, torch.Tensor], config: ReCAREConfig) -> dict:
    """The optional parts of :func:`robust_erase_stage` that ``config`` asks for: AGE's adaptive anchor over the
    CARE-set (``anchor_mode="age"``) and DoCo's gradient surgery (``doco_surgery``)."""
    mixture = None
    if config.anchor_mode == "age":
        mixture = AdaptiveAnchor(run.conditionings(anchors, learned), run.conditionings(retains, learned),
                                 temperature=config.age_temperature, top_k=config.age_top_k, lr=config.age_lr,
                                 seed=config.seed + 4)
    surgery = GradientSurgery(config.doco_lambda) if config.doco_surgery else None
    return {"anchor_mixture": mixture, "surgery": surgery}


def _run(backend: DiffusionBackend, inputs: MethodInputs, config: ReCAREConfig, progress: ProgressCallback | None,
         should_stop: StopCallback | None) -> MethodResult:
    return run_recare(backend, inputs.target_images, inputs.anchor_prompts, inputs.retain_prompts, inputs.concept,
                      config, progress, should_stop)


RECARE = register(ErasureMethod(
    name="recare", title="ReCARE", config_type=ReCAREConfig, runner=_run,
    needs_images=True, needs_care_set=True, learns_tokens=True,
    description="Adversarial erase / textual-inversion rounds, then a robust erase from the original weights "
                "that anchors on and retains the CARE-set (minutes to hours; best robustness to attacks)."))
