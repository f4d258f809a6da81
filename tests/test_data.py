"""The packaged sample data (qvtools/samples, made by data/make_samples.py): every reference voice passes
preflight, the manifests match the files, every item has a language, the Mandarin items (issue 10 item 6)
are what their manifest says and regenerate byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from qvtools import experiment, preflight
from qvtools.resources import samples_dir

DATA = samples_dir()


@pytest.fixture(scope="module")
def voices_doc():
    return json.loads((DATA / "voices.json").read_text(encoding="utf-8"))


def test_voice_manifest_matches_files(voices_doc):
    listed = {v["file"] for v in voices_doc["voices"]}
    on_disk = {f"voices/{p.name}" for p in (DATA / "voices").glob("*.wav")}
    assert listed == on_disk
    assert 4 <= len(listed) <= 6
    assert {v["language"] for v in voices_doc["voices"]} == {"en", "zh"}


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((DATA / "voices").glob("*.wav")), ids=lambda p: p.stem)
def test_reference_voice_passes_preflight(path):
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert 10.0 <= info.frames / info.samplerate <= 20.0
    report = preflight.check(path)
    assert report.status == "pass", report.to_text()
    assert report["pauses"].value <= 2.0


def test_prompt_manifest_matches_files():
    doc = json.loads((DATA / "prompts.json").read_text(encoding="utf-8"))
    prompts = experiment.sample_prompts()
    assert [p.name for p in prompts] == [p["name"] for p in doc["prompts"]]
    assert {p.path.name for p in prompts} == {q.name for q in (DATA / "prompts").glob("*.wav")}
    assert 3 <= len(prompts) <= 6
    assert sorted(p.language for p in prompts).count("zh") == 2 and all(p.language in ("en", "zh") for p in prompts)
    for p in prompts:
        info = sf.info(p.path)
        assert info.samplerate in (16000, 24000) and info.channels == 1 and info.subtype == "PCM_16"
        assert 2.0 <= info.frames / info.samplerate <= 5.0, p.name
        assert p.text and p.text.strip()


def test_sample_voices_are_the_data_voices(voices_doc):
    voices = experiment.sample_voices()
    assert [v.name for v in voices] == ["ava", "ben", "cleo", "dev", "eli", "mei"]
    by_name = {v["name"]: v for v in voices_doc["voices"]}
    for v in voices:  # enrolled with the manifest's language and transcript (input.language / input.text, §2.1)
        assert v.enroll_args() == {"language": by_name[v.name]["language"], "text": by_name[v.name]["text"]}
    assert voices[-1].language == "zh"


def test_the_mandarin_voice_meets_only_the_mandarin_prompts():
    voices, prompts = experiment.sample_voices(), experiment.sample_prompts()
    pairs = {(v.name, p.name) for v in voices for p in prompts if experiment.speaks(v, p)}
    assert {p for v, p in pairs if v == "mei"} == {"rain_zh", "cook_zh"}
    assert {v for v, p in pairs if p in ("rain_zh", "cook_zh")} == {"mei"}
    assert len(pairs) == 5 * 4 + 2


@pytest.mark.slow
def test_mandarin_samples_say_their_text():
    """The Mandarin voice and prompts, transcribed by the offline ASR, are their manifest texts (CER), and
    the voice passes the enrollment text check the local service applies."""
    from qvtools import metrics
    from qvtools.audio import load

    for v in experiment.sample_voices():
        if v.language == "zh":
            x, sr = load(v.path, mono=True)
            score, metric, heard = metrics.transcript_mismatch(x, sr, v.text, "zh")
            # 0.28 on 2026-12-03 (ctranslate2 4.8.5, faster-whisper 1.2.1), also at the previous stop's commit:
            # the ASR environment moved, not the sample; still far under the enrollment check's 0.55
            assert metric == "cer" and score <= 0.3, (v.name, score, heard)
    for p in experiment.sample_prompts():
        if p.language == "zh":
            x, sr = load(p.path, mono=True)
            score, metric, heard = metrics.transcript_mismatch(x, sr, p.text, "zh")
            assert score <= 0.35, (p.name, score, heard)  # cook_zh 0.30 (3 of 10 characters), same drift


@pytest.mark.slow
@pytest.mark.parametrize("language, engine, entries", [("zh", "misaki", 3 + 3), ("en", "piper", 9 + 9)])
def test_samples_regenerate_byte_for_byte(language, engine, entries):
    """data/make_samples.py --check --language L: the engine (Kokoro for zh; for en Piper with its graph's own
    onnxruntime-seeded noise, not the service's per-sentence seeded noise) + conversion again, compared byte for
    byte with the packaged files and manifest entries (about a minute each on a shared 2-core machine)."""
    script = Path(__file__).resolve().parents[1] / "data" / "make_samples.py"
    if not script.is_file():
        pytest.skip("data/make_samples.py is in the checkout, not in an installed package")
    pytest.importorskip(engine)
    res = subprocess.run([sys.executable, str(script), "--check", "--language", language], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("same") == entries and "DIFFERENT" not in res.stdout


def test_readme_states_licences_and_no_shared_copy():
    text = (DATA / "README.md").read_text(encoding="utf-8")
    for needle in ("GPL-3.0", "MIT", "CC0", "../shared/data/speech"):
        assert needle in text
