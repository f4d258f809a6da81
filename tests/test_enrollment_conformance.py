"""VoiceClient against replays of the enrollment fixtures (tests/fixtures/cloud/enrollment_*.json, written
from protocol reference §2, §3 and §7.9): mixed-kind lists, a degraded (fallback) create, a paged list,
the documented error answers. Each replay is a stdlib HTTP server on 127.0.0.1 port 0 (enrollment_support).
The local service's own answers are checked against the same key sets."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from enrollment_support import FIXTURES, ReplayServer, load_fixture
from qvtools.config import Settings
from qvtools.enrollment import FALLBACK_ADVICE, VoiceClient
from qvtools.errors import RETRY_AFTER_CAP_S, APIError, ConfigError

KEY = "sk-conformance-0123456789abcdef"
PLUS = "qwen3.5-omni-plus-realtime"


def client_for(url, tmp_path, **kw) -> VoiceClient:
    timeout_s = kw.pop("timeout_s", 10.0)
    return VoiceClient(Settings(region="local", base_url=url, api_key=KEY, data_dir=tmp_path, timeout_s=timeout_s),
                       **kw)


@pytest.fixture
def mixed():
    fx = load_fixture("enrollment_list_mixed.json")
    with ReplayServer(fx["exchanges"]) as srv:
        yield srv, fx


def test_every_enrollment_fixture_names_its_sources():
    names = sorted(p.name for p in FIXTURES.glob("enrollment_*.json"))
    assert names == ["enrollment_create_fallback.json", "enrollment_errors.json", "enrollment_list_mixed.json",
                     "enrollment_list_paged.json"]
    doc = (FIXTURES / "ENROLLMENT.md").read_text(encoding="utf-8")
    for name in names:
        fx = load_fixture(name)
        assert fx["sources"] and all("§" in s for s in fx["sources"]), name
        assert name in doc


def test_mixed_list_yields_kinds(mixed, tmp_path):
    srv, fx = mixed
    with client_for(srv.url, tmp_path) as c:
        voices = list(c.list())
    assert Counter(v.kind for v in voices) == fx["expect"]["kinds"]
    tts = [v for v in voices if v.kind == "tts"]
    assert all(v.voice.startswith("qwen-tts-vc-") and v.target_model == "qwen3-tts-vc-realtime-2026-01-15"
               for v in tts)
    assert voices[0].language == "en" and voices[0].gmt_modified == "2026-03-01 10:15:00"


def test_count_counts_omni_only_unless_asked(mixed, tmp_path):
    srv, fx = mixed
    with client_for(srv.url, tmp_path) as c:
        assert c.count() == fx["expect"]["kinds"]["omni"]
        assert c.count(kinds=("tts",)) == fx["expect"]["kinds"]["tts"]
        assert c.count(all_kinds=True) == 5  # total_count of the answer
        with pytest.raises(ConfigError, match="kinds"):
            c.count(kinds=("cosy",))


def test_purge_never_deletes_a_tts_clone(mixed, tmp_path):
    srv, fx = mixed
    prefix = fx["expect"]["purge_prefix"]
    with client_for(srv.url, tmp_path) as c:
        deleted = c.purge(prefix)
        assert deleted == fx["expect"]["purge_omni_deletes"]
        sent = [r.input["voice"] for r in srv.requests if r.action == "delete"]
        assert sent == deleted and not any(v.startswith("qwen-tts-vc-") for v in sent)
        # even a prefix that names the TTS flavour deletes nothing without asking for that kind
        assert c.purge("qwen-tts-vc-") == []
        assert [r.input["voice"] for r in srv.requests if r.action == "delete"] == sent
        # asked explicitly: the TTS clones too
        both = c.purge(prefix, kinds=("omni", "tts"))
    assert sorted(v for v in both if v.startswith("qwen-tts-vc-")) == [
        "qwen-tts-vc-exp1-voice-20260215093000456-9c1d", "qwen-tts-vc-exp_tts-voice-20260110080000000-0e0e"]


def test_purge_of_given_voices_rechecks_their_kind(mixed, tmp_path):
    srv, _ = mixed
    with client_for(srv.url, tmp_path) as c:
        shown = c.select("exp", all_kinds=True)
        assert {v.kind for v in shown} == {"omni", "tts"}
        deleted = c.purge("exp", voices=shown)  # default kinds: the TTS ones among them are skipped
    assert deleted and all(n.startswith("qwen-omni-vc-exp") for n in deleted)


def test_fallback_create_is_surfaced_with_a_warning(tmp_path, enrollment_wav, caplog):
    fx = load_fixture("enrollment_create_fallback.json")
    with ReplayServer(fx["exchanges"]) as srv, client_for(srv.url, tmp_path) as c:
        with caplog.at_level(logging.WARNING, logger="qvtools.enrollment"):
            voice = c.create(enrollment_wav, PLUS, "degraded", language="en")
        assert srv.actions() == ["list", "create"]
    exp = fx["expect"]
    assert (voice.voice, voice.fallback_mode, voice.fallback_reason, voice.kind) == (
        exp["voice"], exp["fallback_mode"], exp["fallback_reason"], exp["kind"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(voice.voice in m and "degraded" in m and "no_valid_asr_segments" in m and FALLBACK_ADVICE in m
               for m in warnings), warnings


def test_paged_list_walks_every_page_in_order(tmp_path):
    fx = load_fixture("enrollment_list_paged.json")
    exp = fx["expect"]
    with ReplayServer(fx["exchanges"]) as srv, client_for(srv.url, tmp_path) as c:
        voices = list(c.list(page_size=exp["page_size"]))
        pages = [r.input["page_index"] for r in srv.requests]
    assert [v.preferred_name for v in voices] == exp["order"]
    assert Counter(v.kind for v in voices) == exp["kinds"]
    assert pages == list(range(exp["pages"]))


@pytest.mark.parametrize("case", sorted(load_fixture("enrollment_errors.json")["cases"]))
def test_error_answers_map_to_api_error(case, tmp_path, enrollment_wav):
    fx = load_fixture("enrollment_errors.json")
    ex = fx["cases"][case]
    empty_list = load_fixture("enrollment_create_fallback.json")["exchanges"][0]
    with ReplayServer([ex, empty_list]) as srv, client_for(srv.url, tmp_path, max_retries=1,
                                                           backoff_s=0.01) as c:
        call = {"delete": lambda: c.delete("qwen-omni-vc-gone-voice-20260101000000000-abcd"),
                "list": lambda: list(c.list()),
                "create": lambda: c.create(enrollment_wav, PLUS, "bad", language="en")}[ex["request"]["action"]]
        with pytest.raises(APIError) as info:
            call()
    err, want = info.value, ex["expect"]
    assert (err.status, err.code, err.request_id, err.retryable) == (
        want["status"], want["code"], want["request_id"], want["retryable"])
    if case == "voice_not_found":
        assert err.message == "Voice 'qwen-omni-vc-gone-voice-20260101000000000-abcd' not found."
    if case == "throttled":
        # Retry-After: 3600 is capped, and a wait longer than the call's 10 s deadline is not even started
        assert err.retry_after == RETRY_AFTER_CAP_S
        assert [r.action for r in srv.requests] == ["list"]
    assert KEY not in str(err) and KEY not in repr(err)


# -- the local service against the same key sets ---------------------------------------------------------
def test_local_service_answers_carry_the_fixture_key_sets(tmp_path, enrollment_wav):
    """The local service imitates the documented shapes: its list/create/delete answers carry the keys our
    fixtures carry (extra keys would be a guess the real service may not send)."""
    import requests

    from qvtools.config import ENROLLMENT_PATH
    from qvtools.server import LocalService

    mixed = load_fixture("enrollment_list_mixed.json")["exchanges"]
    list_body, delete_body = mixed[0]["body"], mixed[1]["body"]
    create_body = load_fixture("enrollment_create_fallback.json")["exchanges"][1]["body"]
    with LocalService(data_dir=tmp_path / "svc") as svc, client_for(svc.url, tmp_path) as c:
        voice = c.create(enrollment_wav, PLUS, "shape", language="en")
        url = svc.url + ENROLLMENT_PATH
        headers = {"Authorization": f"Bearer {KEY}"}
        listed = requests.post(url, json={"model": "qwen-voice-enrollment", "input": {"action": "list"}},
                               headers=headers, timeout=30).json()
        deleted = requests.post(url, json={"model": "qwen-voice-enrollment",
                                           "input": {"action": "delete", "voice": voice.voice}},
                                headers=headers, timeout=30).json()
    assert set(listed) == set(list_body) and set(listed["output"]) == set(list_body["output"])
    assert set(listed["output"]["voice_list"][0]) == set(list_body["output"]["voice_list"][0])
    assert set(deleted) == set(delete_body)
    # create: the documented keys are there; fallback_* are optional (QC-VC only sends them when relevant)
    assert {"voice", "target_model"} <= set(voice.raw["output"]) <= set(create_body["output"])
    assert set(voice.raw) == set(create_body)
