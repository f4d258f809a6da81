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
    t1, t2, t3 = (ex.turn_id("ava", "m", "p", r) for r in range(3))
    with open(path, "a", encoding="utf-8") as fh:
        ex.append_row(fh, {"turn_id": t1, "status": "completed", "ttfa_ms": float("nan")})
        ex.append_row(fh, {"turn_id": t2, "status": "failed", "error": "boom"})
    with open(path, "ab") as fh:
        fh.write(b'{"turn_id": "' + t3.encode() + b'", "sta')  # killed mid-write
    rows = ex.read_turns(path)
    assert [r["turn_id"] for r in rows] == [t1, t2]
    ex._repair_tail(path)
    assert path.read_bytes().endswith(b"\n")
    assert [r["turn_id"] for r in ex.read_turns(path)] == [t1, t2]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "turns.jsonl"
    t1, t2 = ex.turn_id("ava", "m", "p", 0), ex.turn_id("ava", "m", "p", 1)
    path.write_text(f'{{"turn_id": "{t1}"}}\nnot json\n{{"turn_id": "{t2}"}}\n')
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
    # the similarity encoder is resolved before any turn runs (issue 20)
    with pytest.raises(ConfigError, match="unknown similarity encoder"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, similarity_encoder="wavlm")
    with pytest.raises(ConfigError, match="no such ONNX file"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, similarity_encoder=str(tmp_path / "sv.onnx"))
    assert not (tmp_path / ex.TURNS_FILE).exists()


def test_plan_is_seeded_complete_and_interleaved(tmp_path):
    voices, prompts = ex.sample_voices()[:2], ex.sample_prompts()[:2]
    e = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3)
    plan = e.plan()
    assert len(plan) == len(set(plan)) == 2 * 2 * 2 * 2
    assert plan == ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3).plan()
    assert plan != ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=4).plan()


def test_voices_meet_the_prompts_of_their_language(tmp_path):
    """issue 10 item 6: the Mandarin sample voice answers the Mandarin prompts only; voices and prompts
    without a language meet every prompt (as before)."""
    voices, prompts = ex.sample_voices(), ex.sample_prompts()
    e = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, models=MODELS[:1])
    pairs = {(v, p) for v, _m, p, _r in e.plan()}
    assert {p for v, p in pairs if v == "mei"} == {"rain_zh", "cook_zh"}
    assert len(pairs) == 5 * 4 + 2
    untagged = [ex.VoiceSpec.from_path(v.path) for v in voices]
    assert len(ex.Experiment(None, tmp_path, voices=untagged, prompts=prompts, models=MODELS[:1]).plan()) == 6 * 6
    mei = next(v for v in voices if v.name == "mei")
    with pytest.raises(ConfigError, match="no reference voice speaks"):
        ex.Experiment(None, tmp_path, voices=[mei], prompts=[p for p in prompts if p.language == "en"])
    with pytest.raises(ConfigError, match="unsupported language"):
        ex.VoiceSpec("x", mei.path, language="klingon")
    manifest = tmp_path / "voices.json"
    manifest.write_text(json.dumps({"voices": [{"name": "m", "file": str(mei.path), "language": "zh", "text": "t"}]}))
    assert ex.resolve_voices([manifest])[0].enroll_args() == {"language": "zh", "text": "t"}


@pytest.mark.slow
def test_mandarin_row_on_the_local_service(tmp_path):
    """The Mandarin voice is enrolled with language zh and its transcript (the service's text check passes),
    and its row is scored in the reply's own language: CER when the reply is Mandarin, WER otherwise."""
    from qvtools.config import Settings
    from qvtools.workspace import connect

    voices = [v for v in ex.sample_voices() if v.name == "mei"]
    prompts = [p for p in ex.sample_prompts() if p.name == "rain_zh"]
    settings = Settings(region="local", api_key=FAKE_KEY, data_dir=tmp_path / "data")
    with connect(settings) as ws:
        frame = ex.Experiment(ws, tmp_path / "run", voices=voices, prompts=prompts, models=MODELS[1:],
                              metrics=("intelligibility",), progress=False).run()
        [listed] = [v for v in ws.voices.list() if v.preferred_name == "mei"]
    assert listed.language == "zh"
    [row] = frame.to_dict("records")
    assert row["status"] == "completed", row.get("error")
    assert row["error_metric"] == ("cer" if row["asr_language"] in ("zh", "ja", "ko") else "wer")
    assert row["error_rate"] == row[row["error_metric"]]


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
    # issue 11: each row says where the service's delays came from (session.created's qvtools metadata)
    assert set(ok["latency_source"]) == {"simulated:plus", "simulated:flash"}
    meta = json.loads((run_dir / ex.RUN_FILE).read_text())
    assert meta["latency_sources"] == ["simulated:flash", "simulated:plus"]
    # every latency says what it starts at and how the audio was sent (issue 9 item 5)
    assert set(ok["latency_origin"]) == {"speech_end_sent"} and set(ok["audio_pacing"]) == {"fast"}
    assert set(ok["turn_detection"]) == {"server_vad"} and ok["vad_window_included"].all()
    assert not ok["voice_fallback_mode"].fillna(False).any()
    for r in rows:
        assert (run_dir / r["audio_path"]).is_file()
        assert r["turn_wall_s"] >= r["session_s"] + r["metrics_s"] - 1e-6


@pytest.mark.slow
def test_small_run_naturalness_calibrated_similarity_and_audible_latency(small_run):
    """Issue 20: every completed row carries DNSMOS, the calibrated similarity and the audible latency."""
    import pandas as pd

    from qvtools import naturalness, similarity

    run_dir, _, _ = small_run
    ok = pd.read_parquet(run_dir / ex.RESULTS_FILE).query("status == 'completed'")
    assert len(ok) == 4
    for col in ("mos_sig", "mos_bak", "mos_ovrl", "mos_p808", "ref_mos_ovrl"):
        assert ok[col].between(1, 5).all(), col
    assert (ok["mos_ovrl_delta"] - (ok["mos_ovrl"] - ok["ref_mos_ovrl"])).abs().max() < 1e-9
    assert set(ok["mos_model"]) == {naturalness.MODEL_NAME}
    assert set(ok["similarity_encoder"]) == {similarity.get_encoder().name}
    assert ok["speaker_similarity_norm"].notna().all() and ok["speaker_identified"].notna().all()
    assert ok["ref_ceiling_similarity"].between(0, 1).all()
    assert ok.groupby("voice_ref")["ref_ceiling_similarity"].nunique().eq(1).all()  # one ceiling per voice
    assert (ok["reply_leading_silence_ms"] >= 0).all()
    assert (ok["ttfa_audible_ms"] >= ok["ttfa_ms"] + ok["reply_leading_silence_ms"] - 1e-6).all()
    meta = json.loads((run_dir / ex.RUN_FILE).read_text())
    assert meta["similarity_encoder"] == "dvector" and "naturalness" in meta["metrics"]


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
    assert meta["voices_created"] == 4  # 2 voices x 2 models, once (the second run created none)


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


# --------------------------------------------------------------------------- models by name, billing plan, replay

def test_any_model_name_is_accepted_with_a_warning(tmp_path, caplog):
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:1]
    with caplog.at_level("WARNING", logger="qvtools.experiment"):
        e = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts,
                          models=["qwen9-omni-giga-realtime", "qwen3.8-omni-flash-realtime", "gpt-voice"])
    assert e.models == ("qwen9-omni-giga-realtime", "qwen3.8-omni-flash-realtime", "gpt-voice")
    assert len(e.model_warnings) == 2 and "not in the qvtools model catalog" in e.model_warnings[0]
    assert "does not look like" in e.model_warnings[1]
    assert sum("qwen9-omni-giga-realtime" in r.getMessage() for r in caplog.records) == 1
    assert ex.Experiment(None, tmp_path, voices=voices, prompts=prompts).models == MODELS  # catalog default
    with pytest.raises(ConfigError, match="silence_duration_ms"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, silence_duration_ms=100)
    with pytest.raises(ConfigError, match="turn_detection"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, turn_detection="push_to_talk")


@pytest.mark.slow
def test_billing_plan_counts_new_voices_and_turns(small_run, tmp_path):
    """Offline: a fresh registry means every (voice, model) is a creation; journaled turns are not re-run."""
    import dataclasses
    import shutil

    from qvtools.config import Settings
    from qvtools.workspace import connect

    src, _, _ = small_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    ex._rewrite_rows(run_dir / ex.TURNS_FILE, rows[:1])

    @dataclasses.dataclass(frozen=True)
    class CloudLike(Settings):  # billed as the cloud, but nothing is contacted here
        @property
        def is_cloud(self):
            return True

    settings = CloudLike(region="singapore", base_url="http://127.0.0.1:9", api_key=FAKE_KEY,
                         data_dir=tmp_path / "data")
    with connect(settings) as ws:
        e = ex.Experiment(ws, run_dir, voices=ex.sample_voices()[:2], prompts=ex.sample_prompts()[2:3],
                          models=MODELS, progress=False)
        plan = e.billing_plan()
    assert plan.billable and plan.needs_confirmation
    assert plan.turns_to_run == 3 and plan.turns_planned == 4
    assert len(plan.voices_to_create) == 3 and not plan.voices_reused  # the pair of the kept turn is not needed
    text = plan.text()
    assert "create 3 voice(s)" in text and "run 3 realtime turn(s)" in text
    assert "$0.01 per created voice" in text and "1,000 creations" in text and "SEED §2.4" in text
    assert FAKE_KEY not in text
    local = ex.BillingPlan(billable=False, region="local", turns_to_run=3, turns_planned=4,
                           voices_to_create=(("a", "m"),))
    assert not local.needs_confirmation and "$0.01" not in local.text()


def _compare_frames(a, b):
    import pandas as pd

    assert list(a.columns) == list(b.columns)
    a = a.sort_values("turn_id").reset_index(drop=True)
    b = b.sort_values("turn_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_replay_recomputes_results_offline(small_run, tmp_path, monkeypatch):
    """The service of the run is stopped and the settings point at an unused port: replay needs no network
    and recomputes the same table (metrics re-scored from the saved turns and reply WAVs)."""
    import shutil
    import socket

    import pandas as pd

    from qvtools.cli import main

    src, _, _ = small_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    original = pd.read_parquet(run_dir / ex.RESULTS_FILE)
    (run_dir / ex.RESULTS_FILE).unlink()
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    # the journal's metric values are not what replay returns: spoil them and expect them recomputed
    # (valid numbers: a negative ttfa_ms is refused by read_turns, issue 23)
    spoiled = [dict(r, ttfa_ms=123456.0, speaker_similarity=-1.0, wer=99.0) for r in rows]
    ex._rewrite_rows(run_dir / ex.TURNS_FILE, spoiled)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    for k, v in {"QVTOOLS_BASE_URL": dead, "QVTOOLS_REGION": "singapore", "DASHSCOPE_API_KEY": FAKE_KEY}.items():
        monkeypatch.setenv(k, v)
    (run_dir / "report.html").unlink(missing_ok=True)
    attempts = []

    def no_network(sock, address):
        attempts.append(address)
        raise OSError(f"network blocked by the test: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert main(["replay", str(run_dir), "--no-report"]) == 0
    monkeypatch.undo()
    assert attempts == []
    replayed = pd.read_parquet(run_dir / ex.RESULTS_FILE)
    assert (replayed["ttfa_ms"] < 123456.0).all() and replayed["speaker_similarity"].between(0, 1).all()
    _compare_frames(original, replayed)
    assert FAKE_KEY.encode() not in (run_dir / ex.RESULTS_FILE).read_bytes()


@pytest.mark.slow
def test_replay_keeps_reference_metrics_when_the_reference_is_gone(small_run, tmp_path, caplog):
    import shutil

    src, frame, _ = small_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    meta = json.loads((run_dir / ex.RUN_FILE).read_text())
    meta["voices"] = {k: str(tmp_path / "moved" / Path(v).name) for k, v in meta["voices"].items()}
    (run_dir / ex.RUN_FILE).write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="qvtools.experiment"):
        again = ex.replay(run_dir, metrics=("speaker_similarity", "f0_ratio"), write=False)
    assert any("not on disk" in r.getMessage() for r in caplog.records)
    from qvtools.metrics import INTELLIGIBILITY_COLUMNS  # replayed without ASR: those columns are not compared

    asr_cols = list(INTELLIGIBILITY_COLUMNS)
    _compare_frames(frame[again.columns.intersection(frame.columns)].drop(columns=asr_cols, errors="ignore"),
                    again[again.columns.intersection(frame.columns)].drop(columns=asr_cols, errors="ignore"))
    with pytest.raises(ConfigError, match="turns.jsonl"):
        ex.replay(tmp_path)


@pytest.mark.slow
def test_degraded_clone_is_carried_into_every_row(tmp_path, caplog):
    """A create answered with fallback_mode (§7.9): the run warns and each of the voice's turns says so."""
    import dataclasses

    from qvtools.config import Settings
    from qvtools.workspace import connect

    class DegradingRegistry:  # the real registry (real service), its answers marked as degraded clones
        def __init__(self, inner):
            self.inner = inner

        def lookup(self, audio, target_model):
            return self.inner.lookup(audio, target_model)

        def ensure(self, *args, **kwargs):
            voice = self.inner.ensure(*args, **kwargs)
            return dataclasses.replace(voice, fallback_mode=True, fallback_reason="text mismatch")

        def close(self):
            self.inner.close()

    settings = Settings(region="local", api_key=FAKE_KEY, data_dir=tmp_path / "data")
    with connect(settings) as ws:
        ws.registry = DegradingRegistry(ws.registry)
        with caplog.at_level("WARNING", logger="qvtools.experiment"):
            frame = ex.Experiment(ws, tmp_path / "run", voices=ex.sample_voices()[:1],
                                  prompts=ex.sample_prompts()[2:3], models=MODELS[1:], metrics=(),
                                  progress=False).run()
    assert frame["voice_fallback_mode"].tolist() == [True]
    assert frame["voice_fallback_reason"].tolist() == ["text mismatch"]
    assert frame["status"].tolist() == ["completed"]
    assert any("DEGRADED clone" in r.getMessage() for r in caplog.records)
    record = json.loads((tmp_path / "run" / ex.VOICES_FILE).read_text())
    assert [v["fallback_mode"] for v in record.values()] == [True]
    meta = json.loads((tmp_path / "run" / ex.RUN_FILE).read_text())
    assert meta["voices_created"] == 1


def test_provenance_reads_the_silence_window_from_the_effective_config_not_the_echo():
    """§7.2: the real echo has no turn_detection, so the row's VAD window comes from what the client sent
    merged with the family default (800 ms, §4.2), not from session.updated."""
    from types import SimpleNamespace

    from qvtools.experiment import _provenance
    from qvtools.realtime.session_model import effective_session

    turn = SimpleNamespace(marks={"speech_end_sent": 1.0, "speech_stopped": 1.9})
    eff = effective_session("qwen3.5-omni-flash-realtime", {"turn_detection": {"type": "server_vad"}})
    row = _provenance(turn, "server_vad", None, eff)
    assert row["vad_silence_ms"] == 800.0 and row["vad_window_included"] is True
    eff = effective_session("qwen3.5-omni-flash-realtime",
                            {"turn_detection": {"type": "server_vad", "silence_duration_ms": 2000}})
    assert _provenance(turn, "server_vad", None, eff)["vad_silence_ms"] == 2000.0
    echo_only = {"voice": "Tina", "input_audio_format": "pcm"}  # what session.updated carries (§7.2)
    assert _provenance(turn, "server_vad", None, echo_only)["vad_silence_ms"] is None
    assert row["response_create_sent_ms"] is None  # server VAD: the server, not the client, ends the turn


def test_provenance_says_when_a_manual_turn_asked_for_the_response():
    # issue 11: the replayed delay of a manual turn starts at response.create, not at the end of speech
    from types import SimpleNamespace

    from qvtools.experiment import _provenance

    manual = SimpleNamespace(marks={"first_audio_sent": 0.1, "speech_end_sent": 1.0, "last_audio_sent": 1.4,
                                    "commit_sent": 1.401, "response_create_sent": 1.402})
    assert _provenance(manual, None, None)["response_create_sent_ms"] == pytest.approx(402.0)
    text = SimpleNamespace(marks={"response_create_sent": 5.0})
    assert _provenance(text, None, None)["response_create_sent_ms"] == 0.0


def test_score_adds_naturalness_and_audible_latency_offline():
    """Issue 20, without a service: a turn's scoring carries DNSMOS (reply and reference) and the audible TTFA."""
    import numpy as np

    from qvtools.audio import load
    from qvtools.realtime.turn import Turn

    voice = ex.sample_voices()[0]
    x, sr = load(voice.path, mono=True)
    reply = np.concatenate([np.zeros(int(0.3 * sr), np.float32), x[: 4 * sr]])
    n = sr // 10
    chunks = [(1.0 + i * 0.01, min(n, len(reply) - s)) for i, s in enumerate(range(0, len(reply), n))]
    turn = Turn(model="m", status="completed", audio=reply, sample_rate=sr, audio_chunks=chunks,
                marks={"speech_end_sent": 0.5, "first_audio_delta": 1.0})
    row = ex._score(turn, ("speaker_similarity", "naturalness"), voice.path)
    assert row["ttfa_ms"] == pytest.approx(500.0)
    assert row["ttfa_audible_ms"] - row["ttfa_ms"] == pytest.approx(row["reply_leading_silence_ms"])
    from qvtools.audible import speech_onset_s

    own = 1000 * speech_onset_s(x[: 4 * sr], sr)  # the sample voice's own lead-in
    assert row["reply_leading_silence_ms"] == pytest.approx(300 + own, abs=40)
    assert all(1 <= row[c] <= 5 for c in ("mos_sig", "mos_bak", "mos_ovrl", "mos_p808", "ref_mos_ovrl"))
    assert row["mos_ovrl_delta"] == pytest.approx(row["mos_ovrl"] - row["ref_mos_ovrl"])
    assert "mos_ovrl" not in ex._score(turn, ("speaker_similarity",), voice.path)
