"""The one way the pack writes a file: new files only, never a replaced one, never a partial one.

:func:`write_new_file` runs the caller's writer on a hidden temporary file in the destination folder
(``.recare-<random>.partial``, created exclusively, so it can never be a user's file) and then publishes it under
its final name with a hard link, which fails instead of replacing anything already there (where the file system
has no hard links: an exclusively created placeholder, then a rename onto it). The temporary file is removed on
every error and on interrupt (Ctrl-C, ComfyUI's Cancel), so the final name either holds the whole file or does
not exist. :func:`write_numbered_file` picks ``<stem>_00001<suffix>``, ``_00002``, ... (one past the highest
number in use; the counter has no upper limit and grows past five digits) for outputs that are never overwritten.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path
from typing import Callable

from .paths import UnsafePathError, check_relative_name, contained_path

TEMP_PREFIX = ".recare-"
TEMP_SUFFIX = ".partial"

Writer = Callable[[Path], None]
"""Writes the whole file to the path it is given (a temporary name: pass the file format explicitly)."""


def _create_temporary(folder: Path) -> Path:
    for _ in range(100):
        candidate = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"No free temporary name in {folder}")


def _sync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _publish(temporary: Path, path: Path) -> None:
    """Give ``temporary`` the name ``path``; raises FileExistsError when ``path`` exists (never replaces it)."""
    try:
        os.link(temporary, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except (OSError, NotImplementedError):  # no hard links here (FAT, some network shares): reserve, then rename
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            os.replace(temporary, path)
        except BaseException:
            os.unlink(path)  # the empty placeholder is ours: nothing partial stays behind
            raise


def write_new_file(path: str | os.PathLike, write: Writer) -> Path:
    """Write a new file at ``path`` with ``write``; raises FileExistsError (with the file named) when anything —
    a file, a folder, a link — already has that name. The folder must exist and be checked by the caller."""
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, f"{path.name} already exists in {path.parent}; files are never "
                                            "replaced", str(path))
    temporary = _create_temporary(path.parent)
    try:
        write(temporary)
        _sync(temporary)
        _publish(temporary, path)
    finally:
        try:
            temporary.unlink()
        except FileNotFoundError:
            pass
    return path


def make_folders(root: str | os.PathLike, parts: tuple[str, ...], what: str, label: str | None = None) -> Path:
    """``root/<parts...>``, created when missing, contained in ``root`` (see :func:`contained_path`); raises
    :class:`UnsafePathError` when a file stands where a folder is needed."""
    Path(root).mkdir(parents=True, exist_ok=True)
    folder = contained_path(root, parts, what, label)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise UnsafePathError(f"{what}: cannot create the folder {'/'.join(parts)!r} in {label or root}: a file "
                              "of that name is in the way.") from error
    return contained_path(root, parts, what, label)  # again: nothing may have turned into a link meanwhile


def _numbers(folder: Path, stem: str, suffix: str) -> list[int]:
    pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix) + r"\Z")
    return [int(match.group(1)) for name in os.listdir(folder) if (match := pattern.match(name))]


def numbered_name(stem: str, number: int, suffix: str) -> str:
    """The pack's one naming scheme for numbered outputs: ``<stem>_<number, at least 5 digits><suffix>``."""
    return f"{stem}_{number:05d}{suffix}"


def write_numbered_file(root: str | os.PathLike, name: str, suffix: str, write: Writer, what: str,
                        label: str | None = None, plain_first: bool = False) -> Path:
    """Write a new file for the user-given ``name`` (``sub/folder/stem``, checked by
    :func:`check_relative_name`) inside ``root``: ``<stem>_<n><suffix>`` with ``n`` one past the highest in use
    (or ``<stem><suffix>`` itself first, with ``plain_first``). Never replaces a file; ``what`` names the input
    and ``label`` the folder in error messages."""
    parts = check_relative_name(name, what)
    folder = make_folders(root, parts[:-1], what, label)
    stem = parts[-1]
    if plain_first:
        try:
            return write_new_file(folder / f"{stem}{suffix}", write)
        except FileExistsError:
            pass
    number = max(_numbers(folder, stem, suffix), default=0) + 1
    while True:
        try:
            return write_new_file(folder / numbered_name(stem, number, suffix), write)
        except FileExistsError:
            number += 1  # another writer took it meanwhile, or a folder / link has that name


def move_aside(path: str | os.PathLike, tag: str) -> Path:
    """Rename the file ``path`` to ``<name>.<tag>_00001`` (the next free number) so that a fresh file can take
    its name; nothing is deleted or replaced. Returns the new name."""
    path = Path(path)
    number = max(_numbers(path.parent, f"{path.name}.{tag}", ""), default=0) + 1
    while True:
        aside = path.with_name(numbered_name(f"{path.name}.{tag}", number, ""))
        try:
            _publish(path, aside)
            break
        except FileExistsError:
            number += 1
    try:
        path.unlink()
    except FileNotFoundError:  # the fallback of _publish renamed it already
        pass
    return aside


def new_numbered_folder(root: str | os.PathLike, stem: str) -> Path:
    """A new, empty folder ``root/<stem>_<n>`` (the scheme of :func:`numbered_name`), never an existing one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    number = max(_numbers(root, stem, ""), default=0) + 1
    while True:
        folder = root / numbered_name(stem, number, "")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
