"""Erasure files: safetensors that ComfyUI's stock LoRA loaders also read.

Layout (``<prefix>`` is a weight key without its ``.weight`` / ``.bias`` ending, e.g.
``diffusion_model.input_blocks.1.1.proj_in``):

* full weight delta  -> ``<prefix>.diff``; full bias delta -> ``<prefix>.diff_b``
* LoRA increment      -> ``<prefix>.lora_down.weight``, ``<prefix>.lora_up.weight``, ``<prefix>.alpha``
* adversarial tokens  -> ``recare.embedding.<name>`` (``(n, token_dim)``), ignored by LoRA loaders
* metadata            -> the safetensors header: ``recare.format``, ``recare.concept`` and ``recare.metadata``
  (a JSON object: erased concept, CARE-set, training settings, base model, pack version, embedding names).

This is the form ``comfy.lora.load_lora`` accepts for the keys of ``comfy.lora.model_lora_keys_unet``, so a saved
erasure also loads in ``LoraLoaderModelOnly``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .erasure import Erasure, WeightIncrement

FORMAT = "recare-erasure/1"
EMBEDDING_PREFIX = "recare.embedding."
_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha", ".diff_b", ".diff")


class ErasureFileError(ValueError):
    """A file is not a readable ReCARE erasure."""


def _split_key(key: str) -> tuple[str, str]:
    """``diffusion_model.x.weight`` -> (``diffusion_model.x``, ``weight``)."""
    prefix, _, kind = key.rpartition(".")
    if kind not in ("weight", "bias") or not prefix:
        raise ErasureFileError(f"Increment key '{key}' does not end in .weight or .bias.")
    return prefix, kind


def erasure_to_state_dict(erasure: Erasure) -> dict[str, torch.Tensor]:
    """The tensors of the file, keyed as ComfyUI's LoRA loader expects."""
    tensors: dict[str, torch.Tensor] = {}
    for key, increment in erasure.increments.items():
        prefix, kind = _split_key(key)
        if increment.is_lora:
            if kind != "weight":
                raise ErasureFileError(f"A LoRA increment must be on a weight, not '{key}'.")
            tensors[f"{prefix}.lora_down.weight"] = increment.down
            tensors[f"{prefix}.lora_up.weight"] = increment.up
            alpha = increment.alpha if increment.alpha is not None else float(increment.rank)
            tensors[f"{prefix}.alpha"] = torch.tensor(float(alpha))
        else:
            tensors[f"{prefix}.diff" if kind == "weight" else f"{prefix}.diff_b"] = increment.full
    for name, embedding in erasure.adversarial_embeddings.items():
        tensors[EMBEDDING_PREFIX + name] = embedding.reshape(-1, embedding.shape[-1])
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def erasure_from_state_dict(tensors: dict[str, torch.Tensor], concept: str, metadata: dict[str, Any]) -> Erasure:
    """Inverse of :func:`erasure_to_state_dict`."""
    increments: dict[str, WeightIncrement] = {}
    embeddings: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith(EMBEDDING_PREFIX):
            embeddings[key[len(EMBEDDING_PREFIX):]] = tensor
            continue
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise ErasureFileError(f"Unexpected tensor '{key}' in an erasure file.")
        prefix = key[: -len(suffix)]
        if suffix == ".diff":
            increments[f"{prefix}.weight"] = WeightIncrement(full=tensor)
        elif suffix == ".diff_b":
            increments[f"{prefix}.bias"] = WeightIncrement(full=tensor)
        else:
            lora.setdefault(prefix, {})[suffix] = tensor
    for prefix, parts in lora.items():
        if ".lora_down.weight" not in parts or ".lora_up.weight" not in parts:
            raise ErasureFileError(f"LoRA increment '{prefix}' lacks its down or up matrix.")
        alpha = parts.get(".alpha")
        increments[f"{prefix}.weight"] = WeightIncrement(
            down=parts[".lora_down.weight"], up=parts[".lora_up.weight"],
            alpha=None if alpha is None else float(alpha))
    return Erasure(concept=concept, increments=increments, metadata=metadata, adversarial_embeddings=embeddings)


def save_erasure(erasure: Erasure, path: str | os.PathLike) -> Path:
    """Write ``erasure`` to ``path`` (atomically). Refuses to overwrite an existing file."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; erasure files are never overwritten.")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"recare.format": FORMAT, "recare.concept": erasure.concept,
              "recare.metadata": json.dumps(erasure.metadata, default=_json_default)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(erasure_to_state_dict(erasure), str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def load_erasure(path: str | os.PathLike) -> Erasure:
    """Read a file written by :func:`save_erasure` (or a plain ``.diff`` / LoRA safetensors, without metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ErasureFileError(f"{path.name} is not a .safetensors erasure file.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ErasureFileError(f"Cannot read {path.name}: {error}") from error
    metadata = json.loads(header.get("recare.metadata", "{}"))
    concept = header.get("recare.concept") or metadata.get("erased_concept") or path.stem
    if not tensors:
        raise ErasureFileError(f"{path.name} holds no tensors.")
    return erasure_from_state_dict(tensors, concept, metadata)


def next_free_path(directory: str | os.PathLike, prefix: str, extension: str = ".safetensors") -> Path:
    """``<prefix>_00001_<ext>``-style numbered name (as ComfyUI's savers), one past the highest existing."""
    directory = Path(directory)
    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
    folder = (directory / subfolder).resolve()
    if not str(folder).startswith(str(directory.resolve())):
        raise ValueError(f"filename_prefix '{prefix}' points outside {directory}.")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d{5})_" + re.escape(extension) + "$")
    numbers = [int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name))]
    return folder / f"{stem}_{max(numbers, default=0) + 1:05d}_{extension}"


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
