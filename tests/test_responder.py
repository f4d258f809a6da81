"""The deterministic stand-in for the omni model's text reply."""

from __future__ import annotations

import pytest

from qvtools.errors import ConfigError
from qvtools.server.responder import EMPTY_ECHO, Responder


def test_echo_repeats_user_words():
    r = Responder("echo")
    assert r.reply("hello there how are you") == "Hello there how are you."
    assert r.reply("  What time is it?  ") == "What time is it?"
    assert r.reply("") == EMPTY_ECHO
    assert r.reply(None) == EMPTY_ECHO


def test_conversation_is_deterministic_in_seed_turn_and_text():
    a, b = Responder("conversation", seed=7), Responder("conversation", seed=7)
    text = "Can you recommend a good book about astronomy?"
    assert a.reply(text, turn_index=3) == b.reply(text, turn_index=3)
    replies = {Responder("conversation", seed=s).reply(text, turn_index=t) for s in range(4) for t in range(4)}
    assert len(replies) >= 3  # seed and turn change the choice


def test_conversation_refers_to_the_user_words():
    reply = Responder().reply("I want to learn about the weather tomorrow")
    assert "weather tomorrow" in reply.lower()
    assert reply.endswith((".", "?", "!"))


def test_conversation_without_content_words_is_generic_but_nonempty():
    for t in range(5):
        assert Responder(seed=1).reply("", turn_index=t).strip()
        assert Responder(seed=1).reply("hi there", turn_index=t).strip()


def test_instructions_can_request_echo():
    r = Responder("conversation")
    assert r.reply("blue skies ahead", instructions="Repeat exactly what the user says.") == "Blue skies ahead."
    assert r.reply("blue skies ahead", instructions="You are a helpful assistant.") != "Blue skies ahead."


def test_bad_arguments():
    with pytest.raises(ConfigError, match="mode"):
        Responder("chat")
    with pytest.raises(ConfigError, match="seed"):
        Responder(seed="1")
    with pytest.raises(ConfigError):
        Responder().reply(b"bytes")


def test_opener_is_known_before_the_transcript_and_starts_the_reply():
    r = Responder(seed=5)
    openers = {r.opener(turn_index=t) for t in range(12)}
    assert len(openers) >= 2  # the turn changes the opener
    for t in range(6):
        opener = r.opener(turn_index=t)
        for text in ("tell me about jazz music", "", "what is the weather tomorrow"):
            assert r.reply(text, turn_index=t).startswith(opener + " ")
    assert Responder("echo").opener() is None
    assert r.opener(instructions="Repeat what the user says.") is None


def test_echo_keeps_non_latin_words_and_refuses_punctuation_only():
    assert Responder("echo").reply("广州女大学生登山") == "广州女大学生登山."
    assert Responder("echo").reply(" ... ") == EMPTY_ECHO
