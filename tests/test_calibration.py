"""Calibration of the preflight detectors on the shared speech test set (manifest.csv).

Every clip in bad/ must get a warn or fail on the row that names its actual defect; no clean
clip at >= 24 kHz may fail. The table of measured values is printed (run with -s) so the
thresholds in qvtools.preflight.THRESHOLDS can be re-judged when the set changes.
"""

from __future__ import annotations

import csv

import pytest

from qvtools import preflight

pytestmark = pytest.mark.slow

# defect (file-name prefix in bad/) -> rows of which at least one must warn or fail
EXPECTED = {
    "two_speakers": {"second_voice"},
    "noisy": {"snr"},
    "music_bg": {"music"},
    "singing": {"singing"},
    "sr16k": {"sample_rate"},
    "sr8k": {"sample_rate"},
    "too_short": {"duration", "continuous_speech"},
    "stereo": {"channels"},
}

COLUMNS = ["sample_rate", "channels", "duration", "continuous_speech", "pauses", "snr", "music", "singing",
           "second_voice"]


@pytest.fixture(scope="module")
def reports(speech_data):
    with open(speech_data / "manifest.csv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    out = {row["path"]: (row, preflight.check(speech_data / row["path"])) for row in manifest}
    lines = [f"{'file':34} {'status':6} " + " ".join(f"{c[:12]:>12}" for c in COLUMNS)]
    for path, (_, rep) in out.items():
        cells = []
        for c in COLUMNS:
            r = rep[c]
            cells.append(f"{r.status[0]}:{preflight._fmt(r.value)}"[:12].rjust(12))
        lines.append(f"{path.split('/')[-1][:34]:34} {rep.status:6} " + " ".join(cells))
    print("\n" + "\n".join(lines))
    return out


def test_every_bad_clip_names_its_defect(reports):
    bad = {p: v for p, v in reports.items() if v[0]["split"] == "bad"}
    assert len(bad) == 8
    for path, (meta, rep) in bad.items():
        name = path.split("/")[-1]
        key = next((k for k in EXPECTED if name.startswith(k)), None)
        assert key is not None, f"no expectation for {name} (defect: {meta['defect']})"
        flagged = {r.name for r in rep.rows if r.status != "pass"}
        assert flagged & EXPECTED[key], (
            f"{name} ({meta['defect']}): expected a warn/fail on {sorted(EXPECTED[key])}, got\n{rep.to_text()}")
        row = next(rep[n] for n in EXPECTED[key] if rep[n].status != "pass")
        assert row.value is not None and row.limit  # measured value and threshold are reported


def test_no_high_rate_clean_clip_fails(reports):
    clean = {p: v for p, v in reports.items() if v[0]["split"] == "clean"}
    assert len(clean) == 12
    checked = 0
    for path, (meta, rep) in clean.items():
        # the content detectors never fire on clean speech, whatever its rate
        for name in ("snr", "music", "singing", "second_voice"):
            assert rep[name].status == "pass", f"{path}: {name}\n{rep.to_text()}"
        if int(meta["sample_rate"]) >= preflight.MIN_SAMPLE_RATE and meta["format"] == "wav":
            assert rep.ok, f"{path} failed:\n{rep.to_text()}"
            checked += 1
    assert checked >= 5


def test_container_rows_match_manifest(reports):
    for path, (meta, rep) in reports.items():
        assert rep.info.sample_rate == int(meta["sample_rate"]), path
        assert rep.info.channels == int(meta["channels"]), path
        assert rep.info.duration_s == pytest.approx(float(meta["duration_s"]), abs=0.01), path
        if meta["format"] == "flac" or meta["bits"] == "32":
            assert rep["format"].status == "fail" and "qvtools prepare" in rep["format"].advice, path
        else:
            assert rep["format"].status == "pass", path
