"""Loss curves drawn with PIL, returned as a ComfyUI-style IMAGE tensor ``(1, H, W, 3)`` in [0, 1]."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

PANEL_W, PANEL_H, MARGIN = 360, 220, 36
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if window <= 1 or array.size < window:
        return array
    kernel = np.ones(window) / window
    return np.convolve(array, kernel, mode="valid")


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], title: str, values: Sequence[float],
                colour: tuple[int, int, int]) -> None:
    x0, y0 = origin
    left, top, right, bottom = x0 + MARGIN, y0 + 24, x0 + PANEL_W - 10, y0 + PANEL_H - 24
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    finite = [v for v in values if math.isfinite(v)]
    draw.text((x0 + 6, y0 + 4), f"{title}  ({len(values)} steps, last {values[-1]:.4g})" if values else title,
              fill=(0, 0, 0))
    if len(finite) < 2:
        draw.text((left + 8, top + 8), "not enough steps to plot", fill=(90, 90, 90))
        return
    curve = _smooth(finite, max(1, len(finite) // 50))
    low, high = float(curve.min()), float(curve.max())
    span = high - low or 1.0
    points = [(left + (right - left) * i / (len(curve) - 1), bottom - (bottom - top) * (v - low) / span)
              for i, v in enumerate(curve)]
    draw.line(points, fill=colour, width=2)
    draw.text((x0 + 2, top - 2), f"{high:.3g}", fill=(60, 60, 60))
    draw.text((x0 + 2, bottom - 10), f"{low:.3g}", fill=(60, 60, 60))


def render_loss_curves(losses: Mapping[str, Sequence[float]]) -> torch.Tensor:
    """One panel per stage (e.g. ``stage1_round0_erase``, ``stage1_round0_ti``, ``stage2_erase``)."""
    names = list(losses) or ["no training steps"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    image = Image.new("RGB", (columns * PANEL_W, rows * PANEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for index, name in enumerate(names):
        origin = ((index % columns) * PANEL_W, (index // columns) * PANEL_H)
        _draw_panel(draw, origin, name, list(losses.get(name, [])), COLOURS[index % len(COLOURS)])
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
