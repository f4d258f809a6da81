"""Load test of the local service on loopback: N concurrent realtime sessions plus enrollment traffic.

The service runs in a **subprocess** (``serve_forever`` with a ServiceConfig built from the flags), so its
memory (RSS, from ``/proc/PID/status``) and CPU time (``/proc/PID/stat``) can be read. For each N of the
sweep, for ``--minutes`` minutes:

- N realtime sessions (one API key, websocket-client ``RealtimeSession``), server VAD, each streaming a
  spoken sample prompt (``qvtools/samples/prompts``) paced like a microphone (100 ms appends, then 1.2 s of silence) and
  waiting for the reply, turn after turn;
- one enrollment client doing ``list`` every ``--enroll-interval`` s, and every ``--create-every``-th
  request a ``create`` (a sample voice, ``qvtools/samples/voices``) followed by its ``delete``.

Reported per step: turns/min, processing percentiles (``speech_stopped`` received -> first audio delta
received, ms: the service's own time on loopback), TTFA percentiles (end of user speech -> first audio
delta, ms, includes the VAD silence window), the playback stall of the replies (the longest a player
starting at the first delta waits for later audio, ms: e.g. the body after the opener), the VAD
lag (the time from sending the last chunk of a prompt to receiving ``speech_stopped``, minus the first
step's median: constant while the server VAD keeps up with real time, growing once it falls behind),
enrollment req/s and p95, errors by kind, service RSS peak, CPU use (100 % = one core) and CPU seconds per
completed turn (what a turn costs whatever else runs on the machine: 2 idle cores sustain at most
120 / that turns per minute), and the
machine's 1-min load average (the machine is shared: read the figures with it).

Saturation (issue 11) = VAD lag p95 > 500 ms, or processing p95 > max(2x the first step's, 400 ms), or
any failed turn / refused session. The per-key session limit (``ServiceConfig.max_sessions_per_key``) is set from the largest
unsaturated N. Everything is bounded: each step stops at its deadline (in-flight turns get
``--turn-timeout``), ``--max-turns`` caps the turns of a step, threads are joined with timeouts.

Run: ``python benchmarks/bench_load.py --sessions 1 4 8 16 24 --minutes 1``
(``--limit K`` keeps the service's per-key limit at K, to see the 429s past it).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qvtools import audio  # noqa: E402
from qvtools.config import ENROLLMENT_PATH, Settings  # noqa: E402
from qvtools.errors import APIError, QVError  # noqa: E402
from qvtools.realtime import RealtimeSession  # noqa: E402
from qvtools.resources import samples_dir  # noqa: E402
from _service import ServiceProcess  # noqa: E402
from bench_realtime import playback_stall_ms  # noqa: E402

MODEL = "qwen3.5-omni-flash-realtime"
KEY = "sk-load-test"
SILENCE_MS = 800  # turn_detection.silence_duration_ms (the documented default, §4.2)

class Service(ServiceProcess):
    """The service subprocess with its RSS peak sampled every 250 ms."""

    def __init__(self, data_dir: Path, config: dict, timeout: float = 60.0):
        super().__init__(data_dir, config, timeout=timeout)
        self.rss_peak_mb = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            rss = self.rss_mb()
            if rss == rss:
                self.rss_peak_mb = max(self.rss_peak_mb, rss)

    def reset_peak(self) -> None:
        self.rss_peak_mb = self.rss_mb()

    def stop(self) -> None:
        self._stop = getattr(self, "_stop", threading.Event())
        self._stop.set()
        super().stop()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.turns = 0
        self.ttfa: list[float] = []
        self.proc: list[float] = []  # speech_stopped received -> first audio delta received (ms)
        self.stall: list[float] = []  # playback stall of the reply (ms, bench_realtime.playback_stall_ms)
        self.vad_lag: list[float] = []
        self.errors: collections.Counter = collections.Counter()
        self.enroll: collections.Counter = collections.Counter()
        self.enroll_ms: list[float] = []
        self.sessions_opened = 0


def error_kind(text: str | None) -> str:
    text = text or "?"
    for code in ("Throttling.RateQuota", "idle_timeout", "session_expired", "input_audio_buffer_limit_exceeded",
                 "no reply within", "server closed", "connection lost", "internal_error"):
        if code in text:
            return code
    return text.split(":")[0][:60]


def distinct(prompt, idx: int, k: int):
    """The prompt with a seeded dither at about -80 dBFS: inaudible and harmless to ASR, but a different PCM16
    stream for every session and turn, so the service's transcript cache (keyed by the audio bytes) cannot skip
    ASR on another session's identical prompt (a real caller never sends the same bytes twice)."""
    x, sr = prompt
    rng = np.random.default_rng((idx, k))
    return (x + 1e-4 * rng.standard_normal(len(x))).astype(np.float32), sr


def session_worker(settings, prompts, stats: Stats, deadline: float, args, idx: int) -> None:
    k = idx
    while time.monotonic() < deadline:
        try:
            sess = RealtimeSession(settings, MODEL, silence_duration_ms=SILENCE_MS, transcription=False,
                                   timeout=args.turn_timeout, response_timeout=args.turn_timeout)
            sess.connect()
        except APIError as exc:
            with stats.lock:
                stats.errors[f"handshake {exc.status} {exc.code}"] += 1
            if not threading.Event().wait(1.0) and time.monotonic() < deadline:  # Retry-After: 1
                continue
            return
        except QVError as exc:
            with stats.lock:
                stats.errors[f"connect: {error_kind(str(exc))}"] += 1
            return
        with stats.lock:
            stats.sessions_opened += 1
        try:
            while time.monotonic() < deadline:
                with stats.lock:
                    if stats.turns >= args.max_turns:
                        return
                prompt = prompts[k % len(prompts)]
                if not args.same_audio:
                    prompt = distinct(prompt, idx, k)
                k += 1
                turn = sess.send_audio(prompt, realtime=True, timeout=args.turn_timeout)
                lat = turn.latency()
                with stats.lock:
                    if turn.status != "completed":
                        stats.errors[f"turn: {error_kind(turn.error)}"] += 1
                    else:
                        stats.turns += 1
                        if np.isfinite(lat["ttfa_ms"]):  # NaN: mark missing (qvtools.metrics.latencies)
                            stats.ttfa.append(lat["ttfa_ms"])
                        m = turn.marks
                        if "speech_stopped" in m and "first_audio_delta" in m:
                            stats.proc.append(1000.0 * (m["first_audio_delta"] - m["speech_stopped"]))
                        stats.stall.append(playback_stall_ms(turn))
                    if np.isfinite(lat["speech_stopped_ms"]):  # last speech chunk sent -> speech_stopped received
                        stats.vad_lag.append(lat["speech_stopped_ms"])
                if not sess.connected:
                    break
        finally:
            sess.close()


def enrollment_worker(url: str, voices, stats: Stats, deadline: float, args) -> None:
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {KEY}-enroll"
    i = 0
    while time.monotonic() < deadline:
        i += 1
        actions = [{"action": "list", "page_index": 0, "page_size": 10}]
        if args.create_every and i % args.create_every == 0:
            actions = [{"action": "create", "target_model": MODEL, "preferred_name": "load",
                        "audio": {"data": voices[i % len(voices)]}}]
        for inp in actions:
            t0 = time.perf_counter()
            try:
                r = http.post(url + ENROLLMENT_PATH, json={"model": "qwen-voice-enrollment", "input": inp},
                              timeout=args.turn_timeout)
                kind = f"{inp['action']} {r.status_code}" + ("" if r.ok else f" {r.json().get('code')}")
                if r.ok and inp["action"] == "create":
                    actions.append({"action": "delete", "voice": r.json()["output"]["voice"]})
            except requests.RequestException as exc:
                kind = f"{inp['action']} {type(exc).__name__}"
            with stats.lock:
                stats.enroll[kind] += 1
                stats.enroll_ms.append(1000 * (time.perf_counter() - t0))
        threading.Event().wait(args.enroll_interval)


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_step(svc: Service, n: int, prompts, voices, args) -> dict:
    stats = Stats()
    settings = Settings(region="local", base_url=svc.url, api_key=KEY, timeout_s=args.turn_timeout)
    svc.reset_peak()
    cpu0, t0 = svc.cpu_s(), time.monotonic()
    deadline = t0 + 60.0 * args.minutes
    # each session speaks one language (session i: the i-th of --languages, cycling), as one user would
    threads = [threading.Thread(target=session_worker, args=(settings, prompts[i % len(prompts)], stats, deadline,
                                                             args, i),
                                daemon=True) for i in range(n)]
    threads.append(threading.Thread(target=enrollment_worker, args=(svc.url, voices, stats, deadline, args),
                                    daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + args.turn_timeout + 30.0)
    elapsed = time.monotonic() - t0
    cpu = svc.cpu_s() - cpu0
    enroll_errors = {k: v for k, v in stats.enroll.items() if " 200" not in k}
    errors = dict(stats.errors)
    errors.update({f"enroll {k}": v for k, v in enroll_errors.items()})
    return {
        "sessions": n, "turns": stats.turns, "turns_per_min": stats.turns / (elapsed / 60.0),
        "ttfa_p50_ms": pct(stats.ttfa, 50), "ttfa_p95_ms": pct(stats.ttfa, 95), "ttfa_p99_ms": pct(stats.ttfa, 99),
        "proc_p50_ms": pct(stats.proc, 50), "proc_p95_ms": pct(stats.proc, 95),
        "stall_p50_ms": pct(stats.stall, 50), "stall_p95_ms": pct(stats.stall, 95),
        "load_avg": os.getloadavg()[0],
        "vad_lag_p50_ms": pct(stats.vad_lag, 50), "vad_lag_p95_ms": pct(stats.vad_lag, 95),
        "enroll_rps": sum(stats.enroll.values()) / elapsed, "enroll_p95_ms": pct(stats.enroll_ms, 95),
        "enroll_ok": {k: v for k, v in stats.enroll.items() if " 200" in k},
        "errors": errors, "rss_peak_mb": svc.rss_peak_mb, "service_cpu_pct": 100.0 * cpu / elapsed,
        "cpu_s_per_turn": cpu / stats.turns if stats.turns else float("nan"),
        "hung_threads": sum(t.is_alive() for t in threads),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8, 16, 24],
                   help="N of each sweep step (the first step is the baseline: 1 session)")
    p.add_argument("--minutes", type=float, default=1.0, help="minutes per step (default 1)")
    p.add_argument("--max-turns", type=int, default=10_000, help="turns per step at most")
    p.add_argument("--turn-timeout", type=float, default=30.0, help="seconds a turn (or request) may take")
    p.add_argument("--enroll-interval", type=float, default=0.5, help="seconds between enrollment requests")
    p.add_argument("--create-every", type=int, default=20, help="every k-th enrollment request is a create+delete")
    p.add_argument("--latency", choices=["none", "simulated"], default="none",
                   help="the service's simulated model latency (default none: measure the service itself)")
    p.add_argument("--limit", type=int, default=0, help="the service's max_sessions_per_key (0: no limit)")
    p.add_argument("--stop-after-saturation", type=int, default=1, help="steps to run past the first saturated one")
    p.add_argument("--json", help="write the step results here")
    p.add_argument("--same-audio", action="store_true",
                   help="send the prompts' identical bytes from every session (the transcript cache then skips ASR "
                        "across sessions; default: a distinct inaudible dither per session and turn)")
    p.add_argument("--languages", nargs="+", default=["en"],
                   help="prompt languages the sessions speak, one per session, cycling (default: en)")
    p.add_argument("--candidates", nargs="+", default=None,
                   help="ServiceConfig.realtime_language_candidates (default: the service's; one code = the "
                        "service knows every turn's language, no detection on a session's first turn)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.minutes > 30 or min(args.sessions) < 1 or max(args.sessions) > 64:
        p.error("bounded: 0 < --minutes <= 30 and 1 <= N <= 64")

    samples = samples_dir()
    meta = json.loads((samples / "prompts.json").read_text())
    prompts = [[audio.load(samples / x["file"], mono=True) for x in meta["prompts"] if x.get("language", "en") == lang]
               for lang in args.languages]
    if not all(prompts):
        p.error(f"no sample prompt in some of {args.languages}")
    voices = [audio.data_url((samples / "voices" / f).read_bytes(), "audio/wav")
              for f in sorted(os.listdir(samples / "voices")) if f.endswith(".wav")]
    config = {"realtime_latency": args.latency, "max_sessions_per_key": args.limit, "warm_speech": True}
    if args.candidates:
        config["realtime_language_candidates"] = list(args.candidates)
    print(f"load test: {os.cpu_count()} cores, steps N={args.sessions}, {args.minutes:g} min each, "
          f"latency={args.latency}, limit={args.limit or 'none'}, sessions speak {'/'.join(args.languages)}, "
          f"language candidates {args.candidates or 'service default (detected on each session first turn)'}, "
          f"{'identical prompt bytes in every session' if args.same_audio else 'a distinct dither per session and turn'}, "
          f"load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="qvtools-load-") as tmp:
        svc = Service(Path(tmp), config)
        try:
            # warm-up: one turn loads Whisper, Piper and the voice profile before anything is timed
            settings = Settings(region="local", base_url=svc.url, api_key=KEY + "-warm", timeout_s=120)
            with RealtimeSession(settings, MODEL, transcription=False, response_timeout=120) as warm:
                assert warm.send_audio(prompts[0][0], realtime=False).status == "completed"
            print(f"service pid {svc.proc.pid}, RSS after warm-up {svc.rss_mb():.0f} MB", flush=True)
            print(f"{'N':>3} {'turns/min':>9} {'proc p50/p95 ms':>15} {'TTFA p50/p95 ms':>15} "
                  f"{'stall p50/p95':>13} {'VAD lag p50/p95':>15} {'enroll r/s':>10} {'RSS MB':>7} {'CPU %':>6} "
                  f"{'CPU s/turn':>10} {'load':>5}  errors", flush=True)
            base_p95 = base_vad = None
            past = 0
            for n in args.sessions:
                r = run_step(svc, n, prompts, voices, args)
                base_p95 = r["proc_p95_ms"] if base_p95 is None else base_p95
                base_vad = r["vad_lag_p50_ms"] if base_vad is None else base_vad
                r["vad_lag_p50_ms"] -= base_vad
                r["vad_lag_p95_ms"] -= base_vad
                # issue 11: processing p95 within max(2 x the first step's (one session), 400 ms), no failed turn
                r["proc_limit_ms"] = max(2.0 * base_p95, 400.0)
                r["saturated"] = bool(r["vad_lag_p95_ms"] > 500 or r["proc_p95_ms"] > r["proc_limit_ms"]
                                      or any(not k.startswith("enroll") for k in r["errors"]) or r["hung_threads"])
                results.append(r)
                print(f"{n:>3} {r['turns_per_min']:>9.1f} {r['proc_p50_ms']:>7.0f}/{r['proc_p95_ms']:<7.0f} "
                      f"{r['ttfa_p50_ms']:>7.0f}/{r['ttfa_p95_ms']:<7.0f} {r['stall_p50_ms']:>6.0f}/{r['stall_p95_ms']:<6.0f} "
                      f"{r['vad_lag_p50_ms']:>7.0f}/{r['vad_lag_p95_ms']:<7.0f} {r['enroll_rps']:>10.2f} "
                      f"{r['rss_peak_mb']:>7.0f} {r['service_cpu_pct']:>6.0f} {r['cpu_s_per_turn']:>10.2f} {r['load_avg']:>5.1f}  "
                      f"{r['errors'] or '-'}{'  SATURATED' if r['saturated'] else ''}", flush=True)
                if svc.proc.poll() is not None:
                    print(f"the service exited with {svc.proc.returncode}", flush=True)
                    break
                if r["saturated"]:
                    past += 1
                    if past > args.stop_after_saturation:
                        break
        finally:
            svc.stop()
    ok = [r["sessions"] for r in results if not r["saturated"]]
    first_bad = next((r["sessions"] for r in results if r["saturated"]), None)
    print(f"largest unsaturated N: {max(ok) if ok else 'none'}; first saturated N: {first_bad or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
