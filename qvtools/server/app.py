"""aiohttp application of the local service: factory, auth, body limits and error mapping.

Every error leaves as the documented DashScope shape ``{"request_id","code","message"}``
(protocol reference §3), also for client mistakes aiohttp itself would answer in plain
text (unknown path, wrong method); unexpected failures become 500 ``InternalError``
and are logged, never shown.

Oversized bodies: the body is read in chunks and refused as soon as it passes
``ServiceConfig.max_body_bytes`` (a ``Content-Length`` above it is refused before
reading anything) with ``400 InvalidParameter`` "Exceeded limit on max bytes per
data-uri item : 10485760" -- the documented error for a too-large data URL, the only
large field of an enrollment request (§3, marked **[guess]** there). aiohttp discards
the unread rest of the body, so nothing past the limit is buffered.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..config import ENROLLMENT_PATH, REALTIME_PATH
from .config import ServiceConfig
from .faults import FaultInjector
from .store import VoiceStore

__all__ = ["create_app", "authenticate", "error_response", "read_json", "ServerTrace", "ServiceError",
           "new_request_id", "ServiceRunner", "redact"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


def new_request_id() -> str:
    """A UUID ``request_id`` (every response carries one, §5 item 3)."""
    return str(uuid.uuid4())


class ServiceError(Exception):
    """A documented DashScope error; turned into its JSON body by :func:`error_response`."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # extra answer headers (``Retry-After`` of a 429)


def error_response(status: int, code: str, message: str, request_id: str | None = None,
                   headers: dict | None = None) -> web.Response:
    """The documented error body ``{"request_id","code","message"}`` (§3)."""
    rid = request_id or new_request_id()
    return web.json_response({"request_id": rid, "code": code, "message": message}, status=status,
                             headers={**(headers or {}), "x-request-id": rid})


def _http_error(status: int, code: str, message: str) -> web.HTTPException:
    rid = new_request_id()
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound,
           405: web.HTTPMethodNotAllowed}.get(status, web.HTTPBadRequest)
    body = json.dumps({"request_id": rid, "code": code, "message": message})
    if cls is web.HTTPMethodNotAllowed:
        return cls("POST", ["POST"], text=body, content_type="application/json", headers={"x-request-id": rid})
    return cls(text=body, content_type="application/json", headers={"x-request-id": rid})


class ServerTrace:
    """Append-only, thread-safe record of every realtime event the service sent.

    Each record is ``(session_id, event_type, response_id, t_send)`` with ``t_send`` from
    :func:`time.perf_counter` (same clock as the client's receive marks in-process).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._records: list[tuple[str | None, str, str | None, float]] = []

    def record(self, session_id, event_type: str, response_id=None, t: float | None = None) -> None:
        t = time.perf_counter() if t is None else float(t)
        with self._lock:
            self._records.append((session_id, event_type, response_id, t))

    def records(self, session_id=None) -> list[tuple]:
        """A snapshot copy, optionally only one session's records."""
        with self._lock:
            out = list(self._records)
        return out if session_id is None else [r for r in out if r[0] == session_id]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __iter__(self):
        return iter(self.records())

    def __repr__(self) -> str:
        return f"ServerTrace({len(self)} records)"


def authenticate(request: web.Request) -> str:
    """The caller's API key (its voice scope), or raise the documented 401 (§3, §5 item 1).

    ``Authorization: Bearer <key>`` with a non-empty key, checked against
    ``ServiceConfig.api_key`` when one is configured. Usable before a WebSocket upgrade.
    """
    header = request.headers.get("Authorization")
    if header is None or not header.strip():
        raise _http_error(401, "InvalidApiKey", "No API-key provided.")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or not _encodable(key):
        # a non-UTF-8 header arrives with surrogate escapes (issue 13: was a 500); never echoed or logged
        raise _http_error(401, "InvalidApiKey", "Invalid API-key provided.")
    expected = request.app["config"].api_key
    if expected is not None and not hmac.compare_digest(key.encode("utf-8"), str(expected).encode("utf-8")):
        raise _http_error(401, "InvalidApiKey", "Invalid API-key provided.")
    return key


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_BODY_INVALID = "Required body invalid, please check the request body format."


async def read_json(request: web.Request) -> dict:
    """The JSON object body, read in chunks and refused past ``max_body_bytes`` (never fully buffered)."""
    config: ServiceConfig = request.app["config"]
    limit = int(config.max_body_bytes)
    too_big = ServiceError(400, "InvalidParameter",
                           f"Exceeded limit on max bytes per data-uri item : {config.max_data_uri_bytes}")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    ctype = request.content_type  # "application/octet-stream" when absent (aiohttp default)
    if request.headers.get("Content-Type") and ctype != "application/json" and not ctype.endswith("+json"):
        raise ServiceError(400, "InvalidParameter", _BODY_INVALID)
    buf = bytearray()
    idle = float(config.http_body_timeout_s)
    while True:
        # a body that stops arriving for http_body_timeout_s is cut (issue 13); a slow one that keeps
        # moving is never timed out as a whole
        try:
            chunk = await asyncio.wait_for(request.content.read(_CHUNK), idle if idle > 0 else None)
        except asyncio.TimeoutError:
            err = ServiceError(408, "RequestTimeOut",
                               f"The request body stopped arriving for {idle:g} s; the connection is closed.")
            err.close = True
            raise err from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise too_big
    try:
        text = buf.decode("utf-8")  # strict: invalid UTF-8 is refused, never smuggled in as surrogates
        del buf
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: JSON nested ~1,000 deep
        raise ServiceError(400, "InvalidParameter", _BODY_INVALID) from None
    if not isinstance(body, dict):
        raise ServiceError(400, "InvalidParameter", _BODY_INVALID)
    return body


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
        if exc.content_type == "application/json":  # ours (_http_error): already in the §3 shape
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


async def _realtime(request: web.Request):
    # Lazy import: the realtime half lives in its own module (qvtools/server/realtime.py).
    from .realtime import handle_realtime

    return await handle_realtime(request)


async def _on_shutdown(app: web.Application) -> None:
    # Close open realtime sessions so a client that never hangs up cannot stall a stop.
    from .realtime import close_sessions

    await close_sessions(app)


async def _on_cleanup(app: web.Application) -> None:
    app["enroll_executor"].shutdown(wait=True, cancel_futures=True)
    app["store_executor"].shutdown(wait=True, cancel_futures=True)
    app["store"].close()


def _warm_speech(speech, cancel: threading.Event) -> None:
    try:
        if speech.warm(cancel):
            log.info("speech engines loaded")
    except Exception as exc:  # the first turn loads (and reports) it again; the service stays up
        log.warning("speech warm-up failed (%s: %s); engines will load on the first turn", type(exc).__name__, exc)


def _speech_warmup():
    """``(on_startup, on_shutdown)`` handlers that load the speech engines in the background.

    on_startup only *schedules* :meth:`SpeechPipeline.warm` in the default executor (readiness is
    never delayed); on_shutdown cancels it between stages so stopping a fresh service stays quick.
    """
    cancel = threading.Event()

    async def start(app: web.Application) -> None:
        from .realtime import get_speech

        speech = get_speech(app)
        asyncio.get_running_loop().run_in_executor(None, _warm_speech, speech, cancel)

    async def stop(app: web.Application) -> None:
        cancel.set()

    return start, stop


_SECRETS = re.compile(r"(?i)(bearer\s+)\S+|\bsk-[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """``text`` cut to one short line, with anything like a key (``Bearer …``, ``sk-…``) masked."""
    line = str(text).split("\n", 1)[0][:160]
    line = _SECRETS.sub(lambda m: (m.group(1) or "") + "***", line)
    return line.encode("ascii", "backslashreplace").decode("ascii")


def _exc_summary(exc: BaseException | None) -> str:
    if exc is None:
        return "-"
    # aiohttp's parser messages quote the offending bytes after a colon ("Invalid header value char:
    # b'Authorization: …'"): only the part before it is kept
    text = str(getattr(exc, "message", None) or exc).split(":", 1)[0]
    return f"{type(exc).__name__}: {redact(text)}"


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
        if self.max_connections > 0 and len(self._connections) > self.max_connections:
            self._evict(len(self._connections) - self.max_connections, keep=handler)

    def connection_lost(self, handler, exc=None) -> None:
        getattr(self, "opened", {}).pop(handler, None)
        super().connection_lost(handler, exc)

    def _evict(self, n: int, keep) -> None:
        idle = [h for h in self._connections
                if h is not keep and not getattr(h, "_request_in_progress", False) and not h._force_close]
        idle.sort(key=lambda h: self.opened.get(h, 0.0))
        for h in idle[:n]:
            h.force_close()
        if idle[:n]:
            log.info("%d open connections (cap %d): closed %d that sent no complete request",
                     len(self._connections), self.max_connections, len(idle[:n]))

    def stalled(self) -> int:
        """Open connections with no request in progress (waiting for, or receiving, a request head)."""
        return sum(1 for h in self._connections if not getattr(h, "_request_in_progress", False))


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers aiohttp's own errors in the §3 shape, closes a connection
    that takes longer than ``http_header_timeout_s`` to send a request head (or idles that long between
    requests) and keeps at most ``http_max_connections`` open (issue 13)."""

    def __init__(self, app: web.Application, **kwargs):
        config: ServiceConfig = app["config"]
        kwargs.setdefault("keepalive_timeout", float(config.http_header_timeout_s))
        super().__init__(app, **kwargs)

    async def _make_server(self):
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.max_connections = int(self._app["config"].http_max_connections)
        server.opened = {}
        return server

    @property
    def connections(self) -> int:
        """Open HTTP connections (realtime sessions included)."""
        return len(self.server._connections) if self.server is not None else 0


def create_app(config: ServiceConfig | None = None, data_dir=None) -> web.Application:
    """The local service: ``POST`` enrollment (§2) and ``GET`` realtime WebSocket (§4).

    App keys: ``"config"`` (:class:`ServiceConfig`), ``"store"`` (:class:`VoiceStore` under
    ``data_dir``), ``"trace"`` (:class:`ServerTrace`), ``"speech"`` (None; created lazily by
    the realtime half, or on startup when ``config.warm_speech`` starts loading it in the background),
    ``"faults"`` (:class:`FaultInjector`; no plans unless ``config.faults``), ``"enroll_executor"``
    (the enrollment handlers' own thread pool).
    """
    from .enrollment import _DecodeSlots, handle_customization

    config = config or ServiceConfig()
    if data_dir is None:
        raise ValueError("create_app needs a data_dir for the voice store")
    app = web.Application(middlewares=[_errors], client_max_size=int(config.max_body_bytes) + 1)
    # The documented contract uses plain string keys; silence aiohttp's AppKey recommendation for them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["config"] = config
        app["store"] = VoiceStore(Path(data_dir))
        app["trace"] = ServerTrace()
        app["speech"] = None
        app["faults"] = FaultInjector(config.faults)  # off (no plans) by default; qvtools/server/faults.py
        # Enrollment's decode / VAD / analysis get their own threads, so they do not queue behind the
        # realtime sessions' speech work in the default executor (bench_load: list p95 grew to seconds);
        # at most enroll_queue_limit creates run or wait there (beyond: 429, enrollment.py).
        app["enroll_executor"] = ThreadPoolExecutor(max_workers=max(1, int(config.enroll_workers)),
                                                    thread_name_prefix="qv-enroll")
        app["enroll_slots"] = _DecodeSlots(config.enroll_queue_limit)
        # list / delete / the insert of a create: short SQLite calls on their own pool, never behind
        # decode work (issue 13: a list waited 1.8 s during 12 creates)
        app["store_executor"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qv-store")
    app.router.add_post(ENROLLMENT_PATH, handle_customization)
    if config.fault_control:  # opt-in control endpoint, never a DashScope path
        app["faults"].add_routes(app)
    app.router.add_get(REALTIME_PATH, _realtime)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    if config.warm_speech:
        start, stop = _speech_warmup()
        app.on_startup.append(start)
        app.on_shutdown.append(stop)
    return app
