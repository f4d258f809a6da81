"""Content detectors of the enrollment preflight (:mod:`qvtools.preflight`; protocol reference §2.4 "no
music", "no singing", "no other voices"): pure functions of a mono clip at the VAD's rate (``x16``) and its
Silero speech probabilities. Their thresholds live in :data:`qvtools.preflight.THRESHOLDS` (calibrated on the
shared speech test set, ``tests/test_calibration.py``); these functions only measure.
"""

from __future__ import annotations

import numpy as np

from . import vad
from .audio import frame_energy_db, resample

__all__ = ["background_tonality", "held_note_ratio", "speaker_spread"]


def background_tonality(x16: np.ndarray, probs: np.ndarray) -> float:
    """Tonal-peak persistence of the background: over frames the VAD calls non-speech (and
    that are not digital silence), the fraction of spectral peaks (> 10 dB above the local
    median, 60 Hz-4 kHz) that persist from the previous 16 ms frame. Sustained notes of music
    persist; noise and silence do not."""
    from scipy.ndimage import maximum_filter, median_filter

    n_fft, hop = 512, 256
    if len(x16) < 4 * n_fft:
        return float("nan")
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x16, (0, n_fft)), n_fft)[::hop]
    t = np.arange(len(frames)) * hop / vad.SAMPLE_RATE
    pf = np.interp(t, np.arange(len(probs)) * vad.FRAME_S, probs)
    energy = frame_energy_db(x16, n_fft, hop, n_frames=len(frames))
    keep = (pf < 0.5) & (energy > np.percentile(energy, 95) - 45)
    keep[0] = False
    if keep.sum() < 6:
        return float("nan")
    idx = np.flatnonzero(keep)
    sel = np.unique(np.concatenate([idx - 1, idx]))
    spec = 20 * np.log10(np.abs(np.fft.rfft(frames[sel] * np.hanning(n_fft), axis=1)) + 1e-9)
    peaks = (spec - median_filter(spec, size=(1, 31)) > 10) & (spec == maximum_filter(spec, size=(1, 3)))
    peaks[:, :2] = False  # < 60 Hz
    peaks[:, 128:] = False  # > 4 kHz
    pos = {f: k for k, f in enumerate(sel)}
    ratios = []
    for f in idx:
        cur, prev = peaks[pos[f]], peaks[pos[f - 1]]
        count = cur.sum()
        if count == 0:
            ratios.append(0.0)
            continue
        near = prev | np.roll(prev, 1) | np.roll(prev, -1)
        ratios.append(float((cur & near).sum() / count))
    return float(np.mean(ratios))


_PITCH_STEP_S = 0.01


def held_note_ratio(x16: np.ndarray, loud_background: bool, hold_s: float) -> tuple[float, float, str]:
    """(held-note ratio, voiced ratio, tracker) from a WORLD F0 track
    (:func:`qvtools.metrics.f0_contour`, 100-500 Hz, 10 ms steps): the fraction of frames that
    start a window of ``hold_s`` seconds that is fully voiced within 1 semitone.
    Speech glides (Mandarin level tones last about a syllable); singing holds notes.

    DIO (fast) tracks a voice alone; over a loud background (accompaniment) it loses the voice,
    so ``loud_background`` selects Harvest (4 kHz, about 50 ms of CPU per second of audio)."""
    from .metrics import F0_SAMPLE_RATE, f0_contour

    if len(x16) < vad.SAMPLE_RATE // 2:
        return float("nan"), float("nan"), ""
    if loud_background:
        tracker, rate = "harvest", 4000  # F0 <= 500 Hz needs no more; halves Harvest's cost against 8 kHz
    else:
        tracker, rate = "dio", F0_SAMPLE_RATE
    _, f0 = f0_contour(resample(x16, vad.SAMPLE_RATE, rate), rate, f0_floor=100.0, f0_ceil=500.0,
                       frame_period_ms=_PITCH_STEP_S * 1000, method=tracker)
    voiced = f0 > 0
    win = int(round(hold_s / _PITCH_STEP_S))
    if len(f0) <= win:
        return 0.0, float(voiced.mean()) if len(f0) else float("nan"), tracker
    semis = 12 * np.log2(np.where(voiced, f0, 1.0))
    full = np.lib.stride_tricks.sliding_window_view(voiced, win).all(axis=1)
    steady = np.ptp(np.lib.stride_tricks.sliding_window_view(semis, win), axis=1) < 1.0
    return float((full & steady).sum() / len(f0)), float(voiced.mean()), tracker


def speaker_spread(x16: np.ndarray, probs: np.ndarray, max_windows: int = 16) -> tuple[float, int]:
    """(5th percentile of pairwise cosine similarity, number of windows) between speaker
    embeddings (:func:`qvtools.speaker.embed_windows`) of 1.5 s windows that are >= 70 %
    speech, every 0.75 s, at most ``max_windows`` evenly spread. One speaker gives uniformly
    similar windows; a second voice gives a tail of dissimilar pairs."""
    from . import speaker

    window_s, hop_s = 1.5, 0.75
    dur = len(x16) / vad.SAMPLE_RATE
    t = np.arange(int(dur * 100)) * 0.01  # speech flags on a 10 ms grid
    speech = np.interp(t, np.arange(len(probs)) * vad.FRAME_S, probs) > 0.5
    per = int(round(window_s * 100))
    # windows that fit, leaving 32 ms for the last STFT frame
    starts = [i for i in range(0, int((dur - window_s - 0.032) * 100) + 1, int(round(hop_s * 100)))
              if speech[i:i + per].mean() > 0.7]
    if len(starts) < 2:
        return float("nan"), len(starts)
    if len(starts) > max_windows:
        starts = [starts[int(k)] for k in np.linspace(0, len(starts) - 1, max_windows)]
    emb = speaker.embed_windows(x16, vad.SAMPLE_RATE, window_s, starts_s=np.array(starts) * 0.01)
    sims = emb.astype(np.float64) @ emb.T.astype(np.float64)
    return float(np.percentile(sims[np.triu_indices(len(starts), 1)], 5)), len(starts)
