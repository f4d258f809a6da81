"""The official dashscope SDK (legacy OmniRealtimeConversation) against the local service, offline."""

import base64
import threading

import pytest

from qvtools.audio import resample, to_pcm16
from realtime_support import PLUS, create_voice, shared_service, utterance

dashscope = pytest.importorskip("dashscope")
from dashscope.audio.qwen_omni import (AudioFormat, MultiModality, OmniRealtimeCallback,  # noqa: E402
                                       OmniRealtimeConversation)

pytestmark = pytest.mark.slow


class Recorder(OmniRealtimeCallback):
    def __init__(self):
        self.events = []
        self.cond = threading.Condition()
        self.closed = None

    def on_event(self, response: dict) -> None:
        with self.cond:
            self.events.append(response)
            self.cond.notify_all()

    def on_close(self, code, msg) -> None:
        self.closed = (code, msg)

    def wait_for(self, type_, timeout=60.0) -> dict:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(e.get("type") == type_ for e in self.events), timeout)
        assert ok, f"no {type_} within {timeout} s; got {[e.get('type') for e in self.events]}"
        return next(e for e in self.events if e.get("type") == type_)

    @property
    def types(self):
        return [e.get("type") for e in self.events]


def test_sdk_server_vad_conversation_with_a_cloned_voice(enrollment_wav):
    # the seed sample's flow; the echo has the observed key set (§7.2), the SDK reads only session.id from it
    svc = shared_service()
    voice = create_voice(svc, enrollment_wav, target=PLUS, name="sdk")  # over HTTP first
    rec = Recorder()
    conv = OmniRealtimeConversation(model=PLUS, callback=rec, url=f"{svc.ws_url}/api-ws/v1/realtime",
                                    api_key=svc.api_key)
    conv.connect()
    try:
        created = rec.wait_for("session.created", 10)
        assert conv.get_session_id() == created["session"]["id"]
        # the seed sample's call: SDK defaults = server VAD, pcm16, transcription model null
        conv.update_session(output_modalities=[MultiModality.AUDIO, MultiModality.TEXT], voice=voice,
                            input_audio_format=AudioFormat.PCM_16000HZ_MONO_16BIT,
                            output_audio_format=AudioFormat.PCM_24000HZ_MONO_16BIT)
        updated = rec.wait_for("session.updated", 10)
        assert updated["session"]["voice"] == voice
        x, sr = utterance()
        pcm = to_pcm16(resample(x, sr, 16000)) + bytes(32000 * 2)  # speech + 2 s of trailing silence
        for i in range(0, len(pcm), 6400):  # the seed's 200 ms mic reads, as fast as possible
            conv.append_audio(base64.b64encode(pcm[i:i + 6400]).decode())
        done = rec.wait_for("response.done", 90)
        types = rec.types
        for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                  "input_audio_buffer.committed", "response.created", "response.audio.delta",
                  "response.audio_transcript.delta", "conversation.item.input_audio_transcription.completed"):
            assert t in types, t
        assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
        resp_id = rec.wait_for("response.created")["response"]["id"]
        assert conv.get_last_response_id() == resp_id == done["response"]["id"]
        usage = done["response"]["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
        audio = b"".join(base64.b64decode(e["delta"]) for e in rec.events if e["type"] == "response.audio.delta")
        assert len(audio) % 2 == 0 and len(audio) > 24000  # > 0.5 s of 24 kHz PCM16
        conv.end_session(timeout=10)  # returns on session.finished
        assert "session.finished" in rec.types
    finally:
        conv.close()


def test_sdk_voice_for_another_model_is_refused_at_generation_time(enrollment_wav):
    # §7.3: the update is accepted (the echo carries the voice); the VAD commit, the response trigger of the
    # SDK's default mode, is answered by a lone error and no response.created (the SDK surfaces it in on_event)
    from realtime_support import FLASH

    svc = shared_service()
    voice = create_voice(svc, enrollment_wav, target=PLUS, name="sdkflash")
    rec = Recorder()
    conv = OmniRealtimeConversation(model=FLASH, callback=rec, url=f"{svc.ws_url}/api-ws/v1/realtime",
                                    api_key=svc.api_key)
    conv.connect()
    try:
        rec.wait_for("session.created", 10)
        conv.update_session(output_modalities=[MultiModality.AUDIO, MultiModality.TEXT], voice=voice,
                            input_audio_format=AudioFormat.PCM_16000HZ_MONO_16BIT,
                            output_audio_format=AudioFormat.PCM_24000HZ_MONO_16BIT)
        assert rec.wait_for("session.updated", 10)["session"]["voice"] == voice
        x, sr = utterance()
        pcm = to_pcm16(resample(x, sr, 16000)) + bytes(32000 * 2)
        for i in range(0, len(pcm), 6400):
            conv.append_audio(base64.b64encode(pcm[i:i + 6400]).decode())
        err = rec.wait_for("error", 60)["error"]
        assert err["message"] == f"<400> InternalError.Algo.InvalidParameter: Voice '{voice}' is not supported."
        types = rec.types
        assert types.index("input_audio_buffer.committed") < types.index("error")
        assert "response.created" not in types
    finally:
        conv.close()
