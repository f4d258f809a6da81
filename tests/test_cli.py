"""The CLI: in-process ``main(argv)`` against a real local service, and ``qvtools serve`` as a subprocess."""

from __future__ import annotations

import queue
import re
import signal
import sys
import threading

import numpy as np
import pytest
import requests

from qvtools.audio import wav_bytes
from qvtools.resources import samples_dir
from qvtools.cli import COMMANDS, main
from qvtools.config import ENROLLMENT_PATH
from qvtools.server import LocalService

from conftest import serve_process

PLUS = "qwen3.5-omni-plus-realtime"
KEY = "sk-cli-secret-key"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc")) as svc:
        yield svc


@pytest.fixture
def env(service, monkeypatch, tmp_path):
    for var in ("QVTOOLS_REGION", "QVTOOLS_WS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QVTOOLS_BASE_URL", service.url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("QVTOOLS_DATA_DIR", str(tmp_path / "data"))
    return service


@pytest.fixture
def files(tmp_path, enrollment_wav):
    good = tmp_path / "good.wav"
    good.write_bytes(enrollment_wav)
    silent = tmp_path / "silent.wav"
    silent.write_bytes(wav_bytes(np.zeros(12 * 24000, np.float32), 24000))
    return good, silent


def test_subcommands_registered():
    assert {"check", "prepare", "voices", "serve"} <= set(COMMANDS)


@pytest.mark.slow
def test_voices_create_list_delete_purge(env, files, capsys):
    good, _ = files
    assert main(["voices", "create", str(good), "--name", "cli", "--model", PLUS, "--language", "en"]) == 0
    voice = capsys.readouterr().out.strip()
    assert re.fullmatch(r"qwen-omni-vc-cli-voice-\d{17}-[0-9a-f]{4}", voice)
    assert main(["voices", "list"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(voice + "\t" + PLUS) and "1 voice(s)" in out.err
    assert main(["voices", "delete", voice]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {voice}"
    assert main(["voices", "create", str(good), "--name", "tmp1", "--model", PLUS]) == 0
    capsys.readouterr()
    assert main(["voices", "purge", "--prefix", "tmp", "--yes"]) == 0
    assert "1 voice(s) deleted" in capsys.readouterr().out


@pytest.fixture
def replay_env(monkeypatch, tmp_path):
    """The CLI pointed at a replay of tests/fixtures/cloud/enrollment_list_mixed.json (Omni + TTS clones)."""
    from enrollment_support import ReplayServer, load_fixture

    fx = load_fixture("enrollment_list_mixed.json")
    for var in ("QVTOOLS_REGION", "QVTOOLS_WS_URL"):
        monkeypatch.delenv(var, raising=False)
    with ReplayServer(fx["exchanges"]) as srv:
        monkeypatch.setenv("QVTOOLS_BASE_URL", srv.url)
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("QVTOOLS_DATA_DIR", str(tmp_path / "data"))
        yield srv


def _deleted(srv) -> list:
    return [r.input["voice"] for r in srv.requests if r.action == "delete"]


def test_voices_list_shows_the_kind(replay_env, capsys):
    assert main(["voices", "list"]) == 0
    out = capsys.readouterr()
    rows = [line.split("\t") for line in out.out.splitlines()]
    assert len(rows) == 5 and all(len(r) == 5 for r in rows)
    assert {r[0]: r[2] for r in rows}["qwen-tts-vc-exp1-voice-20260215093000456-9c1d"] == "tts"
    assert sorted(r[2] for r in rows) == ["omni", "omni", "omni", "tts", "tts"]
    assert "5 voice(s) (omni 3, tts 2)" in out.err


def test_voices_purge_without_stdin_refuses_and_deletes_nothing(replay_env, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # EOF at the prompt
    assert main(["voices", "purge", "--prefix", "exp"]) == 1
    out = capsys.readouterr().out
    assert "qwen-omni-vc-exp1-voice-20260301101500123-3f2a\tomni" in out
    assert "2 voice(s) to delete (omni 2)" in out
    assert "keeping 2 matching voice(s) of other kinds (tts 2)" in out
    assert "nothing deleted" in out and _deleted(replay_env) == []


def test_voices_purge_confirmed_deletes_omni_clones_only(replay_env, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["voices", "purge", "--prefix", "exp"]) == 0
    assert "2 voice(s) deleted" in capsys.readouterr().out
    assert _deleted(replay_env) == ["qwen-omni-vc-exp1-voice-20260301101500123-3f2a",
                                    "qwen-omni-vc-exp2-voice-20260228120000789-ab12"]


def test_voices_purge_tts_only_when_named(replay_env, capsys):
    assert main(["voices", "purge", "--prefix", "exp", "--kind", "tts", "--yes"]) == 0
    assert "keeping 2 matching voice(s) of other kinds (omni 2)" in capsys.readouterr().out
    assert sorted(_deleted(replay_env)) == ["qwen-tts-vc-exp1-voice-20260215093000456-9c1d",
                                            "qwen-tts-vc-exp_tts-voice-20260110080000000-0e0e"]


def test_voices_create_warns_about_a_degraded_clone(monkeypatch, tmp_path, files, capsys):
    from enrollment_support import ReplayServer, load_fixture

    good, _ = files
    fx = load_fixture("enrollment_create_fallback.json")
    for var in ("QVTOOLS_REGION", "QVTOOLS_WS_URL"):
        monkeypatch.delenv(var, raising=False)
    with ReplayServer(fx["exchanges"]) as srv:
        monkeypatch.setenv("QVTOOLS_BASE_URL", srv.url)
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("QVTOOLS_DATA_DIR", str(tmp_path / "data"))
        assert main(["voices", "create", str(good), "--name", "degraded", "--model", PLUS]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == fx["expect"]["voice"]
    assert "degraded clone" in out.err and "no_valid_asr_segments" in out.err and KEY not in out.err


@pytest.mark.parametrize("argv, fragment", [
    (["voices", "delete", "qwen-omni-vc-none-voice-20260101000000000-abcd"], "BadRequest.VoiceNotFound"),
    (["voices", "create", "GOOD", "--name", "bad-name", "--model", PLUS], "preferred_name"),
    (["voices", "create", "SILENT", "--name", "quiet", "--model", PLUS], "preflight"),
    (["voices", "create", "/no/such/file.wav", "--name", "x", "--model", PLUS], "no such audio file"),
    (["check", "GOOD", "--text", "hello there", "--language", "klingon"], "unsupported language"),
])
def test_errors_are_one_line_exit_2(env, files, capsys, argv, fragment):
    good, silent = files
    argv = [str(good) if a == "GOOD" else str(silent) if a == "SILENT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert "Traceback" not in err and KEY not in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_check_and_prepare(files, tmp_path, capsys):
    good, silent = files
    assert main(["check", str(good)]) == 0
    assert "PASS" in capsys.readouterr().out.upper()
    assert main(["check", str(good), str(silent)]) == 1
    out = capsys.readouterr().out
    assert f"== {silent}" in out
    dest = tmp_path / "prepared.wav"
    assert main(["prepare", str(good), str(dest)]) == 0
    assert dest.read_bytes()[:4] == b"RIFF"


def _read_line(stream, timeout: float) -> str:
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: q.put(stream.readline()), daemon=True).start()
    return q.get(timeout=timeout)


@pytest.mark.slow
def test_serve_subprocess_prints_its_url(tmp_path):
    with serve_process(tmp_path, KEY) as proc:
        line = _read_line(proc.stdout, timeout=60).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", line), line
        resp = requests.post(line + ENROLLMENT_PATH, json={"model": "qwen-voice-enrollment",
                                                           "input": {"action": "list"}},
                             headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert resp.status_code == 200 and resp.json()["output"]["total_count"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# -- talk ----------------------------------------------------------------------------------------------
FLASH = "qwen3.5-omni-flash-realtime"


@pytest.fixture(scope="module")
def prompt_wav(tmp_path_factory):
    from realtime_support import utterance

    path = tmp_path_factory.mktemp("talk") / "prompt.wav"
    path.write_bytes(wav_bytes(*utterance()))
    return path


@pytest.fixture(scope="module")
def cloned_plus(service, enrollment_wav):
    from realtime_support import create_voice

    return create_voice(service, enrollment_wav, target=PLUS, name="talkcli", key=KEY)


def _sessions(service) -> set:
    return {r[0] for r in service.trace.records()}


def test_talk_is_registered():
    assert "talk" in COMMANDS


@pytest.mark.slow
def test_talk_builtin_voice_manual(env, prompt_wav, tmp_path, capsys):
    from qvtools.realtime.turn import Turn

    out = tmp_path / "reply.wav"
    assert main(["talk", "--voice", "Tina", "--model", PLUS, "--input", str(prompt_wav), "--out", str(out),
                 "--manual", "--fast", "--instructions", "Answer briefly.", "--timeout", "60"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("user:") and "weather" in lines[0].lower()
    assert lines[1].startswith("assistant: ") and len(lines[1]) > len("assistant: ") + 3
    assert re.search(r"^latency from end of user speech: first audio \d+ ms, first text \d+ ms, "
                     r"response\.done \d+ ms$", text, re.M)
    assert re.search(r"^latency from response\.created: +first audio \d+ ms, first text \d+ ms$", text, re.M)
    assert "latencies are SIMULATED" in text and "(latency source: simulated:plus)" in text
    turn = Turn.load(tmp_path / "reply")
    assert turn.status == "completed" and turn.voice == "Tina" and turn.model == PLUS
    assert turn.audio.size > 12000 and out.read_bytes()[:4] == b"RIFF"
    assert f"wrote {out} ({turn.duration_s:.1f} s) and {tmp_path / 'reply.json'}" in text


@pytest.mark.slow
def test_talk_cloned_voice_server_vad(env, prompt_wav, cloned_plus, tmp_path, capsys):
    from qvtools.realtime.turn import Turn

    assert main(["talk", "--voice", cloned_plus, "--model", PLUS, "--input", str(prompt_wav),
                 "--out", str(tmp_path / "cloned.wav"), "--fast"]) == 0
    assert "weather" in capsys.readouterr().out.lower()
    turn = Turn.load(tmp_path / "cloned")
    assert turn.status == "completed" and turn.voice == cloned_plus
    assert "speech_stopped" in turn.marks and turn.session_id in _sessions(env)  # server VAD ended the turn


@pytest.mark.slow
def test_talk_mismatched_cloned_voice_refused_without_connecting(env, prompt_wav, cloned_plus, tmp_path,
                                                                    capsys):
    before = _sessions(env)
    assert main(["talk", "--voice", cloned_plus, "--model", FLASH, "--input", str(prompt_wav),
                 "--out", str(tmp_path / "never.wav")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: ") and "enrolled for target_model" in err and FLASH in err
    assert _sessions(env) == before  # no realtime connection was opened
    assert not (tmp_path / "never.wav").exists() and not (tmp_path / "never.json").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--out", "reply.mp3"], "--out must name a .wav file"),
    (["--input", "/no/such/prompt.wav"], "no such audio file"),
    (["--voice", "qwen-omni-vc-ghost-voice-20260101000000000-abcd"], "not in this account"),
])
def test_talk_bad_arguments_are_one_line_errors(env, prompt_wav, tmp_path, capsys, argv, fragment):
    base = {"--voice": "Tina", "--model": PLUS, "--input": str(prompt_wav), "--out": str(tmp_path / "r.wav")}
    base.update(dict(zip(argv[::2], argv[1::2])))
    before = _sessions(env)
    assert main(["talk", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and fragment in err[-1] and KEY not in "\n".join(err)
    assert _sessions(env) == before


def test_talk_failed_turn_exits_1_and_keeps_the_record(env, tmp_path, capsys):
    from qvtools.realtime.turn import Turn

    silence = tmp_path / "silence.wav"
    silence.write_bytes(wav_bytes(np.zeros(16000, np.float32), 16000))
    # server VAD never hears speech, so no reply comes within the timeout
    assert main(["talk", "--voice", "Tina", "--model", PLUS, "--input", str(silence),
                 "--out", str(tmp_path / "none.wav"), "--fast", "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert "user:      (no transcript)" in captured.out
    assert captured.err.splitlines()[-1].startswith("turn failed: no reply within 1.0 s")
    assert Turn.load(tmp_path / "none").status == "failed"


# -- compare: models by name, billing confirmation (issue 9 items 2 and 6) ------------------------------
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from qvtools.config import Settings  # noqa: E402

DATA = samples_dir()  # the packaged sample data (qvtools.resources)


@dataclasses.dataclass(frozen=True)
class CloudLike(Settings):
    """Billed like the cloud (``is_cloud``), but base_url points at the local service: no network needed."""

    @property
    def is_cloud(self):
        return True


@pytest.fixture
def fake_cloud(service, monkeypatch, tmp_path):
    from qvtools import cli
    from qvtools.workspace import connect

    for var in ("QVTOOLS_REGION", "QVTOOLS_BASE_URL", "QVTOOLS_WS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    settings = CloudLike(region="singapore", base_url=service.url, api_key=KEY, data_dir=tmp_path / "data")
    monkeypatch.setattr(cli, "_workspace", lambda: connect(settings))
    return settings


def _compare_argv(out, *extra, models=(FLASH,)):
    return ["compare", "--out", str(out), "--voices", str(DATA / "voices" / "ava.wav"), "--prompts",
            str(DATA / "prompts" / "math.wav"), "--models", *models, "--workers", "1", "--no-report", *extra]


def _listed(service) -> list[str]:
    resp = requests.post(service.url + ENROLLMENT_PATH, json={"model": "qwen-voice-enrollment",
                                                              "input": {"action": "list", "page_size": 100}},
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    return [v["voice"] for v in resp.json()["output"]["voice_list"]]


def test_compare_on_the_cloud_refuses_without_an_answer(fake_cloud, service, tmp_path, monkeypatch, capsys):
    before = _listed(service)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no stdin: EOF
    assert main(_compare_argv(tmp_path / "run")) == 2
    out = capsys.readouterr()
    assert "create 1 voice(s)" in out.out and "run 1 realtime turn(s)" in out.out
    assert "$0.01 per created voice" in out.out and "SEED §2.4" in out.out
    assert out.err.splitlines()[-1].startswith("error: no answer on stdin") and "--yes" in out.err
    assert KEY not in out.out + out.err
    assert _listed(service) == before  # nothing created
    assert not (tmp_path / "run" / "turns.jsonl").exists()  # nothing run
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert main(_compare_argv(tmp_path / "run")) == 1
    assert "nothing created or run" in capsys.readouterr().out
    assert _listed(service) == before


@pytest.mark.slow
def test_compare_on_the_cloud_with_yes_then_nothing_left_to_bill(fake_cloud, service, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # --yes never reads stdin
    out_dir = tmp_path / "run"
    assert main(_compare_argv(out_dir, "--yes")) == 0
    text = capsys.readouterr().out
    assert "create 1 voice(s)" in text and "Go ahead" not in text
    rows = [json.loads(line) for line in (out_dir / "turns.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    assert rows[0]["voice"] in _listed(service)
    # resumed: the voice is in the registry and the turn is journaled -> nothing billable, no question
    assert main(_compare_argv(out_dir)) == 0
    text = capsys.readouterr().out
    assert "create 0 voice(s)" in text and "run 0 realtime turn(s)" in text and "Go ahead" not in text
    meta = json.loads((out_dir / "run.json").read_text())
    assert meta["voices_created"] == 1 and meta["models"] == [FLASH]


@pytest.mark.slow
def test_compare_on_the_local_service_never_asks(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(_compare_argv(tmp_path / "run", "--manual", "--prices", str(_prices(tmp_path)))) == 0
    text = capsys.readouterr().out
    assert "Go ahead" not in text and "$0.01" not in text
    rows = [json.loads(line) for line in (tmp_path / "run" / "turns.jsonl").read_text().splitlines()]
    assert rows[0]["turn_detection"] == "manual" and rows[0]["vad_window_included"] is False
    assert json.loads((tmp_path / "run" / "prices.json").read_text())["currency"] == "XYZ"


def _prices(tmp_path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"currency": "XYZ", "source": "test", "models": {FLASH: {"input_audio": 1.0}}}))
    return path


def test_compare_accepts_any_model_name_with_a_warning(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    odd = "qwen9-omni-giga-realtime"
    code = main(_compare_argv(tmp_path / "run", models=[odd]))
    out = capsys.readouterr()
    assert f"warning: '{odd}' is not in the qvtools model catalog" in out.err
    assert code in (0, 1)  # the service decides; the run went ahead and recorded the turn
    rows = [json.loads(line) for line in (tmp_path / "run" / "turns.jsonl").read_text().splitlines()]
    assert [r["target_model"] for r in rows] == [odd]


@pytest.mark.parametrize("argv, fragment", [
    (["--prices", "/no/such/prices.json"], "price table not found"),
    (["--silence-ms", "50"], "silence_duration_ms must be 200-6000"),
])
def test_compare_bad_options_are_one_line_errors(env, tmp_path, capsys, argv, fragment):
    assert main(_compare_argv(tmp_path / "run", *argv)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and fragment in err[-1] and not any("Traceback" in e for e in err)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_talk_warns_about_a_model_outside_the_catalog(env, prompt_wav, tmp_path, capsys):
    odd = "qwen9-omni-giga-realtime"
    code = main(["talk", "--voice", "Tina", "--model", odd, "--input", str(prompt_wav),
                 "--out", str(tmp_path / "odd.wav"), "--fast", "--timeout", "30"])
    err = capsys.readouterr().err
    assert f"warning: '{odd}' is not in the qvtools model catalog" in err  # said, not refused by qvtools
    assert code in (0, 1, 2) and KEY not in err


@pytest.mark.slow
def test_talk_says_how_latencies_were_measured(env, prompt_wav, tmp_path, capsys):
    assert main(["talk", "--voice", "Tina", "--model", PLUS, "--input", str(prompt_wav),
                 "--out", str(tmp_path / "r.wav"), "--fast"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^measured on this client from the last audio chunk holding speech; audio sent as fast as "
                     r"possible; server VAD ended the turn: the latencies from end of user speech INCLUDE", text, re.M)


def test_plan_sizes_a_study_from_a_pilot_run(tmp_path, capsys):
    import json

    from qvtools import experiment as ex

    rng = np.random.default_rng(4)
    run_dir = tmp_path / "pilot"
    run_dir.mkdir()
    with open(run_dir / ex.TURNS_FILE, "w") as fh:
        for v in range(4):
            for p in range(4):
                base = 800 + rng.normal(0, 50)
                for m, extra in (("qwen3.5-omni-plus-realtime", 120.0), ("qwen3.5-omni-flash-realtime", 0.0)):
                    ex.append_row(fh, {"turn_id": ex.turn_id(f"v{v}", m, f"p{p}", 0), "voice_ref": f"v{v}",
                                       "prompt_id": f"p{p}",
                                       "repeat": 0, "target_model": m, "status": "completed", "total_tokens": 500,
                                       "ttfa_ms": base + extra + rng.normal(0, 20)})
    (run_dir / ex.RUN_FILE).write_text(json.dumps({"models": ["qwen3.5-omni-plus-realtime",
                                                              "qwen3.5-omni-flash-realtime"]}))
    assert main(["plan", str(run_dir), "--effect", "ttfa_ms", "60", "--sims", "50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ttfa_ms: 60 ms -> \d+ voices x \d+ prompts x \d repeat\(s\)", out)
    assert "voice(s) to create" in out and "billing rule" in out and "no price table" in out
    assert main(["plan", str(run_dir), "--effect", "ttfa_ms", "fast"]) == 2
    assert "must be a number" in capsys.readouterr().err


# -- issue 18: semantic VAD and rehearsed session endings --------------------------------------------
@pytest.mark.slow
def test_talk_semantic_vad(env, prompt_wav, tmp_path, capsys):
    from qvtools.realtime.turn import Turn

    assert main(["talk", "--voice", "Tina", "--model", PLUS, "--input", str(prompt_wav), "--out",
                 str(tmp_path / "r.wav"), "--semantic-vad", "--fast", "--timeout", "60"]) == 0
    assert "semantic VAD ended the turn" in capsys.readouterr().out
    turn = Turn.load(tmp_path / "r")
    assert turn.status == "completed" and "speech_stopped" in turn.marks


def test_manual_and_semantic_vad_exclude_each_other(env, prompt_wav, tmp_path, capsys):
    before = _sessions(env)
    assert main(["talk", "--voice", "Tina", "--model", PLUS, "--input", str(prompt_wav), "--out",
                 str(tmp_path / "r.wav"), "--manual", "--semantic-vad"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert _sessions(env) == before


def test_serve_rehearses_a_1011_ending(tmp_path):
    """``qvtools serve --fault-ending model_error --fault-sessions 1``: the first session's turn meets
    COMMON_ERROR + close 1011 (transient), the next session is answered normally."""
    from qvtools.config import Settings
    from qvtools.realtime.session import RealtimeSession

    with serve_process(tmp_path, KEY, "--fault-ending", "model_error", "--fault-sessions", "1") as proc:
        url = _read_line(proc.stdout, timeout=60).strip()
        settings = Settings(region="local", base_url=url, api_key=KEY, data_dir=tmp_path)
        with RealtimeSession(settings, PLUS, voice="Tina", modalities=("text",)) as rt:
            turn = rt.send_text("Hello!")
            rt._reader.join(10)
            assert rt.close_code == 1011
        assert turn.status == "failed" and turn.transient and "ModelServingError" in turn.error
        with RealtimeSession(settings, PLUS, voice="Tina", modalities=("text",)) as rt:
            again = rt.send_text("Hello!")
        assert again.status == "completed", again.error
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
