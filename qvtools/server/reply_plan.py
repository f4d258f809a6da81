"""The local realtime service's reply planner, socket-free (issue 19 item 1).

What a response says and in which language, whether it starts with an opener, and whether a reply begun
speculatively in the server-VAD silence window may be used: decided here, in plain objects that tests
drive with a fake speech pipeline (``tests/test_reply_plan.py``). The connection
(:mod:`qvtools.server.realtime`) only moves frames, keeps timers and awaits the work these objects name --
the split of ``websockets.protocol.Protocol`` (state and decisions) and its connection (bytes and timers).

- :class:`ReplyParams`: what a reply depends on besides the user's words, with the reply language decided
  *once* (:func:`language_before_asr`, or :meth:`ReplyPlanner.hear` after ASR). The same value is the
  speculation's validity key, the opener cache's language and the synthesis language, so the three cannot
  disagree (they did when the language was overridden inline after the parameters were made).
- :class:`ReplyPlanner`: one reply: the opener (known from seed and turn before the transcript, issue 11),
  the reply text and the body after the opener once the words are heard, the transcript tokens, and the
  synthesis of the body (:meth:`ReplyPlanner.synthesize`).
- :class:`Speculations`: a session's speculative transcription (issue 11): when to start one (after
  :data:`SPECULATE_AFTER_MS` of silence), when it is stale (other audio) and when a commit may use it
  (exactly the same audio). :class:`SpeculativeReply` is what such a job made.

``speech`` is anything with the :class:`~qvtools.server.speech.SpeechPipeline` methods used here
(``reply_language``, ``reply_text``, ``opener_text``, ``stream_synthesize``, ``stream_synthesize_reusing``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..lang import script_language
from ..catalog import is_cloned_voice
from .responder import MODES, opener_head, split_opener
from .rt_response import tokens

__all__ = ["ReplyParams", "ReplyPlanner", "SpeculativeReply", "Speculation", "Speculations", "SPECULATE_AFTER_MS",
           "language_before_asr", "language_after_asr", "independent_of", "session_seed", "voice_key"]

#: Server VAD: once the speech has been followed by this much silence, the utterance so far is
#: transcribed speculatively (issue 11), so with the default 800 ms silence_duration_ms (§4.2) the
#: transcript is ready about when speech_stopped fires; dropped when speech resumes. Shorter pauses
#: (between words) start nothing, which keeps the wasted ASR runs of mid-utterance pauses few.
SPECULATE_AFTER_MS = 200

_WORD = re.compile(r"[^\W_]+")


def _pairs(text: str) -> set:
    """Two consecutive letters of ``text``, at least one of them not ASCII (punctuation and spaces excluded)."""
    return {text[i:i + 2] for i in range(len(text) - 1)
            if _WORD.fullmatch(text[i:i + 2]) and not text[i:i + 2].isascii()}


def independent_of(user_text: str | None):
    """A predicate for reply sentences: True for a sentence that shares nothing with the user's words -- no
    word of three or more letters and, in a script written without spaces (Chinese, Japanese, Korean), no two
    consecutive characters that also stand together in the user's text (e.g. "Let me think it through with
    you.", "能再多说一点吗？" after "明天会下雨吗") -- so its audio may be kept in the bounded sentence cache
    (:meth:`SpeechPipeline.stream_synthesize_reusing`) for later turns. Conservative: a shared common word only
    costs a synthesis. The cache is keyed by the sentence's text, so this decides what is worth keeping, never
    which audio a sentence gets."""
    text = user_text or ""
    heard = {w.lower() for w in _WORD.findall(text) if len(w) > 2}
    pairs = _pairs(text)

    def check(sentence: str) -> bool:
        if any(len(w) > 2 and w.lower() in heard for w in _WORD.findall(sentence)):
            return False
        return sentence.isascii() or not (_pairs(sentence) & pairs)

    return check


def session_seed(session) -> int:
    """The responder's seed of a session: its ``seed`` when set and non-negative, else 0."""
    seed = session.get("seed", -1)
    return int(seed) if seed is not None and seed >= 0 else 0


def voice_key(scope: str, voice: str, record=None) -> tuple:
    """What identifies the session voice's *audio* in the opener and sentence cache: a built-in name, or a
    cloned voice's (key scope, name, enrollment audio hash, from its stored ``record``) -- re-enrolled
    voices never get stale audio."""
    if record is not None and is_cloned_voice(voice):
        return ("clone", scope, voice, record.sha256)
    return ("builtin", voice)


def language_before_asr(speech, expected: str | None, *, audio: bool, typed_text: str | None = None) -> str | None:
    """The reply language when it is known before the user's words are transcribed, else None (decided
    by :func:`language_after_asr` once they are). A typed (text) turn in a CJK script is in that language
    (issue 10); else ``expected``, the turn's language as known before ASR
    (:func:`qvtools.server.turn_language.expected_language`). Mapped to a language the responder and, for
    a spoken reply (``audio``), the TTS speak (:meth:`SpeechPipeline.reply_language`)."""
    typed = script_language(typed_text) if typed_text else None
    lang = typed if typed is not None else expected
    if lang is None:
        return None
    return speech.reply_language(lang, audio=audio)[0]


def language_after_asr(speech, heard: str | None, user_text: str, *, audio: bool) -> tuple[str, str | None]:
    """``(reply language, note)`` once the words are known (issue 10): the language ASR found
    (``heard``), else the script's; ``note`` says why the reply falls back to English (to be logged)."""
    return speech.reply_language(heard or script_language(user_text), audio=audio)


@dataclass(frozen=True)
class ReplyParams:
    """What a reply depends on besides the user's words; a speculative reply is valid for equal params.

    ``language`` is the reply language, decided once (None: known only after ASR, then
    :meth:`ReplyPlanner.hear` sets it); ``voice_key`` identifies the voice's audio (opener and sentence
    cache, ``_Connection._voice_key``); ``rate`` is the output sample rate; ``audio`` whether the reply is
    spoken."""

    turn_index: int
    seed: int
    mode: str
    instructions: str | None
    language: str | None
    voice_key: tuple
    rate: int
    audio: bool = True

    def __post_init__(self):
        if not isinstance(self.turn_index, int) or self.turn_index < 0:
            raise ValueError(f"turn_index must be a non-negative int, got {self.turn_index!r}")
        if not isinstance(self.rate, int) or self.rate <= 0:
            raise ValueError(f"rate must be a positive int (Hz), got {self.rate!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


class ReplyPlanner:
    """One reply, decided without a socket: opener, language, text, body and tokens.

    Built with the reply's :class:`ReplyParams`; :attr:`opener` is known at once when the language is
    (spoken replies only). :meth:`hear` takes the user's words (once): it decides the language if it was
    not known before ASR, makes the reply text and splits it into opener and body. :attr:`tokens` is the
    list of transcript tokens, updated in place by :meth:`hear` (a streamer holding it sees the body's)."""

    def __init__(self, speech, params: ReplyParams):
        self.speech = speech
        self.params = params
        self.opener: str | None = None
        if params.audio and params.language is not None:
            self.opener = speech.opener_text(mode=params.mode, seed=params.seed, turn_index=params.turn_index,
                                             instructions=params.instructions, language=params.language)
        self.heard = False
        self.user_text = ""
        self.turn_language: str | None = None  # the language the turn was heard in (when decided after ASR)
        self.text: str | None = None
        self.body: str | None = None  # the reply after its opener (all of it without one)
        self.opener_mismatch = False  # the reply did not start with its opener (then all of it is the body)
        # reply = opener + joiner + body (responder.opener_head): the opener's tokens are the reply's first ones
        self.tokens: list[str] = tokens(opener_head(self.opener, params.language)) if self.opener is not None else []

    def hear(self, user_text: str, heard_language: str | None = None) -> str | None:
        """Plan the reply to ``user_text`` (``heard_language``: what ASR found). Returns a note to log when
        the reply language falls back to English, else None. Once per reply."""
        if self.heard:
            raise RuntimeError("ReplyPlanner.hear: this reply already heard the user's words")
        self.heard, self.user_text = True, user_text
        p, note = self.params, None
        if p.language is None:  # issue 10: not known before ASR -- the language ASR found, else the script's
            self.turn_language = heard_language or script_language(user_text)
            language, note = language_after_asr(self.speech, heard_language, user_text, audio=p.audio)
            self.params = p = replace(p, language=language)
        # deterministic and sub-millisecond (qvtools/server/responder.py)
        self.text = self.speech.reply_text(user_text, mode=p.mode, seed=p.seed, turn_index=p.turn_index,
                                           instructions=p.instructions, language=p.language)
        if self.opener is None:
            self.body = self.text
            self.tokens[:] = tokens(self.text)
            return note
        parts = split_opener(self.text, self.opener)
        if parts is None:  # cannot happen with Responder (reply = opener + joiner + body); the caller says so
            self.opener_mismatch = True
            self.body = self.text
            self.tokens[:] = tokens(opener_head(self.opener, p.language)) + tokens(self.text)
        else:
            self.body = parts[1]
            self.tokens[:] = tokens(parts[0]) + tokens(self.body)
        return note

    def synthesize(self, profile):
        """The body's ``(sentence, audio)`` pieces in the decided language, at ``params.rate``; sentences that
        do not depend on the user's words come from the sentence cache (:func:`independent_of`; every language
        since issue 22: a Kokoro sentence costs 0.35 CPU s per audio s, a Piper one 0.06). Call after
        :meth:`hear`."""
        if not self.heard:
            raise RuntimeError("ReplyPlanner.synthesize: hear() the user's words first")
        p = self.params
        if p.language is None:
            return self.speech.stream_synthesize(self.body, profile, sample_rate=p.rate, language=p.language)
        return self.speech.stream_synthesize_reusing(self.body, profile, p.rate, voice_key=p.voice_key,
                                                     language=p.language, reusable=independent_of(self.user_text))

    def first_piece(self, profile):
        """``(generator, first piece or None)`` of :meth:`synthesize` (runs in the executor)."""
        gen = self.synthesize(profile)
        return gen, next(gen, None)

    def speculative_body(self, spec: "SpeculativeReply | None"):
        """The body task of ``spec`` when it was made for this very reply -- the same params, reply text
        and opener -- else None (the caller synthesizes). Call after :meth:`hear`."""
        if spec is None:
            return None
        return spec.body_for(self.params, self.text, self.opener)


class SpeculativeReply:
    """The reply to a turn begun before its ``speech_stopped`` (issue 11): the transcript; with the reply
    parameters known (``params``: a :class:`ReplyParams`) also the reply text, its opener and ``body``, a
    task giving ``(generator, first piece)`` of the part after the opener. A response uses the body only
    when its own parameters, reply text and opener are the same."""

    __slots__ = ("transcript", "params", "text", "opener", "body", "language")

    def __init__(self, transcript: str, params=None, text=None, opener=None, body=None, language=None):
        self.transcript, self.params, self.text, self.opener, self.body = transcript, params, text, opener, body
        self.language = language  # what ASR found (issue 10)

    def body_for(self, params, text: str, opener: str | None):
        """The body task when this was made for the same params, reply text and opener, else None (the
        caller synthesizes). Usable once."""
        if self.body is None or self.params != params or self.text != text or self.opener != opener:
            return None
        body, self.body = self.body, None
        return body


class Speculation:
    """One speculative transcription: the audio it is for (``key``: item id, start and end ms; ``pcm``) and
    the task making it (set by the caller)."""

    __slots__ = ("key", "pcm", "task", "dropped")

    def __init__(self, key, pcm: bytes):
        self.key, self.pcm, self.task, self.dropped = key, pcm, None, False


class Speculations:
    """A session's speculative transcriptions (issue 11), one at a time, counted in ``stats`` (started /
    used / dropped; shared over the sessions of one app). No I/O: the caller starts the job."""

    def __init__(self, stats: dict, after_ms: int = SPECULATE_AFTER_MS):
        self.stats = stats
        self.after_ms = int(after_ms)
        self.current: Speculation | None = None
        self.last: Speculation | None = None  # the last one begun (its job may still run after a drop)

    def due(self, pending) -> tuple | None:
        """``pending``: :meth:`InputBuffer.pending_stop` now. The ``(item_id, start_ms, end_ms)`` to
        transcribe speculatively now, else None. A speculation for other audio (speech resumed) is
        dropped here; none starts while a dropped job still runs (the next append tries again)."""
        key = tuple(pending[:3]) if pending is not None else None
        if self.current is not None and self.current.key != key:
            self.drop()
        if pending is None or self.current is not None or pending[3] < self.after_ms:
            return None
        last = self.last
        if last is not None and last.task is not None and not last.task.done():
            return None
        return key

    def begin(self, key, pcm: bytes) -> Speculation:
        """Record a speculation for ``key``'s audio ``pcm``; the caller sets its ``task``."""
        spec = Speculation(key, pcm)
        self.current = self.last = spec
        self.stats["started"] += 1
        return spec

    def drop(self) -> None:
        """Speech resumed or the buffer was dropped: the current speculation is never used."""
        spec, self.current = self.current, None
        if spec is not None:
            spec.dropped = True
            self.stats["dropped"] += 1

    def take(self, key, pcm: bytes):
        """At a VAD commit of ``key``'s audio ``pcm``: the speculation's task when it was made for exactly
        this audio, else None (and a speculation for other audio is dropped)."""
        spec = self.current
        if spec is None:
            return None
        if spec.key == tuple(key) and spec.pcm == pcm:
            self.current = None
            self.stats["used"] += 1
            return spec.task
        self.drop()
        return None
