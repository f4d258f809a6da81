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


def test_analyze_is_fast_on_20_seconds():
    import time

    x = np.tile(harmonic(150.0, vibrato=0.04), 10)
    analyze(x[:SR], SR)  # warm imports
    t0 = time.perf_counter()
    analyze(x, SR)
    assert time.perf_counter() - t0 < 1.5


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
