"""The public streaming-turn API of :class:`~qvtools.realtime.session.RealtimeSession` (issue 19 item 5).

A :class:`TurnHandle` is one user turn whose audio arrives piece by piece -- from a file
(:meth:`RealtimeSession.send_audio` is built on it) or from a microphone (:class:`qvtools.mic.LiveTalk`)::

    turn = rt.begin_turn(on_event=print)         # late events of an earlier turn are drained first
    for pcm, is_speech in chunks:                # PCM16 bytes (or float samples) at rt.input_sample_rate
        turn.append(pcm, speech=is_speech)
        events = turn.poll(0.1)                  # what arrived meanwhile (also passed to on_event)
        if turn.done:                            # server VAD may end the turn on its own
            break
    result = turn.finish()                       # end of input (§4.5) + wait for the reply -> Turn

:meth:`TurnHandle.finish` ends the user input the way the session's mode asks for it: push-to-talk
(``turn_detection=None``) sends ``input_audio_buffer.commit`` then ``response.create`` (§4.5 b); server VAD
sends the trailing silence ("keep sending silence after speech or speech_stopped never fires", §4.5 a;
:meth:`RealtimeSession.trailing_silence_for`). It then waits (bounded) for the reply and records the
:class:`~qvtools.realtime.turn.Turn` in ``rt.turns``. Marks are the tracker's (:mod:`qvtools.realtime.turn`):
``first_audio_sent``, ``last_audio_sent`` and ``speech_end_sent`` -- the last chunk appended with
``speech=True`` -- set here as the audio is sent. A dropped connection ends the turn (status ``failed``)
instead of raising; every wait has a timeout.

This module is the session's companion: it drives the session's tracker and queue, which stay private.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from .. import audio as _audio
from ..errors import ConfigError, RealtimeError, TransportError
from . import events as ev
from .turn import Turn

__all__ = ["TurnHandle"]

log = logging.getLogger(__name__)


class TurnHandle:
    """One streamed user turn of a :class:`~qvtools.realtime.session.RealtimeSession`; made by
    :meth:`RealtimeSession.begin_turn`. Not thread-safe: one thread appends, polls and finishes
    (:meth:`RealtimeSession.cancel` may be called from any thread)."""

    def __init__(self, session, *, manual: bool, on_event: Callable[[ev.Event], None] | None):
        self.session = session
        #: True: push-to-talk (commit + response.create at :meth:`finish`); False: server VAD.
        self.manual = bool(manual)
        self._on_event = on_event
        self._seen: list[ev.Event] = []
        self._result: Turn | None = None
        self._discarded = False
        self._tracker = session._new_tracker()
        try:
            session._drain(self._tracker, self._collect, armed=False)  # late events of an earlier turn
            self._seen.clear()
            if not session.connected:
                self._tracker.fail(session.closed_because or "the connection is closed")
        except BaseException:
            session._tracker = None
            raise

    # ------------------------------------------------------------------------------------ state
    @property
    def turn(self) -> Turn:
        """The turn as measured so far (marks, events, audio); final once :meth:`finish` returned."""
        return self._result if self._result is not None else self._tracker.turn

    @property
    def done(self) -> bool:
        """True once the reply ended (completed, failed, cancelled, rejected) or the turn was finished."""
        return self._result is not None or self._tracker.done

    @property
    def finished(self) -> bool:
        """True after :meth:`finish` or :meth:`discard`: the handle takes no more audio."""
        return self._result is not None or self._discarded

    def _collect(self, event: ev.Event) -> None:
        self._seen.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _check_open(self) -> None:
        if self.finished:
            raise RealtimeError("turn_finished", "this turn was finished; begin a new one with begin_turn()")

    # ------------------------------------------------------------------------------------- audio
    def append(self, audio, *, speech: bool = True) -> float | None:
        """Send ``audio`` -- PCM16 mono bytes, or float samples in [-1, 1], at the session's input rate
        (:attr:`RealtimeSession.input_sample_rate`) -- as one ``input_audio_buffer.append``.

        ``speech=True`` makes this chunk the end-of-user-speech candidate (mark ``speech_end_sent``);
        trailing silence is appended with ``speech=False``. Returns the send time (``time.perf_counter()``),
        or None when there was nothing to send or the turn already ended (then nothing is sent: a reply is
        complete or the connection is gone; :attr:`done` says so). Appending after :meth:`finish` raises.
        """
        self._check_open()
        if isinstance(audio, (bytes, bytearray, memoryview)):
            pcm = bytes(audio)
            if len(pcm) % 2:
                raise ConfigError(f"PCM16 audio must be a whole number of 2-byte samples, got {len(pcm)} bytes")
        else:
            x = np.asarray(audio)
            if x.ndim != 1:
                raise ConfigError(f"append() takes mono samples (a 1-D array), got shape {x.shape}")
            pcm = _audio.to_pcm16(x) if x.size else b""
        if not pcm or self._tracker.done:
            return None
        tr = self._tracker
        try:
            t = self.session._send(ev.audio_append(pcm))
        except TransportError as exc:
            self._closed(str(exc))
            return None
        tr.mark("first_audio_sent", t, overwrite=False)
        tr.mark("last_audio_sent", t)
        if speech:
            tr.mark("speech_end_sent", t)
        return t

    def poll(self, timeout: float = 0.0) -> list[ev.Event]:
        """Process the events that arrived, waiting up to ``timeout`` seconds for more (returning early
        once the turn is done); returns them in order (each was also passed to ``on_event``)."""
        self._seen = []
        if not self.finished:
            until = time.perf_counter() + max(0.0, float(timeout))
            self.session._pump(self._tracker, self._collect, until=until, stop_when_done=True)
        seen, self._seen = self._seen, []
        return seen

    # -------------------------------------------------------------------------------------- end
    def finish(self, *, trailing_silence_ms: float | None = None, realtime: bool = True, chunk_ms: int = 100,
               timeout: float | None = None) -> Turn:
        """End the user input (unless the reply already ended), wait for the reply and return the
        :class:`~qvtools.realtime.turn.Turn`, also recorded in ``session.turns``. Calling it again returns
        the same turn.

        Push-to-talk: ``commit`` then ``response.create`` (§4.5 b). Server VAD: ``trailing_silence_ms`` of
        zero PCM (default :meth:`RealtimeSession.trailing_silence_for`) in ``chunk_ms`` pieces, paced like a
        microphone (``realtime=True``) or as fast as possible, stopping when the reply ends. ``timeout``
        (default the session's ``response_timeout``) bounds the wait for the reply after that; without a
        reply by then the turn fails saying so.
        """
        if self._result is not None:
            return self._result
        self._check_open()
        if chunk_ms <= 0:
            raise ConfigError(f"chunk_ms must be positive, got {chunk_ms}")
        s, tr = self.session, self._tracker
        wait = float(timeout if timeout is not None else s.response_timeout)
        try:
            if self.manual and not tr.done:
                tr.mark("commit_sent", s._send(ev.audio_commit()))
                tr.mark("response_create_sent", s._send(ev.response_create()))
            elif not tr.done:
                self._send_silence(trailing_silence_ms, realtime, chunk_ms)
            s._pump(tr, self._collect, until=time.perf_counter() + wait, stop_when_done=True)
            if not tr.done:
                hint = "" if self.manual else " (did the server VAD detect speech and its end?)"
                tr.fail(tr.no_reply_message(wait, hint))
        except TransportError as exc:
            self._closed(str(exc))
        self._result = s._end(tr.result())
        return self._result

    def _closed(self, why: str) -> None:
        """A send failed because the connection is gone: what the service sent before closing (an ``error``
        naming the reason, §7.12) is processed first, then the turn fails with the close."""
        self.session._drain(self._tracker, self._collect)
        self.session._fail_closed(self._tracker, why)

    def _send_silence(self, trailing_silence_ms, realtime: bool, chunk_ms: int) -> None:
        s = self.session
        if trailing_silence_ms is None:
            trailing_silence_ms = s.trailing_silence_for()
        elif s.silence_duration_ms is not None and trailing_silence_ms < s.silence_duration_ms:
            log.warning("trailing_silence_ms=%s is shorter than silence_duration_ms=%s: the server VAD may never "
                        "end the turn", trailing_silence_ms, s.silence_duration_ms)
        rate = s.input_sample_rate
        step = max(1, int(round(rate * chunk_ms / 1000.0)))
        n = int(round(rate * trailing_silence_ms / 1000.0))
        start = time.perf_counter()
        for i, k in enumerate(range(0, n, step)):
            self.append(bytes(2 * min(step, n - k)), speech=False)
            self.poll(start + (i + 1) * chunk_ms / 1000.0 - time.perf_counter() if realtime else 0.0)
            if self._tracker.done:
                return

    def discard(self) -> None:
        """Drop a turn that sent no audio (a microphone Start .. Stop with nothing in it): nothing is
        recorded in ``session.turns``; a user item the service already made is treated as past, so the
        next turn does not adopt it."""
        if self.finished:
            return
        self._discarded = True
        s = self.session
        if self._tracker.turn.user_item_id:
            s._past_items.add(self._tracker.turn.user_item_id)
        if s._tracker is self._tracker:
            s._tracker = None
