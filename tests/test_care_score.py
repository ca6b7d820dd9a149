"""CARE score (spec section 3) on a tiny random open_clip model built by the test."""

from __future__ import annotations

import pytest
import torch

from recare_core.scoring.care_score import COCO_LABELS, CareScoreInputError, build_label_set, care_score, label_prompt
from tiny_models import build_tiny_care_clip
from recare_core.scoring.score_plot import render_score_grid


@pytest.fixture(scope="module")
def clip():
    return build_tiny_care_clip(seed=3)


def test_default_label_set_is_coco_plus_care_concepts():
    assert len(COCO_LABELS) == 80 and len(set(COCO_LABELS)) == 80
    labels = build_label_set(["freshwater"], erase_concept="tench")
    assert labels[:80] == list(COCO_LABELS) and labels[80:] == ["freshwater", "tench"]
    assert build_label_set(["person"]) == list(COCO_LABELS)  # already a COCO name: not added twice
    assert label_prompt("apple", True) == "A photo of an apple" and label_prompt("dog", True) == "A photo of a dog"
    assert label_prompt("dog", False) == "dog"


def test_score_equals_the_share_of_images_whose_argmax_is_the_care_label(clip):
    images = torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    labels = ["person", "stars", "dog", "nudity"]
    result = care_score(clip, images, "stars", labels=labels, use_template=False, erase_concept="nudity")
    with torch.no_grad():
        sims = clip.embed_images(images) @ clip.embed_texts(labels).T
    winners = [labels[i] for i in sims.argmax(1).tolist()]
    assert result.care_score == pytest.approx(winners.count("stars") / 6)
    assert result.erase_rate == pytest.approx(winners.count("nudity") / 6)
    assert result.mean_care_similarity == pytest.approx(float(sims[:, 1].mean()), abs=1e-6)
    assert [v.top_label for v in result.verdicts] == winners
    report = result.report()
    assert "CARE score" in report and report.count("image ") == 6
    picture = render_score_grid(images, result)
    assert picture.ndim == 4 and picture.shape[0] == 1 and picture.shape[-1] == 3
    assert 0.0 <= float(picture.min()) and float(picture.max()) <= 1.0


def test_bad_input_gives_clear_errors(clip):
    images = torch.rand(2, 32, 32, 3)
    with pytest.raises(CareScoreInputError, match="empty"):
        care_score(clip, torch.zeros(0, 32, 32, 3), "person")
    with pytest.raises(CareScoreInputError, match="not among your labels"):
        care_score(clip, images, "stars", labels=["person", "dog"])
    with pytest.raises(CareScoreInputError, match="(?i)Duplicate labels: dog"):
        care_score(clip, images, "dog", labels=["dog", "cat", "Dog"])
    with pytest.raises(CareScoreInputError, match="at least one CARE concept"):
        care_score(clip, images, "  ")
