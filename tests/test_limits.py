"""Every documented limit of the local service (qvtools/server/config.py), enforced while the data
streams in and answered with its documented error, over real sockets on 127.0.0.1.

Limits are set tiny here so each test is quick: a real turn is never needed (no speech engines)."""

from __future__ import annotations

import base64
import json
import socket
import threading

import numpy as np
import pytest
import requests

from qvtools import audio
from qvtools.config import ENROLLMENT_PATH, Settings
from qvtools.errors import APIError
from qvtools.realtime.session import RealtimeSession
from qvtools.server import LocalService, ServiceConfig
from qvtools.server.http import ServiceError
from qvtools.server.enrollment import process_enrollment_audio
from conftest import adts_bytes, read_http_answer

TIMEOUT = 30
FLASH = "qwen3.5-omni-flash-realtime"
RATE = 16000  # default session input rate
CHUNK = bytes(2 * RATE // 10)  # 100 ms of PCM16 silence


def _cfg(**kw) -> ServiceConfig:
    base = dict(realtime_latency="none", warm_speech=False, max_sessions_per_key=2, realtime_max_buffer_s=1.0,
                realtime_max_frame_bytes=64 * 1024, max_data_uri_bytes=4096, max_body_bytes=8192)
    base.update(kw)
    return ServiceConfig(**base)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("limits"), config=_cfg()) as service:
        yield service


class Client:
    """A bare websocket-client connection (events in, events out), every wait bounded."""

    def __init__(self, svc, key="sk-limits", model=FLASH):
        import websocket

        self.ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={model}", timeout=TIMEOUT,
                                              header=[f"Authorization: Bearer {key}"])
        assert self.recv()["type"] == "session.created"

    def send(self, event) -> None:
        self.ws.send(event if isinstance(event, str) else json.dumps(event))

    def recv(self) -> dict:
        return json.loads(self.ws.recv())

    def update(self, **session) -> dict:
        self.send({"type": "session.update", "session": session})
        return self.until("session.updated")[-1]

    def until(self, *types) -> list[dict]:
        out = []
        while True:  # each recv is bounded by the socket timeout
            e = self.recv()
            out.append(e)
            if e["type"] in types:
                return out

    def close(self) -> None:
        self.ws.close()


def append(n_chunks: int, chunk: bytes = CHUNK) -> list[str]:
    b64 = base64.b64encode(chunk).decode()
    return [json.dumps({"type": "input_audio_buffer.append", "audio": b64})] * n_chunks


def handshake_status(svc, key: str) -> tuple[int, dict, dict]:
    """Status, JSON body and headers of a refused (or accepted: 101) handshake."""
    import websocket

    try:
        ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={FLASH}", timeout=TIMEOUT,
                                         header=[f"Authorization: Bearer {key}"])
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code, json.loads(exc.resp_body), dict(exc.resp_headers or {})
    ws.close()
    return 101, {}, {}


def connect_when_free(svc, key: str) -> Client:
    """Connect once the server has released a slot (it does so when it sees the close); bounded."""
    import time

    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return Client(svc, key)
        except Exception:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.05)


# -- concurrent sessions per key ---------------------------------------------------------------------------
def test_session_limit_per_key_is_a_429_before_the_upgrade(svc):
    a, b = Client(svc, "sk-alice"), Client(svc, "sk-alice")
    try:
        status, body, headers = handshake_status(svc, "sk-alice")
        assert status == 429
        assert body["code"] == "Throttling.RateQuota" and "at most 2 concurrent realtime sessions" in body["message"]
        assert set(body) == {"request_id", "code", "message"}
        assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
        # the client maps it to a typed, retryable APIError
        settings = Settings(region="local", base_url=svc.url, api_key="sk-alice")
        with pytest.raises(APIError) as info:
            RealtimeSession(settings, FLASH, timeout=TIMEOUT).connect()
        assert info.value.status == 429 and info.value.code == "Throttling.RateQuota" and info.value.retryable
        # other keys are not affected, and the open sessions keep working
        other = Client(svc, "sk-bob")
        other.close()
        a.send({"type": "input_audio_buffer.clear"})
        assert a.until("input_audio_buffer.cleared")
    finally:
        a.close()
    c = connect_when_free(svc, "sk-alice")  # a closed session frees its slot
    c.close()
    b.close()


def test_global_session_cap_is_a_429_before_the_upgrade(tmp_path):
    # issue 13: any key is accepted, so the per-key cap alone does not bound the service
    with LocalService(data_dir=tmp_path, config=_cfg(max_sessions=2, max_sessions_per_key=0)) as service:
        a, b = Client(service, "sk-g1"), Client(service, "sk-g2")
        try:
            status, body, headers = handshake_status(service, "sk-g3")
            assert status == 429 and set(body) == {"request_id", "code", "message"}
            assert body["code"] == "Throttling.RateQuota" and "at most 2 concurrent realtime sessions on this " \
                "service" in body["message"]
            assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "1"
            a.send({"type": "input_audio_buffer.clear"})
            assert a.until("input_audio_buffer.cleared")  # the open sessions keep working
        finally:
            a.close()
        c = connect_when_free(service, "sk-g3")  # a closed session frees a slot for any key
        c.close()
        b.close()


def test_default_caps_admit_16_concurrent_sessions_from_one_address(tmp_path):
    # the latency work needs 16 concurrent sessions from one address (here two keys; one key may hold all 16)
    with LocalService(data_dir=tmp_path, config=ServiceConfig(realtime_latency="none", warm_speech=False)) as service:
        assert service.config.max_sessions == 16
        clients = []
        try:
            for i in range(16):
                clients.append(Client(service, f"sk-sixteen-{i % 2}"))
            status, body, _ = handshake_status(service, "sk-seventeenth")
            assert status == 429 and "on this service" in body["message"]
        finally:
            for c in clients:
                c.close()


@pytest.mark.slow
def test_oversized_instructions_are_not_kept_by_open_sessions(tmp_path):
    # issue 13: twenty keys each sending one 15 MiB session.update raised memory by 1.4 GB; the free-text
    # limit refuses them, so 16 open sessions (the default global cap) hold next to nothing afterwards
    import gc
    import tracemalloc

    cfg = ServiceConfig(realtime_latency="none", warm_speech=False)
    big = json.dumps({"type": "session.update", "session": {"instructions": "x" * (15 * 1024 * 1024)}})
    with LocalService(data_dir=tmp_path, config=cfg) as service:
        clients = []
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(16):
                c = Client(service, f"sk-big-{i}")
                clients.append(c)
                c.send(big)
                e = c.recv()
                assert e["type"] == "error" and e["error"]["param"] == "session.instructions"
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            for c in clients:
                c.close()
    assert retained < 32 * 1024 * 1024, f"{retained / 2**20:.0f} MiB retained by 16 sessions"


def test_racing_handshakes_never_exceed_the_limit(svc):
    results: list[int] = []
    lock = threading.Lock()
    clients: list = []

    def one():
        import websocket

        try:
            ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={FLASH}", timeout=TIMEOUT,
                                             header=["Authorization: Bearer sk-race"])
            with lock:
                results.append(101)
                clients.append(ws)
        except websocket.WebSocketBadStatusException as exc:
            with lock:
                results.append(exc.status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    try:
        assert sorted(results) == [101, 101] + [429] * 8
    finally:
        for ws in clients:
            ws.close()
    assert requests.post(svc.url + ENROLLMENT_PATH, json={}, timeout=TIMEOUT,
                         headers={"Authorization": "Bearer sk-race"}).status_code == 400  # still answering


# -- appended-audio buffer ------------------------------------------------------------------------------------
def test_buffer_cap_gives_an_error_drops_the_buffer_and_the_session_continues(svc):
    c = Client(svc, "sk-buffer")
    try:
        c.update(turn_detection=None)
        for frame in append(10):  # exactly the 1 s cap: accepted
            c.send(frame)
        c.send(append(1)[0])  # one chunk more: refused
        err = c.until("error")[-1]["error"]
        assert err["code"] == "input_audio_buffer_limit_exceeded" and err["param"] == "audio"
        c.send({"type": "input_audio_buffer.commit"})  # the buffer was dropped
        assert c.until("error")[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
        for frame in append(3):  # and fills again
            c.send(frame)
        c.send({"type": "input_audio_buffer.clear"})
        assert c.until("input_audio_buffer.cleared")
    finally:
        c.close()


def test_silence_under_server_vad_never_fills_the_buffer(svc):
    c = Client(svc, "sk-vad")
    try:
        c.update(turn_detection={"type": "server_vad"})
        for frame in append(40):  # 4 s of silence against a 1 s cap: trimmed to the prefix padding
            c.send(frame)
        c.send({"type": "input_audio_buffer.clear"})
        events = c.until("input_audio_buffer.cleared")
        assert [e["type"] for e in events] == ["input_audio_buffer.cleared"]
    finally:
        c.close()


# -- WebSocket message size -----------------------------------------------------------------------------------
def test_oversized_frame_closes_with_1009_and_the_service_goes_on(svc):
    import websocket

    c = Client(svc, "sk-frame")
    try:
        try:
            c.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (70 * 1024)}))
            op, frame = c.ws.recv_data_frame(True)
        except ConnectionError:  # the server may close (1009) while the client is still writing the frame
            pass
        else:
            assert op == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 1009
        with pytest.raises((ConnectionError, websocket.WebSocketException)):  # the connection is over
            c.send({"type": "input_audio_buffer.clear"})
            c.recv()
    finally:
        c.close()
    c = connect_when_free(svc, "sk-frame")
    c.close()


# -- idle timeout and session length, seen from RealtimeSession ---------------------------------------------
@pytest.mark.parametrize("field, code", [("realtime_idle_timeout_s", "response_idle_timeout"),
                                         ("realtime_max_session_s", "session_expired")])
def test_server_closing_gives_the_client_a_clear_error(tmp_path, field, code):
    with LocalService(data_dir=tmp_path, config=_cfg(**{field: 0.5})) as service:
        settings = Settings(region="local", base_url=service.url, api_key="sk-timeout")
        sess = RealtimeSession(settings, FLASH, turn_detection=None, timeout=TIMEOUT)
        sess.connect()
        try:
            if code == "response_idle_timeout":
                assert sess._closed.wait(TIMEOUT), "the server did not close the idle session"
                turn = sess.send_audio((np.zeros(RATE, np.float32), RATE), realtime=False, timeout=TIMEOUT)
            else:  # the client stays active (appends every 100 ms); the cap still ends the session
                turn = sess.send_audio((np.zeros(5 * RATE, np.float32), RATE), realtime=True, timeout=TIMEOUT)
        finally:
            sess.close()
        assert turn.status == "failed"
        assert code in turn.error or "closed" in turn.error, turn.error


# -- enrollment: body, data URL, decoded duration -------------------------------------------------------------
def _post(svc, body: dict) -> requests.Response:
    return requests.post(svc.url + ENROLLMENT_PATH, json=body, timeout=TIMEOUT,
                         headers={"Authorization": "Bearer sk-enroll"})


def _create(data: str) -> dict:
    return {"model": "qwen-voice-enrollment", "input": {"action": "create", "target_model": FLASH,
                                                        "preferred_name": "limits", "audio": {"data": data}}}


def test_data_url_length_limit(svc):
    resp = _post(svc, _create("data:audio/wav;base64," + "A" * 4096))
    assert resp.status_code == 400
    assert resp.json()["code"] == "InvalidParameter"
    assert resp.json()["message"] == "Exceeded limit on max bytes per data-uri item : 4096"


def test_body_limit_is_enforced_while_streaming(svc):
    """A chunked body that never ends: the 400 must come once the limit is passed, not at the end."""
    host, port = svc.url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall((f"POST {ENROLLMENT_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-enroll\r\n"
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        piece = b"x" * 4096
        for _ in range(4):  # 16 KiB > the 8 KiB limit; the terminating 0-chunk is never sent
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        head, payload = read_http_answer(sock)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"Exceeded limit on max bytes per data-uri item : 4096" in payload


@pytest.fixture(scope="module")
def long_aac_understated():
    """70 s of AAC (ADTS) whose estimated duration is far below 60 s: loud noise first, then silence,
    so the bitrate-based estimate of the header check is fooled and only the decode bound catches it."""
    sr = 24000
    rng = np.random.default_rng(0)
    x = np.concatenate([0.5 * rng.standard_normal(10 * sr), np.zeros(60 * sr)]).astype(np.float32)
    data = adts_bytes(x, sr)
    assert audio.probe(data).duration_s < 30
    return data


def test_decoded_duration_limit_without_decoding_everything(long_aac_understated):
    x, sr = audio.load(long_aac_understated, mono=True, limit_s=60.0)
    assert len(x) == 60 * sr + 1  # decoding stopped one sample past the limit


def test_raw_aac_is_not_m4a(tmp_path, long_aac_understated):
    """ADTS (raw AAC) is not the documented M4A container (§2.4), whatever the label says."""
    with pytest.raises(ServiceError) as info:
        process_enrollment_audio(long_aac_understated, ServiceConfig(), "audio/mp4")
    assert info.value.code == "Audio.DecoderError" and "ADTS" in info.value.message
    with LocalService(data_dir=tmp_path, config=_cfg(max_data_uri_bytes=10_485_760,
                                                     max_body_bytes=11_000_000)) as service:
        resp = _post(service, _create(audio.data_url(long_aac_understated, "audio/mp4")))
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "Audio.DecoderError"
    assert resp.json()["message"].startswith("Decoder audio file failed: the content is raw AAC (ADTS)")


def test_header_duration_over_60s_is_refused():
    wav = audio.wav_bytes(np.zeros(61 * 24000, np.float32), 24000)
    with pytest.raises(ServiceError) as info:
        process_enrollment_audio(wav, ServiceConfig())
    assert info.value.code == "Audio.DurationLimitError"


# -- HTTP read timeouts, stalled connections (issue 13) -------------------------------------------------------
def _http_cfg(**kw) -> ServiceConfig:
    return _cfg(**{"http_header_timeout_s": 0.5, "http_body_timeout_s": 1.5, **kw})


def _open(svc) -> socket.socket:
    host, port = svc.url.rsplit("/", 1)[-1].split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _seconds_until_closed(sock: socket.socket, limit: float = 10.0, since: float | None = None) -> float:
    """Read (and drop) until the server closes; the seconds since ``since`` (default: now) that took.
    Every recv is bounded."""
    import time

    t0 = time.monotonic() if since is None else since
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return float("inf")
    return time.monotonic() - t0


_LIST = json.dumps({"model": "qwen-voice-enrollment", "input": {"action": "list"}}).encode()


def _list_head(length: int = len(_LIST)) -> bytes:
    return (f"POST {ENROLLMENT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-enroll\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_stalled_heads_and_idle_keepalive_are_closed(tmp_path):
    import time

    with LocalService(data_dir=tmp_path, config=_http_cfg()) as svc:
        t0 = time.monotonic()
        silent, partial, idle = _open(svc), _open(svc), _open(svc)
        partial.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthoriz")
        idle.sendall(_list_head() + _LIST)
        head, payload = read_http_answer(idle)
        t_answer = time.monotonic()
        assert head.startswith(b"HTTP/1.1 200")  # HTTP/1.1: the connection stays open for the next request
        for sock, since in ((silent, t0), (partial, t0), (idle, t_answer)):
            with sock:
                assert 0.45 < _seconds_until_closed(sock, since=since) < 5.0
        assert svc.connections == 0


def test_stalled_body_gets_408_and_the_connection_is_closed(tmp_path):
    with LocalService(data_dir=tmp_path, config=_http_cfg()) as svc, _open(svc) as sock:
        sock.sendall(_list_head(len(_LIST) + 100) + _LIST[:10])
        head, payload = read_http_answer(sock)
        assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 408 Request Timeout", head
        answer = json.loads(payload)
        assert answer["code"] == "RequestTimeOut" and set(answer) == {"request_id", "code", "message"}
        assert _seconds_until_closed(sock) < 5.0


@pytest.mark.slow
def test_a_slow_but_progressing_upload_succeeds(tmp_path):
    """About 2.5 s of upload, one piece every 0.25 s: longer than the 1.5 s body timeout in all, but each
    pause is well under it."""
    body = _LIST[:-1] + b" " * 80 + b"}"
    pieces = [body[i:i + 10] for i in range(0, len(body), 10)]
    assert len(pieces) * 0.25 > 1.5 + 0.5
    pace = threading.Event()
    with LocalService(data_dir=tmp_path, config=_http_cfg()) as svc, _open(svc) as sock:
        sock.sendall(_list_head(len(body)))
        for piece in pieces:
            pace.wait(0.25)  # pacing the upload (the behaviour under test), not waiting for readiness
            sock.sendall(piece)
        head, payload = read_http_answer(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(payload)["output"]["total_count"] == 0


@pytest.mark.slow
def test_stalled_clients_do_not_starve_a_legitimate_request(tmp_path):
    """200 clients stalled mid-headers against a cap of 64 connections: the oldest stalled ones are
    closed to make room, a real request is served at once, and after the header timeout none is held
    (benchmarks/bench_service_limits.py does 1,000)."""
    cfg = _http_cfg(http_header_timeout_s=2.0, http_max_connections=64)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        stalled = []
        try:
            for _ in range(200):
                sock = _open(svc)
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                stalled.append(sock)
            resp = requests.post(svc.url + ENROLLMENT_PATH, data=_LIST, timeout=TIMEOUT,
                                 headers={"Authorization": "Bearer sk-enroll", "Connection": "close"})
            assert resp.status_code == 200
            assert svc.connections <= 64
            closed = [_seconds_until_closed(s) for s in stalled]
            assert all(c < 10 for c in closed)
            assert svc.connections == 0
        finally:
            for sock in stalled:
                sock.close()


# -- memory per create (issue 13: a 0.5 MB FLAC labelled audio/wav cost +1.3 GB) ---------------------------------
def _rss_kb(field: str) -> int:
    import re

    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M).group(1))


def _peak_growth_mb(fn) -> float:
    """Peak resident-memory growth of this process (client + in-process service) while ``fn`` runs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    except OSError:
        pytest.skip("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    base = _rss_kb("VmRSS")
    fn()
    return (_rss_kb("VmHWM") - base) / 1024.0


def hostile_flac() -> bytes:
    """60 s of 8-channel 192 kHz FLAC (silence compresses to well under 1 MB) that decodes to 92 M samples."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=192000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((192000, 8), np.float32)
        for _ in range(60):
            f.write(block)
    return buf.getvalue()


@pytest.mark.slow
def test_memory_budget_per_create(tmp_path, enrollment_speech):
    import io

    import soundfile as sf

    from qvtools.server.config import REQUEST_MEMORY_BUDGET_MB

    x, sr = enrollment_speech
    big = audio.wav_bytes(audio.resample(x[: 10 * sr], sr, 384000), 384000)  # the largest body accepted
    stereo = io.BytesIO()  # the most samples accepted: 59 s of 48 kHz stereo MP3
    long = np.tile(x, 4)[: 59 * sr]
    sf.write(stereo, np.stack([audio.resample(long, sr, 48000)] * 2, axis=1), 48000, format="MP3")
    hostile = hostile_flac()
    assert len(hostile) < 2_000_000

    def body(data, mime):
        return json.dumps(_create(audio.data_url(data, mime))).encode()

    bodies = {"384k_wav": body(big, "audio/wav"), "48k_stereo_mp3": body(stereo.getvalue(), "audio/mpeg"),
              "flac_as_wav": body(hostile, "audio/wav")}
    assert len(bodies["384k_wav"]) > 10_000_000
    cfg = ServiceConfig(warm_speech=False)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        def send(name):
            resp = requests.post(svc.url + ENROLLMENT_PATH, data=bodies[name], timeout=TIMEOUT * 4,
                                 headers={"Authorization": "Bearer sk-mem", "Content-Type": "application/json"})
            results[name] = resp

        results: dict = {}
        send("384k_wav")  # loads VAD and analysis once, outside the measurement
        growth = {name: _peak_growth_mb(lambda n=name: send(n)) for name in bodies}
    assert results["384k_wav"].status_code == 200, results["384k_wav"].text
    assert results["48k_stereo_mp3"].status_code == 200, results["48k_stereo_mp3"].text
    assert results["flac_as_wav"].json()["code"] == "Audio.DecoderError"
    for name, mb in growth.items():
        assert mb < REQUEST_MEMORY_BUDGET_MB, f"{name}: +{mb:.0f} MB"
    assert growth["flac_as_wav"] < 40, growth
