"""Pure metric functions: latency from a :class:`~qvtools.realtime.turn.Turn`, audio and text metrics.

Everything here takes plain values (arrays + sample rate, strings, a ``Turn``) and returns numbers
or flat dicts whose keys carry their unit (``ttfa_ms``, ``duration_s``, ``loudness_lufs``); the
column schema is documented in :mod:`qvtools.results`. Nothing here reads files, opens sockets or
prints. Missing information gives ``NaN`` (one convention for the whole package: also
:meth:`qvtools.realtime.turn.Turn.latency`, which returns :func:`latencies`), never an exception; *bad* input (a 3-D array, a
non-positive sample rate, non-finite samples) raises :class:`~qvtools.errors.InvalidAudio`.

Optional heavy parts are imported lazily: pyloudnorm (BS.1770 loudness), pyworld (F0),
:mod:`qvtools.speaker` (speaker embeddings) and :mod:`qvtools.asr` (Whisper tiny.en). A missing one
raises ``ImportError`` when that metric is asked for; there is no silent fallback.

Levels: ``rms_dbfs`` and ``peak_dbfs`` are ``20*log10`` of the sample RMS / peak with full scale
= 1.0, so a full-scale sine is -3.01 dBFS RMS (no AES17 +3 dB correction). Level values are floored
at :data:`FLOOR_DB` (digital silence gives -120 dB, not ``-inf``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import unicodedata
import warnings
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from .catalog import DEFAULT_OUTPUT_SAMPLE_RATE
from .errors import InvalidAudio

__all__ = [
    "EVENT_MARKS",
    "FLOOR_DB",
    "END_OF_SPEECH_MARKS",
    "LATENCY_NAMES",
    "INTELLIGIBILITY_COLUMNS",
    "latencies",
    "latency_metrics",
    "playback_underruns",
    "usage_metrics",
    "duration_s",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "loudness_lufs",
    "snr_db",
    "speech_snr",
    "SNR_CAP_DB",
    "silence_ratio",
    "f0_contour",
    "f0_stats",
    "f0_ratio",
    "speaker_similarity",
    "normalize_text",
    "number_to_words",
    "edit_distance",
    "wer",
    "cer",
    "normalize_for_language",
    "error_rate",
    "score_transcript",
    "by_error_metric",
    "ERROR_METRIC_LABELS",
    "transcript_mismatch",
    "TRANSCRIPT_MISMATCH_THRESHOLD",
    "ERROR_METRICS",
    "intelligibility",
    "audio_metrics",
    "clear_caches",
    "F0_SAMPLE_RATE",
    "F0_FLOOR_HZ",
    "F0_CEIL_HZ",
]

log = logging.getLogger(__name__)

NAN = float("nan")

#: Level floor in dB: digital silence reports this instead of ``-inf``.
FLOOR_DB = -120.0

#: Marks tried, in order, for "end of user speech" (docs/architecture.md, Turn contract:
#: "End of user speech = last_audio_sent of the speech part ... mark speech_end_sent").
END_OF_SPEECH_MARKS = ("speech_end_sent", "last_audio_sent")

# Event types that stand in for a missing mark (protocol reference §5 server events).
#: Realtime event type -> the turn mark its first occurrence sets (``Turn.marks``): the one table (issue 19);
#: :mod:`qvtools.realtime.turn` records marks from it and :data:`_MARK_EVENTS` (its inverse) is derived.
EVENT_MARKS = {
    "input_audio_buffer.speech_started": "speech_started",
    "input_audio_buffer.speech_stopped": "speech_stopped",
    "input_audio_buffer.committed": "committed",
    "conversation.item.input_audio_transcription.completed": "transcript_done",
    "response.created": "response_created",
    "response.audio_transcript.delta": "first_text_delta",
    "response.text.delta": "first_text_delta",
    "response.audio.delta": "first_audio_delta",
    "response.audio.done": "audio_done",
    "response.done": "response_done",
}
#: Mark name -> the event types that set it (a turn without marks falls back to its events).
_MARK_EVENTS = {mark: tuple(t for t, m in EVENT_MARKS.items() if m == mark)
                for mark in dict.fromkeys(EVENT_MARKS.values())}


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

def _check_sr(sr) -> int:
    try:
        sr_i = int(sr)
    except (TypeError, ValueError):
        raise InvalidAudio(f"sample rate must be a positive integer, got {sr!r}") from None
    if sr_i <= 0 or sr_i != sr:
        raise InvalidAudio(f"sample rate must be a positive integer, got {sr!r}")
    return sr_i


def _mono(x, sr) -> tuple[np.ndarray, int]:
    """``(float64 mono array, int sr)``; multi-channel input is averaged to mono."""
    sr = _check_sr(sr)
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InvalidAudio(f"audio must be a numeric array, got dtype {a.dtype}")
    if a.ndim == 2:
        # (n, channels) as in qvtools.audio; average the channels
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise InvalidAudio(f"audio must be 1-D (n,) or 2-D (n, channels), got shape {a.shape}")
    if a.dtype.kind in "iu":
        raise InvalidAudio("audio must be float samples in [-1, 1]; convert PCM with qvtools.audio.from_pcm16")
    a = a.astype(np.float64, copy=False)
    if a.size and not np.all(np.isfinite(a)):
        raise InvalidAudio("audio contains NaN or infinite samples")
    return a, sr


def _db(power: float) -> float:
    """10*log10(power) floored at FLOOR_DB."""
    if not np.isfinite(power):
        return NAN
    return max(FLOOR_DB, 10.0 * math.log10(power)) if power > 0 else FLOOR_DB


# --------------------------------------------------------------------------------------------
# latency (from a Turn)
# --------------------------------------------------------------------------------------------

def _mark(turn, name: str) -> float:
    marks = getattr(turn, "marks", None) or {}
    t = marks.get(name)
    if t is not None:
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = None
        if t is not None and np.isfinite(t):
            return t
    for ev in getattr(turn, "events", None) or ():
        if getattr(ev, "type", None) in _MARK_EVENTS.get(name, ()):
            return float(ev.t)
    return NAN


def _ms(t1: float, t0: float) -> float:
    return (t1 - t0) * 1000.0 if np.isfinite(t1) and np.isfinite(t0) else NAN


def playback_underruns(chunks, sample_rate: int, *, jitter_buffer_ms: float = 0.0) -> tuple[int, float]:
    """Simulate a player fed by ``chunks`` and return ``(underrun_count, underrun_ms)``.

    ``chunks`` is a list of ``(receive_time_s, n_samples)``. The player starts playing the first
    chunk ``jitter_buffer_ms`` after it arrives and then plays continuously; whenever the next chunk
    arrives after the audio queued so far has run out, the listener hears a gap (an underrun) that
    lasts until that chunk arrives. Chunks are taken in arrival order.
    """
    sr = _check_sr(sample_rate)
    if not chunks:
        return 0, NAN
    items = sorted((float(t), int(n)) for t, n in chunks)
    t0, n0 = items[0]
    play_end = t0 + jitter_buffer_ms / 1000.0 + n0 / sr
    count, total = 0, 0.0
    for t, n in items[1:]:
        if t > play_end + 1e-9:
            count += 1
            total += t - play_end
            play_end = t
        play_end += n / sr
    return count, total * 1000.0


#: The latency names (ms) of a turn, shared by :meth:`Turn.latency` and :func:`latency_metrics`
#: (issue 12: one vocabulary). "End" is the first of :data:`END_OF_SPEECH_MARKS` present.
LATENCY_NAMES = ("ttfa_ms", "ttft_ms", "ttfa_created_ms", "ttft_created_ms", "response_created_ms",
                 "speech_stopped_ms", "e2e_ms")


def latencies(turn) -> dict[str, float]:
    """The :data:`LATENCY_NAMES` of a turn in ms, NaN where a mark is missing:

    - ``ttfa_ms`` / ``ttft_ms``: end of user speech -> first ``response.audio.delta`` / first
      transcript (or text) delta;
    - ``ttfa_created_ms`` / ``ttft_created_ms``: the same from ``response.created`` (what the SDK's
      own metrics measure);
    - ``response_created_ms``: end of user speech -> ``response.created``;
    - ``speech_stopped_ms``: end of user speech -> ``input_audio_buffer.speech_stopped``;
    - ``e2e_ms``: end of user speech -> ``response.done``.
    """
    end = NAN
    for name in END_OF_SPEECH_MARKS:
        end = _mark(turn, name)
        if np.isfinite(end):
            break
    created = _mark(turn, "response_created")
    first_audio = _mark(turn, "first_audio_delta")
    first_text = _mark(turn, "first_text_delta")
    return {
        "ttfa_ms": _ms(first_audio, end),
        "ttft_ms": _ms(first_text, end),
        "ttfa_created_ms": _ms(first_audio, created),
        "ttft_created_ms": _ms(first_text, created),
        "response_created_ms": _ms(created, end),
        "speech_stopped_ms": _ms(_mark(turn, "speech_stopped"), end),
        "e2e_ms": _ms(_mark(turn, "response_done"), end),
    }


def latency_metrics(turn, *, jitter_buffer_ms: float = 0.0) -> dict[str, float]:
    """Latency and delivery metrics of one realtime turn (the ``Turn`` contract in docs/architecture.md).

    Reference point "end of user speech" is the mark ``speech_end_sent`` (fallback ``last_audio_sent``).
    A mark that is missing falls back to the first matching received event; if that is missing too the
    metric is ``NaN``. Returned keys:

    - the :data:`LATENCY_NAMES` of :func:`latencies` (``ttfa_ms`` ... ``e2e_ms``)
    - ``reply_duration_s``: reply audio length; ``chunk_count``: audio deltas received
    - ``delivery_rtf``: reply audio seconds per second of receiving (first to last chunk); > 1 is
      faster than real time; NaN with fewer than two chunks
    - ``gap_p95_ms`` / ``gap_max_ms``: inter-chunk arrival gaps
    - ``underrun_count`` / ``underrun_ms``: audible gaps of a player starting at the first chunk
      (+ ``jitter_buffer_ms``), see :func:`playback_underruns`
    """
    sr = getattr(turn, "sample_rate", None) or DEFAULT_OUTPUT_SAMPLE_RATE
    chunks = sorted((float(t), int(n)) for t, n in (getattr(turn, "audio_chunks", None) or ()))
    audio = getattr(turn, "audio", None)
    n_audio = int(np.asarray(audio).shape[0]) if audio is not None and np.asarray(audio).ndim >= 1 else 0
    if n_audio == 0 and chunks:
        n_audio = sum(n for _, n in chunks)
    reply_s = n_audio / sr

    if len(chunks) >= 2:
        times = np.array([t for t, _ in chunks])
        gaps_ms = np.diff(times) * 1000.0
        span = times[-1] - times[0]
        chunk_s = sum(n for _, n in chunks) / sr
        rtf = chunk_s / span if span > 0 else NAN
        gap_p95, gap_max = float(np.percentile(gaps_ms, 95)), float(gaps_ms.max())
    else:
        rtf = gap_p95 = gap_max = NAN
    under_n, under_ms = playback_underruns(chunks, sr, jitter_buffer_ms=jitter_buffer_ms)

    return {
        **latencies(turn),
        "reply_duration_s": float(reply_s),
        "delivery_rtf": float(rtf),
        "chunk_count": len(chunks),
        "gap_p95_ms": gap_p95,
        "gap_max_ms": gap_max,
        "underrun_count": under_n if chunks else NAN,
        "underrun_ms": under_ms,
    }


def usage_metrics(usage: Mapping | None) -> dict[str, float]:
    """Token counts of ``response.done.response.usage`` (protocol reference §5) as flat columns."""
    u = usage or {}
    inp = u.get("input_tokens_details") or {}
    out = u.get("output_tokens_details") or {}

    def num(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN

    return {
        "input_tokens": num(u.get("input_tokens")),
        "output_tokens": num(u.get("output_tokens")),
        "total_tokens": num(u.get("total_tokens")),
        "input_text_tokens": num(inp.get("text_tokens")),
        "input_audio_tokens": num(inp.get("audio_tokens")),
        "output_text_tokens": num(out.get("text_tokens")),
        "output_audio_tokens": num(out.get("audio_tokens")),
    }


# --------------------------------------------------------------------------------------------
# levels
# --------------------------------------------------------------------------------------------

def duration_s(x, sr) -> float:
    """Length in seconds."""
    a, sr = _mono(x, sr)
    return a.shape[0] / sr


def rms_dbfs(x, sr=None) -> float:
    """RMS level in dBFS (full-scale sine = -3.01 dBFS), floored at :data:`FLOOR_DB`; NaN when empty."""
    a, _ = _mono(x, 1 if sr is None else sr)
    return _db(float(np.mean(a * a))) if a.size else NAN


def peak_dbfs(x, sr=None) -> float:
    """Sample peak in dBFS, floored at :data:`FLOOR_DB`; NaN when empty."""
    a, _ = _mono(x, 1 if sr is None else sr)
    return _db(float(np.max(np.abs(a))) ** 2) if a.size else NAN


def clipping_ratio(x, sr=None, *, threshold: float = 0.999) -> float:
    """Fraction of samples with ``|x| >= threshold`` (PCM16 full scale is 32767/32768 = 0.99997)."""
    a, _ = _mono(x, 1 if sr is None else sr)
    return float(np.mean(np.abs(a) >= threshold)) if a.size else NAN


_METERS: dict[int, Any] = {}
#: Guards the module caches (_METERS, _REF_F0, _REF_EMBEDDINGS): metrics run on worker threads (issue 19). Held
#: only to read or update a cache, never while a value is computed (two threads may compute one value once each).
_CACHE_LOCK = threading.Lock()


def loudness_lufs(x, sr) -> float:
    """Integrated loudness (ITU-R BS.1770-4, gated) via pyloudnorm.

    NaN when shorter than one 400 ms gating block (BS.1770 §2.8); the floor value when every block
    is gated out (silence).
    """
    a, sr = _mono(x, sr)
    if a.shape[0] < int(0.4 * sr):  # BS.1770: gating blocks of 400 ms
        return NAN
    with _CACHE_LOCK:
        meter = _METERS.get(sr)
    if meter is None:
        import pyloudnorm

        with _CACHE_LOCK:
            meter = _METERS.setdefault(sr, pyloudnorm.Meter(sr))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        value = float(meter.integrated_loudness(a))
    return value if np.isfinite(value) else FLOOR_DB


def _frame_powers(a: np.ndarray, sr: int, frame_ms: float = 20.0, hop_ms: float = 10.0) -> np.ndarray:
    from .audio import frame_power  # the one frame-energy implementation (issue 12)

    return frame_power(a, max(1, int(round(sr * frame_ms / 1000))), max(1, int(round(sr * hop_ms / 1000))))


#: Cap of :func:`snr_db` (a digital-silence background would otherwise give ~100+ dB).
SNR_CAP_DB = 90.0


def speech_snr(energy_db, probs) -> tuple[float, float, float]:
    """``(snr, speech level, background level)`` in dB from per-frame energies and Silero speech
    probabilities of the same frames: median energy of the speech frames (p > 0.5) minus the median of
    the non-speech frames (p < 0.2), or their 5th percentile of all frames when there are fewer than 10
    non-speech frames (0.32 s); capped at :data:`SNR_CAP_DB`. NaN triple without speech frames.

    The one SNR estimator (issue 12): :func:`snr_db`, ``qvtools check`` (its calibrated thresholds,
    :data:`qvtools.preflight.THRESHOLDS`) and the local service's degraded-clone decision use it."""
    energy_db = np.asarray(energy_db, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    speech = energy_db[probs > 0.5]
    if len(speech) == 0:
        return NAN, NAN, NAN
    background = energy_db[probs < 0.2]
    bg = float(np.median(background)) if len(background) >= 10 else float(np.percentile(energy_db, 5))
    sp = float(np.median(speech))
    return min(sp - bg, SNR_CAP_DB), sp, bg


def snr_db(x, sr) -> float:
    """Estimated SNR of speech in dB (no reference needed): :func:`speech_snr` on Silero VAD's 32 ms
    frames at 16 kHz (:mod:`qvtools.vad`). NaN for empty audio or audio without speech."""
    from . import vad
    from .audio import frame_energy_db, resample

    a, sr = _mono(x, sr)
    if a.size == 0:
        return NAN
    x16 = resample(a.astype(np.float32), sr, vad.SAMPLE_RATE)
    probs = vad.speech_probabilities(x16, vad.SAMPLE_RATE)
    return speech_snr(frame_energy_db(x16, vad.FRAME_SAMPLES, n_frames=len(probs)), probs)[0]


def silence_ratio(x, sr, *, threshold_dbfs: float = -50.0) -> float:
    """Fraction of 20 ms frames (10 ms hop) whose RMS is below ``threshold_dbfs``; NaN when empty."""
    a, sr = _mono(x, sr)
    p = _frame_powers(a, sr)
    if p.size == 0:
        return NAN
    return float(np.mean(p < 10 ** (threshold_dbfs / 10)))


# --------------------------------------------------------------------------------------------
# F0 (pyworld)
# --------------------------------------------------------------------------------------------

#: F0 analysis rate. pyworld's cost grows with the sample rate; F0 <= 600 Hz needs far less than
#: speech rates (8 kHz gives the same medians as 16 kHz on the shared speech clips, 2-3x faster).
F0_SAMPLE_RATE = 8000

#: Default F0 search range. 60-600 Hz covers adult and most child speech; a wider ceiling (800 Hz)
#: made DIO report octave-low medians on LJSpeech (193 Hz vs Praat's 216 Hz).
F0_FLOOR_HZ, F0_CEIL_HZ = 60.0, 600.0


def f0_contour(x, sr, *, f0_floor: float = F0_FLOOR_HZ, f0_ceil: float = F0_CEIL_HZ,
               frame_period_ms: float = 5.0, method: str = "dio") -> tuple[np.ndarray, np.ndarray]:
    """F0 track ``(t_s, f0_hz)`` via WORLD (pyworld); unvoiced frames have ``f0 = 0``.

    ``method="dio"`` runs DIO (internal speed 2) refined by StoneMask (fast); ``"harvest"`` is
    about 20x slower and more robust. Audio above 8 kHz is resampled to 8 kHz first.
    """
    import pyworld

    if method not in ("dio", "harvest"):
        raise ValueError(f"method must be 'dio' or 'harvest', got {method!r}")
    a, sr = _mono(x, sr)
    if a.shape[0] < int(0.05 * sr):
        return np.zeros(0), np.zeros(0)
    if sr > F0_SAMPLE_RATE:
        from .audio import resample

        a = np.asarray(resample(a.astype(np.float32), sr, F0_SAMPLE_RATE), dtype=np.float64)
        sr = F0_SAMPLE_RATE
    a = np.ascontiguousarray(a, dtype=np.float64)
    if method == "dio":
        f0, t = pyworld.dio(a, sr, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms, speed=2)
        f0 = pyworld.stonemask(a, f0, t, sr)
    else:
        f0, t = pyworld.harvest(a, sr, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms)
    return np.asarray(t), np.asarray(f0)


def f0_stats(x, sr, **kwargs) -> tuple[float, float, float]:
    """``(median_hz, iqr_hz, voiced_ratio)`` of the F0 track (voiced frames only for median/IQR).

    ``voiced_ratio`` is voiced frames / all frames. Median and IQR are NaN when nothing is voiced.
    Keyword arguments go to :func:`f0_contour`.
    """
    _, f0 = f0_contour(x, sr, **kwargs)
    if f0.size == 0:
        return NAN, NAN, NAN
    voiced = f0[f0 > 0]
    ratio = voiced.size / f0.size
    if voiced.size == 0:
        return NAN, NAN, float(ratio)
    q25, q50, q75 = np.percentile(voiced, [25, 50, 75])
    return float(q50), float(q75 - q25), float(ratio)


def f0_ratio(x, sr, ref, ref_sr=None, **kwargs) -> float:
    """Median F0 of ``x`` over median F0 of ``ref`` (1.0 = same pitch; 2.0 = one octave up).

    ``ref`` is either audio (with ``ref_sr``) or an already measured median F0 in Hz.
    """
    med = f0_stats(x, sr, **kwargs)[0]
    if isinstance(ref, (int, float, np.floating, np.integer)):
        ref_med = float(ref)
    else:
        if ref_sr is None:
            raise InvalidAudio("f0_ratio: ref_sr is required when ref is audio")
        ref_med = f0_stats(ref, ref_sr, **kwargs)[0]
    if not (np.isfinite(med) and np.isfinite(ref_med)) or ref_med <= 0:
        return NAN
    return med / ref_med


# --------------------------------------------------------------------------------------------
# speaker similarity (qvtools.speaker)
# --------------------------------------------------------------------------------------------

_REF_EMBEDDINGS: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_REF_CACHE_SIZE = 64


def _audio_key(a: np.ndarray, sr: int) -> tuple:
    h = hashlib.blake2b(np.ascontiguousarray(a, dtype=np.float32).tobytes(), digest_size=16)
    return (sr, a.shape[0], h.hexdigest())


_REF_F0: "OrderedDict[tuple, float]" = OrderedDict()


def _reference_f0_median(ref: np.ndarray, ref_sr: int) -> float:
    key = _audio_key(ref, ref_sr)
    with _CACHE_LOCK:
        med = _REF_F0.get(key)
    if med is None:
        med = f0_stats(ref, ref_sr)[0]
        with _CACHE_LOCK:
            _REF_F0[key] = med
            if len(_REF_F0) > _REF_CACHE_SIZE:
                _REF_F0.popitem(last=False)
    return med


def _reference_embedding(ref: np.ndarray, ref_sr: int) -> np.ndarray:
    from . import speaker

    key = (speaker.MODEL_NAME,) + _audio_key(ref, ref_sr)
    with _CACHE_LOCK:
        emb = _REF_EMBEDDINGS.get(key)
        if emb is not None:
            _REF_EMBEDDINGS.move_to_end(key)
    if emb is None:
        emb = speaker.embed(ref.astype(np.float32), ref_sr)
        with _CACHE_LOCK:
            _REF_EMBEDDINGS[key] = emb
            if len(_REF_EMBEDDINGS) > _REF_CACHE_SIZE:
                _REF_EMBEDDINGS.popitem(last=False)
    return emb


def speaker_similarity(x, sr, ref, ref_sr) -> float:
    """Cosine similarity of the speaker embeddings of ``x`` and ``ref`` (qvtools.speaker).

    The reference embedding is cached by content hash, so scoring many replies against one
    enrollment clip embeds it once. NaN when either clip is empty.
    """
    from . import speaker

    a, sr = _mono(x, sr)
    r, ref_sr = _mono(ref, ref_sr)
    if a.size == 0 or r.size == 0:
        return NAN
    return float(speaker.similarity(speaker.embed(a.astype(np.float32), sr), _reference_embedding(r, ref_sr)))


def clear_caches() -> None:
    """Forget cached reference embeddings, reference F0 medians and loudness meters."""
    with _CACHE_LOCK:
        _REF_EMBEDDINGS.clear()
        _REF_F0.clear()
        _METERS.clear()


# --------------------------------------------------------------------------------------------
# text: normalisation, WER / CER, intelligibility
# --------------------------------------------------------------------------------------------

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
    norm = _WHISPER_NORMALIZERS.get(key)
    if norm is None:
        try:
            if english:
                from whisper_normalizer.english import EnglishTextNormalizer as cls
            else:
                from whisper_normalizer.basic import BasicTextNormalizer as cls
        except ImportError as exc:
            raise ImportError("language-aware scoring needs whisper-normalizer: pip install 'qvtools[eval]'") from exc
        norm = _WHISPER_NORMALIZERS[key] = cls()
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
    from .lang import base_language

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
            from .asr import to_simplified

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
    from .lang import error_metric

    name = error_metric(language)
    fn = cer if name == "cer" else wer
    return name, fn(ref, hyp, language=language)


def score_transcript(expected_text: str | None, asr_text: str, language: str | None) -> dict[str, Any]:
    """The text columns of one row: ``wer``, ``cer``, ``error_metric``, ``error_rate``.

    ``wer`` is NaN for zh/ja/ko (words are not space-separated there, so a "word" would be a
    whole clause); ``cer`` is always scored. Without an expected text every number is NaN.
    """
    from .lang import error_metric

    name = error_metric(language)
    if expected_text is None:
        return {"wer": NAN, "cer": NAN, "error_metric": name, "error_rate": NAN}
    c = cer(expected_text, asr_text, language=language)
    w = NAN if name == "cer" else wer(expected_text, asr_text, language=language)
    return {"wer": w, "cer": c, "error_metric": name, "error_rate": c if name == "cer" else w}


#: Display names of the error metrics (tables, plots, badges).
ERROR_METRIC_LABELS = {"wer": "WER", "cer": "CER"}


def by_error_metric(frame):
    """A copy of a results table for display (issue 10 item 5): ``wer`` kept only on rows whose
    ``error_metric`` is "wer" and ``cer`` only on rows whose ``error_metric`` is "cer" (zh/ja/ko), so a
    summary of ``wer`` is over the space-separated languages and one of ``cer`` over the CJK rows, never
    a mix. Rows without ``error_metric`` (runs before it existed) count as WER rows: they keep ``wer`` and
    lose ``cer``."""
    import pandas as pd

    out = frame.copy()
    kind = (out["error_metric"].astype("string") if "error_metric" in out
            else pd.Series(pd.NA, index=out.index, dtype="string")).fillna("wer")
    rate = out["error_rate"].astype("float64") if "error_rate" in out else None
    for name in ERROR_METRICS:
        value = out[name].astype("float64") if name in out else pd.Series(np.nan, index=out.index)
        if rate is not None:
            value = rate.where(rate.notna(), value)
        if name in out or rate is not None:
            out[name] = value.where(kind == name, np.nan).astype("float64")
    return out


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
    from . import asr
    from .lang import base_language, script_language

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
    from . import asr
    from .errors import ConfigError
    from .lang import base_language, script_language

    if not isinstance(text, str) or not text.strip():
        raise ConfigError("transcript_mismatch needs a non-empty text")
    lang = base_language(language) or script_language(text)
    a, sr = _mono(audio, sr)
    rec = asr.recognize(a.astype(np.float32), sr, lang)
    metric, value = error_rate(text, rec.text, rec.language)
    if not np.isfinite(value):  # the text normalised to nothing (only punctuation): nothing to compare
        raise ConfigError(f"transcript_mismatch: text {text[:40]!r} has nothing to compare after normalisation")
    return float(value), metric, rec.text


# --------------------------------------------------------------------------------------------
# bundle
# --------------------------------------------------------------------------------------------

def _reference_audio(reference) -> tuple[np.ndarray, int]:
    if isinstance(reference, tuple) and len(reference) == 2 and np.ndim(reference[0]) >= 1:
        return _mono(reference[0], reference[1])
    from .audio import load

    x, sr = load(reference, mono=True)
    return _mono(x, sr)


def audio_metrics(x, sr, *, reference=None, expected_text: str | None = None, asr: bool = True,
                  speaker: bool = True, language: str | None = None) -> dict[str, Any]:
    """All audio metrics of one clip as a flat dict of :mod:`qvtools.results` columns.

    ``reference`` (the enrollment clip: ``(samples, sr)`` or anything :func:`qvtools.audio.load`
    takes) enables ``f0_ratio`` and, with ``speaker=True``, ``speaker_similarity``.
    ``asr=True`` transcribes the clip (``asr_text``, ``asr_language``) and, with ``expected_text``,
    scores ``wer``/``cer`` and the row's ``error_metric``/``error_rate`` (:func:`intelligibility`).
    Every key is always present; metrics not computed are NaN and model names None.
    """
    a, sr = _mono(x, sr)
    med, iqr, voiced = f0_stats(a, sr)
    out: dict[str, Any] = {
        "duration_s": a.shape[0] / sr,
        "rms_dbfs": rms_dbfs(a, sr),
        "peak_dbfs": peak_dbfs(a, sr),
        "clipping_ratio": clipping_ratio(a, sr),
        "loudness_lufs": loudness_lufs(a, sr),
        "snr_db": snr_db(a, sr),
        "silence_ratio": silence_ratio(a, sr),
        "f0_median_hz": med,
        "f0_iqr_hz": iqr,
        "voiced_ratio": voiced,
        "ref_f0_median_hz": NAN,
        "f0_ratio": NAN,
        "speaker_similarity": NAN,
        "speaker_model": None,
        "asr_text": None,
        "asr_language": None,
        "wer": NAN,
        "cer": NAN,
        "error_metric": None,
        "error_rate": NAN,
        "asr_model": None,
    }
    if reference is not None:
        r, rsr = _reference_audio(reference)
        ref_med = _reference_f0_median(r, rsr)
        out["ref_f0_median_hz"] = ref_med
        if np.isfinite(med) and np.isfinite(ref_med) and ref_med > 0:
            out["f0_ratio"] = med / ref_med
        if speaker:
            from . import speaker as _speaker

            out["speaker_similarity"] = speaker_similarity(a, sr, r, rsr)
            out["speaker_model"] = _speaker.MODEL_NAME
    if asr:
        out.update(intelligibility(a, sr, expected_text, language=language))
    return out
