"""The example workflows in ``workflows/`` against a live ComfyUI: every node type, link and widget value matches
``/object_info``; then each one runs end-to-end on the tiny SD1.5 checkpoint, converted to the API format here
and shrunk to tiny sizes by the test (the files keep the paper's numbers)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from comfy_harness import PACK_ROOT, TINY_CHECKPOINT_NAME
from recare_core.careset.io import load_care_set
from recare_core.careset.clip_loading import FROM_CONFIG
from tiny_models import save_tiny_care_clip
from recare_core.erasure.io import load_erasure
from workflow_format import (
    FRONTEND_ONLY_TYPES,
    check_workflow,
    named_widget_values,
    ui_to_api,
    widget_inputs,
)

pytestmark = pytest.mark.comfy


WORKFLOW_DIR = PACK_ROOT / "workflows"
WORKFLOWS = ("1_build_care_set", "2_unlearn", "3_before_after", "4_bake_checkpoint", "5_compare_methods",
             "6_sdxl_style_erasure")
SDXL_WORKFLOW = "6_sdxl_style_erasure"
PACK_NODES = {"LoadCAREClip", "BuildCARESet", "SaveCARESet", "LoadCARESet", "ReCAREUnlearn", "ApplyErasedUNet",
              "SaveErasure", "LoadErasure", "CAREScore", "ESDUnlearn", "UCEErase"}
# Combos naming a file on the user's machine; the runs below substitute files of their own.
USER_FILE_COMBOS = frozenset({("CheckpointLoaderSimple", "ckpt_name"), ("LoadCARESet", "file"),
                              ("LoadErasure", "name")})
# Pack-node widgets deliberately not at the node's default: the values allowed instead (CAREScore's default is
# empty; the comparison workflow names each method's erasure file).
NOT_DEFAULT = {("CAREScore", "erase_concept"): ("nudity",),
               ("SaveErasure", "filename_prefix"): ("recare/erasure", "recare/esd", "recare/uce")}
# The paper's generation settings (SD1.5, DDIM 50 steps, CFG 7.5, 512 px).
PAPER_SAMPLING = {"steps": 50, "cfg": 7.5, "sampler_name": "ddim", "denoise": 1.0}
# The SDXL workflow: 1024 px, common SDXL sampling, and the style-erasure settings that differ from the defaults.
SDXL_SAMPLING = {"steps": 30, "cfg": 7.0, "sampler_name": "dpmpp_2m", "denoise": 1.0}
SDXL_NOT_DEFAULT = {("ReCAREUnlearn", "erase_concept"): ("Van Gogh",), ("ReCAREUnlearn", "initializer_token"): ("art",),
                    ("ReCAREUnlearn", "concept_type"): ("style",), ("ReCAREUnlearn", "update"): ("lora",),
                    ("ReCAREUnlearn", "image_size"): (1024,), ("ReCAREUnlearn", "gradient_checkpointing"): (True,),
                    ("ReCAREUnlearn", "embedding_name"): ("recare_sdxl_adv",), ("BuildCARESet", "reference_word"):
                    ("Van Gogh",), ("BuildCARESet", "concept_type"): ("style",),
                    ("SaveCARESet", "filename_prefix"): ("careset_sdxl_style",),
                    ("SaveErasure", "filename_prefix"): ("recare/sdxl_style",)}
TINY_CLIP_FILE = "tiny_care_clip/open_clip_model.safetensors"
TINY_UNLEARN = {"n_rounds": 1, "erase_steps": 2, "ti_steps": 2, "robust_steps": 2, "num_adv_concepts": 1,
                "ddim_steps": 4, "image_size": 64}
TINY_ESD = {"erase_steps": 2, "ddim_steps": 4, "image_size": 64}


def load_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server(comfy_server):
    save_tiny_care_clip(comfy_server.base_dir / "models" / "open_clip" / "tiny_care_clip", seed=0)
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server) -> dict[str, Any]:
    return server.object_info()


# -- static checks against /object_info -----------------------------------------------------------------------

def test_the_folder_holds_the_workflows_each_with_a_note():
    assert sorted(p.stem for p in WORKFLOW_DIR.glob("*.json")) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        workflow = load_workflow(name)
        assert workflow["version"] == 0.4 and workflow["links"] and workflow["nodes"]
        notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1, name
        text = notes[0]["widgets_values"][0]
        assert len(text) > 200 and re.search(r"small GPU", text, re.IGNORECASE), name


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_matches_the_servers_nodes(name, object_info):
    assert check_workflow(load_workflow(name), object_info, USER_FILE_COMBOS) == []


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_uses_the_papers_numbers(name, object_info):
    sdxl = name == SDXL_WORKFLOW
    not_default = {**NOT_DEFAULT, **SDXL_NOT_DEFAULT} if sdxl else NOT_DEFAULT
    sampling, size = (SDXL_SAMPLING, 1024) if sdxl else (PAPER_SAMPLING, 512)
    for node in load_workflow(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES:
            continue
        values = named_widget_values(node, object_info[node["type"]])
        if node["type"] in PACK_NODES:
            for widget in widget_inputs(object_info[node["type"]]):
                if "default" in widget.options:
                    allowed = not_default.get((node["type"], widget.name), (widget.options["default"],))
                    assert values[widget.name] in allowed, f"{name}: {node['type']}.{widget.name}"
        if node["type"] == "KSampler":
            assert {k: values[k] for k in sampling} == sampling, name
        if node["type"] == "EmptyLatentImage":
            assert (values["width"], values["height"]) == (size, size), name


def test_the_checker_catches_broken_workflows(object_info):
    """The checks above are not vacuous: each kind of damage is reported."""
    original = load_workflow("1_build_care_set")
    ksampler = next(n for n in original["nodes"] if n["type"] == "KSampler")

    def damaged(change) -> list[str]:
        workflow = copy.deepcopy(original)
        change(workflow, next(n for n in workflow["nodes"] if n["id"] == ksampler["id"]))
        return check_workflow(workflow, object_info, USER_FILE_COMBOS)

    assert any("no node type 'NoSuchNode'" in p for p in damaged(lambda w, n: n.update(type="NoSuchNode")))
    assert any("recorded as" in p for p in damaged(lambda w, n: w["links"][0].__setitem__(5, "IMAGE")))
    assert any("outside" in p for p in damaged(lambda w, n: n["widgets_values"].__setitem__(2, 0)))
    assert any("not one of its options" in p
               for p in damaged(lambda w, n: n["widgets_values"].__setitem__(4, "no_sampler")))
    assert any("widget values" in p for p in damaged(lambda w, n: n["widgets_values"].pop(1)))
    assert any("not connected" in p for p in damaged(lambda w, n: n["inputs"][0].update(link=None)))


def test_ui_to_api_names_widget_values_and_links(object_info):
    workflow = load_workflow("1_build_care_set")
    api = ui_to_api(workflow, object_info)
    ui_sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    sampler = api[str(ui_sampler["id"])]
    # widgets_values [42, "fixed", 50, 7.5, ...]: the control-after-generate value is not an input
    assert ui_sampler["widgets_values"][:3] == [42, "fixed", 50]
    widgets = {k: v for k, v in sampler["inputs"].items() if not isinstance(v, list)}
    assert widgets == {"seed": 42, "steps": 50, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform",
                       "denoise": 1.0}
    links = {k: v for k, v in sampler["inputs"].items() if isinstance(v, list)}
    assert sorted(links) == ["latent_image", "model", "negative", "positive"]
    assert api[links["model"][0]]["class_type"] == "CheckpointLoaderSimple" and links["model"][1] == 0
    assert api[links["latent_image"][0]]["class_type"] == "RebatchLatents"
    assert not any(node["class_type"] in FRONTEND_ONLY_TYPES for node in api.values())


# -- end-to-end runs on the tiny checkpoint ---------------------------------------------------------------------

def _set(api: dict[str, Any], class_type: str, **values: Any) -> list[str]:
    """Set inputs on every node of a type; the inputs must already be there (the workflow's shape is tested)."""
    ids = [node_id for node_id, node in api.items() if node["class_type"] == class_type]
    for node_id in ids:
        missing = set(values) - set(api[node_id]["inputs"])
        assert not missing, f"{class_type} {node_id} has no input {missing}"
        api[node_id]["inputs"].update(values)
    return ids


def tiny_api(name: str, object_info: dict[str, Any], batch: int, chunk: int | None = None) -> dict[str, Any]:
    """The workflow in API format, shrunk: tiny checkpoint and CLIP, 64 px, 2 sampling steps, small batches."""
    api = ui_to_api(load_workflow(name), object_info)
    _set(api, "CheckpointLoaderSimple", ckpt_name=TINY_CHECKPOINT_NAME)
    _set(api, "EmptyLatentImage", width=64, height=64, batch_size=batch)
    _set(api, "KSampler", steps=2)
    _set(api, "LoadCAREClip", weights=TINY_CLIP_FILE, architecture=FROM_CONFIG, device="cpu")
    _set(api, "ReCAREUnlearn", **TINY_UNLEARN)
    _set(api, "ESDUnlearn", **TINY_ESD)
    if chunk is not None:
        assert _set(api, "RebatchLatents", batch_size=chunk) and _set(api, "RebatchImages", batch_size=batch)
    return api


def _node_id(api: dict[str, Any], class_type: str) -> str:
    (node_id,) = [node_id for node_id, node in api.items() if node["class_type"] == class_type]
    return node_id


def _ui_text(entry: dict[str, Any], node_id: str) -> str:
    return "\n".join(entry["outputs"][node_id]["text"])


@pytest.fixture(scope="module")
def care_set_run(server, object_info) -> dict[str, Any]:
    api = tiny_api("1_build_care_set", object_info, batch=4, chunk=2)
    entry = server.run_graph(api)
    saved = re.search(r"saved (\S+\.json)", _ui_text(entry, _node_id(api, "SaveCARESet"))).group(1)
    return {"api": api, "entry": entry, "file": f"recare/{saved}"}


@pytest.fixture(scope="module")
def unlearn_run(server, object_info, care_set_run) -> dict[str, Any]:
    api = tiny_api("2_unlearn", object_info, batch=4, chunk=2)
    _set(api, "LoadCARESet", file=f"{care_set_run['file']} [output]")
    entry = server.run_graph(api)
    saved = re.search(r"Saved (\S+\.safetensors)", _ui_text(entry, _node_id(api, "SaveErasure"))).group(1)
    return {"api": api, "entry": entry, "file": saved}


def test_build_care_set_workflow_runs(server, care_set_run):
    care_set = load_care_set(server.base_dir / "output" / care_set_run["file"])
    assert care_set.num_images == 4 and care_set.reference_word == "nudity" and care_set.words
    assert care_set.settings["n_clusters"] == 7 and care_set.settings["top_k_per_image"] == 50
    assert "CARE" in _ui_text(care_set_run["entry"], _node_id(care_set_run["api"], "PreviewAny"))
    cluster_map = server.output_files(care_set_run["entry"], _node_id(care_set_run["api"], "PreviewImage"))
    assert len(cluster_map) == 1 and cluster_map[0].is_file()


def test_unlearn_workflow_runs(server, unlearn_run):
    erasure = load_erasure(server.base_dir / "models" / "loras" / unlearn_run["file"])
    assert erasure.concept == "nudity" and erasure.increments
    assert erasure.metadata["settings"]["robust_steps"] == 2
    assert erasure.metadata["care_set"]["recare_careset"]["num_images"] == 4
    loss_curves = server.output_files(unlearn_run["entry"], _node_id(unlearn_run["api"], "PreviewImage"))
    assert len(loss_curves) == 1 and np.asarray(Image.open(loss_curves[0])).std() > 0


def test_before_after_workflow_runs(server, object_info, unlearn_run):
    api = tiny_api("3_before_after", object_info, batch=2)
    _set(api, "LoadErasure", name=unlearn_run["file"])
    entry = server.run_graph(api)
    reports = [_ui_text(entry, node_id) for node_id, node in api.items() if node["class_type"] == "PreviewAny"]
    assert len(reports) == 4 and all("CARE score" in report for report in reports)
    saves = [node_id for node_id, node in api.items() if node["class_type"] == "SaveImage"]
    assert len(saves) == 2
    for node_id in saves:
        (path,) = server.output_files(entry, node_id)
        stitched = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        half = (stitched.shape[1] - 16) // 2  # original | 16 px white spacing | erased
        original, erased = stitched[:, :half], stitched[:, -half:]
        assert original.shape == erased.shape and np.abs(original - erased).max() > 0


def test_bake_workflow_runs(server, object_info, unlearn_run, tiny_checkpoint):
    api = tiny_api("4_bake_checkpoint", object_info, batch=1)
    _set(api, "LoadErasure", name=unlearn_run["file"])
    folder = server.base_dir / "output" / "checkpoints"
    before = set(folder.glob("recare_erased_*.safetensors")) if folder.is_dir() else set()
    entry = server.run_graph(api)
    assert "erased concept: nudity" in _ui_text(entry, _node_id(api, "PreviewAny"))
    (baked,) = set(folder.glob("recare_erased_*.safetensors")) - before
    erasure = load_erasure(server.base_dir / "models" / "loras" / unlearn_run["file"])
    with safe_open(str(baked), "pt") as new, safe_open(str(tiny_checkpoint), "pt") as old:
        changed = [key for key in erasure.increments
                   if not np.array_equal(new.get_tensor(f"model.{key}").float().numpy(),
                                         old.get_tensor(f"model.{key}").float().numpy())]
        untouched = [key for key in old.keys() if key.startswith("first_stage_model.")][:5]
        for key in untouched:
            assert np.array_equal(new.get_tensor(key).float().numpy(), old.get_tensor(key).float().numpy()), key
    assert changed, "the baked checkpoint has the original UNet weights"


def test_compare_methods_workflow_runs(server, object_info, care_set_run):
    api = tiny_api("5_compare_methods", object_info, batch=1)
    _set(api, "LoadCARESet", file=f"{care_set_run['file']} [output]")
    entry = server.run_graph(api)
    saved = {re.search(r"Saved (\S+\.safetensors)", _ui_text(entry, node_id)).group(1)
             for node_id, node in api.items() if node["class_type"] == "SaveErasure"}
    methods = {load_erasure(server.base_dir / "models" / "loras" / name).metadata["method"] for name in saved}
    assert methods == {"ESD", "UCE"}
    saves = [node_id for node_id, node in api.items() if node["class_type"] == "SaveImage"]
    assert len(saves) == 2
    for node_id in saves:
        (path,) = server.output_files(entry, node_id)
        stitched = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        width = (stitched.shape[1] - 32) // 3  # original | 16 px | ESD | 16 px | UCE
        original, esd, uce = stitched[:, :width], stitched[:, width + 16:2 * width + 16], stitched[:, -width:]
        assert np.abs(original - esd).max() > 0 and np.abs(original - uce).max() > 0


def test_sdxl_style_erasure_workflow_runs_on_a_tiny_sdxl_checkpoint(family_server, object_info):
    """The SDXL workflow as shipped (LoRA update, gradient checkpointing on), shrunk, on a checkpoint ComfyUI
    detects as SDXL: the CARE-set is built and saved, the erasure is trained (LoRA) and saved with the detected
    model, and the before/after images are written. (Two training steps barely move the tiny model's images:
    that the erasure changes images is shown by tests/test_comfy_families_live.py.)"""
    from family_fixtures import FAMILY_CHECKPOINTS

    api = tiny_api(SDXL_WORKFLOW, object_info, batch=2, chunk=1)
    _set(api, "CheckpointLoaderSimple", ckpt_name=FAMILY_CHECKPOINTS["sdxl"])
    _set(api, "SaveErasure", filename_prefix="recare/sdxl_workflow_test")
    # a small CARE-set: every CARE prompt goes through both SDXL text towers in float16 on the CPU
    _set(api, "BuildCARESet", top_k_per_image=5, top_n_tokens=8, n_clusters=3)
    entry = family_server.run_graph(api, timeout=1800)
    assert "saved" in _ui_text(entry, _node_id(api, "SaveCARESet"))
    saved = re.search(r"Saved (\S+\.safetensors)", _ui_text(entry, _node_id(api, "SaveErasure"))).group(1)
    erasure = load_erasure(family_server.base_dir / "models" / "loras" / saved)
    assert erasure.concept == "Van Gogh" and erasure.increments
    assert erasure.metadata["settings"]["update"] == "lora" and erasure.metadata["settings"]["gradient_checkpointing"]
    assert erasure.metadata["base_model"] == "KOALA_700M"  # the tiny SDXL-family checkpoint's detected model
    stitched = family_server.output_files(entry, _node_id(api, "SaveImage"))
    assert len(stitched) == 2  # one before | after image per prompt of the batch
    for path in stitched:  # 64 px original | 16 px white spacing | 64 px erased
        assert np.asarray(Image.open(path).convert("RGB")).shape == (64, 144, 3)
