"""Free-text limits of realtime client events (qvtools/server/rt_limits.py), with literal JSON: no socket."""

from __future__ import annotations

import json

import pytest

from qvtools.realtime import events as ev
from qvtools.server import ServiceConfig
from qvtools.server.rt_limits import too_long

CFG = ServiceConfig(warm_speech=False, realtime_max_name_chars=8, realtime_max_text_chars=10,
                    realtime_max_instructions_chars=12, realtime_max_tools_chars=20)


def _event(obj) -> ev.Event:
    return ev.parse(json.dumps(obj))


@pytest.mark.parametrize("obj, expected", [
    ({"type": "session.update", "event_id": "e" * 9}, ("event_id", 8)),
    ({"type": "session.update", "session": {"instructions": "i" * 13}}, ("session.instructions", 12)),
    ({"type": "session.update", "session": {"voice": "v" * 9}}, ("session.voice", 8)),
    ({"type": "session.update", "session": {"input_audio_transcription": {"model": "m" * 9}}},
     ("session.input_audio_transcription.model", 8)),
    ({"type": "session.update", "session": {"tools": [{"name": "n" * 20}]}}, ("session.tools", 20)),
    ({"type": "response.create", "response": {"instructions": "i" * 13}}, ("response.instructions", 12)),
    ({"type": "conversation.item.create", "item": {"id": "x" * 9}}, ("item.id", 8)),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c",
                                                   "output": "o" * 11}}, ("item.output", 10)),
    ({"type": "conversation.item.create", "item": {"content": [{"type": "input_text", "text": "a" * 6},
                                                               {"type": "input_text", "text": "b" * 5}]}},
     ("item.content[1].text", 10)),  # the texts of one item add up
])
def test_the_first_field_over_its_limit_is_named(obj, expected):
    assert too_long(_event(obj), CFG) == expected


@pytest.mark.parametrize("obj", [
    {"type": "session.update", "event_id": "e" * 8, "session": {"instructions": "i" * 12, "voice": "v" * 8}},
    {"type": "response.create", "response": {"instructions": "i" * 12}},
    {"type": "conversation.item.create", "item": {"content": [{"type": "input_text", "text": "a" * 10}]}},
    {"type": "input_audio_buffer.append", "audio": "A" * 100},  # audio is limited by the buffer, not here
])
def test_fields_at_their_limit_pass(obj):
    assert too_long(_event(obj), CFG) is None
