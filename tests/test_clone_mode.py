"""Create ``parameters`` per family (issue 18; protocol reference §7.28): qwen3.8 targets need
``voice_clone_mode: normal`` (without it the service silently makes an older-mode clone), qwen3.5 targets
send none; the caller may override; the registry keeps the mode; the local service checks it; duplicate
``preferred_name`` values are accepted and nothing assumes names are unique."""

from __future__ import annotations

import pytest

from qvtools import catalog
from qvtools.config import Settings
from qvtools.enrollment import VoiceClient
from qvtools.errors import APIError, ConfigError
from qvtools.registry import VoiceRegistry

from enrollment_support import HTTPStub

Q38 = "qwen3.8-omni-flash-realtime"
Q35 = "qwen3.5-omni-flash-realtime"


def test_catalog_says_which_parameters_each_family_sends():
    assert catalog.create_parameters(Q38) == {"voice_clone_mode": "normal"}
    assert catalog.create_parameters(Q38 + "-2026-09-01") == {"voice_clone_mode": "normal"}
    assert catalog.create_parameters(Q35) == {} and catalog.create_parameters("qwen3.5-omni-plus") == {}
    assert catalog.create_parameters("made-up-omni-x-realtime") == {}
    assert catalog.family(Q38).cloned_voices is True  # §7.22: clones supported
    assert catalog.check_target_model(Q38) == []  # §7.22/§7.28: Qwen's own harness enrolls for it


def _stub_answer(req, stub):
    if req.action == "list":
        req.send(200, {"output": {"voice_list": [], "total_count": 0}, "request_id": "r"})
    else:
        name = req.input["preferred_name"]
        req.send(200, {"output": {"voice": f"qwen-omni-vc-{name}-voice-20261203100000123-ab12",
                                  "target_model": req.input["target_model"]}, "request_id": "r"})


@pytest.mark.parametrize("target,given,sent", [
    (Q38, None, {"voice_clone_mode": "normal"}),
    (Q35, None, None),
    (Q38, {}, None),
    (Q35, {"voice_clone_mode": "normal"}, {"voice_clone_mode": "normal"}),
])
def test_create_sends_the_family_parameters_unless_overridden(tmp_path, enrollment_wav, target, given, sent):
    with HTTPStub(_stub_answer) as stub:
        c = VoiceClient(Settings(region="local", base_url=stub.url, api_key="sk-x", data_dir=tmp_path))
        voice = c.create(enrollment_wav, target, "me", parameters=given)
        [create] = [r for r in stub.requests if r.action == "create"]
    assert create.json.get("parameters") == sent
    assert list(create.json)[:2] == ["model", "input"]
    assert voice.clone_mode == (sent or {}).get("voice_clone_mode")


def test_bad_parameters_are_refused_before_anything_is_sent(tmp_path, enrollment_wav):
    c = VoiceClient(Settings(region="local", base_url="http://127.0.0.1:9", api_key="sk-x", data_dir=tmp_path))
    for bad in ("normal", {"voice_clone_mode": ""}, {1: "x"}):
        with pytest.raises(ConfigError):
            c.create(enrollment_wav, Q38, "me", parameters=bad)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from qvtools.workspace import connect

    base = tmp_path_factory.mktemp("clone_mode")
    with connect(Settings(region="local", api_key="sk-h18-clone-mode", data_dir=base)) as w:
        yield w


def test_local_service_accepts_and_checks_voice_clone_mode(ws, enrollment_wav):
    voice = ws.voices.create(enrollment_wav, Q38, "mode")
    assert voice.clone_mode == "normal" and voice.target_model == Q38
    with pytest.raises(APIError) as info:
        ws.voices.create(enrollment_wav, Q38, "mode", parameters={"voice_clone_mode": "turbo"})
    assert info.value.status == 400 and "voice_clone_mode" in str(info.value)
    import requests

    from qvtools.audio import data_url
    from qvtools.config import ENROLLMENT_PATH

    body = {"model": "qwen-voice-enrollment", "parameters": {"voice_clone_mode": 1},
            "input": {"action": "create", "target_model": Q38, "preferred_name": "mode",
                      "audio": {"data": data_url(enrollment_wav, "audio/wav")}}}
    r = requests.post(ws.service.url + ENROLLMENT_PATH, json=body, timeout=60,
                      headers={"Authorization": "Bearer sk-h18-clone-mode"})
    assert r.status_code == 400 and "voice_clone_mode" in r.json()["message"]


def test_duplicate_preferred_names_make_distinct_voices(ws, enrollment_wav):
    """§7.28: the cloud accepts duplicate names; the local service too, and listing/selecting keeps both."""
    a = ws.voices.create(enrollment_wav, Q35, "twin")
    b = ws.voices.create(enrollment_wav, Q35, "twin")
    assert a.voice != b.voice and a.preferred_name == b.preferred_name == "twin"
    assert {a.voice, b.voice} <= {v.voice for v in ws.voices.select("twin")}


def test_registry_keeps_the_clone_mode(ws, enrollment_wav, tmp_path, caplog):
    reg = VoiceRegistry(tmp_path / "reg.sqlite", ws.voices)
    made = reg.ensure(enrollment_wav, Q38, "reg38")
    assert made.clone_mode == "normal"
    again = VoiceRegistry(tmp_path / "reg.sqlite", ws.voices)  # a new process reads it back
    assert again.lookup(enrollment_wav, Q38).clone_mode == "normal"
    with caplog.at_level("WARNING", logger="qvtools.registry"):
        same = again.ensure(enrollment_wav, Q38, "reg38", parameters={})
    assert same.voice == made.voice and "voice_clone_mode" in caplog.text
    reg.close()
    again.close()
