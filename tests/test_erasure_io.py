"""Erasure files: exact round trip, LoRA-loader key layout, metadata in the header, never overwriting."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from recare_core.erasure import Erasure, WeightIncrement
from recare_core.erasure_io import (
    ErasureFileError,
    erasure_to_state_dict,
    load_erasure,
    next_free_path,
    save_erasure,
)


def _erasure() -> Erasure:
    g = torch.Generator().manual_seed(0)
    return Erasure(
        concept="nudity",
        increments={
            "diffusion_model.input_blocks.1.1.proj_in.weight": WeightIncrement(full=torch.randn(320, 320, 1, 1, generator=g)),
            "diffusion_model.input_blocks.1.1.proj_in.bias": WeightIncrement(full=torch.randn(320, generator=g)),
            "diffusion_model.out.2.weight": WeightIncrement(down=torch.randn(4, 320, 3, 3, generator=g),
                                                            up=torch.randn(4, 4, 1, 1, generator=g), alpha=2.0),
        },
        metadata={"erased_concept": "nudity", "settings": {"robust_lr": 2e-5}, "care_set": {"words": ["person"]}},
        adversarial_embeddings={"recare_adv_0": torch.randn(1, 768, generator=g)},
    )


def test_round_trip_is_exact(tmp_path):
    erasure = _erasure()
    path = save_erasure(erasure, tmp_path / "e.safetensors")
    loaded = load_erasure(path)
    assert loaded.concept == "nudity" and loaded.metadata == erasure.metadata
    assert set(loaded.increments) == set(erasure.increments)
    for key, increment in erasure.increments.items():
        assert torch.equal(loaded.increments[key].delta(), increment.delta()), key
    assert torch.equal(loaded.adversarial_embeddings["recare_adv_0"], erasure.adversarial_embeddings["recare_adv_0"])


def test_keys_are_the_ones_comfyui_lora_loader_reads(tmp_path):
    keys = set(erasure_to_state_dict(_erasure()))
    assert keys == {
        "diffusion_model.input_blocks.1.1.proj_in.diff", "diffusion_model.input_blocks.1.1.proj_in.diff_b",
        "diffusion_model.out.2.lora_down.weight", "diffusion_model.out.2.lora_up.weight", "diffusion_model.out.2.alpha",
        "recare.embedding.recare_adv_0",
    }
    path = save_erasure(_erasure(), tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert header["recare.concept"] == "nudity"
    assert json.loads(header["recare.metadata"])["settings"]["robust_lr"] == 2e-5


def test_never_overwrites(tmp_path):
    path = save_erasure(_erasure(), tmp_path / "e.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_erasure(_erasure(), path)
    assert path.read_bytes() == before
    first = next_free_path(tmp_path, "recare/nudity")
    assert first.name == "nudity_00001_.safetensors"
    save_erasure(_erasure(), first)
    assert next_free_path(tmp_path, "recare/nudity").name == "nudity_00002_.safetensors"
    with pytest.raises(ValueError, match="outside"):
        next_free_path(tmp_path, "../../escape")


def test_bad_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ErasureFileError, match="Cannot read"):
        load_erasure(junk)
    with pytest.raises(ErasureFileError, match="not a .safetensors"):
        load_erasure(tmp_path / "x.ckpt")
