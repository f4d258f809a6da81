"""Synthesis speed of the local service: real-time factor of the TTS alone and TTS + voice conversion.

RTF = processing time / audio duration (lower is faster; < 1 is faster than real time),
for a reply of about 5 s, median of a few runs after one warm-up. Also times the
per-sentence streaming path (time to the first converted chunk).
Usage: python benchmarks/bench_synthesis.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from qvtools.server import voice
from qvtools.server.speech import SpeechPipeline

REPLY = "Sure, I can help with that. The meeting is on Thursday at three, and I will remind you."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    pipe = SpeechPipeline()
    synth = pipe.synthesizer
    t0 = time.perf_counter()
    source = pipe.source_profile()  # loads Piper and measures the TTS voice once
    print(f"first load + source profile: {time.perf_counter() - t0:.2f} s")
    builtin = voice.builtin_profile("Cherry")
    # an analyzed profile (envelope transfer on) stands in for a cloned voice
    cloned = voice.VoiceProfile.from_dict({**source.to_dict(), "f0_median_hz": 210.0, "formant_scale": 1.1})

    x, sr = synth.synthesize(REPLY)
    dur = len(x) / sr
    tts, conv_b, conv_c, full, first = [], [], [], [], []
    for _ in range(args.runs):
        t = time.perf_counter(); x, sr = synth.synthesize(REPLY); tts.append(time.perf_counter() - t)
        t = time.perf_counter(); voice.convert(x, sr, builtin, source); conv_b.append(time.perf_counter() - t)
        t = time.perf_counter(); voice.convert(x, sr, cloned, source); conv_c.append(time.perf_counter() - t)
        t = time.perf_counter(); pipe.synthesize(REPLY, cloned); full.append(time.perf_counter() - t)
        t = time.perf_counter(); next(iter(pipe.stream_synthesize(REPLY, cloned))); first.append(time.perf_counter() - t)
    med = statistics.median
    print(f"reply: {dur:.2f} s of audio at {sr} Hz ({len(REPLY.split())} words), {args.runs} runs, median")
    print(f"TTS alone:                     {med(tts):.3f} s  RTF {med(tts) / dur:.3f}")
    print(f"convert (built-in voice):      {med(conv_b):.3f} s  RTF {med(conv_b) / dur:.3f}")
    print(f"convert (analyzed/cloned):     {med(conv_c):.3f} s  RTF {med(conv_c) / dur:.3f}")
    print(f"TTS + convert + resample 24k:  {med(full):.3f} s  RTF {med(full) / dur:.3f}")
    print(f"streaming: first converted sentence after {med(first) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
