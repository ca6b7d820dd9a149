"""Textual-inversion options: batches, early stopping on a held-out loss, and the presets that use them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recare_core.methods.recare_config import PRESETS, ReCAREConfig
from recare_core.methods.textual_inversion import encode_images_once, prepare_images, textual_inversion
from recare_core.training.run import TrainingRun
from test_merged_update import toy_backend

torch.set_num_threads(1)


def _learn(config: ReCAREConfig, total: int | None = None):
    backend = toy_backend()
    progress: list[tuple[int, int]] = []
    run = TrainingRun(backend, total_steps=total or config.ti_steps,
                      progress=lambda step, steps, message: progress.append((step, steps)))
    images = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(3))
    latents, flipped = encode_images_once(run, prepare_images(images, 8), True)
    initial = backend.token_embedding("person").float().mean(0, keepdim=True)
    with torch.enable_grad():
        token = textual_inversion(run, latents, "tok", initial, config, name="ti", seed=0, flipped_latents=flipped)
    return token, run.records["ti"], progress, initial


def test_batches_evaluate_that_many_examples_per_step():
    token, record, progress, initial = _learn(ReCAREConfig(ti_steps=3, ti_batch_size=4, image_size=8))
    assert record.steps == 3 and record.evaluations["student"] == 12
    assert progress[-1] == (3, 3)
    assert not torch.equal(token, initial)


def test_early_stopping_ends_a_stalled_inversion_and_completes_the_progress_bar():
    # A learning rate this small cannot move the held-out loss by 1 %: the run stops after `patience` checks.
    config = ReCAREConfig(ti_steps=40, ti_lr=1e-9, ti_patience=2, ti_check_every=5, ti_check_examples=4,
                          image_size=8)
    _, record, progress, _ = _learn(config)
    assert record.steps == 15  # first check sets the best loss, the next two do not improve it
    assert progress[-1] == (40, 40)
    _, full_record, _, _ = _learn(dataclasses.replace(config, ti_patience=0))
    assert full_record.steps == 40


def test_fast_preset_changes_only_textual_inversion_and_paper_stays_the_reference():
    paper, fast = PRESETS["paper"], PRESETS["fast"]
    assert paper == ReCAREConfig()
    assert paper.ti_batch_size == 1 and paper.ti_patience == 0 and paper.ti_steps == 3000
    changed = ReCAREConfig.preset_fields("fast")
    assert "ti_lr" in changed and all(name.startswith("ti_") for name in changed)
    assert ReCAREConfig.preset_fields("paper") == set()
    assert ReCAREConfig.preset_fields("quick") == set(ReCAREConfig.PRESET_FIELDS)
    assert fast.ti_steps * fast.ti_batch_size < paper.ti_steps


@pytest.mark.parametrize("field, value", [("ti_batch_size", 0), ("ti_check_every", 0), ("ti_patience", -1)])
def test_bad_ti_options_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(ReCAREConfig(), **{field: value}).validate()
