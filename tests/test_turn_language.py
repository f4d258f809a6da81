"""Which language a realtime turn is in (qvtools/server/turn_language.py) and the reply-language choice."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qvtools.errors import ConfigError
from qvtools.server import turn_language as tl


def test_order_session_then_voice_then_previous_turn_then_detect():
    session = {"qvtools": {"language": "ja"}}
    zh_voice = SimpleNamespace(language="zh")
    assert tl.expected_language(session, zh_voice, "en") == "ja"
    assert tl.expected_language({}, zh_voice, "en") == "zh"
    assert tl.expected_language({}, None, "es") == "es"
    assert tl.expected_language({}, None, None) is None
    # the final ASR pass only gets a firm language: a previous turn's detection never stops a switch
    assert tl.asr_language({}, None) is None and tl.asr_language({}, zh_voice) == "zh"
    assert tl.asr_language(session, zh_voice) == "ja"
    # one candidate is every turn's language (no detection); several: detect
    assert tl.asr_language({}, None, ("en",)) == "en" and tl.asr_language({}, None, ("en", "zh")) is None
    assert tl.asr_language({}, zh_voice, ("en",)) == "zh"
    assert tl.expected_language({}, None, "es", ("en",)) == "en"


def test_voice_records_are_read_defensively():
    assert tl.voice_language(SimpleNamespace()) is None  # a record from before the language column
    assert tl.voice_language(SimpleNamespace(language=None)) is None
    assert tl.voice_language(SimpleNamespace(language="Sichuan")) == "zh"  # a dialect is Chinese
    assert tl.voice_language(SimpleNamespace(language="klingon")) is None
    assert tl.voice_language(None) is None


def test_session_update_extension():
    lang, err = tl.update_language({"input_audio_transcription": {"model": None, "language": "zh-CN"}})
    assert (lang, err) == ("zh", None)
    lang, err = tl.update_language({"input_audio_transcription": {"language": None}})
    assert lang is None and err is None and not tl.is_unset(lang)  # cleared
    lang, err = tl.update_language({"voice": "Tina"})
    assert tl.is_unset(lang) and err is None
    lang, err = tl.update_language({"input_audio_transcription": {"language": "xx"}})
    assert tl.is_unset(lang) and err["param"] == "session.input_audio_transcription.language"
    assert "xx" in err["message"]


def test_candidates_are_validated():
    assert tl.language_candidates(None) is None
    assert tl.language_candidates("zh, en zh") == ("zh", "en")
    assert tl.language_candidates(["cmn", "en-US"]) == ("zh", "en")
    with pytest.raises(ConfigError, match="xx"):
        tl.language_candidates(["xx"])


def test_reply_language_falls_back_to_english_and_says_why(monkeypatch):
    import importlib.util

    from qvtools.server.speech import SpeechPipeline
    from qvtools.server.voice import builtin_profile

    sp = SpeechPipeline()
    assert sp.reply_language("zh") == ("zh", None)
    assert sp.reply_language("Sichuan") == ("zh", None)
    assert sp.reply_language(None) == ("en", None)
    lang, note = sp.reply_language("ko")  # ASR knows Korean; neither the responder nor a TTS does
    assert lang == "en" and "'ko'" in note
    lang, note = sp.reply_language("de")  # German replies exist, no offline TTS speaks German
    assert lang == "en" and "no offline TTS" in note
    assert sp.reply_language("de", audio=False) == ("de", None)  # a text-only reply can be German
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kokoro_onnx" else real(name, *a))
    lang, note = sp.reply_language("es")  # Spanish needs the GPL espeak extra
    assert lang == "en" and "local-gpl" in note
    with pytest.raises(ConfigError, match="local-gpl"):
        next(sp.stream_synthesize("Hola.", builtin_profile("Tina"), language="es"))


def test_a_bad_candidate_fails_when_the_service_is_built():
    from qvtools.server import ServiceConfig
    from qvtools.server.realtime import RealtimeState

    assert RealtimeState(ServiceConfig()).language_candidates == ("zh", "en", "ja", "es", "de")
    assert RealtimeState(ServiceConfig(realtime_language_candidates=None)).language_candidates is None
    with pytest.raises(ConfigError, match="xx"):
        RealtimeState(ServiceConfig(realtime_language_candidates=("en", "xx")))


def test_asr_language_detects_once_per_session_when_given_the_last_detection():
    zh_voice = SimpleNamespace(language="zh")
    # "first_turn" (ServiceConfig.realtime_language_detection): the previous turn's language is used ...
    assert tl.asr_language({}, None, ("zh", "en"), "en") == "en"
    # ... but never over a firm one, and an unknown code means detect
    assert tl.asr_language({}, zh_voice, ("zh", "en"), "en") == "zh"
    assert tl.asr_language({}, None, ("zh", "en"), "xx") is None
    # "every_turn": nothing passed, detect
    assert tl.asr_language({}, None, ("zh", "en"), None) is None


def test_language_detection_mode_is_validated():
    from qvtools.errors import ConfigError
    from qvtools.server.config import LANGUAGE_DETECTION_MODES, ServiceConfig

    assert ServiceConfig().realtime_language_detection == "first_turn" in LANGUAGE_DETECTION_MODES
    with pytest.raises(ConfigError, match="realtime_language_detection"):
        ServiceConfig(realtime_language_detection="sometimes")
    cfg = ServiceConfig()
    assert (cfg.realtime_language_detector, cfg.realtime_asr_window) == ("whisper_base", "fit")
    with pytest.raises(ConfigError, match="whisper_base, english_gate"):
        ServiceConfig(realtime_language_detector="tiny")
    with pytest.raises(ConfigError, match="realtime_asr_window"):
        ServiceConfig(realtime_asr_window="10s")
    assert ServiceConfig(realtime_language_detector="english_gate",
                         realtime_asr_window="full").realtime_language_detector == "english_gate"
