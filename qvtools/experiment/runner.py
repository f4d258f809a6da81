"""The comparison runner :class:`Experiment`: plans the turns (seeded, interleaved), enrolls each voice once
per model (the registry), runs the turns on any ``concurrent.futures.Executor`` and is the run directory's one
writer (the reply files first, then the journal row; ``run.json``, ``voices.json``, ``results.parquet``)."""

from __future__ import annotations

import json
import logging
import platform
import random
import re
import socket
import sys
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, Sequence

from ..catalog import DEFAULT_COMPARE_MODELS, check_model
from ..errors import ConfigError, QVError, redact
from ..retries import MAX_ATTEMPTS
from ..rundir import write_atomic
from .billing import BillingPlan
from .journal import (AUDIO_DIR, PRICES_FILE, RESULTS_FILE, RUN_FILE, TURNS_FILE, VOICES_FILE, _json_default,
                      _read_json_file, _read_meta, _repair_tail, _rewrite_rows, _utcnow, _write_json,
                      _write_parquet, append_row, read_turns, turn_id)
from .provenance import _git_commit, _versions
from .replay import _calibrated
from .scoring import DEFAULT_METRICS
from .spec import _as_prompts, _as_voices, _check_unique, speaks
from .turn import TurnTask, _base_row, run_turn_detached, save_turn

__all__ = ["Experiment"]

log = logging.getLogger(__name__)


class Experiment:
    """Compare target models on cloned voices.

    ``voices``: :class:`VoiceSpec` or paths of reference recordings; ``prompts``: :class:`PromptSpec`
    or paths of spoken prompts. ``executor``: any ``concurrent.futures.Executor`` (not shut down here);
    default a ``ThreadPoolExecutor(workers)``; ``client.get_executor()`` of a Dask ``distributed.Client``
    runs the turns on the cluster's workers (they return rows and replies; this process writes them,
    see :func:`run_turn_detached`). ``seed`` fixes the (shuffled, interleaved) turn order.
    ``retry_failed`` re-runs turns whose recorded status is not ``completed`` (their old rows are
    removed first, so each turn still appears once).

    ``progress``: ``None`` (default) shows a tqdm bar; ``False`` hides it; a callable
    ``progress(done, total, message)`` is also called (in the calling thread) after each turn is
    journaled, e.g. a :class:`qvtools.widgets.RunProgress` -- ``done``/``total`` count the whole
    plan (turns finished by an earlier run included), ``message`` names the turn and its status.
    An exception raised by the callback stops the run (finished turns stay in the journal).

    ``models``: any realtime model names (default :data:`qvtools.catalog.DEFAULT_COMPARE_MODELS`); a name
    outside the catalog is logged as a warning (``model_warnings``), not refused: the service decides.
    ``turn_detection``: ``"server_vad"`` (default; the server ends each turn after ``silence_duration_ms``
    of silence, None = the service default) or ``None`` (manual: commit + response.create after the audio).
    ``prices``: a price table (path or dict, :data:`qvtools.results.PRICES_FORMAT`), copied to
    ``RUN_DIR/prices.json`` so the report estimates costs; qvtools ships no prices.
    ``similarity_encoder``: the speaker encoder of the run-level similarity columns (``"dvector"``, the
    default; ``"resemblyzer"``; a path to an ONNX speaker-verification model; see :mod:`qvtools.similarity`).
    """

    def __init__(self, workspace, run_dir, *, voices: Iterable, prompts: Iterable,
                 models: Sequence[str] = DEFAULT_COMPARE_MODELS, repeats: int = 1, seed: int = 0,
                 realtime: bool = False, executor: Executor | None = None, workers: int = 2,
                 metrics: Sequence[str] = DEFAULT_METRICS, retry_failed: bool = False,
                 max_attempts: int = MAX_ATTEMPTS,
                 progress=None, turn_detection: str | None = "server_vad",
                 silence_duration_ms: int | None = None, prices=None, similarity_encoder=None):
        self.workspace = workspace
        self.run_dir = Path(run_dir)
        self.voices = _as_voices(voices)
        self.prompts = _as_prompts(prompts)
        if not any(speaks(v, p) for v in self.voices for p in self.prompts):
            raise ConfigError("no reference voice speaks the language of any prompt: "
                              + ", ".join(f"{v.name} ({v.language})" for v in self.voices) + " vs "
                              + ", ".join(f"{p.name} ({p.language})" for p in self.prompts))
        if isinstance(models, str):
            models = [models]
        self.models = tuple(str(m).strip() for m in models)
        _check_unique("model", list(self.models))
        if any(not m for m in self.models):
            raise ConfigError("a model name is empty")
        #: Warnings about model names (outside the catalog, unusual shape); the run goes ahead.
        self.model_warnings = [w for m in self.models for w in check_model(m)]
        for w in self.model_warnings:
            log.warning("%s", w)
        if turn_detection not in (None, "server_vad", "semantic_vad"):
            raise ConfigError(f"turn_detection must be 'server_vad', 'semantic_vad' or None (manual), "
                              f"got {turn_detection!r}")
        if silence_duration_ms is not None and not 200 <= int(silence_duration_ms) <= 6000:
            # §4.2: silence_duration_ms 200-6000
            raise ConfigError(f"silence_duration_ms must be 200-6000 ms, got {silence_duration_ms}")
        self.turn_detection = turn_detection
        self.silence_duration_ms = int(silence_duration_ms) if silence_duration_ms is not None else None
        from .. import results as _results

        self.prices = _results.load_prices(prices) if prices is not None else None
        if int(repeats) < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats}")
        if int(workers) < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        unknown = set(metrics) - set(DEFAULT_METRICS)
        if unknown:
            raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {DEFAULT_METRICS}")
        self.repeats = int(repeats)
        self.seed = int(seed)
        self.realtime = bool(realtime)
        self.executor = executor
        self.workers = int(workers)
        self.metrics = tuple(metrics)
        self.retry_failed = bool(retry_failed)
        from ..similarity import DEFAULT_ENCODER, get_encoder

        get_encoder(similarity_encoder)  # a missing dependency or model file fails here, before any turn
        #: The speaker encoder of the run-level similarity columns (qvtools.similarity), kept in run.json.
        self.similarity_encoder = DEFAULT_ENCODER if similarity_encoder is None else \
            str(similarity_encoder) if isinstance(similarity_encoder, (str, Path)) else similarity_encoder
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise ConfigError("progress must be None, True/False (the tqdm bar) or a callable "
                              f"progress(done, total, message); got {type(progress).__name__}")
        #: Show the tqdm bar (``progress`` is not False).
        self.show_bar = progress is not False
        #: The ``progress(done, total, message)`` callback, or None.
        self.progress = progress if callable(progress) else None
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 10:
            raise ConfigError(f"max_attempts must be an integer in 1..10, got {max_attempts!r}")
        #: Attempts per turn while it fails transiently (§7.24; qvtools.retries); never re-creates a voice.
        self.max_attempts = max_attempts

    # -- plan
    def plan(self) -> list[tuple[str, str, str, int]]:
        """All (voice, model, prompt, repeat) of the run, in a seeded shuffled order.

        Shuffling interleaves models in time, so a drift (network, load) cannot masquerade as a
        model difference. A voice meets only the prompts of its own language when both have one
        (:func:`speaks`): the Mandarin sample voice answers the Mandarin prompts.
        """
        keys = [(v.name, m, p.name, r) for v in self.voices for m in self.models
                for p in self.prompts if speaks(v, p) for r in range(self.repeats)]
        random.Random(self.seed).shuffle(keys)
        return keys

    @property
    def turns_path(self) -> Path:
        return self.run_dir / TURNS_FILE

    def done(self) -> dict[str, dict]:
        """turn_id -> row of the turns already in ``turns.jsonl``."""
        return {row["turn_id"]: row for row in read_turns(self.turns_path)}

    def todo(self) -> list[tuple[str, str, str, int]]:
        """The planned turns :meth:`run` would run now (not journaled yet, or failed with ``retry_failed``)."""
        rows = read_turns(self.turns_path)
        if self.retry_failed:
            rows = [r for r in rows if r.get("status") == "completed"]
        done = {r["turn_id"] for r in rows}
        return [k for k in self.plan() if turn_id(*k) not in done]

    def billing_plan(self) -> "BillingPlan":
        """What :meth:`run` would create and run now, without creating or running anything (no network:
        the voice registry is local). ``billable`` is True against the cloud (``settings.is_cloud``)."""
        todo = self.todo()
        pairs = sorted({(v, m) for v, m, _, _ in todo})
        by_name = {v.name: v for v in self.voices}
        create, reuse = [], []
        registry = getattr(self.workspace, "registry", None)
        for vname, model in pairs:
            found = None
            if registry is not None:
                try:
                    found = registry.lookup(str(by_name[vname].path), model)
                except QVError as exc:  # an unreadable reference: its create would fail, nothing billed
                    log.debug("registry lookup of %s failed: %s", vname, exc)
            (reuse if found is not None else create).append((vname, model))
        settings = self.workspace.settings
        return BillingPlan(billable=bool(settings.is_cloud), region=settings.region,
                           turns_to_run=len(todo), turns_planned=len(self.plan()),
                           voices_to_create=tuple(create), voices_reused=tuple(reuse),
                           models=self.models)

    # -- run
    def run(self):
        """Run the missing turns, consolidate ``results.parquet`` and return the DataFrame."""
        from .. import results
        from ..rundir import RunLock

        self._created_now = 0  # voices this call enrolls (run.json voices_created adds them up)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # one writer per run directory (issue 23): a second compare fails here, naming the holder
        with RunLock(self.run_dir, "qvtools compare"):
            return self._run_locked(results)

    def _run_locked(self, results):
        self._check_resume_target()
        (self.run_dir / AUDIO_DIR).mkdir(exist_ok=True)
        _repair_tail(self.turns_path)
        rows = read_turns(self.turns_path)
        if self.retry_failed:
            kept = [r for r in rows if r.get("status") == "completed"]
            if len(kept) != len(rows):
                log.info("retrying %d failed turns", len(rows) - len(kept))
                _rewrite_rows(self.turns_path, kept)
                rows = kept
        done = {r["turn_id"] for r in rows}
        todo = [k for k in self.plan() if turn_id(*k) not in done]
        log.info("%s: %d turns planned, %d already done, %d to run", self.run_dir,
                 len(self.plan()), len(done), len(todo))
        if self.prices is not None:
            _write_json(self.run_dir / PRICES_FILE, self.prices)
        meta = self._start_meta(len(todo))
        try:
            if todo:
                voice_ids = self._enroll({(v, m) for v, m, _, _ in todo})
                attempt, audio = uuid.uuid4().hex, {}
                self._execute([self._task(k, voice_ids, attempt=attempt, audio=audio) for k in todo],
                              total=len(self.plan()))
        finally:
            self._finish_meta(meta)
        frame = _calibrated(results.to_frame(read_turns(self.turns_path)), self.run_dir,
                            {v.name: str(v.path) for v in self.voices}, self.similarity_encoder)
        _write_parquet(frame, self.run_dir / RESULTS_FILE)
        return frame

    def _enroll(self, pairs) -> dict:
        """(voice, model) -> (voice_id, target_model, error). One enrollment per voice per model,
        reused across runs (the registry keys on audio content + target model)."""
        by_name = {v.name: v for v in self.voices}
        record_path = self.run_dir / VOICES_FILE
        try:
            record = _read_json_file(record_path) if record_path.is_file() else {}
        except ConfigError as exc:
            log.warning("%s; it is rewritten from this run's voices", exc)
            record = {}
        record = record if isinstance(record, dict) else {}
        out = {}
        self._created_now = 0
        for vname, model in sorted(pairs):
            spec = by_name[vname]
            try:
                known = self.workspace.registry.lookup(str(spec.path), model)
                voice = self.workspace.registry.ensure(str(spec.path), model, _preferred_name(vname),
                                                       **spec.enroll_args())
                fb = getattr(voice, "fallback_mode", None)
                reason = getattr(voice, "fallback_reason", None)
                fb = fb if isinstance(fb, bool) else None
                out[(vname, model)] = (voice.voice, getattr(voice, "target_model", model) or model, None, fb, reason)
                record[f"{vname}|{model}"] = {"voice": vname, "target_model": model, "voice_id": voice.voice,
                                              "reference": str(spec.path), "fallback_mode": fb,
                                              "fallback_reason": reason}
                self._created_now += known is None
                if fb:  # §7.9: the clone was made in degraded mode; its turns carry voice_fallback_mode
                    log.warning("voice %s (%s for %s) is a DEGRADED clone (fallback_mode): %s", voice.voice,
                                vname, model, reason or "no reason given")
            except Exception as exc:  # every turn of this pair becomes a failed row
                err = f"enrollment failed: {type(exc).__name__}: {exc}"
                out[(vname, model)] = (None, model, redact(err, self._api_key()), None, None)
                log.warning("%s for %s/%s", out[(vname, model)][2], vname, model)
        write_atomic(record_path, json.dumps(record, indent=2, sort_keys=True).encode("utf-8"))
        return out

    def _task(self, key, voice_ids, *, attempt: str = "", audio: dict | None = None) -> TurnTask:
        """The task of one turn. ``audio`` caches file bytes by path, so every task of a run shares one
        ``bytes`` object per recording."""
        vname, model, pname, repeat = key
        voice = next(v for v in self.voices if v.name == vname)
        prompt = next(p for p in self.prompts if p.name == pname)
        vid, target, err, fb, reason = voice_ids[(vname, model)]
        audio = {} if audio is None else audio
        for path in (prompt.path, voice.path):
            if path not in audio:
                audio[path] = path.read_bytes()
        return TurnTask(turn_id=turn_id(*key), run_id=self.run_dir.name, voice=vname, model=model, prompt=pname,
                        repeat=repeat, settings=self.workspace.settings, voice_id=vid, voice_target_model=target,
                        prompt_path=str(prompt.path),
                        reference_path=str(voice.path), audio_dir=str(self.run_dir / AUDIO_DIR),
                        realtime=self.realtime, metrics=self.metrics, enroll_error=err,
                        simulated=self._simulated(), voice_fallback_mode=fb, voice_fallback_reason=reason,
                        turn_detection=self.turn_detection, silence_duration_ms=self.silence_duration_ms,
                        prompt_audio=audio[prompt.path], reference_audio=audio[voice.path], attempt=attempt,
                        max_attempts=self.max_attempts)

    def _execute(self, tasks: list[TurnTask], total: int | None = None) -> None:
        from tqdm.auto import tqdm

        own = self.executor is None
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="qvtools-turn") if own else self.executor
        futures = {}
        total = len(tasks) if total is None else int(total)
        done = total - len(tasks)  # finished by earlier runs
        bar = tqdm(total=len(tasks), desc="turns", unit="turn", disable=not self.show_bar)
        try:
            with open(self.turns_path, "a", encoding="utf-8") as fh:
                futures = {executor.submit(run_turn_detached, t): t for t in tasks}
                for fut in as_completed(futures):
                    task = futures[fut]
                    try:
                        row, turn = fut.result()
                    except Exception as exc:  # an executor-level failure (e.g. a dead worker)
                        row, turn = _base_row(task), None
                        row.update(error=redact(f"{type(exc).__name__}: {exc}", self._api_key()),
                                   finished_at=_utcnow())
                    if turn is not None:  # the reply's files first, then the row that points at them
                        save_turn(turn, row, task.audio_dir)
                    append_row(fh, row)
                    bar.update(1)
                    bar.set_postfix_str(f"{task.model} {row.get('status')}", refresh=False)
                    done += 1
                    if self.progress is not None:
                        self.progress(done, total, f"{task.voice} / {task.model} / {task.prompt} "
                                                   f"#{task.repeat}: {row.get('status')}")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            bar.close()
            if own:
                executor.shutdown(wait=True, cancel_futures=True)

    def _check_resume_target(self) -> None:
        """A run is resumed only against the service it was started with (issue 23): another region, or
        another cloud base URL, would mix two services' turns under one provenance."""
        meta = _read_meta(self.run_dir)
        settings = self.workspace.settings
        was, now = meta.get("region"), settings.region
        problem = None
        if was is not None and was != now:
            problem = f"region {was!r}, now {now!r}"
        elif now != "local" and meta.get("base_url") not in (None, settings.base_url):
            problem = f"base URL {meta.get('base_url')!r}, now {settings.base_url!r}"
        if problem:
            raise ConfigError(f"{self.run_dir} was started with {problem}; resuming it would mix two services' "
                              "turns -- use a new run directory (--out) for this service")

    # -- run.json
    def _simulated(self) -> bool:
        ws = self.workspace
        return bool(getattr(ws, "is_local", ws.settings.region == "local"))

    def _api_key(self) -> str | None:
        return getattr(self.workspace.settings, "api_key", None)

    def _start_meta(self, n_todo: int) -> dict:
        meta = _read_meta(self.run_dir)
        ws = self.workspace
        settings = ws.settings
        is_local = self._simulated()
        try:
            describe = str(ws.describe())
        except Exception as exc:  # describe() is informative only
            describe = None
            log.debug("workspace.describe() failed: %s", exc)
        meta.setdefault("created_at", _utcnow())
        meta.update({
            "qvtools_run": 1,
            "versions": _versions(),
            "git_commit": _git_commit(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "region": settings.region,
            "base_url": settings.base_url,
            "workspace": describe,
            "simulated_latency": is_local,
            "models": list(self.models),
            "voices": {v.name: str(v.path) for v in self.voices},
            "prompts": {p.name: {"path": str(p.path), "text": p.text, "language": p.language} for p in self.prompts},
            "repeats": self.repeats,
            "seed": self.seed,
            "realtime_pacing": self.realtime,
            "audio_pacing": "realtime" if self.realtime else "fast",
            "turn_detection": self.turn_detection or "manual",
            "silence_duration_ms": self.silence_duration_ms,
            "model_warnings": self.model_warnings,
            "prices": PRICES_FILE if self.prices is not None else meta.get("prices"),
            "metrics": list(self.metrics),
            "similarity_encoder": self.similarity_encoder if isinstance(self.similarity_encoder, str)
            else self.similarity_encoder.name,
            "planned_turns": len(self.plan()),
            "started_at": _utcnow(),
            "finished_at": None,
            "argv": sys.argv if sys.argv and sys.argv[0] else None,
        })
        meta.setdefault("sessions", []).append({"started_at": meta["started_at"], "turns_to_run": n_todo,
                                                "finished_at": None})
        self._write_meta(meta)
        return meta

    def _finish_meta(self, meta: dict) -> None:
        rows = read_turns(self.turns_path)
        meta["finished_at"] = _utcnow()
        meta["sessions"][-1]["finished_at"] = meta["finished_at"]
        meta["turns_recorded"] = len(rows)
        meta["turns_completed"] = sum(1 for r in rows if r.get("status") == "completed")
        # where the service's delays came from (qvtools.results latency_source; issue 11)
        meta["latency_sources"] = sorted({r["latency_source"] for r in rows
                                          if isinstance(r.get("latency_source"), str)})
        meta["voices_created"] = self._voices_created(meta)
        self._write_meta(meta)

    def _voices_created(self, meta: dict) -> int:
        """Voices enrolled by this run directory so far (registry misses, for the cost estimate)."""
        return int(meta.get("voices_created") or 0) + int(getattr(self, "_created_now", 0))

    def _write_meta(self, meta: dict) -> None:
        # The key never reaches disk: scrub the serialised text, whatever field it might hide in.
        text = redact(json.dumps(meta, indent=2, default=_json_default), self._api_key(), limit=None,
                      keep_newlines=True)
        write_atomic(self.run_dir / RUN_FILE, (text + "\n").encode("utf-8"))


def _preferred_name(name: str) -> str:
    # input.preferred_name: letters, digits, `_`, at most spec.NAME_MAX_CHARS (protocol reference §2.1 table)
    from ..spec import NAME_MAX_CHARS

    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "voice"
    return slug[:NAME_MAX_CHARS]
