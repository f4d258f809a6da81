"""Runner overhead per turn: the time qvtools.experiment spends that is not the realtime session or
the metrics (task building, journal append + fsync, audio/Turn saving, executor hand-off, progress bar,
results.parquet consolidation).

    /work/venv/bin/python benchmarks/bench_runner.py [--turns-per-model 3]

Runs on the embedded local service with scoring disabled (metrics=()), so the session time dominates
and the overhead is what remains. A first run enrolls the voices; the measured run reuses them
(one enrollment per voice per model), so enrollment is not counted. Also times the bare journal
(append_row with fsync, read_turns) on 1,000 rows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from qvtools import experiment as ex
from qvtools.config import Settings
from qvtools.workspace import connect


def journal_bench(tmp: Path, n: int = 1000) -> tuple[float, float]:
    path = tmp / "bench.jsonl"
    row = {"turn_id": "x", "status": "completed", "ttfa_ms": 123.4, "assistant_transcript": "a" * 200}
    t0 = time.perf_counter()
    with open(path, "a", encoding="utf-8") as fh:
        for i in range(n):
            ex.append_row(fh, dict(row, turn_id=ex.turn_id("v", "m", "p", i)))
    t_append = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    assert len(ex.read_turns(path)) == n
    return t_append, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns-per-model", type=int, default=3, help="prompts x repeats per model (default 3)")
    args = ap.parse_args(argv)
    prompts = ex.sample_prompts()[:1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_append, t_read = journal_bench(tmp)
        settings = Settings(region="local", api_key="sk-bench-local", data_dir=tmp / "data")
        with connect(settings) as ws:
            kw = dict(voices=ex.sample_voices()[:1], prompts=prompts, metrics=(), workers=1, progress=False)
            ex.Experiment(ws, tmp / "warm", **kw).run()  # enroll + load engines
            exp = ex.Experiment(ws, tmp / "run", repeats=args.turns_per_model, **kw)
            t0 = time.perf_counter()
            frame = exp.run()
            wall = time.perf_counter() - t0
        rows = ex.read_turns(tmp / "run" / ex.TURNS_FILE)
    n = len(rows)
    session = sum(r["session_s"] for r in rows)
    metrics = sum(r["metrics_s"] for r in rows)
    inside = [r["turn_wall_s"] - r["session_s"] - r["metrics_s"] for r in rows]
    overhead = (wall - session - metrics) / n
    print(f"turns: {n} ({(frame['status'] == 'completed').sum()} completed), workers=1, metrics off")
    print(f"run() wall {wall:.2f} s; sessions {session:.2f} s; metrics {metrics:.3f} s")
    print(f"runner overhead per turn (wall - session - metrics) / n: {1000 * overhead:.1f} ms")
    print(f"  of which in the turn call, outside session/metrics: median {1000 * statistics.median(inside):.1f} ms")
    print(f"journal append_row (write+flush+fsync): {1000 * t_append:.3f} ms/row; "
          f"read_turns of 1000 rows: {1000 * t_read:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
