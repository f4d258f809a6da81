"""Settings: one place that reads the environment; the key stays out of reprs and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvtools.config import ENROLLMENT_PATH, REALTIME_PATH, Settings
from qvtools.errors import redact
from qvtools.errors import ConfigError
from qvtools.server.config import MAX_DATA_URI_BYTES, ServiceConfig


def test_defaults_are_local(tmp_path):
    s = Settings.from_env({}, data_dir=tmp_path)
    assert s.region == "local" and not s.is_cloud and s.api_key is None
    with pytest.raises(ConfigError, match="local service"):
        s.http_base


@pytest.mark.parametrize("alias, region, host", [
    ("intl", "singapore", "https://dashscope-intl.aliyuncs.com"),
    ("ap-southeast-1", "singapore", "https://dashscope-intl.aliyuncs.com"),
    ("cn", "beijing", "https://dashscope.aliyuncs.com"),
    ("Beijing", "beijing", "https://dashscope.aliyuncs.com"),
])
def test_region_aliases_and_urls(alias, region, host):
    s = Settings.from_env({"QVTOOLS_REGION": alias, "DASHSCOPE_API_KEY": "sk-x"})
    assert s.region == region and s.is_cloud
    assert s.enrollment_url == host + ENROLLMENT_PATH
    assert s.realtime_url == "wss" + host[len("https"):] + REALTIME_PATH


def test_env_variables_are_read(tmp_path):
    s = Settings.from_env({"QVTOOLS_BASE_URL": "http://127.0.0.1:8000/", "DASHSCOPE_API_KEY": "sk-env",
                           "DASHSCOPE_WORKSPACE": "ws1", "QVTOOLS_DATA_DIR": str(tmp_path),
                           "QVTOOLS_TIMEOUT_S": "7.5"})
    assert s.base_url == "http://127.0.0.1:8000" and s.ws_base == "ws://127.0.0.1:8000"
    assert s.data_dir == Path(tmp_path) and s.timeout_s == 7.5
    assert s.auth_headers() == {"Authorization": "Bearer sk-env", "X-DashScope-WorkSpace": "ws1"}


@pytest.mark.parametrize("env, fragment", [
    ({"QVTOOLS_REGION": "mars"}, "unknown region"),
    ({"QVTOOLS_REGION": "singapore"}, "DASHSCOPE_API_KEY"),
    ({"QVTOOLS_TIMEOUT_S": "soon"}, "QVTOOLS_TIMEOUT_S"),
    ({"QVTOOLS_TIMEOUT_S": "-1"}, "timeout_s"),
])
def test_bad_settings(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_key_never_in_repr_and_redacted():
    s = Settings(region="singapore", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(s)
    assert s.redact("Authorization: Bearer sk-very-secret") == "Authorization: Bearer ***"
    assert redact("nothing here", None) == "nothing here"


def test_service_config_defaults_follow_the_documented_limits():
    c = ServiceConfig()
    assert c.api_key is None and c.voice_quota == 1000
    assert c.max_data_uri_bytes == MAX_DATA_URI_BYTES == 10_485_760
    assert c.max_body_bytes > c.max_data_uri_bytes
    assert (c.max_audio_s, c.min_sample_rate, c.min_continuous_speech_s) == (60.0, 24000, 3.0)
    assert c.allowed_mime == ("audio/wav", "audio/mpeg", "audio/mp4")


def test_one_redact_for_all_server_text():
    # issue 19 item 4: the strongest of the three former functions, in qvtools.errors
    import json

    from qvtools import config
    from qvtools.errors import redact as the_one

    assert config.redact is the_one  # Settings.redact's helper is the same function, not a second definition
    assert redact("key sk-abc1 leaked") == "key *** leaked"  # short sk- tokens too (server/app's rule)
    assert redact("a\nb\x1b[2Jc") == "a b [2Jc"  # control characters dropped (log injection)
    assert redact("x" * 400).endswith("…") and len(redact("x" * 400)) == 301
    doc = json.dumps({"note": "Bearer abcdef", "key": "my-secret-1"}, indent=2)
    out = redact(doc, "my-secret-1", limit=None, keep_newlines=True)
    assert json.loads(out) == {"note": "Bearer ***", "key": "***"} and out.count("\n") == doc.count("\n")
