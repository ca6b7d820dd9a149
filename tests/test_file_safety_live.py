"""Hostile file names and bad input against a live ComfyUI with the pack, as a user on a shared server would send
them: nothing is read or written outside the pack's folders, every refusal is a ComfyUI error naming the input or
file, the server stays up, the input model is untouched and nothing partial is left on disk.

Whether a combo value outside its option list reaches the node depends on the ComfyUI version (0.3.64 does not
check V3 combos; newer versions refuse them while validating the graph), so those tests accept either refusal;
the in-process tests at the end call the nodes directly and check the pack's own refusal on every version."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from comfy_harness import GraphError, unchanged
from test_unlearn_node import _unlearn_graph as unlearn_graph
from recare_core.careset.clip_loading import FROM_CONFIG
from tiny_models import save_tiny_care_clip
from recare_core.erasure.increments import Erasure, WeightIncrement
from recare_core.erasure.io import save_erasure

pytestmark = pytest.mark.comfy


_CARE_SET = {"secretword_care_word": ["A secretword"], "secretword_care_word_photo": ["A photo of secretword"]}
_PACK_REFUSAL = "not one of the options"


def _refusals(server) -> tuple[str, ...]:
    """What refuses a combo value outside its list: ComfyUI itself from 0.33 on (while validating the graph) or
    the pack; on older ComfyUI (0.3.64 checks no V3 combo) only the pack's own check can."""
    version = server.get_json("/system_stats")["system"].get("comfyui_version", "0")
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return (_PACK_REFUSAL,) if major_minor < (0, 33) else (_PACK_REFUSAL, "Value not in list", "not in list")
_TINY_CLIP = "hostile_clip/open_clip_model.safetensors"


def _erasure(model, concept: str = "hostile") -> Erasure:
    state = model.model_state_dict()
    key = next(k for k in state if k.startswith("diffusion_model.") and k.endswith(".weight") and state[k].ndim >= 2)
    return Erasure(concept, {key: WeightIncrement(full=0.01 * torch.ones(state[key].shape))},
                   metadata={"erased_concept": concept})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else []


@pytest.fixture(scope="module")
def server(comfy_server, comfy_models, tmp_path_factory):
    """The shared server, a source erasure in models/loras, a tiny CLIP, and a folder outside ComfyUI."""
    base = comfy_server.base_dir
    save_erasure(_erasure(comfy_models["model"]), base / "models" / "loras" / "hostile_source.safetensors")
    save_tiny_care_clip(base / "models" / "open_clip" / "hostile_clip", seed=0)
    outside = tmp_path_factory.mktemp("outside_comfyui")
    (outside / "careset.json").write_text(json.dumps(_CARE_SET), encoding="utf-8")
    (base / "input" / "hostile_valid.json").write_text(json.dumps(_CARE_SET), encoding="utf-8")
    comfy_server.outside = outside
    return comfy_server


def _save_erasure_graph(prefix: str) -> dict:
    return {"1": {"class_type": "LoadErasure", "inputs": {"name": "hostile_source.safetensors"}},
            "2": {"class_type": "SaveErasure", "inputs": {"erasure": ["1", 0], "filename_prefix": prefix}}}


def _shown(node: str, output: int = 1) -> dict:
    """A PreviewAny output node showing ``output`` of ``node`` (a graph needs an output node to run)."""
    return {"99": {"class_type": "PreviewAny", "inputs": {"source": [node, output]}}}


def _assert_alive(server) -> None:
    assert server.get_json("/system_stats")["system"], "the server stopped answering"


def test_save_erasure_refuses_every_escape_and_writes_nothing_outside(server):
    base = server.base_dir / "models"
    sibling = base / "loras_evil"  # a sibling folder whose name starts like models/loras
    sibling.mkdir(exist_ok=True)
    (base / "loras" / "escape").symlink_to(server.outside, target_is_directory=True)
    loras_before = _files(base / "loras")
    cases = {"../loras_evil/x": "goes up a folder", "../../../../x": "goes up a folder",
             f"{sibling}/x": "absolute path", "escape/x": "leads outside models/loras",
             "recare/a\x00b": "NUL byte", "": "is empty", "x" * 300: "longer than",
             "recare/.hidden": "starting with '.'", "C:\\x": "drive", "NUL": "reserved device name",
             "recare/lone\ud800": "surrogate", "a/" * 40 + "x": "folder levels"}
    for prefix, reason in cases.items():
        with pytest.raises(GraphError, match="filename_prefix") as refused:
            server.run_graph(_save_erasure_graph(prefix))
        assert reason in str(refused.value), prefix
    assert _files(sibling) == [] and sorted(p.name for p in _files(server.outside)) == ["careset.json"]
    assert _files(base / "loras") == loras_before
    _assert_alive(server)


def test_user_files_with_temporary_looking_names_and_huge_counters_survive(server):
    recare = server.base_dir / "models" / "loras" / "recare"
    recare.mkdir(parents=True, exist_ok=True)
    user_tmp = recare / "tmpcase_00001_.safetensors.tmp"
    user_tmp.write_text("the user's own file")
    (recare / "big_99999_.safetensors").write_bytes(b"placeholder")
    server.run_graph(_save_erasure_graph("recare/tmpcase"))
    assert user_tmp.read_text() == "the user's own file"
    assert (recare / "tmpcase_00001_.safetensors").stat().st_size > 100
    # The second prefix differs in spelling only, so that ComfyUI does not answer from its cache.
    for prefix, expected in (("recare/big", "big_100000_.safetensors"), ("recare/./big", "big_100001_.safetensors")):
        entry = server.run_graph(_save_erasure_graph(prefix))
        assert entry["outputs"]["2"]["text"] == [f"Saved recare/{expected} to models/loras"]
    assert not [p for p in recare.iterdir() if p.name.startswith(".recare-")]  # no temporary left behind


def test_load_care_set_reads_only_listed_files_inside_its_folders(server):
    outside_file = server.outside / "careset.json"
    for value in (str(outside_file), f"../../../../{outside_file}", "../careset.json", "x\x00.json"):
        with pytest.raises(GraphError) as refused:
            server.run_graph({"1": {"class_type": "LoadCARESet", "inputs": {"file": value}}, **_shown("1")})
        assert any(text in str(refused.value) for text in _refusals(server)), str(refused.value)[-500:]
        assert "secretword" not in str(refused.value)
    link = server.base_dir / "input" / "linked_careset.json"  # listed (it is in input/), but leads outside
    link.symlink_to(outside_file)
    with pytest.raises(GraphError, match="not inside input once links are followed") as refused:
        server.run_graph({"1": {"class_type": "LoadCARESet", "inputs": {"file": "linked_careset.json"}},
                          **_shown("1")})
    assert "secretword" not in str(refused.value)
    _assert_alive(server)


def test_load_care_clip_never_loads_or_probes_an_arbitrary_path(server):
    messages = []
    for value in ("/etc/hostname", "/no/such/file.safetensors", str(server.outside / "careset.json")):
        graph = {"1": {"class_type": "LoadCAREClip", "inputs": {
            "weights": value, "architecture": FROM_CONFIG, "quick_gelu": "auto", "device": "cpu"}},
                 "2": {"class_type": "CAREScore", "inputs": {
                     "images": ["3", 0], "care_clip": ["1", 0], "care_concept": "person", "labels": "",
                     "use_template": True}},
                 "3": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
                 **_shown("2", 2)}
        with pytest.raises(GraphError) as refused:
            server.run_graph(graph)
        text = str(refused.value)
        assert any(t in text for t in _refusals(server)) and "weights_only" not in text, text[-500:]
        messages.append(text.replace(value, "<value>").split("Traceback")[0])
    assert len(set(messages)) == 1, "the error differs between existing and missing paths"


def test_load_erasure_refuses_links_out_of_loras_and_names_bad_files(server):
    loras = server.base_dir / "models" / "loras"
    save_erasure(Erasure("outside", {"diffusion_model.x.weight": WeightIncrement(full=torch.zeros(2, 2))}),
                 server.outside / "outside.safetensors")
    (loras / "linked_outside.safetensors").symlink_to(server.outside / "outside.safetensors")
    from safetensors.torch import save_file

    save_file({"diffusion_model.x.diff": torch.zeros(2)}, str(loras / "bad_metadata.safetensors"),
              metadata={"recare.format": "recare-erasure/1", "recare.concept": "x", "recare.metadata": "[1]"})
    save_file({"diffusion_model.x.lora_down.weight": torch.zeros(4, 8),
               "diffusion_model.x.lora_up.weight": torch.zeros(8, 3)}, str(loras / "bad_shape.safetensors"))
    (loras / "folder.safetensors").mkdir()
    cases = {"linked_outside.safetensors": "not inside models/loras once links are followed",
             "bad_metadata.safetensors": "recare.metadata entry of bad_metadata.safetensors is a list in JSON",
             "bad_shape.safetensors": "bad_shape.safetensors: the LoRA increment of layer 'diffusion_model.x'",
             "folder.safetensors": "|".join(_refusals(server)),
             "../../models/loras/hostile_source.safetensors": "|".join(_refusals(server))}
    for name, message in cases.items():
        with pytest.raises(GraphError, match=message):
            server.run_graph({"1": {"class_type": "LoadErasure", "inputs": {"name": name}}, **_shown("1")})
    _assert_alive(server)


def test_unknown_combo_values_are_refused(server):
    graph = {"3": {"class_type": "LoadCARESet", "inputs": {"file": "hostile_valid.json"}},
             "4": {"class_type": "SaveCARESet", "inputs": {"care_set": ["3", 0], "filename_prefix": "combo",
                                                           "format": "../../yaml"}}}
    with pytest.raises(GraphError) as refused:
        server.run_graph(graph)
    assert any(text in str(refused.value) for text in _refusals(server)), str(refused.value)[-500:]
    assert not list((server.base_dir / "output").rglob("combo*"))


def _unlearn_graph(**inputs) -> dict:
    """test_unlearn_node's ReCAREUnlearn graph on this module's CARE-set file."""
    graph = unlearn_graph("hostile_adv", **inputs)
    graph["20"]["inputs"]["file"] = "hostile_careset.json"
    return graph


def test_prompts_longer_than_clip_are_refused_before_training(server):
    (server.base_dir / "input" / "hostile_careset.json").write_text(json.dumps(
        {"x_care_word": ["A person", "A " + "very " * 80 + "long word"], "x_care_word_photo": ["A photo of person"]}))
    embeddings = server.base_dir / "models" / "embeddings"
    before = _files(embeddings) + _files(server.base_dir / "models" / "loras")
    with pytest.raises(GraphError, match=r"erase_concept 'nudity nudity .* is \d+ tokens long.*at most 75"):
        server.run_graph(_unlearn_graph(erase_concept="nudity " * 80))
    with pytest.raises(GraphError, match=r"The CARE-set's anchor prompt 'A very very .* is \d+ tokens long"):
        server.run_graph(_unlearn_graph())
    assert _files(embeddings) + _files(server.base_dir / "models" / "loras") == before
    _assert_alive(server)


# -- the pack's own checks, whatever the ComfyUI version validates ----------------------------------------------
@pytest.fixture(scope="module")
def nodes(recare_pack):
    return {name: importlib.import_module(f"comfyui_recare.nodes.{name}")
            for name in ("careset_nodes", "clip_nodes", "erasure_nodes", "unlearn_nodes", "score_nodes")}


def test_every_file_combo_is_checked_by_the_pack(nodes):
    from comfyui_recare.nodes.file_inputs import InvalidChoiceError

    with pytest.raises(InvalidChoiceError, match=r"file: '/etc/passwd' is not one of the options"):
        nodes["careset_nodes"].LoadCARESet.execute(file="/etc/passwd")
    with pytest.raises(InvalidChoiceError, match="weights: '/etc/passwd' is not one of the options"):
        nodes["clip_nodes"].LoadCAREClip.execute(weights="/etc/passwd", architecture="ViT-B-32",
                                                 quick_gelu="auto", device="cpu")
    with pytest.raises(InvalidChoiceError, match="architecture"):
        nodes["clip_nodes"].LoadCAREClip.execute(weights="openai", architecture="../x", quick_gelu="auto",
                                                 device="cpu")
    with pytest.raises(InvalidChoiceError, match=r"name: '\.\./\.\./x\.safetensors' is not one of the options"):
        nodes["erasure_nodes"].LoadErasure.execute(name="../../x.safetensors")
    assert nodes["careset_nodes"].LoadCARESet.fingerprint_inputs(file="/etc/passwd") == "not an option"


def test_unlearn_refuses_bad_inputs_before_touching_the_model(nodes, comfy_models):
    from comfyui_recare.nodes.file_inputs import InvalidChoiceError
    from comfyui_recare.nodes.prompt_limits import PromptTooLongError
    from comfyui_recare.recare_core.careset.build import CareSet
    from comfyui_recare.recare_core.safe_files import UnsafePathError

    model = comfy_models["model"]
    before = {k: v.clone() for k, v in model.model_state_dict().items() if k.startswith("diffusion_model.out")}
    inputs = {name: value for name, value in _unlearn_graph()["21"]["inputs"].items()
              if name not in ("model", "clip", "vae", "target_images", "care_set")}
    care_set = CareSet.from_words("x", "object", ["person"])
    run = nodes["unlearn_nodes"].ReCAREUnlearn.execute
    common = dict(model=model, clip=comfy_models["clip"], vae=comfy_models["vae"],
                  target_images=torch.rand(1, 64, 64, 3), care_set=care_set)
    with pytest.raises(PromptTooLongError, match=r"initializer_token .* is 72 tokens long.*at most \d+ tokens"):
        run(**common, **{**inputs, "initializer_token": "person " * 72})
    with pytest.raises(PromptTooLongError, match="erase_concept"):
        run(**common, **{**inputs, "erase_concept": "a " * 76})
    with pytest.raises(UnsafePathError, match="embedding_name .* longer than"):
        run(**common, **{**inputs, "embedding_name": "e" * 300})
    for name in ("concept_type", "preset", "train_method", "update"):
        with pytest.raises(InvalidChoiceError, match=name):
            run(**common, **{**inputs, name: "../evil"})
    assert not model.patches
    for key, value in model.model_state_dict().items():
        if key in before:
            assert unchanged(value, before[key]), key


def test_care_score_and_build_refuse_labels_longer_than_clip(nodes):
    from comfyui_recare.recare_core.careset.clip_model import CareClipInputError as PackCareClipInputError
    from recare_core.careset.clip_model import CareClipInputError as CoreCareClipInputError
    from tiny_models import build_tiny_care_clip

    # The tiny CLIP is built from this checkout's recare_core, the node from the pack's import of it: either
    # package's error class may be the one raised.
    CareClipInputError = (PackCareClipInputError, CoreCareClipInputError)
    clip = build_tiny_care_clip(0)
    images = torch.rand(2, 32, 32, 3)
    score = nodes["score_nodes"].CAREScore.execute
    with pytest.raises(CareClipInputError, match="A label in 'labels'"):
        score(images=images, care_clip=clip, care_concept="person", labels="dog\n" + "cat " * 80,
              use_template=True)
    with pytest.raises(CareClipInputError, match="care_concept"):
        score(images=images, care_clip=clip, care_concept="person " * 74, labels="", use_template=True)
    with pytest.raises(CareClipInputError, match="reference_word"):
        nodes["careset_nodes"].BuildCARESet.execute(
            images=images, care_clip=clip, reference_word="nude " * 90, concept_type="object", top_k_per_image=5,
            top_n_tokens=10, n_clusters=2, k_each_side=0, alpha=0.01, min_cluster_size=2, seed=0,
            word_hygiene=True)


def test_mismatched_lora_names_the_layer_when_applied(nodes, comfy_models):
    from comfyui_recare.nodes.erasure_patch import ErasureMismatchError
    from comfyui_recare.recare_core.erasure.increments import Erasure, WeightIncrement

    model = comfy_models["model"]
    state = model.model_state_dict()
    key = next(k for k in state if k.endswith(".weight") and state[k].ndim == 4)
    out_features = state[key].shape[0]
    wrong = Erasure("x", {key: WeightIncrement(down=torch.zeros(2, 5), up=torch.zeros(out_features, 2))})
    with pytest.raises(ErasureMismatchError, match=re.escape(key) + ": a LoRA of up .* cannot form a weight of shape"):
        nodes["erasure_nodes"].ApplyErasedUNet.execute(model=model, erasure=wrong, strength=1.0)
    assert not model.patches


class _RunsCode:
    def __reduce__(self):
        return os.system, ("true",)


def test_care_clip_file_with_pickled_code_is_refused_without_unsafe_advice(nodes, server):
    comfy_server = server
    folder = comfy_server.base_dir / "models" / "open_clip" / "evil_clip"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"x": _RunsCode()}, folder / "open_clip_model.bin")
    shutil.copy(comfy_server.base_dir / "models" / "open_clip" / "hostile_clip" / "open_clip_config.json", folder)
    import folder_paths

    paths, _ = folder_paths.folder_names_and_paths["open_clip"]
    root = str(comfy_server.base_dir / "models" / "open_clip")
    paths.append(root)
    try:
        with pytest.raises(RuntimeError) as refused:
            nodes["clip_nodes"].LoadCAREClip.execute(weights="evil_clip/open_clip_model.bin",
                                                     architecture=FROM_CONFIG, quick_gelu="auto", device="cpu")
    finally:
        paths.remove(root)
    text = str(refused.value)
    assert "open_clip_model.bin" in text and "system" in text
    assert "weights_only" not in text and "trust" not in text
