"""Shared, process-wide helpers for the realtime tests: one warmed-up LocalService (the speech
engines load once) and a short synthesized user utterance. Not a test module."""

from __future__ import annotations

import atexit
import functools
import json
import time

import numpy as np

from qvtools.audio import data_url, wav_bytes
from qvtools.config import ENROLLMENT_PATH, Settings

PLUS = "qwen3.5-omni-plus-realtime"
FLASH = "qwen3.5-omni-flash-realtime"
UTTERANCE = "What is the weather like today?"


@functools.lru_cache(maxsize=None)
def shared_service():
    """A LocalService with simulated latency off (tests measure order and content, not delays)."""
    from qvtools.server import LocalService, ServiceConfig

    svc = LocalService(config=ServiceConfig(realtime_latency="none")).start()
    atexit.register(svc.stop)
    return svc


@functools.lru_cache(maxsize=None)
def utterance() -> tuple[np.ndarray, int]:
    """~2 s of synthetic speech (piper) as ``(float32, rate)``, with a short lead-in silence."""
    from qvtools.server.tts import Synthesizer

    x, sr = Synthesizer().synthesize(UTTERANCE)
    x = np.concatenate([np.zeros(int(0.3 * sr), np.float32), np.asarray(x, np.float32)])
    return x, sr


def settings_for(svc, key: str | None = None, **kw) -> Settings:
    return Settings(region="local", base_url=svc.url, api_key=key or svc.api_key, **kw)


def create_voice(svc, wav: bytes, *, target=PLUS, name="guanyu", key=None) -> str:
    import requests

    body = {"model": "qwen-voice-enrollment",
            "input": {"action": "create", "target_model": target, "preferred_name": name,
                      "audio": {"data": data_url(wav, "audio/wav")}}}
    r = requests.post(svc.url + ENROLLMENT_PATH, json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key or svc.api_key}"})
    assert r.status_code == 200, r.text
    return r.json()["output"]["voice"]


class RawClient:
    """A bare websocket-client connection for protocol-level tests (events in, events out)."""

    def __init__(self, svc, model=PLUS, key=None, timeout=30.0):
        import websocket

        self.ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={model}", timeout=timeout,
                                              header=[f"Authorization: Bearer {key or svc.api_key}"])
        self.timeout = timeout

    def send(self, event) -> None:
        self.ws.send(event if isinstance(event, str) else json.dumps(event))

    def recv(self) -> dict:
        return json.loads(self.ws.recv())

    def until(self, *types, timeout=None) -> list[dict]:
        """Receive events up to and including the first of ``types``; returns all of them."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.01, deadline - time.monotonic()))
            e = self.recv()
            out.append(e)
            if e["type"] in types:
                return out
        raise TimeoutError(f"none of {types} within the timeout; got {[e['type'] for e in out]}")

    def close(self) -> None:
        self.ws.close()


def wav_of(x, sr) -> bytes:
    return wav_bytes(x, sr)


