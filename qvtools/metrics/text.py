"""Text metrics: normalisation (numbers spelled out, Whisper's normalisers), WER / CER, the per-language
error rate, intelligibility (offline ASR of a clip scored against its text) and the enrollment transcript check."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

from .base import _CACHE_LOCK, NAN, _mono

__all__ = ["normalize_text", "number_to_words", "edit_distance", "wer", "cer", "normalize_for_language",
           "error_rate", "score_transcript", "transcript_mismatch", "TRANSCRIPT_MISMATCH_THRESHOLD",
           "ERROR_METRICS", "INTELLIGIBILITY_COLUMNS", "intelligibility"]


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_to_words(n: int, *, ordinal: bool = False) -> str:
    """English words for an integer: ``42 -> "forty two"``, ``105 -> "one hundred five"``,
    ``-3 -> "minus three"``; ``ordinal=True``: ``21 -> "twenty first"``."""
    n = int(n)
    if n < 0:
        return "minus " + number_to_words(-n, ordinal=ordinal)
    if n >= 10 ** 15:
        words = [_ONES[int(d)] for d in str(n)]  # read very long numbers digit by digit
    else:
        words = []
        for value, name in _SCALES:
            if n >= value:
                words += _under_thousand(n // value) + [name]
                n %= value
        if n or not words:
            words += _under_thousand(n)
    if ordinal:
        last = words[-1]
        if last in _ORDINAL_IRREGULAR:
            last = _ORDINAL_IRREGULAR[last]
        elif last.endswith("y"):
            last = last[:-1] + "ieth"
        else:
            last += "th"
        words[-1] = last
    return " ".join(words)


# Digit runs are spelled out wherever they are, also inside words ("3pm" -> "three pm", "mp3" ->
# "mp three"), so both sides of a WER comparison are treated alike. A "-" is a sign only at a word start.
_NUMBER_RE = re.compile(
    r"(?P<sign>(?<!\S)-)?(?<!\d)(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?"
    r"(?:(?P<ord>st|nd|rd|th)(?![a-z]))?")


def _number_sub(m: re.Match) -> str:
    digits = m.group("int").replace(",", "")
    if len(digits) > 1 and digits.startswith("0"):  # "007", a phone number: read digit by digit, zeros kept
        words = " ".join(_ONES[int(d)] for d in digits)
    else:
        words = number_to_words(int(digits), ordinal=bool(m.group("ord")) and not m.group("frac"))
    if m.group("frac"):
        words += " point " + " ".join(_ONES[int(d)] for d in m.group("frac")[1:])
    if m.group("sign"):
        words = "minus " + words
    return f" {words} "


def normalize_text(s: str) -> str:
    """Normalise a transcript for WER/CER: NFKC, lower case, numbers to words (``"42"`` ->
    ``"forty two"``, ``"3.5"`` -> ``"three point five"``, ``"1,000"`` -> ``"one thousand"``,
    ``"2nd"`` -> ``"second"``), ``%`` -> ``percent``, ``&`` -> ``and``, apostrophes dropped
    (``"don't"`` -> ``"dont"``), other punctuation to spaces, whitespace collapsed."""
    if s is None:
        return ""
    if not isinstance(s, str):
        raise TypeError(f"normalize_text expects a str, got {type(s).__name__}")
    t = unicodedata.normalize("NFKC", s).lower()
    t = t.replace("%", " percent ").replace("&", " and ")
    t = _NUMBER_RE.sub(_number_sub, t)
    t = re.sub(r"['\u2019\u2018`]", "", t)
    t = re.sub(r"[^\w\s]|_", " ", t)
    return " ".join(t.split())


def edit_distance(ref, hyp) -> int:
    """Levenshtein distance between two sequences (substitution, insertion, deletion cost 1).

    Pure Python, kept as the reference implementation (and for any sequence type); the rates
    below use jiwer (rapidfuzz, C) when installed: same numbers (tests/test_metrics.py compares
    them), about 100x faster on paragraph-long transcripts."""
    ref, hyp = list(ref), list(hyp)
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _jiwer():
    try:
        import jiwer
    except ImportError:  # optional (qvtools[eval]); the pure-Python distance gives the same numbers
        return None
    return jiwer


def _rate(ref_units: list, hyp_units: list, *, chars: bool = False) -> float:
    # Empty reference: 0.0 when the hypothesis is empty too, else NaN (undefined). jiwer raises there,
    # so these rules stay ours.
    if not ref_units:
        return 0.0 if not hyp_units else NAN
    jiwer = _jiwer()
    ref_s, hyp_s = ("".join(ref_units), "".join(hyp_units)) if chars else ("", "")
    # jiwer strips the strings it is given; edge spaces count as characters here, so those go to ours
    if jiwer is not None and hyp_units and ref_s == ref_s.strip() and hyp_s == hyp_s.strip():
        if chars:
            o = jiwer.process_characters(ref_s, hyp_s)
        else:
            o = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units))
        return (o.substitutions + o.deletions + o.insertions) / len(ref_units)
    return edit_distance(ref_units, hyp_units) / len(ref_units)


#: The two error-rate metrics: word error rate and character error rate (``error_metric`` column).
ERROR_METRICS = ("wer", "cer")

_WHISPER_NORMALIZERS: dict = {}
# Punctuation and symbols (Unicode P* and S*) are stripped for the CJK scripts.
_CJK_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def _whisper_normalizer(english: bool):
    key = "en" if english else "basic"
    with _CACHE_LOCK:
        norm = _WHISPER_NORMALIZERS.get(key)
    if norm is None:
        try:
            if english:
                from whisper_normalizer.english import EnglishTextNormalizer as cls
            else:
                from whisper_normalizer.basic import BasicTextNormalizer as cls
        except ImportError as exc:
            raise ImportError("language-aware scoring needs whisper-normalizer: pip install 'qvtools[eval]'") from exc
        with _CACHE_LOCK:  # metrics run on worker threads (issue 19): one normaliser per kind
            norm = _WHISPER_NORMALIZERS.setdefault(key, cls())
    return norm


def normalize_for_language(s: str, language: str | None) -> str:
    """Normalise a transcript for scoring in ``language`` (issue 10 item 5).

    * ``None``: :func:`normalize_text` (the language-blind normalisation of earlier versions).
    * ``"en"``: :func:`normalize_text` (numbers to words, so digits and spelled numbers meet), then
      Whisper's English normaliser (``whisper-normalizer``: spellings, contractions, fillers).
      Whisper's normaliser alone turns ``"0 1 2 3"`` into ``"0 one 2 3"`` but ``"zero one two
      three"`` into ``"0123"``; spelling digits out first makes both sides agree.
    * ``"zh"`` (and Chinese dialects): NFKC, Traditional -> Simplified (OpenCC), punctuation,
      symbols and spaces removed: what is left are the characters CER counts.
    * ``"ja"`` / ``"ko"``: NFKC, lower case, punctuation, symbols and spaces removed.
    * any other documented code: Whisper's ``BasicTextNormalizer`` (lower case, punctuation and
      bracketed text removed, whitespace collapsed).
    """
    from ..lang import base_language

    if s is None:
        return ""
    if not isinstance(s, str):
        raise TypeError(f"normalize_for_language expects a str, got {type(s).__name__}")
    lang = base_language(language)
    if lang is None:
        return normalize_text(s)
    if lang == "en":
        return " ".join(_whisper_normalizer(True)(normalize_text(s)).split())
    if lang in ("zh", "ja", "ko"):
        t = unicodedata.normalize("NFKC", s).lower()
        if lang == "zh":
            from ..asr import to_simplified

            t = to_simplified(t)
        return _CJK_PUNCT.sub("", t)
    return " ".join(_whisper_normalizer(False)(s).split())


def wer(ref: str, hyp: str, *, normalize: bool = True, language: str | None = None) -> float:
    """Word error rate = word edit distance / reference words, after :func:`normalize_for_language`
    (``language=None``: :func:`normalize_text`).

    0.0 when both are empty; NaN when only the reference is empty (undefined).
    """
    if normalize:
        ref, hyp = normalize_for_language(ref, language), normalize_for_language(hyp, language)
    return _rate((ref or "").split(), (hyp or "").split())


def cer(ref: str, hyp: str, *, normalize: bool = True, language: str | None = None) -> float:
    """Character error rate = character edit distance / reference characters (spaces included,
    as jiwer counts them; zh/ja/ko normalisation removes them) after :func:`normalize_for_language`."""
    if normalize:
        ref, hyp = normalize_for_language(ref, language), normalize_for_language(hyp, language)
    return _rate(list(ref or ""), list(hyp or ""), chars=True)


def error_rate(ref: str, hyp: str, language: str | None) -> tuple[str, float]:
    """``(metric_name, value)`` for one row: ``("cer", …)`` for zh/ja/ko (and Chinese dialects),
    ``("wer", …)`` otherwise, with the normalisation of :func:`normalize_for_language`."""
    from ..lang import error_metric

    name = error_metric(language)
    fn = cer if name == "cer" else wer
    return name, fn(ref, hyp, language=language)


def score_transcript(expected_text: str | None, asr_text: str, language: str | None) -> dict[str, Any]:
    """The text columns of one row: ``wer``, ``cer``, ``error_metric``, ``error_rate``.

    ``wer`` is NaN for zh/ja/ko (words are not space-separated there, so a "word" would be a
    whole clause); ``cer`` is always scored. Without an expected text every number is NaN.
    """
    from ..lang import error_metric

    name = error_metric(language)
    if expected_text is None:
        return {"wer": NAN, "cer": NAN, "error_metric": name, "error_rate": NAN}
    c = cer(expected_text, asr_text, language=language)
    w = NAN if name == "cer" else wer(expected_text, asr_text, language=language)
    return {"wer": w, "cer": c, "error_metric": name, "error_rate": c if name == "cer" else w}


#: The columns :func:`intelligibility` writes (present only when a run asks for ASR).
INTELLIGIBILITY_COLUMNS = ("asr_text", "asr_language", "asr_model", "wer", "cer", "error_metric", "error_rate")


def intelligibility(x, sr, expected_text: str | None, *, language: str | None = None) -> dict[str, Any]:
    """Transcribe ``x`` with the offline ASR (:mod:`qvtools.asr`) and score it against ``expected_text``.

    ``language`` (the row's language) is used for recognition and scoring when given; otherwise
    the expected text's script decides for Chinese/Japanese/Korean text
    (:func:`qvtools.lang.script_language`) and the ASR detects the language of anything else.
    Returns ``{"asr_text", "asr_language", "asr_model", "wer", "cer", "error_metric", "error_rate"}``
    (see :func:`score_transcript`); numbers are NaN without an expected text.
    """
    from .. import asr
    from ..lang import base_language, script_language

    lang = base_language(language)
    if lang is None and expected_text:
        lang = script_language(expected_text)
    a, sr = _mono(x, sr)
    if a.size:
        rec = asr.recognize(a.astype(np.float32), sr, lang)
        text, lang, model = rec.text, rec.language, rec.model
    else:
        text, model = "", asr.model_name(lang)
    out = {"asr_text": text, "asr_language": lang, "asr_model": model}
    out.update(score_transcript(expected_text, text, lang))
    return out


#: Enrollment transcript check (issue 10 item 4): the audio is refused when the error rate of its
#: transcript against the given ``text`` (CER for zh/ja/ko, WER otherwise) is above this.
#: Calibrated on ../shared/data/speech with Whisper base/tiny.en (tests/test_asr.py holds the
#: split, CALIBRATION_CLIPS / HELD_OUT_CLIPS): on the calibration clips (en LJ001-0001, en noisy
#: LJ001-0007, zh SSB0139 x4, zh SSB00050001, de Thorsten x6) the worst matching transcript scored
#: 0.30 (zh SSB00050001) and the closest unrelated one 0.79 (another AISHELL-3 sentence sharing
#: 广州/大学/女), midpoint 0.55. On the held-out clips (en LJ001-0003, music LJ001-0005, digits,
#: too-short LibriTTS, zh SSB00050007, de stereo Thorsten) matching scored at most 0.37 (margin
#: 0.18) and unrelated at least 0.75 (margin 0.20). Whisper base's Mandarin CER (0.23-0.37 on clean
#: AISHELL-3) is what keeps the threshold this high.
TRANSCRIPT_MISMATCH_THRESHOLD = 0.55


def transcript_mismatch(audio, sr, text: str, language: str | None = None) -> tuple[float, str, str]:
    """How far ``text`` is from what is said in ``audio``: ``(score, metric, asr_text)``.

    The audio is transcribed with the offline ASR in ``language`` (a documented code or dialect;
    ``None``: the text's script for zh/ja/ko, else detected from the audio) and scored with
    :func:`error_rate` (``metric`` is ``"cer"`` or ``"wer"``). A pure function of its inputs:
    the caller compares ``score`` with :data:`TRANSCRIPT_MISMATCH_THRESHOLD` (the service answers
    ``Audio.PreprocessError`` above it). An empty ``text`` is a ConfigError.
    """
    from .. import asr
    from ..errors import ConfigError
    from ..lang import base_language, script_language

    if not isinstance(text, str) or not text.strip():
        raise ConfigError("transcript_mismatch needs a non-empty text")
    lang = base_language(language) or script_language(text)
    a, sr = _mono(audio, sr)
    rec = asr.recognize(a.astype(np.float32), sr, lang)
    metric, value = error_rate(text, rec.text, rec.language)
    if not np.isfinite(value):  # the text normalised to nothing (only punctuation): nothing to compare
        raise ConfigError(f"transcript_mismatch: text {text[:40]!r} has nothing to compare after normalisation")
    return float(value), metric, rec.text
