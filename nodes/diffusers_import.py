"""A released full diffusers-format UNet (the paper's ``ReCARE-Diffusers-UNet.pt``) as an erasure: the difference
of its weights to the MODEL it is applied to, keyed with ComfyUI's own diffusers -> ComfyUI name mapping
(``comfy.utils.unet_to_diffusers`` of that model's UNet config)."""

from __future__ import annotations

import comfy.utils
import torch

from ..recare_core.erasure.increments import Erasure, WeightIncrement
from .erasure_patch import ErasureMismatchError


def diffusers_to_comfy_keys(model) -> dict[str, str]:
    """``{diffusers UNet key: ComfyUI model state-dict key}`` for ``model``'s UNet architecture."""
    mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    if not mapping:
        raise ErasureMismatchError(
            f"This model ({type(model.model.model_config).__name__}) is not a Stable Diffusion UNet, so a "
            "diffusers UNet checkpoint cannot be applied to it.")
    return {diffusers_key: f"diffusion_model.{comfy_key}" for diffusers_key, comfy_key in mapping.items()}


def resolve_against_model(model, erasure: Erasure) -> Erasure:
    """``erasure`` itself when it already holds increments; for an imported full UNet, a new erasure whose
    increments are (imported weight - ``model``'s weight) for every weight that differs.

    Raises :class:`ErasureMismatchError` listing the file's weights this model lacks and the shape mismatches."""
    if not erasure.needs_base_model:
        return erasure
    if erasure.increments:
        raise ValueError(f"The erasure of '{erasure.concept}' holds both whole weights and increments.")
    mapping = diffusers_to_comfy_keys(model)
    state = model.model_state_dict()
    unknown = [k for k in erasure.diffusers_unet if mapping.get(k) not in state]
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(state[mapping[k]].shape)}"
        for k, v in erasure.diffusers_unet.items()
        if k not in unknown and tuple(v.shape) != tuple(state[mapping[k]].shape)
    ]
    if unknown or wrong_shape:
        details = [f"{len(unknown)} weights this model does not have (e.g. {', '.join(unknown[:3])})"
                   ] if unknown else []
        details += [f"{len(wrong_shape)} shape mismatches (e.g. {'; '.join(wrong_shape[:3])})"] if wrong_shape else []
        source = erasure.metadata.get("source_file", "the imported UNet")
        raise ErasureMismatchError(
            f"{source} was trained for another model architecture than this "
            f"{type(model.model.model_config).__name__} model: " + ", ".join(details) + ".")
    increments: dict[str, WeightIncrement] = {}
    with torch.no_grad():
        for diffusers_key, weight in erasure.diffusers_unet.items():
            key = mapping[diffusers_key]
            difference = weight.to("cpu", torch.float32) - state[key].to("cpu", torch.float32)
            if bool(difference.any()):
                increments[key] = WeightIncrement(full=difference)
    if not increments:
        raise ValueError(
            f"{erasure.metadata.get('source_file', 'The imported UNet')} is identical to this model: it holds no "
            "change to apply (was the base model loaded instead of the erased one?).")
    metadata = {**erasure.metadata, "base_model": type(model.model.model_config).__name__,
                "changed_weights": len(increments), "weights_in_file": len(erasure.diffusers_unet)}
    return Erasure(concept=erasure.concept, increments=increments, metadata=metadata,
                   adversarial_embeddings=dict(erasure.adversarial_embeddings))
