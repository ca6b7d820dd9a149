"""Loading a ``benchmarks/`` script as a module inside the test process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module. The scripts put the repo root first on ``sys.path``; the path is
    restored, or the repo's ``nodes/`` package would shadow ComfyUI's ``nodes`` for the ComfyUI tests run after."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
