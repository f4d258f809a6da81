"""The local service's semantic turn detection: **our own imitation**, not the service's model.

§7.23: ``turn_detection.type: "semantic_vad"`` exists on qwen3.5+ (Qwen's own client uses it, §7.22); when
it does not accept an input the service sends a non-fatal ``error`` (message
:data:`qvtools.realtime.endings.SEMANTIC_VAD_REJECTED`, ``event_id`` = the client's ``response.create`` id)
and keeps the socket open. How the real one decides is not documented. The local service imitates it with
a plain rule on the user's transcript, applied where server VAD would start the response:

- **empty**: the recogniser heard no words (noise, a cough, silence the energy VAD took for speech);
- **incomplete**: the utterance ends on a word that cannot end a sentence (a conjunction, preposition or
  article such as "and", "to", "the"; Chinese 和/但是/因为/所以/的) or on a comma/ellipsis.

``ServiceConfig.semantic_vad_reject`` chooses ``"empty_or_incomplete"`` (default), ``"empty"`` or
``"never"``. Everything else behaves as server VAD (same energy VAD, same silence window).
"""

from __future__ import annotations

import re

from ..realtime import endings
from ..realtime import events as ev

__all__ = ["REJECT_MODES", "INCOMPLETE_ENDINGS", "rejects", "rejection"]

#: ``ServiceConfig.semantic_vad_reject`` values.
REJECT_MODES = ("empty_or_incomplete", "empty", "never")
#: Last words after which an utterance is judged unfinished (our imitation's word list).
INCOMPLETE_ENDINGS = frozenset({
    "and", "or", "but", "because", "so", "to", "of", "the", "a", "an", "with", "for", "if", "that", "in",
    "on", "at", "from", "about", "like", "than", "um", "uh",
    "和", "但是", "因为", "所以", "的", "还有", "然后", "如果",
})
_WORD = re.compile(r"[\w']+", re.UNICODE)


def rejects(transcript: str | None, mode: str = "empty_or_incomplete") -> str | None:
    """Why the imitation rejects this turn (``"empty"`` / ``"incomplete"``), or None to accept it."""
    if mode == "never":
        return None
    text = (transcript or "").strip()
    words = _WORD.findall(text.lower())
    if not words:
        return "empty"
    if mode == "empty":
        return None
    if text.endswith((",", "，", "...", "…", "、")):
        return "incomplete"
    last = words[-1]
    if last in INCOMPLETE_ENDINGS or any(text.endswith(w) for w in INCOMPLETE_ENDINGS if not w.isascii()):
        return "incomplete"
    return None


def rejection(event_id: str | None) -> ev.Event:
    """The §7.23 error event: ``type`` invalid_request_error, the recorded message, the client's
    ``response.create`` id as ``event_id`` (omitted when the response was the server's own, VAD-made)."""
    info = {"type": "invalid_request_error", "message": endings.SEMANTIC_VAD_REJECTED}
    if event_id is not None:
        info["event_id"] = event_id
    return ev.Event(event_id=ev.new_id("event"), type="error", error=info)
