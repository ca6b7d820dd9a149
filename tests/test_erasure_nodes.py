"""Erasures as artifacts inside a real ComfyUI: apply (strength, stacking, removal), save/load, stock LoRA loader,
baking into a checkpoint. The erasures are synthetic (random small deltas on the tiny checkpoint's real keys), a
legitimate artifact for the file and patch plumbing; training is tested elsewhere."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_harness import TINY_CHECKPOINT_NAME, txt2img_graph
from recare_core.erasure.increments import Erasure, WeightIncrement
from recare_core.erasure.io import save_erasure

pytestmark = pytest.mark.comfy


def synthetic_erasure(model, seed: int, concept: str, scale: float = 0.05) -> Erasure:
    """Full deltas on the first convolutions and linears of the UNet, and a LoRA on one more weight."""
    state = model.model_state_dict()
    keys = [k for k in state if k.startswith("diffusion_model.") and k.endswith(".weight") and state[k].ndim >= 2]
    g = torch.Generator().manual_seed(seed)
    increments = {k: WeightIncrement(full=scale * torch.randn(state[k].shape, generator=g)) for k in keys[:6]}
    lora_key = keys[6]
    out_features, in_features = state[lora_key].shape[:2]
    kernel = state[lora_key].shape[2:]
    increments[lora_key] = WeightIncrement(down=torch.randn((2, in_features, *kernel), generator=g) * scale,
                                           up=torch.randn((out_features, 2, *(1 for _ in kernel)), generator=g),
                                           alpha=2.0)
    bias_key = keys[0][: -len("weight")] + "bias"
    increments[bias_key] = WeightIncrement(full=scale * torch.randn(state[bias_key].shape, generator=g))
    return Erasure(concept=concept, increments=increments, metadata={"erased_concept": concept,
                                                                     "base_model": "SD15"})


def _patched_weights(model) -> dict[str, torch.Tensor]:
    model.patch_model()
    try:
        return {k: v.detach().clone() for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}
    finally:
        model.unpatch_model()


@pytest.fixture(scope="module")
def patch_module(recare_pack):
    return importlib.import_module("comfyui_recare.nodes.erasure_patch")


def test_strength_zero_is_the_original_and_input_is_never_modified(patch_module, comfy_models):
    model = comfy_models["model"]
    original = _patched_weights(model)
    erasure = synthetic_erasure(model, 0, "a")
    zero = patch_module.apply_erasure(model, erasure, 0.0)
    for key, value in _patched_weights(zero).items():
        assert torch.equal(value, original[key]), key
    full = _patched_weights(patch_module.apply_erasure(model, erasure, 1.0))
    for key, increment in erasure.increments.items():
        expected = original[key] + increment.delta(original[key].shape).to(original[key].dtype)
        torch.testing.assert_close(full[key], expected, rtol=1e-5, atol=1e-5)
    assert not model.patches  # the input MODEL got no patch
    for key, value in _patched_weights(model).items():
        assert torch.equal(value, original[key]), key


def test_stacked_erasures_stay_separable(patch_module, comfy_models):
    model = comfy_models["model"]
    a, b = synthetic_erasure(model, 1, "a"), synthetic_erasure(model, 2, "b")
    only_a = _patched_weights(patch_module.apply_erasure(model, a, 1.0))
    stacked = patch_module.apply_erasure(patch_module.apply_erasure(model, a, 1.0), b, 1.0)
    stacked_weights = _patched_weights(stacked)
    b_removed = _patched_weights(patch_module.apply_erasure(patch_module.apply_erasure(model, a, 1.0), b, 0.0))
    for key in only_a:
        assert torch.equal(b_removed[key], only_a[key]), key
    changed_by_b = [k for k in b.increments if not torch.equal(stacked_weights[k], only_a[k])]
    assert sorted(changed_by_b) == sorted(b.increments)


def test_mismatched_architecture_is_refused_with_the_mismatch_listed(patch_module, comfy_models):
    model = comfy_models["model"]
    wrong = Erasure("x", {
        "diffusion_model.not.a.layer.weight": WeightIncrement(full=torch.zeros(3, 3)),
        "diffusion_model.out.2.weight": WeightIncrement(full=torch.zeros(7, 7)),
    }, metadata={"base_model": "SDXL"})
    with pytest.raises(patch_module.ErasureMismatchError, match=r"SDXL.*absent.*not\.a\.layer.*shape mismatch"):
        patch_module.apply_erasure(model, wrong, 1.0)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _graph_with_model_node(model_ref: list, prompt: str, seed: int, prefix: str, extra: dict) -> dict:
    graph = txt2img_graph(prompt, seed=seed, prefix=prefix)
    graph["5"]["inputs"]["model"] = model_ref
    graph.update(extra)
    return graph


def test_saved_file_gives_the_same_image_through_load_erasure_and_stock_lora_loader(comfy_server, comfy_models):
    loras = comfy_server.base_dir / "models" / "loras"
    erasure = synthetic_erasure(comfy_models["model"], 3, "nudity")
    save_erasure(erasure, loras / "synthetic_erasure.safetensors")
    prompt, seed = "a photo of a person", 11
    via_pack = _graph_with_model_node(["11", 0], prompt, seed, "via_pack", {
        "10": {"class_type": "LoadErasure", "inputs": {"name": "synthetic_erasure.safetensors"}},
        "11": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["10", 0], "strength": 1.0}},
    })
    via_stock = _graph_with_model_node(["12", 0], prompt, seed, "via_stock", {
        "12": {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["1", 0], "lora_name": "synthetic_erasure.safetensors", "strength_model": 1.0}},
    })
    zero = _graph_with_model_node(["11", 0], prompt, seed, "zero", {
        "10": {"class_type": "LoadErasure", "inputs": {"name": "synthetic_erasure.safetensors"}},
        "11": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["10", 0], "strength": 0.0}},
    })
    original = txt2img_graph(prompt, seed=seed, prefix="original")
    images = {name: _pixels(comfy_server.output_files(comfy_server.run_graph(graph), "7")[0])
              for name, graph in (("pack", via_pack), ("stock", via_stock), ("zero", zero), ("original", original))}
    assert np.array_equal(images["pack"], images["stock"])
    assert np.array_equal(images["zero"], images["original"])
    assert not np.array_equal(images["pack"], images["original"])  # the erasure does change the model


def test_save_erasure_node_numbers_files_and_bake_into_checkpoint(comfy_server, comfy_models, patch_module):
    import comfy.sd

    loras = comfy_server.base_dir / "models" / "loras"
    erasure = synthetic_erasure(comfy_models["model"], 4, "style")
    save_erasure(erasure, loras / "to_resave.safetensors")
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINT_NAME}},
        "10": {"class_type": "LoadErasure", "inputs": {"name": "to_resave.safetensors"}},
        "11": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["10", 0], "strength": 1.0}},
        "12": {"class_type": "SaveErasure", "inputs": {"erasure": ["10", 0], "filename_prefix": "recare/resaved"}},
        "13": {"class_type": "CheckpointSave", "inputs": {
            "model": ["11", 0], "clip": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/baked"}},
    }
    comfy_server.run_graph(graph)
    # A second run with another erasure under the same prefix gets the next number; nothing is overwritten.
    save_erasure(synthetic_erasure(comfy_models["model"], 5, "other"), loras / "second.safetensors")
    comfy_server.run_graph({"10": {"class_type": "LoadErasure", "inputs": {"name": "second.safetensors"}},
                            "12": graph["12"]})
    saved = sorted((loras / "recare").glob("resaved_*_.safetensors"))
    assert [p.name for p in saved] == ["resaved_00001_.safetensors", "resaved_00002_.safetensors"]
    baked = sorted((comfy_server.base_dir / "output" / "checkpoints").glob("baked_*.safetensors"))
    assert baked, "CheckpointSave wrote no file"
    reloaded, *_ = comfy.sd.load_checkpoint_guess_config(str(baked[-1]), output_vae=False, output_clip=False)
    expected = _patched_weights(patch_module.apply_erasure(comfy_models["model"], erasure, 1.0))
    got = {k: v for k, v in reloaded.model.state_dict().items() if k.startswith("diffusion_model.")}
    for key in erasure.increments:
        torch.testing.assert_close(got[key].float(), expected[key].float(), rtol=1e-3, atol=1e-3)


def _sampler_branch(graph: dict, ids: tuple[str, str, str], model_ref: list, prefix: str) -> None:
    """Add a KSampler -> VAEDecode -> SaveImage branch (node ids ``ids``) sampling ``model_ref`` like node 5."""
    sampler, decode, save = ids
    graph[sampler] = {"class_type": "KSampler", "inputs": {**graph["5"]["inputs"], "model": model_ref}}
    graph[decode] = {"class_type": "VAEDecode", "inputs": {"samples": [sampler, 0], "vae": ["1", 2]}}
    graph[save] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": prefix}}


def test_in_memory_erasure_equals_saved_and_reloaded_and_lora_model_handover(comfy_server, comfy_models):
    """CompressErasure makes an in-memory erasure; applying it directly, after SaveErasure -> LoadErasure, and
    through ErasureToLoraModel -> stock LoraModelLoader gives the same image; stock SaveLoRA writes its weights."""
    from safetensors.torch import load_file

    loras = comfy_server.base_dir / "models" / "loras"
    save_erasure(synthetic_erasure(comfy_models["model"], 6, "to_compress"), loras / "to_compress.safetensors")
    prompt, seed = "a photo of a person", 5
    graph = _graph_with_model_node(["12", 0], prompt, seed, "in_memory", {
        "10": {"class_type": "LoadErasure", "inputs": {"name": "to_compress.safetensors"}},
        "11": {"class_type": "CompressErasure", "inputs": {"erasure": ["10", 0], "rank": 4}},
        "12": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["11", 0], "strength": 1.0}},
        "13": {"class_type": "SaveErasure", "inputs": {"erasure": ["11", 0], "filename_prefix": "recare/compressed"}},
        "14": {"class_type": "ErasureToLoraModel", "inputs": {"erasure": ["11", 0]}},
        "15": {"class_type": "LoraModelLoader", "inputs": {**comfy_server.widget_defaults("LoraModelLoader"),
                                                           "model": ["1", 0], "lora": ["14", 0], "strength_model": 1.0}},
        "16": {"class_type": comfy_server.core_node_id("SaveLoRA", "SaveLoRANode"),
               "inputs": {"lora": ["14", 0], "prefix": "loras/from_erasure"}},
    })
    _sampler_branch(graph, ("20", "21", "22"), ["15", 0], "lora_model")
    first = comfy_server.run_graph(graph)
    saved = loras / "recare" / "compressed_00001_.safetensors"
    reloaded = _graph_with_model_node(["12", 0], prompt, seed, "reloaded", {
        "10": {"class_type": "LoadErasure", "inputs": {"name": "recare/compressed_00001_.safetensors"}},
        "12": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["10", 0], "strength": 1.0}},
    })
    images = {
        "memory": _pixels(comfy_server.output_files(first, "7")[0]),
        "lora_model": _pixels(comfy_server.output_files(first, "22")[0]),
        "reloaded": _pixels(comfy_server.output_files(comfy_server.run_graph(reloaded), "7")[0]),
        "original": _pixels(comfy_server.output_files(
            comfy_server.run_graph(txt2img_graph(prompt, seed=seed, prefix="original5")), "7")[0]),
    }
    assert np.array_equal(images["memory"], images["reloaded"])
    assert np.array_equal(images["memory"], images["lora_model"])
    assert not np.array_equal(images["memory"], images["original"])
    saved_tensors = load_file(str(saved))
    lora_file = load_file(str(comfy_server.base_dir / "output" / "loras" / "from_erasure_00001_.safetensors"))
    assert lora_file.keys() == saved_tensors.keys() and any(k.endswith(".lora_down.weight") for k in lora_file)
    for key, value in lora_file.items():
        assert torch.equal(value, saved_tensors[key]), key

