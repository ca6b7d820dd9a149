"""Shared fixtures: a tiny SD1.5 checkpoint, real ComfyUI objects in-process, and a live ComfyUI server.

Integration tests find ComfyUI through ``COMFYUI_PATH``, then ``~/ComfyUI``, then the newest tree in
``../shared/comfyui/``; without one they are skipped and the run ends with one loud line saying so. Every test that
needs ComfyUI (through the ``comfy_root`` fixture) is marked ``comfy``, so ``pytest -m comfy`` selects exactly the
integration tests, and the run's summary names the ComfyUI release they ran against.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from recare_core.careset.vocabulary import CACHE_ENV_VAR
from comfy_harness import (
    ComfyServer,
    comfyui_version,
    find_comfyui,
    import_comfy_in_process,
    import_pack_in_process,
    write_tiny_sd15_checkpoint,
)

_COMFY_MISSING = (
    "SKIPPED: ComfyUI integration tests — no ComfyUI tree at $COMFYUI_PATH, ~/ComfyUI or ../shared/comfyui/ "
    "(set COMFYUI_PATH to a ComfyUI 0.3.64 .. 0.33 checkout to run them)"
)
_COMFY_USED: list[str] = []  # "0.33.0 at /path" once an integration test has imported ComfyUI

if CACHE_ENV_VAR not in os.environ:
    # One CLIP-vocabulary cache for the whole run, outside the user's cache dir, removed when the run ends. Live
    # servers inherit this process's environment, so they use it too.
    os.environ[CACHE_ENV_VAR] = tempfile.mkdtemp(prefix="recare-test-vocabulary-")
    atexit.register(shutil.rmtree, os.environ[CACHE_ENV_VAR], True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs ComfyUI (it uses ``comfy_root``, directly or through another fixture)."""
    for item in items:
        if "comfy_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.comfy)

@pytest.fixture(scope="session")
def comfy_root() -> Path:
    """The ComfyUI checkout, importable in this process in CPU mode; skips when there is none."""
    root = find_comfyui()
    if root is None:
        pytest.skip(_COMFY_MISSING)
    import_comfy_in_process(root)
    _COMFY_USED.append(f"{comfyui_version(root)} at {root}")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(comfy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised SD1.5-format checkpoint written at test time (never committed)."""
    return write_tiny_sd15_checkpoint(tmp_path_factory.mktemp("checkpoints") / "tiny_sd15.safetensors")


@pytest.fixture(scope="session")
def comfy_models(tiny_checkpoint: Path) -> dict[str, Any]:
    """Real ComfyUI ``MODEL``, ``CLIP`` and ``VAE`` objects, loaded by ComfyUI's own checkpoint loader."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(tiny_checkpoint), output_vae=True, output_clip=True
    )
    return {"model": model, "clip": clip, "vae": vae}


@pytest.fixture(scope="session")
def recare_pack(comfy_root: Path) -> Any:
    """This repository imported as a ComfyUI custom-node package (``comfyui_recare``)."""
    return import_pack_in_process()


@pytest.fixture(scope="session")
def comfy_server(comfy_root: Path, tiny_checkpoint: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A live ``main.py --cpu`` on a free loopback port with this pack in its ``custom_nodes/``."""
    server = ComfyServer(comfy_root, tmp_path_factory.mktemp("comfy_base"), tiny_checkpoint).start()
    try:
        yield server
    finally:
        server.stop()


def _loud_skip_reasons(terminalreporter: Any) -> set[str]:
    """Skip reasons that start with ``SKIPPED`` (whole test groups that could not run on this machine)."""
    reasons = set()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith("SKIPPED"):
            reasons.add(reason)
    return reasons


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """End the run with one loud line per test group that could not run (no ComfyUI, no browser, no NudeNet)."""
    for reason in sorted(_loud_skip_reasons(terminalreporter)):
        terminalreporter.write_sep("!", reason, red=True, bold=True)
    for used in _COMFY_USED:
        terminalreporter.write_sep("=", f"ComfyUI integration tests ran against ComfyUI {used}", bold=True)


# SDXL-family and SD 2.x fixtures (tiny cached checkpoints; issue 15).
from family_fixtures import family_server, sd2_checkpoint, sdxl_checkpoint  # noqa: E402,F401
