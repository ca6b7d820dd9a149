"""The one containment rule for every path the pack reads or writes.

A name that comes from a user (a ``filename_prefix``, a file picked in a list, a folder a setting names) is
checked as text first (:func:`check_relative_name`): it must be a relative name made of ordinary folder and file
names. Then the path it names is resolved, every symlink followed, and must lie inside the resolved folder it
belongs to (:func:`contained_path` for a name relative to a folder, :func:`require_inside` for a path ComfyUI
looked up). The comparison is on resolved path components (``Path.is_relative_to``), never on string prefixes,
so ``models/loras_evil`` is not inside ``models/loras`` and a link inside a folder that leads out of it is refused.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path, PureWindowsPath
from typing import Iterable

MAX_NAME_BYTES = 200
"""Longest folder or file name accepted (UTF-8 bytes): file systems allow 255, the rest is kept for a counter
and an extension."""

MAX_PARTS = 16
"""Most folder levels (and the file name) one name may have."""

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_FORBIDDEN = set('<>:"|?*')
_SEPARATORS = re.compile(r"[\\/]+")


class UnsafePathError(ValueError):
    """A user-given name would read or write outside the folder it belongs to, or is not a usable name."""


def quoted(value: object, limit: int = 80) -> str:
    """``value`` quoted for an error message (``repr``, so NUL and control characters show), cut short when long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 20] + "..." + text[-12:]


def _problem(part: str) -> str | None:
    """Why ``part`` (one folder or file name) is refused, or None when it is fine."""
    if part == "..":
        return "goes up a folder ('..')"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in part):
        return "contains a control, formatting or unpaired surrogate character"
    if _FORBIDDEN.intersection(part):
        return f"contains one of the characters {''.join(sorted(_FORBIDDEN))}"
    if part.startswith("."):
        return f"has a name starting with '.' ({quoted(part)}: hidden files are not used)"
    if part.endswith((" ", ".")):
        return f"has a name ending in a space or a dot ({quoted(part)})"
    if part.split(".")[0].strip().lower() in _RESERVED:
        return f"uses the reserved device name {quoted(part.split('.')[0])}"
    if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


def check_relative_name(text: object, what: str, subfolders: bool = True) -> tuple[str, ...]:
    """The folder and file names of ``text``, a relative name such as ``recare/erasure`` ('/' or '\\' between
    parts; surrounding spaces, empty parts and '.' parts ignored); raises :class:`UnsafePathError` naming
    ``what`` (the input) and the reason for an empty name, a NUL byte or other control character, an absolute
    path, a drive, '..', a hidden or reserved name, a name over :data:`MAX_NAME_BYTES` bytes, more than
    :data:`MAX_PARTS` parts, or (with ``subfolders=False``) any folder part."""
    if not isinstance(text, str):
        raise UnsafePathError(f"{what} must be text, not {type(text).__name__}.")
    refused = f"{what} {quoted(text)} is refused: it"
    if "\x00" in text:
        raise UnsafePathError(f"{refused} contains a NUL byte.")
    stripped = text.strip()
    if not stripped:
        raise UnsafePathError(f"{what} is empty: give a name such as 'recare/erasure'.")
    if stripped.startswith(("/", "\\", "~")) or PureWindowsPath(stripped).drive or os.path.isabs(stripped):
        raise UnsafePathError(f"{refused} is an absolute path or names a drive; give a name relative to the "
                              "pack's folder, such as 'recare/erasure'.")
    parts = tuple(part for part in _SEPARATORS.split(stripped) if part not in ("", "."))
    if not parts:
        raise UnsafePathError(f"{refused} holds no file name.")
    for part in parts:
        reason = _problem(part)
        if reason:
            raise UnsafePathError(f"{refused} {reason}. Use letters, digits, '_', '-' and '/' between folders.")
    if len(parts) > MAX_PARTS:
        raise UnsafePathError(f"{refused} names {len(parts) - 1} folder levels; at most {MAX_PARTS - 1} are allowed.")
    if not subfolders and len(parts) > 1:
        raise UnsafePathError(f"{refused} names a folder; give a plain name without '/'.")
    return parts


def _label(root: Path, label: str | None) -> str:
    return label or root.name or str(root)


def contained_path(root: str | os.PathLike, parts: Iterable[str], what: str, label: str | None = None) -> Path:
    """``root/<parts...>`` resolved (symlinks followed); raises :class:`UnsafePathError` unless it lies inside
    the resolved ``root``. ``parts`` come from :func:`check_relative_name`; ``label`` names ``root`` in messages
    (e.g. ``models/loras``)."""
    base = Path(root).resolve()
    candidate = base.joinpath(*parts).resolve()
    if not candidate.is_relative_to(base):
        raise UnsafePathError(
            f"{what} {quoted('/'.join(parts))} leads outside {_label(base, label)} (through a link that points "
            "elsewhere), so it is refused.")
    return candidate


def require_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike], what: str,
                   label: str | None = None) -> Path:
    """``path`` resolved (symlinks followed), when it lies inside one of the resolved ``roots``; raises
    :class:`UnsafePathError` otherwise (without saying whether ``path`` exists)."""
    resolved = Path(path).resolve()
    bases = [Path(root).resolve() for root in roots]
    if not any(resolved.is_relative_to(base) for base in bases):
        raise UnsafePathError(
            f"{what} is not inside {label or ', '.join(map(str, bases))} once links are followed, so it is "
            "refused. Put the file itself into that folder.")
    return resolved
