"""A grid of scored images, each captioned with its top-1 label (green when it is the CARE concept, red when it
is the erased one), returned as a ComfyUI-style IMAGE ``(1, H, W, 3)`` in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .care_score import CareScoreResult

TILE, CAPTION = 128, 30


def render_score_grid(images: torch.Tensor, result: CareScoreResult, columns: int = 8) -> torch.Tensor:
    count = images.shape[0]
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    header = 24
    canvas = Image.new("RGB", (columns * TILE, header + rows * (TILE + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    summary = f"CARE '{result.care_concept}': {result.care_score:.2f}"
    if result.erase_rate is not None:
        summary += f"   erased '{result.erase_concept}' still top-1: {result.erase_rate:.2f}"
    draw.text((6, 6), summary, fill=(0, 0, 0))
    pixels = (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for index, verdict in enumerate(result.verdicts):
        x, y = (index % columns) * TILE, header + (index // columns) * (TILE + CAPTION)
        canvas.paste(Image.fromarray(pixels[index]).resize((TILE, TILE), Image.BILINEAR), (x, y))
        label = verdict.top_label.lower()
        colour = (20, 140, 40) if label == result.care_concept.lower() else (
            (200, 30, 30) if result.erase_concept and label == result.erase_concept.lower() else (60, 60, 60))
        draw.text((x + 4, y + TILE + 2), verdict.top_label[:20], fill=colour)
        draw.text((x + 4, y + TILE + 15), f"{verdict.top_similarity:.3f}", fill=(90, 90, 90))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]
