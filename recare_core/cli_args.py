"""``argparse`` value types shared by the pack's command-line tools (toy-world training, the main job, the
benchmarks): a bad number is a usage error that names it, not a traceback from deep inside a run."""

from __future__ import annotations

import argparse


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1 (counts: steps, images, jobs, threads)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (seeds)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value
