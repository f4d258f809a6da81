"""Voice fidelity of the local service: does a converted reply sound like the enrolled speaker?

For every clean reference in the shared speech set (``clean/`` incl. ``short_under_8s/``),
the reference is analyzed into a VoiceProfile, a few English replies are synthesized
with the offline TTS and converted toward it, and the speaker embedding of every reply is
compared with every reference (qvtools.speaker, cosine similarity).

Printed:
* the similarity matrix (rows: replies converted toward a reference, mean over replies;
  columns: references), and the same for the unconverted TTS as a baseline;
* the identification rate: share of replies closer to their own reference than to every
  other reference. "by file" demands the exact file; "by speaker" accepts another file of
  the same speaker (LJ001-0001/0003 and SSB0005 0001/0007 are the same people).

Also printed: ``analyze`` time per reference and the real-time factor of ``convert``
(conversion seconds / reply seconds; the service converts sentence by sentence).
Piper's noise is seeded (onnxruntime) so runs are repeatable on the same machine.

Data: QVTOOLS_SPEECH_DIR, else ../shared/data/speech beside the checkout.
Usage: python benchmarks/bench_voice_fidelity.py [--env 1.5] [--warp 1.0] [--rate 1.0]
       [--codebook 0.7] [--k 2] [--replies 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from qvtools import speaker
from qvtools.audio import load
from qvtools.server import voice
from qvtools.server.speech import SpeechPipeline

REPLIES = (
    "Thanks for calling. I can help you with that right away.",
    "That sounds like a great plan. Let's meet on Thursday afternoon.",
    "The weather should be sunny tomorrow, with a light breeze in the evening.",
    "I have booked a table for two at seven, near the window.",
    "Please remember to bring your passport and a warm jacket.",
    "The museum opens at ten, and the guided tour takes about an hour.",
)


def speech_dir() -> Path:
    env = os.environ.get("QVTOOLS_SPEECH_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
    if not (path / "manifest.csv").is_file():
        sys.exit(f"speech data not found at {path}; set QVTOOLS_SPEECH_DIR")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", type=float, default=None, help="envelope transfer strength (default: convert's)")
    ap.add_argument("--warp", type=float, default=1.0, help="formant warp strength")
    ap.add_argument("--rate", type=float, default=1.0, help="speaking-rate strength")
    ap.add_argument("--codebook", type=float, default=None, help="codebook mapping strength (default: convert's)")
    ap.add_argument("--k", type=int, default=None, help="codebook neighbours averaged (default: convert's)")
    ap.add_argument("--replies", type=int, default=len(REPLIES), help="how many of the 6 replies (3: the original set)")
    ap.add_argument("--seed", type=int, default=1234, help="onnxruntime seed for Piper's noise")
    args = ap.parse_args(argv)

    import onnxruntime

    onnxruntime.set_seed(args.seed)  # before the Piper session exists
    root = speech_dir()
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "clean"]
    names = [Path(r["path"]).stem[:22] for r in rows]
    spk = [r["speaker"] for r in rows]

    t0 = time.perf_counter()
    refs = [load(root / r["path"], mono=True) for r in rows]
    voice.analyze(*refs[0])  # warm up
    analyze_s = []
    profiles = []
    for x, sr in refs:
        ta = time.perf_counter()
        profiles.append(voice.analyze(x, sr))
        analyze_s.append((time.perf_counter() - ta, len(x) / sr))
    ref_emb = np.stack([speaker.embed(x, sr) for x, sr in refs])
    pipe = SpeechPipeline()
    synth = pipe.synthesizer
    source = pipe.source_profile()
    tts = [synth.synthesize(t) for t in REPLIES[: args.replies]]
    print(f"setup {time.perf_counter() - t0:.1f} s; TTS source F0 {source.f0_median_hz:.0f} Hz, "
          f"formant scale {source.formant_scale:.3f}, rate {source.speaking_rate_hz:.2f}/s")

    base = np.stack([speaker.embed(x, sr) for x, sr in tts])
    base_sim = base @ ref_emb.T  # (replies, refs)

    t1 = time.perf_counter()
    conv_cpu = 0.0
    sims = np.zeros((len(rows), len(tts), len(rows)))
    for i, prof in enumerate(profiles):
        for j, (x, sr) in enumerate(tts):
            tc = time.process_time()
            y = voice.convert(x, sr, prof, source, envelope_strength=args.env, warp_strength=args.warp,
                              rate_strength=args.rate, codebook_strength=args.codebook, codebook_k=args.k)
            conv_cpu += time.process_time() - tc
            sims[i, j] = ref_emb @ speaker.embed(y, sr)
    conv_s = time.perf_counter() - t1
    audio_s = len(rows) * sum(len(x) / sr for x, sr in tts)

    np.set_printoptions(precision=2, suppress=True, linewidth=250)
    print(f"\nspeaker model: {speaker.MODEL_NAME}")
    print(f"settings: env={args.env if args.env is not None else voice.DEFAULT_ENVELOPE_STRENGTH} "
          f"warp={args.warp} rate={args.rate} "
          f"codebook={args.codebook if args.codebook is not None else voice.DEFAULT_CODEBOOK_STRENGTH} "
          f"k={args.k or voice.DEFAULT_CODEBOOK_K} warp-method={voice.DEFAULT_WARP_METHOD}; "
          f"{len(tts)} replies x {len(rows)} references")
    print("\nsimilarity (rows: replies converted toward reference i, mean over replies; cols: references)")
    print(" " * 24 + " ".join(f"{k:>5d}" for k in range(len(rows))))
    mean = sims.mean(axis=1)
    for i, n in enumerate(names):
        own = mean[i, i]
        print(f"{i:2d} {n:22s}" + " ".join(f"{v:5.2f}" for v in mean[i]) + f"   own {own:.2f}  "
              f"best other {np.max(np.delete(mean[i], i)):.2f}  (f0 {profiles[i].f0_median_hz:.0f} Hz,"
              f" scale {profiles[i].formant_scale:.2f})")
    print("\nbaseline, unconverted TTS vs each reference (mean over replies):")
    print(" " * 24 + " ".join(f"{v:5.2f}" for v in base_sim.mean(axis=0)))

    by_file = by_speaker = total = 0
    missed = []
    for i in range(len(rows)):
        for j in range(len(tts)):
            row = sims[i, j]
            best = int(np.argmax(row))
            by_file += best == i
            by_speaker += spk[best] == spk[i]
            total += 1
            if spk[best] != spk[i]:
                missed.append(f"{names[i]} reply {j} -> {names[best]} ({row[best]:.2f} vs own {row[i]:.2f})")
    own = np.array([mean[i, i] for i in range(len(rows))])
    print(f"\nmean own-reference similarity: converted {own.mean():.3f} vs unconverted TTS "
          f"{np.mean([base_sim[:, i].mean() for i in range(len(rows))]):.3f}")
    print(f"identification rate by file:    {by_file}/{total} = {by_file / total:.1%}")
    print(f"identification rate by speaker: {by_speaker}/{total} = {by_speaker / total:.1%}")
    for m in missed:
        print(f"  missed: {m}")
    spk_ok = sum(all(spk[int(np.argmax(sims[i, j]))] == spk[i] for j in range(len(tts))) for i in range(len(rows)))
    print(f"references whose every reply is identified (by speaker): {spk_ok}/{len(rows)}")
    worst = max(analyze_s, key=lambda p: p[0])
    print(f"analyze: {sum(a for a, _ in analyze_s) / sum(d for _, d in analyze_s) * 20:.2f} s per 20 s of audio "
          f"(slowest {worst[0]:.2f} s for {worst[1]:.1f} s)")
    print(f"convert: real-time factor {conv_cpu / audio_s:.3f} (CPU s per audio s, {audio_s:.0f} s converted); "
          f"conversion+embedding wall time {conv_s:.1f} s for {total} replies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
