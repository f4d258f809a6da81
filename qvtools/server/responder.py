"""A deterministic stand-in for the Qwen-Omni model's *text* reply in the local service.

The local service cannot run an omni model offline. It answers with short, natural
English sentences instead, chosen deterministically so experiments are repeatable:

* ``mode="echo"`` repeats the user's words (or :data:`EMPTY_ECHO` when there are none).
  Useful when a test wants to know exactly what will be spoken.
* ``mode="conversation"`` answers ``opener + " " + body``: a short acknowledgement
  (:meth:`Responder.opener`, e.g. "Got it.") chosen from ``(seed, turn_index)`` only, so it is
  known before the user's words are transcribed (the local service starts speaking it while its
  ASR runs, as the real omni model answers from audio without waiting for a transcript, §7.14),
  then a body from a fixed set of templates that refer back to the user's words, chosen from
  ``(seed, turn_index, user_text)``. Choices go through SHA-256, never Python's randomized
  ``hash()`` or global state.

``instructions`` (the session's system prompt) are accepted for API symmetry with the
real model; they do not change the reply, except that an instruction asking to "repeat"
or "echo" switches a conversation responder to echo for that reply.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import ConfigError

__all__ = ["Responder", "MODES", "EMPTY_ECHO", "REPLY_LANGUAGES"]

MODES = ("conversation", "echo")

#: What echo mode says when the user said nothing recognizable.
EMPTY_ECHO = "Sorry, I did not catch that. Could you say it again?"

_STOP = {
    "the", "a", "an", "and", "or", "but", "is", "are", "was", "were", "be", "to", "of", "in", "on",
    "at", "for", "with", "it", "this", "that", "i", "you", "we", "they", "he", "she", "my", "your",
    "me", "do", "does", "did", "can", "could", "would", "should", "will", "what", "how", "why",
    "when", "where", "who", "about", "please", "just", "so", "very", "really", "im", "its", "have",
    "has", "had", "there", "here", "not", "no", "yes", "hi", "hello", "hey", "okay", "ok", "some",
    "tell", "let", "lets", "know", "think", "like", "want", "get", "go", "am", "our", "us", "from",
}

# Per reply language: openers (said before the transcript is known), topic bodies ({topic} is a key
# phrase from the user's words) and generic bodies (no usable topic).
_TABLES = {
    "en": {
        "openers": ("Got it.", "I see.", "Right.", "Sure.", "Okay.", "Mm, interesting."),
        "topic": (
            "That's a good question about {topic}. Let me think it through with you.",
            "You mentioned {topic}. Could you tell me a little more about it?",
            "Thanks for bringing up {topic}. Here is what I would suggest: start small and build from there.",
            "Many people feel the same way about {topic}.",
            "I can help with {topic}. What would you like to know first?",
            "About {topic}, I think that sounds like a sensible plan.",
            "{Topic} is a big topic. Let's take it one step at a time.",
            "I'd be happy to talk more about {topic}.",
        ),
        "generic": (
            "I'm listening. Please go on.",
            "How can I help you today?",
            "Could you say that once more?",
            "What would you like to talk about?",
        ),
    },
}

#: Languages the responder answers in (others fall back to English).
REPLY_LANGUAGES = tuple(_TABLES)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z']*|\d+", text or "")


def _topic(words: list[str]) -> str | None:
    content = [w for w in words if w.lower().replace("'", "") not in _STOP and len(w) > 2]
    if not content:
        return None
    # The last two content words read naturally as a topic ("the weather tomorrow" -> "weather tomorrow").
    return " ".join(w.lower() if not w.isupper() else w for w in content[-2:])


class Responder:
    """Deterministic text replies: ``Responder(mode, seed).reply(user_text, turn_index=...)``."""

    def __init__(self, mode: str = "conversation", seed: int = 0):
        if mode not in MODES:
            raise ConfigError(f"responder mode must be one of {MODES}, got {mode!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.mode = mode
        self.seed = seed

    def __repr__(self) -> str:
        return f"Responder(mode={self.mode!r}, seed={self.seed})"

    def _pick(self, n: int, turn_index: int, text: str) -> int:
        h = hashlib.sha256(f"{self.seed}\x1f{turn_index}\x1f{text}".encode("utf-8")).digest()
        return int.from_bytes(h[:8], "big") % n

    @staticmethod
    def _table(language: str | None) -> dict:
        return _TABLES.get((language or "en").split("-")[0].lower(), _TABLES["en"])

    def _mode(self, instructions: str | None) -> str:
        if instructions and re.search(r"\b(repeat|echo)\b", instructions, re.IGNORECASE):
            return "echo"
        return self.mode

    def opener(self, *, turn_index: int = 0, instructions: str | None = None,
               language: str | None = None) -> str | None:
        """The reply's first sentence when it does not depend on the user's words (conversation mode),
        else None (echo needs the transcript). :meth:`reply` starts with exactly this text."""
        if self._mode(instructions) == "echo":
            return None
        openers = self._table(language)["openers"]
        return openers[self._pick(len(openers), turn_index, "\x1eopener")]

    def reply(self, user_text: str | None, *, turn_index: int = 0, instructions: str | None = None,
              language: str | None = None) -> str:
        """The reply text for one user turn (never empty), in ``language`` (see :data:`REPLY_LANGUAGES`)."""
        if user_text is not None and not isinstance(user_text, str):
            raise ConfigError(f"user_text must be a string, got {type(user_text).__name__}")
        text = " ".join((user_text or "").split())
        words = _words(text)
        if self._mode(instructions) == "echo":
            if not re.search(r"\w", text):
                return EMPTY_ECHO
            out = text if text[-1] in ".!?。！？" else text + "."
            return out[0].upper() + out[1:]
        table = self._table(language)
        opener = self.opener(turn_index=turn_index, instructions=instructions, language=language)
        topic = _topic(words)
        if topic is None:
            body = table["generic"][self._pick(len(table["generic"]), turn_index, text)]
        else:
            body = table["topic"][self._pick(len(table["topic"]), turn_index, text)]
            body = body.replace("{Topic}", topic[:1].upper() + topic[1:]).replace("{topic}", topic)
        return f"{opener} {body}"
