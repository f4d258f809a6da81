"""One thread for the realtime service's speech recognition, in priority order (issue 22 item 4).

Whisper runs one utterance at a time (:mod:`qvtools.asr` holds one lock: both models share the two cores). When
ASR jobs ran in the event loop's default executor, every worker thread waiting for that lock was a thread the
other work could not use: at 16 paced sessions the six workers all sat on the lock while a voice profile or an
opener -- jobs of milliseconds -- waited up to 5 s behind them (measured with benchmarks/bench_load.py-like
sessions). The lane is a single thread of its own, so ASR never occupies the shared executor, and it takes its
jobs by priority (lower first, then first come): the early language detection a reply's opener waits for before
a turn's final (or speculative) transcription, before a manual-mode partial.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["AsrLane", "EARLY", "FINAL", "SPECULATIVE", "PARTIAL"]

#: Priorities (lower runs first). A speculative transcription is the final one started early (the commit waits
#: for it when it covers the same audio), so the two share a priority.
EARLY, FINAL, PARTIAL = 0, 1, 2
SPECULATIVE = FINAL


class AsrLane:
    """Submitted callables run one at a time by priority; thread-safe. The thread is a one-worker
    :class:`~concurrent.futures.ThreadPoolExecutor` (so interpreter exit waits for a decode in progress instead
    of tearing the speech engines down under it); each submit queues one "run the best waiting job" step on it."""

    def __init__(self, name: str = "qv-asr"):
        self._heap: list = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    def submit(self, priority: int, fn, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on the lane; a :class:`concurrent.futures.Future` of its result. A
        future cancelled before its job starts is skipped. After :meth:`shutdown`: RuntimeError."""
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the ASR lane is shut down")
            heapq.heappush(self._heap, (int(priority), next(self._seq), fut, fn, args, kwargs))
            self._pool.submit(self._run_best)
        return fut

    def pending(self) -> int:
        """Jobs waiting (not the one running)."""
        with self._lock:
            return len(self._heap)

    def _run_best(self) -> None:
        with self._lock:
            if not self._heap:
                return
            _p, _s, fut, fn, args, kwargs = heapq.heappop(self._heap)
        if not fut.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the waiter, as an executor does
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel the waiting jobs, let the running one finish (joined when ``wait``); no more submits."""
        with self._lock:
            self._closed = True
            for _p, _s, fut, *_rest in self._heap:
                fut.cancel()
            self._heap.clear()
        self._pool.shutdown(wait=wait, cancel_futures=True)
