"""Calibrate and test the English gate of qvtools.asr (issue 22 item 4: language detection that does not queue).

The gate decides "English" from Whisper tiny.en's own confidence on the turn (the decode the service runs for an
English turn anyway) and sends only the turns it is unsure of to Whisper base's language detection. This script
prints, for every clip and window, the gate's statistics (token-weighted mean log-probability, worst compression
ratio, worst no-speech probability):

* calibration set: the project's own packaged samples (qvtools/samples: five English voices and four English
  prompts spoken by Piper, the Mandarin voice and two Mandarin prompts spoken by Kokoro), each whole and cut into
  2 s and 3 s windows (turns are short);
* held-out set: every clip of ../shared/data/speech (real human speech: English, Mandarin, German, Spanish, and
  the bad/ inputs), whole and its first 2 s and 3 s — never used to choose the threshold.

It prints the threshold the calibration set supports (the highest non-English log-probability there plus a safety
margin: the gate is one-sided, a Mandarin turn taken for English costs a wrong transcript and reply while an
English turn sent on to Whisper base costs only CPU) beside the one in qvtools.asr.ENGLISH_GATE, the confusion of
the shipped gate on both sets, and the CPU cost of the gate (tiny.en decode) against Whisper base's detection
pass. Usage: python benchmarks/calibrate_language_gate.py [--speech-dir DIR] [--margin 0.35]
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
from qvtools.resources import samples_dir

SR = 16000
WINDOWS = (2.0, 3.0, None)


def clips_from_samples():
    root = samples_dir()
    for manifest, key in (("voices.json", "voices"), ("prompts.json", "prompts")):
        for item in json.loads((root / manifest).read_text(encoding="utf-8"))[key]:
            yield item["name"], item["language"], root / item["file"]


def clips_from_speech(speech_dir: Path):
    with open(speech_dir / "manifest.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            yield row["path"], row["language"], speech_dir / row["path"]


def windows(x):
    for w in WINDOWS:
        if w is None:
            yield "whole", x
        elif x.size > w * SR:
            yield f"{w:.0f}s", x[: int(w * SR)]


def measure(clips, window="full"):
    rows = []
    for name, language, path in clips:
        x, sr = load(path)
        x = as_mono(x, sr, SR)
        for wname, xx in windows(x):
            c0 = time.process_time()
            stats = asr.english_gate_stats(xx, SR, window=window)
            gate_cpu = time.process_time() - c0
            c0 = time.process_time()
            asr.detect_language(xx, SR) if window == "full" else asr.recognize(xx, SR, None, detector="whisper_base",
                                                                              window=window)
            base_cpu = time.process_time() - c0
            rows.append({"clip": name, "language": language, "window": wname, "audio_s": xx.size / SR,
                         **stats._asdict(), "accepted": asr.ENGLISH_GATE.accepts(stats),
                         "gate_cpu_s": gate_cpu, "base_detect_cpu_s": base_cpu})
    return rows


def show(title, rows):
    print(f"\n## {title}")
    print(f"{'language':8} {'window':6} {'logprob':>8} {'compr':>6} {'nospeech':>8} {'gate':>6}  clip")
    for r in sorted(rows, key=lambda r: (r["language"] != "en", -r["logprob"])):
        print(f"{r['language']:8} {r['window']:6} {r['logprob']:8.3f} {r['compression']:6.2f} "
              f"{r['no_speech']:8.2f} {'en' if r['accepted'] else 'unsure':>6}  {r['clip'][-48:]}")
    en = [r for r in rows if r["language"] == "en"]
    other = [r for r in rows if r["language"] != "en"]
    print(f"English windows accepted (cheap path): {sum(r['accepted'] for r in en)}/{len(en)}; "
          f"non-English windows taken as English (errors): {sum(r['accepted'] for r in other)}/{len(other)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech-dir", type=Path, default=Path(os.environ.get("QVTOOLS_SPEECH_DIR") or
                                                            Path(__file__).resolve().parents[2] / "shared/data/speech"))
    ap.add_argument("--margin", type=float, default=0.35, help="added to the highest non-English log-probability")
    ap.add_argument("--window", choices=asr.WINDOWS, default="full",
                    help="Whisper's encoder window for the statistics (qvtools.asr.WINDOWS); the gate is calibrated "
                         "for 'full' (qvtools.asr.check_detector), 'fit' shows why it is not used there")
    args = ap.parse_args(argv)
    gate = asr.ENGLISH_GATE
    asr.load_model("base"), asr.load_model(asr.ENGLISH_MODEL)
    cal = measure(clips_from_samples(), args.window)
    show("calibration: packaged samples (Piper en, Kokoro zh)", cal)
    en_low = min(r["logprob"] for r in cal if r["language"] == "en" and r["compression"] <= gate.max_compression)
    other_high = max(r["logprob"] for r in cal if r["language"] != "en" and r["compression"] <= gate.max_compression)
    threshold = other_high + args.margin
    kept = sum(r["logprob"] >= threshold for r in cal if r["language"] == "en")
    n_en = sum(r["language"] == "en" for r in cal)
    print(f"\nlowest English log-probability {en_low:.3f}, highest non-English {other_high:.3f}: supported "
          f"threshold {threshold:.3f} (margin {args.margin}), English kept {kept}/{n_en}; shipped "
          f"{gate.min_logprob:.3f} (window {args.window})")
    if (args.speech_dir / "manifest.csv").is_file():
        show(f"held out: {args.speech_dir}", measure(clips_from_speech(args.speech_dir), args.window))
    else:
        print(f"\nheld-out set skipped: no manifest.csv under {args.speech_dir}")
    allrows = cal
    gate_cpu = [r["gate_cpu_s"] for r in allrows]
    base = [r["base_detect_cpu_s"] for r in allrows]
    print(f"\nCPU s per utterance (calibration set, median, window {args.window}): gate (tiny.en decode) "
          f"{statistics.median(gate_cpu):.3f}, Whisper base {'detection' if args.window == 'full' else 'detection and decode'} "
          f"{statistics.median(base):.3f}; "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
