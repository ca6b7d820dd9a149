"""The committed frontier record is what its result files give: the table in
``benchmarks/results/frontier/<world>/table.md`` (shown in the README) is recomputed from the committed JSONs,
and every result file measured what the benchmark promises (the settings of its method, enough images). Records
of worlds since retrained are kept, and checked the same way, under
``benchmarks/results/frontier_archive/<which models>/<world>/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from recare_core.toyworld.frontier import FRONTIER_METHODS, method_by_name
from recare_core.toyworld.frontier_summary import (STRENGTH_SWEEPS, best_matched_rates, load_results, matched_rates,
                                                  matched_table, paired_care, t_interval)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RECORD = RESULTS / "frontier"
FIRST_PARTIAL = "frontier_archive/partial_first_t2i/partial"
"""The fairer world's frontier with its first text-to-image model (shape right 0.375 of the time), since retrained."""
WORLDS = sorted(str(p.parent.relative_to(RESULTS)) for p in [*RESULTS.glob("frontier/*/table.md"),
                                                              *RESULTS.glob("frontier_archive/*/*/table.md")])


@pytest.mark.parametrize("world", WORLDS)
def test_committed_table_is_what_the_committed_results_give(world):
    results = load_results(RESULTS / world)
    assert results, f"{world}: a table but no result files"
    order = [m.name for m in FRONTIER_METHODS if m.name in {r["method"] for r in results}]
    assert (RESULTS / world / "table.md").read_text(encoding="utf-8") == matched_table(results, order) + "\n"


@pytest.mark.parametrize("world", WORLDS)
def test_the_readme_shows_the_committed_table(world):
    readme = (RESULTS.parents[1] / "README.md").read_text(encoding="utf-8")
    assert (RESULTS / world / "table.md").read_text(encoding="utf-8").strip() in readme


@pytest.mark.parametrize("world", WORLDS)
def test_every_result_measured_its_methods_setting(world):
    for record in load_results(RESULTS / world):
        method = method_by_name(record["method"])
        assert record["steps"] in method.snapshots
        assert record["lr"] == method.lr and record["overrides"] == method.overrides
        assert min(record["figures"]["images"].values()) >= record["settings"]["images"]
        assert 0.0 <= record["figures"]["care_rate"] <= 1.0


@pytest.mark.parametrize("world", [w for w in WORLDS if w == "frontier/cooccurrence"])
def test_what_the_full_run_established(world):
    """The findings the README states for the first world, on every seed of the committed record: ReCARE at the
    reference stage-2 target erases the target and resists the fresh attack (target and attack at most 0.10 at
    some setting), while plain ESD at its paper's guidance (s = 3) never does (its attack rate stays above 0.20 at
    every setting; at s = 5 it does, see below); and at matched target rate 0.10 ReCARE keeps fewer circles than
    ESD on average over the seeds where both reach it."""
    results = load_results(RESULTS / world)
    seeds = sorted({r["seed"] for r in results if r["method"] == "recare"} &
                   {r["seed"] for r in results if r["method"] == "esd"})
    assert len(seeds) >= 2, f"{world}: fewer than two seeds with both ESD and ReCARE"
    for seed in seeds:
        recare = [r["figures"] for r in results if r["method"] == "recare" and r["seed"] == seed]
        esd = [r["figures"] for r in results if r["method"] == "esd" and r["seed"] == seed]
        assert any(f["target_rate"] <= 0.10 and f["adversarial_rate"] <= 0.10 for f in recare), seed
        assert all(f["adversarial_rate"] > 0.20 for f in esd), seed
    recare, esd = (matched_rates(results, name, 0.10, "target_rate") for name in ("recare", "esd"))
    paired = paired_care(recare, esd)
    assert paired and sum(paired) / len(paired) < 0


@pytest.mark.parametrize("world", [w for w in WORLDS if w == FIRST_PARTIAL])
def test_what_the_fairer_world_has_shown_so_far(world):
    """The fairer world's findings with its first text-to-image model, as the README states them, on every seed of
    the archived record: ReCARE at the
    reference target comes down to target and attack rate 0.10 or less at some setting, while plain ESD, at either
    learning rate, never comes down to target 0.10 with half of the circles kept. (Whether ReCARE keeps circles
    there differs by seed, so no claim about it is checked.)"""
    results = load_results(RESULTS / world)
    seeds = sorted({r["seed"] for r in results if r["method"] == "recare"})
    assert len(seeds) >= 3, f"{world}: fewer than three seeds with ReCARE"
    for seed in seeds:
        recare = [r["figures"] for r in results if r["method"] == "recare" and r["seed"] == seed]
        assert any(f["target_rate"] <= 0.10 and f["adversarial_rate"] <= 0.10 for f in recare), seed
    esd_rows = dict(STRENGTH_SWEEPS)["esd"]  # plain ESD at every strength setting of the sweep
    esd = [r["figures"] for r in results if r["method"] in esd_rows]
    assert esd and not any(f["target_rate"] <= 0.10 and f["care_rate"] >= 0.5 for f in esd)


def _seeds_where(results: list[dict], rows: tuple[str, ...], holds) -> set[int]:
    """The seeds on which some setting of one of ``rows`` has figures for which ``holds`` is true."""
    return {r["seed"] for r in results if r["method"] in rows and holds(r["figures"])}


@pytest.mark.parametrize("world", [w for w in WORLDS if w == "frontier/partial"])
def test_what_the_retrained_fairer_world_has_shown(world):
    """The retrained fairer world's findings as the README states them, on the committed record: ReCARE at the
    reference target comes down to target and attack rate 0.10 or less at some setting on every seed, and holds
    the fresh attack to 0.30 or less with at least half of the circles kept on all seeds but at most one; plain
    ESD, at any of its strength settings, does that on at most one seed; and at its paper's guidance (s = 3) it
    never comes down to target 0.10 with half of the circles kept. At the lower learning rate, 270 stage-2 steps
    bring ReCARE to target 0.02 or less and attack 0.05 or less on every seed, with at least 0.65 of the circles
    kept on all seeds but at most one."""
    results = load_results(RESULTS / world)
    seeds = {r["seed"] for r in results if r["method"] == "recare"}
    assert len(seeds) >= 5, f"{world}: fewer than five seeds with ReCARE"
    assert _seeds_where(results, ("recare",), lambda f: f["target_rate"] <= 0.10 and f["adversarial_rate"] <= 0.10) \
        == seeds
    resists = lambda f: f["adversarial_rate"] <= 0.30 and f["care_rate"] >= 0.5  # noqa: E731
    assert len(seeds - _seeds_where(results, ("recare",), resists)) <= 1
    assert len(_seeds_where(results, dict(STRENGTH_SWEEPS)["esd"], resists)) <= 1
    assert not _seeds_where(results, ("esd",), lambda f: f["target_rate"] <= 0.10 and f["care_rate"] >= 0.5)
    low_lr = {r["seed"]: r["figures"] for r in results if r["method"] == "recare_low_lr" and r["steps"] == 270}
    assert set(low_lr) == seeds
    assert all(f["target_rate"] <= 0.02 and f["adversarial_rate"] <= 0.05 for f in low_lr.values()), low_lr
    assert sum(f["care_rate"] < 0.65 for f in low_lr.values()) <= 1, low_lr


def _rows_against_esds_best(results: list[dict], level: float, least_seeds: int = 4) -> dict[str, list[float]]:
    """``{row: [CARE - CARE of ESD's best setting, per seed]}`` at matched target ``level`` for every row that is
    not one of ESD's settings (UCE and the original left out), over the seeds where both reach the level; rows
    with fewer than ``least_seeds`` such seeds are left out (the README states no finding on them)."""
    esd_rows = dict(STRENGTH_SWEEPS)["esd"]
    esd_best = best_matched_rates(results, esd_rows, level)
    paired = {}
    for row in sorted({r["method"] for r in results} - {*esd_rows, "original", "uce"}):
        rates = matched_rates(results, row, level, "target_rate")
        differences = paired_care(rates, esd_best)
        if len(differences) >= least_seeds:
            paired[row] = differences
    return paired


@pytest.mark.parametrize("world", [w for w in WORLDS if w == "frontier/partial"])
def test_no_row_of_the_retrained_fairer_world_keeps_more_circles_than_esds_best(world):
    """The README's conclusion for the retrained fairer world: at matched target rate 0.20, every other row that
    reaches the level (ReCARE at each setting, with a heavier retain loss, the true CARE-set, AGE or DoCo) keeps
    fewer circles on average than ESD's best strength setting on the same seeds; and UCE never erases (target
    above 0.50 at every erase scale)."""
    results = load_results(RESULTS / world)
    paired = _rows_against_esds_best(results, 0.20)
    assert len(paired) >= 6, f"{world}: fewer than six rows reach target 0.20"
    assert all(sum(d) / len(d) < 0 for d in paired.values()), paired
    assert all(r["figures"]["target_rate"] > 0.50 for r in results if r["method"] == "uce")


@pytest.mark.parametrize("world", [w for w in WORLDS if w == "frontier/partial"])
def test_in_the_fairer_world_esds_gentle_setting_levels_off_and_recare_does_not_beat_it_where_both_reach(world):
    """The README's reading of the retrained fairer world below target 0.20: ESD at s = 5 and lr 2e-5, after 2430
    steps on every seed it ran there (at least four), keeps at least 0.8 of the circles, lets the attack back
    (0.75 or more) and stays above target 0.05; and at matched target 0.10, which ESD's best setting reaches on
    every seed, the best of ReCARE's four settings keeps fewer circles on average."""
    results = load_results(RESULTS / world)
    longest = [r["figures"] for r in results if r["method"] == "esd_strong_guidance_low_lr" and r["steps"] == 2430]
    assert len(longest) >= 4
    assert all(f["care_rate"] >= 0.8 and f["adversarial_rate"] >= 0.75 and f["target_rate"] > 0.05
               for f in longest), longest
    sweeps = dict(STRENGTH_SWEEPS)
    esd, recare = (best_matched_rates(results, sweeps[method], 0.10) for method in ("esd", "recare"))
    differences = paired_care(recare, esd)
    assert len(esd) >= 5 and len(differences) >= 5
    assert sum(differences) / len(differences) < 0, differences


@pytest.mark.parametrize("world", [w for w in WORLDS if w == "frontier/cooccurrence"])
def test_in_the_first_world_esd_at_strong_guidance_keeps_more_circles_and_resists_too(world):
    """The README's reading of the first world with ESD's s = 5 rows: at matched target 0.10 the reference ReCARE
    keeps fewer circles than ESD's best setting on every seed, and no ReCARE row keeps more beyond the seed
    spread (the 95 % interval of every row's paired difference reaches below zero; ReCARE tuned at lr 2e-5 ties);
    and ESD at s = 5 and lr 2e-5 for 810 steps holds the fresh attack to 0.10 or less with at least 0.6 of the
    circles on every seed."""
    results = load_results(RESULTS / world)
    paired = _rows_against_esds_best(results, 0.10)
    assert len(paired["recare"]) >= 5 and all(d < 0 for d in paired["recare"]), paired["recare"]
    for row, differences in paired.items():
        mean, half = t_interval(differences)
        assert mean - half < 0, (row, differences)
    strong = [r["figures"] for r in results if r["method"] == "esd_strong_guidance_low_lr" and r["steps"] == 810]
    assert len(strong) >= 5
    assert all(f["adversarial_rate"] <= 0.10 and f["care_rate"] >= 0.6 for f in strong), strong
