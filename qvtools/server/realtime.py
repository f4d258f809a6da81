"""The local service's Qwen-Omni-Realtime WebSocket: ``handle_realtime(request)`` and the connection.

One :class:`_Connection` per socket. It reads and parses frames, dispatches, keeps timers and awaits
(speech work in the executor, the simulated delays, the sends); the protocol state and decisions live in
socket-free modules that tests drive with bytes and dicts: :mod:`.rt_handshake` (model and session caps
before the upgrade), :mod:`.rt_session` (``session.update`` -> the events and the new state; the session's
voice standing; ``response.create`` options), :mod:`.rt_turns` (turn bookkeeping, the response gate, the
transcription events), :mod:`.rt_input` (the input buffer and server-VAD feed), :mod:`.rt_response` (one
response's ordered events), :mod:`.reply_plan` (what a reply says, in which language -- decided once --,
opener or body, whether a speculation is still valid) and :mod:`.rt_state` (the app's realtime state); one
response's run is :class:`~.rt_respond.ResponseRun`. It speaks
the wire protocol through the shared event model (:mod:`qvtools.realtime.events`), so the client and the
server cannot drift apart (§ numbers: ``../shared/reference/dashscope-protocol.md``):

- auth, model and session-count checks happen *before* the upgrade (401 ``InvalidApiKey``; 404
  ``ModelNotFound`` for a name that is not ``…-omni-…-realtime``, §5.1, §5.4, §7.8; 429
  ``Throttling.RateQuota`` past the per-key or the global session cap);
- ``session.created`` is sent at once in the family's observed shape (§7.1, :mod:`qvtools.catalog`) plus
  a ``qvtools`` metadata field that says where the latencies come from (``latency_source``: SIMULATED
  profile, REPLAYED run or none; :mod:`qvtools.server.latency`);
- ``session.update`` is merged and validated by :func:`~qvtools.server.rt_session.apply_update` and echoed
  with the observed key set (§7.2); an unusable voice is accepted and answered at the next response
  trigger by a lone ``error`` (§7.3); cloned voices are looked up in the caller's key scope (§5.6), off the
  event loop, their decoded profile cached (bounded LRU);
- server VAD (:class:`qvtools.vad.StreamingVAD`) or manual commit (the user item and partial
  transcriptions while audio is still appended, §7.4, one partial at a time over all sessions);
  transcription and a response in the §4.5 order, produced by :class:`qvtools.server.speech.SpeechPipeline`
  in an executor, with the wait before ``response.created`` (§7.6) and transcript deltas before the first
  audio delta (§7.5);
- issue 11 (a pipeline faster than the cloud): the reply's first sentence (the opener, from seed and turn
  only) is synthesized ahead, per voice and rate (after ``session.update`` and at each response), and sent
  at once, while the user's words may still be being transcribed (§7.14: ``response.created`` may precede
  the transcription); the body follows. With server VAD the utterance is transcribed -- and the body's
  first sentence synthesized -- speculatively once the speech is followed by :data:`SPECULATE_AFTER_MS` of
  silence, and dropped when speech resumes. Whether the reply language is known before ASR is decided in
  one place, :func:`~qvtools.server.reply_plan.language_before_asr` (``_Connection._expected_language``
  gathers its inputs), and carried in the reply's :class:`~qvtools.server.reply_plan.ReplyParams`;
- ``response.cancel`` (pending ``*.done``, then ``response.done`` status ``cancelled``, §7.6),
  ``session.finish``, the idle close (§7.12) and the 120-min cap (§5.9, §5.10);
- every sent event is recorded in ``app[TRACE]`` with ``time.perf_counter()`` right before sending.

Bad input never ends a session: malformed JSON, unknown types, bad base64, odd-length audio, lone
surrogates, over-long text and out-of-order events are answered with ``error`` events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import WSMsgType, web

from ..audio import from_pcm16, resample
from ..realtime import events as ev
from ..realtime.session_model import default_session
from . import session_rules as sr  # server-only session rules (validation, echo, usage)
from .faults import FAULTS
from . import asr_lane as lane
from . import rt_early, semantic_vad
from .http import CONFIG, LATENCY, STORE, TRACE, authenticate, error_response
from .latency import LatencySource
from .rt_handshake import admit, check_handshake, release
from . import rt_limits, rt_session
from .rt_items import ItemError, client_item
from .rt_input import AppendError, BufferFull, InputBuffer, decode_append, image_problem
from .rt_respond import ResponseRun
from .rt_response import ResponseStream, UserTurn
from . import turn_language
from .rt_turns import Gate, TurnState, barge_in, commit_responds, partial_step_bytes, replies_ahead, response_gate, \
    transcription_delta, transcription_events, transcription_failure
from .rt_state import REALTIME, RealtimeState, get_speech, voice_cache
from .reply_plan import SPECULATE_AFTER_MS, ReplyParams, ReplyPlanner, Speculation, Speculations, SpeculativeReply, \
    language_before_asr, session_seed, voice_key

__all__ = ["handle_realtime", "get_speech", "close_sessions", "voice_cache", "RealtimeState", "REALTIME",
           "SPECULATE_AFTER_MS"]

log = logging.getLogger(__name__)

async def handle_realtime(request: web.Request):
    """``GET /api-ws/v1/realtime?model=<m>``: auth, model check, session caps, upgrade, then the session.

    Once the socket is upgraded nothing may reach the HTTP error middleware (it would write an HTTP answer
    onto the WebSocket, issue 13): a failure is logged and the socket closed with 1011."""
    key = authenticate(request)  # raises the documented 401 before any upgrade (§5.1)
    config = request.app[CONFIG]
    model = request.query.get("model", "")
    state = request.app[REALTIME]
    refusal = check_handshake(model, key, config, state.active,  # qvtools/server/rt_handshake.py
                              latency=request.app[LATENCY] if LATENCY in request.app else None)
    if refusal is not None:
        return error_response(refusal.status, refusal.code, refusal.message, headers=refusal.headers)
    admit(state.active, key)  # reserved before any await, so racing handshakes count too
    ws = None
    try:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=int(config.realtime_max_frame_bytes))
        await ws.prepare(request)
        try:
            conn = _Connection(request.app, ws, key, model)
            # fault injection (qvtools/server/faults.py): off unless a plan is configured; bounds slow readers
            conn.faults = request.app[FAULTS].open_session(key, conn.session_id, request.transport)
        except Exception:
            log.exception("realtime session setup failed; closing with 1011")
            await ws.close(code=1011, message=b"internal error")
            return ws
        state.open.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug of ours after the upgrade: close the socket, never an HTTP 500 on it
            log.exception("session %s: the realtime handler failed; closing with 1011", conn.session_id)
            await conn._close(1011, "internal error")
        finally:
            state.open.discard(conn)
            await conn.shutdown()
    finally:
        release(state.active, key)
    return ws


async def close_sessions(app) -> None:
    """Close every open realtime socket with 1001 (for ``app.on_shutdown``, so a stop never waits on them)."""
    for conn in list(app[REALTIME].open):
        await conn._close(1001, "service shutting down")


class _Connection:
    def __init__(self, app, ws: web.WebSocketResponse, key: str, model: str):
        self.app = app
        self.ws = ws
        self.key = key
        self.model = model
        self.cfg = app[CONFIG]
        self.store = app[STORE]
        self.trace = app[TRACE]
        self.faults = None  # SessionFaults (qvtools/server/faults.py), set by handle_realtime
        self.loop = asyncio.get_running_loop()
        # the session's configuration and its voice's standing, socket-free (qvtools/server/rt_session.py)
        self.state = rt_session.SessionState(default_session(model))
        self.session_id = self.session["id"]
        self.conversation_id = ev.new_id("conv")
        # qvtools/server/latency.py: simulated profile (catalog family), a replayed run, or none
        self.latency_source = app[LATENCY] if LATENCY in app else LatencySource.from_config(self.cfg)
        if self.cfg.realtime_metadata:
            self.session["qvtools"] = {"server": "qvtools local service (offline stand-in)",
                                       **self.latency_source.metadata(model)}
        self.latency = self._make_latency()
        self.send_lock = asyncio.Lock()
        self.closed = False
        # the input audio buffer and server VAD, socket-free (qvtools/server/rt_input.py)
        self.input = InputBuffer(self.in_rate, self.cfg.realtime_max_buffer_s, self.session.get("turn_detection"))
        self.partial_task: asyncio.Task | None = None
        self.idle_since = time.monotonic()  # §7.12: reset when a response starts or ends
        self.response: ResponseStream | None = None
        # item chain, turn counter, last turn's language, history size, pending user turn and the manual
        # turn's state, socket-free (qvtools/server/rt_turns.py)
        self.turns = TurnState()
        self.tasks: set[asyncio.Task] = set()
        self.started = time.monotonic()
        # issue 11: ASR started in the VAD silence window (qvtools/server/reply_plan.py); the stats are the
        # app's, counted on the event loop only
        self.speculations = Speculations(app[REALTIME].spec_stats)
        self._profiles: dict = {}  # built-in voice -> profile (no executor hop on a turn's critical path)

    # ------------------------------------------------------------------------------- plumbing
    def _make_latency(self):
        """This session's delay sampler (``LatencySimulator`` / ``ReplaySampler``), seeded by ``seed``."""
        return self.latency_source.sampler(self.model, self.session.get("seed"))

    async def send(self, event: dict, response_id: str | None = None) -> bool:
        if self.closed or self.ws.closed:
            return False
        faults = self.faults
        if faults is not None and not await faults.before_send(self, event):
            return False  # a stalled stream (injected fault)
        try:
            text = ev.dumps(event)
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate that slipped into an answer: escape it, never crash
            text = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
        rid = response_id or (event.response_id if isinstance(event, ev.Event) else None)
        timeout = float(self.cfg.realtime_send_timeout_s)
        async with self.send_lock:
            t = time.perf_counter()  # right before the send (ServerTrace contract)
            self.trace.record(self.session_id, event["type"], rid, t)
            try:
                # bounded send: a client that stops reading is closed, never buffered for (slow reader)
                async with asyncio.timeout(timeout):
                    await self.ws.send_str(text)
            except TimeoutError:
                if faults is not None:
                    await faults.slow_reader(self, timeout)
                self.closed = True
                return False
            except (ConnectionError, RuntimeError) as exc:
                log.info("session %s: send failed (%s); client gone", self.session_id, type(exc).__name__)
                self.closed = True
                return False
        if faults is not None:
            await faults.after_send(self, event)
        return True

    async def error(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                    event_id: str | None = None, type: str = "invalid_request_error") -> None:
        await self.send(ev.error(message, code=code, param=param, event_id=event_id, type=type))

    def spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run_cpu(self, fn, *args, **kwargs):
        return await self.loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    async def run_asr(self, priority: int, fn, *args):
        """``fn(*args)`` on the app's ASR lane at ``priority`` (:mod:`qvtools.server.asr_lane`)."""
        return await asyncio.wrap_future(self.app[REALTIME].asr_lane.submit(priority, fn, *args))

    @property
    def session(self) -> dict:
        """The session's configuration (:attr:`SessionState.session`)."""
        return self.state.session

    @property
    def in_rate(self) -> int:
        return ev.input_format(self.session)[1]

    @property
    def out_rate(self) -> int:
        return ev.output_format(self.session)[1]

    # ------------------------------------------------------------------------------- main loop
    async def run(self) -> None:
        shape = self.cfg.realtime_session_keys
        await self.send(ev.session_created(sr.session_echo(self.session, "created", shape)))
        self.prepare_next_opener(get_speech(self.app), 0, 1)  # the default voice (issue 11)
        idle = float(self.cfg.realtime_idle_timeout_s)
        observed_idle = self.cfg.realtime_idle_close != "legacy"
        cap_deadline = self.started + float(self.cfg.realtime_max_session_s)
        while not self.closed:
            now = time.monotonic()
            remaining_cap = cap_deadline - now
            if remaining_cap <= 0:
                await self._expire("session_expired", "The session reached its maximum duration of "
                                   f"{self.cfg.realtime_max_session_s / 60:.0f} min (§4.1: at most 120 min).")
                return
            # §7.12: idle = no response generated (none in progress) for idle s; legacy: no client frame
            busy = observed_idle and self.response is not None
            remaining_idle = idle if busy else self.idle_since + idle - now
            if remaining_idle <= 0:
                if observed_idle:
                    await self._idle_close(idle)
                else:
                    await self._expire("idle_timeout", f"No client event for {idle:g} s; closing the session.")
                return
            try:
                msg = await self.ws.receive(timeout=max(0.001, min(remaining_idle, remaining_cap)))
            except asyncio.TimeoutError:
                continue  # the loop re-checks both deadlines
            if not observed_idle:
                self.idle_since = time.monotonic()
            kind, data = msg.type, msg.data
            msg = None  # an idle session must not hold its last frame (up to realtime_max_frame_bytes, issue 13)
            if kind == WSMsgType.TEXT:
                text, data = data, None
                await self._dispatch(text)
                del text
            elif kind == WSMsgType.BINARY:
                data = None
                await self.error("Binary frames are not supported; send JSON text events (§4.1).",
                                 code="invalid_event")
            elif kind in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    async def _idle_close(self, idle: float) -> None:
        """§7.12 (three independent reports): ``error`` ``response_idle_timeout``, then close 1007 with the
        same text as the reason."""
        message = f"Your session was closed because no response was generated for {idle:g} seconds."
        await self.error(message, code="response_idle_timeout")
        await self._close(1007, message)

    async def _expire(self, code: str, message: str) -> None:
        await self.error(message, code=code, type="server_error")
        await self._close(1000, code)

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        if not self.ws.closed:
            raw = reason.encode("utf-8", "replace")[:123]  # RFC 6455 §5.5: a close reason fits in 123 bytes
            try:
                await self.ws.close(code=code, message=raw.decode("utf-8", "ignore").encode("utf-8"))
            except (ConnectionError, RuntimeError):
                pass

    async def shutdown(self) -> None:
        """Stop background work when the socket is gone (abrupt closes are normal, §5.10)."""
        self.closed = True
        if self.faults is not None:
            self.faults.injector.close_session(self.session_id)
        if self.response is not None:
            self.response.cancelled.set()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _dispatch(self, text: str) -> None:
        try:
            event = ev.parse(text)
        except Exception as exc:
            code = getattr(exc, "code", "invalid_json")
            await self.error(getattr(exc, "message", str(exc)), code=code or "invalid_json",
                             param=getattr(exc, "param", None))
            return
        bad = ev.invalid_text_path(event, text)
        if bad is not None:
            # issue 13: "\ud800" is valid JSON and UTF-8 on the wire but no text; the documented error shape
            event_id = event.event_id if isinstance(event.event_id, str) and bad != "event_id" else None
            await self.error(f"Invalid text in '{bad}': it contains a lone UTF-16 surrogate, which is not a "
                             "Unicode character.", param=bad, event_id=event_id)
            return
        too_long = rt_limits.too_long(event, self.cfg)
        if too_long is not None:
            param, limit = too_long
            event_id = event.event_id if param != "event_id" else None
            await self.error(f"'{param}' is too long: the limit is {limit} characters.", param=param,
                             event_id=event_id)
            return
        handler = self._HANDLERS.get(event.type)
        if handler is None:
            await self.error(f"Invalid event type: '{event.type}'.", code="invalid_event", param="type",
                             event_id=event.event_id)
            return
        try:
            await handler(self, event)
        except Exception:  # a bug must not kill the session either
            log.exception("session %s: handling %s failed", self.session_id, event.type)
            await self.error(f"Internal error while handling '{event.type}'.", code="internal_error",
                             event_id=event.event_id if isinstance(event.event_id, str) else None,
                             type="server_error")

    # ------------------------------------------------------------------------------- handlers
    async def _voice_meta(self, voice):
        """The stored record of a cloned voice *without* its audio (off the event loop), else None."""
        if not ev.is_cloned_voice(voice):
            return None
        if self.state.voice_record is not None and self.state.voice_record.voice == voice:
            return self.state.voice_record
        return await self.run_cpu(self.store.get, self.key, voice, with_audio=False)

    async def on_session_update(self, event) -> None:
        if self.state.dead:
            # §7.3: after a generation-time voice error "a later session.update on that connection got no
            # answer: the client must open a new connection"
            log.info("session %s: session.update after a voice error left unanswered (§7.3)", self.session_id)
            return
        update = event.get("session")
        voice = rt_session.named_voice(update)
        meta = await self._voice_meta(voice) if voice is not None else None
        up = rt_session.apply_update(self.session, update, model=self.model, cfg=self.cfg, meta=meta,
                                     voice_locked=self.state.audio_output_started,
                                     audio_started=self.state.audio_started,
                                     faults=self.faults is not None)  # qvtools/server/rt_session.py
        if up.error is not None:  # §4.5 d: a bad update gives error and no session.updated
            await self.send(ev.error(up.error["message"], code=up.error["code"], param=up.error["param"],
                                     event_id=event.event_id))
            return
        new = self.state.session = up.session
        if up.faults_asked:
            self.faults.set_plan(up.faults_plan)
        cloned = ev.is_cloned_voice(new["voice"])
        if cloned and new["voice"] != voice:  # unchanged by this update: keep (or fetch) the current record
            meta = await self._voice_meta(new["voice"])
        # the record, and the voice error answered at the next response trigger (§7.3, §7.11)
        self.state.accept_voice(meta if cloned else None, cfg=self.cfg, model=self.model, meta=meta)
        if up.input_changed:
            self.input.configure(self.in_rate, self.session.get("turn_detection"))
        if up.seed_changed:
            self.latency = self._make_latency()
        await self.send(ev.session_updated(up.echo))
        if up.openers_changed:
            # issue 11: the opener audio of the next turns, for this voice and rate, ahead of the turns
            self.prepare_next_opener(get_speech(self.app), self.turns.turn_index, self.turns.turn_index + 1)

    async def on_append(self, event) -> None:
        try:
            data = decode_append(event.get("audio"), ev.input_format(self.session)[0])
        except AppendError as exc:
            await self.error(str(exc), param="audio", event_id=event.event_id)
            return
        if not data:
            return
        self.state.audio_started = True
        try:
            speech = self.input.append(data)
        except BufferFull as exc:
            # ServiceConfig.realtime_max_buffer_s: error event, the buffer dropped (as by clear), session goes on
            self._drop_buffer()
            await self.error(str(exc), code="input_audio_buffer_limit_exceeded", param="audio",
                             event_id=event.event_id)
            return
        if self.input.vad is None:
            await self._manual_progress()
            return
        for sev in speech:
            if sev.kind == "speech_started":
                await self.send(ev.speech_started(sev.audio_ms, sev.item_id))
                if self.response is not None and barge_in(self.session.get("turn_detection")):
                    self._cancel_response()  # barge-in (§4.2 interrupt_response)
            else:
                await self.send(ev.speech_stopped(sev.audio_ms, sev.item_id))
                await self._commit(sev.item_id, sev.start_ms, int(sev.audio_ms), auto=True)
        self.input.settle()
        rt_early.start(self)  # issue 22 item 4: a first utterance's language, detected while it is spoken
        self._speculate()

    def _speculate(self) -> None:
        """Server VAD (issue 11): when the speech has been followed by :data:`SPECULATE_AFTER_MS` of
        silence, transcribe the utterance so far in the executor; :meth:`_commit` reuses the result when
        ``speech_stopped`` commits exactly that audio. Speech that resumes drops it (the executor job
        runs out, its text is never used); one job per session at a time (:class:`Speculations`)."""
        key = self.speculations.due(self.input.pending_stop())
        if key is None:
            return
        pcm = self.input.slice_ms(key[1], key[2])
        if not pcm:
            return
        spec = self.speculations.begin(key, pcm)
        spec.task = self.spawn(self._speculation_job(spec, from_pcm16(pcm), self.in_rate))

    def _speculative_inputs(self):
        """``(reply params, voice profile)`` when the turn's reply can be made ahead too (server VAD makes
        the response, audio out, the voice's profile at hand); else None (transcription only)."""
        if not replies_ahead(self.session, self.state.voice_error):  # qvtools/server/rt_turns.py
            return None
        params = self.reply_params(self.turns.turn_index, self.session.get("instructions") or None, audio=True)
        if params.language is None:  # known only after ASR: no reply ahead
            return None
        voice = self.session.get("voice")
        meta = self.state.voice_record
        if meta is not None and ev.is_cloned_voice(voice):
            profile = voice_cache(self.app).get((self.key, voice, meta.sha256))
        else:
            profile = self._profiles.get(voice)
        if profile is None:
            return None
        return params, profile

    async def _speculation_job(self, spec: Speculation, x, rate: int) -> SpeculativeReply:
        """The transcript of the utterance so far (executor) -- what the turn's transcription events and
        reply wait for -- and then, with ``inputs`` and unless speech resumed meanwhile, the reply's first
        synthesized piece after its opener, as a second executor job (``SpeculativeReply.body``)."""
        await rt_early.settled(self)  # the reply ahead needs its language (issue 22 item 4)
        inputs = self._speculative_inputs()
        rec = await self.run_asr(lane.SPECULATIVE, self._recognize, x, rate, self._asr_language())
        made = SpeculativeReply(rec.text, language=rec.language)
        if inputs is None or spec.dropped:
            return made
        params, profile = inputs  # params.language is known (else no inputs): the reply is planned on the loop
        plan = ReplyPlanner(get_speech(self.app), params)
        plan.hear(rec.text)
        if plan.opener_mismatch:
            return made
        made.params, made.text, made.opener = params, plan.text, plan.opener
        made.body = self.spawn(self.run_cpu(plan.first_piece, profile))
        return made

    async def _manual_progress(self) -> None:
        """Manual mode as observed (§7.4): the user item is created at the first append of a turn, and the
        transcription streams while audio is still appended. The local ASR is whole-utterance Whisper, so
        the stream is emulated: after every ``realtime_partial_transcription_s`` of newly appended audio the
        buffer so far is transcribed (one job at a time, in the executor) and sent as a delta."""
        if self.cfg.realtime_manual_user_item != "early":
            return
        opened = self.turns.begin_manual()  # qvtools/server/rt_turns.py
        if opened is not None:
            await self.send(ev.item_created(ev.user_item(opened[0], status="in_progress"), opened[1]))
        state = self.app[REALTIME]
        step = partial_step_bytes(self.session, self.cfg.realtime_partial_transcription_s, self.in_rate)
        # one partial at a time per session and service-wide (RealtimeState.partials)
        busy = (self.partial_task is not None and not self.partial_task.done()) or state.partials > 0
        if not self.turns.partial_due(len(self.input), step, busy=busy):
            return
        state.partials += 1  # counted from now (the task starts later), released when it ends however it ends
        self.partial_task = self.spawn(self._partial_transcription(self.turns.manual_item, bytes(self.input.buf),
                                                                   self.in_rate))
        self.partial_task.add_done_callback(lambda _t: setattr(state, "partials", state.partials - 1))

    async def _partial_transcription(self, item_id: str, pcm: bytes, rate: int) -> None:
        x = from_pcm16(pcm)
        try:
            rec = await self.run_asr(lane.PARTIAL, self._recognize, x, rate, turn_language.expected_language(
                self.session, self.state.voice_record, self.turns.last_language,
                self.app[REALTIME].language_candidates))
            text = rec.text
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a partial is best effort; the commit's transcription reports failures
            log.info("session %s: partial transcription failed (%s)", self.session_id, type(exc).__name__)
            return
        log.debug("session %s: partial transcription of %.1f s: %r", self.session_id, len(x) / rate, text)
        if text and self.turns.is_open(item_id):  # not after the commit (its transcription is final)
            await self.send(transcription_delta(item_id, text, rec.language, self.cfg.realtime_transcription_delta))

    def _drop_buffer(self) -> None:
        self.input.clear()
        self.turns.drop_manual()
        self.speculations.drop()

    async def _commit(self, item_id: str, start_ms=None, end_ms=None, *, auto: bool) -> None:
        pcm = self.input.take(start_ms, end_ms)
        spec = self.speculations.take((item_id, start_ms, end_ms), pcm) if auto else None
        x = from_pcm16(pcm)
        del pcm
        user = UserTurn(item_id, x, self.in_rate)
        early, prev = self.turns.commit(item_id)  # §7.4: early: the item was created at the turn's first append
        await self.send(ev.committed(item_id, prev))
        if not early:
            await self.send(ev.item_created(ev.user_item(item_id), prev))
        self.turns.pending_user = user
        self.spawn(self._transcribe(user, spec))
        if commit_responds(self.session.get("turn_detection"), auto=auto):
            if self.response is not None:
                self._cancel_response()
                await self._wait_response_end()
            await self._start_response(None, None)

    async def on_commit(self, event) -> None:
        if not self.input:
            # §4.3: "An empty buffer gives an error"
            await self.error("Error committing input audio buffer: the buffer is empty.",
                             code="input_audio_buffer_commit_empty", event_id=event.event_id)
            return
        item = self.input.speech_item or self.turns.manual_item or ev.new_id("item")
        self.input.speech_item = None
        await self._commit(item, None, None, auto=False)

    async def on_clear(self, event) -> None:
        self._drop_buffer()
        await self.send(ev.cleared())

    async def on_image(self, event) -> None:
        problem = image_problem(event.get("image"), self.state.audio_started)  # qvtools/server/rt_input.py
        if problem is not None:
            await self.error(problem, param="image", event_id=event.event_id)

    async def on_response_create(self, event) -> None:
        if self.response is not None:
            await self.error("Conversation already has an active response.",
                             code="conversation_already_has_active_response", event_id=event.event_id)
            return
        try:  # qvtools/server/rt_session.py
            opts = rt_session.response_options(self.session, event.get("response"), model=self.model)
        except rt_session.OptionsError as exc:
            await self.error(exc.message, param=exc.param, event_id=event.event_id)
            return
        await self._start_response(opts.modalities, opts.instructions, event_id=event.event_id)

    async def on_response_cancel(self, event) -> None:
        if self.response is None:
            await self.error("Cancellation failed: no active response found.", code="response_cancel_not_active",
                             event_id=event.event_id)
            return
        # §4.5 c: stop and emit the pending *.done events before handling the next client event
        self._cancel_response()
        await self._wait_response_end()

    async def on_item_create(self, event) -> None:
        try:  # qvtools/server/rt_items.py
            item = client_item(event.get("item"), keep_client_id=self.cfg.realtime_item_ids == "client")
        except ItemError as exc:
            await self.error(exc.message, param=exc.param, event_id=event.event_id)
            return
        if item.text is not None:  # a user message: the turn a response.create answers
            self.turns.pending_user = UserTurn(item.item_id, None, self.in_rate, text=item.text)
        # previous_item_id on every item after the first
        await self.send(ev.item_created(item.out, self.turns.link(item.item_id)))

    async def on_finish(self, event) -> None:
        if self.cfg.realtime_finish_error:
            # [obs I140]: qwen3.5-omni-flash answered "invalid event type"
            await self.error("Invalid event type: 'session.finish'.", code="invalid_event", param="type",
                             event_id=event.event_id)
            return
        if self.response is not None:
            self._cancel_response()
            await self._wait_response_end()
        await self.send(ev.session_finished())
        await self._close(1000, "session finished")

    _HANDLERS = {
        "session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
        "input_image_buffer.append": on_image,
        "response.create": on_response_create,
        "response.cancel": on_response_cancel,
        "conversation.item.create": on_item_create,
        "session.finish": on_finish,
    }

    # ------------------------------------------------------------------------------- transcription
    def _asr_language(self) -> str | None:
        """The language the final ASR pass is told (issue 10): the session's or the voice's, else the one
        detected on an earlier turn (``ServiceConfig.realtime_language_detection = "first_turn"``), else
        None (detected among ServiceConfig.realtime_language_candidates; qvtools/server/turn_language.py)."""
        last = self.turns.last_language if self.cfg.realtime_language_detection == "first_turn" else None
        return turn_language.asr_language(self.session, self.state.voice_record,
                                          self.app[REALTIME].language_candidates, last)

    def _recognize(self, x, rate: int, language: str | None):
        """The :class:`qvtools.asr.Transcription` of user audio ``x`` at ``rate`` Hz in ``language`` (None:
        detected among the candidates), text stripped (runs in the executor)."""
        x16 = resample(x, rate, 16000) if rate != 16000 else x
        rec = get_speech(self.app).recognize(x16, language, self.app[REALTIME].language_candidates,
                                             self.cfg.realtime_language_detector, self.cfg.realtime_asr_window)
        return rec._replace(text=rec.text.strip())

    async def _transcribe(self, user: UserTurn, speculative: asyncio.Task | None = None) -> None:
        session = self.session  # whether the turn is transcribed is the session's at the commit
        text = ""
        language = None
        try:
            x = user.audio
            if x is not None and len(x):
                heard = None
                if speculative is not None:  # issue 11: started in the VAD silence window, same audio
                    try:
                        made = await asyncio.shield(speculative)
                        user.speculative, heard, language = made, made.transcript, made.language
                    except asyncio.CancelledError:
                        if not speculative.cancelled():
                            raise
                    except Exception:  # noqa: BLE001 -- transcribed again below, failures reported there
                        log.info("session %s: the speculative transcription failed; again", self.session_id)
                if heard is None:
                    rec = await self.run_asr(lane.FINAL, self._recognize, x, user.rate, self._asr_language())
                    heard, language = rec.text, rec.language
                text = heard
                # issue 10: the turn's language (the reply's when it was not known before ASR) and the hint
                # for the next turn's opener (turn_language.expected_language)
                user.language = language
                self.turns.heard(language)
            for event in transcription_events(user.item_id, text, language, session=session,
                                              shape=self.cfg.realtime_transcription_delta):
                await self.send(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: transcription failed", self.session_id)
            for event in transcription_failure(user.item_id, str(exc), session=session):
                await self.send(event)
        finally:
            if not user.text_future.done():
                user.text_future.set_result(text)

    # ------------------------------------------------------------------------------- responses
    async def _start_response(self, modalities, instructions, event_id: str | None = None, *,
                              judged: bool = False) -> None:
        gate = response_gate(self.session.get("turn_detection"), pending_user=self.turns.pending_user,
                             voice_error=self.state.voice_error, judged=judged)  # qvtools/server/rt_turns.py
        if gate is Gate.JUDGE:
            # semantic VAD (our imitation, qvtools/server/semantic_vad.py): judged on the transcript first
            self.spawn(self._semantic_turn(self.turns.take_pending(), modalities, instructions, event_id))
            return
        if gate is Gate.VOICE_ERROR:
            # §7.3 (observed): an unusable voice is answered at the response trigger by a lone error, no
            # response.created; later session.update events get no answer (realtime_dead_after_voice_error)
            log.info("session %s: voice error at generation: %s", self.session_id, self.state.voice_error)
            self.state.refuse_voice(self.cfg)
            await self.send(ev.voice_error(self.session.get("voice")))
            return
        resp = ResponseStream(ev.new_id("resp"), ev.new_id("item"), modalities or self.session["modalities"],
                         self.turns.take_pending(), instructions)
        self.response = resp
        self.idle_since = time.monotonic()
        resp.task = self.spawn(self._respond(resp))

    async def _semantic_turn(self, user, modalities, instructions, event_id) -> None:
        """§7.23: accept the turn (then respond as server VAD would) or send the non-fatal rejection."""
        text = await user.text_future
        why = semantic_vad.rejects(text, self.cfg.semantic_vad_reject)
        if why is not None:
            log.info("session %s: semantic VAD (imitation) rejected the turn: %s", self.session_id, why)
            await self.send(semantic_vad.rejection(event_id))
            return
        if self.response is not None or self.closed:
            return
        self.turns.pending_user = user
        await self._start_response(modalities, instructions, event_id, judged=True)

    def _cancel_response(self) -> None:
        if self.response is not None:
            self.response.cancelled.set()

    async def _wait_response_end(self) -> None:
        resp = self.response
        if resp is not None and resp.task is not None:
            await asyncio.wait({resp.task}, timeout=10.0)

    async def _respond(self, resp: ResponseStream) -> None:
        run = ResponseRun(self, resp)  # qvtools/server/rt_respond.py
        try:
            await run.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: response %s failed", self.session_id, resp.id)
            await self.send(ev.error(f"The response failed: {type(exc).__name__}.", code="internal_error",
                                     type="server_error"))
            await self.send(ev.response_done(run.obj("failed", details={
                "type": "failed", "error": {"code": "internal_error", "message": str(exc)}})))
        finally:
            self.idle_since = time.monotonic()  # §7.12: idle counts from the last generated response
            if self.response is resp:
                self.response = None

    def _expected_language(self, *, audio: bool | None = None, typed_text: str | None = None) -> str | None:
        """The language this turn's reply will be in, when it is known before the user's words are
        transcribed (then the opener is spoken at once, issue 11); None: only after ASR, and the response
        waits for the transcript. The session's language, else the voice's enrollment language, else the
        previous turn's (:func:`turn_language.expected_language`, issue 10) -- or the script of a typed
        turn -- mapped to a language the responder and TTS speak (:func:`reply_plan.language_before_asr`).
        ``audio``: whether the reply is spoken (default: the session's modalities)."""
        lang = turn_language.expected_language(self.session, self.state.voice_record, self.turns.last_language,
                                               self.app[REALTIME].language_candidates, self.turns.early_language)
        if audio is None:
            audio = "audio" in self.session["modalities"]
        return language_before_asr(get_speech(self.app), lang, audio=audio, typed_text=typed_text)

    def reply_params(self, turn_index: int, instructions: str | None, *, audio: bool,
                      typed_text: str | None = None) -> ReplyParams:
        """What a reply depends on besides the user's words (a speculative reply is valid for these), the
        language decided here once when it is known before ASR (:meth:`_expected_language`)."""
        return ReplyParams(turn_index=turn_index, seed=session_seed(self.session), mode=self.cfg.realtime_reply_mode,
                           instructions=instructions, language=self._expected_language(audio=audio,
                                                                                       typed_text=typed_text),
                           voice_key=voice_key(self.key, self.session.get("voice"), self.state.voice_record),
                           rate=self.out_rate, audio=audio)

    def prepare_next_opener(self, speech, *turns: int) -> None:
        """Make the opener audio of the coming turns in the background (issue 11), so a turn finds it
        ready: after ``session.update`` and at each response. Skipped when the reply language is only
        known after ASR, in text-only sessions, in echo mode (no opener) and before the speech engines
        are loaded (the warm-up, ServiceConfig.warm_speech; a turn meanwhile makes its opener itself)."""
        if "audio" not in self.session["modalities"] or self.state.voice_error is not None:
            return
        p = self.reply_params(turns[0], self.session.get("instructions") or None, audio=True)
        if p.language is None or p.mode == "echo" or not speech.ready.is_set():
            return  # echo has no opener; engines still loading: never load them from here
        voice = self.session.get("voice")

        async def job():
            try:
                profile = await self.voice_profile(speech, voice)
                await self.run_cpu(speech.prepare_openers, profile, p.rate, voice_key=p.voice_key, turns=turns,
                                   mode=p.mode, seed=p.seed, instructions=p.instructions, language=p.language)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # best effort: the response makes the opener itself
                log.info("session %s: preparing openers failed (%s)", self.session_id, type(exc).__name__)

        self.spawn(job())

    async def voice_profile(self, speech, voice: str):
        """The session voice's :class:`~qvtools.server.voice.VoiceProfile`, off the event loop. A cloned
        voice's profile is built once per (key, voice, audio hash) and kept in the app's bounded LRU
        (:func:`voice_cache`): the stored profile when it is current, else the enrollment audio, read and
        analyzed in the executor (issue 13)."""
        meta = self.state.voice_record
        if meta is None or not ev.is_cloned_voice(voice):
            prof = self._profiles.get(voice)
            if prof is None:  # a built-in voice: made once per session, then no executor hop per turn
                prof = await self.run_cpu(speech.voice_profile, voice, None)
                self._profiles = {voice: prof}
            return prof
        cache = voice_cache(self.app)
        key = (self.key, voice, meta.sha256)
        prof = cache.get(key)
        if prof is not None:
            return prof

        def build():
            stored = meta.profile
            record = meta
            if not (isinstance(stored, dict) and stored.get("codebook_db") is not None):
                # a profile stored before the envelope codebooks existed: re-analyze from the audio
                record = self.store.get(self.key, voice) or meta
            cache.loads += 1
            return speech.voice_profile(voice, record)

        prof = await self.run_cpu(build)
        cache.put(key, prof)
        return prof
