"""Voice profiles and WORLD conversion, checked against signals of known pitch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qvtools.errors import ConfigError, InvalidAudio
from qvtools.server import voice
from qvtools.server.voice import ENVELOPE_GRID_HZ, VoiceProfile, analyze, builtin_profile, convert

SR = 16000


def harmonic(f0: float, seconds: float = 2.0, sr: int = SR, vibrato: float = 0.0, formants=(700, 1200, 2600)) -> np.ndarray:
    """A vowel-like harmonic signal: harmonics of ``f0`` shaped by three resonances, with syllable-like AM."""
    t = np.arange(int(seconds * sr)) / sr
    inst = f0 * (1.0 + vibrato * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(inst) / sr
    x = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        fk = k * f0
        amp = sum(1.0 / (1.0 + ((fk - fm) / 90.0) ** 2) for fm in formants) / k ** 0.5
        x += amp * np.sin(k * phase)
    am = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = x * am
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def low_voice():
    return harmonic(120.0, vibrato=0.03)


@pytest.fixture(scope="module")
def high_profile():
    return analyze(harmonic(210.0, vibrato=0.05, formants=(850, 1500, 3000)), SR)


def test_profile_round_trip_is_json_safe(low_voice):
    prof = analyze(low_voice, SR)
    d = json.loads(json.dumps(prof.to_dict()))
    back = VoiceProfile.from_dict(d)
    assert back == prof
    assert len(back.envelope_db) == len(ENVELOPE_GRID_HZ)
    assert back.sample_rate == SR


def test_from_dict_rejects_incomplete_profile():
    with pytest.raises(ConfigError, match="missing"):
        VoiceProfile.from_dict({"f0_median_hz": 100.0})
    with pytest.raises(ConfigError):
        VoiceProfile.from_dict("not a dict")


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_analyze_finds_known_f0_within_3_percent(f0):
    prof = analyze(harmonic(f0), SR)
    assert prof.f0_median_hz == pytest.approx(f0, rel=0.03)
    assert prof.logf0_mean == pytest.approx(np.log(f0), abs=0.03)


def test_analyze_rejects_silence():
    with pytest.raises(InvalidAudio, match="no voiced speech"):
        analyze(np.zeros(SR, np.float32), SR)
    with pytest.raises(InvalidAudio):
        analyze(np.zeros(0, np.float32), SR)


def test_convert_moves_f0_median_to_target(low_voice, high_profile):
    y = convert(low_voice, SR, high_profile)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    out = analyze(y, SR)
    assert out.f0_median_hz == pytest.approx(high_profile.f0_median_hz, rel=0.05)
    assert np.max(np.abs(y)) <= 0.99


def test_convert_with_cached_source_profile(low_voice):
    src = analyze(low_voice, SR)
    target = builtin_profile("Cherry")
    y = convert(low_voice, SR, target, src)
    assert analyze(y, SR).f0_median_hz == pytest.approx(target.f0_median_hz, rel=0.05)
    # loudness kept: active RMS within 3 dB of the input
    r_in, r_out = np.sqrt(np.mean(low_voice ** 2)), np.sqrt(np.mean(y ** 2))
    assert abs(20 * np.log10(r_out / r_in)) < 3.0


def test_convert_rejects_non_profile(low_voice):
    with pytest.raises(ConfigError):
        convert(low_voice, SR, {"f0_median_hz": 100})


def test_builtin_profiles_are_distinct_and_deterministic():
    names = ["Tina", "Ethan", "Serena", "Cherry", "Chelsie"]
    profs = [builtin_profile(n) for n in names]
    assert builtin_profile("Tina") == profs[0]
    keys = {(round(p.f0_median_hz, 3), round(p.formant_scale, 4)) for p in profs}
    assert len(keys) == len(names)
    assert builtin_profile("Ethan").f0_median_hz < 140 < builtin_profile("Tina").f0_median_hz
    assert all(p.origin == "builtin" and p.name == n for p, n in zip(profs, names))
    assert VoiceProfile.from_dict(profs[1].to_dict()) == profs[1]


def test_builtin_profile_unknown_name():
    with pytest.raises(KeyError, match="not supported"):
        builtin_profile("NoSuchVoice")
    assert "Tina" in voice.BUILTIN_VOICES


def test_profile_has_envelope_codebook(high_profile):
    cb = np.asarray(high_profile.codebook_db)
    assert cb.ndim == 2 and 8 <= cb.shape[0] <= voice.CODEBOOK_SIZE and cb.shape[1] == len(ENVELOPE_GRID_HZ)
    assert np.allclose(cb.mean(axis=1), 0.0, atol=1e-6)  # shapes: frame level removed
    back = VoiceProfile.from_dict(json.loads(json.dumps(high_profile.to_dict())))
    assert np.allclose(back.codebook_db, cb)


def test_stored_profile_without_new_fields_still_works(low_voice, high_profile):
    old = high_profile.to_dict()
    for key in ("codebook_db", "codebook_unvoiced_db", "envelope_std_db"):  # added after profiles were first stored
        old.pop(key)
    prof = VoiceProfile.from_dict(old)
    assert prof.codebook_db is None and prof.codebook_unvoiced_db is None and prof.envelope_std_db is None
    y = convert(low_voice, SR, prof)
    assert np.all(np.isfinite(y)) and analyze(y, SR).f0_median_hz == pytest.approx(prof.f0_median_hz, rel=0.05)


def test_from_dict_rejects_malformed_codebook(high_profile):
    d = high_profile.to_dict()
    for key in ("codebook_db", "codebook_unvoiced_db"):
        bad = dict(d, **{key: [[0.0, 1.0]]})
        with pytest.raises(ConfigError, match=key):
            VoiceProfile.from_dict(bad)


def _shape_distance(prof: VoiceProfile, target: VoiceProfile) -> float:
    """Mean distance (dB) from each of prof's envelope shapes to the nearest of target's."""
    a, b = np.asarray(prof.codebook_db), np.asarray(target.codebook_db)
    d = np.sqrt(((a[:, None, :] - b[None]) ** 2).mean(-1))
    return float(d.min(axis=1).mean())


@pytest.mark.slow
def test_codebook_moves_envelope_shapes_toward_the_target(low_voice, high_profile):
    without = analyze(convert(low_voice, SR, high_profile, codebook_strength=0.0), SR)
    with_cb = analyze(convert(low_voice, SR, high_profile, codebook_strength=1.0, codebook_k=1), SR)
    assert _shape_distance(with_cb, high_profile) < _shape_distance(without, high_profile)


def test_apply_codebook_maps_frames_onto_their_nearest_centroid():
    rng = np.random.default_rng(1)
    grid = np.asarray(ENVELOPE_GRID_HZ)
    codebook = rng.normal(0.0, 8.0, (6, grid.size))
    codebook -= codebook.mean(axis=1, keepdims=True)
    n_bins, sr = 513, SR
    freqs = np.arange(n_bins) * sr / (2.0 * (n_bins - 1))
    truth = np.repeat(np.arange(6), 20)  # 120 frames, 20 per centroid
    noisy = codebook[truth] + rng.normal(0.0, 2.0, (truth.size, grid.size))
    db = np.log(10.0) / 10.0
    logsp = np.stack([np.interp(freqs, grid, row) for row in noisy]) * db - 3.0  # frame level is kept
    frames = np.ones(truth.size, bool)
    out = voice._apply_codebook(logsp, sr, frames, codebook, 1.0, 1)
    env = np.stack([np.interp(grid, freqs, row) for row in out / db])
    err_before = np.sqrt(((noisy - noisy.mean(1, keepdims=True) - codebook[truth]) ** 2).mean())
    err_after = np.sqrt(((env - env.mean(1, keepdims=True) - codebook[truth]) ** 2).mean())
    assert err_after < 0.8 * err_before  # smoothing over ~25 ms blurs the 5 block boundaries a little
    untouched = voice._apply_codebook(logsp, sr, np.zeros(truth.size, bool), codebook, 1.0, 1)
    assert np.array_equal(untouched, logsp)


def test_unvoiced_codebook_from_noise_bursts():
    rng = np.random.default_rng(3)
    x = harmonic(140.0, seconds=3.0, vibrato=0.04).copy()
    hiss = np.convolve(rng.standard_normal(x.size), [1.0, -0.9], mode="same").astype(np.float32)
    for start in np.arange(0.2, 2.8, 0.5):  # 120 ms fricative-like bursts in gaps of the vowel
        a, b = int(start * SR), int((start + 0.12) * SR)
        x[a:b] = 0.08 * hiss[a:b]
    prof = analyze(x, SR)
    assert prof.codebook_unvoiced_db is not None
    cb = np.asarray(prof.codebook_unvoiced_db)
    assert cb.shape[1] == len(ENVELOPE_GRID_HZ) and cb.shape[0] <= voice.CODEBOOK_UNVOICED_SIZE
    back = VoiceProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert np.allclose(back.codebook_unvoiced_db, cb)
    y = convert(x, SR, prof)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 0.99


def test_voice_uses_the_shared_resampler_and_keeps_its_f0():
    """server.voice resamples with qvtools.audio.resample, bit-identical to its former float64 soxr call
    (issue 12). Its WORLD F0 stays its own: metrics.f0_contour resamples to 8 kHz and runs DIO at speed 2,
    which does not reproduce the F0 WORLD resynthesis needs on the analysis grid."""
    import soxr

    from qvtools import metrics

    rng = np.random.default_rng(3)
    for a, b in [(24000, 16000), (44100, 16000), (22050, 16000), (16000, 10000), (16000, 24000)]:
        x = rng.standard_normal(48001) * 0.2
        assert np.array_equal(voice._resample(x, a, b), soxr.resample(x, a, b).astype(np.float64))
    x = rng.standard_normal(100)
    assert voice._resample(x, 16000, 16000) is x
    sr = 24000
    t = np.arange(sr) / sr
    y = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 450 * t)
    f0, _ = voice._world_f0(voice._pw(), y, sr, 5.0)
    _, f0_metrics = metrics.f0_contour(y, sr, frame_period_ms=5.0)
    assert len(f0) == len(f0_metrics) and not np.array_equal(f0, f0_metrics)


# --------------------------------------------------------------------------- issue 10: fidelity (LTAS, utterance mean)

def test_profile_measures_ltas_and_keeps_it_through_json(high_profile):
    lt = np.asarray(high_profile.ltas_db)
    assert lt.shape == (len(ENVELOPE_GRID_HZ),) and abs(lt.mean()) < 1e-6 and np.ptp(lt) > 10.0
    back = VoiceProfile.from_dict(json.loads(json.dumps(high_profile.to_dict())))
    assert np.allclose(back.ltas_db, lt)
    with pytest.raises(ConfigError, match="ltas_db"):
        VoiceProfile.from_dict(dict(high_profile.to_dict(), ltas_db=[0.0, 1.0]))
    old = high_profile.to_dict()
    old.pop("ltas_db")  # a profile stored before issue 10: no equaliser, conversion still works
    assert VoiceProfile.from_dict(old).ltas_db is None


def test_ltas_equalizer_moves_the_reply_spectrum_onto_the_target(low_voice):
    # A target whose long-term spectrum is tilted 12 dB down from 80 Hz to 7.6 kHz relative to the reply's:
    # the equaliser must move the reply's LTAS that way (strength 0.5: about half of it).
    x = low_voice + 0.002 * np.random.default_rng(5).standard_normal(low_voice.size).astype(np.float32)  # breath floor
    src = analyze(x, SR)
    target = VoiceProfile.from_dict(src.to_dict())
    tilt = np.linspace(6.0, -6.0, len(ENVELOPE_GRID_HZ))
    target.ltas_db = list(np.asarray(src.ltas_db) + tilt)

    band = (np.asarray(ENVELOPE_GRID_HZ) > 100) & (np.asarray(ENVELOPE_GRID_HZ) < 3500)  # the harmonics' band

    def dist(y):  # WORLD's noise generator keeps its state between calls: judge where the harmonics are
        d = (voice._ltas_db(y, SR) - np.asarray(target.ltas_db))[band]
        return float(np.sqrt(np.mean((d - d.mean()) ** 2)))

    kw = dict(codebook_strength=0.0, codebook_unvoiced_strength=0.0)  # the equaliser alone
    off = convert(x, SR, target, src, ltas_strength=0.0, **kw)
    half = convert(x, SR, target, src, ltas_strength=0.5, **kw)
    full = convert(x, SR, target, src, ltas_strength=1.0, **kw)
    assert dist(full) < dist(half) < 0.8 * dist(off)
    assert len(half) == len(off) and np.max(np.abs(half)) <= 0.99  # an equaliser: timing and peak limit kept


def test_aperiodicity_on_every_other_frame_follows_the_full_analysis(monkeypatch):
    # issue 22: D4C on every APERIODICITY_STEP-th frame, linearly interpolated between; a voiced-unvoiced-voiced
    # signal so the aperiodicity moves in time, and the interpolated one must follow it
    import pyworld as pw

    x = np.concatenate([harmonic(150.0, 0.6), 0.05 * np.random.default_rng(1).standard_normal(int(0.3 * SR)),
                        harmonic(190.0, 0.6)]).astype(np.float64)
    f0, t = voice._world_f0(pw, x, SR, 5.0)
    full = pw.d4c(x, f0, t, SR)
    monkeypatch.setattr(voice, "APERIODICITY_STEP", 1)
    assert np.array_equal(voice._aperiodicity(pw, x, f0, t, SR), full)
    monkeypatch.setattr(voice, "APERIODICITY_STEP", 2)
    half = voice._aperiodicity(pw, x, f0, t, SR)
    assert half.shape == full.shape and np.all((half >= 0) & (half <= 1))
    assert np.abs(half - full).mean() < 0.05 * np.abs(full - full.mean(axis=0)).mean() + 0.01
    noise = slice(len(t) * 62 // 150, len(t) * 88 // 150)  # the noise burst: aperiodic in both
    assert half[noise].mean() > 0.5 and abs(half[noise].mean() - full[noise].mean()) < 0.05


def test_the_warp_search_runs_once_per_voice_pair(low_voice, high_profile, monkeypatch):
    # issue 22: convert's formant-warp search depends on the two profiles only: once per (source, target) pair
    src = analyze(low_voice, SR)
    calls = []
    real = voice.estimate_warp
    monkeypatch.setattr(voice, "estimate_warp", lambda *a: calls.append(a) or real(*a))
    y1 = convert(low_voice[: SR], SR, high_profile, src)
    y2 = convert(low_voice[: SR], SR, high_profile, src)
    assert len(calls) == 1 and np.array_equal(y1, y2)
    other = analyze(harmonic(180.0, vibrato=0.04, formants=(800, 1400, 2900)), SR)
    convert(low_voice[: SR], SR, other, src)
    assert len(calls) == 2
