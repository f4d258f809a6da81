"""The local service's realtime WebSocket at the protocol level (bare websocket-client, literal events)."""

import base64
import json
import time

import numpy as np
import pytest

from qvtools.audio import resample, to_pcm16
from qvtools.realtime import events as ev
from qvtools.server import session_rules as sr
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
        # §7.1: the observed key set (plus the qvtools metadata), no audio object
        assert set(s) - {"qvtools"} == set(sr.SESSION_CREATED_KEYS) and "audio" not in s
        assert (s["input_audio_format"], s["output_audio_format"]) == ("pcm", "pcm")
        updated = c.recv()
        assert updated["type"] == "session.updated" and updated["session"]["id"] == s["id"]
        assert updated["session"]["input_audio_transcription"] == {"model": "qwen3-asr-flash-realtime"}
        # §7.2: the observed echo keys; no turn_detection, no audio, no metadata
        assert set(updated["session"]) == set(sr.SESSION_UPDATED_KEYS)
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
    ('{"type":"session.update","session":{"voice":""}}', "invalid_value", "session.voice"),
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
    # §7.4: the user item is created while audio is still appended (at the first append), then committed
    assert types[0] == "conversation.item.created" and events[0]["item"]["role"] == "user"
    user_id = events[0]["item"]["id"]
    assert types.index("input_audio_buffer.committed") > 0 and types.count("conversation.item.created") == 2
    assert events[types.index("input_audio_buffer.committed")]["item_id"] == user_id
    deltas_in = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    assert deltas_in and all(d["text"] == "" and d["stash"] for d in deltas_in)  # §7.14 text/stash shape
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
    assert deltas[0] == "response.audio_transcript.delta"  # §7.5: transcript before the first audio delta
    assert "response.audio_transcript.delta" in deltas[first_audio:]  # interleaved, not all text first
    assert events[types.index("conversation.item.created", 1)]["previous_item_id"] == user_id
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


def test_session_language_extension_is_validated_not_echoed_and_sets_the_reply_language(svc):
    # issue 10: input_audio_transcription.language is a qvtools extension (qvtools/server/turn_language.py)
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"input_audio_transcription": {"language": "xx"}}})
        err = c.until("error", "session.updated")[-1]
        assert err["type"] == "error" and err["error"]["param"] == "session.input_audio_transcription.language"
        c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None,
                                                      "input_audio_transcription": {"language": "zh"}}})
        echo = c.until("session.updated")[-1]["session"]
        assert "language" not in json.dumps(echo)  # §7.2 echoes the transcription model only
        c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "你能推荐一本关于天文学的好书吗"}]}})
        c.send({"type": "response.create"})
        done = c.until("response.done", timeout=60)[-1]
    finally:
        c.close()
    reply = done["response"]["output"][0]["content"][0]["text"]
    assert "好书" in reply and " " not in reply  # Mandarin, refers back to the user's words


def test_a_text_turn_in_a_cjk_script_is_answered_in_that_language(svc):
    from qvtools.lang import script_language

    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}})
        c.until("session.updated")
        c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "駅の近くに新しいパン屋さんができました。"}]}})
        c.send({"type": "response.create"})
        done = c.until("response.done", timeout=60)[-1]
    finally:
        c.close()
    reply = done["response"]["output"][0]["content"][0]["text"]
    assert script_language(reply) == "ja" and "パン屋" in reply, reply


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


def _close_frame(c):
    import websocket

    op, frame = c.ws.recv_data_frame(True)
    assert op == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode("utf-8")


@pytest.mark.slow
def test_idle_close_as_observed_and_the_session_cap(tmp_path):
    # §7.12: error response_idle_timeout, then close 1007 with the same text as the reason
    cfg = ServiceConfig(realtime_idle_timeout_s=0.3, realtime_latency="none", warm_speech=False)
    with LocalService(data_dir=tmp_path / "a", config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        c.until("session.created")
        e = c.until("error")[-1]
        assert e["error"]["code"] == "response_idle_timeout"
        assert e["error"]["message"] == "Your session was closed because no response was generated for 0.3 seconds."
        assert _close_frame(c) == (1007, e["error"]["message"])
        c.close()
    # the earlier guess stays a choice: any client frame resets it, idle_timeout, close 1000
    cfg = ServiceConfig(realtime_idle_timeout_s=0.3, realtime_latency="none", realtime_idle_close="legacy",
                        warm_speech=False)
    with LocalService(data_dir=tmp_path / "b", config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        c.until("session.created")
        e = c.until("error")[-1]
        assert e["error"]["code"] == "idle_timeout" and e["error"]["type"] == "server_error"
        assert _close_frame(c)[0] == 1000
        c.close()
    cfg = ServiceConfig(realtime_max_session_s=0.3, warm_speech=False)
    with LocalService(data_dir=tmp_path / "c", config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        c.until("session.created")
        assert c.until("error")[-1]["error"]["code"] == "session_expired"
        c.close()


@pytest.mark.perf  # wall clock: bounds relative to the configured idle timeout
def test_idle_close_counts_from_the_last_response_not_from_client_frames(tmp_path):
    import websocket

    cfg = ServiceConfig(realtime_idle_timeout_s=1.0, realtime_latency="none", warm_speech=False)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        try:
            c.until("session.created")
            t0 = time.monotonic()
            e = None
            while time.monotonic() - t0 < 5.0:  # a client frame every ~0.1 s does not count (§7.12)
                c.send({"type": "input_audio_buffer.clear"})
                e = c.recv()
                if e["type"] == "error":
                    break
                assert e["type"] == "input_audio_buffer.cleared"
                c.ws.settimeout(0.1)
                try:
                    e = c.recv()  # the idle error, if it comes between two frames
                    break
                except websocket.WebSocketTimeoutException:
                    pass
                finally:
                    c.ws.settimeout(10)
            elapsed = time.monotonic() - t0
            assert e["type"] == "error" and e["error"]["code"] == "response_idle_timeout"
            assert 0.9 < elapsed < 3.0
        finally:
            c.close()


@pytest.mark.slow
@pytest.mark.parametrize("status", ["cancelled", "incomplete"])
def test_cancel_status_is_cancelled_by_default_and_configurable(tmp_path, status):
    # §7.6 (observed): response.done with status cancelled; "incomplete" was the earlier guess
    kw = {} if status == "cancelled" else {"realtime_cancel_status": "incomplete"}
    cfg = ServiceConfig(realtime_latency="simulated", warm_speech=False, **kw)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=20)
        try:
            events = _cancel_early(c)
        finally:
            c.close()
    types = [e["type"] for e in events]
    done = events[types.index("response.done")]["response"]
    assert done["status"] == status and "status_details" not in done
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]


@pytest.mark.slow
def test_no_response_done_on_cancel_by_flag(tmp_path):
    cfg = ServiceConfig(realtime_latency="simulated", realtime_response_done_on_cancel=False, warm_speech=False)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=20)
        try:
            events = _cancel_early(c)
        finally:
            c.close()
    assert "response.done" not in [e["type"] for e in events]


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


# -- catalog families and model names (issue 9 item 4) -------------------------------------------------------

@pytest.mark.parametrize("model,voice,fin,fout", [
    ("qwen3.8-omni-flash-realtime", "Chelsie", "pcm16", "pcm24"),
    ("qwen3-omni-flash-realtime", "Cherry", "pcm16", "pcm24"),
])
def test_catalog_family_sessions_work_with_their_formats(svc, model, voice, fin, fout):
    c = RawClient(svc, model)
    try:
        s = c.until("session.created")[-1]["session"]
        assert (s["voice"], s["input_audio_format"], s["output_audio_format"]) == (voice, fin, fout)
        assert s["input_audio_transcription"] == {"model": "gummy-realtime-v1"}
        c.send({"type": "session.update", "session": {"turn_detection": None, "input_audio_format": "pcm16",
                                                      "output_audio_format": "pcm16"}})
        upd = c.until("session.updated")[-1]["session"]
        assert (upd["input_audio_format"], upd["output_audio_format"]) == (fin, fout)
        c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                             "content": [{"type": "input_text", "text": "Hi!"}]}})
        c.send({"type": "response.create"})
        events = c.until("response.done", timeout=60)
    finally:
        c.close()
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["voice"] == voice and done["output_audio_format"] == fout
    assert any(e["type"] == "response.audio.delta" for e in events)


def test_any_omni_realtime_name_is_accepted_unless_configured(tmp_path):
    import websocket

    def handshake(svc, model):
        try:
            ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={model}", timeout=10,
                                             header=[f"Authorization: Bearer {svc.api_key}"])
        except websocket.WebSocketBadStatusException as exc:
            return exc.status_code, json.loads(exc.resp_body)["code"]
        created = json.loads(ws.recv())
        ws.close()
        return 101, created["session"]["voice"]

    with LocalService(data_dir=tmp_path / "a", config=ServiceConfig(warm_speech=False)) as svc:
        assert handshake(svc, "qwen4-omni-ultra-realtime-2027-01-01") == (101, "Tina")  # §7.8, qwen3.5 defaults
        assert handshake(svc, "gpt-4o-realtime") == (404, "ModelNotFound")
    cfg = ServiceConfig(warm_speech=False, realtime_reject_unknown_model=True)
    with LocalService(data_dir=tmp_path / "b", config=cfg) as svc:
        assert handshake(svc, "qwen4-omni-ultra-realtime") == (404, "ModelNotFound")
        assert handshake(svc, "qwen3.8-omni-flash-realtime-latest") == (101, "Chelsie")


# -- unusable voices: accepted at session.update, refused at generation (§7.3, §7.11) ------------------------

VOICE_ERROR = "<400> InternalError.Algo.InvalidParameter: Voice '{}' is not supported."


def test_unusable_builtin_voice_errors_at_response_create_and_later_updates_go_unanswered(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"voice": "Cherry", "modalities": ["text"]}})
        assert c.recv()["session"]["voice"] == "Cherry"  # §7.11: the echo does not validate it
        c.send({"type": "response.create", "event_id": "event_trigger"})
        e = c.recv()
        assert e["type"] == "error" and e["error"] == {
            "type": "invalid_request_error", "code": "InternalError.Algo.InvalidParameter",
            "message": VOICE_ERROR.format("Cherry"), "param": None}
        # §7.3: no response.created, and a later session.update gets no answer (the clear is the marker)
        c.send({"type": "session.update", "session": {"voice": "Tina"}})
        c.send({"type": "input_audio_buffer.clear"})
        assert c.recv()["type"] == "input_audio_buffer.cleared"
    finally:
        c.close()


def test_unknown_clone_errors_at_the_vad_commit(svc, pcm16k):
    clone = "qwen-omni-vc-nobody-voice-20260101000000000-abcd"
    c = RawClient(svc, PLUS)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"voice": clone}})
        assert c.until("session.updated")[-1]["session"]["voice"] == clone
        stream(c, pcm16k + bytes(32 * 1500))
        events = c.until("error", timeout=30)
        c.send({"type": "input_audio_buffer.clear"})
        events += c.until("input_audio_buffer.cleared")
    finally:
        c.close()
    types = [e["type"] for e in events]
    assert "input_audio_buffer.committed" in types and "response.created" not in types
    assert events[types.index("error")]["error"]["message"] == VOICE_ERROR.format(clone)


def test_voice_error_at_update_stays_a_choice(tmp_path):
    cfg = ServiceConfig(realtime_voice_error_timing="update", realtime_latency="none", warm_speech=False)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"voice": "Nobody"}})
            e = c.recv()
            assert e["type"] == "error" and e["error"]["param"] == "session.voice"
            assert e["error"]["message"] == "Voice 'Nobody' is not supported."
            c.send({"type": "session.update", "session": {"voice": "Ethan"}})
            assert c.recv()["type"] == "session.updated"
        finally:
            c.close()


# -- text items (§7.13) -----------------------------------------------------------------------------------

def test_text_items_get_server_ids_completed_status_and_previous_item_id(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "One."}]}
        c.send({"type": "conversation.item.create", "item": dict(item, id="item_mine")})
        first = c.recv()
        c.send({"type": "conversation.item.create", "item": dict(item, id="item_mine2")})
        second = c.recv()
    finally:
        c.close()
    assert first["type"] == second["type"] == "conversation.item.created"
    assert first["item"]["id"] != "item_mine" and first["item"]["id"].startswith("item_")
    assert first["item"]["status"] == second["item"]["status"] == "completed"
    assert "previous_item_id" not in first and second["previous_item_id"] == first["item"]["id"]


# -- issue 13: lone surrogates and free-text limits -------------------------------------------------------

SURROGATE_FRAMES = [  # raw frames: "\ud800" as a JSON escape is valid JSON and valid UTF-8 on the wire
    ('{"type":"session.update","session":{"voice":"Ti\\ud800na"}}', "session.voice", True),
    ('{"type":"session.update","session":{"instructions":"Be \\ud800 brief."}}', "session.instructions", True),
    ('{"type":"conversation.item.create","item":{"type":"message","role":"user","content":'
     '[{"type":"input_text","text":"\\udfff"}]}}', "item.content[0].text", True),
    ('{"type":"input_audio_buffer.clear","event_id":"event_\\ud800"}', "event_id", False),
    ('{"type":"input_audio_buffer.\\ud800"}', "type", True),
    ('{"type":"response.create","response":{"instructions":"\\ud800"}}', "response.instructions", True),
]


def test_lone_surrogates_get_the_documented_error_and_the_session_continues(svc):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        for raw, param, _echo in SURROGATE_FRAMES:
            c.send(raw.replace('"type":', '"event_id":"event_s1","type":', 1) if _echo else raw)
            e = c.recv()
            assert e["type"] == "error", (raw, e)
            err = e["error"]
            assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "invalid_value", param)
            assert "surrogate" in err["message"]
            assert err.get("event_id") == ("event_s1" if _echo else None)
        c.send({"type": "session.update", "session": {"instructions": "Be brief. \U0001F600"}})
        assert c.recv()["session"]["instructions"] == "Be brief. \U0001F600"  # a valid pair is text
    finally:
        c.close()


def test_free_text_limits_name_the_field_and_the_session_continues(tmp_path):
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False, realtime_max_instructions_chars=100,
                        realtime_max_text_chars=50, realtime_max_name_chars=40)
    cases = [
        ({"type": "session.update", "session": {"instructions": "x" * 101}}, "session.instructions"),
        ({"type": "session.update", "session": {"voice": "V" * 41}}, "session.voice"),
        ({"type": "response.create", "response": {"instructions": "y" * 101}}, "response.instructions"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "a" * 30}, {"type": "input_text", "text": "b" * 30}]}},
         "item.content[1].text"),
        ({"type": "input_audio_buffer.clear", "event_id": "e" * 41}, "event_id"),
    ]
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH)
        try:
            c.until("session.created")
            for event, param in cases:
                c.send(event)
                e = c.recv()
                assert e["type"] == "error" and e["error"]["param"] == param, (event, e)
                assert e["error"]["code"] == "invalid_value" and "too long" in e["error"]["message"]
                assert "event_id" not in e["error"] or len(e["error"]["event_id"]) <= 40
            c.send({"type": "session.update", "session": {"instructions": "x" * 100}})
            assert c.recv()["type"] == "session.updated"
        finally:
            c.close()


def test_default_text_limits_are_the_documented_constants():
    from qvtools.server import config as sc

    cfg = ServiceConfig()
    assert cfg.realtime_max_instructions_chars == sc.MAX_INSTRUCTIONS_CHARS == 32_768
    assert cfg.realtime_max_text_chars == sc.MAX_TEXT_CHARS and cfg.realtime_max_name_chars == sc.MAX_NAME_CHARS
    assert cfg.max_sessions >= 16  # issue 13: 16 concurrent sessions from one address must fit


@pytest.mark.slow
def test_cloned_voice_is_read_off_the_event_loop_and_its_profile_built_once(tmp_path, enrollment_wav):
    # issue 13: session.update with a cloned voice re-read the whole stored audio, on the event loop
    import threading

    from qvtools.server.realtime import voice_cache
    from realtime_support import create_voice

    with LocalService(data_dir=tmp_path, config=ServiceConfig(realtime_latency="none")) as svc:
        voice = create_voice(svc, enrollment_wav, target=PLUS, name="cache")
        store = svc.store
        calls = []
        original = store.get

        def spy(scope, name, *, with_audio=True):
            calls.append((threading.current_thread() is svc._thread, with_audio))
            return original(scope, name, with_audio=with_audio)

        store.get = spy
        for _ in range(2):
            c = RawClient(svc, PLUS)
            try:
                c.until("session.created")
                c.send({"type": "session.update", "session": {"voice": voice, "turn_detection": None}})
                assert c.until("session.updated")[-1]["session"]["voice"] == voice
                c.send({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]}})
                c.send({"type": "response.create"})
                done = c.until("response.done", timeout=60)[-1]
                assert done["response"]["status"] == "completed"
            finally:
                c.close()
    assert calls and not any(on_loop for on_loop, _ in calls)  # no store read on the event loop
    assert not any(with_audio for _, with_audio in calls)  # the stored profile is current: audio never read
    assert voice_cache(svc.app).loads == 1  # built once, served from the cache the second time


def test_latency_profiles_come_from_the_catalog():
    from qvtools import catalog
    from qvtools.server.latency import PROFILES, profile_for_model

    for fam in catalog.FAMILIES.values():
        assert profile_for_model(fam.realtime_model).name == fam.latency_profile
    assert profile_for_model("qwen3.8-omni-flash-realtime").name == "flash"
    assert profile_for_model("qwen4-omni-plus-realtime").name == "plus"  # outside the catalog: tier by name
    # §7.6: most of the simulated wait falls before response.created
    assert all(p.created_ms > p.first_audio_ms for p in PROFILES.values())
    assert profile_for_model(PLUS, {"plus": {"first_audio_ms": 900}}).first_audio_ms == 900


def test_a_failure_after_the_upgrade_closes_the_socket_never_an_http_answer(tmp_path, monkeypatch):
    # issue 13: the error middleware wrote an HTTP 500 onto the upgraded socket
    from qvtools.server import realtime as rt

    async def boom(self):
        await self.send(ev.session_created(sr.session_echo(self.session, "created")))
        raise RuntimeError("a bug")

    monkeypatch.setattr(rt._Connection, "run", boom)
    with LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False)) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        try:
            assert c.recv()["type"] == "session.created"
            assert _close_frame(c)[0] == 1011
        finally:
            c.close()


@pytest.mark.parametrize("mode", ["early", "commit"])
def test_manual_user_item_timing_is_a_choice(tmp_path, mode):
    # §7.4 (observed, default "early"): the user item at the first append; "commit": after committed (§4.5 b guess)
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False, realtime_manual_user_item=mode)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"turn_detection": None, "input_audio_transcription": None}})
            c.until("session.updated")
            c.send(append(bytes(3200)))
            c.send(append(bytes(3200)))
            c.send({"type": "input_audio_buffer.commit"})
            events = c.until("input_audio_buffer.committed")
            if mode == "commit":
                events += c.until("conversation.item.created")
        finally:
            c.close()
    types = [e["type"] for e in events]
    want = ["conversation.item.created", "input_audio_buffer.committed"]
    assert types == (want if mode == "early" else want[::-1])
    assert events[0].get("item_id", events[0].get("item", {}).get("id")) == \
        events[1].get("item_id", events[1].get("item", {}).get("id"))


def _manual_turn(c: RawClient, pcm: bytes, until="response.done") -> list[dict]:
    stream(c, pcm)
    c.send({"type": "input_audio_buffer.commit"})
    c.send({"type": "response.create"})
    return c.until(until, timeout=90)


@pytest.mark.slow
def test_opener_audio_goes_out_before_the_user_transcription_completes(svc, pcm16k):
    # issue 11: the reply's first sentence (the opener, from seed and turn only) is spoken at once; the body,
    # which needs the user's words, follows. §7.14: response.created may precede the user's transcription.
    from qvtools.server.realtime import REALTIME

    speech = svc.app[REALTIME].get_speech()
    c = RawClient(svc, FLASH)
    try:
        voice = c.until("session.created")[0]["session"]["voice"]
        c.send({"type": "session.update", "session": {"turn_detection": None}})
        c.until("session.updated")
        _manual_turn(c, pcm16k)  # turn 0 (engines warm)
        # the service prepares the next turns' openers in the background; here, deterministically, the same
        speech.prepare_openers(speech.voice_profile(voice), 24000, voice_key=("builtin", voice), turns=[1],
                               language="en")
        builds = speech.opener_builds
        events = _manual_turn(c, pcm16k)  # turn 1
        events += c.until("conversation.item.input_audio_transcription.completed", timeout=30) \
            if not any(e["type"].endswith("transcription.completed") for e in events) else []
    finally:
        c.close()
    types = [e["type"] for e in events]
    first_audio = types.index("response.audio.delta")
    assert first_audio < types.index("conversation.item.input_audio_transcription.completed")
    assert speech.opener_builds == builds  # the opener's audio was ready, made before this turn
    # §4.5 / §7.5 order intact: the opening together, transcript before the first audio delta
    resp = [t for t in types if t.startswith("response.") or t == "conversation.item.created"]
    resp = resp[resp.index("response.created"):]
    assert resp[:4] == ["response.created", "response.output_item.added", "conversation.item.created",
                        "response.content_part.added"]
    assert resp[4] == "response.audio_transcript.delta"
    assert resp[-5:] == ["response.audio_transcript.done", "response.audio.done", "response.content_part.done",
                         "response.output_item.done", "response.done"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    opener = speech.opener_text(turn_index=1, language="en")
    assert text.startswith(opener + " ") and len(text) > len(opener) + 5  # opener, then the body
    # the body answers the user's words: it names the topic the responder takes from the transcript the service
    # reported, and (Piper's noise seeded per sentence, issue 19: the same audio every run) that is the weather
    from qvtools.server.responder import topic

    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    subject = topic(heard["transcript"], "en")
    assert subject and subject.lower() in text.lower(), (heard["transcript"], text)
    assert "weather" in text.lower(), (heard["transcript"], text)
    done = events[types.index("response.done")]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == text
    audio = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"]
    assert sum(len(a) for a in audio) / 2 / 24000 > 1.5  # the body's audio is there, not only the opener's


@pytest.mark.slow
def test_cancel_while_the_opener_plays_and_the_body_waits_for_the_transcript(svc, pcm16k):
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        c.send({"type": "session.update", "session": {"turn_detection": None, "input_audio_transcription": None}})
        c.until("session.updated")
        events = _manual_turn(c, pcm16k, until="response.audio.delta")
        c.send({"type": "response.cancel"})
        events += c.until("response.done", timeout=30)
        c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                             "content": [{"type": "input_text", "text": "Hi."}]}})
        c.send({"type": "response.create"})
        after = c.until("response.done", timeout=60)
    finally:
        c.close()
    types = [e["type"] for e in events]
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert types[-5:] == ["response.audio_transcript.done", "response.audio.done", "response.content_part.done",
                          "response.output_item.done", "response.done"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    assert events[types.index("response.audio_transcript.done")]["transcript"] == text
    assert after[-1]["response"]["status"] == "completed"  # the session goes on


@pytest.mark.slow
def test_speculative_transcription_is_dropped_when_speech_resumes(svc, pcm16k):
    # issue 11: server VAD starts ASR once the speech is followed by SPECULATE_AFTER_MS of silence; a pause
    # shorter than silence_duration_ms (800 ms) is not the end of the turn, so that result must not be used
    from qvtools.server.realtime import REALTIME, SPECULATE_AFTER_MS
    from qvtools.server.tts import Synthesizer

    x, sr = Synthesizer().synthesize("Tell me about the river.")
    second = to_pcm16(resample(x, sr, 16000))
    pause = bytes(2 * int(16000 * (SPECULATE_AFTER_MS + 100) / 1000))  # + ~0.2 s of trailing quiet < 800 ms
    stats = svc.app[REALTIME].spec_stats
    before = dict(stats)
    c = RawClient(svc, FLASH)
    try:
        c.until("session.created")
        stream(c, pcm16k + pause)
        stream(c, second + bytes(2 * 16000 * 3 // 2))
        events = c.until("conversation.item.input_audio_transcription.completed", timeout=60)
        events += c.until("response.done", timeout=60)
    finally:
        c.close()
    types = [e["type"] for e in events]
    assert types.count("input_audio_buffer.speech_stopped") == 1  # one turn: the pause did not end it
    heard = events[types.index("conversation.item.input_audio_transcription.completed")]["transcript"].lower()
    assert "weather" in heard and "river" in heard  # the whole turn, not the speculation on its first part
    # the pause's speculation was started and dropped (a second one for the whole turn may or may not have
    # started: audio sent this fast can reach speech_stopped while the dropped job still runs)
    assert stats["started"] - before["started"] >= 1 and stats["dropped"] - before["dropped"] >= 1


@pytest.mark.slow
def test_manual_partial_transcriptions_run_one_at_a_time_over_all_sessions(svc, pcm16k):
    # issue 11 (capacity): each partial re-runs Whisper on the whole buffer so far; with many manual sessions
    # they queued on the one ASR lock ahead of the transcriptions replies wait for. One in flight, service-wide.
    import threading

    from qvtools.server.realtime import REALTIME

    speech = svc.app[REALTIME].get_speech()
    lock, running, peak = threading.Lock(), [0], [0]
    inner = speech.recognize

    def counting(x16, *args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return inner(x16, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    clients = [RawClient(svc, FLASH) for _ in range(3)]
    speech.recognize = counting
    try:
        for c in clients:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"turn_detection": None}})
            c.until("session.updated")
        long = pcm16k * 2
        for i in range(0, len(long), 3200):  # the sessions' appends interleaved
            for c in clients:
                c.send(append(long[i:i + 3200]))
        seen, deadline = 0, time.monotonic() + 90
        while not seen and time.monotonic() < deadline:  # some session's partial comes back
            for c in clients:
                c.send(append(bytes(3200)))  # an append lets a session start its next partial
                try:
                    c.until("conversation.item.input_audio_transcription.delta", timeout=1)
                    seen += 1
                except Exception:  # noqa: BLE001 -- websocket timeout: none yet on this one
                    pass
        assert seen
        for c in clients:
            c.send({"type": "input_audio_buffer.clear"})
            c.until("input_audio_buffer.cleared", timeout=60)
    finally:
        for c in clients:
            c.close()
        del speech.recognize
    assert peak[0] == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode, second, detector, window", [("first_turn", "en", "english_gate", "full"),
                                                           ("every_turn", None, "whisper_base", "fit")])
def test_language_is_detected_once_per_session_unless_every_turn(tmp_path, pcm16k, mode, second, detector, window):
    # ServiceConfig.realtime_language_detection: with no session or voice language the first turn is
    # detected; "first_turn" then tells ASR that language (tiny.en for English), "every_turn" detects again;
    # ServiceConfig.realtime_language_detector reaches the ASR call (issue 22 item 4)
    from qvtools.server.realtime import REALTIME

    cfg = ServiceConfig(realtime_language_detection=mode, realtime_language_detector=detector,
                        realtime_asr_window=window, realtime_partial_transcription_s=0)
    with LocalService(tmp_path, config=cfg) as local:
        speech = local.app[REALTIME].get_speech()
        told = []
        inner = speech.recognize

        found = []

        def recording(x16, language=None, candidates=None, detector="english_gate", window="full"):
            told.append(language)
            rec = inner(x16, language, candidates, detector, window)
            found.append((detector, rec.detector, window))
            return rec

        speech.recognize = recording
        c = RawClient(local, FLASH)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"turn_detection": None, "modalities": ["text"]}})
            c.until("session.updated")
            for _turn in range(2):
                stream(c, pcm16k)
                c.send({"type": "input_audio_buffer.commit"})
                c.send({"type": "response.create"})
                done = c.until("response.done", timeout=120)[-1]
                assert done["response"]["status"] == "completed"
        finally:
            c.close()
    assert told == [None, second]
    # the first turn was detected by the configured detector (English speech: the gate takes it cheaply)
    # in the configured encoder window (ServiceConfig.realtime_asr_window)
    assert found[0] == (detector, detector, window)
    assert found[1] == (detector, "given" if second else detector, window)
