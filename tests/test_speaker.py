"""Speaker embeddings: features match the package recipe, same speaker scores higher than others."""

from __future__ import annotations

import numpy as np
import pytest

from qvtools import speaker
from qvtools.audio import load
from qvtools.errors import InvalidAudio

pytestmark = pytest.mark.slow

CLEAN = "clean"


def buzz(f0: float, formants, seconds=3.0, sr=16000, seed=0) -> np.ndarray:
    """A synthetic 'speaker': glottal-like pulse train with jitter through fixed resonances."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    x = np.zeros(n)
    t = 0.0
    while t < n:
        x[int(t)] = 1.0
        t += sr / (f0 * (1 + 0.03 * rng.standard_normal()))
    for fm in formants:
        r = np.exp(-np.pi * 80 / sr)
        x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fm / sr), r * r], x)
    am = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * np.arange(n) / sr) ** 2
    x = x * am
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def test_log_mel_matches_librosa_recipe(rng):
    librosa = pytest.importorskip("librosa")
    y = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    s = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, win_length=400, hop_length=160,
                                       n_mels=40, window="hamming", center=False, power=2.0)
    np.testing.assert_allclose(speaker.log_mel(y, 16000), np.log10(s + 1e-10).T, atol=1e-3)


def test_identical_audio_scores_one():
    x = buzz(120, (600, 1200, 2500))
    e = speaker.embed(x, 16000)
    assert e.shape == (speaker.EMBEDDING_DIM,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert speaker.similarity_audio(x, 16000, x, 16000) == pytest.approx(1.0, abs=1e-5)


def test_different_synthetic_speakers_score_lower():
    a1 = buzz(110, (550, 1100, 2400), seed=1)
    a2 = buzz(110, (550, 1100, 2400), seed=2)  # same "speaker", other jitter
    b = buzz(230, (850, 1900, 3100), seed=3)
    same = speaker.similarity_audio(a1, 16000, a2, 16000)
    other = speaker.similarity_audio(a1, 16000, b, 16000)
    assert same > 0.9
    assert other < same - 0.05


def test_real_speakers(speech_data):
    lj1 = speaker.embed(*load(speech_data / CLEAN / "en_F_ljspeech_LJ001-0001.wav", mono=True))
    lj3 = speaker.embed(*load(speech_data / CLEAN / "en_F_ljspeech_LJ001-0003.wav", mono=True))
    de = speaker.embed(*load(speech_data / CLEAN / "de_M_thorsten_6utts.wav", mono=True))
    assert speaker.similarity(lj1, lj3) > 0.85
    assert speaker.similarity(lj1, de) < 0.5


def test_bad_input():
    with pytest.raises(InvalidAudio):
        speaker.embed(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError):
        speaker.similarity(np.ones(3), np.ones(4))
    assert isinstance(speaker.MODEL_NAME, str) and "256" in speaker.MODEL_NAME


def test_embed_windows_shapes_and_speakers():
    a = buzz(110, (550, 1100, 2400), seconds=3.0, seed=1)
    b = buzz(230, (850, 1900, 3100), seconds=3.0, seed=3)
    x = np.concatenate([a, b])  # 6 s: speaker A, then speaker B
    grid = speaker.embed_windows(x, 16000, 1.5, 0.75)
    # starts 0, 0.75, ..., 3.75 s; a window at 4.5 s would need the last 512-sample STFT frame past 6 s
    assert grid.shape == (6, speaker.EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(grid, axis=1), 1.0, atol=1e-5)
    emb = speaker.embed_windows(x, 16000, 1.5, starts_s=[0.0, 1.0, 3.2, 4.4])
    same_a, same_b = emb[0] @ emb[1], emb[2] @ emb[3]
    across = max(emb[i] @ emb[j] for i in (0, 1) for j in (2, 3))
    assert min(same_a, same_b) > across + 0.05, (same_a, same_b, across)
    # the same window at another sample rate embeds (nearly) the same
    x24 = speaker._prepare(x, 16000)  # float64 16 kHz
    from qvtools.audio import resample

    e24 = speaker.embed_windows(resample(x24.astype(np.float32), 16000, 24000), 24000, 1.5, starts_s=[0.0])
    assert float(e24[0] @ emb[0]) > 0.95


def test_embed_windows_bad_input():
    x = buzz(120, (600, 1200, 2500), seconds=2.0)
    assert speaker.embed_windows(x[:8000], 16000, 1.5).shape == (0, speaker.EMBEDDING_DIM)  # 0.5 s: no window fits
    with pytest.raises(ValueError, match="window_s"):
        speaker.embed_windows(x, 16000, 0.5)
    with pytest.raises(ValueError, match="window starts"):
        speaker.embed_windows(x, 16000, 1.5, starts_s=[1.0])
    with pytest.raises(ValueError, match="hop_s"):
        speaker.embed_windows(x, 16000, 1.5, 0.0)
    with pytest.raises(InvalidAudio):
        speaker.embed_windows(np.zeros(0, np.float32), 16000)


def test_embed_remembers_by_content_and_returns_copies():
    """A reply embedded for its turn is not embedded again by the run's calibration (same samples), and a
    caller that changes the returned array does not change what the next caller gets."""
    x = buzz(120, (600, 1200, 2500))
    speaker.clear_cache()
    calls = []
    real = speaker._embed
    speaker._embed = lambda *a: calls.append(1) or real(*a)
    try:
        first = speaker.embed(x, 16000)
        first[:] = 0.0
        again = speaker.embed(x.copy(), 16000)
        other = speaker.embed(x[: len(x) // 2], 16000)
    finally:
        speaker._embed = real
    assert len(calls) == 2  # the copy hit the cache, the half did not
    assert np.linalg.norm(again) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(again, other)
