"""Benchmark: microphone frame -> kernel transport delay of the qvtools microphone widgets (issue 14).

Run: python benchmarks/bench_mic_transport.py [--seconds 10] [--clip WAV] [--chromium /usr/bin/chromium]

Starts a headless JupyterLab on 127.0.0.1, opens a notebook showing a ``Recorder`` in Debian's chromium
(playwright with ``executable_path``; never ``playwright install``) whose fake microphone plays ``--clip``
(default: the first clean English WAV of the shared speech data, ``QVTOOLS_SPEECH_DIR``), records
``--seconds`` and prints the per-frame delay -- kernel receive time minus the browser's timestamp of the
frame, corrected by the ping clock-offset estimate (error bound: half the best ping round trip) -- as
p50/p95/max. This is the local transport (browser -> Jupyter server -> kernel), not service latency.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_KERNEL = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, store_history: false});
  let out = "";
  f.onIOPub = (m) => { if (m.header.msg_type === "stream") out += m.content.text;
                       if (m.header.msg_type === "error") out += "KERNEL ERROR " + m.content.evalue; };
  await f.done;
  return out;
}"""


def default_clip() -> Path:
    root = Path(os.environ.get("QVTOOLS_SPEECH_DIR", Path(__file__).resolve().parents[2] / "shared/data/speech"))
    with open(root / "manifest.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == "clean" and row["language"] == "en" and row["format"] == "wav":
                return root / row["path"]
    raise SystemExit(f"no clean English WAV in {root}/manifest.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, token: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"jupyter lab exited with code {proc.returncode}")
        try:
            if requests.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        try:
            proc.wait(timeout=0.25)  # wait on the process, not a blind sleep
        except subprocess.TimeoutExpired:
            pass
    raise SystemExit("jupyter lab not ready")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = ap.parse_args(argv)
    import nbformat
    from playwright.sync_api import sync_playwright

    clip = args.clip or default_clip()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
        nb.cells = [nbformat.v4.new_code_cell(
            "import json\nfrom qvtools.widgets import Recorder\n"
            f"rec = Recorder(max_seconds={args.seconds!r}, run_preflight=False)\nrec")]
        nbformat.write(nb, str(root / "bench.ipynb"))
        token, port = secrets.token_hex(16), free_port()
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / "jcfg"), JUPYTER_RUNTIME_DIR=str(root / "jrt"))
        log = open(root / "jupyter.log", "wb")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
             "--allow-root", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, token, proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(args.chromium), headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={clip}"])
                page = browser.new_page()
                page.goto(f"{url}/lab/tree/bench.ipynb?token={token}", timeout=60_000)
                page.wait_for_function(
                    """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                               return w && w.sessionContext && w.sessionContext.session &&
                                      w.sessionContext.session.kernel &&
                                      w.sessionContext.session.kernel.status === 'idle'; }""", timeout=90_000)
                page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
                page.locator(".qv-mic-start").click(timeout=120_000)
                page.wait_for_function("() => /recorded/.test(document.querySelector('.qv-mic-status').textContent)",
                                       timeout=(args.seconds + 60) * 1000)
                out = page.evaluate(RUN_KERNEL, "print(json.dumps({'s': rec.transport_summary(), "
                                                "'rate': rec.rate, 'dur': rec.duration_s}))")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    if "KERNEL ERROR" in out:
        raise SystemExit(out)
    r = json.loads(out.strip().splitlines()[-1])
    s = r["s"]
    print(f"clip {clip.name}: recorded {r['dur']:.2f} s at {r['rate']} Hz in {s['n']} frames")
    print(f"transport microphone frame -> kernel: p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, "
          f"max {s['max_ms']:.1f} ms")
    print(f"clock offset kernel - browser {s['clock_offset_ms']:.1f} ms +/- {s['clock_error_ms']:.1f} ms "
          f"(best ping round trip {s['clock_rtt_ms']:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
