"""Naturalness (qvtools.naturalness, DNSMOS from speechmos) on controlled inputs from ../shared/data/speech."""

from __future__ import annotations

import numpy as np
import pytest

from qvtools import naturalness
from qvtools.audio import load
from qvtools.errors import InvalidAudio

pytest.importorskip("speechmos", reason="naturalness needs speechmos (the eval extra)")

CLEAN = "clean/en_F_ljspeech_LJ001-0001.wav"
NOISY = "bad/noisy_synthetic_ljspeech-LJ001-0007_plus_dishes-noise_snr5dB.wav"  # same reader, dishes at 5 dB SNR


@pytest.fixture(scope="module")
def clips(speech_data):
    return {name: load(speech_data / name, mono=True) for name in (CLEAN, NOISY)}


def test_clean_and_noisy_clips_are_ordered_by_mos(clips):
    clean, noisy = naturalness.dnsmos(*clips[CLEAN]), naturalness.dnsmos(*clips[NOISY])
    assert set(clean) == set(naturalness.MOS_COLUMNS)
    assert all(1.0 <= v <= 5.0 for v in (*clean.values(), *noisy.values()))
    # measured: clean OVRL 3.33 BAK 4.04, noisy OVRL 1.15 BAK 1.10 (README "Naturalness")
    assert clean["mos_ovrl"] - noisy["mos_ovrl"] > 1.0
    assert clean["mos_bak"] - noisy["mos_bak"] > 1.5
    assert clean["mos_p808"] > noisy["mos_p808"]


def test_added_white_noise_lowers_bak_of_the_same_speech(clips, rng):
    """A controlled pair: the clean clip and the same samples with white noise at 10 dB SNR."""
    x, sr = clips[CLEAN]
    noise = rng.normal(0, 1, x.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2)) / np.sqrt(10.0)
    clean, noisy = naturalness.dnsmos(x, sr), naturalness.dnsmos(np.clip(x + noise, -1, 1), sr)
    assert clean["mos_bak"] - noisy["mos_bak"] > 1.0
    assert clean["mos_ovrl"] > noisy["mos_ovrl"]


def test_mos_columns_give_the_reply_minus_reference(clips):
    out = naturalness.mos_columns(*clips[NOISY], reference=clips[CLEAN])
    ref = naturalness.reference_mos(*clips[CLEAN])
    assert out["ref_mos_ovrl"] == ref["mos_ovrl"]
    assert out["mos_ovrl_delta"] == pytest.approx(out["mos_ovrl"] - ref["mos_ovrl"])
    assert out["mos_ovrl_delta"] < -1.0 and out["mos_model"] == naturalness.MODEL_NAME
    assert "ref_mos_ovrl" not in naturalness.mos_columns(*clips[CLEAN])


def test_reference_scores_are_cached_by_content(clips):
    x, sr = clips[CLEAN]
    first = naturalness.reference_mos(x, sr)
    first["mos_ovrl"] = -1.0  # a copy: the cache is not changed through it
    assert naturalness.reference_mos(x.copy(), sr)["mos_ovrl"] > 1.0


def test_empty_audio_is_refused():
    with pytest.raises(InvalidAudio, match="empty"):
        naturalness.dnsmos(np.zeros(0, np.float32), 16000)


@pytest.mark.parametrize("seconds", [2.5, 4.0, 7.3, 20.0])
def test_same_scores_as_speechmos_itself(speech_data, seconds):
    """Batching the windows and sharing the P.835 convolutions between overlapping windows change nothing:
    speechmos's own DNSMOS.__call__ agrees (2.5 s, 4 s and 7.3 s: the clip doubled to 10 / 16 / 14.6 s,
    one window and 7 and 6 overlapping ones; 20 s: several windows of unlooped speech)."""
    from qvtools.audio import as_mono

    x, sr = load(speech_data / "clean/de_M_thorsten_6utts.wav", mono=True)  # 31.8 s
    y = np.clip(as_mono(x, sr, 16000)[: int(seconds * 16000)], -1, 1).astype(np.float32)
    ours = naturalness.dnsmos(y, 16000)
    theirs = naturalness._load()(y, 16000, False)
    for mine, key in (("mos_sig", "sig_mos"), ("mos_bak", "bak_mos"), ("mos_ovrl", "ovrl_mos"),
                      ("mos_p808", "p808_mos")):
        assert ours[mine] == pytest.approx(float(theirs[key]), abs=1e-4), mine


def test_concurrent_calls_give_the_sequential_scores(speech_data):
    """Two threads score at once (qvtools compare's two workers) and get what one thread gets."""
    from concurrent.futures import ThreadPoolExecutor

    x, sr = load(speech_data / "clean/de_M_thorsten_6utts.wav", mono=True)
    clips = [x[: int(4.0 * sr)], x[int(4.0 * sr): int(16.5 * sr)], x[: int(3.2 * sr)], x[int(5 * sr):]]
    alone = [naturalness.dnsmos(c, sr) for c in clips]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda c: naturalness.dnsmos(c, sr), clips))
    for a, b in zip(alone, together):
        for key in naturalness.MOS_COLUMNS:
            assert b[key] == pytest.approx(a[key], abs=1e-6), key


def test_without_the_split_the_scores_are_the_same(speech_data, monkeypatch):
    """The fallback (a P.835 model the split does not recognise: every window run whole) gives the same scores."""
    x, sr = load(speech_data / "clean/de_M_thorsten_6utts.wav", mono=True)
    clip = x[: int(4.0 * sr)]  # doubled to 16 s: 7 overlapping windows
    split = naturalness.dnsmos(clip, sr)
    model = naturalness._load()
    monkeypatch.setattr(model, "sig_front_sess", None)
    whole = naturalness.dnsmos(clip, sr)
    for key in naturalness.MOS_COLUMNS:
        assert whole[key] == pytest.approx(split[key], abs=1e-5), key
    with pytest.raises(ValueError, match="not the DNSMOS P.835 graph"):
        from importlib.resources import files

        naturalness._split_sig_bak_ovr(str(files("speechmos").joinpath("dnsmos_models", "model_v8.onnx")))
