"""Golden tests for qvtools.metrics: fixture signals made here, expected values with explicit tolerances."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from qvtools import metrics
from qvtools.errors import InvalidAudio
from qvtools.realtime.turn import TimedEvent, Turn


# ---------------------------------------------------------------------------------------------
# fixture signals
# ---------------------------------------------------------------------------------------------

def sine(freq, sr, dur, amp=1.0):
    t = np.arange(int(sr * dur)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float64)


def harmonic(f0, sr, dur, n_harm=8, amp=0.5):
    """A voiced-like tone: f0 plus harmonics falling 6 dB/octave, peak-normalised to amp."""
    t = np.arange(int(sr * dur)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, n_harm + 1) if f0 * k < sr / 2)
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def _make_turn(marks, chunks, sr=24000, events=()):
    """A hand-built Turn (the real dataclass) with known marks and chunk schedule."""
    n = sum(k for _, k in chunks)
    return Turn(model="qwen3.5-omni-flash-realtime", voice="v", session_id="s", response_id="r",
                status="completed", error=None, events=[TimedEvent(t=t, type=ty, data={}) for t, ty in events],
                marks=dict(marks), audio=np.zeros(n, dtype=np.float32), sample_rate=sr,
                audio_chunks=list(chunks), user_transcript=None, assistant_transcript=None, usage=None)


# ---------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------

MARKS = {
    "connect": 100.0,
    "first_audio_sent": 100.5,
    "speech_end_sent": 102.0,
    "last_audio_sent": 103.0,
    "speech_stopped": 102.8,
    "response_created": 103.1,
    "first_text_delta": 103.25,
    "first_audio_delta": 103.5,
    "response_done": 106.0,
}
# 4 chunks of 0.5 s at 24 kHz, arriving at 103.5, 103.7, 104.5 and 105.6
CHUNKS = [(103.5, 12000), (103.7, 12000), (104.5, 12000), (105.6, 12000)]


def test_latency_metrics_from_known_marks():
    m = metrics.latency_metrics(_make_turn(MARKS, CHUNKS))
    assert m["ttfa_ms"] == pytest.approx(1500.0, abs=1e-6)
    assert m["ttft_ms"] == pytest.approx(1250.0, abs=1e-6)
    assert m["ttfa_created_ms"] == pytest.approx(400.0, abs=1e-6)
    assert m["ttft_created_ms"] == pytest.approx(150.0, abs=1e-6)
    assert m["response_created_ms"] == pytest.approx(1100.0, abs=1e-6)
    assert m["speech_stopped_ms"] == pytest.approx(800.0, abs=1e-6)
    assert m["e2e_ms"] == pytest.approx(4000.0, abs=1e-6)
    assert m["reply_duration_s"] == pytest.approx(2.0)
    assert m["chunk_count"] == 4
    # 2.0 s of audio over a 2.1 s receive span
    assert m["delivery_rtf"] == pytest.approx(2.0 / 2.1, rel=1e-9)
    assert m["gap_max_ms"] == pytest.approx(1100.0, abs=1e-6)
    assert m["gap_p95_ms"] == pytest.approx(np.percentile([200.0, 800.0, 1100.0], 95), abs=1e-6)
    # player: 103.5-104.0, 104.0-104.5, 104.5-105.0, then waits 105.0 -> 105.6 (one 600 ms underrun)
    assert m["underrun_count"] == 1
    assert m["underrun_ms"] == pytest.approx(600.0, abs=1e-6)


def test_latency_falls_back_to_last_audio_sent_and_events():
    marks = {k: v for k, v in MARKS.items() if k not in ("speech_end_sent", "response_created")}
    turn = _make_turn(marks, CHUNKS, events=[(103.2, "response.created"), (103.5, "response.audio.delta")])
    m = metrics.latency_metrics(turn)
    assert m["ttfa_ms"] == pytest.approx(500.0, abs=1e-6)   # from last_audio_sent = 103.0
    assert m["ttfa_created_ms"] == pytest.approx(300.0, abs=1e-6)  # response.created event at 103.2


def test_latency_missing_marks_are_nan_not_errors():
    m = metrics.latency_metrics(_make_turn({}, []))
    for key in ("ttfa_ms", "ttft_ms", "ttfa_created_ms", "ttft_created_ms", "e2e_ms", "delivery_rtf",
                "gap_p95_ms", "gap_max_ms", "underrun_ms"):
        assert math.isnan(m[key]), key
    assert m["chunk_count"] == 0
    assert m["reply_duration_s"] == 0.0


def test_underrun_simulation_known_schedule():
    sr = 1000
    # chunks of 100 ms; arrivals at 0, 0.05, 0.30, 0.35, 0.70
    chunks = [(0.0, 100), (0.05, 100), (0.30, 100), (0.35, 100), (0.70, 100)]
    # no buffer: plays 0-0.1, 0.1-0.2, gap 0.2->0.3 (100 ms), 0.3-0.4, 0.4-0.5, gap 0.5->0.7 (200 ms)
    assert metrics.playback_underruns(chunks, sr) == (2, pytest.approx(300.0))
    # 150 ms jitter buffer: 0.15-0.25, 0.25-0.35, 0.35-0.45, 0.45-0.55, gap 0.55->0.70 (150 ms)
    assert metrics.playback_underruns(chunks, sr, jitter_buffer_ms=150) == (1, pytest.approx(150.0))
    # a large enough buffer hides every gap
    assert metrics.playback_underruns(chunks, sr, jitter_buffer_ms=300) == (0, 0.0)
    # arrival order is what counts, not list order
    assert metrics.playback_underruns(chunks[::-1], sr) == (2, pytest.approx(300.0))


def test_usage_metrics():
    usage = {"total_tokens": 377, "input_tokens": 336, "output_tokens": 41,
             "input_tokens_details": {"text_tokens": 228, "audio_tokens": 108},
             "output_tokens_details": {"text_tokens": 9, "audio_tokens": 32}}
    u = metrics.usage_metrics(usage)
    assert u["total_tokens"] == 377 and u["input_audio_tokens"] == 108 and u["output_audio_tokens"] == 32
    assert all(math.isnan(v) for v in metrics.usage_metrics(None).values())


# ---------------------------------------------------------------------------------------------
# levels and loudness
# ---------------------------------------------------------------------------------------------

def test_levels_of_full_scale_sine():
    x = sine(1000, 48000, 1.0)
    assert metrics.rms_dbfs(x, 48000) == pytest.approx(-3.0103, abs=0.01)
    assert metrics.peak_dbfs(x, 48000) == pytest.approx(0.0, abs=0.01)
    assert metrics.duration_s(x, 48000) == pytest.approx(1.0)
    assert metrics.rms_dbfs(np.zeros(100), 8000) == metrics.FLOOR_DB


def test_clipping_ratio():
    x = np.full(1000, 0.5)
    x[:25] = 1.0
    x[25:50] = -1.0
    assert metrics.clipping_ratio(x, 16000) == pytest.approx(0.05)


# ITU-R BS.1770-4 §2 / pyloudnorm conformance: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS;
# the tolerance is the ±0.1 LU pyloudnorm uses against the ITU conformance files.
@pytest.mark.parametrize("freq,amp_db,expected", [(997, 0.0, -3.01), (1000, -20.0, -23.01)])
def test_loudness_bs1770_reference(freq, amp_db, expected):
    sr = 48000
    x = sine(freq, sr, 5.0, amp=10 ** (amp_db / 20))
    assert metrics.loudness_lufs(x, sr) == pytest.approx(expected, abs=0.1)


def test_loudness_short_and_silent():
    assert math.isnan(metrics.loudness_lufs(np.zeros(1000), 16000))   # < 400 ms block
    assert metrics.loudness_lufs(np.zeros(16000), 16000) == metrics.FLOOR_DB


def test_snr_is_one_estimator_shared_with_preflight(speech_data, rng):
    """metrics.snr_db is the VAD-based estimator preflight's calibrated thresholds use (issue 12: one SNR)."""
    from qvtools import preflight
    from qvtools.audio import load

    x, sr = load(speech_data / "clean/en_F_ljspeech_LJ001-0001.wav")
    clean = metrics.snr_db(x, sr)
    assert clean >= 18.0  # clean set minimum 18.4 dB (preflight THRESHOLDS)
    noisy_x = (x + rng.normal(0, 1, x.size).astype(np.float32) * np.sqrt(np.mean(x ** 2))).astype(np.float32)
    noisy = metrics.snr_db(noisy_x, sr)
    assert noisy < preflight.THRESHOLDS["snr_warn_db"] < clean
    rep = preflight.check((noisy_x, sr))
    assert rep.measures["snr_db"] == noisy and rep["snr"].value == round(noisy, 1)
    gated = np.concatenate([np.zeros(sr, np.float32), x, np.zeros(sr, np.float32)])  # digital-silence pauses
    assert metrics.snr_db(gated, sr) == metrics.SNR_CAP_DB
    assert math.isnan(metrics.snr_db(np.zeros(2 * sr), sr))  # no speech, no estimate
    assert math.isnan(metrics.snr_db(np.zeros(0), sr))


def test_speech_snr_from_frames():
    energy = np.array([-20.0] * 20 + [-50.0] * 20)
    probs = np.array([0.9] * 20 + [0.05] * 20)
    assert metrics.speech_snr(energy, probs) == (30.0, -20.0, -50.0)
    assert all(math.isnan(v) for v in metrics.speech_snr(energy, np.zeros(40)))


def test_silence_ratio():
    sr = 16000
    x = np.concatenate([sine(200, sr, 1.0, 0.5), np.zeros(sr)])
    assert metrics.silence_ratio(x, sr) == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------------------------------------
# F0
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f0,sr", [(150.0, 16000), (220.0, 24000)])
def test_f0_of_harmonic_tone_within_2_percent(f0, sr):
    med, iqr, voiced = metrics.f0_stats(harmonic(f0, sr, 1.5), sr)
    assert med == pytest.approx(f0, rel=0.02)
    assert iqr < 0.02 * f0
    assert voiced > 0.9


def test_f0_harvest_and_contour_shape():
    sr = 16000
    t, f0 = metrics.f0_contour(harmonic(150, sr, 1.0), sr, method="harvest")
    assert t.shape == f0.shape and t.size > 150
    assert np.median(f0[f0 > 0]) == pytest.approx(150, rel=0.02)
    with pytest.raises(ValueError, match="dio"):
        metrics.f0_contour(harmonic(150, sr, 0.2), sr, method="crepe")


def test_f0_silence_is_unvoiced():
    med, iqr, voiced = metrics.f0_stats(np.zeros(16000), 16000)
    assert math.isnan(med) and math.isnan(iqr) and voiced == 0.0


def test_f0_ratio_octave():
    sr = 16000
    assert metrics.f0_ratio(harmonic(240, sr, 1.0), sr, harmonic(120, sr, 1.0), sr) == pytest.approx(2.0, rel=0.02)
    assert metrics.f0_ratio(harmonic(240, sr, 1.0), sr, 120.0) == pytest.approx(2.0, rel=0.02)


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref,hyp,expected", [
    ("the cat sat", "the cat sat down", 1 / 3),
    ("the cat sat", "the cat sat", 0.0),
    ("the cat sat on the mat", "the dog sat on mat", 2 / 6),
    ("Hello, World!", "hello world", 0.0),
    ("I have 42 apples", "i have forty-two apples", 0.0),
    ("", "", 0.0),
])
def test_wer_known_pairs(ref, hyp, expected):
    assert metrics.wer(ref, hyp) == pytest.approx(expected)


def test_wer_empty_reference_is_nan_and_cer():
    assert math.isnan(metrics.wer("", "something"))
    assert metrics.cer("abcd", "abed") == pytest.approx(0.25)
    assert metrics.cer("the cat", "the bat") == pytest.approx(1 / 7)
    assert metrics.edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("text,expected", [
    ("42", "forty two"),
    ("It costs 1,000 dollars.", "it costs one thousand dollars"),
    ("Pi is 3.14", "pi is three point one four"),
    ("The 2nd and 21st time", "the second and twenty first time"),
    ("105 and 0 and -7", "one hundred five and zero and minus seven"),
    ("1999", "one thousand nine hundred ninety nine"),
    ("2,500,000", "two million five hundred thousand"),
    ("Don't  STOP -- now!", "dont stop now"),
    ("50% & more", "fifty percent and more"),
    ("  Café\tnaïve ", "café naïve"),
    ("at 3pm on mp3", "at three pm on mp three"),
    ("pages 5-6, 4this", "pages five six four this"),
    ("call 007 or 0123", "call zero zero seven or zero one two three"),  # leading zeros kept
])
def test_normalize_text(text, expected):
    assert metrics.normalize_text(text) == expected


def test_number_to_words_ordinals():
    assert metrics.number_to_words(12, ordinal=True) == "twelfth"
    assert metrics.number_to_words(40, ordinal=True) == "fortieth"
    assert metrics.number_to_words(1_000_003) == "one million three"


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_bad_input_is_a_clear_error():
    with pytest.raises(InvalidAudio, match="sample rate"):
        metrics.rms_dbfs(np.zeros(10), 0)
    with pytest.raises(InvalidAudio, match="1-D"):
        metrics.duration_s(np.zeros((2, 2, 2)), 16000)
    with pytest.raises(InvalidAudio, match="NaN"):
        metrics.loudness_lufs(np.array([0.0, np.nan]), 16000)
    with pytest.raises(InvalidAudio, match="from_pcm16"):
        metrics.rms_dbfs(np.zeros(10, dtype=np.int16), 16000)
    assert math.isnan(metrics.rms_dbfs(np.zeros(0), 16000))


# ---------------------------------------------------------------------------------------------
# bundle, speaker, ASR (the models come from qvtools.speaker / qvtools.asr)
# ---------------------------------------------------------------------------------------------

needs_speaker = pytest.mark.skipif(importlib.util.find_spec("qvtools.speaker") is None,
                                   reason="qvtools.speaker not available yet")
needs_asr = pytest.mark.skipif(importlib.util.find_spec("qvtools.asr") is None,
                               reason="qvtools.asr not available yet")


def test_audio_metrics_without_models_has_every_column():
    sr = 16000
    m = metrics.audio_metrics(harmonic(150, sr, 1.0), sr, asr=False, speaker=False)
    assert m["f0_median_hz"] == pytest.approx(150, rel=0.02)
    assert math.isnan(m["speaker_similarity"]) and m["speaker_model"] is None and m["asr_model"] is None
    from qvtools.results import COLUMNS
    assert set(m) <= set(COLUMNS)


def test_audio_metrics_with_reference_f0_ratio():
    sr = 16000
    m = metrics.audio_metrics(harmonic(300, sr, 1.0), sr, reference=(harmonic(150, 24000, 1.0), 24000),
                              asr=False, speaker=False)
    assert m["f0_ratio"] == pytest.approx(2.0, rel=0.02)
    assert m["ref_f0_median_hz"] == pytest.approx(150, rel=0.02)


@pytest.fixture(scope="module")
def speech_clip(speech_data):
    import csv

    from qvtools.audio import load

    with open(speech_data / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "clean" and r["transcript"] and r["language"] == "en"]
    row = rows[0]
    x, sr = load(speech_data / row["path"], mono=True)
    return x, sr, row["transcript"]


@needs_speaker
def test_speaker_similarity_identical_audio_is_one(speech_clip):
    x, sr, _ = speech_clip
    metrics.clear_caches()
    assert metrics.speaker_similarity(x, sr, x, sr) == pytest.approx(1.0, abs=1e-3)
    # the reference embedding is cached by content
    assert len(metrics._REF_EMBEDDINGS) == 1
    metrics.speaker_similarity(x[: sr * 4], sr, x, sr)
    assert len(metrics._REF_EMBEDDINGS) == 1


@needs_asr
@pytest.mark.slow
def test_intelligibility_of_real_speech(speech_clip):
    x, sr, text = speech_clip
    r = metrics.intelligibility(x, sr, text)
    assert r["asr_model"] and isinstance(r["asr_text"], str)
    assert r["wer"] < 0.35


def test_f0_median_agrees_with_praat_on_real_speech(speech_data):
    """Cross-check against an independent pitch tracker (Praat autocorrelation via parselmouth)."""
    import csv

    parselmouth = pytest.importorskip("parselmouth")
    from qvtools.audio import load

    with open(speech_data / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "clean"][:4]
    for row in rows:
        x, sr = load(speech_data / row["path"], mono=True)
        pitch = parselmouth.Sound(x.astype(np.float64), sr).to_pitch(time_step=0.01, pitch_floor=60,
                                                                     pitch_ceiling=600)
        f = pitch.selected_array["frequency"]
        med, _, voiced = metrics.f0_stats(x, sr)
        assert med == pytest.approx(np.median(f[f > 0]), rel=0.06), row["path"]
        assert 0.2 < voiced < 0.95


def test_text_properties():
    import string

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=string.printable, max_size=60), st.text(alphabet=string.ascii_lowercase + " ", max_size=40))
    def check(s, t):
        n = metrics.normalize_text(s)
        assert metrics.normalize_text(n) == n          # idempotent
        assert not any(c.isdigit() for c in n)          # numbers became words
        assert metrics.wer(s, s) == 0.0 or n == ""
        d = metrics.edit_distance(n.split(), t.split())
        assert d == metrics.edit_distance(t.split(), n.split())
        assert abs(len(n.split()) - len(t.split())) <= d <= max(len(n.split()), len(t.split()))

    check()


# ---------------------------------------------------------------------------------------------
# languages (issue 10 item 5): CER for zh/ja/ko, WER otherwise; jiwer against our edit distance
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref,hyp", [
    ("the cat sat on the mat", "the dog sat on mat"),
    ("a b c d e f", "f e d c b a"),
    ("one", "one two three four"),
    ("alpha beta gamma", ""),
    ("kitten sitting", "sitting kitten kitten"),
])
def test_jiwer_gives_the_same_rates_as_our_edit_distance(ref, hyp):
    jiwer = pytest.importorskip("jiwer")
    ours_w = metrics.edit_distance(ref.split(), hyp.split()) / len(ref.split())
    ours_c = metrics.edit_distance(ref, hyp) / len(ref)
    assert metrics.wer(ref, hyp, normalize=False) == pytest.approx(ours_w)
    assert metrics.cer(ref, hyp, normalize=False) == pytest.approx(ours_c)
    # edge spaces are characters too (jiwer would strip them; these cases take our distance)
    assert metrics.cer(" " + ref, hyp + " ", normalize=False) == pytest.approx(
        metrics.edit_distance(" " + ref, hyp + " ") / (len(ref) + 1))
    if hyp:  # jiwer itself, for the record (it refuses nothing here)
        assert jiwer.wer(ref, hyp) == pytest.approx(ours_w) and jiwer.cer(ref, hyp) == pytest.approx(ours_c)


def test_jiwer_and_ours_agree_on_random_pairs():
    pytest.importorskip("jiwer")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    words = st.lists(st.sampled_from(["a", "b", "c", "dd", "e"]), max_size=12)

    @settings(max_examples=150, deadline=None)
    @given(words, words)
    def check(r, h):
        if not r:
            return
        assert metrics.wer(" ".join(r), " ".join(h), normalize=False) == pytest.approx(
            metrics.edit_distance(r, h) / len(r))
    check()


@pytest.mark.parametrize("language,text,expected", [
    ("zh", "廣州大學城，女屍案！", "广州大学城女尸案"),              # Simplified, punctuation gone
    ("Sichuan", "你 好 ，世界。", "你好世界"),                       # a dialect is Chinese; spaces gone
    ("ja", "こんにちは、 世界！", "こんにちは世界"),
    ("en", "Mr. Smith has 2 cats, doesn't he?", "mister smith has 2 cats doesnt he"),
    ("en", "zero one two three", "0123"),
    ("en", "0 1 2 3", "0123"),                                      # digits and words meet
    ("de", "Die Sitzungen, bei der Vorsitzenden!", "die sitzungen bei der vorsitzenden"),
    (None, "I have 42 apples", "i have forty two apples"),          # language-blind, as before
])
def test_normalize_for_language(language, text, expected):
    pytest.importorskip("whisper_normalizer")
    pytest.importorskip("opencc")
    assert metrics.normalize_for_language(text, language) == expected


def test_error_rate_by_language():
    pytest.importorskip("opencc")
    assert metrics.error_rate("广州女大学生登山失联", "廣州女大學生登山失聯", "zh") == ("cer", 0.0)
    assert metrics.error_rate("广州女大学生登山失联", "广州女大学生登山", "zh") == ("cer", pytest.approx(0.2))
    assert metrics.error_rate("今日は良い天気", "今日は良い天気です", "ja") == ("cer", pytest.approx(2 / 7))
    assert metrics.error_rate("the cat sat", "the bat sat", "en") == ("wer", pytest.approx(1 / 3))
    assert metrics.error_rate("Guten Morgen, Welt", "guten morgen welt", "de") == ("wer", 0.0)
    # the old language-blind WER of unsegmented Chinese is one "word": meaningless, hence CER
    assert metrics.wer("广州女大学生登山失联", "广州女大学生登山") == 1.0
    row = metrics.score_transcript("广州女大学生登山失联", "广州女大学生登山", "zh")
    assert row["error_metric"] == "cer" and row["error_rate"] == row["cer"] == pytest.approx(0.2)
    assert math.isnan(row["wer"])
    row = metrics.score_transcript("the cat sat", "the bat sat", "en")
    assert row["error_metric"] == "wer" and row["error_rate"] == row["wer"] == pytest.approx(1 / 3)
    assert math.isnan(metrics.score_transcript(None, "x", "en")["error_rate"])


def test_language_helpers():
    from qvtools import lang
    from qvtools.errors import ConfigError

    assert lang.base_language("zh-CN") == lang.base_language("cmn") == lang.base_language("Henan") == "zh"
    assert lang.base_language("en_US") == "en" and lang.base_language(None) is None and lang.base_language(" ") is None
    assert [lang.error_metric(x) for x in ("zh", "ja", "ko", "Tianjin", "en", "de", None)] == \
        ["cer", "cer", "cer", "cer", "wer", "wer", "wer"]
    assert lang.script_language("广州") == "zh" and lang.script_language("今日は") == "ja"
    assert lang.script_language("안녕하세요") == "ko" and lang.script_language("Hello, 42") is None
    with pytest.raises(ConfigError, match="unsupported language"):
        lang.base_language("xx")
    with pytest.raises(ConfigError):
        lang.base_language(7)


@needs_asr
def test_intelligibility_of_mandarin_reports_cer_and_language(speech_data):
    from qvtools.audio import load

    x, sr = load(speech_data / "clean" / "zh_F_aishell3_SSB0005_SSB00050001.wav", mono=True)
    r = metrics.intelligibility(x, sr, "广州女大学生登山失联四天警方找到疑似女尸")
    assert r["asr_language"] == "zh" and r["error_metric"] == "cer"
    assert r["error_rate"] == r["cer"] < 0.45 and math.isnan(r["wer"])
    assert "whisper-base" in r["asr_model"]
    m = metrics.audio_metrics(x, sr, expected_text="广州女大学生登山失联四天警方找到疑似女尸", speaker=False)
    assert m["asr_language"] == "zh" and m["error_rate"] == r["error_rate"]


def test_intelligibility_columns_constant_names_what_intelligibility_writes():
    from qvtools.metrics import INTELLIGIBILITY_COLUMNS, intelligibility

    assert tuple(intelligibility(np.zeros(0, dtype=np.float32), 16000, "hello", language="en")) == \
        INTELLIGIBILITY_COLUMNS
