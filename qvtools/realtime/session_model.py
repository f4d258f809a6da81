"""One session model for the client and the local service (issue 19 item 2; protocol reference §4.2, §7).

The shape-level rules both sides need, built from :mod:`qvtools.catalog` and nothing else (core install,
no sockets):

- :func:`default_turn_detection`: the §4.2 ``turn_detection`` (server VAD 0.5 / 300 / 800 ms, the catalog's
  constants), the object §7.1 saw in every ``session.created``;
- :func:`default_session`: the full configuration a new session starts with, per model family (§4.2
  defaults, §7.1 voices / format strings / transcription model);
- :func:`merge_update`: a ``session.update`` payload merged into a configuration. No validation here:
  the local service validates first (:func:`qvtools.server.session_rules.merge_session`) and then merges
  with this; the client merges what it sent once ``session.updated`` acknowledged it;
- :func:`effective_session`: the client's view (:attr:`qvtools.realtime.session.RealtimeSession.effective`).

Where the two sides used to disagree, the observed service decides (§7):

- the ``audio`` object: §7.1 saw no ``audio`` object in any ``session.created``, and only qwen3.5 families
  configure it (§4.2, §7.22: Qwen's older client sent it for qwen3.5 only), so the defaults carry it only
  for families with ``configurable_audio``; the rates of the others are the family's
  (:func:`input_format`/:func:`output_format` of the events module fall back to the catalog's rates);
- ``turn_detection: null`` means manual mode and is kept as ``None`` (the echo then has no key, §7.2);
  a ``null`` *field* inside a ``turn_detection`` object means "not given" (the SDK sends nulls for unset
  options, as in ``{"model": null}``, SDK notes §1.2) and leaves the current value in place;
- legacy ``input_audio_format``/``output_audio_format``: the service keeps the family's own strings
  (``pcm`` on qwen3.5, ``pcm16``/``pcm24`` on qwen3 and qwen3.8; §7.1, §7.2), whatever was sent;
- keys the protocol does not define are ignored on both sides (the SDK copies arbitrary kwargs).
"""

from __future__ import annotations

import copy
from typing import Any

from .. import catalog as _catalog
from .events import new_id

__all__ = ["SAMPLING_KEYS", "default_turn_detection", "default_session", "merge_update", "effective_session"]

#: Sampling parameters of a session (§4.2); turbo cannot change them (``ModelFamily.sampling_fixed``).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "presence_penalty", "seed")
# whole-number fields, stored as int when sent as a whole float (500.0 -> 500)
_INTEGER_KEYS = ("top_k", "max_tokens", "seed")
_INTEGER_VAD_KEYS = ("silence_duration_ms", "prefix_padding_ms")


def default_turn_detection() -> dict:
    """The §4.2 ``turn_detection`` a session has when the client does not send one: server VAD,
    threshold 0.5, prefix 300 ms, silence 800 ms (:mod:`qvtools.catalog`), ``create_response`` and
    ``interrupt_response`` true (§7.1)."""
    return {"type": "server_vad", "threshold": _catalog.DEFAULT_VAD_THRESHOLD,
            "prefix_padding_ms": _catalog.DEFAULT_PREFIX_PADDING_MS,
            "silence_duration_ms": _catalog.DEFAULT_SILENCE_DURATION_MS,
            "create_response": True, "interrupt_response": True}


def default_session(model: str, session_id: str | None = None) -> dict:
    """The full effective configuration a new session of ``model`` starts with (§4.2 defaults; §7.1
    per-family formats, voice and transcription model, all from :func:`qvtools.catalog.family`).

    ``session_id`` (``sess_…``) is made with :func:`~qvtools.realtime.events.new_id` when not given.
    The ``audio`` object is present only for families that configure it (qwen3.5, §4.2)."""
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
    cfg["turn_detection"] = default_turn_detection()
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


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _whole(value):
    """``value`` as int when it is a whole number (not bool), else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def merge_update(current: dict, update: Any, model: str | None = None) -> dict:
    """``current`` with the ``session`` object of a ``session.update`` merged in (a new dict; ``current``
    is not changed). Shape rules only -- see the module docstring; values of the wrong type are skipped
    (the local service has refused them before this runs).

    ``modalities`` in the canonical order (§5.5); ``voice: null`` -> the family default (§4.2 [sdk]);
    ``instructions: null`` -> ``""``; ``audio.{input,output}.format`` merged field by field;
    ``input_audio_transcription``: ``null`` disables, ``{"model": null}`` -> the family model;
    ``turn_detection``: ``null`` -> manual (None), an object is merged over the current one (or the
    default) with ``null`` fields ignored; sampling parameters (``top_k: null`` disables top_k, §4.2);
    ``smooth_output`` only on families that have it; ``tools: null`` -> ``[]``.
    """
    model = model or current.get("model") or ""
    fam = _catalog.family(model)
    new = copy.deepcopy(current)
    if not isinstance(update, dict):
        return new
    if isinstance(update.get("modalities"), list):
        mods = update["modalities"]
        new["modalities"] = ["text", "audio"] if sorted(mods) == ["audio", "text"] else list(mods)
    if "voice" in update:
        voice = update["voice"]
        new["voice"] = fam.default_voice if voice is None else voice
    if "instructions" in update:
        new["instructions"] = update["instructions"] or ""
    if "input_audio_format" in update:
        new["input_audio_format"] = fam.input_audio_format  # §7.1: the family's own string is kept
    if "output_audio_format" in update:
        new["output_audio_format"] = fam.output_audio_format
    for side, default_rate in (("input", fam.input_sample_rate), ("output", fam.output_sample_rate)):
        fmt = _obj(_obj(_obj(update.get("audio")).get(side)).get("format"))
        if fmt:
            cur = new.setdefault("audio", {}).setdefault(side, {}).setdefault(
                "format", {"type": "pcm", "sample_rate": default_rate})
            if "type" in fmt:
                cur["type"] = fmt["type"]
            if "sample_rate" in fmt:
                cur["sample_rate"] = _whole(fmt["sample_rate"])
    if "input_audio_transcription" in update:
        tr = update["input_audio_transcription"]
        if tr is None:
            new["input_audio_transcription"] = None
        elif isinstance(tr, dict):
            new["input_audio_transcription"] = {"model": tr.get("model") or fam.transcription_model}
    if "turn_detection" in update:
        td = update["turn_detection"]
        if td is None:
            new["turn_detection"] = None  # manual mode (§4.5 b)
        elif isinstance(td, dict):
            merged = dict(_obj(current.get("turn_detection")) or default_turn_detection())
            merged.update({k: v for k, v in td.items() if v is not None})
            for key in _INTEGER_VAD_KEYS:
                if key in merged:
                    merged[key] = _whole(merged[key])
            new["turn_detection"] = merged
    for key in SAMPLING_KEYS:
        if update.get(key) is not None:
            new[key] = _whole(update[key]) if key in _INTEGER_KEYS else update[key]
    if "top_k" in update and update["top_k"] is None:
        new["top_k"] = None  # §4.2: null disables top_k
    if "smooth_output" in update and fam.smooth_output:
        new["smooth_output"] = update["smooth_output"]
    if isinstance(update.get("enable_search"), bool):
        new["enable_search"] = update["enable_search"]
    if "tools" in update:
        tools = update["tools"]
        if tools is None or isinstance(tools, list):
            new["tools"] = list(tools or [])
    return new


def effective_session(model: str, requested: dict | None = None, base: dict | None = None) -> dict:
    """The configuration a client can rely on: ``base`` (or :func:`default_session` of the model, without
    an ``id`` -- the client learns that from ``session.created``) with the ``session`` it requested merged
    on top by :func:`merge_update`, the same merge the local service applies.

    Never built from ``session.updated``: the real echo omits the ``audio`` object and, in manual mode,
    ``turn_detection`` (§4.2, §7.2), so a client that read its mode or rates from it would be wrong. The
    result always has ``turn_detection`` (None = manual)."""
    if base is None:
        base = default_session(model)
        del base["id"]
    return merge_update(base, requested or {}, model)
