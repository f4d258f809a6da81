"""End to end in a real browser: JupyterLab (headless server) + Debian chromium driven by playwright.

Opens ``notebooks/03_compare_target_models.ipynb`` from a temporary copy of the notebooks directory,
runs all cells against the local service, and checks that the comparison grid and its ``<audio>``
players rendered. A screenshot is saved under the test's tmp dir (and, with
``QVTOOLS_UPDATE_SCREENSHOT=1``, to ``docs/screenshot_compare.png``).

Skipped (with the reason) when chromium or the playwright package is absent. Never runs
``playwright install``: it drives the system chromium at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "03_compare_target_models.ipynb"
CHROMIUM = Path(os.environ.get("QVTOOLS_CHROMIUM", "/usr/bin/chromium"))
SERVER_START_TIMEOUT_S = 90
RUN_ALL_TIMEOUT_S = float(os.environ.get("QVTOOLS_BROWSER_RUN_TIMEOUT_S", "420"))

pytestmark = pytest.mark.slow


def _free_port() -> int:
    # JupyterLab's --port 0 does not report the bound port on stdout reliably; reserve one instead.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, token: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll the server's REST API until it answers (bounded by ``timeout_s``)."""
    import requests

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            r = requests.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}, timeout=2)
            if r.status_code == 200:
                return
            last = r.status_code
        except requests.RequestException as exc:
            last = exc
        # the server is starting up; wait on its process rather than sleeping blindly
        try:
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
    raise TimeoutError(f"jupyter lab not ready after {timeout_s}s (last: {last})")


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright; "
                    "the system chromium is used, no 'playwright install')")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A headless JupyterLab on a free port serving a throwaway copy of notebooks/."""
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter is not installed next to this Python")
    root = tmp_path_factory.mktemp("lab")
    nb_dir = root / "notebooks"
    shutil.copytree(ROOT / "notebooks", nb_dir)
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ, QVTOOLS_DATA_DIR=str(root / "qvdata"), JUPYTER_CONFIG_DIR=str(root / "jcfg"),
               JUPYTER_RUNTIME_DIR=str(root / "jrt"), PYTHONUNBUFFERED="1")
    env.pop("DASHSCOPE_API_KEY", None)  # the browser test always uses the local service
    env.pop("QVTOOLS_REGION", None)
    log = open(root / "jupyter.log", "wb")
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
           "--ip=127.0.0.1", "--allow-root", f"--ServerApp.token={token}", "--ServerApp.password=",
           f"--ServerApp.root_dir={nb_dir}", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.disable_check_xsrf=True"]
    proc = subprocess.Popen(cmd, cwd=nb_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, token, proc, SERVER_START_TIMEOUT_S)
        yield {"url": url, "token": token, "dir": nb_dir, "log": root / "jupyter.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()



def open_notebook(page, lab, notebook: str) -> None:
    """Open ``notebook`` in the JupyterLab of ``lab`` and wait until its kernel is idle (the kernel must be
    up before running; its status is shown in the notebook toolbar)."""
    page.goto(f"{lab['url']}/lab/tree/{notebook}?token={lab['token']}", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   return w && w.sessionContext && w.sessionContext.session &&
                          w.sessionContext.session.kernel &&
                          w.sessionContext.session.kernel.status === 'idle'; }""", timeout=90_000)


def test_compare_notebook_renders_grid_in_chromium(lab, playwright_api, tmp_path):
    browser = playwright_api.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        open_notebook(page, lab, NOTEBOOK)
        # stored outputs and execution counts go first, so "done" below cannot be a stale count
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        page.wait_for_function(
            """() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
                       for (let i = 0; i < cells.length; i++) {
                         const c = cells.get(i); if (c.type === 'code' && c.executionCount !== null) return false; }
                       return true; }""", timeout=30_000)
        # not awaited here: the bounded wait below decides when the run is over
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        # done = the last cell got an execution count and the kernel is idle again, or a cell failed
        # (run-all stops at an error, so the failure is reported now rather than at the timeout)
        page.wait_for_function(
            """() => { if (document.querySelector(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"))
                         return true;
                       const w = window.jupyterapp.shell.currentWidget;
                       const cells = w.content.model.cells;
                       let last = null;
                       for (let i = 0; i < cells.length; i++) {
                         const c = cells.get(i); if (c.type === 'code') last = c; }
                       return last && last.executionCount !== null &&
                              w.sessionContext.session.kernel.status === 'idle'; }""",
            timeout=RUN_ALL_TIMEOUT_S * 1000)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, "a cell failed:\n" + errors.first.inner_text()[-3000:]
        grid = page.locator(".qv-comparison-grid").first
        grid.wait_for(state="visible", timeout=60_000)
        players = grid.locator("audio")
        n_players = players.count()
        assert n_players >= 3  # reference + plus + flash for at least one voice x prompt row
        src = players.first.get_attribute("src")
        assert src and src.startswith("data:audio/wav;base64,")
        assert grid.locator(".qv-badge").count() >= 2
        comparison = page.locator(".qv-comparison").first
        comparison.scroll_into_view_if_needed()
        shot = tmp_path / "compare.png"
        comparison.screenshot(path=str(shot))
        assert shot.stat().st_size > 1000
        if os.environ.get("QVTOOLS_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, ROOT / "docs" / "screenshot_compare.png")
        # a record of what ran, for debugging a failure
        (tmp_path / "result.json").write_text(json.dumps({"players": n_players}), encoding="utf-8")
    finally:
        browser.close()
