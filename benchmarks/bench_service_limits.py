"""Resource bounds of the local service's HTTP half (issue 13): memory per create, list latency under a
create burst, stalled connections.

    /work/main/.venv/bin/python benchmarks/bench_service_limits.py [--stalled 1000] [--burst 12]

The service runs in its own process (benchmarks/_service.py), its file-descriptor limit lowered to 1,024
(a common default) with ``prlimit``. Prints:

1. peak memory growth of the service process (VmHWM after resetting it through ``/proc/PID/clear_refs``,
   minus VmRSS before) for one create of: the largest accepted body (10 s of speech as a 384 kHz WAV,
   a 10.2 MB data URL), the most samples accepted (59 s of 48 kHz stereo MP3), and a hostile upload
   (60 s of 8-channel 192 kHz FLAC labelled audio/wav, < 1 MB, which cost +1.3 GB before issue 13);
2. ``list`` latency (p50/p95/max) while ``--burst`` creates run at once;
3. ``--stalled`` clients that open a connection and stop mid-headers: the latency of a legitimate
   ``list`` sent while they hang, then how many of their connections the service still holds once the
   header timeout (``http_header_timeout_s``, default 10 s) has passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import re
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _service import ServiceProcess  # noqa: E402

from qvtools.audio import data_url, resample, wav_bytes  # noqa: E402
from qvtools.config import ENROLLMENT_PATH  # noqa: E402
from qvtools.server.config import ServiceConfig  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog while the morning sun rises slowly over the quiet hills. "
        "Voice cloning needs a clean recording of continuous speech, spoken in a calm room without any music. "
        "We read a few sentences aloud, at a steady pace, so that the service can learn the sound of the voice.")
MODEL = "qwen3.5-omni-flash-realtime"
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
HEADER_TIMEOUT_S = ServiceConfig().http_header_timeout_s
LIST = json.dumps({"model": "qwen-voice-enrollment", "input": {"action": "list"}}).encode()


def create_body(data: bytes, mime: str, name: str = "bench") -> bytes:
    return json.dumps({"model": "qwen-voice-enrollment",
                       "input": {"action": "create", "target_model": MODEL, "preferred_name": name,
                                 "audio": {"data": data_url(data, mime)}}}).encode()


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def peak_growth_mb(pid: int, fn) -> float:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = status_kb(pid, "VmRSS")
    fn()
    return (status_kb(pid, "VmHWM") - base) / 1024.0


def hostile_flac() -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=192000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((192000, 8), np.float32)
        for _ in range(60):
            f.write(block)
    return buf.getvalue()


def post(url: str, body: bytes, timeout: float = 120.0) -> requests.Response:
    return requests.post(url + ENROLLMENT_PATH, data=body, headers=HEADERS, timeout=timeout)


def pct(values, q) -> float:
    return float(np.percentile(values, q)) * 1000.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stalled", type=int, default=1000, help="stalled clients (default 1000)")
    ap.add_argument("--burst", type=int, default=12, help="concurrent creates during the list timing (default 12)")
    ap.add_argument("--only", choices=("memory", "burst", "stalled"), help="run one part only")
    args = ap.parse_args(argv)

    from qvtools.server.tts import Synthesizer

    x, sr = Synthesizer().synthesize(TEXT)
    x = resample(x, sr, 24000).astype(np.float32)
    sr = 24000
    wav24 = wav_bytes(x, sr)
    big = wav_bytes(resample(x[: 10 * sr], sr, 384000), 384000)
    mp3 = io.BytesIO()
    long = np.tile(x, int(np.ceil(59 * sr / len(x))))[: 59 * sr]
    sf.write(mp3, np.stack([resample(long, sr, 48000)] * 2, axis=1), 48000, format="MP3")
    uploads = {
        "largest body: 10 s speech, 384 kHz WAV": create_body(big, "audio/wav"),
        "most samples: 59 s 48 kHz stereo MP3": create_body(mp3.getvalue(), "audio/mpeg"),
        "hostile: 60 s 8-ch 192 kHz FLAC as audio/wav": create_body(hostile_flac(), "audio/wav"),
    }
    config = {"warm_speech": False, "enroll_queue_limit": max(16, args.burst)}  # default 10 s header timeout
    if args.only in (None, "memory"):
        print("1. peak memory growth of the service per create (a fresh service each, warmed by one 15 s create)")
    for name, body in (uploads.items() if args.only in (None, "memory") else ()):
        with tempfile.TemporaryDirectory() as tmp:
            svc = ServiceProcess(Path(tmp), config)
            try:
                assert post(svc.url, create_body(wav24, "audio/wav")).status_code == 200  # engines loaded
                answer: list = []
                mb = peak_growth_mb(svc.proc.pid, lambda b=body: answer.append(post(svc.url, b)))
                r = answer[0]
                outcome = "200" if r.status_code == 200 else f"{r.status_code} {r.json()['code']}"
                print(f"   {name:<46} body {len(body) / 1e6:5.1f} MB -> {outcome:<22} peak +{mb:6.1f} MB "
                      f"(RSS {status_kb(svc.proc.pid, 'VmRSS') / 1024:.0f} MB)")
            finally:
                svc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        svc = ServiceProcess(Path(tmp), config)
        try:
            pid = svc.proc.pid
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
            print(f"\nservice pid {pid}, RLIMIT_NOFILE 1024, header timeout {HEADER_TIMEOUT_S:g} s")
            assert post(svc.url, create_body(wav24, "audio/wav")).status_code == 200  # engines loaded
            if args.only in (None, "burst"):
                burst(svc, wav24, args.burst)
            if args.only in (None, "stalled"):
                stalled_clients(svc, args.stalled, HEADER_TIMEOUT_S)
        finally:
            svc.stop()


def burst(svc, wav24: bytes, n: int) -> None:
    print(f"\n2. list latency during a burst of {n} creates")
    body = create_body(wav24, "audio/wav", "burst")
    with concurrent.futures.ThreadPoolExecutor(n) as pool, requests.Session() as s:
        t0 = time.perf_counter()
        creates = [pool.submit(post, svc.url, body) for _ in range(n)]
        lat = []
        while not all(c.done() for c in creates):
            t = time.perf_counter()
            assert s.post(svc.url + ENROLLMENT_PATH, data=LIST, headers=HEADERS, timeout=30).status_code == 200
            lat.append(time.perf_counter() - t)
        codes = [c.result().status_code for c in creates]
        wall = time.perf_counter() - t0
    print(f"   creates: {codes.count(200)} x 200, others {sorted(set(codes) - {200})}, burst took {wall:.1f} s")
    print(f"   list p50 {pct(lat, 50):.1f} ms  p95 {pct(lat, 95):.1f} ms  max {max(lat) * 1000:.1f} ms "
          f"(n={len(lat)}; target p95 < 500 ms)")


def stalled_clients(svc, count: int, header_timeout_s: float) -> None:
    pid = svc.proc.pid
    print(f"\n3. {count} stalled clients (partial request heads)")
    host, port = svc.url.rsplit("/", 1)[-1].split(":")
    stalled = []
    t_open = time.monotonic()
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stalled.append(sock)
    t = time.perf_counter()
    ok = requests.post(svc.url + ENROLLMENT_PATH, data=LIST, headers=HEADERS, timeout=30)
    legit_ms = (time.perf_counter() - t) * 1000
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    print(f"   opened in {time.monotonic() - t_open:.2f} s; a legitimate list meanwhile: {ok.status_code} "
          f"in {legit_ms:.1f} ms; service fds now {fds}")
    # the last one was opened just now: its header timeout runs from here
    deadline = time.monotonic() + header_timeout_s + 3.0
    held = 0
    for sock in stalled:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            held += 1
        sock.close()
    fds_after = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    print(f"   after the header timeout (+3 s): {held} of {count} connections still held; "
          f"service fds {fds_after}")


if __name__ == "__main__":
    main()
