"""The one parameterisation of the core: eps (noise) prediction, and the conversion from v-prediction.

Every guidance target and loss of the core is built from eps predictions on the DDPM schedule
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (``a_t = alphas_cumprod[t]``). A model that predicts
``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (SD 2.x 768-v, v-prediction SDXL finetunes) is converted by its backend
with :func:`eps_from_model_output`, so the targets are the same whichever way the model predicts.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES: tuple[str, ...] = ("eps", "v")


def _alpha(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``a_t`` per sample, shaped to broadcast over ``like`` (float64 lookup, then ``like``'s dtype/device)."""
    a = alphas_cumprod.double()[timesteps.long().cpu()]
    return a.view(-1, *([1] * (like.dim() - 1))).to(device=like.device, dtype=like.dtype)


def eps_from_v(v: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
               ) -> torch.Tensor:
    """``eps = sqrt(a_t) v + sqrt(1 - a_t) x_t``."""
    a = _alpha(alphas_cumprod, timesteps, v)
    return a.sqrt() * v + (1.0 - a).sqrt() * x_t.to(v.dtype)


def v_from_eps(eps: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
               ) -> torch.Tensor:
    """``v = (eps - sqrt(1 - a_t) x_t) / sqrt(a_t)``, the inverse of :func:`eps_from_v`."""
    a = _alpha(alphas_cumprod, timesteps, eps)
    return (eps - (1.0 - a).sqrt() * x_t.to(eps.dtype)) / a.sqrt()


def eps_from_model_output(output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor,
                          alphas_cumprod: torch.Tensor, prediction: str) -> torch.Tensor:
    """The eps prediction meant by a model ``output`` of type ``prediction`` (``"eps"`` is returned as is)."""
    if prediction == "eps":
        return output
    if prediction == "v":
        return eps_from_v(output, x_t, timesteps, alphas_cumprod)
    raise ValueError(f"Unknown prediction type '{prediction}'. Choose one of: {', '.join(PREDICTION_TYPES)}.")
