"""ComfyUI's MODEL / CLIP / VAE objects as a :class:`recare_core.training.backend.DiffusionBackend`.

Works for the families of :mod:`.model_families` (SD1.x, SD2.x, SDXL family; eps or v prediction). The denoiser
is ComfyUI's own UNet (``model.model.diffusion_model``), called directly on the DDPM ``x_t`` at integer
timesteps (what ComfyUI's discrete sampling feeds it); its output is converted to eps, the core's one
parameterisation (:mod:`recare_core.training.parameterisation`). Conditioning comes from ComfyUI's own CLIP
(:mod:`.comfy_text`); SDXL's ``y`` from ComfyUI's own ``encode_adm``.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn

import comfy.model_management

from ..recare_core.safe_files import check_relative_name, write_numbered_file
from ..recare_core.training.parameterisation import eps_from_model_output
from ..recare_core.training.train_methods import cross_attention_projections, select_trainable_modules
from .comfy_text import ComfyTextEncoder
from .model_families import UnsupportedModelError, detect_family, prediction_type, unet_conditioning

CLIP_CONTEXT_LENGTH = 77
"""Token positions of every supported family's text towers (CLIP-L, OpenCLIP-H, CLIP-G), start and end included."""

__all__ = ["ComfyBackend", "ComfyTextEncoder", "UnsupportedModelError", "check_supported",
           "save_textual_inversion_embedding"]


def check_supported(model) -> None:
    """Raise :class:`UnsupportedModelError` unless ReCARE can train ``model`` (a ComfyUI MODEL)."""
    detect_family(model)
    prediction_type(model)


class ComfyBackend:
    """:class:`recare_core.training.backend.DiffusionBackend` over a ComfyUI MODEL, CLIP and VAE."""

    def __init__(self, model, clip, vae):
        self.family = detect_family(model)
        self.prediction = prediction_type(model)
        self.model = model
        self.vae = vae
        self.text = ComfyTextEncoder(clip, self.family)
        sigmas = model.get_model_object("model_sampling").sigmas.double().cpu()
        self._alphas_cumprod = 1.0 / (sigmas * sigmas + 1.0)

    # -- model placement ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the UNet and text encoder onto the compute device (ComfyUI's memory manager decides how)."""
        comfy.model_management.load_models_gpu([self.model, self.text.clip.patcher])

    @property
    def device(self) -> torch.device:
        return self.model.load_device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.model.get_dtype()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod

    def latent_shape(self, batch: int, image_size: int) -> tuple[int, ...]:
        if image_size % 8:
            raise ValueError(f"Image size {image_size} is not a multiple of 8 (SD latents are 1/8 of the image).")
        channels = self.model.model.latent_format.latent_channels
        return (batch, channels, image_size // 8, image_size // 8)

    def denoiser(self) -> nn.Module:
        return self.model.model.diffusion_model

    def trainable_modules(self, method: str) -> dict[str, nn.Module]:
        named = {f"diffusion_model.{name}": module for name, module in self.denoiser().named_modules()}
        return select_trainable_modules(named, method)

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The ResBlocks / SpatialTransformers / up- and down-samplers inside every TimestepEmbedSequential:
        ComfyUI's UNet calls those children itself (``forward_timestep_embed``), each through ``__call__``."""
        unet = self.denoiser()
        containers = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
        return [layer for container in containers for layer in container]

    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps at ``x_t`` (DDPM space); a v-prediction model's output is converted."""
        dtype, device = self.dtype, self.device
        context, y = unet_conditioning(self.model, self.family, cond, x_t, self.text.pooled_width)
        extra = {} if y is None else {"y": y.to(device, dtype)}
        out = self.denoiser()(
            x_t.to(device, dtype), timesteps.to(device, dtype), context=context.to(device, dtype),
            transformer_options={}, **extra,
        )
        return eps_from_model_output(out.float(), x_t.to(device).float(), timesteps, self._alphas_cumprod,
                                     self.prediction)

    def encode_text(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.text.encode(prompts, learned_tokens)

    def token_embedding(self, word: str) -> torch.Tensor:
        return self.text.token_embedding(word)

    def cross_attention_projections(self) -> dict[str, nn.Linear]:
        return cross_attention_projections(self.trainable_modules("xattn"))

    def last_token_index(self, prompt: str) -> int:
        return min(len(self.text.word_ids(prompt)), CLIP_CONTEXT_LENGTH - 2)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(images[..., :3])
        return self.model.model.latent_format.process_in(latents).to(self.device, torch.float32)


def save_textual_inversion_embedding(tensors: dict[str, torch.Tensor], directory: str, name: str) -> str:
    """Write a ComfyUI textual-inversion file ``<name>.safetensors`` (``tensors`` from
    :meth:`ComfyTextEncoder.embedding_tensors`: ``emb_params`` for SD1/SD2, ``clip_l`` + ``clip_g`` for SDXL) in
    ``directory`` so prompts can say ``embedding:<name>``; when that name is taken the file is
    ``<name>_00001.safetensors`` (the next free number) instead, never overwriting. ``name`` is one plain file
    name (checked by :func:`recare_core.safe_files.check_relative_name`). Returns the name to use in prompts."""
    from safetensors.torch import save_file

    tensors = {key: value.detach().float().cpu().contiguous() for key, value in tensors.items()}
    check_relative_name(name, "embedding_name", subfolders=False)
    path = write_numbered_file(directory, name, ".safetensors", lambda temporary: save_file(tensors, str(temporary)),
                               "embedding_name", "models/embeddings", plain_first=True)
    return path.name[: -len(".safetensors")]
