"""Kokoro's int8 convolutions as one prepacked int8 matrix product each: the same samples, less CPU (issue 22
item 3).

The shipped Kokoro-82M model (:mod:`qvtools.server.tts_kokoro`) was made by onnxruntime's dynamic quantization:
each convolution is ``DynamicQuantizeLinear(x) -> ConvInteger(xq, w_uint8, x_zp, w_zp) -> Add(int32 bias) ->
Cast -> Mul(x_scale * w_scale)``, and ``ConvInteger`` was 55-60 % of Kokoro's CPU time (onnxruntime profile).
Its CPU kernel builds an im2col buffer and multiplies unsigned by unsigned 8-bit numbers on every call.

:func:`rewrite_convs` computes the same int32 ``ConvInteger`` output another way, for the generator's
convolutions (resblocks, noise_res: stride 1, one group, length-preserving padding; nearly all of that time):
``Transpose(xq) -> Pad(with x_zp) -> Gather`` of every kernel tap's frames (the im2col buffer, 8 bits) ->
``MatMulInteger(col, W, x_zp, w_zp) -> Transpose``. ``W`` is the shipped weights shifted to signed 8 bits
(``w - 128``, zero point likewise: ``w - zp`` is unchanged) laid out once as a ``[kernel * in, out]`` matrix,
which onnxruntime prepacks for its signed 8-bit kernels. Integer sums are exact, and everything after the
convolution (bias, scale) is left as shipped, so the audio is the same samples (tests/test_kokoro_graph.py).

Tried and not kept (one-off comparisons in one process, runs alternated, 2026-12-03, load average 3.5-4.5): the convolutions as float ``Conv`` with
weights dequantized offline (1-D: 5-11 % *more* CPU; as 2-D convolutions in onnxruntime's blocked NCHWc layout:
1-3 % less, within noise), and signed weights fed to ``ConvInteger`` itself (4 times slower). Fusing the scale
and bias into ``MatMulIntegerToFloat`` would round differently from the shipped graph (not the same samples).

:func:`fast_model` writes the rewritten model once into the model cache beside the source, named by the
source's SHA-256 and :data:`REWRITE_VERSION`, and records the SHA-256 of what it wrote beside it; every load
re-hashes the file and rebuilds it when it does not match (truncated, corrupt, unreadable), so a damaged cache
file is never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["rewrite_convs", "fast_model", "REWRITE_VERSION"]

log = logging.getLogger(__name__)

#: Bumped whenever :func:`rewrite_convs` changes its output (a new cache file name).
REWRITE_VERSION = 2
_PREFIX = "qvtools_mm_"
_lock = threading.Lock()


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def rewrite_convs(model, *, prefix: str = "/decoder/decoder/generator/") -> int:
    """Rewrite, in place, every stride-1, one-group, length-preserving 1-D ``ConvInteger`` with constant
    unsigned 8-bit weights whose node name starts with ``prefix`` (see the module docstring); returns how
    many were rewritten. Its int32 output is computed by ``MatMulInteger`` on the im2col buffer instead, so
    everything after it (bias, scale) and the numbers stay as shipped."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    replace: dict[int, list] = {}
    new_inits = []
    for index, conv in enumerate(graph.node):
        if conv.op_type != "ConvInteger" or not conv.name.startswith(prefix) or len(conv.input) != 4:
            continue
        a = _attrs(conv)
        xq, wq_name, xzp, wzp_name = conv.input
        if (len(list(a.get("kernel_shape", []))) != 1 or a.get("group", 1) != 1
                or list(a.get("strides", [1])) != [1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or wq_name not in inits or wzp_name not in inits or not xzp):
            continue
        wq = numpy_helper.to_array(inits[wq_name])
        wzp = numpy_helper.to_array(inits[wzp_name])
        if wq.dtype != np.uint8 or wq.ndim != 3 or wzp.size != 1:
            continue
        out_ch, in_ch, k = wq.shape
        dil = int(list(a.get("dilations", [1]))[0])
        pads = [int(v) for v in a.get("pads", [0, 0])]
        if len(pads) != 2 or sum(pads) != dil * (k - 1):  # only length-preserving ("same") padding
            continue
        # the same integers, signed: (w - 128) - (zp - 128) == w - zp; row = tap * in_ch + input channel
        ws8 = (wq.astype(np.int16) - 128).astype(np.int8)
        p = _PREFIX + conv.name.strip("/").replace("/", "_")
        new_inits += [
            numpy_helper.from_array(np.ascontiguousarray(ws8.transpose(2, 1, 0).reshape(k * in_ch, out_ch)), p + "_w"),
            numpy_helper.from_array(np.array(int(wzp.ravel()[0]) - 128, np.int8), p + "_wzp"),
            numpy_helper.from_array(np.array([0, pads[0], 0, 0, pads[1], 0], np.int64), p + "_pads"),
            numpy_helper.from_array(np.array([1], np.int64), p + "_axis"),
        ]
        nodes = [helper.make_node("Transpose", [xq], [p + "_xt"], perm=[0, 2, 1]),  # [1, T, C] uint8
                 helper.make_node("Pad", [p + "_xt", p + "_pads", xzp], [p + "_xp"])]  # padded with x's zero
        nodes += _im2col(p, k, in_ch, dil, helper, new_inits, numpy_helper)
        nodes.append(helper.make_node("MatMulInteger", [p + "_col", p + "_w", xzp, p + "_wzp"], [p + "_yt"],
                                      name=p))  # [1, T, out] int32
        nodes.append(helper.make_node("Transpose", [p + "_yt"], [conv.output[0]], perm=[0, 2, 1]))
        replace[index] = nodes
    if not replace:
        return 0
    nodes = [x for i, n in enumerate(graph.node) for x in replace.get(i, [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]  # the unsigned weights are not read any more
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(replace)


def _im2col(p, k, in_ch, dil, helper, new_inits, numpy_helper) -> list:
    """``{p}_col`` = ``[1, T, k * in_ch]``: row ``j`` holds padded frames ``j, j + dil, .., j + (k-1)*dil`` of
    ``{p}_xp`` (``[1, T + pads, in_ch]``), one ``Gather`` (``T`` the unpadded length, read at run time)."""
    new_inits += [numpy_helper.from_array(np.array([2], np.int64), p + "_axis2"),
                  numpy_helper.from_array(np.array(0, np.int64), p + "_zero"),
                  numpy_helper.from_array(np.array(1, np.int64), p + "_one"),
                  numpy_helper.from_array(np.array([0], np.int64), p + "_axis0"),
                  numpy_helper.from_array(np.arange(k, dtype=np.int64)[None, :] * dil, p + "_taps"),
                  numpy_helper.from_array(np.array([-1], np.int64), p + "_flat"),
                  numpy_helper.from_array(np.array([1, -1, k * in_ch], np.int64), p + "_rows")]
    return [helper.make_node("Shape", [p + "_xt"], [p + "_shape"]),
            helper.make_node("Slice", [p + "_shape", p + "_axis", p + "_axis2"], [p + "_len"]),
            helper.make_node("Squeeze", [p + "_len", p + "_axis0"], [p + "_n"]),
            helper.make_node("Range", [p + "_zero", p + "_n", p + "_one"], [p + "_frames"]),
            helper.make_node("Unsqueeze", [p + "_frames", p + "_axis"], [p + "_col_frames"]),  # [T, 1]
            helper.make_node("Add", [p + "_col_frames", p + "_taps"], [p + "_idx2"]),  # [T, k]
            helper.make_node("Reshape", [p + "_idx2", p + "_flat"], [p + "_idx"]),
            helper.make_node("Gather", [p + "_xp", p + "_idx"], [p + "_g"], axis=1),  # [1, T * k, in_ch]
            helper.make_node("Reshape", [p + "_g", p + "_rows"], [p + "_col"])]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fast_model(source: Path, source_sha256: str) -> Path:
    """The rewritten model of ``source`` (whose SHA-256 is ``source_sha256``), built once into the model
    cache beside it and reused while its recorded SHA-256 matches; rebuilt when it does not."""
    from ..rundir import write_atomic

    source = Path(source)
    dest = source.with_name(f"{source.stem}.mm{REWRITE_VERSION}-{source_sha256[:16]}.onnx")
    marker = dest.with_name(dest.name + ".sha256")
    with _lock:
        try:
            recorded = marker.read_text(encoding="ascii").strip()
            if dest.is_file() and _sha256(dest) == recorded:
                return dest
            log.warning("the cached %s does not match its recorded SHA-256: rebuilding it", dest.name)
        except (OSError, UnicodeDecodeError):
            pass
        import onnx

        model = onnx.load(str(source))
        count = rewrite_convs(model)
        if not count:
            raise ConfigError(f"{source.name}: no quantized convolution to rewrite (not the expected Kokoro model)")
        data = model.SerializeToString()
        try:
            marker.unlink(missing_ok=True)  # never a marker that vouches for a half-replaced file
            write_atomic(dest, data)
            write_atomic(marker, (hashlib.sha256(data).hexdigest() + "\n").encode("ascii"))
        except OSError as exc:
            raise ConfigError(f"cannot write the model file {dest} ({exc.strerror or exc}); set "
                              "QVTOOLS_MODEL_CACHE to a writable directory") from exc
        log.info("rewrote %d int8 convolutions of %s as matrix products into %s", count, source.name, dest.name)
        return dest
