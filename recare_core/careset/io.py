"""CARE-set files: the pack's JSON format and the reference implementation's ``careset.json``; never overwriting.

``recare`` writes the reference's two keys (so the reference trainer reads the file as is) plus a
``recare_careset`` block with words, counts, similarities, residual norms, clusters, settings and the CLIP used.
``reference`` writes exactly the reference's two keys. Loading detects which one a file holds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .build import CareSet, CareSetInputError

FORMATS = ("recare", "reference")


class CareSetFileError(CareSetInputError):
    """A CARE-set file cannot be read or written."""


def care_set_document(care_set: CareSet, fmt: str = "recare") -> dict:
    if fmt not in FORMATS:
        raise CareSetFileError(f"Unknown CARE-set format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return care_set.to_json_dict() if fmt == "recare" else care_set.to_reference_json()


def write_care_set(care_set: CareSet, path: str | os.PathLike, fmt: str = "recare") -> Path:
    """Write ``care_set`` to ``path``; raises :class:`CareSetFileError` when the file already exists."""
    path = Path(path)
    text = json.dumps(care_set_document(care_set, fmt), indent=2, ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text + "\n")
    except FileExistsError as error:
        raise CareSetFileError(f"{path} already exists; CARE-set files are never overwritten.") from error
    return path


def save_care_set(care_set: CareSet, directory: str | os.PathLike, prefix: str = "careset",
                  fmt: str = "recare") -> Path:
    """Write ``care_set`` as ``<directory>/<prefix>_<counter>.json`` with the next free 5-digit counter."""
    directory = Path(directory)
    stem = re.sub(r"[^\w.-]+", "_", prefix.strip()).strip("._") or "careset"
    directory.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)\.json$")
    used = [int(m.group(1)) for name in os.listdir(directory) if (m := pattern.match(name))]
    counter = max(used, default=0) + 1
    while True:
        try:
            return write_care_set(care_set, directory / f"{stem}_{counter:05d}.json", fmt)
        except CareSetFileError:
            if not (directory / f"{stem}_{counter:05d}.json").exists():
                raise
            counter += 1  # another writer took this name meanwhile


def load_care_set(path: str | os.PathLike) -> CareSet:
    """Read a CARE-set file in either format."""
    path = Path(path)
    if not path.is_file():
        raise CareSetFileError(f"CARE-set file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CareSetFileError(f"{path.name} is not a readable JSON file: {error}") from error
    try:
        return CareSet.from_json_dict(data)
    except (TypeError, KeyError, ValueError) as error:
        raise CareSetFileError(f"{path.name} is not a CARE-set file: {error}") from error
