"""``benchmarks/toyworld_shape_confusion.py`` on the shipped worlds, reduced (4 images per prompt): every asked shape
gets an answer per image, and what the committed record and the README state holds — the first world's
text-to-image model draws a ``square`` prompt as a circle more often than as a square (so a high CARE rate there
does not show that circles are kept apart from other shapes), while the fairer world's retrained model draws every
asked shape as that shape most of the time (0.84-0.98 on 64 images each in the committed record)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from toyworld_shape_confusion import PROMPTS, confusion  # noqa: E402

from recare_core.toyworld.world import SHAPES  # noqa: E402

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "toyworld_shapes"


def _right(row: dict[str, int], shape: str) -> float:
    return row.get(shape, 0) / sum(row.values())


def test_the_first_worlds_model_draws_squares_as_circles():
    table = confusion("cooccurrence", images_per_prompt=4, guidance_scale=5.0, steps=25)
    assert list(table) == list(SHAPES)
    assert all(sum(row.values()) == 4 * len(PROMPTS) for row in table.values())
    assert table["square"].get("circle", 0) > table["square"].get("square", 0)


def test_the_fairer_worlds_retrained_model_draws_each_shape_it_is_asked_for():
    table = confusion("partial", images_per_prompt=4, guidance_scale=5.0, steps=25)
    assert all(sum(row.values()) == 4 * len(PROMPTS) for row in table.values())
    assert all(_right(table[shape], shape) >= 0.6 for shape in SHAPES), table  # 16 images per shape here
    record = json.loads((RECORD / "partial.json").read_text(encoding="utf-8"))["confusion"]
    assert all(_right(record[shape], shape) >= 0.8 for shape in SHAPES)
