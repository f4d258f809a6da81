"""The realtime half's state on one app, ``app[REALTIME]`` (:class:`RealtimeState`): open sessions, per-key
session counts, the cloned-voice profile cache (:class:`ProfileCache`, issue 13), the speech pipeline
(created once) and the speculation counters (issue 11). The connection (:mod:`qvtools.server.realtime`)
reads and updates it; the app (:mod:`qvtools.server.app`) creates it at startup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from aiohttp import web

from . import turn_language
from .asr_lane import AsrLane

__all__ = ["RealtimeState", "REALTIME", "ProfileCache", "get_speech", "voice_cache"]


class ProfileCache:
    """A bounded LRU of cloned voices' decoded profiles, keyed by ``(key scope, voice, sha256 of the audio)``
    (issue 13: a ``session.update`` with a cloned voice re-read the whole stored audio, on the event loop).
    A re-enrolled or deleted voice changes the key (the store is asked for the metadata each time, off
    the loop), so nothing stale is served."""

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a profile was built (decoded audio or stored profile)

    def get(self, key):
        with self._lock:
            prof = self._items.get(key)
            if prof is not None:
                self._items.move_to_end(key)
            return prof

    def put(self, key, prof) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = prof
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class RealtimeState:
    """The realtime half's state on one app (``app[REALTIME]``): open sessions, per-key session counts,
    the cloned-voice profile cache and the speech pipeline (created once, on first use or by the warm-up)."""

    def __init__(self, config):
        self.open: set = set()  # open _Connection objects (closed with 1001 on shutdown)
        self.active: dict[str, int] = {}  # API key -> open sessions (the caps, ServiceConfig.max_sessions*)
        self.voice_cache = ProfileCache(config.realtime_voice_cache_size)
        self.speech = None  # the SpeechPipeline once created
        self._warm_languages = tuple(getattr(config, "warm_speech_languages", ()) or ())
        # ServiceConfig.realtime_language_candidates, validated once (a bad code fails at service start)
        self.language_candidates = turn_language.language_candidates(config.realtime_language_candidates)
        self._lock = threading.Lock()
        #: issue 11, over all sessions: speculative transcriptions started / used at speech_stopped / dropped
        #: (speech resumed, or other audio committed), and replies whose first body piece came from one
        self.spec_stats = {"started": 0, "used": 0, "dropped": 0, "replies": 0}
        #: manual-mode partial transcriptions running now, over all sessions (at most one, issue 11: each
        #: re-runs Whisper on the whole buffer so far, and the ASR is one lock -- partials queued there would
        #: delay the transcriptions that replies wait for)
        self.partials = 0
        #: the speech recognition of every session, on one thread by priority (qvtools/server/asr_lane.py)
        self.asr_lane = AsrLane()

    def get_speech(self):
        """The :class:`~qvtools.server.speech.SpeechPipeline`, created once on first use (thread-safe)."""
        speech = self.speech
        if speech is None:
            with self._lock:
                if self.speech is None:
                    from .speech import SpeechPipeline

                    self.speech = SpeechPipeline(warm_languages=self._warm_languages)
                speech = self.speech
        return speech


REALTIME = web.AppKey("realtime", RealtimeState)


def get_speech(app):
    """The app's :class:`SpeechPipeline`, created once on first use."""
    return app[REALTIME].get_speech()


def voice_cache(app) -> ProfileCache:
    """The app's cloned-voice profile cache (``ServiceConfig.realtime_voice_cache_size`` entries)."""
    return app[REALTIME].voice_cache
