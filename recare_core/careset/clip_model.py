"""A joint image-text CLIP (open_clip) for building the CARE-set and for the CARE score.

:class:`CareClip` wraps an open_clip model, its CLIP BPE tokenizer (shipped inside open_clip, so it works offline)
and the image preprocessing, done in torch on ComfyUI ``IMAGE`` tensors. Text goes through the text tower with the
shortest context that holds the prompt: the tower is causal, so the feature read at the end-of-text token does not
depend on the padding after it, and a one-word prompt needs 3 positions instead of 77.

Loaders: :func:`load_care_clip` (an open_clip architecture plus a local weights file or an open_clip pretrained
tag) and :func:`build_tiny_care_clip` (a tiny randomly initialised model for tests; no download).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..safe_files import quoted, read_json_file, torch_error_text

CONFIG_FILE_NAME = "open_clip_config.json"
"""Name of the architecture file open_clip writes next to its weights (Hugging Face ``open_clip`` repositories)."""

FROM_CONFIG = "from open_clip_config.json"
"""Architecture value meaning: read the architecture from ``open_clip_config.json`` beside the weights file."""

OPENAI_VIT_B_32_HINT = (
    "For the paper's CLIP (ViT-B-32, OpenAI weights) download 'open_clip_model.safetensors' from "
    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai and choose architecture 'ViT-B-32'."
)


class ClipWeightsError(RuntimeError):
    """A CLIP could not be loaded: unknown architecture, missing file, or a file that does not fit."""


class CareClipInputError(ValueError):
    """Images or texts given to the CLIP are unusable."""


def check_image_batch(images: torch.Tensor) -> None:
    """Raise :class:`CareClipInputError` unless ``images`` is a non-empty, finite ``(B, H, W, 1|3|4)`` batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise CareClipInputError("Expected an image batch of shape (batch, height, width, channels).")
    if images.shape[0] == 0:
        raise CareClipInputError("The image batch is empty.")
    if images.shape[-1] not in (1, 3, 4):
        raise CareClipInputError(f"Images must have 1, 3 or 4 channels, these have {images.shape[-1]}.")
    if not torch.isfinite(images).all():
        raise CareClipInputError("The images contain NaN or infinite values.")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from open_clip.tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def decode_bpe_entry(entry: str) -> str:
    """The text a (``</w>``-stripped) CLIP BPE entry stands for: its byte-level characters decoded as UTF-8
    (``cafÃ©`` → ``café``; an incomplete UTF-8 sequence decodes to ``�``)."""
    byte_decoder = _byte_decoder()
    if not all(char in byte_decoder for char in entry):
        return entry
    return bytearray(byte_decoder[char] for char in entry).decode("utf-8", errors="replace")


def _require_open_clip():
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - open_clip_torch is a declared dependency
        raise ClipWeightsError("The Python package 'open_clip_torch' is missing: pip install open_clip_torch") \
            from error
    return open_clip


class CareClip:
    """An open_clip model with its CLIP BPE tokenizer and torch-side image preprocessing.

    ``identity`` names architecture and weights (``ViT-B-32/openai``, ``ViT-B-32/sha256:<16 hex>``) and keys every
    on-disk cache derived from the model. Embeddings come back L2-normalised, float32, on the CPU; inside
    :meth:`float64` they are computed in float64 and rounded to float32 only at the end, so that they do not
    depend on the thread count or on which CPU kernels ran (CARE-set construction uses this)."""

    def __init__(self, model: torch.nn.Module, identity: str, preprocess: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu"):
        open_clip = _require_open_clip()
        self.model = model.to(device).eval()
        self.identity = identity
        self.device = torch.device(device)
        self.context_length = int(model.context_length)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=self.context_length)
        preprocess = dict(open_clip.get_model_preprocess_cfg(model) if preprocess is None else preprocess)
        size = preprocess.get("size", model.visual.image_size)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.image_mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        self.image_std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        self.interpolation = preprocess.get("interpolation", "bicubic")
        self.resize_mode = preprocess.get("resize_mode", "shortest")

    def __repr__(self) -> str:
        return f"CareClip({self.identity!r}, device={self.device})"

    @contextlib.contextmanager
    def float64(self) -> Iterator[None]:
        """Compute every embedding in float64 inside the block: the model is cast to float64 and back afterwards
        (exactly: float64 holds every float32 and float16 value), also when the block raises."""
        dtypes = {name: p.dtype for name, p in self.model.named_parameters()}
        dtypes.update({name: b.dtype for name, b in self.model.named_buffers()})
        self.model.double()
        try:
            yield
        finally:
            for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
                if tensor.is_floating_point():
                    tensor.data = tensor.data.to(dtypes[name])

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype embeddings are computed in (the model's weights'; float64 inside :meth:`float64`)."""
        weight = next(self.model.parameters())
        return torch.float64 if weight.dtype == torch.float64 else torch.float32

    # -- text --------------------------------------------------------------------------------------------------
    def vocabulary(self) -> list[str]:
        """Every BPE vocabulary entry in token-id order, with the end-of-word marker ``</w>`` removed."""
        return [entry.replace("</w>", "") for entry in self.raw_vocabulary()]

    def raw_vocabulary(self) -> list[str]:
        """Every BPE vocabulary entry in token-id order as the tokenizer stores it (``person</w>``, ``pers``)."""
        decoder = self.tokenizer.decoder
        return [decoder[index] for index in range(len(decoder))]

    def token_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens (empty when nothing of it survives tokenisation)."""
        return self.tokenizer.encode(text)

    @property
    def max_text_tokens(self) -> int:
        """The most BPE tokens one text may have: the context length less the start and end tokens (75)."""
        return self.context_length - 2

    def require_fits(self, text: str, what: str) -> None:
        """Raise :class:`CareClipInputError` naming ``what`` when ``text`` has more tokens than this CLIP reads
        (texts are never cut short silently)."""
        count = len(self.token_ids(text))
        if count > self.max_text_tokens:
            raise CareClipInputError(
                f"{what} ({quoted(text, 70)}) is {count} tokens long, but this CLIP reads at most "
                f"{self.max_text_tokens} tokens ({self.context_length} with its start and end tokens). Shorten it.")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, context_length)`` token ids, start/end tokens included, zero-padded, as open_clip builds them."""
        return self.tokenizer(list(texts))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text features ``(N, D)`` of ``texts``."""
        if isinstance(texts, str):
            raise CareClipInputError("embed_texts takes a list of texts, not a single string.")
        for text in texts:
            self.require_fits(text, "The text")
        return self.embed_token_ids([self.token_ids(text) for text in texts], batch_size=batch_size)

    def embed_token_ids(self, sequences: Sequence[Sequence[int]], batch_size: int = 1024) -> torch.Tensor:
        """L2-normalised features ``(N, D)`` of BPE id sequences (start/end tokens are added here).

        Sequences of equal length run together with exactly that context when the text tower is causal; other
        towers get the full padded context."""
        max_body = self.context_length - 2
        rows = [[self.tokenizer.sot_token_id, *list(ids)[:max_body], self.tokenizer.eot_token_id] for ids in sequences]
        out = torch.empty(len(rows), self.embedding_dim, dtype=self.compute_dtype)
        if not rows:
            return out.float()
        short = self.supports_short_context
        by_length: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_length.setdefault(len(row) if short else self.context_length, []).append(index)
        with torch.no_grad():
            for length, indices in sorted(by_length.items()):
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start:start + batch_size]
                    ids = torch.zeros(len(chunk), length, dtype=torch.long)
                    for position, index in enumerate(chunk):
                        ids[position, :len(rows[index])] = torch.tensor(rows[index])
                    out[chunk] = self._encode_text_ids(ids.to(self.device)).to(out.dtype).cpu()
        return F.normalize(out, dim=-1).float()

    @property
    def embedding_dim(self) -> int:
        projection = self.model.text_projection
        if isinstance(projection, torch.nn.Linear):
            return int(projection.out_features)
        if projection is not None:
            return int(projection.shape[1])
        return int(self.model.transformer.width)

    @property
    def supports_short_context(self) -> bool:
        """True when the text tower is causal and pools at the end-of-text token (open_clip's ``CLIP`` class)."""
        model = self.model
        return (getattr(model, "attn_mask", None) is not None and hasattr(model, "positional_embedding")
                and getattr(model, "text_pool_type", None) in ("argmax", "eos"))

    def _encode_text_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The text tower on ``ids`` of any length up to the context: ``CLIP.encode_text`` with the positional
        embedding and causal mask cut to the sequence length (identical when the length is the full context)."""
        from open_clip.transformer import text_global_pool

        model = self.model
        if ids.shape[1] == self.context_length or not self.supports_short_context:
            return model.encode_text(ids)
        length = ids.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast_dtype)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        projection = model.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x

    # -- images ------------------------------------------------------------------------------------------------
    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """ComfyUI ``IMAGE`` ``(B, H, W, C)`` in [0, 1] → normalised ``(B, 3, h, w)`` at the model's input size."""
        check_image_batch(images)
        channels = images.shape[-1]
        x = images.to(self.compute_dtype)
        x = x.expand(*x.shape[:3], 3) if channels == 1 else x[..., :3]
        x = x.permute(0, 3, 1, 2).clamp(0.0, 1.0)
        x = self._resize(x)
        mean = self.image_mean.to(x)[None, :, None, None]
        std = self.image_std.to(x)[None, :, None, None]
        return (x - mean) / std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        target_h, target_w = self.image_size
        height, width = x.shape[-2:]
        mode = self.interpolation if self.interpolation in ("bicubic", "bilinear") else "bicubic"

        def scale(size: tuple[int, int]) -> torch.Tensor:
            if size == (height, width):
                return x
            return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp(0.0, 1.0)

        if self.resize_mode == "squash":
            return scale((target_h, target_w))
        if self.resize_mode == "longest":
            factor = min(target_h / height, target_w / width)
            new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
            resized = scale((new_h, new_w))
            top, left = (target_h - new_h) // 2, (target_w - new_w) // 2
            return F.pad(resized, (left, target_w - new_w - left, top, target_h - new_h - top), value=0.0)
        factor = max(target_h / height, target_w / width)
        new_h, new_w = max(target_h, round(height * factor)), max(target_w, round(width * factor))
        resized = scale((new_h, new_w))
        top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
        return resized[..., top:top + target_h, left:left + target_w]

    def embed_images(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised image features ``(B, D)`` of a ComfyUI ``IMAGE`` batch ``(B, H, W, C)`` in [0, 1]."""
        check_image_batch(images)
        features = []
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                pixels = self.preprocess_images(images[start:start + batch_size])
                features.append(self.model.encode_image(pixels.to(self.device)).to(self.compute_dtype).cpu())
        return F.normalize(torch.cat(features), dim=-1).float()


# -- loading ---------------------------------------------------------------------------------------------------
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
    open_clip = _require_open_clip()
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
    open_clip = _require_open_clip()
    archs = [arch] if arch else clip_architectures()
    tags: list[str] = []
    for name in archs:
        for tag in open_clip.list_pretrained_tags_by_model(name):
            if tag not in tags:
                tags.append(tag)
    return tags


def _model_config(arch: str, weights_path: Path | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, model config, preprocess overrides) for a built-in architecture or ``open_clip_config.json``."""
    open_clip = _require_open_clip()
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
    open_clip = _require_open_clip()
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
