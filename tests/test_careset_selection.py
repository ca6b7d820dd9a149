"""Clustering and the two removal rules of the CARE-set, on hand-made embeddings whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from recare_core.careset.selection import (
    CareSetInputError,
    leave_one_out_outliers,
    rank_clusters,
    residual_statistics,
    select_care_words,
)

DIM = 32
GROUP_SIZE = 6


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _constructed_case(seed: int = 0):
    """Seven tight groups of six words around the reference word c = e0.

    Group "synonyms" lies almost along c (small residual), group "unrelated" almost orthogonal to it (largest
    residual), five ordinary groups in between, each with its own residual direction. In ordinary group 0 one word
    ("outlier") has a residual that turns away from its group's direction: removing it leaves the others'
    mean with the largest orthogonal part, so the leave-one-out rule must drop it and nothing else."""
    rng = np.random.default_rng(seed)
    basis = np.eye(DIM)
    c = basis[0]
    groups = {"synonyms": (0.95, 0.30, 1), "unrelated": (0.02, 1.0, 2)}
    for g in range(5):
        groups[f"ordinary{g}"] = (0.7 - 0.08 * g, 0.6 + 0.08 * g, 3 + g)
    words, names, truth = [], [], []
    for name, (along, across, axis) in groups.items():
        for member in range(GROUP_SIZE):
            direction = basis[axis]
            label = f"{name}-{member}"
            if name == "ordinary0" and member == GROUP_SIZE - 1:
                direction = _unit(0.5 * basis[axis] + 0.866 * basis[20])
                label = "outlier"
            words.append(_unit(along * c + across * direction + rng.normal(0, 0.01, DIM)))
            names.append(label)
            truth.append(name)
    return np.array(words), c, names, np.array(truth)


def test_residual_statistics_match_their_definition():
    words, c, _, _ = _constructed_case()
    similarity, residual = residual_statistics(words, c)
    np.testing.assert_allclose(similarity, words @ c)
    projector = np.eye(DIM) - np.outer(c, c) / (c @ c)
    np.testing.assert_allclose(residual, np.linalg.norm(words @ projector.T, axis=1), atol=1e-12)


def test_constructed_case_drops_synonyms_noise_and_the_outlier():
    words, c, names, truth = _constructed_case()
    selection = select_care_words(words, c, n_clusters=7, k_each_side=1, alpha=0.01, min_cluster_size=2, seed=42)
    # t-SNE + k-means recovers the seven hand-made groups exactly.
    for group in set(truth):
        assert len(set(selection.labels[truth == group])) == 1, group
    assert len(set(selection.labels)) == 7
    synonym_cluster = int(selection.labels[truth == "synonyms"][0])
    unrelated_cluster = int(selection.labels[truth == "unrelated"][0])
    assert selection.dropped_low == [synonym_cluster]
    assert selection.dropped_high == [unrelated_cluster]
    kept_names = {n for n, keep in zip(names, selection.kept) if keep}
    expected = {n for n, group in zip(names, truth) if group.startswith("ordinary") and n != "outlier"}
    assert kept_names == expected
    outlier = names.index("outlier")
    assert selection.refined_away[outlier] and selection.refined_away.sum() == 1
    assert "outlier" in selection.reason(outlier)
    assert "near-synonyms" in selection.reason(names.index("synonyms-0"))
    assert "unrelated" in selection.reason(names.index("unrelated-0"))


def test_selection_is_deterministic_for_a_seed():
    words, c, _, _ = _constructed_case()
    first = select_care_words(words, c, seed=42)
    second = select_care_words(words, c, seed=42)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.coords, second.coords)


def test_rank_clusters_orders_by_mean_residual_and_caps_k():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    norms = np.array([0.5, 0.7, 0.1, 0.3, 0.9, 0.95, 0.55])
    order, low, high = rank_clusters(labels, norms, k_each_side=1)
    assert order == [1, 3, 0, 2] and low == [1] and high == [2]
    assert rank_clusters(labels, norms, k_each_side=0)[1:] == ([], [])  # the reference would drop all here
    assert rank_clusters(labels, norms, k_each_side=5)[1:] == ([1, 3], [0, 2])  # k capped at 4 // 2


def test_leave_one_out_rule_matches_its_textual_definition():
    rng = np.random.default_rng(3)
    words = rng.normal(size=(12, 8))
    words /= np.linalg.norm(words, axis=1, keepdims=True)
    c = _unit(rng.normal(size=8))
    labels = np.array([0] * 5 + [1] * 4 + [2] * 3)
    alpha = 0.01
    dropped = leave_one_out_outliers(words, c, labels, [0, 1, 2], alpha, min_cluster_size=2)
    expected = np.zeros(12, dtype=bool)
    for cluster in (0, 1, 2):
        members = list(np.flatnonzero(labels == cluster))
        d = {}
        for i in members:
            mean_others = np.mean([words[j] for j in members if j != i], axis=0)
            orth = mean_others - (mean_others @ c) * c
            d[i] = orth @ orth
        for i in members:
            expected[i] = d[i] > (1 + alpha) * np.mean([d[j] for j in members if j != i])
    np.testing.assert_array_equal(dropped, expected)
    assert dropped.any()


def test_small_clusters_and_unlisted_clusters_are_not_refined():
    words, c, _, truth = _constructed_case()
    labels = np.array([0 if t == "ordinary0" else 1 for t in truth])
    assert not leave_one_out_outliers(words, c, labels, [0], 0.01, min_cluster_size=7).any()
    assert not leave_one_out_outliers(words, c, labels, [1], 0.01, min_cluster_size=2)[labels == 0].any()


def test_fewer_words_than_clusters_is_a_clear_error():
    words, c, _, _ = _constructed_case()
    with pytest.raises(CareSetInputError, match="candidate words for 7 clusters"):
        select_care_words(words[:5], c, n_clusters=7)
