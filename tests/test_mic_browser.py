"""The microphone widgets in a real browser (issue 14 item 4): JupyterLab + Debian chromium (playwright,
``executable_path``, never ``playwright install``) with a fake microphone playing a clip from the shared
speech data (``--use-fake-device-for-media-stream --use-fake-ui-for-media-stream
--use-file-for-fake-audio-capture=<wav>``).

One JupyterLab (the server fixture of tests/test_jupyterlab_browser.py) runs a small notebook against the
embedded local service: a :class:`~qvtools.mic.Recorder`, whose recording is enrolled, then a
:class:`~qvtools.mic.LiveTalk` with the clone just made. The test clicks Start; the recorder stops at its cap
(the clip's duration), and the kernel must hold the clip's duration at the browser's rate, pass preflight and
enroll; the live turn's user transcript must match the clip's words (WER). Skipped with the reason when chromium, playwright, jupyter or the speech
data is absent. ``QVTOOLS_UPDATE_SCREENSHOT=1`` also writes ``docs/screenshot_mic.png``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import nbformat
import pytest

from test_jupyterlab_browser import CHROMIUM, ROOT, lab, open_notebook, playwright_api  # noqa: F401 -- shared

pytest.importorskip("anywidget")

pytestmark = pytest.mark.slow

CLIP = "clean/en_F_ljspeech_LJ001-0001.wav"  # LJSpeech, public domain, clean English, 16-bit WAV
NOTEBOOK = "mic_test.ipynb"
MODEL = "qwen3.5-omni-plus-realtime"  # the recording is enrolled for it, then talked to
#: The recording must reach the kernel with the clip's duration: within one capture block (4096 samples
#: at 48 kHz = 85 ms) plus slack for the first block.
DURATION_TOL_S = 0.25
MAX_WER = 0.35

RUN_KERNEL = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, store_history: false});
  let out = "";
  f.onIOPub = (m) => {
    if (m.header.msg_type === "stream") out += m.content.text;
    if (m.header.msg_type === "error") out += "KERNEL ERROR " + m.content.ename + ": " + m.content.evalue;
  };
  await f.done;
  return out;
}"""


@pytest.fixture(scope="module")
def clip(speech_data):
    rows = {r["path"]: r for r in csv.DictReader(open(speech_data / "manifest.csv", encoding="utf-8"))}
    row = rows[CLIP]
    return {"path": speech_data / CLIP, "duration_s": float(row["duration_s"]), "words": row["transcript"]}


def _notebook(path, duration_s: float) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import json\nimport qvtools\nfrom qvtools.widgets import LiveTalk, Recorder\n"
            f"ws = qvtools.connect()\nrec = Recorder(max_seconds={duration_s!r})\nrec"),
        nbformat.v4.new_code_cell(
            f"rt = ws.realtime({MODEL!r}, voice=v, turn_detection='server_vad')\n"
            f"talk = LiveTalk(rt, max_seconds={duration_s!r})\ntalk"),
    ]
    nbformat.write(nb, str(path))


def _run_cell(page, index: int) -> None:
    """Run one notebook cell (not awaited: the widget waits below bound it)."""
    page.evaluate("""(i) => { const w = window.jupyterapp.shell.currentWidget;
                             w.content.activeCellIndex = i;
                             window.jupyterapp.commands.execute('notebook:run-cell'); }""", index)


def _wait_widgets(page, n: int) -> None:
    page.wait_for_function(
        """(n) => { if (document.querySelector(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"))
                      return true;
                    return document.querySelectorAll('.qv-mic .qv-mic-start').length >= n; }""",
        arg=n, timeout=300_000)


def _run(page, code: str) -> str:
    out = page.evaluate(RUN_KERNEL, code)
    assert "KERNEL ERROR" not in out, out
    return out


def test_microphone_records_enrolls_and_talks(lab, playwright_api, clip, tmp_path):  # noqa: F811
    _notebook(lab["dir"] / NOTEBOOK, clip["duration_s"])
    browser = playwright_api.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
              "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={clip['path']}",
              "--autoplay-policy=no-user-gesture-required"])
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        open_notebook(page, lab, NOTEBOOK)
        page.add_style_tag(content=".Toastify { display: none !important; }")  # JupyterLab's news toast
        _run_cell(page, 0)
        _wait_widgets(page, 1)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, "a cell failed:\n" + errors.first.inner_text()[-3000:]
        recorder = page.locator(".qv-mic").nth(0)

        # 1. record: Start, the page stops at the cap, the preflight table appears
        recorder.locator(".qv-mic-start").click()
        recorder.locator(".qv-mic-report table").wait_for(state="visible", timeout=180_000)
        got = json.loads(_run(page, (
            "x, sr = rec.recording\n"
            "print(json.dumps({'duration_s': x.size / sr, 'rate': sr, 'ok': rec.report.ok, "
            "'rate_row': rec.report['sample_rate'].status, 'transport': rec.transport_summary(), "
            "'peak': float(abs(x).max())}))")).strip().splitlines()[-1])
        assert got["rate"] >= 24000  # the browser's capture rate (usually 48 kHz), not resampled
        assert abs(got["duration_s"] - clip["duration_s"]) <= DURATION_TOL_S, got
        assert got["peak"] > 0.05, "the fake microphone's speech did not reach the kernel"
        assert got["ok"] and got["rate_row"] == "pass", got
        t = got["transport"]
        assert t["n"] > 10 and t["p50_ms"] is not None and t["clock_offset_ms"] is not None, t
        # loopback transport: not negative beyond the clock's error bound, and well under the frame rate's backlog
        assert -t["clock_error_ms"] - 5 <= t["p50_ms"] <= 2000, t
        shot = tmp_path / "mic.png"
        recorder.screenshot(path=str(shot))

        # 2. enroll the recording on the local service
        voice = _run(page, f"v = ws.voices.create(rec.wav, {MODEL!r}, 'micbrowser', language='en')\n"
                           "print(v.voice)").strip()
        assert voice and "micbrowser" in voice

        # 3. talk to the clone just enrolled (the second cell opens the session with it)
        _run_cell(page, 1)
        _wait_widgets(page, 2)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, "a cell failed:\n" + errors.first.inner_text()[-3000:]
        talker = page.locator(".qv-mic").nth(1)

        # a live turn: the reply's user transcript matches the fake microphone's words
        talker.locator(".qv-mic-start").click()
        page.wait_for_function(
            "() => /turn 1:/.test(document.querySelectorAll('.qv-mic')[1].querySelector('.qv-mic-status')"
            ".textContent)", timeout=240_000)
        row = json.loads(_run(page, (
            "talk.wait_idle(30)\nprint(json.dumps(talk.turns[0].row(), default=str))")).strip().splitlines()[-1])
        from qvtools.metrics import wer

        assert row["status"] == "completed" and row["voice"] == voice, row
        assert wer(clip["words"], row["user_transcript"] or "", language="en") <= MAX_WER, row["user_transcript"]
        assert row["ttfa_ms"] is not None and row["transport_p50_ms"] is not None
        assert row["transport_n"] > 10 and row["mic_rate"] >= 24000
        page.locator(".qv-mic").nth(1).scroll_into_view_if_needed()
        (tmp_path / "live.json").write_text(json.dumps(row, default=str), encoding="utf-8")
        if os.environ.get("QVTOOLS_UPDATE_SCREENSHOT") == "1":
            both = tmp_path / "mic_both.png"
            page.locator(".jp-Notebook").first.screenshot(path=str(both))
            shutil.copyfile(both, ROOT / "docs" / "screenshot_mic.png")
    finally:
        browser.close()
