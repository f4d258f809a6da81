"""qvtools.spec: each enrollment rule has one home, and the "≥ 3 s of continuous speech" rule (SEED §2.4)
is measured the same way by ``qvtools check`` and the local service (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from qvtools import audio, enrollment, lang, preflight, spec, vad
from qvtools.config import Settings
from qvtools.enrollment import VoiceClient
from qvtools.errors import APIError
from qvtools.server import LocalService
from qvtools.server.config import MAX_DATA_URI_BYTES, ServiceConfig

PLUS = "qwen3.5-omni-plus-realtime"
SPANISH = "clean/es_M_css10_tux_19demarzo_0008.wav"


def test_every_user_of_a_rule_reads_the_spec():
    assert preflight.MAX_DATA_URL_BYTES is spec.MAX_DATA_URL_BYTES == MAX_DATA_URI_BYTES == 10_485_760
    assert enrollment._MAX_DATA_URI == spec.MAX_DATA_URL_BYTES
    assert enrollment.LANGUAGES is spec.LANGUAGES and lang.DIALECTS is spec.DIALECTS
    assert lang.LANGUAGE_CODES is spec.LANGUAGE_CODES and len(spec.LANGUAGE_CODES) == 29
    assert enrollment.NAME_PATTERN is spec.NAME_PATTERN
    assert audio.ALLOWED_MIME is spec.ALLOWED_MIME and audio.MIME_CONTAINERS is spec.MIME_CONTAINERS
    cfg = ServiceConfig()
    assert (cfg.max_audio_s, cfg.min_sample_rate, cfg.min_continuous_speech_s, cfg.allowed_mime) == (
        spec.MAX_DURATION_S, spec.MIN_SAMPLE_RATE, spec.MIN_CONTINUOUS_SPEECH_S, spec.ALLOWED_MIME)
    assert (preflight.MIN_CONTINUOUS_SPEECH_S, preflight.CONTINUITY_GAP_S, preflight.MAX_PAUSE_S) == (3.0, 0.6, 2.0)
    from qvtools import catalog
    assert spec.OMNI_CLONE_PREFIX is catalog.OMNI_CLONE_PREFIX and spec.TTS_CLONE_PREFIX is catalog.TTS_CLONE_PREFIX


def test_longest_continuous_bridges_short_gaps_only():
    segs = [(0.0, 1.0), (1.5, 2.5), (2.9, 3.6), (5.0, 6.0)]  # gaps 0.5, 0.4 bridged; 1.4 not
    assert vad.longest_continuous(segs) == pytest.approx(3.6)
    assert vad.longest_continuous(segs, max_gap_s=0.45) == pytest.approx(2.1)  # only the 0.4 s gap
    assert vad.longest_continuous([]) == 0.0


@pytest.fixture(scope="module")
def spanish(speech_data):
    """The CSS10 Spanish reading of the issue, upsampled to 24 kHz (issue 12)."""
    x, sr = audio.load(speech_data / SPANISH)
    return audio.resample(x, sr, 24000), 24000


@pytest.fixture(scope="module")
def bursts(spanish):
    """The same voice cut into 0.9 s bursts with 1.0 s of silence between them: pauses within the
    2 s limit, but no 3 s of continuous speech."""
    x, sr = spanish
    start = int(vad.speech_segments(x, sr)[0][0] * sr)
    n, gap = int(0.9 * sr), np.zeros(int(1.0 * sr), np.float32)
    pieces = []
    for i in range(7):
        pieces += [x[start + i * n:start + (i + 1) * n], gap]
    return np.concatenate(pieces).astype(np.float32), sr


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc"), port=0) as svc:
        yield svc


@pytest.fixture
def client(service, tmp_path):
    c = VoiceClient(Settings(region="local", base_url=service.url, api_key=f"sk-spec-{tmp_path.name}",
                             data_dir=tmp_path))
    yield c
    c.close()


@pytest.mark.slow
def test_a_clip_check_passes_is_accepted_by_the_service(spanish, client):
    x, sr = spanish
    segments = vad.speech_segments(x, sr)
    # the clip of the issue: unbridged VAD segments are all < 3 s, bridged speech is longer
    assert max(e - s for s, e in segments) < spec.MIN_CONTINUOUS_SPEECH_S
    assert vad.longest_continuous_speech(x, sr) >= spec.MIN_CONTINUOUS_SPEECH_S
    report = preflight.check((x, sr))
    assert report["continuous_speech"].status == "pass", report.to_text()
    voice = client.create((x, sr), PLUS, "css10es", language="es", force=True)
    assert voice.voice.startswith(spec.OMNI_CLONE_PREFIX)


@pytest.mark.slow
def test_short_bursts_fail_check_and_service(bursts, client):
    x, sr = bursts
    report = preflight.check((x, sr))
    assert report["continuous_speech"].status == "fail"
    assert report["pauses"].status == "pass"
    with pytest.raises(APIError) as info:
        client.create((x, sr), PLUS, "bursts", force=True)
    assert (info.value.status, info.value.code) == (400, "Audio.PreprocessError")
    assert "No segments meet minimum duration requirement" in str(info.value)
    assert client.count() == 0
