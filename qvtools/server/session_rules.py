"""What the local service checks and shapes around a session (server only; protocol reference §4.2, §5.5,
§5.6, §7): the validation of ``session.update`` (:func:`merge_session`, which then merges with the one
session model, :func:`qvtools.realtime.session_model.merge_update`), :func:`voice_problem` (§7.3, §7.11),
:func:`session_echo` (the observed echo key sets, §7.1, §7.2) and :func:`compute_usage`
(``response.done.usage`` at the catalog's token rates, §4.6).

Moved out of :mod:`qvtools.realtime.events` (issue 19 item 2): the client never needs these.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable

from .. import catalog as _catalog
from ..catalog import SAMPLE_RATES, base_model, is_cloned_voice
from ..realtime.events import AUDIO_FORMAT_TYPES, LEGACY_AUDIO_FORMATS, error_info
from ..realtime.session_model import SAMPLING_KEYS, default_turn_detection, merge_update

__all__ = ["SESSION_CREATED_KEYS", "SESSION_UPDATED_KEYS", "session_echo", "voice_problem", "merge_session",
           "estimate_text_tokens", "compute_usage"]

log = logging.getLogger(__name__)


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
    if not isinstance(update, dict):
        return current, error_info("'session' must be a JSON object.", "session")
    problem = _update_problem(current, update, model, voice_lookup=voice_lookup, voice_locked=voice_locked,
                              audio_started=audio_started, check_voice=check_voice)
    if problem is not None:
        return current, error_info(*problem)
    new = merge_update(current, update, model)  # the one session model (qvtools.realtime.session_model)
    if new.get("enable_search") and new.get("tools"):
        return current, error_info("enable_search cannot be combined with tools.", "session.enable_search")
    ignored = sorted(set(update) - _KNOWN_SESSION_KEYS)
    if ignored:
        log.debug("session.update: ignoring unknown keys %s", ignored)
    return new, None


def _update_problem(current: dict, update: dict, model: str, *, voice_lookup, voice_locked: bool,
                    audio_started: bool, check_voice: bool) -> tuple | None:
    """``(message, param[, code])`` of the first rule a ``session.update`` breaks, else None."""
    fam = _catalog.family(model)

    def fail(message, param, code="invalid_value"):
        return message, param, code

    if "modalities" in update:
        mods = update["modalities"]
        ok = isinstance(mods, list) and all(isinstance(m, str) for m in mods) \
            and (mods == ["text"] or sorted(mods) == ["audio", "text"])  # §5.5: order is ignored
        if not ok:
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

    if "instructions" in update:
        ins = update["instructions"]
        if ins is not None and not isinstance(ins, str):
            return fail("'instructions' must be a string.", "session.instructions")

    for key in ("input_audio_format", "output_audio_format"):
        if key in update:
            val = update[key]
            if val not in LEGACY_AUDIO_FORMATS:
                return fail(f"Invalid {key}: {val!r}; use one of {', '.join(LEGACY_AUDIO_FORMATS)}.",
                            f"session.{key}")

    if "audio" in update and update["audio"] is not None:
        audio = update["audio"]
        if not isinstance(audio, dict):
            return fail("'audio' must be an object.", "session.audio")
        if not fam.configurable_audio:
            return fail(f"'audio' formats can be configured only on qwen3.5 models, not '{model}'.",
                        "session.audio")
        for side, default_rate in (("input", fam.input_sample_rate), ("output", fam.output_sample_rate)):
            if side not in audio or audio[side] is None:
                continue
            part = audio[side]
            fmt = part.get("format") if isinstance(part, dict) else None
            if not isinstance(fmt, dict):
                return fail(f"'audio.{side}.format' must be an object with 'type' and 'sample_rate'.",
                            f"session.audio.{side}.format")
            old = (((current.get("audio") or {}).get(side) or {}).get("format")
                   or {"type": "pcm", "sample_rate": default_rate})
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

    if "input_audio_transcription" in update:
        tr = update["input_audio_transcription"]
        if tr is not None and not isinstance(tr, dict):
            return fail("'input_audio_transcription' must be an object or null.", "session.input_audio_transcription")
        elif tr is not None:
            tm = tr.get("model") or fam.transcription_model  # [sdk] sends {"model": null}
            if tm not in fam.transcription_models:  # §7.2: an accepted model is kept and echoed
                return fail(f"The transcription model cannot be changed to {tm!r}; use "
                            f"'{fam.transcription_model}'.", "session.input_audio_transcription.model")

    if "turn_detection" in update:
        td = update["turn_detection"]
        if td is not None and not isinstance(td, dict):
            return fail("'turn_detection' must be an object or null.", "session.turn_detection")
        elif td is not None:
            merged = dict(current.get("turn_detection") or default_turn_detection())
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

    sampling = {k: update[k] for k in SAMPLING_KEYS if k in update and update[k] is not None}
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

    if "smooth_output" in update:
        so = update["smooth_output"]
        if so is not None and not isinstance(so, bool):
            return fail("'smooth_output' must be true, false or null.", "session.smooth_output")
    if "enable_search" in update:
        es = update["enable_search"]
        if not isinstance(es, bool):
            return fail("'enable_search' must be a boolean.", "session.enable_search")
        if es and fam.generation != "qwen3.5":
            return fail(f"enable_search is not supported by '{model}'.", "session.enable_search")
    if "tools" in update:
        tools = update["tools"]
        if tools is None:
            tools = []
        if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type") == "function" for t in tools):
            return fail("'tools' must be a list of {\"type\":\"function\",\"function\":{...}} objects.", "session.tools")
    return None


_KNOWN_SESSION_KEYS = {
    "modalities", "voice", "instructions", "input_audio_format", "output_audio_format", "audio",
    "input_audio_transcription", "turn_detection", "smooth_output", "enable_search", "search_options",
    "tools", "tool_choice", *SAMPLING_KEYS, "id", "object", "model",
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
