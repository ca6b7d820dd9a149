"""Contrastive training of a tiny open_clip model on the co-occurrence world, so that the pack's own
CARE-set construction and CARE score (:class:`recare_core.careset.clip_model.CareClip`) run on it unchanged.

Images go through :meth:`CareClip.preprocess_images` and captions through its CLIP BPE tokenizer, exactly as at
inference. Identical captions in a batch (``a circle`` twice) are all positives of each other (soft targets).

A real CLIP has seen every vocabulary entry and knows that ``bahamas`` does not describe a striped circle; a
CLIP trained on this world alone would leave the ~49,000 entries it never saw at random places, some of them
close to the images. So each step also draws ``distractor_words`` random vocabulary entries (not world words,
embedded as the CARE-set vocabulary is: the ``</w>``-stripped entry) as extra negatives of every image.
The model is saved in the layout of an open_clip Hugging Face repository (``open_clip_config.json`` +
``open_clip_model.safetensors``), which :func:`recare_core.careset.clip_model.load_care_clip` reads with
``arch=FROM_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import ProgressCallback, StopCallback, check_stop
from ..careset.clip_model import CareClip
from ..careset.clip_loading import CONFIG_FILE_NAME
from .render import render_batch
from .world import CaptionStyle, random_caption, sample_scene, vocabulary_words

WEIGHTS_FILE_NAME = "open_clip_model.safetensors"


def default_clip_config() -> dict[str, Any]:
    """open_clip model config (the dict format of open_clip's ``model_configs/*.json``) of the toy CLIP:
    a 16x16 ViT with 4x4 patches and a 2-layer text tower over the full 49,408-entry CLIP BPE vocabulary."""
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 16, "layers": 3, "width": 64, "head_width": 32, "patch_size": 4},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }


PREPROCESS_CONFIG: dict[str, Any] = {
    "size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear",
    "resize_mode": "squash",
}


@dataclass
class ClipTrainConfig:
    model: dict[str, Any] = field(default_factory=default_clip_config)
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    caption_style: CaptionStyle = field(default_factory=CaptionStyle)
    distractor_words: int = 256
    striped_elsewhere: float = 0.0  # > 0: the partial co-occurrence world (world.WORLDS)
    seed: int = 0
    log_every: int = 100

    def validate(self) -> None:
        if self.distractor_words < 0:
            raise ValueError(f"distractor_words must be 0 or more, got {self.distractor_words}.")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"steps must be at least 1 and batch_size at least 2 (a contrastive batch needs "
                             f"negatives); got {self.steps}, {self.batch_size}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_toy_clip(model_config: dict[str, Any], seed: int, identity: str) -> CareClip:
    """A randomly initialised open_clip ``CLIP`` of ``model_config`` wrapped as a :class:`CareClip`."""
    from open_clip.model import CLIP, set_model_preprocess_cfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**model_config)
    set_model_preprocess_cfg(model, dict(PREPROCESS_CONFIG))
    return CareClip(model, identity, preprocess=dict(PREPROCESS_CONFIG))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     captions: list[str], distractor_features: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the batch with every identical caption counted as a positive;
    ``distractor_features`` are further negatives of every image."""
    scale = logit_scale.exp()
    logits = scale * image_features @ text_features.T
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    image_logits, image_targets = logits, targets
    if distractor_features is not None and distractor_features.shape[0]:
        image_logits = torch.cat([logits, scale * image_features @ distractor_features.T], dim=1)
        image_targets = F.pad(targets, (0, distractor_features.shape[0]))
    return 0.5 * (torch.sum(-image_targets * F.log_softmax(image_logits, dim=1), dim=1).mean()
                  + torch.sum(-targets * F.log_softmax(logits.T, dim=1), dim=1).mean())


def distractor_token_ids(clip: CareClip) -> list[list[int]]:
    """BPE ids of every vocabulary entry that is not a world word (the text the CARE-set vocabulary embeds)."""
    world = set(vocabulary_words())
    seen: set[str] = set()
    sequences = []
    for entry in clip.vocabulary():
        text = entry.strip().lower()
        if text and text not in world and text not in seen:
            seen.add(text)
            ids = clip.token_ids(entry)
            if ids:
                sequences.append(ids)
    return sequences


def encode_token_sequences(model, clip: CareClip, sequences: list[list[int]]) -> torch.Tensor:
    """Text features (with gradients) of BPE id sequences, start/end tokens added, zero-padded."""
    body = clip.context_length - 2
    ids = torch.zeros(len(sequences), clip.context_length, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        tokens = [clip.tokenizer.sot_token_id, *sequence[:body], clip.tokenizer.eot_token_id]
        ids[row, :len(tokens)] = torch.tensor(tokens)
    return model.encode_text(ids)


def train_clip(config: ClipTrainConfig | None = None, progress: ProgressCallback | None = None,
               should_stop: StopCallback | None = None) -> tuple[CareClip, dict]:
    """Train from scratch; returns the CLIP (eval mode) and a report (loss curve, seconds, config)."""
    config = config or ClipTrainConfig()
    config.validate()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    clip = build_toy_clip(config.model, config.seed, "toyworld-clip/training")
    model = clip.model.train()
    size = int(config.model["vision_cfg"]["image_size"])
    distractors = distractor_token_ids(clip) if config.distractor_words else []
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses, window = [], []
    start = time.perf_counter()
    for step in range(config.steps):
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps)) if step >= config.warmup_steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = lr
        scenes = [sample_scene(rng, size, cooccurrence=True, striped_elsewhere=config.striped_elsewhere)
                  for _ in range(config.batch_size)]
        captions = [random_caption(scene, rng, config.caption_style) for scene in scenes]
        image_features = F.normalize(model.encode_image(clip.preprocess_images(render_batch(scenes, size))), dim=-1)
        text_features = F.normalize(model.encode_text(clip.tokenize(captions)), dim=-1)
        distractor_features = None
        if distractors:
            picks = rng.choice(len(distractors), config.distractor_words, replace=False)
            distractor_features = F.normalize(
                encode_token_sequences(model, clip, [distractors[i] for i in picks]), dim=-1)
        loss = contrastive_loss(image_features, text_features, model.logit_scale, captions, distractor_features)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"The CLIP loss became {value} at step {step + 1}: lower the learning rate.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        window.append(value)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            losses.append(round(sum(window) / len(window), 5))
            window.clear()
        if progress is not None:
            progress(step + 1, config.steps, f"CLIP: step {step + 1}/{config.steps}, loss {value:.4f}")
        check_stop(should_stop, f"CLIP training was stopped at step {step + 1}.")
    model.eval()
    report = {"config": config.to_dict(), "seconds": round(time.perf_counter() - start, 1),
              "loss_curve": {"every": config.log_every, "mean_loss": losses},
              "logit_scale": round(float(model.logit_scale.detach().exp()), 3)}
    return clip, report


def save_clip(clip: CareClip, directory: str | Path, model_config: dict[str, Any], half: bool = True) -> Path:
    """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` (float16 by default) into
    ``directory``; returns the weights path (load it with ``load_care_clip(FROM_CONFIG, path)``)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    document = {"model_cfg": model_config, "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in PREPROCESS_CONFIG.items()}}
    (directory / CONFIG_FILE_NAME).write_text(json.dumps(document, indent=2), encoding="utf-8")
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in clip.model.state_dict().items()}
    path = directory / WEIGHTS_FILE_NAME
    save_file(state, str(path))
    return path
