"""A picture of the CARE-set clusters: the t-SNE map coloured by cluster, every word labelled, dropped clusters
crossed out and refined-away words hollow, with a legend of clusters by mean residual norm. Drawn with Pillow and
returned as a ComfyUI ``IMAGE`` tensor ``(1, H, W, 3)`` in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .build import CareSet

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
GREY = "#9a9a9a"
STATUS_TEXT = {"kept": "kept", "dropped-low": "DROPPED: near-synonyms", "dropped-high": "DROPPED: unrelated"}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def render_cluster_map(care_set: CareSet, width: int = 1280, height: int = 800) -> torch.Tensor:
    """The cluster map of a CARE-set built here (a note instead when it holds no candidate statistics)."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    title_font, label_font, legend_font = _font(20), _font(12), _font(14)
    kept = sum(c.kept for c in care_set.candidates)
    draw.text((16, 10), f"CARE-set for '{care_set.reference_word}' ({care_set.concept_type}): {kept} kept of "
                        f"{len(care_set.candidates)} candidate words", fill="black", font=title_font)
    if not care_set.candidates:
        draw.text((16, 60), "No cluster map: this CARE-set was loaded from a file without candidate statistics.",
                  fill="black", font=legend_font)
        return _to_tensor(image)

    legend_width = 330
    left, top, right, bottom = 30, 50, width - legend_width - 90, height - 30
    coords = np.array([[c.x, c.y] for c in care_set.candidates], dtype=np.float64)
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high - low > 1e-9, high - low, 1.0)
    pixels = np.column_stack([left + (coords[:, 0] - low[0]) / span[0] * (right - left),
                              bottom - (coords[:, 1] - low[1]) / span[1] * (bottom - top)])
    order = [summary.cluster for summary in care_set.clusters]
    colour = {cluster: PALETTE[i % len(PALETTE)] for i, cluster in enumerate(sorted(order))}
    status = {summary.cluster: summary.status for summary in care_set.clusters}
    draw.rectangle([left - 10, top - 10, right + 10, bottom + 10], outline="#dddddd")

    for candidate, (px, py) in zip(care_set.candidates, pixels):
        dropped_cluster = status.get(candidate.cluster, "kept") != "kept"
        fill = colour.get(candidate.cluster, GREY)
        r = 5
        if dropped_cluster:
            draw.line([px - r, py - r, px + r, py + r], fill=fill, width=2)
            draw.line([px - r, py + r, px + r, py - r], fill=fill, width=2)
        elif not candidate.kept:
            draw.ellipse([px - r, py - r, px + r, py + r], outline=fill, width=2)
        else:
            draw.ellipse([px - r, py - r, px + r, py + r], fill=fill)
        text_colour = "black" if candidate.kept else GREY
        draw.text((px + 7, py - 7), candidate.word, fill=text_colour, font=label_font)
        if not candidate.kept and not dropped_cluster:
            text_width = draw.textlength(candidate.word, font=label_font)
            draw.line([px + 7, py, px + 7 + text_width, py], fill=GREY, width=1)

    x0, y = width - legend_width, 60
    draw.text((x0, y), "clusters, by mean residual norm", fill="black", font=legend_font)
    y += 18
    draw.text((x0, y), "(low = close to the reference word)", fill=GREY, font=label_font)
    y += 26
    for summary in care_set.clusters:
        fill = colour[summary.cluster]
        draw.rectangle([x0, y + 2, x0 + 14, y + 16], fill=fill)
        draw.text((x0 + 22, y), f"cluster {summary.cluster}: {summary.size} words, {summary.mean_residual:.3f}",
                  fill="black", font=legend_font)
        y += 18
        draw.text((x0 + 22, y), STATUS_TEXT.get(summary.status, summary.status),
                  fill="#b00020" if summary.status != "kept" else "#2e7d32", font=label_font)
        y += 24
    y += 10
    for marker, text in (("filled", "kept word"), ("hollow", "refined away (leave-one-out outlier)"),
                         ("cross", "in a dropped cluster")):
        if marker == "filled":
            draw.ellipse([x0 + 2, y + 3, x0 + 12, y + 13], fill="black")
        elif marker == "hollow":
            draw.ellipse([x0 + 2, y + 3, x0 + 12, y + 13], outline="black", width=2)
        else:
            draw.line([x0 + 2, y + 3, x0 + 12, y + 13], fill="black", width=2)
            draw.line([x0 + 2, y + 13, x0 + 12, y + 3], fill="black", width=2)
        draw.text((x0 + 22, y), text, fill="black", font=label_font)
        y += 20
    return _to_tensor(image)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
