"""Every pack node on the tiny SDXL-family and SD 2.x checkpoints inside a live ComfyUI (the session's shared
server, one family at a time): target images from KSampler -> BuildCARESet -> ReCAREUnlearn (tiny steps) ->
SaveErasure / CompressErasure / CAREScore / CheckpointSave; then LoadErasure -> ApplyErasedUNet and the stock
LoraLoaderModelOnly give the in-memory erasure's image exactly, and the learned tokens work as
``embedding:<name>``. Random weights prove plumbing only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from family_fixtures import FAMILY_CHECKPOINTS
from recare_core.careset.clip_loading import FROM_CONFIG
from tiny_models import save_tiny_care_clip
from recare_core.erasure.io import load_erasure

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


TINY_CLIP_FILE = "tiny_care_clip/open_clip_model.safetensors"
TINY_STEPS = {
    "n_rounds": 1, "erase_steps": 1, "erase_lr": 5e-6, "ti_steps": 1, "ti_lr": 5e-3, "robust_steps": 1,
    "robust_lr": 1e-3, "negative_guidance": 2.0, "compositional_guidance_scale": 2.0, "num_adv_concepts": 1,
    "ddim_steps": 4, "sampling_cfg": 3.0, "train_method": "noxattn", "update": "full", "lora_rank": 4,
    "image_size": 64, "gradient_checkpointing": False, "seed": 7,
}
CHECK_PROMPT = "a painting of a house"
# One anchor and one retain prompt keep the (CPU-bound, fp16) text encodings of the run few; BuildCARESet runs on
# the family's images in the same graph, its CARE-set previewed.
CARE_SET = {"van_gogh_care_word": ["art"], "van_gogh_care_word_painting": ["A painting of a house"]}
SAMPLER = {"seed": 9, "steps": 2, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}


@pytest.fixture(scope="module")
def server(family_server):
    save_tiny_care_clip(family_server.base_dir / "models" / "open_clip" / "tiny_care_clip", seed=0)
    (family_server.base_dir / "input" / "family_careset.json").write_text(json.dumps(CARE_SET))
    return family_server


def _sample(graph: dict, ids: tuple[str, str, str], model: list, prompt: list, prefix: str) -> None:
    """KSampler (64 px, seed 9, 2 steps) on ``model`` with conditioning ``prompt`` -> VAEDecode -> SaveImage."""
    sampler, decode, save = ids
    graph[sampler] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": prompt, "negative": ["3", 0], "latent_image": ["4", 0], **SAMPLER}}
    graph[decode] = {"class_type": "VAEDecode", "inputs": {"samples": [sampler, 0], "vae": ["1", 2]}}
    graph[save] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": prefix}}


def _base_graph(family: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": FAMILY_CHECKPOINTS[family]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": CHECK_PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def _unlearn_graph(family: str, prefix: str) -> dict:
    graph = _base_graph(family)
    graph.update({
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a painting in the style of van gogh",
                                                         "clip": ["1", 1]}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["6", 0], "negative": ["3", 0],
                                                   "latent_image": ["5", 0], **SAMPLER}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "10": {"class_type": "LoadCAREClip", "inputs": {"weights": TINY_CLIP_FILE, "architecture": FROM_CONFIG,
                                                        "quick_gelu": "auto", "device": "cpu"}},
        "11": {"class_type": "BuildCARESet", "inputs": {
            "images": ["8", 0], "care_clip": ["10", 0], "reference_word": "van gogh", "concept_type": "style",
            "top_k_per_image": 20, "top_n_tokens": 20, "n_clusters": 2, "k_each_side": 0, "alpha": 0.01,
            "min_cluster_size": 1, "seed": 1, "word_hygiene": True}},
        "17": {"class_type": "PreviewAny", "inputs": {"source": ["11", 1]}},
        "18": {"class_type": "LoadCARESet", "inputs": {"file": "family_careset.json"}},
        "12": {"class_type": "ReCAREUnlearn", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target_images": ["8", 0], "care_set": ["18", 0],
            "erase_concept": "van gogh", "initializer_token": "art", "concept_type": "style", "preset": "paper",
            "embedding_name": prefix, **TINY_STEPS}},
        "13": {"class_type": "SaveErasure", "inputs": {"erasure": ["12", 1], "filename_prefix": f"recare/{prefix}"}},
        "14": {"class_type": "CompressErasure", "inputs": {"erasure": ["12", 1], "rank": 4}},
        "15": {"class_type": "SaveErasure", "inputs": {"erasure": ["14", 0],
                                                       "filename_prefix": f"recare/{prefix}_compressed"}},
        "16": {"class_type": "CheckpointSave", "inputs": {"model": ["12", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                          "filename_prefix": f"checkpoints/{prefix}_baked"}},
    })
    _sample(graph, ("21", "22", "23"), ["12", 0], ["2", 0], f"{prefix}_erased")
    graph["24"] = {"class_type": "CAREScore", "inputs": {
        "images": ["22", 0], "care_clip": ["10", 0], "care_concept": "house", "labels": "house, tree, van gogh",
        "use_template": True, "erase_concept": "van gogh"}}
    graph["25"] = {"class_type": "PreviewAny", "inputs": {"source": ["24", 2]}}
    return graph


def _reload_graph(family: str, prefix: str, erasure_name: str) -> dict:
    graph = _base_graph(family)
    graph["30"] = {"class_type": "LoadErasure", "inputs": {"name": f"recare/{erasure_name}"}}
    graph["31"] = {"class_type": "ApplyErasedUNet", "inputs": {"model": ["1", 0], "erasure": ["30", 0],
                                                               "strength": 1.0}}
    graph["32"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["1", 0], "lora_name": f"recare/{erasure_name}", "strength_model": 1.0}}
    graph["33"] = {"class_type": "CLIPTextEncode", "inputs": {
        "text": f"a painting in the style of embedding:{prefix}_0", "clip": ["1", 1]}}
    _sample(graph, ("41", "42", "43"), ["31", 0], ["2", 0], f"{prefix}_reapplied")
    _sample(graph, ("51", "52", "53"), ["32", 0], ["2", 0], f"{prefix}_lora_loader")
    _sample(graph, ("61", "62", "63"), ["1", 0], ["2", 0], f"{prefix}_original")
    _sample(graph, ("71", "72", "73"), ["31", 0], ["33", 0], f"{prefix}_probe")
    return graph


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_unlearn_save_reload_apply_lora_loader_and_bake(server, family):
    prefix = f"live_{family}"
    entry = server.run_graph(_unlearn_graph(family, prefix), timeout=1800)
    loras = server.base_dir / "models" / "loras" / "recare"
    (saved,) = sorted(loras.glob(f"{prefix}_0*_.safetensors"))
    (compressed,) = sorted(loras.glob(f"{prefix}_compressed_*_.safetensors"))
    erasure = load_erasure(saved)
    expected_base = {"sd2": "SD20", "sdxl": "KOALA_700M"}[family]
    assert erasure.metadata["base_model"] == expected_base and erasure.increments
    assert not any(".attn2." in key for key in erasure.increments)
    assert any(key.endswith(".lora_down.weight") or ".lora" in key
               for key in safe_open(str(compressed), "pt").keys())
    assert "CARE score" in "\n".join(entry["outputs"]["25"]["text"])
    assert "CARE" in "\n".join(entry["outputs"]["17"]["text"])  # BuildCARESet's report on the family's images
    embedding = server.base_dir / "models" / "embeddings" / f"{prefix}_0.safetensors"
    with safe_open(str(embedding), "pt") as file:
        shapes = {key: tuple(file.get_tensor(key).shape) for key in file.keys()}
    assert shapes == ({"clip_l": (1, 768), "clip_g": (1, 1280)} if family == "sdxl" else {"emb_params": (1, 1024)})

    # The baked checkpoint holds the erased weights (fp16) and the original VAE.
    (baked,) = sorted((server.base_dir / "output" / "checkpoints").glob(f"{prefix}_baked_*.safetensors"))
    checkpoint = server.base_dir / "models" / "checkpoints" / FAMILY_CHECKPOINTS[family]
    with safe_open(str(baked), "pt") as new, safe_open(str(checkpoint), "pt") as old:
        for key, increment in list(erasure.increments.items())[:20]:
            before = old.get_tensor(f"model.{key}").float()
            after = new.get_tensor(f"model.{key}").float()
            np.testing.assert_allclose(after.numpy(), (before + increment.delta(before.shape)).numpy(),
                                       rtol=1e-2, atol=2e-3)
        vae_key = next(k for k in old.keys() if k.startswith("first_stage_model."))
        assert np.array_equal(new.get_tensor(vae_key).numpy(), old.get_tensor(vae_key).numpy())

    erased = _pixels(server.output_files(entry, "23")[0])
    reload_entry = server.run_graph(_reload_graph(family, prefix, saved.name), timeout=1800)
    images = {name: _pixels(server.output_files(reload_entry, node)[0])
              for name, node in (("reapplied", "43"), ("lora_loader", "53"), ("original", "63"), ("probe", "73"))}
    for name in ("reapplied", "lora_loader"):
        diff = np.abs(images[name] - erased)
        assert diff.max() == 0, f"{name}: max pixel difference {diff.max()}, {np.count_nonzero(diff)} values differ"
    assert not np.array_equal(images["original"], erased)
    assert images["probe"].std() > 0
    log = server.log()
    assert f"{prefix}_0 does not exist" not in log and "shape mismatch when trying to apply embedding" not in log
