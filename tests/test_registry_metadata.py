"""The pack's ``pyproject.toml`` meets the Comfy Registry's rules (docs.comfy.org/registry/specifications and
/standards): a valid node id and semantic version, ``[tool.comfy]`` with a publisher and the supported ComfyUI range,
and none of the code the Registry's security standards forbid in published nodes (eval/exec, runtime pip installs)."""

from __future__ import annotations

import ast
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from comfy_harness import PACK_ROOT, comfyui_version, shared_comfyui_trees
from recare_core import __version__ as CORE_VERSION

PYPROJECT = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED_CODE = [PACK_ROOT / "__init__.py", *sorted((PACK_ROOT / "nodes").rglob("*.py")),
                *sorted((PACK_ROOT / "recare_core").rglob("*.py"))]


def test_node_id_follows_the_registry_rules():
    name = PYPROJECT["project"]["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name), "letters, digits, single - _ . between"
    assert "comfyui" not in name.lower(), "the Registry asks node ids not to include 'ComfyUI'"


def test_version_is_semantic_and_matches_the_core():
    version = PYPROJECT["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert version == CORE_VERSION, "pyproject.toml and recare_core.__version__ (written into erasure files) differ"


def test_tool_comfy_names_publisher_and_supported_comfyui_range():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"].strip()
    supported = SpecifierSet(comfy["requires-comfyui"])
    for release in ("0.3.64", "0.33.0"):
        assert Version(release) in supported, release
    names = {Requirement(line).name.lower() for line in PYPROJECT["project"]["dependencies"]}
    assert not names & {"torch", "torchvision", "torchaudio"}, "users bring their own torch build"


@pytest.mark.parametrize("tree", shared_comfyui_trees(), ids=lambda tree: tree.name)
def test_every_tested_comfyui_release_is_in_the_supported_range(tree):
    assert Version(comfyui_version(tree)) in SpecifierSet(PYPROJECT["tool"]["comfy"]["requires-comfyui"])


def _forbidden_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec", "compile", "__import__"}:
                found.append(f"{node.func.id}() at line {node.lineno}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(module.split(".")[0] in {"subprocess", "pip"} for module in modules):
                found.append(f"import of {', '.join(modules)} at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", SHIPPED_CODE, ids=lambda path: str(path.relative_to(PACK_ROOT)))
def test_shipped_code_has_no_eval_exec_or_runtime_installs(path):
    assert _forbidden_calls(ast.parse(path.read_text(encoding="utf-8"))) == []
