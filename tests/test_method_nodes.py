"""ESDUnlearn and UCEErase inside a real ComfyUI on the tiny checkpoint: each node runs, its erased MODEL samples,
its erasure saves, reloads and re-applies to the same image; the nodes share widget definitions with
ReCAREUnlearn; bad input gives the node's own clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from comfy_harness import GraphError, txt2img_graph

pytestmark = pytest.mark.comfy

ESD_INPUTS = {"erase_concept": "nudity", "erase_steps": 2, "erase_lr": 1e-5, "negative_guidance": 3.0,
              "ddim_steps": 4, "sampling_cfg": 3.0, "train_method": "noxattn", "update": "full", "lora_rank": 4,
              "image_size": 64, "gradient_checkpointing": False, "seed": 3}
UCE_INPUTS = {"erase_concept": "nudity", "guide": "", "preserve": "a person; a beach", "preserve_care_set": True,
              "erase_scale": 1.0, "preserve_scale": 1.0, "lamb": 0.5}


def _method_graph(node: str, inputs: dict, prefix: str) -> dict:
    """Erase with ``node``, sample through the erased MODEL, save the erasure and preview the loss curves."""
    graph = txt2img_graph("a photo of a person", seed=9, steps=2, prefix=f"{prefix}_erased")
    graph["5"]["inputs"]["model"] = ["20", 0]
    graph.update({
        "20": {"class_type": node, "inputs": {"model": ["1", 0], "clip": ["1", 1], **inputs}},
        "21": {"class_type": "SaveErasure", "inputs": {"erasure": ["20", 1], "filename_prefix": f"recare/{prefix}"}},
        "22": {"class_type": "PreviewImage", "inputs": {"images": ["20", 2]}},
    })
    return graph


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("node, inputs, prefix", [("ESDUnlearn", ESD_INPUTS, "esd_node"),
                                                  ("UCEErase", UCE_INPUTS, "uce_node")])
def test_method_node_erases_and_its_erasure_saves_reloads_and_reapplies(comfy_server, node, inputs, prefix):
    entry = comfy_server.run_graph(_method_graph(node, inputs, prefix))
    erased = _pixels(comfy_server.output_files(entry, "7")[0])
    curves = comfy_server.output_files(entry, "22")
    assert curves and _pixels(curves[0]).std() > 0
    saved = sorted((comfy_server.base_dir / "models" / "loras" / "recare").glob(f"{prefix}_*_.safetensors"))
    assert len(saved) == 1

    original = _pixels(comfy_server.output_files(comfy_server.run_graph(
        txt2img_graph("a photo of a person", seed=9, steps=2, prefix=f"{prefix}_original")), "7")[0])
    reapplied_graph = txt2img_graph("a photo of a person", seed=9, steps=2, prefix=f"{prefix}_reapplied")
    reapplied_graph["5"]["inputs"]["model"] = ["31", 0]
    reapplied_graph.update({
        "30": {"class_type": "LoadErasure", "inputs": {"name": f"recare/{saved[0].name}"}},
        "31": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["30", 0], "strength": 1.0}},
    })
    reapplied = _pixels(comfy_server.output_files(comfy_server.run_graph(reapplied_graph), "7")[0])
    assert np.array_equal(reapplied, erased)
    assert not np.array_equal(original, erased)


def test_method_nodes_share_widget_definitions_and_have_tooltips(comfy_server):
    info = comfy_server.object_info()

    def widgets(node: str) -> dict:
        spec = info[node]["input"]
        return {**spec.get("required", {}), **spec.get("optional", {})}

    recare, esd, uce = widgets("ReCAREUnlearn"), widgets("ESDUnlearn"), widgets("UCEErase")
    for name in ("erase_steps", "erase_lr", "train_method", "update", "seed", "image_size"):
        assert esd[name][1]["tooltip"] == recare[name][1]["tooltip"], name
    for spec in (recare, esd, uce):
        assert all(options[1].get("tooltip") for options in spec.values())
    assert esd["erase_steps"][1]["default"] == 1000 and recare["erase_steps"][1]["default"] == 200
    assert "care_set" in info["UCEErase"]["input"].get("optional", {})


def test_method_nodes_refuse_an_empty_concept_with_a_clear_message(comfy_server):
    with pytest.raises(GraphError, match="No concept to erase"):
        comfy_server.run_graph(_method_graph("UCEErase", {**UCE_INPUTS, "erase_concept": "  "}, "uce_bad"))
    with pytest.raises(GraphError, match="lamb must be positive"):
        comfy_server.run_graph(_method_graph("UCEErase", {**UCE_INPUTS, "lamb": 0.0}, "uce_bad_lamb"))


def test_recare_node_runs_with_the_age_anchor_and_doco_surgery(comfy_server):
    from recare_core.erasure.io import load_erasure
    from test_unlearn_node import TINY_STEPS, _unlearn_graph  # the graph of ReCAREUnlearn's own test

    careset = {"nudity_care_word": ["A person", "A beach"],
               "nudity_care_word_photo": ["A photo of person", "A photo of beach"]}
    (comfy_server.base_dir / "input" / "unlearn_test_careset.json").write_text(json.dumps(careset))
    graph = _unlearn_graph("options_a", anchor_mode="age", age_top_k=2, doco_surgery=True, doco_lambda=1.0)
    entry = comfy_server.run_graph(graph)
    assert comfy_server.output_files(entry, "27")
    (saved,) = sorted((comfy_server.base_dir / "models" / "loras" / "recare").glob("options_a_*_.safetensors"))
    settings = load_erasure(saved).metadata["settings"]
    assert (settings["anchor_mode"], settings["age_top_k"], settings["doco_surgery"]) == ("age", 2, True)
    assert settings["robust_steps"] == TINY_STEPS["robust_steps"]
