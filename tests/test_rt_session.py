"""A realtime session.update handled socket-free (qvtools/server/rt_session.py), with dicts and records."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from qvtools.realtime.session_model import default_session
from qvtools.server import ServiceConfig
from qvtools.server.faults import FaultPlan
from qvtools.server.rt_session import OptionsError, ResponseOptions, SessionState, apply_update, named_voice, response_options, \
    voice_error_after

MODEL = "qwen3-omni-flash-realtime"
CLONE = "qwen-omni-vc-mine-0001"
CLONING = "qwen3.5-omni-flash-realtime"  # a family that takes cloned voices (qwen3 does not)


@pytest.fixture
def cfg():
    return ServiceConfig(warm_speech=False)


def record(target=CLONING, voice=CLONE):
    return SimpleNamespace(voice=voice, target_model=target, sha256="ab" * 32)


def test_named_voice():
    assert named_voice({"voice": "Ethan"}) == "Ethan"
    assert named_voice({"voice": None}) is None and named_voice({}) is None and named_voice(["voice"]) is None


def test_an_accepted_update_gives_the_session_its_echo_and_what_changed(cfg):
    s = default_session(MODEL)
    up = apply_update(s, {"voice": "Ethan", "seed": 3}, model=MODEL, cfg=cfg)
    assert up.error is None
    assert up.session["voice"] == "Ethan" and up.session["seed"] == 3
    assert up.echo["voice"] == "Ethan" and "seed" not in up.echo  # §7.2: the observed key set
    assert up.seed_changed and up.openers_changed and not up.input_changed
    assert s["voice"] == "Cherry"  # the current session is not changed in place
    up = apply_update(s, {"turn_detection": None}, model=MODEL, cfg=cfg)
    assert up.input_changed and not up.seed_changed and not up.openers_changed


def test_a_refused_update_gives_only_the_error(cfg):
    up = apply_update(default_session(MODEL), {"voice": ""}, model=MODEL, cfg=cfg)
    assert up.session is None and up.echo is None
    assert up.error == {"message": "Voice '' is not supported.", "code": "invalid_value", "param": "session.voice"}
    bad_language = {"input_audio_transcription": {"language": "xx-not-a-language"}}
    up = apply_update(default_session(MODEL), bad_language, model=MODEL, cfg=cfg)
    assert up.error["param"] == "session.input_audio_transcription.language" and up.session is None


def test_the_transcription_language_is_kept_in_the_qvtools_object_and_not_echoed(cfg):
    up = apply_update(default_session(MODEL), {"input_audio_transcription": {"language": "zh-CN"}}, model=MODEL,
                      cfg=cfg)
    assert up.error is None
    assert "zh" in up.session["qvtools"].values()
    assert "qvtools" not in up.echo


def test_client_faults_need_the_switch_and_an_injector(cfg):
    ask = {"qvtools": {"faults": {"times": 1}}}
    up = apply_update(default_session(MODEL), ask, model=MODEL, cfg=cfg)  # allow_client_faults is off
    assert up.error["code"] == "faults_disabled"
    on = replace(cfg, allow_client_faults=True)
    up = apply_update(default_session(MODEL), ask, model=MODEL, cfg=on, faults=True)
    assert up.faults_asked and isinstance(up.faults_plan, FaultPlan)
    assert up.echo["qvtools"] == {"faults": up.faults_plan.to_dict()} == {"faults": up.session["qvtools"]["faults"]}
    up = apply_update(default_session(MODEL), ask, model=MODEL, cfg=on, faults=False)  # no injector: not echoed
    assert not up.faults_asked and "qvtools" not in up.echo


def test_an_unusable_voice_is_accepted_and_kept_for_the_response_trigger(cfg):
    """§7.3 (observed, realtime_voice_error_timing = "generation"): accepted, refused at generation."""
    assert cfg.realtime_voice_error_timing == "generation"
    wrong = record(target=MODEL)  # enrolled for qwen3, used on qwen3.5
    up = apply_update(default_session(CLONING), {"voice": CLONE}, model=CLONING, cfg=cfg, meta=wrong)
    assert up.error is None and up.session["voice"] == CLONE
    why = voice_error_after(cfg, CLONE, CLONING, record=wrong, meta=wrong)
    assert why is not None and "cannot be used with model" in why
    assert voice_error_after(cfg, CLONE, CLONING, record=None, meta=None) == f"Voice '{CLONE}' not found."
    assert voice_error_after(cfg, CLONE, CLONING, record=record(), meta=record(), current="old") is None
    assert voice_error_after(cfg, "Ethan", CLONING, current="old") is None  # a good built-in voice clears it
    assert "not work on" in voice_error_after(cfg, CLONE, MODEL, record=record(), meta=record())  # §7.11


def test_with_the_old_guess_an_unusable_voice_is_refused_at_the_update(cfg):
    old = replace(cfg, realtime_voice_error_timing="update")
    up = apply_update(default_session(CLONING), {"voice": CLONE}, model=CLONING, cfg=old, meta=None)
    assert up.error is not None and up.error["param"] == "session.voice" and "not found" in up.error["message"]
    assert apply_update(default_session(CLONING), {"voice": CLONE}, model=CLONING, cfg=old, meta=record()).error is None
    assert voice_error_after(old, "Ethan", CLONING, current=None) is None
    assert voice_error_after(old, CLONE, CLONING, current="kept") == "kept"  # checked at the update already


def test_response_options_override_modalities_and_instructions():
    s = default_session(MODEL)
    assert response_options(s, None, model=MODEL) == ResponseOptions(None, None)  # the session's
    assert response_options(s, {"modalities": ["audio", "text"], "instructions": "Be brief."}, model=MODEL) \
        == ResponseOptions(["text", "audio"], "Be brief.")  # canonical order (the SDK sends audio first)
    assert response_options(s, {"modalities": ["text"], "instructions": 5}, model=MODEL) \
        == ResponseOptions(["text"], None)  # a non-string instructions is ignored


@pytest.mark.parametrize("body, param, message", [
    ("text please", "response", "'response' must be an object."),
    ({"modalities": ["audio"]}, "response.modalities", "modalities"),
    ({"modalities": "text"}, "response.modalities", "modalities"),
])
def test_unusable_response_options_are_refused(body, param, message):
    with pytest.raises(OptionsError) as info:
        response_options(default_session(MODEL), body, model=MODEL)
    assert info.value.param == param and message in info.value.message


def test_the_session_state_keeps_the_voice_standing(cfg):
    state = SessionState(default_session(CLONING))
    assert state.voice_record is None and state.voice_error is None and not state.dead
    up = apply_update(state.session, {"voice": CLONE}, model=CLONING, cfg=cfg, meta=None)
    state.session = up.session
    state.accept_voice(None, cfg=cfg, model=CLONING, meta=None)  # §7.3: accepted, refused at the trigger
    assert state.voice_error == f"Voice '{CLONE}' not found."
    state.refuse_voice(cfg)
    assert state.dead  # realtime_dead_after_voice_error (observed): later updates go unanswered
    state.refuse_voice(replace(cfg, realtime_dead_after_voice_error=False))
    assert not state.dead
    state.session = apply_update(state.session, {"voice": "Ethan"}, model=CLONING, cfg=cfg).session
    state.accept_voice(None, cfg=cfg, model=CLONING)
    assert state.voice_error is None and state.voice_record is None
