"""A picture of image rows, each labelled on its left (before/after comparisons)."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw


def labelled_rows_grid(rows: list[tuple[str, torch.Tensor]], scale: int = 4) -> Image.Image:
    """Rows of images (``(N, H, W, 3)`` in [0, 1]) stacked into one picture, each row labelled on its left."""
    label_width = 170
    tiles = [(label, (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()) for label, images in rows]
    height, width = tiles[0][1].shape[1] * scale, tiles[0][1].shape[2] * scale
    columns = max(t.shape[0] for _, t in tiles)
    canvas = Image.new("RGB", (label_width + columns * (width + 2), len(tiles) * (height + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, (label, images) in enumerate(tiles):
        y = row * (height + 2)
        draw.text((4, y + height // 2 - 6), label, fill=(0, 0, 0))
        for column, image in enumerate(images):
            tile = Image.fromarray(image).resize((width, height), Image.NEAREST)
            canvas.paste(tile, (label_width + column * (width + 2), y))
    return canvas
