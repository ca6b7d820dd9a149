"""Erasure files: exact round trip, LoRA-loader key layout, metadata in the header, never overwriting."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from recare_core.erasure.increments import Erasure, WeightIncrement
from recare_core.erasure.io import (
    ErasureFileError,
    erasure_to_state_dict,
    load_erasure,
    save_erasure,
    save_numbered_erasure,
)
from recare_core.safe_files import UnsafePathError


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
    first = save_numbered_erasure(_erasure(), tmp_path, "recare/nudity")
    assert first == (tmp_path / "recare" / "nudity_00001_.safetensors").resolve()
    assert save_numbered_erasure(_erasure(), tmp_path, "recare/nudity").name == "nudity_00002_.safetensors"
    with pytest.raises(UnsafePathError, match="goes up a folder"):
        save_numbered_erasure(_erasure(), tmp_path, "../../escape")


def test_bad_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ErasureFileError, match="Cannot read"):
        load_erasure(junk)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ErasureFileError, match="not an erasure file"):
        load_erasure(tmp_path / "notes.txt")
    with pytest.raises(ErasureFileError, match="missing.pt does not exist"):
        load_erasure(tmp_path / "missing.pt")
    os.mkfifo(tmp_path / "pipe.safetensors")  # would block a read forever
    with pytest.raises(ErasureFileError, match="pipe.safetensors is not a regular file"):
        load_erasure(tmp_path / "pipe.safetensors")


def test_header_names_pack_version_and_embeddings_and_lora_model_has_weights_only(tmp_path):
    from recare_core import __version__
    from recare_core.erasure.io import erasure_to_lora_model

    path = save_erasure(_erasure(), tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert header["recare.pack_version"] == __version__
    assert json.loads(header["recare.embeddings"]) == ["recare_adv_0"]
    assert header["recare.format"] == "recare-erasure/1"
    lora_model = erasure_to_lora_model(_erasure())
    assert set(lora_model) == set(erasure_to_state_dict(_erasure())) - {"recare.embedding.recare_adv_0"}
    assert lora_model["diffusion_model.out.2.alpha"].item() == 2.0


def _diffusers_unet() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"conv_in.weight": torch.randn(8, 4, 3, 3, generator=g),
            "down_blocks.0.resnets.0.conv1.weight": torch.randn(8, 8, 3, 3, generator=g),
            "down_blocks.0.resnets.0.conv1.bias": torch.randn(8, generator=g)}


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"state_dict": sd},
                                  lambda sd: {f"unet.{k}": v for k, v in sd.items()}])
def test_diffusers_unet_pt_is_imported_weights_only(tmp_path, wrap):
    torch.save(wrap(_diffusers_unet()), tmp_path / "ReCARE-Diffusers-UNet.pt")
    erasure = load_erasure(tmp_path / "ReCARE-Diffusers-UNet.pt")
    assert erasure.needs_base_model and not erasure.increments
    assert set(erasure.diffusers_unet) == set(_diffusers_unet())
    for key, value in _diffusers_unet().items():
        assert torch.equal(erasure.diffusers_unet[key], value)
    assert erasure.metadata["source_file"] == "ReCARE-Diffusers-UNet.pt"


def test_diffusers_unet_safetensors_is_imported_and_needs_a_base_model_before_saving(tmp_path):
    from safetensors.torch import save_file

    from recare_core.erasure.increments import NeedsBaseModelError

    save_file(_diffusers_unet(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    erasure = load_erasure(tmp_path / "diffusion_pytorch_model.safetensors")
    assert erasure.needs_base_model
    with pytest.raises(NeedsBaseModelError, match="ApplyErasedUNet"):
        save_erasure(erasure, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


class _RunsCode:
    """A pickle payload that would create ``marker`` if it were ever unpickled with code execution allowed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    import pickle

    marker = tmp_path / "code_ran"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"conv_in.weight": _RunsCode(marker)}))
    for name in ("evil.pt", "raw.pt"):
        with pytest.raises(ErasureFileError, match="Refused to load .*could run code") as refused:
            load_erasure(tmp_path / name)
        assert "set to `False`" not in str(refused.value)  # PyTorch's advice to load unsafely is not passed on
    assert "posix.system" in str(pytest.raises(ErasureFileError, load_erasure, tmp_path / "evil.pt").value)
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is real: unrestricted loading runs it
    assert marker.exists()


def test_non_unet_weights_files_give_clear_errors(tmp_path):
    torch.save({"text_model.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ErasureFileError, match="not a diffusers-format UNet"):
        load_erasure(tmp_path / "other.pt")
    torch.save({"conv_in.weight": torch.zeros(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ErasureFileError, match="step are not tensors"):
        load_erasure(tmp_path / "mixed.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ErasureFileError, match="holds a list"):
        load_erasure(tmp_path / "list.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ErasureFileError, match="Cannot read"):
        load_erasure(tmp_path / "truncated.pt")


def _write_raw(path, tensors: dict, header: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=header)


_RECARE_HEADER = {"recare.format": "recare-erasure/1", "recare.concept": "nudity"}
_FULL = {"diffusion_model.out.2.diff": torch.zeros(4, 4)}


@pytest.mark.parametrize("header, message", [
    ({**_RECARE_HEADER, "recare.metadata": "{not json"}, "recare.metadata entry of bad.safetensors is not valid JSON"),
    ({**_RECARE_HEADER, "recare.metadata": "[1, 2]"}, "is a list in JSON, not an object"),
    ({**_RECARE_HEADER, "recare.metadata": "null"}, "is null in JSON"),
    ({**_RECARE_HEADER, "recare.metadata": "[" * 50000 + "]" * 50000}, "nested too deeply"),
    ({"recare.format": "recare-erasure/1", "recare.metadata": "{}"}, "without its erased concept"),
    ({"recare.format": "recare-erasure/99", "recare.concept": "x"}, "format 'recare-erasure/99'"),
    ({"recare.format": "recare-erasure/1", "recare.metadata": '{"erased_concept": 5}'}, "not a word or phrase"),
])
def test_malformed_metadata_names_the_file_and_the_problem(tmp_path, header, message):
    _write_raw(tmp_path / "bad.safetensors", _FULL, header)
    with pytest.raises(ErasureFileError, match=message) as refused:
        load_erasure(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(refused.value)


@pytest.mark.parametrize("tensors, message", [
    ({"m.x.lora_down.weight": torch.zeros(4, 16), "m.x.lora_up.weight": torch.zeros(8, 3)},
     r"layer 'm.x' is malformed: up \(8, 3\) does not fit down \(4, 16\)"),
    ({"m.x.lora_down.weight": torch.zeros(4), "m.x.lora_up.weight": torch.zeros(8, 4)}, "layer 'm.x' is malformed"),
    ({"m.x.lora_down.weight": torch.zeros(4, 16)}, "layer 'm.x' lacks its down or up matrix"),
    ({"m.x.lora_down.weight": torch.zeros(2, 3), "m.x.lora_up.weight": torch.zeros(3, 2),
      "m.x.alpha": torch.zeros(3)}, "'m.x.alpha' holds 3 values"),
    ({"m.x.diff": torch.zeros(3, dtype=torch.int64)}, "'m.x.diff' holds torch.int64 values"),
    ({"m.x.something": torch.zeros(3)}, "unexpected tensor 'm.x.something'"),
    ({"recare.embedding.adv": torch.zeros(2, 3, 4), "m.x.diff": torch.zeros(3)}, "embedding 'recare.embedding.adv'"),
])
def test_wrong_shaped_increments_name_file_and_layer(tmp_path, tensors, message):
    _write_raw(tmp_path / "shapes.safetensors", tensors, dict(_RECARE_HEADER))
    with pytest.raises(ErasureFileError, match=message) as refused:
        load_erasure(tmp_path / "shapes.safetensors")
    assert str(refused.value).startswith("shapes.safetensors")


def test_a_lora_that_cannot_form_its_weight_says_so():
    from recare_core.erasure.increments import IncrementShapeError

    increment = WeightIncrement(down=torch.zeros(2, 16), up=torch.zeros(8, 2))
    with pytest.raises(IncrementShapeError, match=r"cannot form a weight of shape \(8, 15\)"):
        increment.delta((8, 15))


def test_corrupt_headers_and_folders_are_named(tmp_path):
    import struct

    (tmp_path / "huge_header.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    (tmp_path / "bad_header.safetensors").write_bytes(struct.pack("<Q", 12) + b'{"a": [1, 2')
    path = save_erasure(_erasure(), tmp_path / "whole.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for name in ("huge_header.safetensors", "bad_header.safetensors", "cut.safetensors"):
        with pytest.raises(ErasureFileError, match=f"Cannot read {name}: it is not a valid safetensors file"):
            load_erasure(tmp_path / name)
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(ErasureFileError, match="folder.safetensors is a folder"):
        load_erasure(tmp_path / "folder.safetensors")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ErasureFileError, match="folder.pt is a folder"):
        load_erasure(tmp_path / "folder.pt")


def test_a_failed_save_leaves_nothing_on_disk(tmp_path):
    from recare_core.erasure.increments import NeedsBaseModelError

    imported = Erasure("x", {}, diffusers_unet={"conv_in.weight": torch.zeros(1)})
    with pytest.raises(NeedsBaseModelError):
        save_numbered_erasure(imported, tmp_path, "recare/x")
    unserialisable = _erasure()
    unserialisable.metadata["bad"] = object()
    with pytest.raises(TypeError):
        save_numbered_erasure(unserialisable, tmp_path, "recare/y")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
