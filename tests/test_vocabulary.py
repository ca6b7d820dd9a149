"""Vocabulary embeddings: built once per CLIP identity, cached atomically on disk as fp16, reused."""

from __future__ import annotations

import os

import pytest
import torch

from tiny_models import build_tiny_care_clip
from recare_core.progress import Interrupted
from recare_core.careset.vocabulary import (
    CACHE_ENV_VAR,
    cache_path,
    default_cache_dir,
    vocabulary_embeddings,
)


@pytest.fixture(scope="module")
def clip():
    return build_tiny_care_clip(seed=0)


@pytest.fixture(scope="module")
def built(clip, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("vocabulary")
    calls = []
    first = vocabulary_embeddings(clip, cache_dir, progress=lambda step, total, message: calls.append((step, total)))
    return cache_dir, first, calls


def test_every_entry_is_embedded_normalised_in_fp16(clip, built):
    _, vocabulary, calls = built
    assert not vocabulary.from_cache
    assert vocabulary.matrix.shape == (49408, clip.embedding_dim) and vocabulary.matrix.dtype == torch.float16
    torch.testing.assert_close(vocabulary.matrix.float().norm(dim=-1), torch.ones(49408), atol=2e-3, rtol=0)
    assert calls[-1][0] == calls[-1][1] == len(set(clip.vocabulary()))  # progress reaches its total
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))


def test_rows_are_the_text_embeddings_of_the_stripped_entries(clip, built):
    _, vocabulary, _ = built
    raw = clip.raw_vocabulary()
    rows = [raw.index("person</w>"), raw.index("person"), raw.index("!</w>"), 49406, 49407, 12345]
    with torch.no_grad():  # the full 77-position context, as open_clip would run it
        full = torch.nn.functional.normalize(
            clip.model.encode_text(clip.tokenize([clip.vocabulary()[r] for r in rows])).float(), dim=-1)
    torch.testing.assert_close(vocabulary.matrix[rows].float(), full, atol=2e-3, rtol=0)
    torch.testing.assert_close(vocabulary.matrix[rows[0]], vocabulary.matrix[rows[1]])  # same text, same row


def test_second_build_reads_the_cache(clip, built):
    cache_dir, first, _ = built
    mtime = first.path.stat().st_mtime_ns
    second = vocabulary_embeddings(clip, cache_dir)
    assert second.from_cache and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    torch.testing.assert_close(second.matrix, first.matrix)
    assert sorted(p.name for p in cache_dir.iterdir()) == [first.path.name]  # no temporary left behind


def test_cache_is_keyed_by_identity(clip, built, tmp_path):
    cache_dir, first, _ = built
    other = build_tiny_care_clip(seed=1)
    assert cache_path(other, cache_dir) != first.path
    assert cache_path(build_tiny_care_clip(seed=0), cache_dir) == first.path
    assert first.path.name.startswith("vocab_tiny-clip_random-seed-0_")


def test_a_corrupt_cache_is_rebuilt(clip, built, tmp_path):
    _, first, _ = built
    path = cache_path(clip, tmp_path)
    path.write_bytes(b"not a safetensors file")
    rebuilt = vocabulary_embeddings(clip, tmp_path)
    assert not rebuilt.from_cache
    torch.testing.assert_close(rebuilt.matrix, first.matrix)
    assert vocabulary_embeddings(clip, tmp_path).from_cache
    aside = path.with_name(path.name + ".unreadable_00001")
    assert aside.read_bytes() == b"not a safetensors file"  # set aside, never deleted or replaced


def test_stopping_leaves_no_cache(clip, tmp_path):
    with pytest.raises(Interrupted):
        vocabulary_embeddings(clip, tmp_path, should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.name != "nt":
        assert default_cache_dir() == tmp_path / "recare" / "vocabulary"
