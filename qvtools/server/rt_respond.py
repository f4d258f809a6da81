"""One realtime response driven over its connection: :class:`ResponseRun` (issue 19 item 1).

What the reply says, in which language, opener or body and whether a speculative reply may be used is
decided socket-free by :class:`~qvtools.server.reply_plan.ReplyPlanner`; the events' order and content by
:class:`~qvtools.server.rt_response.ResponseStream`. A run only awaits the work they name (the transcript,
the voice profile, syntheses in the executor, the simulated delays) and sends the events through its
connection (:mod:`qvtools.server.realtime`), in the §4.5 order: the wait before ``response.created``
(§7.6), the opener spoken at once (issue 11, §7.14), transcript deltas spread over the audio deltas
(§7.5), the ``*.done`` events and ``response.done`` with usage -- or, when cancelled, the pending
``*.done`` events and a cancelled ``response.done`` (§4.5 c, §7.6). The run's state lives on the run (the
plan, the voice profile, the body's generator), not in dicts shared between closures.
§ numbers refer to ``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from ..audio import to_pcm16
from ..realtime import events as ev
from . import rt_early
from . import session_rules as sr
from .latency import NO_DELAYS
from .reply_plan import ReplyPlanner
from .rt_response import ResponseStream, plan_sentence
from .rt_state import get_speech

__all__ = ["ResponseRun", "until", "guard"]

log = logging.getLogger(__name__)


async def until(resp: ResponseStream, deadline: float) -> bool:
    """Sleep until ``deadline`` (perf_counter) unless cancelled; False when cancelled."""
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        try:
            await asyncio.wait_for(resp.cancelled.wait(), remaining)
        except asyncio.TimeoutError:
            pass
    return not resp.cancelled.is_set()


async def guard(resp: ResponseStream, aw):
    """Await ``aw`` unless the response is cancelled first (then None)."""
    fut = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(resp.cancelled.wait())
    try:
        await asyncio.wait({fut, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if fut.done():
        return fut.result()
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return None


class ResponseRun:
    """One response ``resp`` of the connection ``conn``: :meth:`run` sends it from start to end."""

    def __init__(self, conn, resp: ResponseStream):
        self.conn = conn
        self.resp = resp
        self.plan: ReplyPlanner | None = None
        self.profile = None  # the voice's profile (spoken replies)
        self.gen = None  # the body's synthesis generator once started

    def obj(self, status: str, *, output=None, usage=None, details=None) -> dict:
        """The ``response`` object of the ``response.*`` events."""
        conn, resp = self.conn, self.resp
        return ev.response_object(resp.id, conn.conversation_id, status=status, modalities=resp.modalities,
                                  voice=conn.session.get("voice"), output=output, usage=usage,
                                  status_details=details,
                                  output_audio_format=conn.session.get("output_audio_format") or "pcm")

    async def run(self) -> None:
        conn, resp = self.conn, self.resp
        cfg = conn.cfg
        chunk_ms = int(cfg.realtime_audio_chunk_ms)
        turn_index = conn.turns.next_turn()
        delays = conn.latency.sample(turn_index, chunk_ms) if conn.latency.enabled else NO_DELAYS
        t0 = time.perf_counter()
        # §7.6: most of the wait falls before response.created -- the reply's first audio is made first,
        # then created/item/part go out together (§7.5)
        speech = get_speech(conn.app)
        instructions = resp.instructions or conn.session.get("instructions") or None
        voice = conn.session.get("voice")
        audio_on = resp.audio_on
        user = resp.user
        # a text turn: a CJK script says which language it is (issue 10); Latin text does not
        typed = user.text_future.result() if user is not None and user.audio is None and user.text_future.done() \
            else None
        # the reply, planned socket-free (qvtools/server/reply_plan.py): issue 11, the reply's first sentence
        # (the opener, chosen from seed and turn only) is spoken at once, while the user's words may still be
        # being transcribed -- the omni model answers from the audio and response.created may precede the
        # user's transcription (§7.14) -- and the body follows
        await rt_early.settled(conn)  # issue 22 item 4: a first turn's language, detected while it was spoken
        plan = self.plan = ReplyPlanner(speech, conn.reply_params(turn_index, instructions, audio=audio_on,
                                                                   typed_text=typed))
        if conn.state.voice_record is not None:
            conn.spawn(conn.run_cpu(conn.store.touch, conn.key, voice))  # last_used (§2.4 auto-cleanup)
        if audio_on:
            self.profile = await guard(resp, conn.voice_profile(speech, voice))
            if self.profile is None:
                await self.finish_cancelled()
                return
        pieces = None
        if plan.opener is not None:
            p = plan.params
            x = speech.cached_opener_audio(plan.opener, voice_key=p.voice_key, sample_rate=p.rate,
                                           language=p.language)
            if x is None:  # not prepared (a new voice or rate): made now, once
                x = await guard(resp, conn.run_cpu(speech.opener_audio, plan.opener, self.profile, p.rate,
                                                   voice_key=p.voice_key, language=p.language))
                if x is None:
                    await self.finish_cancelled()
                    return
            pieces = (plan.opener, x)
        else:
            if not await self.hear():
                await self.finish_cancelled()
                return
            if audio_on:
                pieces = await self.next_piece()
        toks = plan.tokens  # updated in place when the reply is heard after the opener
        conn.prepare_next_opener(speech, turn_index + 1)
        if resp.cancelled.is_set() or not await until(resp, t0 + delays.created_s):
            await self.finish_cancelled()
            return
        await conn.send(ev.response_created(self.obj("in_progress")), resp.id)
        resp.created_sent = True
        t_created = time.perf_counter()
        for event in resp.opening(conn.turns.link(resp.item_id)):  # output_item.added, item.created, part.added
            await conn.send(event, resp.id)
        # simulated latency: the first delta is not sent before created + first_audio_s (a floor)
        if not await until(resp, t_created + delays.first_audio_s):
            await self.finish_cancelled()
            return
        if audio_on:
            ok = await self.stream_audio(pieces, toks, chunk_ms, delays.chunk_interval_s)
        else:
            ok = True
            for tok in toks:
                if resp.cancelled.is_set():
                    ok = False
                    break
                await conn.send(resp.text_delta(tok), resp.id)
        if not ok:
            await self.finish_cancelled()
            return
        await self.send_dones("completed")
        text, user_text = plan.text or "", plan.user_text
        out_s = resp.audio_samples / float(conn.out_rate)
        usage = sr.compute_usage(conn.model, input_audio_s=resp.user.audio_s if resp.user else 0.0,
                                 output_audio_s=out_s, input_text=(instructions or "") + " " + user_text,
                                 output_text=text, history_tokens=conn.turns.history_tokens,
                                 text_only=not resp.audio_on)
        conn.turns.count_history(sr.estimate_text_tokens(user_text) + sr.estimate_text_tokens(text))
        await conn.send(ev.response_done(self.obj("completed", output=[resp.final_item("completed")],
                                                  usage=usage)), resp.id)

    async def hear(self) -> bool:
        """Plan the whole reply once the transcript is in (False when cancelled meanwhile)."""
        resp, plan = self.resp, self.plan
        user_text = ""
        if resp.user is not None:
            user_text = await guard(resp, asyncio.shield(resp.user.text_future))
            if user_text is None:
                return False
        note = plan.hear(user_text, getattr(resp.user, "language", None))
        if note:
            log.warning("session %s: turn in %r: %s", self.conn.session_id, plan.turn_language, note)
        if plan.opener_mismatch:  # cannot happen with Responder (reply = opener + " " + body); speak it all
            log.warning("session %s: the reply does not start with its opener %r", self.conn.session_id,
                        plan.opener)
        return True

    async def first_body_piece(self):
        """``(generator, first piece or None)`` of the body: the one made in the VAD silence window when
        it was made for this very reply, else a new generator."""
        resp, plan = self.resp, self.plan
        body = plan.speculative_body(resp.user.speculative if resp.user is not None else None)
        if body is not None:
            try:
                made = await guard(resp, asyncio.shield(body))
            except Exception:  # noqa: BLE001 -- synthesized again below; a real failure shows there
                log.info("session %s: the speculative synthesis failed; again", self.conn.session_id)
                made = None
            if made is not None:
                self.conn.speculations.stats["replies"] += 1
                return made
            if resp.cancelled.is_set():
                return None, None
        return plan.synthesize(self.profile), None

    async def next_piece(self):
        """The next ``(sentence, audio)`` after the ones sent (the body's first once heard); None at the end."""
        if self.gen is None:
            if not self.plan.heard and not await self.hear():
                return None
            self.gen, first = await self.first_body_piece()
            if first is not None or self.gen is None:
                return first
        # the synthesis generator's next piece, run in the executor
        return await guard(self.resp, self.conn.run_cpu(next, self.gen, None))

    async def stream_audio(self, piece, toks, chunk_ms, interval) -> bool:
        """Send the synthesized audio in ``chunk_ms`` deltas (the remainder carried across sentences),
        each sentence's transcript tokens spread over its chunks (§4.5 "interleaved",
        :func:`~qvtools.server.rt_response.plan_sentence`)."""
        conn, resp = self.conn, self.resp
        step = 2 * max(1, int(round(conn.out_rate * chunk_ms / 1000.0)))
        carry = b""
        sent_tokens = 0
        next_due = time.perf_counter()

        async def emit(chunk: bytes, text: str) -> bool:
            nonlocal next_due
            if resp.cancelled.is_set():
                return False
            if text:
                await conn.send(resp.transcript_delta(text), resp.id)
            if chunk:
                if interval > 0 and not await until(resp, next_due):
                    return False
                conn.state.audio_output_started = True  # the voice is now fixed (cannot_update_voice, §5.6)
                await conn.send(resp.audio_delta(chunk), resp.id)
                next_due = max(next_due, time.perf_counter() - interval) + interval
            return True

        while piece is not None:
            sentence, x = piece
            nxt_task = asyncio.ensure_future(self.next_piece())  # synthesize the next one meanwhile
            head, deltas, carry, after = plan_sentence(carry, to_pcm16(np.asarray(x, dtype=np.float32)), step, toks,
                                                       sent_tokens, len(sentence.split()))
            if head is not None:
                await conn.send(resp.transcript_delta(head), resp.id)
                sent_tokens = after
            for chunk, text, sent_after in deltas:
                if not await emit(chunk, text):
                    nxt_task.cancel()
                    return False
                sent_tokens = sent_after
            piece = await nxt_task
            if resp.cancelled.is_set():
                return False
        return await emit(carry, "".join(toks[sent_tokens:]))

    async def send_dones(self, status: str) -> None:
        for event in self.resp.dones(status):
            await self.conn.send(event, self.resp.id)

    async def finish_cancelled(self) -> None:
        """§4.5 c / §5.9 / §7.6: the pending ``*.done`` events, then ``response.done`` with status
        ``realtime_cancel_status`` ("cancelled" as observed; "incomplete" the earlier guess), by flag."""
        conn, resp = self.conn, self.resp
        if conn.closed:
            return
        await self.send_dones("incomplete")
        if conn.cfg.realtime_response_done_on_cancel:
            if not resp.created_sent:
                await conn.send(ev.response_created(self.obj("in_progress")), resp.id)
            status = conn.cfg.realtime_cancel_status
            out = [resp.final_item("incomplete")] if resp.item_id and resp.transcript else []
            # §7.6: the observed response.done of a cancel carries usage (what was produced), no status_details
            usage = sr.compute_usage(conn.model, input_audio_s=resp.user.audio_s if resp.user else 0.0,
                                     output_audio_s=resp.audio_samples / float(conn.out_rate),
                                     output_text="".join(resp.transcript), history_tokens=conn.turns.history_tokens)
            await conn.send(ev.response_done(self.obj(status, output=out, usage=usage)), resp.id)
