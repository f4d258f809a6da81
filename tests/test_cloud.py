"""The same code against the real Model Studio service (marker ``cloud``).

Skipped unless ``DASHSCOPE_API_KEY`` and a cloud ``QVTOOLS_REGION`` (``beijing`` / ``singapore``) are set.
Creating a voice is billed ($0.01, SEED §2.4), so the create/delete round trip additionally needs
``QVTOOLS_CLOUD_BILLABLE=1``. Run: ``python -m pytest -m cloud tests/test_cloud.py``.
"""

from __future__ import annotations

import os

import pytest

import qvtools
from qvtools.config import TARGET_MODELS
from qvtools.resources import samples_dir

PROMPT = samples_dir() / "prompts" / "weather.wav"
VOICE = samples_dir() / "voices" / "ava.wav"

pytestmark = [
    pytest.mark.cloud,
    pytest.mark.skipif(not os.environ.get("DASHSCOPE_API_KEY")
                       or os.environ.get("QVTOOLS_REGION", "local").lower() in ("", "local"),
                       reason="real-service tests need DASHSCOPE_API_KEY and QVTOOLS_REGION=beijing|singapore"),
]


@pytest.fixture(scope="module")
def ws():
    with qvtools.connect() as workspace:
        assert not workspace.is_local
        yield workspace


def test_list_voices_pages_through_the_account(ws):
    voices = list(ws.voices.list(page_size=10))
    assert ws.voices.count() == len(voices)
    assert all(v.voice for v in voices)


@pytest.mark.parametrize("model", TARGET_MODELS)
def test_one_turn_with_a_builtin_voice(ws, model):
    with ws.realtime(model, voice="Tina") as session:
        turn = session.send_audio(PROMPT, realtime=True)
    assert turn.status == "completed", turn.error
    assert turn.audio.size > 0 and turn.sample_rate == 24000
    assert turn.latency()["ttfa_ms"] > 0


@pytest.mark.skipif(os.environ.get("QVTOOLS_CLOUD_BILLABLE") != "1",
                    reason="creating a voice is billed; set QVTOOLS_CLOUD_BILLABLE=1 to run it")
def test_create_talk_delete_roundtrip(ws):
    model = TARGET_MODELS[1]
    voice = ws.voices.create(VOICE, model, "qvtoolsci", language="en")
    try:
        assert voice.voice.startswith("qwen-omni-vc-qvtoolsci-voice-")
        with ws.realtime(model, voice=voice) as session:
            turn = session.send_audio(PROMPT, realtime=True)
        assert turn.status == "completed", turn.error
    finally:
        ws.voices.delete(voice.voice)
