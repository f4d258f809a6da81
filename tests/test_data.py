"""The packaged sample data (qvtools/samples, made by data/make_samples.py): every reference voice passes
preflight, the manifests match the files."""

from __future__ import annotations

import json
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
    assert 3 <= len(prompts) <= 5
    for p in prompts:
        info = sf.info(p.path)
        assert info.samplerate in (16000, 24000) and info.channels == 1 and info.subtype == "PCM_16"
        assert 2.0 <= info.frames / info.samplerate <= 5.0, p.name
        assert p.text and p.text.strip()


def test_sample_voices_are_the_data_voices():
    assert [v.name for v in experiment.sample_voices()] == ["ava", "ben", "cleo", "dev", "eli"]


def test_readme_states_licences_and_no_shared_copy():
    text = (DATA / "README.md").read_text(encoding="utf-8")
    for needle in ("GPL-3.0", "MIT", "CC0", "../shared/data/speech"):
        assert needle in text
