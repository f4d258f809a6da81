""":class:`RealtimeSession`: a thin websocket-client driver around the sans-I/O event model.

One reader thread receives frames and stamps each with ``time.perf_counter()`` the moment
``recv_data`` returns (before JSON parsing or base64 decoding), then hands ``(t, text)`` to a queue.
The calling thread sends events and feeds the queue into a :class:`~qvtools.realtime.turn.TurnTracker`.
Every wait has a timeout; a dropped connection ends the turn with status ``"failed"`` and whatever was
received so far -- it never hangs.

Usage::

    with RealtimeSession(settings, "qwen3.5-omni-plus-realtime", voice=voice) as rt:
        turn = rt.send_audio("question.wav")          # server VAD, paced like a microphone
        turn = rt.send_audio(clip, realtime=False)    # as fast as possible
        print(turn.latency()["ttfa_ms"])
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, Callable
from urllib.parse import quote

from .. import audio as _audio
from ..config import Settings, redact
from ..errors import (APIError, ConfigError, RealtimeError, SessionTimeout, TransportError, VoiceModelMismatch,
                      api_error_from_http)
from . import events as ev
from .turn import Turn, TurnTracker

__all__ = ["RealtimeSession"]

log = logging.getLogger(__name__)

_CLOSED = object()  # queue sentinel: the connection is gone


def _voice_name_and_target(voice, voice_target_model):
    """Accept a voice name or an object with ``.voice`` / ``.target_model`` (enrollment ``Voice``)."""
    if voice is not None and not isinstance(voice, str):
        name = getattr(voice, "voice", None)
        target = getattr(voice, "target_model", None)
        if not isinstance(name, str):
            raise ConfigError(f"voice must be a name or a Voice, got {type(voice).__name__}")
        return name, voice_target_model or target
    return voice, voice_target_model


class RealtimeSession:
    """A Qwen-Omni-Realtime connection (cloud or local service) that runs measured turns.

    ``settings`` gives the URL and key (:class:`~qvtools.config.Settings`); ``model`` goes into
    ``?model=``. Session options (``voice``, ``instructions``, ``turn_detection`` = ``"server_vad"``/
    ``"semantic_vad"``/``None``, ``threshold``, ``silence_duration_ms``, ``prefix_padding_ms``,
    ``transcription``, ``modalities``, ``input_sample_rate``/``output_sample_rate`` (qwen3.5 only),
    sampling parameters via ``session_extra``) are sent in one ``session.update`` on connect.

    A cloned voice enrolled for another model is refused *before* connecting
    (:class:`~qvtools.errors.VoiceModelMismatch`; SEED: target_model "must equal the later realtime
    ?model=, otherwise synthesis fails").
    """

    def __init__(self, settings: Settings, model: str, *, voice=None, voice_target_model: str | None = None,
                 instructions: str | None = None, turn_detection: Any = "server_vad",
                 threshold: float | None = None, silence_duration_ms: int | None = None,
                 prefix_padding_ms: int | None = None, transcription: Any = True,
                 modalities=("text", "audio"), input_sample_rate: int | None = None,
                 output_sample_rate: int | None = None, seed: int | None = None,
                 session_extra: dict | None = None, timeout: float | None = None,
                 response_timeout: float = 60.0):
        if not model or not isinstance(model, str):
            raise ConfigError("model must be a realtime model name, e.g. 'qwen3.5-omni-plus-realtime'")
        voice, voice_target_model = _voice_name_and_target(voice, voice_target_model)
        if settings.is_cloud and isinstance(session_extra, dict) and "qvtools" in session_extra:
            # the qvtools session extension (fault injection) exists only on the local service
            raise ConfigError("session_extra['qvtools'] (fault injection) is for the qvtools local service only; "
                              f"remove it for the {settings.region} region")
        if ev.is_cloned_voice(voice) and voice_target_model is not None \
                and ev.base_model(voice_target_model) != ev.base_model(model):
            # SEED §2.1: "Must equal the later realtime ?model=, otherwise synthesis fails".
            raise VoiceModelMismatch(
                f"voice {voice!r} was enrolled for target_model {voice_target_model!r} but the session model is "
                f"{model!r}; enroll the voice for {model!r} or open the session with {voice_target_model!r}")
        self.settings = settings
        self.model = model
        self.voice = voice
        self.timeout = float(timeout if timeout is not None else settings.timeout_s)
        self.response_timeout = float(response_timeout)
        #: After a cancel ends a turn at ``output_item.done``, wait this long for a ``response.done``.
        self.cancel_grace_s = 1.0
        fmt_in = ("pcm", int(input_sample_rate)) if input_sample_rate else None
        fmt_out = ("pcm", int(output_sample_rate)) if output_sample_rate else None
        self._initial = ev.session_config(
            modalities=modalities, voice=voice, instructions=instructions, input_format=fmt_in,
            output_format=fmt_out, turn_detection=turn_detection, threshold=threshold,
            prefix_padding_ms=prefix_padding_ms, silence_duration_ms=silence_duration_ms,
            transcription=transcription, seed=seed, **(session_extra or {}))
        self.config: dict = {}  # the effective config echoed by the server
        self.session_id: str | None = None
        self.marks: dict[str, float] = {}
        self.turns: list[Turn] = []
        self._ws = None
        self._reader: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_info: str | None = None
        self._tracker: TurnTracker | None = None

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def open(cls, settings: Settings, model: str, **kwargs) -> "RealtimeSession":
        """Construct and connect (what ``Workspace.realtime(...)`` calls)."""
        sess = cls(settings, model, **kwargs)
        sess.connect()
        return sess

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        return f"<RealtimeSession model={self.model!r} voice={self.voice!r} session_id={self.session_id!r} {state}>"

    def __enter__(self) -> "RealtimeSession":
        if self._ws is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"{self.settings.realtime_url}?model={quote(self.model, safe='')}"

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed.is_set()

    @property
    def input_sample_rate(self) -> int:
        return ev.input_format(self.config)[1] if self.config else 16000

    @property
    def output_sample_rate(self) -> int:
        return ev.output_format(self.config)[1] if self.config else 24000

    # -------------------------------------------------------------------------------- transport
    def connect(self) -> "RealtimeSession":
        """Open the socket (Bearer auth, ``?model=``), wait for ``session.created``, send the initial update."""
        import websocket

        if self._ws is not None:
            raise RealtimeError("already_connected", "this session is already connected; open a new one")
        headers = [f"{k}: {v}" for k, v in self.settings.auth_headers().items()]
        try:
            # skip_utf8_validation: websocket-client validates UTF-8 in pure Python (~1 ms per audio delta),
            # which would sit between the frame's arrival and its receive timestamp; parse() rejects bad text.
            ws = websocket.create_connection(self.url, header=headers, timeout=self.timeout,
                                             enable_multithread=True, skip_utf8_validation=True)
        except websocket.WebSocketBadStatusException as exc:
            raise self._handshake_error(exc) from None
        except (OSError, websocket.WebSocketException) as exc:
            msg = redact(str(exc), self.settings.api_key)
            raise TransportError(f"cannot connect to {self.url}: {msg}") from None
        self.marks["connect"] = time.perf_counter()
        ws.settimeout(None)  # the reader blocks; closing the socket unblocks it
        self._ws = ws
        self._reader = threading.Thread(target=self._read_loop, name="qvtools-realtime-reader", daemon=True)
        self._reader.start()
        created = self._wait_for(("session.created",), self.timeout, what="session.created")
        self.config = dict(created.get("session") or {})
        self.session_id = self.config.get("id")
        self.marks["session_ready"] = time.perf_counter()
        if self._initial:
            self.update(self._initial)
        return self

    def _handshake_error(self, exc) -> APIError:
        """A refused upgrade (plain HTTP before the WebSocket, §4.5 d) through the one HTTP error mapper."""
        status = int(getattr(exc, "status_code", 0) or 0)
        return api_error_from_http(status, getattr(exc, "resp_body", None) or b"",
                                   getattr(exc, "resp_headers", None), f"handshake refused with HTTP {status}",
                                   secrets=(self.settings.api_key,))

    def _read_loop(self) -> None:
        import websocket

        ws = self._ws
        try:
            while True:
                opcode, data = ws.recv_data()
                t = time.perf_counter()  # receive time, before any decoding
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._queue.put((t, data))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    self._close_info = f"server closed the connection (code {code})"
                    break
                # binary frames are ignored (§4.1 [sdk])
        except Exception as exc:  # socket gone: tell the consumer instead of raising in a thread
            if not self._closed.is_set():
                self._close_info = f"connection lost: {type(exc).__name__}: {exc}"
        finally:
            self._closed.set()
            self._queue.put((time.perf_counter(), _CLOSED))

    def _send(self, event: dict) -> float:
        """Send one event; returns the perf_counter time just before sending."""
        if self._ws is None:
            raise RealtimeError("not_connected", "the session is not connected; call connect() first")
        if self._closed.is_set():
            raise TransportError(self._close_info or "the connection is closed")
        text = ev.dumps(event)
        with self._send_lock:
            t = time.perf_counter()
            try:
                self._ws.send(text)
            except Exception as exc:
                raise TransportError(f"send failed: {type(exc).__name__}") from None
        return t

    def _next(self, timeout: float):
        """``(t, text)`` or ``(t, _CLOSED)``; raises queue.Empty after ``timeout``."""
        return self._queue.get(timeout=max(0.0, timeout))

    def _wait_for(self, types, timeout: float, *, what: str) -> ev.Event:
        """Wait for one of ``types``; an ``error`` event raises RealtimeError, other events are skipped."""
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            try:
                t, text = self._next(remaining)
            except queue.Empty:
                raise SessionTimeout(f"no {what} within {timeout:.1f} s") from None
            if text is _CLOSED:
                raise TransportError(f"{self._close_info or 'connection closed'} while waiting for {what}")
            try:
                event = ev.parse(text)
            except RealtimeError:
                log.warning("ignoring a non-JSON frame while waiting for %s", what)
                continue
            if self._tracker is not None:
                self._tracker.feed_event(event, t)
            if event.type in types:
                return event
            if event.type == "error":
                raise self._error_from(event)
            log.debug("skipping %s while waiting for %s", event.type, what)

    @staticmethod
    def _error_from(event: ev.Event) -> RealtimeError:
        err = event.get("error") or {}
        return RealtimeError(err.get("code"), str(err.get("message", "")), type=err.get("type"),
                             param=err.get("param"), event_id=err.get("event_id") or event.get("event_id"))

    # ------------------------------------------------------------------------------- operations
    def update(self, session: dict | None = None, **config) -> dict:
        """Send ``session.update`` and wait for ``session.updated`` (returns the effective config).

        An ``error`` answer raises :class:`~qvtools.errors.RealtimeError` (``param`` names the field).
        """
        event = ev.session_update(session) if session is not None else ev.session_update(**config)
        self._send(event)
        updated = self._wait_for(("session.updated",), self.timeout, what="session.updated")
        self.config = dict(updated.get("session") or {})
        self.session_id = self.config.get("id", self.session_id)
        if self.config.get("voice"):
            self.voice = self.config["voice"]
        return self.config

    def cancel(self) -> None:
        """Send ``response.cancel``; the running :meth:`send_audio` ends with status ``"cancelled"``.

        Safe to call from an ``on_event`` callback or another thread.
        """
        tracker = self._tracker
        t = self._send(ev.response_cancel())
        if tracker is not None:
            tracker.cancel_requested = True
            tracker.mark("cancel_sent", t)

    def send_audio(self, src, *, realtime: bool = True, chunk_ms: int = 100, trailing_silence_ms: int = 1200,
                   manual: bool | None = None, timeout: float | None = None,
                   on_event: Callable[[ev.Event], None] | None = None) -> Turn:
        """Stream one utterance and collect the reply as a :class:`Turn`.

        The audio (path, bytes, file or ``(samples, rate)``) is resampled to the session input rate
        (16 kHz by default) and sent as PCM16 ``append`` events of ``chunk_ms`` (100 ms = 3,200 bytes,
        §4.1), paced like a microphone (``realtime=True``) or as fast as possible. With server VAD,
        ``trailing_silence_ms`` of silence follows the speech ("keep sending silence after speech or
        speech_stopped never fires", §4.5 a). ``manual=True`` (default when turn detection is off)
        sends ``commit`` then ``response.create`` (§4.5 b). ``on_event`` sees every event (it may call
        :meth:`cancel`). Never raises for a dropped connection: the turn comes back with status
        ``"failed"`` and the partial reply.
        """
        if chunk_ms <= 0:
            raise ConfigError(f"chunk_ms must be positive, got {chunk_ms}")
        if manual is None:
            manual = self.config.get("turn_detection", {}) is None
        rate = self.input_sample_rate
        x, _ = _audio.load(src, mono=True, sample_rate=rate)
        step = max(1, int(round(rate * chunk_ms / 1000.0)))
        speech = _audio.to_pcm16(x)
        silence = b"" if manual else bytes(2 * int(round(rate * trailing_silence_ms / 1000.0)))
        tracker = TurnTracker(self.model, voice=self.voice, session_id=self.session_id,
                              sample_rate=self.output_sample_rate, marks=self.marks)
        self._tracker = tracker
        wait = float(timeout if timeout is not None else self.response_timeout)
        try:
            self._drain(tracker, on_event)  # late events of an earlier turn
            if not self.connected:
                return self._end(tracker.fail(self._close_info or "the connection is closed"))
            chunks = [(speech[i:i + 2 * step], True) for i in range(0, len(speech), 2 * step)]
            chunks += [(silence[i:i + 2 * step], False) for i in range(0, len(silence), 2 * step)]
            start = time.perf_counter()
            for k, (chunk, is_speech) in enumerate(chunks):
                t = self._send(ev.audio_append(chunk))
                tracker.mark("first_audio_sent", t, overwrite=False)
                tracker.mark("last_audio_sent", t)
                if is_speech:
                    tracker.mark("speech_end_sent", t)
                if realtime:
                    self._pump(tracker, on_event, until=start + (k + 1) * chunk_ms / 1000.0)
                else:
                    self._drain(tracker, on_event)
                if tracker.done:
                    break
            if manual and not tracker.done:
                tracker.mark("commit_sent", self._send(ev.audio_commit()))
                tracker.mark("response_create_sent", self._send(ev.response_create()))
            self._pump(tracker, on_event, until=time.perf_counter() + wait, stop_when_done=True)
            if not tracker.done:
                hint = "" if manual else " (did the server VAD detect speech and its end?)"
                tracker.fail(f"no reply within {wait:.1f} s{hint}")
        except TransportError as exc:
            tracker.fail(str(exc))
        return self._end(tracker.result())

    def send_text(self, text: str, *, timeout: float | None = None, instructions: str | None = None,
                  on_event: Callable[[ev.Event], None] | None = None) -> Turn:
        """A text user turn: ``conversation.item.create`` (``input_text``, RT §4.3) then ``response.create``.

        The end of user input (mark ``speech_end_sent``) is the moment ``response.create`` is sent.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("text must be a non-empty string")
        tracker = TurnTracker(self.model, voice=self.voice, session_id=self.session_id,
                              sample_rate=self.output_sample_rate, marks=self.marks)
        self._tracker = tracker
        wait = float(timeout if timeout is not None else self.response_timeout)
        try:
            self._drain(tracker, on_event)
            self._send(ev.text_item_create(text))
            t = self._send(ev.response_create(instructions=instructions))
            for name in ("response_create_sent", "speech_end_sent", "last_audio_sent"):
                tracker.mark(name, t)
            self._pump(tracker, on_event, until=time.perf_counter() + wait, stop_when_done=True)
            if not tracker.done:
                tracker.fail(f"no reply within {wait:.1f} s")
        except TransportError as exc:
            tracker.fail(str(exc))
        return self._end(tracker.result())

    def _end(self, turn: Turn) -> Turn:
        tracker = self._tracker
        if tracker is not None and turn.status == "cancelled" and "response_done" not in turn.marks \
                and self.connected:
            # a server may follow the cancel's *.done events with response.done (§4.5 c); take it if quick
            self._pump(tracker, None, until=time.perf_counter() + self.cancel_grace_s,
                       stop=lambda: "response_done" in turn.marks)
        self._tracker = None
        self.turns.append(turn)
        if turn.status == "failed":
            log.warning("turn failed: %s", turn.error)
        return turn

    def _handle(self, tracker: TurnTracker, item, on_event) -> None:
        t, text = item
        if text is _CLOSED:
            tracker.fail(self._close_info or "connection closed")
            return
        event = tracker.feed(text, t)
        if event is None:
            return
        if event.type == "error" and tracker.turn.response_id is None and not tracker.cancel_requested:
            err = event.get("error") or {}
            tracker.fail(f"server error before any response: {err.get('code')}: {err.get('message')}")
        if on_event is not None:
            on_event(event)

    def _drain(self, tracker, on_event) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._handle(tracker, item, on_event)

    def _pump(self, tracker, on_event, *, until: float, stop_when_done: bool = False, stop=None) -> None:
        while True:
            if (stop_when_done and tracker.done) or (stop is not None and stop()):
                return
            remaining = until - time.perf_counter()
            if remaining <= 0:
                self._drain(tracker, on_event)
                return
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return
            self._handle(tracker, item, on_event)
            if item[1] is _CLOSED:
                return

    def finish(self, timeout: float = 5.0) -> bool:
        """Send ``session.finish`` and wait for ``session.finished``, then close.

        Tolerant of servers that reject it (I140: qwen3.5-omni-flash answered "invalid event type"):
        an ``error``, a close or a timeout just closes the socket. Returns True on ``session.finished``.
        """
        ok = False
        if self.connected:
            try:
                self._send(ev.session_finish())
                self._wait_for(("session.finished",), timeout, what="session.finished")
                ok = True
            except RealtimeError as exc:
                log.info("server rejected session.finish (%s); closing", exc.code)
            except (TransportError, SessionTimeout) as exc:
                log.info("session.finish not acknowledged: %s", exc)
        self.close()
        return ok

    def close(self, timeout: float = 2.0) -> None:
        """Close the socket (code 1000, as the SDK's ``close()``) and stop the reader thread."""
        ws = self._ws
        if ws is None:
            return
        if not self._closed.is_set():
            try:
                ws.send_close()
            except Exception:  # already gone
                pass
        if self._reader is not None:
            self._reader.join(timeout)
        self._closed.set()
        try:
            ws.sock and ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            ws.shutdown()
        except Exception:
            pass
        if self._reader is not None:
            self._reader.join(timeout)

    def _drop(self) -> None:
        """Cut the TCP connection abruptly (used by tests to simulate a network drop)."""
        if self._ws is not None and self._ws.sock is not None:
            try:
                self._ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
