"""The measured option ``sampling_reuse``: one partial-sampling trajectory serving several erase steps."""

from __future__ import annotations

import dataclasses

import torch

from recare_core.methods.recare_config import ReCAREConfig
from recare_core.methods.stage_erase import erase_stage, robust_erase_stage
from recare_core.training.run import TrainingRun
from recare_core.training.weight_update import WeightUpdate
from test_merged_update import toy_backend

torch.set_num_threads(1)
CONFIG = ReCAREConfig(erase_steps=4, robust_steps=4, ddim_steps=10, fixed_k=3, image_size=8, erase_lr=1e-3, seed=0)


def _evaluations(reuse: int) -> tuple[dict, dict, list[float]]:
    backend = toy_backend()
    config = dataclasses.replace(CONFIG, sampling_reuse=reuse)
    run = TrainingRun(backend, total_steps=8)
    update = WeightUpdate(backend.trainable_modules("noxattn"), "full")
    try:
        losses = erase_stage(run, update, "nudity", config, learned_tokens={}, name="erase", seed=0)
        robust_erase_stage(run, update, ["nudity"], ["a person"], ["a photo of person"], config, learned_tokens={},
                           name="stage2", seed=0)
    finally:
        update.detach()
    return run.records["erase"].evaluations, run.records["stage2"].evaluations, losses


def test_reuse_samples_once_per_group_of_steps_and_still_trains():
    erase_1, robust_1, losses_1 = _evaluations(1)
    erase_2, robust_2, losses_2 = _evaluations(2)
    assert erase_1["sampling"] == 4 * 2 * 3 and erase_2["sampling"] == 2 * 2 * 3  # k=3 CFG steps per x_t
    assert erase_2["teacher"] == erase_1["teacher"] // 2  # the frozen teacher's target is reused with its x_t
    assert erase_2["student"] == erase_1["student"] == 4
    assert robust_2["sampling"] == robust_1["sampling"] // 2 and robust_2["teacher"] == robust_1["teacher"]
    assert losses_1[0] == losses_2[0]  # the first step is the same; later ones see a reused trajectory
    assert losses_2[1] != losses_1[1]
