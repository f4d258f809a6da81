"""The model catalog (qvtools.catalog): one table of families, names outside it accepted with a warning."""

import pytest

from qvtools import catalog


@pytest.mark.parametrize("model, fam, fmt_in, fmt_out, voice, asr", [
    ("qwen3.5-omni-plus-realtime", "qwen3.5-omni-plus", "pcm", "pcm", "Tina", "qwen3-asr-flash-realtime"),
    ("qwen3.5-omni-flash-realtime-2026-03-15", "qwen3.5-omni-flash", "pcm", "pcm", "Tina",
     "qwen3-asr-flash-realtime"),
    ("qwen3-omni-flash-realtime-latest", "qwen3-omni-flash", "pcm16", "pcm24", "Cherry", "gummy-realtime-v1"),
    ("qwen3.8-omni-flash-realtime", "qwen3.8-omni-flash", "pcm16", "pcm24", "Chelsie", "gummy-realtime-v1"),
    ("qwen-omni-turbo-realtime", "qwen-omni-turbo", "pcm", "pcm", "Chelsie", "qwen3-asr-flash-realtime"),
])
def test_families_follow_observed_shapes(model, fam, fmt_in, fmt_out, voice, asr):
    f = catalog.family(model)
    assert (f.name, f.input_audio_format, f.output_audio_format, f.default_voice, f.transcription_model) == (
        fam, fmt_in, fmt_out, voice, asr)
    assert f.known and catalog.is_known_model(model) and (catalog.check_model(model) == []) == f.listed
    assert f.default_voice in f.voices


def test_qwen35_voices_exclude_the_observed_failures():
    # §7.11: Cherry and Chelsie fail on qwen3.5-omni-flash; Tina fails on qwen3-omni-flash.
    assert "Cherry" not in catalog.family("qwen3.5-omni-flash-realtime").voices
    assert "Chelsie" not in catalog.family("qwen3.5-omni-plus-realtime").voices
    assert "Tina" not in catalog.family("qwen3-omni-flash-realtime").voices


def test_unknown_omni_realtime_names_are_accepted_with_a_warning():
    f = catalog.family("qwen3.9-omni-plus-realtime")
    assert not f.known and f.tier == "plus" and f.name == "qwen3.9-omni-plus"
    assert catalog.is_realtime_model("qwen3.9-omni-plus-realtime")
    warnings = catalog.check_model("qwen3.9-omni-plus-realtime")
    assert len(warnings) == 1 and "not in the qvtools model catalog" in warnings[0]
    assert "does not look like" in catalog.check_model("gpt-4o-realtime")[0]
    assert catalog.check_model("") == ["the model name is empty"]


def test_base_model_strips_snapshots():
    assert catalog.base_model("qwen3.5-omni-flash-realtime-2026-03-15") == "qwen3.5-omni-flash-realtime"
    assert catalog.base_model("qwen3.5-omni-flash-realtime-latest") == "qwen3.5-omni-flash-realtime"
    assert catalog.base_model("qwen3.5-omni-flash-realtime") == "qwen3.5-omni-flash-realtime"


def test_voice_kinds():
    assert catalog.voice_kind("qwen-omni-vc-a-voice-20260101000000000-abcd") == "omni"
    assert catalog.voice_kind("qwen-tts-vc-a-voice-20260101000000000-abcd") == "tts"
    assert catalog.voice_kind("custom", "qwen3-tts-vc-realtime-2026-01-15") == "tts"
    assert catalog.voice_kind("custom", "qwen3.5-omni-plus-realtime") == "omni"
    assert catalog.voice_kind("custom", None) == "unknown"
    assert catalog.is_cloned_voice("qwen-omni-vc-x") and not catalog.is_cloned_voice("qwen-tts-vc-x")


def test_enrollment_targets():
    assert catalog.check_target_model("qwen3.5-omni-plus-realtime") == []
    assert catalog.check_target_model("qwen3.5-omni-flash") == []
    assert "not one of the documented" in catalog.check_target_model("qwen3-omni-flash-realtime")[0]


def test_clone_model_rule_is_one_definition_used_by_client_and_service():
    """SEED §2.1 (target_model must equal the session model) with §7.19 (a clone enrolled for the
    non-realtime qwen3.5-omni-plus speaks on qwen3.5-omni-plus-realtime)."""
    from qvtools.config import Settings
    from qvtools.errors import VoiceModelMismatch
    from qvtools.server import session_rules as sr
    from qvtools.realtime.session import RealtimeSession

    assert catalog.clone_usable_with("qwen3.5-omni-plus", "qwen3.5-omni-plus-realtime-latest")
    assert not catalog.clone_usable_with("qwen3.5-omni-plus", "qwen3.5-omni-flash-realtime")
    assert not catalog.clone_usable_with(None, "qwen3.5-omni-flash-realtime")
    voice = "qwen-omni-vc-x-voice-20260101000000000-abcd"
    lookup = {voice: "qwen3.5-omni-plus"}.get
    assert sr.voice_problem(voice, "qwen3.5-omni-plus-realtime", lookup) is None
    assert "enrolled for target_model" in sr.voice_problem(voice, "qwen3.5-omni-flash-realtime", lookup)
    settings = Settings(region="local", base_url="http://127.0.0.1:9", api_key="k")
    RealtimeSession(settings, "qwen3.5-omni-plus-realtime", voice=voice, voice_target_model="qwen3.5-omni-plus")
    with pytest.raises(VoiceModelMismatch):
        RealtimeSession(settings, "qwen3.5-omni-flash-realtime", voice=voice, voice_target_model="qwen3.5-omni-plus")


def test_readme_catalog_table_agrees_with_the_catalog():
    """The README's model table is documentation of qvtools.catalog, not a second definition."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): [c.strip() for c in m.group(2).split("|")]
            for m in re.finditer(r"^\| `([a-z0-9.\-]+)` \|(.*)\|$", readme, re.M) if m.group(1) in catalog.FAMILIES}
    assert set(rows) == set(catalog.FAMILIES)
    for name, cells in rows.items():
        fam = catalog.FAMILIES[name]
        voice, formats, asr, _rates, tokens, _clones, tier = cells
        assert voice == fam.default_voice
        assert formats == f"`{fam.input_audio_format}` / `{fam.output_audio_format}`"
        assert asr == f"`{fam.transcription_model}`"
        assert tokens.startswith(f"{fam.audio_tokens_in_per_s:g} / {fam.audio_tokens_out_per_s:g}")
        assert tier == fam.latency_profile


def test_2026_listing_and_text_turn_notes():
    """§7.27: qwen-omni-turbo-realtime is not listed for 2026 accounts (a warning, not a refusal);
    qwen3-omni-flash is reported to ignore typed turns."""
    [warning] = catalog.check_model("qwen-omni-turbo-realtime")
    assert "2026" in warning and "§7.27" in warning
    assert catalog.family("qwen-omni-turbo-realtime").known
    assert catalog.check_model("qwen3-omni-flash-realtime") == []
    assert catalog.family("qwen3-omni-flash-realtime").ignores_text_turns
    assert not catalog.family("qwen3.5-omni-flash-realtime").ignores_text_turns


def test_text_turn_to_qwen3_omni_flash_warns(caplog):
    from realtime_support import settings_for, shared_service

    from qvtools.realtime.session import RealtimeSession

    with RealtimeSession(settings_for(shared_service()), "qwen3-omni-flash-realtime", voice="Ethan") as rt, \
            caplog.at_level("WARNING", logger="qvtools.realtime.session"):
        turn = rt.send_text("Hello, how are you?")
    assert "ignore typed (text) turns" in caplog.text
    assert turn.status == "completed", turn.error  # a warning, not a refusal
