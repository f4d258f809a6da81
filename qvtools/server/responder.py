"""A deterministic stand-in for the Qwen-Omni model's *text* reply in the local service.

The local service cannot run an omni model offline. It answers with short, natural
English sentences instead, chosen deterministically so experiments are repeatable:

* ``mode="echo"`` repeats the user's words (or :data:`EMPTY_ECHO` when there are none).
  Useful when a test wants to know exactly what will be spoken.
* ``mode="conversation"`` picks one of a fixed set of reply templates that refer back to
  the user's words. The choice depends only on ``(seed, turn_index, user_text)`` through
  SHA-256, never on Python's randomized ``hash()`` or on global state.

``instructions`` (the session's system prompt) are accepted for API symmetry with the
real model; they do not change the reply, except that an instruction asking to "repeat"
or "echo" switches a conversation responder to echo for that reply.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import ConfigError

__all__ = ["Responder", "MODES", "EMPTY_ECHO"]

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

# {topic} is a key phrase from the user's words; {echo} the whole (shortened) utterance.
_TOPIC_REPLIES = (
    "That's a good question about {topic}. Let me think it through with you.",
    "I see, you mentioned {topic}. Could you tell me a little more about it?",
    "Thanks for bringing up {topic}. Here is what I would suggest: start small and build from there.",
    "Interesting point about {topic}. Many people feel the same way.",
    "Sure, I can help with {topic}. What would you like to know first?",
    "Got it, {topic}. I think that sounds like a sensible plan.",
    "Hmm, {topic} is a big topic. Let's take it one step at a time.",
    "Right, {topic}. I'd be happy to talk more about that.",
)
_GENERIC_REPLIES = (
    "I'm listening. Please go on.",
    "Hello! How can I help you today?",
    "Sorry, could you say that once more?",
    "Sure. What would you like to talk about?",
)


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

    def reply(self, user_text: str | None, *, turn_index: int = 0, instructions: str | None = None) -> str:
        """The reply text for one user turn (never empty)."""
        if user_text is not None and not isinstance(user_text, str):
            raise ConfigError(f"user_text must be a string, got {type(user_text).__name__}")
        text = " ".join((user_text or "").split())
        words = _words(text)
        mode = self.mode
        if instructions and re.search(r"\b(repeat|echo)\b", instructions, re.IGNORECASE):
            mode = "echo"
        if mode == "echo":
            if not words:
                return EMPTY_ECHO
            out = text if text[-1] in ".!?" else text + "."
            return out[0].upper() + out[1:]
        topic = _topic(words)
        if topic is None:
            return _GENERIC_REPLIES[self._pick(len(_GENERIC_REPLIES), turn_index, text)]
        return _TOPIC_REPLIES[self._pick(len(_TOPIC_REPLIES), turn_index, text)].format(topic=topic)
