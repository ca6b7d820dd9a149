"""Attribute checkers: a tiny CNN with one head per attribute, trained on renders of the full world.

The renderer knows every attribute of what it draws, so the checker learns ground truth. It is trained on the
*full* world (every shape can be striped) with noise and blur augmentation, so that it recognises an attribute
wherever a generated image shows it. Its accuracy on held-out renders is part of its saved report.

A checker with ``no_shape`` also answers ``none`` for the shape of an image that shows no recognisable shape
(noise, an empty background, a smeared blob: what a damaged model draws), so that noise is not counted as some
shape. It learns that class from such images, rendered by :func:`render_shapeless`, whose other attributes but
the background are left out of the loss.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..progress import ProgressCallback, StopCallback, check_stop
from .render import BACKGROUND_GREY, COLOUR_RGB, render_batch
from .world import ATTRIBUTES, BACKGROUNDS, COLOURS, SHAPES, sample_scene


NO_SHAPE = "none"
"""The shape verdict of a ``no_shape`` checker for an image without a recognisable shape."""
IGNORE = -100
"""Label of an attribute a training image does not have (left out of the loss)."""


@dataclass(frozen=True)
class CheckerConfig:
    image_size: int = 16
    width: int = 32
    no_shape: bool = False

    def values(self, attribute: str) -> tuple[str, ...]:
        """The verdicts of the head of ``attribute``."""
        extra = (NO_SHAPE,) if self.no_shape and attribute == "shape" else ()
        return ATTRIBUTES[attribute] + extra


class AttributeChecker(nn.Module):
    """``forward(images (B, H, W, 3) in [0, 1]) -> {attribute: logits (B, n_values)}``."""

    def __init__(self, config: CheckerConfig = CheckerConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(8 * w, len(config.values(name))) for name in ATTRIBUTES})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"The checker expects images (batch, height, width, 3), got {tuple(images.shape)}.")
        if tuple(images.shape[1:3]) != (self.config.image_size,) * 2:
            images = F.interpolate(images.permute(0, 3, 1, 2), size=(self.config.image_size,) * 2, mode="bilinear",
                                   antialias=True, align_corners=False).permute(0, 2, 3, 1)
        features = self.features(images.permute(0, 3, 1, 2).float() * 2.0 - 1.0)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, list[str]]:
        """The predicted value of every attribute for each image."""
        if images.shape[0] == 0:
            raise ValueError("No images to check: the batch is empty.")
        self.eval()
        indices: dict[str, list[int]] = {name: [] for name in ATTRIBUTES}
        for start in range(0, images.shape[0], batch_size):
            logits = self(images[start:start + batch_size].float())
            for name in ATTRIBUTES:
                indices[name] += logits[name].argmax(dim=1).tolist()
        return {name: [self.config.values(name)[i] for i in values] for name, values in indices.items()}

    def save(self, path: str | Path, report: dict | None = None) -> None:
        from safetensors.torch import save_file

        metadata = {"recare_checker_config": json.dumps(asdict(self.config)),
                    "recare_checker_report": json.dumps(report or {})}
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path),
                  metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> tuple["AttributeChecker", dict]:
        """The checker saved at ``path`` and its training report."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "recare_checker_config" not in metadata:
            raise ValueError(f"{path} is not an attribute-checker file (no checker config in its metadata).")
        checker = cls(CheckerConfig(**json.loads(metadata["recare_checker_config"])))
        checker.load_state_dict(load_file(str(path)))
        return checker.eval(), json.loads(metadata.get("recare_checker_report", "{}"))


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augmentation toward what a small diffusion model draws: random blur, pixel noise and a colour shift."""
    b = images.shape[0]
    x = images.permute(0, 3, 1, 2)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(b, 1, 1, 1, generator=generator) * 0.6
    x = (1 - mix) * x + mix * blurred
    x = x + torch.randn(x.shape, generator=generator) * torch.rand(b, 1, 1, 1, generator=generator) * 0.08
    x = x + (torch.rand(b, 3, 1, 1, generator=generator) - 0.5) * 0.1
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def render_labelled(rng: np.random.Generator, count: int, image_size: int, cooccurrence: bool = False
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``count`` random renders and their attribute labels."""
    scenes = [sample_scene(rng, image_size, cooccurrence=cooccurrence) for _ in range(count)]
    labels = {name: torch.tensor([s.labels()[name] for s in scenes]) for name in ATTRIBUTES}
    return render_batch(scenes, image_size), labels


def render_shapeless(rng: np.random.Generator, count: int, image_size: int
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``count`` images with no recognisable shape and their labels (shape ``none``, the background; colour and
    texture :data:`IGNORE`): a third pixel noise over a background, a third a flat background with faint noise,
    a third a smooth random blob field in a colour (a shape smeared beyond recognition)."""
    kinds = rng.integers(3, size=count)
    backgrounds = rng.integers(len(BACKGROUNDS), size=count)
    images = np.empty((count, image_size, image_size, 3), dtype=np.float32)
    for i, (kind, background) in enumerate(zip(kinds, backgrounds)):
        grey = BACKGROUND_GREY[BACKGROUNDS[background]]
        image = np.full((image_size, image_size, 3), grey, dtype=np.float32)
        if kind == 0:
            image += rng.normal(0.0, rng.uniform(0.15, 0.5), image.shape)
        elif kind == 1:
            image += rng.normal(0.0, 0.03, image.shape)
        else:
            coarse = rng.random((4, 4))
            field_ = np.kron(coarse, np.ones((image_size // 4, image_size // 4)))
            field_ = (field_ + np.roll(field_, 2, 0) + np.roll(field_, 2, 1) + np.roll(field_, (2, 2), (0, 1))) / 4
            colour = np.asarray(COLOUR_RGB[COLOURS[rng.integers(len(COLOURS))]], dtype=np.float32)
            alpha = (field_ * rng.uniform(0.4, 0.9))[..., None]
            image = (1 - alpha) * image + alpha * colour
        images[i] = np.clip(image, 0.0, 1.0)
    ignore = torch.full((count,), IGNORE)
    labels = {"shape": torch.full((count,), len(SHAPES)), "colour": ignore, "texture": ignore.clone(),
              "background": torch.tensor(backgrounds)}
    return torch.from_numpy(images), labels


def training_batch(rng: np.random.Generator, count: int, image_size: int, no_shape: bool
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Full-world renders; with ``no_shape`` an eighth of the batch is shapeless (:func:`render_shapeless`)."""
    shapeless = count // 8 if no_shape else 0
    images, labels = render_labelled(rng, count - shapeless, image_size)
    if shapeless:
        extra, extra_labels = render_shapeless(rng, shapeless, image_size)
        images = torch.cat([images, extra])
        labels = {name: torch.cat([labels[name], extra_labels[name]]) for name in ATTRIBUTES}
    return images, labels


@torch.no_grad()
def checker_accuracy(checker: AttributeChecker, images: torch.Tensor, labels: dict[str, torch.Tensor]
                     ) -> dict[str, float]:
    """Per-attribute accuracy and ``all`` (every attribute right)."""
    checker.eval()
    logits = checker(images)
    known = {name: labels[name] != IGNORE for name in ATTRIBUTES}
    right = {name: (logits[name].argmax(1) == labels[name]) | ~known[name] for name in ATTRIBUTES}
    accuracy = {name: float(right[name][known[name]].float().mean()) for name in ATTRIBUTES if known[name].any()}
    accuracy["all"] = float(torch.stack(list(right.values())).all(0).float().mean())
    return accuracy


def train_checker(image_size: int = 16, steps: int = 1500, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                  held_out: int = 2000, progress: ProgressCallback | None = None,
                  should_stop: StopCallback | None = None, no_shape: bool = False) -> tuple[AttributeChecker, dict]:
    """Train a checker on fresh full-world renders each step (with ``no_shape``, shapeless images too); returns
    it and a report with its accuracy on ``held_out`` renders from a separate seed, clean and degraded (and on
    held-out shapeless images)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    checker = AttributeChecker(CheckerConfig(image_size=image_size, no_shape=no_shape))
    optimizer = torch.optim.AdamW(checker.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    checker.train()
    for step in range(steps):
        images, labels = training_batch(rng, batch_size, image_size, no_shape)
        images = torch.where(torch.rand(batch_size, 1, 1, 1, generator=generator) < 0.8,
                             degrade(images, generator), images)
        logits = checker(images)
        loss = sum(F.cross_entropy(logits[name], labels[name], ignore_index=IGNORE) for name in ATTRIBUTES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, steps, f"attribute checker: step {step + 1}/{steps}, loss {float(loss.detach()):.4f}")
        check_stop(should_stop, "Checker training was stopped.")
    test_rng = np.random.default_rng(seed + 1_000_003)
    images, labels = render_labelled(test_rng, held_out, image_size)
    degraded = degrade(images, torch.Generator().manual_seed(seed + 1))
    report = {
        "steps": steps, "batch_size": batch_size, "seed": seed, "image_size": image_size, "no_shape": no_shape,
        "seconds": round(time.perf_counter() - start, 1), "held_out_images": held_out,
        "held_out_accuracy": checker_accuracy(checker, images, labels),
        "held_out_accuracy_degraded": checker_accuracy(checker, degraded, labels),
    }
    if no_shape:
        shapeless, shapeless_labels = render_shapeless(test_rng, held_out // 4, image_size)
        report["held_out_shapeless_accuracy"] = checker_accuracy(checker, shapeless, shapeless_labels)
    return checker.eval(), report
