"""Loading a :class:`~.clip_model.CareClip`: an open_clip architecture (built in, or read from the
``open_clip_config.json`` beside the weights) plus a local weights file (safetensors, or a torch file read with
``weights_only``) or an open_clip pretrained tag; the architectures and tags the pickers offer."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..safe_files import read_json_file, torch_error_text
from .clip_model import CareClip, ClipWeightsError, require_open_clip

CONFIG_FILE_NAME = "open_clip_config.json"
"""Name of the architecture file open_clip writes next to its weights (Hugging Face ``open_clip`` repositories)."""

FROM_CONFIG = "from open_clip_config.json"
"""Architecture value meaning: read the architecture from ``open_clip_config.json`` beside the weights file."""

OPENAI_VIT_B_32_HINT = (
    "For the paper's CLIP (ViT-B-32, OpenAI weights) download 'open_clip_model.safetensors' from "
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai and choose architecture 'ViT-B-32'."
)


def file_fingerprint(path: str | os.PathLike) -> str:
    """``sha256:<first 16 hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def clip_architectures() -> list[str]:
    """open_clip's built-in architectures whose text side uses the CLIP BPE tokenizer (the CARE-set needs it)."""
    return list(_clip_architectures())


@functools.lru_cache(maxsize=1)
def _clip_architectures() -> tuple[str, ...]:
    open_clip = require_open_clip()
    names = []
    for name in open_clip.list_models():
        config = open_clip.get_model_config(name) or {}
        text = config.get("text_cfg", {})
        if not text.get("hf_tokenizer_name") and not text.get("hf_model_name") and "multimodal_cfg" not in config \
                and text.get("vocab_size", 49408) == 49408 and not config.get("custom_text"):
            names.append(name)
    return tuple(names)


def pretrained_tags(arch: str | None = None) -> list[str]:
    """open_clip's pretrained tags (for ``arch``, or over all CLIP-BPE architectures), e.g. ``openai``."""
    open_clip = require_open_clip()
    archs = [arch] if arch else clip_architectures()
    tags: list[str] = []
    for name in archs:
        for tag in open_clip.list_pretrained_tags_by_model(name):
            if tag not in tags:
                tags.append(tag)
    return tags


def _model_config(arch: str, weights_path: Path | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, model config, preprocess overrides) for a built-in architecture or ``open_clip_config.json``."""
    open_clip = require_open_clip()
    if arch == FROM_CONFIG:
        if weights_path is None:
            raise ClipWeightsError(f"Architecture '{FROM_CONFIG}' needs a weights file, not a pretrained name.")
        config_path = weights_path.parent / CONFIG_FILE_NAME
        if not config_path.is_file():
            raise ClipWeightsError(
                f"There is no {CONFIG_FILE_NAME} beside {weights_path.name}. Put the {CONFIG_FILE_NAME} that came "
                f"with the weights into the folder of {weights_path.name}, or choose the architecture by name (e.g. 'ViT-B-32').")
        document = read_json_file(config_path, "open_clip config", ClipWeightsError)
        model_cfg = document.get("model_cfg", document)
        if (not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("text_cfg"), dict)
                or not isinstance(model_cfg.get("vision_cfg"), dict)):
            raise ClipWeightsError(f"{config_path.name} beside {weights_path.name} has no 'text_cfg'/'vision_cfg' "
                                   "objects: it is not an open_clip config.")
        config_hash = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]
        return f"{weights_path.parent.name}-config-{config_hash}", model_cfg, document.get("preprocess_cfg", {})
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ClipWeightsError(
            f"'{arch}' is not an open_clip architecture. Known CLIP-BPE architectures include: "
            f"{', '.join(clip_architectures()[:12])}, ...")
    return arch, model_cfg, {}


def _check_bpe_text(label: str, model_cfg: dict[str, Any]) -> None:
    text = model_cfg.get("text_cfg", {})
    if text.get("hf_tokenizer_name") or text.get("hf_model_name") or model_cfg.get("custom_text") \
            or "multimodal_cfg" in model_cfg or text.get("vocab_size", 49408) != 49408:
        raise ClipWeightsError(
            f"Architecture '{label}' does not use the CLIP BPE tokenizer/text tower that the CARE-set vocabulary "
            f"is built from. Choose an OpenAI-style CLIP such as 'ViT-B-32'.")


def _auto_quick_gelu(label: str, model_cfg: dict[str, Any], tag_cfg: dict[str, Any] | None,
                     weights_path: Path | None) -> bool:
    """OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain architecture names use GELU."""
    if model_cfg.get("quick_gelu") or label.endswith("-quickgelu"):
        return True
    if tag_cfg is not None:
        return bool(tag_cfg.get("quick_gelu", False))
    return weights_path is not None and "openai" in f"{weights_path.parent.name}/{weights_path.name}".lower()


def load_care_clip(arch: str, weights: str | os.PathLike, device: str | torch.device = "cpu",
                   quick_gelu: bool | None = None) -> CareClip:
    """Load a CLIP: ``arch`` is an open_clip architecture (``ViT-B-32``) or :data:`FROM_CONFIG`; ``weights`` a
    local ``.safetensors``/``.bin``/``.pt``/``.pth`` file (read without executing code) or an open_clip pretrained
    tag (``openai``; open_clip downloads it when online). ``quick_gelu=None`` decides automatically: on for
    ``-quickgelu`` architectures, for tags trained with it (``openai``) and for files whose name or folder name
    contains ``openai`` (e.g. ``vit_base_patch32_clip_224.openai/open_clip_model.safetensors``). The identity is
    ``<arch>/<tag>`` or ``<arch>/sha256:<16 hex>``, with ``+quickgelu``/``+gelu`` after the architecture when the
    activation differs from what the architecture (or tag) itself implies."""
    open_clip = require_open_clip()
    weights_text = str(weights).strip()
    if not weights_text:
        raise ClipWeightsError("No CLIP weights given: pick a file from models/open_clip/ or a pretrained name.")
    path = Path(weights_text).expanduser()
    looks_like_file = path.suffix.lower() in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"} or os.sep in weights_text
    weights_path = path if looks_like_file else None
    if weights_path is not None and not weights_path.is_file():
        raise ClipWeightsError(
            f"CLIP weights file not found: {weights_path}. Put an open_clip checkpoint (.safetensors, .bin, .pt) "
            f"into ComfyUI/models/open_clip/ and pick it in the list. {OPENAI_VIT_B_32_HINT}")
    label, model_cfg, preprocess_override = _model_config(arch, weights_path)
    _check_bpe_text(label, model_cfg)
    tag_cfg = None
    if weights_path is None:
        if arch == FROM_CONFIG or weights_text not in open_clip.list_pretrained_tags_by_model(arch):
            known = open_clip.list_pretrained_tags_by_model(arch) if arch != FROM_CONFIG else []
            raise ClipWeightsError(
                f"'{weights_text}' is neither a weights file nor a pretrained name of '{arch}' "
                f"(known: {', '.join(known) or 'none'}). {OPENAI_VIT_B_32_HINT}")
        tag_cfg = open_clip.get_pretrained_cfg(arch, weights_text)
    natural = bool(model_cfg.get("quick_gelu") or label.endswith("-quickgelu")
                   or (tag_cfg is not None and tag_cfg.get("quick_gelu", False)))
    if quick_gelu is None:
        quick_gelu = _auto_quick_gelu(label, model_cfg, tag_cfg, weights_path)
    activation = "" if quick_gelu == natural else ("+quickgelu" if quick_gelu else "+gelu")
    if weights_path is None:
        model = _create_pretrained(open_clip, arch, weights_text, quick_gelu)
        identity = f"{label}{activation}/{weights_text}"
    else:
        model = _create_from_file(open_clip, label, model_cfg, preprocess_override, weights_path, quick_gelu)
        identity = f"{label}{activation}/{file_fingerprint(weights_path)}"
    return CareClip(model, identity, device=device)


def _create_pretrained(open_clip, arch: str, tag: str, quick_gelu: bool) -> torch.nn.Module:
    try:
        return open_clip.create_model(arch, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as error:  # network, hub and cache errors come in many types
        raise ClipWeightsError(
            f"Could not get the '{tag}' weights of {arch} (open_clip downloads them; is this machine offline?): "
            f"{error}. Offline, put the weights file into ComfyUI/models/open_clip/ and pick it in the list. "
            f"{OPENAI_VIT_B_32_HINT}") from error


def _create_from_file(open_clip, label: str, model_cfg: dict[str, Any], preprocess_override: dict[str, Any],
                      weights_path: Path, quick_gelu: bool) -> torch.nn.Module:
    from open_clip.model import CLIP, set_model_preprocess_cfg

    config = {k: v for k, v in model_cfg.items() if k not in ("quick_gelu", "custom_text")}
    try:
        model = CLIP(**config, quick_gelu=quick_gelu)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ClipWeightsError(f"The open_clip config for {weights_path.name} does not describe a CLIP model it "
                               f"can build: {error}.") from error
    preprocess = {"size": model.visual.image_size, "mean": open_clip.OPENAI_DATASET_MEAN,
                  "std": open_clip.OPENAI_DATASET_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    preprocess.update(preprocess_override)
    set_model_preprocess_cfg(model, preprocess)
    state = _read_state_dict(weights_path)
    _check_fit(model, state, label, weights_path)
    model.load_state_dict(state, strict=True)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, read without executing anything from it."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as error:  # unpickling, TorchScript, corrupt headers: many types
        if "TorchScript" in str(error):
            raise ClipWeightsError(
                f"{path.name} is a TorchScript archive (OpenAI's original release format). It is not loaded "
                f"because loading it would execute code from the file. {OPENAI_VIT_B_32_HINT}") from error
        raise ClipWeightsError(
            f"Could not read CLIP weights from {path.name}: {torch_error_text(error)}. Only plain weight files are "
            f"accepted (.safetensors, or .bin/.pt holding tensors only).") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipWeightsError(f"{path.name} does not hold a CLIP state dict (name -> tensor).")
    return state


def _check_fit(model: torch.nn.Module, state: dict[str, torch.Tensor], label: str, path: Path) -> None:
    """Raise a plain-language :class:`ClipWeightsError` when ``state`` does not fit ``model`` key for key."""
    expected = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != expected["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        problems = [f"{len(wrong)} tensors of another shape (e.g. {', '.join(wrong[:2])})" if wrong else "",
                    f"{len(missing)} missing (e.g. {', '.join(missing[:3])})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})" if unexpected else ""]
        raise ClipWeightsError(
            f"{path.name} does not fit architecture '{label}': " + "; ".join(p for p in problems if p)
            + ". Choose the architecture the file was made for, or put the matching file into "
              f"ComfyUI/models/open_clip/. {OPENAI_VIT_B_32_HINT}")
