"""qvtools.connect(): the local region starts its own service; base_url points at a running one."""

from __future__ import annotations

import pytest
import requests

import qvtools
from qvtools.config import Settings
from qvtools.errors import ConfigError
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
            assert "latencies are simulated" in ws.describe()
            assert ws.voices.count() == 0


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
