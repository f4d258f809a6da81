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
]


class QVError(Exception):
    """Root of every error raised by qvtools."""


class ConfigError(QVError, ValueError):
    """A setting or argument is missing or invalid."""


class InvalidAudio(QVError, ValueError):
    """Audio cannot be used as it is. ``report`` holds the preflight report when there is one."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class APIError(QVError):
    """The service answered with an error (HTTP status + DashScope ``code``)."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        self.status = int(status)
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{status} {code}: {message} (request_id={request_id})")

    @property
    def retryable(self) -> bool:
        """429 and 5xx may succeed later; 4xx client mistakes never do."""
        return self.status == 429 or self.status >= 500

    def __reduce__(self):
        return (type(self), (self.status, self.code, self.message, self.request_id))


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
