"""Inputs of the pack's nodes that name files or must come from an option list.

ComfyUI 0.3.64 does not check the values of V3 combo inputs against their options, so any string can reach a
node; every node of the pack therefore checks its combo values itself (:func:`check_choice`) before touching the
file system, and files are looked up inside their folder under the containment rule of
:mod:`recare_core.safe_files` (resolved paths, links followed). A refused value is never looked up, so the error
says nothing about whether some other path exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import folder_paths

from ..recare_core.safe_files import quoted, require_inside, require_regular_file


class InvalidChoiceError(ValueError):
    """A combo input holds a value that is not one of its options."""


def check_choice(value: object, options: Iterable[str], input_name: str) -> str:
    """``value`` when it is one of ``options``; raises :class:`InvalidChoiceError` naming ``input_name``."""
    if isinstance(value, str) and value in set(options):
        return value
    raise InvalidChoiceError(
        f"{input_name}: {quoted(value)} is not one of the options of this input. Pick a value from its list "
        "(after adding a file, refresh the page so that the list shows it).")


def model_file(folder_name: str, name: object, input_name: str, options: Iterable[str] | None = None) -> Path:
    """The file ``name`` picked from ComfyUI's model folder ``folder_name`` (e.g. ``loras``): checked against the
    option list (default: every file ComfyUI lists there), found by ComfyUI, and inside one of that folder's
    paths once links are resolved."""
    listed = folder_paths.get_filename_list(folder_name) if options is None else options
    check_choice(name, listed, input_name)
    path = folder_paths.get_full_path(folder_name, name)
    if path is None:
        raise InvalidChoiceError(f"{input_name}: {quoted(name)} is no longer in models/{folder_name}; refresh the "
                                 "page and pick a file again.")
    inside = require_inside(path, folder_paths.get_folder_paths(folder_name), f"{input_name} {quoted(name)}",
                            f"models/{folder_name}")
    return require_regular_file(inside, "model file", InvalidChoiceError)
