"""qvtools.connect(): the local region starts its own service; base_url points at a running one."""

from __future__ import annotations

import pytest
import requests

import qvtools
from qvtools.config import Settings
from qvtools.errors import ConfigError, VoiceModelMismatch
from qvtools.server import LocalService


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("QVTOOLS_REGION", "DASHSCOPE_API_KEY", "QVTOOLS_BASE_URL", "QVTOOLS_WS_URL", "QVTOOLS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_local_connect_starts_and_stops_a_service(tmp_path):
    with qvtools.connect(data_dir=tmp_path) as ws:
        assert ws.is_local and ws.service is not None
        assert ws.describe() == f"local service at {ws.service.url} — latencies are simulated"
        assert ws.settings.base_url == ws.service.url and ws.settings.ws_url == ws.service.ws_url
        assert ws.voices.count() == 0
        assert (tmp_path / "service" / "voices.sqlite3").is_file()
        url = ws.service.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_connect_to_a_running_service(tmp_path):
    with LocalService(data_dir=tmp_path / "svc") as svc:
        settings = Settings(base_url=svc.url, api_key=svc.api_key, data_dir=tmp_path)
        with qvtools.connect(settings) as ws:
            assert ws.service is None and ws.is_local
            assert ws.wait_ready(30) is False  # not our service to wait for
            assert "latencies are simulated" in ws.describe()
            assert ws.voices.count() == 0


def test_service_config_configures_the_embedded_service_only(tmp_path):
    from qvtools.server import ServiceConfig

    with qvtools.connect(data_dir=tmp_path, service_config=ServiceConfig(realtime_latency_scale=0.5)) as ws:
        assert ws.service.config.realtime_latency_scale == 0.5
    with pytest.raises(ConfigError, match="service_config configures the embedded local service"):
        qvtools.connect(Settings(region="intl", api_key="sk-never-shown", data_dir=tmp_path),
                        service_config=ServiceConfig())


def test_cloud_region_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("QVTOOLS_REGION", "singapore")
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        qvtools.connect(data_dir=tmp_path)


def test_cloud_describe_without_network(tmp_path):
    ws = qvtools.connect(Settings(region="intl", api_key="sk-never-shown", data_dir=tmp_path))
    try:
        assert not ws.is_local and ws.service is None
        assert ws.describe().startswith("singapore region (https://dashscope-intl.aliyuncs.com)")
        assert "sk-never-shown" not in repr(ws) and "sk-never-shown" not in repr(ws.settings)
    finally:
        ws.close()


# -- Workspace.realtime (a real turn through the embedded local service) -------------------------------
PLUS = "qwen3.5-omni-plus-realtime"
FLASH = "qwen3.5-omni-flash-realtime"


@pytest.fixture(scope="module")
def local_ws(tmp_path_factory):
    """One workspace with its embedded local service for the realtime tests (explicit settings, no env)."""
    with qvtools.connect(Settings(region="local", data_dir=tmp_path_factory.mktemp("ws"))) as ws:
        yield ws


@pytest.fixture(scope="module")
def plus_voice(local_ws, enrollment_wav):
    return local_ws.voices.create(enrollment_wav, PLUS, "wsplus", language="en")


def _sessions(ws) -> set:
    return {r[0] for r in ws.service.trace.records()}


@pytest.mark.slow
def test_realtime_turn_through_the_workspace(local_ws):
    from realtime_support import utterance

    assert local_ws.wait_ready(120)  # the embedded service warmed its speech engines in the background
    with local_ws.realtime(PLUS, voice="Tina", turn_detection=None, instructions="Answer briefly.") as rt:
        assert rt.connected and rt.settings is local_ws.settings
        turn = rt.send_audio(utterance(), realtime=False, timeout=60)
    assert not rt.connected
    assert turn.status == "completed", turn.error
    assert turn.model == PLUS and turn.voice == "Tina" and turn.session_id in _sessions(local_ws)
    assert "weather" in (turn.user_transcript or "").lower() and turn.assistant_transcript
    assert turn.audio.size > 12000 and turn.sample_rate == 24000
    lat = turn.latency()
    assert 0 < lat["ttfa_created_ms"] < lat["ttfa_ms"] < 60_000


@pytest.mark.slow
def test_cloned_voice_object_mismatch_refused_before_connecting(local_ws, plus_voice):
    assert plus_voice.target_model == PLUS
    before = _sessions(local_ws)
    with pytest.raises(VoiceModelMismatch, match="enrolled for target_model"):
        local_ws.realtime(FLASH, voice=plus_voice)
    # by name: the target model is looked up through ws.voices, same refusal
    with pytest.raises(VoiceModelMismatch, match=FLASH):
        local_ws.realtime(FLASH, voice=plus_voice.voice)
    assert _sessions(local_ws) == before  # no connection was made


@pytest.mark.slow
def test_cloned_voice_by_name_connects_for_its_model(local_ws, plus_voice):
    with local_ws.realtime(PLUS, voice=plus_voice.voice) as rt:
        assert rt.config["voice"] == plus_voice.voice


def test_unknown_cloned_voice_name_is_a_clear_error(local_ws):
    missing = "qwen-omni-vc-nobody-voice-20260101000000000-abcd"
    with pytest.raises(ConfigError, match="not in this account.*qvtools voices list"):
        local_ws.realtime(PLUS, voice=missing)
