"""Importing the paper's released full-UNet checkpoints (diffusers format) into a real ComfyUI: key mapping,
difference to the model it is applied to, architecture mismatches, and refusal of pickles with code.

The diffusers UNet is synthetic: the tiny SD1.5 checkpoint's own UNet renamed to diffusers keys, with known
deltas added to a few weights."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_harness import GraphError, txt2img_graph
from recare_core.erasure.io import load_erasure

pytestmark = pytest.mark.comfy

# Diffusers <-> original (LDM) UNet names fixed by the two code bases, written out independently of ComfyUI.
KNOWN_NAMES = {
    "conv_in.weight": "diffusion_model.input_blocks.0.0.weight",
    "time_embedding.linear_1.weight": "diffusion_model.time_embed.0.weight",
    "down_blocks.0.resnets.0.conv1.weight": "diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "down_blocks.0.attentions.0.proj_in.weight": "diffusion_model.input_blocks.1.1.proj_in.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight":
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "mid_block.resnets.1.conv2.weight": "diffusion_model.middle_block.2.out_layers.3.weight",
    "up_blocks.0.resnets.1.conv_shortcut.weight": "diffusion_model.output_blocks.1.0.skip_connection.weight",
    "conv_norm_out.weight": "diffusion_model.out.0.weight",
    "conv_out.bias": "diffusion_model.out.2.bias",
}
CHANGED = [
    "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "mid_block.attentions.0.proj_out.bias",
    "up_blocks.0.resnets.1.conv_shortcut.weight",
]


@pytest.fixture(scope="module")
def importer(recare_pack):
    return importlib.import_module("comfyui_recare.nodes.diffusers_import")


@pytest.fixture(scope="module")
def patcher(recare_pack):
    return importlib.import_module("comfyui_recare.nodes.erasure_patch")


def synthetic_diffusers_unet(importer, model, scale: float = 0.05) -> tuple[dict, dict]:
    """(diffusers state dict = the model's UNet + known deltas, {ComfyUI key: delta})."""
    mapping = importer.diffusers_to_comfy_keys(model)
    state = model.model_state_dict()
    g = torch.Generator().manual_seed(7)
    unet = {d: state[c].float().clone() for d, c in mapping.items() if c in state}
    deltas = {}
    for key in CHANGED:
        deltas[mapping[key]] = scale * torch.randn(unet[key].shape, generator=g)
        unet[key] += deltas[mapping[key]]
    return unet, deltas


def _weights(model) -> dict[str, torch.Tensor]:
    model.patch_model()
    try:
        return {k: v.detach().clone() for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}
    finally:
        model.unpatch_model()


def test_key_mapping_is_comfyuis_and_covers_the_whole_unet(importer, comfy_models):
    model = comfy_models["model"]
    mapping = importer.diffusers_to_comfy_keys(model)
    for diffusers_key, comfy_key in KNOWN_NAMES.items():
        assert mapping[diffusers_key] == comfy_key
    unet_keys = {k for k in model.model_state_dict() if k.startswith("diffusion_model.")}
    assert unet_keys <= set(mapping.values())  # every UNet weight has a diffusers name


def test_full_unet_import_is_its_difference_to_the_model(importer, patcher, comfy_models, tmp_path):
    model = comfy_models["model"]
    unet, deltas = synthetic_diffusers_unet(importer, model)
    torch.save(unet, tmp_path / "ReCARE-Diffusers-UNet.pt")
    imported = load_erasure(tmp_path / "ReCARE-Diffusers-UNet.pt")
    assert imported.needs_base_model
    resolved = importer.resolve_against_model(model, imported)
    assert sorted(resolved.increments) == sorted(deltas)
    for key, delta in deltas.items():
        torch.testing.assert_close(resolved.increments[key].full, delta, rtol=0, atol=1e-6)
    assert resolved.metadata["changed_weights"] == len(deltas)
    assert importer.resolve_against_model(model, resolved) is resolved
    original = _weights(model)
    patched = _weights(patcher.apply_erasure(model, resolved, 1.0))
    mapping = importer.diffusers_to_comfy_keys(model)
    for diffusers_key, weight in unet.items():
        key = mapping[diffusers_key]
        torch.testing.assert_close(patched[key].float(), weight.to(patched[key].dtype).float(), rtol=0, atol=1e-6)
    for key, value in _weights(patcher.apply_erasure(model, resolved, 0.0)).items():
        assert torch.equal(value, original[key]), key


def test_wrong_architecture_and_unchanged_unet_are_refused_clearly(importer, patcher, comfy_models, tmp_path):
    model = comfy_models["model"]
    unet, _ = synthetic_diffusers_unet(importer, model)
    unet["down_blocks.3.resnets.0.conv1.weight"] = torch.zeros(1280, 1280, 3, 3)
    unet["conv_in.weight"] = torch.zeros(320, 9, 3, 3)  # an inpainting UNet's first layer
    torch.save(unet, tmp_path / "sd_inpaint.pt")
    with pytest.raises(patcher.ErasureMismatchError,
                       match=r"sd_inpaint\.pt.*1 weights this model does not have.*down_blocks\.3.*"
                             r"1 shape mismatches.*conv_in\.weight: file \(320, 9, 3, 3\) vs model \(320, 4, 3, 3\)"):
        importer.resolve_against_model(model, load_erasure(tmp_path / "sd_inpaint.pt"))
    mapping = importer.diffusers_to_comfy_keys(model)
    state = model.model_state_dict()
    torch.save({d: state[c] for d, c in mapping.items() if c in state}, tmp_path / "base.pt")
    with pytest.raises(ValueError, match="identical to this model"):
        importer.resolve_against_model(model, load_erasure(tmp_path / "base.pt"))


def test_released_unet_in_a_live_comfyui_and_pickle_with_code_refused(importer, comfy_server, comfy_models):
    """LoadErasure(.pt) -> ApplyErasedUNet gives the same image as its difference saved by SaveErasure and loaded
    by the stock LoraLoaderModelOnly; a .pt with code in its pickle fails the graph without running the code."""
    loras = comfy_server.base_dir / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    unet, _ = synthetic_diffusers_unet(importer, comfy_models["model"])
    torch.save(unet, loras / "ReCARE-Diffusers-UNet.pt")
    prompt, seed = "a photo of a person", 3
    graph = txt2img_graph(prompt, seed=seed, prefix="released")
    graph["5"]["inputs"]["model"] = ["11", 0]
    graph.update({
        "10": {"class_type": "LoadErasure", "inputs": {"name": "ReCARE-Diffusers-UNet.pt"}},
        "11": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["10", 0], "strength": 1.0}},
        "12": {"class_type": "SaveErasure", "inputs": {"erasure": ["11", 1], "filename_prefix": "recare/released"}},
    })
    released = comfy_server.output_files(comfy_server.run_graph(graph), "7")[0]
    stock = txt2img_graph(prompt, seed=seed, prefix="released_stock")
    stock["5"]["inputs"]["model"] = ["12", 0]
    stock["12"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["1", 0], "lora_name": "recare/released_00001_.safetensors", "strength_model": 1.0}}
    via_stock = comfy_server.output_files(comfy_server.run_graph(stock), "7")[0]
    original = comfy_server.output_files(comfy_server.run_graph(txt2img_graph(prompt, seed=seed, prefix="o3")), "7")[0]
    pixels = {name: np.asarray(Image.open(p).convert("RGB"))
              for name, p in (("released", released), ("stock", via_stock), ("original", original))}
    assert np.array_equal(pixels["released"], pixels["stock"])
    assert not np.array_equal(pixels["released"], pixels["original"])

    marker = comfy_server.base_dir / "code_ran"
    torch.save({"conv_in.weight": torch.zeros(1), "x": _RunsCode(marker)}, loras / "evil.pt")
    evil = {"10": {"class_type": "LoadErasure", "inputs": {"name": "evil.pt"}},
            "12": {"class_type": "SaveErasure", "inputs": {"erasure": ["10", 0], "filename_prefix": "recare/evil"}}}
    with pytest.raises(GraphError, match="Refused to load evil.pt"):
        comfy_server.run_graph(evil)
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
