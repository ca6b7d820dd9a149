"""A joint image-text CLIP (open_clip) for building the CARE-set and for the CARE score.

:class:`CareClip` wraps an open_clip model, its CLIP BPE tokenizer (shipped inside open_clip, so it works offline)
and the image preprocessing, done in torch on ComfyUI ``IMAGE`` tensors. Text goes through the text tower with the
shortest context that holds the prompt: the tower is causal, so the feature read at the end-of-text token does not
depend on the padding after it, and a one-word prompt needs 3 positions instead of 77.

Loading one from a weights file or an open_clip pretrained tag: :mod:`.clip_loading`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..safe_files import quoted


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


def require_open_clip():
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
        open_clip = require_open_clip()
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
