"""Summaries of the frontier results: CARE at matched target rates (interpolated per seed, 95 % t-intervals over
seeds), a per-setting table, and the frontier plot (CARE against target rate and against attack rate)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import stats

MATCHED_TARGETS: tuple[float, ...] = (0.20, 0.10, 0.05)
"""Target rates at which CARE is compared: the issue's 0.10 and 0.05, and 0.20, which plain ESD reaches on more
seeds (at 10-270 steps it came down to 0.10 on two of the first four)."""
MATCHED_ATTACKS: tuple[float, ...] = (0.30, 0.10)
"""Attack rates at which CARE is also compared: robustness is what ReCARE adds over ESD."""
RATE_LABELS = {"target_rate": "target ↓", "adversarial_rate": "attack ↓", "utility": "utility ↑"}
RATES: tuple[str, ...] = ("target_rate", "adversarial_rate", "care_rate", "utility")
EQUAL_SETTING_PAIRS: tuple[tuple[str, str], ...] = (("recare_sampling_reuse", "recare"), ("esd_sampling_reuse", "esd"))
"""(variant, faithful run) pairs compared setting by setting on the same seeds: a speed option is judged by
whether it erases, resists the attack and keeps CARE like the faithful run at equal steps."""
STRENGTH_SWEEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("esd", ("esd", "esd_low_lr", "esd_strong_guidance", "esd_strong_guidance_low_lr")),
    ("recare", ("recare", "recare_low_lr", "recare_tuned", "recare_tuned_low_lr")))
"""(method, its rows at each strength setting): a method's frontier over learning rate x strength x steps is, per
seed and matched level, the row that keeps most CARE there. Each method has the same 2 x 2 grid of rows: its
default weight on the target's update and the other one (ESD's guidance s = 5, ReCARE's erase weight 1), each at
both learning rates, so the upward bias of picking the best of four noisy rows is the same for each once all have
run (the table's ``rows`` column names the rows that did)."""
COLOURS: tuple[tuple[int, int, int], ...] = ((90, 90, 90), (214, 39, 40), (31, 119, 180), (44, 160, 44),
                                             (148, 103, 189), (255, 127, 14), (140, 86, 75), (23, 190, 207),
                                             (188, 189, 34), (227, 119, 194), (0, 0, 0), (127, 127, 255))


def load_results(folder: Path) -> list[dict]:
    """Every result record under ``folder/<method>/*.json`` (the shared per-seed cache left out)."""
    records = []
    for path in sorted(folder.glob("*/steps*_seed*.json")):
        records.append(json.loads(path.read_text(encoding="utf-8")))
    return records


def curves(results: Sequence[dict], method: str) -> dict[int, list[dict]]:
    """``{seed: [point, ...]}`` in step order, each point ``{"steps", <rates>}``; every curve starts at the
    original model of its seed when that was measured (all methods start from it)."""
    originals = {r["seed"]: r for r in results if r["method"] == "original"}
    by_seed: dict[int, list[dict]] = {}
    for record in results:
        if record["method"] == method:
            by_seed.setdefault(record["seed"], []).append(record)
    out = {}
    for seed, records in by_seed.items():
        if method != "original" and seed in originals:
            records = [originals[seed]] + records
        out[seed] = [{"steps": r["steps"], **{k: r["figures"][k] for k in RATES}}
                     for r in sorted(records, key=lambda r: r["steps"])]
    return out


def at_matched_target(curve: Sequence[dict], level: float, rate: str = "target_rate") -> dict[str, float] | None:
    """Rates where the curve (in step order) first comes down to ``rate`` (target rate by default) ``level``,
    linearly interpolated in that rate between the two settings around it; ``None`` when it never does."""
    for before, after in zip(curve, curve[1:]):
        if before[rate] > level >= after[rate]:
            share = (before[rate] - level) / (before[rate] - after[rate])
            return {k: before[k] + share * (after[k] - before[k]) for k in RATES}
    return None


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95 % Student-t interval over seeds (half-width NaN below two seeds)."""
    array = np.asarray(values, dtype=float)
    if array.size < 2:
        return float(array.mean()) if array.size else math.nan, math.nan
    half = stats.t.ppf(0.975, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return float(array.mean()), float(half)


def _cell(values: Sequence[float], seeds: int) -> str:
    if not values:
        return f"not reached (0/{seeds})"
    mean, half = t_interval(values)
    spread = "" if math.isnan(half) else f" ± {half:.2f}"
    reached = "" if len(values) == seeds else f" ({len(values)}/{seeds} seeds)"
    return f"{mean:.2f}{spread}{reached}"


def matched_rates(results: Sequence[dict], method: str, level: float, rate: str) -> dict[int, dict[str, float]]:
    """``{seed: rates at rate level}`` for the seeds whose curve of ``method`` reaches ``level``."""
    found = {seed: at_matched_target(curve, level, rate) for seed, curve in curves(results, method).items()}
    return {seed: rates for seed, rates in found.items() if rates}


def paired_care(matched: dict[int, dict[str, float]], reference: dict[int, dict[str, float]]) -> list[float]:
    """CARE of ``matched`` minus CARE of ``reference`` on each seed both reach (the paired difference over seeds)."""
    return [matched[s]["care_rate"] - reference[s]["care_rate"] for s in matched if s in reference]


def best_matched_rates(results: Sequence[dict], rows: Sequence[str], level: float,
                       rate: str = "target_rate") -> dict[int, dict[str, float]]:
    """``{seed: rates}`` of whichever of ``rows`` (one method at several learning rates) keeps the most CARE at
    ``rate`` ``level`` on that seed, over the seeds where at least one of them reaches the level."""
    best: dict[int, dict[str, float]] = {}
    for row in rows:
        for seed, rates in matched_rates(results, row, level, rate).items():
            if seed not in best or rates["care_rate"] > best[seed]["care_rate"]:
                best[seed] = rates
    return best


def strength_sweep_table(results: Sequence[dict], levels: Sequence[float] = MATCHED_TARGETS) -> list[str]:
    """Markdown lines: CARE at matched target rates for each method of :data:`STRENGTH_SWEEPS`, the best of
    its rows per seed, and its paired difference to the baseline's (the first method) best. Only rows
    that ran count (the ``rows`` column names them); none without the baseline and one other method."""
    present = {r["method"] for r in results}
    sweeps = [(name, tuple(row for row in rows if row in present)) for name, rows in STRENGTH_SWEEPS]
    sweeps = [(name, rows) for name, rows in sweeps if rows]
    if len(sweeps) < 2 or sweeps[0][0] != STRENGTH_SWEEPS[0][0]:
        return []
    baseline = sweeps[0][0]
    columns = [f"{what} @ target {level:.2f}" for level in levels for what in ("CARE ↑", f"CARE − {baseline}")]
    lines = ["| best of its settings | rows | seeds | " + " | ".join(columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    reference = {level: best_matched_rates(results, sweeps[0][1], level) for level in levels}
    for name, rows in sweeps:
        seeds = len(set.union(*(set(curves(results, row)) for row in rows)))
        cells = []
        for level in levels:
            matched = best_matched_rates(results, rows, level)
            paired = paired_care(matched, reference[level])
            cells += [_cell([m["care_rate"] for m in matched.values()], seeds),
                      "—" if name == baseline else _cell(paired, seeds)]
        lines.append(f"| {name} | {', '.join(rows)} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def _setting(record: dict) -> str:
    return f"erase scale {record['steps']}" if record.get("kind") == "uce" else f"{record['steps']} steps"


def _matched_block(results: Sequence[dict], methods: Sequence[str], baseline: str, rate: str, label: str,
                   levels: Sequence[float], shown: Sequence[str]) -> list[str]:
    columns = [f"{what} @ {label} {level:.2f}" for level in levels
               for what in ("CARE ↑", f"CARE − {baseline}", *(RATE_LABELS[key] for key in shown))]
    lines = ["| method | seeds | " + " | ".join(columns) + " |", "|" + "---|" * (2 + len(columns))]
    references = {level: matched_rates(results, baseline, level, rate) for level in levels}
    for method in methods:
        if method == "original":
            continue
        seeds = len(curves(results, method))
        cells = []
        for level in levels:
            matched, reference = matched_rates(results, method, level, rate), references[level]
            paired = paired_care(matched, reference)
            cells.append(_cell([m["care_rate"] for m in matched.values()], seeds))
            cells.append("—" if method == baseline else _cell(paired, seeds))
            cells += [_cell([m[key] for m in matched.values()], seeds) for key in shown]
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def matched_table(results: Sequence[dict], methods: Sequence[str], baseline: str = "esd") -> str:
    """Markdown: CARE (and the other rates) at matched target rates per method, then at matched attack rates,
    CARE's paired difference to ``baseline`` (same seeds, both matched), then every setting's means."""
    lines = _matched_block(results, methods, baseline, "target_rate", "target", MATCHED_TARGETS,
                           ("adversarial_rate", "utility"))
    lines.append("")
    lines += _matched_block(results, methods, baseline, "adversarial_rate", "attack", MATCHED_ATTACKS,
                            ("target_rate", "utility"))
    lines.append("\nmean ± half-width of the 95 % Student-t interval over seeds (each seed's curve interpolated "
                 "linearly in the matched rate between the two settings around the level; the original model is "
                 f"every curve's first point); CARE − {baseline}: the difference on the same seed, over the seeds "
                 "where both curves reach the level")
    sweep = strength_sweep_table(results)
    if sweep:
        lines += ["", *sweep]
    present = {r["method"] for r in results}
    for variant, faithful in EQUAL_SETTING_PAIRS:
        if {variant, faithful} <= present and variant in methods:
            lines += ["", *equal_setting_table(results, variant, faithful)]
    lines += ["", "| method | setting | seeds | target ↓ | attack ↓ | CARE ↑ | utility ↑ |",
              "|---|---|---|---|---|---|---|"]
    for method in methods:
        records = [r for r in results if r["method"] == method]
        for step in sorted({r["steps"] for r in records}):
            rows = [r for r in records if r["steps"] == step]
            cells = []
            for key in RATES:
                mean, half = t_interval([row["figures"][key] for row in rows])
                cells.append(f"{mean:.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}"))
            lines.append(f"| {method} | {_setting(rows[0])} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def equal_setting_table(results: Sequence[dict], variant: str, faithful: str) -> list[str]:
    """Markdown lines: ``variant − faithful`` per setting, paired on the seeds that have both (mean ± 95 %
    t half-width)."""
    lines = [f"| {variant} − {faithful} at equal setting | seeds | target | attack | CARE | utility |",
             "|---|---|---|---|---|---|"]
    by_key = {(r["method"], r["steps"], r["seed"]): r["figures"] for r in results}
    for step in sorted({r["steps"] for r in results if r["method"] == variant}):
        seeds = sorted(seed for (method, steps, seed) in by_key
                       if method == variant and steps == step and (faithful, step, seed) in by_key)
        if not seeds:
            continue
        cells = []
        for key in RATES:
            mean, half = t_interval([by_key[variant, step, s][key] - by_key[faithful, step, s][key] for s in seeds])
            cells.append(f"{mean:+.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}"))
        lines.append(f"| {step} steps | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], x_label: str) -> None:
    left, top, right, bottom = box
    for tick in np.linspace(0, 1, 6):
        x = left + tick * (right - left)
        y = bottom - tick * (bottom - top)
        draw.line([(x, bottom), (x, bottom + 4)], fill=(0, 0, 0))
        draw.line([(left - 4, y), (left, y)], fill=(0, 0, 0))
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((x - 8, bottom + 6), f"{tick:.1f}", fill=(0, 0, 0))
        draw.text((left - 30, y - 6), f"{tick:.1f}", fill=(0, 0, 0))
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text(((left + right) // 2 - 40, bottom + 22), x_label, fill=(0, 0, 0))
    draw.text((left - 30, top - 18), "CARE rate (circles kept)", fill=(0, 0, 0))


def render_frontier_plot(results: Sequence[dict], methods: Sequence[str]) -> Image.Image:
    """CARE against target rate (left) and against attack rate (right), one curve per method through the
    per-setting means over seeds (bars: ± one standard deviation of CARE), the original model as a dot."""
    width, height, margin = 1100, 520, 60
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    boxes = [(margin, 40, width // 2 - 20, height - 110), (width // 2 + margin, 40, width - 20, height - 110)]
    for box, label in zip(boxes, ("target rate (striped share of target prompts)",
                                  "attack rate (striped share under a fresh attack)")):
        _panel(draw, box, label)
    for index, method in enumerate(methods):
        colour = COLOURS[index % len(COLOURS)]
        steps = sorted({r["steps"] for r in results if r["method"] == method})
        if method != "original":
            steps = [0] + steps if any(r["method"] == "original" for r in results) else steps
        points = []
        for step in steps:
            name = "original" if step == 0 else method
            rows = [r["figures"] for r in results if r["method"] == name and r["steps"] == step]
            if rows:
                points.append({k: float(np.mean([row[k] for row in rows])) for k in RATES}
                              | {"care_sd": float(np.std([row["care_rate"] for row in rows]))})
        for box, key in zip(boxes, ("target_rate", "adversarial_rate")):
            left, top, right, bottom = box
            xy = [(left + p[key] * (right - left), bottom - p["care_rate"] * (bottom - top)) for p in points]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for (x, y), point in zip(xy, points):
                bar = point["care_sd"] * (bottom - top)
                draw.line([(x, y - bar), (x, y + bar)], fill=colour)
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend_x, legend_y = margin + (index % 5) * 200, height - 70 + (index // 5) * 20
        draw.rectangle([legend_x, legend_y, legend_x + 14, legend_y + 14], fill=colour)
        draw.text((legend_x + 20, legend_y), method, fill=(0, 0, 0))
    return image
