"""Offline Whisper tiny.en: English speech in, text out; bad input refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from qvtools import asr
from qvtools.audio import load
from qvtools.errors import ConfigError, InvalidAudio

pytestmark = pytest.mark.slow


def test_transcribes_ljspeech_clip(speech_data):
    x, sr = load(speech_data / "clean" / "en_F_ljspeech_LJ001-0001.wav", mono=True)
    text = asr.transcribe(x, sr).lower()
    for word in ("printing", "only sense", "arts and crafts", "exhibition"):
        assert word in text


def test_silence_gives_little_or_no_text():
    assert asr.transcribe(np.zeros(0, np.float32), 16000) == ""
    text = asr.transcribe(np.zeros(16000, np.float32), 16000)
    assert len(text.split()) <= 2


def test_rejects_bad_input():
    with pytest.raises(ConfigError, match="English-only"):
        asr.transcribe(np.zeros(16000, np.float32), 16000, language="zh")
    with pytest.raises(InvalidAudio):
        asr.transcribe(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(InvalidAudio):
        asr.transcribe(np.zeros(100, np.float32), 0)


def test_model_name_is_recorded():
    assert "tiny.en" in asr.MODEL_NAME and asr.load_model() is asr.load_model()
