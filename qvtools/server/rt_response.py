"""One realtime response as plain code: its state and the ordered server events it produces (§4.5).

:class:`ResponseStream` builds the events of one response in the §4.5 order -- the opening
(``output_item.added``, ``conversation.item.created``, ``content_part.added``), the deltas, the pending
``*.done`` events of a finished or cancelled response and the final item -- and :func:`plan_sentence`
cuts a synthesized sentence into fixed-size audio deltas with its transcript tokens spread over them
(§4.5 "interleaved"). The connection (:mod:`qvtools.server.realtime`) only awaits the speech work,
the simulated delays and the sends. § numbers refer to ``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import asyncio
import re

from ..realtime import events as ev

__all__ = ["ResponseStream", "UserTurn", "plan_sentence", "tokens"]

_TOKEN = re.compile(r"\S+\s*")


def tokens(text: str) -> list[str]:
    """The reply text as delta tokens: each word with the whitespace after it."""
    return _TOKEN.findall(text)


class UserTurn:
    """A committed user turn: its item id, audio (or text) and the transcription, resolved when done."""

    def __init__(self, item_id: str, audio, rate: int, text: str | None = None):
        self.item_id = item_id
        self.audio = audio
        self.rate = rate
        self.audio_s = 0.0 if audio is None else len(audio) / float(rate)
        self.text_future: asyncio.Future = asyncio.get_running_loop().create_future()
        if text is not None:
            self.text_future.set_result(text)
        #: A :class:`~qvtools.server.reply_plan.SpeculativeReply` made in the VAD silence window for exactly
        #: this audio (issue 11).
        self.speculative: "SpeculativeReply | None" = None


class ResponseStream:
    """The state of one response and the events it sends, in order (no socket, no awaits).

    ``stage``: ``"created"`` -> ``"part"`` (after :meth:`opening`) -> ``"done"`` (after :meth:`dones`);
    ``transcript`` and ``audio_samples`` grow with the deltas built here."""

    def __init__(self, rid: str, item_id: str, modalities, user, instructions):
        self.id = rid
        self.item_id = item_id
        self.modalities = list(modalities)
        self.user = user  # UserTurn or None
        self.instructions = instructions
        self.cancelled = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.created_sent = False
        self.stage = "created"  # -> "item" (output_item.added) -> "part" (content_part.added) -> "done"
        self.transcript: list[str] = []
        self.audio_samples = 0

    @property
    def audio_on(self) -> bool:
        return "audio" in self.modalities

    def opening(self, prev_item_id: str | None) -> list[dict]:
        """After ``response.created``: ``response.output_item.added``, ``conversation.item.created`` (after
        ``prev_item_id``) and ``response.content_part.added`` (§4.5, §7.5)."""
        item = ev.assistant_item(self.item_id)
        out = [ev.output_item_added(self.id, item), ev.item_created(item, prev_item_id),
               ev.content_part_added(self.id, self.item_id, "audio" if self.audio_on else "text")]
        self.stage = "part"
        return out

    def text_delta(self, text: str) -> dict:
        self.transcript.append(text)
        return ev.text_delta(self.id, self.item_id, text)

    def transcript_delta(self, text: str) -> dict:
        self.transcript.append(text)
        return ev.audio_transcript_delta(self.id, self.item_id, text)

    def audio_delta(self, chunk: bytes) -> dict:
        self.audio_samples += len(chunk) // 2
        return ev.audio_delta(self.id, self.item_id, chunk)

    def final_item(self, status: str, *, item_done: bool = False) -> dict:
        """The assistant item as ``response.output_item.done`` (``item_done``) / ``response.done`` carry it.
        §7.21: a text-only ``output_item.done`` has ``content: [{"type": "text"}]`` without the text;
        ``response.done`` has the full text."""
        text = "".join(self.transcript)
        if self.audio_on:
            content = [{"type": "audio", "transcript": text}]
        else:
            content = [{"type": "text"}] if item_done else [{"type": "text", "text": text}]
        return ev.assistant_item(self.item_id, status=status, content=content)

    def dones(self, status: str) -> list[dict]:
        """The pending ``*.done`` events for the stage reached (§4.5; a cancel sends them too, §4.5 c)."""
        text = "".join(self.transcript)
        out = []
        if self.stage == "part":
            if self.audio_on:
                out += [ev.audio_transcript_done(self.id, self.item_id, text), ev.audio_done(self.id, self.item_id),
                        ev.content_part_done(self.id, self.item_id, text, "audio")]
            else:
                out += [ev.text_done(self.id, self.item_id, text),
                        ev.content_part_done(self.id, self.item_id, text, "text")]
        if self.stage in ("item", "part"):
            out.append(ev.output_item_done(self.id, self.final_item(status, item_done=True)))
        self.stage = "done"
        return out


def plan_sentence(carry: bytes, pcm: bytes, step: int, toks: list[str], sent: int, words: int):
    """Cut one synthesized sentence into ``step``-byte audio deltas, its transcript tokens spread over them.

    ``carry``: audio left from the previous sentence (sent with this one); ``toks``: all reply tokens,
    ``sent`` of them already sent; ``words``: the sentence's word count. Returns ``(head, deltas, carry,
    sent)``: ``head`` is the sentence's text to send at once when it has no full delta (else None),
    ``deltas`` a list of ``(chunk, text, sent_after)``, ``carry`` the remainder for the next sentence and
    ``sent`` the tokens sent once all of it is."""
    start = sent
    want = min(len(toks), start + max(1, words))
    pcm = carry + pcm
    n_full = len(pcm) // step
    carry = pcm[n_full * step:]
    head = None
    if n_full == 0 and want > start:
        head = "".join(toks[start:want])
        sent = want
    deltas = []
    for k in range(n_full):
        due = start + -(-(want - start) * (k + 1) // n_full)
        deltas.append((pcm[k * step:(k + 1) * step], "".join(toks[sent:due]), max(sent, due)))
        sent = max(sent, due)
    return head, deltas, carry, sent
