"""RealtimeSession against replays of the observed cloud shapes (tests/fixtures/cloud, protocol reference §7),
plus the client hardening of issue 13 (failed connects, malformed answers, redaction, frame size, 429).

Every test talks to :class:`replay_server.ReplayServer` on 127.0.0.1 port 0 (a real WebSocket server).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time

import numpy as np
import pytest

from qvtools.config import Settings
from qvtools.errors import APIError, QVError, RealtimeError, SessionTimeout
from qvtools.realtime import RealtimeSession
from qvtools.realtime.session import TRAILING_SILENCE_MARGIN_MS
from qvtools.realtime.turn import TURN_STATUSES, TurnTracker
from replay_server import ReplayServer, load_script, meta

KEY = "sk-replay-SECRET-0123456789abcdef"
FIXTURE_FILES = ("manual_turn_qwen38.jsonl", "vad_turn_long_silence.jsonl", "two_turns.jsonl",
                 "cancel_qwen38.jsonl", "error_at_generation.jsonl", "idle_close.jsonl",
                 "text_item_replaced_id.jsonl", "text_only_qwen35.jsonl")


def tone(seconds=0.6, rate=16000, lead=0.2):
    """A 440 Hz burst after ``lead`` s of silence: speech for the replay server's energy VAD."""
    t = np.arange(int(seconds * rate)) / rate
    x = np.concatenate([np.zeros(int(lead * rate)), 0.3 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    return x, rate


def server_lines(script, type_=None):
    return [ln["event"] for ln in script if ln.get("dir") == "server" and "event" in ln
            and (type_ is None or ln["event"]["type"] == type_)]


@pytest.fixture(autouse=True)
def no_leaked_reader():
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.name == "qvtools-realtime-reader" and t.is_alive()]
        if not alive:
            return
        alive[0].join(0.1)
    pytest.fail("a qvtools-realtime-reader thread outlived its session")


@pytest.fixture
def replay():
    servers = []

    def start(script, **kw):
        srv = ReplayServer(script, **kw).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def open_session(srv, model=None, *, timeout=5.0, response_timeout=5.0, **kw):
    m = meta(srv.script)
    opts = dict(m.get("client", {}))
    opts.update(kw)
    settings = Settings(region="local", base_url=srv.url, api_key=KEY)
    return RealtimeSession(settings, model or m["model"], timeout=timeout, response_timeout=response_timeout,
                           **opts)


def test_fixtures_are_well_formed():
    for name in FIXTURE_FILES:
        script = load_script(name)
        m = meta(script)
        assert m["scenario"] and m["sources"] and m["model"].endswith("-realtime"), name
        for line in script[1:]:
            assert line["dir"] in ("server", "client"), (name, line)
            assert "event" in line or "close" in line
            if "event" in line:
                assert isinstance(line["event"]["type"], str)
        created = server_lines(script, "session.created")[0]["session"]
        assert "audio" not in created  # §7.1: no audio object
        manual = m.get("client", {}).get("turn_detection", "server_vad") is None
        for upd in server_lines(script, "session.updated"):
            assert "audio" not in upd["session"]  # §7.2
            # §7.2 as corrected by §7.21: the key is absent exactly when manual mode was asked for
            assert ("turn_detection" in upd["session"]) is not manual, name


# ------------------------------------------------------------------------------------- §7 scenarios
def test_manual_turn_qwen38_trusts_the_request_not_the_echo(replay):
    srv = replay("manual_turn_qwen38.jsonl")
    with open_session(srv) as rt:
        assert "turn_detection" not in rt.echo  # §7.2: the echo says nothing about the mode...
        assert rt.manual is True                # ...the client knows what it asked for
        assert (rt.input_audio_format, rt.output_audio_format) == ("pcm16", "pcm24")  # §7.1 qwen3.8 family
        assert (rt.input_sample_rate, rt.output_sample_rate) == (16000, 24000)
        assert rt.voice == "Chelsie"  # catalog default for qwen3.8
        clip = tone()
        turn = rt.send_audio(clip, realtime=False)
    assert turn.status == "completed", turn.error
    sent = srv.types_received()
    assert sent.index("input_audio_buffer.commit") < sent.index("response.create")
    appended = sum(len(base64.b64decode(e["audio"])) for e in srv.received
                   if e["type"] == "input_audio_buffer.append")
    assert appended == 2 * len(clip[0])  # the speech only: no trailing silence in manual mode
    types = [e.type for e in turn.events]
    # §7.4: the user item and ASR deltas came while audio was still appended (before the commit was sent)
    assert types.index("conversation.item.created") < types.index("input_audio_buffer.committed")
    assert turn.user_transcript == "What is the weather like today?"
    assert turn.assistant_transcript == "Hello! How can I help?"
    assert len(turn.audio) == 3 * 2400 and turn.sample_rate == 24000
    assert turn.marks["commit_sent"] < turn.marks["response_create_sent"] < turn.marks["response_done"]
    assert turn.user_item_id == server_lines(srv.script, "input_audio_buffer.committed")[0]["item_id"]


@pytest.mark.parametrize("silence_ms", [200, 800, 2000, 6000])
def test_vad_turn_ends_after_the_configured_silence(replay, silence_ms):
    srv = replay("vad_turn_long_silence.jsonl")
    with open_session(srv, silence_duration_ms=silence_ms) as rt:
        assert rt.manual is False and rt.silence_duration_ms == silence_ms
        turn = rt.send_audio(tone(), realtime=False)
    assert turn.status == "completed", turn.error
    assert "input_audio_buffer.commit" not in srv.types_received()
    # the replay server ended the turn only once that much trailing silence had arrived
    (fired,) = srv.vad_log
    assert fired["silence_ms"] == silence_ms and fired["trailing_ms"] >= silence_ms
    # ...and the client sent no more than the silence plus its margin (one 100 ms chunk of rounding)
    trailing_sent = (turn.marks["last_audio_sent"] > turn.marks["speech_end_sent"])
    assert trailing_sent
    total_ms = sum(len(e["audio"]) * 3 // 4 for e in srv.received
                   if e["type"] == "input_audio_buffer.append") / 32.0
    assert total_ms <= 200 + 600 + silence_ms + TRAILING_SILENCE_MARGIN_MS + 100
    # §7.14: text empty, sentence in stash, completed empty and after response.created
    types = [e.type for e in turn.events]
    assert types.index("response.created") < types.index("conversation.item.input_audio_transcription.completed")
    assert turn.user_transcript == "What is the weather like today?"
    assert turn.assistant_transcript == "Sure. It is sunny."
    assert turn.marks["speech_end_sent"] < turn.marks["speech_stopped"] < turn.marks["response_done"]


def test_two_turns_per_session(replay):
    srv = replay("two_turns.jsonl")
    with open_session(srv) as rt:
        assert (rt.input_audio_format, rt.output_audio_format) == ("pcm16", "pcm24")
        turns = [rt.send_audio(tone(), realtime=False) for _ in range(2)]
    assert [t.status for t in turns] == ["completed", "completed"], [t.error for t in turns]
    assert turns[0].response_id != turns[1].response_id
    assert turns[0].user_item_id != turns[1].user_item_id
    assert [t.assistant_transcript for t in turns] == ["Sure. It is sunny.", "Tomorrow it will rain."]
    assert all(t.user_transcript == "What is the weather like today?" and t.voice == "Ethan" for t in turns)
    assert len(srv.vad_log) == 2


def test_cancel_ends_cancelled_with_residual_audio(replay):
    srv = replay("cancel_qwen38.jsonl")
    with open_session(srv) as rt:
        def on_event(e):
            if e.type == "response.audio.delta" and "cancel_sent" not in rt._tracker.turn.marks:
                rt.cancel()
        turn = rt.send_text("Please tell me a long story.", on_event=on_event)
    assert turn.status == "cancelled", turn.error
    assert "response.cancel" in srv.types_received()
    done = [e for e in turn.events if e.type == "response.done"][-1]
    assert done.data["response"]["status"] == "cancelled"  # §7.6
    assert "response_done" in turn.marks and turn.usage["output_tokens"] > 0
    assert [n for _, n in turn.audio_chunks] == [2400, 1440]  # one residual delta after the cancel


def test_error_at_generation_fails_the_turn_and_the_session_must_be_reopened(replay):
    srv = replay("error_at_generation.jsonl")
    with open_session(srv, response_timeout=30.0, timeout=30.0) as rt:
        assert rt.echo["voice"] == "Chelsie"  # §7.11: the echo does not validate the voice
        t0 = time.monotonic()
        turn = rt.send_audio(tone(), realtime=False)
        assert time.monotonic() - t0 < 5.0  # at once, not after response_timeout
        assert turn.status == "failed"
        assert "InternalError.Algo.InvalidParameter" in turn.error and "Voice 'Chelsie' is not supported" in turn.error
        assert "response.created" not in [e.type for e in turn.events]
        t0 = time.monotonic()
        with pytest.raises(RealtimeError, match="open a new one") as info:
            rt.update(voice="Tina")  # §7.3: would never be answered
        assert time.monotonic() - t0 < 1.0 and info.value.code == "InternalError.Algo.InvalidParameter"
        with pytest.raises(RealtimeError, match="open a new one"):
            rt.send_audio(tone(), realtime=False)
        with pytest.raises(RealtimeError, match="open a new one"):
            rt.send_text("hello")


VAD_ERROR_SCRIPT = [
    {"meta": {"scenario": "vad_error", "model": "qwen3.5-omni-flash-realtime", "sources": ["§7.3"],
              "client": {"silence_duration_ms": 500}}},
    {"dir": "server", "event": {"type": "session.created", "session": {"id": "sess_x", "voice": "Tina"}}},
    {"dir": "client", "event": {"type": "session.update"}},
    {"dir": "server", "event": {"type": "session.updated", "session": {"id": "sess_x", "voice": "Cherry"}}},
    {"dir": "client", "event": {"type": "input_audio_buffer.append"}, "when": "speech_start"},
    {"dir": "server", "event": {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_u"}},
    {"dir": "client", "event": {"type": "input_audio_buffer.append"}, "when": "speech_end"},
    {"dir": "server", "event": {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": "item_u"}},
    {"dir": "server", "event": {"type": "input_audio_buffer.committed", "item_id": "item_u"}},
    {"dir": "server", "event": {"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value",
                                                          "message": "Voice 'Cherry' is not supported."}}},
]


def test_error_at_generation_in_vad_mode(replay):
    srv = replay(VAD_ERROR_SCRIPT)
    with open_session(srv, voice="Cherry", response_timeout=30.0) as rt:
        t0 = time.monotonic()
        turn = rt.send_audio(tone(), realtime=False)
        assert time.monotonic() - t0 < 5.0
        assert turn.status == "failed" and turn.error == "invalid_value: Voice 'Cherry' is not supported."
        with pytest.raises(RealtimeError, match="open a new one"):
            rt.update(voice="Tina")


def test_idle_close_is_a_clear_outcome(replay):
    srv = replay("idle_close.jsonl")
    with open_session(srv, response_timeout=30.0) as rt:
        t0 = time.monotonic()
        turn = rt.send_audio(tone(), realtime=False)
        assert time.monotonic() - t0 < 5.0
        assert turn.status == "failed" and "response_idle_timeout" in turn.error
        assert "no response was generated for 300 seconds" in turn.error
        assert srv.disconnected.wait(5)
        rt._reader.join(5)
        assert not rt.connected and "1007" in rt.closed_because and "300 seconds" in rt.closed_because
        with pytest.raises(QVError, match="idle"):
            rt.update(voice="Tina")
        with pytest.raises(QVError, match="idle"):
            rt.send_text("hello?")


def test_a_refused_request_naming_its_param_leaves_the_session_usable(replay):
    # §7.18: "Cannot create response while user is speaking." (param response.create) refuses one request
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                  _ev({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value",
                                                 "message": "Cannot create response while user is speaking.",
                                                 "param": "response.create"}}),
                  UPDATE, UPDATED])
    with open_session(srv, turn_detection=None) as rt:
        turn = rt.send_text("hi")
        assert turn.status == "failed" and "user is speaking" in turn.error
        rt.update(voice="Ethan")  # answered: no reopen needed
        assert rt.voice == "Ethan"


IDLE_DURING_UPDATE = [
    {"meta": {"scenario": "idle_update", "model": "qwen3.5-omni-flash-realtime", "sources": ["§7.12"],
              "client": {"turn_detection": None}}},
    {"dir": "server", "event": {"type": "session.created", "session": {"id": "sess_y"}}},
    {"dir": "client", "event": {"type": "session.update"}},
    {"dir": "server", "event": {"type": "session.updated", "session": {"id": "sess_y"}}},
    {"dir": "client", "event": {"type": "session.update"}},
    {"dir": "server", "event": {"type": "error", "error": {"code": "response_idle_timeout", "message":
                                "Your session was closed because no response was generated for 300 seconds."}}},
    {"dir": "server", "close": {"code": 1007, "reason": "Your session was closed because no response was generated "
                                                        "for 300 seconds."}},
]


def test_idle_close_while_updating(replay):
    srv = replay(IDLE_DURING_UPDATE)
    with open_session(srv) as rt:
        with pytest.raises(RealtimeError) as info:
            rt.update(voice="Tina")
        assert info.value.code == "response_idle_timeout"
        with pytest.raises(QVError, match="idle"):
            rt.send_audio(tone(), realtime=False)


def test_idle_close_between_turns_gives_a_failed_turn_naming_it(replay):
    text = "Your session was closed because no response was generated for 300 seconds."
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED,
                  _ev({"type": "error", "error": {"code": "response_idle_timeout", "message": text}}),
                  {"dir": "server", "close": {"code": 1007, "reason": text}}])
    with open_session(srv, turn_detection=None) as rt:
        assert srv.disconnected.wait(5)
        turn = rt.send_text("still there?")
        assert turn.status == "failed" and "response_idle_timeout" in turn.error and "1007" in turn.error
        with pytest.raises(RealtimeError, match="idle"):
            rt.send_text("hello?")


def test_response_done_failed_carries_the_reason(replay):
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                  _ev({"type": "response.created", "response": RESP}),
                  _ev({"type": "response.done", "response": {"id": "resp_m", "status": "failed", "status_details": {
                      "type": "failed", "error": {"code": "server_error", "message": "model overloaded"}}}})])
    with open_session(srv, turn_detection=None) as rt:
        turn = rt.send_text("hi")
    assert turn.status == "failed" and "model overloaded" in turn.error


def test_text_items_with_server_made_ids(replay):
    srv = replay("text_item_replaced_id.jsonl")
    acks = [e["item"]["id"] for e in server_lines(srv.script, "conversation.item.created")
            if e["item"]["role"] == "user"]
    with open_session(srv, response_timeout=5.0) as rt:
        turns = [rt.send_text("Hello there."), rt.send_text("And tomorrow?")]
    assert [t.status for t in turns] == ["completed", "completed"], [t.error for t in turns]
    assert [t.user_item_id for t in turns] == acks  # the server's ids, not the client's
    assert [t.assistant_transcript for t in turns] == ["Hello! How can I help?", "Tomorrow is Friday."]


def test_text_only_reply_as_recorded(replay):
    """§7.21: the echo's full turn_detection is not what the client relies on; a text-only reply whose
    output_item.done has no text and whose usage has text_tokens only is a completed turn with its text."""
    srv = replay("text_only_qwen35.jsonl")
    done = server_lines(srv.script, "response.output_item.done")[0]["item"]["content"]
    usage = server_lines(srv.script, "response.done")[0]["response"]["usage"]
    assert done == [{"type": "text"}] and "audio_tokens" not in usage["output_tokens_details"]
    with open_session(srv, response_timeout=5.0, turn_detection=None) as rt:
        assert "turn_detection" in rt.echo  # the recorded echo: the full default object
        assert rt.manual and rt.effective["turn_detection"] is None  # the request, not the echo
        turn = rt.send_text("Hello there.")
    assert turn.status == "completed", turn.error
    assert turn.assistant_transcript == "Hello! How can I help?" and turn.audio.size == 0
    assert turn.usage == usage


# ------------------------------------------------------------------------------ issue 13 hardening
def test_connect_without_session_created_closes_socket_and_reader(replay):
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}])
    rt = open_session(srv, timeout=0.5)
    with pytest.raises(SessionTimeout, match="session.created"):
        rt.connect()
    assert srv.disconnected.wait(5)  # the server saw the close
    assert not rt._reader.is_alive() and not rt.connected


def test_connect_with_update_error_closes_socket_and_reader(replay):
    srv = replay([
        {"meta": {"model": "qwen3.5-omni-flash-realtime"}},
        {"dir": "server", "event": {"type": "session.created", "session": {"id": "sess_z"}}},
        {"dir": "client", "event": {"type": "session.update"}},
        {"dir": "server", "event": {"type": "error", "error": {"code": "invalid_value", "message": "bad voice",
                                                              "param": "session.voice"}}},
    ])
    with pytest.raises(RealtimeError) as info:
        with open_session(srv, voice="Nobody"):
            pass
    assert info.value.param == "session.voice"
    assert srv.disconnected.wait(5)


CREATED = {"dir": "server", "event": {"type": "session.created", "session": {"id": "sess_m"}}}
UPDATE = {"dir": "client", "event": {"type": "session.update"}}
UPDATED = {"dir": "server", "event": {"type": "session.updated", "session": {"id": "sess_m"}}}
ITEM = {"dir": "client", "event": {"type": "conversation.item.create"}}
RESP = {"id": "resp_m", "status": "in_progress"}


def _ev(event):
    return {"dir": "server", "event": event}


MALFORMED_AT_CONNECT = {
    "created_session_string": [_ev({"type": "session.created", "session": "oops"})],
    "created_session_list": [_ev({"type": "session.created", "session": [1, 2]})],
    "created_then_error_string": [CREATED, UPDATE, _ev({"type": "error", "error": "something broke"})],
    "created_then_error_list": [CREATED, UPDATE, _ev({"type": "error", "error": ["x"]})],
    "created_then_error_null": [CREATED, UPDATE, _ev({"type": "error"})],
    "updated_session_string": [CREATED, UPDATE, _ev({"type": "session.updated", "session": "x"})],
    "junk_before_created": [{"dir": "server", "raw": "[1,2,3]"}, {"dir": "server", "raw": "null"},
                            {"dir": "server", "raw": "{\"no\":\"type\"}"}, {"dir": "server", "raw": "{\"type\":5}"},
                            {"dir": "server", "raw": "not json"}, CREATED, UPDATE, UPDATED],
}
MALFORMED_IN_TURN = {
    "done_response_string": [_ev({"type": "response.created", "response": RESP}),
                             _ev({"type": "response.done", "response": "oops"})],
    "done_response_list": [_ev({"type": "response.created", "response": RESP}),
                           _ev({"type": "response.done", "response": [1]})],
    "done_without_response": [_ev({"type": "response.created", "response": RESP}), _ev({"type": "response.done"})],
    "error_string": [_ev({"type": "error", "error": "the service fell over"})],
    "error_number": [_ev({"type": "error", "error": 42})],
    "created_response_string": [_ev({"type": "response.created", "response": "r"})],
    "odd_fields": [_ev({"type": "conversation.item.created", "item": "x"}),
                   _ev({"type": "conversation.item.input_audio_transcription.delta", "item_id": ["x"], "text": 5}),
                   _ev({"type": "response.created", "response": {"id": ["not", "a", "string"]}}),
                   _ev({"type": "response.created", "response": RESP}),
                   _ev({"type": "response.audio.delta", "response_id": "resp_m", "delta": "%%%not base64"}),
                   _ev({"type": "response.audio.delta", "response_id": "resp_m", "delta": 12}),
                   _ev({"type": "response.audio_transcript.delta", "response_id": "resp_m", "delta": {"a": 1}}),
                   _ev({"type": "response.audio_transcript.done", "response_id": "resp_m", "transcript": 3}),
                   _ev({"type": "response.done", "response": {"id": "resp_m", "status": ["?"], "usage": "x"}})],
    "non_object_json": [{"dir": "server", "raw": "[1]"}, {"dir": "server", "raw": "\"s\""},
                        {"dir": "server", "raw": "{}"}, _ev({"type": "response.created", "response": RESP}),
                        _ev({"type": "response.done", "response": {"id": "resp_m", "status": "completed"}})],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_AT_CONNECT))
def test_malformed_answers_at_connect_are_qvtools_errors(replay, case):
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}] + MALFORMED_AT_CONNECT[case])
    rt = open_session(srv, timeout=2.0)
    try:
        rt.connect()
    except QVError:
        assert srv.disconnected.wait(5)  # a failed connect closes its socket
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"bare {type(exc).__name__}: {exc}")
    else:
        assert case in ("junk_before_created", "updated_session_string")
    finally:
        rt.close()


@pytest.mark.parametrize("case", sorted(MALFORMED_IN_TURN))
def test_malformed_answers_in_a_turn_give_a_turn(replay, case):
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM]
                 + MALFORMED_IN_TURN[case])
    with open_session(srv, turn_detection=None, response_timeout=2.0) as rt:
        try:
            turn = rt.send_text("hi")
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{type(exc).__name__}: {exc}")
    assert turn.status in TURN_STATUSES
    if case.startswith(("done_", "error_", "created_response")):
        assert turn.status == "failed" and turn.error
    if case == "error_string":
        assert turn.error == "None: the service fell over"
    json.dumps(turn.to_dict())  # a malformed event never makes the turn unsaveable


def _fixture_server_events():
    out = []
    for name in FIXTURE_FILES:
        out.extend(server_lines(load_script(name)))
    return out


def test_tracker_survives_mutated_fixture_events():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    events = _fixture_server_events()
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                               | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                               | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)

    @hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
    @hypothesis.given(st.integers(0, len(events) - 1), st.data())
    def run(index, data):
        seq = [json.loads(json.dumps(e)) for e in events[max(0, index - 12): index + 12]]
        target = seq[min(12, len(seq) - 1)] if index >= 12 else seq[index]
        keys = sorted(target)
        key = data.draw(st.sampled_from(keys))
        target[key] = data.draw(json_values)
        if isinstance(target.get("response"), dict) and data.draw(st.booleans()):
            target["response"][data.draw(st.sampled_from(sorted(target["response"]) or ["id"]))] = \
                data.draw(json_values)
        tr = TurnTracker("qwen3.5-omni-flash-realtime", secrets=(KEY,))
        for i, e in enumerate(seq):
            tr.feed(json.dumps(e), float(i))
        turn = tr.result()
        assert turn.status in TURN_STATUSES
        json.dumps(turn.to_dict())

    run()


def test_server_text_is_redacted_everywhere(replay, caplog, tmp_path):
    leak = "bad header Authorization: {auth} (key " + KEY + ")"
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                  _ev({"type": "error", "error": {"code": "invalid_value", "message": leak}}),
                  ])
    caplog.set_level(logging.DEBUG)
    with open_session(srv, turn_detection=None) as rt:
        turn = rt.send_text("hi")
    assert turn.status == "failed" and "bad header" in turn.error
    assert KEY not in turn.error and "***" in turn.error
    turn.save(tmp_path / "t")
    assert KEY not in (tmp_path / "t.json").read_text()
    assert KEY not in caplog.text
    # an error answer at connect (RealtimeError message) and a close reason carrying the key
    srv2 = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE,
                   _ev({"type": "error", "error": {"code": "Bearer " + KEY, "message": leak, "param": KEY}})])
    with pytest.raises(RealtimeError) as info:
        open_session(srv2).connect()
    text = f"{info.value} {info.value.code} {info.value.param} {info.value.message}"
    assert KEY not in text and "bad header" in text
    srv3 = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                   {"dir": "server", "close": {"code": 1008, "reason": "go away {auth}"}}])
    with open_session(srv3, turn_detection=None) as rt:
        turn = rt.send_text("hi")
    assert turn.status == "failed" and "1008" in turn.error and "go away" in turn.error and KEY not in turn.error


def test_oversized_frame_fails_the_turn_and_closes(tmp_path):
    """A 20 MB frame (issue 13: it cost 135 MB) is refused from its header: the client's own allocations stay
    far below the frame size. The replay server runs in a subprocess so that only the client is measured."""
    import subprocess
    import sys
    import tracemalloc
    from pathlib import Path

    script = [{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
              {"dir": "server", "big": 20_000_000}]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in script))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("replay_server.py")), str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # readiness: "PORT <n>"
        assert line.startswith("PORT "), line
        settings = Settings(region="local", base_url=f"http://127.0.0.1:{int(line.split()[1])}", api_key=KEY)
        with RealtimeSession(settings, "qwen3.5-omni-flash-realtime", turn_detection=None, timeout=10,
                             response_timeout=10.0) as rt:
            tracemalloc.start()
            try:
                turn = rt.send_text("hi")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert turn.status == "failed" and "max_frame_bytes" in turn.error and "20,000,000" in turn.error
            assert not rt.connected
        assert peak < 2_000_000  # the 20 MB payload was never read into memory
    finally:
        proc.stdin.close()
        proc.wait(20)


def test_frame_claiming_a_terabyte_fails_at_once(replay):
    # issue 13: "a frame claiming 1 TB streams until the response timeout"
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                  {"dir": "server", "claim": 1 << 40}])
    with open_session(srv, turn_detection=None, response_timeout=30.0) as rt:
        t0 = time.monotonic()
        turn = rt.send_text("hi")
        assert time.monotonic() - t0 < 5.0
    assert turn.status == "failed" and "1,099,511,627,776 bytes" in turn.error


def test_max_frame_bytes_is_configurable(replay):
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}, CREATED, UPDATE, UPDATED, ITEM,
                  {"dir": "server", "big": 200_000},
                  _ev({"type": "response.created", "response": RESP}),
                  _ev({"type": "response.done", "response": {"id": "resp_m", "status": "completed"}})])
    with open_session(srv, turn_detection=None, max_frame_bytes=1 << 20) as rt:
        assert rt.send_text("hi").status == "completed"
    with pytest.raises(QVError):
        open_session(srv, max_frame_bytes=10)


def test_handshake_429_keeps_retry_after(replay):
    body = json.dumps({"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded " + KEY}).encode()
    srv = replay([{"meta": {"model": "qwen3.5-omni-flash-realtime"}}], refuse=(429, {"Retry-After": "7"}, body))
    with pytest.raises(APIError) as info:
        open_session(srv).connect()
    assert info.value.status == 429 and info.value.code == "Throttling.RateQuota"
    assert info.value.retry_after == 7.0 and info.value.retryable
    assert KEY not in str(info.value)
