"""Comparison turns on a REAL Dask ``distributed`` cluster (issue 12, item 5): a scheduler and two worker
PROCESSES on 127.0.0.1 (dashboard off), the local service embedded in this (the coordinating) process and
reached by the workers through the settings inside each task. The coordinator alone writes the run
directory; every turn is recorded exactly once, a resume adds nothing, a retry re-runs only what failed."""

from __future__ import annotations

import os
import socket
import sys

from concurrent.futures import Executor

import pytest

from qvtools import experiment as ex
from qvtools.config import Settings
from qvtools.errors import ConfigError

FLASH = "qwen3.5-omni-flash-realtime"
PLUS = "qwen3.5-omni-plus-realtime"
KEY = "sk-dask-test-key-5b1e"
TURN_TASK = "run_turn_detached"  # Dask names a submitted function's tasks after it


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed "
                                      "(pip install 'qvtools[dask]')")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                       dashboard_address=None, memory_limit=0, silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=120)  # readiness: both worker processes registered
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from qvtools.workspace import connect

    settings = Settings(region="local", api_key=KEY, data_dir=tmp_path_factory.mktemp("dask") / "data")
    with connect(settings) as ws:
        ws.wait_ready()
        yield ws


class KeepingExecutor(Executor):
    """Hands out the cluster's futures and keeps every one alive (as a notebook holding an earlier run's
    futures, or the traceback of an interrupted run, would): their Dask keys stay on the cluster."""

    def __init__(self, inner):
        self.inner, self.kept = inner, []

    def submit(self, fn, /, *args, **kwargs):
        fut = self.inner.submit(fn, *args, **kwargs)
        self.kept.append(fut)
        return fut


def _turn_tasks(stream) -> list[dict]:
    return [t for t in stream.data if t["key"].startswith(TURN_TASK)]


def _check_run_dir(run_dir, exp) -> list[dict]:
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    ids = [r["turn_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a turn was recorded twice"
    assert set(ids) == {ex.turn_id(*k) for k in exp.plan()}, "a turn is missing"
    for r in rows:
        if r["status"] == "completed":  # the coordinator saved what the worker returned
            assert (run_dir / r["audio_path"]).is_file() and (run_dir / r["audio_path"]).stat().st_size > 44
            assert (run_dir / ex.AUDIO_DIR / f"{r['turn_id']}.json").is_file()
    return rows


@pytest.mark.slow
def test_turns_run_on_two_worker_processes_each_once_and_resume_adds_nothing(client, workspace, tmp_path):
    from distributed import get_task_stream

    run_dir = tmp_path / "run"
    kw = dict(voices=ex.sample_voices()[:1], prompts=ex.sample_prompts()[:2], models=(PLUS, FLASH),
              metrics=(), progress=False)
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids  # two real worker processes

    with get_task_stream(client) as stream:
        exp = ex.Experiment(workspace, run_dir, executor=client.get_executor(), **kw)
        frame = exp.run()
    rows = _check_run_dir(run_dir, exp)
    assert len(rows) == len(frame) == 4
    assert all(r["status"] == "completed" for r in rows), [(r["turn_id"], r["error"]) for r in rows]
    ran = _turn_tasks(stream)
    assert len(ran) == 4  # every turn ran on the cluster, once
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])
    assert KEY not in (run_dir / ex.TURNS_FILE).read_text()

    with get_task_stream(client) as stream:  # resume: everything is done, nothing is submitted
        again = ex.Experiment(workspace, run_dir, executor=client.get_executor(), **kw).run()
    assert _turn_tasks(stream) == []
    assert len(again) == 4 and len(ex.read_turns(run_dir / ex.TURNS_FILE)) == 4


@pytest.mark.slow
def test_a_detached_turn_writes_nothing_and_travels_as_data(workspace, tmp_path):
    """What a worker runs: the task carries the audio (the files may be absent where it runs), the result is
    plain picklable data, and only the coordinator's save_turn writes the reply."""
    import dataclasses
    import pickle

    exp = ex.Experiment(workspace, tmp_path / "run", voices=ex.sample_voices()[:1], prompts=ex.sample_prompts()[:1],
                        models=(FLASH,), metrics=("loudness", "f0_ratio"), progress=False)
    key = exp.plan()[0]
    exp.run_dir.mkdir()
    task = exp._task(key, exp._enroll({key[:2]}), attempt="t1")
    assert task.prompt_audio == ex.sample_prompts()[0].path.read_bytes()
    elsewhere = dataclasses.replace(task, prompt_path=str(tmp_path / "absent.wav"),
                                    reference_path=str(tmp_path / "absent-too.wav"),
                                    audio_dir=str(tmp_path / "not-written"))
    row, turn = pickle.loads(pickle.dumps(ex.run_turn_detached(pickle.loads(pickle.dumps(elsewhere)))))
    assert row["status"] == "completed" and row["f0_ratio"] > 0, row  # the reference came from the task
    assert not (tmp_path / "not-written").exists() and "audio_path" not in row
    ex.save_turn(turn, row, tmp_path / "run" / ex.AUDIO_DIR)
    assert (tmp_path / "run" / row["audio_path"]).is_file()
    assert workspace.settings.api_key not in repr(task)


@pytest.mark.slow
def test_a_failed_turn_is_retried_on_the_same_executor_and_recorded_once(client, workspace, tmp_path):
    """Dask keys tasks by their content: while the first run's futures are still held, the retry of the
    same task without the per-run attempt token would be answered with the first (failed) result."""
    from qvtools.server.faults import FaultPlan

    svc = workspace.service
    svc.set_faults(KEY, FaultPlan(drop_after_audio_deltas=2, times=1))  # only the next session drops
    try:
        run_dir = tmp_path / "run"
        executor = KeepingExecutor(client.get_executor())
        kw = dict(voices=ex.sample_voices()[1:2], prompts=ex.sample_prompts()[:2], models=(FLASH,),
                  metrics=(), progress=False, executor=executor,
                  max_attempts=1)  # a dropped stream is transient (issue 18): no automatic retry here
        exp = ex.Experiment(workspace, run_dir, **kw)
        exp.run()
        rows = _check_run_dir(run_dir, exp)
        failed = [r for r in rows if r["status"] != "completed"]
        assert len(rows) == 2 and len(failed) == 1, [(r["turn_id"], r["status"]) for r in rows]

        retried = ex.Experiment(workspace, run_dir, retry_failed=True, **kw).run()
        rows = _check_run_dir(run_dir, exp)
        assert len(rows) == len(retried) == 2
        assert all(r["status"] == "completed" for r in rows), [(r["turn_id"], r["error"]) for r in rows]
        assert len(executor.kept) == 3  # two turns, then the one retried
    finally:
        svc.clear_faults()


@pytest.mark.slow
def test_cli_compare_scheduler_runs_on_the_cluster(client, tmp_path, monkeypatch, capsys):
    from distributed import get_task_stream

    from qvtools.cli import main

    for name in ("DASHSCOPE_API_KEY", "QVTOOLS_REGION", "QVTOOLS_BASE_URL", "QVTOOLS_WS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QVTOOLS_DATA_DIR", str(tmp_path / "data"))
    run_dir = tmp_path / "run"
    address = client.scheduler.address
    with get_task_stream(client) as stream:
        code = main(["compare", "--scheduler", address, "--out", str(run_dir), "--quick", "--models", FLASH,
                     "--no-report"])
    assert code == 0, capsys.readouterr()
    rows = ex.read_turns(run_dir / ex.TURNS_FILE)
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    assert rows[0]["voice_ref"] == ex.sample_voices()[0].name and rows[0]["prompt_id"] == ex.sample_prompts()[0].name
    assert (run_dir / rows[0]["audio_path"]).is_file()
    assert len(_turn_tasks(stream)) == 1


@pytest.mark.slow
def test_cli_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed", reason="Dask distributed is not installed")
    from qvtools.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("QVTOOLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QVTOOLS_TIMEOUT_S", "3")
    for name in ("DASHSCOPE_API_KEY", "QVTOOLS_REGION", "QVTOOLS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    code = main(["compare", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "run"), "--quick",
                 "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    assert not (tmp_path / "run" / ex.TURNS_FILE).exists()


def test_dask_executor_without_distributed_names_the_extra(monkeypatch):
    from qvtools.cluster import dask_executor

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: import raises ImportError
    with pytest.raises(ConfigError, match=r"qvtools\[dask\]"):
        with dask_executor("tcp://127.0.0.1:1"):
            pass


def test_loopback_urls():
    from qvtools.cluster import loopback_url

    assert loopback_url("http://127.0.0.1:8765") and loopback_url("http://localhost:1")
    assert loopback_url("http://[::1]:2")
    assert not loopback_url("http://10.0.0.5:8765") and not loopback_url(None) and not loopback_url("http://svc.lan")


def test_remote_worker_hosts_leave_out_this_machine():
    from qvtools.cluster import remote_worker_hosts

    class Scheduler:  # what Client.scheduler_info() answers, for a cluster spanning two other machines
        def scheduler_info(self):
            return {"workers": {"tcp://127.0.0.1:40001": {}, f"tcp://{socket.gethostname()}:40002": {},
                                "tcp://192.0.2.7:40003": {}, "tls://192.0.2.8:40004": {}}}

    assert remote_worker_hosts(Scheduler()) == ["192.0.2.7", "192.0.2.8"]
