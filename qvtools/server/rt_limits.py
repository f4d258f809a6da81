"""Limits on a realtime client event's free text, checked before it is handled (no socket).

:func:`too_long` names the first free-text field over its ``ServiceConfig.realtime_max_*_chars`` limit
(the limits' one definition: :mod:`qvtools.server.config`); the connection (:mod:`qvtools.server.realtime`)
answers it with an ``error`` event and the session goes on.
"""

from __future__ import annotations

import json

__all__ = ["too_long"]


def too_long(event, cfg) -> tuple[str, int] | None:
    """``(param, limit)`` of the first free-text field over its ``ServiceConfig.realtime_max_*_chars``
    limit (constants in qvtools/server/config.py), else None."""
    names, text, ins = int(cfg.realtime_max_name_chars), int(cfg.realtime_max_text_chars), \
        int(cfg.realtime_max_instructions_chars)

    def over(value, limit):
        return isinstance(value, str) and len(value) > limit

    if over(event.get("event_id"), names):
        return "event_id", names
    typ = event.type
    if typ == "session.update" and isinstance(event.get("session"), dict):
        sess = event["session"]
        if over(sess.get("instructions"), ins):
            return "session.instructions", ins
        if over(sess.get("voice"), names):
            return "session.voice", names
        tr = sess.get("input_audio_transcription")
        if isinstance(tr, dict) and over(tr.get("model"), names):
            return "session.input_audio_transcription.model", names
        if sess.get("tools") is not None:
            tools_len = len(json.dumps(sess["tools"], ensure_ascii=False, separators=(",", ":")))
            if tools_len > int(cfg.realtime_max_tools_chars):
                return "session.tools", int(cfg.realtime_max_tools_chars)
    elif typ == "response.create" and isinstance(event.get("response"), dict):
        if over(event["response"].get("instructions"), ins):
            return "response.instructions", ins
    elif typ == "conversation.item.create" and isinstance(event.get("item"), dict):
        item = event["item"]
        for key in ("id", "call_id"):
            if over(item.get(key), names):
                return f"item.{key}", names
        if over(item.get("output"), text):
            return "item.output", text
        content = item.get("content")
        if isinstance(content, list):
            total = 0
            for i, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
                    if total > text:
                        return f"item.content[{i}].text", text
    return None
