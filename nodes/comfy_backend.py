"""ComfyUI's MODEL / CLIP / VAE objects as a :class:`recare_core.training.backend.DiffusionBackend`.

Only SD1.x is supported so far. The denoiser is ComfyUI's own UNet (``model.model.diffusion_model``), called
directly in eps space; conditioning comes from ComfyUI's own CLIP. Prompts that carry learned textual-inversion
tokens go through a differentiable re-implementation of ComfyUI's CLIP text forward over the *same* weights
(ComfyUI's forward adds residuals in place, which autograd cannot differentiate); a test checks both agree.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import comfy.model_management
import comfy.supported_models

from ..recare_core.safe_files import check_relative_name, write_numbered_file
from ..recare_core.training.train_methods import cross_attention_projections, select_trainable_modules

SUPPORTED_MODEL_CONFIGS = (comfy.supported_models.SD15,)
CLIP_CONTEXT_LENGTH = 77


class UnsupportedModelError(ValueError):
    """The loaded model is of a family ReCARE does not support yet."""


def check_supported(model) -> None:
    """Raise :class:`UnsupportedModelError` unless ``model`` (a ComfyUI MODEL) is SD1.x."""
    config = model.model.model_config
    if type(config) not in SUPPORTED_MODEL_CONFIGS:
        raise UnsupportedModelError(
            f"ReCARE supports SD1.x checkpoints so far; this MODEL is {type(config).__name__}. "
            "Load an SD1.5-family checkpoint (support for other model types is not implemented yet)."
        )


class ComfyTextEncoder:
    """SD1 CLIP-L text encoding on ComfyUI's CLIP object, with differentiable learned-token substitution."""

    def __init__(self, clip):
        self.clip = clip
        self.clip_l = getattr(clip.cond_stage_model, "clip_l", None)
        if self.clip_l is None:
            raise UnsupportedModelError("This CLIP has no CLIP-L text tower (an SD1.x CLIP is required).")
        self.hf_tokenizer = clip.tokenizer.clip_l.tokenizer
        self.special = self.clip_l.special_tokens

    @property
    def device(self) -> torch.device:
        return self.clip.patcher.load_device

    def load(self) -> None:
        comfy.model_management.load_model_gpu(self.clip.patcher)

    def word_ids(self, text: str) -> list[int]:
        """BPE token ids of ``text`` without start/end tokens, as ComfyUI's SD1 tokenizer produces them."""
        return self.hf_tokenizer(text)["input_ids"][1:-1]

    def token_embedding(self, word: str) -> torch.Tensor:
        ids = self.word_ids(word)
        if not ids:
            raise ValueError(f"'{word}' tokenises to nothing; choose a word made of letters.")
        weight = self.clip_l.transformer.get_input_embeddings().weight
        return weight[torch.tensor(ids, device=weight.device)].detach().float().clone()

    def encode(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        learned_tokens = learned_tokens or {}
        rows = []
        for prompt in prompts:
            if any(name in prompt.split() for name in learned_tokens):
                rows.append(self._encode_differentiable(prompt, learned_tokens))
            else:
                with torch.no_grad():
                    rows.append(self.clip.encode_from_tokens(self.clip.tokenize(prompt)).float())
        return torch.cat([r.to(self.device) for r in rows])

    # -- differentiable forward --------------------------------------------------------------------------------
    def _input_embeddings(self, prompt: str, learned_tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        embedding = self.clip_l.transformer.get_input_embeddings().weight
        device = embedding.device
        pieces: list[torch.Tensor] = [self._embed_ids([self.special["start"]], embedding)]
        words: list[str] = []
        for word in prompt.split() + [None]:
            if word is not None and word not in learned_tokens:
                words.append(word)
                continue
            if words:
                pieces.append(self._embed_ids(self.word_ids(" ".join(words)), embedding))
                words = []
            if word is not None:
                pieces.append(learned_tokens[word].to(device=device, dtype=torch.float32).reshape(-1, embedding.shape[1]))
        used = sum(p.shape[0] for p in pieces) + 1
        if used > CLIP_CONTEXT_LENGTH:
            raise ValueError(f"Prompt '{prompt}' is longer than CLIP's {CLIP_CONTEXT_LENGTH} tokens.")
        pad = CLIP_CONTEXT_LENGTH - used
        pieces.append(self._embed_ids([self.special["end"]] + [self.special["pad"]] * pad, embedding))
        return torch.cat(pieces)[None]

    @staticmethod
    def _embed_ids(ids: list[int], weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(torch.tensor(ids, device=weight.device, dtype=torch.long), weight.detach().float())

    def _encode_differentiable(self, prompt: str, learned_tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        text_model = self.clip_l.transformer.text_model
        x = self._input_embeddings(prompt, learned_tokens)
        x = x + text_model.embeddings.position_embedding.weight.detach().float()[: x.shape[1]]
        n_layers = len(text_model.encoder.layers)
        layer_idx = self.clip.layer_idx  # set by CLIPSetLastLayer; None means the last layer
        stop_after = n_layers - 1 if layer_idx is None or abs(layer_idx) > n_layers else layer_idx % n_layers
        for index, layer in enumerate(text_model.encoder.layers):
            x = x + _attention(layer.self_attn, _layer_norm(layer.layer_norm1, x))
            hidden = _linear(layer.mlp.fc1, _layer_norm(layer.layer_norm2, x))
            x = x + _linear(layer.mlp.fc2, layer.mlp.activation(hidden))
            if index == stop_after:
                break
        if stop_after == n_layers - 1 or self.clip_l.layer_norm_hidden_state:
            x = _layer_norm(text_model.final_layer_norm, x)
        return x


def _weights(module: nn.Module, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's frozen weights (detached: only learned token embeddings receive gradients)."""
    weight = module.weight.detach().to(dtype)
    bias = module.bias.detach().to(dtype) if module.bias is not None else None
    return weight, bias


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, *_weights(module, x.dtype))


def _layer_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, *_weights(module, x.dtype), module.eps)


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    batch, length, width = x.shape
    heads = attn.heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, length, heads, width // heads).transpose(1, 2)

    q, k, v = (split(_linear(proj, x)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return _linear(attn.out_proj, out.transpose(1, 2).reshape(batch, length, width))


class ComfyBackend:
    """:class:`recare_core.training.backend.DiffusionBackend` over a ComfyUI MODEL, CLIP and VAE (SD1.x)."""

    def __init__(self, model, clip, vae):
        check_supported(model)
        self.model = model
        self.vae = vae
        self.text = ComfyTextEncoder(clip)
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
        return (batch, 4, image_size // 8, image_size // 8)

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
        dtype = self.dtype
        out = self.denoiser()(
            x_t.to(self.device, dtype), timesteps.to(self.device, dtype), context=cond.to(self.device, dtype),
            transformer_options={},
        )
        return out.float()

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


def save_textual_inversion_embedding(embedding: torch.Tensor, directory: str, name: str) -> str:
    """Write ``embedding`` (``(n, 768)``) as a ComfyUI/A1111 textual-inversion file ``<name>.safetensors`` in
    ``directory`` so prompts can say ``embedding:<name>``; when that name is taken the file is
    ``<name>_00001.safetensors`` (the next free number) instead, never overwriting. ``name`` is one plain file
    name (checked by :func:`recare_core.safe_files.check_relative_name`). Returns the name to use in prompts."""
    from safetensors.torch import save_file

    tensors = {"emb_params": embedding.detach().float().cpu().reshape(-1, embedding.shape[-1]).contiguous()}
    check_relative_name(name, "embedding_name", subfolders=False)
    path = write_numbered_file(directory, name, ".safetensors", lambda temporary: save_file(tensors, str(temporary)),
                               "embedding_name", "models/embeddings", plain_first=True)
    return path.name[: -len(".safetensors")]
