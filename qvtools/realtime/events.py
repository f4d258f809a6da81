"""The Qwen-Omni-Realtime event model, shared by the client and the local server (no sockets).

Everything here is a plain function over dicts/strings (sans-I/O, like ``websockets``' core):

- ids: :func:`new_id` (``prefix_`` + 21 characters of the URL-safe alphabet, protocol reference §4.1, §7);
- client event builders (§4.3): :func:`session_update`, :func:`session_config`, :func:`audio_append`, ...;
- server event builders (§4.4): :func:`session_created`, :func:`speech_started`, ..., :func:`error`;
- :func:`parse` turns a text frame into an :class:`Event` (a ``dict`` with ``.type``);
- session configuration: :func:`default_session` (per-family defaults from :mod:`qvtools.catalog`, §4.2,
  §7.1), :func:`merge_session`, the validation the local server applies to ``session.update`` (§5.5, §5.6),
  :func:`voice_problem` (§7.3, §7.11) and :func:`session_echo` (the observed echo key sets, §7.1, §7.2);
- :func:`compute_usage`: ``response.done.usage`` at the catalog's token rates (§4.6);
- :func:`invalid_text_path`: where a parsed event carries a lone surrogate (issue 13).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import math
import re
import secrets
import string
from typing import Any, Callable

from .. import catalog as _catalog
from ..catalog import SAMPLE_RATES, base_model, is_cloned_voice, is_known_model
from ..errors import RealtimeError

__all__ = [
    "ID_ALPHABET", "new_id", "Event", "parse", "dumps",
    "MODELS", "base_model", "model_family", "is_known_model", "is_cloned_voice",
    "DEFAULT_TRANSCRIPTION_MODEL", "AUDIO_FORMAT_TYPES", "LEGACY_AUDIO_FORMATS",
    "SAMPLE_RATES", "default_session", "merge_session", "input_format", "output_format",
    "compute_usage", "estimate_text_tokens", "voice_problem", "voice_error_message", "voice_error",
    "SESSION_CREATED_KEYS", "SESSION_UPDATED_KEYS", "session_echo", "invalid_text_path",
    # client events
    "session_config", "session_update", "audio_append", "audio_commit", "audio_clear", "image_append",
    "response_create", "response_cancel", "item_create", "text_item_create", "session_finish",
    # server events
    "session_created", "session_updated", "speech_started", "speech_stopped", "committed", "cleared",
    "item_created", "user_item", "assistant_item", "transcription_delta", "transcription_completed",
    "transcription_failed", "response_object", "response_created", "output_item_added", "output_item_done",
    "content_part_added", "content_part_done", "audio_transcript_delta", "audio_transcript_done",
    "audio_delta", "audio_done", "text_delta", "text_done", "response_done", "error", "session_finished",
    "error_info", "CLIENT_EVENT_TYPES", "SERVER_EVENT_TYPES",
]

log = logging.getLogger(__name__)

#: The URL-safe alphabet of server ids (§4.1 as corrected by §7: ``event_04cIDHwiM-gHSc0rSktQG``).
ID_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_ID_LEN = 21


def new_id(prefix: str = "event") -> str:
    """``<prefix>_`` + 21 characters of :data:`ID_ALPHABET` (64 symbols, so ``b % 64`` is unbiased)."""
    raw = secrets.token_bytes(_ID_LEN)
    return prefix + "_" + "".join(ID_ALPHABET[b % 64] for b in raw)


CLIENT_EVENT_TYPES = (
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "input_image_buffer.append", "response.create", "response.cancel", "conversation.item.create",
    "session.finish",
)
SERVER_EVENT_TYPES = (
    "session.created", "session.updated", "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "conversation.item.created", "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed", "response.created", "response.output_item.added",
    "response.output_item.done", "response.content_part.added", "response.content_part.done",
    "response.audio_transcript.delta", "response.audio_transcript.done", "response.audio.delta",
    "response.audio.done", "response.text.delta", "response.text.done", "response.done", "error",
    "session.finished",
)


class Event(dict):
    """A parsed event: the JSON object itself, plus ``.type``, ``.event_id`` and ``.response_id``."""

    @property
    def type(self) -> str:
        return self.get("type", "")

    @property
    def event_id(self) -> str | None:
        return self.get("event_id")

    @property
    def response_id(self) -> str | None:
        """The response an event belongs to (``response_id`` or ``response.id``), else None."""
        rid = self.get("response_id")
        if rid is None and isinstance(self.get("response"), dict):
            rid = self["response"].get("id")
        return rid


def dumps(event: dict) -> str:
    """Compact JSON text of an event (one text frame, §4.1)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def parse(text: str | bytes) -> Event:
    """Parse one text frame into an :class:`Event`.

    Raises :class:`RealtimeError` (``code`` ``invalid_json`` / ``invalid_event``) for text that is not a
    JSON object with a string ``type`` -- the server answers those with an ``error`` event.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise RealtimeError("invalid_json", "The event is not UTF-8 text.",
                                type="invalid_request_error") from None
    try:
        obj = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise RealtimeError("invalid_json", f"The event is not valid JSON: {exc}.",
                            type="invalid_request_error") from None
    if not isinstance(obj, dict):
        raise RealtimeError("invalid_event", "An event must be a JSON object.", type="invalid_request_error")
    if not isinstance(obj.get("type"), str) or not obj["type"]:
        raise RealtimeError("invalid_event", "The event has no 'type'.", type="invalid_request_error",
                            param="type", event_id=obj.get("event_id") if isinstance(obj.get("event_id"), str) else None)
    return Event(obj)


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def invalid_text_path(event: Any, raw: str | None = None) -> str | None:
    """The path (``session.voice``, ``item.content[0].text``, ``event_id``) of the first string in a parsed
    event that holds a lone surrogate, else None.

    ``"\\ud800"`` is valid JSON and valid UTF-8 on the wire, but the string it decodes to cannot be
    encoded back to UTF-8 (issue 13). Given the frame's ``raw`` text, frames without a ``\\uD8xx``-``\\uDFxx``
    escape are skipped at once (a decoded frame holds no surrogates otherwise)."""
    if raw is not None and not _SURROGATE_ESCAPE.search(raw):
        return None

    def walk(obj, path):
        if isinstance(obj, str):
            return path or "event" if _SURROGATE.search(obj) else None
        if isinstance(obj, dict):
            for k, v in obj.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and _SURROGATE.search(k):
                    return path or "event"
                found = walk(v, sub)
                if found:
                    return found
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                found = walk(v, f"{path}[{i}]")
                if found:
                    return found
        return None

    return walk(event, "")


def _event(type_: str, event_id: str | None = None, **fields) -> Event:
    ev = Event(event_id=event_id or new_id("event"), type=type_)
    ev.update(fields)
    return ev


# --------------------------------------------------------------------------------------------- models

#: The catalog's realtime model names (§4.1, §7.8); any ``…-omni-…-realtime`` name is accepted on top
#: (:func:`qvtools.catalog.is_realtime_model`), as are ``-latest`` and dated snapshots (``base_model``).
MODELS = tuple(f.realtime_model for f in _catalog.FAMILIES.values())


def model_family(model: str) -> "_catalog.ModelFamily":
    """The :class:`qvtools.catalog.ModelFamily` of a model (one table for client and service)."""
    return _catalog.family(model)


#: §4.2: "The model cannot be changed; old examples show gummy-realtime-v1" (the qwen3.5 default).
DEFAULT_TRANSCRIPTION_MODEL = _catalog.FAMILIES["qwen3.5-omni-flash"].transcription_model
#: ``audio.*.format.type`` values (§4.2, qwen3.5 only).
AUDIO_FORMAT_TYPES = ("pcm", "wav")
#: Legacy ``input_audio_format`` / ``output_audio_format`` strings (§4.2, §5.5). They name the sample
#: encoding (16-bit PCM), not the rate; the rates stay 16 kHz in / 24 kHz out. The service echoes the
#: family's own strings (§7.1: ``pcm`` on qwen3.5, ``pcm16``/``pcm24`` on qwen3 and qwen3.8).
LEGACY_AUDIO_FORMATS = ("pcm", "pcm16", "pcm24")
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "presence_penalty", "seed")


def _default_turn_detection() -> dict:
    # §4.2: server_vad, threshold 0.5, silence 800 ms; prefix 300, create/interrupt echoed true (§4.4 example).
    return {"type": "server_vad", "threshold": _catalog.DEFAULT_VAD_THRESHOLD,
            "prefix_padding_ms": _catalog.DEFAULT_PREFIX_PADDING_MS,
            "silence_duration_ms": _catalog.DEFAULT_SILENCE_DURATION_MS,
            "create_response": True, "interrupt_response": True}


def default_session(model: str, session_id: str | None = None) -> dict:
    """The full effective configuration a new session starts with (§4.2 defaults; §7.1 per-family formats,
    voice and transcription model, all from :func:`qvtools.catalog.family`).

    This is what the service honours internally (``turn_detection``, the ``audio`` object of families that
    configure it, sampling); what goes on the wire is :func:`session_echo` of it."""
    fam = _catalog.family(model)
    cfg: dict[str, Any] = {
        "id": session_id or new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "voice": fam.default_voice,
        "instructions": "",
        "input_audio_format": fam.input_audio_format,
        "output_audio_format": fam.output_audio_format,
    }
    if fam.configurable_audio:
        cfg["audio"] = {"input": {"format": {"type": "pcm", "sample_rate": fam.input_sample_rate}},
                        "output": {"format": {"type": "pcm", "sample_rate": fam.output_sample_rate}}}
    cfg["input_audio_transcription"] = {"model": fam.transcription_model}
    cfg["turn_detection"] = _default_turn_detection()
    cfg["tools"] = []
    cfg["tool_choice"] = "auto"
    cfg.update(fam.sampling)
    cfg["max_tokens"] = fam.max_tokens
    cfg["seed"] = -1
    cfg["max_response_output_token"] = "inf"
    if fam.smooth_output:
        cfg["smooth_output"] = True
    if fam.generation == "qwen3.5":
        cfg["enable_search"] = False
    return cfg


#: ``session.created`` keys as observed (§7.1; no ``audio`` object, no sampling parameters).
SESSION_CREATED_KEYS = ("object", "model", "modalities", "voice", "input_audio_format", "output_audio_format",
                        "input_audio_transcription", "turn_detection", "id")
#: ``session.updated`` keys as observed (§7.2, order of the §7.21 recording). ``turn_detection`` is echoed
#: (the full object) only while VAD is on: §7.21 saw it after an update that did not mention it, §7.2 saw
#: no key after ``turn_detection: null`` -- key absent means manual mode.
SESSION_UPDATED_KEYS = ("id", "object", "model", "modalities", "instructions", "voice", "input_audio_format",
                        "output_audio_format", "input_audio_transcription", "turn_detection", "tools",
                        "max_tokens")


def session_echo(session: dict, kind: str = "updated", shape: str = "observed") -> dict:
    """The ``session`` object the service puts on the wire for ``session.created``/``session.updated``.

    ``shape="observed"`` keeps the observed key sets (:data:`SESSION_CREATED_KEYS`,
    :data:`SESSION_UPDATED_KEYS`); qwen3-omni-flash echoes ``tools: null`` (§7.15). ``shape="full"`` is the
    whole effective configuration (our earlier guess, §4.4 "the full config"). The ``qvtools`` metadata
    field (the service says its latencies are SIMULATED) is kept in ``session.created`` of both shapes."""
    if shape == "full":
        return copy.deepcopy(session)
    if kind not in ("created", "updated"):
        raise ValueError(f"kind must be 'created' or 'updated', got {kind!r}")
    keys = SESSION_CREATED_KEYS if kind == "created" else SESSION_UPDATED_KEYS
    out = {k: copy.deepcopy(session.get(k)) for k in keys}
    if kind == "updated" and out.get("turn_detection") is None:
        del out["turn_detection"]  # manual mode: no key (§7.2)
    if "tools" in out and _catalog.family(session.get("model", "")).generation == "qwen3":
        out["tools"] = None  # §7.15: qwen3-omni-flash accepts tools but echoes null
    if kind == "created" and "qvtools" in session:
        out["qvtools"] = copy.deepcopy(session["qvtools"])
    return out


def input_format(session: dict) -> tuple[str, int]:
    """``(type, sample_rate)`` of the input audio of a session config (defaults pcm/16000, §4.1)."""
    fmt = ((session.get("audio") or {}).get("input") or {}).get("format") or {}
    return fmt.get("type", "pcm"), int(fmt.get("sample_rate", _catalog.DEFAULT_INPUT_SAMPLE_RATE))


def output_format(session: dict) -> tuple[str, int]:
    """``(type, sample_rate)`` of the output audio (defaults pcm/24000, §4.1)."""
    fmt = ((session.get("audio") or {}).get("output") or {}).get("format") or {}
    return fmt.get("type", "pcm"), int(fmt.get("sample_rate", _catalog.DEFAULT_OUTPUT_SAMPLE_RATE))


def error_info(message: str, param: str | None = None, code: str = "invalid_value",
               type: str = "invalid_request_error") -> dict:
    """The ``error`` object of an error event (§4.4 example)."""
    info = {"type": type, "code": code, "message": message}
    if param is not None:
        info["param"] = param
    return info


def _num(value, name, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False):
    """Return an error message when ``value`` is not a number in the range, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        return f"Invalid value for '{name}': expected {'an integer' if integer else 'a number'}, got {value!r}."
    if not math.isfinite(value):
        return f"Invalid value for '{name}': {value!r}."
    bad = ((lo is not None and (value <= lo if lo_open else value < lo))
           or (hi is not None and (value >= hi if hi_open else value > hi)))
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        return f"Invalid value for '{name}': {value!r} is outside {lb}{lo}, {'inf' if hi is None else hi}{rb}."
    return None


def voice_error_message(voice: str) -> str:
    """The text of the lone ``error`` an unusable voice gets at generation time (§7.3, as observed)."""
    return f"<400> InternalError.Algo.InvalidParameter: Voice '{voice}' is not supported."


def voice_problem(voice: str, model: str, voice_lookup: Callable[[str], str | None] | None = None) -> str | None:
    """Why ``voice`` cannot speak on ``model`` (None when it can), from the catalog (§7.11) and SEED §2.1.

    - a cloned voice (``qwen-omni-vc-*``) needs a family that takes clones (``cloned_voices`` not False),
      must exist (``voice_lookup(voice) -> target_model`` or None) and its target model must equal the
      session model (SEED: "Must equal the later realtime ?model=, otherwise synthesis fails");
    - a built-in voice must be one the family offers (§7.11: Cherry/Chelsie fail on qwen3.5, Tina on qwen3).
    """
    fam = _catalog.family(model)
    if is_cloned_voice(voice):
        if fam.cloned_voices is False:
            return f"Voice '{voice}' is not supported: cloned voices do not work on '{model}'."
        target = voice_lookup(voice) if voice_lookup is not None else base_model(model)
        if target is None:
            return f"Voice '{voice}' not found."
        if not _catalog.clone_usable_with(target, model):  # §7.19: qwen3.5-omni-plus serves ...-realtime
            return (f"Voice '{voice}' was enrolled for target_model '{target}' and cannot be used with "
                    f"model '{model}'; enroll the voice for this model.")
        return None
    if voice not in fam.voices:
        return f"Voice '{voice}' is not supported."
    return None


def merge_session(current: dict, update: Any, *, model: str | None = None,
                  voice_lookup: Callable[[str], str | None] | None = None,
                  voice_locked: bool = False, audio_started: bool = False,
                  check_voice: bool = True) -> tuple[dict, dict | None]:
    """Merge a ``session.update`` payload into the current config and validate it (§4.2, §5.5, §5.6).

    Returns ``(new_config, None)`` or ``(current, error)`` where ``error`` is the ``error`` object to send
    (``param`` names the offending path). Rules implemented:

    - ``modalities`` is ``["text"]`` or ``["text","audio"]`` in any order (the SDK sends ``["audio","text"]``);
      ``["audio"]`` gives the documented message;
    - ``voice``: ``null`` means the family default, ``""`` is an error; changing the voice after audio
      output gives ``cannot_update_voice`` (``voice_locked``); with ``check_voice`` (the old guess) an
      unusable voice (:func:`voice_problem`) is refused here -- the real service accepts it and fails at
      generation time (§7.3), which the local service does with ``check_voice=False``;
    - ``audio.input/output.format``: type pcm/wav, rates 8000/16000/24000/48000, on families with
      ``configurable_audio`` (qwen3.5); the input format is fixed once audio has started (``audio_started``);
    - legacy ``input_audio_format``/``output_audio_format``: pcm, pcm16, pcm24 (the family's own strings
      are kept, §7.1);
    - ``input_audio_transcription``: ``null`` disables it, a ``null`` model means the family default; a model
      the family accepts is kept and echoed (§7.2);
    - ``turn_detection``: ``null`` (manual), ``server_vad``, ``semantic_vad`` (families with
      ``semantic_vad``) with the documented ranges; sampling parameters with their ranges (families with
      ``sampling_fixed`` -- turbo -- cannot modify them).

    Unknown keys are ignored (the SDK copies arbitrary kwargs into ``session``).
    """
    model = model or current.get("model", "")
    fam = model_family(model)
    if not isinstance(update, dict):
        return current, error_info("'session' must be a JSON object.", "session")
    new = copy.deepcopy(current)

    def fail(message, param, code="invalid_value"):
        return current, error_info(message, param, code)

    if "modalities" in update:
        mods = update["modalities"]
        if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
            return fail(f"Invalid modalities: {mods!r}. Supported combinations are: ['text'] and "
                        "['audio', 'text'].", "session.modalities")
        if sorted(set(mods)) == ["text"] and len(mods) == 1:
            new["modalities"] = ["text"]
        elif sorted(mods) == ["audio", "text"]:
            new["modalities"] = ["text", "audio"]  # §5.5: modality order is ignored
        else:
            return fail(f"Invalid modalities: {mods!r}. Supported combinations are: ['text'] and "
                        "['audio', 'text'].", "session.modalities")

    if "voice" in update:
        voice = update["voice"]
        if voice is None:  # [sdk] sends null when no voice is given -> the family default (§5.5)
            voice = fam.default_voice
        if not isinstance(voice, str) or not voice.strip():
            return fail(f"Voice {voice!r} is not supported.", "session.voice")
        if voice != current.get("voice") and voice_locked:
            return fail("Cannot update the voice after the session has produced audio output.",
                        "session.voice", "cannot_update_voice")
        if check_voice:
            problem = voice_problem(voice, model, voice_lookup)
            if problem:
                return fail(problem, "session.voice")
        new["voice"] = voice

    if "instructions" in update:
        ins = update["instructions"]
        if ins is not None and not isinstance(ins, str):
            return fail("'instructions' must be a string.", "session.instructions")
        new["instructions"] = ins or ""

    for key in ("input_audio_format", "output_audio_format"):
        if key in update:
            val = update[key]
            if val not in LEGACY_AUDIO_FORMATS:
                return fail(f"Invalid {key}: {val!r}; use one of {', '.join(LEGACY_AUDIO_FORMATS)}.",
                            f"session.{key}")
            new[key] = fam.input_audio_format if key == "input_audio_format" else fam.output_audio_format

    if "audio" in update and update["audio"] is not None:
        audio = update["audio"]
        if not isinstance(audio, dict):
            return fail("'audio' must be an object.", "session.audio")
        if not fam.configurable_audio:
            return fail(f"'audio' formats can be configured only on qwen3.5 models, not '{model}'.",
                        "session.audio")
        for side, default_rate in (("input", _catalog.DEFAULT_INPUT_SAMPLE_RATE),
                                   ("output", _catalog.DEFAULT_OUTPUT_SAMPLE_RATE)):
            if side not in audio or audio[side] is None:
                continue
            part = audio[side]
            fmt = part.get("format") if isinstance(part, dict) else None
            if not isinstance(fmt, dict):
                return fail(f"'audio.{side}.format' must be an object with 'type' and 'sample_rate'.",
                            f"session.audio.{side}.format")
            old = new.setdefault("audio", {}).setdefault(side, {}).setdefault(
                "format", {"type": "pcm", "sample_rate": default_rate})
            ftype = fmt.get("type", old.get("type", "pcm"))
            rate = fmt.get("sample_rate", old.get("sample_rate", default_rate))
            if ftype not in AUDIO_FORMAT_TYPES:
                return fail(f"Invalid audio format type {ftype!r}; use 'pcm' or 'wav'.",
                            f"session.audio.{side}.format.type")
            if isinstance(rate, bool) or rate not in SAMPLE_RATES:
                return fail(f"Invalid sample_rate {rate!r}; use one of {', '.join(map(str, SAMPLE_RATES))}.",
                            f"session.audio.{side}.format.sample_rate")
            if side == "input" and audio_started and (ftype, int(rate)) != (old.get("type"), old.get("sample_rate")):
                # §4.2: "set before the first audio and fixed once audio has started"
                return fail("The input audio format cannot change once audio has been appended.",
                            "session.audio.input.format")
            new["audio"][side]["format"] = {"type": ftype, "sample_rate": int(rate)}

    if "input_audio_transcription" in update:
        tr = update["input_audio_transcription"]
        if tr is None:
            new["input_audio_transcription"] = None
        elif not isinstance(tr, dict):
            return fail("'input_audio_transcription' must be an object or null.", "session.input_audio_transcription")
        else:
            tm = tr.get("model") or fam.transcription_model  # [sdk] sends {"model": null}
            if tm not in fam.transcription_models:  # §7.2: an accepted model is kept and echoed
                return fail(f"The transcription model cannot be changed to {tm!r}; use "
                            f"'{fam.transcription_model}'.", "session.input_audio_transcription.model")
            new["input_audio_transcription"] = {"model": tm}

    if "turn_detection" in update:
        td = update["turn_detection"]
        if td is None:
            new["turn_detection"] = None  # manual mode (§4.5 b)
        elif not isinstance(td, dict):
            return fail("'turn_detection' must be an object or null.", "session.turn_detection")
        else:
            merged = dict(current.get("turn_detection") or _default_turn_detection())
            merged.update({k: v for k, v in td.items() if v is not None})
            t = merged.get("type")
            if t not in ("server_vad", "semantic_vad"):
                return fail(f"Invalid turn_detection type {t!r}; use 'server_vad' or 'semantic_vad'.",
                            "session.turn_detection.type")
            if t == "semantic_vad" and not fam.semantic_vad:
                return fail(f"semantic_vad is not supported by '{model}'.", "session.turn_detection.type")
            checks = (("threshold", dict(lo=-1.0, hi=1.0)),
                      ("silence_duration_ms", dict(lo=200, hi=6000, integer=True)),
                      ("prefix_padding_ms", dict(lo=0, hi=None, integer=True)))
            for key, rng in checks:
                msg = _num(merged.get(key), key, **rng)
                if msg:
                    return fail(msg, f"session.turn_detection.{key}")
            merged["silence_duration_ms"] = int(merged["silence_duration_ms"])
            merged["prefix_padding_ms"] = int(merged["prefix_padding_ms"])
            if "idle_timeout_ms" in merged:
                if fam.generation != "qwen3.5" or t != "server_vad":
                    return fail("idle_timeout_ms needs a qwen3.5-omni model with server_vad.",
                                "session.turn_detection.idle_timeout_ms")
                msg = _num(merged["idle_timeout_ms"], "idle_timeout_ms", 5000, 30000, integer=True)
                if msg:
                    return fail(msg, "session.turn_detection.idle_timeout_ms")
            for key in ("create_response", "interrupt_response"):
                if not isinstance(merged.get(key, True), bool):
                    return fail(f"'{key}' must be a boolean.", f"session.turn_detection.{key}")
            new["turn_detection"] = merged

    sampling = {k: update[k] for k in _SAMPLING_KEYS if k in update and update[k] is not None}
    if sampling and fam.sampling_fixed:
        # §4.2: "turbo cannot modify this or any sampling parameter below"
        key = next(iter(sampling))
        return fail(f"'{key}' cannot be modified on '{model}'.", f"session.{key}")
    ranges = {
        "temperature": dict(lo=0, hi=2, hi_open=True),
        "top_p": dict(lo=0, hi=1, lo_open=True),
        "top_k": dict(lo=0, hi=None, integer=True),
        "max_tokens": dict(lo=1, hi=fam.max_tokens, integer=True),
        "repetition_penalty": dict(lo=0, hi=None, lo_open=True),
        "presence_penalty": dict(lo=-2, hi=2),
        "seed": dict(lo=-1, hi=2**31 - 1, integer=True),
    }
    for key, value in sampling.items():
        msg = _num(value, key, **ranges[key])
        if msg:
            return fail(msg, f"session.{key}")
        new[key] = int(value) if ranges[key].get("integer") else value
    if "top_k" in update and update["top_k"] is None:
        new["top_k"] = None  # §4.2: null disables top_k

    if "smooth_output" in update:
        so = update["smooth_output"]
        if so is not None and not isinstance(so, bool):
            return fail("'smooth_output' must be true, false or null.", "session.smooth_output")
        if fam.smooth_output:
            new["smooth_output"] = so
    if "enable_search" in update:
        es = update["enable_search"]
        if not isinstance(es, bool):
            return fail("'enable_search' must be a boolean.", "session.enable_search")
        if es and fam.generation != "qwen3.5":
            return fail(f"enable_search is not supported by '{model}'.", "session.enable_search")
        new["enable_search"] = es
    if "tools" in update:
        tools = update["tools"]
        if tools is None:
            tools = []
        if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type") == "function" for t in tools):
            return fail("'tools' must be a list of {\"type\":\"function\",\"function\":{...}} objects.", "session.tools")
        new["tools"] = tools
    if new.get("enable_search") and new.get("tools"):
        return fail("enable_search cannot be combined with tools.", "session.enable_search")
    ignored = sorted(set(update) - _KNOWN_SESSION_KEYS)
    if ignored:
        log.debug("session.update: ignoring unknown keys %s", ignored)
    return new, None


_KNOWN_SESSION_KEYS = {
    "modalities", "voice", "instructions", "input_audio_format", "output_audio_format", "audio",
    "input_audio_transcription", "turn_detection", "smooth_output", "enable_search", "search_options",
    "tools", "tool_choice", *_SAMPLING_KEYS, "id", "object", "model",
}


# ------------------------------------------------------------------------------------------ usage

def estimate_text_tokens(text: str | None) -> int:
    """Rough text token count (≈ 4 characters per token, at least one per word); 0 for empty text."""
    if not text:
        return 0
    return max(len(text.split()), math.ceil(len(text) / 4))


def _audio_tokens(seconds: float, rate: float) -> int:
    if seconds <= 0:
        return 0
    return int(math.ceil(max(seconds, 1.0) * rate))  # §4.6: "Anything under 1 s counts as 1 s"


def compute_usage(model: str, *, input_audio_s: float, output_audio_s: float, input_text: str = "",
                  output_text: str = "", history_tokens: int = 0, text_only: bool = False) -> dict:
    """``response.done.usage`` (§4.4 example shape) at the family's §4.6 audio token rates (catalog).

    ``history_tokens`` are the text tokens of earlier turns, re-fed every turn (§4.6 "History").
    ``text_only``: a text reply to text input carries ``text_tokens`` details only, no ``audio_tokens``
    keys (§7.15, §7.21 recording).
    """
    fam = _catalog.family(model)
    rin, rout = fam.audio_tokens_in_per_s, fam.audio_tokens_out_per_s
    in_audio = _audio_tokens(input_audio_s, rin)
    out_audio = _audio_tokens(output_audio_s, rout)
    in_text = estimate_text_tokens(input_text) + int(history_tokens)
    out_text = estimate_text_tokens(output_text)
    inp, out = in_text + in_audio, out_text + out_audio
    if text_only and not in_audio and not out_audio:  # §7.21: {"text_tokens"} only, on both sides
        return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
                "input_tokens_details": {"text_tokens": in_text}, "output_tokens_details": {"text_tokens": out_text}}
    return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out,
            "input_tokens_details": {"text_tokens": in_text, "audio_tokens": in_audio},
            "output_tokens_details": {"text_tokens": out_text, "audio_tokens": out_audio}}


# ---------------------------------------------------------------------------------- client events

_TD_DEFAULT = object()


def default_turn_detection() -> dict:
    """The §4.2 ``turn_detection`` a session has when the client does not send one (server VAD,
    threshold 0.5, ``silence_duration_ms`` 800, ``prefix_padding_ms`` 300; the same object the local
    service starts with)."""
    return _default_turn_detection()


__all__ += ["default_turn_detection"]  # the client's view of the §4.2 default (qvtools.realtime.session)


def session_config(*, modalities=("text", "audio"), voice: str | None = None, instructions: str | None = None,
                   input_format: tuple[str, int] | None = None, output_format: tuple[str, int] | None = None,
                   legacy_formats: str | None = None, turn_detection: Any = _TD_DEFAULT,
                   threshold: float | None = None, prefix_padding_ms: int | None = None,
                   silence_duration_ms: int | None = None, transcription: Any = True,
                   **extra) -> dict:
    """The ``session`` object of a ``session.update`` (§4.2).

    - ``input_format``/``output_format``: ``(type, sample_rate)`` -> ``audio.input/output.format``
      (qwen3.5 only); ``legacy_formats="pcm16"`` sends ``input_audio_format``/``output_audio_format``
      instead (never both, §4.2);
    - ``turn_detection``: ``"server_vad"`` (default), ``"semantic_vad"``, ``None`` (manual) or a dict;
      ``threshold``/``prefix_padding_ms``/``silence_duration_ms`` refine it;
    - ``transcription``: True (default model), False/None (disabled) or a model name;
    - sampling parameters (``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``seed``, ...) go in ``extra``.
    """
    s: dict[str, Any] = {"modalities": list(modalities)}
    if voice is not None:
        s["voice"] = voice
    if instructions is not None:
        s["instructions"] = instructions
    if legacy_formats is not None:
        if input_format or output_format:
            raise ValueError("send either legacy_formats or input_format/output_format, not both (§4.2)")
        s["input_audio_format"] = legacy_formats
        s["output_audio_format"] = legacy_formats
    elif input_format or output_format:
        audio = {}
        if input_format:
            audio["input"] = {"format": {"type": input_format[0], "sample_rate": int(input_format[1])}}
        if output_format:
            audio["output"] = {"format": {"type": output_format[0], "sample_rate": int(output_format[1])}}
        s["audio"] = audio
    if transcription is True:
        s["input_audio_transcription"] = {"model": DEFAULT_TRANSCRIPTION_MODEL}
    elif transcription in (False, None):
        s["input_audio_transcription"] = None
    else:
        s["input_audio_transcription"] = {"model": str(transcription)}
    if turn_detection is _TD_DEFAULT:
        turn_detection = "server_vad"
    if turn_detection is None:
        s["turn_detection"] = None
    else:
        td = dict(turn_detection) if isinstance(turn_detection, dict) else {"type": str(turn_detection)}
        for key, val in (("threshold", threshold), ("prefix_padding_ms", prefix_padding_ms),
                         ("silence_duration_ms", silence_duration_ms)):
            if val is not None:
                td[key] = val
        s["turn_detection"] = td
    s.update({k: v for k, v in extra.items() if v is not None})
    return s


def session_update(session: dict | None = None, *, event_id: str | None = None, **config) -> Event:
    """``session.update`` with ``session`` given as a dict, or built by :func:`session_config` from kwargs."""
    if session is None:
        session = session_config(**config)
    elif config:
        raise TypeError("pass either a session dict or session_config keyword arguments, not both")
    return _event("session.update", event_id, session=session)


def audio_append(audio: bytes | str, *, event_id: str | None = None) -> Event:
    """``input_audio_buffer.append`` with base64 PCM (bytes are encoded here). Never acknowledged (§4.1)."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        audio = base64.b64encode(bytes(audio)).decode("ascii")
    return _event("input_audio_buffer.append", event_id, audio=audio)


def audio_commit(*, event_id: str | None = None) -> Event:
    return _event("input_audio_buffer.commit", event_id)


def audio_clear(*, event_id: str | None = None) -> Event:
    return _event("input_audio_buffer.clear", event_id)


def image_append(image: bytes | str, *, event_id: str | None = None) -> Event:
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = base64.b64encode(bytes(image)).decode("ascii")
    return _event("input_image_buffer.append", event_id, image=image)


def response_create(*, instructions: str | None = None, modalities=None, event_id: str | None = None) -> Event:
    """``response.create`` (manual mode, §4.5 b); the SDK's ``response`` object is mirrored."""
    resp: dict[str, Any] = {"instructions": instructions}
    if modalities is not None:
        resp["modalities"] = list(modalities)
    return _event("response.create", event_id, response=resp)


def response_cancel(*, event_id: str | None = None) -> Event:
    return _event("response.cancel", event_id)


def item_create(item: dict, *, event_id: str | None = None) -> Event:
    """``conversation.item.create`` (e.g. a ``function_call_output`` item, §4.3)."""
    return _event("conversation.item.create", event_id, item=item)


def text_item_create(text: str, *, event_id: str | None = None) -> Event:
    """A user text message item (RT mentions ``input_text`` content, §4.3)."""
    return item_create({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
                       event_id=event_id)


def session_finish(*, event_id: str | None = None) -> Event:
    return _event("session.finish", event_id)


# ---------------------------------------------------------------------------------- server events

def session_created(session: dict) -> Event:
    return _event("session.created", session=session)


def session_updated(session: dict) -> Event:
    return _event("session.updated", session=session)


def speech_started(audio_start_ms: int, item_id: str) -> Event:
    return _event("input_audio_buffer.speech_started", audio_start_ms=int(audio_start_ms), item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> Event:
    return _event("input_audio_buffer.speech_stopped", audio_end_ms=int(audio_end_ms), item_id=item_id)


def committed(item_id: str, previous_item_id: str | None = None) -> Event:
    return _event("input_audio_buffer.committed", previous_item_id=previous_item_id, item_id=item_id)


def cleared() -> Event:
    return _event("input_audio_buffer.cleared")


def user_item(item_id: str, *, status: str = "completed", text: str | None = None) -> dict:
    """A user message item with ``input_audio`` (or ``input_text``) content."""
    content = [{"type": "input_text", "text": text}] if text is not None else [{"type": "input_audio"}]
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": "user",
            "content": content}


def assistant_item(item_id: str, *, status: str = "in_progress", content: list | None = None) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": "assistant",
            "content": list(content or [])}


def item_created(item: dict, previous_item_id: str | None = None) -> Event:
    """``conversation.item.created``; ``previous_item_id`` only on items after the first (§7.13)."""
    if previous_item_id is None:
        return _event("conversation.item.created", item=item)
    return _event("conversation.item.created", previous_item_id=previous_item_id, item=item)


def transcription_delta(item_id: str, text: str, stash: str = "", language: str = "en",
                        emotion: str = "neutral") -> Event:
    """``…input_audio_transcription.delta``: ``text`` confirmed, ``stash`` tentative (§4.4); as observed on
    qwen3.5-omni-flash (§7.14) ``text`` is empty and ``stash`` holds the sentence so far."""
    return _event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                  text=text, stash=stash, language=language, emotion=emotion)


def transcription_completed(item_id: str, transcript: str) -> Event:
    return _event("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                  transcript=transcript)


def transcription_failed(item_id: str, code: str, message: str, param: str | None = None) -> Event:
    return _event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                  error={"code": code, "message": message, "param": param})


def response_object(response_id: str, conversation_id: str, *, status: str = "in_progress",
                    modalities=("text", "audio"), voice: str | None = None, output: list | None = None,
                    usage: dict | None = None, status_details: dict | None = None,
                    output_audio_format: str = "pcm") -> dict:
    """The ``response`` object of ``response.created``/``response.done`` (§4.4); ``status`` ∈ in_progress,
    completed, failed, incomplete, cancelled (§7.6)."""
    resp = {"id": response_id, "object": "realtime.response", "conversation_id": conversation_id,
            "status": status, "modalities": list(modalities), "voice": voice,
            "output_audio_format": output_audio_format,
            "output": list(output or [])}
    if status_details is not None:
        resp["status_details"] = status_details
    if usage is not None:
        resp["usage"] = usage
    return resp


def response_created(response: dict) -> Event:
    return _event("response.created", response=response)


def response_done(response: dict) -> Event:
    return _event("response.done", response=response)


def output_item_added(response_id: str, item: dict, output_index: int = 0) -> Event:
    return _event("response.output_item.added", response_id=response_id, output_index=output_index, item=item)


def output_item_done(response_id: str, item: dict, output_index: int = 0) -> Event:
    return _event("response.output_item.done", response_id=response_id, output_index=output_index, item=item)


def _p(response_id, item_id):  # the P fields of the §4.4 table
    return {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}


def content_part_added(response_id: str, item_id: str, part_type: str = "audio") -> Event:
    return _event("response.content_part.added", **_p(response_id, item_id), part={"type": part_type, "text": ""})


def content_part_done(response_id: str, item_id: str, text: str, part_type: str = "audio") -> Event:
    return _event("response.content_part.done", **_p(response_id, item_id), part={"type": part_type, "text": text})


def audio_transcript_delta(response_id: str, item_id: str, delta: str) -> Event:
    return _event("response.audio_transcript.delta", **_p(response_id, item_id), delta=delta)


def audio_transcript_done(response_id: str, item_id: str, transcript: str) -> Event:
    return _event("response.audio_transcript.done", **_p(response_id, item_id), transcript=transcript)


def audio_delta(response_id: str, item_id: str, pcm: bytes | str) -> Event:
    """``response.audio.delta`` with base64 PCM16 mono at the output rate."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        pcm = base64.b64encode(bytes(pcm)).decode("ascii")
    return _event("response.audio.delta", **_p(response_id, item_id), delta=pcm)


def audio_done(response_id: str, item_id: str) -> Event:
    return _event("response.audio.done", **_p(response_id, item_id))


def text_delta(response_id: str, item_id: str, delta: str) -> Event:
    return _event("response.text.delta", **_p(response_id, item_id), delta=delta)


def text_done(response_id: str, item_id: str, text: str) -> Event:
    return _event("response.text.done", **_p(response_id, item_id), text=text)


def error(message: str, *, code: str = "invalid_value", param: str | None = None,
          type: str = "invalid_request_error", event_id: str | None = None) -> Event:
    """An ``error`` event (§4.4 example); ``event_id`` echoes the offending client event when known."""
    info = error_info(message, param, code, type)
    if event_id is not None:
        info["event_id"] = event_id
    return _event("error", error=info)


def voice_error(voice: str) -> Event:
    """The lone ``error`` an unusable voice gets at the response trigger (§7.3: only the message text was
    recorded; the envelope follows §4.4 with the code taken from that text and ``param`` null)."""
    return _event("error", error={"type": "invalid_request_error", "code": "InternalError.Algo.InvalidParameter",
                                  "message": voice_error_message(voice), "param": None})


def session_finished() -> Event:
    """``{"type":"session.finished"}`` (§4.4 **[guess]**; the SDK reads only ``type``)."""
    return _event("session.finished")
