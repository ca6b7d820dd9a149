"""The unlearning-step benchmark on the tiny torch model: its measurement with and without the op profile, and
the table it prints."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import torch

from script_loading import BENCHMARKS, load_benchmark_script

unlearn_steps = load_benchmark_script("unlearn_steps")


def _args(**overrides) -> SimpleNamespace:
    values = dict(backend="torch", device="cpu", image_size=16, model_channels=32, k=2, ddim_steps=50, steps=3,
                  lora_rank=4, gradient_checkpointing=False, no_mixed_precision=False, sampling_reuse=1,
                  op_profile=False)
    return SimpleNamespace(**{**values, **overrides})


def test_without_the_profile_or_timed_steps_no_profile_figures_appear():
    assert "dense_share" not in unlearn_steps.measure(_args(k=1, steps=2), "full", "erase")
    assert "dense_share" not in unlearn_steps.measure(_args(k=1, steps=1, op_profile=True), "full", "erase")


def test_the_matmul_yardstick_is_a_rate():
    assert unlearn_steps.matmul_gflops(torch.device("cpu"), size=64, repeats=2) > 0


def test_the_table_prints_the_dense_share_and_rate_of_the_timed_steps_and_the_yardstick():
    output = subprocess.run([sys.executable, str(BENCHMARKS / "unlearn_steps.py"), "--image-size", "16", "--k", "1",
                             "--steps", "2", "--kinds", "full", "--stages", "erase", "--op-profile"],
                            check=True, capture_output=True, text=True, timeout=600).stdout
    row = next(line.split() for line in output.splitlines() if line.startswith("full "))
    # kind, stage, s/step, peak MB, (baseline MB), sampling, teacher, student, total, trainable, dense, GFLOP/s
    assert len(row) == 12 and 0 < float(row[-2].rstrip("%")) <= 100 and float(row[-1]) > 0, row
    assert "yardstick:" in output
