"""Piper TTS: it speaks the text (checked with the offline ASR), streams per sentence."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qvtools.errors import ConfigError
from qvtools.server.tts import Synthesizer, split_sentences

pytestmark = pytest.mark.slow

TEXT = "Good morning. The weather is lovely today, so let us take a walk in the park."


def wer(ref: str, hyp: str) -> float:
    r = re.sub(r"[^a-z' ]", " ", ref.lower()).split()
    h = re.sub(r"[^a-z' ]", " ", hyp.lower()).split()
    d = np.arange(len(h) + 1)
    for i, rw in enumerate(r, 1):
        prev, d[0] = d.copy(), i
        for j, hw in enumerate(h, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (rw != hw))
    return d[len(h)] / max(len(r), 1)


@pytest.fixture(scope="module")
def synth():
    return Synthesizer()


@pytest.fixture(scope="module")
def spoken(synth):
    return synth.synthesize(TEXT)


def test_split_sentences():
    assert split_sentences("Hi there! How are you?  Fine.\nBye") == ["Hi there!", "How are you?", "Fine.", "Bye"]
    assert split_sentences("   ") == []
    with pytest.raises(ConfigError):
        split_sentences(None)


def test_synthesize_produces_intelligible_speech(spoken):
    from qvtools import asr

    x, sr = spoken
    assert sr == 22050 and x.dtype == np.float32
    assert 2.0 < len(x) / sr < 10.0
    assert 0.1 < np.max(np.abs(x)) <= 1.0
    assert wer(TEXT, asr.transcribe(x, sr)) <= 0.15


def test_stream_yields_each_sentence(synth, spoken):
    pieces = list(synth.stream(TEXT))
    assert [p for p, _ in pieces] == split_sentences(TEXT)
    assert all(a.dtype == np.float32 and a.size > 0 for _, a in pieces)
    total = sum(a.size for _, a in pieces)
    assert abs(total - spoken[0].size) < 0.25 * spoken[1] * len(pieces)  # VITS duration noise only


def test_length_scale_slows_speech(synth):
    fast, sr = synth.synthesize("One two three four five.", length_scale=0.8)
    slow, _ = synth.synthesize("One two three four five.", length_scale=1.4)
    assert len(slow) > 1.3 * len(fast)
    with pytest.raises(ConfigError):
        synth.synthesize("x", length_scale=0)


def test_empty_text_gives_no_audio(synth):
    x, sr = synth.synthesize("  ")
    assert x.size == 0 and sr == 22050
