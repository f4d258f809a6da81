"""Shared run directories (issue 23): containment, bounded reading, provenance, one writer, validated numbers.

Every tampered run directory here is built by the test itself: a small real run (saved :class:`Turn`s with
reply WAVs, ``turns.jsonl`` written by :func:`qvtools.experiment.append_row`, a ``run.json``), then edited the
way a hostile or careless colleague could. Containment is checked twice: by the refusal (a clear error naming
file, line and field) AND by content -- the outside file's bytes / metrics never appear in what was written
(libsndfile opens files without Python's audit events, so audit hooks would prove nothing).
The two-process ``compare`` test (slow) runs the real CLI twice into one ``--out`` on the local service.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qvtools import experiment as ex
from qvtools import report, results, rundir
from qvtools.audio import wav_bytes
from qvtools.cli import main
from qvtools.errors import ConfigError, LatencySourceError, QVError
from qvtools.realtime.turn import TimedEvent, Turn

FLASH = "qwen3.5-omni-flash-realtime"
SR = 24000


def _turn(seconds: float, freq: float) -> Turn:
    t = np.arange(int(seconds * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    marks = {"connect": 0.0, "first_audio_sent": 0.1, "last_audio_sent": 1.0, "commit_sent": 1.01,
             "response_create_sent": 1.02, "response_created": 1.2, "first_audio_delta": 1.5,
             "first_text_delta": 1.4, "audio_done": 2.5, "response_done": 2.6}
    return Turn(model=FLASH, voice="Tina", session_id="s", response_id="r", status="completed", error=None,
                events=[TimedEvent(1.2, "response.created", {})], marks=marks, audio=x, sample_rate=SR,
                audio_chunks=[(1.5, x.size)], assistant_transcript="hello there", usage=None)


def _make_run(run_dir: Path, n: int = 3) -> list[str]:
    """A run of ``n`` saved manual turns (tones of 1.0, 1.5, 2.0 ... s); returns the turn ids."""
    (run_dir / ex.AUDIO_DIR).mkdir(parents=True)
    ids = []
    with open(run_dir / ex.TURNS_FILE, "a", encoding="utf-8") as fh:
        for i in range(n):
            tid = ex.turn_id("ava", FLASH, "weather", i)
            _turn(1.0 + 0.5 * i, 220.0).save(run_dir / ex.AUDIO_DIR / tid)
            ex.append_row(fh, {"run_id": run_dir.name, "turn_id": tid, "voice_ref": "ava", "target_model": FLASH,
                               "prompt_id": "weather", "repeat": i, "status": "completed", "region": "local",
                               "simulated": True, "latency_source": "simulated:flash", "turn_detection": "manual",
                               "audio_path": f"{ex.AUDIO_DIR}/{tid}.wav", "ttfa_ms": 500.0})
            ids.append(tid)
    (run_dir / ex.RUN_FILE).write_text(json.dumps({"region": "local", "simulated_latency": True,
                                                   "metrics": ["loudness"], "models": [FLASH], "repeats": n,
                                                   "voices": {}, "prompts": {}}))
    return ids


def _rewrite(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = edit(rows) or rows
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def secret(tmp_path):
    """A private recording OUTSIDE the run directory: 7.0 s of 880 Hz (distinct from every reply)."""
    d = tmp_path / "private"
    d.mkdir()
    x = (0.5 * np.sin(2 * np.pi * 880 * np.arange(7 * SR) / SR)).astype(np.float32)
    (d / "secret.wav").write_bytes(wav_bytes(x, SR))
    _turn(7.0, 880.0).save(d / "secret")  # also secret.json, a saved turn
    return d


def _no_secret_in(run_dir: Path, secret_dir: Path) -> None:
    """Content check: no output of the run holds the secret's duration or its bytes."""
    wav = (secret_dir / "secret.wav").read_bytes()
    for p in run_dir.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.suffix in (".parquet", ".html", ".jsonl"):
            data = p.read_bytes()
            assert wav[100:400] not in data and base64.b64encode(wav[:300])[:200] not in data, p
    if (run_dir / ex.RESULTS_FILE).is_file():
        frame = results.to_frame(__import__("pandas").read_parquet(run_dir / ex.RESULTS_FILE))
        assert not np.isclose(frame["duration_s"].astype(float), 7.0, atol=0.05).any()


# ------------------------------------------------------------------------------------------- containment

def test_contained_refuses_absolute_dotdot_and_escaping_links(tmp_path):
    run = tmp_path / "run"
    (run / "audio").mkdir(parents=True)
    (tmp_path / "outside.wav").write_bytes(b"x")
    os.symlink(tmp_path / "outside.wav", run / "audio" / "link.wav")
    os.symlink(tmp_path, run / "audio" / "dirlink")
    assert rundir.contained(run, "audio/a.wav", where="w") == (run / "audio" / "a.wav").resolve()
    for bad, fragment in (("/etc/passwd", "absolute"), ("../outside.wav", r"'\.\.'"), ("audio/../../x", r"'\.\.'"),
                          ("audio/link.wav", "outside the run directory"),
                          ("audio/dirlink/outside.wav", "outside the run directory"), ("", "relative path"),
                          (None, "relative path"), (7, "relative path"), ("~/x.wav", "absolute")):
        with pytest.raises(ConfigError, match=fragment):
            rundir.contained(run, bad, where="turns.jsonl line 3, field 'audio_path'")


def test_every_turn_id_the_runner_writes_matches_the_pattern():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=200, derandomize=True, deadline=None)
    @hypothesis.given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60),
                      st.text(min_size=1, max_size=60), st.integers(0, 10**6))
    def check(v, m, p, r):
        tid = ex.turn_id(v, m, p, r)
        assert rundir.TURN_ID_RE.match(tid) and "/" not in tid and tid not in (".", "..")

    check()
    for bad in ("../secret", "/abs__r0__0123abcd", "a/b__r0__0123abcd", "x", "", None, 5):
        with pytest.raises(ConfigError, match="turn_id"):
            rundir.check_turn_id(bad, where="turns.jsonl line 1")


def test_replay_refuses_a_dotdot_turn_id_and_reads_nothing_outside(tmp_path, secret):
    run = tmp_path / "run"
    _make_run(run)
    rel = os.path.relpath(secret / "secret", run / ex.AUDIO_DIR)  # ../../private/secret
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(1, dict(rows[1], turn_id=rel)))
    with pytest.raises(ConfigError, match=r"turns\.jsonl line 2: turn_id"):
        ex.replay(run)
    assert not (run / ex.RESULTS_FILE).exists()
    _no_secret_in(run, secret)


def test_an_absolute_audio_path_is_refused_by_read_turns_and_the_report(tmp_path, secret, capsys):
    run = tmp_path / "run"
    _make_run(run)
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(0, dict(rows[0], audio_path=str(secret / "secret.wav"))))
    with pytest.raises(ConfigError, match=r"line 1, field 'audio_path': an absolute path"):
        ex.read_turns(run / ex.TURNS_FILE)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absolute path" in err[0] and "audio_path" in err[0]
    assert not (run / report.REPORT_FILE).exists()
    # the same tampering in results.parquet (no journal line to blame): the row is named
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(0, dict(rows[0], audio_path=f"audio/{rows[0]['turn_id']}.wav")))
    frame = results.to_frame(ex.read_turns(run / ex.TURNS_FILE))
    frame.loc[0, "audio_path"] = "../private/secret.wav"
    frame.to_parquet(run / ex.RESULTS_FILE)
    with pytest.raises(ConfigError, match=r"results\.parquet row 1, field 'audio_path'"):
        report.load_run(run)
    _no_secret_in(run, secret)


def test_a_symlink_under_audio_is_not_followed_and_the_replay_goes_on(tmp_path, secret, capsys):
    run = tmp_path / "run"
    ids = _make_run(run)
    for ext in (".wav", ".json"):
        (run / ex.AUDIO_DIR / f"{ids[1]}{ext}").unlink()
        os.symlink(secret / f"secret{ext}", run / ex.AUDIO_DIR / f"{ids[1]}{ext}")
    frame = ex.replay(run)
    bad = frame.set_index("turn_id").loc[ids[1]]
    assert "outside the run directory" in bad["metrics_error"]
    assert frame.attrs["replay_failures"][0][0] == ids[1]
    ok = frame[frame["turn_id"] != ids[1]]
    assert ok["metrics_error"].isna().all() and np.allclose(ok["duration_s"].astype(float), [1.0, 2.0], atol=0.01)
    _no_secret_in(run, secret)
    # the CLI: the replay went on, one summary line, exit 2
    assert main(["replay", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 of 3 turn(s) could not be replayed") and ids[1] in err[-1]


def test_references_in_run_json_are_used_only_inside_the_run_or_the_samples(tmp_path, secret):
    run = tmp_path / "run"
    _make_run(run)
    (run / "refs").mkdir()
    (run / "refs" / "ava.wav").write_bytes((secret / "secret.wav").read_bytes())  # a copy INSIDE is fine
    sample = ex.sample_voices()[0].path
    assert rundir.reference_path(run, "refs/ava.wav", where="w") == str((run / "refs" / "ava.wav").resolve())
    assert rundir.reference_path(run, str(sample), where="w") == str(Path(sample).resolve())
    assert rundir.reference_path(run, str(secret / "secret.wav"), where="w") is None
    assert rundir.reference_path(run, "../private/secret.wav", where="w") is None
    meta = json.loads((run / ex.RUN_FILE).read_text())
    meta["voices"] = {"ava": str(secret / "secret.wav")}
    (run / ex.RUN_FILE).write_text(json.dumps(meta))
    view = report.load_run(run)
    assert view.reference("ava") is None
    html = view.audio_html(3)
    assert "(reference missing)" in html
    secret_tag = report.audio_tag(secret / "secret.wav", max_s=report.EMBED_REFERENCE_S, rate=report.EMBED_SR)
    assert secret_tag.split("base64,")[1][:200] not in html
    assert html.count("data:audio/wav;base64,") == 3  # the three replies, read inside the run


# ------------------------------------------------------------------------------------------- bounded reading

@pytest.mark.parametrize("damage", ["not_json", "deep_json", "not_audio", "huge_wav", "not_a_turn", "long_wav"])
def test_a_damaged_saved_turn_becomes_a_metrics_error_row(tmp_path, damage):
    run = tmp_path / "run"
    ids = _make_run(run)
    stem = run / ex.AUDIO_DIR / ids[0]
    js, wav = Path(f"{stem}.json"), Path(f"{stem}.wav")
    if damage == "not_json":
        js.write_text("{not json")
    elif damage == "deep_json":
        js.write_text("[" * 200_000 + "]" * 200_000)
    elif damage == "not_audio":
        wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 100)
    elif damage == "huge_wav":
        with open(wav, "r+b") as fh:  # past the enrollment upload cap (10 MB)
            fh.truncate(rundir.MAX_AUDIO_BYTES + 10)
    elif damage == "not_a_turn":
        js.write_text(json.dumps({"marks": {"connect": "soon"}}))
    else:  # a valid WAV longer than the 60 s cap
        wav.write_bytes(wav_bytes(np.zeros(61 * 8000, np.float32), 8000))
    frame = ex.replay(run)
    err = frame.set_index("turn_id").loc[ids[0], "metrics_error"]
    expected = {"not_json": "not valid JSON", "deep_json": "nested too deeply", "not_audio": "not readable audio",
                "huge_wav": "larger than", "not_a_turn": "not a saved turn", "long_wav": "longer than 60 s"}[damage]
    assert expected in err
    assert frame["metrics_error"].notna().sum() == 1 and len(frame) == 3  # the other turns were replayed


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "expected a JSON object"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"region": ', "not valid JSON"),
])
def test_an_invalid_run_json_is_one_line_and_exit_2(tmp_path, capsys, content, fragment):
    run = tmp_path / "run"
    _make_run(run)
    (run / ex.RUN_FILE).write_text(content)
    assert main(["replay", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: run.json") and fragment in err[0]


# ------------------------------------------------------------------------------------------- validated numbers

@pytest.mark.parametrize("field, value, fragment", [
    ("vad_silence_ms", -800, "non-negative"),
    ("ttfa_ms", True, "expected a number, got bool"),
    ("ttfa_ms", "fast", "expected a number, got str"),
    ("e2e_ms", 1e300, "must be <="),
    ("repeat", 10**400, "about 401 digits"),
    ("delivery_rtf", 1e-300, ">= 0.01"),
    ("simulated", "yes", "expected true/false"),
    ("status", 3, "expected one of"),
    ("output_tokens", 2.5, "whole number"),
])
def test_hostile_numbers_in_turns_jsonl_are_refused_naming_line_and_field(tmp_path, capsys, field, value, fragment):
    run = tmp_path / "run"
    _make_run(run)
    text = (run / ex.TURNS_FILE).read_text().splitlines()
    row = json.loads(text[2])
    row[field] = "__VALUE__"
    literal = str(value) if isinstance(value, int) and not isinstance(value, bool) else json.dumps(value)
    text[2] = json.dumps(row).replace('"__VALUE__"', literal)
    (run / ex.TURNS_FILE).write_text("\n".join(text) + "\n")
    with pytest.raises(ConfigError, match=rf"turns\.jsonl line 3, field '{field}'.*{fragment}"):
        ex.read_turns(run / ex.TURNS_FILE)
    assert main(["replay", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"line 3, field '{field}'" in err[0]
    assert not (run / ex.RESULTS_FILE).exists()


def test_a_status_with_blanks_is_counted_and_the_truncated_line_warning_reaches_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    ids = _make_run(run)
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(0, dict(rows[0], status="completed ")))
    with open(run / ex.TURNS_FILE, "ab") as fh:
        fh.write(b'{"turn_id": "' + ex.turn_id("ava", FLASH, "weather", 9).encode() + b'", "sta')
    assert [r["status"] for r in ex.read_turns(run / ex.TURNS_FILE)] == ["completed"] * 3
    assert main(["replay", str(run), "--no-report"]) == 0
    cap = capsys.readouterr()
    assert "3 turns replayed (3 completed)" in cap.out
    assert "warning: dropping a truncated last line" in cap.err
    assert len(ids) == 3


def test_price_tables_refuse_infinity_and_other_hostile_numbers(tmp_path, capsys):
    good = {"currency": "USD", "models": {FLASH: {"input_text": 1.0}}}
    for doc, fragment in ((dict(good, per_tokens=float("inf")), "per_tokens.*finite"),
                          (dict(good, per_tokens=True), "per_tokens.*bool"),
                          (dict(good, per_tokens=10**400), "per_tokens.*digits"),
                          (dict(good, per_tokens=10**5000), "per_tokens.*digits"),
                          (dict(good, models={FLASH: {"input_text": float("nan")}}), "NaN"),
                          (dict(good, voice_creation="0.01"), "voice_creation.*str")):
        with pytest.raises(ConfigError, match=fragment):
            results.load_prices(doc)
    path = tmp_path / "prices.json"
    path.write_text('{"currency": "USD", "per_tokens": Infinity, "models": {"%s": {"input_text": 1}}}' % FLASH)
    run = tmp_path / "run"
    _make_run(run)
    assert main(["report", str(run), "--prices", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "per_tokens" in err[0] and "finite" in err[0]
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(run), "--prices", str(path)]) == 2
    assert "RecursionError" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, fragment", [
    ("response_created_ms", 1e12, "<= 120000"),
    ("ttfa_created_ms", -5.0, "non-negative"),
    ("delivery_rtf", 1e-300, ">= 0.01"),
    ("ttfa_created_ms", "10", "got str"),
])
def test_latency_from_refuses_hostile_delays_before_any_session(tmp_path, field, value, fragment):
    """--latency-from a results.parquet (a value parquet can hold) or a turns.jsonl (a string): the service
    refuses to start, naming the row / line and field, before any session could wait on the value."""
    from qvtools.server import LocalService, ServiceConfig

    run = tmp_path / "run"
    _make_run(run)
    _rewrite(run / ex.TURNS_FILE, lambda rows: [dict(r, response_created_ms=300.0, ttfa_created_ms=100.0,
                                                     delivery_rtf=2.0) for r in rows])
    if isinstance(value, str):
        _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(1, dict(rows[1], **{field: value})))
    else:
        frame = results.to_frame(ex.read_turns(run / ex.TURNS_FILE))
        frame.loc[1, field] = value
        frame.to_parquet(run / ex.RESULTS_FILE)
    with pytest.raises(LatencySourceError, match=rf"(row|line) 2, field '{field}'.*{fragment}"):
        with LocalService(data_dir=tmp_path / "svc", config=ServiceConfig(latency_from=str(run))):
            pass


def test_to_frame_and_the_report_refuse_duplicate_turn_ids(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    lines = (run / ex.TURNS_FILE).read_text().splitlines()
    (run / ex.TURNS_FILE).write_text("\n".join(lines + lines[:1]) + "\n")  # a turn journaled twice
    with pytest.raises(ConfigError, match="turn_id must be unique; 1 repeated"):
        results.to_frame(ex.read_turns(run / ex.TURNS_FILE))
    with pytest.raises(ConfigError, match="turn_id must be unique"):
        report.load_run(run)


# ------------------------------------------------------------------------------------------- provenance

def test_the_simulated_banner_follows_the_rows_not_run_json(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    meta = json.loads((run / ex.RUN_FILE).read_text())
    meta.update(region="singapore", simulated_latency=False)  # edited to look like a cloud run
    (run / ex.RUN_FILE).write_text(json.dumps(meta))
    view = report.load_run(run)
    assert view.simulated and "qv-simulated" in view.header_html() and "simulated:flash" in view.header_html()
    # rows that say measured and a run.json that says cloud: no banner
    _rewrite(run / ex.TURNS_FILE, lambda rows: [dict(r, simulated=False, latency_source="measured") for r in rows])
    assert not report.load_run(run).simulated
    # a row whose source is simulated brings the banner back even with simulated=False
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(0, dict(rows[0], latency_source="replay:x/y")))
    assert report.load_run(run).simulated


class _Workspace:
    def __init__(self, settings):
        self.settings = settings
        self.registry = None

    def describe(self):
        return "test"


def test_resuming_under_another_region_or_base_url_is_refused(tmp_path):
    from qvtools.config import Settings

    run = tmp_path / "run"
    _make_run(run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:1]
    cloud = Settings(region="singapore", api_key="sk-test-key-000000")
    exp = ex.Experiment(_Workspace(cloud), run, voices=voices, prompts=prompts, models=[FLASH], progress=False)
    with pytest.raises(ConfigError, match="started with region 'local', now 'singapore'.*new run directory"):
        exp.run()
    meta = json.loads((run / ex.RUN_FILE).read_text())
    meta.update(region="singapore", base_url="https://a.example")
    (run / ex.RUN_FILE).write_text(json.dumps(meta))
    before[ex.RUN_FILE] = (run / ex.RUN_FILE).read_bytes()
    exp = ex.Experiment(_Workspace(cloud.with_base_url("https://b.example")), run, voices=voices, prompts=prompts,
                        models=[FLASH], progress=False)
    with pytest.raises(ConfigError, match="base URL 'https://a.example', now 'https://b.example'"):
        exp.run()
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != rundir.LOCK_FILE}
    assert after == before  # nothing written


# ------------------------------------------------------------------------------------------- one writer

def test_run_lock_is_exclusive_and_names_the_holder(tmp_path):
    with rundir.RunLock(tmp_path, "qvtools compare") as lock:
        assert lock.held
        with pytest.raises(ConfigError, match=rf"in use by pid {os.getpid()} on .*qvtools compare"):
            rundir.RunLock(tmp_path, "qvtools replay").acquire()
        code = ("import sys; from qvtools.rundir import RunLock\n"
                "try:\n    RunLock(sys.argv[1], 'other').acquire()\nexcept Exception as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, PYTHONPATH=str(Path(rundir.__file__).parents[1])))
        assert f"in use by pid {os.getpid()}" in out.stdout
    with rundir.RunLock(tmp_path, "again"):  # released: free again
        pass


def test_replay_holds_the_lock(tmp_path, capsys):
    run = tmp_path / "run"
    _make_run(run)
    with rundir.RunLock(run, "qvtools compare"):
        assert main(["replay", str(run), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by pid" in err[0] and "qvtools compare" in err[0]
    assert not (run / ex.RESULTS_FILE).exists()


@pytest.mark.slow
def test_two_compare_processes_into_one_out_leave_one_copy_of_each_turn(tmp_path):
    """Two real ``qvtools compare`` processes into one --out: the second fails at once naming the first;
    the run holds exactly one row per planned turn, and a later resume adds none."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(rundir.__file__).parents[1]), QVTOOLS_DATA_DIR=str(tmp_path / "data"),
               QVTOOLS_REGION="local")
    env.pop("DASHSCOPE_API_KEY", None)
    cmd = [sys.executable, "-m", "qvtools.cli", "compare", "--quick", "--out", str(out), "--no-report",
           "--models", FLASH, "--repeats", "2", "--workers", "1"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120  # readiness signal: the lock file names the first process
        lock = out / rundir.LOCK_FILE
        while not (lock.is_file() and f"pid {first.pid}" in lock.read_text()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first compare never took the lock"
            time.sleep(0.05)
        t0 = time.monotonic()
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert f"in use by pid {first.pid}" in second.stderr and "qvtools compare" in second.stderr
        assert first.poll() is None  # the second failed while the first was still running
        assert time.monotonic() - t0 < 60
        o, e = first.communicate(timeout=600)
        assert first.returncode == 0, e[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    rows = ex.read_turns(out / ex.TURNS_FILE)
    ids = [r["turn_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 2
    wavs = sorted(p.stem for p in (out / ex.AUDIO_DIR).glob("*.wav"))
    assert wavs == sorted(ids)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["turn_id"] for r in ex.read_turns(out / ex.TURNS_FILE)] == ids


# ------------------------------------------------------------------------------------------- disk errors

def test_a_failed_write_names_the_path_and_leaves_no_partial_file(tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE, as a full disk) in a child process."""
    code = r"""
import os, resource, signal, sys
import numpy as np
from pathlib import Path
from qvtools.realtime.turn import Turn
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
x = np.zeros(24000, np.float32)
turn = Turn(model="m", voice=None, session_id=None, response_id=None, status="completed", error=None, events=[],
            marks={}, audio=x, sample_rate=24000, audio_chunks=[])
try:
    turn.save(Path(sys.argv[1]) / "reply")
except OSError as exc:
    print("ERR", exc)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(Path(rundir.__file__).parents[1])))
    assert "ERR" in out.stdout and str(tmp_path / "reply.wav") in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial WAV, no temp file


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        rundir.write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    with pytest.raises(OSError, match=str(tmp_path / "missing" / "y.bin")):
        rundir.write_atomic(tmp_path / "missing" / "y.bin", b"data")


def test_write_atomic_streams_from_a_writer_function_all_or_nothing(tmp_path):
    """The one atomic writer (issue 19) also takes ``fill(fh)`` (modelfiles streams a model through it): what
    fill writes lands whole; an exception inside fill leaves the old file and no temporary file."""
    target = tmp_path / "model.bin"
    assert rundir.write_atomic(target, lambda fh: [fh.write(b"part1 "), fh.write(b"part2")]) == target
    assert target.read_bytes() == b"part1 part2"

    def broken(fh):
        fh.write(b"half of a file")
        raise ConfigError("digest mismatch")

    with pytest.raises(ConfigError, match="digest mismatch"):
        rundir.write_atomic(target, broken)
    assert target.read_bytes() == b"part1 part2" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_qverror_root_is_what_the_cli_prints(tmp_path, capsys):
    assert issubclass(ConfigError, QVError)
    assert main(["replay", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_failed_turn_without_reply_audio_is_kept_and_the_replay_succeeds(tmp_path, capsys):
    """A turn that timed out before any reply audio is saved with a header-only WAV: replay keeps its row as
    journaled (nothing to rescore) instead of failing the whole replay with exit 2."""
    import dataclasses

    from pandas import isna as pd_isna

    run = tmp_path / "run"
    ids = _make_run(run)
    empty = dataclasses.replace(_turn(1.0, 220.0), status="failed", error="no reply within 60.0 s",
                                audio=np.zeros(0, np.float32), audio_chunks=[])
    empty.save(run / ex.AUDIO_DIR / ids[1])
    assert (run / ex.AUDIO_DIR / f"{ids[1]}.wav").stat().st_size == 44
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(1, dict(rows[1], status="failed",
                                                                          error="no reply within 60.0 s")))
    frame = ex.replay(run)
    assert frame.attrs["replay_failures"] == []
    row = frame.set_index("turn_id").loc[ids[1]]
    assert row["status"] == "failed"
    assert row.get("metrics_error") is None or bool(np.all(pd_isna(row["metrics_error"])))
    assert main(["replay", str(run), "--no-report"]) == 0
    # a COMPLETED turn with no samples is still an error the replay names
    _rewrite(run / ex.TURNS_FILE, lambda rows: rows.__setitem__(1, dict(rows[1], status="completed")))
    assert ex.replay(run).attrs["replay_failures"][0][0] == ids[1]
