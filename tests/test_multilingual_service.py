"""Issue 10 "Done when": a Mandarin speaker enrolls on the local service over HTTP and converses in Mandarin;
the spoken reply is Mandarin that an independent ASR pass transcribes back to the assistant transcript.
English stays as it was. One short turn each (slow: Whisper base, Kokoro, voice conversion)."""

from __future__ import annotations

import base64
import csv

import pytest

from qvtools.audio import data_url, from_pcm16, load, resample, to_pcm16
from qvtools.config import ENROLLMENT_PATH
from realtime_support import PLUS, UTTERANCE, RawClient, shared_service, utterance

pytestmark = pytest.mark.slow

#: The enrolled speaker (AISHELL-3 SSB0139, male, 4 utterances, 24 s) and the user's turn (another AISHELL-3
#: clip, SSB00050007, 8 s). The service hears the turn in the voice's enrollment language (zh).
ENROLL_CLIP = "clean/zh_M_aishell3_SSB0139_4utts.wav"
TURN_CLIP = "clean/zh_F_aishell3_SSB0005_SSB00050007.wav"
#: Bounds, with margin over what was measured (2026-11-27, shared 2-core machine): input CER 0.368 for
#: this clip ("广州大学承女师案,嫌疑法变功,成辞热为女友。": Whisper base confuses homophones; beam 5 or another
#: prompt gave the same 0.368, the clip file decoded directly too); reply round trip (Kokoro jm_kumo ->
#: conversion toward SSB0139 -> Whisper base) CER 0.25 for this turn's reply; 0.06, 0.13, 0.33, 0.24 (mean
#: 0.19) for four other replies in benchmarks/bench_languages.py. Unconverted Kokoro: about 0.03.
MAX_INPUT_CER = 0.5
MAX_REPLY_CER = 0.45


def _manifest(speech_data):
    with open(speech_data / "manifest.csv", newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def _append(c, pcm: bytes, chunk=3200) -> None:
    for i in range(0, len(pcm), chunk):
        c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + chunk]).decode()})


def _turn(c, pcm16k: bytes, timeout=300) -> list[dict]:
    _append(c, pcm16k)
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create"})
    events = c.until("response.done", timeout=timeout)
    if not any(e["type"] == "conversation.item.input_audio_transcription.completed" for e in events):
        events += c.until("conversation.item.input_audio_transcription.completed", timeout=60)
    return events


def test_mandarin_speaker_enrolls_and_converses_in_mandarin(tmp_path, speech_data):
    import requests

    from qvtools import asr
    from qvtools.lang import script_language
    from qvtools.metrics import error_rate
    from qvtools.server import LocalService, ServiceConfig

    rows = _manifest(speech_data)
    enroll, turn = rows[ENROLL_CLIP], rows[TURN_CLIP]
    cfg = ServiceConfig(realtime_latency="none", warm_speech_languages=("zh",))
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        wav = (speech_data / ENROLL_CLIP).read_bytes()
        body = {"model": "qwen-voice-enrollment", "input": {
            "action": "create", "target_model": PLUS, "preferred_name": "mandarin", "language": "zh",
            "text": enroll["transcript"].replace(" / ", ""), "audio": {"data": data_url(wav, "audio/wav")}}}
        r = requests.post(svc.url + ENROLLMENT_PATH, json=body, timeout=120,
                          headers={"Authorization": f"Bearer {svc.api_key}"})
        assert r.status_code == 200, r.text
        voice = r.json()["output"]["voice"]

        x, sr = load(speech_data / TURN_CLIP, mono=True)
        pcm = to_pcm16(resample(x, sr, 16000))
        c = RawClient(svc, PLUS, timeout=300)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"voice": voice, "turn_detection": None}})
            assert c.until("session.updated")[-1]["session"]["voice"] == voice
            events = _turn(c, pcm)
        finally:
            c.close()

    by_type = {}
    for e in events:
        by_type.setdefault(e["type"], []).append(e)
    heard = by_type["conversation.item.input_audio_transcription.completed"][0]["transcript"]
    assert by_type["conversation.item.input_audio_transcription.delta"][-1]["language"] == "zh"
    metric, cer = error_rate(turn["transcript"], heard, "zh")
    assert metric == "cer" and cer <= MAX_INPUT_CER, heard
    assert asr.to_simplified(heard) == heard  # Simplified characters

    done = by_type["response.done"][0]["response"]
    assert done["status"] == "completed"
    said = done["output"][0]["content"][0]["transcript"]
    assert script_language(said) == "zh" and " " not in said, said  # a Mandarin reply
    audio = from_pcm16(b"".join(base64.b64decode(e["delta"]) for e in by_type["response.audio.delta"]))
    assert len(audio) > 24000  # more than a second of speech at 24 kHz
    back = asr.recognize(audio, 24000)  # independent pass: language detected among all documented codes
    assert back.language == "zh", back
    _, reply_cer = error_rate(said, back.text, "zh")
    assert reply_cer <= MAX_REPLY_CER, (said, back.text, reply_cer)


def test_english_turn_is_still_heard_and_answered_in_english():
    from qvtools.lang import script_language
    from qvtools.metrics import wer

    svc = shared_service()
    x, sr = utterance()
    c = RawClient(svc, PLUS, timeout=120)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"voice": "Ethan", "turn_detection": None}})
        c.until("session.updated")
        events = _turn(c, to_pcm16(resample(x, sr, 16000)), timeout=120)
    finally:
        c.close()
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    delta = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"][-1]
    assert delta["language"] == "en"  # detected among the candidates, then decoded by tiny.en
    # Piper's noise is seeded per sentence (qvtools/server/piper_noise.py, issue 19), so the turn is the same
    # audio on every run: back to the bound of before (at most one word in ten misheard)
    assert wer(UTTERANCE, heard["transcript"], language="en") <= 0.1, heard
    said = next(e for e in events if e["type"] == "response.done")["response"]["output"][0]["content"][0]["transcript"]
    assert script_language(said) is None and said.isascii(), said
