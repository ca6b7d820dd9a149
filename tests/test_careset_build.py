"""The whole CARE-set construction on a tiny random CLIP and random images, plus its bad-input errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recare_core.careset.build import (
    CareSet,
    CareSetInputError,
    CareSetSettings,
    build_care_set,
    parse_word_list,
)
from recare_core.careset.plot import render_cluster_map
from recare_core.careset.selection import KEPT
from tiny_models import build_tiny_care_clip
from recare_core.progress import Interrupted


@pytest.fixture(scope="module")
def clip():
    return build_tiny_care_clip(seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vocabulary")


@pytest.fixture(scope="module")
def images():
    return torch.rand(10, 48, 48, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def built(clip, cache_dir, images):
    calls = []
    care_set = build_care_set(images, clip, "nudity", "object", cache_dir=cache_dir,
                              progress=lambda step, total, message: calls.append((step, total, message)))
    return care_set, calls


def test_build_gives_prompts_statistics_and_a_report(built, clip):
    care_set, calls = built
    assert isinstance(care_set, CareSet) and care_set.words
    assert care_set.anchor_prompts == [f"A {w}" for w in care_set.words]
    assert care_set.retain_prompts == [f"A photo of {w}" for w in care_set.words]
    assert care_set.clip_identity == clip.identity and care_set.num_images == 10
    settings = CareSetSettings()
    distinct = care_set.settings["distinct_candidate_words"]
    assert len(care_set.candidates) == min(settings.top_n_tokens, distinct) and distinct > settings.n_clusters
    counts = [c.count for c in care_set.candidates]
    assert counts == sorted(counts, reverse=True) and 1 <= min(counts) and max(counts) <= 10
    assert [c.word for c in care_set.candidates if c.kept] == care_set.words
    assert len(care_set.clusters) == settings.n_clusters
    assert [s.status for s in care_set.clusters][0] == "dropped-low"
    assert [s.status for s in care_set.clusters][-1] == "dropped-high"
    means = [s.mean_residual for s in care_set.clusters]
    assert means == sorted(means)
    for candidate in care_set.candidates:
        assert candidate.kept == (candidate.reason == KEPT)
    report = care_set.report()
    assert "DROPPED (closest" in report and "DROPPED (farthest" in report and "refined away" in report
    assert calls[-1][0] == calls[-1][1] and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


def test_build_is_deterministic_and_reuses_the_cache(built, clip, cache_dir, images):
    first, _ = built
    again = build_care_set(images, clip, "nudity", "object", cache_dir=cache_dir)
    assert again.settings["vocabulary_from_cache"] is True
    assert first.settings["vocabulary_from_cache"] is False
    assert again.candidates == first.candidates and again.anchor_prompts == first.anchor_prompts


def test_style_prompts_and_settings(clip, cache_dir, images):
    settings = CareSetSettings(top_k_per_image=20, top_n_tokens=30, n_clusters=4, k_each_side=1, alpha=0.05,
                               word_hygiene=False)
    care_set = build_care_set(images, clip, "Van Gogh", "style", settings, cache_dir=cache_dir)
    assert care_set.retain_prompts == [f"A painting of {w}" for w in care_set.words]
    assert len(care_set.candidates) == 30 and len(care_set.clusters) == 4
    assert care_set.settings["word_hygiene"] is False and "identical once </w> is removed" in care_set.hygiene
    assert care_set.to_reference_json().keys() == {"vangogh_care_word", "vangogh_care_word_painting"}


def test_candidate_words_restrict_the_care_set_to_a_given_list(built, clip, cache_dir, images):
    unrestricted, _ = built
    allowed = tuple(c.word for c in unrestricted.candidates[:12]) + ("zzqxnotaword",)
    settings = CareSetSettings(top_k_per_image=5, top_n_tokens=10, n_clusters=3, candidate_words=allowed)
    care_set = build_care_set(images, clip, "nudity", "object", settings, cache_dir=cache_dir)
    assert care_set.words and {c.word for c in care_set.candidates} <= set(allowed)
    assert care_set.hygiene["not in the candidate words"] > 1000
    assert tuple(care_set.settings["candidate_words"]) == allowed
    with pytest.raises(CareSetInputError, match="None of the 2 candidate words"):
        build_care_set(images, clip, "nudity", "object",
                       dataclasses.replace(settings, candidate_words=("zzqxnotaword", "nudity")), cache_dir=cache_dir)


def test_word_lists_are_parsed_from_commas_and_lines():
    assert parse_word_list(" person, beach\n\nperson ,, sky \n") == ("person", "beach", "sky")
    assert parse_word_list("") == ()


def test_cluster_picture_is_a_comfy_image(built):
    picture = render_cluster_map(built[0])
    assert picture.shape == (1, 800, 1280, 3) and picture.dtype == torch.float32
    assert 0.0 <= picture.min() and picture.max() <= 1.0 and picture.std() > 0.05
    note = render_cluster_map(CareSet.from_words("x", "object", ["y"]))
    assert note.shape == (1, 800, 1280, 3)


@pytest.mark.parametrize("images, word, message", [
    (torch.rand(0, 32, 32, 3), "nudity", "empty"),
    (torch.rand(1, 32, 32, 3), "nudity", "single image"),
    (torch.rand(3, 32, 32, 3), "   ", "gives no CLIP tokens"),
    (torch.rand(3, 32, 32, 3), "", "gives no CLIP tokens"),
    (torch.rand(3, 32, 32, 3), "\ufeff\x00", "gives no CLIP tokens"),  # not blank, but nothing CLIP reads
])
def test_bad_inputs_are_refused_clearly(clip, cache_dir, images, word, message):
    with pytest.raises(CareSetInputError, match=message):
        build_care_set(images, clip, word, "object", cache_dir=cache_dir)


def test_fewer_candidate_words_than_clusters(clip, cache_dir):
    settings = CareSetSettings(top_k_per_image=1, n_clusters=7)
    with pytest.raises(CareSetInputError, match="fewer than n_clusters=7"):
        build_care_set(torch.rand(3, 32, 32, 3), clip, "nudity", "object", settings, cache_dir=cache_dir)


@pytest.mark.parametrize("change, message", [
    ({"top_k_per_image": 0}, "at least 1"),
    ({"top_n_tokens": 5}, "smaller than n_clusters"),
    ({"n_clusters": 2, "k_each_side": 1}, "drops every cluster"),
    ({"alpha": -1.0}, "must not be negative"),
])
def test_bad_settings_are_refused_clearly(clip, cache_dir, change, message):
    settings = dataclasses.replace(CareSetSettings(), **change)
    with pytest.raises(CareSetInputError, match=message):
        build_care_set(torch.rand(3, 32, 32, 3), clip, "nudity", "object", settings, cache_dir=cache_dir)


def test_unknown_concept_type(clip, cache_dir):
    with pytest.raises(CareSetInputError, match="concept_type"):
        build_care_set(torch.rand(3, 32, 32, 3), clip, "nudity", "scene", cache_dir=cache_dir)


def test_stop_request_interrupts(clip, cache_dir, built):
    with pytest.raises(Interrupted):
        build_care_set(torch.rand(3, 32, 32, 3), clip, "nudity", "object", cache_dir=cache_dir,
                       should_stop=lambda: True)
