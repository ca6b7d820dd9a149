"""A reduced run of the toy-world benchmark (``benchmarks/toyworld_erasure.py``) on the shipped toy world: one
seed, the ``ci`` schedule. It checks the effect the full benchmark established with the reference learning rates
(README, "Does it work?"): ReCARE takes the target texture away from the target prompts without wrecking the
model. ESD is left out here: at this budget the full benchmark saw it lower the target rate only a little."""

from __future__ import annotations

import pytest
import torch

from recare_core.toyworld.default import load_world
from recare_core.toyworld.experiment import experiment_settings, run_experiment


@pytest.mark.slow
def test_reduced_benchmark_recare_erases_the_target_and_keeps_the_model_working():
    torch.set_num_threads(2)
    result = run_experiment(load_world(), experiment_settings("ci", seed=0), seed=0, methods=("original", "recare"))
    original, recare = result["methods"]["original"], result["methods"]["recare"]
    assert original["target_rate"] >= 0.75, "the shipped model should draw stripes when asked"
    assert recare["target_rate"] <= original["target_rate"] - 0.5, (original, recare)
    assert recare["utility"] >= original["utility"] - 0.15, (original, recare)
    assert result["care_set"], "the CARE-set is built automatically from the generated target images"
