"""Early language detection (issue 22 item 4): a session whose language nobody named has the language of its first
utterance detected on its first seconds while the user still speaks, so the reply's opener is ready in that
language at ``speech_stopped`` instead of waiting for (and queueing behind) the end-of-turn ASR."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from qvtools.audio import load, resample, to_pcm16
from qvtools.resources import samples_dir
from qvtools.server import LocalService, ServiceConfig
from qvtools.server import turn_language
from qvtools.server.rt_turns import EARLY_MIN_MS, TurnState
from realtime_support import FLASH, RawClient


def test_early_detection_is_due_once_per_first_utterance_after_its_seconds():
    t = TurnState()
    unknown, named = (lambda: False), (lambda: True)
    assert t.early_due(None, 2.0, unknown) is None  # not in an utterance
    assert t.early_due(("item_a", 300, 2200, None), 2.0, unknown) is None  # 1.9 s of speech so far
    assert t.early_due(("item_a", 300, 2300, None), 2.0, named) is None  # a language is known before ASR
    assert t.early_due(("item_a", 300, 2300, None), 0.0, unknown) is None  # switched off
    assert t.early_due(("item_a", 300, 2300, None), 2.0, unknown) == ("item_a", 300, 2300)  # its first 2 s
    assert t.early_due(("item_a", 300, 2500, None), 2.0, unknown) is None  # once per utterance
    t.detected_early("item_old", "de")  # a result for an utterance no longer current is dropped
    assert t.early_language is None
    t.detected_early("item_a", "zh")
    assert t.early_language == "zh"
    # a shorter utterance: all its speech once the silence after it began, if at least EARLY_MIN_MS
    assert t.early_due(("item_b", 5000, 5900, 5800), 2.0, unknown) is None  # 0.8 s of speech
    assert t.early_due(("item_c", 5000, 6700, 6600), 2.0, unknown) == ("item_c", 5000, 6600)
    assert t.early_due(("item_d", 9000, 11200, 10500), 2.0, unknown) == ("item_d", 9000, 10500)
    assert EARLY_MIN_MS == 1000
    t.heard("en")  # ASR found the language of a turn: no early detection any more
    assert t.early_due(("item_e", 20000, 22100, None), 2.0, unknown) is None


def test_expected_language_takes_the_early_detection_last():
    session = {"qvtools": {}}
    assert turn_language.expected_language(session, None, None, None, early="zh") == "zh"
    assert turn_language.expected_language(session, None, "en", None, early="zh") == "en"  # an earlier turn's
    named = {"qvtools": {"language": "de"}}
    assert turn_language.expected_language(named, None, None, None, early="zh") == "de"
    assert turn_language.expected_language(session, None, None, None) is None


def _prompt_pcm(name: str) -> bytes:
    root = samples_dir()
    item = next(i for i in json.loads((root / "prompts.json").read_text(encoding="utf-8"))["prompts"]
                if i["name"] == name)
    x, sr = load(root / item["file"], mono=True)
    x = np.concatenate([np.zeros(int(0.3 * sr), np.float32), x, np.zeros(int(1.5 * sr), np.float32)])
    return to_pcm16(resample(x, sr, 16000))


def _turn(c: RawClient, pcm: bytes) -> list[dict]:
    for i in range(0, len(pcm), 3200):
        c.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 3200]).decode()}))
    return c.until("response.done", timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("prompt, language", [("rain_zh", "zh"), ("weather", "en")])
def test_first_utterance_language_is_detected_while_speaking(tmp_path, prompt, language):
    from qvtools.server.realtime import REALTIME

    with LocalService(tmp_path, config=ServiceConfig()) as local:
        speech = local.app[REALTIME].get_speech()
        calls = []
        inner = speech.detect_language

        def recording(x16k, candidates=None, window="fit"):
            calls.append((x16k.size / 16000, window))
            return inner(x16k, candidates, window)

        speech.detect_language = recording
        c = RawClient(local, FLASH)
        try:
            c.until("session.created")
            events = _turn(c, _prompt_pcm(prompt))
            done = events[-1]
            assert done["response"]["status"] == "completed"
            # once, on the configured first 1.5 s (or less, when the speech pauses before), in the service's
            # encoder window
            assert len(calls) == 1 and 1.0 <= calls[0][0] <= 1.5 + 1e-3 and calls[0][1] == "fit", calls
            transcripts = [e for e in events if e["type"] == "response.audio_transcript.done"]
            reply = transcripts[-1]["transcript"]
            cjk = any("\u4e00" <= ch <= "\u9fff" for ch in reply)
            assert cjk == (language == "zh"), reply
            # the second turn knows the language from the first one's ASR: no early detection
            events = _turn(c, _prompt_pcm(prompt))
            assert events[-1]["response"]["status"] == "completed"
            assert len(calls) == 1
        finally:
            c.close()
