"""``benchmarks/toyworld_shape_confusion.py`` on the shipped worlds, reduced (4 images per prompt): every asked shape
gets an answer per image, and what the committed record and the README state holds — both text-to-image models
draw a ``square`` prompt as a circle more often than as a square, so a high CARE (circle) rate alone does not show
that a model keeps circles apart from other shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from toyworld_shape_confusion import PROMPTS, confusion  # noqa: E402

from recare_core.toyworld.world import SHAPES  # noqa: E402


@pytest.mark.parametrize("world", ["cooccurrence", "partial"])
def test_the_shipped_models_draw_squares_as_circles(world):
    table = confusion(world, images_per_prompt=4, guidance_scale=5.0, steps=25)
    assert list(table) == list(SHAPES)
    assert all(sum(row.values()) == 4 * len(PROMPTS) for row in table.values())
    assert table["square"].get("circle", 0) > table["square"].get("square", 0)
