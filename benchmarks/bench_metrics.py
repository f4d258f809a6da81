"""Metric throughput: seconds of audio scored per second of compute (x real time).

    /work/venv/bin/python benchmarks/bench_metrics.py [--repeats 3] [--no-asr] [--replies RUN_DIR]

Scores real speech from the shared test data (QVTOOLS_SPEECH_DIR, default ../shared/data/speech)
or, when it is absent, a synthetic voiced signal. Model loading is timed separately (first call)
and excluded from throughput. Target: everything but ASR, naturalness (DNSMOS) included, >= 20x real time
(issue 20); the audible-latency onset (Silero VAD) is in the bundle too.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qvtools import audible, metrics, naturalness, similarity, speaker  # noqa: E402
from qvtools.audio import load  # noqa: E402


def speech_clips(max_clips: int = 4):
    env = os.environ.get("QVTOOLS_SPEECH_DIR")
    d = Path(env) if env else ROOT.parent / "shared" / "data" / "speech"
    if not (d / "manifest.csv").is_file():
        return None
    with open(d / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "clean" and r["language"] == "en"]
    clips = []
    for r in rows[:max_clips]:
        x, sr = load(d / r["path"], mono=True)
        clips.append((x, sr, r["transcript"] or None, r["path"]))
    return clips


def reply_clips(run_dir, max_clips: int = 8):
    """The first ``max_clips`` reply WAVs of a ``qvtools compare`` run (what a turn really scores)."""
    clips = []
    for p in sorted((Path(run_dir) / "audio").glob("*.wav")):
        if p.stat().st_size <= 44:  # a header only: a failed turn's reply, nothing to score
            print(f"skipped {p.name}: no samples (a failed turn)")
            continue
        clips.append((*load(p, mono=True), None, f"reply {p.stem}"))
        if len(clips) == max_clips:
            break
    return clips or None


def synthetic_clips():
    sr = 24000
    rng = np.random.default_rng(0)
    t = np.arange(sr * 8) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 10)) * (np.sin(2 * np.pi * 1.5 * t) > -0.3)
    x = (0.3 * x / np.abs(x).max() + rng.normal(0, 0.003, t.size)).astype(np.float32)
    return [(x, sr, None, "synthetic 8 s")]


BUNDLE = "ALL NON-ASR + MOS + onset + calib. embed"


def timed(fn, clips, repeats, *, bundle=None, workers=1):
    """Median over repeats of (wall s, process CPU s) for scoring all clips once. CPU time is the
    fairer figure on a shared, oversubscribed machine (wall time then includes waiting for a core).
    ``workers=2``: ``bundle`` on every clip, two threads at once (what qvtools compare does)."""
    from concurrent.futures import ThreadPoolExecutor

    walls, cpus = [], []
    for _ in range(repeats):
        speaker.clear_cache()  # every repeat embeds the clips again (speaker.embed remembers by content)
        t0, c0 = time.perf_counter(), time.process_time()
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda c: bundle(*c[:3]), clips))
        for x, sr, text, _ in (clips if workers == 1 else ()):
            fn(x, sr, text)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-asr", action="store_true")
    ap.add_argument("--replies", metavar="RUN_DIR", help="score the reply WAVs of a compare run (the reference is "
                    "still the first shared clip)")
    args = ap.parse_args(argv)

    clips = speech_clips() or synthetic_clips()
    ref, ref_sr = clips[0][0], clips[0][1]
    if args.replies:
        clips = reply_clips(args.replies)
        if not clips:
            ap.error(f"no reply WAVs under {args.replies}/audio")
    audio_s = sum(x.shape[0] / sr for x, sr, _, _ in clips)
    print(f"clips: {len(clips)} ({audio_s:.1f} s of audio): {', '.join(c[3] for c in clips)}")

    t0 = time.perf_counter()
    metrics.speaker_similarity(ref[: ref_sr], ref_sr, ref, ref_sr)  # loads the model, caches ref
    print(f"speaker model load + first embed: {time.perf_counter() - t0:.2f} s")

    t0 = time.perf_counter()
    naturalness.reference_mos(ref, ref_sr)  # loads DNSMOS, caches the reference's score
    print(f"DNSMOS load + first score: {time.perf_counter() - t0:.2f} s")

    encoder = similarity.get_encoder()

    def bundle(x, sr, _):
        # what a turn costs: its scoring (qvtools.experiment) plus its share of the run's similarity
        # calibration, which embeds the reply again (remembered by content: the turn's embedding is reused)
        return (metrics.audio_metrics(x, sr, reference=(ref, ref_sr), asr=False, speaker=True),
                naturalness.mos_columns(x, sr, (ref, ref_sr)), audible.speech_onset_s(x, sr),
                encoder.embed(x, sr))

    cases = {
        "levels (rms, peak, clipping)": lambda x, sr, _: (metrics.rms_dbfs(x, sr), metrics.peak_dbfs(x, sr),
                                                         metrics.clipping_ratio(x, sr)),
        "loudness_lufs (BS.1770)": lambda x, sr, _: metrics.loudness_lufs(x, sr),
        "snr_db + silence_ratio": lambda x, sr, _: (metrics.snr_db(x, sr), metrics.silence_ratio(x, sr)),
        "f0_stats (dio+stonemask)": lambda x, sr, _: metrics.f0_stats(x, sr),
        "speaker_similarity (ref cached)": lambda x, sr, _: metrics.speaker_similarity(x, sr, ref, ref_sr),
        "audio_metrics(asr=False) ALL NON-ASR": lambda x, sr, _: metrics.audio_metrics(
            x, sr, reference=(ref, ref_sr), asr=False, speaker=True),
        "naturalness (DNSMOS P.835 + P.808)": lambda x, sr, _: naturalness.dnsmos(x, sr),
        "audible onset (Silero VAD)": lambda x, sr, _: audible.speech_onset_s(x, sr),
        BUNDLE: bundle,
    }
    header = f"{'metric':40s} {'wall s':>8s} {'xRT wall':>9s} {'cpu s':>8s} {'xRT cpu':>9s}"
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(header)
    results = {}

    def row(name, wall, cpu):
        results[name] = (audio_s / wall, audio_s / cpu)
        print(f"{name:40s} {wall:8.3f} {audio_s / wall:9.1f} {cpu:8.3f} {audio_s / cpu:9.1f}")

    for name, fn in cases.items():
        row(name, *timed(fn, clips, args.repeats))
    # qvtools compare scores two turns at once (workers=2, one per core): the same bundle, clips split over
    # two threads; wall time is the throughput figure here (CPU seconds add up over both threads)
    row(f"{BUNDLE}, 2 at once", *timed(lambda *c: None, clips, args.repeats, bundle=bundle, workers=2))

    if not args.no_asr:
        t0 = time.perf_counter()
        from qvtools import asr

        asr.transcribe(ref[: ref_sr], ref_sr)
        print(f"ASR model load + first call: {time.perf_counter() - t0:.2f} s")
        row(f"intelligibility (ASR {asr.MODEL_NAME.split(' ')[0]})",
            *timed(lambda x, sr, text: metrics.intelligibility(x, sr, text), clips, max(1, args.repeats - 1)))
        for x, sr, text, path in clips:
            if text:
                r = metrics.intelligibility(x, sr, text)
                print(f"  {path}: wer={r['wer']:.3f} cer={r['cer']:.3f}")

    wall, cpu = results[BUNDLE]
    wall2, _ = results[f"{BUNDLE}, 2 at once"]
    # "compute" = process CPU seconds: on a shared, oversubscribed machine wall time mostly measures
    # the wait for a core (the load average is printed above so the two can be read together).
    verdict = "OK" if cpu >= 20 else "BELOW TARGET"
    print(f"non-ASR bundle with MOS: {cpu:.1f}x real time per CPU second, one clip at a time ({wall:.1f}x wall); "
          f"{wall2:.1f}x wall with two at once on {os.cpu_count()} cores (compare's workers=2); load "
          f"{os.getloadavg()[0]:.1f}; target >= 20x per CPU second: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
