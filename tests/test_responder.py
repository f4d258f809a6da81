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
    assert Responder("echo").reply("广州女大学生登山") == "广州女大学生登山。"  # a Chinese full stop
    assert Responder("echo").reply("广州女大学生登山", language="zh") == "广州女大学生登山。"
    assert Responder("echo").reply("登山了吗？", language="zh") == "登山了吗？"
    assert Responder("echo").reply(" ... ") == EMPTY_ECHO


def test_replies_in_the_language_of_the_turn():
    from qvtools.lang import script_language
    from qvtools.server.responder import REPLY_LANGUAGES, reply_language

    assert set(REPLY_LANGUAGES) >= {"en", "zh", "ja", "de", "es"}
    r = Responder(seed=3)
    zh = r.reply("我想了解一下明天的天气", turn_index=0, language="zh")
    assert script_language(zh) == "zh" and "天气" in zh and " " not in zh and zh.endswith(("。", "？", "！"))
    ja = r.reply("駅の近くに新しいパン屋さんができました。", language="ja")
    assert script_language(ja) == "ja" and "パン屋" in ja
    de = r.reply("Erzähl mir etwas über den Urlaub", language="de")
    assert "Urlaub" in de and de.startswith(r.opener(language="de") + " ")
    es = r.reply("Quiero aprender sobre la historia de España", language="es")
    assert "España" in es
    # a dialect or regional code is its base language; an unknown one gets English
    assert reply_language("Sichuan") == "zh" and reply_language("zh-CN") == "zh"
    assert reply_language("ko") == "en" and reply_language(None) == "en" and reply_language("xx") == "en"
    assert r.reply("tell me about jazz", language="ko") == r.reply("tell me about jazz")


def test_languages_share_seeding_and_openers_come_first():
    from qvtools.server.responder import REPLY_LANGUAGES

    for lang in REPLY_LANGUAGES:
        a, b = Responder(seed=11), Responder(seed=11)
        for t in range(4):
            opener = a.opener(turn_index=t, language=lang)
            assert opener and a.reply("", turn_index=t, language=lang).startswith(opener)
            assert a.reply("天气 weather Wetter tiempo", turn_index=t, language=lang) == \
                b.reply("天气 weather Wetter tiempo", turn_index=t, language=lang)
        assert len({a.opener(turn_index=t, language=lang) for t in range(12)}) >= 2
    # the same (seed, turn) picks the same slot in every table
    idx = {lang: Responder(seed=2)._table(lang)["openers"].index(Responder(seed=2).opener(turn_index=5, language=lang))
           for lang in REPLY_LANGUAGES}
    assert len(set(idx.values())) == 1


def test_chinese_topics_without_spaces():
    from qvtools.server.responder import topic

    assert topic("广州女大学生登山失联四天警方找到疑似女尸", "zh") == "女尸"
    assert topic("你能推荐一本关于天文学的好书吗", "zh") == "好书"
    assert topic("嗯", "zh") is None
    reply = Responder(seed=0).reply("你能推荐一本关于天文学的好书吗", language="zh")
    assert "好书" in reply and reply.startswith(Responder(seed=0).opener(language="zh"))


@pytest.mark.parametrize("language", ["en", "zh", "ja", "de", "es"])
def test_reply_is_opener_head_plus_body_in_every_language(language):
    from qvtools.server.responder import opener_head, split_opener

    r = Responder(seed=2)
    for t in range(4):
        opener = r.opener(turn_index=t, language=language)
        reply = r.reply("tell me about jazz music", turn_index=t, language=language)
        head, body = split_opener(reply, opener)
        assert head == opener_head(opener, language) and body and reply == head + body
    assert split_opener("Something else entirely.", "Got it.") is None
