"""One conversational turn: :class:`TimedEvent`, :class:`Turn` and the sans-I/O :class:`TurnTracker`.

The tracker is fed ``(text, t)`` pairs -- the frame text and the ``time.perf_counter()`` taken when the
frame was received, *before* any JSON parsing or base64 decoding -- and client-side marks
(``first_audio_sent``, ``speech_end_sent``, ...). It never touches a socket, so it is unit-tested with
literal event sequences and reused by any driver (``qvtools.realtime.session``).

Latency definitions (``docs/architecture.md``): "end of user speech" is the mark ``speech_end_sent``
(the last audio chunk holding speech, before the trailing silence). :meth:`Turn.latency` reports
time-to-first-audio / -text both from there and from ``response.created``, and ``e2e_ms`` to ``response.done``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import from_pcm16, wav_bytes
from ..catalog import DEFAULT_OUTPUT_SAMPLE_RATE
from ..errors import redact
from ..metrics import EVENT_MARKS, latencies
from . import endings
from .events import SERVER_EVENT_TYPES, Event, parse

__all__ = ["TimedEvent", "Turn", "TurnTracker", "MARKS", "TURN_STATUSES"]

log = logging.getLogger(__name__)

#: Marks a turn can carry (perf_counter seconds).
MARKS = ("connect", "session_ready", "first_audio_sent", "speech_end_sent", "last_audio_sent", "commit_sent",
         "response_create_sent", "cancel_sent", "speech_started", "speech_stopped", "committed",
         "transcript_done", "response_created", "first_text_delta", "first_audio_delta", "audio_done",
         "response_done")
#: ``rejected``: semantic VAD did not accept the input (§7.23); no reply, the session stays usable.
TURN_STATUSES = ("completed", "incomplete", "failed", "cancelled", "rejected")

# server event type -> mark set on its first occurrence
_EVENT_MARKS = EVENT_MARKS  # the one table, in qvtools.metrics


@dataclass
class TimedEvent:
    """A received server event. ``t``: ``time.perf_counter()`` when the frame was received (before
    base64 decode); ``data``: the parsed JSON, with an audio delta's ``delta`` replaced by its decoded
    byte count."""

    t: float
    type: str
    data: dict

    def to_dict(self) -> dict:
        return {"t": self.t, "type": self.type, "data": self.data}


@dataclass
class Turn:
    """Everything measured about one user utterance and the reply to it."""

    model: str
    voice: str | None = None
    session_id: str | None = None
    response_id: str | None = None
    status: str = "failed"  # "completed" | "incomplete" | "failed" | "cancelled" | "rejected"
    error: str | None = None
    #: True when the failure is worth retrying on a new session (§7.24 a: ``COMMON_ERROR`` / close 1011, an
    #: abnormal close during a response, a refused handshake with 5xx); see :mod:`qvtools.realtime.endings`.
    transient: bool = False
    events: list[TimedEvent] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE
    audio_chunks: list[tuple[float, int]] = field(default_factory=list)
    user_transcript: str | None = None
    assistant_transcript: str | None = None
    usage: dict | None = None
    #: Id of the user item the server created for this turn (for a text turn: the server-made id of the
    #: acknowledged item, §7.13 -- a client-chosen id is not kept).
    user_item_id: str | None = None

    @property
    def speech_end(self) -> float | None:
        """End of user speech: ``speech_end_sent``, else ``last_audio_sent`` (architecture contract)."""
        return self.marks.get("speech_end_sent", self.marks.get("last_audio_sent"))

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate) if self.sample_rate else 0.0

    def latency(self) -> dict:
        """Latencies in ms, NaN when a mark is missing: :func:`qvtools.metrics.latencies`, the same names
        and convention as the results columns (``ttfa_ms``, ``ttft_ms``, ``ttfa_created_ms``,
        ``ttft_created_ms``, ``response_created_ms``, ``speech_stopped_ms``, ``e2e_ms``; issue 12).
        Saved turn JSON writes a missing value as ``null`` (JSON has no NaN)."""
        return latencies(self)

    # -------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-able metadata (everything but the audio samples)."""
        return {
            "model": self.model, "voice": self.voice, "session_id": self.session_id,
            "response_id": self.response_id, "status": self.status, "error": self.error,
            "transient": self.transient, "marks": dict(self.marks), "sample_rate": self.sample_rate,
            "audio_chunks": [list(c) for c in self.audio_chunks],
            "user_transcript": self.user_transcript, "assistant_transcript": self.assistant_transcript,
            "usage": self.usage, "user_item_id": self.user_item_id,
            "latency": {k: (v if math.isfinite(v) else None) for k, v in self.latency().items()},
            "events": [e.to_dict() for e in self.events],
        }

    def save(self, path_stem) -> tuple[Path, Path]:
        """Write ``<stem>.wav`` (the reply, PCM16) and ``<stem>.json``; returns both paths."""
        stem = Path(path_stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        wav, js = stem.with_name(stem.name + ".wav"), stem.with_name(stem.name + ".json")
        from ..rundir import write_atomic

        # all or nothing, the path named in any error (issue 23); the WAV is removed if the JSON fails
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode("utf-8")
        write_atomic(wav, wav_bytes(self.audio, self.sample_rate))
        try:
            write_atomic(js, text)
        except BaseException:
            wav.unlink(missing_ok=True)
            raise
        return wav, js

    @classmethod
    def load(cls, path_stem) -> "Turn":
        """Read a turn written by :meth:`save`."""
        import soundfile as sf

        stem = Path(path_stem)
        meta = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
        x, sr = sf.read(str(stem.with_name(stem.name + ".wav")), dtype="float32", always_2d=False)
        return cls.from_dict(meta, x, sr)

    @classmethod
    def from_dict(cls, meta: dict, x, sr: int) -> "Turn":
        """A turn from :meth:`to_dict` output and its reply samples (``KeyError``/``TypeError``/``ValueError``
        for a document that is not one)."""
        return cls(model=meta["model"], voice=meta.get("voice"), session_id=meta.get("session_id"),
                   response_id=meta.get("response_id"), status=meta["status"], error=meta.get("error"),
                   transient=bool(meta.get("transient", False)),
                   events=[TimedEvent(e["t"], e["type"], e["data"]) for e in meta.get("events", [])],
                   marks={k: float(v) for k, v in meta.get("marks", {}).items()},
                   audio=np.asarray(x, dtype=np.float32), sample_rate=int(sr),
                   audio_chunks=[(float(t), int(n)) for t, n in meta.get("audio_chunks", [])],
                   user_transcript=meta.get("user_transcript"),
                   assistant_transcript=meta.get("assistant_transcript"), usage=meta.get("usage"),
                   user_item_id=meta.get("user_item_id"))


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


_REDACTED_TYPES = frozenset({"error", "conversation.item.input_audio_transcription.failed"})
_KNOWN_TYPES = frozenset(SERVER_EVENT_TYPES)


def _redact_tree(value, secrets, depth: int = 0):
    """``value`` with every string passed through :func:`~qvtools.errors.redact` (keys included)."""
    if depth > 20:
        return "…"
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {redact(k, *secrets): _redact_tree(v, secrets, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, secrets, depth + 1) for v in value]
    return value


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


class TurnTracker:
    """Sans-I/O state machine that builds a :class:`Turn` from received frames and client marks.

    ``feed(text, t)`` parses a frame received at ``t`` and returns the :class:`Event` (or None for a frame
    that is not valid JSON, recorded as an ``invalid`` event). Once a ``response.created`` has been
    seen, events of other responses (late events of an earlier, cancelled reply) are recorded but do
    not change this turn. ``done`` becomes True at ``response.done``, at the pending ``*.done`` events
    after a cancel (a real server may omit ``response.done`` then, §4.5 c), at an ``error`` that arrives
    instead of a response (§7.3; ``ended_by_error``), or on :meth:`fail`.

    Every field is read defensively: a malformed event (an ``error`` whose ``error`` is a string, a
    ``response.done`` whose ``response`` is not an object, ...) ends the turn ``failed`` or is recorded,
    never raises. Server text that reaches ``Turn.error`` is redacted (``secrets``: the API key).

    The user transcript follows §7.14: input-transcription deltas carry confirmed ``text`` and tentative
    ``stash`` (on qwen3.5 ``text`` stays empty); ``…transcription.completed`` may be empty and may come
    after ``response.created``. The turn keeps the completed transcript when it is non-empty, else the
    last preview (text + stash). Transcription events of ``ignore_items`` (earlier turns' user items)
    are recorded but ignored.
    """

    def __init__(self, model: str, *, voice: str | None = None, session_id: str | None = None,
                 sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE, marks: dict | None = None, secrets=(), ignore_items=()):
        self.turn = Turn(model=model, voice=voice, session_id=session_id, sample_rate=int(sample_rate),
                         marks=dict(marks or {}))
        self._pcm: list[bytes] = []
        self._transcript: list[str] = []
        self._text: list[str] = []
        self._asr_text = ""
        self._asr_stash = ""
        self._asr_completed: str | None = None
        self._secrets = tuple(secrets)
        self._ignore_items = ignore_items
        self.done = False
        self.cancel_requested = False
        #: False while the driver drains events left over from before this turn: an ``error`` among
        #: them is recorded but does not end the turn.
        self.armed = True
        self.error_event: Event | None = None
        self.error_code: str | None = None
        self.error_param: str | None = None
        self.ended_by_error = False
        self._early_error: str | None = None

    # client side --------------------------------------------------------------------------------
    def mark(self, name: str, t: float, *, overwrite: bool = True) -> None:
        """Record a client-side mark (e.g. ``first_audio_sent``, ``speech_end_sent``)."""
        if overwrite or name not in self.turn.marks:
            self.turn.marks[name] = float(t)

    @property
    def response_active(self) -> bool:
        return self.turn.response_id is not None and not self.done

    def _redact(self, text) -> str:
        return redact(text, *self._secrets)

    # server side --------------------------------------------------------------------------------
    def feed(self, text: str | bytes, t: float) -> Event | None:
        try:
            ev = parse(text)
        except Exception as exc:  # a non-JSON frame must not break the turn
            self.turn.events.append(TimedEvent(t, "invalid", {"error": self._redact(exc)}))
            return None
        self.feed_event(ev, t)
        return ev

    @staticmethod
    def _rid(ev: Event) -> str | None:
        rid = ev.get("response_id")
        if rid is None:
            rid = _obj(ev.get("response")).get("id")
        return rid if isinstance(rid, str) else None

    def _user_item(self, item_id) -> bool:
        """True when a user-item event belongs to this turn (adopting the first id seen)."""
        if not isinstance(item_id, str) or item_id in self._ignore_items:
            return False
        if self.turn.user_item_id is None:
            self.turn.user_item_id = item_id
        return item_id == self.turn.user_item_id

    def feed_event(self, ev: Event, t: float) -> None:
        typ = ev.type if isinstance(ev.get("type"), str) else ""
        data = dict(ev)
        pcm = None
        if typ == "response.audio.delta" and isinstance(ev.get("delta"), str):
            try:
                pcm = base64.b64decode(ev["delta"])
            except (ValueError, TypeError):
                pcm = b""
            data["delta"] = len(pcm)
        elif typ in _REDACTED_TYPES or typ not in _KNOWN_TYPES:
            # server text that is saved with the turn: errors (and anything unexpected) are redacted
            data = _redact_tree(data, self._secrets)
        self.turn.events.append(TimedEvent(t, typ, data))
        rid = self._rid(ev)
        if self.done:
            if (typ == "response.done" and self.turn.status == "cancelled" and self.turn.response_id
                    and rid == self.turn.response_id and "response_done" not in self.turn.marks):
                # the response.done that may follow the *.done events of a cancel (§4.5 c, §5.9)
                self.turn.marks["response_done"] = t
                self.turn.usage = _obj(ev.get("response")).get("usage")
            return
        if rid is not None and typ != "response.created" and rid != self.turn.response_id:
            return  # another response's event (e.g. the tail of a cancelled earlier reply)
        if typ == "response.created":
            if self.turn.response_id is not None:
                return
            if rid is None:
                self.fail("the service sent a malformed response.created (no response id)")
                return
            self.turn.response_id = rid
        mark = _EVENT_MARKS.get(typ)
        if mark and mark not in self.turn.marks:
            self.turn.marks[mark] = t
        if typ == "session.created" or typ == "session.updated":
            self.turn.session_id = self.turn.session_id or _str(_obj(ev.get("session")).get("id"))
        elif typ in ("input_audio_buffer.speech_started", "input_audio_buffer.committed"):
            self._user_item(ev.get("item_id"))
        elif typ == "conversation.item.created":
            item = _obj(ev.get("item"))
            if item.get("role") == "user":
                self._user_item(item.get("id"))
        elif typ == "conversation.item.input_audio_transcription.delta":
            if self._user_item(ev.get("item_id")):
                text, stash = _str(ev.get("text")) or "", _str(ev.get("stash")) or ""
                # ``text`` is confirmed text: cumulative when it extends what we have, else a new piece
                self._asr_text = text if text.startswith(self._asr_text) else self._asr_text + text
                self._asr_stash = stash
        elif typ == "conversation.item.input_audio_transcription.completed":
            if self._user_item(ev.get("item_id")):
                self._asr_completed = _str(ev.get("transcript"))
                self._set_user_transcript()
        elif typ == "response.audio.delta" and pcm is not None:
            usable = pcm[: len(pcm) - (len(pcm) % 2)]
            self._pcm.append(usable)
            self.turn.audio_chunks.append((t, len(usable) // 2))
        elif typ == "response.audio_transcript.delta":
            self._transcript.append(_str(ev.get("delta")) or "")
        elif typ == "response.text.delta":
            self._text.append(_str(ev.get("delta")) or "")
        elif typ == "response.audio_transcript.done":
            self.turn.assistant_transcript = _str(ev.get("transcript"))
        elif typ == "response.text.done":
            self.turn.assistant_transcript = _str(ev.get("text"))
        elif typ == "response.output_item.done" and self.cancel_requested:
            # §4.5 c [obs]: after a cancel the real server may stop at output_item.done (no response.done)
            self._finish("cancelled")
        elif typ == "response.done":
            resp = ev.get("response")
            if not isinstance(resp, dict):
                self.fail(f"the service sent a malformed response.done ('response' is {type(resp).__name__}, "
                          "not an object)")
                return
            usage = resp.get("usage")
            self.turn.usage = usage if isinstance(usage, dict) else None
            status = resp.get("status", "completed")
            if self.cancel_requested and status in ("incomplete", "cancelled"):
                status = "cancelled"
            if status not in TURN_STATUSES:
                self.turn.error = self._join(f"response.done with status {self._redact(status)!r}")
                status = "failed"
            elif status == "failed":
                err = _obj(_obj(resp.get("status_details")).get("error"))
                detail = err.get("message") or err.get("code") or "no details"
                self.turn.error = self._join(f"response.done with status 'failed': {self._redact(detail)}")
            self._finish(status)
        elif typ == "error":
            self._on_error(ev)

    def _on_error(self, ev: Event) -> None:
        err = ev.get("error")
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            self.error_param = _str(err.get("param")) or None
        else:  # a string (or anything else) where the object should be
            code, message = None, err
            self.error_param = None
        self.error_event = ev
        self.error_code = self._redact(code) if code is not None else None
        text = f"{self.error_code}: {self._redact(message) if message is not None else ''}"
        if not self.armed:
            self._early_error = text
            return
        if endings.is_semantic_vad_rejection(message) and not self.response_active:
            # §7.23: non-fatal; the turn ends at once with its own status, the session stays usable
            self.error_code = endings.REJECTED_CODE
            self.turn.error = self._join(f"{endings.REJECTED_CODE}: {self._redact(message)}")
            self._finish("rejected")
            return
        if endings.transient_error_code(code):
            self.turn.transient = True  # §7.24 a: a model-serving fault, a new session usually succeeds
        self.turn.error = self._join(text)
        if not self.response_active and not self.cancel_requested:
            # an error in place of a response ends the turn at once, in both modes (§7.3)
            self.ended_by_error = True
            self._finish("failed")

    def _join(self, text: str) -> str:
        return text if self.turn.error is None else f"{self.turn.error}; {text}"

    def no_reply_message(self, wait: float, hint: str = "") -> str:
        """Why a turn ran out of time: no reply at all (``hint`` says what to check), or a reply that
        started streaming (its first audio, counted from the end of the input) but did not end."""
        marks = self.turn.marks
        first = marks.get("first_audio_delta", marks.get("response_created"))
        if first is None:
            return f"no reply within {wait:.1f} s{hint}"
        end = marks.get("speech_end_sent", marks.get("commit_sent"))
        since = f" {first - end:.1f} s after the end of the input" if end is not None and end <= first else ""
        what = "its first audio" if "first_audio_delta" in marks else "response.created"
        return f"the reply started ({what} came{since}) but did not end within {wait:.1f} s"

    def fail(self, error: str, status: str = "failed") -> Turn:
        """End the turn early (dropped connection, timeout, error event); keeps what was received."""
        if not self.done:
            if self._early_error is not None and self.turn.error is None:
                self.turn.error = self._early_error
            self.turn.error = self._join(self._redact(error))
            self._finish(status)
        return self.turn

    def _finish(self, status: str) -> None:
        self.turn.status = status
        self.done = True
        self._assemble()

    def _set_user_transcript(self) -> None:
        preview = (self._asr_text + self._asr_stash).strip()
        if self._asr_completed:
            self.turn.user_transcript = self._asr_completed
        elif preview:
            self.turn.user_transcript = preview  # §7.14: completed may be empty; the stash holds the sentence
        elif self._asr_completed is not None:
            self.turn.user_transcript = self._asr_completed

    def _assemble(self) -> None:
        raw = b"".join(self._pcm)
        self.turn.audio = from_pcm16(raw) if raw else np.zeros(0, dtype=np.float32)
        if self.turn.assistant_transcript is None and (self._transcript or self._text):
            self.turn.assistant_transcript = "".join(self._transcript or self._text)
        self._set_user_transcript()

    def result(self) -> Turn:
        """The turn so far (assembles audio even when not done)."""
        if not self.done:
            self._assemble()
        return self.turn
