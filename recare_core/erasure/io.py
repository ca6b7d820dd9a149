"""Erasure files: safetensors that ComfyUI's stock LoRA loaders also read.

Layout (``<prefix>`` is a weight key without its ``.weight`` / ``.bias`` ending, e.g.
``diffusion_model.input_blocks.1.1.proj_in``):

* full weight delta  -> ``<prefix>.diff``; full bias delta -> ``<prefix>.diff_b``
* LoRA increment      -> ``<prefix>.lora_down.weight``, ``<prefix>.lora_up.weight``, ``<prefix>.alpha``
* adversarial tokens  -> ``recare.embedding.<name>`` (``(n, token_dim)``), ignored by LoRA loaders
* metadata            -> the safetensors header (all values strings): ``recare.format``, ``recare.concept``,
  ``recare.pack_version``, ``recare.embeddings`` (JSON list of the adversarial embeddings' names) and
  ``recare.metadata`` (a JSON object: erased concept, CARE-set, training settings, base model, pack version, ...).

This is the form ``comfy.lora.load_lora`` accepts for the keys of ``comfy.lora.model_lora_keys_unet``, so a saved
erasure also loads in ``LoraLoaderModelOnly`` (which logs the ``recare.embedding.*`` tensors as not loaded and
otherwise ignores them). The adversarial embeddings live inside the erasure file so that it travels as one
artifact; ReCAREUnlearn also writes each one as a standard textual-inversion file to ``models/embeddings``.

Besides its own files, :func:`load_erasure` imports a released full diffusers-format UNet (the paper's
``ReCARE-Diffusers-UNet.pt``, or a ``diffusion_pytorch_model.safetensors``) as an :class:`Erasure` whose
``diffusers_unet`` holds the whole weights; ``.pt``/``.pth``/``.bin``/``.ckpt`` files are read weights-only
and refused when they contain pickled code.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__ as PACK_VERSION
from ..safe_files import (
    parse_json_object,
    require_regular_file,
    torch_error_text,
    write_new_file,
    write_numbered_file,
)
from .increments import Erasure, IncrementShapeError, WeightIncrement

FORMAT = "recare-erasure/1"
EMBEDDING_PREFIX = "recare.embedding."
TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
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
    erasure.require_increments("write it as a LoRA-style file")
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


def erasure_to_lora_model(erasure: Erasure) -> dict[str, torch.Tensor]:
    """ComfyUI's ``LORA_MODEL`` value (what ``TrainLoraNode`` returns and ``SaveLoRA`` / ``LoraModelLoader``
    accept): the weight tensors of :func:`erasure_to_state_dict`, without the adversarial embeddings."""
    return {k: v for k, v in erasure_to_state_dict(erasure).items() if not k.startswith(EMBEDDING_PREFIX)}


def erasure_from_state_dict(tensors: dict[str, torch.Tensor], concept: str, metadata: dict[str, Any],
                            source: str = "the erasure file") -> Erasure:
    """Inverse of :func:`erasure_to_state_dict`; raises :class:`ErasureFileError` naming ``source`` and the
    layer for a tensor that is not an increment, a LoRA pair that lacks a half, or increments of a wrong shape."""
    increments: dict[str, WeightIncrement] = {}
    embeddings: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith(EMBEDDING_PREFIX):
            if tensor.dim() != 2 or not tensor.is_floating_point():
                raise ErasureFileError(f"{source}: the adversarial embedding '{key}' has shape "
                                       f"{tuple(tensor.shape)}; it must be (tokens, width) floats.")
            embeddings[key[len(EMBEDDING_PREFIX):]] = tensor
            continue
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise ErasureFileError(f"{source}: unexpected tensor '{key}' (an erasure holds only .diff, .diff_b, "
                                   ".lora_down.weight, .lora_up.weight and .alpha tensors).")
        if not tensor.is_floating_point():
            raise ErasureFileError(f"{source}: '{key}' holds {tensor.dtype} values, not floating-point ones.")
        prefix = key[: -len(suffix)]
        if suffix == ".diff":
            increments[f"{prefix}.weight"] = WeightIncrement(full=tensor)
        elif suffix == ".diff_b":
            increments[f"{prefix}.bias"] = WeightIncrement(full=tensor)
        else:
            lora.setdefault(prefix, {})[suffix] = tensor
    for prefix, parts in lora.items():
        if ".lora_down.weight" not in parts or ".lora_up.weight" not in parts:
            raise ErasureFileError(f"{source}: the LoRA increment of layer '{prefix}' lacks its down or up matrix.")
        alpha = parts.get(".alpha")
        if alpha is not None and alpha.numel() != 1:
            raise ErasureFileError(f"{source}: '{prefix}.alpha' holds {alpha.numel()} values instead of one.")
        try:
            increments[f"{prefix}.weight"] = WeightIncrement(
                down=parts[".lora_down.weight"], up=parts[".lora_up.weight"],
                alpha=None if alpha is None else float(alpha))
        except IncrementShapeError as error:
            raise ErasureFileError(f"{source}: the LoRA increment of layer '{prefix}' is malformed: {error}") \
                from error
    return Erasure(concept=concept, increments=increments, metadata=metadata, adversarial_embeddings=embeddings)


def _writer(erasure: Erasure):
    """A :data:`~recare_core.safe_files.writing.Writer` that writes ``erasure`` as a safetensors file."""
    from safetensors.torch import save_file

    tensors = erasure_to_state_dict(erasure)
    header = {"recare.format": FORMAT, "recare.concept": erasure.concept, "recare.pack_version": PACK_VERSION,
              "recare.embeddings": json.dumps(sorted(erasure.adversarial_embeddings)),
              "recare.metadata": json.dumps(erasure.metadata, default=_json_default)}
    return lambda temporary: save_file(tensors, str(temporary), metadata=header)


def save_erasure(erasure: Erasure, path: str | os.PathLike) -> Path:
    """Write ``erasure`` to ``path`` (a new file, written whole or not at all); raises FileExistsError when the
    name is taken: erasure files are never overwritten. The folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_new_file(path, _writer(erasure))


def save_numbered_erasure(erasure: Erasure, root: str | os.PathLike, prefix: str, what: str = "filename_prefix",
                          label: str | None = None, plain_first: bool = False) -> Path:
    """Write ``erasure`` as ``<root>/<prefix>_00001_.safetensors`` (the next free number; ``prefix`` may name
    subfolders and must stay inside ``root``, see :mod:`recare_core.safe_files`)."""
    suffix = ".safetensors" if plain_first else "_.safetensors"
    return write_numbered_file(root, prefix, suffix, _writer(erasure), what, label, plain_first=plain_first)


def load_erasure(path: str | os.PathLike) -> Erasure:
    """Read a file written by :func:`save_erasure` (or a plain ``.diff`` / LoRA safetensors, without metadata),
    or import a full diffusers-format UNet (``.safetensors``, or weights-only ``.pt``/``.pth``/``.bin``/``.ckpt``).
    Every problem is an :class:`ErasureFileError` naming the file (and the layer, for a malformed increment)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() in TORCH_EXTENSIONS:
        return erasure_from_diffusers_unet(load_weights_only(path), path.name)
    if path.suffix.lower() != ".safetensors":
        raise ErasureFileError(
            f"{path.name} is not an erasure file: use a .safetensors erasure or a diffusers UNet "
            f"({', '.join(TORCH_EXTENSIONS)} or .safetensors).")
    require_regular_file(path, "erasure file", ErasureFileError)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ErasureFileError(f"Cannot read {path.name}: it is not a valid safetensors file "
                               f"({torch_error_text(error)}).") from error
    if not tensors:
        raise ErasureFileError(f"{path.name} holds no tensors.")
    if "recare.format" not in header and _is_diffusers_unet(tensors):
        return erasure_from_diffusers_unet(tensors, path.name)
    concept, metadata = _concept_and_metadata(header, path.name)
    return erasure_from_state_dict(tensors, concept or path.stem, metadata, source=path.name)


def _concept_and_metadata(header: dict[str, str], source: str) -> tuple[str | None, dict[str, Any]]:
    """The erased concept and the metadata object of a file's header; for a ReCARE file (``recare.format``)
    both must be there."""
    metadata = parse_json_object(header["recare.metadata"], source, "The recare.metadata entry",
                                 ErasureFileError) if "recare.metadata" in header else {}
    concept = header.get("recare.concept") or metadata.get("erased_concept")
    if concept is not None and (not isinstance(concept, str) or not concept.strip()):
        raise ErasureFileError(f"{source} names its erased concept as {concept!r}, which is not a word or phrase.")
    if "recare.format" in header:
        if header["recare.format"] != FORMAT:
            raise ErasureFileError(f"{source} is in the format {header['recare.format']!r}, which this version "
                                   f"of the pack does not read (it reads {FORMAT!r}); update the pack.")
        if concept is None:
            raise ErasureFileError(f"{source} is a ReCARE erasure without its erased concept (no recare.concept "
                                   "in its header and no erased_concept in its metadata): the file is damaged.")
    return concept, metadata


def load_weights_only(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A tensor state dict from a ``torch.save`` file, unpickled with ``weights_only=True``: a file that would
    need to run code (or build any object other than tensors and plain containers) is refused, never executed."""
    path = require_regular_file(path, "weights file", ErasureFileError)
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise ErasureFileError(
            f"Refused to load {path.name}: it is not a plain weights file. It contains pickled Python objects "
            "other than tensors, which could run code on this computer, so it was not loaded. Use a "
            ".safetensors file, or a UNet state dict saved with torch.save(unet.state_dict(), ...)."
            + f" (Refused: {torch_error_text(error)})"
        ) from error
    except Exception as error:  # truncated or foreign files: torch raises RuntimeError, EOFError, zip errors ...
        raise ErasureFileError(f"Cannot read {path.name}: {torch_error_text(error)}") from error
    return _unwrap_state_dict(loaded, path.name)


def erasure_from_diffusers_unet(state: dict[str, torch.Tensor], source: str) -> Erasure:
    """An erasure holding whole diffusers-format UNet weights; its increments are computed against a base model
    when it is applied."""
    if not _is_diffusers_unet(state):
        examples = ", ".join(list(state)[:4])
        raise ErasureFileError(
            f"{source} is not a diffusers-format UNet (no 'conv_in.weight' and 'down_blocks.*' weights; "
            f"it starts with: {examples}).")
    concept = Path(source).stem
    metadata = {"erased_concept": concept, "source_file": source, "source_format": "diffusers UNet (full weights)"}
    return Erasure(concept=concept, increments={}, metadata=metadata, diffusers_unet=state)


def _unwrap_state_dict(loaded: Any, source: str) -> dict[str, torch.Tensor]:
    """Accept ``{"state_dict": sd}`` / ``{"unet": sd}`` wrappers and ``module.`` / ``unet.`` key prefixes."""
    for wrapper in ("state_dict", "unet"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded:
        raise ErasureFileError(f"{source} holds a {type(loaded).__name__}, not a UNet state dict.")
    not_tensors = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ErasureFileError(f"{source} is not a plain state dict: {', '.join(not_tensors[:4])} are not tensors.")
    for prefix in ("module.", "unet."):
        if all(str(k).startswith(prefix) for k in loaded):
            loaded = {k[len(prefix):]: v for k, v in loaded.items()}
    return loaded


def _is_diffusers_unet(tensors: dict[str, torch.Tensor]) -> bool:
    return "conv_in.weight" in tensors and any(k.startswith("down_blocks.") for k in tensors)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
