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

Mandarin (issue 10 item 6): one reference speaker and two prompts in Mandarin, texts written for this
project, spoken by Kokoro-82M (``qvtools.server.tts_kokoro``, voice ``KOKORO_VOICE``; Apache-2.0, no GPL
piece for zh) and converted exactly like the English voices, with the Kokoro voice's own profile
(measured on ``tts_kokoro.CALIBRATION_TEXTS["zh"]``) as the conversion source. They draw from their own
seeded generator and are made after every Piper item, so the English files do not change.

Prompts (``prompts/*.wav``, 16 kHz 16-bit mono, 2-5 s): short spoken questions, listed with their
texts in ``prompts.json``. ``voices.json`` lists the speakers, texts and target profiles. Every voice and
prompt has a ``language`` (the ``input.language`` code it is enrolled / spoken in).

Determinism: onnxruntime's global seed is set before the Piper session is created (Piper's VITS
noise is drawn inside the ONNX graph), the pauses and noise come from ``numpy.random.default_rng``;
Kokoro has no random op. Re-running on the same package versions gives identical samples
(``--check``; tests/test_data.py runs ``--check --language zh``).
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
#: Language of every Piper item above.
PIPER_LANGUAGE = "en"

# Mandarin (issue 10 item 6): Kokoro zh, converted like the English voices.
#: The Kokoro voice the Mandarin items are spoken in (a female speaker; Mandarin round-trip CER 0.14,
#: qvtools.server.tts_kokoro.DEFAULT_VOICE notes).
KOKORO_VOICE = "jf_tebukuro"
ZH_SPEAKERS = [
    # Target chosen for intelligibility after conversion (Whisper base CER of the written file vs the text,
    # 2026-11-27): Sunny 0.19, Vivian 0.23 (length 0.95), Serena 0.23, Tina 0.45, Cherry 0.57 -- the slow
    # speaking-rate targets (3.7-3.9 Hz against Kokoro's 4.3) smear Mandarin syllables. Unconverted: 0.17.
    ("mei", "Sunny", 1.0, 0.8,
     "欢迎收听今天的城市生活节目。这个周末天气晴朗，很多家庭会去郊外野餐。"
     "如果您也打算出门，别忘了带上一瓶水。"),
]
ZH_PROMPTS = [
    ("rain_zh", "明天上海会下雨吗？"),
    ("cook_zh", "晚饭做什么菜比较简单？"),
]
#: The Mandarin items' own generator seed (SEED's rng stays the English items').
ZH_SEED = [SEED, 86]


def _peak_normalise(x: np.ndarray, peak: float = TARGET_PEAK) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def _with_noise(x: np.ndarray, rng) -> np.ndarray:
    noise = rng.standard_normal(x.shape[0]).astype(np.float32) * np.float32(10 ** (NOISE_DBFS / 20))
    return np.clip(x + noise, -1.0, 1.0).astype(np.float32)


def make_voice(synth, source_profile, name, builtin, length_scale, env_strength, text, rng,
               language=PIPER_LANGUAGE):
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
    meta = {"name": name, "file": f"voices/{name}.wav", "text": text, "language": language, "profile_from": builtin,
            "tts_length_scale": length_scale, "envelope_strength": env_strength,
            "target_f0_hz": round(target.f0_median_hz, 1), "target_formant_scale": round(target.formant_scale, 3),
            "target_speaking_rate_hz": round(target.speaking_rate_hz, 2),
            "duration_s": round(len(y) / VOICE_SR, 3), "sample_rate": VOICE_SR}
    return y, meta


def make_prompt(synth, name, text, rng, language=PIPER_LANGUAGE):
    from qvtools.audio import resample

    x, sr = synth.synthesize(text)
    pad = np.zeros(int(0.2 * sr), np.float32)
    y = resample(np.concatenate([pad, x, pad]), sr, PROMPT_SR)
    y = _with_noise(_peak_normalise(y), rng)
    return y, {"name": name, "file": f"prompts/{name}.wav", "text": text, "language": language,
               "duration_s": round(len(y) / PROMPT_SR, 3), "sample_rate": PROMPT_SR}


def _piper_items():
    import onnxruntime

    from qvtools.server.tts import VOICE_NAME, Synthesizer
    from qvtools.server.voice import analyze

    onnxruntime.set_seed(SEED)  # before the session exists: seeds the VITS noise ops
    # the graph's own noise ops (not the service's per-sentence seeded noise, issue 19): the packaged English
    # samples were made this way and stay byte-identical on regeneration
    synth = Synthesizer(seeded_noise=False)
    rng = np.random.default_rng(SEED)
    # The source profile: Piper's own voice, measured once on all the speaker texts.
    calib, sr = synth.synthesize(" ".join(t for *_, t in SPEAKERS))
    source = analyze(calib, sr)
    files, voices, prompts = [], [], []
    for name, builtin, ls, es, text in SPEAKERS:
        y, meta = make_voice(synth, source, name, builtin, ls, es, text, rng)
        files.append((meta["file"], y, VOICE_SR))
        voices.append({**meta, "tts": VOICE_NAME})
    for name, text in PROMPTS:
        y, meta = make_prompt(synth, name, text, rng)
        files.append((meta["file"], y, PROMPT_SR))
        prompts.append({**meta, "tts": VOICE_NAME})
    return files, voices, prompts


def _kokoro_items():
    """The Mandarin voice and prompts: Kokoro zh (qvtools.server.tts_kokoro), the same conversion as above."""
    from qvtools.server.tts_kokoro import CALIBRATION_TEXTS, KokoroSynthesizer
    from qvtools.server.voice import analyze

    synth = KokoroSynthesizer("zh", voice=KOKORO_VOICE, threads=1)
    rng = np.random.default_rng(ZH_SEED)
    calib, sr = synth.synthesize(CALIBRATION_TEXTS["zh"])  # the Kokoro voice's own profile (conversion source)
    source = analyze(calib, sr)
    files, voices, prompts = [], [], []
    for name, builtin, ls, es, text in ZH_SPEAKERS:
        y, meta = make_voice(synth, source, name, builtin, ls, es, text, rng, language="zh")
        files.append((meta["file"], y, VOICE_SR))
        voices.append({**meta, "tts": synth.voice_name})
    for name, text in ZH_PROMPTS:
        y, meta = make_prompt(synth, name, text, rng, language="zh")
        files.append((meta["file"], y, PROMPT_SR))
        prompts.append({**meta, "tts": synth.voice_name})
    return files, voices, prompts


def generate(languages=("en", "zh")):
    """(files, voices manifest, prompts manifest): files are (relative path, samples, rate).
    ``languages`` limits the work to the Piper ("en") and/or the Kokoro ("zh") items (the manifests then
    list only those)."""
    files, voices, prompts = [], [], []
    if PIPER_LANGUAGE in languages:
        f, v, p = _piper_items()
        files, voices, prompts = files + f, voices + v, prompts + p
    if "zh" in languages:  # after every Piper item: the Piper session and its seed are untouched
        f, v, p = _kokoro_items()
        files, voices, prompts = files + f, voices + v, prompts + p
    common = {"generator": "data/make_samples.py", "seed": SEED, "licence": "see README.md (qvtools/samples/README.md)"}
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
    ap.add_argument("--language", choices=("en", "zh"), action="append",
                    help="with --check: only the items of this language (their files and manifest entries)")
    args = ap.parse_args(argv)

    languages = tuple(args.language or ("en", "zh"))
    if not args.check and len(languages) < 2:
        ap.error("--language needs --check (writing the manifests needs every item)")
    files, voices_doc, prompts_doc = generate(languages)
    outputs = [(rel, _wav_bytes(y, sr), f"{len(y) / sr:.2f} s @ {sr} Hz") for rel, y, sr in files]
    if len(languages) == 2:
        outputs += [("voices.json", _json_bytes(voices_doc), "manifest"),
                    ("prompts.json", _json_bytes(prompts_doc), "manifest")]
    if args.check:
        bad = 0
        for rel, data, _ in outputs:
            path = args.out / rel
            same = path.is_file() and path.read_bytes() == data
            print(f"{'same' if same else 'DIFFERENT'}  {rel}")
            bad += not same
        if len(languages) < 2:  # the manifests on disk hold these items' entries unchanged
            for doc, key, fname in ((voices_doc, "voices", "voices.json"), (prompts_doc, "prompts", "prompts.json")):
                path = args.out / fname
                listed = {e["name"]: e for e in json.loads(path.read_text(encoding="utf-8"))[key]} \
                    if path.is_file() else {}
                for entry in doc[key]:
                    same = listed.get(entry["name"]) == entry
                    print(f"{'same' if same else 'DIFFERENT'}  {fname} {entry['name']}")
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
