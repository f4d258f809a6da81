"""One turn as a plain, picklable function: :class:`TurnTask` (everything a turn needs, audio included),
:func:`run_turn_detached` (what a worker runs: returns the row and the reply, writes nothing; retried on a
new session while it fails transiently, §7.24) and :func:`save_turn` (the coordinator writes the reply)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import redact
from ..retries import MAX_ATTEMPTS, run_with_retries, transient_exception
from . import scoring
from .journal import AUDIO_DIR, _utcnow
from .scoring import DEFAULT_METRICS

__all__ = ["TurnTask", "run_turn", "run_turn_detached", "save_turn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnTask:
    """Everything one turn needs, picklable (for process or Dask executors)."""

    turn_id: str
    run_id: str
    voice: str
    model: str
    prompt: str
    repeat: int
    settings: Settings
    voice_id: str | None
    voice_target_model: str | None
    prompt_path: str
    reference_path: str
    audio_dir: str | None
    realtime: bool = False
    metrics: tuple = DEFAULT_METRICS
    enroll_error: str | None = None
    simulated: bool = False
    voice_fallback_mode: bool | None = None
    voice_fallback_reason: str | None = None
    turn_detection: str | None = "server_vad"
    silence_duration_ms: int | None = None
    #: The prompt and reference recordings themselves (read by the coordinator), so a worker on
    #: another machine needs none of the coordinator's files; None: read ``*_path`` (same machine).
    prompt_audio: bytes | None = None
    reference_audio: bytes | None = None
    #: Distinguishes submissions of the same turn (one per :meth:`Experiment.run`): Dask keys tasks by
    #: content, so while an earlier run's futures are still held (a notebook, an interrupted run's
    #: traceback) a retry could otherwise be answered with the old result (tests/test_dask.py).
    attempt: str = ""
    #: Attempts of this turn while it fails transiently (qvtools.retries, §7.24); each on a new session.
    max_attempts: int = MAX_ATTEMPTS

    def __repr__(self):  # settings carries the key; keep the repr short and key-free
        return f"TurnTask({self.turn_id!r})"


def run_turn(task: TurnTask) -> dict:
    """Run one turn and score it. Never raises for a failed turn: the row says ``status``/``error``.

    Row timings: ``session_s`` (connect + turn + close), ``metrics_s`` (scoring), ``turn_wall_s``
    (the whole call), so runner overhead = wall - session - metrics. With ``task.audio_dir`` the reply
    is saved there (``<turn_id>.wav`` + ``.json``) by this call, wherever it runs.
    """
    row, turn = run_turn_detached(task)
    if turn is not None and task.audio_dir:
        save_turn(turn, row, task.audio_dir)
    return row


def save_turn(turn, row: dict, audio_dir) -> None:
    """Write the reply of ``row``'s turn under ``audio_dir`` and set ``row["audio_path"]`` (relative to
    the run directory); a failure to save is logged and leaves the row without ``audio_path``."""
    try:
        turn.save(Path(audio_dir) / row["turn_id"])
        row["audio_path"] = f"{AUDIO_DIR}/{row['turn_id']}.wav"
    except Exception as exc:
        log.warning("saving turn %s failed: %s", row["turn_id"], exc)


def run_turn_detached(task: TurnTask) -> tuple[dict, object]:
    """:func:`_run_turn_once`, run again on a new session while it fails transiently (``COMMON_ERROR`` /
    close 1011, an abnormal close during a response, a handshake 5xx; :mod:`qvtools.retries`, §7.24), at
    most ``task.max_attempts`` times; the row's ``attempts`` says how many were made."""
    return run_with_retries(_run_turn_once, task, attempts=task.max_attempts)


def _run_turn_once(task: TurnTask) -> tuple[dict, object]:
    """Run one turn and score it, writing nothing: returns ``(row, turn)`` (``turn`` is the
    :class:`~qvtools.realtime.turn.Turn`, or None when no session happened) for the caller to save.

    This is what :class:`Experiment` submits to its executor: on a Dask worker it needs only the task
    (audio included) and the service named by ``task.settings``; the coordinator writes the files.
    """
    t0 = time.perf_counter()
    row = _base_row(task)
    secrets = (task.settings.api_key,)
    if task.enroll_error:
        row["error"] = task.enroll_error
        row.update(finished_at=_utcnow(), session_s=0.0, metrics_s=0.0, turn_wall_s=time.perf_counter() - t0)
        return row, None
    turn = None
    session_cfg: dict = {}
    t_sess = time.perf_counter()
    try:
        from ..realtime.session import RealtimeSession

        with RealtimeSession(task.settings, task.model, voice=task.voice_id,
                             voice_target_model=task.voice_target_model, turn_detection=task.turn_detection,
                             silence_duration_ms=task.silence_duration_ms) as session:
            turn = session.send_audio(task.prompt_audio if task.prompt_audio is not None else task.prompt_path,
                                      realtime=task.realtime, manual=task.turn_detection is None)
            # what the client requested merged with the family defaults -- never the echo (§7.2)
            session_cfg = dict(getattr(session, "effective", None) or {})
            service_info = getattr(session, "service_info", None) or {}
            if task.simulated and isinstance(service_info.get("latency_source"), str):
                # the local service says where its delays come from (qvtools.server.latency)
                row["latency_source"] = redact(service_info["latency_source"][:200], *secrets)
    except Exception as exc:  # a failed turn is a row, not a crash
        row["error"] = redact(f"{type(exc).__name__}: {exc}", *secrets)
        row["transient"] = transient_exception(exc)  # a handshake refused with 5xx (§7.24)
        log.warning("turn %s failed: %s", task.turn_id, row["error"])
    row["session_s"] = time.perf_counter() - t_sess
    t_met = time.perf_counter()
    if turn is not None:
        row.update(status=turn.status, error=redact(turn.error, *secrets) if turn.error else None,
                   transient=bool(turn.transient), session_id=turn.session_id, response_id=turn.response_id,
                   user_transcript=turn.user_transcript, assistant_transcript=turn.assistant_transcript)
        row.update(scoring._provenance(turn, task.turn_detection, task.silence_duration_ms, session_cfg))
        t_met = time.perf_counter()
        try:
            # scored as it will be saved (PCM16 WAV, decoded back), so `qvtools replay` recomputes the same
            # numbers from the saved file; the coordinator writes the file from the same samples
            ref = task.reference_audio if task.reference_audio is not None else task.reference_path
            row.update(scoring._score(scoring._as_saved(turn), task.metrics, ref))
        except Exception as exc:
            row["metrics_error"] = redact(f"{type(exc).__name__}: {exc}", *secrets)
            log.warning("scoring turn %s failed: %s", task.turn_id, row["metrics_error"])
        row["metrics_s"] = time.perf_counter() - t_met
    row.setdefault("metrics_s", time.perf_counter() - t_met)
    row["finished_at"] = _utcnow()
    row["turn_wall_s"] = time.perf_counter() - t0
    return row, turn


def _base_row(task: TurnTask) -> dict:
    """The identifying columns of a row (qvtools.results schema: voice_ref/prompt_id/repeat pair turns)."""
    return {"run_id": task.run_id, "turn_id": task.turn_id, "voice_ref": task.voice, "voice": task.voice_id,
            "target_model": task.model, "prompt_id": task.prompt, "repeat": int(task.repeat),
            "status": "failed", "error": None, "transient": False, "attempts": 1, "region": task.settings.region, "simulated": task.simulated,
            # the real service's own latency; a local service's source is read from its session.created
            "latency_source": None if task.simulated else "measured",
            "voice_fallback_mode": task.voice_fallback_mode, "voice_fallback_reason": task.voice_fallback_reason,
            "audio_pacing": "realtime" if task.realtime else "fast",
            "turn_detection": "manual" if task.turn_detection is None else str(task.turn_detection),
            "started_at": _utcnow()}
