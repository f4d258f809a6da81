"""The listening-test widget in a real browser (issue 21 item 4): JupyterLab + Debian chromium (playwright,
``executable_path``, never ``playwright install``; the server fixture of tests/test_jupyterlab_browser.py).

A notebook shows a short ``ab`` test and a ``smos`` test on a run directory; the test clicks through both in the
page, then checks that every answer landed in ``RUN_DIR/listening/<rater>.jsonl`` with the clicked value, and that
no model name was anywhere in the page. Skipped with the reason when chromium, playwright or jupyter is absent.
``QVTOOLS_UPDATE_SCREENSHOT=1`` also writes ``docs/screenshot_listening.png``.
"""

from __future__ import annotations

import json
import os
import shutil

import nbformat
import pytest

from test_jupyterlab_browser import CHROMIUM, ROOT, lab, open_notebook, playwright_api  # noqa: F401 -- shared
from test_listening import FLASH, PLUS, make_run

pytestmark = pytest.mark.slow

NOTEBOOK = "listening_test.ipynb"
AB_CLICKS = ("a", "b", "tie")
SMOS_CLICKS = ("5", "2")


def _notebook(path, run_dir) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [
        nbformat.v4.new_code_cell("from qvtools.widgets import ListeningTest\n"
                                  f"ab = ListeningTest({str(run_dir)!r}, 'ann', 'ab', limit={len(AB_CLICKS)})\nab"),
        nbformat.v4.new_code_cell(f"smos = ListeningTest({str(run_dir)!r}, 'ann', 'smos', limit={len(SMOS_CLICKS)})\n"
                                  "smos"),
    ]
    nbformat.write(nb, str(path))


def _click_through(page, test, clicks) -> None:
    for i, name in enumerate(clicks):
        page.wait_for_function(
            """([el, want]) => el.innerText.includes(want)""",
            arg=[test.element_handle(), f"Trial {i + 1} of {len(clicks)}"], timeout=60_000)
        test.locator(f".qv-answer-{name}").click()
    page.wait_for_function("""([el, want]) => el.innerText.includes(want)""",
                           arg=[test.element_handle(), f"All {len(clicks)} trials answered"], timeout=60_000)


def test_listening_widget_clicks_land_in_the_answer_file(lab, playwright_api, tmp_path):  # noqa: F811
    run_dir = make_run(tmp_path / "run", voices=2, prompts=2)
    _notebook(lab["dir"] / NOTEBOOK, run_dir)
    browser = playwright_api.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        open_notebook(page, lab, NOTEBOOK)
        page.add_style_tag(content=".Toastify { display: none !important; }")  # JupyterLab's news toast
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function(
            """() => { if (document.querySelector(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"))
                         return true;
                       return document.querySelectorAll('.qv-listening-test .qv-answer').length >= 8; }""",
            timeout=300_000)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, "a cell failed:\n" + errors.first.inner_text()[-3000:]
        ab, smos = page.locator(".qv-listening-test").nth(0), page.locator(".qv-listening-test").nth(1)
        assert ab.locator("audio").count() == 3  # reference, A, B
        assert ab.locator("audio").first.get_attribute("src").startswith("data:audio/wav;base64,")
        shot = tmp_path / "listening.png"
        ab.screenshot(path=str(shot))
        page_html = page.content()
        for name in (PLUS, FLASH, "omni-plus", "omni-flash", "audio/v"):
            assert name not in page_html, f"{name!r} is in the page: the test is not blinded"

        _click_through(page, ab, AB_CLICKS)
        assert smos.locator("audio").count() == 2  # reference, this voice
        _click_through(page, smos, SMOS_CLICKS)
        assert PLUS not in page.content() and FLASH not in page.content()
    finally:
        browser.close()

    lines = [json.loads(x) for x in (run_dir / "listening" / "ann.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a["kind"] for a in lines] == ["ab"] * 3 + ["smos"] * 2
    assert [a["answer"] for a in lines] == ["A", "B", "tie", 5, 2]
    assert all(set(a["shown"]) == {PLUS, FLASH} for a in lines[:3])
    assert len({a["seed"] for a in lines[:3]}) == 1 and all(a["rater"] == "ann" for a in lines)
    assert shot.stat().st_size > 1000
    if os.environ.get("QVTOOLS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "screenshot_listening.png")
