"""The same images, CLIP and seed give the same CARE-set whatever the thread count and the CPU kernels.

The CARE-set is built from the same target images of the shipped toy world in two fresh processes, each with its
own empty vocabulary cache: one with one torch thread, one with two threads *and* other CPU kernels (ATen's
non-vectorised kernels, MKL's compatible code path and OpenBLAS's oldest x86 kernels), which is what another
machine changes. Every candidate word, count, cluster, t-SNE coordinate and statistic must be identical. Before
the fix (float32 embeddings, unrounded top-k, t-SNE on raw floats) the second build kept 52 of 59 words and 41
of them differed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

BUILD = """
import json, sys, tempfile
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from recare_core.careset.build import build_care_set
from recare_core.toyworld.default import DEFAULT_WEIGHTS_DIR, load_world
images = torch.from_numpy(np.load(sys.argv[2]))
with tempfile.TemporaryDirectory() as cache:
    care_set = build_care_set(images, load_world(DEFAULT_WEIGHTS_DIR).clip, "striped", "object", cache_dir=cache)
json.dump(care_set.to_json_dict(), open(sys.argv[3], "w"))
"""

OTHER_MACHINE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Prescott"}


def _build(tmp_path: Path, images: Path, threads: int, extra_env: dict[str, str]) -> dict:
    out = tmp_path / f"careset_{threads}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), **extra_env}
    subprocess.run([sys.executable, "-c", BUILD, str(threads), str(images), str(out)], env=env, check=True,
                   cwd=ROOT, timeout=900)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def target_images(tmp_path_factory) -> Path:
    from recare_core.toyworld.default import DEFAULT_WEIGHTS_DIR, load_world
    from recare_core.toyworld.experiment import experiment_settings, generate_target_images
    from recare_core.toyworld.torch_backend import TorchBackend

    torch.set_num_threads(1)
    images = generate_target_images(TorchBackend(load_world(DEFAULT_WEIGHTS_DIR).model), 16, 100_000,
                                    experiment_settings("cpu", 0))
    path = tmp_path_factory.mktemp("careset_determinism") / "images.npy"
    np.save(path, images.numpy())
    return path


def test_care_set_is_the_same_on_one_and_two_threads_and_other_cpu_kernels(tmp_path, target_images):
    one = _build(tmp_path, target_images, 1, {})
    two = _build(tmp_path, target_images, 2, OTHER_MACHINE)
    assert one["recare_careset"]["words"], "the build kept no word"
    for key in ("striped_care_word", "striped_care_word_photo"):
        assert one[key] == two[key]
    assert one["recare_careset"]["candidates"] == two["recare_careset"]["candidates"]
    assert one["recare_careset"]["clusters"] == two["recare_careset"]["clusters"]
