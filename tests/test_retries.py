"""Transient turn failures retried on a new session (issue 18, §7.24): the rule with a scripted ``run``,
then the "Done when" run -- a comparison run on the real local service where one turn meets an injected
``COMMON_ERROR`` + close 1011 completes every turn, that one with ``attempts`` = 2, and no voice is re-created."""

from __future__ import annotations

import pytest

from qvtools import experiment as ex
from qvtools import retries
from qvtools.errors import APIError


def _script(*rows):
    calls = []

    def run(task):
        calls.append(task)
        return dict(rows[len(calls) - 1]), None
    return run, calls


def test_transient_failures_are_retried_with_backoff_until_completed():
    run, calls = _script({"status": "failed", "transient": True}, {"status": "failed", "transient": True},
                         {"status": "completed", "transient": False})
    waits = []
    row, _ = retries.run_with_retries(run, "t", attempts=3, backoff_s=0.5, sleep=waits.append)
    assert row["status"] == "completed" and row["attempts"] == 3 and len(calls) == 3
    assert waits == [0.5, 1.0]


def test_attempts_are_bounded_and_permanent_failures_not_retried():
    run, calls = _script(*[{"status": "failed", "transient": True}] * 5)
    row, _ = retries.run_with_retries(run, "t", attempts=2, sleep=lambda s: None)
    assert row["status"] == "failed" and row["attempts"] == 2 and len(calls) == 2
    run, calls = _script({"status": "failed", "transient": False, "error": "voice not supported"})
    row, _ = retries.run_with_retries(run, "t", attempts=3, sleep=lambda s: None)
    assert row["attempts"] == 1 and len(calls) == 1
    with pytest.raises(ValueError):
        retries.run_with_retries(run, "t", attempts=0)


def test_only_a_5xx_handshake_is_a_transient_exception():
    assert retries.transient_exception(APIError(503, "ModelUnavailable", "try later"))
    assert not retries.transient_exception(APIError(401, "InvalidApiKey", "bad key"))
    assert not retries.transient_exception(ValueError("x"))


def test_experiment_validates_max_attempts(tmp_path):
    from qvtools.config import Settings
    from qvtools.errors import ConfigError

    class WS:
        settings = Settings(region="local", api_key="sk-x", data_dir=tmp_path)

    with pytest.raises(ConfigError, match="max_attempts"):
        ex.Experiment(WS(), tmp_path / "run", voices=ex.sample_voices()[:1], prompts=ex.sample_prompts()[2:3],
                      models=("qwen3.5-omni-flash-realtime",), max_attempts=0, progress=False)


def test_a_turn_that_meets_an_injected_1011_completes_on_its_second_attempt(tmp_path):
    from qvtools.config import Settings
    from qvtools.server import ServiceConfig
    from qvtools.server.faults import FaultPlan
    from qvtools.workspace import connect

    plan = FaultPlan(times=1, end_session="model_error")  # only the first realtime session is faulted
    settings = Settings(region="local", api_key="sk-h18-retries", data_dir=tmp_path / "data")
    config = ServiceConfig(realtime_latency="none", faults={"*": plan})
    with connect(settings, service_config=config) as ws:
        exp = ex.Experiment(ws, tmp_path / "run", voices=ex.sample_voices()[:1], prompts=ex.sample_prompts()[2:4],
                            models=("qwen3.5-omni-flash-realtime",), workers=1, metrics=("loudness",),
                            progress=False)
        frame = exp.run()
        fired = ws.service.faults.fired("end_session")
        voices = [v for v in ws.voices.list()]
    rows = frame.sort_values("attempts").to_dict("records")
    assert [r["status"] for r in rows] == ["completed", "completed"], [r["error"] for r in rows]
    assert [int(r["attempts"]) for r in rows] == [1, 2]
    assert not any(r["transient"] for r in rows)  # the kept row is the successful attempt's
    assert len(fired) == 1 and fired[0]["ending"] == "model_error"
    assert len(voices) == 1  # one (voice, model) pair: enrolled once, never re-created by the retry
    assert rows[0]["voice"] == rows[1]["voice"]
