"""VoiceRegistry against the real local service: one enrollment per recording, model and key."""

from __future__ import annotations

import io
import threading

import pytest
import soundfile as sf

from qvtools.config import Settings
from qvtools.enrollment import VoiceClient
from qvtools.registry import VoiceRegistry, content_hash, key_fingerprint
from qvtools.server import LocalService

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with LocalService(data_dir=tmp_path_factory.mktemp("svc")) as svc:
        yield svc


def make(service, tmp_path, key):
    client = VoiceClient(Settings(region="local", base_url=service.url, api_key=key, data_dir=tmp_path))
    return VoiceRegistry(tmp_path / "registry.sqlite3", client)


def test_content_hash_ignores_the_container(enrollment_speech, enrollment_wav):
    pcm, sr = sf.read(io.BytesIO(enrollment_wav), dtype="int16")  # the same samples, losslessly re-encoded
    buf = io.BytesIO()
    sf.write(buf, pcm, sr, format="FLAC", subtype="PCM_16")
    assert content_hash(enrollment_wav) == content_hash(buf.getvalue())
    assert content_hash(b"not audio at all").startswith("bytes:")
    assert key_fingerprint("sk-a") != key_fingerprint("sk-b") and "sk-a" not in key_fingerprint("sk-a")


@pytest.mark.slow
def test_ensure_reuses_and_reconciles(service, tmp_path, enrollment_wav):
    reg = make(service, tmp_path, "sk-reg")
    first = reg.ensure(enrollment_wav, PLUS, "reg")
    assert reg.ensure(enrollment_wav, PLUS, "reg").voice == first.voice
    assert reg.client.count() == 1
    other_model = reg.ensure(enrollment_wav, FLASH, "reg")
    assert other_model.voice != first.voice and reg.client.count() == 2
    assert reg.lookup(enrollment_wav, PLUS).voice == first.voice

    reg.client.delete(first)
    assert reg.reconcile() == [first.voice]
    assert reg.lookup(enrollment_wav, PLUS) is None
    again = reg.ensure(enrollment_wav, PLUS, "reg")
    assert again.voice != first.voice and reg.client.count() == 2
    assert b"sk-reg" not in (tmp_path / "registry.sqlite3").read_bytes()
    reg.close()


@pytest.mark.slow
def test_other_key_gets_its_own_voice(service, tmp_path, enrollment_wav):
    a = make(service, tmp_path, "sk-reg-a")
    b = make(service, tmp_path, "sk-reg-b")  # same registry file, another key
    assert a.ensure(enrollment_wav, PLUS, "a").voice != b.ensure(enrollment_wav, PLUS, "b").voice
    assert a.client.count() == 1 and b.client.count() == 1


@pytest.mark.slow
def test_concurrent_ensure_creates_once(service, tmp_path, enrollment_wav):
    regs = [make(service, tmp_path, "sk-reg-conc") for _ in range(3)]  # one connection each, like processes
    barrier = threading.Barrier(len(regs))
    results, errors = [], []

    def work(reg):
        try:
            barrier.wait(30)
            results.append(reg.ensure(enrollment_wav, PLUS, "conc").voice)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert regs[0].client.count() == 1


OLD_SCHEMA = """
CREATE TABLE voices (
    content_sha TEXT NOT NULL, target_model TEXT NOT NULL, base_url TEXT NOT NULL, key_fp TEXT NOT NULL,
    voice TEXT NOT NULL, preferred_name TEXT, created_at REAL NOT NULL, raw TEXT,
    PRIMARY KEY (content_sha, target_model, base_url, key_fp)
);
"""


def test_old_registry_file_is_migrated_keeping_its_rows(tmp_path, enrollment_wav):
    """A registry written before fallback_mode/fallback_reason existed keeps its rows (NULL = not said)."""
    import sqlite3

    from enrollment_support import ReplayServer, load_fixture

    path = tmp_path / "registry.sqlite3"
    fx = load_fixture("enrollment_create_fallback.json")
    with ReplayServer(fx["exchanges"]) as srv:
        client = VoiceClient(Settings(region="local", base_url=srv.url, api_key="sk-old", data_dir=tmp_path))
        db = sqlite3.connect(path)
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO voices VALUES (?,?,?,?,?,?,?,?)",
                   (content_hash(enrollment_wav), PLUS, srv.url, key_fingerprint("sk-old"),
                    "qwen-omni-vc-old-voice-20250101000000000-0000", "old", 1.0, '{"language": "en"}'))
        db.commit()
        db.close()
        reg = VoiceRegistry(path, client)
        kept = reg.lookup(enrollment_wav, PLUS)
        assert kept.voice == "qwen-omni-vc-old-voice-20250101000000000-0000" and kept.language == "en"
        assert kept.fallback_mode is None and kept.fallback_reason is None
        assert reg.ensure(enrollment_wav, PLUS, "old").voice == kept.voice and srv.requests == []  # reused
        reg.close()
        reg = VoiceRegistry(path, client)  # opening a migrated file again is a no-op
        assert [v.voice for v in reg.voices()] == [kept.voice]
        reg.close()
    cols = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(voices)")]
    assert cols[-3:] == ["fallback_mode", "fallback_reason", "clone_mode"]


def test_registry_keeps_a_degraded_clones_fallback_mode(tmp_path, enrollment_wav, caplog):
    from enrollment_support import ReplayServer, load_fixture

    fx = load_fixture("enrollment_create_fallback.json")
    with ReplayServer(fx["exchanges"]) as srv:
        reg = VoiceRegistry(tmp_path / "r.sqlite3", VoiceClient(Settings(region="local", base_url=srv.url,
                                                                          api_key="sk-fb", data_dir=tmp_path)))
        made = reg.ensure(enrollment_wav, PLUS, "degraded")
        assert (made.fallback_mode, made.fallback_reason) == (True, "no_valid_asr_segments")
        reg.close()
        reg = VoiceRegistry(tmp_path / "r.sqlite3", reg.client)  # read back from the file
        with caplog.at_level("WARNING", logger="qvtools.registry"):
            again = reg.ensure(enrollment_wav, PLUS, "degraded")
        assert srv.actions() == ["list", "create"]  # created once
        assert (again.voice, again.fallback_mode, again.fallback_reason) == (
            made.voice, True, "no_valid_asr_segments")
        assert [(v.voice, v.fallback_mode) for v in reg.voices()] == [(made.voice, True)]
        assert any("degraded clone" in r.getMessage() for r in caplog.records)
        reg.close()
