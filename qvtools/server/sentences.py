"""Sentence splitting shared by the local service's TTS engines (:mod:`qvtools.server.tts` for Piper,
:mod:`qvtools.server.tts_kokoro` for Kokoro). Its own module so that neither engine imports the other
(issue 12: no import cycles, lazy imports included)."""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["split_sentences", "SENTENCE_GAP_S", "SENTENCE_PEAK"]

#: Pause (s) both engines append between the sentences of a reply (the realtime reply and the opener cache
#: of :mod:`qvtools.server.speech` put the same pause after a sentence that is not the last).
SENTENCE_GAP_S = 0.12
#: Peak each synthesized sentence is brought to (Piper normalizes to full scale; Kokoro is scaled the same).
SENTENCE_PEAK = 0.8

# Latin punctuation ends a sentence before whitespace; CJK full-width punctuation (。！？；：…) ends one
# even without whitespace (Chinese and Japanese put no space after it). Closing quotes and brackets
# stay with the sentence they close. Boundaries become newlines, then the text is split at newlines.
_LATIN_END = re.compile(r"([.!?;:]+[\"'\u201d\u2019)\]]*)\s+")
_CJK_END = re.compile(r"([。！？；：…]+[\u201d\u2019」』）]*)\s*")


def split_sentences(text: str) -> list[str]:
    """Split text into sentence-sized pieces (after . ! ? ; : followed by space, after 。！？；：… ,
    or at newlines); empty pieces dropped."""
    if not isinstance(text, str):
        raise ConfigError(f"text must be a string, got {type(text).__name__}")
    marked = _CJK_END.sub("\\1\n", _LATIN_END.sub("\\1\n", text))
    return [p.strip() for p in marked.split("\n") if p.strip()]
