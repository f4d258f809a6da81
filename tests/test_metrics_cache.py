"""metrics' module caches are safe to use from worker threads (issue 19 item 6): concurrent scoring gives the
single-threaded values and the bounded caches stay bounded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from qvtools import metrics


def test_caches_from_many_threads(monkeypatch):
    monkeypatch.setattr(metrics.audio, "_REF_CACHE_SIZE", 3)  # the caches live in qvtools/metrics/audio.py
    metrics.clear_caches()
    sr = 16000
    t = np.arange(sr) / sr
    clips = [(0.3 * np.sin(2 * np.pi * (120 + 15 * i) * t)).astype(np.float32) for i in range(8)]
    expected = [(metrics.loudness_lufs(c, sr), metrics._reference_f0_median(c, sr)) for c in clips]
    metrics.clear_caches()

    def score(i):
        c = clips[i % len(clips)]
        return metrics.loudness_lufs(c, sr), metrics._reference_f0_median(c, sr)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(score, range(64)))
    assert got == [expected[i % len(clips)] for i in range(64)]
    assert len(metrics._REF_F0) <= 3 and set(metrics._METERS) == {sr}
    metrics.clear_caches()
    assert not metrics._REF_F0 and not metrics._METERS
