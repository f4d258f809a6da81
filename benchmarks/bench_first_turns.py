"""N sessions that start together, none naming its language: how soon each first turn's reply starts (issue 22
item 4: early language detection and the ASR lane).

Every session connects at the same moment and speaks the packaged English prompts (rotating, a distinct
inaudible dither per session and turn) paced like a microphone (qvtools.realtime.RealtimeSession.send_audio,
realtime=True), server VAD with 800 ms of silence, transcription off, ``--turns`` turns each. This is the worst
case for language detection: all first utterances reach the service, and its one ASR lane, at once. The local
service runs in this process (LocalService), so the script can also time the jobs the connections hand to the
shared executor (``_Connection.run_cpu``): how long each kind waited for a worker, and how long it ran.

Prints, for first turns and later turns separately: processing (``speech_stopped`` -> first audio delta, the
VAD silence window NOT included) p50 / p95 / max; then the executor jobs by kind. ``--early 0`` switches the
early detection off (ServiceConfig.realtime_early_language_s) to compare.
Usage: python benchmarks/bench_first_turns.py [--sessions 16] [--turns 2] [--early 1.5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import threading
import time

import numpy as np

from qvtools import audio
from qvtools.config import Settings
from qvtools.realtime import RealtimeSession
from qvtools.resources import samples_dir
from qvtools.server import LocalService, ServiceConfig
from qvtools.server import realtime as rt

MODEL = "qwen3.5-omni-flash-realtime"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--early", type=float, default=ServiceConfig().realtime_early_language_s,
                    help="ServiceConfig.realtime_early_language_s (0: off)")
    args = ap.parse_args(argv)
    if not (1 <= args.sessions <= 64 and 1 <= args.turns <= 10):
        ap.error("bounded: 1 <= --sessions <= 64, 1 <= --turns <= 10")
    meta = json.loads((samples_dir() / "prompts.json").read_text(encoding="utf-8"))
    prompts = [audio.load(samples_dir() / x["file"], mono=True) for x in meta["prompts"] if x["language"] == "en"]
    jobs = []
    original = rt._Connection.run_cpu

    async def run_cpu(self, fn, *a, **kw):  # the same call, timed: queued -> started -> ended
        queued = time.perf_counter()

        def timed():
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                jobs.append((getattr(fn, "__name__", type(fn).__name__), started - queued,
                             time.perf_counter() - started))
        return await self.loop.run_in_executor(None, timed)

    rt._Connection.run_cpu = run_cpu
    turns = []
    errors = collections.Counter()
    lock = threading.Lock()

    def session(i: int, svc, start: threading.Event) -> None:
        settings = Settings(region="local", base_url=svc.url, api_key=f"sk-first-turns-{i}", timeout_s=120)
        try:
            start.wait(60)
            with RealtimeSession(settings, MODEL, silence_duration_ms=800, transcription=False, timeout=120,
                                 response_timeout=120) as sess:
                for k in range(args.turns):
                    x, sr = prompts[(i + k) % len(prompts)]
                    x = (x + 1e-4 * np.random.default_rng((i, k)).standard_normal(len(x))).astype(np.float32)
                    turn = sess.send_audio((x, sr), realtime=True, timeout=120)
                    m = turn.marks
                    with lock:
                        if turn.status != "completed" or "first_audio_delta" not in m or "speech_stopped" not in m:
                            errors[turn.status] += 1
                        else:
                            turns.append((k, 1000.0 * (m["first_audio_delta"] - m["speech_stopped"])))
        except Exception as exc:  # counted and shown, never hidden
            with lock:
                errors[type(exc).__name__] += 1

    try:
        config = ServiceConfig(realtime_early_language_s=args.early, realtime_latency="none")
        with tempfile.TemporaryDirectory(prefix="qvtools-first-turns-") as tmp, LocalService(tmp, config=config) as svc:
            speech = svc.app[rt.REALTIME].get_speech()
            if not speech.ready.wait(300):
                raise SystemExit("the speech engines did not load within 300 s")
            start = threading.Event()
            threads = [threading.Thread(target=session, args=(i, svc, start)) for i in range(args.sessions)]
            for t in threads:
                t.start()
            load0 = os.getloadavg()[0]
            start.set()
            for t in threads:
                t.join()
    finally:
        rt._Connection.run_cpu = original
    print(f"# {args.sessions} sessions starting together, {args.turns} turns each, no language named; early "
          f"detection {args.early:g} s; English prompts paced like a microphone, server VAD 800 ms; processing = "
          f"speech_stopped -> first audio delta (VAD window not included); load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; errors {dict(errors) or 'none'}")
    for name, sel in (("first turns", [p for k, p in turns if k == 0]), ("later turns", [p for k, p in turns if k > 0])):
        if sel:
            print(f"{name:12} n={len(sel):3d} processing p50 {np.percentile(sel, 50):7.0f} ms  p95 "
                  f"{np.percentile(sel, 95):7.0f} ms  max {max(sel):7.0f} ms")
    kinds = collections.defaultdict(list)
    for name, waited, ran in jobs:
        kinds[name].append((waited, ran))
    print("shared-executor jobs (the ASR lane's are not here): kind, count, waited for a worker p50 / max s, ran s in all")
    for name, v in sorted(kinds.items(), key=lambda kv: -max(w for w, _r in kv[1])):
        print(f"  {name:24} {len(v):4d}  {np.median([w for w, _r in v]):6.2f} / {max(w for w, _r in v):6.2f}  "
              f"{sum(r for _w, r in v):7.1f}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
