"""Which language a realtime turn is in, before ASR and after it (issue 10 item 1).

The local service decides a user turn's language in this order (:func:`expected_language`):

1. the session's language: ``session.update`` ->
   ``input_audio_transcription.language``. **A qvtools extension, flagged as such**: §4.2 of the protocol
   reference documents only ``input_audio_transcription.model`` for Qwen-Omni-Realtime; the field name is
   the one the sibling Qwen-ASR-Realtime and Qwen live-translate APIs document for the same object
   (``session.input_audio_transcription.language``, Model Studio "Client events for Qwen-ASR-Realtime").
   Whether the real omni service honours it is unknown, so the client never relies on it; the local
   service reads it from the update (:func:`update_language`), keeps it under the session's ``qvtools``
   extension object (:data:`SESSION_KEY`) and does not echo it (§7.2 echoes only the model);
2. else the session voice's enrollment ``language`` (the stored voice record's ``language``, §2.1
   ``input.language``; read defensively, a record without one counts as none);
3. else the language detected on the previous turn of the connection (people rarely switch mid-call);
3b. else, on a session's first turn, the language Whisper base detected on the first
   ``ServiceConfig.realtime_early_language_s`` seconds of the utterance *while the user was still speaking*
   (issue 22 item 4: the detection no longer waits, and queues, behind the end of the turn);
4. else ``None``: wait for ASR, which detects it per utterance among
   :attr:`~qvtools.server.config.ServiceConfig.realtime_language_candidates` (a single candidate is taken
   as the language: ``("en",)`` gives the English-only service of before, without the detection pass).

Step 3 is a guess made *before* the transcript (for work started ahead of ASR: an opener, a speculative
ASR pass); :func:`asr_language` is what the final ASR pass is told: steps 1 and 2 (a firm language), and
step 3 too when the service detects once per session (``ServiceConfig.realtime_language_detection``,
default "first_turn": detection doubles a turn's CPU); with "every_turn" a previous turn's detection never
stops a language switch from being detected.

The voice's enrollment language is *firm* (ASR is told it, no detection): the voice is usually the user's
own, cloned to talk with. A user who speaks another language to a cloned voice gets a transcript forced
into the enrollment language (Whisper then tends to translate) and should name the language with the
extension above.

Pure functions, no I/O: the realtime connection passes its session dict, its voice record and the last
detected language.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..lang import base_language

__all__ = ["SESSION_KEY", "update_language", "is_unset", "session_language", "voice_language", "expected_language",
           "asr_language", "language_candidates"]

#: Where the session dict keeps the extension's value: ``session["qvtools"]["language"]``.
SESSION_KEY = "language"

_UNSET = object()


def update_language(update) -> tuple[object, dict | None]:
    """``(language, error)`` of a ``session.update`` body for the extension above.

    ``language`` is the two-letter code (``"zh"`` for ``"zh-CN"`` or a Chinese dialect), ``None`` when the
    update clears it (``"language": null`` or ``""``), or :data:`unset <_UNSET>` (compare with
    :func:`is_unset`) when the update does not mention it. ``error`` is an ``{"message", "param"}`` dict for
    a value outside the documented list (§2.1, :data:`qvtools.lang.LANGUAGE_CODES`), else None.
    """
    tr = update.get("input_audio_transcription") if isinstance(update, dict) else None
    if not isinstance(tr, dict) or "language" not in tr:
        return _UNSET, None
    try:
        return base_language(tr["language"]), None
    except ConfigError as exc:
        return _UNSET, {"message": str(exc), "param": "session.input_audio_transcription.language"}


def is_unset(value) -> bool:
    """True for the "not mentioned" value of :func:`update_language`."""
    return value is _UNSET


def session_language(session) -> str | None:
    """The session's language (the extension above) from the session dict, else None."""
    ext = session.get("qvtools") if isinstance(session, dict) else None
    value = ext.get(SESSION_KEY) if isinstance(ext, dict) else None
    return value if isinstance(value, str) and value else None


def voice_language(record) -> str | None:
    """The enrollment ``language`` of a stored voice record (``None`` for a built-in voice, a record
    without the field, or a value this version does not know)."""
    value = getattr(record, "language", None) if record is not None else None
    if not isinstance(value, str):
        return None
    try:
        return base_language(value)
    except ConfigError:
        return None


def asr_language(session, record, candidates=None, last_detected: str | None = None) -> str | None:
    """The language the final ASR pass is told (session language, else the voice's, else the only
    candidate when ``candidates`` names just one, else ``last_detected`` -- pass the previous turn's
    detected language to detect once per session, ``ServiceConfig.realtime_language_detection =
    "first_turn"``, or None to detect every turn); None: detect among the candidates."""
    firm = session_language(session) or voice_language(record)
    if firm is None and candidates is not None and len(candidates) == 1:
        return candidates[0]
    if firm is None and last_detected:
        try:
            return base_language(last_detected)
        except ConfigError:
            return None
    return firm


def expected_language(session, record, last_detected: str | None = None, candidates=None,
                      early: str | None = None) -> str | None:
    """The turn's language as known *before* ASR: session language -> the voice's enrollment language
    (-> the only candidate) -> the previous turn's detected language -> the language detected early in this
    utterance (``early``, step 3b) -> None (wait for ASR)."""
    firm = asr_language(session, record, candidates)
    if firm:
        return firm
    for guess in (last_detected, early):
        if guess:
            try:
                return base_language(guess)
            except ConfigError:
                continue
    return None


def language_candidates(candidates) -> tuple[str, ...] | None:
    """Validated, de-duplicated two-letter codes of a candidates setting; None/empty = all documented
    languages. A bad code is a ConfigError naming it."""
    if candidates is None:
        return None
    if isinstance(candidates, str):
        candidates = [c for c in candidates.replace(",", " ").split() if c]
    out = []
    for c in candidates:
        code = base_language(c)
        if code and code not in out:
            out.append(code)
    return tuple(out) or None
