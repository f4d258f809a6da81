"""Naturalness: a MOS prediction per clip with DNSMOS (P.835 SIG/BAK/OVRL and P.808), from ``speechmos``.

DNSMOS (Reddy et al., "DNSMOS P.835: a non-intrusive perceptual objective speech quality metric to
evaluate noise suppressors", ICASSP 2022; and the P.808 model of "DNSMOS", ICASSP 2021) predicts the
mean opinion score human listeners give a 16 kHz clip, on the 1-5 scale of ITU-T P.835 (``SIG``:
speech signal distortion, ``BAK``: background noise intrusiveness, ``OVRL``: overall quality) and of
ITU-T P.808 (overall, absolute category rating). It needs no reference: it scores the clip alone.

The ONNX models ship inside the ``speechmos`` wheel (MIT; ``speechmos/dnsmos_models/sig_bak_ovr.onnx``
and ``model_v8.onnx``, the files of Microsoft's DNS-Challenge ``DNSMOS`` directory), so nothing is
downloaded. This module runs them with speechmos's own feature and polynomial-mapping code
(:class:`speechmos.dnsmos.DNSMOS`, non-personalised model) but opens the ONNX sessions itself with
two threads (speechmos's module-level helper would use every core and share one object across
threads without a lock); the recipe is DNSMOS's: 9.01 s windows every 1 s, short clips doubled until
9.01 s long, per-window scores averaged; the windows of a clip go through each model in one batch
(same scores as speechmos's own loop: tests/test_naturalness.py). Cost: about 0.2 CPU s per window on
this project's 2-core machine, and a 4 s reply doubled to 16 s has 7 windows.

Known limits: DNSMOS was trained on noisy/enhanced *English* read speech with P.835 ratings; it
rates noise and distortion well and prosody or speaker likeness not at all, its scores on other
languages and on synthetic speech are less validated, and clips shorter than ~3 s are scored on a
looped copy. Scores are comparable only with other DNSMOS P.835 scores (:data:`MODEL_NAME`).

- :func:`dnsmos` -- ``{"mos_sig", "mos_bak", "mos_ovrl", "mos_p808"}`` of one clip (any rate, mono).
- :func:`reference_mos` -- the same, cached by content hash (one reference scored once per run).
- :func:`mos_columns` -- a reply's results columns, with the reference's OVRL and the difference.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict

import numpy as np

from .audio import as_mono
from .errors import InvalidAudio

__all__ = ["MODEL_NAME", "SAMPLE_RATE", "MOS_COLUMNS", "dnsmos", "reference_mos", "mos_columns", "clear_cache"]

log = logging.getLogger(__name__)

#: Recorded in result tables (``mos_model``) and the report next to every MOS figure.
MODEL_NAME = "DNSMOS P.835 sig_bak_ovr + P.808 model_v8 (speechmos)"
#: DNSMOS's input rate; other rates are resampled to it.
SAMPLE_RATE = 16000
#: The per-clip columns :func:`dnsmos` returns, in :mod:`qvtools.results` order.
MOS_COLUMNS = ("mos_sig", "mos_bak", "mos_ovrl", "mos_p808")
#: DNSMOS window length in seconds (speechmos.dnsmos.INPUT_LENGTH, the DNS-Challenge script's value).
_INPUT_S = 9.01

_model = None
_lock = threading.Lock()
_run_lock = threading.Lock()
_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()
_CACHE_SIZE = 64
#: Most DNSMOS windows scored in one session run. One batch of every window of a 60 s clip (52) grew the
#: process by ~4 GB that onnxruntime's arena kept (the test suite ran out of memory); batches of 8 keep the
#: batching's speed-up and bounded memory (the arena is off for these sessions as well).
_BATCH = 8


def _load():
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            try:
                import onnxruntime
                from importlib.resources import as_file, files

                from speechmos.dnsmos import DNSMOS
            except ImportError as exc:
                raise ImportError("naturalness (DNSMOS) needs speechmos: pip install 'qvtools[eval]' "
                                  "(or pip install speechmos)") from exc

            def session(*parts):
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = 2
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                opts.enable_cpu_mem_arena = False  # give activations back after each run (see _BATCH)
                with as_file(files("speechmos").joinpath(*parts)) as path:
                    return onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                        providers=["CPUExecutionProvider"])

            model = DNSMOS.__new__(DNSMOS)  # speechmos's feature + mapping code, our sessions
            model.primary_model_path = "dnsmos_models/sig_bak_ovr.onnx"
            model.onnx_sess = session("dnsmos_models", "sig_bak_ovr.onnx")
            model.p808_onnx_sess = session("dnsmos_models", "model_v8.onnx")
            _model = model
            log.info("loaded %s", MODEL_NAME)
    return _model


def dnsmos(x, sr: int) -> dict:
    """DNSMOS of one clip: ``{"mos_sig", "mos_bak", "mos_ovrl", "mos_p808"}`` (1-5 scale, floats).

    ``x``: samples (mono, or channels averaged) at rate ``sr``; resampled to 16 kHz. Samples outside
    [-1, 1] are clipped (DNSMOS refuses them), NaN/inf zeroed (:func:`qvtools.audio.as_mono`). Empty audio
    raises :class:`~qvtools.errors.InvalidAudio`; digital silence is scored (DNSMOS rates it low).
    """
    y = as_mono(x, sr, SAMPLE_RATE)
    if y.size == 0:
        raise InvalidAudio("cannot score the naturalness of empty audio")
    y = np.clip(y.astype(np.float32), -1.0, 1.0)
    segments = _windows(y)
    model = _load()
    p808_parts, raw_parts = [], []
    with _run_lock:  # one DNSMOS object shared by every thread; its sessions use two threads anyway
        for i in range(0, len(segments), _BATCH):  # bounded batches: memory stays flat for long clips
            batch = segments[i:i + _BATCH]
            p808_parts.append(model.p808_onnx_sess.run(None, {"input_1": np.stack(
                [np.asarray(model.audio_melspec(audio=seg[:-160]), np.float32) for seg in batch])})[0][:, 0])
            raw_parts.append(model.onnx_sess.run(None, {"input_1": np.stack(batch)})[0])
    p808, raw = np.concatenate(p808_parts), np.concatenate(raw_parts)
    sig, bak, ovrl = model.get_polyfit_val(raw[:, 0], raw[:, 1], raw[:, 2], False)
    return {"mos_sig": float(np.mean(sig)), "mos_bak": float(np.mean(bak)),
            "mos_ovrl": float(np.mean(ovrl)), "mos_p808": float(np.mean(p808))}


def _windows(y: np.ndarray) -> list:
    """The DNSMOS windows of ``y``, cut as ``speechmos.dnsmos.DNSMOS.__call__`` and Microsoft's
    ``dnsmos_local.py`` cut them: the clip doubled until it is 9.01 s long, 9.01 s windows every 1 s
    (so a 4 s reply, doubled to 16 s, gives 7 windows: most of DNSMOS's cost on short replies)."""
    fs = SAMPLE_RATE
    n = int(_INPUT_S * fs)
    audio = y
    while len(audio) < n:
        audio = np.append(audio, audio)
    hops = int(np.floor(len(audio) / fs) - _INPUT_S) + 1
    segments = [audio[int(i * fs): int((i + _INPUT_S) * fs)] for i in range(hops)]
    return [np.ascontiguousarray(seg, dtype=np.float32) for seg in segments if len(seg) >= n]


def reference_mos(x, sr: int) -> dict:
    """:func:`dnsmos` of a reference clip, cached by its content (a run scores each reference once)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    key = (int(sr), a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest())
    with _lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return dict(hit)
    out = dnsmos(a, sr)
    with _lock:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return dict(out)


def clear_cache() -> None:
    """Forget cached reference scores."""
    with _lock:
        _CACHE.clear()


def mos_columns(x, sr: int, reference=None) -> dict:
    """The naturalness columns of one reply (qvtools.results): :data:`MOS_COLUMNS`, ``mos_model`` and, with
    ``reference`` (``(samples, sr)`` of the enrollment clip), ``ref_mos_ovrl`` and ``mos_ovrl_delta``
    (reply minus reference: < 0, the clone sounds worse than the recording it was made from)."""
    out = dnsmos(x, sr)
    out["mos_model"] = MODEL_NAME
    if reference is not None:
        ref = reference_mos(*reference)
        out["ref_mos_ovrl"] = ref["mos_ovrl"]
        out["mos_ovrl_delta"] = out["mos_ovrl"] - ref["mos_ovrl"]
    return out
