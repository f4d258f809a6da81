"""The HTTP side every handler shares: errors, auth, JSON body reading, request ids and the app keys.

Handlers (:mod:`.enrollment`, :mod:`.faults`, :mod:`.realtime`) import from here; :mod:`.app` imports
the handlers, never the reverse, so the package has no import cycle (issue 12).

Every error leaves as the documented DashScope shape ``{"request_id","code","message"}`` built by
:func:`error_response` (``../shared/reference/dashscope-protocol.md`` §3).

App state lives on the :class:`aiohttp.web.Application` under the typed keys below (aiohttp's
``web.AppKey``). A key whose value type is defined by a handler module lives beside that type, so the
import direction stays one way: :data:`qvtools.server.faults.FAULTS`,
:data:`qvtools.server.enrollment.ENROLL_SLOTS`, :data:`qvtools.server.realtime.REALTIME`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .config import ServiceConfig
from .latency import LatencySource
from .store import VoiceStore
from .trace import ServerTrace

__all__ = ["ServiceError", "authenticate", "read_json", "error_response", "http_error", "new_request_id",
           "CONFIG", "STORE", "TRACE", "ENROLL_EXECUTOR", "STORE_EXECUTOR", "LATENCY"]

CONFIG = web.AppKey("config", ServiceConfig)
STORE = web.AppKey("store", VoiceStore)  # the voice store under the data dir (opened on startup)
TRACE = web.AppKey("trace", ServerTrace)  # every realtime event sent, with its send time
# what realtime responses draw their delays from (simulated profiles, a replayed run, none); built once
# from CONFIG by create_app, so a bad latency_from stops the service before it serves
LATENCY = web.AppKey("latency", LatencySource)
# Enrollment's decode / VAD / analysis run on their own threads, so they do not queue behind the
# realtime sessions' speech work in the default executor (bench_load: list p95 grew to seconds).
ENROLL_EXECUTOR = web.AppKey("enroll_executor", ThreadPoolExecutor)
# list / delete / the insert of a create: short SQLite calls on their own pool, never behind decode
# work (issue 13: a list waited 1.8 s during 12 creates)
STORE_EXECUTOR = web.AppKey("store_executor", ThreadPoolExecutor)

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
    """The documented error body ``{"request_id","code","message"}`` (§3): the one builder of it."""
    rid = request_id or new_request_id()
    return web.json_response({"request_id": rid, "code": code, "message": message}, status=status,
                             headers={**(headers or {}), "x-request-id": rid})


def http_error(status: int, code: str, message: str) -> web.HTTPException:
    """The §3 error body as an ``HTTPException`` (raisable before a WebSocket upgrade, e.g. the 401)."""
    rid = new_request_id()
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound,
           405: web.HTTPMethodNotAllowed}.get(status, web.HTTPBadRequest)
    body = json.dumps({"request_id": rid, "code": code, "message": message})
    if cls is web.HTTPMethodNotAllowed:
        return cls("POST", ["POST"], text=body, content_type="application/json", headers={"x-request-id": rid})
    return cls(text=body, content_type="application/json", headers={"x-request-id": rid})


def authenticate(request: web.Request) -> str:
    """The caller's API key (its voice scope), or raise the documented 401 (§3, §5 item 1).

    ``Authorization: Bearer <key>`` with a non-empty key, checked against
    ``ServiceConfig.api_key`` when one is configured. Usable before a WebSocket upgrade.
    """
    header = request.headers.get("Authorization")
    if header is None or not header.strip():
        raise http_error(401, "InvalidApiKey", "No API-key provided.")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or not _encodable(key):
        # a non-UTF-8 header arrives with surrogate escapes (issue 13: was a 500); never echoed or logged
        raise http_error(401, "InvalidApiKey", "Invalid API-key provided.")
    expected = request.app[CONFIG].api_key
    if expected is not None and not hmac.compare_digest(key.encode("utf-8"), str(expected).encode("utf-8")):
        raise http_error(401, "InvalidApiKey", "Invalid API-key provided.")
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
    config: ServiceConfig = request.app[CONFIG]
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
