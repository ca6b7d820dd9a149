"""Partial DDIM sampling and the step-to-timestep mapping of the reference (diffusers DDIM, SD v1-4 config)."""

import pytest
import torch

from recare_core.training.sampling import ddim_timesteps, evaluation_timestep, partial_ddim_sample


def linear_alphas(num: int = 1000) -> torch.Tensor:
    return torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, num, dtype=torch.float64), dim=0)


def test_ddim_timesteps_match_diffusers_leading_spacing_with_offset():
    steps = ddim_timesteps(1000, 50)
    assert steps.shape == (50,)
    assert steps[:3].tolist() == [981, 961, 941]
    assert steps[-1].item() == 1
    assert ddim_timesteps(1000, 1000)[:2].tolist() == [1000, 999]  # the table the reference indexes with 20k


def test_evaluation_timestep_reference_and_exact():
    assert evaluation_timestep(1, 50, 1000) == 980
    assert evaluation_timestep(48, 50, 1000) == 40
    assert [evaluation_timestep(k, 50, 1000) for k in range(1, 49)] == [1000 - 20 * k for k in range(1, 49)]
    # After k steps the sampler stands at timesteps[k - 1] - 20 = 981 - 20k.
    assert evaluation_timestep(1, 50, 1000, "exact") == 961
    assert evaluation_timestep(48, 50, 1000, "exact") == 21
    with pytest.raises(ValueError, match="timestep mapping"):
        evaluation_timestep(1, 50, 1000, "nearest")


def test_exact_noise_prediction_keeps_ddim_on_the_forward_process():
    alphas = linear_alphas()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=generator)
    eps = torch.randn(2, 3, 4, 4, generator=generator)
    start = ddim_timesteps(1000, 50)[0].item()
    noise = alphas[start].sqrt().float() * x0 + (1 - alphas[start]).sqrt().float() * eps

    def oracle(x, t, cond):  # the eps that explains x as a noised x0
        a = alphas[t.tolist()].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    cond = torch.zeros(2, 1)
    x = partial_ddim_sample(oracle, noise, cond, cond, k=7, num_inference_steps=50, alphas_cumprod=alphas,
                            guidance_scale=1.0)
    reached = evaluation_timestep(7, 50, 1000, "exact")
    expected = alphas[reached].sqrt().float() * x0 + (1 - alphas[reached]).sqrt().float() * eps
    torch.testing.assert_close(x, expected, atol=1e-4, rtol=1e-4)


def test_guidance_one_skips_the_unconditional_half_and_cfg_combines():
    alphas = linear_alphas()
    calls = []

    def predict(x, t, cond):
        calls.append(x.shape[0])
        return cond.view(-1, 1, 1, 1).expand_as(x).float()  # eps = the conditioning value

    noise = torch.zeros(1, 3, 2, 2)
    cond, uncond = torch.full((1, 1), 2.0), torch.full((1, 1), 0.5)
    partial_ddim_sample(predict, noise, cond, uncond, k=4, num_inference_steps=50, alphas_cumprod=alphas,
                        guidance_scale=1.0)
    assert calls == [1, 1, 1, 1]
    calls.clear()
    guided = partial_ddim_sample(predict, noise, cond, uncond, k=1, num_inference_steps=50, alphas_cumprod=alphas,
                                 guidance_scale=3.0)
    assert calls == [2]
    # One DDIM step from x=0 with eps = 0.5 + 3 * (2 - 0.5) = 5.
    a_t, a_prev = alphas[981].item(), alphas[961].item()
    x0 = -(1 - a_t) ** 0.5 * 5.0 / a_t ** 0.5
    expected = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * 5.0
    torch.testing.assert_close(guided, torch.full_like(noise, expected))
