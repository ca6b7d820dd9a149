"""Deterministic numpy renderer of toy-world scenes: anti-aliased shapes (drawn 4x larger, then box-averaged)
with crisp pixel-aligned textures on a flat background."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .world import Scene

SUPERSAMPLE = 4
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
}
BACKGROUND_GREY: dict[str, float] = {"dark": 0.12, "light": 0.85}
TEXTURE_SHADE = 0.4
"""Texture marks are the shape's colour times this factor."""
TEXTURE_PERIOD = 4
"""Stripes: 2-pixel bands every 4 pixels; dots: 2x2 squares on a 4-pixel grid."""


def _shape_coverage(scene: Scene, image_size: int) -> np.ndarray:
    """Fraction of each output pixel covered by the shape, ``(H, W)`` in [0, 1]."""
    n = image_size * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(coords - scene.centre_x, coords - scene.centre_y)
    r = scene.radius
    if scene.shape == "circle":
        inside = x * x + y * y <= r * r
    elif scene.shape == "square":
        inside = (np.abs(x) <= 0.85 * r) & (np.abs(y) <= 0.85 * r)
    elif scene.shape == "diamond":
        inside = np.abs(x) + np.abs(y) <= 1.2 * r
    else:  # triangle, apex up
        top, bottom, half_base = -r, 0.8 * r, 1.1 * r
        inside = (y >= top) & (y <= bottom) & (np.abs(x) <= (y - top) / (bottom - top) * half_base)
    return inside.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE).mean(axis=(1, 3))


def _texture_marks(scene: Scene, image_size: int) -> np.ndarray:
    """Boolean ``(H, W)``: pixels drawn in the darker texture shade."""
    index = np.arange(image_size)
    half = TEXTURE_PERIOD // 2
    rows = ((index + scene.phase_y) % TEXTURE_PERIOD) < half
    cols = ((index + scene.phase_x) % TEXTURE_PERIOD) < half
    if scene.texture == "striped":
        return np.repeat(rows[:, None], image_size, axis=1)
    if scene.texture == "dotted":
        return rows[:, None] & cols[None, :]
    return np.zeros((image_size, image_size), dtype=bool)


def render_scene(scene: Scene, image_size: int) -> np.ndarray:
    """``(H, W, 3)`` float32 image in [0, 1]."""
    grey = BACKGROUND_GREY[scene.background] + scene.brightness
    background = np.full((image_size, image_size, 3), grey, dtype=np.float32)
    colour = np.asarray(COLOUR_RGB[scene.colour], dtype=np.float32)
    fill = np.where(_texture_marks(scene, image_size)[..., None], colour * TEXTURE_SHADE, colour)
    coverage = _shape_coverage(scene, image_size)[..., None].astype(np.float32)
    return np.clip(coverage * fill + (1.0 - coverage) * background, 0.0, 1.0).astype(np.float32)


def render_batch(scenes: Sequence[Scene], image_size: int) -> torch.Tensor:
    """``(B, H, W, 3)`` float32 tensor in [0, 1] (ComfyUI ``IMAGE`` layout)."""
    if not scenes:
        raise ValueError("No scenes to render.")
    return torch.from_numpy(np.stack([render_scene(scene, image_size) for scene in scenes]))
