"""The core's one parameterisation (eps) and the conversion from v-prediction (no ComfyUI needed)."""

from __future__ import annotations

import pytest
import torch

from recare_core.training.parameterisation import eps_from_model_output, eps_from_v, v_from_eps


def _schedule() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # SD's scaled-linear
    return torch.cumprod(1.0 - betas, dim=0)


def test_v_of_a_known_sample_converts_to_its_noise():
    """With x_t = sqrt(a) x0 + sqrt(1-a) eps, the true v = sqrt(a) eps - sqrt(1-a) x0 must give back eps."""
    alphas = _schedule()
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 5, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 250, 700, 999])
    a = alphas[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(eps_from_v(v, x_t, t, alphas), eps)
    torch.testing.assert_close(v_from_eps(eps, x_t, t, alphas), v)
    torch.testing.assert_close(eps_from_model_output(v, x_t, t, alphas, "v"), eps)


def test_eps_output_is_returned_unchanged_and_unknown_types_are_refused():
    alphas = _schedule()
    out = torch.randn(1, 4, 2, 2)
    assert eps_from_model_output(out, torch.zeros_like(out), torch.tensor([5]), alphas, "eps") is out
    with pytest.raises(ValueError, match="Unknown prediction type 'x0'.*eps, v"):
        eps_from_model_output(out, out, torch.tensor([5]), alphas, "x0")
