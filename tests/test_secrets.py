"""The API key never leaves memory: a whole ``qvtools compare`` run with a recognisable fake key (local
service started with it, DEBUG logging captured to a file), then EVERY artifact is grepped for it: all files
under RUN_DIR (report.html, the executed notebook, parquet bytes, turns.jsonl, run.json, WAVs), the log,
stdout/stderr, the data dir (the service's SQLite store, the voice registry). Also reprs and the messages
(and formatted tracebacks) of the errors raised while the key is in use."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback

import pytest

from qvtools.config import Settings
from qvtools.errors import APIError, QVError, TransportError
from qvtools.resources import samples_dir

# built from parts so the committed source holds no key-shaped literal (secret scanners)
FAKE_KEY = "sk-" + "QVTOOLSFAKEKEY" + "0123456789abcdef"
#: Also catches a partial leak (a truncated or prefixed key).
NEEDLES = (FAKE_KEY.encode(), b"QVTOOLSFAKEKEY", b"0123456789abcdef")
FLASH = "qwen3.5-omni-flash-realtime"

_DRIVER = r"""
import logging, sys
logging.basicConfig(filename=sys.argv[1], level=logging.DEBUG,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")
from qvtools.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _leaks(data: bytes) -> list[bytes]:
    return [n for n in NEEDLES if n in data]


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """``qvtools compare``: 1 voice x 2 models x 1 prompt on the local service, key in the environment."""
    base = tmp_path_factory.mktemp("secrets")
    run_dir, data_dir, log = base / "run", base / "data", base / "debug.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE_", "QVTOOLS_"))}
    env.update(DASHSCOPE_API_KEY=FAKE_KEY, QVTOOLS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    if os.environ.get("QVTOOLS_SPEECH_DIR"):
        env["QVTOOLS_SPEECH_DIR"] = os.environ["QVTOOLS_SPEECH_DIR"]
    argv = ["compare", "--out", str(run_dir), "--voices", str(samples_dir() / "voices" / "ava.wav"),
            "--prompts", str(samples_dir() / "prompts" / "weather.wav"), "--workers", "1"]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(log), *argv], env=env, cwd=base,
                          capture_output=True, timeout=900)
    return base, proc


@pytest.mark.slow
def test_the_compare_run_worked(compare_run):
    base, proc = compare_run
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    run_dir = base / "run"
    assert (run_dir / "report.html").is_file() and (run_dir / "results.parquet").is_file()
    assert (base / "debug.log").stat().st_size > 0


@pytest.mark.slow
def test_no_artifact_holds_the_key(compare_run):
    base, proc = compare_run
    assert not _leaks(proc.stdout) and not _leaks(proc.stderr)
    files = [p for p in base.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    # what must be among the grepped files (so a moved artifact cannot silently escape the check)
    assert {"report.html", "results.parquet", "turns.jsonl", "run.json", "debug.log"} <= names, sorted(names)
    assert any(p.parent.name == "service" or "service" in p.parts for p in files), "the service data dir"
    leaks = {str(p.relative_to(base)): _leaks(p.read_bytes()) for p in files}
    assert not {k: v for k, v in leaks.items() if v}
    assert len(files) >= 8


def test_reprs_do_not_show_the_key(tmp_path):
    from qvtools.server import LocalService, ServiceConfig
    from qvtools.workspace import connect

    settings = Settings(region="local", api_key=FAKE_KEY, data_dir=tmp_path)
    texts = [repr(settings), str(settings), repr(ServiceConfig(api_key=FAKE_KEY))]
    with connect(settings) as ws:
        texts += [repr(ws), ws.describe(), repr(ws.voices), repr(ws.settings), repr(ws.service),
                  repr(ws.service.config)]
        with ws.realtime(FLASH) as rt:
            texts.append(repr(rt))
    with LocalService(data_dir=tmp_path / "svc", api_key=FAKE_KEY) as svc:
        texts += [repr(svc), repr(svc.config)]
    for text in texts:
        assert not _leaks(text.encode()), text


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args) + str(vars(exc))


def test_errors_raised_while_the_key_is_in_use_do_not_carry_it(tmp_path):
    from qvtools.enrollment import VoiceClient
    from qvtools.realtime.session import RealtimeSession
    from qvtools.server import LocalService

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Capture(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    raised: list[BaseException] = []
    try:
        # nothing listens on a fresh closed port: TransportError from both transports
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        nowhere = Settings(region="local", base_url=dead, api_key=FAKE_KEY, timeout_s=5)
        with pytest.raises(TransportError) as info:
            list(VoiceClient(nowhere, max_retries=0).list())
        raised.append(info.value)
        with pytest.raises(TransportError) as info:
            RealtimeSession(nowhere, FLASH, timeout=5).connect()
        raised.append(info.value)
        # a service that wants another key: APIError (401) from both transports
        with LocalService(data_dir=tmp_path, api_key="sk-the-right-one") as svc:
            wrong = Settings(region="local", base_url=svc.url, api_key=FAKE_KEY, timeout_s=10)
            with pytest.raises(APIError) as info:
                list(VoiceClient(wrong).list())
            raised.append(info.value)
            with pytest.raises(APIError) as info:
                RealtimeSession(wrong, FLASH, timeout=10).connect()
            raised.append(info.value)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert all(isinstance(e, QVError) for e in raised)
    assert [e.status for e in raised if isinstance(e, APIError)] == [401, 401]
    for exc in raised:
        assert not _leaks(_all_text(exc).encode()), _all_text(exc)
    for line in records:
        assert not _leaks(line.encode()), line


@pytest.fixture(scope="module")
def replayed(compare_run):
    """``qvtools replay`` of that run with the key in the environment, the service gone and the settings
    pointing at a closed port (no network): results.parquet and report.html are rebuilt."""
    import socket

    base, proc = compare_run
    assert proc.returncode == 0
    run_dir, log = base / "run", base / "replay-debug.log"
    (run_dir / "results.parquet").unlink()
    (run_dir / "report.html").unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE_", "QVTOOLS_"))}
    env.update(DASHSCOPE_API_KEY=FAKE_KEY, QVTOOLS_DATA_DIR=str(base / "data"), QVTOOLS_BASE_URL=dead,
               PYTHONUNBUFFERED="1")
    rep = subprocess.run([sys.executable, "-c", _DRIVER, str(log), "replay", str(run_dir), "--timeout", "300"],
                         env=env, cwd=base, capture_output=True, timeout=900)
    return base, rep


@pytest.mark.slow
def test_replay_artifacts_do_not_hold_the_key(replayed):
    base, rep = replayed
    assert rep.returncode == 0, rep.stderr.decode(errors="replace")[-3000:]
    run_dir = base / "run"
    assert (run_dir / "results.parquet").is_file() and (run_dir / "report.html").is_file()
    assert not _leaks(rep.stdout) and not _leaks(rep.stderr)
    files = [p for p in run_dir.rglob("*") if p.is_file()] + [base / "replay-debug.log"]
    leaks = {str(p.relative_to(base)): _leaks(p.read_bytes()) for p in files}
    assert not {k: v for k, v in leaks.items() if v}
