"""ReCAREUnlearn inside a real ComfyUI: target images from KSampler, a CARE-set file, tiny step counts, then a
KSampler on the returned MODEL; the erasure saved and re-applied gives the same image; the learned adversarial
tokens are usable as ``embedding:<name>``; bad input gives the node's own clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from comfy_harness import GraphError, txt2img_graph

pytestmark = pytest.mark.comfy

TINY_STEPS = {
    "n_rounds": 1, "erase_steps": 2, "erase_lr": 5e-6, "ti_steps": 2, "ti_lr": 5e-3, "robust_steps": 2,
    "robust_lr": 2e-5, "negative_guidance": 2.0, "compositional_guidance_scale": 2.0, "num_adv_concepts": 1,
    "erase_target_weight": -1.0, "anchor_weight": -1.0, "adversarial_weight": 1.0, "retain_weight": 1.0,
    "ddim_steps": 4, "sampling_cfg": 3.0, "train_method": "noxattn", "update": "full", "lora_rank": 4,
    "image_size": 64, "gradient_checkpointing": False, "seed": 7,
}


def _unlearn_graph(prefix: str, erase_concept: str = "nudity", **overrides) -> dict:
    graph = txt2img_graph("a photo of a nude person", seed=1, steps=2, batch=2)
    del graph["7"]
    graph.update({
        "20": {"class_type": "LoadCARESet", "inputs": {"file": "unlearn_test_careset.json"}},
        "21": {"class_type": "ReCAREUnlearn", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target_images": ["6", 0], "care_set": ["20", 0],
            "erase_concept": erase_concept, "initializer_token": "person", "concept_type": "object",
            "preset": "paper", "embedding_name": prefix, **{**TINY_STEPS, **overrides}}},
        "22": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a person", "clip": ["1", 1]}},
        "23": {"class_type": "KSampler", "inputs": {
            "model": ["21", 0], "positive": ["22", 0], "negative": ["3", 0], "latent_image": ["28", 0], "seed": 9,
            "steps": 2, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "24": {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": ["1", 2]}},
        "25": {"class_type": "SaveImage", "inputs": {"images": ["24", 0], "filename_prefix": f"{prefix}_erased"}},
        "26": {"class_type": "SaveErasure", "inputs": {"erasure": ["21", 1], "filename_prefix": f"recare/{prefix}"}},
        "27": {"class_type": "PreviewImage", "inputs": {"images": ["21", 2]}},
        # Batch size 1 like the re-applied graph below: batched convolutions may round differently.
        "28": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    })
    return graph


@pytest.fixture(scope="module")
def server(comfy_server):
    careset = {"nudity_care_word": ["A person", "A beach"],
               "nudity_care_word_photo": ["A photo of person", "A photo of beach"]}
    (comfy_server.base_dir / "input" / "unlearn_test_careset.json").write_text(json.dumps(careset))
    return comfy_server


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_unlearn_in_comfyui_then_sample_save_reload_and_reapply(server):
    entry = server.run_graph(_unlearn_graph("unlearn_a"))
    erased_image = _pixels(server.output_files(entry, "25")[0])
    loss_picture = server.output_files(entry, "27")
    assert loss_picture and _pixels(loss_picture[0]).std() > 0
    saved = sorted((server.base_dir / "models" / "loras" / "recare").glob("unlearn_a_*_.safetensors"))
    assert len(saved) == 1
    embeddings = sorted(p.name for p in (server.base_dir / "models" / "embeddings").glob("unlearn_a_*.safetensors"))
    assert embeddings == ["unlearn_a_0.safetensors"]

    # The same seed through the original model differs; through the reloaded erasure it is identical.
    original = _pixels(server.output_files(server.run_graph(
        txt2img_graph("a photo of a person", seed=9, steps=2, prefix="unlearn_original")), "7")[0])
    reapplied_graph = txt2img_graph("a photo of a person", seed=9, steps=2, prefix="unlearn_reapplied")
    reapplied_graph["5"]["inputs"]["model"] = ["31", 0]
    reapplied_graph.update({
        "30": {"class_type": "LoadErasure", "inputs": {"name": f"recare/{saved[0].name}"}},
        "31": {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["30", 0], "strength": 1.0}},
    })
    reapplied = _pixels(server.output_files(server.run_graph(reapplied_graph), "7")[0])
    diff = np.abs(reapplied.astype(int) - erased_image.astype(int))
    assert diff.max() == 0, f"max pixel difference {diff.max()}, {np.count_nonzero(diff)} values differ"
    assert not np.array_equal(original, erased_image)

    # The learned adversarial token works as a prompt embedding in a stock graph.
    probe = txt2img_graph("a photo of embedding:unlearn_a_0", seed=9, steps=2, prefix="unlearn_probe")
    assert server.output_files(server.run_graph(probe), "7")


def test_unlearn_bad_input_gives_a_clear_error(server):
    with pytest.raises(GraphError, match="No concept to erase"):
        server.run_graph(_unlearn_graph("unlearn_bad", erase_concept="   "))
    with pytest.raises(GraphError, match="initializer token .* tokenises to nothing"):
        graph = _unlearn_graph("unlearn_bad_init")
        graph["21"]["inputs"]["initializer_token"] = "   "
        server.run_graph(graph)
