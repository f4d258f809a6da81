"""Exception hierarchy: one root (:class:`QVError`), fields instead of strings.

Service responses are mapped to these exceptions in one place per transport
(:func:`qvtools.enrollment.raise_for_response` for HTTP, the realtime session for
``error`` events). Messages say what was wrong and what to do; they never carry
the API key.
"""

from __future__ import annotations

__all__ = [
    "QVError",
    "ConfigError",
    "InvalidAudio",
    "APIError",
    "TransportError",
    "RealtimeError",
    "SessionTimeout",
    "VoiceModelMismatch",
    "LatencySourceError",
    "MissingExtra",
    "api_error_from_http",
    "redact",
    "RETRY_AFTER_CAP_S",
]

import json
import re
from typing import Mapping

#: Longest ``Retry-After`` a client honours (seconds); a longer one is capped (a server asking for an hour
#: must not freeze a notebook for an hour).
RETRY_AFTER_CAP_S = 60.0
#: Longest server text kept in an error message (characters).
_MAX_SERVER_TEXT = 300
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"'<>,;]+")
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]+")


class QVError(Exception):
    """Root of every error raised by qvtools."""


class ConfigError(QVError, ValueError):
    """A setting or argument is missing or invalid."""


class MissingExtra(QVError, ModuleNotFoundError):
    """An optional part was asked for without its extra installed (e.g. the local service without
    ``qvtools[local]``). The message names the extra to install; ``name`` is the missing module."""


class InvalidAudio(QVError, ValueError):
    """Audio cannot be used as it is. ``report`` holds the preflight report when there is one."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class APIError(QVError):
    """The service answered with an error (HTTP status + DashScope ``code``)."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None,
                 retry_after: float | None = None):
        self.status = int(status)
        self.code = code
        self.message = message
        self.request_id = request_id
        #: Seconds the service asked to wait (``Retry-After``, capped at :data:`RETRY_AFTER_CAP_S`), or None.
        self.retry_after = retry_after
        super().__init__(f"{status} {code}: {message} (request_id={request_id})")

    @property
    def retryable(self) -> bool:
        """429 and 5xx may succeed later; 4xx client mistakes never do."""
        return self.status == 429 or self.status >= 500

    def __reduce__(self):
        return (type(self), (self.status, self.code, self.message, self.request_id, self.retry_after))


class TransportError(QVError):
    """The request never got a service answer (connection refused, reset, timeout).

    Safe to retry for idempotent calls; for a billable ``create`` the voice may or
    may not exist, so reconcile with ``list`` first.
    """


class SessionTimeout(TransportError, TimeoutError):
    """A realtime wait ran past its timeout."""


class RealtimeError(QVError):
    """The realtime service sent an ``error`` event."""

    def __init__(self, code: str | None, message: str, *, type: str | None = None,
                 param: str | None = None, event_id: str | None = None):
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.event_id = event_id
        where = f" (param {param})" if param else ""
        super().__init__(f"{code}: {message}{where}")

    def __reduce__(self):
        return (_rebuild_realtime_error, (self.code, self.message, self.type, self.param, self.event_id))


def _rebuild_realtime_error(code, message, type_, param, event_id):
    return RealtimeError(code, message, type=type_, param=param, event_id=event_id)


class VoiceModelMismatch(ConfigError):
    """A cloned voice was enrolled for another target model than the session model."""


class LatencySourceError(ConfigError):
    """The local service's latency source cannot be used (``ServiceConfig.latency_from`` and friends,
    :mod:`qvtools.server.latency`). ``problem``: ``missing`` (no such path / no results in the directory),
    ``format`` (not a readable results table), ``columns`` (replay columns absent), ``no_rows`` (no completed
    turn to replay), ``model`` (no rows for the session's model: ``model`` and the file's ``models``) or
    ``config`` (a bad setting). ``source`` is the file's short name, never a full path."""

    def __init__(self, message: str, *, source: str | None = None, problem: str = "config",
                 model: str | None = None, models=()):
        super().__init__(message)
        self.source = source
        self.problem = problem
        self.model = model
        self.models = list(models)

    def __reduce__(self):
        return (_rebuild_latency_error, (str(self), self.source, self.problem, self.model, self.models))


def _rebuild_latency_error(message, source, problem, model, models):
    return LatencySourceError(message, source=source, problem=problem, model=model, models=models)


def redact(text, *secrets: str | None, limit: int | None = _MAX_SERVER_TEXT, keep_newlines: bool = False) -> str:
    """The one redaction (issue 19 item 4) of text that came from a server or may hold the key, before it is
    logged, raised, saved in a result row, ``run.json`` or a report: each secret (the API key) and anything
    that looks like a key (``Bearer …``, ``sk-…``) is masked, control characters are dropped (a newline too,
    unless ``keep_newlines``: a whole document such as ``run.json``), and the text is cut to ``limit``
    characters (None: not cut)."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    out = _BEARER.sub(lambda m: m.group(1) + "***", out)
    out = _KEYLIKE.sub("***", out)
    keep = " \t\n" if keep_newlines else " \t"
    out = "".join(ch if ch.isprintable() or ch in keep else " " for ch in out)
    if limit is not None and len(out) > limit:
        out = out[:limit] + "…"
    return out


def _retry_after_s(value) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; HTTP dates are ignored), capped."""
    try:
        v = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if v is None or v != v:  # NaN
        return None
    return max(0.0, min(v, RETRY_AFTER_CAP_S))


def api_error_from_http(status: int, body, headers: Mapping | None = None, reason: str | None = None, *,
                        secrets=()) -> APIError:
    """The one mapping of a non-200 HTTP answer (an enrollment call or a refused realtime handshake) to
    :class:`APIError`. Follows the SDK's parsing (protocol reference §3): ``code``, ``message`` (or ``msg``),
    ``request_id`` from a JSON body; a non-JSON body gives code ``"Unknown"``; ``request_id`` falls back to the
    ``x-request-id`` header; ``Retry-After`` is kept (capped). Server text is redacted (:func:`redact`)."""
    def header(name):
        if headers is None:
            return None
        try:
            return headers.get(name) or headers.get(name.lower())
        except AttributeError:
            return None

    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    obj = None
    if isinstance(body, str) and body.strip():
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            obj = None
    if isinstance(obj, dict):
        code = obj.get("code") or "Unknown"
        message = obj.get("message") or obj.get("msg") or reason or f"HTTP {status}"
        rid = obj.get("request_id") or header("x-request-id")
    else:
        code = "Unknown"
        text = (body or "").strip() if isinstance(body, str) else ""
        message = (text[:200] if text else reason) or f"HTTP {status} with a non-JSON body"
        rid = header("x-request-id")
    rid = rid if isinstance(rid, str) else None
    return APIError(int(status or 0), redact(code, *secrets), redact(message, *secrets),
                    redact(rid, *secrets) if rid else None, _retry_after_s(header("Retry-After")))
