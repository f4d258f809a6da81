"""Client CPU per second of received reply audio: qvtools ``RealtimeSession`` vs the official dashscope SDK.

Both clients talk to the same local service, which runs in a **subprocess** (``serve_forever`` from a
tiny inline ``python -c``), so none of the service's CPU lands in this process. The service answers in
echo mode (``realtime_reply_mode="echo"``: the reply speaks the transcript of the user's words) with no
simulated latency, and every session uses the same built-in voice and ``seed``, so both clients receive
the same reply. The user turn is the four spoken prompts of ``data/prompts`` joined into one ~11 s
utterance, so each reply is ~10 s of 24 kHz audio in 100 ms ``response.audio.delta`` events.

Manual turn detection (protocol reference §4.5 b): the prompt is appended as fast as possible in 100 ms
``input_audio_buffer.append`` events (3,200 bytes of PCM16), then ``input_audio_buffer.commit`` and
``response.create``; the turn ends at ``response.done``.

- qvtools: ``RealtimeSession(turn_detection=None).send_audio(clip, realtime=False, manual=True)``; the
  send phase ends at the first event handed to ``on_event`` (``input_audio_buffer.committed``, which the
  service only sends after the commit, and which the client handles only after ``response.create``).
- dashscope SDK 2.x legacy client: ``OmniRealtimeConversation`` with ``enable_turn_detection=False``,
  ``append_audio`` (base64 encoded here, inside the send phase), ``commit()``, ``create_response()``; its
  ``on_event`` callback decodes each audio delta's base64 and keeps the PCM bytes and the transcript
  deltas (what an application has to do to get the reply in hand); the main thread waits for
  ``response.done`` on a condition with a timeout.

CPU is ``time.process_time()`` of this process (all threads: the clients' reader threads included).
Only one client is connected at a time (each client's session is closed before the next one opens), one
unmeasured warm-up turn precedes each client's measured turns, and ``gc.collect()`` runs before each turn.
Receive CPU per second of reply audio = CPU from the end of the send phase to ``response.done`` divided
by the seconds of audio received. A third, diagnostic row repeats the SDK run with websocket-client's
pure-Python UTF-8 validation of received text frames switched off (the SDK leaves it on; qvtools skips
it, see ``RealtimeSession.connect``), to show how much of the difference that check is.

Run: ``python benchmarks/bench_client_cpu.py [--turns 3] [--voice Tina] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qvtools import audio  # noqa: E402
from qvtools.config import Settings  # noqa: E402
from qvtools.realtime import RealtimeSession  # noqa: E402
from qvtools.resources import samples_dir  # noqa: E402
from _service import ServiceProcess  # noqa: E402

MODEL = "qwen3.5-omni-plus-realtime"
KEY = "sk-client-cpu-bench"
IN_RATE, OUT_RATE = 16000, 24000
CHUNK_BYTES = 2 * IN_RATE // 10  # 100 ms of 16 kHz PCM16 per append

def long_prompt(names: list[str]) -> np.ndarray:
    """The sample prompts (qvtools/samples/prompts) joined with 0.4 s pauses, float32 at 16 kHz."""
    gap = np.zeros(int(0.4 * IN_RATE), np.float32)
    parts = []
    for name in names:
        x, _ = audio.load(samples_dir() / "prompts" / f"{name}.wav", mono=True, sample_rate=IN_RATE)
        parts += [x.astype(np.float32), gap]
    return np.concatenate(parts)


class Measure:
    """One turn's figures."""

    def __init__(self, send_cpu, recv_cpu, send_wall, recv_wall, nbytes, transcript):
        self.send_cpu, self.recv_cpu = send_cpu, recv_cpu
        self.send_wall, self.recv_wall = send_wall, recv_wall
        self.nbytes = nbytes
        self.audio_s = nbytes / 2.0 / OUT_RATE
        self.transcript = transcript


# ------------------------------------------------------------------------------------------- qvtools
def qvtools_turns(svc: ServiceProcess, clip: np.ndarray, voice: str, seed: int, turns: int, timeout: float):
    settings = Settings(region="local", base_url=svc.url, api_key=KEY)
    out = []
    with RealtimeSession(settings, MODEL, voice=voice, turn_detection=None, seed=seed,
                         response_timeout=timeout) as rt:
        for k in range(turns + 1):  # turn 0: warm-up, not measured
            gc.collect()
            mark: dict[str, float] = {}

            def on_event(_event, mark=mark):
                if "cpu" not in mark:  # first event of the turn: input_audio_buffer.committed
                    mark["cpu"], mark["wall"] = time.process_time(), time.perf_counter()

            c0, w0 = time.process_time(), time.perf_counter()
            turn = rt.send_audio((clip, IN_RATE), realtime=False, manual=True, chunk_ms=100, on_event=on_event)
            c2, w2 = time.process_time(), time.perf_counter()
            if turn.status != "completed":
                raise RuntimeError(f"qvtools turn {k}: {turn.status}: {turn.error}")
            if k:
                out.append(Measure(mark["cpu"] - c0, c2 - mark["cpu"], mark["wall"] - w0, w2 - mark["wall"],
                                   2 * len(turn.audio), turn.assistant_transcript))
        rt.finish()
    return out


# ----------------------------------------------------------------------------------------------- SDK
def sdk_turns(svc: ServiceProcess, clip: np.ndarray, voice: str, seed: int, turns: int, timeout: float,
              skip_utf8: bool = False):
    from dashscope.audio.qwen_omni import (AudioFormat, MultiModality, OmniRealtimeCallback,
                                           OmniRealtimeConversation)

    class Collector(OmniRealtimeCallback):
        """What an application's callback does: keep the decoded reply audio and its transcript."""

        def __init__(self):
            self.cond = threading.Condition()
            self.reset()

        def reset(self):
            self.audio: list[bytes] = []
            self.text: list[str] = []
            self.types: set[str] = set()
            self.error = None

        def on_event(self, response: dict) -> None:
            typ = response.get("type")
            if typ == "response.audio.delta":
                self.audio.append(base64.b64decode(response["delta"]))
            elif typ == "response.audio_transcript.delta":
                self.text.append(response.get("delta", ""))
            elif typ == "error":
                self.error = response.get("error")
            with self.cond:
                self.types.add(typ)
                self.cond.notify_all()

        def wait(self, typ: str, timeout: float) -> None:
            with self.cond:
                ok = self.cond.wait_for(lambda: typ in self.types or self.error is not None, timeout)
            if self.error is not None:
                raise RuntimeError(f"SDK: error event while waiting for {typ}: {self.error}")
            if not ok:
                raise RuntimeError(f"SDK: no {typ} within {timeout:.0f} s")

    pcm = audio.to_pcm16(clip)
    rec = Collector()
    conv = OmniRealtimeConversation(model=MODEL, callback=rec, url=f"{svc.ws_url}/api-ws/v1/realtime", api_key=KEY)
    conv.connect()
    if skip_utf8:
        # diagnostic only: the SDK runs WebSocketApp.run_forever() with websocket-client's default
        # pure-Python UTF-8 validation of every text frame; switch it off on the live connection
        # (private websocket-client attributes) to see how much of the SDK's cost it is.
        conv.ws.sock.frame_buffer.skip_utf8_validation = True
        conv.ws.sock.cont_frame.skip_utf8_validation = True
    out = []
    try:
        rec.wait("session.created", 10)
        conv.update_session(output_modalities=[MultiModality.AUDIO, MultiModality.TEXT], voice=voice,
                            input_audio_format=AudioFormat.PCM_16000HZ_MONO_16BIT,
                            output_audio_format=AudioFormat.PCM_24000HZ_MONO_16BIT,
                            enable_turn_detection=False, seed=seed)
        rec.wait("session.updated", 10)
        for k in range(turns + 1):  # turn 0: warm-up, not measured
            rec.reset()
            gc.collect()
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(0, len(pcm), CHUNK_BYTES):
                conv.append_audio(base64.b64encode(pcm[i:i + CHUNK_BYTES]).decode("ascii"))
            conv.commit()
            conv.create_response()
            c1, w1 = time.process_time(), time.perf_counter()
            rec.wait("response.done", timeout)
            reply = b"".join(rec.audio)
            transcript = "".join(rec.text)
            c2, w2 = time.process_time(), time.perf_counter()
            if k:
                out.append(Measure(c1 - c0, c2 - c1, w1 - w0, w2 - w1, len(reply), transcript))
        conv.end_session(timeout=10)
    finally:
        conv.close()
    return out


# ---------------------------------------------------------------------------------------------- main
def summary(name: str, rows: list[Measure]) -> dict:
    audio_s = sum(r.audio_s for r in rows)
    recv_cpu = sum(r.recv_cpu for r in rows)
    return {"client": name, "turns": len(rows), "audio_s": audio_s, "bytes": sum(r.nbytes for r in rows),
            "recv_wall_s": sum(r.recv_wall for r in rows), "recv_cpu_s": recv_cpu,
            "send_cpu_ms": 1000.0 * float(np.median([r.send_cpu for r in rows])),
            "send_wall_ms": 1000.0 * float(np.median([r.send_wall for r in rows])),
            "ms_per_audio_s": 1000.0 * recv_cpu / audio_s,
            "turn_ms_per_audio_s": [1000.0 * r.recv_cpu / r.audio_s for r in rows]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=3, help="measured turns per client (after one warm-up turn)")
    ap.add_argument("--voice", default="Tina", help="built-in voice of both sessions")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--prompts", nargs="+", default=["weather", "dinner", "math", "travel"],
                    help="sample prompt clips joined into the one user utterance")
    ap.add_argument("--no-diagnostic", dest="diagnostic", action="store_false",
                    help="skip the third row (the SDK with websocket-client's UTF-8 validation switched off)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each response.done")
    args = ap.parse_args(argv)
    if args.turns < 1:
        ap.error("--turns must be at least 1")

    clip = long_prompt(args.prompts)
    cfg = {"realtime_latency": "none", "realtime_reply_mode": "echo", "max_sessions_per_key": 0}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qvtools-bench-cpu-") as tmp:
        svc = ServiceProcess(Path(tmp), cfg, warm=True)
        try:
            print(f"service {svc.url} (subprocess pid {svc.proc.pid}); user turn {len(clip) / IN_RATE:.1f} s, "
                  f"{(len(clip) * 2 + CHUNK_BYTES - 1) // CHUNK_BYTES} appends; voice {args.voice}, seed {args.seed}",
                  flush=True)
            qv = qvtools_turns(svc, clip, args.voice, args.seed, args.turns, args.timeout)
            sdk = sdk_turns(svc, clip, args.voice, args.seed, args.turns, args.timeout)
            diag = sdk_turns(svc, clip, args.voice, args.seed, args.turns, args.timeout, skip_utf8=True) \
                if args.diagnostic else None
        finally:
            svc.stop()

    rows = [summary("qvtools RealtimeSession", qv), summary("dashscope SDK (legacy)", sdk)]
    if diag:
        rows.append(summary("SDK, UTF-8 check off *", diag))
    base = rows[1]["ms_per_audio_s"]
    print()
    print(f"{'client':<26}{'turns':>6}{'audio_s':>9}{'bytes':>11}{'recv wall s':>12}{'recv CPU s':>11}"
          f"{'CPU ms/audio s':>15}{'ratio':>7}{'send CPU ms':>12}{'send wall ms':>13}")
    for r in rows:
        print(f"{r['client']:<26}{r['turns']:>6}{r['audio_s']:>9.2f}{r['bytes']:>11}{r['recv_wall_s']:>12.2f}"
              f"{r['recv_cpu_s']:>11.3f}{r['ms_per_audio_s']:>15.2f}{r['ms_per_audio_s'] / base:>7.2f}"
              f"{r['send_cpu_ms']:>12.1f}{r['send_wall_ms']:>13.1f}")
    print()
    print("ratio = CPU ms per audio s relative to the SDK; send figures are medians per turn "
          "(appends + commit + response.create)")
    for r in rows:
        per = ", ".join(f"{v:.2f}" for v in r["turn_ms_per_audio_s"])
        print(f"per-turn CPU ms/audio s, {r['client']}: {per}")
    if diag:
        print("* diagnostic, not how the SDK runs: websocket-client's pure-Python UTF-8 validation of each "
              "received text frame switched off on the SDK's connection")
    # Piper's sampling noise makes each synthesis a little longer or shorter; the text is the same
    texts = {m.transcript for m in qv + sdk}
    diff = abs(rows[0]["audio_s"] - rows[1]["audio_s"]) / rows[1]["audio_s"]
    print(f"reply transcripts identical across clients and turns: {len(texts) == 1}; reply audio totals differ by "
          f"{100 * diff:.1f} % (TTS sampling noise); transcript: {qv[0].transcript!r}")
    print(f"total wall {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
