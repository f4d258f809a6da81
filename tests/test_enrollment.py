"""VoiceClient against the real local service over HTTP (its transport rules under injected faults
are in tests/test_faults.py), and against misbehaving stdlib servers on 127.0.0.1:0 for the issue 13
hardening: total deadlines, redaction, paging limits, answer-size cap, safe reconciliation of a lost create."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import requests
import soundfile as sf

from enrollment_support import HTTPStub
from qvtools import enrollment as enrollment_module
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
    ({"target_model": ""}, "target_model"),
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


def test_target_model_outside_the_catalog_is_a_warning_not_a_refusal(tmp_path, enrollment_speech, caplog):
    """Issue 9 item 2: the service decides which target models it takes (§7.8, §7.19); qvtools warns."""
    from enrollment_support import ReplayServer, load_fixture

    fx = load_fixture("enrollment_create_fallback.json")
    with ReplayServer(fx["exchanges"]) as srv, VoiceClient(settings_for(srv.url, tmp_path)) as c:
        with caplog.at_level("WARNING", logger="qvtools.enrollment"):
            c.create(enrollment_speech, "qwen4-omni-ultra-realtime", "ok")
        sent = [r.input.get("target_model") for r in srv.requests if r.action == "create"]
    assert sent == ["qwen4-omni-ultra-realtime"]
    assert any("qwen4-omni-ultra-realtime" in r.getMessage() and "documented enrollment targets" in r.getMessage()
               for r in caplog.records)


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


# -- hardening (issue 13): real sockets, misbehaving stdlib servers on 127.0.0.1:0 ------------------------
DEADLINE_S = 2.0


def _list_body(items, **extra):
    return {"output": {"voice_list": items, **extra}, "usage": {"count": 0}, "request_id": "r"}


def _item(name, model=PLUS, stamp=None):
    stamp = stamp or datetime.now(timezone.utc)
    ms = f"{stamp.microsecond // 1000:03d}"
    return {"voice": f"qwen-omni-vc-{name}-voice-{stamp.strftime('%Y%m%d%H%M%S')}{ms}-{abs(hash(name)) % 65536:04x}",
            "target_model": model, "gmt_create": stamp.strftime("%Y-%m-%d %H:%M:%S")}


def _silent(req, stub):
    stub.stop_event.wait(30)  # never answers (until the stub is closed)


def _drip_body(req, stub):
    h = req.handler
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.flush()
    while not stub.stop_event.wait(0.5):
        h.wfile.write(b" ")
        h.wfile.flush()


def _drip_headers(req, stub):
    w = req.handler.wfile
    w.write(b"HTTP/1.1 200 OK\r\n")
    w.flush()
    while not stub.stop_event.wait(0.5):
        w.write(b"X")  # one byte of an endless header line
        w.flush()


@pytest.mark.perf  # wall clock: bounds relative to the configured deadline
@pytest.mark.parametrize("behaviour", [_silent, _drip_body, _drip_headers], ids=["silent", "drip-body",
                                                                                 "drip-headers"])
def test_every_call_ends_within_its_total_deadline(behaviour, tmp_path):
    """timeout_s bounds the whole call, not each read: a body or headers dripped one byte every 0.5 s, or a
    server that never answers, end the call within ~timeout_s (target: ≤ 2x timeout_s)."""
    with HTTPStub(behaviour) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path, timeout_s=DEADLINE_S), backoff_s=0.01)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="deadline") as info:
            list(c.list())
        elapsed = time.monotonic() - t0
        c.close()
    assert DEADLINE_S - 0.1 <= elapsed < 2 * DEADLINE_S, elapsed  # measured: 2.0-2.25 s
    assert KEY not in str(info.value)


@pytest.mark.perf  # wall clock: bounds relative to Retry-After and the configured deadline
def test_retry_after_is_honoured_only_within_the_deadline(tmp_path, caplog):
    def throttled(req, stub):
        req.send(429, {"code": "Throttling", "message": "slow down", "request_id": "t"}, {"Retry-After": "1.2"})

    with HTTPStub(throttled) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path, timeout_s=DEADLINE_S), backoff_s=0.01, max_retries=5)
        t0 = time.monotonic()
        with caplog.at_level("WARNING", logger="qvtools.enrollment"), pytest.raises(APIError) as info:
            list(c.list())
        elapsed = time.monotonic() - t0
    # first Retry-After (1.2 s) fits in the 2 s deadline, the second does not: two requests, then the 429
    assert len(stub.requests) == 2 and info.value.status == 429
    assert 1.2 <= elapsed < DEADLINE_S, elapsed
    assert any("not retried" in r.getMessage() and "deadline" in r.getMessage() for r in caplog.records)


SECRET = "live-Zq9xW2mK7pR4tY8u"  # not sk-shaped: masked because it is the configured key


@pytest.mark.parametrize("answer", ["html502", "json500"])
def test_server_text_echoing_the_key_is_redacted_everywhere(answer, tmp_path, caplog):
    def echo(req, stub):
        auth = req.headers.get("Authorization", "")
        if answer == "html502":
            page = f"<html><body><h1>502 Bad Gateway</h1><pre>Authorization: {auth}\nkey={SECRET}</pre></body></html>"
            req.send(502, page.encode(), {"Content-Type": "text/html"})
        else:
            req.send(500, {"code": "InternalError", "message": f"bad header {auth!r}; token {SECRET}",
                           "request_id": f"rid-{SECRET}"})

    with HTTPStub(echo) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path, key=SECRET), backoff_s=0.01, max_retries=2)
        with caplog.at_level("DEBUG"), pytest.raises(APIError) as info:
            list(c.list())
        assert len(stub.requests) == 3 and SECRET in stub.requests[0].headers["Authorization"]
    err = info.value
    assert err.status in (500, 502) and "***" in str(err)
    for text in (str(err), repr(err), repr(err.args), str(vars(err)), caplog.text):
        assert SECRET not in text
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2  # the retry warnings were logged


def test_paging_stops_when_the_server_ignores_page_index(tmp_path):
    page = [_item(f"same{i}") for i in range(3)]

    def ignores(req, stub):
        req.send(200, _list_body(page))  # no total_count, page_index ignored

    with HTTPStub(ignores) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path))
        got = []
        with pytest.raises(APIError, match="ignore page_index") as info:
            for v in c.list(page_size=3):
                got.append(v.voice)
    assert info.value.code == "InvalidResponse"
    assert got == [x["voice"] for x in page] and len(stub.requests) == 2


def test_paging_stops_past_the_hard_maximum(tmp_path, monkeypatch):
    monkeypatch.setattr(enrollment_module, "MAX_LIST_PAGES", 5)

    def endless(req, stub):
        i = req.input["page_index"]
        req.send(200, _list_body([_item(f"p{i}a"), _item(f"p{i}b")]))

    with HTTPStub(endless) as stub:
        c = VoiceClient(settings_for(stub.url, tmp_path))
        with pytest.raises(APIError, match="did not end after 5 pages"):
            list(c.list(page_size=2))
    assert [r.input["page_index"] for r in stub.requests] == [0, 1, 2, 3, 4]


def test_a_voice_shifted_onto_the_next_page_is_not_an_error(tmp_path):
    a, b, c_, d = (_item(n) for n in ("sa", "sb", "sc", "sd"))
    pages = {0: [a, b], 1: [b, c_], 2: [d]}  # a create while paging shifted b onto page 1

    def shifting(req, stub):
        req.send(200, _list_body(pages[req.input["page_index"]], total_count=4))

    with HTTPStub(shifting) as stub, VoiceClient(settings_for(stub.url, tmp_path)) as c:
        assert [v.voice for v in c.list(page_size=2)] == [x["voice"] for x in (a, b, c_, d)]


def test_answers_larger_than_the_cap_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(enrollment_module, "MAX_RESPONSE_BYTES", 100_000)
    big = json.dumps(_list_body([_item(f"big{i}") for i in range(2000)])).encode()
    assert len(big) > 200_000

    def announced(req, stub):
        req.send(200, big)

    def unannounced(req, stub):  # no Content-Length: read until the peer closes
        h = req.handler
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(big)

    def gzip_bomb(req, stub):  # 50 kB on the wire, 20 MB decoded
        import gzip

        req.send(200, gzip.compress(b" " * 20_000_000, 9), {"Content-Encoding": "gzip"})

    for respond in (announced, unannounced, gzip_bomb):
        with HTTPStub(respond) as stub, VoiceClient(settings_for(stub.url, tmp_path)) as c:
            with pytest.raises(APIError, match="100000") as info:
                list(c.list())
        assert (info.value.status, info.value.code, info.value.retryable) == (200, "ResponseTooLarge", False)


def test_deeply_nested_json_is_an_api_error_not_a_recursion_error(tmp_path):
    def nested(req, stub):
        req.send(200, b"[" * 100_000 + b"]" * 100_000)

    with HTTPStub(nested) as stub, VoiceClient(settings_for(stub.url, tmp_path), max_retries=0) as c:
        with pytest.raises(APIError) as info:
            list(c.list())
    assert info.value.code == "Unknown"


class _LostCreate:
    """list answers from ``voices``; a create runs ``on_create`` (which may add voices) and then drops the
    connection without an answer (the answer was lost)."""

    def __init__(self, voices, on_create):
        self.voices = voices
        self.on_create = on_create

    def __call__(self, req, stub):
        if req.action == "list":
            req.send(200, _list_body(self.voices, total_count=len(self.voices)))
        elif req.action == "create":
            self.on_create(self.voices, req)
            req.handler.close_connection = True  # no answer at all
        else:
            req.send(400, {"code": "InvalidParameter", "message": "unexpected", "request_id": "x"})


def _create(stub, tmp_path, speech):
    c = VoiceClient(settings_for(stub.url, tmp_path), backoff_s=0.01)
    try:
        return c.create(speech, PLUS, "dup", force=True)
    finally:
        c.close()


def test_lost_create_answer_adopts_the_one_new_voice(tmp_path, enrollment_speech):
    ours = {}

    def made(voices, req):
        ours.update(_item(req.input["preferred_name"]))
        voices.insert(0, dict(ours))

    older = _item("dup", stamp=datetime(2026, 1, 1, tzinfo=timezone.utc))
    with HTTPStub(_LostCreate([older], made)) as stub:
        voice = _create(stub, tmp_path, enrollment_speech)
    assert voice.voice == ours["voice"] and voice.voice != older["voice"]


def test_lost_create_answer_with_two_new_candidates_adopts_none_and_deletes_nothing(tmp_path,
                                                                                   enrollment_speech):
    def two(voices, req):  # ours and another client's, same preferred_name and target model
        voices[:0] = [_item("dup"), _item("dup", stamp=datetime.now(timezone.utc) + timedelta(milliseconds=5))]

    with HTTPStub(_LostCreate([], two)) as stub:
        with pytest.raises(TransportError) as info:
            _create(stub, tmp_path, enrollment_speech)
        listed = [v["voice"] for v in stub.respond.voices]
        assert "delete" not in stub.actions() and len(listed) == 2
    msg = str(info.value)
    assert all(name in msg for name in listed)
    assert "none was adopted and nothing was deleted" in msg


def test_lost_create_answer_never_adopts_a_voice_older_than_the_request(tmp_path, enrollment_speech):
    # another client's voice of the same name, created before our request (not new since our snapshot,
    # or stamped earlier than the request): never adopted
    cases = {"in the snapshot": lambda voices, req: None,
             "stamped before": lambda voices, req: voices.insert(0, _item(
                 "dup", stamp=datetime.now(timezone.utc) - timedelta(minutes=5)))}
    for what, on_create in cases.items():
        start = [_item("dup", stamp=datetime.now(timezone.utc) - timedelta(hours=1))] if what == "in the snapshot" \
            else []
        with HTTPStub(_LostCreate(start, on_create)) as stub:
            with pytest.raises(TransportError, match="predate the request") as info:
                _create(stub, tmp_path, enrollment_speech)
            assert "delete" not in stub.actions(), what
        assert "nothing was deleted" in str(info.value), what


def test_lost_create_answer_judges_age_on_the_service_clock(tmp_path, enrollment_speech):
    """A service whose clock is an hour behind ours stamps our new voice an hour 'before' the request by our
    clock: its Date header puts the request's start on its clock, so the voice is adopted; a voice five
    minutes older than that on the service's clock still is not."""
    from email.utils import formatdate

    behind = timedelta(hours=1)

    def service_now():
        return datetime.now(timezone.utc) - behind

    for extra_age, adopted in ((timedelta(0), True), (timedelta(minutes=5), False)):
        def made(voices, req, extra_age=extra_age):
            voices.insert(0, _item("dup", stamp=service_now() - extra_age))

        lost = _LostCreate([], made)

        def respond(req, stub, lost=lost):
            req.handler.date_time_string = lambda timestamp=None: formatdate(
                (datetime.now(timezone.utc) - behind).timestamp(), usegmt=True)
            lost(req, stub)

        with HTTPStub(respond) as stub:
            if adopted:
                assert _create(stub, tmp_path, enrollment_speech).voice == lost.voices[0]["voice"]
            else:
                with pytest.raises(TransportError, match="predate the request"):
                    _create(stub, tmp_path, enrollment_speech)


def test_create_gates_on_the_preflight_without_the_information_only_dnsmos_row(client, enrollment_wav, monkeypatch):
    """The DNSMOS row never fails a clip, and cost most of the check's CPU: a create does not compute it
    (`qvtools check` still shows it); the verdict rows that gate the upload are all there."""
    import qvtools.naturalness as nat

    def refuse(*a, **k):
        raise AssertionError("create computed DNSMOS")

    monkeypatch.setattr(nat, "dnsmos", refuse)
    voice = client.create(enrollment_wav, PLUS, "nodnsmos")
    assert voice.target_model == PLUS
    with pytest.raises(InvalidAudio) as info:
        client.create((np.zeros(12 * 24000, np.float32), 24000), PLUS, "quiet2")
    names = [r.name for r in info.value.report.rows]
    assert "naturalness" not in names and {"duration", "sample_rate"} <= set(names)
    client.delete(voice.voice)
