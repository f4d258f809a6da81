"""What every metric module shares: the input checks (:func:`_mono`: bad audio is an
:class:`~qvtools.errors.InvalidAudio`), the dB floor and the one lock of the metric caches."""

from __future__ import annotations

import math
import threading

import numpy as np

from ..errors import InvalidAudio

__all__ = ["FLOOR_DB"]

NAN = float("nan")

#: Level floor in dB: digital silence reports this instead of ``-inf``.
FLOOR_DB = -120.0


#: Guards the module caches (loudness meters, reference F0 medians and embeddings in :mod:`.audio`, text
#: normalisers in :mod:`.text`): metrics run on worker threads (issue 19). Held only to read or update a cache,
#: never while a value is computed (two threads may compute one value once each).
_CACHE_LOCK = threading.Lock()


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
