"""Replay (no network): recompute ``results.parquet`` of a run from ``turns.jsonl`` and the saved turns
(``audio/*.json`` + ``.wav``), e.g. to rebuild and share a cloud run's report (``qvtools replay RUN_DIR``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ConfigError, QVError
from . import scoring
from .journal import AUDIO_DIR, RESULTS_FILE, RUN_FILE, TURNS_FILE, _read_meta, _write_parquet, read_turns
from .scoring import DEFAULT_METRICS

__all__ = ["replay"]

log = logging.getLogger(__name__)


#: Metrics that need the reference recording (kept from the journal when it is not on disk).
_REFERENCE_COLUMNS = ("speaker_similarity", "speaker_model", "ref_f0_median_hz", "f0_ratio", "ref_mos_ovrl",
                      "mos_ovrl_delta")


def _calibrated(frame, run_dir: Path, refs: Mapping, encoder):
    """``frame`` with the run-level similarity columns (:func:`qvtools.similarity.calibrate`: ceiling,
    s-norm against impostors, identification); when that fails, ``frame`` as it was and a warning
    (``turns.jsonl`` and the audio keep everything: ``qvtools replay`` redoes it)."""
    from ..similarity import calibrate

    try:
        return calibrate(frame, {v: p for v, p in refs.items() if p and Path(p).is_file()}, audio_root=run_dir,
                         encoder=encoder)
    except Exception as exc:
        log.warning("similarity calibration of %s failed (%s: %s); results are written without it", run_dir,
                    type(exc).__name__, exc)
        return frame


def _kept_calibration(frame, previous: Path):
    """``frame`` with the run-level similarity columns of the ``results.parquet`` written before (by
    ``turn_id``), for a replay that cannot recompute them (a reference is not on disk)."""
    import pandas as pd

    from .. import results
    from ..similarity import CALIBRATION_COLUMNS

    cols = [*CALIBRATION_COLUMNS, "speaker_model"]
    try:
        old = pd.read_parquet(previous, columns=["turn_id", *cols]) if previous.is_file() else None
    except Exception as exc:  # an older results file without the columns, or an unreadable one
        log.warning("replay: the similarity calibration of %s is not kept (%s)", previous, exc)
        old = None
    if old is None:
        log.warning("replay: a reference is missing, so speaker_similarity_norm, speaker_identified and "
                    "ref_ceiling_similarity are left empty (pass references= to recompute them)")
        return frame
    old = old.set_index("turn_id")
    keep = frame["turn_id"].isin(old.index)
    for col in cols:
        frame.loc[keep, col] = old.loc[frame.loc[keep, "turn_id"], col].to_numpy()
    log.warning("replay: a reference is missing; the similarity calibration is kept from %s", previous.name)
    return results.to_frame(frame)


def replay(run_dir, *, metrics: Sequence[str] | None = None, references: Mapping[str, str] | None = None,
           write: bool = True, similarity_encoder=None):
    """Recompute the results table of a run from its saved turns, with no network; returns the DataFrame.

    For every journaled row whose turn was saved (``audio/<turn_id>.json`` + ``.wav``), the latency,
    usage and provenance columns are recomputed from the saved marks and events, and the audio metrics
    (``metrics``, default: the run's) from the saved reply; identifiers, status and errors come from
    ``turns.jsonl``. The reference recordings are ``references`` (voice -> path) or the run's
    (``run.json``) when they are inside the run directory or the packaged samples (:func:`qvtools.rundir.
    reference_path`; never an arbitrary absolute path named in a shared file); a missing one keeps the
    journaled reference-based columns (a warning says so). Rows without a saved turn (failed before any
    reply) are kept as journaled. ``write``: also write ``results.parquet`` (atomically), holding the
    run directory's lock (:class:`qvtools.rundir.RunLock`).

    Issue 23: saved files are read contained and bounded (:mod:`qvtools.rundir`); a turn whose files fail
    to load or score keeps its journaled values with ``metrics_error`` set and the replay goes on; the
    failures are listed in ``frame.attrs["replay_failures"]`` (``[(turn_id, message)]``).
    The run-level similarity columns are recomputed with ``similarity_encoder`` (default: the run's,
    ``run.json``; :func:`qvtools.similarity.get_encoder`); ``naturalness`` (DNSMOS) is scored even when an
    older run's metrics list predates it.
    """
    from ..rundir import RunLock

    run_dir = Path(run_dir)
    turns_path = run_dir / TURNS_FILE
    if not turns_path.is_file():
        raise ConfigError(f"{run_dir} holds no {TURNS_FILE}; is it a qvtools run directory?")
    if not write:
        return _replay(run_dir, metrics, references, write, similarity_encoder)
    with RunLock(run_dir, "qvtools replay"):
        return _replay(run_dir, metrics, references, write, similarity_encoder)


def _replay(run_dir: Path, metrics, references, write: bool, similarity_encoder=None):
    from .. import results
    from ..rundir import reference_path

    meta = _read_meta(run_dir)
    wanted = tuple(metrics) if metrics is not None else tuple(meta.get("metrics") or DEFAULT_METRICS)
    if metrics is None and "naturalness" not in wanted:
        wanted += ("naturalness",)  # needs only the saved reply (and the reference when on disk)
    unknown = set(map(str, wanted)) - set(DEFAULT_METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {DEFAULT_METRICS}")
    voices = meta.get("voices") if isinstance(meta.get("voices"), dict) else {}
    refs = {str(k): reference_path(run_dir, v, where=f"{RUN_FILE}, voices[{str(k)[:40]!r}]")
            for k, v in voices.items()}
    refs.update({str(k): str(v) for k, v in (references or {}).items()})
    missing_refs: set[str] = set()
    out, failures = [], []
    for line, row in enumerate(read_turns(run_dir / TURNS_FILE), 1):
        try:
            new = _replay_row(run_dir, row, meta, wanted, refs, missing_refs)
        except Exception as exc:  # one bad turn is a row with metrics_error, never the end of the replay
            msg = f"{type(exc).__name__}: {exc}" if not isinstance(exc, QVError) else str(exc)
            new = dict(row, metrics_error=msg[:500])
            failures.append((row["turn_id"], msg))
            log.warning("replay: turn %s not replayed: %s", row["turn_id"], msg)
        out.append(new)
    for name in sorted(missing_refs):
        log.warning("replay: reference of %s not on disk or not usable here (%s); its similarity / F0 ratio are kept as "
                    "recorded (pass references= to recompute them)", name, refs.get(name) or "not usable")
    if missing_refs:  # the calibration needs every reference of the run: keep the one already written
        frame = _kept_calibration(results.to_frame(out), run_dir / RESULTS_FILE)
    else:
        frame = _calibrated(results.to_frame(out), run_dir, refs,
                            similarity_encoder if similarity_encoder is not None else meta.get("similarity_encoder"))
    frame.attrs["replay_failures"] = failures
    if write:
        _write_parquet(frame, run_dir / RESULTS_FILE)
    return frame


def _replay_row(run_dir: Path, row: dict, meta: dict, wanted, refs: dict, missing_refs: set) -> dict:
    """One journaled row recomputed from its saved turn (unchanged when no turn was saved)."""
    from ..realtime.turn import Turn
    from ..rundir import read_audio, read_json, turn_stem

    tid = row["turn_id"]
    stem = turn_stem(run_dir, AUDIO_DIR, tid, where=f"{TURNS_FILE} turn {tid}")
    js, wav = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".wav")
    if not (js.is_file() and wav.is_file()):
        return dict(row)
    if row.get("status") != "completed" and wav.stat().st_size <= 44:  # a PCM16 WAV header, no samples:
        return dict(row)  # a turn that failed before any reply audio (e.g. a timeout) has nothing to rescore
    doc = read_json(js, where=f"{AUDIO_DIR}/{js.name}")
    x, sr = read_audio(wav, where=f"{AUDIO_DIR}/{wav.name}")
    if not isinstance(doc, dict):
        raise ConfigError(f"{AUDIO_DIR}/{js.name}: expected a saved turn (a JSON object)")
    try:
        turn = Turn.from_dict(doc, x, sr)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ConfigError(f"{AUDIO_DIR}/{js.name}: not a saved turn ({type(exc).__name__}: {exc})") from None
    new = dict(row)
    mode = row.get("turn_detection")
    if mode is None:  # a run from before the column: manual turns sent commit
        mode = "manual" if "commit_sent" in turn.marks else "server_vad"
    silence = row.get("vad_silence_ms")  # read_turns checked it (finite, >= 0, or missing)
    new.update(scoring._provenance(turn, None if mode == "manual" else mode, silence))
    if row.get("audio_pacing") is None and "realtime_pacing" in meta:
        new["audio_pacing"] = "realtime" if meta["realtime_pacing"] else "fast"
    ref = refs.get(str(row.get("voice_ref")))
    if not ref or not Path(ref).is_file():
        missing_refs.add(str(row.get("voice_ref")))
        ref = None
    scored = scoring._score(turn, wanted, _bounded_reference(ref) if ref else None)
    if ref is None:
        scored = {k: v for k, v in scored.items() if k not in _REFERENCE_COLUMNS}
    new.update(scored)
    new.pop("metrics_error", None)
    return new


def _bounded_reference(path):
    """A reference recording as ``(samples, rate)``, read with the run-directory caps."""
    from ..rundir import read_audio

    return read_audio(path, where=f"reference {Path(path).name}")
