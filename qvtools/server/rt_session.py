"""A realtime ``session.update`` handled as plain code (no socket, no awaits).

:func:`apply_update` turns the current session and a client's update into a :class:`SessionUpdate`: the
error to send (then nothing else happens, §4.5 d) or the new session, its ``session.updated`` echo (§7.2),
the fault-plan request (the ``qvtools.faults`` extension) and what the change asks of the connection (a
fresh VAD, a new latency sampler, the next openers). :class:`SessionState` holds the session's
configuration and its voice's standing; :func:`voice_error_after` decides whether the voice is refused
later, at the next response trigger (§7.3, §7.11); :func:`response_options` checks a ``response.create``'s
per-response overrides against the session rules. The connection (:mod:`qvtools.server.realtime`) only
prefetches the cloned voice's stored record off the event loop (:func:`named_voice` says which) and
sends. Tests drive these with dicts (``tests/test_rt_session.py``). § numbers refer to
``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..realtime import events as ev
from . import session_rules as sr
from . import turn_language
from .faults import client_faults
from .rt_items import ClientEventError

__all__ = ["SessionState", "SessionUpdate", "apply_update", "named_voice", "voice_error_after", "OPENER_KEYS",
           "ResponseOptions", "OptionsError", "response_options"]

#: session keys an opener's audio depends on (voice, rate, seed, instructions, whether it is spoken): a
#: change prepares the next turns' openers again (issue 11)
OPENER_KEYS = ("voice", "output_audio_format", "seed", "instructions", "modalities")


@dataclass(frozen=True)
class SessionUpdate:
    """The outcome of one ``session.update``.

    ``error``: the ``error`` event's ``{"message", "code", "param"}`` when the update is refused (then
    the other fields are unset). Otherwise ``session`` (the new session), ``echo`` (the
    ``session.updated`` body), ``faults_asked``/``faults_plan`` (the ``qvtools.faults`` extension, set on
    the session's injector when there is one), and what changed: ``input_changed`` (turn detection or
    input format: a fresh VAD), ``seed_changed`` (a new latency sampler), ``openers_changed``
    (:data:`OPENER_KEYS`)."""

    error: dict | None = None
    session: dict | None = None
    echo: dict | None = None
    faults_asked: bool = False
    faults_plan: object = None
    input_changed: bool = False
    seed_changed: bool = False
    openers_changed: bool = False


class SessionState:
    """One realtime session's configuration (``session``, the merged dict, §4.2) and its voice's standing:
    the cloned voice's stored record (without audio), the §7.3 voice error answered at the next response
    trigger, whether the session is dead after it (later ``session.update`` events get no answer), and
    whether audio input / output have started (which fixes the input format / the voice, §5.6)."""

    def __init__(self, session: dict):
        self.session = session
        self.voice_record = None  # the cloned voice's metadata (a VoiceRecord without audio), else None
        self.voice_error: str | None = None  # §7.3: an unusable voice, answered at the next response trigger
        self.dead = False  # §7.3: after that error, session.update gets no answer
        self.audio_started = False
        self.audio_output_started = False

    def accept_voice(self, record, *, cfg, model: str, meta=None) -> None:
        """After an accepted update (the new ``session`` set): the session voice's stored ``record`` (None
        for a built-in voice) and the voice error it leaves (:func:`voice_error_after`, §7.3, §7.11:
        accepted here, refused at the next response trigger)."""
        self.voice_record = record
        self.voice_error = voice_error_after(cfg, self.session["voice"], model, record=record, meta=meta,
                                             current=self.voice_error)

    def refuse_voice(self, cfg) -> None:
        """A response trigger met the voice error (§7.3): later updates go unanswered when
        ``ServiceConfig.realtime_dead_after_voice_error``."""
        self.dead = bool(cfg.realtime_dead_after_voice_error)


def named_voice(update) -> str | None:
    """The voice an update names (its stored record is fetched off the loop before :func:`apply_update`)."""
    voice = update.get("voice") if isinstance(update, dict) else None
    return voice if isinstance(voice, str) else None


def _lookup(meta):
    """``voice -> target_model`` from the prefetched record ``meta`` (scoped to the caller's key, §5.6)."""
    return lambda name: meta.target_model if meta is not None and meta.voice == name else None


def apply_update(session: dict, update, *, model: str, cfg, meta=None, voice_locked: bool = False,
                 audio_started: bool = False, faults: bool = False) -> SessionUpdate:
    """Merge and validate ``update`` into ``session`` (:func:`~qvtools.server.session_rules.merge_session`).

    ``meta``: the stored record (without audio) of the voice the update names, else None; ``voice_locked``:
    audio output has started (``cannot_update_voice``, §5.6); ``audio_started``: the input format is fixed;
    ``faults``: the session has a fault injector (the extension is echoed only then, and only when asked).
    With ``ServiceConfig.realtime_voice_error_timing = "update"`` (the old guess) an unusable voice is
    refused here; otherwise it is accepted (§7.3) and :func:`voice_error_after` keeps it for later."""
    asked, plan, err = client_faults(cfg, update)  # the qvtools.faults extension
    # input_audio_transcription.language: a qvtools extension (qvtools/server/turn_language.py)
    language, lang_err = turn_language.update_language(update)
    if err is None and lang_err is not None:
        err = dict(lang_err, code="invalid_value")
    if err is None:
        new, err = sr.merge_session(session, update, model=model, voice_lookup=_lookup(meta),
                                    voice_locked=voice_locked, audio_started=audio_started,
                                    check_voice=cfg.realtime_voice_error_timing == "update")
    if err is not None:  # §4.5 d: a bad update gives error and no session.updated
        return SessionUpdate(error={"message": err["message"], "code": err["code"], "param": err.get("param")})
    if not turn_language.is_unset(language):  # kept in the session's qvtools object, not echoed (§7.2)
        new["qvtools"] = dict(new.get("qvtools") or {}, **{turn_language.SESSION_KEY: language})
    echo = sr.session_echo(new, "updated", cfg.realtime_session_keys)
    if asked and faults:
        new["qvtools"] = dict(new.get("qvtools") or {}, faults=None if plan is None else plan.to_dict())
        echo["qvtools"] = {"faults": new["qvtools"]["faults"]}  # the extension is echoed only when asked
    old = session
    return SessionUpdate(session=new, echo=echo, faults_asked=asked and faults, faults_plan=plan,
                         input_changed=new.get("turn_detection") != old.get("turn_detection")
                         or ev.input_format(new) != ev.input_format(old),
                         seed_changed=new.get("seed") != old.get("seed"),
                         openers_changed=any(new.get(k) != old.get(k) for k in OPENER_KEYS))


def voice_error_after(cfg, voice: str, model: str, *, record=None, meta=None, current: str | None = None) -> str | None:
    """The voice error a response trigger will answer after an accepted update (§7.3, §7.11): with
    ``realtime_voice_error_timing = "generation"`` (observed) the new ``voice``'s problem
    (:func:`~qvtools.server.session_rules.voice_problem`), from the session voice's ``record`` when it has
    one, else from ``meta``; with "update" the update was checked already and ``current`` stays."""
    if cfg.realtime_voice_error_timing == "update":
        return current
    lookup = _lookup(meta) if record is None else (lambda name: record.target_model)
    return sr.voice_problem(voice, model, lookup)


class OptionsError(ClientEventError):
    """An unusable ``response.create`` body: ``message`` and ``param`` of the ``error`` event."""


@dataclass(frozen=True)
class ResponseOptions:
    """A ``response.create``'s overrides: ``modalities`` (None: the session's) and ``instructions``
    (None: the session's)."""

    modalities: list | None = None
    instructions: str | None = None


def response_options(session: dict, body, *, model: str) -> ResponseOptions:
    """The overrides of a ``response.create`` ``response`` object (absent: none); :class:`OptionsError`
    for a body that is not an object or modalities the session rules refuse (``["audio"]``, §4.2). The
    accepted modalities are the canonical ``["text"]`` or ``["text", "audio"]``; a non-string
    ``instructions`` is ignored."""
    body = body or {}
    if not isinstance(body, dict):
        raise OptionsError("'response' must be an object.", "response")
    modalities = body.get("modalities")
    if modalities is not None:
        _, err = sr.merge_session(session, {"modalities": modalities}, model=model)
        if err is not None:
            raise OptionsError(err["message"], "response.modalities")
        modalities = ["text"] if modalities == ["text"] else ["text", "audio"]
    instructions = body.get("instructions")
    return ResponseOptions(modalities, instructions if isinstance(instructions, str) else None)
