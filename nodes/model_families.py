"""The model families ReCARE trains on inside ComfyUI, recognised from ComfyUI's own model config.

* **SD1.x** (``comfy.supported_models.SD15``): CLIP-L, conditioning ``(B, 77, 768)``.
* **SD2.x** (``SD20``, the 512 eps and 768-v models): OpenCLIP-H at its penultimate layer as ComfyUI uses it,
  conditioning ``(B, 77, 1024)``.
* **SDXL family** (``SDXL`` and its subclasses: SDXL, Pony, Illustrious, NoobAI, SSD-1B, Vega, KOALA): CLIP-L and
  CLIP-G side by side, ``(B, 77, 2048)``, plus the ``y`` vector (CLIP-G's pooled output and the size / crop
  embeddings) that ComfyUI's ``encode_adm`` builds.

Any of them may predict eps or v (a ``v_pred`` checkpoint, SD 2.x 768-v, or a model switched with core's
``ModelSamplingDiscrete``); the backend converts the output to eps, the one parameterisation of the core. Other
prediction types (x0, LCM, EDM, flow) and other families (SD3, Flux and other DiT / flow models, inpainting and
instruct variants, unCLIP, upscalers, the SDXL refiner) are refused with :class:`UnsupportedModelError`.

Conditioning travels through the core as one tensor per prompt, batched along dim 0. For SDXL that tensor is
``(B, 78, 2048)``: the 77 context rows, then one row holding the 1280 pooled values (zero-padded); the ``y``
vector is built at prediction time from the latent's size, as ComfyUI's sampler does (width/height = latent*8,
no crop, target = size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.model_sampling
import comfy.supported_models

SUPPORTED = ("SD1.x", "SD2.x (eps and v, e.g. 768-v)",
             "SDXL family (SDXL, Pony, Illustrious, NoobAI and other SDXL finetunes, eps or v-prediction)")


class UnsupportedModelError(ValueError):
    """The loaded model is of a family (or prediction type) ReCARE does not support."""


@dataclass(frozen=True)
class ModelFamily:
    """How one family's text conditioning is made.

    ``towers`` name the text encoders on ComfyUI's CLIP (attributes of ``cond_stage_model`` and ``tokenizer``), in
    the order their hidden states are concatenated; ``pooled_tower`` is the one whose pooled output feeds ``y``
    (None: the family has no ``y``); ``embedding_keys`` are the tensor names of a textual-inversion file, one per
    tower (None: a single ``emb_params`` tensor, the SD1/SD2 format)."""

    name: str
    towers: tuple[str, ...]
    pooled_tower: str | None = None
    embedding_keys: tuple[str, ...] | None = None


SD1 = ModelFamily("SD1.x", ("clip_l",))
SD2 = ModelFamily("SD2.x", ("clip_h",))
SDXL = ModelFamily("SDXL", ("clip_l", "clip_g"), pooled_tower="clip_g", embedding_keys=("clip_l", "clip_g"))

_REFUSED_SUBCLASSES = {"SD21UnclipL": "an unCLIP model", "SD21UnclipH": "an unCLIP model",
                       "SD_X4Upscaler": "an upscaler", "LotusD": "a depth/normal estimator"}


def _supported_line() -> str:
    return "ReCARE supports " + "; ".join(SUPPORTED) + "."


def detect_family(model) -> ModelFamily:
    """The :class:`ModelFamily` of a ComfyUI MODEL, or :class:`UnsupportedModelError` saying what is supported."""
    config = model.model.model_config
    name = type(config).__name__
    models = comfy.supported_models
    if isinstance(config, models.SDXL):
        family = SDXL
    elif isinstance(config, models.SD20) and name not in _REFUSED_SUBCLASSES:
        family = SD2
    elif isinstance(config, models.SD15):
        family = SD1
    else:
        kind = _REFUSED_SUBCLASSES.get(name, "not a UNet text-to-image model of these families (e.g. SD3, Flux and "
                                             "other DiT / flow models are not supported yet)")
        raise UnsupportedModelError(f"This MODEL is {name}, {kind}. {_supported_line()} Load such a checkpoint.")
    unet = model.model.diffusion_model
    latent_channels = model.model.latent_format.latent_channels
    if getattr(unet, "in_channels", latent_channels) != latent_channels:
        raise UnsupportedModelError(
            f"This MODEL is a {family.name} model with {unet.in_channels} input channels (an inpainting or instruct "
            f"variant); ReCARE erases from plain text-to-image models. {_supported_line()}")
    return family


def prediction_type(model) -> str:
    """``"eps"`` or ``"v"``: what the UNet's output means under the MODEL's (possibly patched) model sampling."""
    sampling = model.get_model_object("model_sampling")
    kind = type(sampling)
    discrete = isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) and not isinstance(
        sampling, getattr(comfy.model_sampling, "ModelSamplingDiscreteEDM", ()))
    denoise = getattr(kind, "calculate_denoised", None)
    scales_input = getattr(kind, "calculate_input", None) is comfy.model_sampling.EPS.calculate_input
    if discrete and scales_input and denoise is comfy.model_sampling.EPS.calculate_denoised:
        return "eps"
    if discrete and scales_input and denoise is comfy.model_sampling.V_PREDICTION.calculate_denoised:
        return "v"
    raise UnsupportedModelError(
        f"This MODEL samples with {kind.__name__}, a prediction type ReCARE cannot train (it trains eps- and "
        "v-prediction models on the discrete 1000-step schedule; x0, LCM, EDM and flow models are not supported). "
        "Remove the ModelSampling* node in front of ReCARE, or set it to 'eps' or 'v_prediction'.")


def pack_conditioning(family: ModelFamily, context: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    """One tensor per prompt for the core: ``context``, with for SDXL one more row carrying ``pooled``."""
    if family.pooled_tower is None:
        return context
    if pooled is None:
        raise UnsupportedModelError(f"The {family.name} text encoder gave no pooled output; load the model's own CLIP.")
    row = torch.zeros(context.shape[0], 1, context.shape[-1], dtype=context.dtype, device=context.device)
    row[:, 0, :pooled.shape[-1]] = pooled.to(context.dtype)
    return torch.cat([context, row], dim=1)


def unet_conditioning(model, family: ModelFamily, cond: torch.Tensor, x_t: torch.Tensor, pooled_width: int
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(context, y)`` for the UNet from a packed conditioning; ``y`` from ComfyUI's own ``encode_adm`` for an
    image of the latent's size (as its sampler defaults: no crop, target size = size)."""
    if family.pooled_tower is None:
        return cond, None
    context, pooled = cond[:, :-1], cond[:, -1, :pooled_width]
    height, width = x_t.shape[-2] * 8, x_t.shape[-1] * 8
    y = model.model.encode_adm(pooled_output=pooled, width=width, height=height)
    return context, y
