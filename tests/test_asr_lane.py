"""The realtime service's ASR lane (qvtools/server/asr_lane.py): one thread, jobs by priority then arrival."""

from __future__ import annotations

import threading

import pytest

from qvtools.server.asr_lane import EARLY, FINAL, PARTIAL, SPECULATIVE, AsrLane


def test_jobs_run_one_at_a_time_by_priority_then_arrival():
    lane = AsrLane()
    gate, started = threading.Event(), threading.Event()
    order = []
    first = lane.submit(FINAL, lambda: started.set() or gate.wait(10))  # holds the thread while the others queue
    assert started.wait(10)
    futures = [lane.submit(p, order.append, name) for p, name in
               ((PARTIAL, "partial"), (FINAL, "final-1"), (SPECULATIVE, "speculative"), (EARLY, "early"),
                (FINAL, "final-2"))]
    assert lane.pending() == 5
    gate.set()
    for f in [first, *futures]:
        f.result(timeout=10)
    assert order == ["early", "final-1", "speculative", "final-2", "partial"]
    assert SPECULATIVE == FINAL  # a speculative transcription is the final one started early
    lane.shutdown()


def test_errors_reach_the_caller_and_cancelled_jobs_are_skipped():
    lane = AsrLane()
    gate, started = threading.Event(), threading.Event()
    ran = []
    lane.submit(FINAL, lambda: started.set() or gate.wait(10))
    assert started.wait(10)
    skipped = lane.submit(FINAL, ran.append, "skipped")
    boom = lane.submit(FINAL, int, "not a number")
    assert skipped.cancel()
    gate.set()
    with pytest.raises(ValueError):
        boom.result(timeout=10)
    assert lane.submit(EARLY, lambda: 42).result(timeout=10) == 42
    assert ran == []
    lane.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        lane.submit(EARLY, print)


def test_shutdown_cancels_what_waits_and_lets_the_running_job_finish():
    lane = AsrLane()
    gate, started = threading.Event(), threading.Event()
    running = lane.submit(FINAL, lambda: started.set() or gate.wait(10))
    assert started.wait(10)
    waiting = lane.submit(FINAL, lambda: "never")
    lane.shutdown(wait=False)
    assert waiting.cancelled()
    gate.set()
    assert running.result(timeout=10) is True
