"""The toy world shipped in ``recare_core/toyworld/weights``: every file loads through the pack's own loaders and
each part still reaches the quality its ``report.json`` records, measured the same way (a fresh retraining is
compared by ``benchmarks/toyworld_retrain.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recare_core.toyworld.torch_backend import TorchBackend
from recare_core.toyworld.checkers import checker_accuracy, render_labelled
from recare_core.toyworld.default import has_weights, load_report, load_world
from recare_core.toyworld.train import clip_zero_shot_accuracy, text_to_image_quality
from recare_core.toyworld.world import ATTRIBUTES

TOLERANCE = 0.05  # other CPUs and torch builds round differently; the figures are shares of a few hundred images


@pytest.fixture(scope="module")
def shipped():
    assert has_weights(), "the trained toy world is missing from recare_core/toyworld/weights"
    torch.set_num_threads(2)
    return load_world(), load_report()


def test_checker_is_exact_on_fresh_renders(shipped):
    models, _ = shipped
    images, labels = render_labelled(np.random.default_rng(99), 400, 16)
    with torch.no_grad():
        accuracy = checker_accuracy(models.checker, images, labels)
    assert accuracy["all"] >= 0.99, accuracy


def test_clip_reaches_its_reported_zero_shot_accuracy(shipped):
    models, report = shipped
    measured = clip_zero_shot_accuracy(models.clip)
    for attribute in ATTRIBUTES:
        assert measured[attribute] >= report["clip"]["zero_shot_accuracy"][attribute] - TOLERANCE, measured


@pytest.mark.slow
def test_text_to_image_reaches_its_reported_quality(shipped):
    models, report = shipped
    quality = text_to_image_quality(TorchBackend(models.model), models.checker)
    reported = report["t2i"]["quality"]
    for key in ("target_prompts_striped", "care_prompts_circle"):
        assert abs(quality[key] - reported[key]) <= 2 * TOLERANCE, (key, quality[key], reported[key])
    for attribute, value in reported["attribute_accuracy"].items():
        assert quality["attribute_accuracy"][attribute] >= value - 2 * TOLERANCE, (attribute, quality)
    assert quality["target_prompts_striped"] >= 0.75 and quality["care_prompts_circle"] >= 0.75
