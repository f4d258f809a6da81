"""A deterministic stand-in for the Qwen-Omni model's *text* reply in the local service.

The local service cannot run an omni model offline. It answers with short, natural
sentences instead, in the language of the user's turn (English, Mandarin, Japanese, German, Spanish:
:data:`REPLY_LANGUAGES`; any other language gets English), chosen deterministically so experiments are
repeatable:

* ``mode="echo"`` repeats the user's words (or :data:`EMPTY_ECHO` when there are none).
  Useful when a test wants to know exactly what will be spoken.
* ``mode="conversation"`` answers ``opener + " " + body`` (no space in Chinese and Japanese): a short acknowledgement
  (:meth:`Responder.opener`, e.g. "Got it.") chosen from ``(seed, turn_index)`` only, so it is
  known before the user's words are transcribed (the local service starts speaking it while its
  ASR runs, as the real omni model answers from audio without waiting for a transcript, §7.14),
  then a body from a fixed set of templates that refer back to the user's words, chosen from
  ``(seed, turn_index, user_text)``. Choices go through SHA-256, never Python's randomized
  ``hash()`` or global state, and do not depend on the language (the same seed and turn pick the same
  template slot in every table).

The topic is the last two content words in English, German and Spanish (per-language stop words); Chinese
and Japanese have no spaces, so the topic is the last run of adjacent nouns found by the segmenter the TTS
front end already installs (jieba's part-of-speech tagger for Chinese, from ``misaki[zh]``; OpenJTalk's
analyser for Japanese, from ``pyopenjtalk``), with a simple character-class rule when it is missing
(:func:`topic`).

``instructions`` (the session's system prompt) are accepted for API symmetry with the
real model; they do not change the reply, except that an instruction asking to "repeat"
or "echo" switches a conversation responder to echo for that reply.
"""

from __future__ import annotations

import hashlib
import re
from typing import get_args

from ..errors import ConfigError
from .config import ReplyMode

__all__ = ["Responder", "MODES", "EMPTY_ECHO", "REPLY_LANGUAGES", "reply_language", "topic", "opener_head",
           "split_opener"]

#: Reply modes (``ServiceConfig.realtime_reply_mode``; the one definition is its ``Literal`` type).
MODES = get_args(ReplyMode)

#: What echo mode says when the user said nothing recognizable (English; each table has its own "empty").
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
# phrase from the user's words, {Topic} the same capitalised) and generic bodies (no usable topic).
# "joiner" goes between opener and body (no space in Chinese and Japanese text).
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
        "joiner": " ",
        "empty": EMPTY_ECHO,
    },
    "zh": {
        "openers": ("好的。", "明白了。", "嗯，我懂了。", "没问题。", "有意思。", "我知道了。"),
        "topic": (
            "关于{topic}，这是个好问题。我们一起想一想。",
            "你提到了{topic}。能再多说一点吗？",
            "谢谢你说起{topic}。我的建议是先从小事做起，慢慢来。",
            "很多人对{topic}也有同样的感受。",
            "{topic}的事我可以帮忙。你想先了解什么？",
            "说到{topic}，我觉得这个计划很合理。",
            "{topic}是个大话题。我们一步一步来。",
            "我很乐意多聊聊{topic}。",
        ),
        "generic": ("我在听，请继续说。", "今天我能帮你做什么？", "能再说一遍吗？", "你想聊点什么？"),
        "joiner": "",
        "empty": "不好意思，我没听清。能再说一遍吗？",
    },
    "ja": {
        "openers": ("はい。", "なるほど。", "わかりました。", "そうですね。", "いいですね。", "了解です。"),
        "topic": (
            "{topic}について、いい質問ですね。一緒に考えてみましょう。",
            "{topic}のことをおっしゃいましたね。もう少し詳しく教えてください。",
            "{topic}の話をありがとうございます。まずは小さなことから始めるのがいいと思います。",
            "{topic}について、同じように感じる人は多いです。",
            "{topic}のことならお手伝いできます。まず何を知りたいですか？",
            "{topic}については、いい計画だと思います。",
            "{topic}は大きなテーマですね。一歩ずつ進めましょう。",
            "{topic}について、もっとお話ししたいです。",
        ),
        "generic": ("聞いています。どうぞ続けてください。", "今日は何をお手伝いしましょうか？",
                    "もう一度言っていただけますか？", "何について話しましょうか？"),
        "joiner": "",
        "empty": "すみません、よく聞こえませんでした。もう一度言っていただけますか？",
    },
    "de": {
        "openers": ("Verstanden.", "Ich verstehe.", "Gut.", "Klar.", "Okay.", "Interessant."),
        "topic": (
            "Das ist eine gute Frage zu {topic}. Lass uns gemeinsam darüber nachdenken.",
            "Du hast {topic} erwähnt. Kannst du mir etwas mehr darüber erzählen?",
            "Danke, dass du {topic} ansprichst. Mein Vorschlag: klein anfangen und darauf aufbauen.",
            "Viele Menschen sehen {topic} genauso.",
            "Bei {topic} kann ich helfen. Was möchtest du zuerst wissen?",
            "Was {topic} angeht, klingt das nach einem vernünftigen Plan.",
            "{Topic} ist ein großes Thema. Gehen wir es Schritt für Schritt an.",
            "Ich spreche gern mehr über {topic}.",
        ),
        "generic": ("Ich höre zu. Erzähl weiter.", "Wie kann ich dir heute helfen?",
                    "Kannst du das noch einmal sagen?", "Worüber möchtest du sprechen?"),
        "joiner": " ",
        "empty": "Entschuldigung, das habe ich nicht verstanden. Kannst du es noch einmal sagen?",
    },
    "es": {
        "openers": ("Entendido.", "Ya veo.", "Claro.", "De acuerdo.", "Vale.", "Qué interesante."),
        "topic": (
            "Es una buena pregunta sobre {topic}. Pensémoslo juntos.",
            "Mencionaste {topic}. ¿Puedes contarme un poco más?",
            "Gracias por hablar de {topic}. Te sugiero empezar poco a poco.",
            "Mucha gente piensa lo mismo sobre {topic}.",
            "Puedo ayudarte con {topic}. ¿Qué quieres saber primero?",
            "Sobre {topic}, me parece un plan sensato.",
            "{Topic} es un tema amplio. Vamos paso a paso.",
            "Me encantaría hablar más sobre {topic}.",
        ),
        "generic": ("Te escucho. Continúa, por favor.", "¿En qué puedo ayudarte hoy?",
                    "¿Puedes repetirlo, por favor?", "¿De qué te gustaría hablar?"),
        "joiner": " ",
        "empty": "Perdona, no te he entendido. ¿Puedes repetirlo?",
    },
}

#: Languages the responder answers in (others fall back to English, :func:`reply_language`).
REPLY_LANGUAGES = tuple(_TABLES)
#: Languages whose text has no spaces between words: topics come from a segmenter, echo ends with "。".
_CJK = frozenset({"zh", "ja"})

_STOP_DE = {
    "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "und", "oder", "aber",
    "ist", "sind", "war", "waren", "sein", "zu", "von", "in", "im", "auf", "an", "am", "für", "mit", "es", "ich",
    "du", "wir", "ihr", "sie", "er", "mein", "dein", "mir", "mich", "dir", "dich", "uns", "was", "wie", "warum",
    "wann", "wo", "wer", "über", "bitte", "nur", "so", "sehr", "hallo", "ja", "nein", "nicht", "kein", "keine",
    "kannst", "kann", "können", "möchte", "will", "wollen", "habe", "hast", "hat", "haben", "mal", "etwas",
    "heute", "morgen", "gibt", "dass", "auch", "noch", "schon", "bei", "nach", "aus", "um",
}
_STOP_ES = {
    "el", "la", "los", "las", "un", "una", "unos", "unas", "y", "o", "pero", "es", "son", "era", "ser", "estar",
    "está", "de", "del", "a", "al", "en", "con", "por", "para", "que", "qué", "yo", "tú", "usted", "nosotros",
    "ellos", "él", "ella", "mi", "tu", "su", "me", "te", "se", "nos", "lo", "le", "como", "cómo", "cuándo",
    "dónde", "quién", "sobre", "favor", "muy", "hola", "sí", "no", "puedes", "puede", "quiero",
    "quieres", "hay", "tengo", "tiene", "algo", "hoy", "mañana", "este", "esta", "eso", "esto", "más",
}
_STOPS = {"en": _STOP, "de": _STOP_DE, "es": _STOP_ES}
_ENDS = ".!?。！？…"


def opener_head(opener: str, language: str | None) -> str:
    """The opener as the reply's first characters: the opener and the joiner after it in ``language``
    (a space, none in Chinese and Japanese), so ``reply == opener_head(...) + body``."""
    return opener + _TABLES[reply_language(language)]["joiner"]


def split_opener(reply: str, opener: str) -> tuple[str, str] | None:
    """``(head, body)`` of a conversation reply that starts with ``opener`` (head: the opener and the
    whitespace after it), else None."""
    if not reply.startswith(opener):
        return None
    rest = reply[len(opener):]
    body = rest.lstrip()
    return reply[:len(reply) - len(body)], body


def reply_language(language: str | None) -> str:
    """The language a reply to a turn in ``language`` is written in: ``language`` when it is one of
    :data:`REPLY_LANGUAGES` (Chinese dialects and regional codes count as their base language), else "en"."""
    from ..lang import base_language

    try:
        code = base_language(language)
    except ConfigError:
        code = None
    return code if code in _TABLES else "en"


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z']*|\d+", text or "")


def _words_latin(text: str) -> list[str]:
    # any script's letters (German umlauts, Spanish accents), not only ASCII
    return re.findall(r"[^\W\d_][\w'-]*|\d+", text or "")


def _topic(words: list[str], language: str = "en") -> str | None:
    stop = _STOPS.get(language, _STOP)
    content = [w for w in words if w.lower().replace("'", "") not in stop and len(w) > 2]
    if not content:
        return None
    if language == "en":
        # The last two content words read naturally as a topic ("the weather tomorrow" -> "weather tomorrow").
        return " ".join(w.lower() if not w.isupper() else w for w in content[-2:])
    # German and Spanish put verbs and adjectives after nouns, so two words rarely read as a phrase: one
    # word, as written. German: the last capitalised word after the first (German nouns are capitalised).
    if language == "de":
        nouns = [w for w in content if w[:1].isupper() and w is not words[0]]
        return (nouns or content)[-1]
    return content[-1]


_HAN_OR_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
# Chinese function characters and words that never make a topic (used without a segmenter).
_ZH_STOP_CHARS = set("我你他她它们的了吗呢吧啊呀是在有和与跟就都也很还要想能会可以这那个些一下么什怎为请")


def _topic_zh(text: str) -> str | None:
    """The last run of adjacent nouns (at most two words) of Chinese ``text``, by jieba's part-of-speech
    tagger (installed with ``misaki[zh]``, the Mandarin TTS front end; deterministic, its own dictionary).
    Without jieba a simple rule: the last run of at least two characters between punctuation and common
    function characters (:data:`_ZH_STOP_CHARS`), cut to its last four characters."""
    try:
        import logging

        import jieba
        import jieba.posseg as pseg
    except ImportError:
        runs = [r for r in re.split(r"[^\u3400-\u9fff]+", "".join(" " if c in _ZH_STOP_CHARS else c for c in text))
                if len(r) >= 2]
        return runs[-1][-4:] if runs else None
    jieba.setLogLevel(logging.WARNING)
    runs = _noun_runs((tok.word, tok.flag.startswith("n") and tok.flag != "nr" or tok.flag in ("vn", "nz"))
                      for tok in pseg.cut(text))
    runs = [r for r in runs if len("".join(r)) >= 2]
    return "".join(runs[-1][-2:]) if runs else None


def _noun_runs(tagged) -> list[list[str]]:
    """Runs of adjacent nouns from ``(word, is_noun)`` pairs, in order."""
    runs, cur = [], []
    for word, is_noun in tagged:
        if is_noun:
            cur.append(word)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _topic_ja(text: str) -> str | None:
    """The last run of adjacent nouns (名詞) of Japanese ``text`` by OpenJTalk's analyser (pyopenjtalk, the
    Japanese TTS front end), with at least one kanji or katakana. Without it: the last run of kanji or
    katakana of at least two characters."""
    try:
        import pyopenjtalk
    except ImportError:
        runs = re.findall(r"[\u30a0-\u30ff\u3400-\u9fff]{2,}", text)
        return runs[-1] if runs else None
    runs = _noun_runs((node["string"], node.get("pos") == "名詞") for node in pyopenjtalk.run_frontend(text))
    runs = ["".join(r) for r in runs if re.search(r"[\u30a0-\u30ff\u3400-\u9fff]", "".join(r))]
    runs = [r for r in runs if len(r) >= 2]
    return runs[-1] if runs else None


def topic(text: str, language: str = "en") -> str | None:
    """The key phrase a conversation reply refers back to, or None (see the module docstring)."""
    if language == "zh":
        return _topic_zh(text)
    if language == "ja":
        return _topic_ja(text)
    return _topic(_words(text) if language == "en" else _words_latin(text), language)


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
        return _TABLES[reply_language(language)]

    def _mode(self, instructions: str | None) -> str:
        if instructions and re.search(r"\b(repeat|echo)\b", instructions, re.IGNORECASE):
            return "echo"
        return self.mode

    def opener(self, *, turn_index: int = 0, instructions: str | None = None,
               language: str | None = None) -> str | None:
        """The reply's first sentence when it does not depend on the user's words (conversation mode),
        else None (echo needs the transcript). :meth:`reply` starts with exactly this text. The choice
        depends on ``(seed, turn_index)`` only; ``language`` picks the table it is read from."""
        if self._mode(instructions) == "echo":
            return None
        openers = self._table(language)["openers"]
        return openers[self._pick(len(openers), turn_index, "\x1eopener")]

    def reply(self, user_text: str | None, *, turn_index: int = 0, instructions: str | None = None,
              language: str | None = None) -> str:
        """The reply text for one user turn (never empty), in ``language`` (:func:`reply_language`:
        one of :data:`REPLY_LANGUAGES`, else English). Echo keeps the user's words whatever the language
        and ends them with the script's full stop ("。" for Chinese and Japanese)."""
        if user_text is not None and not isinstance(user_text, str):
            raise ConfigError(f"user_text must be a string, got {type(user_text).__name__}")
        lang = reply_language(language)
        table = _TABLES[lang]
        text = " ".join((user_text or "").split())
        if self._mode(instructions) == "echo":
            if not re.search(r"\w", text):
                return table["empty"]
            if text[-1] in _ENDS:
                return text[0].upper() + text[1:]
            from ..lang import script_language

            cjk = lang in _CJK or script_language(text) in _CJK
            out = text + ("。" if cjk and _HAN_OR_KANA.search(text[-1]) else ".")
            return out[0].upper() + out[1:]
        opener = self.opener(turn_index=turn_index, instructions=instructions, language=lang)
        key = topic(text, lang)
        if key is None:
            body = table["generic"][self._pick(len(table["generic"]), turn_index, text)]
        else:
            body = table["topic"][self._pick(len(table["topic"]), turn_index, text)]
            body = body.replace("{Topic}", key[:1].upper() + key[1:]).replace("{topic}", key)
        return f"{opener}{table['joiner']}{body}"
