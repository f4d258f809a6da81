"""Generate the packaged sample data with qvtools' own speech engines (deterministic, seeded).

The samples ship inside the package, in ``qvtools/samples/`` (found at run time with
``qvtools.resources.samples_dir()``); this script, in the checkout's ``data/``, writes that single copy::

    python data/make_samples.py            # rewrite qvtools/samples/{voices,prompts}/*.wav and the manifests
    python data/make_samples.py --check    # regenerate in memory, compare byte for byte, write nothing

Reference speakers (``voices/*.wav``, 24 kHz 16-bit mono, 10-20 s): English text written for this
project is spoken by Piper (``qvtools.server.tts``, voice en_US-joe-medium) one sentence at a time,
joined with seeded pauses of 0.35-0.95 s (the enrollment rule is "pauses <= 2 s"), and converted with
``qvtools.server.voice.convert`` toward a distinct target profile built from a built-in voice profile
(``builtin_profile``: F0 level and spread, formant scale, spectral envelope/tilt, speaking rate),
with a per-speaker Piper speaking rate. A faint seeded noise floor (about -66 dBFS) stands in for a
quiet room. Every reference must pass ``qvtools.preflight.check`` (tests/test_data.py checks it).

Prompts (``prompts/*.wav``, 16 kHz 16-bit mono, 2-5 s): short spoken questions, listed with their
texts in ``prompts.json``. ``voices.json`` lists the speakers, texts and target profiles.

Determinism: onnxruntime's global seed is set before the Piper session is created (Piper's VITS
noise is drawn inside the ONNX graph), the pauses and noise come from ``numpy.random.default_rng``.
Re-running on the same package versions gives identical samples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: The packaged samples of THIS checkout (not of whatever qvtools is installed): the single copy.
SAMPLES = HERE.parent / "qvtools" / "samples"
SEED = 20240611
VOICE_SR = 24000
PROMPT_SR = 16000
NOISE_DBFS = -66.0
TARGET_PEAK = 0.7

# (name, built-in profile it is built from, Piper length_scale, envelope transfer strength, text)
SPEAKERS = [
    ("ava", "Serena", 0.92, 0.8,
     "Good morning, and thank you for calling the library help desk. "
     "Our reading rooms open at nine, and the children's corner stays open until six. "
     "If you would like to renew a book, I can do that for you right now."),
    ("ben", "Ethan", 1.05, 0.7,
     "The old lighthouse stands at the end of a narrow path, about a mile from the harbour. "
     "On clear evenings you can see its beam sweep across the water. "
     "My grandfather kept the lamp burning for almost thirty years."),
    ("cleo", "Bellona", 1.0, 1.0,
     "To make the bread, mix the flour, the salt and the yeast in a large bowl. "
     "Add warm water slowly, and knead the dough for about ten minutes. "
     "Then cover it with a towel and leave it somewhere warm."),
    ("dev", "Aiden", 0.95, 0.8,
     "Welcome to the quarterly project review. "
     "We finished the new booking system two weeks ahead of schedule, and the early feedback is very good. "
     "There are still a few open questions about the mobile app. "
     "Let's go through them one by one."),
    ("eli", "Chelsie", 1.08, 0.4,
     "Every spring, the river rises and floods the lower meadow. "
     "The geese arrive a few days later, always in the same noisy groups. "
     "By June the water is gone, and the grass grows back greener than before."),
]

PROMPTS = [
    ("weather", "What is the weather usually like in Lisbon in the spring?"),
    ("dinner", "Can you suggest something quick for dinner tonight?"),
    ("math", "What is twelve times fourteen?"),
    ("travel", "How long is the flight from London to Tokyo?"),
]


def _peak_normalise(x: np.ndarray, peak: float = TARGET_PEAK) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def _with_noise(x: np.ndarray, rng) -> np.ndarray:
    noise = rng.standard_normal(x.shape[0]).astype(np.float32) * np.float32(10 ** (NOISE_DBFS / 20))
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


def make_voice(synth, source_profile, name, builtin, length_scale, env_strength, text, rng):
    """Sentences -> Piper -> pauses -> voice conversion -> 24 kHz, level, noise floor."""
    from qvtools.audio import resample
    from qvtools.server.tts import split_sentences
    from qvtools.server.voice import builtin_profile, convert

    sr = synth.sample_rate
    parts = []
    sentences = split_sentences(text)
    for i, sentence in enumerate(sentences):
        x, _ = synth.synthesize(sentence, length_scale=length_scale)
        parts.append(x)
        if i < len(sentences) - 1:
            # Natural pauses well below the enrollment limit ("pauses <= 2 s", protocol reference §2.1).
            parts.append(np.zeros(int(rng.uniform(0.35, 0.95) * sr), np.float32))
    lead = np.zeros(int(0.25 * sr), np.float32)
    speech = np.concatenate([lead, *parts, lead])
    target = builtin_profile(builtin)
    y = convert(speech, sr, target, source=source_profile, envelope_strength=env_strength)
    y = resample(y, sr, VOICE_SR)
    y = _with_noise(_peak_normalise(y), rng)
    meta = {"name": name, "file": f"voices/{name}.wav", "text": text, "profile_from": builtin,
            "piper_length_scale": length_scale, "envelope_strength": env_strength,
            "target_f0_hz": round(target.f0_median_hz, 1), "target_formant_scale": round(target.formant_scale, 3),
            "target_speaking_rate_hz": round(target.speaking_rate_hz, 2),
            "duration_s": round(len(y) / VOICE_SR, 3), "sample_rate": VOICE_SR}
    return y, meta


def make_prompt(synth, name, text, rng):
    from qvtools.audio import resample

    x, sr = synth.synthesize(text)
    pad = np.zeros(int(0.2 * sr), np.float32)
    y = resample(np.concatenate([pad, x, pad]), sr, PROMPT_SR)
    y = _with_noise(_peak_normalise(y), rng)
    return y, {"name": name, "file": f"prompts/{name}.wav", "text": text,
               "duration_s": round(len(y) / PROMPT_SR, 3), "sample_rate": PROMPT_SR}


def generate():
    """Yield (relative path, samples, rate) for every file, plus the two manifests."""
    import onnxruntime

    from qvtools.server.tts import VOICE_NAME, Synthesizer
    from qvtools.server.voice import analyze

    onnxruntime.set_seed(SEED)  # before the session exists: seeds the VITS noise ops
    synth = Synthesizer()
    rng = np.random.default_rng(SEED)
    # The source profile: Piper's own voice, measured once on all the speaker texts.
    calib, sr = synth.synthesize(" ".join(t for *_, t in SPEAKERS))
    source = analyze(calib, sr)
    files, voices, prompts = [], [], []
    for name, builtin, ls, es, text in SPEAKERS:
        y, meta = make_voice(synth, source, name, builtin, ls, es, text, rng)
        files.append((meta["file"], y, VOICE_SR))
        voices.append(meta)
    for name, text in PROMPTS:
        y, meta = make_prompt(synth, name, text, rng)
        files.append((meta["file"], y, PROMPT_SR))
        prompts.append(meta)
    common = {"generator": "data/make_samples.py", "seed": SEED, "tts": VOICE_NAME,
              "licence": "see README.md (qvtools/samples/README.md)"}
    return files, {**common, "voices": voices}, {**common, "prompts": prompts}


def _wav_bytes(y, sr) -> bytes:
    """The exact bytes ``soundfile`` writes for a 16-bit PCM WAV (what lands on disk)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _json_bytes(doc) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=SAMPLES, help="output directory (default: qvtools/samples/)")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk byte for byte, write nothing")
    args = ap.parse_args(argv)

    files, voices_doc, prompts_doc = generate()
    outputs = [(rel, _wav_bytes(y, sr), f"{len(y) / sr:.2f} s @ {sr} Hz") for rel, y, sr in files]
    outputs += [("voices.json", _json_bytes(voices_doc), "manifest"),
                ("prompts.json", _json_bytes(prompts_doc), "manifest")]
    if args.check:
        bad = 0
        for rel, data, _ in outputs:
            path = args.out / rel
            same = path.is_file() and path.read_bytes() == data
            print(f"{'same' if same else 'DIFFERENT'}  {rel}")
            bad += not same
        return 1 if bad else 0
    for rel, data, what in outputs:
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{rel}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
