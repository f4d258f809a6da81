"""Comparison runner: journal bookkeeping (offline) and whole runs against the real local service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qvtools import experiment as ex
from qvtools.errors import ConfigError, QVError

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-FAKEKEY-qvtools-test-7f3a9c"


# --------------------------------------------------------------------------- offline bookkeeping

def test_turn_id_is_deterministic_safe_and_distinct():
    a = ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 0)
    assert a == ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 0)
    assert a.startswith("ava__qwen3.5-omni-plus-realtime__weather__r0__")
    others = {ex.turn_id("ava", "qwen3.5-omni-flash-realtime", "weather", 0),
              ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 1),
              ex.turn_id("ava x", "qwen3.5-omni-plus-realtime", "weather", 0),
              ex.turn_id("ava/x", "qwen3.5-omni-plus-realtime", "weather", 0)}
    assert a not in others and len(others) == 4
    assert "/" not in ex.turn_id("a/b", "m", "../p", 0)


def test_append_and_read_rows_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "turns.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        ex.append_row(fh, {"turn_id": "t1", "status": "completed", "ttfa_ms": float("nan")})
        ex.append_row(fh, {"turn_id": "t2", "status": "failed", "error": "boom"})
    with open(path, "ab") as fh:
        fh.write(b'{"turn_id": "t3", "sta')  # killed mid-write
    rows = ex.read_turns(path)
    assert [r["turn_id"] for r in rows] == ["t1", "t2"]
    ex._repair_tail(path)
    assert path.read_bytes().endswith(b"\n")
    assert [r["turn_id"] for r in ex.read_turns(path)] == ["t1", "t2"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "turns.jsonl"
    path.write_text('{"turn_id": "t1"}\nnot json\n{"turn_id": "t2"}\n')
    with pytest.raises(QVError, match="line 2"):
        ex.read_turns(path)


def test_missing_journal_reads_empty(tmp_path):
    assert ex.read_turns(tmp_path / "nope.jsonl") == []


def test_load_prompts_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ex.load_prompts(tmp_path / "none.json")
    bad = tmp_path / "p.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ex.load_prompts(bad)
    bad.write_text('{"prompts": [{"text": "hi"}]}')
    with pytest.raises(ConfigError, match="'name' and 'file'"):
        ex.load_prompts(bad)


def test_experiment_rejects_bad_arguments(tmp_path):
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:1]
    with pytest.raises(ConfigError, match="repeats"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=0)
    with pytest.raises(ConfigError, match="unknown metrics"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, metrics=["vibes"])
    with pytest.raises(ConfigError, match="unique"):
        ex.Experiment(None, tmp_path, voices=voices * 2, prompts=prompts)
    with pytest.raises(ConfigError, match="no such file"):
        ex.Experiment(None, tmp_path, voices=[tmp_path / "missing.wav"], prompts=prompts)
    with pytest.raises(ConfigError, match="at least one"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=[])


def test_plan_is_seeded_complete_and_interleaved(tmp_path):
    voices, prompts = ex.sample_voices()[:2], ex.sample_prompts()[:2]
    e = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3)
    plan = e.plan()
    assert len(plan) == len(set(plan)) == 2 * 2 * 2 * 2
    assert plan == ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3).plan()
    assert plan != ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=4).plan()


# --------------------------------------------------------------------------- real runs on the local service

MODELS = ("qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """2 voices x 2 models x 1 prompt on the real local service (real sockets, port 0)."""
    from qvtools.config import Settings
    from qvtools.workspace import connect

    base = tmp_path_factory.mktemp("run")
    settings = Settings(region="local", api_key=FAKE_KEY, data_dir=base / "data")
    with connect(settings) as ws:
        assert ws.is_local
        exp = ex.Experiment(ws, base / "run", voices=ex.sample_voices()[:2], prompts=ex.sample_prompts()[2:3],
                            models=MODELS, workers=2, progress=False)
        frame = exp.run()
        again = exp.run()  # everything done: nothing re-run, same table
    return base / "run", frame, again


@pytest.mark.slow
def test_small_run_rows_and_metrics(small_run):
    run_dir, frame, again = small_run
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    assert len(rows) == len(frame) == 4
    assert len({r["turn_id"] for r in rows}) == 4
    import pandas as pd

    parquet = pd.read_parquet(run_dir / ex.RESULTS_FILE)
    assert len(parquet) == 4 and set(parquet["target_model"]) == set(MODELS)
    assert len(again) == 4
    ok = parquet[parquet["status"] == "completed"]
    assert len(ok) == 4, parquet[["turn_id", "status", "error"]].to_string()
    for col in ("ttfa_ms", "ttft_ms", "e2e_ms"):
        assert ok[col].notna().all() and (ok[col] > 0).all(), col
    assert ok["speaker_similarity"].between(-1, 1).all()
    assert ok["f0_ratio"].notna().all() and ok["loudness_lufs"].notna().all() and ok["wer"].notna().all()
    assert ok["simulated"].all() and set(ok["region"]) == {"local"}
    for r in rows:
        assert (run_dir / r["audio_path"]).is_file()
        assert r["turn_wall_s"] >= r["session_s"] + r["metrics_s"] - 1e-6


@pytest.mark.slow
def test_one_enrollment_per_voice_and_model(small_run):
    run_dir, frame, _ = small_run
    voices = json.loads((run_dir / ex.VOICES_FILE).read_text())
    assert len(voices) == 4 and len({v["voice_id"] for v in voices.values()}) == 4
    per_pair = frame.groupby(["voice_ref", "target_model"])["voice"].nunique()
    assert (per_pair == 1).all()


@pytest.mark.slow
def test_run_json_metadata_and_no_key(small_run):
    run_dir, _, _ = small_run
    text = (run_dir / ex.RUN_FILE).read_text()
    assert FAKE_KEY not in text
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert FAKE_KEY not in path.read_text(errors="replace"), path
    meta = json.loads(text)
    assert meta["simulated_latency"] is True and meta["region"] == "local"
    assert meta["models"] == list(MODELS) and meta["seed"] == 0
    assert meta["versions"]["qvtools"] and meta["host"] and meta["finished_at"]
    assert len(meta["sessions"]) == 2 and meta["sessions"][1]["turns_to_run"] == 0
    assert meta["turns_completed"] == 4


@pytest.mark.slow
def test_report_of_a_real_run(small_run):
    from qvtools.report import build_report

    run_dir, _, _ = small_run
    out = build_report(run_dir, quick=True, sample_turns=4, timeout=300)
    html = out.read_text()
    assert out == run_dir / "report.html"
    assert html.count("data:image/png;base64,") >= 3
    assert html.count("<audio controls") == 8  # 4 turns: reply + its reference
    assert "SIMULATED" in html
    assert FAKE_KEY not in html


def _compare_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "qvtools.cli", "compare", "--out", str(out),
            "--voices", str(ex.DATA_DIR / "voices" / "ava.wav"), str(ex.DATA_DIR / "voices" / "dev.wav"),
            "--prompts", str(ex.DATA_DIR / "prompts" / "math.wav"),
            "--models", "qwen3.5-omni-flash-realtime", "--workers", "1", "--no-report"]


@pytest.mark.slow
def test_cli_compare_resumes_after_sigkill(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, QVTOOLS_DATA_DIR=str(tmp_path / "data"), DASHSCOPE_API_KEY=FAKE_KEY)
    env.pop("QVTOOLS_REGION", None)
    env.pop("QVTOOLS_BASE_URL", None)
    turns = out / ex.TURNS_FILE
    proc = subprocess.Popen(_compare_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not ex.read_turns(turns):  # poll for the first durable row (no sleep guess about timing)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no turn row within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    before = ex.read_turns(turns)
    assert 1 <= len(before) <= 2
    with open(turns, "ab") as fh:
        fh.write(b'{"turn_id": "half-writ')  # as if killed mid-write
    res = subprocess.run(_compare_cmd(out), env=env, capture_output=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    after = ex.read_turns(turns)
    ids = [r["turn_id"] for r in after]
    assert len(ids) == len(set(ids)) == 2
    assert after[: len(before)] == before  # finished turns were kept, not re-run
    assert all(r["status"] == "completed" for r in after)
    meta = json.loads((out / ex.RUN_FILE).read_text())
    assert len(meta["sessions"]) == 2 and meta["sessions"][1]["turns_to_run"] == 2 - len(before)
    assert FAKE_KEY not in (out / ex.RUN_FILE).read_text()
    assert FAKE_KEY not in res.stdout.decode() + res.stderr.decode()


# --------------------------------------------------------------------------- progress callback

def test_progress_must_be_a_callable_or_bool(tmp_path):
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:1]
    with pytest.raises(ConfigError, match=r"progress\(done, total, message\)"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, progress="yes")
    quiet = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, progress=False)
    assert not quiet.show_bar and quiet.progress is None
    default = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts)
    assert default.show_bar and default.progress is None


@pytest.mark.slow
def test_progress_callback_after_each_turn_of_a_resumed_run(small_run, tmp_path):
    """Two of the four turns dropped from a copy of the journal: the resumed run reports 3/4 then 4/4."""
    import shutil

    from qvtools.config import Settings
    from qvtools.widgets import RunProgress
    from qvtools.workspace import connect

    src, _, _ = small_run
    run_dir = tmp_path / src.name
    shutil.copytree(src, run_dir)
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    ex._rewrite_rows(run_dir / ex.TURNS_FILE, rows[:2])
    dropped = {r["turn_id"] for r in rows[2:]}
    widget, calls = RunProgress(total=4), []

    def progress(done, total, message):
        calls.append((done, total, message))
        widget(done, total, message)

    settings = Settings(region="local", api_key=FAKE_KEY, data_dir=src.parent / "data")  # same voices
    with connect(settings) as ws:
        frame = ex.Experiment(ws, run_dir, voices=ex.sample_voices()[:2], prompts=ex.sample_prompts()[2:3],
                              models=MODELS, workers=2, metrics=(), progress=progress).run()
    assert [(d, t) for d, t, _ in calls] == [(3, 4), (4, 4)]
    assert len(frame) == 4 and (frame["status"] == "completed").all()
    redone = {r["turn_id"]: r for r in ex.read_turns(run_dir / ex.TURNS_FILE)[2:]}
    assert set(redone) == dropped
    for _, _, message in calls:
        assert message.endswith(": completed") and any(m in message for m in MODELS)
    assert widget.done == 4 and widget.total == 4 and "4 / 4" in widget.label.value
