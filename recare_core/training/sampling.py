"""Partial DDIM sampling that produces the ``x_t`` of an erasure training step.

The reference runs diffusers' ``DDIMScheduler`` (SD v1-4 config: ``steps_offset=1``, leading spacing,
``set_alpha_to_one=False``, no clipping, eta 0). For ``n`` inference steps over ``T`` training steps its
timesteps are ``(n-1-i) * (T // n) + 1`` (981, 961, ..., 1 for 50 of 1000), and each step goes from ``t`` to
``t - T // n``. After ``k`` steps the reference switches the scheduler to ``T`` steps and evaluates the model at
``timesteps[int(k / n * T)]``, i.e. at ``T - int(k / n * T)`` (1000 - 20k for 50/1000), 19 steps noisier than
the point the sampler actually reached (981 - 20k). :func:`evaluation_timestep` reproduces that mapping and can
instead give the timestep actually reached.
"""

from __future__ import annotations

from typing import Callable

import torch

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``predict(x_t, timesteps (B,), cond (B, ...)) -> eps``."""

TIMESTEP_MAPPINGS: tuple[str, ...] = ("reference", "exact")


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, steps_offset: int = 1) -> torch.Tensor:
    """Descending DDIM timesteps with leading spacing, as diffusers' DDIMScheduler with SD's config."""
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"DDIM needs 1..{num_train_timesteps} inference steps, got {num_inference_steps}.")
    ratio = num_train_timesteps // num_inference_steps
    return torch.arange(num_inference_steps - 1, -1, -1, dtype=torch.long) * ratio + steps_offset


def evaluation_timestep(k: int, num_inference_steps: int, num_train_timesteps: int, mapping: str = "reference",
                        steps_offset: int = 1) -> int:
    """Training timestep at which predictions are taken after ``k`` DDIM steps.

    ``"reference"``: ``T - int(k / n * T)`` as the reference code; ``"exact"``: the timestep the sampler reached.
    """
    if mapping == "reference":
        return num_train_timesteps - int(k / num_inference_steps * num_train_timesteps)
    if mapping == "exact":
        return int(ddim_timesteps(num_train_timesteps, num_inference_steps, steps_offset)[k - 1]) - (
            num_train_timesteps // num_inference_steps)
    raise ValueError(f"Unknown timestep mapping '{mapping}'. Choose one of: {', '.join(TIMESTEP_MAPPINGS)}.")


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update (eta 0) from ``t`` to ``t_prev`` (``t_prev < 0`` uses ``alphas_cumprod[0]``)."""
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else float(alphas_cumprod[0])
    x0 = (x_t - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps


@torch.no_grad()
def partial_ddim_sample(predict: Predict, noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, k: int,
                        num_inference_steps: int, alphas_cumprod: torch.Tensor, guidance_scale: float,
                        steps_offset: int = 1) -> torch.Tensor:
    """Run the first ``k`` of ``num_inference_steps`` DDIM steps from ``noise`` with classifier-free guidance.

    ``cond`` / ``uncond`` hold one row per sample of ``noise``. At guidance 1 the unconditional half is skipped.
    """
    if not 0 <= k <= num_inference_steps:
        raise ValueError(f"Cannot run {k} of {num_inference_steps} DDIM steps.")
    num_train = alphas_cumprod.shape[0]
    timesteps = ddim_timesteps(num_train, num_inference_steps, steps_offset)
    ratio = num_train // num_inference_steps
    batch = noise.shape[0]
    x = noise
    for i in range(k):
        t = int(timesteps[i])
        if guidance_scale == 1.0:
            eps = predict(x, torch.full((batch,), t, dtype=torch.long), cond)
        else:
            both = predict(torch.cat([x, x]), torch.full((2 * batch,), t, dtype=torch.long), torch.cat([uncond, cond]))
            eps_uncond, eps_cond = both.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x = ddim_step(x, eps.to(x.dtype), t, t - ratio, alphas_cumprod)
    return x
