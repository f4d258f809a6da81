"""Whisper's encoder window: ``"full"`` (the published recipe) against ``"fit"`` (the utterance's own length plus
qvtools.asr.FIT_PAD_S), what the local service uses since issue 22. Prints, per clip and window:

* transcription with the language given: the error rate (WER, or CER for zh/ja; qvtools.metrics.error_rate with
  its normalisation) against the reference transcript, and the CPU seconds of the call;
* language detection (language not given, ``--detector``, by default ``"whisper_base"``, among the service's default candidates
  ``ServiceConfig.realtime_language_candidates``): the language found and the CPU seconds, on the whole clip and
  on its first 2 s and 3 s (turns are short).

Clips: every clip of ../shared/data/speech with a transcript (real human speech: English, Mandarin, German,
Spanish; --speech-dir or QVTOOLS_SPEECH_DIR) and the packaged prompts (qvtools/samples, spoken by Piper and
Kokoro). CPU is process time (both decoder threads); the figures depend on the machine, the load average is
printed. Usage: python benchmarks/bench_asr_window.py [--speech-dir DIR] [--no-detect]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

from qvtools import asr
from qvtools.audio import as_mono, load
from qvtools.metrics import error_rate
from qvtools.resources import samples_dir
from qvtools.server.config import ServiceConfig

SR = 16000


def clips(speech_dir: Path):
    manifest = speech_dir / "manifest.csv"
    if manifest.is_file():
        with open(manifest, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yield row["path"], row["language"], speech_dir / row["path"], row.get("transcript") or None
    else:
        print(f"(no manifest.csv under {speech_dir}: the shared clips are skipped)")
    root = samples_dir()
    for item in json.loads((root / "prompts.json").read_text(encoding="utf-8"))["prompts"]:
        yield "samples/" + item["name"], item["language"], root / item["file"], item.get("text")


def timed(fn):
    c = time.process_time()
    out = fn()
    return out, time.process_time() - c


def pads(speech_dir: Path, candidates) -> int:
    clips = [(language, as_mono(*load(path), SR)) for _n, language, path, _t in _all_clips(speech_dir)]
    print(f"# detection only (qvtools.asr.detect_language, window 'fit') among {', '.join(candidates)}; "
          f"shipped pad {asr.DETECT_PAD_S} s; load average {os.getloadavg()[0]:.1f}")
    shipped = asr.DETECT_PAD_S
    try:
        for pad in (0.5, 1.0, 2.0, 3.0):
            asr.DETECT_PAD_S = pad
            for cut in (1.0, 1.5, 2.0):
                kept = [x[: int(cut * SR)] for _l, x in clips if x.size >= cut * SR]
                langs = [lang for lang, x in clips if x.size >= cut * SR]
                found, cpu = [], 0.0
                for x in kept:
                    (code, _p), c = timed(lambda: asr.detect_language(x, SR, candidates, window="fit"))
                    found.append(code)
                    cpu += c
                ok = sum(f == lang for f, lang in zip(found, langs))
                print(f"pad {pad:.1f} s, first {cut:.1f} s: {ok}/{len(kept)} right, {cpu / len(kept):.3f} CPU s each")
    finally:
        asr.DETECT_PAD_S = shipped
    return 0


def _all_clips(speech_dir: Path):
    return list(clips(speech_dir))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech-dir", type=Path, default=Path(os.environ.get("QVTOOLS_SPEECH_DIR") or
                                                            Path(__file__).resolve().parents[2] / "shared/data/speech"))
    ap.add_argument("--no-detect", action="store_true", help="skip the detection part")
    ap.add_argument("--pads", action="store_true",
                    help="only the detection-only fitted window (qvtools.asr.detect_language, the service's early "
                         "detection): right answers and CPU on the first 1, 1.5 and 2 s of every clip for several "
                         "pads (qvtools.asr.DETECT_PAD_S)")
    ap.add_argument("--detector", choices=asr.DETECTORS, default="whisper_base",
                    help="how the language is found in the detection part (qvtools.asr.DETECTORS)")
    args = ap.parse_args(argv)
    candidates = ServiceConfig().realtime_language_candidates
    asr.load_model("base"), asr.load_model(asr.ENGLISH_MODEL)
    if args.pads:
        return pads(args.speech_dir, candidates)
    warm = as_mono(*load(samples_dir() / "prompts/weather.wav"), SR)
    for w in asr.WINDOWS:
        asr.recognize(warm, SR, window=w)
    print(f"# Whisper encoder window: {' vs '.join(asr.WINDOWS)} (fit pad {asr.FIT_PAD_S} s); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("\n## transcription, language given")
    print(f"{'lang':4} {'audio s':>7} {'metric':6} " + " ".join(f"{w + ' err':>9} {w + ' cpu':>8}" for w in asr.WINDOWS)
          + "  clip")
    rows = []
    det = []
    for name, language, path, text in clips(args.speech_dir):
        x = as_mono(*load(path), SR)
        if text and x.size <= 29 * SR:
            row = {"clip": name, "language": language, "audio_s": x.size / SR}
            for w in asr.WINDOWS:
                rec, cpu = timed(lambda: asr.recognize(x, SR, language, window=w))
                row["metric"], row[f"{w}_err"] = error_rate(text, rec.text, language)
                row[f"{w}_cpu"] = cpu
                row[f"{w}_text"] = rec.text
            rows.append(row)
            print(f"{language:4} {row['audio_s']:7.1f} {row['metric']:6} "
                  + " ".join(f"{row[w + '_err']:9.3f} {row[w + '_cpu']:8.3f}" for w in asr.WINDOWS) + f"  {name[-50:]}")
        if args.no_detect:
            continue
        for cut in (2.0, 3.0, None):
            if cut is not None and x.size <= cut * SR:
                continue
            xx = x if cut is None else x[: int(cut * SR)]
            if xx.size > 29 * SR:
                continue
            d = {"clip": name, "language": language, "cut": "whole" if cut is None else f"{cut:.0f}s"}
            for w in asr.WINDOWS:
                rec, cpu = timed(lambda: asr.recognize(xx, SR, None, candidates=candidates, window=w,
                                                        detector=args.detector))
                d[f"{w}_lang"], d[f"{w}_by"], d[f"{w}_cpu"] = rec.language, rec.detector, cpu
            det.append(d)
    print("\n## mean error by language (language given)")
    for lang in sorted({r["language"] for r in rows}):
        rr = [r for r in rows if r["language"] == lang]
        print(f"{lang}: {len(rr)} clips, " + ", ".join(
            f"{w} {rr[0]['metric']} {statistics.mean(r[w + '_err'] for r in rr):.3f} "
            f"(CPU {sum(r[w + '_cpu'] for r in rr):.2f} s)" for w in asr.WINDOWS))
    if det:
        print(f"\n## detection among {', '.join(candidates)} ({args.detector}), {len(det)} cuts")
        print(f"{'lang':4} {'cut':5} " + " ".join(f"{w + ' found':>10} {w + ' by':>13} {w + ' cpu':>8}" for w in asr.WINDOWS)
              + "  clip")
        for d in det:
            print(f"{d['language']:4} {d['cut']:5} " + " ".join(
                f"{str(d[w + '_lang']):>10} {d[w + '_by']:>13} {d[w + '_cpu']:8.3f}" for w in asr.WINDOWS)
                + f"  {d['clip'][-44:]}")
        for w in asr.WINDOWS:
            ok = sum(d[f"{w}_lang"] == d["language"] for d in det)
            print(f"{w}: {ok}/{len(det)} right, CPU median {statistics.median(d[w + '_cpu'] for d in det):.3f} s, "
                  f"total {sum(d[w + '_cpu'] for d in det):.2f} s")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
