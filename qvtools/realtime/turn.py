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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import from_pcm16, wav_bytes
from .events import Event, parse

__all__ = ["TimedEvent", "Turn", "TurnTracker", "MARKS", "TURN_STATUSES"]

log = logging.getLogger(__name__)

#: Marks a turn can carry (perf_counter seconds).
MARKS = ("connect", "session_ready", "first_audio_sent", "speech_end_sent", "last_audio_sent", "commit_sent",
         "response_create_sent", "cancel_sent", "speech_started", "speech_stopped", "committed",
         "transcript_done", "response_created", "first_text_delta", "first_audio_delta", "audio_done",
         "response_done")
TURN_STATUSES = ("completed", "incomplete", "failed", "cancelled")

# server event type -> mark set on its first occurrence
_EVENT_MARKS = {
    "input_audio_buffer.speech_started": "speech_started",
    "input_audio_buffer.speech_stopped": "speech_stopped",
    "input_audio_buffer.committed": "committed",
    "conversation.item.input_audio_transcription.completed": "transcript_done",
    "response.created": "response_created",
    "response.audio_transcript.delta": "first_text_delta",
    "response.text.delta": "first_text_delta",
    "response.audio.delta": "first_audio_delta",
    "response.audio.done": "audio_done",
    "response.done": "response_done",
}


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


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 1000.0 * (b - a)


@dataclass
class Turn:
    """Everything measured about one user utterance and the reply to it."""

    model: str
    voice: str | None = None
    session_id: str | None = None
    response_id: str | None = None
    status: str = "failed"  # "completed" | "incomplete" | "failed" | "cancelled"
    error: str | None = None
    events: list[TimedEvent] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    sample_rate: int = 24000
    audio_chunks: list[tuple[float, int]] = field(default_factory=list)
    user_transcript: str | None = None
    assistant_transcript: str | None = None
    usage: dict | None = None

    @property
    def speech_end(self) -> float | None:
        """End of user speech: ``speech_end_sent``, else ``last_audio_sent`` (architecture contract)."""
        return self.marks.get("speech_end_sent", self.marks.get("last_audio_sent"))

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate) if self.sample_rate else 0.0

    def latency(self) -> dict:
        """Latencies in ms (None when a mark is missing).

        - ``ttfa_ms`` / ``ttft_ms``: end of user speech -> first ``response.audio.delta`` / first
          transcript (or text) delta;
        - ``ttfa_created_ms`` / ``ttft_created_ms``: the same from ``response.created``
          (what the SDK's own metrics measure, SDK notes §1.3);
        - ``e2e_ms``: end of user speech -> ``response.done``;
        - ``vad_ms``: end of user speech -> ``speech_stopped``; ``created_ms``: -> ``response.created``.
        """
        m, end = self.marks, self.speech_end
        return {
            "ttfa_ms": _ms(end, m.get("first_audio_delta")),
            "ttft_ms": _ms(end, m.get("first_text_delta")),
            "ttfa_created_ms": _ms(m.get("response_created"), m.get("first_audio_delta")),
            "ttft_created_ms": _ms(m.get("response_created"), m.get("first_text_delta")),
            "e2e_ms": _ms(end, m.get("response_done")),
            "vad_ms": _ms(end, m.get("speech_stopped")),
            "created_ms": _ms(end, m.get("response_created")),
        }

    # -------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-able metadata (everything but the audio samples)."""
        return {
            "model": self.model, "voice": self.voice, "session_id": self.session_id,
            "response_id": self.response_id, "status": self.status, "error": self.error,
            "marks": dict(self.marks), "sample_rate": self.sample_rate,
            "audio_chunks": [list(c) for c in self.audio_chunks],
            "user_transcript": self.user_transcript, "assistant_transcript": self.assistant_transcript,
            "usage": self.usage, "latency": self.latency(),
            "events": [e.to_dict() for e in self.events],
        }

    def save(self, path_stem) -> tuple[Path, Path]:
        """Write ``<stem>.wav`` (the reply, PCM16) and ``<stem>.json``; returns both paths."""
        stem = Path(path_stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        wav, js = stem.with_name(stem.name + ".wav"), stem.with_name(stem.name + ".json")
        wav.write_bytes(wav_bytes(self.audio, self.sample_rate))
        js.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return wav, js

    @classmethod
    def load(cls, path_stem) -> "Turn":
        """Read a turn written by :meth:`save`."""
        import soundfile as sf

        stem = Path(path_stem)
        meta = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
        x, sr = sf.read(str(stem.with_name(stem.name + ".wav")), dtype="float32", always_2d=False)
        return cls(model=meta["model"], voice=meta.get("voice"), session_id=meta.get("session_id"),
                   response_id=meta.get("response_id"), status=meta["status"], error=meta.get("error"),
                   events=[TimedEvent(e["t"], e["type"], e["data"]) for e in meta.get("events", [])],
                   marks={k: float(v) for k, v in meta.get("marks", {}).items()},
                   audio=np.asarray(x, dtype=np.float32), sample_rate=int(sr),
                   audio_chunks=[(float(t), int(n)) for t, n in meta.get("audio_chunks", [])],
                   user_transcript=meta.get("user_transcript"),
                   assistant_transcript=meta.get("assistant_transcript"), usage=meta.get("usage"))


class TurnTracker:
    """Sans-I/O state machine that builds a :class:`Turn` from received frames and client marks.

    ``feed(text, t)`` parses a frame received at ``t`` and returns the :class:`Event` (or None for a frame
    that is not valid JSON, recorded as an ``invalid`` event). Once a ``response.created`` has been
    seen, events of other responses (late events of an earlier, cancelled reply) are recorded but do
    not change this turn. ``done`` becomes True at ``response.done``, at the pending ``*.done`` events
    after a cancel (a real server may omit ``response.done`` then, §4.5 c), or on :meth:`fail`.
    """

    def __init__(self, model: str, *, voice: str | None = None, session_id: str | None = None,
                 sample_rate: int = 24000, marks: dict | None = None):
        self.turn = Turn(model=model, voice=voice, session_id=session_id, sample_rate=int(sample_rate),
                         marks=dict(marks or {}))
        self._pcm: list[bytes] = []
        self._transcript: list[str] = []
        self._text: list[str] = []
        self.done = False
        self.cancel_requested = False
        self.error_event: Event | None = None

    # client side --------------------------------------------------------------------------------
    def mark(self, name: str, t: float, *, overwrite: bool = True) -> None:
        """Record a client-side mark (e.g. ``first_audio_sent``, ``speech_end_sent``)."""
        if overwrite or name not in self.turn.marks:
            self.turn.marks[name] = float(t)

    @property
    def response_active(self) -> bool:
        return self.turn.response_id is not None and not self.done

    # server side --------------------------------------------------------------------------------
    def feed(self, text: str | bytes, t: float) -> Event | None:
        try:
            ev = parse(text)
        except Exception as exc:  # a non-JSON frame must not break the turn
            self.turn.events.append(TimedEvent(t, "invalid", {"error": str(exc)}))
            return None
        self.feed_event(ev, t)
        return ev

    def feed_event(self, ev: Event, t: float) -> None:
        typ = ev.type
        data = dict(ev)
        pcm = None
        if typ == "response.audio.delta" and isinstance(ev.get("delta"), str):
            try:
                pcm = base64.b64decode(ev["delta"])
            except (ValueError, TypeError):
                pcm = b""
            data["delta"] = len(pcm)
        self.turn.events.append(TimedEvent(t, typ, data))
        if self.done:
            if (typ == "response.done" and self.turn.status == "cancelled" and self.turn.response_id
                    and ev.response_id == self.turn.response_id and "response_done" not in self.turn.marks):
                # the response.done that may follow the *.done events of a cancel (§4.5 c, §5.9)
                self.turn.marks["response_done"] = t
                self.turn.usage = (ev.get("response") or {}).get("usage")
            return
        rid = ev.response_id
        if rid is not None and typ != "response.created" and rid != self.turn.response_id:
            return  # another response's event (e.g. the tail of a cancelled earlier reply)
        if typ == "response.created":
            if self.turn.response_id is not None:
                return
            self.turn.response_id = rid
        mark = _EVENT_MARKS.get(typ)
        if mark and mark not in self.turn.marks:
            self.turn.marks[mark] = t
        if typ == "session.created" or typ == "session.updated":
            self.turn.session_id = self.turn.session_id or (ev.get("session") or {}).get("id")
        elif typ == "conversation.item.input_audio_transcription.completed":
            self.turn.user_transcript = ev.get("transcript")
        elif typ == "response.audio.delta" and pcm is not None:
            usable = pcm[: len(pcm) - (len(pcm) % 2)]
            self._pcm.append(usable)
            self.turn.audio_chunks.append((t, len(usable) // 2))
        elif typ == "response.audio_transcript.delta":
            self._transcript.append(str(ev.get("delta", "")))
        elif typ == "response.text.delta":
            self._text.append(str(ev.get("delta", "")))
        elif typ == "response.audio_transcript.done":
            self.turn.assistant_transcript = ev.get("transcript")
        elif typ == "response.text.done":
            self.turn.assistant_transcript = ev.get("text")
        elif typ == "response.output_item.done" and self.cancel_requested:
            # §4.5 c [obs]: after a cancel the real server may stop at output_item.done (no response.done)
            self._finish("cancelled")
        elif typ == "response.done":
            resp = ev.get("response") or {}
            self.turn.usage = resp.get("usage")
            status = resp.get("status", "completed")
            if self.cancel_requested and status in ("incomplete", "cancelled"):
                status = "cancelled"
            self._finish(status if status in TURN_STATUSES else "failed")
        elif typ == "error":
            err = ev.get("error") or {}
            self.error_event = ev
            self.turn.error = f"{err.get('code')}: {err.get('message')}"

    def fail(self, error: str, status: str = "failed") -> Turn:
        """End the turn early (dropped connection, timeout, error event); keeps what was received."""
        if not self.done:
            self.turn.error = error if self.turn.error is None else f"{self.turn.error}; {error}"
            self._finish(status)
        return self.turn

    def _finish(self, status: str) -> None:
        self.turn.status = status
        self.done = True
        self._assemble()

    def _assemble(self) -> None:
        raw = b"".join(self._pcm)
        self.turn.audio = from_pcm16(raw) if raw else np.zeros(0, dtype=np.float32)
        if self.turn.assistant_transcript is None and (self._transcript or self._text):
            self.turn.assistant_transcript = "".join(self._transcript or self._text)

    def result(self) -> Turn:
        """The turn so far (assembles audio even when not done)."""
        if not self.done:
            self._assemble()
        return self.turn
