"""onnxruntime session options for the local service's speech engines on a small shared CPU (issue 22 item 2).

One definition for the engines that synthesize replies (Piper, :mod:`qvtools.server.tts`; Kokoro,
:mod:`qvtools.server.tts_kokoro`): ``threads`` intra-op threads (two: the target machine has two cores),
one inter-op thread with sequential execution (the graphs are chains; a second pool only adds threads), full
graph optimisation, and no busy-waiting between ops. Spinning threads burn CPU that other sessions' turns
need: Kokoro spent 35% more CPU for the same audio with it (benchmarks/bench_languages.py, 2026-11-27) and
Piper 50% more (CPU s per second of speech 0.108 with spinning, 0.072 without, same bytes out; 2026-12-03,
load average 6.7, README "Local service CPU per turn"). None of these options changes the samples.

Denormal floats are NOT flushed to zero (``session.set_denormal_as_zero``), although it saved 5 % of Kokoro's CPU
(0.530 vs 0.556 CPU s per second of speech): onnxruntime sets the flush-to-zero / denormals-are-zero flags of the
thread that runs the session and leaves them set, so after one reply every float computation of that thread --
the user's numpy in a notebook, hypothesis in the tests -- treated subnormal numbers as zero
(tests/test_tts.py checks that a synthesis leaves them alone).
"""

from __future__ import annotations

__all__ = ["speech_session_options"]


def speech_session_options(threads: int = 2):
    """``onnxruntime.SessionOptions`` for a speech engine: ``threads`` intra-op threads, sequential, fully
    optimised graph, no spinning (denormals left alone: see the module docstring)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
