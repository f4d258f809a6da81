"""Ends of sessions and turns (issue 18; protocol reference §7.23, §7.24): the tracker with literal events,
then the real local service over real sockets with the endings injected by its fault plans
(``FaultPlan.end_session``) and its semantic-VAD imitation."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from qvtools.realtime import endings
from qvtools.realtime.turn import TURN_STATUSES, TurnTracker
from qvtools.server.faults import SESSION_ENDINGS, FaultPlan
from qvtools.server.semantic_vad import rejection, rejects

from realtime_support import FLASH, PLUS, settings_for, shared_service, utterance


def _feed(tracker, *events):
    for i, e in enumerate(events):
        tracker.feed(json.dumps(e), float(i))


# ------------------------------------------------------------------------------------------ sans-I/O
def test_common_error_marks_the_turn_transient():
    tr = TurnTracker(PLUS)
    tr.mark("response_create_sent", 0.0)
    _feed(tr, {"type": "error", "error": {"code": endings.MODEL_SERVING_CODE,
                                          "message": endings.MODEL_SERVING_ERROR}})
    assert tr.done and tr.turn.status == "failed" and tr.turn.transient
    assert "ModelServingError" in tr.turn.error


def test_voice_error_is_not_transient():
    tr = TurnTracker(PLUS)
    _feed(tr, {"type": "error", "error": {"code": "InternalError.Algo.InvalidParameter",
                                          "message": endings.voice_error_reason("Cherry")}})
    assert tr.turn.status == "failed" and not tr.turn.transient


def test_semantic_rejection_ends_the_turn_with_its_own_status():
    assert "rejected" in TURN_STATUSES
    tr = TurnTracker(PLUS)
    tr.mark("speech_stopped", 0.0)
    _feed(tr, rejection("event_rc1"))
    assert tr.done and tr.turn.status == "rejected" and not tr.ended_by_error
    assert tr.turn.error.startswith(endings.REJECTED_CODE)


@pytest.mark.parametrize("code,during,expected", [
    (1011, False, True), (1011, True, True), (1006, True, True), (1006, False, False),
    (1007, True, False), (1005, True, False), (1000, False, False)])
def test_transient_close_rule(code, during, expected):
    assert endings.transient_close(code, during) is expected


def test_semantic_vad_imitation_rule():
    assert rejects("") == "empty" and rejects("  ...  ") == "empty"
    assert rejects("I would like to go to the") == "incomplete"
    assert rejects("Tell me about the weather and,") == "incomplete"
    assert rejects("What is the weather like today?") is None
    assert rejects("I would like to go to the", "empty") is None
    assert rejects("", "never") is None


def test_fault_plan_validates_endings():
    assert FaultPlan(end_session="model_error").realtime_faults
    for bad in ({"end_session": "explode"}, {"end_session": "bare_close", "end_on_turn": 0},
                {"end_session": "param_error", "end_reason": "x" * 200}):
        with pytest.raises(ValueError):
            FaultPlan.from_dict(bad)


# ------------------------------------------------------------------------------- the local service
def _key() -> str:
    return "sk-h18-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def svc():
    return shared_service()


def _session(svc, key, model=PLUS, **kw):
    from qvtools.realtime.session import RealtimeSession

    return RealtimeSession(settings_for(svc, key), model, response_timeout=60.0, **kw)


def test_model_error_closes_1011_and_a_new_session_succeeds(svc):
    key = _key()
    svc.set_faults(key, FaultPlan(times=1, end_session="model_error"))
    try:
        with _session(svc, key) as rt:
            turn = rt.send_audio(utterance(), realtime=False)
            assert turn.status == "failed" and turn.transient, turn.error
            assert "ModelServingError" in turn.error
            rt._reader.join(10)  # the close follows the error event
            assert rt.close_code == endings.CLOSE_INTERNAL_ERROR
        with _session(svc, key) as rt:  # times=1: the next session is not faulted
            again = rt.send_audio(utterance(), realtime=False)
        assert again.status == "completed" and not again.transient, again.error
    finally:
        svc.set_faults(key, None)


def test_param_error_close_1007_carries_its_reason(svc):
    key = _key()
    reason = "<400> InternalError.Algo.InvalidParameter: Voice 'Tina' is not supported."
    svc.set_faults(key, FaultPlan(end_session="param_error", end_reason=reason))
    try:
        with _session(svc, key) as rt:
            turn = rt.send_text("Hello there, how are you?")
            rt._reader.join(10)
            assert rt.close_code == endings.CLOSE_INVALID_PAYLOAD
            assert "Voice 'Tina' is not supported" in rt.closed_because
        assert turn.status == "failed" and not turn.transient
        assert "Voice 'Tina' is not supported" in turn.error
    finally:
        svc.set_faults(key, None)


def test_param_error_on_a_chosen_turn(svc):
    """``end_on_turn`` picks the turn: the first is answered, the second ends with the 1007 reason."""
    key = _key()
    svc.set_faults(key, FaultPlan(end_session="param_error", end_on_turn=2, end_reason="bad parameter X"))
    try:
        with _session(svc, key) as rt:
            first = rt.send_text("Hello there, how are you?")
            assert first.status == "completed", first.error
            second = rt.send_text("And what is the time?")
        assert second.status == "failed" and "bad parameter X" in second.error
    finally:
        svc.set_faults(key, None)


def test_bare_close_after_speech_stopped_names_voice_and_family(svc):
    key = _key()
    svc.set_faults(key, FaultPlan(end_session="bare_close"))
    try:
        with _session(svc, key, model=FLASH, voice="Tina") as rt:
            turn = rt.send_audio(utterance(), realtime=False)
            assert rt.close_code == endings.CLOSE_NO_STATUS
        assert turn.status == "failed" and not turn.transient
        assert "'Tina'" in turn.error and "qwen3.5-omni-flash" in turn.error and "1005" in turn.error
        assert "speech_stopped" in turn.marks and "response_created" not in turn.marks
    finally:
        svc.set_faults(key, None)


def test_endings_are_listed_once():
    assert set(SESSION_ENDINGS) == {"model_error", "param_error", "bare_close"}


def test_semantic_vad_rejects_then_the_session_keeps_working(svc):
    """§7.23: an utterance our imitation judges incomplete is rejected (non-fatal); the next turn on the
    same session is answered."""
    from qvtools.server.tts import Synthesizer

    x, sr = Synthesizer().synthesize("I would like to go to the")
    x = np.concatenate([np.zeros(int(0.3 * sr), np.float32), np.asarray(x, np.float32)])
    with _session(svc, _key(), turn_detection="semantic_vad") as rt:
        assert rt.effective["turn_detection"]["type"] == "semantic_vad"
        rejected = rt.send_audio((x, sr), realtime=False)
        assert rejected.status == "rejected", (rejected.status, rejected.error, rejected.user_transcript)
        assert rejected.error.startswith(endings.REJECTED_CODE)
        assert rt.connected
        answered = rt.send_audio(utterance(), realtime=False)
    assert answered.status == "completed", answered.error
    assert answered.user_transcript and "weather" in answered.user_transcript.lower()


def test_a_connection_dropped_during_a_response_is_transient(svc):
    """An abnormal end (no close frame) while a response streams: worth a new session (§7.24 a's rule)."""
    key = _key()
    svc.set_faults(key, FaultPlan(drop_after_audio_deltas=1))
    try:
        with _session(svc, key) as rt:
            turn = rt.send_audio(utterance(), realtime=False)
            assert rt.close_code == endings.CLOSE_ABNORMAL
        assert turn.status == "failed" and turn.transient, turn.error
        assert "response_created" in turn.marks
    finally:
        svc.set_faults(key, None)


def test_a_1007_close_without_an_error_event_carries_its_reason(tmp_path):
    """§7.24 (b), replayed: the idle-close fixture with its error event removed and a parameter-error reason;
    the reason of the close is the turn's error."""
    from qvtools.config import Settings
    from qvtools.realtime.session import RealtimeSession
    from replay_server import ReplayServer, load_script

    reason = endings.voice_error_reason("Tina")
    script = [ln for ln in load_script("idle_close.jsonl") if ln.get("event", {}).get("type") != "error"]
    for ln in script:
        if "close" in ln:
            ln["close"] = {"code": endings.CLOSE_INVALID_PAYLOAD, "reason": reason}
    srv = ReplayServer(script).start()
    try:
        settings = Settings(region="local", base_url=srv.url, api_key="sk-h18-replay")
        t = np.arange(16000) / 16000
        x = np.concatenate([np.zeros(3200), 0.3 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
        with RealtimeSession(settings, FLASH, turn_detection=None, timeout=5.0, response_timeout=5.0) as rt:
            turn = rt.send_audio((x, 16000), realtime=False)
            assert rt.close_code == endings.CLOSE_INVALID_PAYLOAD
    finally:
        srv.stop()
    assert turn.status == "failed" and not turn.transient
    assert "1007" in turn.error and "Voice 'Tina' is not supported" in turn.error
