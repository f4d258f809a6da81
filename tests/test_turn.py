"""qvtools.realtime.turn: the tracker fed with literal event sequences and fixed receive times."""

import base64

import numpy as np
import pytest

from qvtools.realtime.turn import Turn, TurnTracker

PCM = base64.b64encode(np.full(2400, 1000, dtype="<i2").tobytes()).decode()  # 100 ms at 24 kHz

VAD_SEQUENCE = [
    (1.00, '{"type":"input_audio_buffer.speech_started","audio_start_ms":0,"item_id":"item_u"}'),
    (2.90, '{"type":"input_audio_buffer.speech_stopped","audio_end_ms":2000,"item_id":"item_u"}'),
    (2.91, '{"type":"input_audio_buffer.committed","item_id":"item_u"}'),
    (2.92, '{"type":"conversation.item.created","item":{"id":"item_u","role":"user"}}'),
    (3.00, '{"type":"response.created","response":{"id":"resp_A","status":"in_progress"}}'),
    (3.01, '{"type":"response.output_item.added","response_id":"resp_A","output_index":0,"item":{"id":"item_a"}}'),
    (3.02, '{"type":"response.content_part.added","response_id":"resp_A","item_id":"item_a","part":{"type":"audio"}}'),
    (3.40, '{"type":"response.audio_transcript.delta","response_id":"resp_A","item_id":"item_a","delta":"Hello "}'),
    (3.50, '{"type":"response.audio.delta","response_id":"resp_A","item_id":"item_a","delta":"%s"}' % PCM),
    (3.55, '{"type":"conversation.item.input_audio_transcription.completed","item_id":"item_u","transcript":"Hi."}'),
    (3.60, '{"type":"response.audio_transcript.delta","response_id":"resp_A","item_id":"item_a","delta":"there."}'),
    (3.61, '{"type":"response.audio.delta","response_id":"resp_A","item_id":"item_a","delta":"%s"}' % PCM),
    (3.70, '{"type":"response.audio_transcript.done","response_id":"resp_A","item_id":"item_a","transcript":"Hello there."}'),
    (3.71, '{"type":"response.audio.done","response_id":"resp_A","item_id":"item_a"}'),
    (3.72, '{"type":"response.content_part.done","response_id":"resp_A","item_id":"item_a"}'),
    (3.73, '{"type":"response.output_item.done","response_id":"resp_A","output_index":0,"item":{"id":"item_a"}}'),
    (3.80, '{"type":"response.done","response":{"id":"resp_A","status":"completed","usage":{"total_tokens":42}}}'),
]


def feed_all(tracker, seq):
    for t, text in seq:
        tracker.feed(text, t)


def test_vad_turn_marks_latency_and_audio():
    tr = TurnTracker("qwen3.5-omni-plus-realtime", voice="Tina", session_id="sess_1",
                     marks={"connect": 0.1, "session_ready": 0.2})
    tr.mark("first_audio_sent", 0.5)
    tr.mark("speech_end_sent", 2.5)
    tr.mark("last_audio_sent", 3.7)
    feed_all(tr, VAD_SEQUENCE)
    assert tr.done
    turn = tr.result()
    assert turn.status == "completed" and turn.response_id == "resp_A"
    assert turn.marks["speech_stopped"] == 2.90 and turn.marks["first_audio_delta"] == 3.50
    lat = turn.latency()
    assert lat["ttfa_ms"] == pytest.approx(1000.0)          # 3.50 - 2.50 (end of speech, not of silence)
    assert lat["ttft_ms"] == pytest.approx(900.0)
    assert lat["ttfa_created_ms"] == pytest.approx(500.0)
    assert lat["ttft_created_ms"] == pytest.approx(400.0)
    assert lat["e2e_ms"] == pytest.approx(1300.0)
    assert turn.audio_chunks == [(3.50, 2400), (3.61, 2400)]
    assert turn.audio.shape == (4800,) and turn.audio[0] == pytest.approx(1000 / 32768)
    assert turn.user_transcript == "Hi." and turn.assistant_transcript == "Hello there."
    assert turn.usage == {"total_tokens": 42}
    deltas = [e for e in turn.events if e.type == "response.audio.delta"]
    assert deltas[0].data["delta"] == 4800  # decoded byte count replaces the base64


def test_speech_end_falls_back_to_last_audio_sent():
    tr = TurnTracker("m")
    tr.mark("last_audio_sent", 3.0)
    feed_all(tr, VAD_SEQUENCE)
    assert tr.result().latency()["ttfa_ms"] == pytest.approx(500.0)


def test_events_of_other_responses_are_ignored():
    tr = TurnTracker("m")
    # tail of an earlier cancelled response arrives before this turn's response.created
    tr.feed('{"type":"response.done","response":{"id":"resp_OLD","status":"incomplete"}}', 0.5)
    assert not tr.done
    feed_all(tr, VAD_SEQUENCE[:5])
    tr.feed('{"type":"response.audio.delta","response_id":"resp_OLD","item_id":"x","delta":"%s"}' % PCM, 3.1)
    assert "first_audio_delta" not in tr.turn.marks
    feed_all(tr, VAD_SEQUENCE[5:])
    assert tr.result().status == "completed" and len(tr.turn.audio_chunks) == 2


def test_cancel_without_response_done_ends_at_output_item_done():
    tr = TurnTracker("m")
    feed_all(tr, VAD_SEQUENCE[:9])
    tr.cancel_requested = True
    tr.feed('{"type":"response.audio.done","response_id":"resp_A","item_id":"item_a"}', 3.6)
    assert not tr.done
    tr.feed('{"type":"response.output_item.done","response_id":"resp_A","item":{"id":"item_a"}}', 3.7)
    assert tr.done and tr.turn.status == "cancelled" and len(tr.turn.audio) == 2400


def test_cancel_with_incomplete_response_done():
    tr = TurnTracker("m")
    feed_all(tr, VAD_SEQUENCE[:9])
    tr.cancel_requested = True
    tr.feed('{"type":"response.done","response":{"id":"resp_A","status":"incomplete"}}', 3.7)
    assert tr.turn.status == "cancelled"


def test_failure_keeps_partial_reply_and_bad_frames():
    tr = TurnTracker("m")
    feed_all(tr, VAD_SEQUENCE[:9])
    assert tr.feed("not json", 3.55) is None
    assert tr.response_active
    turn = tr.fail("connection lost")
    assert turn.status == "failed" and turn.error == "connection lost"
    assert len(turn.audio) == 2400 and turn.assistant_transcript == "Hello "
    assert turn.events[-1].type == "invalid"
    tr.feed(VAD_SEQUENCE[-1][1], 4.0)  # late events after the end do not resurrect the turn
    assert turn.status == "failed"


def test_error_event_is_recorded():
    tr = TurnTracker("m")
    tr.feed('{"type":"error","error":{"type":"invalid_request_error","code":"invalid_value","message":"empty"}}', 1.0)
    assert tr.error_event is not None and tr.turn.error == "invalid_value: empty"


def test_save_load_roundtrip(tmp_path):
    tr = TurnTracker("qwen3.5-omni-flash-realtime", voice="Tina")
    tr.mark("speech_end_sent", 2.5)
    feed_all(tr, VAD_SEQUENCE)
    turn = tr.result()
    wav, js = turn.save(tmp_path / "turns" / "t0")
    assert wav.name == "t0.wav" and js.name == "t0.json"
    back = Turn.load(tmp_path / "turns" / "t0")
    assert back.status == turn.status and back.marks == turn.marks and back.usage == turn.usage
    assert back.audio_chunks == turn.audio_chunks and back.sample_rate == 24000
    assert np.allclose(back.audio, turn.audio, atol=1 / 32768)
    assert back.latency() == turn.latency()
    assert [e.type for e in back.events] == [e.type for e in turn.events]


def test_error_in_place_of_a_response_ends_the_turn():
    tr = TurnTracker("m")
    tr.mark("response_create_sent", 1.0)
    tr.feed('{"type":"input_audio_buffer.committed","item_id":"item_u"}', 1.1)
    assert not tr.done
    tr.feed('{"type":"error","error":{"code":"InternalError.Algo.InvalidParameter",'
            '"message":"<400> Voice \'Chelsie\' is not supported."}}', 1.2)  # §7.3
    assert tr.done and tr.ended_by_error and tr.turn.status == "failed"
    assert tr.error_code == "InternalError.Algo.InvalidParameter"
    assert tr.turn.error == "InternalError.Algo.InvalidParameter: <400> Voice 'Chelsie' is not supported."


def test_error_left_over_from_before_the_turn_does_not_end_it():
    tr = TurnTracker("m")
    tr.armed = False  # the driver drains events of an earlier turn
    tr.feed('{"type":"error","error":{"code":"invalid_value","message":"Conversation has no active response."}}', 0.5)
    tr.armed = True
    assert not tr.done
    feed_all(tr, VAD_SEQUENCE)
    assert tr.turn.status == "completed" and tr.turn.error is None


def test_user_transcript_from_stash_when_completed_is_empty():
    # §7.14: text empty, the sentence in stash; completed empty and after response.created
    tr = TurnTracker("m")
    seq = list(VAD_SEQUENCE)
    seq[9] = (3.55, '{"type":"conversation.item.input_audio_transcription.completed","item_id":"item_u","transcript":""}')
    seq.insert(4, (2.95, '{"type":"conversation.item.input_audio_transcription.delta","item_id":"item_u",'
                         '"text":"","stash":"What is the"}'))
    seq.insert(5, (2.96, '{"type":"conversation.item.input_audio_transcription.delta","item_id":"item_u",'
                         '"text":"","stash":"What is the weather?"}'))
    feed_all(tr, seq)
    assert tr.turn.status == "completed" and tr.turn.user_transcript == "What is the weather?"
    assert tr.turn.user_item_id == "item_u"


def test_confirmed_text_pieces_and_stash_are_joined():
    tr = TurnTracker("m")
    tr.feed('{"type":"conversation.item.input_audio_transcription.delta","item_id":"i","text":"Hello","stash":" wor"}', 1)
    tr.feed('{"type":"conversation.item.input_audio_transcription.delta","item_id":"i","text":"Hello world","stash":" and"}', 2)
    assert tr.result().user_transcript == "Hello world and"


def test_transcription_of_an_earlier_turns_item_is_ignored():
    tr = TurnTracker("m", ignore_items={"item_old"})
    tr.feed('{"type":"conversation.item.input_audio_transcription.completed","item_id":"item_old","transcript":"Old."}', 0.4)
    feed_all(tr, VAD_SEQUENCE)
    assert tr.turn.user_transcript == "Hi." and tr.turn.user_item_id == "item_u"


@pytest.mark.parametrize("frame", [
    '{"type":"error","error":"plain string"}',
    '{"type":"error","error":null}',
    '{"type":"response.created","response":"x"}',
])
def test_malformed_events_fail_the_turn_without_raising(frame):
    tr = TurnTracker("m")
    tr.feed(frame, 1.0)
    assert tr.done and tr.turn.status == "failed" and tr.turn.error


def test_malformed_response_done_fails_the_turn():
    tr = TurnTracker("m")
    feed_all(tr, VAD_SEQUENCE[:9])
    tr.feed('{"type":"response.done","response_id":"resp_A","response":["not","an","object"]}', 4.0)
    assert tr.done and tr.turn.status == "failed" and "malformed response.done" in tr.turn.error
    assert len(tr.turn.audio) == 2400  # the partial reply is kept


def test_server_text_is_redacted_in_error_and_saved_events(tmp_path):
    key = "sk-abcdef0123456789"
    tr = TurnTracker("m", secrets=(key,))
    tr.feed('{"type":"error","error":{"code":"x","message":"header was Bearer %s"}}' % key, 1.0)
    assert key not in tr.turn.error and "***" in tr.turn.error
    tr.turn.save(tmp_path / "t")
    assert key not in (tmp_path / "t.json").read_text()


def test_latency_speaks_the_metrics_vocabulary(tmp_path):
    """Turn.latency() and metrics.latency_metrics share names and the NaN convention (issue 12)."""
    import json
    import math

    from qvtools import metrics

    tr = TurnTracker("m")
    tr.mark("speech_end_sent", 2.5)
    feed_all(tr, [e for e in VAD_SEQUENCE if "speech_stopped" not in e[1]])  # no server VAD stop
    turn = tr.result()
    lat = turn.latency()
    assert tuple(lat) == metrics.LATENCY_NAMES
    assert lat["response_created_ms"] == pytest.approx(500.0) and lat["e2e_ms"] == pytest.approx(1300.0)
    assert math.isnan(lat["speech_stopped_ms"])  # missing: NaN, as in the results columns
    full = metrics.latency_metrics(turn)
    assert all(full[k] == v or (math.isnan(full[k]) and math.isnan(v)) for k, v in lat.items())
    _, js = turn.save(tmp_path / "t")
    saved = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert saved["latency"]["speech_stopped_ms"] is None and saved["latency"]["ttfa_ms"] == pytest.approx(1000.0)


def test_a_timeout_says_whether_the_reply_had_started():
    """A turn that runs out of time while its reply streams is not reported as "no reply" (the message used to
    blame the server VAD for a reply that had begun 50 s in)."""
    silent = TurnTracker("m")
    silent.mark("speech_end_sent", 3.0)
    assert silent.no_reply_message(60.0, " (check the VAD)") == "no reply within 60.0 s (check the VAD)"
    streaming = TurnTracker("m")
    streaming.mark("speech_end_sent", 3.0)
    feed_all(streaming, [e for e in VAD_SEQUENCE if '"response.done"' not in e[1]])
    assert "first_audio_delta" in streaming.turn.marks and not streaming.done
    msg = streaming.no_reply_message(60.0, " (check the VAD)")
    assert msg.startswith("the reply started (its first audio came 0.5 s after the end of the input)")
    assert msg.endswith("but did not end within 60.0 s") and "VAD" not in msg
    assert streaming.fail(msg).status == "failed" and streaming.turn.error == msg
