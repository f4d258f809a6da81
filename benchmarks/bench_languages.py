"""Speech engines per language on the ../shared/data/speech clips (issue 10): ASR and TTS quality, speed, memory.

* ASR: every clip of manifest.csv (language detected per utterance, as the service does): detected
  language and its probability, the row's error metric (CER for zh/ja/ko, WER otherwise,
  qvtools.metrics.error_rate) against the manifest transcript, and RTF (wall and CPU).
  ``--compare-english`` also scores Whisper base against tiny.en on the English clips.
* TTS round trip: each engine of qvtools.server.tts.engine_for_language (plus Kokoro for English with
  ``--kokoro-english``, which needs the GPL phonemizer) speaks sentences (manifest transcripts of at most
  100 characters where the language has some, else our own), the ASR transcribes them back in that language, and the text is scored;
  RTF (wall, CPU) and time to first audio (first sentence out of ``stream``).
* Reply speech through the local service's SpeechPipeline (``--pipeline-turns`` replies per language): the
  responder's reply in that language (to a manifest transcript or our own sentence), spoken by the language's
  engine and converted toward a speaker of that language from the manifest (a built-in voice's profile where
  the manifest has none), then transcribed back (language given) and scored; time to first audio = the
  first converted piece out of ``SpeechPipeline.stream_synthesize`` (engine first chunk + conversion +
  resampling), RTF over the whole reply, and the one-off time to measure the engine voice's source profile.
* Memory: resident set size of the process after each engine loads (VmRSS deltas).

RTF = processing time / audio duration. Wall RTF depends on what else runs on the machine; CPU RTF
(process CPU time / audio duration, summed over threads) much less so.
Usage: python benchmarks/bench_languages.py [--speech-dir DIR] [--sentences 2] [--no-compare-english]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np

from qvtools import asr, metrics
from qvtools.audio import load
from qvtools.lang import error_metric

OWN_TEXTS = {  # our own sentences, for languages without a transcript in the manifest
    "ja": ["こんにちは。今日はいい天気ですね。", "駅の近くに新しいパン屋さんができました。"],
    "es": ["Hola, ¿cómo estás? Hoy hace muy buen tiempo.", "Mañana vamos a visitar a mis abuelos en el pueblo."],
    "en": ["Good morning. The weather is lovely today, so let us take a walk in the park.",
           "The meeting is on Thursday at three, and I will remind you."],
    "zh": ["你好，今天天气很好。我们去公园散步吧！"],
}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def sentences(rows, language, n):
    out = []
    for r in rows:
        if r["language"] == language and r["transcript"]:
            sep = " / " if language == "zh" else ". "
            out += [s.strip() for s in r["transcript"].split(sep) if 8 < len(s.strip()) <= 100]
    out = list(dict.fromkeys(out)) or OWN_TEXTS.get(language, [])
    return out[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("QVTOOLS_SPEECH_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "speech")
    ap.add_argument("--speech-dir", default=default_dir)
    ap.add_argument("--sentences", type=int, default=2, help="sentences per language for the TTS round trip")
    ap.add_argument("--no-compare-english", dest="compare_english", action="store_false")
    ap.add_argument("--languages", default="en,zh,ja,es", help="TTS round-trip languages")
    ap.add_argument("--kokoro-english", action="store_true", help="also Kokoro for English (needs the GPL extra)")
    ap.add_argument("--pipeline-turns", type=int, default=3, help="replies per language through the SpeechPipeline")
    ap.add_argument("--skip-asr", action="store_true", help="skip the ASR table (per-clip decoding)")
    ap.add_argument("--skip-raw-tts", action="store_true", help="skip the raw engine round trip")
    args = ap.parse_args(argv)
    d = Path(args.speech_dir)
    if not (d / "manifest.csv").is_file():
        print(f"no manifest.csv in {d}: set --speech-dir or QVTOOLS_SPEECH_DIR")
        return 2
    with open(d / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    mem = [("process (numpy, qvtools)", rss_mb())]
    _, t, _ = timed(lambda: asr.load_model("base"))
    mem.append((f"+ Whisper base ({t:.1f} s)", rss_mb()))
    _, t, _ = timed(lambda: asr.load_model("tiny.en"))
    mem.append((f"+ Whisper tiny.en ({t:.1f} s)", rss_mb()))

    # ---- ASR
    if not args.skip_asr:
        asr_table(args, d, rows)
    if not args.skip_raw_tts:
        raw_tts(args, rows, mem)
    pipeline(args, d, rows, mem)

    print("\nMemory (VmRSS after each load)")
    prev = None
    for label, mb in mem:
        delta = "" if prev is None else f"  (+{mb - prev:.0f} MB)"
        print(f"  {label:60s} {mb:7.0f} MB{delta}")
        prev = mb
    return 0


def asr_table(args, d, rows):
    print(f"ASR on {d} (language detected per utterance; English decoded by {asr.MODEL_NAMES[asr.ENGLISH_MODEL]})")
    print(f"{'clip':58s} {'lang':>4s} {'det':>4s} {'p':>5s} {'metric':>6s} {'value':>6s} {'RTF':>6s} {'cpuRTF':>6s}")
    per_lang: dict[str, list] = {}
    english = []
    for r in rows:
        x, sr = load(d / r["path"], mono=True)
        dur = len(x) / sr
        rec, wall, cpu = timed(lambda: asr.recognize(x, sr))
        metric, value = (metrics.error_rate(r["transcript"], rec.text, r["language"]) if r["transcript"]
                         else (error_metric(r["language"]), float("nan")))
        per_lang.setdefault(r["language"], []).append((metric, value, wall / dur, cpu / dur, rec.language == r["language"]))
        print(f"{r['path'][:58]:58s} {r['language']:>4s} {rec.language or '-':>4s} {rec.probability:5.2f} "
              f"{metric:>6s} {value:6.3f} {wall / dur:6.3f} {cpu / dur:6.3f}")
        if args.compare_english and r["language"] == "en" and r["transcript"]:
            scores = {}
            for kind in ("base", "tiny.en"):
                model = asr.load_model(kind)

                def run():
                    with asr._run_lock:
                        return asr._decode(model, asr.as_mono(x, sr, 16000), "en")
                text, wall_k, _ = timed(run)
                scores[kind] = (metrics.wer(r["transcript"], text, language="en"), wall_k / dur)
            english.append(scores)
    print("\nASR per language (clips with transcripts; median RTF over all clips)")
    for lang, vals in per_lang.items():
        scored = [v for v in vals if np.isfinite(v[1])]
        mean = statistics.fmean(v[1] for v in scored) if scored else float("nan")
        print(f"  {lang}: {vals[0][0].upper()} mean {mean:.3f} over {len(scored)} clips, language detected right "
              f"{sum(v[4] for v in vals)}/{len(vals)}, RTF {statistics.median(v[2] for v in vals):.3f} "
              f"(CPU {statistics.median(v[3] for v in vals):.3f})")
    if english:
        for kind in ("base", "tiny.en"):
            print(f"  en, language given, {kind:8s}: WER mean {statistics.fmean(s[kind][0] for s in english):.3f}, "
                  f"RTF median {statistics.median(s[kind][1] for s in english):.3f} over {len(english)} clips")



def raw_tts(args, rows, mem):
    from qvtools.server import tts, tts_kokoro

    engines = []
    for lang in [s.strip() for s in args.languages.split(",") if s.strip()]:
        try:
            engines.append((lang, tts.engine_for_language(lang)))
        except Exception as exc:  # a language without an engine here: say so, go on
            print(f"  no TTS for {lang}: {exc}")
        if lang == "en" and args.kokoro_english:
            try:
                import kokoro_onnx  # noqa: F401  (GPL extra)
                engines.append(("en", tts_kokoro.KokoroSynthesizer("en")))
            except ImportError:
                pass
    print(f"\nTTS round trip ({args.sentences} sentences per language, ASR in the given language)")
    print(f"{'engine':44s} {'lang':>4s} {'metric':>6s} {'value':>6s} {'RTF':>6s} {'cpuRTF':>6s} {'TTFA ms':>8s} {'audio s':>7s}")
    for lang, eng in engines:
        name = getattr(eng, "voice_name", tts.VOICE_NAME)
        _, t, _ = timed(lambda: eng.synthesize("好。" if lang == "zh" else ("はい。" if lang == "ja" else "Yes.")))
        mem.append((f"+ {name} ({t:.1f} s first call)", rss_mb()))
        errs, rtfs, cpus, ttfas, total = [], [], [], [], 0.0
        for text in sentences(rows, lang, args.sentences):
            c0, t0 = time.process_time(), time.perf_counter()
            parts, first = [], None
            for _piece, a in eng.stream(text):
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(a)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            x = np.concatenate(parts)
            dur = len(x) / eng.sample_rate
            total += dur
            back = asr.recognize(x, eng.sample_rate, lang)
            metric, value = metrics.error_rate(text, back.text, lang)
            errs.append(value), rtfs.append(wall / dur), cpus.append(cpu / dur), ttfas.append(first * 1000)
        print(f"{name[:44]:44s} {lang:>4s} {metric:>6s} {statistics.fmean(errs):6.3f} {statistics.median(rtfs):6.3f} "
              f"{statistics.median(cpus):6.3f} {statistics.median(ttfas):8.0f} {total:7.1f}")



#: The speaker each language's replies are converted toward (a manifest clip of that language).
TARGETS = {"zh": "clean/zh_M_aishell3_SSB0139_4utts.wav", "en": "clean/en_F_ljspeech_LJ001-0001.wav",
           "es": "clean/es_M_css10_tux_19demarzo_0008.wav"}


def pipeline(args, d, rows, mem):
    from qvtools.server.speech import SpeechPipeline
    from qvtools.server.voice import analyze, builtin_profile

    sp = SpeechPipeline()
    print(f"\nReply speech through SpeechPipeline ({args.pipeline_turns} replies per language; TTFA = first "
          "converted piece out of stream_synthesize)")
    print(f"{'lang':>4s} {'target':34s} {'source s':>8s} {'metric':>6s} {'value':>6s} {'RTF':>6s} {'CPU RTF':>7s} "
          f"{'TTFA ms':>8s} {'(max)':>7s} {'audio s':>7s}   (RTF: wall; CPU RTF: process CPU s, all threads, "
          f"per audio s; load average {os.getloadavg()[0]:.1f})")
    for lang in [s.strip() for s in args.languages.split(",") if s.strip()]:
        reply_lang, note = sp.reply_language(lang)
        if note:
            print(f"{lang:>4s} {note}")
            continue
        if lang in TARGETS and (d / TARGETS[lang]).is_file():
            x, sr = load(d / TARGETS[lang], mono=True)
            target, tname = analyze(x, sr), Path(TARGETS[lang]).stem
        else:
            target, tname = builtin_profile("Tina"), "built-in Tina"
        _, t_src, _ = timed(lambda: sp.source_profile_for(lang))
        mem.append((f"+ {lang} engine and source profile ({t_src:.1f} s)", rss_mb()))
        users = sentences(rows, lang, args.pipeline_turns) or OWN_TEXTS.get(lang, ["hello"])
        errs, rtfs, cpus, ttfas, total = [], [], [], [], 0.0
        for i in range(args.pipeline_turns):
            text = sp.reply_text(users[i % len(users)], turn_index=i, language=lang)
            t0, c0 = time.perf_counter(), time.process_time()
            parts, first = [], None
            for _piece, a in sp.stream_synthesize(text, target, 24000, language=lang):
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(a)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            y = np.concatenate(parts)
            dur = len(y) / 24000
            total += dur
            back = asr.recognize(y, 24000, lang)
            metric, value = metrics.error_rate(text, back.text, lang)
            errs.append(value), rtfs.append(wall / dur), cpus.append(cpu / dur), ttfas.append(first * 1000)
            print(f"     {text[:60]!r} -> {back.text[:60]!r} {metric} {value:.3f}")
        print(f"{lang:>4s} {tname[:34]:34s} {t_src:8.1f} {metric:>6s} {statistics.fmean(errs):6.3f} "
              f"{statistics.median(rtfs):6.3f} {statistics.median(cpus):7.3f} {statistics.median(ttfas):8.0f} {max(ttfas):7.0f} {total:7.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
