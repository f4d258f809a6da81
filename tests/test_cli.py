"""The CLI: in-process ``main(argv)`` against a real local service, and ``qvtools serve`` as a subprocess."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import requests

from qvtools.audio import wav_bytes
from qvtools.cli import COMMANDS, main
from qvtools.config import ENROLLMENT_PATH
from qvtools.server import LocalService

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


@pytest.mark.parametrize("argv, fragment", [
    (["voices", "delete", "qwen-omni-vc-none-voice-20260101000000000-abcd"], "BadRequest.VoiceNotFound"),
    (["voices", "create", "GOOD", "--name", "bad-name", "--model", PLUS], "preferred_name"),
    (["voices", "create", "SILENT", "--name", "quiet", "--model", PLUS], "preflight"),
    (["voices", "create", "/no/such/file.wav", "--name", "x", "--model", PLUS], "no such audio file"),
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qvtools.cli", "serve", "--port", "0", "--data-dir",
                             str(tmp_path), "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = _read_line(proc.stdout, timeout=60).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", line), line
        resp = requests.post(line + ENROLLMENT_PATH, json={"model": "qwen-voice-enrollment",
                                                           "input": {"action": "list"}},
                             headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert resp.status_code == 200 and resp.json()["output"]["total_count"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


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
    assert "latencies are SIMULATED" in text
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
