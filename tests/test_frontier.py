"""The frontier benchmark, reduced: a live run on the shipped toy world (schedule ``ci``, few images) that writes
one JSON per (method, setting, seed), skips them when run again, and summarises them; and the interpolation and
interval arithmetic of the summary against values worked out by hand. ``test_frontier_record.py`` checks what the
full run established."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recare_core.toyworld.default import DEFAULT_WEIGHTS_DIR, load_world
from recare_core.toyworld.frontier import (
    FRONTIER_METHODS,
    FrontierMethod,
    LOW_LR_STEPS,
    STEPS,
    FrontierSettings,
    SeedContext,
    _write_json,
    method_by_name,
    result_path,
    run_method_seed,
)
from recare_core.toyworld.frontier_summary import (
    at_matched_target, best_matched_rates, equal_setting_table, strength_sweep_table, load_results, matched_table,
    render_frontier_plot, t_interval)

torch.set_num_threads(1)


def test_matched_target_interpolates_between_the_settings_around_the_level():
    curve = [{"target_rate": 0.9, "adversarial_rate": 1.0, "care_rate": 0.8, "utility": 0.7},
             {"target_rate": 0.3, "adversarial_rate": 0.6, "care_rate": 0.6, "utility": 0.6},
             {"target_rate": 0.0, "adversarial_rate": 0.2, "care_rate": 0.3, "utility": 0.5}]
    matched = at_matched_target(curve, 0.10)  # two thirds of the way from 0.3 to 0.0
    assert matched["care_rate"] == pytest.approx(0.6 + (0.2 / 0.3) * (0.3 - 0.6))
    assert matched["adversarial_rate"] == pytest.approx(0.6 + (0.2 / 0.3) * (0.2 - 0.6))
    assert at_matched_target(curve[:2], 0.10) is None  # never comes down to 0.10


def test_equal_setting_table_pairs_a_variant_with_the_faithful_run_seed_by_seed():
    def record(method, steps, seed, care):
        return {"method": method, "steps": steps, "seed": seed,
                "figures": {"target_rate": 0.1, "adversarial_rate": 0.0, "care_rate": care, "utility": 0.6}}

    results = [record("recare", 30, 0, 0.5), record("recare", 30, 1, 0.7), record("recare", 30, 2, 0.9),
               record("reuse", 30, 0, 0.4), record("reuse", 30, 1, 0.5), record("reuse", 90, 0, 0.1)]
    lines = equal_setting_table(results, "reuse", "recare")
    assert lines[0].startswith("| reuse − recare at equal setting | seeds |")
    mean, half = t_interval([-0.1, -0.2])  # seeds 0 and 1 only; 90 steps has no faithful partner
    assert lines[2:] == [f"| 30 steps | 2 | +0.00 ± 0.00 | +0.00 ± 0.00 | {mean:+.2f} ± {half:.2f} | +0.00 ± 0.00 |"]


def test_t_interval_is_the_students_t_95_percent_interval():
    mean, half = t_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4)
    assert half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027
    assert math.isnan(t_interval([0.5])[1])


def test_method_table_gives_every_trained_method_the_same_number_of_settings():
    longer = ("esd", "esd_strong_guidance_low_lr")  # baseline rows that span a longer range, never a shorter one
    trained = [m for m in FRONTIER_METHODS if m.kind != "original" and m.name not in longer]
    assert len({len(m.snapshots) for m in trained}) == 1
    assert set(STEPS) <= set(method_by_name("esd").snapshots)
    assert set(LOW_LR_STEPS) < set(method_by_name("esd_strong_guidance_low_lr").snapshots)
    assert all(len(method_by_name(name).snapshots) > len(trained[0].snapshots) for name in longer)
    with pytest.raises(ValueError, match="Unknown frontier method"):
        method_by_name("nope")


def test_a_result_written_meanwhile_by_another_run_is_kept(tmp_path):
    path = tmp_path / "esd" / "steps00010_seed0.json"
    assert _write_json(path, {"run": "first"})
    assert not _write_json(path, {"run": "second"})  # the second run of the same (method, seed) keeps the first's
    assert json.loads(path.read_text(encoding="utf-8")) == {"run": "first"}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind


def test_reduced_frontier_runs_resumes_and_summarises(tmp_path):
    models = load_world(DEFAULT_WEIGHTS_DIR)
    settings = FrontierSettings(schedule="ci", images=16, sample_steps=5)
    methods = [method_by_name("original"),
               FrontierMethod("esd", "esd", (10, 40), lr=6e-5, overrides={"negative_guidance": 3.0}),
               FrontierMethod("recare", "recare", (10, 40), lr=6e-5)]
    context = SeedContext(models, settings, 0, tmp_path / "shared", log=print)
    for method in methods:
        written = run_method_seed(models, settings, method, 0, tmp_path, context)
        assert written == [result_path(tmp_path, method.name, s, 0) for s in method.snapshots]
        assert run_method_seed(models, settings, method, 0, tmp_path, context) == []  # resumed: nothing to do
    results = load_results(tmp_path)
    assert {(r["method"], r["steps"]) for r in results} == {("original", 0), ("esd", 10), ("esd", 40),
                                                            ("recare", 10), ("recare", 40)}
    for record in results:
        figures = record["figures"]
        assert all(0.0 <= figures[k] <= 1.0 for k in ("target_rate", "adversarial_rate", "care_rate", "utility"))
        assert min(figures["images"].values()) >= 16
    figures = {(r["method"], r["steps"]): r["figures"] for r in results}
    # the erasure works in the reduced run too: 40 ESD steps draw fewer stripes than the original model
    assert figures["esd", 40]["target_rate"] < figures["original", 0]["target_rate"]
    # what the full run established (test_frontier_record.py): ReCARE's stage 2 resists the fresh attack that
    # brings the stripes back after ESD
    assert figures["recare", 40]["adversarial_rate"] < figures["esd", 40]["adversarial_rate"]
    table = matched_table(results, ["original", "esd"])
    assert "| esd | 40 steps | 1 |" in table
    assert render_frontier_plot(results, ["original", "esd"]).size == (1100, 520)


def test_strength_sweep_takes_each_seeds_best_row_and_pairs_it_with_the_baselines_best():
    def curve(method, seed, targets, cares):
        return [{"method": method, "steps": steps, "seed": seed,
                 "figures": {"target_rate": t, "adversarial_rate": 0.0, "care_rate": c, "utility": 0.6}}
                for steps, t, c in zip((10, 30), targets, cares)]

    results = [*curve("esd", 0, (0.5, 0.0), (0.8, 0.2)), *curve("esd_low_lr", 0, (0.3, 0.1), (0.9, 0.7)),
               *curve("recare", 0, (0.4, 0.0), (0.9, 0.9)), *curve("recare_low_lr", 0, (0.9, 0.5), (1.0, 1.0))]
    # seed 0 at target 0.20: esd 0.8 + (0.3 / 0.5) * (0.2 - 0.8) = 0.44; esd_low_lr 0.9 + 0.5 * (0.7 - 0.9) = 0.8
    # (the best ESD); recare 0.9; recare_low_lr never comes down to 0.20
    assert best_matched_rates(results, ("esd", "esd_low_lr"), 0.20)[0]["care_rate"] == pytest.approx(0.8)
    assert best_matched_rates(results, ("recare_low_lr",), 0.20) == {}
    lines = strength_sweep_table(results, levels=(0.20,))
    assert lines[2] == "| esd | esd, esd_low_lr | 1 | 0.80 | — |"
    assert lines[3] == "| recare | recare, recare_low_lr | 1 | 0.90 | 0.10 |"
    assert strength_sweep_table(results[:4]) == []  # ReCARE's rows missing: no sweep table
    only_faithful_rate = strength_sweep_table(results[:6], levels=(0.20,))  # recare_low_lr has not run
    assert only_faithful_rate[3] == "| recare | recare | 1 | 0.90 | 0.10 |"
    # a row that starts below the level (no original model here) does not reach it: the best ESD stays 0.8,
    # and the rows column names all three of ESD's rows
    with_guidance = results + curve("esd_strong_guidance", 0, (0.1, 0.0), (0.5, 0.1))
    assert strength_sweep_table(with_guidance, levels=(0.20,))[2] == \
        "| esd | esd, esd_low_lr, esd_strong_guidance | 1 | 0.80 | — |"
