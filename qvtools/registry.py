"""Local registry of enrolled voices, so the same recording is not enrolled (and billed) twice.

:class:`VoiceRegistry` keeps one SQLite file mapping ``(content hash, target model, service
base URL, key fingerprint) -> voice``. The content hash is the SHA-256 of the decoded mono
PCM16 samples and rate (the same speech in WAV or FLAC hashes alike), falling back to the
SHA-256 of the bytes when it cannot be decoded. Only a short SHA-256 fingerprint of the API
key is stored, never the key. Creation for one key is serialised across threads and processes
(an ``IMMEDIATE`` SQLite transaction held around the create), so concurrent ``ensure`` calls
for the same recording enrol it once. A degraded clone's ``fallback_mode``/``fallback_reason``
(§7.9) are kept with it and returned by :meth:`VoiceRegistry.lookup`, ``ensure`` and ``voices``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from .catalog import create_parameters
from .enrollment import FALLBACK_ADVICE, Voice, VoiceClient

__all__ = ["VoiceRegistry", "content_hash", "key_fingerprint"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    content_sha TEXT NOT NULL,
    target_model TEXT NOT NULL,
    base_url TEXT NOT NULL,
    key_fp TEXT NOT NULL,
    voice TEXT NOT NULL,
    preferred_name TEXT,
    created_at REAL NOT NULL,
    raw TEXT,
    fallback_mode INTEGER,
    fallback_reason TEXT,
    clone_mode TEXT,
    PRIMARY KEY (content_sha, target_model, base_url, key_fp)
);
"""
#: Columns added after the first schema, with their types: a registry file written by an older qvtools is
#: migrated in place (``ALTER TABLE … ADD COLUMN``), its rows kept with NULL in the new columns.
_ADDED_COLUMNS = (("fallback_mode", "INTEGER"), ("fallback_reason", "TEXT"), ("clone_mode", "TEXT"))
_COLUMNS = "voice, target_model, raw, fallback_mode, fallback_reason, clone_mode"


def content_hash(src) -> str:
    """SHA-256 of the decoded mono PCM16 samples + rate; of the raw bytes if it cannot be decoded."""
    from . import audio
    from .errors import InvalidAudio

    try:
        x, sr = audio.load(src, mono=True)
    except InvalidAudio:
        data = audio.read_bytes(src)
        if not data:
            raise
        return "bytes:" + hashlib.sha256(data).hexdigest()
    h = hashlib.sha256(f"pcm16:{sr}:".encode())
    h.update(audio.to_pcm16(x))
    return h.hexdigest()


def key_fingerprint(api_key: str | None) -> str:
    """A short, non-reversible tag of an API key (first 16 hex of its SHA-256)."""
    return hashlib.sha256((api_key or "").encode("utf-8")).hexdigest()[:16]


def _voice_from_row(row) -> Voice:
    voice, target_model, raw_text, fallback, reason, clone_mode = row
    try:
        raw = json.loads(raw_text) if raw_text else {}
    except ValueError:
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    return Voice(voice=voice, target_model=target_model, gmt_create=raw.get("gmt_create"),
                 gmt_modified=raw.get("gmt_modified"), language=raw.get("language"),
                 fallback_mode=None if fallback is None else bool(fallback), fallback_reason=reason,
                 clone_mode=clone_mode, raw=raw)


class VoiceRegistry:
    """Content-addressed cache of enrolled voices in front of a :class:`VoiceClient`."""

    def __init__(self, path, client: VoiceClient):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.client = client
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=120.0, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(voices)")}
        for name, sqltype in _ADDED_COLUMNS:
            if name not in have:
                try:
                    self._db.execute(f"ALTER TABLE voices ADD COLUMN {name} {sqltype}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
                log.info("registry %s: added column %s", self.path, name)

    def __repr__(self) -> str:
        return f"VoiceRegistry({str(self.path)!r})"

    @property
    def _scope(self) -> tuple[str, str]:
        settings = self.client.settings
        return settings.http_base, key_fingerprint(settings.api_key)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def lookup(self, audio, target_model: str) -> Voice | None:
        """The registered voice for this recording and target model, or None."""
        return self._get(content_hash(audio), target_model)

    def _get(self, sha: str, target_model: str) -> Voice | None:
        base_url, fp = self._scope
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM voices WHERE content_sha=? AND target_model=? AND base_url=? AND key_fp=?",
                (sha, target_model, base_url, fp)).fetchone()
        return None if row is None else _voice_from_row(row)

    def ensure(self, audio, target_model: str, preferred_name: str, **kw) -> Voice:
        """The voice for this recording + target model on this service and key; created only if new.

        ``**kw`` goes to :meth:`VoiceClient.create` (``language``, ``text``, ``force``, ``parameters``); the
        clone mode the create sent (§7.28) is kept with the voice. A registered voice made in another mode
        than the one asked for now is reused with a warning (delete it to re-create it).
        """
        sha = content_hash(audio)
        found = self._get(sha, target_model)
        if found is not None:
            log.info("reusing voice %s for the same recording", found.voice)
            wanted = kw.get("parameters")
            wanted = (create_parameters(target_model) if wanted is None else wanted).get("voice_clone_mode")
            if wanted != found.clone_mode:
                log.warning("reusing voice %s, made with voice_clone_mode %r; %r is asked for now (§7.28). Delete "
                            "it (qvtools voices delete) to create it again in that mode", found.voice,
                            found.clone_mode, wanted)
            if found.fallback_mode:
                log.warning("reusing voice %s, a degraded clone (fallback_mode, reason %s): %s", found.voice,
                            found.fallback_reason or "not given", FALLBACK_ADVICE)
            return found
        base_url, fp = self._scope
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # serialises creators across threads and processes
            try:
                row = self._db.execute(
                    "SELECT voice FROM voices WHERE content_sha=? AND target_model=? AND base_url=? AND key_fp=?",
                    (sha, target_model, base_url, fp)).fetchone()
                if row is None:
                    voice = self.client.create(audio, target_model, preferred_name, **kw)
                    raw = {"gmt_create": voice.gmt_create, "gmt_modified": voice.gmt_modified,
                           "language": voice.language or kw.get("language")}
                    fallback = None if voice.fallback_mode is None else int(voice.fallback_mode)
                    self._db.execute(
                        "INSERT INTO voices (content_sha, target_model, base_url, key_fp, voice, preferred_name, "
                        "created_at, raw, fallback_mode, fallback_reason, clone_mode) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (sha, target_model, base_url, fp, voice.voice, preferred_name, time.time(),
                         json.dumps(raw), fallback, voice.fallback_reason, voice.clone_mode))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return self._get(sha, target_model)

    def voices(self) -> list[Voice]:
        """Every voice registered for this service and key, newest first."""
        base_url, fp = self._scope
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM voices WHERE base_url=? AND key_fp=? "
                                    "ORDER BY created_at DESC", (base_url, fp)).fetchall()
        return [_voice_from_row(row) for row in rows]

    def forget(self, voice) -> bool:
        name = voice.voice if isinstance(voice, Voice) else str(voice)
        base_url, fp = self._scope
        with self._lock:
            cur = self._db.execute("DELETE FROM voices WHERE voice=? AND base_url=? AND key_fp=?",
                                   (name, base_url, fp))
        return cur.rowcount > 0

    def reconcile(self) -> list[str]:
        """Forget registered voices the service no longer has (deleted, or auto-cleaned after a year, §2.4)."""
        alive = {v.voice for v in self.client.list()}
        gone = [v.voice for v in self.voices() if v.voice not in alive]
        for name in gone:
            self.forget(name)
        if gone:
            log.info("forgot %d voice(s) deleted on the service", len(gone))
        return gone
