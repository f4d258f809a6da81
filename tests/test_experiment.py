"""Comparison runner: journal bookkeeping (offline) and whole runs against the real local service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qvtools import experiment as ex
from qvtools.errors import ConfigError, QVError

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-FAKEKEY-qvtools-test-7f3a9c"


# --------------------------------------------------------------------------- offline bookkeeping

def test_turn_id_is_deterministic_safe_and_distinct():
    a = ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 0)
    assert a == ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 0)
    assert a.startswith("ava__qwen3.5-omni-plus-realtime__weather__r0__")
    others = {ex.turn_id("ava", "qwen3.5-omni-flash-realtime", "weather", 0),
              ex.turn_id("ava", "qwen3.5-omni-plus-realtime", "weather", 1),
              ex.turn_id("ava x", "qwen3.5-omni-plus-realtime", "weather", 0),
              ex.turn_id("ava/x", "qwen3.5-omni-plus-realtime", "weather", 0)}
    assert a not in others and len(others) == 4
    assert "/" not in ex.turn_id("a/b", "m", "../p", 0)


def test_append_and_read_rows_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "turns.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        ex.append_row(fh, {"turn_id": "t1", "status": "completed", "ttfa_ms": float("nan")})
        ex.append_row(fh, {"turn_id": "t2", "status": "failed", "error": "boom"})
    with open(path, "ab") as fh:
        fh.write(b'{"turn_id": "t3", "sta')  # killed mid-write
    rows = ex.read_turns(path)
    assert [r["turn_id"] for r in rows] == ["t1", "t2"]
    ex._repair_tail(path)
    assert path.read_bytes().endswith(b"\n")
    assert [r["turn_id"] for r in ex.read_turns(path)] == ["t1", "t2"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "turns.jsonl"
    path.write_text('{"turn_id": "t1"}\nnot json\n{"turn_id": "t2"}\n')
    with pytest.raises(QVError, match="line 2"):
        ex.read_turns(path)


def test_missing_journal_reads_empty(tmp_path):
    assert ex.read_turns(tmp_path / "nope.jsonl") == []


def test_load_prompts_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ex.load_prompts(tmp_path / "none.json")
    bad = tmp_path / "p.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ex.load_prompts(bad)
    bad.write_text('{"prompts": [{"text": "hi"}]}')
    with pytest.raises(ConfigError, match="'name' and 'file'"):
        ex.load_prompts(bad)


def test_experiment_rejects_bad_arguments(tmp_path):
    voices, prompts = ex.sample_voices()[:1], ex.sample_prompts()[:1]
    with pytest.raises(ConfigError, match="repeats"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=0)
    with pytest.raises(ConfigError, match="unknown metrics"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, metrics=["vibes"])
    with pytest.raises(ConfigError, match="unique"):
        ex.Experiment(None, tmp_path, voices=voices * 2, prompts=prompts)
    with pytest.raises(ConfigError, match="no such file"):
        ex.Experiment(None, tmp_path, voices=[tmp_path / "missing.wav"], prompts=prompts)
    with pytest.raises(ConfigError, match="at least one"):
        ex.Experiment(None, tmp_path, voices=voices, prompts=[])


def test_plan_is_seeded_complete_and_interleaved(tmp_path):
    voices, prompts = ex.sample_voices()[:2], ex.sample_prompts()[:2]
    e = ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3)
    plan = e.plan()
    assert len(plan) == len(set(plan)) == 2 * 2 * 2 * 2
    assert plan == ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=3).plan()
    assert plan != ex.Experiment(None, tmp_path, voices=voices, prompts=prompts, repeats=2, seed=4).plan()
