"""A realtime session's turn bookkeeping and turn decisions, as plain code (no socket, no awaits).

:class:`TurnState` holds what the connection (:mod:`qvtools.server.realtime`) used to keep in loose
attributes: the conversation's item chain (``previous_item_id``), the turn counter, the language heard on
the last turn (issue 10), the history size for usage, the user turn a response will answer, and a manual
turn's early user item and partial-transcription mark (§7.4). The functions decide, from the session and
that state, what a commit, a speech start or a response trigger leads to (:func:`response_gate`,
:func:`commit_responds`, :func:`barge_in`), whether a turn's reply may be made ahead in the VAD silence
window (:func:`replies_ahead`) and which transcription events a heard turn gives
(:func:`transcription_events`, :func:`transcription_failure`, :func:`transcription_delta`). Tests drive
them with dicts (``tests/test_rt_turns.py``). § numbers refer to ``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import enum

from ..realtime import events as ev

__all__ = ["TurnState", "EARLY_MIN_MS", "Gate", "response_gate", "commit_responds", "barge_in", "transcription_delta",
           "transcription_events", "transcription_failure", "replies_ahead", "partial_step_bytes"]


class Gate(enum.Enum):
    """What a response trigger (commit with ``create_response``, ``response.create``) leads to."""

    START = "start"  # a response starts now
    JUDGE = "judge"  # semantic VAD (our imitation): the transcript is judged first (§7.23)
    VOICE_ERROR = "voice_error"  # §7.3: a lone error for the unusable voice, no response


def response_gate(turn_detection: dict | None, *, pending_user, voice_error: str | None,
                  judged: bool = False) -> Gate:
    """The decision for a response trigger: with ``semantic_vad`` a user turn not yet ``judged`` is judged
    on its transcript first (qvtools/server/semantic_vad.py) unless the voice is unusable; an unusable
    voice (``voice_error``, §7.3 observed) is answered by a lone ``error``; else the response starts."""
    td = turn_detection or {}
    if td.get("type") == "semantic_vad" and pending_user is not None and not judged and voice_error is None:
        return Gate.JUDGE
    if voice_error is not None:
        return Gate.VOICE_ERROR
    return Gate.START


def commit_responds(turn_detection: dict | None, *, auto: bool) -> bool:
    """Whether a commit starts a response: only a server-VAD commit (``auto``) with ``create_response``
    (default true, §4.2); a client's ``input_audio_buffer.commit`` waits for ``response.create``."""
    return auto and bool((turn_detection or {}).get("create_response", True))


def barge_in(turn_detection: dict | None) -> bool:
    """Whether ``speech_started`` cancels the active response (§4.2 ``interrupt_response``, default true)."""
    return bool((turn_detection or {}).get("interrupt_response", True))


def transcription_delta(item_id: str, text: str, language: str | None, shape: str) -> ev.Event:
    """The ``conversation.item.input_audio_transcription.delta`` for ``text`` heard so far: ``shape``
    "stash" (§7.14 observed: ``text`` empty, the sentence so far in ``stash``) or "text" (the earlier
    guess; ``ServiceConfig.realtime_transcription_delta``, checked there); the delta carries the
    recognised language (§4.4, ``"language":"zh"``; "en" when unknown)."""
    lang = language or "en"
    if shape == "text":
        return ev.transcription_delta(item_id, text, "", language=lang)
    return ev.transcription_delta(item_id, "", text, language=lang)


def transcription_events(item_id: str, text: str, language: str | None, *, session: dict, shape: str) -> list:
    """The events of a transcribed user turn (§4.5 b): the delta (:func:`transcription_delta`) and
    ``…transcription.completed``, when the session transcribes (``input_audio_transcription`` not null);
    none otherwise."""
    if session.get("input_audio_transcription") is None:
        return []
    return [transcription_delta(item_id, text, language, shape), ev.transcription_completed(item_id, text)]


def transcription_failure(item_id: str, message: str, *, session: dict) -> list:
    """§4.5 d: a transcription failure is ``…transcription.failed`` (not ``error``), when the session
    transcribes; none otherwise."""
    if session.get("input_audio_transcription") is None:
        return []
    return [ev.transcription_failed(item_id, "transcription_failed", message)]


def replies_ahead(session: dict, voice_error: str | None) -> bool:
    """Whether a server-VAD turn's reply may be begun in the silence window (issue 11), besides its
    transcript: only when the VAD makes the response (``create_response``), the reply is spoken and the
    voice is usable (§7.3: else the trigger answers with the voice error)."""
    td = session.get("turn_detection") or {}
    return bool(td.get("create_response", True)) and "audio" in session["modalities"] and voice_error is None


def partial_step_bytes(session: dict, step_s: float, rate: int) -> int:
    """Bytes of newly appended PCM16 audio between a manual turn's partial transcriptions (§7.4 emulated:
    the local ASR is whole-utterance, so the buffer so far is transcribed again every ``step_s`` seconds,
    ``ServiceConfig.realtime_partial_transcription_s``); 0: no partials (``step_s`` ≤ 0 or the session does
    not transcribe)."""
    step_s = float(step_s)
    if step_s <= 0 or session.get("input_audio_transcription") is None:
        return 0
    return 2 * int(step_s * rate)


#: The least speech (ms) an utterance shorter than ``ServiceConfig.realtime_early_language_s`` needs for its
#: language to be detected early, at the start of the silence after it (:meth:`TurnState.early_due`).
EARLY_MIN_MS = 1000


class TurnState:
    """One session's conversation and turn bookkeeping (no socket)."""

    def __init__(self):
        self.last_item_id: str | None = None  # the conversation's last item (the next one's previous_item_id)
        self.turn_index = 0  # responses started so far (the responder's and the latency sampler's turn)
        self.last_language: str | None = None  # the language ASR found in the previous user turn (issue 10)
        self.early_language: str | None = None  # detected while the first utterance was spoken (issue 22)
        self.early_item: str | None = None  # the utterance (server-VAD item) that early detection ran on
        self.early_task = None  # that detection while it runs (an asyncio.Task, rt_early.settled awaits it)
        self.history_tokens = 0  # text tokens of the conversation so far (usage, session_rules.compute_usage)
        self.pending_user = None  # the UserTurn the next response answers (rt_response.UserTurn)
        self.manual_item: str | None = None  # §7.4: the user item of a manual turn, created at its first append
        self.manual_prev: str | None = None  # that item's previous_item_id
        self.partial_mark = 0  # buffer length (bytes) at the last partial transcription of the manual turn

    def link(self, item_id: str) -> str | None:
        """``item_id`` becomes the conversation's last item; returns its ``previous_item_id``."""
        prev, self.last_item_id = self.last_item_id, item_id
        return prev

    def next_turn(self) -> int:
        """The index of the response starting now (then counted)."""
        index = self.turn_index
        self.turn_index += 1
        return index

    def heard(self, language: str | None) -> None:
        """ASR found ``language`` in a user turn (kept as the next turn's hint when not None, issue 10)."""
        if language:
            self.last_language = language

    def early_due(self, speech, seconds: float, known) -> tuple[str, int, int] | None:
        """Server VAD, ``speech``: :meth:`InputBuffer.speech_so_far` now. ``(item_id, start_ms, end_ms)`` of the
        audio of the current utterance whose language should now be detected (issue 22 item 4): its first
        ``seconds``, once it has lasted that long, or, for a shorter utterance, all of its speech (at least
        :data:`EARLY_MIN_MS`) once the silence after it began -- when no earlier turn found a language, the
        utterance was not detected yet (one detection per utterance) and ``known()`` says no language is known
        before ASR; else None. Then counted as started."""
        if seconds <= 0 or self.last_language or speech is None:
            return None
        item, start_ms, now_ms, silence_ms = speech
        if item == self.early_item:
            return None
        limit = start_ms + seconds * 1000.0
        if now_ms >= limit and (silence_ms is None or silence_ms >= limit):
            end = limit
        elif silence_ms is not None and silence_ms - start_ms >= EARLY_MIN_MS:
            end = min(silence_ms, limit)
        else:
            return None
        if known():
            return None
        self.early_item = item
        return item, start_ms, int(end)

    def detected_early(self, item_id: str, language: str | None) -> None:
        """The early detection of utterance ``item_id`` found ``language`` (kept until ASR finds one)."""
        if language and item_id == self.early_item:
            self.early_language = language

    def count_history(self, tokens: int) -> None:
        self.history_tokens += int(tokens)

    def take_pending(self):
        """The user turn the response starting now answers (then none is pending)."""
        user, self.pending_user = self.pending_user, None
        return user

    # -- manual turns (§7.4)
    def begin_manual(self) -> tuple[str, str | None] | None:
        """At an append in manual mode: ``(item_id, previous_item_id)`` when this append opens a turn
        (its user item is created now, ``in_progress``), else None (the turn is open)."""
        if self.manual_item is not None:
            return None
        self.manual_item = ev.new_id("item")
        self.partial_mark = 0
        self.manual_prev = self.link(self.manual_item)
        return self.manual_item, self.manual_prev

    def partial_due(self, buffered: int, step_bytes: int, *, busy: bool = False) -> bool:
        """Whether a partial transcription starts now: partials are on (``step_bytes`` > 0,
        :func:`partial_step_bytes`), none is running (``busy``: this session's or, one at a time, any
        session's; the next append after it catches up) and ``buffered`` bytes are at least ``step_bytes``
        past the last one. When it starts, the mark moves to ``buffered``."""
        if busy or step_bytes <= 0 or buffered - self.partial_mark < step_bytes:
            return False
        self.partial_mark = buffered
        return True

    def is_open(self, item_id: str) -> bool:
        """Whether ``item_id`` is the open manual turn's item (a partial after the commit is not sent)."""
        return self.manual_item is not None and self.manual_item == item_id

    def drop_manual(self) -> None:
        """The buffer was cleared: the open manual turn (if any) is forgotten."""
        self.manual_item = None

    def commit(self, item_id: str) -> tuple[bool, str | None]:
        """A commit of ``item_id``: ``(early, previous_item_id)``; ``early`` when the item was created at
        the manual turn's first append (§7.4, then only ``committed`` is sent), else the item is linked now."""
        early = item_id == self.manual_item
        self.manual_item = None
        if early:
            return True, self.manual_prev
        return False, self.link(item_id)
