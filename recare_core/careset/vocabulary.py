"""Text embeddings of every CLIP BPE vocabulary entry, built once per CLIP and cached on disk.

Each of the 49,408 entries is embedded as its text with the end-of-word marker removed (``person</w>`` → ``person``),
L2-normalised and stored as fp16, as in the reference. Entries that read the same after the marker is removed
(``person`` and ``person</w>``) are embedded once. The text tower runs with the shortest context that holds each
entry (see :meth:`CareClip.embed_token_ids`), which is what makes the first build fast.

The cache is one safetensors file per CLIP identity, named from the identity (letters, digits, '_' and '-' only)
and written through :func:`recare_core.safe_files.write_new_file`, so an interrupted build never leaves a
half-written cache behind and no file is ever replaced: an unreadable cache file is renamed
``<name>.unreadable_00001`` (kept, not deleted) before the rebuilt one takes its name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..progress import ProgressCallback, StopCallback, check_stop
from ..safe_files import check_relative_name, contained_path, move_aside, write_new_file
from .clip_model import CareClip

CACHE_FORMAT = "recare-vocabulary-v2"  # v2: embeddings computed in float64
CACHE_ENV_VAR = "RECARE_CACHE_DIR"

log = logging.getLogger(__name__)


@dataclass
class VocabularyEmbeddings:
    """``matrix[i]`` (fp16, L2-normalised) embeds ``entries[i]``, the ``</w>``-stripped BPE entry of token id i."""

    entries: list[str]
    matrix: torch.Tensor
    identity: str
    path: Path
    from_cache: bool


def default_cache_dir() -> Path:
    """``$RECARE_CACHE_DIR``, else ``$XDG_CACHE_HOME/recare/vocabulary`` (``~/.cache`` by default;
    ``%LOCALAPPDATA%`` on Windows)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "recare" / "vocabulary"


def _vocabulary_digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()


def cache_path(clip: CareClip, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the vocabulary embeddings of ``clip`` are cached: named after its identity, plus a hash that also
    covers the vocabulary and the cache format."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(
        f"{CACHE_FORMAT}\n{clip.identity}\n{_vocabulary_digest(clip.raw_vocabulary())}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", clip.identity).strip("_")[:80]
    name = f"vocab_{slug}_{key}.safetensors"
    return contained_path(directory, check_relative_name(name, "vocabulary cache name", subfolders=False),
                          "vocabulary cache name")


def embed_vocabulary(clip: CareClip, progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                     batch_size: int = 1024) -> torch.Tensor:
    """Embed every vocabulary entry of ``clip`` (``</w>`` removed): fp16 ``(49408, D)``, rows L2-normalised."""
    entries = clip.vocabulary()
    unique_texts = list(dict.fromkeys(entries))
    row_of_text = {text: row for row, text in enumerate(unique_texts)}
    token_ids = [clip.token_ids(text) for text in unique_texts]
    order = sorted(range(len(unique_texts)), key=lambda i: len(token_ids[i]))  # equal lengths batch together
    unique_matrix = torch.empty(len(unique_texts), clip.embedding_dim, dtype=torch.float32)
    total = len(order)
    with clip.float64():  # the same cache on every machine and thread count
        for start in range(0, total, batch_size):
            check_stop(should_stop, "Vocabulary embedding stopped by the user; nothing was cached.")
            chunk = order[start:start + batch_size]
            unique_matrix[chunk] = clip.embed_token_ids([token_ids[i] for i in chunk], batch_size=batch_size)
            if progress is not None:
                progress(min(start + batch_size, total), total, "embedding the CLIP vocabulary")
    rows = torch.tensor([row_of_text[text] for text in entries])
    return unique_matrix[rows].to(torch.float16)


def _read_cache(path: Path, clip: CareClip, entries: list[str]) -> torch.Tensor | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            matrix = handle.get_tensor("embeddings")
    except Exception as error:  # unreadable or truncated file: rebuild it
        log.warning("Ignoring unreadable vocabulary cache %s (%s); rebuilding it.", path, error)
        return None
    if (metadata.get("format") != CACHE_FORMAT or metadata.get("identity") != clip.identity
            or metadata.get("vocabulary_sha256") != _vocabulary_digest(clip.raw_vocabulary())
            or tuple(matrix.shape) != (len(entries), clip.embedding_dim) or matrix.dtype != torch.float16):
        log.warning("Vocabulary cache %s does not belong to %s; rebuilding it.", path, clip.identity)
        return None
    return matrix


def _write_cache(path: Path, matrix: torch.Tensor, clip: CareClip) -> None:
    """Write the cache file as a new file (whole or not at all; an existing file is never replaced)."""
    from safetensors.torch import save_file

    metadata = {"format": CACHE_FORMAT, "identity": clip.identity,
                "vocabulary_sha256": _vocabulary_digest(clip.raw_vocabulary()), "entries": str(matrix.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_new_file(path, lambda temporary: save_file({"embeddings": matrix.contiguous()}, str(temporary),
                                                     metadata=metadata))


def vocabulary_embeddings(clip: CareClip, cache_dir: str | os.PathLike | None = None,
                          progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                          batch_size: int = 1024) -> VocabularyEmbeddings:
    """The vocabulary embeddings of ``clip``: read from the cache when present, else built and cached."""
    entries = clip.vocabulary()
    path = cache_path(clip, cache_dir)
    if path.is_file():
        matrix = _read_cache(path, clip, entries)
        if matrix is not None:
            if progress is not None:
                progress(len(entries), len(entries), "vocabulary embeddings read from the cache")
            return VocabularyEmbeddings(entries, matrix, clip.identity, path, from_cache=True)
    matrix = embed_vocabulary(clip, progress=progress, should_stop=should_stop, batch_size=batch_size)
    try:
        if path.is_file() or path.is_symlink():  # a folder in the way is left alone (and caching skipped)
            log.warning("Kept the unreadable vocabulary cache as %s.", move_aside(path, "unreadable").name)
        _write_cache(path, matrix, clip)
    except OSError as error:
        log.warning("Could not write the vocabulary cache %s (%s); it will be rebuilt next time.", path, error)
    return VocabularyEmbeddings(entries, matrix, clip.identity, path, from_cache=False)
