"""The local service's speech path: user audio -> text -> reply text -> speech in the session voice.

:class:`SpeechPipeline` strings together the offline engines:

1. :func:`qvtools.asr.recognize` for the user's audio (:meth:`SpeechPipeline.recognize`): Whisper tiny.en
   for a turn known to be English, Whisper base for any other language and for detecting the language
   per utterance among the configured candidates (Simplified characters for Mandarin),
2. :class:`qvtools.server.responder.Responder` for a deterministic reply text in the turn's language,
3. a TTS engine per language (:meth:`SpeechPipeline.engine`): Piper (one English voice,
   :class:`qvtools.server.tts.Synthesizer`) for English, Kokoro-82M
   (:class:`qvtools.server.tts_kokoro.KokoroSynthesizer`) for Mandarin and Japanese, and for es, fr, it,
   pt, hi when the GPL ``local-gpl`` extra (espeak-ng) is installed. A reply language without an engine
   here is answered in English and the fallback is logged (:meth:`SpeechPipeline.reply_language`),
4. :func:`qvtools.server.voice.convert` to move that speech toward the session voice's
   :class:`~qvtools.server.voice.VoiceProfile` (a built-in voice's fixed profile, or the
   profile measured from a cloned voice's enrollment audio),
5. resampling to the output rate (24 kHz, the realtime API's output format).

Heavy models load once, on first use; the pipeline is safe to share between threads.
Sentences that do not depend on the user's words -- the reply's opener (:meth:`SpeechPipeline.opener_text`)
and template tails -- are synthesized and converted once per voice, language and rate and kept in a
bounded LRU (:meth:`SpeechPipeline.opener_audio`, :meth:`SpeechPipeline.stream_synthesize_reusing`), so the
local service can speak the opener the moment the user stops (issue 11).
Each engine voice's own profile (the conversion *source*) is measured once from a fixed calibration text in
its language (:data:`CALIBRATION_TEXT` for English, per pipeline;
:data:`qvtools.server.tts_kokoro.CALIBRATION_TEXTS` for the others, per process and kept in the model
cache between processes, :meth:`SpeechPipeline.source_profile_for`) and cached: the Kokoro voices are
Japanese speakers, and the timbre of a Mandarin reply comes from converting *that* voice toward the
enrolled one (issue 10 item 2). :meth:`SpeechPipeline.warm` loads all of it ahead of the
first turn (the local service runs it in an executor right after startup,
``ServiceConfig.warm_speech``); a turn arriving meanwhile waits only for what is still
loading, on the same locks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from ..audio import load, resample
from ..catalog import DEFAULT_OUTPUT_SAMPLE_RATE, is_cloned_voice
from ..errors import ConfigError
from ..rundir import write_atomic
from .responder import Responder
from .voice import VoiceProfile, analyze, builtin_profile, convert

__all__ = ["SpeechPipeline", "CALIBRATION_TEXT", "ENGLISH", "OPENER_CACHE_SIZE", "ASR_MEMO_SIZE", "ASR_WAIT_S"]

log = logging.getLogger(__name__)

#: Text the TTS voice speaks once to measure its own profile (phonetically varied, ~15 s).
CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells. "
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood? "
    "Peter and I went to the market this morning to buy fresh bread, apples and a little cheese. "
    "Would you like to join us for dinner on Thursday evening?"
)

#: The language of the Piper voice, and the fallback reply language.
ENGLISH = "en"

# Source profiles of the shared per-language engines (tts.engine_for_language: one instance per process), so
# they are measured once per process, not once per service: engine voice_name -> VoiceProfile.
_SOURCES: dict[str, VoiceProfile] = {}
_SOURCE_LOCKS: dict[str, threading.Lock] = {}
_SOURCES_LOCK = threading.Lock()



def _source_cache_file(key: str, language: str, text: str):
    """Where a Kokoro voice's source profile is kept between processes (the model cache,
    :func:`qvtools.modelfiles.model_cache_dir`), or None when it cannot be named. The name hashes the
    engine voice, the calibration text and the code that makes and reads the profile (voice.py, audio.py,
    tts_kokoro.py), so a change to the analysis or the engine measures it again."""
    try:
        from pathlib import Path

        from .. import audio as _audio
        from ..modelfiles import model_cache_dir
        from . import tts_kokoro as _tk
        from . import voice as _voice

        h = hashlib.sha256()
        for part in (key, language, text):
            h.update(part.encode("utf-8") + b"\x1f")
        for mod in (_voice, _audio, _tk):
            h.update(Path(mod.__file__).read_bytes())
        return model_cache_dir() / "tts-source-profiles" / f"{language}-{h.hexdigest()[:24]}.json"
    except Exception as exc:  # no cache then: measured once per process
        log.debug("no source-profile cache file (%s: %s)", type(exc).__name__, exc)
        return None


def _read_source(path) -> VoiceProfile | None:
    if path is None or not path.is_file():
        return None
    try:
        return VoiceProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except Exception as exc:  # a damaged file is measured again (and rewritten)
        log.warning("ignoring the cached source profile %s (%s)", path, type(exc).__name__)
        return None


def _write_source(path, prof: VoiceProfile) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(prof.to_dict()).encode("utf-8"))  # the one atomic writer (qvtools.rundir)
    except OSError as exc:
        log.info("could not keep the source profile in %s (%s)", path, exc)


#: Enrollment audio analyses kept (a bounded LRU; the realtime half keeps its own per-voice cache).
_PROFILE_CACHE_SIZE = 32

#: Opener sentences (and other sentences that do not depend on the user's words) kept synthesized and
#: converted, per (voice, language, output rate, text): a bounded LRU (issue 11: the opener's audio is ready
#: before the user's words are transcribed). Each entry is 1-3 s of float32 audio (100-300 KB at 24 kHz):
#: at most ~50 MB.
OPENER_CACHE_SIZE = 192

#: Recognitions kept per pipeline (:meth:`SpeechPipeline.recognize`): the last few utterances' transcripts, so the
#: same audio is not decoded twice (issue 22). Each entry is a short text.
ASR_MEMO_SIZE = 16
#: Longest wait for a decode of the same audio running in another thread before decoding it here too.
ASR_WAIT_S = 60.0


def _made_once(cache: OrderedDict, building: dict, lock: threading.Lock, key, make, size: int, wait_s: float):
    """``(value, made here)``: ``cache[key]`` (a bounded LRU of ``size`` entries, guarded by ``lock``), made by
    ``make()`` when absent. A key being made by another thread right now (``building``: key -> Event) is waited
    for up to ``wait_s`` seconds, never made twice; when that build failed or took too long it is made here,
    uncoordinated."""
    for _attempt in range(2):
        with lock:
            value = cache.get(key)
            if value is not None:
                cache.move_to_end(key)
                return value, False
            event = building.get(key)
            if event is None:
                event = building[key] = threading.Event()
                break
        event.wait(wait_s)
    else:
        event = None
    try:
        value = make()
        with lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)
    finally:
        if event is not None:
            with lock:
                building.pop(key, None)
            event.set()
    return value, True


class SpeechPipeline:
    """ASR, reply text, TTS and voice conversion for the local realtime service."""

    def __init__(self, synthesizer=None, *, warm_languages=()):
        self._synth = synthesizer
        #: Languages besides English whose ASR model, TTS engine and source profile :meth:`warm` loads too.
        self.warm_languages = tuple(warm_languages or ())
        self._lock = threading.Lock()
        self._source: VoiceProfile | None = None  # the English (Piper) source profile
        self._responders: dict[tuple[str, int], Responder] = {}
        self._profile_cache: OrderedDict[str, VoiceProfile] = OrderedDict()
        self._openers: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._openers_lock = threading.Lock()
        self._building: dict[tuple, threading.Event] = {}  # opener keys being made now (made once)
        self._heard: OrderedDict[tuple, object] = OrderedDict()  # recognize() results (ASR_MEMO_SIZE)
        self._decoding: dict[tuple, threading.Event] = {}  # recognize() keys being decoded now
        self._heard_lock = threading.Lock()
        #: How many recognize() calls reused a decode of the same audio (issue 22), for tests and benchmarks.
        self.asr_reuses = 0
        #: How many opener sentences were synthesized (cache misses), for tests and benchmarks.
        self.opener_builds = 0
        #: Set once :meth:`warm` has loaded ASR, TTS and the source profile.
        self.ready = threading.Event()
        #: Why the last :meth:`warm` failed (``None`` when it did not).
        self.warm_error: BaseException | None = None

    def __repr__(self) -> str:
        return (f"SpeechPipeline(tts_loaded={self._synth is not None}, source_profile={self._source is not None}, "
                f"ready={self.ready.is_set()})")

    def warm(self, cancel: threading.Event | None = None) -> bool:
        """Load everything a first turn needs: Whisper tiny.en and base (ASR, language detection), Piper (TTS)
        and the TTS source profile, and for each of :attr:`warm_languages` its engine and that engine's
        source profile.

        Idempotent and thread-safe (each engine loads under its own lock, so a concurrent turn
        waits for the part still loading instead of loading it twice). ``cancel`` (set e.g. on
        service shutdown) stops between stages and between calibration sentences. Returns True
        and sets :attr:`ready` when everything is loaded, False when cancelled; a load error
        (e.g. a missing engine package) is stored in :attr:`warm_error` and raised.
        """
        from .. import asr

        # Whisper base detects the language of a turn whose language nobody named (ServiceConfig.
        # realtime_language_candidates), so it loads too
        stages = [("ASR", lambda: asr.load_model(asr.ENGLISH_MODEL)), ("ASR (language detection)",
                                                                       lambda: asr.load_model("base")),
                  ("TTS", lambda: self.synthesizer.sample_rate),
                  ("TTS source profile", lambda: self._source_profile(cancel))]
        for lang in self.warm_languages:  # ServiceConfig.warm_speech_languages
            if self.speakable(lang) is None and lang != ENGLISH:
                stages += [(f"TTS ({lang})", lambda lang=lang: self.engine(lang).sample_rate),
                           (f"TTS source profile ({lang})", lambda lang=lang: self.source_profile_for(lang, cancel))]
        try:
            for name, load in stages:
                if cancel is not None and cancel.is_set():
                    log.info("speech warm-up cancelled before %s", name)
                    return False
                t0 = time.perf_counter()
                if load() is None:  # the source profile stage returns None when cancelled
                    log.info("speech warm-up cancelled during %s", name)
                    return False
                log.debug("speech warm-up: %s loaded in %.2f s", name, time.perf_counter() - t0)
        except BaseException as exc:
            self.warm_error = exc
            raise
        self.warm_error = None
        self.ready.set()
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`warm` to finish; True when ready."""
        return self.ready.wait(timeout)

    # ---------------------------------------------------------------- engines

    @property
    def synthesizer(self):
        if self._synth is None:
            with self._lock:
                if self._synth is None:
                    from .tts import engine_for_language

                    # the process-wide Piper engine (as the Kokoro engines are): one loaded voice however many
                    # services a process starts and stops (a test run starts ~100; each Piper session held
                    # ~100-400 MB that was not given back, and the suite ran out of memory)
                    self._synth = engine_for_language(ENGLISH)
        return self._synth

    def source_profile(self) -> VoiceProfile:
        """The TTS voice's own profile (measured once from :data:`CALIBRATION_TEXT`)."""
        return self._source_profile(None)

    def _source_profile(self, cancel: threading.Event | None) -> VoiceProfile | None:
        # Same samples as synth.synthesize(CALIBRATION_TEXT) (which concatenates stream()), but
        # sentence by sentence so a cancelled warm-up stops early; None when cancelled.
        if self._source is None:
            synth = self.synthesizer
            with self._lock:
                if self._source is None:
                    parts = []
                    for _piece, part in synth.stream(CALIBRATION_TEXT):
                        if cancel is not None and cancel.is_set():
                            return None
                        parts.append(part)
                    x, sr = np.concatenate(parts).astype(np.float32, copy=False), synth.sample_rate
                    prof = analyze(x, sr)
                    prof.name = "tts-source"
                    self._source = prof
                    log.info("TTS source profile: F0 %.0f Hz, formant scale %.3f, rate %.2f/s",
                             prof.f0_median_hz, prof.formant_scale, prof.speaking_rate_hz)
        return self._source

    # ---------------------------------------------------------------- steps

    def recognize(self, x16k, language: str | None = None, candidates=None, detector: str = "english_gate",
                  window: str = "full"):
        """Recognise 16 kHz mono user audio: a :class:`qvtools.asr.Transcription` (text, language,
        probability, model). ``language`` (a documented code or Chinese dialect) skips detection: English
        goes to Whisper tiny.en (better and faster there, :data:`qvtools.asr.ENGLISH_MODEL`), any other
        language to Whisper base. ``None`` detects it per utterance among ``candidates`` (None: all
        documented languages) by ``detector`` (:data:`qvtools.asr.DETECTORS`: tiny.en's English gate first,
        else Whisper base) in Whisper's ``window`` (:data:`qvtools.asr.WINDOWS`; the service passes
        ``ServiceConfig.realtime_asr_window``). Mandarin text is in Simplified characters.

        The same audio with the same arguments is decoded once (issue 22: a manual-mode partial transcription
        of the whole buffer and the commit's final pass, a speculative pass and a final one): the result is
        kept in a bounded LRU (:data:`ASR_MEMO_SIZE`), and a request for audio being decoded right now waits for
        that decode. Whisper here is deterministic (greedy, temperature 0), so the text is the one a second
        decode would give. :attr:`asr_reuses` counts the decodes saved."""
        from .. import asr

        x16k = np.ascontiguousarray(x16k, dtype=np.float32)
        cands = None if candidates is None else tuple(sorted({candidates} if isinstance(candidates, str)
                                                             else set(candidates)))
        key = (hashlib.blake2b(x16k.tobytes(), digest_size=16).digest(), x16k.size, language, cands, detector,
               window, asr.ENGLISH_MODEL, asr.ENGLISH_GATE, asr.FIT_PAD_S)
        rec, made = _made_once(self._heard, self._decoding, self._heard_lock, key,
                               lambda: asr.recognize(x16k, 16000, language, candidates=candidates, detector=detector,
                                                     window=window),
                               ASR_MEMO_SIZE, ASR_WAIT_S)
        if not made:
            with self._heard_lock:
                self.asr_reuses += 1
        return rec

    def detect_language(self, x16k, candidates=None, window: str = "fit") -> str | None:
        """The language of 16 kHz mono speech (Whisper base among ``candidates``, in Whisper's ``window``;
        :func:`qvtools.asr.detect_language`): the realtime service's early detection (issue 22 item 4)."""
        from .. import asr

        return asr.detect_language(np.ascontiguousarray(x16k, dtype=np.float32), 16000, candidates,
                                   window=window)[0]

    def transcribe(self, x16k, language: str | None = ENGLISH, candidates=None) -> str:
        """The text of :meth:`recognize`; English unless told otherwise (``language=None`` detects)."""
        return self.recognize(x16k, language, candidates).text

    def _responder(self, mode: str, seed: int) -> Responder:
        key = (mode, seed)
        responder = self._responders.get(key)
        if responder is None:
            responder = Responder(mode=mode, seed=seed)
            self._responders[key] = responder
        return responder

    def reply_text(self, user_text: str, *, mode: str = "conversation", seed: int = 0, turn_index: int = 0,
                   instructions: str | None = None, language: str | None = None) -> str:
        """The deterministic reply to ``user_text`` (see :mod:`qvtools.server.responder`)."""
        return self._responder(mode, seed).reply(user_text, turn_index=turn_index, instructions=instructions,
                                                 language=language)

    def opener_text(self, *, mode: str = "conversation", seed: int = 0, turn_index: int = 0,
                    instructions: str | None = None, language: str | None = None) -> str | None:
        """The reply's first sentence when it is known before the transcript (:meth:`Responder.opener`);
        :meth:`reply_text` for the same arguments starts with it. None in echo mode."""
        return self._responder(mode, seed).opener(turn_index=turn_index, instructions=instructions,
                                                  language=language)

    # ---------------------------------------------------------------- opener audio (issue 11)

    @staticmethod
    def _opener_key(text: str, voice_key, sample_rate: int, language: str | None, gap: bool = True) -> tuple:
        return (voice_key, (language or "en").lower(), int(sample_rate), text, bool(gap))

    def cached_opener_audio(self, text: str, *, voice_key, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE,
                            language: str | None = None, gap: bool = True) -> np.ndarray | None:
        """The opener's audio when :meth:`opener_audio` already made it for this voice, else None (no
        synthesis: cheap enough for the event loop)."""
        key = self._opener_key(text, voice_key, sample_rate, language, gap)
        with self._openers_lock:
            x = self._openers.get(key)
            if x is not None:
                self._openers.move_to_end(key)
            return x

    def _speak(self, text: str, profile: VoiceProfile, sample_rate: int, gap: bool,
               language: str | None = None) -> np.ndarray:
        """``text`` synthesized and converted as :meth:`stream_synthesize` does inside a reply: its sentences
        with the pause between them, plus the pause after the last one when ``gap`` (a sentence that is
        not the reply's last), converted together, by the engine for ``language`` (None = English)."""
        from .sentences import SENTENCE_GAP_S

        why = self.speakable(language)
        if why is not None:
            raise ConfigError(why)
        synth = self.engine(language)
        source = self.source_profile_for(language)
        parts = [x for _piece, x in synth.stream(text)]
        if gap:
            parts.append(np.zeros(int(SENTENCE_GAP_S * synth.sample_rate), np.float32))
        x = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
        return self._convert(x, synth.sample_rate, profile, sample_rate, source)

    def opener_audio(self, text: str, profile: VoiceProfile, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE, *, voice_key,
                     language: str | None = None, gap: bool = True) -> np.ndarray:
        """``text`` (an opener, :meth:`opener_text`, or any sentence that does not depend on the user's
        words) spoken in ``profile``'s voice, float32 at ``sample_rate``, followed by the pause the TTS puts
        between sentences (``gap``) -- the samples a sentence has when :meth:`stream_synthesize` speaks a
        longer reply. Made once per ``(voice_key, language, sample_rate, text, gap)`` and kept in a bounded
        LRU (:data:`OPENER_CACHE_SIZE`). ``voice_key`` names the voice *and its version* (a cloned voice's
        audio hash), so a re-enrolled voice never gets stale audio."""
        self._check(profile, sample_rate)
        key = self._opener_key(text, voice_key, sample_rate, language, gap)

        def make():
            x = self._speak(text, profile, sample_rate, gap, language)
            x.setflags(write=False)  # shared between sessions
            return x

        x, made = _made_once(self._openers, self._building, self._openers_lock, key, make, OPENER_CACHE_SIZE, 60.0)
        if made:
            with self._openers_lock:
                self.opener_builds += 1
        return x

    def stream_synthesize_reusing(self, text: str, profile: VoiceProfile, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE, *,
                                  voice_key, language: str | None = None,
                                  reusable=None) -> Iterator[tuple[str, np.ndarray]]:
        """:meth:`stream_synthesize`, except that sentences for which ``reusable(sentence)`` is true (those
        that do not depend on the user's words, e.g. "Let me think it through with you.") come from the
        same bounded LRU as the openers (:meth:`opener_audio`), made once per voice and rate (issue 11:
        per-turn synthesis and conversion is most of a turn's CPU)."""
        from .tts import split_sentences

        self._check(profile, sample_rate)
        pieces = split_sentences(text)
        for i, piece in enumerate(pieces):
            gap = i < len(pieces) - 1
            if reusable is not None and reusable(piece):
                yield piece, self.opener_audio(piece, profile, sample_rate, voice_key=voice_key, language=language,
                                               gap=gap)
            else:
                yield piece, self._speak(piece, profile, sample_rate, gap, language)

    def prepare_openers(self, profile: VoiceProfile, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE, *, voice_key, turns,
                        mode: str = "conversation", seed: int = 0, instructions: str | None = None,
                        language: str | None = None) -> int:
        """Make the opener audio of the given turn indices ahead of time (in an executor, e.g. right after
        a ``session.update`` set the voice); returns how many openers were synthesized now."""
        made = 0
        for turn in turns:
            text = self.opener_text(mode=mode, seed=seed, turn_index=turn, instructions=instructions,
                                    language=language)
            if text is None:
                return made
            if self.cached_opener_audio(text, voice_key=voice_key, sample_rate=sample_rate,
                                        language=language) is None:
                self.opener_audio(text, profile, sample_rate, voice_key=voice_key, language=language)
                made += 1
        return made

    def voice_profile(self, voice_name: str, record=None) -> VoiceProfile:
        """Profile for a session voice.

        A cloned ``qwen-omni-vc-*`` voice uses ``record.profile`` (the stored
        ``VoiceProfile.to_dict()``; when absent the record's enrollment audio is analyzed).
        Any other name is a built-in voice (:func:`builtin_profile`, ``KeyError`` if unknown).
        """
        if record is not None:
            profile = getattr(record, "profile", None)
            audio = getattr(record, "audio", None)
            if isinstance(profile, dict):
                profile = VoiceProfile.from_dict(profile)
            # A profile stored before the envelope codebooks existed is re-analyzed from the
            # enrollment audio (cached), so older voices get the same conversion as new ones.
            if isinstance(profile, VoiceProfile) and (profile.codebook_db is not None or not audio):
                return profile
            if audio:
                key = f"{getattr(record, 'voice', voice_name)}:{getattr(record, 'sha256', None) or hash(bytes(audio))}"
                with self._lock:
                    cached = self._profile_cache.get(key)
                if cached is None:
                    x, sr = load(bytes(audio), mono=True)
                    cached = analyze(x, sr)
                    with self._lock:
                        self._profile_cache[key] = cached
                        while len(self._profile_cache) > _PROFILE_CACHE_SIZE:
                            self._profile_cache.popitem(last=False)
                return cached
            raise ConfigError(f"voice {voice_name!r} has neither a stored profile nor enrollment audio")
        if is_cloned_voice(voice_name):  # catalog.OMNI_CLONE_PREFIX (§2.1)
            raise KeyError(f"Voice '{voice_name}' is not supported.")
        return builtin_profile(voice_name)

    # ---------------------------------------------------------------- speech by language

    def speakable(self, language: str | None) -> str | None:
        """Why replies in ``language`` cannot be spoken here, or None when they can (None = English)."""
        from ..lang import base_language
        from . import tts, tts_kokoro

        lang = base_language(language) or ENGLISH
        if lang in tts.PIPER_LANGUAGES:
            return None
        if lang not in tts_kokoro.KOKORO_LANGUAGES:
            return f"no offline TTS speaks {lang!r} (supported: {', '.join(sorted(tts.synthesis_languages()))})"
        if lang in tts_kokoro.ESPEAK_LANGUAGES:
            import importlib.util

            if importlib.util.find_spec("kokoro_onnx") is None:
                return f"Kokoro speaks {lang!r} only through espeak-ng: pip install 'qvtools[local-gpl]' (GPL-3.0)"
        return None

    def reply_language(self, language: str | None, *, audio: bool = True) -> tuple[str, str | None]:
        """``(reply language, note)`` for a user turn in ``language``: the turn's language when the responder
        has a table for it (:data:`qvtools.server.responder.REPLY_LANGUAGES`) and, for a spoken reply
        (``audio``), an engine speaks it (:meth:`speakable`); else English, with ``note`` saying why (the
        caller logs it; never a silent switch). ``None`` (unknown language) is English without a note."""
        from ..lang import base_language
        from .responder import reply_language

        try:
            lang = base_language(language)
        except ConfigError:
            lang = None
        if lang is None:
            return ENGLISH, None
        out = reply_language(lang)
        if out != lang:
            return ENGLISH, f"the responder has no {lang!r} replies; replying in English"
        if audio:
            why = self.speakable(out)
            if why is not None:
                return ENGLISH, f"{why}; replying in English"
        return out, None

    def engine(self, language: str | None = None):
        """The TTS engine for ``language`` (None: English): this pipeline's Piper synthesizer for English,
        else :func:`qvtools.server.tts.engine_for_language` (one shared instance per language)."""
        from ..lang import base_language

        lang = base_language(language) or ENGLISH
        if lang == ENGLISH:
            return self.synthesizer
        from .tts import engine_for_language

        return engine_for_language(lang)

    def source_profile_for(self, language: str | None = None,
                           cancel: threading.Event | None = None) -> VoiceProfile | None:
        """The profile of the engine voice that speaks ``language`` (the conversion source), measured once
        from the calibration text in that language and kept for the process (the Kokoro engines are shared
        by every pipeline of the process) and in the model cache (measuring it is ~10 s of Kokoro synthesis;
        the file name changes with the code that makes it, :func:`_source_cache_file`); None only when
        ``cancel`` stopped it."""
        from ..lang import base_language

        lang = base_language(language) or ENGLISH
        if lang == ENGLISH:
            return self._source_profile(cancel)
        from .tts_kokoro import CALIBRATION_TEXTS

        eng = self.engine(lang)
        key = getattr(eng, "voice_name", lang)
        prof = _SOURCES.get(key)
        if prof is not None:
            return prof
        with _SOURCES_LOCK:
            lock = _SOURCE_LOCKS.setdefault(key, threading.Lock())
        with lock:  # one measurement per engine voice per process; other languages are not blocked meanwhile
            prof = _SOURCES.get(key)
            cache_file = _source_cache_file(key, lang, CALIBRATION_TEXTS[lang]) if prof is None else None
            if prof is None:
                prof = _read_source(cache_file)
                if prof is not None:
                    _SOURCES[key] = prof
                    log.info("TTS source profile for %s read from %s", lang, cache_file)
            if prof is None:
                t0 = time.perf_counter()
                parts = []
                for _piece, part in eng.stream(CALIBRATION_TEXTS[lang]):
                    if cancel is not None and cancel.is_set():
                        return None
                    parts.append(part)
                prof = analyze(np.concatenate(parts).astype(np.float32, copy=False), eng.sample_rate)
                prof.name = f"tts-source-{lang}"
                _SOURCES[key] = prof
                _write_source(cache_file, prof)
                log.info("TTS source profile for %s (%s): F0 %.0f Hz, formant scale %.3f, rate %.2f/s, "
                         "measured in %.1f s", lang, key, prof.f0_median_hz, prof.formant_scale,
                         prof.speaking_rate_hz, time.perf_counter() - t0)
        return prof

    def _convert(self, x: np.ndarray, sr: int, profile: VoiceProfile, sample_rate: int,
                 source: VoiceProfile | None = None) -> np.ndarray:
        if x.size == 0:
            return np.zeros(0, np.float32)
        y = convert(x, sr, profile, source if source is not None else self.source_profile())
        return resample(y, sr, int(sample_rate)).astype(np.float32, copy=False)

    def synthesize(self, text: str, profile: VoiceProfile, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE,
                   language: str | None = None) -> np.ndarray:
        """Speak ``text`` (in ``language``, None = English) in ``profile``'s voice; float32 mono at ``sample_rate``."""
        self._check(profile, sample_rate)
        eng = self.engine(language)
        source = self.source_profile_for(language)
        x, sr = eng.synthesize(text)
        return self._convert(x, sr, profile, sample_rate, source)

    def stream_synthesize(self, text: str, profile: VoiceProfile, sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE,
                          language: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(sentence, float32 audio at sample_rate)`` per sentence, spoken by the engine for
        ``language`` (None = English) and converted to ``profile``. Kokoro cuts a long first sentence at a
        clause mark (``tts_kokoro._split_first``) so the first piece comes early. A language no engine
        speaks here is a ConfigError (callers pick the language with :meth:`reply_language` first)."""
        self._check(profile, sample_rate)
        why = self.speakable(language)
        if why is not None:
            raise ConfigError(why)
        eng = self.engine(language)
        source = self.source_profile_for(language)
        for piece, x in eng.stream(text):
            yield piece, self._convert(x, eng.sample_rate, profile, sample_rate, source)

    @staticmethod
    def _check(profile, sample_rate) -> None:
        if not isinstance(profile, VoiceProfile):
            raise ConfigError(f"profile must be a VoiceProfile, got {type(profile).__name__}")
        if int(sample_rate) < 8000 or int(sample_rate) > 48000:
            raise ConfigError(f"sample_rate must be within 8000..48000 Hz, got {sample_rate}")
