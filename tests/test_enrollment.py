"""VoiceClient against the real local service over HTTP (its transport rules under injected faults
are in tests/test_faults.py)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import numpy as np
import pytest
import requests
import soundfile as sf

from qvtools.config import Settings
from qvtools.enrollment import Voice, VoiceClient, encode_for_upload, raise_for_response
from qvtools.errors import APIError, ConfigError, InvalidAudio, TransportError
from qvtools.server import LocalService
from qvtools.server.store import VoiceRecord

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"
KEY = "sk-client-secret-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc")) as svc:
        yield svc


def settings_for(url, tmp_path, key=KEY, **kw) -> Settings:
    return Settings(region="local", base_url=url, api_key=key, data_dir=tmp_path, **kw)


@pytest.fixture
def client(service, tmp_path):
    c = VoiceClient(settings_for(service.url, tmp_path, key=f"{KEY}-{tmp_path.name}"))
    yield c
    c.close()


@pytest.mark.slow
def test_create_list_count_delete(client, enrollment_wav, tmp_path):
    path = tmp_path / "speech.wav"
    path.write_bytes(enrollment_wav)
    assert client.count() == 0
    voice = client.create(path, PLUS, "alice", language="en")
    assert isinstance(voice, Voice) and voice.target_model == PLUS and voice.preferred_name == "alice"
    assert abs((datetime.now(timezone.utc) - voice.created_utc).total_seconds()) < 60
    listed = list(client.list())
    assert [v.voice for v in listed] == [voice.voice]
    assert listed[0].language == "en" and listed[0].gmt_create
    assert client.count() == 1
    client.delete(voice)
    assert client.count() == 0


@pytest.mark.slow
def test_create_from_array_and_mp3(client, enrollment_speech):
    v1 = client.create(enrollment_speech, FLASH, "arr")
    buf = io.BytesIO()
    sf.write(buf, *enrollment_speech, format="MP3")
    v2 = client.create(buf.getvalue(), FLASH, "mp3")
    assert [v.voice for v in client.list()] == [v2.voice, v1.voice]  # newest first


def test_encode_for_upload_mime(enrollment_speech):
    x, sr = enrollment_speech
    for fmt, subtype, prefix in [("WAV", "PCM_16", "data:audio/wav;"), ("WAV", "FLOAT", "data:audio/wav;"),
                                 ("FLAC", "PCM_16", "data:audio/wav;"), ("MP3", None, "data:audio/mpeg;")]:
        buf = io.BytesIO()
        sf.write(buf, x[: sr * 2], sr, format=fmt, subtype=subtype)
        url = encode_for_upload(buf.getvalue())
        assert url.startswith(prefix), (fmt, subtype)
    assert encode_for_upload((x[:sr], sr)).startswith("data:audio/wav;base64,UklGR")  # "RIFF"


def test_list_pages_through_everything(service, tmp_path):
    key = "sk-many"
    for i in range(7):
        service.store.add(key, VoiceRecord(f"qwen-omni-vc-m{i}-voice-20260101000000000-000{i}", PLUS, None, f"m{i}",
                                           "2026-01-01 00:00:00", "2026-01-01 00:00:00", None, "0" * 64, None, b""))
    with VoiceClient(settings_for(service.url, tmp_path, key=key)) as c:
        names = [v.voice for v in c.list(page_size=3)]
        assert len(names) == 7 and names[0].startswith("qwen-omni-vc-m6-")
        assert c.count() == 7
        deleted = c.purge("m1")
        assert deleted == ["qwen-omni-vc-m1-voice-20260101000000000-0001"]
        assert c.count() == 6
        with pytest.raises(ConfigError):
            c.purge("")


def test_delete_unknown_is_an_api_error(client):
    with pytest.raises(APIError) as info:
        client.delete("qwen-omni-vc-nobody-voice-20260101000000000-abcd")
    err = info.value
    assert (err.status, err.code) == (400, "BadRequest.VoiceNotFound")
    assert err.message == "Voice 'qwen-omni-vc-nobody-voice-20260101000000000-abcd' not found."
    assert err.request_id and not err.retryable


@pytest.mark.parametrize("kwargs, fragment", [
    ({"target_model": "qwen-omni-turbo-realtime"}, "target_model"),
    ({"preferred_name": "has-dash"}, "preferred_name"),
    ({"preferred_name": "x" * 17}, "preferred_name"),
    ({"language": "klingon"}, "language"),
])
def test_local_validation_before_any_request(tmp_path, enrollment_speech, kwargs, fragment):
    # A closed port: any request would be a TransportError, so a ConfigError proves nothing was sent.
    c = VoiceClient(settings_for("http://127.0.0.1:9", tmp_path))
    args = {"target_model": PLUS, "preferred_name": "ok", **kwargs}
    language = args.pop("language", None)
    with pytest.raises(ConfigError, match=fragment):
        c.create(enrollment_speech, args["target_model"], args["preferred_name"], language=language)


def test_preflight_failure_and_force(client):
    silence = (np.zeros(12 * 24000, np.float32), 24000)
    with pytest.raises(InvalidAudio) as info:
        client.create(silence, PLUS, "quiet")
    assert info.value.report is not None and not info.value.report.ok
    with pytest.raises(APIError) as info:
        client.create(silence, PLUS, "quiet", force=True)  # the service rejects it in turn (§3)
    assert (info.value.status, info.value.code) == (400, "Audio.PreprocessError")
    assert client.count() == 0


def test_wrong_key_never_shown(tmp_path):
    with LocalService(data_dir=tmp_path / "svc", api_key="sk-the-right-one") as svc:
        c = VoiceClient(settings_for(svc.url, tmp_path, key=KEY))
        with pytest.raises(APIError) as info:
            c.count()
        assert (info.value.status, info.value.code) == (401, "InvalidApiKey")
        assert KEY not in str(info.value) and KEY not in repr(info.value) and KEY not in repr(c)


def test_connection_refused_is_transport_error_without_key(tmp_path):
    c = VoiceClient(settings_for("http://127.0.0.1:9", tmp_path), max_retries=1, backoff_s=0.01)
    with pytest.raises(TransportError) as info:
        list(c.list())
    assert KEY not in str(info.value)


def _response(status, body, headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers.update(headers or {})
    resp.reason = "Reason"
    return resp


def test_raise_for_response_literal():
    assert raise_for_response(_response(200, {"output": {}, "request_id": "r"}))["request_id"] == "r"
    with pytest.raises(APIError) as info:
        raise_for_response(_response(502, b"<html>Bad gateway</html>", {"x-request-id": "hdr-1"}))
    assert (info.value.status, info.value.code, info.value.request_id) == (502, "Unknown", "hdr-1")
    assert info.value.retryable
    with pytest.raises(APIError) as info:
        raise_for_response(_response(429, {"code": "Throttling", "msg": "slow down"}, {"x-request-id": "hdr-2",
                                                                                      "Retry-After": "3"}))
    err = info.value
    assert (err.code, err.message, err.request_id, err.retry_after) == ("Throttling", "slow down", "hdr-2", 3.0)
    with pytest.raises(APIError) as info:
        raise_for_response(_response(200, b"not json"))
    assert info.value.code == "Unknown"


# The transport rules (retries on 429/5xx honouring Retry-After, a lost delete answer counting as deleted,
# create never retried blindly, a lost create answer reconciled with list) run against the real local
# service with fault injection in tests/test_faults.py.


def test_http_error_mapper_keeps_retry_after_redacts_and_pickles():
    import pickle

    from qvtools.errors import RETRY_AFTER_CAP_S, api_error_from_http

    key = "sk-" + "t3st" * 6
    body = '{"code":"Throttling","message":"slow down, Authorization: Bearer ' + key + '","request_id":"r1"}'
    err = api_error_from_http(429, body, {"Retry-After": "3600"}, secrets=(key,))
    assert (err.status, err.code, err.request_id) == (429, "Throttling", "r1")
    assert key not in str(err) and "***" in err.message
    assert err.retry_after == RETRY_AFTER_CAP_S
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.code, back.message, back.request_id, back.retry_after) == (
        429, "Throttling", err.message, "r1", RETRY_AFTER_CAP_S)
    html = api_error_from_http(502, "<html>Bearer " + key + " bad gateway</html>", {"x-request-id": "h1"})
    assert html.code == "Unknown" and html.request_id == "h1" and key not in html.message
