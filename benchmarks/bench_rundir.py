"""Shared run directories (issue 23): what the hardening costs and bounds, printed as figures.

1. Second writer: how long a second ``RunLock`` (another process) takes to fail while one holds the lock.
2. Journal validation: ``read_turns`` of N rows (every turn id and number checked), rows per second.
3. Replay of a synthetic run of N saved manual turns (1 s, 24 kHz tones; metric ``loudness`` only) where
   every fifth turn is damaged (nested JSON, not-audio WAV, a link outside): wall time, failures, rows kept.
4. Microphone: a ``Recorder`` (cap 60 s) fed 20 minutes of 4096-sample 48 kHz chunks: samples kept, bytes
   held, microseconds per chunk.

Figures depend on the machine's load: the script prints the 1-min load average with them.

    python benchmarks/bench_rundir.py [--turns 40] [--rows 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qvtools import experiment as ex
from qvtools import rundir
from qvtools.audio import wav_bytes
from qvtools.realtime.turn import TimedEvent, Turn

FLASH = "qwen3.5-omni-flash-realtime"


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "n/a"


def bench_lock(tmp: Path) -> float:
    code = ("import sys, time; from qvtools.rundir import RunLock\nt = time.perf_counter()\n"
            "try:\n    RunLock(sys.argv[1], 'bench').acquire()\nexcept Exception:\n"
            "    print((time.perf_counter() - t) * 1000)\n")
    with rundir.RunLock(tmp, "bench holder"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp)], capture_output=True, text=True, timeout=60)
    return float(out.stdout.strip())


def bench_journal(tmp: Path, n: int) -> float:
    path = tmp / "turns.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            ex.append_row(fh, {"turn_id": ex.turn_id("v", FLASH, "p", i), "status": "completed", "ttfa_ms": 512.5,
                               "e2e_ms": 2000.0, "repeat": i, "simulated": True, "output_tokens": 120,
                               "delivery_rtf": 2.5, "assistant_transcript": "a" * 200})
    t0 = time.perf_counter()
    assert len(ex.read_turns(path)) == n
    return n / (time.perf_counter() - t0)


def bench_replay(tmp: Path, n: int) -> tuple[float, int, int]:
    run = tmp / "run"
    (run / ex.AUDIO_DIR).mkdir(parents=True)
    (tmp / "outside.wav").write_bytes(wav_bytes(np.zeros(24000, np.float32), 24000))
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000)).astype(np.float32)
    marks = {"first_audio_sent": 0.1, "last_audio_sent": 1.0, "commit_sent": 1.01, "response_create_sent": 1.02,
             "response_created": 1.2, "first_audio_delta": 1.5, "response_done": 2.6}
    with open(run / ex.TURNS_FILE, "w", encoding="utf-8") as fh:
        for i in range(n):
            tid = ex.turn_id("v", FLASH, "p", i)
            stem = run / ex.AUDIO_DIR / tid
            Turn(model=FLASH, voice="Tina", session_id="s", response_id="r", status="completed", error=None,
                 events=[TimedEvent(1.2, "response.created", {})], marks=marks, audio=x, sample_rate=24000,
                 audio_chunks=[(1.5, x.size)]).save(stem)
            if i % 5 == 1:
                Path(f"{stem}.json").write_text("[" * 200_000 + "]" * 200_000)
            elif i % 5 == 3:
                Path(f"{stem}.wav").write_bytes(b"RIFF....WAVEjunk" * 64)
            elif i % 10 == 0:
                Path(f"{stem}.wav").unlink()
                os.symlink(tmp / "outside.wav", f"{stem}.wav")
            ex.append_row(fh, {"turn_id": tid, "status": "completed", "turn_detection": "manual",
                               "target_model": FLASH, "audio_path": f"audio/{tid}.wav"})
    (run / ex.RUN_FILE).write_text(json.dumps({"region": "local", "metrics": ["loudness"]}))
    t0 = time.perf_counter()
    frame = ex.replay(run)
    return time.perf_counter() - t0, len(frame.attrs["replay_failures"]), len(frame)


def bench_mic(minutes: float = 20.0) -> tuple[int, int, float]:
    from qvtools.mic import Recorder

    rec = Recorder(run_preflight=False)
    rec._on_msg(rec, {"type": "start", "rate": 48000}, [])
    block = np.full(4096, 0.1, np.float32).tobytes()
    n = int(minutes * 60 * 48000 / 4096)
    t0 = time.perf_counter()
    for _ in range(n):
        rec._on_msg(rec, {"type": "chunk", "t": time.time() * 1000.0, "rate": 48000}, [block])
    per_chunk_us = (time.perf_counter() - t0) / n * 1e6
    kept = sum(p.size for p in rec._parts)
    return kept, sum(p.nbytes for p in rec._parts), per_chunk_us


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args(argv)
    print(f"1-min load average at start: {_load()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"second writer refused after {bench_lock(tmp / 'lockrun'):.2f} ms (fcntl.flock, another process)")
        print(f"read_turns with validation: {bench_journal(tmp, args.rows):,.0f} rows/s ({args.rows} rows)")
        wall, failed, rows = bench_replay(tmp, args.turns)
        print(f"replay of {args.turns} saved turns, {failed} damaged: {wall:.2f} s, {rows} rows kept "
              f"({failed} with metrics_error)")
    kept, nbytes, us = bench_mic()
    print(f"Recorder fed 20 min of 48 kHz chunks (cap 60 s): kept {kept} samples ({kept / 48000:.1f} s, "
          f"{nbytes / 1e6:.1f} MB), {us:.1f} us per chunk")
    print(f"1-min load average at end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
