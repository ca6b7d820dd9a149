"""Reading files a user handed over: JSON and weights-file errors as sentences that name the file.

Nothing here executes anything from a file; :func:`torch_error_text` keeps PyTorch's account of *what* was
refused and drops its advice to retry with ``weights_only=False`` (which would run code from the file).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON file the pack reads (a CARE-set of the paper's size is a few hundred kB)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SENTENCE_END = re.compile(r"(?<=\.)\s+")
_ADVICE = ("weights_only", "trust", "can still be loaded", "Check the documentation", "Please file an issue",
           "safe_globals", "Weights only load failed", "two options")


class FileContentError(ValueError):
    """A file does not hold what it should."""


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


def parse_json_object(text: str | bytes, source: str, what: str,
                      error: type[Exception] = FileContentError) -> dict[str, Any]:
    """``text`` parsed as a JSON object; raises ``error`` saying that ``what`` of ``source`` (e.g. "the recare
    metadata of erasure.safetensors") is not JSON, is nested too deeply, or is not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{what} of {source} is not valid JSON ({problem.msg} at line {problem.lineno}, column "
                    f"{problem.colno}).") from problem
    except RecursionError as problem:
        raise error(f"{what} of {source} is nested too deeply to be read.") from problem
    except (ValueError, UnicodeDecodeError) as problem:  # e.g. an integer with too many digits
        raise error(f"{what} of {source} cannot be read as JSON: {problem}.") from problem
    if not isinstance(value, dict):
        raise error(f"{what} of {source} is {_json_kind(value)} in JSON, not an object ({{\"key\": value, ...}}).")
    return value


def require_regular_file(path: str | os.PathLike, what: str, error: type[Exception] = FileContentError) -> Path:
    """``path`` when it is a regular file (links followed); raises ``error`` naming it when it is missing, a
    folder, or something else that cannot be read like a file (a pipe or device, which could block a read)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise error(f"{path.name} is a folder, not a {what}.")
    if os.path.lexists(path):
        raise error(f"{path.name} is not a regular file, so it is not read as a {what}.")
    raise error(f"{path.name} does not exist.")


def read_json_file(path: str | os.PathLike, what: str, error: type[Exception] = FileContentError,
                   max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object in the file at ``path`` (at most ``max_bytes``); every problem raised as ``error``
    naming the file."""
    path = require_regular_file(path, what, error)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as problem:
        raise error(f"Cannot read {path.name}: {problem.strerror or problem}.") from problem
    if len(data) > max_bytes:
        raise error(f"{path.name} is larger than {max_bytes // 2**20} MiB: too large for a {what}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise error(f"{path.name} is not a text file (not UTF-8), so it is not a {what}.") from problem
    return parse_json_object(text, path.name, "The content", error)


def torch_error_text(problem: BaseException) -> str:
    """PyTorch's or safetensors' error message on one line, without PyTorch's advice to retry with
    ``weights_only=False`` or to allow-list classes (both would run code from the file): only what was refused
    (e.g. ``Unsupported global: GLOBAL os.system``)."""
    sentences = [sentence.strip() for line in _ANSI.sub("", str(problem)).splitlines()
                 for sentence in _SENTENCE_END.split(line) if sentence.strip()]
    kept = [sentence.replace("WeightsUnpickler error:", "").strip() for sentence in sentences
            if not any(text in sentence for text in _ADVICE)]
    return " ".join(sentence for sentence in kept if sentence) or type(problem).__name__
