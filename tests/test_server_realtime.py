"""The local service's realtime WebSocket at the protocol level (bare websocket-client, literal events)."""

import base64
import json

import numpy as np
import pytest

from qvtools.audio import resample, to_pcm16
from qvtools.server import LocalService, ServiceConfig
from realtime_support import FLASH, PLUS, RawClient, shared_service, utterance


@pytest.fixture(scope="module")
def svc():
    return shared_service()


@pytest.fixture(scope="module")
def pcm16k():
    x, sr = utterance()
    return to_pcm16(resample(x, sr, 16000))


def append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


def stream(c: RawClient, pcm: bytes, chunk=3200) -> None:
    for i in range(0, len(pcm), chunk):
        c.send(append(pcm[i:i + chunk]))


def test_session_created_first_and_update_before_reading_it(svc):
    c = RawClient(svc, PLUS)
    try:
        # §5.5: accept session.update before the client has read session.created
        c.send({"type": "session.update", "session": {"modalities": ["audio", "text"], "voice": None,
                                                      "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                                                      "input_audio_transcription": {"model": None}}})
        created = c.recv()
        assert created["type"] == "session.created"
        s = created["session"]
        assert s["id"].startswith("sess_") and s["model"] == PLUS and s["voice"] == "Tina"
        assert s["turn_detection"]["type"] == "server_vad" and s["modalities"] == ["text", "audio"]
        assert "SIMULATED" in s["qvtools"]["note"]
        updated = c.recv()
        assert updated["type"] == "session.updated" and updated["session"]["id"] == s["id"]
        assert updated["session"]["input_audio_transcription"] == {"model": "qwen3-asr-flash-realtime"}
    finally:
        c.close()


BAD_INPUTS = [
    ("{not json", "invalid_json", None),
    ('{"type":"input_audio_buffer.explode"}', "invalid_event", "type"),
    ('{"no_type":1}', "invalid_event", "type"),
    ('{"type":"input_audio_buffer.append","audio":"@@@not base64@@@"}', "invalid_value", "audio"),
    (append(b"\x01\x02\x03"), "invalid_value", "audio"),
    ('{"type":"input_audio_buffer.commit"}', "input_audio_buffer_commit_empty", None),
    ('{"type":"response.cancel"}', "response_cancel_not_active", None),
    ('{"type":"input_image_buffer.append","image":"/9j/4AAQ"}', "invalid_value", "image"),
    ('{"type":"session.update","session":"voice=Tina"}', "invalid_value", "session"),
    ('{"type":"session.update","session":{"voice":"Nobody"}}', "invalid_value", "session.voice"),
    ('{"type":"session.update","session":{"modalities":["audio"]}}', "invalid_value", "session.modalities"),
    ('{"type":"conversation.item.create","item":{"type":"mystery"}}', "invalid_value", "item.type"),
]


def test_bad_input_gives_errors_and_the_session_continues(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        for text, code, param in BAD_INPUTS:
            c.send(text)
            e = c.recv()
            assert e["type"] == "error", (text, e)
            assert e["error"]["code"] == code and e["error"].get("param") == param, (text, e)
            assert e["error"]["type"] == "invalid_request_error" and e["error"]["message"]
        c.ws.send_binary(b"\x00\x01")
        assert c.recv()["type"] == "error"
        voice = '{"type":"session.update","session":{"voice":"Nobody"}}'
        c.send(voice)
        assert c.recv()["error"]["message"] == "Voice 'Nobody' is not supported."
        c.send({"type": "session.update", "session": {"voice": "Ethan"}})
        assert c.recv()["type"] == "session.updated"
    finally:
        c.close()


@pytest.mark.slow
def test_manual_response_order_chunks_interleaving_and_trace(svc, pcm16k):
    c = RawClient(svc, PLUS)
    try:
        sid = c.until("session.created")[0]["session"]["id"]
        c.send({"type": "session.update", "session": {
            "turn_detection": None, "audio": {"output": {"format": {"type": "pcm", "sample_rate": 16000}}}}})
        c.until("session.updated")
        stream(c, pcm16k)
        c.send({"type": "input_audio_buffer.commit"})
        c.send({"type": "response.create", "response": {"instructions": None}})
        c.send({"type": "response.create"})  # while one is active
        events = c.until("response.done", timeout=60)
    finally:
        c.close()
    types = [e["type"] for e in events]
    assert types[:2] == ["input_audio_buffer.committed", "conversation.item.created"]
    err = [e for e in events if e["type"] == "error"]
    assert len(err) == 1 and err[0]["error"]["code"] == "conversation_already_has_active_response"
    resp = [t for t in types if t.startswith("response.") or t == "conversation.item.created"][1:]
    assert resp[:4] == ["response.created", "response.output_item.added", "conversation.item.created",
                        "response.content_part.added"]
    assert resp[-5:] == ["response.audio_transcript.done", "response.audio.done", "response.content_part.done",
                         "response.output_item.done", "response.done"]
    deltas = resp[4:-5]
    assert set(deltas) == {"response.audio.delta", "response.audio_transcript.delta"}
    first_audio = deltas.index("response.audio.delta")
    assert "response.audio_transcript.delta" in deltas[first_audio:]  # interleaved, not all text first
    audio = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"]
    assert all(len(a) == 3200 for a in audio[:-1]) and 0 < len(audio[-1]) <= 3200  # 100 ms at 16 kHz
    rid = events[types.index("response.created")]["response"]["id"]
    assert all(e.get("response_id") == rid for e in events if e["type"].startswith("response.")
               and "response_id" in e)
    assert all(e["output_index"] == 0 and e["content_index"] == 0 for e in events if "content_index" in e
               and e["type"].startswith("response."))
    text = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == text
    u = done["usage"]
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    out_s = sum(len(a) for a in audio) / 2 / 16000
    assert u["output_tokens_details"]["audio_tokens"] == int(np.ceil(max(out_s, 1.0) * 12.5))  # §4.6 qwen3.5
    in_s = len(pcm16k) / 2 / 16000
    assert u["input_tokens_details"]["audio_tokens"] == int(np.ceil(in_s * 7))
    # every received event was recorded in the trace, in order, with its response id
    trace = [r for r in svc.trace.records(sid)]
    sent = [r[1] for r in trace]
    assert sent[0] == "session.created"
    tail = sent[len(sent) - len(types):]
    assert tail == types
    assert [r[2] for r in trace if r[1] == "response.audio.delta"] == [rid] * len(audio)


def test_text_only_response(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}})
        c.until("session.updated")
        c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                             "content": [{"type": "input_text", "text": "Hi!"}]}})
        assert c.recv()["type"] == "conversation.item.created"
        c.send({"type": "response.create"})
        events = c.until("response.done")
    finally:
        c.close()
    types = [e["type"] for e in events]
    assert "response.audio.delta" not in types and "response.text.delta" in types
    assert types[-4:] == ["response.text.done", "response.content_part.done", "response.output_item.done",
                          "response.done"]
    assert events[-1]["response"]["output"][0]["content"][0]["type"] == "text"


def test_vad_honours_silence_duration_and_prefix_padding(svc, pcm16k):
    def run(td, trailing_ms):
        c = RawClient(svc, PLUS)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"turn_detection": dict(td, create_response=False)}})
            c.until("session.updated")
            stream(c, pcm16k + bytes(32 * trailing_ms))
            c.send({"type": "conversation.item.create", "item": {  # a marker: answered after the audio
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "marker"}]}})
            return c.until("conversation.item.created", timeout=30)
        finally:
            c.close()

    short = run({"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}, 1000)
    types = [e["type"] for e in short]
    assert types[:3] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed"]
    assert "response.created" not in types  # create_response false
    # 1000 ms of trailing silence never reaches a 1500 ms silence_duration: no speech_stopped
    long = run({"type": "server_vad", "silence_duration_ms": 1500, "prefix_padding_ms": 0}, 1000)
    types_long = [e["type"] for e in long]
    assert "input_audio_buffer.speech_started" in types_long
    assert "input_audio_buffer.speech_stopped" not in types_long
    # prefix padding moves audio_start_ms earlier by the padding (onset after 300 ms of lead-in silence)
    start_pad = short[0]["audio_start_ms"]
    start_nopad = long[0]["audio_start_ms"]
    assert start_nopad - start_pad == pytest.approx(300, abs=40)
    assert short[0]["item_id"] == short[1]["item_id"] == short[2]["item_id"]


def test_finish_closes_with_1000(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.finish"})
        assert c.recv()["type"] == "session.finished"
        import websocket

        op, frame = c.ws.recv_data_frame(True)
        assert op == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 1000
    finally:
        c.close()


@pytest.mark.slow
def test_idle_timeout_and_session_cap(tmp_path):
    cfg = ServiceConfig(realtime_idle_timeout_s=0.3, realtime_latency="none")
    with LocalService(data_dir=tmp_path / "a", config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        c.until("session.created")
        e = c.until("error")[-1]
        assert e["error"]["code"] == "idle_timeout" and e["error"]["type"] == "server_error"
        c.close()
    cfg = ServiceConfig(realtime_max_session_s=0.3)
    with LocalService(data_dir=tmp_path / "b", config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        c.until("session.created")
        assert c.until("error")[-1]["error"]["code"] == "session_expired"
        c.close()


@pytest.mark.slow
def test_cancel_flags(tmp_path):
    # simulated latency on, so the cancel lands before any output; text-only keeps it cheap
    for done_on_cancel in (True, False):
        cfg = ServiceConfig(realtime_latency="simulated", realtime_response_done_on_cancel=done_on_cancel)
        with LocalService(data_dir=tmp_path / str(done_on_cancel), config=cfg) as svc:
            c = RawClient(svc, FLASH, timeout=20)
            try:
                events = _cancel_early(c)
            finally:
                c.close()
            types = [e["type"] for e in events]
            assert ("response.done" in types) is done_on_cancel
            if done_on_cancel:
                done = events[types.index("response.done")]["response"]
                assert done["status"] == "incomplete"


def _cancel_early(c):
    """response.create, wait for response.created, cancel, then two updates as ordering markers."""
    c.until("session.created")
    c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}})
    c.until("session.updated")
    c.send({"type": "response.create"})
    c.until("response.created")
    c.send({"type": "response.cancel"})
    c.send({"type": "session.update", "session": {"voice": "Ethan"}})
    c.send({"type": "session.update", "session": {"voice": "Serena"}})
    events = []
    while not (events and events[-1]["type"] == "session.updated"
               and events[-1]["session"]["voice"] == "Serena"):
        events.append(c.recv())
    return events
