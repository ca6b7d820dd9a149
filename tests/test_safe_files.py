"""recare_core.safe_files: the containment rule, new-file-only atomic writes, readable JSON / weights errors.
Hostile names and file-system states on a real temporary folder."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
import torch

from recare_core.safe_files import (
    FileContentError,
    UnsafePathError,
    check_relative_name,
    contained_path,
    move_aside,
    new_numbered_folder,
    parse_json_object,
    read_json_file,
    require_inside,
    torch_error_text,
    write_new_file,
    write_numbered_file,
)
from recare_core.safe_files.paths import MAX_NAME_BYTES
from recare_core.safe_files.writing import TEMP_PREFIX


def _text(content: str):
    return lambda path: path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("name, reason", [
    ("", "is empty"), ("   ", "is empty"), ("a\x00b", "NUL byte"), ("/etc/passwd", "absolute path"),
    ("\\\\server\\share\\x", "absolute path"), ("C:\\Windows\\x", "drive"), ("C:relative", "drive"),
    ("~root/x", "absolute path"), ("..", "goes up a folder"), ("recare/../../x", "goes up a folder"),
    ("..\\..\\x", "goes up a folder"), ("a/.hidden", "starting with '.'"), ("con", "reserved device name"),
    ("sub/NUL.safetensors", "reserved device name"), ("com1.txt", "reserved device name"),
    ("file:stream", "characters"), ("x\ny", "control, formatting"), ("tab\there", "control, formatting"),
    ("trailing. ", "ending in a space or a dot"), ("trailing.", "ending in a space or a dot"),
    ("x" * (MAX_NAME_BYTES + 1), "longer than"), ("日" * 70, "longer than"), ("/", "absolute path"),
    ("evil\u202egnp.exe", "formatting"), ("lone\ud800", "surrogate"), ("a/" * 20 + "x", "folder levels"),
])
def test_hostile_names_are_refused_with_the_input_and_reason(name, reason):
    with pytest.raises(UnsafePathError, match="filename_prefix") as refused:
        check_relative_name(name, "filename_prefix")
    assert reason in str(refused.value)
    assert len(str(refused.value)) < 400  # a very long name is shortened in the message


def test_ordinary_names_split_into_parts():
    assert check_relative_name(" recare/erasure ", "x") == ("recare", "erasure")
    assert check_relative_name("a//b/./c", "x") == ("a", "b", "c")
    assert check_relative_name("a\\b", "x") == ("a", "b")
    assert check_relative_name("Lösung_日本語-1.5", "x") == ("Lösung_日本語-1.5",)
    assert check_relative_name("x" * MAX_NAME_BYTES, "x") == ("x" * MAX_NAME_BYTES,)
    with pytest.raises(UnsafePathError, match="names a folder"):
        check_relative_name("a/b", "embedding_name", subfolders=False)
    with pytest.raises(UnsafePathError, match="must be text"):
        check_relative_name(["a"], "x")


def test_containment_compares_resolved_paths_not_string_prefixes(tmp_path):
    root, sibling = tmp_path / "loras", tmp_path / "loras_evil"
    root.mkdir()
    sibling.mkdir()
    (sibling / "x.safetensors").write_bytes(b"x")
    with pytest.raises(UnsafePathError, match="not inside models/loras"):
        require_inside(sibling / "x.safetensors", [root], "name", "models/loras")
    (root / "escape").symlink_to(sibling, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="leads outside models/loras"):
        contained_path(root, ("escape", "x"), "filename_prefix", "models/loras")
    (root / "linked.safetensors").symlink_to(sibling / "x.safetensors")
    with pytest.raises(UnsafePathError, match="once links are followed"):
        require_inside(root / "linked.safetensors", [root], "name", "models/loras")
    inner = root / "inner"
    inner.mkdir()
    (root / "alias").symlink_to(inner, target_is_directory=True)  # a link that stays inside is fine
    assert contained_path(root, ("alias", "y"), "x") == inner.resolve() / "y"
    linked_root = tmp_path / "linked_root"
    linked_root.symlink_to(root, target_is_directory=True)  # the folder itself may be a link
    assert require_inside(linked_root / "inner", [linked_root], "x") == inner.resolve()


def test_a_new_file_never_replaces_anything(tmp_path):
    existing = tmp_path / "taken.json"
    existing.write_text("user data")
    with pytest.raises(FileExistsError, match="taken.json already exists"):
        write_new_file(existing, _text("new"))
    assert existing.read_text() == "user data"
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(FileExistsError):
        write_new_file(tmp_path / "folder.json", _text("new"))
    outside = tmp_path / "outside"
    (tmp_path / "dangling.json").symlink_to(outside)
    with pytest.raises(FileExistsError):
        write_new_file(tmp_path / "dangling.json", _text("new"))
    assert not outside.exists()  # a link at the name is never followed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "folder.json", "taken.json"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_write_leaves_nothing(tmp_path, error):
    def broken(path):
        path.write_bytes(b"half a file")
        raise error

    with pytest.raises(type(error)):
        write_new_file(tmp_path / "out.safetensors", broken)
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_whole_with_normal_permissions_and_user_tmp_files_survive(tmp_path):
    user_tmp = tmp_path / "erasure_00001_.safetensors.tmp"  # the old helper's temporary name
    user_tmp.write_text("mine")
    lookalike = tmp_path / f"{TEMP_PREFIX}0000000000000000.partial"
    lookalike.write_text("also mine")
    path = write_numbered_file(tmp_path, "erasure", "_.safetensors", _text("whole"), "filename_prefix")
    assert path.name == "erasure_00001_.safetensors" and path.read_text() == "whole"
    assert user_tmp.read_text() == "mine" and lookalike.read_text() == "also mine"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, user_tmp.name, lookalike.name])


def test_counters_have_no_ceiling_and_skip_whatever_holds_a_name(tmp_path):
    (tmp_path / "big_99999.json").write_text("{}")
    assert write_numbered_file(tmp_path, "big", ".json", _text("a"), "x").name == "big_100000.json"
    assert write_numbered_file(tmp_path, "big", ".json", _text("b"), "x").name == "big_100001.json"
    (tmp_path / f"huge_{10**30}.json").write_text("{}")
    assert write_numbered_file(tmp_path, "huge", ".json", _text("c"), "x").name == f"huge_{10**30 + 1}.json"
    (tmp_path / "dir_00001.json").mkdir()
    (tmp_path / "dir_00002.json").symlink_to(tmp_path / "nowhere")
    assert write_numbered_file(tmp_path, "dir", ".json", _text("d"), "x").name == "dir_00003.json"
    assert not (tmp_path / "nowhere").exists()


def test_plain_first_then_numbered(tmp_path):
    names = [write_numbered_file(tmp_path, "recare_adv_0", ".safetensors", _text(str(i)), "embedding_name",
                                 plain_first=True).name for i in range(3)]
    assert names == ["recare_adv_0.safetensors", "recare_adv_0_00001.safetensors", "recare_adv_0_00002.safetensors"]


def test_numbered_files_never_leave_their_folder(tmp_path):
    root, outside = tmp_path / "loras", tmp_path / "loras_evil"
    outside.mkdir()
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    for prefix in ("../loras_evil/x", "escape/x", "/abs/x", "a\x00b"):
        with pytest.raises(UnsafePathError, match="filename_prefix"):
            write_numbered_file(root, prefix, ".json", _text("x"), "filename_prefix", "models/loras")
    assert list(outside.iterdir()) == []
    (root / "afile").write_text("not a folder")
    with pytest.raises(UnsafePathError, match="a file of that name is in the way"):
        write_numbered_file(root, "afile/x", ".json", _text("x"), "filename_prefix")
    nested = write_numbered_file(root, "a/b/c/name", ".json", _text("x"), "filename_prefix")
    assert nested == (root / "a" / "b" / "c" / "name_00001.json").resolve()


def test_without_hard_links_the_fallback_still_never_replaces(tmp_path, monkeypatch):
    def no_hard_links(*args, **kwargs):
        raise PermissionError("this file system has no hard links")

    monkeypatch.setattr(os, "link", no_hard_links)
    first = write_new_file(tmp_path / "a.txt", _text("first"))
    with pytest.raises(FileExistsError):
        write_new_file(first, _text("second"))
    assert first.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_numbered_folders_and_moving_aside(tmp_path):
    (tmp_path / "cpu_7").mkdir()
    assert new_numbered_folder(tmp_path, "cpu").name == "cpu_00008"
    assert new_numbered_folder(tmp_path, "cpu").name == "cpu_00009"
    cache = tmp_path / "cache.safetensors"
    cache.write_bytes(b"broken")
    assert move_aside(cache, "unreadable").name == "cache.safetensors.unreadable_00001"
    cache.write_bytes(b"broken again")
    assert move_aside(cache, "unreadable").read_bytes() == b"broken again"
    assert not cache.exists() and (tmp_path / "cache.safetensors.unreadable_00001").read_bytes() == b"broken"


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON .*line 1, column 2"), ("[1, 2]", "is a list in JSON, not an object"),
    ("null", "is null in JSON"), ('"text"', "is a string in JSON"),
    ("[" * 100000 + "]" * 100000, "is nested too deeply"),
    ('{"n": ' + "9" * 5000 + "}", "cannot be read as JSON"),
])
def test_bad_json_is_named_and_explained(text, message):
    with pytest.raises(FileContentError, match=f"The metadata of e.safetensors {message}"):
        parse_json_object(text, "e.safetensors", "The metadata")


def test_json_files_name_the_file_for_every_problem(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(FileContentError, match="folder.json is a folder"):
        read_json_file(tmp_path / "folder.json", "CARE-set file")
    (tmp_path / "latin1.json").write_bytes('{"é": 1}'.encode("latin-1"))
    with pytest.raises(FileContentError, match="latin1.json is not a text file"):
        read_json_file(tmp_path / "latin1.json", "CARE-set file")
    (tmp_path / "big.json").write_text(json.dumps({"x": "y" * 2000}))
    with pytest.raises(FileContentError, match="big.json is larger than"):
        read_json_file(tmp_path / "big.json", "CARE-set file", max_bytes=1000)
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(FileContentError, match="pipe.json is not a regular file"):
        read_json_file(tmp_path / "pipe.json", "CARE-set file")
    with pytest.raises(FileContentError, match="missing.json does not exist"):
        read_json_file(tmp_path / "missing.json", "CARE-set file")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + b'{"ok": true}')
    assert read_json_file(tmp_path / "bom.json", "CARE-set file") == {"ok": True}


class _RunsCode:
    def __reduce__(self):
        return os.system, ("true",)


def test_torch_errors_keep_what_was_refused_and_drop_the_unsafe_advice():
    buffer = io.BytesIO()
    torch.save({"x": _RunsCode()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception) as refused:
        torch.load(buffer, weights_only=True)
    assert "weights_only" in str(refused.value)  # PyTorch's own text does advise it
    text = torch_error_text(refused.value)
    assert "system" in text
    assert "weights_only" not in text and "trust" not in text and "safe_globals" not in text
