"""A run directory is shared between people (issue 23): contain it, bound what is read from it, lock it.

A colleague sends ``RUN_DIR``; ``qvtools report`` / ``replay`` rebuild it. Everything such a directory
names is untrusted:

- **Containment** (:func:`contained`): a path read from a run directory (``audio_path`` in
  ``turns.jsonl``, ``audio/<turn_id>.*``) is resolved (symbolic links followed) and must stay inside the
  directory -- no absolute path, no ``..``, no link that leaves it. ``turn_id`` values must match
  :data:`TURN_ID_RE`, the shape :func:`qvtools.experiment.turn_id` writes.
- **Bounded reading** (:func:`read_json`, :func:`read_audio`): JSON and audio are size-capped before
  they are parsed or decoded (the enrollment upload caps, :data:`qvtools.spec.MAX_FILE_BYTES` and
  :data:`qvtools.spec.MAX_DURATION_S`), and a malformed file -- nested 200,000 deep, not audio -- is a
  :class:`~qvtools.errors.ConfigError` naming the file, never a ``RecursionError`` or a libsndfile
  traceback.
- **One writer** (:class:`RunLock`): ``RUN_DIR/.lock`` held with ``fcntl.flock`` by ``compare`` and
  ``replay`` while they write; a second writer fails at once, naming the holder (pid, host, command).

A leaf module: it imports only :mod:`qvtools.errors`, :mod:`qvtools.spec` and (lazily) :mod:`qvtools.audio`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from .errors import ConfigError
from .spec import MAX_DURATION_S, MAX_FILE_BYTES

__all__ = [
    "TURN_ID_RE",
    "MAX_JSON_BYTES",
    "MAX_AUDIO_BYTES",
    "MAX_AUDIO_S",
    "LOCK_FILE",
    "contained",
    "check_turn_id",
    "turn_stem",
    "read_json",
    "read_object",
    "parse_json",
    "check_run_rows",
    "read_audio",
    "reference_path",
    "write_atomic",
    "RunLock",
]

#: The shape of the ids :func:`qvtools.experiment.turn_id` writes: ``<slugs>__r<repeat>__<8 hex>``, slugs of
#: ``[A-Za-z0-9._-]`` (no ``/``, so an id is one file name, never a path). tests/test_rundir.py checks
#: that every id the runner makes matches.
TURN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}__r[0-9]{1,9}__[0-9a-f]{8}$")
#: Largest JSON document (a saved turn, ``run.json``, one ``turns.jsonl`` line) read from a run directory:
#: the enrollment upload cap (SEED §2.4 "max 10 MB", :data:`qvtools.spec.MAX_FILE_BYTES`).
MAX_JSON_BYTES = MAX_FILE_BYTES
#: Largest audio file read from a run directory (bytes, before decoding) -- the enrollment upload cap.
MAX_AUDIO_BYTES = MAX_FILE_BYTES
#: Longest audio decoded from a run directory (s) -- the enrollment duration cap (SEED §2.4 "max 60 s").
MAX_AUDIO_S = MAX_DURATION_S
#: The lock file of a run directory (:class:`RunLock`).
LOCK_FILE = ".lock"


def contained(run_dir, rel, *, where: str, links: bool = True) -> Path:
    """``run_dir / rel`` resolved (links followed), refused unless it stays inside ``run_dir``.

    ``rel`` must be a relative path without ``..``; ``where`` names the file, line and field for the
    error (``"turns.jsonl line 3, audio_path"``). Returns the resolved path (it need not exist).
    ``links=False`` checks the text only (a journal read); the file is checked again, links followed,
    when it is opened."""
    if not isinstance(rel, (str, os.PathLike)) or not str(rel):
        raise ConfigError(f"{where}: expected a relative path inside the run directory, got {rel!r}")
    text = str(rel)
    if "\x00" in text:
        raise ConfigError(f"{where}: a path with a NUL byte is refused")
    p = Path(text)
    if p.is_absolute() or p.drive or text.startswith(("/", "\\", "~")):
        raise ConfigError(f"{where}: an absolute path ({text!r}) is refused; paths in a run directory are "
                          "relative to it")
    if ".." in p.parts or ".." in text.replace("\\", "/").split("/"):
        raise ConfigError(f"{where}: a path with '..' ({text!r}) is refused; it must stay inside the run directory")
    root = Path(run_dir).resolve()
    if not links:
        return root / p
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise ConfigError(f"{where}: {text!r} leads outside the run directory (a symbolic link?); refused")
    return full


def check_turn_id(value, *, where: str) -> str:
    """``value`` if it is a turn id the runner writes (:data:`TURN_ID_RE`), else a ConfigError naming ``where``."""
    if not isinstance(value, str) or not TURN_ID_RE.match(value):
        shown = value if not isinstance(value, str) else value[:80]
        raise ConfigError(f"{where}: turn_id {shown!r} is not one qvtools writes "
                          "(<voice>__<model>__<prompt>__r<n>__<8 hex>); the file was edited")
    return value


def turn_stem(run_dir, audio_dir: str, tid, *, where: str) -> Path:
    """The contained stem ``RUN_DIR/<audio_dir>/<turn_id>`` of a saved turn (``.wav`` / ``.json`` beside it)."""
    check_turn_id(tid, where=where)
    for ext in (".wav", ".json"):
        contained(run_dir, f"{audio_dir}/{tid}{ext}", where=f"{where}, {audio_dir}/{tid}{ext}")
    return Path(run_dir).resolve() / audio_dir / tid


def parse_json(text, *, where: str):
    """``json.loads`` whose failures (invalid, nested too deep, numbers too long) are ConfigErrors naming ``where``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{where}: JSON nested too deeply; refused") from None
    except (ValueError, OverflowError) as exc:  # JSONDecodeError, int digits limit, UnicodeDecodeError
        raise ConfigError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read_capped(path: Path, cap: int, where: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path.name} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise ConfigError(f"{where}: {path.name} is larger than {cap:,} bytes; refused")
    return data


def read_json(path, *, where: str | None = None, cap: int = MAX_JSON_BYTES):
    """A JSON file read with at most ``cap`` bytes; every failure is a ConfigError naming the file."""
    path = Path(path)
    where = where or str(path)
    return parse_json(_read_capped(path, cap, where), where=where)


def read_object(path, *, where: str | None = None) -> dict:
    """:func:`read_json` of a file that must hold a JSON object (``run.json``, a saved turn)."""
    doc = read_json(path, where=where)
    if not isinstance(doc, dict):
        raise ConfigError(f"{where or path}: expected a JSON object, got {type(doc).__name__}; the file was edited")
    return doc


def _missing(v) -> bool:
    """None, NaN or pandas' NA (without importing pandas)."""
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType"


def check_run_rows(run_dir, rows, *, where: str) -> None:
    """Rows of a results table read from ``run_dir`` (``where``: its file): every ``turn_id`` has the runner's
    shape and every ``audio_path`` stays inside the run directory; else a ConfigError naming row and field."""
    for i, row in enumerate(rows, 1):
        tid, path = row.get("turn_id"), row.get("audio_path")
        if not _missing(tid):
            check_turn_id(tid, where=f"{where} row {i}")
        if isinstance(path, str):
            contained(run_dir, path, where=f"{where} row {i}, field 'audio_path'", links=False)


def read_audio(path, *, where: str | None = None, cap_bytes: int = MAX_AUDIO_BYTES,
               max_s: float = MAX_AUDIO_S):
    """``(samples float32 mono, rate)`` of an audio file, size-capped before decoding and duration-capped
    while decoding; not audio, too large or too long is a ConfigError naming the file. The bytes are read
    here (libsndfile then decodes from memory), so the file read is the one this module checked."""
    from .audio import load
    from .errors import InvalidAudio

    path = Path(path)
    where = where or str(path)
    data = _read_capped(path, cap_bytes, where)
    try:
        x, sr = load(data, mono=True, limit_s=max_s)
    except (InvalidAudio, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"{where}: {path.name} is not readable audio ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None
    if len(x) > max_s * sr:
        raise ConfigError(f"{where}: {path.name} is longer than {max_s:g} s; refused")
    return x, int(sr)


def reference_path(run_dir, value, *, where: str) -> str | None:
    """A reference recording named in a shared file (``run.json`` ``voices``), or None when it may not be
    opened: only a path inside the run directory (relative to it, or absolute and resolving inside it)
    or inside the packaged samples is used -- never an arbitrary absolute path (a private recording
    elsewhere on disk would end up in a shared report). The caller's own ``references`` bypass this."""
    from .resources import samples_dir

    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    p = Path(value)
    roots = [Path(run_dir).resolve(), Path(samples_dir()).resolve()]
    full = p.resolve() if p.is_absolute() else None
    if full is None:
        try:
            full = contained(run_dir, value, where=where)
        except ConfigError:
            return None
    if any(full == r or r in full.parents for r in roots):
        return str(full)
    return None


def write_atomic(path, data) -> Path:
    """Write ``data`` to ``path`` all or nothing: a temporary file beside it (fsync'd), then ``os.replace``.
    A failure (disk full, file too large, permission) removes the temporary file, leaves ``path`` as it
    was and raises ``OSError`` naming ``path`` (issue 23: "No space left on device" without the path, a
    partial WAV and an empty temp file were left before). The one atomic writer of the package (issue 19).

    ``data``: the bytes, or a function ``fill(fh)`` writing to the open temporary file (a large file
    streamed, e.g. a model joined from its parts); an exception it raises also leaves ``path`` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            data(fh) if callable(data) else fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


class RunLock:
    """An exclusive lock on ``RUN_DIR/.lock`` (``fcntl.flock``, released when the holder exits or closes).

    ``with RunLock(run_dir, "compare"):`` -- a second process (or a second lock in this one) fails at once
    with a ConfigError saying who holds it (pid, host, command, since when). The lock file is left in place
    (deleting it would let a third process lock a different inode)."""

    def __init__(self, run_dir, command: str = "qvtools"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            raise ConfigError(f"{self.path} is a symbolic link; refused (remove it)")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            finally:
                os.close(fd)
            raise ConfigError(f"{self.run_dir} is in use by {holder}; wait for it to finish or use another "
                              "run directory") from None
        except BaseException:
            os.close(fd)
            raise
        info = (f"pid {os.getpid()} on {socket.gethostname()} ({self.command}, since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, held={self.held})"

