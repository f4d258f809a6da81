"""RealtimeSession against the real local service on 127.0.0.1 (port 0), streaming as fast as possible."""

import numpy as np
import pytest

from qvtools.errors import APIError, RealtimeError, VoiceModelMismatch
from qvtools.realtime import RealtimeSession, Turn
from realtime_support import FLASH, PLUS, create_voice, settings_for, shared_service, utterance

RESPONSE_ORDER = ["response.created", "response.output_item.added", "conversation.item.created",
                  "response.content_part.added"]
DONE_ORDER = ["response.audio_transcript.done", "response.audio.done", "response.content_part.done",
              "response.output_item.done", "response.done"]


@pytest.fixture(scope="module")
def svc():
    return shared_service()


@pytest.fixture(scope="module")
def speech():
    return utterance()


@pytest.mark.slow
def test_vad_turns_on_one_connection(svc, speech, tmp_path):
    with RealtimeSession(settings_for(svc), FLASH, voice="Ethan") as rt:
        assert rt.session_id.startswith("sess_") and rt.config["voice"] == "Ethan"
        assert rt.config["qvtools"]["latency"] in ("simulated", "none")
        turns = [rt.send_audio(speech, realtime=False, trailing_silence_ms=1200) for _ in range(2)]
    for turn in turns:
        assert turn.status == "completed", turn.error
        assert turn.session_id == rt.session_id and turn.voice == "Ethan"
        types = [e.type for e in turn.events]
        assert types[:3] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                             "input_audio_buffer.committed"]
        resp = [t for t in types if t.startswith("response.") or t == "conversation.item.created"]
        resp = resp[resp.index("response.created"):]
        assert resp[:4] == RESPONSE_ORDER and resp[-5:] == DONE_ORDER
        assert "weather" in (turn.user_transcript or "").lower()
        assert turn.assistant_transcript and len(turn.audio) > 0.5 * turn.sample_rate
        assert turn.sample_rate == 24000
        lat = turn.latency()
        # marks come in causal order: end of speech < speech_stopped < created <= first audio <= done
        m = turn.marks
        assert m["first_audio_sent"] < m["speech_end_sent"] < m["last_audio_sent"]
        assert m["speech_end_sent"] < m["speech_stopped"] < m["response_created"] <= m["first_audio_delta"]
        assert 0 < lat["ttfa_created_ms"] < lat["ttfa_ms"] < lat["e2e_ms"]
        assert turn.usage["total_tokens"] == turn.usage["input_tokens"] + turn.usage["output_tokens"]
    assert turns[0].response_id != turns[1].response_id
    # history is re-fed every turn, so input tokens accumulate (§4.6)
    assert turns[1].usage["input_tokens"] > turns[0].usage["input_tokens"]
    wav, js = turns[0].save(tmp_path / "t0")
    back = Turn.load(tmp_path / "t0")
    assert back.latency() == turns[0].latency() and abs(len(back.audio) - len(turns[0].audio)) == 0


@pytest.mark.slow
def test_manual_turn_and_text_turn(svc, speech):
    with RealtimeSession(settings_for(svc), PLUS, turn_detection=None, transcription=False) as rt:
        assert rt.config["turn_detection"] is None and rt.config["input_audio_transcription"] is None
        turn = rt.send_audio(speech, realtime=False)
        assert turn.status == "completed", turn.error
        types = [e.type for e in turn.events]
        assert "input_audio_buffer.speech_started" not in types
        assert types.index("input_audio_buffer.committed") < types.index("response.created")
        assert not any("transcription" in t for t in types)  # transcription disabled
        assert turn.marks["commit_sent"] < turn.marks["response_create_sent"] < turn.marks["response_done"]
        text = rt.send_text("Tell me about the sea.")
        assert text.status == "completed" and text.assistant_transcript and text.latency()["ttfa_ms"] > 0


@pytest.mark.slow
def test_paced_streaming_follows_the_clock(svc, speech):
    # realtime=True sends 100 ms chunks on a 100 ms schedule (like a microphone)
    x, sr = speech
    short = (x[: int(0.5 * sr)], sr)
    with RealtimeSession(settings_for(svc), FLASH, turn_detection=None) as rt:
        turn = rt.send_audio(short, realtime=True, chunk_ms=100)
    sent = turn.marks["last_audio_sent"] - turn.marks["first_audio_sent"]
    assert 0.35 < sent < 0.8
    assert turn.status == "completed"


@pytest.mark.slow
def test_cancel_ends_the_turn_as_cancelled(svc):
    with RealtimeSession(settings_for(svc), FLASH, turn_detection=None) as rt:
        def on_event(e):
            if e.type == "response.audio.delta" and "cancel_sent" not in rt._tracker.turn.marks:
                rt.cancel()
        turn = rt.send_text("Please tell me a long story about the mountains and the rivers and the sea.",
                            on_event=on_event)
        assert turn.status == "cancelled", turn.error
        types = [e.type for e in turn.events]
        assert "response.audio.done" in types and "response.output_item.done" in types
        done = [e for e in turn.events if e.type == "response.done"][-1]
        assert done.data["response"]["status"] == "incomplete"
        # the session goes on after a cancel
        again = rt.send_text("Hello again.")
        assert again.status == "completed", again.error


def test_finish_and_closed_session(svc):
    rt = RealtimeSession(settings_for(svc), FLASH).connect()
    assert rt.finish(timeout=5) is True
    assert not rt.connected
    turn = rt.send_text("anyone there?") if False else None  # noqa: SIM108 - sending after close raises below
    with pytest.raises(Exception):
        rt.update(voice="Tina")
    assert turn is None


@pytest.mark.slow
def test_finish_tolerates_i140_servers(tmp_path):
    from qvtools.server import LocalService, ServiceConfig

    with LocalService(data_dir=tmp_path, config=ServiceConfig(realtime_finish_error=True)) as other:
        rt = RealtimeSession(settings_for(other), FLASH).connect()
        assert rt.finish(timeout=5) is False  # error answered: closed anyway, no exception
        assert not rt.connected


def test_cloned_voice_mismatch_is_refused_before_connecting(svc):
    voice = "qwen-omni-vc-guanyu-voice-20250812105009984-838b"
    with pytest.raises(VoiceModelMismatch, match="target_model"):
        RealtimeSession(settings_for(svc), FLASH, voice=voice, voice_target_model=PLUS)

    class Voice:  # duck-typed like qvtools.enrollment.Voice
        def __init__(self):
            self.voice, self.target_model = voice, PLUS
    with pytest.raises(VoiceModelMismatch):
        RealtimeSession(settings_for(svc), FLASH, voice=Voice())


@pytest.mark.slow
def test_cloned_voice_end_to_end(svc, enrollment_wav, speech):
    voice = create_voice(svc, enrollment_wav, target=PLUS, name="sess")
    with RealtimeSession(settings_for(svc), PLUS, voice=voice, voice_target_model=PLUS,
                         turn_detection=None) as rt:
        assert rt.config["voice"] == voice
        turn = rt.send_text("Hello!")
        assert turn.status == "completed" and turn.voice == voice
        with pytest.raises(RealtimeError) as info:  # §5.6: voice fixed after audio output
            rt.update(voice="Tina")
        assert info.value.code == "cannot_update_voice"
    # the server enforces the rule too when the client does not know the target model
    with pytest.raises(RealtimeError) as info:
        RealtimeSession(settings_for(svc), FLASH, voice=voice).connect()
    assert info.value.param == "session.voice"
    # voices are scoped per API key
    with pytest.raises(RealtimeError, match="not found"):
        RealtimeSession(settings_for(svc, key="sk-someone-else"), PLUS, voice=voice).connect()


def test_update_errors_raise_and_session_continues(svc):
    with RealtimeSession(settings_for(svc), PLUS) as rt:
        with pytest.raises(RealtimeError) as info:
            rt.update({"modalities": ["audio"]})
        assert info.value.param == "session.modalities" and "Supported combinations" in info.value.message
        cfg = rt.update(voice="Serena", temperature=0.5, input_format=("pcm", 24000))
        assert cfg["voice"] == "Serena" and cfg["temperature"] == 0.5
        assert rt.input_sample_rate == 24000


@pytest.mark.slow
def test_handshake_errors(tmp_path):
    from qvtools.server import LocalService

    with LocalService(data_dir=tmp_path, api_key="sk-right") as other:
        with pytest.raises(APIError) as info:
            RealtimeSession(settings_for(other, key="sk-wrong"), PLUS).connect()
        assert info.value.status == 401 and info.value.code == "InvalidApiKey"
        assert "sk-wrong" not in str(info.value) and "sk-right" not in str(info.value)
        with pytest.raises(APIError) as info:
            RealtimeSession(settings_for(other), "gpt-4o-realtime").connect()
        assert info.value.status == 404 and info.value.code == "ModelNotFound"


@pytest.mark.slow
def test_dropped_connection_returns_partial_failed_turn(svc):
    rt = RealtimeSession(settings_for(svc), FLASH, turn_detection=None).connect()
    try:
        def on_event(e):
            if e.type == "response.audio.delta":
                rt._drop()  # the network goes away mid-reply
        turn = rt.send_text("Tell me something long about the weather in the mountains.", on_event=on_event,
                            timeout=20)
        assert turn.status == "failed" and turn.error
        assert len(turn.audio_chunks) >= 1 and len(turn.audio) > 0
        assert not rt.connected
        again = rt.send_text("still there?", timeout=5)
        assert again.status == "failed"
    finally:
        rt.close()


def test_repr_hides_the_key(svc):
    rt = RealtimeSession(settings_for(svc, key="sk-secret-value"), FLASH)
    assert "sk-secret-value" not in repr(rt)
    assert np.isfinite(rt.timeout)
