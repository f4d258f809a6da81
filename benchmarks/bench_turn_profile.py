"""Where one local-service turn spends its CPU, by stage and language (issue 22 item 1).

Runs the stages of a realtime turn the way the service does, in one process, without sockets, and prints the
median CPU seconds (process CPU time, every thread of the engines included) and wall seconds of each stage over
``--repeats`` runs after one warm-up:

* ``vad``: Silero VAD over the user's audio in 100 ms frames (qvtools.vad.StreamingVAD, the server-VAD feed);
* ``asr (language given)``: Whisper in the turn's language (tiny.en for English, base otherwise), in the encoder
  window ``--window`` (default: the service's, ServiceConfig.realtime_asr_window);
* ``asr (detected, english_gate)`` / ``asr (detected, whisper_base)``: the same turn when nobody named the
  language (qvtools.asr.DETECTORS);
* ``reply text``: the deterministic responder;
* ``synthesis``: the language's engine (Piper for English, Kokoro for zh/ja) speaking the reply;
* ``conversion``: WORLD conversion of that speech toward the voice (plus resampling to 24 kHz), as
  SpeechPipeline.synthesize does;
* ``turn (language known)`` = vad + asr given + reply + synthesis + conversion; ``turn (detected)`` the same
  with the configured detector's ASR.

User audio: the packaged prompts (English "weather", Mandarin "rain_zh"; Japanese spoken by Kokoro here, since
no Japanese prompt is packaged). Voices: the packaged "ava" (English) and "mei" (zh, ja). Openers, sentence
caching and speculation (what the service adds on top to hide this cost) are not in these figures: this is
the raw cost those mechanisms save from. Wall time depends on the machine's load (printed); CPU time much less.
Usage: python benchmarks/bench_turn_profile.py [--languages en zh ja] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from qvtools import asr
from qvtools.audio import as_mono, load, resample
from qvtools.resources import samples_dir
from qvtools.server.config import ServiceConfig
from qvtools.server.speech import SpeechPipeline
from qvtools.server.voice import analyze, convert
from qvtools.vad import StreamingVAD

PROMPTS = {"en": "weather", "zh": "rain_zh"}
JA_PROMPT = "明日の東京の天気はどうですか？"
VOICES = {"en": "ava", "zh": "mei", "ja": "mei"}


def _item(kind: str, name: str):
    root = samples_dir()
    items = json.loads((root / f"{kind}.json").read_text(encoding="utf-8"))[kind]
    item = next(i for i in items if i["name"] == name)
    return load(root / item["file"], mono=True)


def timed(fn):
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - t


def vad_pass(x16):
    vad = StreamingVAD(sample_rate=16000)
    step = 1600
    for i in range(0, x16.size, step):
        vad.feed(x16[i:i + step])


def profile_language(pipe: SpeechPipeline, lang: str, repeats: int, window: str) -> dict:
    if lang in PROMPTS:
        x, sr = _item("prompts", PROMPTS[lang])
    else:
        x, sr = pipe.engine(lang).synthesize(JA_PROMPT)
    x16 = as_mono(x, sr, 16000)
    vx, vsr = _item("voices", VOICES[lang])
    voice = analyze(vx, vsr)
    eng = pipe.engine(lang)
    source = pipe.source_profile_for(lang)
    user_text = asr.recognize(x16, 16000, lang).text
    reply = pipe.reply_text(user_text, language=lang)
    stages = {
        "vad": lambda: vad_pass(x16),
        "asr (language given)": lambda: asr.recognize(x16, 16000, lang, window=window),
        "asr (detected, english_gate)": lambda: asr.recognize(x16, 16000, None, detector="english_gate",
                                                              window=window),
        "asr (detected, whisper_base)": lambda: asr.recognize(x16, 16000, None, detector="whisper_base",
                                                              window=window),
        "reply text": lambda: pipe.reply_text(user_text, language=lang),
        "synthesis": lambda: eng.synthesize(reply),
    }
    out: dict[str, list] = {k: [] for k in (*stages, "conversion")}
    audio_s = None
    for rep in range(repeats + 1):
        results = {}
        for name, fn in stages.items():
            results[name] = timed(fn)
        y, ysr = results["synthesis"][0]
        audio_s = y.size / ysr
        conv = timed(lambda: resample(convert(y, ysr, voice, source), ysr, 24000))
        results["conversion"] = conv
        if rep == 0:
            continue  # warm-up
        for name, (_o, cpu, wall) in results.items():
            out[name].append((cpu, wall))
    det = asr.recognize(x16, 16000, None, detector=ServiceConfig().realtime_language_detector, window=window)
    return {"stages": {k: (statistics.median(c for c, _w in v), statistics.median(w for _c, w in v))
                       for k, v in out.items()},
            "audio_s": audio_s, "user_s": x16.size / 16000, "reply": reply, "detected_by": det.detector,
            "detected": det.language}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--languages", nargs="+", default=["en", "zh", "ja"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", choices=asr.WINDOWS, default=ServiceConfig().realtime_asr_window,
                    help="Whisper's encoder window for the ASR stages (default: the service's, "
                         "ServiceConfig.realtime_asr_window)")
    args = ap.parse_args(argv)
    pipe = SpeechPipeline()
    print(f"# bench_turn_profile: median of {args.repeats} runs after a warm-up; CPU = process CPU s (all "
          f"threads), wall = s; ASR window {args.window!r} (the English gate's own pass: always 'full'); service "
          f"detector {ServiceConfig().realtime_language_detector!r}; load average at start {os.getloadavg()[0]:.1f}")
    for lang in args.languages:
        r = profile_language(pipe, lang, args.repeats, args.window)
        st = r["stages"]
        print(f"\n## {lang}: user turn {r['user_s']:.2f} s, reply {r['audio_s']:.2f} s of audio; detected "
              f"{r['detected']!s} by {r['detected_by']}; reply: {r['reply'][:60]}")
        print(f"{'stage':32} {'CPU s':>7} {'wall s':>7} {'CPU RTF':>8}")
        for name, (cpu, wall) in st.items():
            per = r["audio_s"] if name in ("synthesis", "conversion") else r["user_s"]
            print(f"{name:32} {cpu:7.3f} {wall:7.3f} {cpu / per:8.3f}")
        base = ["vad", "reply text", "synthesis", "conversion"]
        known = sum(st[k][0] for k in base) + st["asr (language given)"][0]
        gate = sum(st[k][0] for k in base) + st["asr (detected, english_gate)"][0]
        full = sum(st[k][0] for k in base) + st["asr (detected, whisper_base)"][0]
        print(f"{'turn (language known)':32} {known:7.3f}")
        print(f"{'turn (detected, english_gate)':32} {gate:7.3f}")
        print(f"{'turn (detected, whisper_base)':32} {full:7.3f}")
        sc = st["synthesis"][0] + st["conversion"][0]
        print(f"{'synthesis + conversion CPU RTF':32} {sc / r['audio_s']:7.3f}   (goal < 0.5 for zh and ja)")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
