"""The record of every realtime event the local service sent (``LocalService.trace``)."""

from __future__ import annotations

import threading
import time

__all__ = ["ServerTrace"]


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
