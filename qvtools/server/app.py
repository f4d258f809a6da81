"""aiohttp application of the local service: the factory, the error middleware, the runner.

Every error leaves as the documented DashScope shape ``{"request_id","code","message"}``
(``../shared/reference/dashscope-protocol.md`` §3, built by :func:`.http.error_response`), also for
client mistakes aiohttp itself would answer in plain text (unknown path, wrong method); unexpected
failures become 500 ``InternalError`` and are logged, never shown.

This module imports the handlers (:mod:`.enrollment`, :mod:`.faults`, :mod:`.realtime`); they import
what they share from :mod:`.http`, never from here. Startup and teardown run in ``app.cleanup_ctx``
(the store and the thread pools; the speech warm-up); open realtime sockets are closed in
``on_shutdown``, before aiohttp waits for handlers, so a client that never hangs up cannot stall a stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..config import ENROLLMENT_PATH, REALTIME_PATH
from ..errors import redact
from .config import ServiceConfig
from .enrollment import ENROLL_SLOTS, DecodeSlots, handle_customization
from .faults import FAULTS, FaultInjector
from .latency import LatencySource
from .http import (CONFIG, ENROLL_EXECUTOR, LATENCY, STORE, STORE_EXECUTOR, TRACE, ServiceError, authenticate,
                   error_response, new_request_id, read_json)
from .realtime import REALTIME, RealtimeState, close_sessions, handle_realtime
from .store import VoiceStore
from .trace import ServerTrace

__all__ = ["create_app", "authenticate", "error_response", "read_json", "ServerTrace", "ServiceError",
           "new_request_id", "ServiceRunner"]

log = logging.getLogger(__name__)


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ServiceError as exc:
        _log_request_error(request, exc.status, exc.code, exc.message)
        resp = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        if getattr(exc, "close", False):  # answer, then close at once (no lingering read of a stalled body)
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json":  # ours (http.http_error): already in the §3 shape
            try:
                answer = json.loads(exc.text or "{}")
            except ValueError:
                answer = {}
            _log_request_error(request, exc.status, str(answer.get("code", "")), str(answer.get("message", "")))
            raise
        code = {404: "NotFound", 405: "MethodNotAllowed", 413: "InvalidParameter"}.get(exc.status, "InvalidParameter")
        message = {404: f"Resource {_safe_path(request)} not found.",
                   405: f"Method {request.method} not allowed for {_safe_path(request)}."}.get(exc.status, exc.reason)
        _log_request_error(request, exc.status, code, message)
        return error_response(exc.status, code, message)
    except (ConnectionResetError, asyncio.CancelledError):  # the client left: one line, no traceback
        log.debug("client disconnected during %s %s", request.method, _safe_path(request))
        raise
    except Exception:  # a bug of ours: log it, answer the documented 500 (§3)
        log.exception("unhandled error on %s %s", request.method, _safe_path(request))
        return error_response(500, "InternalError",
                              "An internal error has occured, try again later or contact service support.")


def _safe_path(request: web.Request) -> str:
    """The request path fit for a log line or a message: escaped, cut, with no query (never a header)."""
    return request.path.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:200]


def _log_request_error(request: web.Request, status: int, code: str, message: str) -> None:
    """One line per request error (issue 13). Messages are ours (never a header, never the key)."""
    log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s -> %d %s %s", request.method,
            _safe_path(request), status, code, message[:200].encode("ascii", "backslashreplace").decode("ascii"))


def _resources(data_dir: Path):
    """``cleanup_ctx``: the voice store and the enrollment/store thread pools, closed on teardown."""

    async def ctx(app: web.Application):
        config = app[CONFIG]
        app[STORE] = VoiceStore(data_dir)
        # at most enroll_queue_limit creates run or wait on this pool (beyond: 429, enrollment.py)
        app[ENROLL_EXECUTOR] = ThreadPoolExecutor(max_workers=max(1, int(config.enroll_workers)),
                                                  thread_name_prefix="qv-enroll")
        app[STORE_EXECUTOR] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qv-store")
        yield
        app[ENROLL_EXECUTOR].shutdown(wait=True, cancel_futures=True)
        app[STORE_EXECUTOR].shutdown(wait=True, cancel_futures=True)
        app[STORE].close()

    return ctx


def _warm_speech(speech, cancel: threading.Event) -> None:
    try:
        if speech.warm(cancel):
            log.info("speech engines loaded")
    except Exception as exc:  # the first turn loads (and reports) it again; the service stays up
        log.warning("speech warm-up failed (%s: %s); engines will load on the first turn", type(exc).__name__, exc)


async def _speech_warmup(app: web.Application):
    """``cleanup_ctx``: load the speech engines in the background (``ServiceConfig.warm_speech``).

    Startup only *schedules* :meth:`SpeechPipeline.warm` in the default executor (readiness is never
    delayed); teardown cancels it between stages so stopping a fresh service stays quick.
    """
    cancel = threading.Event()
    speech = app[REALTIME].get_speech()
    asyncio.get_running_loop().run_in_executor(None, _warm_speech, speech, cancel)
    yield
    cancel.set()


def _log_text(text: str) -> str:
    """``text`` for one log line: the first line, redacted (:func:`qvtools.errors.redact`), 160 characters, ASCII."""
    line = redact(str(text).split("\n", 1)[0], limit=160)
    return line.encode("ascii", "backslashreplace").decode("ascii")


def _exc_summary(exc: BaseException | None) -> str:
    if exc is None:
        return "-"
    # aiohttp's parser messages quote the offending bytes after a colon ("Invalid header value char:
    # b'Authorization: …'"): only the part before it is kept
    text = str(getattr(exc, "message", None) or exc).split(":", 1)[0]
    return f"{type(exc).__name__}: {_log_text(text)}"


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler, with its own answers in the documented JSON shape (§3) and one log
    line per failure instead of a traceback (issue 13: 1,100 disconnects gave ~40,000 traceback lines)."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message=None):
        # a malformed request line / header block (400), a head too large (431/413), a handler timeout (504)
        if isinstance(exc, ConnectionError):  # the client went away mid-request: nothing to answer
            log.debug("%s %s: client disconnected (%s)", request.method, _safe_path(request), _exc_summary(exc))
            code, text = "InternalError", "Connection lost."
        elif status >= 500:
            log.warning("%s %s -> %d (%s)", request.method, _safe_path(request), status, _exc_summary(exc))
            code, text = "InternalError", "An internal error has occured, try again later or contact service support."
        else:
            # aiohttp's text would echo the offending bytes (maybe the Authorization header): never sent
            log.info("malformed HTTP request -> %d (%s)", status, _exc_summary(exc))
            code = "InvalidParameter"
            text = {413: "Request entity too large.", 431: "Request header fields too large."}.get(
                status, "Bad HTTP request: malformed request line or headers.")
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = error_response(status, code, text)
        resp.force_close()
        return resp

    def log_exception(self, *args, **kw) -> None:
        exc = kw.get("exc_info")
        exc = exc if isinstance(exc, BaseException) else None
        log.log(logging.DEBUG if isinstance(exc, ConnectionError) else logging.INFO, "connection error (%s)",
                _exc_summary(exc))


class _GuardedServer(Server):
    """aiohttp's connection factory, with a cap on open connections: past ``max_connections`` the oldest
    connections that have not sent a complete request (stalled or idle keep-alive) are closed."""

    max_connections = 0
    opened: dict

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler, transport) -> None:
        super().connection_made(handler, transport)
        if not hasattr(self, "opened"):
            self.opened = {}
        self.opened[handler] = time.monotonic()
        if self.max_connections > 0 and len(self.connections) > self.max_connections:
            self._evict(len(self.connections) - self.max_connections, keep=handler)

    def connection_lost(self, handler, exc=None) -> None:
        getattr(self, "opened", {}).pop(handler, None)
        super().connection_lost(handler, exc)

    def _evict(self, n: int, keep) -> None:
        idle = [h for h in self.connections
                if h is not keep and not getattr(h, "_request_in_progress", False) and not h._force_close]
        idle.sort(key=lambda h: self.opened.get(h, 0.0))
        for h in idle[:n]:
            h.force_close()
        if idle[:n]:
            log.info("%d open connections (cap %d): closed %d that sent no complete request",
                     len(self.connections), self.max_connections, len(idle[:n]))

    def stalled(self) -> int:
        """Open connections with no request in progress (waiting for, or receiving, a request head)."""
        return sum(1 for h in self.connections if not getattr(h, "_request_in_progress", False))


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers aiohttp's own errors in the §3 shape, closes a connection
    that takes longer than ``http_header_timeout_s`` to send a request head (or idles that long between
    requests) and keeps at most ``http_max_connections`` open (issue 13)."""

    def __init__(self, app: web.Application, **kwargs):
        config = app[CONFIG]
        kwargs.setdefault("keepalive_timeout", float(config.http_header_timeout_s))
        super().__init__(app, **kwargs)

    async def _make_server(self):
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.max_connections = int(self.app[CONFIG].http_max_connections)
        server.opened = {}
        return server

    @property
    def connections(self) -> int:
        """Open HTTP connections (realtime sessions included)."""
        return len(self.server.connections) if self.server is not None else 0


def create_app(config: ServiceConfig | None = None, data_dir=None) -> web.Application:
    """The local service: ``POST`` enrollment (§2) and ``GET`` realtime WebSocket (§4).

    App state, under typed keys: :data:`.http.CONFIG` (:class:`ServiceConfig`), :data:`.http.TRACE`
    (:class:`ServerTrace`), :data:`.faults.FAULTS` (:class:`FaultInjector`; no plans unless
    ``config.faults``), :data:`.enrollment.ENROLL_SLOTS`, :data:`.realtime.REALTIME` (open sessions,
    per-key counts, the cloned-voice cache and the speech pipeline, created lazily or by the warm-up);
    on startup (``cleanup_ctx``) :data:`.http.STORE` (:class:`VoiceStore` under ``data_dir``),
    :data:`.http.ENROLL_EXECUTOR` and :data:`.http.STORE_EXECUTOR`.
    """
    config = config or ServiceConfig()
    if data_dir is None:
        raise ValueError("create_app needs a data_dir for the voice store")
    app = web.Application(middlewares=[_errors], client_max_size=int(config.max_body_bytes) + 1)
    app[CONFIG] = config
    # qvtools/server/latency.py: loads and checks a latency_from file now (LatencySourceError)
    app[LATENCY] = LatencySource.from_config(config)
    app[TRACE] = ServerTrace()
    app[FAULTS] = FaultInjector(config.faults)  # off (no plans) by default; qvtools/server/faults.py
    app[ENROLL_SLOTS] = DecodeSlots(config.enroll_queue_limit)
    app[REALTIME] = RealtimeState(config)
    app.cleanup_ctx.append(_resources(Path(data_dir)))
    if config.warm_speech:
        app.cleanup_ctx.append(_speech_warmup)
    app.router.add_post(ENROLLMENT_PATH, handle_customization)
    if config.fault_control:  # opt-in control endpoint, never a DashScope path
        app[FAULTS].add_routes(app)
    app.router.add_get(REALTIME_PATH, handle_realtime)
    app.on_shutdown.append(close_sessions)
    app.on_cleanup.append(_stop_asr_lane)
    return app


async def _stop_asr_lane(app: web.Application) -> None:
    """``on_cleanup``: the realtime ASR lane's waiting jobs cancelled; the running one (if any) ends on its own
    thread, not awaited, so a stop is never held by a decode (the default executor may be gone by now)."""
    app[REALTIME].asr_lane.shutdown(wait=False)
