"""Report: RunView tables/sample, build_report's self-contained HTML, and the page in headless chromium.

The run directory here is written by the test itself (rows in the results schema + WAVs made from
the sample data), so the report is tested fast and deterministically; tests/test_experiment.py
builds a report from a real run on the local service.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from qvtools import experiment as ex
from qvtools import report
from qvtools.audio import load, wav_bytes
from qvtools.errors import ConfigError

MODELS = ("qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime")
CHROMIUM = Path("/usr/bin/chromium")


def _write_run(run_dir: Path, *, simulated: bool = True, failed: int = 1, models=MODELS,
               degraded: str | None = None) -> Path:
    rng = np.random.default_rng(7)
    voices = ex.sample_voices()[:3]
    (run_dir / "audio").mkdir(parents=True)
    reply, sr = load(ex.DATA_DIR / "prompts" / "weather.wav", mono=True)
    rows = []
    for v in voices:
        for m, base in zip(models, (900.0, 400.0)):
            for rep in range(2):
                tid = ex.turn_id(v.name, m, "weather", rep)
                (run_dir / "audio" / f"{tid}.wav").write_bytes(wav_bytes(reply, sr))
                rows.append({"run_id": run_dir.name, "turn_id": tid, "voice_ref": v.name, "voice": f"vc-{v.name}",
                             "target_model": m, "prompt_id": "weather", "repeat": rep, "status": "completed",
                             "region": "local" if simulated else "singapore", "simulated": simulated,
                             "ttfa_ms": base + rng.normal(0, 50), "ttft_ms": base - 20 + rng.normal(0, 50),
                             "e2e_ms": base + 2000 + rng.normal(0, 100), "speaker_similarity": rng.uniform(.6, .9),
                             "wer": rng.uniform(0, .2), "f0_ratio": rng.uniform(.9, 1.1),
                             "loudness_lufs": -23 + rng.normal(), "assistant_transcript": "It is mild <and> sunny.",
                             "audio_path": f"audio/{tid}.wav", "audio_pacing": "realtime",
                             "turn_detection": "server_vad", "vad_silence_ms": 800.0,
                             "latency_origin": "speech_end_sent", "vad_window_included": True,
                             "voice_fallback_mode": True if v.name == degraded and m == models[0] else None,
                             "voice_fallback_reason": "text mismatch" if v.name == degraded else None,
                             "input_text_tokens": 10, "input_audio_tokens": 40, "output_text_tokens": 5,
                             "output_audio_tokens": 60, "input_tokens": 50, "output_tokens": 65})
    for i in range(failed):
        rows.append({"run_id": run_dir.name, "turn_id": ex.turn_id(voices[0].name, models[0], "failed", i), "voice_ref": voices[0].name,
                     "target_model": models[0], "prompt_id": "math", "repeat": 0, "status": "failed",
                     "error": "TransportError: connection reset", "region": "local", "simulated": simulated})
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            ex.append_row(fh, r)
    meta = {"region": "local" if simulated else "singapore", "simulated_latency": simulated,
            "models": list(models), "repeats": 2, "seed": 0, "voices": {v.name: str(v.path) for v in voices},
            "prompts": {"weather": {}}, "planned_turns": len(rows), "versions": {"qvtools": "0.1.0"}}
    (run_dir / ex.RUN_FILE).write_text(json.dumps(meta))
    return run_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run_dir = _write_run(tmp_path_factory.mktemp("r") / "run")
    return run_dir, report.build_report(run_dir, quick=True, sample_turns=4, timeout=300)


def test_run_view_tables_and_sample(tmp_path):
    view = report.load_run(_write_run(tmp_path / "run"), quick=True)
    assert view.simulated and len(view.ok) == 12 and view.models == list(MODELS)
    summary = view.summary_table()
    assert set(summary.index.get_level_values("target_model")) == set(MODELS)
    assert {"ttfa_ms", "speaker_similarity", "wer"} <= set(summary.index.get_level_values("metric"))
    paired = view.paired_table()
    assert paired.loc["ttfa_ms", "n_pairs"] == 6 and paired.loc["ttfa_ms", "median_diff"] > 300
    sample = view.sample(4)
    assert len(sample) == 4
    # pairs of the same (voice, prompt, repeat) under both models, spread over voices
    assert sample.groupby(["voice_ref", "prompt_id", "repeat"])["target_model"].nunique().eq(2).all()
    assert sample["voice_ref"].nunique() == 2
    assert len(view.failures_table()) == 1


def test_load_run_errors(tmp_path):
    with pytest.raises(ConfigError, match="no run directory"):
        report.load_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="turns.jsonl"):
        report.load_run(tmp_path)


@pytest.mark.slow
def test_report_html_is_self_contained(built):
    run_dir, out = built
    html = out.read_text()
    assert out == run_dir / "report.html"
    assert html.count("data:image/png;base64,") >= 4
    assert html.count('<audio controls') == 8
    assert html.count("data:audio/wav;base64,") == 8
    assert "SIMULATED" in html
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="https?:', html)  # nothing fetched
    assert "def " not in html and "import " not in html  # code cells hidden
    assert "It is mild &lt;and&gt; sunny." in html  # transcripts escaped
    assert "connection reset" in html  # failed turns listed
    assert "How latencies were measured." in html and "microphone pace" in html
    assert "No price table was given" in html  # no cost estimate without the user's table


def test_summary_flags_timing_metrics_and_header_names_the_latency_source(tmp_path):
    import pandas as pd

    run_dir = _write_run(tmp_path / "run")
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            ex.append_row(fh, {**r, "latency_source": "replay:cloud-run/results.parquet", "delivery_rtf": 2.0})
    view = report.load_run(run_dir, quick=True)
    summary = view.summary_table()
    flags = summary["simulated"].groupby(level="metric").all()
    assert flags["ttfa_ms"] and flags["delivery_rtf"] and not flags["speaker_similarity"] and not flags["wer"]
    assert "Latency source: replay:cloud-run/results.parquet." in view.header_html()
    meta = view.metadata_table()
    assert meta.loc["latency source", "value"] == "replay:cloud-run/results.parquet"
    assert isinstance(meta, pd.DataFrame)


def test_no_simulated_note_for_cloud_runs(tmp_path):
    view = report.load_run(_write_run(tmp_path / "run", simulated=False))
    assert not view.simulated and "SIMULATED" not in view.header_html()


def test_notebook_is_thin_and_parameterised():
    import nbformat

    nb = nbformat.read(report.NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    for c in code:
        assert "def " not in c.source and "class " not in c.source
        assert not c.get("outputs")


def test_missing_parameters_cell_is_an_error(tmp_path):
    import nbformat

    nb = nbformat.read(report.NOTEBOOK, as_version=4)
    for c in nb.cells:
        c.metadata.pop("tags", None)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(Exception, match="parameters"):
        report.build_report(_write_run(tmp_path / "run"), notebook=path)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (apt-get install chromium)")
def test_report_in_headless_chromium(built):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    _, out = built
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.goto(out.as_uri(), wait_until="load", timeout=60_000)
            images = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth])")
            assert len(images) >= 4 and all(ok and w > 100 for ok, w in images), images
            durations = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(a =>
                a.readyState >= 1 ? a.duration : new Promise(r => {
                    a.addEventListener('loadedmetadata', () => r(a.duration));
                    a.addEventListener('error', () => r(-1)); a.load(); })))""")
            assert len(durations) == 8 and all(d > 1.0 for d in durations), durations
            assert page.get_by_text("SIMULATED", exact=False).first.is_visible()
            assert problems == []
        finally:
            browser.close()


# --------------------------------------------------------------------------- issue 9: models, degraded clones, cost

OTHER = ("qwen3-omni-flash-realtime", "qwen9-omni-giga-realtime")


def test_report_pairs_any_model_names(tmp_path):
    view = report.load_run(_write_run(tmp_path / "run", models=OTHER), quick=True)
    assert view.models == list(OTHER)
    paired = view.paired_table()
    row = paired.loc["ttfa_ms"]
    assert (row["a"], row["b"]) == OTHER and row["n_pairs"] == 6 and row["median_diff"] > 300


def test_degraded_clones_are_listed_and_flagged(tmp_path):
    name = ex.sample_voices()[1].name
    view = report.load_run(_write_run(tmp_path / "run", degraded=name), quick=True)
    table = view.fallback_table()
    assert list(zip(table["voice_ref"], table["target_model"])) == [(name, MODELS[0])]
    assert table["turns"].tolist() == [2] and table["fallback_reason"].tolist() == ["text mismatch"]
    header = view.header_html()
    assert "DEGRADED" in header and f"{name} for {MODELS[0]}" in header
    assert "DEGRADED clone" in view.audio_html(12)
    clean = report.load_run(_write_run(tmp_path / "clean"), quick=True)
    assert isinstance(clean.fallback_table(), str) and "DEGRADED" not in clean.header_html()


def test_header_says_what_latencies_are_measured_from(tmp_path):
    view = report.load_run(_write_run(tmp_path / "run"))
    note = view.latency_note()
    assert "last audio chunk holding speech" in note and "microphone pace" in note
    assert "800 ms" in note and "INCLUDE" in note
    assert html_escape(note) in view.header_html()


def html_escape(text):
    import html

    return html.escape(text)


def test_token_totals_and_user_priced_cost(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    view = report.load_run(run_dir)
    usage = view.usage_table()
    assert usage.loc[MODELS[0], "input_audio_tokens"] == 6 * 40 and usage.loc[MODELS[1], "output_audio_tokens"] == 6 * 60
    assert isinstance(view.cost_table(), str)  # no table, no estimate
    prices = {"currency": "XYZ", "source": "unit test", "per_tokens": 1000,
              "models": {m: {"input_text": 1, "input_audio": 1, "output_text": 1, "output_audio": 1} for m in MODELS}}
    (run_dir / ex.PRICES_FILE).write_text(json.dumps(prices))
    cost = report.load_run(run_dir).cost_table()
    assert cost.loc[MODELS[0], "cost"] == pytest.approx(6 * (10 + 40 + 5 + 60) / 1000)
    with pytest.raises(ConfigError, match="currency"):
        report.load_run(run_dir, prices={"models": {MODELS[0]: {}}})
    with pytest.raises(ConfigError, match="price table not found"):
        report.build_report(run_dir, prices=tmp_path / "none.json")


def test_one_audio_builder_for_report_and_widgets(tmp_path):
    """report.audio_tag is the only <audio> builder: the notebook player is the same element, and the
    report's trimmed, resampled copy is a 16-bit mono WAV of max_s seconds at `rate`."""
    import base64
    import io

    import soundfile as sf

    sr = 24000
    x = (0.1 * np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr)).astype(np.float32)
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(x, sr))
    untouched = report.audio_tag(path, title="a <clip>")
    assert untouched.startswith("<audio controls") and 'title="a &lt;clip&gt;"' in untouched
    src = re.search(r'src="data:audio/wav;base64,([^"]+)"', untouched).group(1)
    assert base64.b64decode(src) == path.read_bytes()
    small = report.audio_tag((x, sr), max_s=1.0, rate=report.EMBED_SR)
    y, ysr = sf.read(io.BytesIO(base64.b64decode(re.search(r'base64,([^"]+)"', small).group(1))))
    assert ysr == report.EMBED_SR and len(y) == report.EMBED_SR
    widgets = pytest.importorskip("qvtools.widgets")
    assert widgets.audio_player(path, title="a <clip>").value == untouched


def test_wer_and_cer_each_over_their_own_rows(tmp_path):
    """issue 10 item 5: a Mandarin reply is scored by CER, an English one by WER; the summary, the plots and
    the sample table use each row's error_metric, never a blanket WER (and never CER of English rows)."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = _write_run(tmp_path / "run", failed=0)
    rows = [json.loads(line) for line in (run_dir / ex.TURNS_FILE).read_text().splitlines()]
    zh_voice = rows[0]["voice_ref"]
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            zh = r["voice_ref"] == zh_voice
            # as metrics.score_transcript writes them: cer always scored, wer NaN for zh
            r.update(asr_language="zh" if zh else "en", error_metric="cer" if zh else "wer",
                     cer=0.3 if zh else 0.05, wer=float("nan") if zh else r["wer"])
            r["error_rate"] = r["cer"] if zh else r["wer"]
            ex.append_row(fh, r)
    view = report.load_run(run_dir, quick=True)
    summary = view.summary_table()
    metrics_shown = set(summary.index.get_level_values("metric"))
    assert {"wer", "cer"} <= metrics_shown
    n_zh = sum(r["voice_ref"] == zh_voice for r in rows) // len(MODELS)
    for model in MODELS:
        assert summary.loc[(model, "cer"), "n_valid"] == n_zh  # only the Mandarin rows
        assert summary.loc[(model, "cer"), "p50"] == pytest.approx(0.3)  # no English CER of 0.05 mixed in
        assert summary.loc[(model, "wer"), "n_valid"] == 6 - n_zh
    titles = [ax.get_title() for ax in view.plot_quality() if hasattr(ax, "get_title")]
    assert any(t.startswith("CER") for t in titles) and any(t.startswith("WER") for t in titles)
    html_text = view.audio_html(12)
    assert "CER 0.30" in html_text and "WER" in html_text and "CER 0.05" not in html_text
    assert report.ERROR_METRIC_NOTE and "CER" in report.ERROR_METRIC_NOTE


def test_header_names_the_similarity_encoder_and_the_mos_model():
    """Issue 20: the report header says which encoder and MOS model scored the run; none for an older run."""
    import pandas as pd

    from qvtools.report import RunView

    rows = [{"turn_id": "a", "status": "completed", "target_model": "m", "similarity_encoder": "enc-1",
             "mos_model": "DNSMOS x", "ttfa_audible_ms": 500.0}]
    view = RunView(run_dir=Path("run"), meta={}, frame=pd.DataFrame(rows))
    note = view.metrics_note()
    assert "enc-1" in note and "s-normalised" in note and "DNSMOS x" in note and "ttfa_audible_ms" in note
    view.frame = pd.DataFrame([dict(rows[0], similarity_encoder="enc-2"), rows[0]])
    assert "never compare" in view.metrics_note()
    view.frame = pd.DataFrame([{"turn_id": "a", "status": "completed", "target_model": "m"}])
    assert view.metrics_note() == ""


# --------------------------------------------------------------------------- issue 20: the answer first

def _no_reprs_or_section_numbers(text: str) -> None:
    assert "§" not in text, "internal section numbers in the report"
    assert not re.search(r"""['"](None|No |Only one)[^'"]{3,}['"]""", text), "a Python string repr in the report"
    assert not re.search(r"\d\.\d{4,}", text), "an unrounded number in the report"


def test_headline_answers_first_with_rounded_values_and_verdicts(tmp_path):
    view = report.load_run(_write_run(tmp_path / "run"), quick=True)
    head = view.headline()
    assert list(head.index)[0].startswith("time to first audio message (ms) [simulated]")
    assert {"plus", "flash", "p (Holm)", "verdict", "pairs"} <= set(head.columns)
    row = head.iloc[0]
    assert re.fullmatch(r"\d+", row["plus"]) and re.fullmatch(r"\d+", row["flash"])  # ms rounded to whole ms
    assert re.fullmatch(r"-?\d+ \[-?\d+, -?\d+\]", row.iloc[3])
    # three voices x one prompt: three cells, too few for any test to reach 0.05 -- and the verdict says so
    assert row["verdict"].startswith("too few voice × prompt cells")
    note = view.headline_note()
    assert "cluster bootstrap over voices" in note and "Holm" in note and "ttfa_ms" in note
    assert isinstance(note, report.Note) and note._repr_html_().startswith("<p")
    per_voice = view.per_voice_table()
    assert per_voice["similarity (median)"].tolist() == sorted(per_voice["similarity (median)"].tolist())
    assert set(view.summary_table()["interval"]) == {"cluster-voices"}
    for bad in ("'None: every clone used in this run was made normally'", "(§7.9)", "392.9713 ms"):
        with pytest.raises(AssertionError):  # the page check below can fail
            _no_reprs_or_section_numbers(bad)


def test_notebook_keeps_the_headline_first_and_the_metadata_cell_last():
    import nbformat

    nb = nbformat.read(report.NOTEBOOK, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[2] == "display(run.headline_note())\nrun.headline()" and code[-1] == "run.metadata_table()"
    assert not any("§" in c.source for c in nb.cells)


@pytest.mark.slow
def test_report_of_a_real_local_run_opens_with_the_headline(tmp_path):
    """A real run on the local service (two models, real sockets), then its report: the headline comes
    first, and no Python repr, internal section number or unrounded figure reaches the page."""
    run_dir = report.demo_run(tmp_path / "run")
    out = report.build_report(run_dir, quick=True, sample_turns=2, timeout=600)
    page = out.read_text()
    headings = [re.sub(r"<[^>]+>|¶", "", h).strip() for h in re.findall(r"<h2[^>]*>(.*?)</h2>", page, flags=re.S)]
    assert headings[:4] == ["Headline: which model, by how much", "Per reference voice", "Latency",
                            "Detail: summary per model"], headings
    assert "time to first audio message (ms) [simulated]" in page and "p (Holm)" in page
    body = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", page, flags=re.S)
    body = re.sub(r'data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+', "", body)
    _no_reprs_or_section_numbers(re.sub(r"<[^>]+>", " ", body))


def test_headline_uses_the_naturalness_similarity_and_audible_latency_columns_when_present(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    rng = np.random.default_rng(0)
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            extra = {}
            if r.get("status") == "completed":
                extra = {"ttfa_audible_ms": r["ttfa_ms"] + 200.0, "reply_leading_silence_ms": 200.0,
                         "mos_ovrl": 3.1 + rng.normal(0, 0.1), "speaker_identified": bool(rng.random() < 0.8),
                         "ref_ceiling_similarity": 0.85, "similarity_encoder": "onnx-256"}
            ex.append_row(fh, {**r, **extra})
    view = report.load_run(run_dir, quick=True)
    head = view.headline()
    assert list(head.index)[0] == "time to first audible speech (ms) [simulated]"
    ident = head.loc["identification rate"]
    assert ident["statistic"] == "rate" and ident["plus"].endswith(" %")
    assert "DNSMOS overall" in head.index
    note = view.headline_note()
    assert "ttfa_audible_ms" in note and "onnx-256 encoder" in note
    per_voice = view.per_voice_table()
    assert {"identified", "mos_ovrl", "ref_ceiling_similarity"} <= set(per_voice.columns)


def test_two_encoders_are_never_pooled(tmp_path):
    """A run whose rows were scored by two speaker encoders (e.g. half calibrated by resemblyzer, half left with
    the per-turn d-vector cosine): no table or headline pools their similarity; the notes give each encoder's
    median per model instead, and how to rescore with one."""
    run_dir = _write_run(tmp_path / "run")
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    first = ex.sample_voices()[0].name
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            if r.get("status") == "completed":
                enc = "enc-A" if r["voice_ref"] == first else "enc-B"
                r = {**r, "similarity_encoder": enc, "speaker_identified": True, "ref_ceiling_similarity": 0.9,
                     "speaker_similarity": (0.95 if enc == "enc-A" else 0.30)}
            ex.append_row(fh, r)
    view = report.load_run(run_dir, quick=True)
    assert set(view.mixed_encoders) == {"enc-A", "enc-B"}
    assert view.mixed_encoders["enc-A"][MODELS[0]] == (pytest.approx(0.95), 2)
    assert view.mixed_encoders["enc-B"][MODELS[1]] == (pytest.approx(0.30), 4)
    head = view.headline()
    assert not [m for m in head.index if "similarity" in m or "identification" in m]
    assert "speaker_similarity" not in set(view.summary_table().index.get_level_values("metric"))
    assert "speaker_similarity" not in set(view.paired_table().index)
    per_voice = view.per_voice_table()
    assert not {"similarity (median)", "identified", "ref_ceiling_similarity"} & set(per_voice.columns)
    for note in (view.metrics_note(), str(view.headline_note()._repr_markdown_())):
        assert "enc-A: " in note and "enc-B: " in note and "rather than pooled" in note
        assert "--similarity-encoder" in note
    # one encoder: nothing is blanked
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for r in rows:
            ex.append_row(fh, {**r, "similarity_encoder": "enc-A"} if r.get("status") == "completed" else r)
    view = report.load_run(run_dir, quick=True)
    assert view.mixed_encoders == {} and view.ok["speaker_similarity"].notna().all()
