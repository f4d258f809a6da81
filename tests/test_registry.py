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
