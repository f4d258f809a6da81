"""The reply planner (qvtools/server/reply_plan.py, issue 19 item 1), socket-free: a fake speech pipeline
records what it is asked to say, in which language and with which cache key."""

from __future__ import annotations

import pytest

from qvtools.server.reply_plan import (SPECULATE_AFTER_MS, ReplyParams, ReplyPlanner, SpeculativeReply,
                                       Speculations, independent_of, language_before_asr)

ENGLISH_REPLY_ONLY = "fr"  # the fake has no French table: replies fall back to English with a note


class FakeSpeech:
    """The SpeechPipeline methods the planner uses, recording every call; opener and body are made from
    the turn and the words so a test knows what must be said."""

    tables = {"en": ("Got it.", " "), "zh": ("好的。", ""), "ja": ("はい。", ""), "de": ("Gut.", " ")}

    def __init__(self, *, opener_prefix: bool = True):
        self.calls: list[tuple] = []
        self.opener_prefix = opener_prefix

    def reply_language(self, language, *, audio=True):
        self.calls.append(("reply_language", language, audio))
        if language in self.tables:
            return language, None
        return "en", None if language is None else f"no {language!r} replies; replying in English"

    def opener_text(self, *, mode, seed, turn_index, instructions, language):
        self.calls.append(("opener_text", turn_index, language))
        return None if mode == "echo" else f"{self.tables[language][0]}{turn_index}"

    def reply_text(self, user_text, *, mode, seed, turn_index, instructions, language):
        self.calls.append(("reply_text", user_text, turn_index, language))
        if mode == "echo":
            return user_text
        opener, joiner = self.tables[language]
        head = f"{opener}{turn_index}{joiner}" if self.opener_prefix else ""
        return f"{head}You said {user_text}. Tell me more."

    def stream_synthesize(self, text, profile, sample_rate, language=None):
        self.calls.append(("stream_synthesize", text, sample_rate, language))
        yield from ((s, f"audio<{s}>") for s in text.split(". "))

    def stream_synthesize_reusing(self, text, profile, sample_rate, *, voice_key, language=None, reusable=None):
        self.calls.append(("stream_synthesize_reusing", text, sample_rate, voice_key, language,
                           [reusable(s) for s in text.split(". ")]))
        yield from ((s, f"audio<{s}>") for s in text.split(". "))

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def params(language="en", *, turn_index=0, mode="conversation", audio=True, voice=("builtin", "Cherry"), rate=24000):
    return ReplyParams(turn_index=turn_index, seed=0, mode=mode, instructions=None, language=language,
                       voice_key=voice, rate=rate, audio=audio)


def test_a_typed_turn_decides_the_language_once_for_cache_key_reply_and_synthesis():
    speech = FakeSpeech()
    # the session expects English, the typed words are Chinese: the script wins (issue 10), decided once
    language = language_before_asr(speech, "en", audio=True, typed_text="今天天气怎么样")
    plan = ReplyPlanner(speech, params(language))
    assert plan.params.language == "zh"
    assert plan.hear("今天天气怎么样") is None
    plan.first_piece(profile=object())
    assert speech.named("reply_language") == [("reply_language", "zh", True)]  # decided before, never again
    assert speech.named("opener_text") == [("opener_text", 0, "zh")]
    assert speech.named("reply_text") == [("reply_text", "今天天气怎么样", 0, "zh")]
    # the synthesis speaks the params' language: the speculation key and the spoken language agree (every
    # language may reuse cached sentences since issue 22)
    (call,) = speech.named("stream_synthesize_reusing")
    assert call[1:3] == ("You said 今天天气怎么样. Tell me more.", 24000) and call[4] == "zh"
    assert plan.params.language == "zh"


def test_a_named_language_is_kept_whatever_asr_detects():
    speech = FakeSpeech()
    plan = ReplyPlanner(speech, params(language_before_asr(speech, "de", audio=True)))
    plan.hear("hello there", "en")  # ASR's detection does not override the session's named language
    assert plan.params.language == "de" and plan.turn_language is None
    assert speech.named("reply_text")[0][-1] == "de"
    assert [c[1] for c in speech.named("reply_language")] == ["de"]


def test_without_a_known_language_the_detected_one_is_decided_at_hear():
    speech = FakeSpeech()
    plan = ReplyPlanner(speech, params(language_before_asr(speech, None, audio=True)))
    assert plan.params.language is None and plan.opener is None and plan.tokens == []
    assert speech.named("opener_text") == []  # no opener without a language
    assert plan.hear("こんにちは、元気ですか", "ja") is None
    assert plan.params.language == "ja" and plan.turn_language == "ja"
    plan.first_piece(profile=object())
    assert speech.named("reply_text")[0][-1] == "ja"
    assert speech.named("stream_synthesize_reusing")[0][4] == "ja"
    with pytest.raises(RuntimeError, match="already heard"):
        plan.hear("again", "en")  # decided once


def test_a_detected_language_without_replies_falls_back_to_english_with_a_note():
    speech = FakeSpeech()
    plan = ReplyPlanner(speech, params(None))
    note = plan.hear("bonjour", ENGLISH_REPLY_ONLY)
    assert "replying in English" in note and plan.turn_language == "fr"
    assert plan.params.language == "en"
    assert speech.named("reply_text")[0][-1] == "en"


def test_without_asr_language_the_script_of_the_words_decides():
    speech = FakeSpeech()
    plan = ReplyPlanner(speech, params(None))
    plan.hear("你好", None)
    assert plan.params.language == "zh" and plan.turn_language == "zh"


def test_the_opener_comes_first_then_the_body_with_the_same_token_list():
    speech = FakeSpeech()
    plan = ReplyPlanner(speech, params("en", turn_index=3))
    assert plan.opener == "Got it.3"
    toks = plan.tokens
    assert toks == ["Got ", "it.3 "]  # the opener's tokens are the reply's first ones, known before the words
    assert speech.named("reply_text") == []  # nothing about the words is decided before they are heard
    plan.hear("the weather in Lisbon")
    assert plan.text == "Got it.3 You said the weather in Lisbon. Tell me more."
    assert plan.body == "You said the weather in Lisbon. Tell me more." and not plan.opener_mismatch
    assert plan.tokens is toks and "".join(toks) == plan.text  # updated in place for a streamer holding it
    gen, first = plan.first_piece(profile=object())
    assert first == ("You said the weather in Lisbon", "audio<You said the weather in Lisbon>")
    assert next(gen) == ("Tell me more.", "audio<Tell me more.>")
    # English: the body's sentences that do not share the user's words may come from the sentence cache
    (call,) = speech.named("stream_synthesize_reusing")
    assert call[1] == plan.body and call[3] == ("builtin", "Cherry") and call[4] == "en"
    assert call[5] == [False, True]


def test_a_reply_that_does_not_start_with_its_opener_is_spoken_whole():
    speech = FakeSpeech(opener_prefix=False)
    plan = ReplyPlanner(speech, params("en"))
    plan.hear("hi")
    assert plan.opener_mismatch and plan.body == plan.text
    assert "".join(plan.tokens) == "Got it.0 " + plan.text


def test_text_only_and_echo_replies_have_no_opener():
    speech = FakeSpeech()
    text_only = ReplyPlanner(speech, params("en", audio=False))
    echo = ReplyPlanner(speech, params("en", mode="echo"))
    assert text_only.opener is None and echo.opener is None
    text_only.hear("hello world")
    echo.hear("hello world")
    assert echo.text == "hello world" and echo.tokens == ["hello ", "world"]
    assert "".join(text_only.tokens) == text_only.text == text_only.body


def test_synthesis_before_hearing_is_refused():
    with pytest.raises(RuntimeError, match="hear"):
        ReplyPlanner(FakeSpeech(), params("en")).synthesize(object())


def test_reply_params_are_checked_when_built():
    with pytest.raises(ValueError, match="mode"):
        params(mode="chat")
    with pytest.raises(ValueError, match="rate"):
        params(rate=0)
    with pytest.raises(ValueError, match="turn_index"):
        params(turn_index=-1)


def _speculative(speech, p, transcript):
    """What the connection's speculation job makes: the reply planned for ``transcript`` and its body."""
    plan = ReplyPlanner(speech, p)
    plan.hear(transcript)
    return SpeculativeReply(transcript, params=p, text=plan.text, opener=plan.opener, body="body-task")


def test_a_speculative_body_is_used_once_and_only_for_the_same_reply():
    speech = FakeSpeech()
    spec = _speculative(speech, params("en"), "hello there")
    plan = ReplyPlanner(speech, params("en"))
    plan.hear("hello there")
    assert plan.speculative_body(spec) == "body-task"
    assert plan.speculative_body(spec) is None  # usable once
    assert plan.speculative_body(None) is None


@pytest.mark.parametrize("other, words", [(params("de"), "hello there"),  # another language
                                          (params("en", turn_index=1), "hello there"),  # another turn
                                          (params("en", voice=("builtin", "Ethan")), "hello there"),  # voice
                                          (params("en", rate=16000), "hello there"),  # output rate
                                          (params("en"), "hello where")])  # other words heard
def test_a_speculative_body_for_another_reply_is_not_used(other, words):
    speech = FakeSpeech()
    spec = _speculative(speech, params("en"), "hello there")
    plan = ReplyPlanner(speech, other)
    plan.hear(words)
    assert plan.speculative_body(spec) is None
    assert spec.body == "body-task"  # still there: not consumed by a reply it was not made for


class _Task:
    def __init__(self, done=False):
        self._done = done

    def done(self):
        return self._done


def _stats():
    return {"started": 0, "used": 0, "dropped": 0, "replies": 0}


def test_a_speculation_starts_after_enough_silence_and_is_reused_for_the_same_audio():
    specs = Speculations(_stats())
    assert specs.due(None) is None
    assert specs.due(("item_1", 100, 900, SPECULATE_AFTER_MS - 1)) is None  # a pause between words
    key = specs.due(("item_1", 100, 900, SPECULATE_AFTER_MS))
    assert key == ("item_1", 100, 900)
    spec = specs.begin(key, b"\x01\x00" * 8)
    spec.task = _Task()
    assert specs.due(("item_1", 100, 900, SPECULATE_AFTER_MS + 100)) is None  # one at a time, still valid
    assert specs.current is spec
    assert specs.take(("item_1", 100, 900), b"\x01\x00" * 8) is spec.task  # the audio did not change
    assert specs.current is None and not spec.dropped
    assert specs.stats == {"started": 1, "used": 1, "dropped": 0, "replies": 0}


@pytest.mark.parametrize("key, pcm", [(("item_1", 100, 900), b"\x02\x00" * 8),  # other samples
                                      (("item_1", 100, 1200), b"\x01\x00" * 8),  # the turn ended later
                                      (("item_2", 100, 900), b"\x01\x00" * 8)])  # another turn
def test_a_speculation_is_discarded_when_the_committed_audio_changed(key, pcm):
    specs = Speculations(_stats())
    spec = specs.begin(("item_1", 100, 900), b"\x01\x00" * 8)
    spec.task = _Task()
    assert specs.take(key, pcm) is None
    assert spec.dropped and specs.current is None
    assert specs.stats == {"started": 1, "used": 0, "dropped": 1, "replies": 0}


def test_speech_that_resumes_drops_the_speculation_and_no_new_one_starts_while_its_job_runs():
    specs = Speculations(_stats())
    spec = specs.begin(specs.due(("item_1", 0, 900, 300)), b"\x00\x00")
    spec.task = _Task(done=False)
    assert specs.due(None) is None  # speech resumed: no pending stop
    assert spec.dropped and specs.current is None and specs.stats["dropped"] == 1
    assert specs.due(("item_1", 0, 1500, 300)) is None  # the dropped job still runs
    spec.task._done = True
    assert specs.due(("item_1", 0, 1500, 300)) == ("item_1", 0, 1500)
    specs.begin(("item_1", 0, 1500), b"\x00\x00")
    specs.drop()  # input_audio_buffer.clear
    assert specs.stats == {"started": 2, "used": 0, "dropped": 2, "replies": 0}


def test_reply_sentences_sharing_the_users_words_are_never_reused():
    check = independent_of("What is the weather usually like in Lisbon?")
    assert check("Let me think it through with you.")
    assert not check("That's a good question about lisbon.")  # case-insensitive
    assert not check("You mentioned weather.")
    assert check("天气很好。")  # nothing of the user's words (issue 22: every language may be reused)
    assert independent_of("")("How can I help you today?")
    # scripts without spaces: no two consecutive characters of the user's text
    zh = independent_of("明天北京会下雨吗？")
    assert zh("能再多说一点吗？")
    assert not zh("你提到了北京。")  # "北京" is the user's
    assert not zh("下雨的时候记得带伞。")
    ja = independent_of("明日の東京の天気はどうですか？")
    assert ja("まず何を知りたいですか？") is False  # "すか" is the user's too: kept out (conservative)
    assert ja("なるほど。") and not ja("東京のことならお手伝いできます。")
    es = independent_of("¿Qué tiempo hará mañana en Sevilla?")
    assert not es("Sevilla es preciosa.") and es("Dime algo más.")
    assert not es("Cuéntame algo.")  # "ué" stands in the user's "Qué": kept out (conservative)


def test_the_seed_and_the_voice_key_of_a_session():
    from types import SimpleNamespace

    from qvtools.server.reply_plan import session_seed, voice_key

    assert [session_seed({"seed": s}) for s in (7, 0, -1, None)] == [7, 0, 0, 0]
    assert session_seed({}) == 0
    assert voice_key("scope", "Cherry") == ("builtin", "Cherry")
    record = SimpleNamespace(sha256="ab12")
    from qvtools.catalog import OMNI_CLONE_PREFIX

    clone = OMNI_CLONE_PREFIX + "myvoice-voice-20250101000000-abcd"
    # a cloned voice is its key scope, name and enrollment audio: re-enrolled audio is another key
    assert voice_key("scope", clone, record) == ("clone", "scope", clone, "ab12")
    assert voice_key("scope", clone, SimpleNamespace(sha256="cd34")) != voice_key("scope", clone, record)
    assert voice_key("scope", "Cherry", record) == ("builtin", "Cherry")  # a built-in name stays built-in
