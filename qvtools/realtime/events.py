"""The Qwen-Omni-Realtime event model, shared by the client and the local server (no sockets).

Everything here is a plain function over dicts/strings (sans-I/O, like ``websockets``' core):

- ids: :func:`new_id` (``prefix_`` + 21 characters of the URL-safe alphabet, protocol reference §4.1, §7);
- client event builders (§4.3): :func:`session_update`, :func:`session_config`, :func:`audio_append`, ...;
- server event builders (§4.4): :func:`session_created`, :func:`speech_started`, ..., :func:`error`;
- :func:`parse` turns a text frame into an :class:`Event` (a ``dict`` with ``.type``);
- :func:`input_format`/:func:`output_format` of a session configuration. The configuration itself (family
  defaults, the merge of an update) is :mod:`qvtools.realtime.session_model`; the local service's validation,
  echo shaping and usage are :mod:`qvtools.server.session_rules`;
- :func:`invalid_text_path`: where a parsed event carries a lone surrogate (issue 13).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import string
from typing import Any

from .. import catalog as _catalog
from ..catalog import SAMPLE_RATES, base_model, is_cloned_voice, is_known_model
from ..errors import RealtimeError

__all__ = [
    "ID_ALPHABET", "new_id", "Event", "parse", "dumps",
    "MODELS", "base_model", "model_family", "is_known_model", "is_cloned_voice",
    "DEFAULT_TRANSCRIPTION_MODEL", "AUDIO_FORMAT_TYPES", "LEGACY_AUDIO_FORMATS",
    "SAMPLE_RATES", "input_format", "output_format", "voice_error_message", "voice_error", "invalid_text_path",
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


def voice_error_message(voice: str) -> str:
    """The text of the lone ``error`` an unusable voice gets at generation time (§7.3, as observed)."""
    return f"<400> InternalError.Algo.InvalidParameter: Voice '{voice}' is not supported."


# ---------------------------------------------------------------------------------- client events

_TD_DEFAULT = object()


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
