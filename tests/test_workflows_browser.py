"""Every example workflow loads in ComfyUI's real web page: headless Chromium (Debian's package, driven by
Playwright; no browser download) opens the live server, drops each workflow file on the page the way a user's
drag-and-drop does, and fails on a missing-node dialog, a node count that differs from the file, or a console
error. A screenshot of each loaded graph is saved under ``test-output/browser/`` (or ``$RECARE_TEST_OUTPUT``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from comfy_harness import PACK_ROOT

pytestmark = pytest.mark.comfy

WORKFLOW_DIR = PACK_ROOT / "workflows"
CHROMIUM = os.environ.get("RECARE_CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network: without the background-networking ones Chromium keeps dialling out and logs errors.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DROP_FILE = """async ([name, text]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([text], name, {type: "application/json"}));
    document.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


def _screenshot_dir() -> Path:
    folder = Path(os.environ.get("RECARE_TEST_OUTPUT", PACK_ROOT / "test-output")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser_page(comfy_server):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (see .ci/run)")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        pytest.skip(f"SKIPPED browser test: no Chromium at {CHROMIUM} (apt-get install chromium; see .ci/run)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("response", lambda r: print("RESP", r.status, r.url) if r.status >= 400 else None)
        page.goto(comfy_server.url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
        yield page, errors
        browser.close()


def test_page_starts_without_console_errors(browser_page):
    _, errors = browser_page
    assert errors == []


@pytest.mark.parametrize("path", sorted(WORKFLOW_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_workflow_loads_in_the_web_page_by_drag_and_drop(browser_page, path):
    page, errors = browser_page
    errors.clear()
    workflow = json.loads(path.read_text(encoding="utf-8"))
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate(DROP_FILE, [path.name, path.read_text(encoding="utf-8")])
    expected = sorted(node["type"] for node in workflow["nodes"])
    page.wait_for_function("(count) => window.app.graph.nodes.length === count", arg=len(expected), timeout=30_000)
    page.wait_for_timeout(1000)  # let dialogs and late console messages appear
    page.screenshot(path=str(_screenshot_dir() / f"{path.stem}.png"))
    missing_dialog = page.get_by_text("Some Nodes Are Missing")
    assert missing_dialog.count() == 0, "ComfyUI's page reports missing node types"
    loaded = page.evaluate("() => window.app.graph.nodes.map(n => n.type)")
    assert sorted(loaded) == expected
    assert errors == []
