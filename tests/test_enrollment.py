"""VoiceClient against the real local service over HTTP, plus its transport rules (retries,
no blind create retry, key never in errors) against tiny stub HTTP servers on port 0."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# -- stub servers for the transport rules -------------------------------------------------------------------
class Stub:
    """A throwaway HTTP server on 127.0.0.1:0 answering from a script ``fn(action, n) -> (status, body, headers)``;
    ``None`` drops the connection without an answer."""

    def __init__(self, fn):
        self.calls: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                action = body["input"]["action"]
                stub.calls.append(action)
                answer = fn(action, len(stub.calls), body)
                if answer is None:
                    self.close_connection = True
                    return
                status, payload, headers = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                             **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _list_answer(voices=()):
    return 200, {"output": {"voice_list": list(voices), "total_count": len(voices)}, "usage": {"count": 0},
                 "request_id": "r"}, {}


def test_list_retries_on_503_with_retry_after(tmp_path):
    def fn(action, n, body):
        if n <= 2:
            return 503, {"code": "ModelUnavailable", "message": "Model is unavailable, try again later.",
                         "request_id": f"r{n}"}, {"Retry-After": "0"}
        return _list_answer([{"voice": "v1", "target_model": PLUS}])

    with Stub(fn) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path), backoff_s=0.01)
        assert [v.voice for v in c.list()] == ["v1"]
        assert stub.calls == ["list", "list", "list"]


def test_delete_retry_that_finds_the_voice_gone_is_success(tmp_path):
    def fn(action, n, body):
        if n == 1:
            return None  # the first delete went through but its answer was lost
        return 400, {"code": "BadRequest.VoiceNotFound", "message": "Voice 'v' not found.", "request_id": "r"}, {}

    with Stub(fn) as stub:
        VoiceClient(settings_for(stub.url, tmp_path), backoff_s=0.01).delete("v")
        assert stub.calls == ["delete", "delete"]


def test_create_is_never_retried_blindly(tmp_path, enrollment_speech):
    def fn(action, n, body):
        return 503, {"code": "ModelUnavailable", "message": "Model is unavailable, try again later.",
                     "request_id": "r"}, {}

    with Stub(fn) as stub:
        with pytest.raises(APIError) as info:
            VoiceClient(settings_for(stub.url, tmp_path), backoff_s=0.01).create(enrollment_speech, PLUS, "once")
        assert info.value.status == 503 and stub.calls == ["create"]


def test_create_without_answer_is_reconciled_with_list(tmp_path, enrollment_speech):
    made = []

    def fn(action, n, body):
        if action == "create":  # the service makes the voice when the request arrives, then the answer is lost
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S%f")[:17]
            made.append(f"qwen-omni-vc-lost-voice-{stamp}-beef")
            return None
        return _list_answer([{"voice": made[0], "target_model": PLUS}])

    with Stub(fn) as stub:
        voice = VoiceClient(settings_for(stub.url, tmp_path)).create(enrollment_speech, PLUS, "lost")
        assert voice.voice == made[0] and stub.calls == ["create", "list"]


def test_create_without_answer_and_no_voice_is_transport_error(tmp_path, enrollment_speech):
    def fn(action, n, body):
        return None if action == "create" else _list_answer()

    with Stub(fn) as stub:
        with pytest.raises(TransportError, match="check `qvtools voices list`") as info:
            VoiceClient(settings_for(stub.url, tmp_path)).create(enrollment_speech, PLUS, "lost")
        assert stub.calls == ["create", "list"] and KEY not in str(info.value)
