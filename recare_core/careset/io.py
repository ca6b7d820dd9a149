"""CARE-set files: the pack's JSON format and the reference implementation's ``careset.json``; never overwriting.

``recare`` writes the reference's two keys (so the reference trainer reads the file as is) plus a
``recare_careset`` block with words, counts, similarities, residual norms, clusters, settings and the CLIP used.
``reference`` writes exactly the reference's two keys. Loading detects which one a file holds. Files are written
through :mod:`recare_core.safe_files` (whole or not at all, never replacing a file, never outside their folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..safe_files import read_json_file, write_new_file, write_numbered_file
from .build import CareSet, CareSetInputError

FORMATS = ("recare", "reference")


class CareSetFileError(CareSetInputError):
    """A CARE-set file cannot be read or written."""


def care_set_document(care_set: CareSet, fmt: str = "recare") -> dict:
    if fmt not in FORMATS:
        raise CareSetFileError(f"Unknown CARE-set format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return care_set.to_json_dict() if fmt == "recare" else care_set.to_reference_json()


def _writer(care_set: CareSet, fmt: str):
    text = json.dumps(care_set_document(care_set, fmt), indent=2, ensure_ascii=False) + "\n"
    return lambda temporary: temporary.write_text(text, encoding="utf-8")


def write_care_set(care_set: CareSet, path: str | os.PathLike, fmt: str = "recare") -> Path:
    """Write ``care_set`` to ``path``; raises :class:`CareSetFileError` when the name is already taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_new_file(path, _writer(care_set, fmt))
    except FileExistsError as error:
        raise CareSetFileError(f"{path.name} already exists; CARE-set files are never overwritten.") from error


def save_care_set(care_set: CareSet, directory: str | os.PathLike, prefix: str = "careset",
                  fmt: str = "recare", what: str = "filename_prefix", label: str | None = None) -> Path:
    """Write ``care_set`` as ``<directory>/<prefix>_<counter>.json`` with the next free counter (5 digits or
    more); ``prefix`` may name subfolders and must stay inside ``directory`` (else
    :class:`~recare_core.safe_files.UnsafePathError` naming ``what``)."""
    return write_numbered_file(directory, prefix, ".json", _writer(care_set, fmt), what, label)


def load_care_set(path: str | os.PathLike) -> CareSet:
    """Read a CARE-set file in either format; every problem is a :class:`CareSetFileError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CareSetFileError(f"CARE-set file not found: {path.name}")
    data = read_json_file(path, "CARE-set file", CareSetFileError)
    try:
        return CareSet.from_json_dict(data)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise CareSetFileError(f"{path.name} is not a CARE-set file: {error}") from error
