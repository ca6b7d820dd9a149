"""The CARE-set nodes inside a real ComfyUI: tiny SD1.5 checkpoint -> KSampler batch -> VAEDecode ->
BuildCARESet -> SaveCARESet, then LoadCARESet round-trips the file (both formats)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

import torch

from comfy_harness import txt2img_graph
from recare_core.careset.io import load_care_set
from recare_core.careset.clip_loading import FROM_CONFIG
from tiny_models import save_tiny_care_clip

pytestmark = pytest.mark.comfy


TINY_CLIP_FILE = "tiny_care_clip/open_clip_model.safetensors"


def _care_set_graph(batch: int, prefix: str, fmt: str = "recare") -> dict:
    graph = txt2img_graph("a photo of a person on a beach", seed=5, steps=2, batch=batch)
    del graph["7"]  # no SaveImage: the images go to BuildCARESet
    graph.update({
        "8": {"class_type": "LoadCAREClip", "inputs": {"weights": TINY_CLIP_FILE, "architecture": FROM_CONFIG,
                                                        "quick_gelu": "auto", "device": "cpu"}},
        "9": {"class_type": "BuildCARESet", "inputs": {
            "images": ["6", 0], "care_clip": ["8", 0], "reference_word": "person", "concept_type": "object",
            "top_k_per_image": 50, "top_n_tokens": 100, "n_clusters": 7, "k_each_side": 1, "alpha": 0.01,
            "min_cluster_size": 2, "seed": 42, "word_hygiene": True}},
        "10": {"class_type": "SaveCARESet", "inputs": {"care_set": ["9", 0], "filename_prefix": prefix,
                                                        "format": fmt}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["9", 2]}},
    })
    return graph


@pytest.fixture(scope="module")
def server(comfy_server):
    save_tiny_care_clip(comfy_server.base_dir / "models" / "open_clip" / "tiny_care_clip", seed=0)
    return comfy_server


def test_nodes_are_registered_with_their_defaults(server):
    info = server.object_info()
    load_clip = info["LoadCAREClip"]["input"]["required"]
    assert TINY_CLIP_FILE in load_clip["weights"][1]["options"] and "openai" in load_clip["weights"][1]["options"]
    assert load_clip["weights"][1]["default"] == "openai"
    assert load_clip["architecture"][1]["default"] == "ViT-B-32"
    build = info["BuildCARESet"]["input"]["required"]
    defaults = {name: spec[1].get("default") for name, spec in build.items() if len(spec) > 1}
    assert defaults["top_k_per_image"] == 50 and defaults["top_n_tokens"] == 100 and defaults["n_clusters"] == 7
    assert defaults["k_each_side"] == 1 and defaults["alpha"] == 0.01 and defaults["min_cluster_size"] == 2
    assert defaults["seed"] == 42 and defaults["word_hygiene"] is True
    assert info["BuildCARESet"]["input"]["optional"]["candidate_words"][1]["default"] == ""
    assert info["BuildCARESet"]["output_name"] == ["care_set", "report", "cluster_map"]
    assert info["SaveCARESet"]["output_node"] is True


def test_build_save_and_load_round_trip(server):
    entry = server.run_graph(_care_set_graph(batch=4, prefix="graph/careset"))
    saved = server.base_dir / "output" / "recare" / "graph" / "careset_00001.json"
    assert saved.is_file()
    assert "saved careset_00001.json" in entry["outputs"]["10"]["text"][0]
    assert len(server.output_files(entry, "11")) == 1  # the cluster map reached a preview
    care_set = load_care_set(saved)
    assert care_set.num_images == 4 and care_set.reference_word == "person" and care_set.words
    assert care_set.clip_identity.startswith("tiny_care_clip-config-") and "sha256:" in care_set.clip_identity
    assert care_set.settings["seed"] == 42 and len(care_set.clusters) == 7

    # a second run never overwrites
    server.run_graph(_care_set_graph(batch=4, prefix="graph/careset", fmt="reference"))
    second = saved.with_name("careset_00002.json")
    assert json.loads(second.read_text(encoding="utf-8")) == care_set.to_reference_json()
    assert load_care_set(saved) == care_set

    # LoadCARESet -> SaveCARESet reproduces the pack file, and reads the reference format
    server.run_graph({
        "1": {"class_type": "LoadCARESet", "inputs": {"file": "recare/graph/careset_00001.json [output]"}},
        "2": {"class_type": "SaveCARESet", "inputs": {"care_set": ["1", 0], "filename_prefix": "again",
                                                       "format": "recare"}},
    })
    again = server.base_dir / "output" / "recare" / "again_00001.json"
    assert json.loads(again.read_text(encoding="utf-8")) == json.loads(saved.read_text(encoding="utf-8"))
    reference_file = server.base_dir / "input" / "careset.json"
    reference_file.write_text(second.read_text(encoding="utf-8"), encoding="utf-8")
    server.run_graph({
        "1": {"class_type": "LoadCARESet", "inputs": {"file": "careset.json"}},
        "2": {"class_type": "SaveCARESet", "inputs": {"care_set": ["1", 0], "filename_prefix": "from_reference",
                                                       "format": "reference"}},
    })
    from_reference = server.base_dir / "output" / "recare" / "from_reference_00001.json"
    assert json.loads(from_reference.read_text(encoding="utf-8")) == care_set.to_reference_json()


# Error paths run in-process: the live server would log their tracebacks, and the shared server's log is also
# checked for stray mentions of the pack by the registration test.
@pytest.fixture(scope="module")
def node_modules(recare_pack):
    return (importlib.import_module("comfyui_recare.nodes.careset_nodes"),
            importlib.import_module("comfyui_recare.nodes.clip_nodes"))


def _build_inputs(**changes) -> dict:
    inputs = {name: value for name, value in _care_set_graph(2, "x")["9"]["inputs"].items()
              if name not in ("images", "care_clip")}
    return {**inputs, **changes}


def test_a_single_image_is_refused_with_a_clear_message(node_modules):
    careset_nodes, _ = node_modules
    from tiny_models import build_tiny_care_clip

    with pytest.raises(ValueError, match="single image"):
        careset_nodes.BuildCARESet.execute(images=torch.rand(1, 32, 32, 3), care_clip=build_tiny_care_clip(0),
                                           **_build_inputs())


def test_candidate_words_limit_what_the_node_can_keep(node_modules):
    careset_nodes, _ = node_modules
    from tiny_models import build_tiny_care_clip

    clip, images = build_tiny_care_clip(0), torch.rand(6, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    small = dict(top_k_per_image=5, top_n_tokens=10, n_clusters=3)
    free = careset_nodes.BuildCARESet.execute(images=images, care_clip=clip, **_build_inputs(**small)).args[0]
    listed = [c.word for c in free.candidates[:6]]
    limited = careset_nodes.BuildCARESet.execute(
        images=images, care_clip=clip, **_build_inputs(**small, candidate_words=",\n ".join(listed))).args
    assert {c.word for c in limited[0].candidates} <= set(listed) and "not in the candidate words" in limited[1]
    with pytest.raises(ValueError, match="None of the 1 candidate words"):
        careset_nodes.BuildCARESet.execute(images=images, care_clip=clip,
                                           **_build_inputs(**small, candidate_words="zzqxnotaword"))


def test_a_pretrained_name_with_a_config_architecture_is_refused(node_modules):
    _, clip_nodes = node_modules
    with pytest.raises(RuntimeError, match="needs a weights file"):
        clip_nodes.LoadCAREClip.execute(weights="openai", architecture=FROM_CONFIG, quick_gelu="auto", device="cpu")


def test_load_care_clip_node_reads_the_open_clip_folder(node_modules, tmp_path):
    _, clip_nodes = node_modules
    import folder_paths

    folder = tmp_path / "open_clip_models"
    save_tiny_care_clip(folder / "tiny", seed=2)
    paths, _ = folder_paths.folder_names_and_paths["open_clip"]
    paths.append(str(folder))
    try:
        assert "tiny/open_clip_model.safetensors" in clip_nodes.weight_choices()
        clip = clip_nodes.LoadCAREClip.execute(weights="tiny/open_clip_model.safetensors", architecture=FROM_CONFIG,
                                               quick_gelu="auto", device="cpu").args[0]
        assert clip.identity.startswith("tiny-config-")
    finally:
        paths.remove(str(folder))


def test_save_prefix_cannot_leave_the_output_folder(node_modules, tmp_path):
    careset_nodes, _ = node_modules
    import folder_paths

    from comfyui_recare.recare_core.careset.build import CareSet
    from comfyui_recare.recare_core.safe_files import UnsafePathError

    care_set = CareSet.from_words("person", "object", ["beach"])
    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        for prefix in ("../../etc/passwd", "/etc/passwd", "  ", "a\x00b", "..\\..\\x"):
            with pytest.raises(UnsafePathError, match="filename_prefix"):
                careset_nodes.SaveCARESet.execute(care_set=care_set, filename_prefix=prefix, format="recare")
        written = careset_nodes.SaveCARESet.execute(care_set=care_set, filename_prefix="sub/dir/name",
                                                    format="recare").args[0]
        assert Path(written) == (tmp_path / "recare" / "sub" / "dir" / "name_00001.json").resolve()
    finally:
        folder_paths.set_output_directory(previous)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [Path(written)]
