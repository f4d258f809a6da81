"""Languages: one place that maps what users and services write to the codes ASR, TTS and metrics use.

The documented list of ``language`` values is :data:`qvtools.spec.LANGUAGE_CODES` (29 codes)
plus :data:`qvtools.spec.DIALECTS` (Chinese dialects, §2.1 of the protocol reference); it
is imported from there, never copied. Dialects are Chinese for speech recognition, synthesis and
scoring, so :func:`base_language` maps them to ``"zh"``.
"""

from __future__ import annotations

import re
import unicodedata

from .spec import DIALECTS, LANGUAGE_CODES
from .errors import ConfigError

__all__ = ["LANGUAGE_CODES", "DIALECTS", "CER_LANGUAGES", "base_language", "error_metric", "script_language"]

#: Languages written without spaces between words: scored by character error rate (issue 10 item 5).
CER_LANGUAGES = frozenset({"zh", "ja", "ko"})

_CODES = frozenset(LANGUAGE_CODES)
_DIALECTS = {d.lower(): d for d in DIALECTS}
_ALIASES = {"cmn": "zh", "yue": "zh", "chinese": "zh", "mandarin": "zh", "english": "en", "jp": "ja",
            "kr": "ko", "iw": "he", "nb": "no", "nn": "no", "fil": "tl", "in": "id"}


def base_language(language: str | None) -> str | None:
    """The two-letter code for ``language``: ``"zh-CN"`` / ``"cmn"`` / ``"Sichuan"`` -> ``"zh"``,
    ``"en_US"`` -> ``"en"``; ``None`` / ``""`` -> ``None``. Anything else is a ConfigError."""
    if language is None:
        return None
    if not isinstance(language, str):
        raise ConfigError(f"language must be a string, got {type(language).__name__}")
    s = language.strip()
    if not s:
        return None
    low = s.lower()
    if low in _DIALECTS:
        return "zh"
    head = re.split(r"[-_]", low, maxsplit=1)[0]
    head = _ALIASES.get(head, head)
    if head in _CODES:
        return head
    raise ConfigError(f"unsupported language {language!r}: expected one of {', '.join(LANGUAGE_CODES)} "
                      f"or a Chinese dialect ({', '.join(DIALECTS)})")


def error_metric(language: str | None) -> str:
    """``"cer"`` for zh/ja/ko (and Chinese dialects), ``"wer"`` otherwise (also for ``None``)."""
    return "cer" if base_language(language) in CER_LANGUAGES else "wer"


def script_language(text: str) -> str | None:
    """The CJK language a text's script shows (kana -> ``"ja"``, Hangul -> ``"ko"``, Han only ->
    ``"zh"``), ``None`` for other scripts (Latin text does not tell en from de)."""
    han = kana = hangul = 0
    for ch in text or "":
        o = ord(ch)
        if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
            hangul += 1
        elif unicodedata.category(ch) == "Lo" and (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF
                                                   or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F):
            han += 1
    if kana:
        return "ja"
    if hangul:
        return "ko"
    return "zh" if han else None
