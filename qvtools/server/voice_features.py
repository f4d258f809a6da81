"""Measurements behind a voice profile (qvtools.server.voice): the analysis rate and envelope grid, resampling, the
speech mask, the envelope on the grid and its codebook, long-term average spectrum, LPC formants, formant scale and
speaking rate. Pure numpy/scipy functions on one clip; :mod:`qvtools.server.voice` builds profiles and converts
with them."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ANALYSIS_SR", "ENVELOPE_GRID_HZ"]

#: Rate at which profiles are measured (the envelope grid stops below its Nyquist).
ANALYSIS_SR = 16000
_ANALYSIS_FRAME_MS = 10.0
_CONVERT_FRAME_MS = 5.0
_F0_FLOOR_HZ = 60.0
_F0_CEIL_HZ = 500.0


def _mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _imel(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


#: Fixed coarse grid (Hz) of the mean log spectral envelope: 40 mel-spaced points, 80 Hz .. 7.6 kHz.
ENVELOPE_GRID_HZ: tuple[float, ...] = tuple(float(round(f, 3)) for f in _imel(np.linspace(_mel(80.0), _mel(7600.0), 40)))
_GRID = np.asarray(ENVELOPE_GRID_HZ)


# Neutral formant frequencies (uniform 17.5 cm tube) used to express a formant scale.
_NEUTRAL_FORMANTS_HZ = (500.0, 1500.0, 2500.0)


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """qvtools.audio.resample (issue 12: one resampler), returned as the float64 the WORLD analysis uses.
    Bit-identical to the former float64 soxr call (soxr HQ computes in single precision either way;
    tests/test_voice.py::test_voice_uses_the_shared_resampler_and_keeps_its_f0). Equal rates return ``x`` untouched (the
    shared one would round it to float32)."""
    if sr_in == sr_out:
        return x
    from ..audio import resample

    return resample(x, sr_in, sr_out).astype(np.float64)


def _speech_mask(energy_db: np.ndarray) -> np.ndarray:
    if energy_db.size == 0:
        return np.zeros(0, bool)
    top = np.percentile(energy_db, 95)
    return energy_db > max(top - 35.0, -75.0)


def _bin_freqs(n_bins: int, sr: int) -> np.ndarray:
    return np.arange(n_bins) * sr / (2.0 * (n_bins - 1))


def _envelope_on_grid(sp: np.ndarray, sr: int, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (mean over the grid removed) and std over ``frames`` of the log (dB) envelope at the grid points."""
    freqs = _bin_freqs(sp.shape[1], sr)
    logsp = 10.0 * np.log10(sp[frames] + 1e-16)
    env = np.interp(_GRID, freqs, logsp.mean(axis=0))
    std = np.interp(_GRID, freqs, logsp.std(axis=0))
    return env - env.mean(), std


def _interp_matrix(x_from: np.ndarray, x_to: np.ndarray) -> np.ndarray:
    """``(len(x_to), len(x_from))`` linear-interpolation weights (edges held), so ``v @ M.T`` interpolates rows."""
    x_to = np.clip(x_to, x_from[0], x_from[-1])
    hi = np.clip(np.searchsorted(x_from, x_to, side="right"), 1, len(x_from) - 1)
    lo = hi - 1
    w = (x_to - x_from[lo]) / np.maximum(x_from[hi] - x_from[lo], 1e-12)
    m = np.zeros((len(x_to), len(x_from)))
    rows = np.arange(len(x_to))
    m[rows, lo] += 1.0 - w
    m[rows, hi] += w
    return m


def _kmeans(data: np.ndarray, k: int, iters: int = 20) -> np.ndarray:
    """Deterministic k-means (k-means++ seeding from a fixed seed)."""
    rng = np.random.default_rng(0)
    cent = [data[rng.integers(len(data))]]
    d2 = np.sum((data - cent[0]) ** 2, axis=1)
    for _ in range(1, k):
        cent.append(data[rng.choice(len(data), p=d2 / d2.sum())] if d2.sum() > 0 else data[rng.integers(len(data))])
        d2 = np.minimum(d2, np.sum((data - cent[-1]) ** 2, axis=1))
    c = np.stack(cent)
    for _ in range(iters):
        lab = np.argmin(((data[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            members = data[lab == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return c


def _envelope_codebook(sp: np.ndarray, sr: int, frames: np.ndarray, size: int) -> list[list[float]] | None:
    """k-means centroids of the voiced frames' envelope shapes (dB on the grid, frame mean removed)."""
    if frames.size < 4 * 8:
        return None
    m = _interp_matrix(_bin_freqs(sp.shape[1], sr), _GRID)
    env = (10.0 * np.log10(sp[frames] + 1e-16)) @ m.T
    env -= env.mean(axis=1, keepdims=True)
    c = _kmeans(env, int(min(size, frames.size // 4)))
    return [[float(v) for v in row] for row in c]


def _band_matrix(freqs: np.ndarray) -> np.ndarray:
    """``(len(_GRID), len(freqs))`` triangular band weights centred on the grid points (edges: the neighbours)."""
    edges = np.concatenate(([_GRID[0] - (_GRID[1] - _GRID[0])], _GRID, [_GRID[-1] + (_GRID[-1] - _GRID[-2])]))
    m = np.zeros((len(_GRID), len(freqs)))
    for b in range(len(_GRID)):
        lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
        m[b] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0.0, None)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)


def _ltas_db(x: np.ndarray, sr: int) -> np.ndarray | None:
    """Long-term average spectrum (dB, mean over the grid removed) of the speech frames of ``x``.

    Power spectra of 32 ms Hann frames (hop 16 ms) whose energy is within 35 dB of the loud frames
    (the :func:`_speech_mask` rule), averaged in power and pooled into triangular bands on
    :data:`ENVELOPE_GRID_HZ`; unlike ``envelope_db`` (CheapTrick, voiced frames) it is what a listener or
    a speaker encoder hears on average: harmonics, fricatives and the band below F0 included. Grid points
    above the Nyquist frequency hold the last band below it. ``None`` when there are too few frames.
    """
    n_fft = 1 << int(math.ceil(math.log2(0.032 * sr)))
    hop = n_fft // 2
    if len(x) < n_fft * 4:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    e = 10.0 * np.log10(power.sum(axis=1) + 1e-10)
    keep = _speech_mask(e)
    if keep.sum() < 4:
        return None
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    inside = _GRID < sr / 2.0 - 100.0
    bands = 10.0 * np.log10(_band_matrix(freqs)[inside] @ power[keep].mean(axis=0) + 1e-16)
    out = np.concatenate([bands, np.full(int((~inside).sum()), bands[-1])])
    return out - out.mean()


def _lpc_formants(x16: np.ndarray, f0: np.ndarray, frame_ms: float, max_frames: int = 300) -> list[float]:
    """Median F1..F3 (Hz) from LPC roots over voiced frames (speech resampled to 10 kHz)."""
    from scipy.linalg import solve_toeplitz

    fs = 10000
    y = _resample(x16, ANALYSIS_SR, fs)
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])  # pre-emphasis
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size == 0:
        return list(_NEUTRAL_FORMANTS_HZ)
    if voiced.size > max_frames:
        voiced = voiced[np.linspace(0, voiced.size - 1, max_frames).astype(int)]
    win = int(0.025 * fs)
    hamming = np.hamming(win)
    order = 12
    tracks: list[list[float]] = [[], [], []]
    for i in voiced:
        c = int(i * frame_ms / 1000.0 * fs)
        seg = y[max(0, c - win // 2): max(0, c - win // 2) + win]
        if seg.size < win:
            continue
        seg = seg * hamming
        r = np.correlate(seg, seg, "full")[win - 1: win + order]
        if r[0] <= 1e-10:
            continue
        r[0] *= 1.0 + 1e-9
        try:
            a = solve_toeplitz(r[:order], r[1:order + 1])
        except np.linalg.LinAlgError:
            continue
        roots = np.roots(np.concatenate(([1.0], -a)))
        roots = roots[np.imag(roots) > 0]
        freq = np.angle(roots) * fs / (2 * np.pi)
        bw = -fs / np.pi * np.log(np.abs(roots) + 1e-12)
        cand = np.sort(freq[(freq > 200) & (freq < 4500) & (bw < 500)])
        if cand.size >= 3:
            for k in range(3):
                tracks[k].append(cand[k])
    out = []
    for k in range(3):
        out.append(float(np.median(tracks[k])) if len(tracks[k]) >= 5 else _NEUTRAL_FORMANTS_HZ[k])
    return out


def _formant_scale(formants) -> float:
    return float(math.exp(np.mean([math.log(f / n) for f, n in zip(formants, _NEUTRAL_FORMANTS_HZ)])))


def _speaking_rate(energy_db: np.ndarray, speech: np.ndarray, frame_ms: float) -> float:
    """Syllable-like rate: prominent peaks of the smoothed energy contour per second of speech."""
    from scipy.signal import find_peaks

    if speech.sum() < 10:
        return 4.0
    k = max(1, int(round(40.0 / frame_ms)))
    smooth = np.convolve(energy_db, np.hanning(2 * k + 1) / np.hanning(2 * k + 1).sum(), mode="same")
    peaks, _ = find_peaks(smooth, prominence=3.0, distance=max(1, int(round(100.0 / frame_ms))))
    peaks = peaks[speech[peaks]]
    seconds = speech.sum() * frame_ms / 1000.0
    return float(np.clip(len(peaks) / max(seconds, 1e-3), 1.0, 10.0))
