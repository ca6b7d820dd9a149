"""The committed frontier record is what its result files give: the table in
``benchmarks/results/frontier/<world>/table.md`` (shown in the README) is recomputed from the committed JSONs,
and every result file measured what the benchmark promises (the settings of its method, enough images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recare_core.toyworld.frontier import FRONTIER_METHODS, method_by_name
from recare_core.toyworld.frontier_summary import load_results, matched_table

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "frontier"
WORLDS = sorted(p.name for p in RECORD.glob("*") if (p / "table.md").is_file()) if RECORD.is_dir() else []


@pytest.mark.parametrize("world", WORLDS)
def test_committed_table_is_what_the_committed_results_give(world):
    results = load_results(RECORD / world)
    assert results, f"{world}: a table but no result files"
    order = [m.name for m in FRONTIER_METHODS if m.name in {r["method"] for r in results}]
    assert (RECORD / world / "table.md").read_text(encoding="utf-8") == matched_table(results, order) + "\n"


@pytest.mark.parametrize("world", WORLDS)
def test_every_result_measured_its_methods_setting(world):
    for record in load_results(RECORD / world):
        method = method_by_name(record["method"])
        assert record["steps"] in method.snapshots
        assert record["lr"] == method.lr and record["overrides"] == method.overrides
        assert min(record["figures"]["images"].values()) >= record["settings"]["images"]
        assert 0.0 <= record["figures"]["care_rate"] <= 1.0
