"""Text conditioning on ComfyUI's CLIP for every supported family, with differentiable learned-token substitution.

Prompts without learned tokens go through ComfyUI's own ``encode_from_tokens`` (hidden states of every tower and
the pooled output). Prompts that carry learned textual-inversion tokens go through a differentiable forward over
the *same* weights, tower by tower (ComfyUI's CLIP forward adds residuals in place, which autograd cannot
differentiate): the tower's layer as ``CLIPSetLastLayer`` / the family sets it (SD2's and SDXL's penultimate
layer), its final layer norm where ComfyUI applies it, its own start / end / pad tokens, and for SDXL the projected
pooled output of CLIP-G at the end token. A learned token of an SDXL model is the concatenation of its CLIP-L and
CLIP-G embeddings (``(n, 768 + 1280)``); tests check every path against ComfyUI's own encoding.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import comfy.model_management

from .model_families import ModelFamily, UnsupportedModelError, pack_conditioning


class _Tower:
    """One text encoder of a ComfyUI CLIP (``SDClipModel``) with its tokenizer (``SDTokenizer``)."""

    def __init__(self, clip, name: str):
        self.name = name
        self.model = getattr(clip.cond_stage_model, name, None)
        self.tokenizer = getattr(clip.tokenizer, name, None)
        if self.model is None or self.tokenizer is None:
            raise UnsupportedModelError(f"This CLIP has no {name} text encoder; connect the checkpoint's own CLIP.")
        self.text_model = self.model.transformer.text_model
        self.width = self.text_model.embeddings.token_embedding.weight.shape[1]
        self.context_length = self.text_model.embeddings.position_embedding.weight.shape[0]

    def word_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens, as ComfyUI's tokenizer produces them."""
        return self.tokenizer.tokenizer(text)["input_ids"][1:-1]

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        weight = self.text_model.embeddings.token_embedding.weight
        return F.embedding(torch.tensor(ids, device=weight.device, dtype=torch.long), weight.detach().float())

    def output_layer(self, clip_layer_idx: int | None) -> tuple[int, bool]:
        """``(index of the layer whose output is used, final layer norm applied)`` as ComfyUI's encode sets them
        (``clip.layer_idx`` from CLIPSetLastLayer overrides the family's default)."""
        layer, layer_idx = self.model.options_default[0], self.model.options_default[1]
        if clip_layer_idx is not None:
            layer, layer_idx = ("last", None) if abs(clip_layer_idx) > len(self.text_model.encoder.layers) else \
                ("hidden", clip_layer_idx)
        n_layers = len(self.text_model.encoder.layers)
        if layer == "last":
            return n_layers - 1, True
        return layer_idx % n_layers, bool(self.model.layer_norm_hidden_state)

    def encode(self, pieces: list[torch.Tensor | list[int]], clip_layer_idx: int | None, pooled: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Differentiable ``(hidden (1, L, width), projected pooled (1, width) or None)`` of a prompt given as
        word-id lists and learned-embedding rows, between the tower's start and end tokens, padded as ComfyUI."""
        device = self.text_model.embeddings.token_embedding.weight.device
        rows = [self.embed_ids([self.tokenizer.start_token])]
        rows += [self.embed_ids(p) if isinstance(p, list) else p.to(device, torch.float32) for p in pieces]
        used = sum(r.shape[0] for r in rows) + 1
        if used > self.context_length:
            raise ValueError(f"The prompt is longer than CLIP's {self.context_length} tokens; shorten it.")
        rows.append(self.embed_ids([self.tokenizer.end_token] + [self.tokenizer.pad_token] *
                                   (self.context_length - used)))
        x = torch.cat(rows)[None] + self.text_model.embeddings.position_embedding.weight.detach().float()
        stop, norm_hidden = self.output_layer(clip_layer_idx)
        last = len(self.text_model.encoder.layers) - 1 if pooled else stop
        hidden = None
        for index, layer in enumerate(self.text_model.encoder.layers[:last + 1]):
            x = x + _attention(layer.self_attn, _layer_norm(layer.layer_norm1, x))
            x = x + _linear(layer.mlp.fc2, layer.mlp.activation(_linear(layer.mlp.fc1, _layer_norm(layer.layer_norm2, x))))
            if index == stop:
                hidden = _layer_norm(self.text_model.final_layer_norm, x) if norm_hidden else x
        if not pooled:
            return hidden, None
        pooled_row = _layer_norm(self.text_model.final_layer_norm, x)[:, used - 1]
        if self.model.return_projected_pooled:
            pooled_row = _linear(self.model.transformer.text_projection, pooled_row)
        return hidden, pooled_row


class ComfyTextEncoder:
    """Conditioning of a family on ComfyUI's CLIP object; learned tokens substitute differentiably."""

    def __init__(self, clip, family: ModelFamily):
        self.clip = clip
        self.family = family
        self.towers = [_Tower(clip, name) for name in family.towers]
        self.token_dims = [tower.width for tower in self.towers]

    @property
    def device(self) -> torch.device:
        return self.clip.patcher.load_device

    @property
    def pooled_width(self) -> int:
        """Width of the pooled output that feeds the family's ``y`` (0 for families without one)."""
        return next((t.width for t in self.towers if t.name == self.family.pooled_tower), 0)

    def modules(self) -> list[nn.Module]:
        """The text towers (frozen; the training context makes their weights autograd-safe)."""
        return [tower.model.transformer for tower in self.towers]

    def load(self) -> None:
        comfy.model_management.load_model_gpu(self.clip.patcher)

    def word_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens (every tower of a family shares CLIP's BPE vocabulary)."""
        return self.towers[0].word_ids(text)

    def token_embedding(self, word: str) -> torch.Tensor:
        """``(n, sum of tower widths)``: the word's input embeddings in every tower, side by side."""
        ids = self.towers[0].word_ids(word)
        if not ids:
            raise ValueError(f"'{word}' tokenises to nothing; choose a word made of letters.")
        return torch.cat([tower.embed_ids(ids).detach().clone() for tower in self.towers], dim=-1)

    def encode(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        learned_tokens = learned_tokens or {}
        rows = []
        for prompt in prompts:
            if any(name in prompt.split() for name in learned_tokens):
                rows.append(self._encode_differentiable(prompt, learned_tokens))
            else:
                with torch.no_grad():
                    context, pooled = self.clip.encode_from_tokens(self.clip.tokenize(prompt), return_pooled=True)
                rows.append(pack_conditioning(self.family, context.float().to(self.device),
                                              None if pooled is None else pooled.float().to(self.device)))
        return torch.cat(rows)

    def _pieces(self, prompt: str, learned_tokens: Mapping[str, torch.Tensor], tower: int) -> list:
        """The prompt as word-id lists and this tower's slice of each learned embedding, in order."""
        start = sum(self.token_dims[:tower])
        pieces: list = []
        words: list[str] = []
        for word in prompt.split() + [None]:
            if word is not None and word not in learned_tokens:
                words.append(word)
                continue
            if words:
                pieces.append(self.towers[tower].word_ids(" ".join(words)))
                words = []
            if word is not None:
                embedding = learned_tokens[word].reshape(-1, sum(self.token_dims))
                pieces.append(embedding[:, start:start + self.token_dims[tower]])
        return pieces

    def _encode_differentiable(self, prompt: str, learned_tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden, pooled = [], None
        for index, tower in enumerate(self.towers):
            wants_pooled = tower.name == self.family.pooled_tower
            h, p = tower.encode(self._pieces(prompt, learned_tokens, index), self.clip.layer_idx, wants_pooled)
            hidden.append(h.to(self.device))
            pooled = p.to(self.device) if wants_pooled else pooled
        return pack_conditioning(self.family, torch.cat(hidden, dim=-1), pooled)

    def embedding_tensors(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """A learned token as the tensors of ComfyUI's embedding file for this family (SDXL: ``clip_l`` and
        ``clip_g``; SD1/SD2: ``emb_params``)."""
        rows = embedding.detach().float().cpu().reshape(-1, sum(self.token_dims))
        if self.family.embedding_keys is None:
            return {"emb_params": rows.contiguous()}
        parts = rows.split(self.token_dims, dim=-1)
        return {key: part.contiguous() for key, part in zip(self.family.embedding_keys, parts)}


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
