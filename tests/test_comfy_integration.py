"""The pack inside a real ComfyUI: loads without import errors, registers every node with tooltips, and the
tiny SD1.5 fixture checkpoint runs a stock txt2img graph."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from comfy_harness import PACK_DIR_NAME, PACK_ROOT, txt2img_graph

pytestmark = pytest.mark.comfy

# The node class names fixed for the whole pack; each arrives with its issue (never as a stub).
PLANNED_NODES = {
    "LoadCAREClip", "BuildCARESet", "SaveCARESet", "LoadCARESet", "ReCAREUnlearn", "ApplyErasedUNet",
    "SaveErasure", "LoadErasure", "CAREScore", "NudityRate", "ErasureToLoraModel", "CompressErasure",
    "ESDUnlearn", "UCEErase",
}


def _pack_node_ids(recare_pack) -> set[str]:
    extension = asyncio.run(recare_pack.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id for node in asyncio.run(extension.get_node_list())}


def test_in_process_loader_gives_real_comfy_objects(comfy_models):
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models

    assert isinstance(comfy_models["model"], comfy.model_patcher.ModelPatcher)
    assert isinstance(comfy_models["model"].model.model_config, comfy.supported_models.SD15)
    assert isinstance(comfy_models["clip"], comfy.sd.CLIP)
    assert isinstance(comfy_models["vae"], comfy.sd.VAE)
    tokens = comfy_models["clip"].tokenize("a photo of a person")
    cond = comfy_models["clip"].encode_from_tokens(tokens)
    assert tuple(cond.shape) == (1, 77, 768)


def test_pack_imports_without_error_and_registers_its_nodes(comfy_server, recare_pack):
    # Only the start-up part: later tests deliberately make nodes fail on bad input in the shared server.
    log = comfy_server.log().split("Starting server", 1)[0]
    import_lines = [line for line in log.splitlines() if "seconds" in line and PACK_DIR_NAME in line]
    assert len(import_lines) == 1, f"the pack is not in ComfyUI's custom-node import list:\n{log[-3000:]}"
    assert "IMPORT FAILED" not in import_lines[0], log[-6000:]
    # Any other line naming the pack (a traceback frame, "Cannot import ...", an entrypoint error) is a failure.
    other_mentions = [line for line in log.splitlines()
                      if (PACK_DIR_NAME in line or str(PACK_ROOT) in line) and line not in import_lines]
    assert not other_mentions, log[-6000:]
    info = comfy_server.object_info()
    expected = _pack_node_ids(recare_pack)
    assert expected, "the pack registers no node"
    assert expected <= PLANNED_NODES | {n for n in expected if n.startswith("ReCARE")}
    missing = expected - set(info)
    assert not missing, f"nodes not registered by the live server: {missing}"
    for node_id in expected:
        node = info[node_id]
        assert node["category"].startswith("ReCARE"), node_id
        assert node["description"], f"{node_id} has no description"
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(node["output"]) == len(node["output_name"])


def test_stock_txt2img_graph_runs_on_the_tiny_checkpoint(comfy_server):
    entry = comfy_server.run_graph(txt2img_graph("a photo of a person", seed=3, batch=2, prefix="harness"))
    files = comfy_server.output_files(entry, "7")
    assert len(files) == 2
    for path in files:
        image = np.asarray(Image.open(path))
        assert image.shape == (64, 64, 3)
        assert np.isfinite(image).all() and image.std() > 0  # not a blank frame
