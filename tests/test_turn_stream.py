"""The public streaming-turn API (issue 19 item 5): ``RealtimeSession.begin_turn()`` -> ``TurnHandle``
(``append(pcm, speech=)``, ``poll(timeout)``, ``finish()``, ``discard()``), over real sockets on 127.0.0.1
(port 0): the real local service (slow tier: speech recognition and synthesis) and the replay server of the
observed cloud shapes (fast tier)."""

from __future__ import annotations

import ast
import base64
import inspect
import time

import numpy as np
import pytest

from qvtools.audio import resample, to_pcm16
from qvtools.config import Settings
from qvtools.errors import ConfigError, RealtimeError
from qvtools.realtime import RealtimeSession
from qvtools.realtime.streaming import TurnHandle
from realtime_support import FLASH, settings_for, shared_service, utterance
from replay_server import ReplayServer

KEY = "sk-replay-SECRET-0123456789abcdef"


@pytest.fixture
def replay():
    servers = []

    def start(script):
        srv = ReplayServer(script).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def _tone(seconds=0.6, rate=16000, lead=0.2):
    t = np.arange(int(seconds * rate)) / rate
    return np.concatenate([np.zeros(int(lead * rate)), 0.3 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)


def _replay_session(srv, **kw):
    return RealtimeSession(Settings(region="local", base_url=srv.url, api_key=KEY), "qwen3.8-omni-flash-realtime",
                           timeout=5.0, response_timeout=5.0, **kw)


# ------------------------------------------------------------------------------------------ fast tier
def test_push_to_talk_streamed_piece_by_piece_against_the_observed_cloud_shape(replay):
    """§7.4 manual turn (qwen3.8): float pieces and PCM16 bytes, events seen while appending, commit +
    response.create at finish; the Turn is the session's, and a finished handle takes no more audio."""
    srv = replay("manual_turn_qwen38.jsonl")
    x = _tone()
    seen = []
    with _replay_session(srv, turn_detection=None) as rt:
        handle = rt.begin_turn(on_event=seen.append)
        assert isinstance(handle, TurnHandle) and handle.manual and not handle.done
        polled = []
        for i in range(0, x.size, 1600):
            piece = x[i:i + 1600]
            sent_at = handle.append(piece if i % 3200 else to_pcm16(piece), speech=True)
            assert sent_at is not None and handle.turn.marks["speech_end_sent"] == sent_at
            polled += handle.poll(0.02)
        assert handle.append(np.zeros(0, np.float32)) is None  # nothing to send
        turn = handle.finish()
        assert handle.finish() is turn and rt.turns == [turn]
        with pytest.raises(RealtimeError, match="begin a new one"):
            handle.append(b"\x00\x00")
    assert turn.status == "completed", turn.error
    assert turn.assistant_transcript == "Hello! How can I help?"
    appended = sum(len(base64.b64decode(e["audio"])) for e in srv.received if e["type"] == "input_audio_buffer.append")
    assert appended == 2 * x.size  # every sample, once; no trailing silence in push-to-talk
    types = srv.types_received()
    assert types.index("input_audio_buffer.commit") < types.index("response.create")
    # §7.4: the service answers while audio is still appended; poll() returned those events in order
    assert "conversation.item.created" in [e.type for e in polled]
    assert [e.type for e in seen][:len(polled)] == [e.type for e in polled]
    m = turn.marks
    assert m["first_audio_sent"] < m["speech_end_sent"] == m["last_audio_sent"] < m["commit_sent"]


def test_server_vad_finish_sends_the_trailing_silence(replay):
    """§4.5 a: with server VAD, finish() sends the silence the VAD needs (silence window + margin), paced or
    fast, and stops once the reply ends; speech_end_sent is the last chunk appended with speech=True."""
    srv = replay("vad_turn_long_silence.jsonl")
    with _replay_session(srv, silence_duration_ms=800) as rt:
        handle = rt.begin_turn()
        assert handle.manual is False
        x = _tone()
        for i in range(0, x.size, 1600):
            handle.append(x[i:i + 1600], speech=True)
        speech_end = handle.turn.marks["speech_end_sent"]
        turn = handle.finish(realtime=False)
    assert turn.status == "completed", turn.error
    assert "input_audio_buffer.commit" not in srv.types_received()
    (fired,) = srv.vad_log
    assert fired["silence_ms"] == 800 and fired["trailing_ms"] >= 800
    assert turn.marks["speech_end_sent"] == speech_end < turn.marks["last_audio_sent"]


def test_bad_audio_is_refused_and_the_turn_goes_on(replay):
    srv = replay("manual_turn_qwen38.jsonl")
    with _replay_session(srv, turn_detection=None) as rt:
        handle = rt.begin_turn()
        with pytest.raises(ConfigError, match="2-byte samples"):
            handle.append(b"\x00\x00\x00")
        with pytest.raises(ConfigError, match="mono"):
            handle.append(np.zeros((2, 160), np.float32))
        with pytest.raises(ConfigError, match="chunk_ms"):
            handle.finish(chunk_ms=0)
        assert "first_audio_sent" not in handle.turn.marks  # nothing of the refused input was sent
        handle.append(_tone())
        turn = handle.finish()
    assert turn.status == "completed", turn.error


def test_a_closed_connection_gives_a_failed_turn_not_a_hang(replay):
    srv = replay("manual_turn_qwen38.jsonl")
    rt = _replay_session(srv, turn_detection=None).connect()
    rt.close()
    t0 = time.monotonic()
    handle = rt.begin_turn()
    assert handle.done and handle.append(_tone()) is None
    turn = handle.finish(timeout=30)
    assert time.monotonic() - t0 < 5 and turn.status == "failed" and "clos" in turn.error
    assert KEY not in turn.error


def test_discard_records_nothing_and_the_session_goes_on(replay):
    srv = replay("two_turns.jsonl")
    with _replay_session(srv) as rt:
        rt.begin_turn().discard()  # a microphone Start .. Stop with no audio
        assert rt.turns == []
        turn = rt.send_audio((_tone(), 16000), realtime=False)
    assert turn.status == "completed", turn.error
    assert rt.turns == [turn]


def _private_uses(cls) -> list[str]:
    """``owner._name`` accesses in a class's source where the owner is not ``self``."""
    private = []
    for node in ast.walk(ast.parse(inspect.getsource(cls))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            # self._x is the widget's own state; anything else (session, handle, s, st["turn"]) must be public
            if not (isinstance(owner, ast.Name) and owner.id == "self"):
                private.append(f"{ast.unparse(owner)}.{node.attr}")
    return private


def test_live_talk_drives_the_session_through_public_methods_only():
    """Issue 19 item 5: LiveTalk (and the keep-alive it uses) calls no private method or attribute of the
    session or the turn handle."""
    pytest.importorskip("anywidget")
    from qvtools import mic
    from qvtools.realtime import keepalive

    assert _private_uses(mic.LiveTalk) == []
    assert _private_uses(keepalive.KeepAlive) == []


# ------------------------------------------------------------------------------------------ slow tier
@pytest.mark.slow
@pytest.mark.parametrize("manual", [False, True], ids=["server_vad", "push_to_talk"])
def test_streamed_turn_against_the_local_service(manual):
    """A microphone-like stream (100 ms float pieces at the session rate, paced) into the real local service;
    the turn is the same Turn a file-driven send_audio gives, with the reply heard while polling."""
    x, sr = utterance()
    with RealtimeSession(settings_for(shared_service()), FLASH, voice="Ethan",
                         turn_detection=None if manual else "server_vad") as rt:
        y = resample(x, sr, rt.input_sample_rate).astype(np.float32)
        step = rt.input_sample_rate // 10
        deltas = []
        handle = rt.begin_turn(on_event=lambda e: e.type == "response.audio.delta" and deltas.append(e))
        start = time.perf_counter()
        for k, i in enumerate(range(0, y.size, step)):
            handle.append(y[i:i + step], speech=True)
            handle.poll(start + (k + 1) * 0.1 - time.perf_counter())
        turn = handle.finish(timeout=120)
        again = rt.send_audio((x, sr), realtime=False)  # the file path after a streamed turn, same session
    assert turn.status == "completed", turn.error
    assert "weather" in (turn.user_transcript or "").lower()
    assert deltas and turn.audio.size > 0 and rt.turns == [turn, again]
    m = turn.marks
    assert m["first_audio_sent"] < m["speech_end_sent"] <= m["last_audio_sent"]
    # push-to-talk: every byte is sent before the commit asks for the reply; server VAD: the service may answer
    # while the trailing silence is still being sent (seen under load), but never before the speech ended
    assert m["speech_end_sent"] < m["response_created"]
    if manual:
        assert m["last_audio_sent"] < m["response_created"]
    assert ("commit_sent" in m) is manual and ("speech_stopped" in m) is not manual
    assert again.status == "completed", again.error
    assert again.user_item_id != turn.user_item_id
