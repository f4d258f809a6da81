"""Retrying a turn that failed for a transient reason, on a new session (issue 18, protocol reference §7.24).

§7.24 (a): a model-serving fault arrives as ``error`` ``COMMON_ERROR`` then close 1011, and "the same turn
usually succeeds on a new session". :func:`run_with_retries` runs a turn, and while the row says
``transient`` (``Turn.transient``, or a refused handshake with 5xx) runs it again -- each attempt opens its
own session -- at most ``attempts`` times with exponential backoff. The row that is kept is the last one,
with ``attempts`` = how many were made. Voices are enrolled before any turn runs (``Experiment._enroll``),
so a retry never creates a voice, and the billing confirmation (``BillingPlan``) counts no retries as voices.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .errors import APIError
from .realtime.endings import transient_http_status

__all__ = ["MAX_ATTEMPTS", "RETRY_BACKOFF_S", "MAX_RETRY_BACKOFF_S", "transient_exception", "run_with_retries"]

log = logging.getLogger(__name__)

#: Attempts per turn (the first one included) when the failure is transient.
MAX_ATTEMPTS = 3
#: Wait before the 2nd attempt (seconds); doubled for each later one, capped at :data:`MAX_RETRY_BACKOFF_S`.
RETRY_BACKOFF_S = 1.0
MAX_RETRY_BACKOFF_S = 10.0


def transient_exception(exc: BaseException) -> bool:
    """True for an exception worth retrying on a new session: a handshake refused with 5xx."""
    return isinstance(exc, APIError) and transient_http_status(getattr(exc, "status", None))


def run_with_retries(run: Callable, task, *, attempts: int = MAX_ATTEMPTS, backoff_s: float = RETRY_BACKOFF_S,
                     sleep: Callable[[float], None] = time.sleep):
    """``run(task) -> (row, turn)`` until the row is not a transient failure, at most ``attempts`` times.

    Returns the last ``(row, turn)`` with ``row["attempts"]`` set; a non-transient failure is never retried."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an integer >= 1, got {attempts!r}")
    for attempt in range(1, attempts + 1):
        row, turn = run(task)
        row["attempts"] = attempt
        if row.get("status") == "completed" or not row.get("transient"):
            return row, turn
        if attempt < attempts:
            delay = min(MAX_RETRY_BACKOFF_S, backoff_s * 2 ** (attempt - 1))
            log.warning("turn %s failed transiently (%s); attempt %d/%d on a new session in %.1f s",
                        row.get("turn_id"), row.get("error"), attempt + 1, attempts, delay)
            sleep(delay)
    return row, turn
