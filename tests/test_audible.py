"""Latency to audible speech (qvtools.audible): a reply whose first speech comes after padded silence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qvtools import audible
from qvtools.audio import load, resample
from qvtools.realtime.turn import Turn
from qvtools.resources import samples_dir

SR = 24000


@pytest.fixture(scope="module")
def speech():
    """A packaged sample voice (made by data/make_samples.py) cut to start at its own speech onset."""
    x, sr = load(samples_dir() / "voices" / "ava.wav", mono=True)
    x = resample(x, sr, SR) if sr != SR else x
    onset = audible.speech_onset_s(x, SR)
    assert math.isfinite(onset)
    return x[int(onset * SR): int(onset * SR) + 3 * SR].astype(np.float32)


def _turn(audio, *, first_chunk_at=1.0, chunk_s=0.1, rate=4.0, end=0.5):
    """A turn whose reply arrives in ``chunk_s`` chunks at ``rate`` x real time, the first at ``first_chunk_at``
    (perf_counter seconds); the user's speech ended at ``end``."""
    n = int(chunk_s * SR)
    chunks = [(first_chunk_at + i * chunk_s / rate, min(n, len(audio) - s)) for i, s in enumerate(range(0, len(audio), n))]
    return Turn(model="m", status="completed", audio=audio, sample_rate=SR, audio_chunks=chunks,
                marks={"speech_end_sent": end, "first_audio_delta": first_chunk_at})


def test_400_ms_of_leading_silence_adds_400_ms(speech):
    padded = np.concatenate([np.zeros(int(0.4 * SR), np.float32), speech])
    base = audible.audible_latency(_turn(speech))
    late = audible.audible_latency(_turn(padded))
    ttfa_ms = 500.0  # first chunk at 1.0 s, end of speech at 0.5 s
    assert late["reply_leading_silence_ms"] - base["reply_leading_silence_ms"] == pytest.approx(400, abs=33)
    # delivered faster than real time: heard exactly the leading silence after the first chunk
    assert late["ttfa_audible_ms"] - ttfa_ms == pytest.approx(late["reply_leading_silence_ms"], abs=1e-6)
    assert late["ttfa_audible_ms"] - ttfa_ms == pytest.approx(400, abs=40)  # VAD frame: 32 ms
    assert base["ttfa_audible_ms"] - ttfa_ms < 40


def test_an_underrun_inside_the_silence_is_heard(speech):
    """Chunks slower than real time: the speech sample is played when its chunk arrives, later than
    ttfa_ms + leading silence."""
    padded = np.concatenate([np.zeros(int(0.4 * SR), np.float32), speech])
    slow = audible.audible_latency(_turn(padded, rate=0.5))
    fast = audible.audible_latency(_turn(padded, rate=4.0))
    assert slow["reply_leading_silence_ms"] == fast["reply_leading_silence_ms"]
    # the chunk holding the 0.4 s onset (index 4) arrives 4 x 0.2 s after the first
    assert slow["ttfa_audible_ms"] - 500 == pytest.approx(800 + (fast["ttfa_audible_ms"] - 500 - 400), abs=1)


def test_play_time_follows_arrivals_and_playback():
    chunks = [(10.0, 100), (10.05, 100), (11.0, 100)]  # 100 samples at 1000 Hz = 0.1 s each
    assert audible.play_time_s(chunks, 1000, 0) == pytest.approx(10.0)
    assert audible.play_time_s(chunks, 1000, 150) == pytest.approx(10.15)  # queued behind chunk 0
    assert audible.play_time_s(chunks, 1000, 200) == pytest.approx(11.0)  # underrun: starts on arrival
    assert math.isnan(audible.play_time_s(chunks, 1000, 300))


def test_no_speech_gives_nan():
    out = audible.audible_latency(_turn(np.zeros(SR, np.float32)))
    assert math.isnan(out["ttfa_audible_ms"]) and math.isnan(out["reply_leading_silence_ms"])
    assert all(math.isnan(v) for v in audible.audible_latency(Turn(model="m")).values())
