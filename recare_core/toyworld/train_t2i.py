"""Training of the toy text-to-image model (:class:`recare_core.toyworld.toy_model.ToyTextToImage`) on the co-occurrence
world: standard DDPM eps-prediction loss, fresh renders every step, caption dropout for classifier-free
guidance, AdamW with warm-up and cosine decay, and an exponential moving average of the weights (the EMA weights
are the result). Seeded: the same config gives the same weights on the same machine and torch build."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..progress import ProgressCallback, StopCallback, check_stop
from .toy_model import ToyModelConfig, ToyTextToImage
from .render import render_batch
from .world import CaptionStyle, random_caption, sample_scene


class ToyTrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def default_model_config() -> ToyModelConfig:
    """The shipped model's architecture: 16x16 RGB, ~1M UNet parameters, one attention head (the fastest on a
    CPU at this width)."""
    return ToyModelConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, num_heads=1,
                          text_width=32, text_layers=2, text_heads=2, context_length=16)


@dataclass
class TextToImageTrainConfig:
    model: ToyModelConfig = field(default_factory=default_model_config)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    min_snr_gamma: float = 0.0
    """> 0: Min-SNR-gamma loss weights ``min(SNR, gamma) / SNR`` (Hang et al. 2023), which move the eps loss's weight
    from nearly clean timesteps to the noisy ones where a scene's shape is decided; 0: the plain eps loss."""
    caption_style: CaptionStyle = field(default_factory=CaptionStyle)
    striped_elsewhere: float = 0.0  # > 0: the partial co-occurrence world (world.WORLDS)
    seed: int = 0
    log_every: int = 50

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1 (got {self.steps}, {self.batch_size}).")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.caption_dropout < 1:
            raise ValueError("ema_decay and caption_dropout must be in [0, 1).")
        if self.min_snr_gamma < 0:
            raise ValueError(f"min_snr_gamma must be 0 (off) or positive, got {self.min_snr_gamma}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def learning_rate(step: int, config: TextToImageTrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def training_batch(rng: np.random.Generator, config: TextToImageTrainConfig) -> tuple[torch.Tensor, list[str]]:
    """Fresh co-occurrence-world renders ``(B, H, W, 3)`` and their captions (some dropped to ``""``)."""
    size = config.model.image_size
    scenes = [sample_scene(rng, size, cooccurrence=True, striped_elsewhere=config.striped_elsewhere)
              for _ in range(config.batch_size)]
    captions = ["" if rng.random() < config.caption_dropout else random_caption(scene, rng, config.caption_style)
                for scene in scenes]
    return render_batch(scenes, size), captions


def timestep_loss_weights(alphas: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-timestep weights of the eps loss: Min-SNR-gamma ``min(SNR, gamma) / SNR`` or, for ``gamma`` 0, ones."""
    if gamma <= 0:
        return torch.ones_like(alphas)
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


@torch.no_grad()
def _ema_update(ema: ToyTextToImage, model: ToyTextToImage, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1.0 - decay)


def train_text_to_image(config: TextToImageTrainConfig | None = None, progress: ProgressCallback | None = None,
                        should_stop: StopCallback | None = None) -> tuple[ToyTextToImage, dict]:
    """Train from scratch; returns the EMA model (eval mode) and a report (loss curve, seconds, config)."""
    config = config or TextToImageTrainConfig()
    config.validate()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    model = ToyTextToImage(config.model, seed=config.seed)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    alphas = model.alphas_cumprod().float()
    loss_weights = timestep_loss_weights(alphas, config.min_snr_gamma)
    losses: list[float] = []
    window: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        images, captions = training_batch(rng, config)
        x0 = model.images_to_latents(images)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, alphas.shape[0], (x0.shape[0],), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        squared = (model.unet(x_t, t, model.encode_text(captions)) - noise).square().mean(dim=(1, 2, 3))
        loss = (loss_weights[t] * squared).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ToyTrainingDiverged(f"The loss became {value} at step {step + 1}: lower the learning rate.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
        window.append(value)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            losses.append(sum(window) / len(window))
            window.clear()
        if progress is not None:
            progress(step + 1, config.steps, f"text-to-image: step {step + 1}/{config.steps}, loss {value:.4f}")
        check_stop(should_stop, f"Text-to-image training was stopped at step {step + 1}.")
    report = {"config": config.to_dict(), "seconds": round(time.perf_counter() - start, 1),
              "loss_curve": {"every": config.log_every, "mean_loss": [round(v, 5) for v in losses]},
              "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
              "torch_version": torch.__version__}
    return ema.eval(), report
