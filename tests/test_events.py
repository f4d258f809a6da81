"""qvtools.realtime.events: ids, builders, parsing and session validation, with literal JSON."""

import base64
import json
import re

import pytest

from qvtools.errors import RealtimeError
from qvtools.realtime import events as ev
from qvtools.realtime import session_model as sm
from qvtools.server import session_rules as sr

PLUS = "qwen3.5-omni-plus-realtime"
FLASH = "qwen3.5-omni-flash-realtime"


def test_ids_are_prefix_plus_21_url_safe_characters():
    # §4.1 corrected by §7: the URL-safe alphabet, '-' and '_' included (event_04cIDHwiM-gHSc0rSktQG)
    for prefix in ("event", "sess", "item", "resp", "conv"):
        assert re.fullmatch(prefix + r"_[0-9A-Za-z_-]{21}", ev.new_id(prefix))
    ids = [ev.new_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    used = set("".join(i[len("event_"):] for i in ids))
    assert {"-", "_"} <= used and used <= set(ev.ID_ALPHABET) and len(ev.ID_ALPHABET) == 64


def test_parse_literal_server_events():
    e = ev.parse('{"event_id":"event_RoUu4T8yExPMI37GKwaOC","type":"error","error":{"type":"invalid_request_error",'
                 '"code":"invalid_value","message":"Invalid modalities: [\'audio\'].","param":"session.modalities"}}')
    assert e.type == "error" and e.event_id == "event_RoUu4T8yExPMI37GKwaOC"
    assert e["error"]["param"] == "session.modalities"
    r = ev.parse('{"type":"response.created","response":{"id":"resp_HaVOPdbmX6vifiV5pAfJY","status":"in_progress"}}')
    assert r.response_id == "resp_HaVOPdbmX6vifiV5pAfJY"
    d = ev.parse(b'{"type":"response.audio.delta","response_id":"resp_x","item_id":"item_y","delta":"AAA="}')
    assert d.response_id == "resp_x"


@pytest.mark.parametrize("text,code", [("{not json", "invalid_json"), ("[1,2]", "invalid_event"),
                                       ('{"event_id":"e1"}', "invalid_event"), (b"\xff\xfe", "invalid_json")])
def test_parse_rejects_bad_frames(text, code):
    with pytest.raises(RealtimeError) as info:
        ev.parse(text)
    assert info.value.code == code


def test_sdk_style_session_update_is_accepted():
    # The SDK payload captured in dashscope-sdk-notes §1.2
    update = json.loads('{"modalities":["audio","text"],"voice":null,"input_audio_format":"pcm16",'
                        '"output_audio_format":"pcm16","input_audio_transcription":{"model":null},'
                        '"turn_detection":{"type":"server_vad","threshold":0.2,"prefix_padding_ms":300,'
                        '"silence_duration_ms":800}}')
    new, err = sr.merge_session(sm.default_session(PLUS), update)
    assert err is None
    assert new["modalities"] == ["text", "audio"]
    assert new["voice"] == "Tina"
    assert new["input_audio_format"] == "pcm"
    assert new["input_audio_transcription"] == {"model": "qwen3-asr-flash-realtime"}
    assert new["turn_detection"]["threshold"] == 0.2
    assert new["turn_detection"]["create_response"] is True


def test_audio_only_modalities_gives_documented_message():
    cur = sm.default_session(PLUS)
    new, err = sr.merge_session(cur, {"modalities": ["audio"]})
    assert new is cur
    assert err == {"type": "invalid_request_error", "code": "invalid_value",
                   "message": "Invalid modalities: ['audio']. Supported combinations are: ['text'] and "
                              "['audio', 'text'].", "param": "session.modalities"}


@pytest.mark.parametrize("update,param", [
    ({"voice": ""}, "session.voice"),
    ({"voice": "Nobody"}, "session.voice"),
    ({"audio": {"input": {"format": {"type": "mp3", "sample_rate": 16000}}}}, "session.audio.input.format.type"),
    ({"audio": {"output": {"format": {"type": "pcm", "sample_rate": 22050}}}}, "session.audio.output.format.sample_rate"),
    ({"input_audio_format": "opus"}, "session.input_audio_format"),
    ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection.type"),
    ({"turn_detection": {"type": "server_vad", "silence_duration_ms": 100}}, "session.turn_detection.silence_duration_ms"),
    ({"turn_detection": {"type": "server_vad", "threshold": 1.5}}, "session.turn_detection.threshold"),
    ({"temperature": 2.0}, "session.temperature"),
    ({"top_p": 0}, "session.top_p"),
    ({"seed": 2**31}, "session.seed"),
    ({"presence_penalty": -3}, "session.presence_penalty"),
    ({"max_tokens": 0}, "session.max_tokens"),
    ({"input_audio_transcription": {"model": "whisper-1"}}, "session.input_audio_transcription.model"),
])
def test_invalid_updates_name_the_param(update, param):
    _, err = sr.merge_session(sm.default_session(PLUS), update)
    assert err is not None and err["param"] == param, err


def test_formats_rates_and_nulls():
    new, err = sr.merge_session(sm.default_session(FLASH), {
        "audio": {"input": {"format": {"type": "wav", "sample_rate": 8000}},
                  "output": {"format": {"type": "pcm", "sample_rate": 48000}}},
        "input_audio_transcription": None, "turn_detection": None, "seed": 7})
    assert err is None
    assert ev.input_format(new) == ("wav", 8000) and ev.output_format(new) == ("pcm", 48000)
    assert new["input_audio_transcription"] is None and new["turn_detection"] is None and new["seed"] == 7
    for legacy in ("pcm", "pcm16", "pcm24"):
        assert sr.merge_session(new, {"output_audio_format": legacy})[1] is None
    # §4.2: the input format is fixed once audio has started
    _, err = sr.merge_session(new, {"audio": {"input": {"format": {"type": "pcm", "sample_rate": 16000}}}},
                              audio_started=True)
    assert err["param"] == "session.audio.input.format"


def test_cloned_voice_rules():
    voice = "qwen-omni-vc-guanyu-voice-20250812105009984-838b"
    lookup = {voice: PLUS}.get
    ok, err = sr.merge_session(sm.default_session(PLUS + "-latest"), {"voice": voice}, voice_lookup=lookup)
    assert err is None and ok["voice"] == voice
    _, err = sr.merge_session(sm.default_session(FLASH), {"voice": voice}, voice_lookup=lookup)
    assert err["param"] == "session.voice" and "target_model" in err["message"]
    _, err = sr.merge_session(sm.default_session(PLUS), {"voice": voice}, voice_lookup=lambda v: None)
    assert err["param"] == "session.voice" and "not found" in err["message"]
    _, err = sr.merge_session(sm.default_session("qwen3-omni-flash-realtime"), {"voice": voice}, voice_lookup=lookup)
    assert err["param"] == "session.voice"
    _, err = sr.merge_session(ok, {"voice": "Tina"}, voice_locked=True)
    assert err["code"] == "cannot_update_voice"
    assert sr.merge_session(ok, {"voice": voice}, voice_locked=True, voice_lookup=lookup)[1] is None


def test_model_defaults():
    assert sm.default_session(PLUS)["voice"] == "Tina"
    assert sm.default_session("qwen3-omni-flash-realtime")["voice"] == "Cherry"
    turbo = sm.default_session("qwen-omni-turbo-realtime")
    assert turbo["voice"] == "Chelsie" and turbo["temperature"] == 1.0 and "audio" not in turbo
    assert sr.merge_session(turbo, {"temperature": 0.5})[1]["param"] == "session.temperature"
    assert ev.is_known_model("qwen3.5-omni-flash-realtime-2026-03-15")
    assert not ev.is_known_model("gpt-4o-realtime")
    assert "qwen3.8-omni-flash-realtime" in ev.MODELS


@pytest.mark.parametrize("model,voice,fin,fout,asr", [
    # §7.1: per-family session.created shapes
    (FLASH, "Tina", "pcm", "pcm", "qwen3-asr-flash-realtime"),
    ("qwen3-omni-flash-realtime", "Cherry", "pcm16", "pcm24", "gummy-realtime-v1"),
    ("qwen3.8-omni-flash-realtime", "Chelsie", "pcm16", "pcm24", "gummy-realtime-v1"),
])
def test_session_created_shape_per_family(model, voice, fin, fout, asr):
    created = sr.session_echo(sm.default_session(model), "created")
    assert list(created) == ["object", "model", "modalities", "voice", "input_audio_format",
                             "output_audio_format", "input_audio_transcription", "turn_detection", "id"]
    assert (created["voice"], created["input_audio_format"], created["output_audio_format"]) == (voice, fin, fout)
    assert created["input_audio_transcription"] == {"model": asr} and "audio" not in created
    assert created["turn_detection"] == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 800, "create_response": True,
                                         "interrupt_response": True}


def test_session_updated_echo_is_the_observed_key_set():
    # §7.2: no turn_detection (also after turn_detection: null), no audio object
    new, err = sr.merge_session(sm.default_session(FLASH), {"turn_detection": None, "instructions": "Be brief.",
                                                            "audio": {"output": {"format": {"type": "pcm",
                                                                                            "sample_rate": 16000}}}})
    assert err is None and new["turn_detection"] is None and ev.output_format(new) == ("pcm", 16000)
    echo = sr.session_echo(new, "updated")
    assert set(echo) == {"id", "object", "model", "modalities", "instructions", "voice", "input_audio_format",
                         "output_audio_format", "input_audio_transcription", "tools", "max_tokens"}
    assert echo["instructions"] == "Be brief." and echo["tools"] == []
    assert sr.session_echo(new, "updated", "full")["turn_detection"] is None  # the earlier guess, by choice
    # §7.15: qwen3-omni-flash echoes tools: null; §7.2: qwen3.8 keeps an explicit transcription model
    q3 = sr.session_echo(sm.default_session("qwen3-omni-flash-realtime"), "updated")
    assert q3["tools"] is None
    q38, err = sr.merge_session(sm.default_session("qwen3.8-omni-flash-realtime"),
                                {"input_audio_transcription": {"model": "qwen3-asr-flash-realtime"},
                                 "input_audio_format": "pcm", "output_audio_format": "pcm16"})
    assert err is None and q38["input_audio_transcription"] == {"model": "qwen3-asr-flash-realtime"}
    assert (q38["input_audio_format"], q38["output_audio_format"]) == ("pcm16", "pcm24")  # the family's strings


def test_voice_problem_follows_the_catalog():
    # §7.11: Cherry and Chelsie fail on qwen3.5-omni-flash, Tina on qwen3-omni-flash
    assert sr.voice_problem("Tina", FLASH) is None and sr.voice_problem("Cindy", FLASH) is None
    assert sr.voice_problem("Cherry", FLASH) == "Voice 'Cherry' is not supported."
    assert sr.voice_problem("Tina", "qwen3-omni-flash-realtime") == "Voice 'Tina' is not supported."
    assert sr.voice_problem("Chelsie", "qwen3.8-omni-flash-realtime") is None
    clone = "qwen-omni-vc-guanyu-voice-20250812105009984-838b"
    assert "target_model" in sr.voice_problem(clone, FLASH, {clone: PLUS}.get)
    assert "not found" in sr.voice_problem(clone, PLUS, lambda v: None)
    assert sr.voice_problem(clone, PLUS, {clone: PLUS}.get) is None
    assert "cloned voices" in sr.voice_problem(clone, "qwen3-omni-flash-realtime", {clone: PLUS}.get)
    # accepted by merge_session when the check is left to generation time (§7.3)
    new, err = sr.merge_session(sm.default_session(FLASH), {"voice": "Cherry"}, check_voice=False)
    assert err is None and new["voice"] == "Cherry"
    assert ev.voice_error_message("Cherry") == \
        "<400> InternalError.Algo.InvalidParameter: Voice 'Cherry' is not supported."


def test_invalid_text_path_finds_lone_surrogates():
    raw = '{"type":"session.update","event_id":"e1","session":{"voice":"T\\ud800"}}'
    assert ev.invalid_text_path(json.loads(raw), raw) == "session.voice"
    raw = '{"type":"conversation.item.create","item":{"content":[{"type":"input_text","text":"\\uDC00"}]}}'
    assert ev.invalid_text_path(json.loads(raw), raw) == "item.content[0].text"
    raw = '{"type":"x","event_id":"\\ud800"}'
    assert ev.invalid_text_path(json.loads(raw)) == "event_id"
    pair = '{"type":"x","text":"\\ud83d\\ude00"}'  # a valid pair is text (an emoji)
    assert ev.invalid_text_path(json.loads(pair), pair) is None
    assert ev.invalid_text_path({"type": "x", "a": "plain"}, '{"type":"x","a":"plain"}') is None


def test_client_builders_literal_shapes():
    u = ev.session_update(voice="Tina", turn_detection=None, transcription=False, input_format=("pcm", 16000),
                          output_format=("pcm", 24000), temperature=0.9, seed=1314)
    assert u["type"] == "session.update" and re.fullmatch(r"event_[0-9A-Za-z_-]{21}", u["event_id"])
    assert u["session"] == {"modalities": ["text", "audio"], "voice": "Tina",
                            "audio": {"input": {"format": {"type": "pcm", "sample_rate": 16000}},
                                      "output": {"format": {"type": "pcm", "sample_rate": 24000}}},
                            "input_audio_transcription": None, "turn_detection": None,
                            "temperature": 0.9, "seed": 1314}
    legacy = ev.session_config(legacy_formats="pcm16", threshold=0.2, silence_duration_ms=800, prefix_padding_ms=300)
    assert legacy["input_audio_format"] == "pcm16" and "audio" not in legacy
    assert legacy["turn_detection"] == {"type": "server_vad", "threshold": 0.2, "prefix_padding_ms": 300,
                                        "silence_duration_ms": 800}
    assert ev.session_config(turn_detection="semantic_vad")["turn_detection"] == {"type": "semantic_vad"}
    a = ev.audio_append(b"\x01\x00\x02\x00")
    assert a["type"] == "input_audio_buffer.append" and base64.b64decode(a["audio"]) == b"\x01\x00\x02\x00"
    assert ev.response_create()["response"] == {"instructions": None}
    assert ev.text_item_create("hi")["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    types = [f(event_id="event_x")["type"] for f in (ev.audio_commit, ev.audio_clear, ev.response_cancel,
                                                    ev.session_finish)]
    assert types == ["input_audio_buffer.commit", "input_audio_buffer.clear", "response.cancel", "session.finish"]
    assert json.loads(ev.dumps(ev.session_finish(event_id="event_1"))) == {"event_id": "event_1",
                                                                          "type": "session.finish"}


def test_server_builders_cover_every_event_type():
    r, i = "resp_1", "item_1"
    built = [
        ev.session_created(sm.default_session(PLUS)), ev.session_updated(sm.default_session(PLUS)),
        ev.speech_started(3647, "item_u"), ev.speech_stopped(4453, "item_u"), ev.committed("item_u"), ev.cleared(),
        ev.item_created(ev.user_item("item_u")), ev.transcription_delta("item_u", "Hel", "lo"),
        ev.transcription_completed("item_u", "Hello."), ev.transcription_failed("item_u", "x", "y"),
        ev.response_created(ev.response_object(r, "conv_1")),
        ev.output_item_added(r, ev.assistant_item(i)), ev.content_part_added(r, i),
        ev.audio_transcript_delta(r, i, "Hi"), ev.audio_delta(r, i, b"\x00\x00"), ev.text_delta(r, i, "Hi"),
        ev.audio_transcript_done(r, i, "Hi"), ev.audio_done(r, i), ev.text_done(r, i, "Hi"),
        ev.content_part_done(r, i, "Hi"), ev.output_item_done(r, ev.assistant_item(i, status="completed")),
        ev.response_done(ev.response_object(r, "conv_1", status="completed", usage={})),
        ev.error("bad", param="session.voice"), ev.session_finished(),
    ]
    assert {e["type"] for e in built} == set(ev.SERVER_EVENT_TYPES)
    assert ev.speech_started(3647, "item_u")["audio_start_ms"] == 3647
    p = ev.audio_delta(r, i, b"\x00\x00")
    assert {k: p[k] for k in ("response_id", "item_id", "output_index", "content_index")} == \
        {"response_id": r, "item_id": i, "output_index": 0, "content_index": 0}
    assert ev.error("bad", param="session.voice")["error"] == {"type": "invalid_request_error", "code": "invalid_value",
                                                               "message": "bad", "param": "session.voice"}


def test_usage_rates():
    # §4.6: qwen3.5 7 tokens/s in, 12.5 out; under 1 s counts as 1 s; totals = input + output
    u = sr.compute_usage(PLUS, input_audio_s=2.0, output_audio_s=0.4, input_text="", output_text="Hello there")
    assert u["input_tokens_details"]["audio_tokens"] == 14
    assert u["output_tokens_details"]["audio_tokens"] == 13
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert sr.compute_usage("qwen-omni-turbo-realtime", input_audio_s=1.0, output_audio_s=1.0)["total_tokens"] == 50
    # the catalog's rates, qwen3.8 included (12.5/s, marked a guess there)
    assert sr.compute_usage("qwen3.8-omni-flash-realtime", input_audio_s=2.0, output_audio_s=0.0)[
        "input_tokens_details"]["audio_tokens"] == 25


def test_item_created_carries_previous_item_id_only_after_the_first():
    # §7.13
    first = ev.item_created(ev.user_item("item_a", text="hi"))
    assert "previous_item_id" not in first and first["item"]["status"] == "completed"
    assert ev.item_created(ev.user_item("item_b", text="again"), "item_a")["previous_item_id"] == "item_a"
    d = ev.transcription_delta("item_a", "", "Hello the")
    assert (d["text"], d["stash"]) == ("", "Hello the")
