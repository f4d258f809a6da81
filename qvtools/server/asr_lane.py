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
from concurrent.futures import Future

__all__ = ["AsrLane", "EARLY", "FINAL", "SPECULATIVE", "PARTIAL"]

#: Priorities (lower runs first). A speculative transcription is the final one started early (the commit waits
#: for it when it covers the same audio), so the two share a priority.
EARLY, FINAL, PARTIAL = 0, 1, 2
SPECULATIVE = FINAL


class AsrLane:
    """A single worker thread running submitted callables by priority; thread-safe. Started on first submit."""

    def __init__(self, name: str = "qv-asr"):
        self._name = name
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, priority: int, fn, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` on the lane; a :class:`concurrent.futures.Future` of its result. A
        future cancelled before its job starts is skipped. After :meth:`shutdown`: RuntimeError."""
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the ASR lane is shut down")
            heapq.heappush(self._heap, (int(priority), next(self._seq), fut, fn, args, kwargs))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def pending(self) -> int:
        """Jobs waiting (not the one running)."""
        with self._cv:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if not self._heap:
                    return
                _p, _s, fut, fn, args, kwargs = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiter, as an executor does
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel the waiting jobs, let the running one finish (joined when ``wait``); no more submits."""
        with self._cv:
            self._closed = True
            for _p, _s, fut, *_rest in self._heap:
                fut.cancel()
            self._heap.clear()
            self._cv.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
