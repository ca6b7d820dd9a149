"""Safe file handling for every file the pack reads or writes: one containment rule, one way to write.

* :mod:`.paths` — the containment rule: a name given by a user (a ``filename_prefix``, a combo value) is checked
  word for word (no NUL, no absolute path or drive, no ``..``, no hidden or reserved names) and the file it names,
  with every symlink resolved, must lie inside the folder it belongs to.
* :mod:`.writing` — the one way the pack writes: a new file is written under a hidden, unique temporary name in
  its own folder and then published under its final name *without ever replacing* an existing file; numbered
  names (``<stem>_00001<suffix>``, no upper limit) for outputs that must never overwrite.
* :mod:`.reading` — JSON and weights-file errors turned into sentences that name the file (and never advise
  unsafe loading).
"""

from .paths import UnsafePathError, check_relative_name, contained_path, quoted, require_inside
from .reading import FileContentError, parse_json_object, read_json_file, require_regular_file, torch_error_text
from .writing import move_aside, new_numbered_folder, write_new_file, write_numbered_file

__all__ = [
    "FileContentError", "UnsafePathError", "check_relative_name", "contained_path", "move_aside",
    "new_numbered_folder", "parse_json_object", "quoted", "read_json_file", "require_inside", "require_regular_file", "torch_error_text",
    "write_new_file", "write_numbered_file",
]
