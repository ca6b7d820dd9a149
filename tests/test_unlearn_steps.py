"""The unlearning-step benchmark's measurement on the tiny torch model, with and without the op profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "unlearn_steps.py"
# kind, stage, s/step, peak MB, (baseline MB), sampling, teacher, student, total, trainable[, dense, GFLOP/s]
TOTAL, TRAINABLE = 8, 9


def _run(*options: str) -> tuple[list[list[str]], str]:
    output = subprocess.run([sys.executable, str(SCRIPT), "--image-size", "16", "--kinds", "full", *options],
                            check=True, capture_output=True, text=True, timeout=600).stdout
    return [line.split() for line in output.splitlines() if line.startswith("full ")], output


def test_op_profile_reports_the_dense_share_and_rate_of_the_timed_steps():
    rows, output = _run("--k", "2", "--steps", "3", "--stages", "erase", "robust", "--op-profile")
    yardstick = next(line for line in output.splitlines() if line.startswith("yardstick:"))
    assert float(yardstick.split(" at ")[1].split()[0]) > 0, yardstick
    assert [row[1] for row in rows] == ["erase", "robust"]
    for row in rows:
        assert len(row) == TRAINABLE + 3, row
        share, gflops = float(row[-2].rstrip("%")), float(row[-1])
        assert 0 < share <= 100 and gflops > 0, row
        assert int(row[TRAINABLE].replace(",", "")) > 0, row
    assert float(rows[1][TOTAL]) > float(rows[0][TOTAL])  # stage 2 evaluates more rows per step than stage 1


def test_the_table_keeps_its_columns_without_the_profile():
    (row,), output = _run("--k", "1", "--steps", "1", "--stages", "erase")
    assert "yardstick" not in output
    assert len(row) == TRAINABLE + 1, row
    assert float(row[2]) > 0 and int(row[TRAINABLE].replace(",", "")) > 0, row
