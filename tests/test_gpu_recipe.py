"""The GPU recipe benchmark's own code path, run on tiny models on the CPU (ComfyUI's UNet, real loops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfy
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_recipe.py"


def test_tiny_recipe_writes_every_figure(comfy_root, tmp_path):
    out = tmp_path / "recipe.json"
    env = {**os.environ, "COMFYUI_PATH": str(comfy_root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--steps", "2", "--out", str(out)],
                   check=True, env=env, capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())
    assert report["tiny"] and set(report["models"]) == {"sd15", "sdxl"}
    for model, rows in report["models"].items():
        assert len(rows) == 5, model  # full/lora, mixed precision on/off, checkpointing on/off
        for label, stages in rows.items():
            for stage in ("erase", "ti", "robust"):
                assert stages[stage]["seconds_per_step"] > 0, (model, label, stage)
            projected = stages["projected_seconds"]
            assert 0 < projected["fast"] < projected["paper"], (model, label)
