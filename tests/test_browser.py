"""JupyterLab in a real browser: widgets and charts work, with every outside request blocked.

Playwright drives Debian's Chromium (`/usr/bin/chromium`; Playwright's own browser download is
never used). `.ci/run` installs Chromium when missing; elsewhere this test is skipped, saying why.
Screenshots land in build/screenshots/ as test artifacts.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from workbench import runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SHOTS = ROOT / "build" / "screenshots"
EXECUTED = ROOT / "build" / "test-executed" / "duckdb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "workbench-browser-test"
VISIBLE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
PAGES = itertools.count()
IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
CHART = ".jp-OutputArea-output .vega-embed, .jp-RenderedSVG svg, .jp-RenderedSVG img"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token and a fresh workspace, serving a scratch folder."""
    root = tmp_path_factory.mktemp("lab")
    settings = {  # render every cell (no windowing), start the notebook's kernel without asking,
        # and no news pop-up asking to go online
        "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none", "autoStartDefaultKernel": true}',
        "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
    }
    for plugin, text in settings.items():
        folder, _, name = plugin.rpartition("/")
        (root / ".settings" / folder).mkdir(parents=True, exist_ok=True)
        (root / ".settings" / folder / f"{name}.jupyterlab-settings").write_text(text)
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / ".config"),
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
    }
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={root / '.workspaces'}",
        f"--LabApp.user_settings_dir={root / '.settings'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    log = (root / "jupyter.log").open(
        "wb"
    )  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + (root / "jupyter.log").read_text()[-2000:])
    yield root, base
    server.terminate()
    server.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield chromium
        chromium.close()


def open_page(browser, base: str, name: str, live: bool = False):
    """Open notebook `name` in a workspace of its own (so tabs left by earlier pages never hide
    it), with its kernel running when `live`, on a page whose requests may only go to this
    machine; anything else is recorded and refused."""
    workspace = f"t{next(PAGES)}"
    url = f"{base}/lab/workspaces/{workspace}/tree/{name}?token={TOKEN}"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)  # a loaded 2-core machine renders slowly; never flaky
    outside: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "file:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", guard)
    page.goto(url)
    page.wait_for_selector(VISIBLE_NOTEBOOK, timeout=60_000)
    if live:
        # Cells run within a second of the kernel starting can reach it before JupyterLab's
        # widget manager has registered with it: their widgets then stay "Loading widget..."
        # (seen here every time without a pause, never after one). A person never clicks that
        # fast; give the page the moment a person would.
        page.wait_for_selector(IDLE, timeout=120_000)
        page.wait_for_timeout(3000)
    return page, outside


def run_all(page, timeout_s: float = 240) -> None:
    """Run every cell from the Run menu and wait until no cell is queued or running.

    A click that lands before the kernel is connected does nothing, so it is repeated until
    cells are queued or numbered."""
    page.wait_for_selector(IDLE, timeout=60_000)
    prompts = page.locator(f"{VISIBLE_NOTEBOOK} .jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + timeout_s
    started = False
    while time.monotonic() < deadline:
        if not started:
            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click("li.lm-Menu-item:has-text('Run All Cells')")
            page.wait_for_timeout(2000)
            started = any(re.search(r"\[(\*|\d+)\]", t) for t in prompts.all_inner_texts())
            continue
        busy = page.locator(".jp-InputPrompt:has-text('[*]')").count()
        if busy == 0 and page.locator(IDLE).count():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the notebook did not {'finish' if started else 'start'} running in time")


def errors_on(page) -> list[str]:
    return page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:has-text('Traceback'), .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
    ).all_inner_texts()


def executed(notebook: Path) -> Path:
    """An executed copy of `notebook` on duckdb at the tests' scale (reused from the notebook
    tests when they left one in build/test-executed/, else executed here)."""
    copy = EXECUTED / notebook.name
    if not copy.exists():
        record = runs.run(
            notebook, {"scale": 0.001, "show_solutions": True}, folder=EXECUTED / notebook.stem,
            progress=False,
        )  # fmt: skip
        runs.raise_for(record)
        shutil.copy(record.outputs["ipynb"], copy)
    return copy


def test_streaming_widgets_drive_the_chart(lab, browser):
    """Open 04_streaming, run all cells, move a slider: the chart and the widget output update."""
    root, base = lab
    source = ROOT / "notebooks" / "04_streaming.ipynb"
    if not source.exists():
        pytest.skip("notebooks/04_streaming.ipynb is not there yet")
    nb = nbformat.read(source, as_version=4)
    for (
        cell
    ) in nb.cells:  # the tests' scale keeps the run short; the notebook is otherwise as shipped
        if "parameters" in cell.metadata.get("tags", []):
            cell.source += "\nscale = 0.001"
    nbformat.write(nb, root / source.name)
    page, outside = open_page(browser, base, source.name, live=True)
    run_all(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "04_streaming_run_all.png"), full_page=False)
    assert not errors_on(page), errors_on(page)
    assert page.locator(CHART).count() >= 1
    slider = page.locator(".widget-slider .noUi-handle, .widget-slider input[type=range]").first
    slider.scroll_into_view_if_needed()
    outputs = page.locator(".jupyter-widgets-output-area, .widget-output")
    before_readout = page.locator(".widget-slider .widget-readout").first.inner_text()
    before = outputs.first.inner_html()
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "(before) => { const o = document.querySelector('.jupyter-widgets-output-area, .widget-output');"
        " return o && o.innerHTML !== before; }",
        arg=before, timeout=60_000,
    )  # fmt: skip
    after_readout = page.locator(".widget-slider .widget-readout").first.inner_text()
    assert after_readout != before_readout
    assert outputs.first.locator(".vega-embed, svg, img").count() >= 1, (
        "the redrawn output has a chart"
    )
    page.screenshot(path=str(SHOTS / "04_streaming_after_slider.png"), full_page=False)
    assert not outside, f"requests left the machine: {outside[:5]}"
    page.close()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_charts_render_offline(lab, browser, notebook):
    """An executed notebook opened as it is (untrusted) shows its charts with no network."""
    root, base = lab
    copy = executed(notebook)
    charts = sum(
        1 for cell in nbformat.read(copy, as_version=4).cells if cell.cell_type == "code"
        for o in cell.get("outputs", []) if "image/svg+xml" in o.get("data", {})
    )  # fmt: skip
    target = root / f"executed_{notebook.name}"
    shutil.copy(copy, target)
    page, outside = open_page(browser, base, target.name)
    page.wait_for_timeout(1500)
    rendered = page.locator(CHART)
    for _ in range(160):  # outputs render asynchronously: wait for them (40 s at most)
        if rendered.count() >= charts:
            break
        page.wait_for_timeout(250)
    rendered.first.scroll_into_view_if_needed()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{notebook.stem}_executed.png"))
    assert charts >= 1 and rendered.count() >= charts, (rendered.count(), charts)
    assert not outside, f"requests left the machine: {outside[:5]}"
    page.close()
