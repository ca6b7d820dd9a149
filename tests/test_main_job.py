"""The README's main job, reduced to a few steps: every output is written, readable and never overwritten."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from recare_core.erasure.io import load_erasure
from recare_core.toyworld.main_job import run_main_job
from recare_core.methods.recare import ReCAREConfig


@pytest.mark.slow
def test_main_job_writes_every_output_and_never_overwrites(tmp_path):
    config = ReCAREConfig(n_rounds=1, erase_steps=2, ti_steps=2, robust_steps=2, ddim_steps=4, image_size=16,
                          num_adv_concepts=1, initializer_token="circle", seed=0)
    heard: list[tuple[int, int, str]] = []
    first = run_main_job(tmp_path, seed=0, n_images=4, pipeline_images=4, sample_steps=3, config=config,
                         progress=lambda step, total, message: heard.append((step, total, message)))
    stages = [message for step, _, message in heard if step == 0]
    assert [m.split()[0] for m in stages] == ["generating", "building", "ReCARE", "generating"]
    assert any(step > 0 for step, _, _ in heard)  # ReCARE's own steps are passed on
    assert set(first) == {"care_set", "erasure", "report", "grid"}
    care_set = json.loads(first["care_set"].read_text())
    assert any(key.endswith("_care_word") for key in care_set)
    erasure = load_erasure(first["erasure"])
    assert erasure.concept and erasure.increments and erasure.metadata["care_set"]
    report = first["report"].read_text()
    assert "CARE score" in report and "original model" in report and "erased model" in report
    assert "toy world 'partial'" in report and "stage-2 steps" in report  # the fairer world by default
    grid = Image.open(first["grid"])
    assert grid.width > 100 and grid.height > 50
    second = run_main_job(tmp_path, seed=0, n_images=4, pipeline_images=4, sample_steps=3, config=config)
    assert all(second[name] != first[name] and second[name].exists() for name in first)
    assert [second[name].name for name in ("erasure", "report", "grid")] == [
        "erasure_00001.safetensors", "care_score_report_00001.txt", "before_after_00001.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_main_job_refuses_an_empty_image_count_before_writing_anything(tmp_path):
    with pytest.raises(ValueError, match="at least one image per prompt"):
        run_main_job(tmp_path / "out", n_images=0)
    assert not (tmp_path / "out").exists()
