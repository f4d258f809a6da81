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
9.01 s long, per-window scores averaged (same scores as speechmos's own loop, to 1e-7:
tests/test_naturalness.py). The windows of a clip overlap by 8 s, so the P.835 model's convolutional front
runs once over the audio they cover and only its cheap back runs per window (:func:`_split_sig_bak_ovr`);
P.808 runs per window, in batches. Cost on this project's 2-core machine: about 0.27 CPU s for a clip of
one window, and a 4 s reply (doubled to 16 s: 7 windows) about 1.4 CPU s instead of 2.5
(benchmarks/bench_metrics.py).

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
_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()
_CACHE_SIZE = 64
#: Most DNSMOS windows scored in one session run. One batch of every window of a 60 s clip (52) grew the
#: process by ~4 GB that onnxruntime's arena kept (the test suite ran out of memory); batches of 8 keep the
#: batching's speed-up and bounded memory (the arena is off for these sessions as well).
_BATCH = 8
#: Threads per DNSMOS session. One: on the shared 2-core machine a second intra-op thread bought little
#: wall time and cost ~25 % more CPU per window (benchmarks/bench_metrics.py).
_THREADS = 1
#: Where the P.835 model is cut (:func:`_split_sig_bak_ovr`): the output of its fourth 3x3 convolution.
_CUT = "mos_estimator_logpow/conv2d_3/Relu:0"
#: Frames of that output a window edge differs by (four 3x3 convolutions: one frame each).
_CONTEXT = 4
#: The P.835 model's frames: 100 a second (160-sample hop), 900 per 9.01 s window.
_FRAMES_PER_S = 100
_WINDOW_FRAMES = 900
#: Frames of the long pass run at once (memory: ~50 MB of activations).
_CHUNK = 600


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

            def session(model_or_path):
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = _THREADS
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                opts.enable_cpu_mem_arena = False  # give activations back after each run (see _BATCH)
                # no busy-waiting between kernels: spinning threads burn CPU a shared 2-core machine lacks
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                return onnxruntime.InferenceSession(model_or_path, sess_options=opts,
                                                    providers=["CPUExecutionProvider"])

            model = DNSMOS.__new__(DNSMOS)  # speechmos's feature + mapping code, our sessions
            model.primary_model_path = "dnsmos_models/sig_bak_ovr.onnx"
            with as_file(files("speechmos").joinpath("dnsmos_models", "sig_bak_ovr.onnx")) as path:
                model.onnx_sess = session(str(path))
                try:
                    front, back = _split_sig_bak_ovr(str(path))
                    model.sig_front_sess, model.sig_back_sess = session(front), session(back)
                except Exception as exc:  # another speechmos model, or no onnx: same scores, window by window
                    log.warning("DNSMOS P.835 model not split (%s: %s); scoring each window whole (slower)",
                                type(exc).__name__, exc)
                    model.sig_front_sess = model.sig_back_sess = None
            with as_file(files("speechmos").joinpath("dnsmos_models", "model_v8.onnx")) as path:
                model.p808_onnx_sess = session(str(path))
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
    p808_parts = []
    # no lock: onnxruntime sessions run concurrently and speechmos's feature/mapping methods keep no state,
    # so the two turns qvtools compare scores at once (workers=2) use both cores
    for i in range(0, len(segments), _BATCH):  # bounded batches: memory stays flat for long clips
        batch = segments[i:i + _BATCH]
        p808_parts.append(model.p808_onnx_sess.run(None, {"input_1": np.stack(
            [np.asarray(model.audio_melspec(audio=seg[:-160]), np.float32) for seg in batch])})[0][:, 0])
    raw = _sig_bak_ovr_raw(model, segments)
    p808 = np.concatenate(p808_parts)
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


def _split_sig_bak_ovr(path: str) -> tuple[bytes, bytes]:
    """The P.835 model cut in two after its fourth convolution (``conv2d_3``, full time resolution):

    - *front*: waveform ``(N, samples)`` of any length -> log-power STFT (320-sample frames every 160
      samples, the model's own framing) -> conv2d .. conv2d_3 -> ``(N, 32, frames, 161)``;
    - *back*: those features for one 9.01 s window ``(N, 32, 900, 161)`` -> max-pooling, three more
      convolutions, global max, dense layers -> the raw (SIG, BAK, OVRL).

    The front is a stack of 3x3 convolutions with zero padding, so one run over the audio that all the
    windows of a clip cover gives every window's features except its first and last 4 frames (there the
    window sees zero padding, the long run sees the neighbouring audio); those come from short runs over
    each window's edges (:func:`_sig_bak_ovr_raw`). The front holds ~97 % of the model's arithmetic, and
    the windows overlap by 8 s of 9.01 s, so a clip's windows cost about one pass over the clip instead of
    one pass per window. Same weights, same operations: tests compare with speechmos's own loop."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    g = m.graph
    nodes = list(g.node)
    inits = {i.name: i for i in g.initializer}
    cut_at = next((i for i, n in enumerate(nodes) if _CUT in n.output), None)
    if cut_at is None or not {"shape_tensor", "shape_tensor1", "input_1:01_cropping_end"} <= set(inits):
        raise ValueError(f"{path}: not the DNSMOS P.835 graph this split was written for")
    front_nodes, back_nodes = nodes[:cut_at + 1], nodes[cut_at + 1:]
    # any number of frames: crop end -160 (not 144000) and reshape to (batch, -1, 160) (not 900 frames)
    patched = {"shape_tensor": np.array([0, -1, 160], np.int64), "shape_tensor1": np.array([0, -1, 160], np.int64),
               "input_1:01_cropping_end": np.array([np.iinfo(np.int64).max, -160], np.int64)}

    def build(nodes_, inputs, outputs):
        used = {name for n in nodes_ for name in n.input}
        init = [numpy_helper.from_array(patched[k], k) if k in patched else inits[k] for k in sorted(used & set(inits))]
        graph = onnx.helper.make_graph(nodes_, g.name, inputs, outputs, init)
        model = onnx.helper.make_model(graph, opset_imports=m.opset_import, ir_version=m.ir_version)
        return model.SerializeToString()

    f32 = onnx.TensorProto.FLOAT
    front = build(front_nodes, [onnx.helper.make_tensor_value_info("input_1", f32, ["N", "samples"])],
                  [onnx.helper.make_tensor_value_info(_CUT, f32, ["N", 32, "frames", 161])])
    back = build(back_nodes, [onnx.helper.make_tensor_value_info(_CUT, f32, ["N", 32, 900, 161])],
                 [onnx.helper.make_tensor_value_info(o.name, f32, None) for o in g.output])
    return front, back


def _sig_bak_ovr_raw(model, segments: list) -> np.ndarray:
    """Raw P.835 outputs ``(windows, 3)`` of the consecutive DNSMOS ``segments`` of one clip (window ``i``
    starts ``i`` s in, :func:`_windows`), each as the whole model would give it, with the convolution
    front run once over the audio the windows cover (:func:`_split_sig_bak_ovr`)."""
    if len(segments) == 1 or model.sig_front_sess is None:
        return np.concatenate([model.onnx_sess.run(None, {"input_1": np.stack(segments[i:i + _BATCH])})[0]
                               for i in range(0, len(segments), _BATCH)])
    hop, frame = SAMPLE_RATE // _FRAMES_PER_S, _WINDOW_FRAMES  # 160 samples a frame, 900 frames a window
    step = _FRAMES_PER_S  # windows start every 100 frames (1 s)
    total = step * (len(segments) - 1) + frame
    audio = np.concatenate([segments[0]] + [seg[-SAMPLE_RATE:] for seg in segments[1:]])  # the covered span
    front = model.sig_front_sess

    def run(a, b):  # features of frames [a, b) of the span, zero padding at a and b
        return front.run(None, {"input_1": np.ascontiguousarray(audio[None, a * hop:(b + 1) * hop])})[0][0]

    feats = np.empty((32, total, 161), np.float32)
    for a in range(0, total, _CHUNK):  # the long pass in chunks (memory), each with its context frames
        b = min(total, a + _CHUNK)
        lo, hi = max(0, a - _CONTEXT), min(total, b + _CONTEXT)
        feats[:, a:b] = run(lo, hi)[:, a - lo:b - lo]
    edge = 2 * _CONTEXT  # frames of an edge run: the 4 exact ones + the 4 they depend on
    starts = [i * step for i in range(len(segments))]
    heads = front.run(None, {"input_1": np.stack([audio[s * hop:(s + edge + 1) * hop] for s in starts])})[0]
    tails = front.run(None, {"input_1": np.stack(
        [audio[(s + frame - edge) * hop:(s + frame + 1) * hop] for s in starts])})[0]
    out = []
    for i in range(0, len(starts), _BATCH):
        batch = np.stack([feats[:, s:s + frame] for s in starts[i:i + _BATCH]])
        batch[:, :, :_CONTEXT] = heads[i:i + _BATCH, :, :_CONTEXT]
        batch[:, :, -_CONTEXT:] = tails[i:i + _BATCH, :, -_CONTEXT:]
        out.append(model.sig_back_sess.run(None, {_CUT: batch})[0])
    return np.concatenate(out)


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
