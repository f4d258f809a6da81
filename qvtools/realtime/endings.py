"""How realtime sessions and turns end on the real service (protocol reference §7.23, §7.24): one
definition of the close codes, the observed error texts and what a client makes of them, shared by the
client (:mod:`qvtools.realtime.turn`, :mod:`qvtools.realtime.session`), the experiment runner and the
local service's fault injection (:mod:`qvtools.server.faults`).

- §7.24 (a) a model-serving fault: ``error`` code ``COMMON_ERROR`` (:data:`MODEL_SERVING_ERROR`), then close
  **1011** with that message as the reason. Transient: the same turn usually succeeds on a new session.
- §7.24 (b) parameter errors close with **1007** and the reason (e.g. :func:`voice_error_reason`).
- §7.24 (c) a built-in voice the family lacks: each VAD turn ended with ``speech_stopped`` and, ~11 ms later,
  a close without a status code (**1005**) -- no ``error`` event, no ``response.*`` (one report).
- §7.23 ``semantic_vad`` rejects an input with a non-fatal ``error`` (:data:`SEMANTIC_VAD_REJECTED`); the
  socket stays open and the session stays usable.
"""

from __future__ import annotations

__all__ = ["CLOSE_NORMAL", "CLOSE_INVALID_PAYLOAD", "CLOSE_NO_STATUS", "CLOSE_ABNORMAL", "CLOSE_INTERNAL_ERROR",
           "MODEL_SERVING_CODE", "MODEL_SERVING_ERROR", "SEMANTIC_VAD_REJECTED", "REJECTED_CODE",
           "voice_error_reason", "is_semantic_vad_rejection", "transient_close", "transient_error_code",
           "transient_http_status", "bare_close_message"]

#: RFC 6455 §7.4.1 close codes as the service uses them (§7.12, §7.24).
CLOSE_NORMAL = 1000
CLOSE_INVALID_PAYLOAD = 1007  # §7.12 idle close, §7.24 (b) parameter errors
CLOSE_NO_STATUS = 1005  # a close frame without a status code (§7.24 c)
CLOSE_ABNORMAL = 1006  # the TCP connection ended without a close frame
CLOSE_INTERNAL_ERROR = 1011  # §7.24 (a) model-serving fault

#: §7.24 (a), as recorded (Qwen-Live-Harness test; seen intermittently on qwen3.8).
MODEL_SERVING_CODE = "COMMON_ERROR"
MODEL_SERVING_ERROR = "<50002> InternalError.Algo.ModelServingError: Internal Error calling model processing."
#: §7.23: the message of the non-fatal error a semantic-VAD rejection sends (no ``code`` recorded).
SEMANTIC_VAD_REJECTED = "Input speech was not accepted by semantic turn detection"
#: The code qvtools gives a rejected turn (``Turn.error`` starts with it; the service sends none, §7.23).
REJECTED_CODE = "semantic_vad_rejected"


def voice_error_reason(voice: str) -> str:
    """§7.24 (b): the reason of a 1007 close for a voice the family lacks (same text as §7.3)."""
    return f"<400> InternalError.Algo.InvalidParameter: Voice '{voice}' is not supported."


def is_semantic_vad_rejection(message) -> bool:
    """True for the §7.23 rejection text (matched as a prefix: the service may append details)."""
    return isinstance(message, str) and message.strip().startswith(SEMANTIC_VAD_REJECTED)


def transient_close(code: int | None, during_response: bool) -> bool:
    """Whether a close is worth retrying on a new session: 1011 always (§7.24 a); an abnormal end
    (1006, no close frame) or a close with an unexpected code while a response was streaming."""
    if code == CLOSE_INTERNAL_ERROR:
        return True
    if not during_response:
        return False
    return code not in (CLOSE_NORMAL, CLOSE_INVALID_PAYLOAD, CLOSE_NO_STATUS)


def transient_error_code(code) -> bool:
    """True for an ``error`` event code that marks a model-serving fault (§7.24 a)."""
    return code == MODEL_SERVING_CODE


def transient_http_status(status) -> bool:
    """True for a refused handshake worth retrying (5xx: the service side failed, §3/§4.5 d)."""
    return isinstance(status, int) and 500 <= status <= 599


def bare_close_message(voice: str | None, family: str) -> str:
    """``Turn.error`` for a close without a status code right after ``speech_stopped`` (§7.24 c)."""
    return (f"the service closed the connection without a status code (1005) and without an error event right "
            f"after speech_stopped; this is how a built-in voice the model family lacks was seen to fail "
            f"(§7.24 c): voice {voice!r} on family {family!r}. Pick a voice the family offers "
            f"(qvtools.catalog.family(model).voices) or a clone enrolled for this model")
