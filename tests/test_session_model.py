"""qvtools.realtime.session_model: one session model for the client and the local service (issue 19 item 2).

The client's :attr:`RealtimeSession.effective` and the local service's configuration are built by the same
functions; where they used to disagree, the observed service (protocol reference §7) decides."""

import pytest

from qvtools import catalog
from qvtools.realtime import events as ev
from qvtools.realtime import session_model as sm
from qvtools.server import session_rules as sr

FLASH = "qwen3.5-omni-flash-realtime"
Q3 = "qwen3-omni-flash-realtime"
Q38 = "qwen3.8-omni-flash-realtime"
TURBO = "qwen-omni-turbo-realtime"


def _server(model, *updates):
    cur = sm.default_session(model, "sess_x")
    for upd in updates:
        cur, err = sr.merge_session(cur, upd, model=model, check_voice=False)
        assert err is None, err
    return {k: v for k, v in cur.items() if k != "id"}


def _client(model, *updates):
    eff = sm.effective_session(model)
    for upd in updates:
        eff = sm.effective_session(model, upd, base=eff)
    return eff


@pytest.mark.parametrize("model", [FLASH, Q3, Q38, TURBO])
def test_audio_object_only_for_families_that_configure_it(model):
    """§7.1: no ``session.created`` carried an ``audio`` object; §4.2: only qwen3.5 configures it. The client
    used to add one for every family; now neither side does, and the rates are still the family's."""
    fam = catalog.family(model)
    for cfg in (sm.default_session(model), sm.effective_session(model)):
        assert ("audio" in cfg) is fam.configurable_audio, model
        assert ev.input_format(cfg) == ("pcm", fam.input_sample_rate)
        assert ev.output_format(cfg) == ("pcm", fam.output_sample_rate)
    assert "audio" not in sr.session_echo(sm.default_session(model), "created")


def test_turn_detection_null_is_manual_on_both_sides_and_absent_from_the_echo():
    """§7.2 as corrected by §7.21: after ``turn_detection: null`` the echo has no key; both sides keep None
    (manual mode) in the configuration they act on."""
    upd = {"turn_detection": None}
    server, client = _server(FLASH, upd), _client(FLASH, upd)
    assert server["turn_detection"] is None and client["turn_detection"] is None
    assert "turn_detection" not in sr.session_echo(server, "updated")
    # an update that does not mention it leaves VAD on, with the full default object echoed (§7.21)
    on = _server(FLASH, {"instructions": "x"})
    assert sr.session_echo(on, "updated")["turn_detection"] == sm.default_turn_detection()
    # back to VAD: the object merges over the §4.2 default again
    back = {"turn_detection": {"type": "server_vad", "silence_duration_ms": 1200}}
    assert _server(FLASH, upd, back) == _client(FLASH, upd, back)
    assert _client(FLASH, upd, back)["turn_detection"]["threshold"] == catalog.DEFAULT_VAD_THRESHOLD


def test_null_fields_inside_turn_detection_mean_not_given_on_both_sides():
    """The SDK sends nulls for options it was not given (SDK notes §1.2, ``{"model": null}``); the client used
    to store them (silence window None), the service ignored them. Both now keep the current value."""
    upd = {"turn_detection": {"type": "server_vad", "silence_duration_ms": None, "threshold": None}}
    for cfg in (_server(FLASH, upd), _client(FLASH, upd)):
        td = cfg["turn_detection"]
        assert td["silence_duration_ms"] == catalog.DEFAULT_SILENCE_DURATION_MS
        assert td["threshold"] == catalog.DEFAULT_VAD_THRESHOLD


@pytest.mark.parametrize("model,updates", [
    # the SDK's own payload (SDK notes §1.2): nulls, legacy pcm16 strings, ["audio","text"]
    (FLASH, [{"modalities": ["audio", "text"], "voice": None, "input_audio_format": "pcm16",
              "output_audio_format": "pcm16", "input_audio_transcription": {"model": None},
              "turn_detection": {"type": "server_vad", "threshold": 0.2, "prefix_padding_ms": 300,
                                 "silence_duration_ms": 800}}]),
    (FLASH, [{"audio": {"input": {"format": {"type": "pcm", "sample_rate": 24000}}}},
             {"audio": {"output": {"format": {"sample_rate": 48000}}}, "temperature": 0.5, "top_k": None}]),
    (FLASH, [ev.session_config(turn_detection="semantic_vad", voice="Cindy", seed=7.0, max_tokens=100.0)]),
    (Q38, [ev.session_config(turn_detection=None, transcription=False, instructions="Be brief.")]),
    (Q3, [{"smooth_output": False, "tools": None, "input_audio_format": "pcm"}]),
    (TURBO, [{"modalities": ["text"], "voice": "Cherry", "turn_detection": {"type": "server_vad",
                                                                            "silence_duration_ms": 500.0}}]),
])
def test_client_and_service_reach_the_same_configuration(model, updates):
    """One merge (``session_model.merge_update``): what the client relies on after an acknowledged update
    equals what the local service acts on."""
    server, client = _server(model, *updates), _client(model, *updates)
    assert server == client
    assert server["input_audio_format"] == catalog.family(model).input_audio_format  # §7.1: family strings


def test_whole_floats_become_ints_and_unknown_keys_are_ignored():
    eff = _client(FLASH, {"seed": 7.0, "turn_detection": {"silence_duration_ms": 500.0}, "not_a_key": 1,
                          "qvtools": {"faults": []}})
    assert eff["seed"] == 7 and isinstance(eff["seed"], int)
    assert eff["turn_detection"]["silence_duration_ms"] == 500
    assert "not_a_key" not in eff and "qvtools" not in eff


def test_merge_update_leaves_its_input_alone():
    cur = sm.default_session(FLASH)
    before = repr(cur)
    sm.merge_update(cur, {"turn_detection": {"threshold": 0.1}, "audio": {"input": {"format": {"type": "wav"}}}})
    assert repr(cur) == before


def test_the_service_still_refuses_what_the_merge_would_accept():
    """Validation stays on the server side: an ``audio`` object on qwen3.8, an out-of-range silence window."""
    cur = sm.default_session(Q38)
    got, err = sr.merge_session(cur, {"audio": {"input": {"format": {"type": "pcm", "sample_rate": 24000}}}})
    assert got is cur and err["param"] == "session.audio"
    got, err = sr.merge_session(cur, {"turn_detection": {"type": "server_vad", "silence_duration_ms": 100}})
    assert got is cur and err["param"] == "session.turn_detection.silence_duration_ms"
