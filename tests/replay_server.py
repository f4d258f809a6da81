"""A small replay WebSocket server for the realtime client tests (not a test module).

It plays the server side of a conformance fixture (``tests/fixtures/cloud/*.jsonl``, format in that directory's
README) in reply to the client's events, on a real socket on 127.0.0.1 port 0. aiohttp runs in a thread with
its own event loop; :meth:`ReplayServer.start` returns once the socket listens (a readiness event, no sleeps).

Beyond the fixture format, a script line may be

- ``{"dir": "server", "raw": "<text>"}``: a text frame sent verbatim (non-JSON or non-object JSON);
- ``{"dir": "server", "big": N}``: a text frame of N bytes (a JSON event padded with a long string);
- ``{"dir": "server", "claim": N}``: a bare frame header announcing N bytes (then only 64 are sent);
- ``{"dir": "server", "close": {"code": C, "reason": R}}``: close the WebSocket.

``{auth}`` inside any server text is replaced by the ``Authorization`` header the client sent (to test that
server text echoing the key is redacted). ``refuse=(status, headers, body)`` answers the handshake with plain
HTTP instead of upgrading (§4.5 d).

Server VAD for ``when: "speech_start"`` / ``"speech_end"``: the appended PCM16 is decoded at the session's
input rate and checked in 10 ms frames (RMS above :data:`SPEECH_RMS`); ``speech_end`` needs, after speech, at
least the effective ``turn_detection.silence_duration_ms`` of appended silence (§4.2 default 800 ms). Each
firing is logged in ``vad_log`` with the trailing silence actually received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cloud"
#: RMS (PCM16 units) above which a 10 ms frame counts as speech (about -36 dBFS).
SPEECH_RMS = 500.0
DEFAULT_SILENCE_MS = 800  # §4.2


def load_script(name_or_lines) -> list[dict]:
    """The lines of a fixture (file name in tests/fixtures/cloud, a path, or a list of line dicts)."""
    if isinstance(name_or_lines, (list, tuple)):
        return [dict(x) for x in name_or_lines]
    path = Path(name_or_lines)
    if not path.is_absolute() and not path.exists():
        path = FIXTURES / path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def meta(script: list[dict]) -> dict:
    return script[0].get("meta", {}) if script and "meta" in script[0] else {}


class _Vad:
    """Energy VAD over the PCM16 the client appended (one per connection)."""

    def __init__(self):
        self.rate = 16000
        self.silence_ms: float | None = DEFAULT_SILENCE_MS
        self.reset()
        self.total = 0  # samples received on the connection

    def reset(self):
        self.speech = False
        self.trailing = 0  # samples of silence since the last speech frame
        self.appends = 0
        self.start_ms = None
        self.end_ms = None

    def configure(self, session: dict):
        if not isinstance(session, dict):
            return
        fmt = ((session.get("audio") or {}).get("input") or {}).get("format") or {}
        if isinstance(fmt.get("sample_rate"), int):
            self.rate = fmt["sample_rate"]
        if "turn_detection" in session:
            td = session["turn_detection"]
            if td is None:
                self.silence_ms = None  # manual mode: no VAD
            else:
                self.silence_ms = float(td.get("silence_duration_ms", DEFAULT_SILENCE_MS))

    def feed(self, b64: str):
        pcm = np.frombuffer(base64.b64decode(b64), dtype="<i2").astype(np.float64)
        self.appends += 1
        hop = max(1, self.rate // 100)
        for i in range(0, len(pcm), hop):
            frame = pcm[i:i + hop]
            if np.sqrt(np.mean(frame ** 2)) > SPEECH_RMS:
                if not self.speech:
                    self.start_ms = 1000.0 * (self.total + i) / self.rate
                self.speech = True
                self.trailing = 0
                self.end_ms = 1000.0 * (self.total + i + len(frame)) / self.rate
            else:
                self.trailing += len(frame)
        self.total += len(pcm)

    @property
    def trailing_ms(self) -> float:
        return 1000.0 * self.trailing / self.rate


class ReplayServer:
    """Plays ``script`` (see module doc) to every connection; records what the client did."""

    def __init__(self, script, *, refuse: tuple | None = None, path: str = "/api-ws/v1/realtime"):
        self.script = load_script(script)
        self.refuse = refuse
        self.path = path
        self.received: list[dict] = []      # client events (parsed), all connections
        self.auth: list[str] = []           # Authorization headers seen
        self.vad_log: list[dict] = []       # {"trigger", "trailing_ms", "silence_ms"} per VAD firing
        self.connections = 0
        self.disconnected = threading.Event()  # set when a client connection has ended
        self.close_codes: list[int | None] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self.port: int | None = None
        self._error: BaseException | None = None
        self._open: set = set()

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "ReplayServer":
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("replay server did not start")
        if self._error is not None:
            raise RuntimeError(f"replay server failed to start: {self._error}")
        return self

    def _run(self):
        from aiohttp import web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            app = web.Application()
            app.router.add_get(self.path, self._handler)
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self._runner = runner
            self.port = site._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # pragma: no cover - reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self):
        for ws in list(self._open):
            await ws.close(code=1001, message=b"replay server stopping")
        await self._runner.cleanup()

    def stop(self):
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                fut.result(10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def types_received(self) -> list[str]:
        return [e.get("type") for e in self.received if isinstance(e, dict)]

    # ------------------------------------------------------------------------------------ protocol
    async def _handler(self, request):
        from aiohttp import WSMsgType, web

        self.auth.append(request.headers.get("Authorization", ""))
        if self.refuse is not None:
            status, headers, body = self.refuse
            return web.Response(status=status, headers=headers or {}, body=body,
                                content_type="application/json")
        self.connections += 1
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        self._open.add(ws)
        auth = request.headers.get("Authorization", "")
        lines = [ln for ln in self.script if "meta" not in ln]
        state = {"i": 0}
        vad = _Vad()

        async def play() -> bool:
            """Send server lines from the cursor up to the next client line; False once closed."""
            while state["i"] < len(lines) and lines[state["i"]].get("dir") == "server":
                line = lines[state["i"]]
                state["i"] += 1
                if "close" in line:
                    await ws.close(code=int(line["close"]["code"]),
                                   message=str(line["close"].get("reason", "")).encode("utf-8"))
                    return False
                if "claim" in line:
                    # a text frame header announcing ``claim`` bytes, followed by a few: the payload never comes
                    import struct
                    request.transport.write(b"\x81\x7f" + struct.pack("!Q", int(line["claim"])) + b"x" * 64)
                    continue
                if "raw" in line:
                    text = line["raw"]
                elif "big" in line:
                    head, tail = '{"type":"response.text.delta","delta":"', '"}'
                    text = head + "x" * max(0, int(line["big"]) - len(head) - len(tail)) + tail
                else:
                    event = dict(line["event"])
                    if event.get("type") == "input_audio_buffer.speech_started" and vad.start_ms is not None:
                        event["audio_start_ms"] = int(vad.start_ms)
                    if event.get("type") == "input_audio_buffer.speech_stopped" and vad.end_ms is not None:
                        event["audio_end_ms"] = int(vad.end_ms)
                    text = json.dumps(event, ensure_ascii=False)
                await ws.send_str(text.replace("{auth}", auth))
            return True

        try:
            if await play():
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        continue
                    try:
                        event = json.loads(msg.data)
                    except ValueError:
                        continue
                    if not isinstance(event, dict):
                        continue
                    self.received.append(event)
                    typ = event.get("type")
                    if typ == "session.update":
                        vad.configure(event.get("session"))
                    if typ == "input_audio_buffer.append" and isinstance(event.get("audio"), str):
                        vad.feed(event["audio"])
                    if typ == "input_audio_buffer.commit":
                        vad.reset()
                    if state["i"] >= len(lines):
                        continue
                    want = lines[state["i"]]
                    if want.get("dir") != "client" or want["event"].get("type") != typ:
                        continue
                    when = want.get("when")
                    if when == "first_append" and vad.appends != 1:
                        continue
                    if when == "speech_start" and not vad.speech:
                        continue
                    if when == "speech_end":
                        if not vad.speech or vad.silence_ms is None or vad.trailing_ms < vad.silence_ms:
                            continue
                        self.vad_log.append({"trigger": "speech_end", "trailing_ms": vad.trailing_ms,
                                             "silence_ms": vad.silence_ms, "start_ms": vad.start_ms,
                                             "end_ms": vad.end_ms})
                    state["i"] += 1
                    try:
                        ok = await play()
                    except ConnectionError:  # the client went away mid-send (e.g. it refused a big frame)
                        break
                    if when == "speech_end":
                        vad.reset()
                    if not ok:
                        break
        finally:
            self._open.discard(ws)
            self.close_codes.append(ws.close_code)
            self.disconnected.set()
        return ws


def main(argv=None) -> int:
    """``python tests/replay_server.py SCRIPT.jsonl``: serve in a separate process (so a test can measure
    the client's memory alone); prints ``PORT <n>`` once listening and stops when stdin closes."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    srv = ReplayServer(args[0]).start()
    print(f"PORT {srv.port}", flush=True)
    sys.stdin.read()
    srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
