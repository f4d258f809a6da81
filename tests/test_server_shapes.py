"""The local service's own output against the cloud fixtures (issue 9 item 5, server half).

Each ``tests/fixtures/cloud/*.jsonl`` scenario (written from protocol reference §7, see its README) is driven
against the real local service (``LocalService`` on port 0, a real WebSocket): the fixture's client lines are
sent as written (audio placeholders replaced by real speech), and the service's events are compared with the
fixture's server lines:

- **key sets**: every event type of the fixture is sent, and each sent event's keys (and the keys of its
  ``session``/``item``/``response``/``error``/``part`` objects, one level further for lists) are the
  fixture's. Normalised: ``previous_item_id`` is left out of the key sets (the fixtures write it absent,
  ``null`` or set for a first item; its values are checked in test_server_realtime), and ``session.created``
  may carry the documented ``qvtools`` metadata field (latencies SIMULATED);
- **order**: the skeleton (the type sequence without streamed deltas and input-transcription events) is
  the fixture's; input transcription follows its user item (its place relative to the response is
  unspecified, §4.5 a, §7.14); the first transcript delta precedes the first audio delta (§7.5);
- **values the catalog decides**: voice, format strings and transcription model of the echoes (§7.1, §7.2),
  ``response.done`` status (§7.6), the voice error text (§7.3) and the idle close (§7.12).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest

from qvtools.audio import resample, to_pcm16
from qvtools.server import LocalService, ServiceConfig
from realtime_support import utterance

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cloud"
TIMEOUT = 60.0
KEY = "sk-shapes"
STREAMED = {"response.audio.delta", "response.audio_transcript.delta", "response.text.delta",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed"}
NESTED = ("session", "item", "response", "error", "part")


def load(name: str) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    return lines[0]["meta"], lines[1:]


def signature(event: dict) -> tuple:
    """Key set of an event and of its nested objects (lists: the union of their elements' keys)."""
    def keys(obj):
        return frozenset(k for k in obj if k != "previous_item_id")

    sig = [("", keys(event))]
    for name in NESTED:
        sub = event.get(name)
        if isinstance(sub, dict):
            k = keys(sub)
            if event.get("type") == "session.created":
                k = k - {"qvtools"}  # the documented extension: latencies are SIMULATED
            sig.append((name, k))
            for inner, val in sub.items():
                if isinstance(val, list) and val and all(isinstance(x, dict) for x in val):
                    sig.append((f"{name}.{inner}[]", frozenset().union(*(frozenset(x) for x in val))))
                elif isinstance(val, dict) and inner in ("usage", "format"):
                    sig.append((f"{name}.{inner}", frozenset(val)))
    return tuple(sig)


def skeleton(types: list[str]) -> list[str]:
    return [t for t in types if t not in STREAMED]


class Driver:
    """A raw WebSocket client that plays a fixture's client lines and records every server event."""

    def __init__(self, svc: LocalService, model: str):
        import websocket

        self.ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={model}", timeout=TIMEOUT,
                                              header=[f"Authorization: Bearer {KEY}"])
        self.events: list[dict] = []
        self.close_frame: tuple[int, str] | None = None
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        import websocket

        try:
            while True:
                op, data = self.ws.recv_data()
                if op == websocket.ABNF.OPCODE_CLOSE:
                    with self.cond:
                        self.close_frame = (int.from_bytes(data[:2], "big"), data[2:].decode("utf-8"))
                        self.cond.notify_all()
                    return
                with self.cond:
                    self.events.append(json.loads(data))
                    self.cond.notify_all()
        except Exception:
            with self.cond:
                self.close_frame = self.close_frame or (-1, "")
                self.cond.notify_all()

    def send(self, event: dict) -> None:
        self.ws.send(json.dumps(event))

    def count(self, typ: str) -> int:
        with self.cond:
            return sum(1 for e in self.events if e["type"] == typ)

    def wait(self, pred, timeout: float = TIMEOUT) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: pred() or self.close_frame is not None, timeout), \
                f"timed out; got {[e['type'] for e in self.events]}"

    def wait_type(self, typ: str, n: int, timeout: float = TIMEOUT) -> None:
        self.wait(lambda: sum(1 for e in self.events if e["type"] == typ) >= n, timeout)

    def append(self, pcm: bytes, *, paced: bool) -> None:
        """PCM16 in 100 ms appends (§4.1), optionally at the pace of a microphone (events keep arriving)."""
        step = 3200
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(pcm), step)):
            self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + step]).decode()})
            if paced:
                due = t0 + (k + 1) * 0.1
                with self.cond:  # wakes on events; returns at the microphone's next 100 ms
                    self.cond.wait_for(lambda: time.perf_counter() >= due, max(0.0, due - time.perf_counter()))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.reader.join(5)


@pytest.fixture(scope="module")
def speech16() -> bytes:
    x, sr = utterance()
    return to_pcm16(resample(x, sr, 16000))


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # simulated latency on (the defaults), so a cancel at the first audio delta lands mid-stream
    from qvtools.server.realtime import get_speech

    with LocalService(data_dir=tmp_path_factory.mktemp("shapes"), config=ServiceConfig()) as service:
        # readiness, not a guess: partial transcriptions during a paced manual turn need Whisper loaded
        assert get_speech(service.app).wait_ready(180), "speech engines did not load"
        yield service


def play(svc, name: str, speech16: bytes) -> tuple[dict, list[dict], Driver]:
    """Drive the service with the fixture's client lines; returns (meta, fixture lines, driver)."""
    meta, lines = load(name)
    drive = meta.get("drive", {})
    d = Driver(svc, meta["model"])
    d.wait_type("session.created", 1)
    expect_counts: dict[str, int] = {}
    appended = False
    silence_ms = 800
    for i, line in enumerate(lines):
        if line["dir"] != "client":
            continue
        block = []
        for nxt in lines[i + 1:]:
            if nxt["dir"] == "client":
                break
            if "event" in nxt:
                block.append(nxt["event"]["type"])
        for t in block:
            expect_counts[t] = expect_counts.get(t, 0) + 1
        event = line["event"]
        typ = event["type"]
        if typ == "session.update":
            td = event.get("session", {}).get("turn_detection")
            if isinstance(td, dict) and td.get("silence_duration_ms"):
                silence_ms = int(td["silence_duration_ms"])
            if not block:  # §7.3: a session.update after the voice error gets no answer
                d.send(event)
                d.send({"type": "input_audio_buffer.clear"})  # a marker that is answered
                d.wait_type("input_audio_buffer.cleared", expect_counts.get("input_audio_buffer.cleared", 0) + 1)
                expect_counts["input_audio_buffer.cleared"] = expect_counts.get("input_audio_buffer.cleared", 0) + 1
                continue
            d.send(event)
        elif typ == "input_audio_buffer.append":
            when = line.get("when")
            if when == "speech_end":
                d.append(bytes(32 * (silence_ms + 700)), paced=False)
            elif when == "first_append":  # a manual turn at microphone pace, the user pausing before commit
                d.append(speech16 + bytes(32000), paced=True)
                if "conversation.item.input_audio_transcription.delta" in block:
                    # the partial transcription runs in the executor; on a loaded machine keep the microphone
                    # open (silence, at pace) until it has streamed, as a user still holding the button would
                    deadline = time.monotonic() + 15
                    while not d.count("conversation.item.input_audio_transcription.delta") \
                            and time.monotonic() < deadline:
                        d.append(bytes(3200), paced=True)
            else:
                d.append(speech16, paced=False)
            appended = True
        elif typ == "input_audio_buffer.commit":
            if not appended:  # the fixture leaves the turn's appends out ("consumed silently")
                d.append(speech16, paced=False)
            d.send(event)
            appended = False
        else:
            d.send(event)
        waitable = [t for t in block if t not in STREAMED]
        if drive.get("cancel_on") and block and block[-1] == drive["cancel_on"]:
            d.wait_type(drive["cancel_on"], 1)
        elif waitable:
            last = waitable[-1]
            d.wait_type(last, expect_counts[last])
        elif block and block[-1] in STREAMED and typ != "input_audio_buffer.append":
            d.wait_type(block[-1], 1)
    return meta, lines, d


def fixture_server(lines) -> list[dict]:
    return [line["event"] for line in lines if line["dir"] == "server" and "event" in line]


def check_shapes(fixture: list[dict], got: list[dict]) -> None:
    want_sigs: dict[str, set] = {}
    for e in fixture:
        want_sigs.setdefault(e["type"], set()).add(signature(e))
    got_types = {e["type"] for e in got}
    missing = set(want_sigs) - got_types
    assert not missing, f"the service never sent {sorted(missing)}"
    for e in got:
        if e["type"] in want_sigs:
            assert signature(e) in want_sigs[e["type"]], (e["type"], signature(e), want_sigs[e["type"]])


def check_order(fixture: list[dict], got: list[dict]) -> None:
    want = skeleton([e["type"] for e in fixture])
    have_events = [e for e in got]
    if not any(e["type"] == "conversation.item.created" and e["item"].get("role") == "user"
               and e["item"]["content"][0]["type"] == "input_audio" for e in fixture):
        # the fixture leaves the turn's appends out; the user item the service creates at the first append
        # of a manual turn (§7.4) answers one of those appends
        have_events = [e for e in got if not (e["type"] == "conversation.item.created"
                                              and e["item"].get("role") == "user"
                                              and e["item"]["content"][0]["type"] == "input_audio")]
    have = skeleton([e["type"] for e in have_events])
    have = [t for t in have if t != "input_audio_buffer.cleared" or "input_audio_buffer.cleared" in want]
    assert have == want
    types = [e["type"] for e in got]
    # §7.5: within every response, the first transcript delta precedes the first audio delta
    for k, t in enumerate(types):
        if t == "response.content_part.added":
            rest = types[k:]
            end = rest.index("response.audio_transcript.done") if "response.audio_transcript.done" in rest else len(rest)
            body = rest[:end]
            if "response.audio.delta" in body:
                assert "response.audio_transcript.delta" in body
                assert body.index("response.audio_transcript.delta") < body.index("response.audio.delta")
    # input transcription follows its user item's creation
    created_at = {e["item"]["id"]: k for k, e in enumerate(got) if e["type"] == "conversation.item.created"}
    for k, e in enumerate(got):
        if e["type"].startswith("conversation.item.input_audio_transcription."):
            assert created_at.get(e["item_id"], len(got)) < k


def check_echo_values(fixture: list[dict], got: list[dict]) -> None:
    for typ in ("session.created", "session.updated"):
        want = next(e["session"] for e in fixture if e["type"] == typ)
        have = next(e["session"] for e in got if e["type"] == typ)
        for key in ("model", "voice", "modalities", "input_audio_format", "output_audio_format",
                    "input_audio_transcription"):
            assert have[key] == want[key], (typ, key, have[key], want[key])
        if typ == "session.created":
            assert have["turn_detection"] == want["turn_detection"]


SCENARIOS = ["manual_turn_qwen38", "vad_turn_long_silence", "two_turns", "cancel_qwen38", "error_at_generation",
             "text_item_replaced_id", "text_only_qwen35"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_local_service_speaks_the_fixture_shapes(svc, speech16, name):
    meta, lines, d = play(svc, name, speech16)
    try:
        fixture = fixture_server(lines)
        with d.cond:
            got = list(d.events)
        check_shapes(fixture, got)
        check_order(fixture, got)
        check_echo_values(fixture, got)
        done_want = [e["response"]["status"] for e in fixture if e["type"] == "response.done"]
        done_have = [e["response"]["status"] for e in got if e["type"] == "response.done"]
        assert done_have == done_want
        if name == "error_at_generation":
            err_want = next(e for e in fixture if e["type"] == "error")["error"]
            err_have = next(e for e in got if e["type"] == "error")["error"]
            assert err_have == err_want  # §7.3, the fixture's voice (Chelsie on qwen3.5-omni-flash)
            assert "response.created" not in [e["type"] for e in got]
        if name == "text_item_replaced_id":
            sent_ids = {line["event"]["item"]["id"] for line in lines
                        if line["dir"] == "client" and line["event"]["type"] == "conversation.item.create"}
            users = [e for e in got if e["type"] == "conversation.item.created" and e["item"]["role"] == "user"]
            assert len(users) == 2 and not sent_ids & {u["item"]["id"] for u in users}  # §7.13 server-made ids
            assert users[1]["previous_item_id"] and all(u["item"]["status"] == "completed" for u in users)
        if name == "text_only_qwen35":
            # §7.21: the full default turn_detection echoed; output_item.done without the text; text-only usage
            upd = next(e for e in got if e["type"] == "session.updated")["session"]
            assert upd["turn_detection"] == next(e for e in fixture if e["type"] == "session.updated")[
                "session"]["turn_detection"]
            assert list(upd) == list(next(e for e in fixture if e["type"] == "session.updated")["session"])
            item_done = next(e for e in got if e["type"] == "response.output_item.done")["item"]
            assert item_done["content"] == [{"type": "text"}]
            final = next(e for e in got if e["type"] == "response.done")["response"]
            assert final["output"][0]["content"][0]["text"]
            assert set(final["usage"]["input_tokens_details"]) == set(final["usage"]["output_tokens_details"]) \
                == {"text_tokens"}
        if name == "manual_turn_qwen38":
            types = [e["type"] for e in got]
            # §7.4: the user item and input-transcription deltas arrive while audio is still appended
            first_delta = types.index("conversation.item.input_audio_transcription.delta")
            assert types.index("conversation.item.created") < first_delta < types.index("input_audio_buffer.committed")
    finally:
        d.close()


def test_idle_close_matches_the_fixture(tmp_path, speech16):
    meta, lines = load("idle_close")
    fixture = fixture_server(lines)
    close = next(line["close"] for line in lines if "close" in line)
    cfg = ServiceConfig(realtime_idle_timeout_s=0.5, warm_speech=False)  # the fixture's 300 s, shortened
    with LocalService(data_dir=tmp_path, config=cfg) as service:
        d = Driver(service, meta["model"])
        try:
            d.wait_type("session.created", 1)
            update = next(line["event"] for line in lines if line["dir"] == "client")
            d.send(update)
            d.append(speech16[:32000], paced=False)
            d.wait(lambda: d.close_frame is not None, 10)
            with d.cond:
                got = list(d.events)
        finally:
            d.close()
    check_shapes(fixture, got)
    err = next(e for e in got if e["type"] == "error")["error"]
    want = next(e for e in fixture if e["type"] == "error")["error"]
    assert (err["type"], err["code"]) == (want["type"], want["code"])
    assert err["message"] == want["message"].replace("300 seconds", "0.5 seconds")
    assert d.close_frame == (close["code"], err["message"])  # §7.12: 1007 with the same text
