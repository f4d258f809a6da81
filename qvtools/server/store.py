"""SQLite voice store of the local service, scoped per API key.

One database file under the service's data directory, WAL journal, one shared
connection guarded by a lock (calls are short; the service runs them in an executor).
A *scope* argument is the caller's API key: the store keeps only its SHA-256, never the
key, and every query filters on it, so one key never sees or deletes another's voices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["VoiceStore", "VoiceRecord", "QuotaExceeded", "scope_hash", "DB_NAME", "accepts_target_model"]

log = logging.getLogger(__name__)

DB_NAME = "voices.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    voice TEXT NOT NULL,
    key_scope TEXT NOT NULL,
    target_model TEXT NOT NULL,
    language TEXT,
    preferred_name TEXT NOT NULL,
    gmt_create TEXT NOT NULL,
    gmt_modified TEXT NOT NULL,
    created_ts REAL NOT NULL,
    last_used REAL,
    sha256 TEXT NOT NULL,
    profile TEXT,
    audio BLOB NOT NULL,
    PRIMARY KEY (key_scope, voice)
);
CREATE INDEX IF NOT EXISTS voices_scope_created ON voices (key_scope, created_ts DESC);
"""


def accepts_target_model(target_model: str, accepted) -> bool:
    """True when an enrollment ``target_model`` (or its dated / ``-latest`` form) is in ``accepted``
    (``ServiceConfig.enrollment_target_models``, by default ``catalog.ENROLLMENT_TARGET_MODELS``)."""
    from ..catalog import base_model

    return isinstance(target_model, str) and (target_model in accepted or base_model(target_model) in accepted)


def scope_hash(scope: str) -> str:
    """The stored form of a scope (SHA-256 hex of the API key)."""
    return hashlib.sha256(str(scope).encode("utf-8")).hexdigest()


class QuotaExceeded(Exception):
    """Raised by :meth:`VoiceStore.add` when the scope already holds ``quota`` voices."""


@dataclass
class VoiceRecord:
    voice: str
    target_model: str
    language: str | None
    preferred_name: str
    gmt_create: str  # "YYYY-MM-DD HH:MM:SS", UTC
    gmt_modified: str
    last_used: float | None  # time.time() of the last realtime use, None if never used
    sha256: str  # of the uploaded (encoded) audio bytes
    profile: dict | None  # VoiceProfile.to_dict()
    audio: bytes = field(repr=False)  # enrollment audio as a mono 16-bit WAV

    def voice_profile(self):
        """The stored profile as a :class:`qvtools.server.voice.VoiceProfile` (None when absent)."""
        if self.profile is None:
            return None
        from .voice import VoiceProfile

        return VoiceProfile.from_dict(self.profile)

    def to_list_item(self) -> dict:
        """One ``voice_list`` entry (protocol reference §2.2 + QC-VC extra fields)."""
        return {"voice": self.voice, "gmt_create": self.gmt_create, "gmt_modified": self.gmt_modified,
                "target_model": self.target_model, "language": self.language}


_COLUMNS = ("voice, target_model, language, preferred_name, gmt_create, gmt_modified, last_used, "
            "sha256, profile, audio")


def _record(row, with_audio: bool = True) -> VoiceRecord:
    voice, target_model, language, preferred_name, gmt_create, gmt_modified, last_used, sha, profile, audio = row
    return VoiceRecord(voice, target_model, language, preferred_name, gmt_create, gmt_modified, last_used, sha,
                       json.loads(profile) if profile else None, bytes(audio) if with_audio and audio else b"")


class VoiceStore:
    """Voices per API-key scope in one SQLite file (``data_dir / voices.sqlite3``)."""

    def __init__(self, data_dir):
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, scope: str, record: VoiceRecord, *, quota: int | None = None) -> None:
        """Insert a voice; with ``quota`` the count check and the insert are one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if quota is not None:
                    (n,) = self._db.execute("SELECT COUNT(*) FROM voices WHERE key_scope=?",
                                            (scope_hash(scope),)).fetchone()
                    if n >= quota:
                        raise QuotaExceeded(f"{n} voices stored, quota {quota}")
                self._db.execute(
                    "INSERT INTO voices (voice, key_scope, target_model, language, preferred_name, gmt_create, "
                    "gmt_modified, created_ts, last_used, sha256, profile, audio) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (record.voice, scope_hash(scope), record.target_model, record.language, record.preferred_name,
                     record.gmt_create, record.gmt_modified, now, record.last_used, record.sha256,
                     json.dumps(record.profile) if record.profile is not None else None, record.audio))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, scope: str, voice: str, *, with_audio: bool = True) -> VoiceRecord | None:
        """The voice's record; ``with_audio=False`` leaves the enrollment audio out (``audio`` is ``b""``)."""
        cols = _COLUMNS if with_audio else _COLUMNS.replace(", audio", ", NULL")
        with self._lock:
            row = self._db.execute(f"SELECT {cols} FROM voices WHERE key_scope=? AND voice=?",
                                   (scope_hash(scope), voice)).fetchone()
        return _record(row, with_audio=with_audio) if row else None

    def list(self, scope: str, page_index: int = 0, page_size: int = 10) -> tuple[list[VoiceRecord], int]:
        """One page, newest first (offset = page_index × page_size, §5 item 3), and the total count."""
        h = scope_hash(scope)
        with self._lock:
            (total,) = self._db.execute("SELECT COUNT(*) FROM voices WHERE key_scope=?", (h,)).fetchone()
            rows = self._db.execute(
                f"SELECT {_COLUMNS.replace(', audio', ', NULL')} FROM voices WHERE key_scope=? "
                "ORDER BY created_ts DESC, rowid DESC LIMIT ? OFFSET ?",
                (h, int(page_size), int(page_index) * int(page_size))).fetchall()
        return [_record(r, with_audio=False) for r in rows], int(total)

    def delete(self, scope: str, voice: str) -> bool:
        """True when the voice existed in this scope and is now gone."""
        with self._lock:
            cur = self._db.execute("DELETE FROM voices WHERE key_scope=? AND voice=?", (scope_hash(scope), voice))
        return cur.rowcount > 0

    def count(self, scope: str) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM voices WHERE key_scope=?", (scope_hash(scope),)).fetchone()
        return int(n)

    def touch(self, scope: str, voice: str) -> bool:
        """Record a use of the voice (``last_used``; the 1-year auto-cleanup rule of §2.4 counts from it)."""
        with self._lock:
            cur = self._db.execute("UPDATE voices SET last_used=? WHERE key_scope=? AND voice=?",
                                   (time.time(), scope_hash(scope), voice))
        return cur.rowcount > 0
