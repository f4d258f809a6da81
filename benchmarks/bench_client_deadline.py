"""Client call duration against misbehaving enrollment servers (issue 13: "client call duration against a
silent and a dripping server with timeout_s=2, target ≤ 2x timeout_s").

    /work/main/.venv/bin/python benchmarks/bench_client_deadline.py [--timeout 2] [-n 3]

Each server is a stdlib HTTP server on 127.0.0.1 (port 0, ready when constructed):

- silent:        reads the request, never answers;
- drip-body:     answers the headers (Content-Length 100000), then one body byte every 0.5 s;
- drip-headers:  sends the status line, then one byte of an endless header every 0.5 s;
- 503-forever:   answers 503 at once, every time (the client retries with backoff);
- retry-after:   answers 429 with ``Retry-After: 3600`` (capped at RETRY_AFTER_CAP_S, then beyond the deadline).

For each server, ``VoiceClient.list()`` and ``VoiceClient.delete()`` are timed N times (default retries and
backoff); the table shows the median and worst wall time and the worst as a multiple of ``timeout_s``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qvtools.config import Settings
from qvtools.enrollment import VoiceClient
from qvtools.errors import QVError


def _server(behaviour, stop: threading.Event):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            behaviour(self, stop)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def silent(h, stop):
    stop.wait(600)


def drip_body(h, stop):
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.flush()
    while not stop.wait(0.5):
        h.wfile.write(b" ")
        h.wfile.flush()


def drip_headers(h, stop):
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    h.wfile.flush()
    while not stop.wait(0.5):
        h.wfile.write(b"X")
        h.wfile.flush()


def _json(h, status, body: bytes, extra=()):
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    for k, v in extra:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def unavailable(h, stop):
    _json(h, 503, b'{"code":"ModelUnavailable","message":"Model is unavailable, try again later.","request_id":"b"}')


def retry_after(h, stop):
    _json(h, 429, b'{"code":"Throttling","message":"Requests throttling triggered.","request_id":"b"}',
          [("Retry-After", "3600")])


SERVERS = {"silent": silent, "drip-body": drip_body, "drip-headers": drip_headers, "503-forever": unavailable,
           "retry-after": retry_after}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=2.0, help="settings.timeout_s (default 2)")
    ap.add_argument("-n", type=int, default=3, help="repetitions per server and call (default 3)")
    args = ap.parse_args(argv)
    print(f"timeout_s = {args.timeout:g} s, n = {args.n}, target: every call ≤ 2x timeout_s "
          f"= {2 * args.timeout:g} s")
    print(f"{'server':<14}{'call':<8}{'median s':>10}{'worst s':>10}{'worst/timeout':>15}  outcome")
    worst_ratio = 0.0
    for name, behaviour in SERVERS.items():
        stop = threading.Event()
        srv = _server(behaviour, stop)
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        try:
            for call in ("list", "delete"):
                times, outcome = [], ""
                for _ in range(args.n):
                    client = VoiceClient(Settings(region="local", base_url=url, api_key="sk-bench-0123456789",
                                                  timeout_s=args.timeout))
                    t0 = time.perf_counter()
                    try:
                        if call == "list":
                            list(client.list())
                        else:
                            client.delete("qwen-omni-vc-bench-voice-20260101000000000-abcd")
                        outcome = "answered"
                    except QVError as exc:
                        outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
                    times.append(time.perf_counter() - t0)
                    client.close()
                ratio = max(times) / args.timeout
                worst_ratio = max(worst_ratio, ratio)
                print(f"{name:<14}{call:<8}{statistics.median(times):>10.2f}{max(times):>10.2f}{ratio:>14.2f}x  "
                      f"{outcome}")
        finally:
            stop.set()
            srv.shutdown()
            srv.server_close()
    print(f"worst call: {worst_ratio:.2f}x timeout_s ({'within' if worst_ratio <= 2 else 'OVER'} the 2x target)")
    return 0 if worst_ratio <= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
