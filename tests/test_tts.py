"""Offline TTS: Piper (English) and Kokoro-82M (Mandarin, Japanese, …) speak the text (checked with the
offline ASR), stream per sentence; the engine selector picks one per language."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from qvtools import metrics
from qvtools.errors import ConfigError
from qvtools.server import tts_kokoro
from qvtools.server.tts import Synthesizer, engine_for_language, split_sentences, synthesis_languages

pytestmark = pytest.mark.slow

TEXT = "Good morning. The weather is lovely today, so let us take a walk in the park."
ZH_TEXT = "你好，今天天气很好。我们去公园散步吧！"
JA_TEXT = "こんにちは。今日はいい天気ですね。"
ES_TEXT = "Hola, ¿cómo estás? Hoy hace muy buen tiempo."

needs_espeak = pytest.mark.skipif(importlib.util.find_spec("kokoro_onnx") is None,
                                  reason="Kokoro's espeak-ng languages need the GPL extra: pip install 'qvtools[local-gpl]'")
needs_openjtalk = pytest.mark.skipif(importlib.util.find_spec("pyopenjtalk") is None,
                                     reason="Kokoro's Japanese needs pyopenjtalk-plus")


@pytest.fixture(scope="module")
def synth():
    return Synthesizer()


@pytest.fixture(scope="module")
def spoken(synth):
    return synth.synthesize(TEXT)


@pytest.fixture(scope="module")
def zh():
    return tts_kokoro.KokoroSynthesizer("zh")


def _round_trip(x, sr, text, language):
    from qvtools import asr

    rec = asr.recognize(x, sr, language)
    return metrics.error_rate(text, rec.text, language)


def test_split_sentences():
    assert split_sentences("Hi there! How are you?  Fine.\nBye") == ["Hi there!", "How are you?", "Fine.", "Bye"]
    assert split_sentences("你好。今天天气很好！我们去吧？「好的。」走") == ["你好。", "今天天气很好！", "我们去吧？",
                                                                     "「好的。」", "走"]
    assert split_sentences("3.5 km. Done") == ["3.5 km.", "Done"]
    assert split_sentences('He said "hi." Then left.') == ['He said "hi."', "Then left."]  # quote kept
    assert split_sentences("   ") == []
    with pytest.raises(ConfigError):
        split_sentences(None)


def test_synthesize_produces_intelligible_speech(spoken):
    x, sr = spoken
    assert sr == 22050 and x.dtype == np.float32
    assert 2.0 < len(x) / sr < 10.0
    assert 0.1 < np.max(np.abs(x)) <= 1.0
    assert _round_trip(x, sr, TEXT, "en") == ("wer", pytest.approx(0.0, abs=0.15))


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


# -- Kokoro-82M ---------------------------------------------------------------------------------

def test_kokoro_speaks_mandarin(zh):
    pieces = list(zh.stream(ZH_TEXT))
    assert [p for p, _ in pieces] == ["你好，今天天气很好。", "我们去公园散步吧！"]
    x = np.concatenate([a for _, a in pieces])
    assert zh.sample_rate == 24000 and x.dtype == np.float32
    assert 1.5 < x.size / 24000 < 8.0 and 0.5 < np.max(np.abs(x)) <= 0.81
    metric, value = _round_trip(x, 24000, ZH_TEXT, "zh")
    assert metric == "cer" and value <= 0.2
    # tones are in the phonemes (misaki's arrows), so the model gets Mandarin, not Japanese readings
    assert any(mark in zh.phonemes("你好") for mark in "↓↗↘→")


def test_kokoro_length_scale_and_empty_text(zh):
    fast, _ = zh.synthesize("一二三四五六七八九十。", length_scale=0.7)
    slow, _ = zh.synthesize("一二三四五六七八九十。", length_scale=1.4)
    assert len(slow) > 1.5 * len(fast)
    assert zh.synthesize("  ")[0].size == 0
    with pytest.raises(ConfigError, match="length_scale"):
        zh.synthesize("好", length_scale=3.0)


def test_kokoro_long_text_is_chunked_within_the_model_context():
    vocab = {"a": 1, "b": 2, ".": 3, " ": 4}
    phonemes = "a" * 300 + ". " + "b b " * 200 + "a" * 600
    chunks = tts_kokoro._chunks(phonemes, vocab)
    assert len(chunks) >= 3 and all(0 < len(c) <= tts_kokoro._MAX_TOKENS for c in chunks)
    assert chunks[0][-1] == 3  # the first cut is after the full stop
    flat = [t for c in chunks for t in c if t != 4]
    assert flat == [vocab[ch] for ch in phonemes if ch != " "]  # nothing but spaces at cuts lost


@needs_openjtalk
def test_kokoro_speaks_japanese():
    x, sr = tts_kokoro.KokoroSynthesizer("ja", voice="jf_alpha").synthesize(JA_TEXT)
    assert _round_trip(x, sr, JA_TEXT, "ja")[1] <= 0.15


@needs_espeak
def test_kokoro_speaks_spanish():
    x, sr = engine_for_language("es").synthesize(ES_TEXT)
    assert _round_trip(x, sr, ES_TEXT, "es")[1] <= 0.3


def test_engine_for_language():
    assert isinstance(engine_for_language("en"), Synthesizer) and engine_for_language(None) is engine_for_language("en")
    zh = engine_for_language("zh")
    assert isinstance(zh, tts_kokoro.KokoroSynthesizer) and zh.language == "zh"
    assert engine_for_language("Sichuan") is zh and engine_for_language("zh-CN") is zh
    assert {"en", "zh", "ja"} <= synthesis_languages()
    with pytest.raises(ConfigError, match="no offline TTS"):
        engine_for_language("de")
    with pytest.raises(ConfigError, match="unsupported language"):
        engine_for_language("klingon")
    with pytest.raises(ConfigError, match="voice"):
        tts_kokoro.KokoroSynthesizer("zh", voice="af_heart")


def test_kokoro_cuts_only_a_long_first_sentence_for_time_to_first_audio():
    split = tts_kokoro._split_first
    short = split_sentences(ZH_TEXT)
    assert split(short, "zh") == short
    long_first = split_sentences("今天早上天气很好，我们一起去公园散步，湖边有很多人在跑步。好的，走吧，今天天气很好我们走。")
    assert split(long_first, "zh") == ["今天早上天气很好，我们一起去公园散步，", "湖边有很多人在跑步。",
                                       "好的，走吧，今天天气很好我们走。"]
    no_clause = ["今天早上天气很好我们一起去公园散步湖边有很多人在跑步。"]
    assert split(no_clause, "zh") == no_clause
    assert split([], "zh") == []


def test_a_synthesis_leaves_the_threads_floating_point_mode_alone(synth, zh):
    """onnxruntime's `session.set_denormal_as_zero` set flush-to-zero on the thread that ran a speech engine and
    left it set: afterwards the caller's own numpy treated subnormal numbers as zero (hypothesis refused to run).
    Neither engine may change the calling thread's floating-point mode."""
    tiny = np.finfo(np.float64).smallest_subnormal
    assert np.array([tiny]) * 1.0 > 0
    synth.synthesize("Hello there.")
    assert np.array([tiny]) * 1.0 > 0, "the Piper engine set flush-to-zero on this thread"
    zh.synthesize("你好。")
    assert np.array([tiny]) * 1.0 > 0, "the Kokoro engine set flush-to-zero on this thread"
