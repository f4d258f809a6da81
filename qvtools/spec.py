"""The enrollment spec: every documented rule of a voice-enrollment create, defined once.

Source: ``../shared/reference/dashscope-protocol.md`` §2.1 (create fields), §2.4 (audio requirements, SEED)
and §3 (the data-URL error message). :mod:`qvtools.preflight` (``qvtools check``), the client
(:mod:`qvtools.enrollment`), :mod:`qvtools.lang` and the local service's defaults
(:class:`qvtools.server.config.ServiceConfig`) import these names; nothing else writes the numbers.

Model facts and cloned-voice name prefixes live in :mod:`qvtools.catalog`; the prefixes are re-exported
here (not redefined) because they belong to the create answer's shape (§2.1).

This module is a leaf: it imports only :mod:`qvtools.catalog`, so anything may import it without a cycle.
"""

from __future__ import annotations

import re

from .catalog import OMNI_CLONE_PREFIX, TTS_CLONE_PREFIX

__all__ = [
    "MAX_DATA_URL_BYTES",
    "MAX_FILE_BYTES",
    "MAX_DURATION_S",
    "RECOMMENDED_DURATION_S",
    "MIN_SAMPLE_RATE",
    "CHANNELS",
    "MIN_CONTINUOUS_SPEECH_S",
    "MAX_PAUSE_S",
    "CONTINUITY_GAP_S",
    "NAME_PATTERN",
    "NAME_MAX_CHARS",
    "NAME_RE",
    "LANGUAGE_CODES",
    "DIALECTS",
    "LANGUAGES",
    "ALLOWED_MIME",
    "MIME_CONTAINERS",
    "OMNI_CLONE_PREFIX",
    "TTS_CLONE_PREFIX",
]

# --- size -----------------------------------------------------------------------------------------
#: Largest encoded data URL (``input.audio.data``), in characters: "Exceeded limit on max bytes per
#: data-uri item : 10485760" (§3); §2.1 "keeping the *encoded* string < 10 MB". A URL of this length or
#: more is refused.
MAX_DATA_URL_BYTES = 10_485_760
#: "Size < 10 MB" (§2.4), the file itself.
MAX_FILE_BYTES = 10 * 1024 * 1024

# --- duration, rate, channels (§2.4) --------------------------------------------------------------
#: "max 60 s" (§2.4; over it: ``Audio.DurationLimitError``).
MAX_DURATION_S = 60.0
#: "10–20 s recommended" (§2.4).
RECOMMENDED_DURATION_S = (10.0, 20.0)
#: "Sample rate ≥ 24 kHz" (§2.4; under it: ``Audio.AudioRateError``).
MIN_SAMPLE_RATE = 24000
#: "Channels: mono" (§2.4).
CHANNELS = 1

# --- content (§2.4) -------------------------------------------------------------------------------
#: "≥ 3 s of continuous clear speech" (§2.4), measured by :func:`qvtools.vad.longest_continuous_speech`.
MIN_CONTINUOUS_SPEECH_S = 3.0
#: "Other pauses ≤ 2 s" (§2.4).
MAX_PAUSE_S = 2.0
#: House reading of "continuous": a gap between VAD speech segments shorter than this (a comma, a
#: breath) does not interrupt continuous speech. Used by preflight and the local service alike
#: (issue 12: the two disagreed), through :func:`qvtools.vad.longest_continuous_speech`.
CONTINUITY_GAP_S = 0.6

# --- create fields (§2.1) -------------------------------------------------------------------------
#: ``preferred_name``: letters, digits, ``_``, ≤ 16 chars (§2.1, the regex is marked [guess]).
NAME_MAX_CHARS = 16
NAME_PATTERN = rf"^[A-Za-z0-9_]{{1,{NAME_MAX_CHARS}}}$"
NAME_RE = re.compile(NAME_PATTERN)
#: The 29 language codes of ``input.language`` (§2.1).
LANGUAGE_CODES = ("zh", "en", "de", "it", "pt", "es", "ja", "ko", "fr", "ru", "th", "id", "ar", "cs", "da", "nl",
                  "fi", "he", "hi", "is", "ms", "no", "fa", "pl", "sv", "tl", "tr", "ur", "vi")
#: The Chinese dialects accepted as ``input.language`` (§2.1).
DIALECTS = ("Dongbei", "Shannxi", "Sichuan", "Henan", "Changsha", "Tianjin", "Hangzhou", "Liaoning", "Shenyang",
            "Anshan")
#: Every accepted ``input.language`` value.
LANGUAGES = frozenset(LANGUAGE_CODES + DIALECTS)
#: MIME types of a data URL (§2.1): WAV (16-bit), MP3, M4A (§2.4 "Format").
ALLOWED_MIME = ("audio/wav", "audio/mpeg", "audio/mp4")
#: Container (as :func:`qvtools.audio.probe` names it) of each accepted MIME type.
MIME_CONTAINERS = {"audio/wav": ("wav",), "audio/mpeg": ("mp3",), "audio/mp4": ("m4a",)}
