"""Audio metrics of a clip: levels (RMS, peak, clipping, BS.1770 loudness, SNR, silence), F0 (WORLD), speaker
similarity (:mod:`qvtools.speaker`) with thread-safe reference caches, and :func:`audio_metrics`, the bundle."""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import InvalidAudio
from .base import _CACHE_LOCK, FLOOR_DB, NAN, _db, _mono
from .text import intelligibility

__all__ = ["rms_dbfs", "peak_dbfs", "clipping_ratio", "loudness_lufs", "snr_db", "speech_snr", "SNR_CAP_DB",
           "silence_ratio", "duration_s", "f0_contour", "f0_stats", "f0_ratio", "speaker_similarity", "audio_metrics",
           "clear_caches", "F0_SAMPLE_RATE", "F0_FLOOR_HZ", "F0_CEIL_HZ"]

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


_METERS: dict[int, Any] = {}  # guarded by base._CACHE_LOCK, as _REF_F0 and _REF_EMBEDDINGS


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
    from ..audio import frame_power  # the one frame-energy implementation (issue 12)

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
    from .. import vad
    from ..audio import frame_energy_db, resample

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
        from ..audio import resample

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
    from .. import speaker

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
    from .. import speaker

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
# bundle
# --------------------------------------------------------------------------------------------

def _reference_audio(reference) -> tuple[np.ndarray, int]:
    if isinstance(reference, tuple) and len(reference) == 2 and np.ndim(reference[0]) >= 1:
        return _mono(reference[0], reference[1])
    from ..audio import load

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
            from .. import speaker as _speaker

            out["speaker_similarity"] = speaker_similarity(a, sr, r, rsr)
            out["speaker_model"] = _speaker.MODEL_NAME
    if asr:
        out.update(intelligibility(a, sr, expected_text, language=language))
    return out
