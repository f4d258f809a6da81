"""Fault injection in the local service (qvtools/server/faults.py) and the client's behaviour under each
fault, against the real LocalService on 127.0.0.1 (port 0): retries only where safe, typed errors, partial
turns kept and saveable, the comparison runner records a failure, continues and resumes cleanly."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from qvtools import experiment as ex
from qvtools.config import ENROLLMENT_PATH, Settings
from qvtools.enrollment import VoiceClient
from qvtools.errors import APIError, ConfigError, QVError, RealtimeError, TransportError
from qvtools.realtime import RealtimeSession, Turn
from qvtools.server import LocalService, ServiceConfig
from qvtools.server.faults import FAULTS_PATH, UNKNOWN_EVENT_TYPE, FaultInjector, FaultPlan

PLUS = "qwen3.5-omni-plus-realtime"
FLASH = "qwen3.5-omni-flash-realtime"
PROMPT = "Tell me something about the weather today, please."
SEND_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def svc():
    """Any key accepted (each key its own scope); simulated latency off; the fault controls enabled."""
    config = ServiceConfig(realtime_latency="none", fault_control=True, allow_client_faults=True,
                           realtime_send_timeout_s=SEND_TIMEOUT_S)
    with LocalService(config=config) as service:
        yield service


@pytest.fixture(autouse=True)
def _no_leftover_faults(request):
    yield
    if "svc" in request.fixturenames:
        service = request.getfixturevalue("svc")
        service.clear_faults()
        service.faults.clear_fired()


def settings(svc, key: str, **kw) -> Settings:
    return Settings(region="local", base_url=svc.url, api_key=key, **kw)


def wait_until(predicate, timeout: float, what: str):
    """Poll a condition with a deadline (the service works on its own thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.02)


# --------------------------------------------------------------------------- the plan itself (offline)

def test_fault_plan_validation_and_round_trip():
    plan = FaultPlan(enroll_status=429, retry_after_s=2, times=3, enroll_actions=["list"], seed=7,
                     probability=0.5, drop_after_audio_deltas=0)
    assert FaultPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan.enroll_actions == ("list",) and plan.enrollment_faults and plan.realtime_faults
    assert not FaultPlan().enrollment_faults and not FaultPlan().realtime_faults
    for bad, match in (({"enroll_status": 404}, "enroll_status"), ({"probability": 1.5}, "probability"),
                       ({"times": -1}, "times"), ({"enroll_actions": ["rename"]}, "enroll_actions"),
                       ({"enroll_drop": "sometimes"}, "enroll_drop"), ({"added_latency_ms": -5}, "added_latency"),
                       ({"drop_after_audio_deltas": 1.5}, "drop_after"), ({"nope": 1}, "unknown FaultPlan fields")):
        with pytest.raises(ValueError, match=match):
            FaultPlan.from_dict(bad)


def test_probability_draws_are_seeded_and_times_is_a_budget():
    def fired(plan):
        inj = FaultInjector({"*": plan})
        return [inj._select("k", "enroll", "list") is not None for _ in range(40)]

    half = FaultPlan(enroll_status=503, probability=0.5, seed=11)
    assert fired(half) == fired(half) and 5 < sum(fired(half)) < 35
    assert fired(FaultPlan(enroll_status=503, times=3)) == [True] * 3 + [False] * 37
    inj = FaultInjector({"*": FaultPlan(enroll_status=503, enroll_actions=("create",))})
    assert inj._select("k", "enroll", "list") is None and inj._select("k", "enroll", "create") is not None
    assert "sk-" not in repr(FaultInjector({"sk-secret": FaultPlan(enroll_status=500)}))


def test_bad_configured_plan_fails_the_start_clearly(tmp_path):
    with pytest.raises(QVError, match="enroll_status"):
        LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False,
                                                             faults={"*": {"enroll_status": 418}})).start()


# --------------------------------------------------------------------------- enrollment faults

def test_list_retries_429_honouring_retry_after_then_succeeds(svc):
    key = "sk-faults-list"
    svc.set_faults(key, FaultPlan(enroll_status=429, retry_after_s=1, times=2, enroll_actions=("list",)))
    with VoiceClient(settings(svc, key), backoff_s=0.01, max_retries=3) as client:
        t0 = time.monotonic()
        assert list(client.list()) == []
        elapsed = time.monotonic() - t0
    assert len(svc.faults.fired("enroll_status")) == 2
    assert elapsed >= 2 * 1.0 - 0.05  # both Retry-After: 1 honoured (backoff alone would be 0.03 s)


def test_list_gives_up_after_max_retries_with_the_fields(svc):
    key = "sk-faults-list-giveup"
    svc.set_faults(key, FaultPlan(enroll_status=500, enroll_actions=("list",)))
    with VoiceClient(settings(svc, key), backoff_s=0.01, max_retries=2) as client:
        with pytest.raises(APIError) as info:
            list(client.list())
    assert (info.value.status, info.value.code) == (500, "InternalError")
    assert info.value.request_id and len(svc.faults.fired("enroll_status")) == 3  # 1 + 2 retries


@pytest.mark.slow
def test_delete_retries_503_and_a_lost_answer_counts_as_deleted(svc, enrollment_wav):
    key = "sk-faults-delete"
    with VoiceClient(settings(svc, key), backoff_s=0.01) as client:
        first = client.create(enrollment_wav, PLUS, "delretry", force=True)
        second = client.create(enrollment_wav, PLUS, "dellost", force=True)
        svc.set_faults(key, FaultPlan(enroll_status=503, retry_after_s=1, times=1, enroll_actions=("delete",)))
        client.delete(first)
        # the delete happens but its answer is lost; the retry answers VoiceNotFound, which means success
        svc.set_faults(key, FaultPlan(enroll_drop="after", times=1, enroll_actions=("delete",)))
        client.delete(second)
        assert [v.voice for v in client.list()] == []
    assert [f["status"] for f in svc.faults.fired("enroll_status")] == [503]
    assert svc.faults.fired("enroll_drop") == [{"fault": "enroll_drop", "when": "after", "action": "delete"}]


def test_create_500_raises_api_error_and_is_never_retried(svc, enrollment_wav):
    key = "sk-faults-create500"
    svc.set_faults(key, FaultPlan(enroll_status=500, retry_after_s=3, enroll_actions=("create",)))
    with VoiceClient(settings(svc, key), backoff_s=0.01, max_retries=3) as client:
        with pytest.raises(APIError) as info:
            client.create(enrollment_wav, PLUS, "boom", force=True)
        assert list(client.list()) == []
    err = info.value
    assert (err.status, err.code) == (500, "InternalError") and err.request_id and err.retry_after == 3.0
    assert "occured" in err.message and key not in str(err)
    assert len(svc.faults.fired("enroll_status")) == 1  # billable: one attempt only


@pytest.mark.slow
def test_create_answer_lost_is_reconciled_with_list(svc, enrollment_wav):
    key = "sk-faults-create-lost"
    svc.set_faults(key, FaultPlan(enroll_drop="after", times=1, enroll_actions=("create",)))
    with VoiceClient(settings(svc, key), backoff_s=0.05) as client:
        voice = client.create(enrollment_wav, FLASH, "lostanswer", force=True)
        listed = [v.voice for v in client.list()]
    assert listed == [voice.voice] and voice.preferred_name == "lostanswer" and voice.target_model == FLASH
    assert len(svc.faults.fired("enroll_drop")) == 1  # one create sent, none repeated


@pytest.mark.slow
def test_create_timeout_is_reconciled_with_list(svc, enrollment_wav, caplog):
    key = "sk-faults-create-slow"
    # the voice is made (well within 4 s), then the answer waits 6 s: the client's 4 s timeout fires
    # and it looks the voice up with list instead of creating it again
    svc.set_faults(key, FaultPlan(added_latency_ms=6000, enroll_actions=("create",)))
    with VoiceClient(settings(svc, key, timeout_s=4.0), backoff_s=0.5, max_retries=3) as client:
        with caplog.at_level("WARNING", logger="qvtools.enrollment"):
            voice = client.create(enrollment_wav, PLUS, "slowanswer", force=True)
        assert [v.voice for v in client.list()] == [voice.voice]
    assert any("got no answer" in r.getMessage() and "ReadTimeout" in r.getMessage() for r in caplog.records)
    assert key not in caplog.text


def test_create_dropped_before_the_work_raises_transport_error(svc, enrollment_wav):
    key = "sk-faults-create-gone"
    svc.set_faults(key, FaultPlan(enroll_drop="before", enroll_actions=("create",)))
    with VoiceClient(settings(svc, key), backoff_s=0.01, max_retries=1) as client:
        with pytest.raises(TransportError, match="not found afterwards") as info:
            client.create(enrollment_wav, PLUS, "neverthere", force=True)
        assert list(client.list()) == []
    assert key not in str(info.value)
    assert len(svc.faults.fired("enroll_drop")) == 1


# --------------------------------------------------------------------------- realtime faults

@pytest.mark.slow
def test_dropped_connection_keeps_the_partial_turn_failed_and_saveable(svc, tmp_path):
    key = "sk-faults-drop"
    svc.set_faults(key, FaultPlan(drop_after_audio_deltas=3))
    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", response_timeout=60) as rt:
        t0 = time.monotonic()
        turn = rt.send_text(PROMPT)
        assert time.monotonic() - t0 < 30
        assert not rt.connected
    assert turn.status == "failed" and "connection" in turn.error
    assert len(turn.audio_chunks) == 3 and len(turn.audio) == sum(n for _, n in turn.audio_chunks) > 0
    assert "first_audio_delta" in turn.marks and "response_done" not in turn.marks
    turn.save(tmp_path / "partial")
    back = Turn.load(tmp_path / "partial")
    assert back.status == "failed" and back.error == turn.error and len(back.audio) == len(turn.audio)
    [fired] = svc.faults.fired("drop")
    assert fired["session_id"] == rt.session_id and fired["after_audio_deltas"] == 3


@pytest.mark.slow
def test_stalled_stream_ends_at_the_response_timeout(svc):
    key = "sk-faults-stall"
    svc.set_faults(key, FaultPlan(stall_after_audio_deltas=2))
    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", response_timeout=3.0) as rt:
        t0 = time.monotonic()
        turn = rt.send_text(PROMPT)
        took = time.monotonic() - t0
        assert rt.connected  # the socket stays open; only the stream stopped
    assert turn.status == "failed" and turn.error.startswith("the reply started (its first audio came"), (turn.error, sorted(turn.marks), len(turn.audio_chunks))
    assert turn.error.endswith("but did not end within 3.0 s")
    assert len(turn.audio_chunks) == 2 and len(turn.audio) > 0
    assert 3.0 <= took < 3.0 + 10


@pytest.mark.slow
def test_malformed_and_unknown_events_are_recorded_and_the_turn_completes(svc):
    key = "sk-faults-garbled"
    svc.set_faults(key, FaultPlan(malformed_after_audio_deltas=1, unknown_after_audio_deltas=2))
    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", response_timeout=60) as rt:
        turn = rt.send_text(PROMPT)
    assert turn.status == "completed", turn.error
    types = [e.type for e in turn.events]
    assert types.count("invalid") == 1 and types.count(UNKNOWN_EVENT_TYPE) == 1
    assert types[-1] == "response.done" and "response_done" in turn.marks
    invalid = next(e for e in turn.events if e.type == "invalid")
    assert "JSON" in invalid.data["error"]
    # the garbled frames sit between the audio deltas they followed; no audio was lost
    assert types.index("invalid") < types.index(UNKNOWN_EVENT_TYPE) < types.index("response.audio.done")
    assert len(turn.audio) == sum(n for _, n in turn.audio_chunks) > 0
    assert [r[1] for r in svc.trace.records(rt.session_id)].count("invalid") == 1


def test_added_latency_is_visible_in_the_turn_marks(svc):
    key = "sk-faults-latency"

    def created_gap(turn):
        return turn.marks["response_created"] - turn.marks["response_create_sent"]

    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", modalities=("text",)) as rt:
        base = rt.send_text(PROMPT)
        rt_session = rt.session_id
    svc.set_faults(key, FaultPlan(added_latency_ms=800))
    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", modalities=("text",)) as rt:
        slow = rt.send_text(PROMPT)
    assert base.status == slow.status == "completed"
    assert created_gap(base) < 0.4
    assert created_gap(slow) >= 0.78
    assert slow.latency()["ttft_ms"] >= 780 and slow.latency()["response_created_ms"] >= 780
    assert rt_session != rt.session_id and len(svc.faults.fired("added_latency")) == 1


@pytest.mark.slow
def test_session_level_faults_from_the_client_and_the_control_endpoint(svc):
    key = "sk-faults-session"
    extra = {"qvtools": {"faults": {"unknown_after_audio_deltas": 0}}}
    with RealtimeSession(settings(svc, key), FLASH, voice="Ethan", session_extra=extra) as rt:
        assert rt.config["qvtools"]["faults"]["unknown_after_audio_deltas"] == 0
        first = rt.send_text(PROMPT)
        # switch the open session's plan over HTTP: drop after the first delta of the next reply
        auth = {"Authorization": f"Bearer {key}"}
        r = requests.post(svc.url + FAULTS_PATH, json={"target": rt.session_id,
                                                       "plan": {"drop_after_audio_deltas": 1}},
                          headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        shown = requests.get(svc.url + FAULTS_PATH, headers=auth, timeout=10).json()
        assert shown["sessions"][rt.session_id]["drop_after_audio_deltas"] == 1 and key not in json.dumps(shown)
        other = requests.post(svc.url + FAULTS_PATH, json={"target": rt.session_id, "plan": None},
                              headers={"Authorization": "Bearer sk-someone-else"}, timeout=10)
        assert other.status_code == 400 and other.json()["code"] == "InvalidParameter"
        second = rt.send_text(PROMPT)
    assert first.status == "completed" and [e.type for e in first.events].count(UNKNOWN_EVENT_TYPE) == 1
    assert second.status == "failed" and len(second.audio_chunks) == 1


def test_client_faults_are_refused_unless_allowed_and_never_sent_to_the_cloud(tmp_path):
    extra = {"qvtools": {"faults": {"drop_after_audio_deltas": 1}}}
    with LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False)) as plain:
        with pytest.raises(RealtimeError) as info:
            RealtimeSession(settings(plain, "sk-x"), FLASH, session_extra=extra).connect()
        assert info.value.code == "faults_disabled" and info.value.param == "session.qvtools.faults"
        r = requests.post(plain.url + FAULTS_PATH, json={"target": "*", "plan": None},
                          headers={"Authorization": "Bearer sk-x"}, timeout=10)
        assert r.status_code == 404  # the control endpoint exists only when ServiceConfig.fault_control
    cloud = Settings(region="singapore", api_key="sk-cloud-key")
    with pytest.raises(ConfigError, match="local service only"):
        RealtimeSession(cloud, FLASH, session_extra=extra)


def test_slow_reader_is_closed_with_a_reason_not_buffered(svc):
    import websocket

    key = "sk-faults-slowreader"
    open_before = len(svc.faults._sessions)
    ws = websocket.create_connection(f"{svc.ws_url}/api-ws/v1/realtime?model={FLASH}", timeout=10,
                                     header=[f"Authorization: Bearer {key}"],
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    try:
        created = json.loads(ws.recv())
        sid = created["session"]["id"]
        # The cheapest way to make the service send a lot: every session.updated echoes the longest
        # instructions allowed (32 KiB, MAX_INSTRUCTIONS_CHARS). The client never reads; once the socket
        # buffers are full a send blocks.
        from qvtools.server.config import MAX_INSTRUCTIONS_CHARS

        update = json.dumps({"type": "session.update", "session": {"instructions": "x" * MAX_INSTRUCTIONS_CHARS}})
        for _ in range(512):  # 16 MB of echoes, far beyond what the kernel buffers hold
            if svc.faults.fired("slow_reader_closed"):
                break
            try:
                ws.send(update)
            except (OSError, websocket.WebSocketException):
                break  # the service closed the connection
        wait_until(lambda: svc.faults.fired("slow_reader_closed"), 60, "the slow-reader close")
        [closed] = svc.faults.fired("slow_reader_closed")
        assert closed["session_id"] == sid and closed["timeout_s"] == SEND_TIMEOUT_S
        wait_until(lambda: len(svc.faults._sessions) == open_before, 30, "the session to end")
    finally:
        ws.close(timeout=1)
    # the service is fine afterwards
    r = requests.post(svc.url + ENROLLMENT_PATH, json={"model": "qwen-voice-enrollment", "input": {"action": "list"}},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200


# --------------------------------------------------------------------------- the comparison runner

@pytest.mark.slow
def test_runner_records_the_failed_turn_continues_and_retry_completes_it_once(svc, tmp_path):
    from qvtools.workspace import Workspace

    key = "sk-faults-runner"
    svc.set_faults(key, FaultPlan(drop_after_audio_deltas=2, times=1))  # only the first session drops
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:2]
    ws = Workspace(Settings(region="local", base_url=svc.url, api_key=key, data_dir=tmp_path / "data"))
    try:
        run_dir = tmp_path / "run"
        # max_attempts=1: a dropped stream is transient and would be retried at once (issue 18, test_retries.py)
        kw = dict(voices=voices, prompts=prompts, models=(FLASH,), workers=1, metrics=(), progress=False,
                  max_attempts=1)
        first = ex.Experiment(ws, run_dir, **kw).run()
        rows = ex.read_turns(run_dir / ex.TURNS_FILE)
        assert len(rows) == len(first) == 2
        failed = [r for r in rows if r["status"] == "failed"]
        assert len(failed) == 1 and "connection" in failed[0]["error"]
        assert [r["status"] for r in rows if r is not failed[0]] == ["completed"]  # the run went on
        partial = Turn.load(run_dir / ex.AUDIO_DIR / failed[0]["turn_id"])
        assert partial.status == "failed" and len(partial.audio_chunks) == 2
        assert key not in (run_dir / ex.TURNS_FILE).read_text()

        again = ex.Experiment(ws, run_dir, **kw).run()  # resume without retry: nothing re-run
        assert len(ex.read_turns(run_dir / ex.TURNS_FILE)) == 2 and len(again) == 2
        retried = ex.Experiment(ws, run_dir, retry_failed=True, **kw).run()
        rows = ex.read_turns(run_dir / ex.TURNS_FILE)
        assert sorted(r["turn_id"] for r in rows) == sorted({r["turn_id"] for r in rows})  # each exactly once
        assert len(rows) == len(retried) == 2 and all(r["status"] == "completed" for r in rows)
        assert Turn.load(run_dir / ex.AUDIO_DIR / failed[0]["turn_id"]).status == "completed"
    finally:
        ws.close()
    assert len(svc.faults.fired("drop")) == 1
