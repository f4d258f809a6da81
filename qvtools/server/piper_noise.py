"""Piper's sampling noise made reproducible (issue 19 item 8).

A Piper (VITS) voice draws Gaussian noise inside the ONNX graph (two ``RandomNormalLike`` nodes: the stochastic
duration predictor and the flow's prior). onnxruntime seeds those generators once per session from a
per-process random seed and advances them on every run, so the same sentence came out as different bytes in
every process, and even within one process depending on what was synthesized before (the end-to-end speech
tests were loosened four times for it).

:func:`seeded_model` rewrites the graph so each ``RandomNormalLike(x)`` becomes ``Slice(noise_i, 0, Shape(x))``
with ``noise_i`` a new graph input, and :class:`SeededSession` feeds those inputs from a NumPy generator seeded
by the run's own inputs (phoneme ids and scales). The noise keeps its distribution (standard normal, scaled by
the model's ``noise_scale``/``noise_w_scale`` as before); a sentence is now the same bytes on every run.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["seeded_model", "SeededSession", "NOISE_INPUT_PREFIX"]

#: Names of the graph inputs that replace the random nodes (``<prefix>0``, ``<prefix>1``, ...).
NOISE_INPUT_PREFIX = "qvtools_noise_"
#: First guess of noise frames per phoneme id for the flow's prior (doubled until it is long enough).
_FRAMES_PER_ID = 24


def seeded_model(path) -> tuple[bytes, list[int]]:
    """The model at ``path`` with its random nodes replaced by noise inputs: ``(model bytes, channels)``,
    ``channels`` the second dimension of each noise input (from the value shapes; ``-1`` when unknown)."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    model = onnx.load(str(path))
    try:
        inferred = shape_inference.infer_shapes(model)
        shapes = {v.name: v.type.tensor_type.shape for v in inferred.graph.value_info}
    except Exception:  # shapes are only a hint for the channel count
        shapes = {}
    graph = model.graph
    nodes, channels = [], []
    zeros = helper.make_tensor(f"{NOISE_INPUT_PREFIX}starts", TensorProto.INT64, [3], [0, 0, 0])
    graph.initializer.append(zeros)
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        i = len(channels)
        name, src, out = f"{NOISE_INPUT_PREFIX}{i}", node.input[0], node.output[0]
        dims = shapes.get(src)
        ch = dims.dim[1].dim_value if dims is not None and len(dims.dim) == 3 and dims.dim[1].dim_value else -1
        channels.append(ch)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, ch if ch > 0 else None,
                                                                                     None]))
        nodes.append(helper.make_node("Shape", [src], [f"{name}_shape"]))
        nodes.append(helper.make_node("Slice", [name, zeros.name, f"{name}_shape"], [out]))
    if not channels:
        raise ValueError(f"{path}: no RandomNormalLike node to seed")
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), channels


class SeededSession:
    """An ``onnxruntime.InferenceSession`` of a :func:`seeded_model`, used like the original by Piper:
    :meth:`run` adds the noise inputs, drawn from a generator seeded by the run's inputs and ``seed``."""

    def __init__(self, session, channels: list[int], *, seed: int = 0):
        self._session = session
        self._channels = list(channels)
        self._seed = int(seed)

    def __getattr__(self, name):  # get_inputs(), get_outputs(), ... of the wrapped session
        return getattr(self._session, name)

    def get_inputs(self):
        return [i for i in self._session.get_inputs() if not i.name.startswith(NOISE_INPUT_PREFIX)]

    def _rng(self, feed: dict) -> np.random.Generator:
        h = hashlib.sha256(str(self._seed).encode())
        for key in sorted(feed):
            h.update(key.encode())
            h.update(np.ascontiguousarray(feed[key]).tobytes())
        return np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))

    def run(self, output_names, input_feed, run_options=None):
        ids = int(np.asarray(input_feed["input"]).shape[-1])
        scales = np.asarray(input_feed.get("scales", [0, 1, 0]), np.float32).ravel()
        length_scale = float(scales[1]) if scales.size > 1 else 1.0
        frames = max(256, int(_FRAMES_PER_ID * ids * max(1.0, length_scale)))
        while True:
            rng = self._rng(input_feed)
            feed = dict(input_feed)
            for i, ch in enumerate(self._channels):
                # the first node draws per phoneme id, the later one per output frame (too few: retry longer)
                length = ids if i == 0 else frames
                feed[f"{NOISE_INPUT_PREFIX}{i}"] = rng.standard_normal((1, ch if ch > 0 else 2, length),
                                                                       dtype=np.float32)
            try:
                return self._session.run(output_names, feed, run_options)
            except Exception:
                if frames >= 1 << 20:
                    raise
                frames *= 2
