"""A tiny pixel-space text-to-image diffusion model in plain torch, shaped like Stable Diffusion.

* Text encoder: CLIP BPE tokens (open_clip's ``SimpleTokenizer``, offline) -> token embedding
  ``nn.Embedding(49408, width)`` + learned positions -> a few causal pre-LN transformer layers -> final layer norm.
  Short context (16 by default); padded with the end token like SD's CLIP.
* UNet (:mod:`recare_core.toyworld.toy_unet`): ResBlocks with timestep embedding and spatial transformers whose
  blocks hold self-attention ``attn1`` and cross-attention ``attn2`` (the naming diffusers and ComfyUI use),
  down/mid/up blocks with skip connections.
* Pixel space: the "latents" are the images themselves, channels-first, scaled to [-1, 1].
* Schedule: 1000-step linear-beta DDPM, eps prediction.

Learned textual-inversion tokens are whole whitespace-separated words of a prompt; their embeddings replace the
token embeddings before the transformer, differentiably.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .toy_unet import ToyUNet

START_TOKEN, END_TOKEN = 49406, 49407


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the tiny model (defaults: ~0.9M UNet parameters, 16x16 RGB images, 16-token context)."""

    image_size: int = 16
    in_channels: int = 3
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    num_heads: int = 4
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 16
    vocab_size: int = 49408
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    pooled_context: bool = False  # also add the context's mean (projected) to the timestep embedding

    def __post_init__(self) -> None:
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult needs one multiplier of at least 1 per level, got {self.channel_mult}.")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by {factor} for this channel_mult.")
        if self.model_channels % self.num_heads or self.text_width % self.text_heads:
            raise ValueError("Channel and text widths must be divisible by their numbers of heads.")
        if self.context_length < 3:
            raise ValueError("context_length must leave room for start, one token and end.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ToyModelConfig":
        data = json.loads(text)
        data["channel_mult"] = tuple(data["channel_mult"])
        return cls(**data)


# -- tokenizer ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def word_token_ids(text: str) -> list[int]:
    """CLIP BPE ids of ``text`` without start/end tokens (lower-cased and cleaned like CLIP)."""
    return list(_bpe().encode(text))


def split_placeholders(prompt: str, placeholders: Iterable[str]) -> list[str | int]:
    """``prompt`` as a list of BPE ids and placeholder names (placeholders are whole whitespace-separated words)."""
    names = sorted(set(placeholders), key=len, reverse=True)
    if not names:
        return word_token_ids(prompt)
    pattern = re.compile(r"(?<!\S)(" + "|".join(re.escape(n) for n in names) + r")(?!\S)")
    pieces: list[str | int] = []
    position = 0
    for match in pattern.finditer(prompt):
        pieces.extend(word_token_ids(prompt[position:match.start()]))
        pieces.append(match.group(1))
        position = match.end()
    pieces.extend(word_token_ids(prompt[position:]))
    return pieces


# -- text encoder ------------------------------------------------------------------------------------------------

class _TextSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (p(x).view(b, n, self.heads, w // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class _TextLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width)
        self.self_attn = _TextSelfAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.layer_norm2(x))))


class ToyTextEncoder(nn.Module):
    """Causal transformer over CLIP BPE tokens; output ``(B, context_length, width)`` hidden states."""

    def __init__(self, config: ToyModelConfig):
        super().__init__()
        self.context_length = config.context_length
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.position_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.layers = nn.ModuleList(_TextLayer(config.text_width, config.text_heads)
                                    for _ in range(config.text_layers))
        self.final_layer_norm = nn.LayerNorm(config.text_width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.position_embedding[: x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.final_layer_norm(x)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.forward_embeddings(self.token_embedding(token_ids))


# -- the whole model ---------------------------------------------------------------------------------------------

class ToyTextToImage(nn.Module):
    """Text encoder + UNet + DDPM schedule; images are their own latents (``images * 2 - 1``, channels first)."""

    def __init__(self, config: ToyModelConfig | None = None, seed: int = 0):
        super().__init__()
        self.config = config or ToyModelConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.text_encoder = ToyTextEncoder(self.config)
            self.unet = ToyUNet(self.config)

    # schedule
    def alphas_cumprod(self) -> torch.Tensor:
        """``(num_train_timesteps,)`` float64 cumulative alpha products of the linear-beta schedule."""
        c = self.config
        betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)

    # text
    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, context_length)`` ids: start, BPE tokens (truncated), end, end-token padding."""
        return torch.tensor([self._layout(p, {})[0] for p in prompts], dtype=torch.long)

    def _layout(self, prompt: str, learned: Mapping[str, torch.Tensor]) -> tuple[list[int], list[tuple[int, str, int]]]:
        """Token ids of the padded sequence and the (position, name, row) slots taken by learned embeddings."""
        items: list[int | tuple[str, int]] = []
        for piece in split_placeholders(prompt, learned):
            if isinstance(piece, int):
                items.append(piece)
            else:
                rows = learned[piece].numel() // learned[piece].shape[-1]
                items.extend((piece, row) for row in range(rows))
        limit = self.config.context_length - 2
        if len(items) > limit and any(not isinstance(i, int) for i in items[limit:]):
            raise ValueError(f"The prompt '{prompt}' is too long for the {self.config.context_length}-token context: "
                             "its learned token would be cut off.")
        items = [START_TOKEN] + items[:limit] + [END_TOKEN]
        items += [END_TOKEN] * (self.config.context_length - len(items))
        ids = [i if isinstance(i, int) else END_TOKEN for i in items]
        slots = [(pos, i[0], i[1]) for pos, i in enumerate(items) if not isinstance(i, int)]
        return ids, slots

    def encode_text(self, prompts: Sequence[str], learned_tokens: Mapping[str, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        """Hidden states ``(B, context_length, text_width)``; placeholder words of ``learned_tokens`` get their
        embedding rows (``(n, text_width)``) in place of token embeddings, differentiably."""
        learned = dict(learned_tokens or {})
        weight = self.text_encoder.token_embedding.weight
        layouts = [self._layout(p, learned) for p in prompts]
        x = F.embedding(torch.tensor([ids for ids, _ in layouts], dtype=torch.long, device=weight.device), weight)
        slots = [(b, pos, name, row) for b, (_, s) in enumerate(layouts) for pos, name, row in s]
        if slots:
            values = torch.stack([learned[name].reshape(-1, weight.shape[1])[row] for _, _, name, row in slots])
            index = (torch.tensor([s[0] for s in slots], device=weight.device),
                     torch.tensor([s[1] for s in slots], device=weight.device))
            x = x.index_put(index, values.to(device=weight.device, dtype=x.dtype))
        return self.text_encoder.forward_embeddings(x)

    def word_embedding(self, word: str) -> torch.Tensor:
        """``(n_tokens, text_width)`` token embeddings of ``word`` (a detached copy)."""
        ids = word_token_ids(word)
        weight = self.text_encoder.token_embedding.weight
        return weight[torch.tensor(ids, dtype=torch.long, device=weight.device)].detach().clone()

    # images
    @staticmethod
    def images_to_latents(images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` images in [0, 1] -> ``(B, C, H, W)`` in [-1, 1]."""
        return images.permute(0, 3, 1, 2) * 2.0 - 1.0

    @staticmethod
    def latents_to_images(latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    # persistence
    def save(self, path: str | Path) -> None:
        """Weights and config in one ``.safetensors`` file (config JSON in its metadata)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"recare_toy_config": self.config.to_json()})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "ToyTextToImage":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "recare_toy_config" not in metadata:
            raise ValueError(f"{path} is not a toy model file saved by ToyTextToImage.save (no config metadata).")
        model = cls(ToyModelConfig.from_json(metadata["recare_toy_config"]))
        model.load_state_dict(load_file(str(path)))
        return model.to(device)
