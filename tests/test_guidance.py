"""Normalised guidance against values worked out by hand."""

import pytest
import torch

from recare_core.training.guidance import (
    normalized_compositional_guidance,
    normalized_negative_guidance,
    normalized_update,
    project,
)


def vec(*values: float) -> torch.Tensor:
    """One sample with the given values as channels: shape (1, C, 1, 1)."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_project_splits_parallel_and_orthogonal():
    # diff = (2, 4), direction (3, 4) -> unit (0.6, 0.8); <diff, unit> = 4.4
    parallel, orthogonal = project(vec(2, 4), vec(3, 4))
    assert parallel.dtype == torch.float64
    torch.testing.assert_close(parallel.flatten(), torch.tensor([2.64, 3.52], dtype=torch.float64))
    torch.testing.assert_close(orthogonal.flatten(), torch.tensor([-0.64, 0.48], dtype=torch.float64))


def test_projection_is_per_sample():
    e_c = torch.cat([vec(3, 4), vec(0, 2)])
    e_u = torch.cat([vec(1, 0), vec(1, 1)])
    update = normalized_update(e_c, e_u, eta=0.5)
    # sample 0: orth (-0.64, 0.48) + 0.5 * par (2.64, 3.52); sample 1: diff (-1, 1), unit (0, 1)
    expected = torch.tensor([[0.68, 2.24], [-1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(update.flatten(1), expected)


def test_negative_guidance_hand_values():
    target = normalized_negative_guidance(vec(3, 4), vec(1, 0), scale=3.0, eta=0.5)
    assert target.dtype == torch.float32
    # e_c - 2 * (0.68, 2.24)
    torch.testing.assert_close(target.flatten(), torch.tensor([1.64, -0.48]))


def test_negative_guidance_with_eta_one_is_plain_guidance_away():
    e_c, e_u = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    target = normalized_negative_guidance(e_c, e_u, scale=2.0, eta=1.0)
    torch.testing.assert_close(target, e_u, atol=1e-5, rtol=1e-5)
    target3 = normalized_negative_guidance(e_c, e_u, scale=3.0, eta=1.0)
    torch.testing.assert_close(target3, e_c - 2 * (e_c - e_u), atol=1e-5, rtol=1e-5)


def test_zero_condition_does_not_produce_nan():
    target = normalized_negative_guidance(vec(0, 0), vec(1, 2), scale=2.0, eta=0.0)
    torch.testing.assert_close(target.flatten(), torch.tensor([1.0, 2.0]))


def test_compositional_guidance_averages_positives_and_negatives_separately():
    e_u = vec(1, 0)
    conds = [vec(3, 4), vec(0, 2), vec(2, 0), vec(1, 1)]
    scales = [-2.0, -2.0, 2.0, 3.0]
    # eta = 0: only orthogonal parts.
    # negatives: -3 * (-0.64, 0.48) = (1.92, -1.44); -3 * (-1, 0) = (3, 0); mean (2.46, -0.72)
    # positives: 1 * (0, 0); 2 * (-0.5, 0.5) = (-1, 1); mean (-0.5, 0.5)
    target = normalized_compositional_guidance(conds, e_u, scales, eta=0.0)
    torch.testing.assert_close(target.flatten(), torch.tensor([2.96, -0.22]))


def test_compositional_guidance_with_only_negatives():
    e_u = vec(1, 0)
    target = normalized_compositional_guidance([vec(3, 4)], e_u, [-2.0], eta=1.0)
    # e_u + (-3) * diff with diff = (2, 4)
    torch.testing.assert_close(target.flatten(), torch.tensor([-5.0, -12.0]))


def test_compositional_guidance_rejects_mismatched_scales():
    with pytest.raises(ValueError, match="guidance scales"):
        normalized_compositional_guidance([vec(1, 2)], vec(0, 0), [2.0, -2.0])
