"""Fuzzing the local service with hypothesis, over real sockets to one shared LocalService.

- realtime: random JSON, random event types with random fields, bad base64, odd-length audio, huge strings,
  lone surrogates (``"\\ud800"`` escapes: valid JSON and UTF-8 on the wire, issue 13) in any string or key,
  binary frames and out-of-order events, sent over a real WebSocket. After every example a probe event
  must be answered (the session keeps answering), no ``internal_error`` may come back (the analogue of a
  5xx), and the service logs no error. Afterwards the service still serves a normal spoken turn.
- the realtime handshake: random models, headers and methods get a 4xx (or the upgrade), never a 5xx;
- enrollment text with lone surrogates, and header-level junk over raw sockets (issue 13): documented
  4xx answers in the ``{"request_id","code","message"}`` shape, never a 5xx;
- enrollment: random and mutated audio payloads (truncated / byte-flipped WAV, MP3 and AAC, random bytes)
  and mistyped data URLs reach the decoders and come back as documented 400s, never a 500
  (random *bodies* are fuzzed in tests/test_server_enrollment.py).

Example counts are modest (``max_examples`` 40-80) and derandomized, so the run is repeatable.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import requests

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

from qvtools import audio  # noqa: E402
from qvtools.config import ENROLLMENT_PATH, REALTIME_PATH, Settings  # noqa: E402
from qvtools.realtime.session import RealtimeSession  # noqa: E402
from qvtools.resources import samples_dir  # noqa: E402
from qvtools.server import LocalService, ServiceConfig  # noqa: E402
from conftest import adts_bytes  # noqa: E402

pytestmark = pytest.mark.slow


TIMEOUT = 30
FLASH = "qwen3.5-omni-flash-realtime"
KEY = "sk-fuzz"
CLIENT_TYPES = ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                "input_audio_buffer.clear", "input_image_buffer.append", "response.create", "response.cancel",
                "conversation.item.create", "session.finish"]


class _ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    errors = _ErrorLog()
    logger = logging.getLogger("qvtools.server")
    logger.addHandler(errors)
    # echo replies keep responses short; simulated latency off keeps the run quick
    config = ServiceConfig(realtime_latency="none", realtime_reply_mode="echo")
    try:
        with LocalService(data_dir=tmp_path_factory.mktemp("fuzz"), config=config) as service:
            service.errors = errors
            yield service
    finally:
        logger.removeHandler(errors)


# -- strategies ---------------------------------------------------------------------------------------------
#: text with a lone surrogate; json.dumps writes it as a "\\udXXX" escape (issue 13)
surrogate_text = st.builds(lambda a, s, b: a + s + b, st.text(max_size=6),
                           st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\udfff\ud800"]),
                           st.text(max_size=6))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=30), surrogate_text,
                    st.sampled_from(["pcm", "wav", "server_vad", "text", "audio", "Tina",
                                     "qwen-omni-vc-x-voice-20250101000000000-abcd", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.one_of(st.text(max_size=12), surrogate_text), inner, max_size=4),
                      max_leaves=10)
huge = st.sampled_from(["A" * 300_000, "é" * 100_000, "data:" + "Z" * 200_000])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


audio_field = st.one_of(
    values, huge,
    st.binary(max_size=4001).map(_b64),  # valid base64, odd and even lengths
    st.text(alphabet="ABCxyz+/=!*- ", max_size=40),  # bad base64
    st.binary(min_size=1, max_size=400).map(lambda b: "RIFF" + _b64(b)),
    st.binary(max_size=64).map(lambda b: _b64(b"RIFF\x00\x00\x00\x00WAVE" + b)),  # WAV without a data chunk
)
session_field = st.one_of(values, st.fixed_dictionaries({}, optional={
    "modalities": st.one_of(values, st.just(["text"]), st.just(["audio"])),
    "voice": st.one_of(values, surrogate_text), "instructions": st.one_of(values, huge, surrogate_text),
    "input_audio_format": values, "output_audio_format": values,
    "input_audio_transcription": values, "seed": values, "temperature": values, "top_p": values,
    "max_tokens": values, "smooth_output": values, "qvtools": values,
    "turn_detection": st.one_of(values, st.fixed_dictionaries({}, optional={
        "type": st.one_of(values, st.just("server_vad")), "threshold": values,
        "prefix_padding_ms": values, "silence_duration_ms": values, "create_response": values,
        "interrupt_response": values})),
    "audio": st.one_of(values, st.fixed_dictionaries({}, optional={
        "input": values, "output": st.one_of(values, st.fixed_dictionaries({"format": values}))})),
}))
client_type = st.sampled_from(CLIENT_TYPES)
event = st.fixed_dictionaries(
    {"type": st.one_of(client_type, client_type, client_type, client_type, st.text(max_size=20), values)},
    optional={"event_id": st.one_of(values, surrogate_text), "audio": audio_field, "image": st.one_of(audio_field, st.just("/9j/" + "A" * 40)),
              "session": session_field, "response": values, "item": st.one_of(values, st.fixed_dictionaries(
                  {"type": st.one_of(values, st.sampled_from(["message", "function_call_output"]))},
                  optional={"role": values, "content": st.one_of(values, st.lists(st.fixed_dictionaries(
                      {"type": st.just("input_text"), "text": st.one_of(st.text(max_size=20), surrogate_text)}),
                      min_size=1, max_size=2)), "call_id": values, "output": values, "id": values}))})
#: well-formed events in any order (out-of-order: cancel before create, commit of nothing, finish mid-turn...)
well_formed = st.sampled_from([
    {"type": "input_audio_buffer.append", "audio": _b64(bytes(3200))},
    {"type": "input_audio_buffer.append", "audio": _b64(np.random.default_rng(0).integers(
        -3000, 3000, 1600, dtype=np.int16).tobytes())},
    {"type": "input_audio_buffer.commit"}, {"type": "input_audio_buffer.clear"},
    {"type": "response.create"}, {"type": "response.cancel"}, {"type": "session.finish"},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Hi."}]}},
    {"type": "session.update", "session": {"turn_detection": None}},
    {"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}},
    {"type": "session.update", "session": {"modalities": ["text"], "voice": "Tina"}},
    {"type": "input_image_buffer.append", "image": "/9j/" + "A" * 40},
    {"type": "session.update", "session": {"voice": "T\ud800ina"}},
    {"type": "session.update", "session": {"instructions": "Be \udfff brief."}},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "\ud800"}]}},
    {"type": "input_audio_buffer.clear", "event_id": "event_\udc00"},
])
frame = st.one_of(
    event.map(json.dumps), event.map(json.dumps), well_formed.map(json.dumps), well_formed.map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=60),  # not JSON at all
    st.binary(max_size=60),  # a binary frame
)


# -- realtime events ----------------------------------------------------------------------------------------
class Conn:
    def __init__(self, svc):
        import websocket

        self.ws = websocket.create_connection(f"{svc.ws_url}{REALTIME_PATH}?model={FLASH}", timeout=TIMEOUT,
                                              header=[f"Authorization: Bearer {KEY}"])
        assert json.loads(self.ws.recv())["type"] == "session.created"
        # text-only replies keep the examples cheap (a fuzzed session.update may switch audio back on)
        self.ws.send(json.dumps({"type": "session.update", "session": {"modalities": ["text"]}}))


def test_random_realtime_events_never_break_a_session(svc):
    import websocket

    probes = itertools.count()
    state = {"conn": Conn(svc), "examples": 0, "reconnects": 0}

    @hypothesis.settings(max_examples=80, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.lists(frame, min_size=1, max_size=5))
    def check(frames):
        state["examples"] += 1
        ws = state["conn"].ws
        finishing = any('"session.finish"' in f for f in frames if isinstance(f, str))
        for f in frames:
            if isinstance(f, bytes):
                ws.send_binary(f)
            else:
                ws.send(f)
        probe = f"probe_{next(probes)}"
        ws.send(json.dumps({"type": "qvtools.fuzz.probe", "event_id": probe}))
        seen = []
        while True:
            try:
                op, data = ws.recv_data()  # bounded by the socket timeout
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                op, data = websocket.ABNF.OPCODE_CLOSE, b""
            if op == websocket.ABNF.OPCODE_CLOSE:
                # only a session.finish may end the session (answered by session.finished, close 1000)
                assert finishing, f"the session closed after {frames!r}; events: {seen}"
                state["conn"] = Conn(svc)
                state["reconnects"] += 1
                return
            e = json.loads(data)
            seen.append(e["type"])
            if e["type"] == "error":
                assert e["error"].get("code") != "internal_error", (frames, e)
                assert e["error"].get("type") != "server_error", (frames, e)
                if e["error"].get("event_id") == probe:
                    return

    check()
    assert state["examples"] >= 40, state
    assert not svc.errors.records, [r.getMessage() for r in svc.errors.records]
    state["conn"].ws.close()


def test_the_service_serves_a_normal_turn_after_the_fuzzing(svc):
    prompt = audio.load(samples_dir() / "prompts" / "weather.wav", mono=True)
    settings = Settings(region="local", base_url=svc.url, api_key=KEY, timeout_s=TIMEOUT)
    with RealtimeSession(settings, FLASH, response_timeout=120) as sess:
        turn = sess.send_audio(prompt, realtime=False)
    assert turn.status == "completed", turn.error
    assert turn.latency()["ttfa_ms"] > 0 and len(turn.audio) > 0
    assert not svc.errors.records, [r.getMessage() for r in svc.errors.records]


# -- the handshake --------------------------------------------------------------------------------------------
def test_random_handshakes_get_a_4xx_never_a_5xx(svc):
    header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(model=st.one_of(st.text(max_size=40), st.just(FLASH)),
                      auth=st.one_of(st.none(), header_values, st.just(f"Bearer {KEY}")),
                      upgrade=st.booleans(), method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    def check(model, auth, upgrade, method):
        headers = {} if auth is None else {"Authorization": auth}
        if upgrade:
            headers.update({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()})
        r = requests.request(method, svc.url + REALTIME_PATH, params={"model": model}, headers=headers,
                             timeout=TIMEOUT, stream=True)
        try:
            assert r.status_code < 500, (r.status_code, r.text)
            if r.status_code != 101:
                assert set(r.json()) == {"request_id", "code", "message"}
        finally:
            r.close()

    check()


# -- enrollment audio payloads ----------------------------------------------------------------------------
def _seed_files() -> list[bytes]:
    import soundfile as sf

    sr = 24000
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(sr) / sr)).astype(np.float32)
    wav = audio.wav_bytes(x, sr)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="MP3")
    return [wav, buf.getvalue(), adts_bytes(x, sr)]


def test_random_and_mutated_audio_never_cause_a_500(svc):
    seeds = _seed_files()

    def mutate(args):
        k, cut, flips = args
        data = bytearray(seeds[k % len(seeds)])
        for pos, byte in flips:
            data[pos % len(data)] = byte
        return bytes(data[:max(1, cut % (len(data) + 1))]) if cut else bytes(data)

    mutated = st.tuples(st.integers(0, 2), st.integers(0, 1 << 20),
                        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8)).map(mutate)
    payload = st.one_of(mutated, st.binary(max_size=512))
    mime = st.sampled_from(["audio/wav", "audio/mpeg", "audio/mp4", "audio/ogg", "text/plain", ""])
    data_url = st.one_of(
        st.tuples(mime, payload).map(lambda mp: f"data:{mp[0]};base64,{_b64(mp[1])}"),
        st.sampled_from(["data:audio/wav;base64,", "data:audio/wav;base64,!!!!", "data:audio/wav,plain",
                         "data:;base64,AAAA", "data:audio/wav;base64,AAA", "data:", "ftp://x/y.wav"]))

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(data_url)
    def check(url):
        body = {"model": "qwen-voice-enrollment", "input": {"action": "create", "target_model": FLASH,
                                                            "preferred_name": "fuzz", "audio": {"data": url}}}
        r = requests.post(svc.url + ENROLLMENT_PATH, json=body, timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400, r.text
        assert r.json()["code"] in {"InvalidParameter", "Audio.DecoderError", "Audio.PreprocessError",
                                    "Audio.AudioRateError", "Audio.DurationLimitError"}, r.text

    check()
    assert not svc.errors.records, [r.getMessage() for r in svc.errors.records]


# -- enrollment over HTTP: surrogates and header-level junk (issue 13) --------------------------------------------
def test_enrollment_text_with_surrogates_never_causes_a_500(svc):
    """Lone surrogates are valid JSON escapes (``"\\ud800"``): every field that carries text gets a
    documented 4xx for them, never an InternalError (delete of such a name was a 500)."""
    text = st.text(alphabet=st.characters(codec=None, categories=["Cs", "Lu", "Ll", "Nd", "Pc"]), max_size=12)
    fields = st.fixed_dictionaries({"action": st.sampled_from(["create", "list", "delete"])}, optional={
        "voice": text, "target_model": st.one_of(text, st.just(FLASH)), "preferred_name": text,
        "language": text, "text": text, "audio": st.fixed_dictionaries({"data": text})})

    surrogates = []

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(fields)
    def check(inp):
        raw = json.dumps({"model": "qwen-voice-enrollment", "input": inp}, ensure_ascii=True)
        surrogates.append(re.search(r"\\ud[89a-f]", raw) is not None)
        r = requests.post(svc.url + ENROLLMENT_PATH, data=raw, timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert set(r.json()) == {"request_id", "code", "message"}

    check()
    assert sum(surrogates) >= 10  # the strategy did send lone surrogates
    assert not svc.errors.records, [r.getMessage() for r in svc.errors.records]


def test_header_level_junk_gets_a_4xx_in_the_error_shape(svc):
    """Random request lines, header names and values (control bytes, non-UTF-8, CR/LF injection, huge
    lines) over a raw socket: a 4xx ``{"request_id","code","message"}`` answer or a 200, never a 5xx."""
    import socket

    from conftest import read_http_answer

    host, port = svc.url.rsplit("/", 1)[-1].split(":")
    token = st.binary(min_size=0, max_size=40)
    line = st.one_of(st.just(f"POST {ENROLLMENT_PATH} HTTP/1.1".encode()), token,
                     st.tuples(st.sampled_from([b"POST", b"GET", b"P\x00ST", b"\xff"]), token).map(
                         lambda t: t[0] + b" " + t[1] + b" HTTP/1.1"))
    header = st.tuples(st.one_of(st.sampled_from([b"Authorization", b"Content-Length", b"Transfer-Encoding",
                                                  b"Content-Type", b"Host"]), token),
                       st.one_of(token, st.just(b"Bearer sk-\xff\xfe"), st.just(b"a" * 9000)))

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(line, st.lists(header, max_size=5))
    def check(request_line, headers):
        head = request_line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(head + b'{"model": "qwen-voice-enrollment", "input": {"action": "list"}}')
            sock.shutdown(socket.SHUT_WR)
            status, payload = read_http_answer(sock)
        if not status:  # closed without an answer (e.g. a body the parser still waits for): not a 5xx
            return
        code = int(status.split(b" ", 2)[1])
        assert code < 500, status
        if code >= 400:
            assert set(json.loads(payload)) == {"request_id", "code", "message"}, payload

    check()
    assert not svc.errors.records, [r.getMessage() for r in svc.errors.records]
