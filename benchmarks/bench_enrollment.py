"""Enrollment round trips against the local service: create / list / delete timings.

    /work/venv/bin/python benchmarks/bench_enrollment.py [-n 5]

Prints the median (and min/max) wall time of N repetitions of: a raw HTTP create (server
decode + VAD + voice analysis), a VoiceClient.create (client preflight + encode + the same),
a list of 100 voices (one page), and a delete. Enrollment speech is synthesized offline with
piper and resampled to 24 kHz.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import requests

from qvtools.audio import data_url, resample, wav_bytes
from qvtools.config import ENROLLMENT_PATH, Settings
from qvtools.enrollment import VoiceClient
from qvtools.server import LocalService
from qvtools.server.store import VoiceRecord

TEXT = ("The quick brown fox jumps over the lazy dog while the morning sun rises slowly over the quiet hills. "
        "Voice cloning needs a clean recording of continuous speech, spoken in a calm room without any music. "
        "We read a few sentences aloud, at a steady pace, so that the service can learn the sound of the voice.")
MODEL = "qwen3.5-omni-plus-realtime"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def summary(name: str, ms: list[float]) -> str:
    return f"{name:<32} median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f}   max {max(ms):8.1f}   (n={len(ms)})"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="repetitions per operation")
    args = ap.parse_args(argv)

    from qvtools.server.tts import Synthesizer

    x, sr = Synthesizer().synthesize(TEXT)
    x = resample(x, sr, 24000)
    wav = wav_bytes(x, 24000)
    print(f"enrollment audio: {len(x) / 24000:.1f} s at 24 kHz, {len(wav) / 1e6:.2f} MB WAV")

    with tempfile.TemporaryDirectory() as tmp, LocalService(data_dir=tmp) as svc:
        url = svc.url + ENROLLMENT_PATH
        headers = {"Authorization": f"Bearer {svc.api_key}"}
        http = requests.Session()
        body = {"model": "qwen-voice-enrollment", "input": {"action": "create", "target_model": MODEL,
                                                            "preferred_name": "bench",
                                                            "audio": {"data": data_url(wav, "audio/wav")}}}
        post = lambda b: http.post(url, json=b, headers=headers, timeout=120)  # noqa: E731
        post(body).raise_for_status()  # warm up (loads the VAD model, JIT caches)

        raw_create, client_create, list_ms, delete_ms = [], [], [], []
        created = []
        for _ in range(args.n):
            ms, resp = timed(lambda: post(body))
            resp.raise_for_status()
            raw_create.append(ms)
            created.append(resp.json()["output"]["voice"])
        with VoiceClient(Settings(base_url=svc.url, api_key=svc.api_key, data_dir=tmp)) as client:
            client.create((x, 24000), MODEL, "warm")  # warm up the preflight models
            for _ in range(args.n):
                ms, voice = timed(lambda: client.create((x, 24000), MODEL, "benchc"))
                client_create.append(ms)
                created.append(voice.voice)
            for i in range(100 - client.count()):
                svc.store.add(svc.api_key, VoiceRecord(f"qwen-omni-vc-fill{i}-voice-20260101000000000-0000",
                                                       MODEL, None, "fill", "2026-01-01 00:00:00",
                                                       "2026-01-01 00:00:00", None, "0" * 64, None, b""))
            for _ in range(args.n):
                ms, voices = timed(lambda: list(client.list(page_size=100)))
                list_ms.append(ms)
            n_listed = len(voices)
            for name in created:
                ms, _ = timed(lambda: client.delete(name))
                delete_ms.append(ms)

    print(summary("create (raw HTTP)", raw_create))
    print(summary("create (VoiceClient+preflight)", client_create))
    print(summary(f"list ({n_listed} voices, 1 page)", list_ms))
    print(summary("delete", delete_ms))


if __name__ == "__main__":
    main()
