"""ServiceConfig's string switches (issue 19 item 3): one validation for all of them, named compatibility
profiles, and each earlier-guess choice checked on the real local service (127.0.0.1, port 0)."""

from __future__ import annotations

import pytest

from qvtools.errors import ConfigError
from qvtools.server import LocalService, ServiceConfig
from qvtools.server import config as service_config
from realtime_support import FLASH, RawClient

SWITCHES = service_config._switch_choices()


def test_every_string_switch_is_typed_and_checked():
    # the switches the service reads with == (qvtools/server/realtime.py, enrollment.py, latency.py)
    assert set(SWITCHES) == {"enroll_text_check", "realtime_latency", "realtime_reply_mode",
                             "realtime_language_detection", "realtime_language_detector", "realtime_asr_window",
                             "realtime_cancel_status",
                             "realtime_voice_error_timing",
                             "realtime_session_keys", "realtime_item_ids", "realtime_transcription_delta",
                             "realtime_manual_user_item", "realtime_idle_close", "semantic_vad_reject"}
    defaults = ServiceConfig()
    for name, allowed in SWITCHES.items():
        assert len(allowed) >= 2 and getattr(defaults, name) == allowed[0], name


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_a_mistyped_switch_raises_naming_the_allowed_values(name):
    allowed = SWITCHES[name]
    typo = allowed[-1].capitalize()  # "Legacy" for "legacy": once silently the other branch
    with pytest.raises(ConfigError) as e:
        ServiceConfig(**{name: typo})
    assert str(e.value) == f"{name} must be one of {', '.join(allowed)}, got {typo!r}"
    for value in allowed:
        assert getattr(ServiceConfig(**{name: value}), name) == value


def test_compatibility_profiles_set_only_valid_switches():
    assert ServiceConfig().with_profile("observed") == ServiceConfig()
    guesses = ServiceConfig(warm_speech=False).with_profile("guesses")
    assert guesses.warm_speech is False  # other fields kept
    for name, value in service_config.COMPAT_PROFILES["guesses"].items():
        assert getattr(guesses, name) == value
        if name in SWITCHES:
            assert value != SWITCHES[name][0], f"{name}: the guesses profile should differ from the default"
    assert set(service_config.COMPAT_PROFILES["guesses"]) == set(service_config.COMPAT_PROFILES["observed"])
    with pytest.raises(ConfigError, match="unknown compatibility profile 'guess'; allowed: observed, guesses"):
        ServiceConfig().with_profile("guess")


def _session_and_item(cfg, tmp_path):
    """session.updated and the conversation.item.created answering an item with a client-chosen id."""
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=10)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"instructions": "Be brief."}})
            updated = c.until("session.updated")[-1]
            c.send({"type": "conversation.item.create",
                    "item": {"id": "item_mine_0001", "type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": "Hello there"}]}})
            item = c.until("conversation.item.created")[-1]
        finally:
            c.close()
    return updated["session"], item["item"]["id"]


@pytest.mark.parametrize("profile", ["observed", "guesses"])
def test_session_keys_and_item_ids_follow_the_profile(tmp_path, profile):
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False).with_profile(profile)
    session, item_id = _session_and_item(cfg, tmp_path)
    if profile == "observed":
        # §7.21 (correcting §7.2): an update that does not mention turn_detection, server VAD still on, is
        # answered with the full default turn_detection object; no audio object; §7.13: the client's id is not kept
        assert session["turn_detection"]["type"] == "server_vad" and "audio" not in session
        assert item_id != "item_mine_0001" and item_id.startswith("item_")
    else:
        # the earlier guesses: the whole effective configuration; the client's id kept
        assert "turn_detection" in session and session["instructions"] == "Be brief."
        assert item_id == "item_mine_0001"


@pytest.mark.parametrize("mode", ["conversation", "echo"])
def test_reply_mode_echo_repeats_a_typed_turn(tmp_path, mode):
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False, realtime_reply_mode=mode)
    words = "Please tell me about the red bicycle"
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=60)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}})
            c.until("session.updated")
            c.send({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}})
            c.send({"type": "response.create"})
            events = c.until("response.done", timeout=60)
        finally:
            c.close()
    text = "".join(e.get("delta", "") for e in events if e["type"] == "response.text.delta")
    assert text.strip()
    if mode == "echo":
        assert words.lower() in text.lower()
    else:
        assert words.lower() not in text.lower()


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["stash", "text"])
def test_transcription_delta_shape_is_a_choice(tmp_path, shape):
    # §7.14 (observed, default "stash"): the delta's text is empty and stash holds the sentence; "text": the guess
    import base64

    from qvtools.audio import resample, to_pcm16
    from realtime_support import utterance

    x, sr = utterance()
    pcm = to_pcm16(resample(x, sr, 16000))
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False, realtime_transcription_delta=shape,
                        realtime_partial_transcription_s=0)
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        c = RawClient(svc, FLASH, timeout=120)
        try:
            c.until("session.created")
            c.send({"type": "session.update", "session": {"turn_detection": None, "modalities": ["text"]}})
            c.until("session.updated")
            for i in range(0, len(pcm), 6400):
                c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 6400]).decode()})
            c.send({"type": "input_audio_buffer.commit"})
            events = c.until("conversation.item.input_audio_transcription.completed", timeout=120)
        finally:
            c.close()
    delta = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"][-1]
    heard = events[-1]["transcript"]
    assert "weather" in heard.lower(), heard
    if shape == "stash":
        assert delta["text"] == "" and delta["stash"] == heard
    else:
        assert delta["text"] == heard and delta["stash"] == ""
