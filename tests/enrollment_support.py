"""Tiny enrollment servers for the client tests: stdlib ``http.server`` on 127.0.0.1 port 0 in a thread.

Readiness by construction: the listening socket is bound and listening when :class:`HTTPStub` returns,
so a client can connect at once (no sleep). :class:`ReplayServer` answers from the
``tests/fixtures/cloud/enrollment_*.json`` exchanges; :class:`HTTPStub` takes any handler function for
the misbehaving servers of the hardening tests (silent, dripping, paging forever, lost answers).
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cloud"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Request:
    """What the handler saw: the parsed JSON body (``input``) and the headers."""

    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes):
        self.handler = handler
        self.headers = dict(handler.headers.items())
        self.raw = body
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None
        inp = self.json.get("input") if isinstance(self.json, dict) else None
        self.input = inp if isinstance(inp, dict) else {}
        self.action = self.input.get("action")

    def send(self, status: int, body, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = self.handler
        h.send_response(status)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for k, v in hdrs.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()


class HTTPStub:
    """A threaded HTTP server calling ``respond(request, stub)`` for every POST."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[Request] = []
        self.stop_event = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (stdlib name)
                n = int(self.headers.get("Content-Length") or 0)
                req = Request(self, self.rfile.read(n))
                stub.requests.append(req)
                stub.respond(req, stub)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def actions(self) -> list:
        return [r.action for r in self.requests]

    def close(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _substitute(obj, inp: dict):
    """``"$input.<field>"`` inside a fixture string becomes that field of the request's ``input``."""
    if isinstance(obj, str):
        for k, v in inp.items():
            if isinstance(v, (str, int)):
                obj = obj.replace(f"$input.{k}", str(v))
        return obj
    if isinstance(obj, list):
        return [_substitute(x, inp) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, inp) for k, v in obj.items()}
    return obj


class ReplayServer(HTTPStub):
    """Answers each POST with the first fixture exchange whose ``request`` fields all equal the request's
    ``input`` fields (unmatched: 500 with a note, so a test sees the surprise)."""

    def __init__(self, exchanges):
        self.exchanges = [copy.deepcopy(x) for x in exchanges]
        super().__init__(self._answer)

    def _answer(self, req: Request, _stub) -> None:
        for ex in self.exchanges:
            if all(req.input.get(k) == v for k, v in ex["request"].items()):
                req.send(ex["status"], _substitute(ex["body"], req.input), ex.get("headers"))
                return
        req.send(500, {"code": "ReplayMismatch", "message": f"no fixture exchange for {req.input}"})


def wait_for_slots(svc, active: int, timeout: float = 10.0) -> int:
    """Poll (bounded, every 5 ms) until the local service's enrollment decode slots in use equal ``active``;
    returns the count seen last, for the caller to assert on."""
    from qvtools.server.enrollment import ENROLL_SLOTS

    tick = threading.Event()
    for _ in range(max(1, int(timeout / 0.005))):
        if svc.app[ENROLL_SLOTS].active == active:
            break
        tick.wait(0.005)
    return svc.app[ENROLL_SLOTS].active
