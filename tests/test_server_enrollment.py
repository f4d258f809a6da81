"""The local service's enrollment endpoint over real HTTP (protocol reference §2, §3, §5 items 1–3)."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import uuid

import numpy as np
import pytest
import requests
import soundfile as sf

from qvtools.audio import data_url, resample, wav_bytes
from qvtools.config import ENROLLMENT_PATH
from qvtools.server import LocalService, ServiceConfig
from qvtools.server.store import VoiceRecord
from conftest import read_http_answer

TIMEOUT = 60
PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"
NAME_RE = re.compile(r"^qwen-omni-vc-(?P<name>[A-Za-z0-9_]+)-voice-\d{17}-[0-9a-f]{4}$")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc")) as svc:
        yield svc


def post(svc, body=None, key="sk-alice", **kw):
    headers = kw.pop("headers", {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    if body is not None:
        kw["json"] = body
    return requests.post(svc.url + ENROLLMENT_PATH, headers=headers, timeout=TIMEOUT, **kw)


def create_body(data: str, name="guanyu", target=PLUS, **extra) -> dict:
    return {"model": "qwen-voice-enrollment",
            "input": {"action": "create", "target_model": target, "preferred_name": name, "audio": {"data": data},
                      **extra}}


def list_body(page_index=0, page_size=10) -> dict:
    return {"model": "qwen-voice-enrollment", "input": {"action": "list", "page_index": page_index,
                                                        "page_size": page_size}}


def assert_error(resp, status: int, code: str, message: str | None = None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code
    uuid.UUID(body["request_id"])
    assert resp.headers["x-request-id"] == body["request_id"]
    if message is not None:
        assert body["message"] == message
    return body


def total(svc, key="sk-alice") -> int:
    return post(svc, list_body(0, 1), key=key).json()["output"]["total_count"]


@pytest.fixture(scope="module")
def mp3_url(enrollment_speech) -> str:
    buf = io.BytesIO()
    sf.write(buf, enrollment_speech[0], enrollment_speech[1], format="MP3")
    return "data:audio/mpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# -- the seed's bodies, unchanged but for the host ------------------------------------------------------
@pytest.mark.slow
def test_seed_create_list_delete_bodies(service, mp3_url):
    url = service.url + ENROLLMENT_PATH  # only the host differs from the SEED sample
    headers = {"Authorization": "Bearer sk-seed", "Content-Type": "application/json"}
    payload = {"model": "qwen-voice-enrollment",
               "input": {"action": "create", "target_model": PLUS, "preferred_name": "guanyu",
                         "audio": {"data": mp3_url}, "text": "optional transcript", "language": "zh"}}
    resp = requests.post(url, json=payload, headers=headers, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    voice = body["output"]["voice"]
    assert NAME_RE.match(voice).group("name") == "guanyu"
    assert body["output"]["target_model"] == PLUS
    assert body["usage"] == {"count": 1}
    uuid.UUID(body["request_id"])

    resp = requests.post(url, json={"model": "qwen-voice-enrollment",
                                    "input": {"action": "list", "page_index": 0, "page_size": 10}},
                         headers=headers, timeout=TIMEOUT)
    assert resp.status_code == 200
    body = resp.json()
    assert body["usage"] == {"count": 0}
    [item] = body["output"]["voice_list"]
    assert item["voice"] == voice and item["target_model"] == PLUS and item["language"] == "zh"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", item["gmt_create"])
    assert item["gmt_modified"] == item["gmt_create"]
    assert body["output"]["total_count"] == 1 and body["output"]["page_size"] == 10

    resp = requests.post(url, json={"model": "qwen-voice-enrollment", "input": {"action": "delete", "voice": voice}},
                         headers=headers, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["usage"] == {"count": 0} and resp.json()["output"] == {"voice": voice}
    assert total(service, "sk-seed") == 0


def test_create_from_wav_stores_audio_and_profile(service, enrollment_wav):
    key = "sk-wav"
    body = create_body(data_url(enrollment_wav, "audio/wav"), name="wav_1", target=FLASH)
    body["parameters"] = {}  # the SDK's BaseApi.call adds it (§2 [sdk])
    resp = post(service, body, key=key)
    assert resp.status_code == 200, resp.text
    voice = resp.json()["output"]["voice"]
    record = service.store.get(key, voice)
    assert record.target_model == FLASH and record.preferred_name == "wav_1"
    x, sr = sf.read(io.BytesIO(record.audio))
    assert sr == 24000 and 10 < len(x) / sr < 20
    assert isinstance(record.profile, dict) and record.profile
    assert record.voice_profile() is not None
    assert record.last_used is None
    assert service.store.touch(key, voice) and service.store.get(key, voice).last_used is not None


# -- errors -----------------------------------------------------------------------------------------------
def _param(name):
    return f"Required parameter({name}) missing or invalid, please check the request parameters."


@pytest.mark.parametrize("body, code, message", [
    ({"input": {"action": "list"}}, "InvalidParameter", _param("model")),
    ({"model": "qwen-tts", "input": {"action": "list"}}, "InvalidParameter", "Model not found"),
    ({"model": "qwen-voice-enrollment"}, "InvalidParameter", _param("input")),
    ({"model": "qwen-voice-enrollment", "input": {"action": "rename"}}, "InvalidParameter", _param("input.action")),
    ({"model": "qwen-voice-enrollment", "input": {}}, "InvalidParameter", _param("input.action")),
    (create_body("data:audio/wav;base64,AAAA", target="qwen-omni-turbo-realtime"), "InvalidParameter",
     _param("input.target_model")),
    (create_body("data:audio/wav;base64,AAAA", name="bad-name"), "InvalidParameter", _param("input.preferred_name")),
    (create_body("data:audio/wav;base64,AAAA", name="x" * 17), "InvalidParameter", _param("input.preferred_name")),
    (create_body("data:audio/wav;base64,AAAA", language="xx"), "InvalidParameter", _param("input.language")),
    ({"model": "qwen-voice-enrollment", "input": {"action": "create", "target_model": PLUS,
                                                  "preferred_name": "a"}}, "InvalidParameter",
     _param("input.audio.data")),
    (create_body("data:audio/ogg;base64,AAAA"), "InvalidParameter", _param("input.audio.data")),
    (create_body("data:audio/wav;base64,!!!not base64"), "InvalidParameter", _param("input.audio.data")),
    (create_body("data:audio/wav;base64,AAAAAAAA"), "Audio.DecoderError", "Decoder audio file failed."),
    (list_body(page_index=-1), "InvalidParameter", _param("input.page_index")),
    (list_body(page_size=1_000_001), "InvalidParameter", _param("input.page_size")),
    (list_body(page_size="10"), "InvalidParameter", _param("input.page_size")),
    (list_body(page_size=True), "InvalidParameter", _param("input.page_size")),
    ({"model": "qwen-voice-enrollment", "input": {"action": "delete"}}, "InvalidParameter", _param("input.voice")),
    ({"model": "qwen-voice-enrollment", "input": {"action": "delete", "voice": "qwen-omni-vc-x-voice-1"}},
     "BadRequest.VoiceNotFound", "Voice 'qwen-omni-vc-x-voice-1' not found."),
])
def test_request_errors(service, body, code, message):
    before = total(service)
    assert_error(post(service, body), 400, code, message)
    assert total(service) == before


def test_http_url_is_refused_offline(service):
    body = assert_error(post(service, create_body("https://example.com/voice.mp3")), 400, "InvalidParameter")
    assert "offline" in body["message"] and "data URL" in body["message"]


@pytest.mark.parametrize("data, headers", [
    ("{not json", {"Content-Type": "application/json"}),
    ("[1, 2]", {"Content-Type": "application/json"}),
    (b"\xff\xfe", {"Content-Type": "application/json"}),
    ('{"model": "qwen-voice-enrollment"}', {"Content-Type": "text/plain"}),
    ("", {}),
])
def test_malformed_bodies(service, data, headers):
    resp = post(service, data=data, headers={"Authorization": "Bearer sk-alice", **headers})
    assert_error(resp, 400, "InvalidParameter", "Required body invalid, please check the request body format.")


def test_unknown_path_and_method_keep_the_error_shape(service):
    assert_error(requests.post(service.url + "/api/v1/nope", timeout=TIMEOUT), 404, "NotFound")
    assert_error(requests.get(service.url + ENROLLMENT_PATH, timeout=TIMEOUT), 405, "MethodNotAllowed")


@pytest.mark.parametrize("headers, message", [
    ({}, "No API-key provided."),
    ({"Authorization": "Bearer "}, "Invalid API-key provided."),
    ({"Authorization": "Basic c2stYQ=="}, "Invalid API-key provided."),
])
def test_auth_required(service, headers, message):
    assert_error(post(service, list_body(), headers=headers), 401, "InvalidApiKey", message)


def test_configured_key_is_checked(tmp_path):
    with LocalService(data_dir=tmp_path, api_key="sk-right") as svc:
        assert svc.api_key == "sk-right"
        assert_error(post(svc, list_body(), key="sk-wrong"), 401, "InvalidApiKey", "Invalid API-key provided.")
        assert post(svc, list_body(), key="sk-right").status_code == 200


# -- audio rules (§2.4) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_audio(enrollment_speech):
    x, sr = enrollment_speech
    short = np.concatenate([x[: int(2.0 * sr)], np.zeros(8 * sr, np.float32)])
    return {
        "long": wav_bytes(np.tile(x, int(np.ceil(61 * sr / len(x)))), sr),
        "rate16k": wav_bytes(resample(x, sr, 16000), 16000),
        "silence": wav_bytes(np.zeros(12 * sr, np.float32), sr),
        "short": wav_bytes(short, sr),
    }


@pytest.mark.parametrize("which, code, message", [
    ("long", "Audio.DurationLimitError", "Audio duration exceeds maximum allowed limit."),
    ("rate16k", "Audio.AudioRateError", "File sample rate unsupported."),
    ("silence", "Audio.PreprocessError", "Audio preprocess error."),
    ("short", "Audio.PreprocessError", "No segments meet minimum duration requirement"),
])
def test_audio_rules(service, bad_audio, which, code, message):
    before = total(service)
    assert_error(post(service, create_body(data_url(bad_audio[which], "audio/wav"))), 400, code, message)
    assert total(service) == before


# -- size limits ------------------------------------------------------------------------------------------
TOO_BIG = "Exceeded limit on max bytes per data-uri item : 10485760"


def test_data_uri_over_10mb(service):
    data = "data:audio/wav;base64," + "A" * 10_485_760
    assert_error(post(service, create_body(data)), 400, "InvalidParameter", TOO_BIG)


def test_100mb_streamed_body_is_refused(service):
    chunk = b"x" * (1 << 20)
    sent = []

    def body():
        for _ in range(100):
            sent.append(len(chunk))
            yield chunk

    resp = post(service, data=body(), headers={"Authorization": "Bearer sk-alice",
                                               "Content-Type": "application/json"})
    assert_error(resp, 400, "InvalidParameter", TOO_BIG)


def test_declared_100mb_body_is_refused_before_reading(service):
    """Only the headers are sent: the answer must come without the server waiting for the body."""
    host, port = service.url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall((f"POST {ENROLLMENT_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-alice\r\n"
                      "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{").encode())
        head, payload = read_http_answer(sock)
    assert head.startswith(b"HTTP/1.1 400")
    assert TOO_BIG.encode() in payload and b'"InvalidParameter"' in payload


# -- scoping, quota, listing --------------------------------------------------------------------------------
def test_keys_are_isolated(service, enrollment_wav):
    resp = post(service, create_body(data_url(enrollment_wav, "audio/wav"), name="mine"), key="sk-owner")
    voice = resp.json()["output"]["voice"]
    other = post(service, list_body(), key="sk-intruder").json()["output"]
    assert other["total_count"] == 0 and other["voice_list"] == []
    delete = {"model": "qwen-voice-enrollment", "input": {"action": "delete", "voice": voice}}
    assert_error(post(service, delete, key="sk-intruder"), 400, "BadRequest.VoiceNotFound", f"Voice '{voice}' not found.")
    assert [v["voice"] for v in post(service, list_body(), key="sk-owner").json()["output"]["voice_list"]] == [voice]
    raw = (service.data_dir / "voices.sqlite3").read_bytes()
    assert b"sk-owner" not in raw  # only the SHA-256 of the key is stored


@pytest.mark.slow
def test_quota(tmp_path, enrollment_wav):
    with LocalService(data_dir=tmp_path, config=ServiceConfig(voice_quota=1)) as svc:
        body = create_body(data_url(enrollment_wav, "audio/wav"), name="q")
        assert post(svc, body).status_code == 200
        assert_error(post(svc, body), 400, "Throttling.AllocationQuota",
                     "Maximum voice storage limit exceeded, please delete existing voices.")
        assert total(svc) == 1
        assert post(svc, body, key="sk-someone-else").status_code == 200  # the quota is per key


def test_list_pages_newest_first(service):
    key = "sk-pages"
    names = [f"qwen-omni-vc-p{i}-voice-20260101000000000-{i:04x}" for i in range(25)]
    for name in names:
        service.store.add(key, VoiceRecord(name, PLUS, "en", "p", "2026-01-01 00:00:00", "2026-01-01 00:00:00",
                                           None, "0" * 64, None, b"RIFF"))
    pages = [post(service, list_body(i, 10), key=key).json()["output"] for i in range(4)]
    got = [v["voice"] for p in pages for v in p["voice_list"]]
    assert got == names[::-1]
    assert [len(p["voice_list"]) for p in pages] == [10, 10, 5, 0]
    assert all(p["total_count"] == 25 for p in pages)
    assert pages[1]["page_index"] == 1 and pages[1]["page_size"] == 10
    empty = post(service, list_body(0, 0), key=key).json()["output"]
    assert empty["voice_list"] == [] and empty["total_count"] == 25
    defaults = post(service, {"model": "qwen-voice-enrollment", "input": {"action": "list"}}, key=key).json()
    assert len(defaults["output"]["voice_list"]) == 10 and defaults["output"]["page_index"] == 0


@pytest.mark.slow
def test_dashscope_sdk_base_api_call(service, enrollment_wav, monkeypatch):
    """The SDK's generic BaseApi.call (sdk notes §3, §5 item 9) against the local service."""
    dashscope = pytest.importorskip("dashscope")
    from dashscope.client.base_api import BaseApi

    monkeypatch.setattr(dashscope, "base_http_api_url", service.url + "/api/v1")

    def call(**inp):
        return BaseApi.call(model="qwen-voice-enrollment", task_group="audio", task="tts", function="customization",
                            input=inp, api_protocol="http", http_method="POST", api_key="sk-sdk")

    created = call(action="create", target_model=PLUS, preferred_name="sdk",
                   audio={"data": data_url(enrollment_wav, "audio/wav")})
    assert created.status_code == 200 and created.usage["count"] == 1
    voice = created.output["voice"]
    listed = call(action="list", page_index=0, page_size=10)
    assert [v["voice"] for v in listed.output["voice_list"]] == [voice]
    assert call(action="delete", voice=voice).status_code == 200
    missing = call(action="delete", voice=voice)
    assert (missing.status_code, missing.code, missing.message) == (400, "BadRequest.VoiceNotFound",
                                                                     f"Voice '{voice}' not found.")
    uuid.UUID(missing.request_id)


@pytest.mark.slow
def test_random_bodies_never_cause_a_500(service):
    """Client mistakes of any shape get a documented 4xx, never an InternalError."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2_000_000), st.text(max_size=20),
                        st.sampled_from(["create", "list", "delete", PLUS, "qwen-voice-enrollment", "en",
                                         "data:audio/wav;base64,AAAA", "http://x/y.wav"]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
    fields = st.fixed_dictionaries({}, optional={
        "action": values, "target_model": values, "preferred_name": values, "language": values,
        "audio": st.one_of(values, st.fixed_dictionaries({"data": values})), "voice": values,
        "page_index": values, "page_size": values, "text": values})
    bodies = st.one_of(values, st.fixed_dictionaries({"model": st.one_of(values, st.just("qwen-voice-enrollment")),
                                                      "input": st.one_of(values, fields)}))

    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
    @hypothesis.given(bodies)
    def check(body):
        resp = post(service, data=json.dumps(body), key="sk-fuzz")
        assert resp.status_code in (200, 400), resp.text
        if resp.status_code == 400:
            assert set(resp.json()) == {"request_id", "code", "message"}

    check()


def test_enrollment_answers_while_the_default_executor_is_saturated(tmp_path):
    """Enrollment work has its own thread pool: realtime speech work filling the loop's default
    executor (simulated here by blocked tasks) must not queue create/list/delete behind it."""
    import asyncio
    import threading

    from qvtools.server import ServiceConfig

    release = threading.Event()
    with LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False)) as svc:
        loop = svc._loop
        blockers = [asyncio.run_coroutine_threadsafe(_block_default_executor(release), loop) for _ in range(64)]
        try:
            r = post(svc, {"model": "qwen-voice-enrollment", "input": {"action": "list"}})
            assert r.status_code == 200 and r.json()["output"]["total_count"] == 0
        finally:
            release.set()
            for b in blockers:
                b.result(timeout=10)


async def _block_default_executor(release):
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
