"""The realtime handshake checks (qvtools/server/rt_handshake.py) with literal dicts: no socket, no service."""

from __future__ import annotations

from qvtools.server.config import ServiceConfig
from qvtools.server.rt_handshake import Refusal, admit, check_handshake, model_accepted, release

FLASH = "qwen3.5-omni-flash-realtime"


def test_a_known_model_under_the_caps_goes_ahead():
    assert check_handshake(FLASH, "sk-a", ServiceConfig(), {}) is None


def test_unknown_models_are_a_404_and_any_omni_realtime_name_is_accepted_by_default():
    cfg = ServiceConfig()
    assert check_handshake("", "sk-a", cfg, {}) == Refusal(404, "ModelNotFound", "Model can not be found.")
    assert check_handshake("qwen-plus", "sk-a", cfg, {}).status == 404
    assert model_accepted("qwen9-omni-turbo-realtime", cfg)  # §7.8: the pattern, not the catalog
    strict = ServiceConfig(realtime_reject_unknown_model=True)
    assert not model_accepted("qwen9-omni-turbo-realtime", strict) and model_accepted(FLASH, strict)


def test_per_key_cap_refuses_with_429_and_retry_after():
    cfg = ServiceConfig(max_sessions_per_key=2, max_sessions=0)
    refusal = check_handshake(FLASH, "sk-a", cfg, {"sk-a": 2, "sk-b": 5})
    assert (refusal.status, refusal.code, refusal.headers) == (429, "Throttling.RateQuota", {"Retry-After": "1"})
    assert "at most 2 concurrent realtime sessions per API key" in refusal.message
    assert check_handshake(FLASH, "sk-b", ServiceConfig(max_sessions_per_key=0, max_sessions=0), {"sk-b": 99}) is None
    assert check_handshake(FLASH, "sk-c", cfg, {"sk-a": 2}) is None  # another key is not held back


def test_global_cap_counts_every_key():
    cfg = ServiceConfig(max_sessions_per_key=8, max_sessions=3)
    refusal = check_handshake(FLASH, "sk-new", cfg, {"sk-a": 2, "sk-b": 1})
    assert refusal.status == 429 and "at most 3 concurrent realtime sessions on this service" in refusal.message
    assert check_handshake(FLASH, "sk-new", cfg, {"sk-a": 2}) is None


def test_admit_and_release_keep_the_counts_the_caps_read():
    cfg = ServiceConfig(max_sessions_per_key=1, max_sessions=0)
    active: dict = {}
    admit(active, "sk-a")
    assert active == {"sk-a": 1} and check_handshake(FLASH, "sk-a", cfg, active).status == 429
    release(active, "sk-a")
    assert active == {} and check_handshake(FLASH, "sk-a", cfg, active) is None
