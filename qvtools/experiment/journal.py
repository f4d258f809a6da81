"""The run directory's files and the turn journal: file names, :func:`turn_id`, :func:`read_turns` /
:func:`append_row` (``turns.jsonl``, one fsync'd JSON row per finished turn), and the all-or-nothing writers
of the other files (all through :func:`qvtools.rundir.write_atomic`, the one atomic writer)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError, QVError

__all__ = ["TURNS_FILE", "RUN_FILE", "VOICES_FILE", "RESULTS_FILE", "PRICES_FILE", "AUDIO_DIR", "turn_id",
           "read_turns", "append_row"]

log = logging.getLogger(__name__)

TURNS_FILE = "turns.jsonl"
RUN_FILE = "run.json"
VOICES_FILE = "voices.json"
RESULTS_FILE = "results.parquet"
PRICES_FILE = "prices.json"
AUDIO_DIR = "audio"


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def turn_id(voice: str, model: str, prompt: str, repeat: int) -> str:
    """Deterministic key of one turn; also a safe file stem."""
    key = f"{voice}\x1f{model}\x1f{prompt}\x1f{int(repeat)}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    slug = "__".join(_SAFE.sub("-", s).strip("-")[:40] for s in (voice, model, prompt))
    return f"{slug}__r{int(repeat)}__{digest}"


def read_turns(path) -> list[dict]:
    """Rows of a ``turns.jsonl``. A truncated or corrupt LAST line (crash mid-write) is dropped with a
    warning; a corrupt line elsewhere is an error (the file was edited, not interrupted). Every row is
    checked (issue 23, :mod:`qvtools.rundir` / :mod:`qvtools.validate`): its ``turn_id`` has the shape
    :func:`turn_id` writes and its numbers are finite, in range and numbers; a bad row is a ConfigError
    naming the file, line and field."""
    from ..results import COLUMNS
    from ..rundir import MAX_JSON_BYTES, check_turn_id, contained, parse_json
    from ..validate import check_row

    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path.name} line {i + 1}"
        try:
            if len(line) > MAX_JSON_BYTES:
                raise ConfigError(f"{where}: longer than {MAX_JSON_BYTES:,} bytes")
            row = parse_json(line, where=where)
            if not isinstance(row, dict) or "turn_id" not in row:
                raise ConfigError(f"{where}: not a turn row")
        except ConfigError as exc:
            if all(not rest.strip() for rest in lines[i + 1:]):
                log.warning("dropping a truncated last line in %s (interrupted write): %s", path, exc)
                break
            raise QVError(f"{path} line {i + 1} is not a turn row; the file was edited or corrupted") from None
        check_turn_id(row["turn_id"], where=where)
        if row.get("audio_path") is not None:  # never a file outside the run directory (issue 23)
            contained(path.parent, row["audio_path"], where=f"{where}, field 'audio_path'", links=False)
        rows.append(check_row(row, where=where, dtypes=COLUMNS))
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
    """Replace the journal with ``rows``, all or nothing (:func:`qvtools.rundir.write_atomic`)."""
    from ..rundir import write_atomic

    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n"
                               for row in rows).encode("utf-8"))


def _write_parquet(frame, path: Path) -> None:
    """All or nothing: a failed write (disk full) leaves ``path`` as it was and names it (issue 23;
    :func:`qvtools.rundir.write_atomic`, the one atomic writer)."""
    import io

    from ..rundir import write_atomic

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())


def _write_json(path: Path, doc) -> None:
    from ..rundir import write_atomic

    write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True, default=_json_default) + "\n").encode("utf-8"))


def _read_json_file(path: Path):
    from ..rundir import read_json

    return read_json(path, where=path.name)


def _read_meta(run_dir: Path) -> dict:
    """``run.json`` (bounded, must be an object); {} when absent."""
    from ..rundir import read_object

    path = run_dir / RUN_FILE
    return read_object(path, where=RUN_FILE) if path.is_file() else {}


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
