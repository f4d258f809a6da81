"""Enrollment ``input.language`` and ``input.text`` on the local service (issue 10 item 4; protocol reference
§2.1 "The server compares it with the audio; a large mismatch gives Audio.PreprocessError", §3, §7.9).

The real-speech tests use ../shared/data/speech (skipped with a reason when absent). The AISHELL-3 and LJSpeech
clips are recordings of their manifest transcripts; "another clip's transcript" is a sentence of the same
language that is not said in the clip. The check's threshold (metrics.TRANSCRIPT_MISMATCH_THRESHOLD) was
calibrated on tests/test_asr.py::CALIBRATION_CLIPS; the service tests below use SSB0139 (a calibration clip, the
only AISHELL-3 recording at >= 24 kHz) and LJ001-0003 (held out).
"""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
import requests

from qvtools.audio import data_url, load, resample, wav_bytes
from qvtools.config import ENROLLMENT_PATH, Settings
from qvtools.errors import APIError, ConfigError
from qvtools.metrics import TRANSCRIPT_MISMATCH_THRESHOLD
from qvtools.server import LocalService, ServiceConfig
from qvtools.server import enrollment as server_enrollment
from qvtools.server.enrollment import ENROLL_SLOTS
from enrollment_support import wait_for_slots

TIMEOUT = 180
PLUS = "qwen3.5-omni-plus-realtime"
ZH_CLIP = "clean/zh_M_aishell3_SSB0139_4utts.wav"  # 44.1 kHz, 24 s, four sentences
ZH_OTHERS = ("clean/zh_F_aishell3_SSB0005_SSB00050001.wav",  # another speaker's sentences
             "clean/zh_F_aishell3_SSB0005_SSB00050007.wav")
EN_CLIP = "clean/en_F_ljspeech_LJ001-0003.wav"  # 22.05 kHz: upsampled to 24 kHz for the §2.4 rate rule
EN_OTHER = "clean/en_F_ljspeech_LJ001-0001.wav"


def post(svc, body, key="sk-text"):
    return requests.post(svc.url + ENROLLMENT_PATH, json=body, timeout=TIMEOUT,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def create_body(wav: bytes, name: str, **extra) -> dict:
    return {"model": "qwen-voice-enrollment",
            "input": {"action": "create", "target_model": PLUS, "preferred_name": name,
                      "audio": {"data": data_url(wav, "audio/wav")}, **extra}}


def voice_list(svc, key="sk-text") -> list[dict]:
    body = {"model": "qwen-voice-enrollment", "input": {"action": "list", "page_index": 0, "page_size": 100}}
    return post(svc, body, key).json()["output"]["voice_list"]


@pytest.fixture(scope="module")
def manifest(speech_data):
    with open(speech_data / "manifest.csv", newline="", encoding="utf-8") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def clip_wav(speech_data):
    def get(path) -> bytes:
        x, sr = load(speech_data / path, mono=True)
        if sr < 24000:  # the LJSpeech clips are 22.05 kHz; the speech is unchanged by upsampling
            x, sr = resample(x, sr, 24000), 24000
        return wav_bytes(x, sr)
    return get


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc"), config=ServiceConfig(warm_speech=False)) as svc:
        yield svc


# -- fast: configuration, language, the bounded wait ---------------------------------------------------------------
def test_text_check_mode_is_validated():
    assert ServiceConfig().enroll_text_check == "refuse"  # §2.1/§3: the documented refusal is the default
    with pytest.raises(ConfigError):
        ServiceConfig(enroll_text_check="maybe")


def test_language_is_validated_and_stored(service, enrollment_wav):
    resp = post(service, create_body(enrollment_wav, "lang_bad", language="english"))
    assert resp.status_code == 400 and resp.json()["code"] == "InvalidParameter"
    assert "input.language" in resp.json()["message"]
    resp = post(service, create_body(enrollment_wav, "lang_sichuan", language="Sichuan"))
    assert resp.status_code == 200, resp.text
    [item] = [v for v in voice_list(service) if v["voice"] == resp.json()["output"]["voice"]]
    assert item["language"] == "Sichuan"


def test_text_check_off_never_transcribes(tmp_path, enrollment_wav, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("transcribed although enroll_text_check='off'")

    monkeypatch.setattr(server_enrollment, "check_enrollment_text", boom)
    with LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False, enroll_text_check="off")) as svc:
        resp = post(svc, create_body(enrollment_wav, "off", text="something else entirely", language="en"))
        assert resp.status_code == 200, resp.text


def test_slow_text_check_is_bounded_and_keeps_its_slot(tmp_path, enrollment_wav, monkeypatch):
    """The ASR runs on the enrollment executor with a time bound: past it a 500 InternalError, and the
    decode slot stays taken until the thread really ends (it cannot be cut short)."""
    release, started = threading.Event(), threading.Event()

    def stuck(wav, text, language):
        started.set()
        release.wait(30)
        return server_enrollment.TextCheck(0.0, "wer", text)

    monkeypatch.setattr(server_enrollment, "check_enrollment_text", stuck)
    cfg = ServiceConfig(warm_speech=False, enroll_text_check_timeout_s=0.3)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        try:
            resp = post(svc, create_body(enrollment_wav, "slow", text="the quick brown fox"))
            assert started.is_set()
            assert resp.status_code == 500 and resp.json()["code"] == "InternalError", resp.text
            assert "transcript check" in resp.json()["message"]
            assert svc.app[ENROLL_SLOTS].active == 1
            assert voice_list(svc) == []  # nothing stored
        finally:
            release.set()
        assert wait_for_slots(svc, 0) == 0


# -- slow: real speech, real ASR ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mandarin_speaker_with_its_transcript_is_accepted_and_refused_with_another(service, manifest, clip_wav):
    wav = clip_wav(ZH_CLIP)
    own = manifest[ZH_CLIP]["transcript"]
    ok = post(service, create_body(wav, "zh_own", text=own, language="zh"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["output"]["fallback_mode"] is False
    [item] = [v for v in voice_list(service) if v["voice"] == ok.json()["output"]["voice"]]
    assert item["language"] == "zh"

    other = " / ".join(manifest[p]["transcript"] for p in ZH_OTHERS)
    before = len(voice_list(service))
    bad = post(service, create_body(wav, "zh_other", text=other, language="zh"))
    assert bad.status_code == 400, bad.text
    body = bad.json()
    assert set(body) == {"request_id", "code", "message"} and body["code"] == "Audio.PreprocessError"
    assert body["message"].startswith("Audio preprocess error.")  # §3's text, then why
    assert "CER" in body["message"] and f"{TRANSCRIPT_MISMATCH_THRESHOLD:g}" in body["message"]
    assert len(voice_list(service)) == before  # a refused create stores nothing


@pytest.mark.slow
def test_english_detected_language_and_degraded_mode(service, tmp_path, manifest, clip_wav):
    """No language given: detected. With enroll_text_check='fallback' (§7.9) the mismatch is a degraded clone."""
    wav = clip_wav(EN_CLIP)
    ok = post(service, create_body(wav, "en_own", text=manifest[EN_CLIP]["transcript"]))
    assert ok.status_code == 200, ok.text
    bad = post(service, create_body(wav, "en_other", text=manifest[EN_OTHER]["transcript"]))
    assert bad.status_code == 400 and bad.json()["code"] == "Audio.PreprocessError", bad.text
    assert "WER" in bad.json()["message"]
    cfg = ServiceConfig(warm_speech=False, enroll_text_check="fallback")
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        resp = post(svc, create_body(wav, "en_degraded", text=manifest[EN_OTHER]["transcript"], language="en"))
        assert resp.status_code == 200, resp.text
        out = resp.json()["output"]
        assert out["fallback_mode"] is True and out["fallback_reason"] == cfg.text_mismatch_reason


@pytest.mark.slow
def test_client_raises_api_error_for_a_mismatching_text(service, tmp_path, manifest, speech_data):
    """The typed client: its preflight warns (transcript_match), the service refuses, and the refusal is an
    APIError with the service's code and message, never the key."""
    from qvtools.enrollment import VoiceClient

    key = "sk-textcheck-secret-0123456789"
    x, sr = load(speech_data / EN_CLIP, mono=True)
    audio = (resample(x, sr, 24000).astype(np.float32), 24000)
    with VoiceClient(Settings(region="local", base_url=service.url, api_key=key, data_dir=tmp_path,
                              timeout_s=TIMEOUT)) as client:
        with pytest.raises(APIError) as info:
            client.create(audio, PLUS, "en_client", text=manifest[EN_OTHER]["transcript"], language="en")
    exc = info.value
    assert exc.status == 400 and exc.code == "Audio.PreprocessError" and not exc.retryable
    assert exc.message.startswith("Audio preprocess error.")
    assert key not in str(exc) and key not in repr(exc.args)
