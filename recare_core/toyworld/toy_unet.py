"""The toy text-to-image model's UNet (:class:`ToyUNet`), shaped like Stable Diffusion's: ResBlocks with timestep
embedding, spatial transformers whose blocks hold self-attention ``attn1`` and cross-attention ``attn2`` (with
``to_q`` / ``to_k`` / ``to_v`` / ``to_out``, the naming diffusers and ComfyUI use), down / mid / up blocks with
skip connections; eps prediction in pixel space."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .toy_model import ToyModelConfig


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of (possibly fractional) timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention; cross-attention when ``context_dim`` is given."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(context)), heads(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.attn2 = Attention(dim, heads, context_dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            y = block(y, context)
        return x + self.proj_out(y).transpose(1, 2).reshape(b, c, h, w)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, heads: int, context_dim: int,
                 num_res_blocks: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(in_channels if i == 0 else out_channels, out_channels, temb_dim)
                                     for i in range(num_res_blocks))
        self.attentions = nn.ModuleList(SpatialTransformer(out_channels, heads, context_dim)
                                        for _ in range(num_res_blocks))
        self.downsample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = []
        for resnet, attention in zip(self.resnets, self.attentions):
            x = attention(resnet(x, temb), context)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, tuple(skips)


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb_dim: int, heads: int, context_dim: int):
        super().__init__()
        self.resnet1 = ResBlock(channels, channels, temb_dim)
        self.attention = SpatialTransformer(channels, heads, context_dim)
        self.resnet2 = ResBlock(channels, channels, temb_dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.resnet2(self.attention(self.resnet1(x, temb), context), temb)


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: Sequence[int], out_channels: int, temb_dim: int,
                 heads: int, context_dim: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock((in_channels if i == 0 else out_channels) + skip, out_channels, temb_dim)
            for i, skip in enumerate(skip_channels))
        self.attentions = nn.ModuleList(SpatialTransformer(out_channels, heads, context_dim)
                                        for _ in skip_channels)
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: torch.Tensor, skips: tuple[torch.Tensor, ...], temb: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        for resnet, attention, skip in zip(self.resnets, self.attentions, skips):
            x = attention(resnet(torch.cat([x, skip], dim=1), temb), context)
        return x if self.upsample is None else self.upsample(x)


class ToyUNet(nn.Module):
    """Conditional eps-prediction UNet: ``forward(x_t (B,C,H,W), timesteps (B,), context (B,L,D))``."""

    def __init__(self, config: ToyModelConfig):
        super().__init__()
        mc, temb_dim, ctx = config.model_channels, 4 * config.model_channels, config.text_width
        heads = config.num_heads
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        # Global conditioning for global attributes (shape): the mean context row, as SDXL adds its pooled text.
        self.context_embed = nn.Linear(ctx, temb_dim) if config.pooled_context else None
        self.conv_in = nn.Conv2d(config.in_channels, mc, 3, padding=1)
        skip_channels, channels = [mc], mc
        self.down_blocks = nn.ModuleList()
        last = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            out = mc * mult
            self.down_blocks.append(DownBlock(channels, out, temb_dim, heads, ctx, config.num_res_blocks,
                                              downsample=level != last))
            skip_channels += [out] * (config.num_res_blocks + (level != last))
            channels = out
        self.mid_block = MidBlock(channels, temb_dim, heads, ctx)
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(len(config.channel_mult))):
            out = mc * config.channel_mult[level]
            skips = [skip_channels.pop() for _ in range(config.num_res_blocks + 1)]
            self.up_blocks.append(UpBlock(channels, skips, out, temb_dim, heads, ctx, upsample=level != 0))
            channels = out
        self.norm_out = nn.GroupNorm(_groups(channels), channels)
        self.conv_out = nn.Conv2d(channels, config.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        if self.context_embed is not None:
            temb = temb + self.context_embed(context.mean(dim=1))
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context)
            skips.extend(block_skips)
        h = self.mid_block(h, temb, context)
        for block in self.up_blocks:
            count = len(block.resnets)
            h = block(h, tuple(reversed(skips[-count:])), temb, context)
            del skips[-count:]
        return self.conv_out(F.silu(self.norm_out(h)))
