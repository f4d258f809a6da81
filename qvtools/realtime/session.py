""":class:`RealtimeSession`: a thin websocket-client driver around the sans-I/O event model.

One reader thread receives frames and stamps each with ``time.perf_counter()`` the moment
``recv_data`` returns (before JSON parsing or base64 decoding), then hands ``(t, text)`` to a queue.
The calling thread sends events and feeds the queue into a :class:`~qvtools.realtime.turn.TurnTracker`.
Every wait has a timeout; a dropped connection ends the turn with status ``"failed"`` and whatever was
received so far -- it never hangs.

The client trusts what it sent (issue 9; protocol reference §4.2, §7.2): turn mode, rates and format
strings come from :attr:`RealtimeSession.effective` (the request merged with the family defaults by
:mod:`qvtools.realtime.session_model`, the local service's own session model); ``session.created``/
``session.updated`` are kept in :attr:`RealtimeSession.echo` only.
Server text is redacted before it reaches an exception, a log line or a saved turn; a received message
larger than ``max_frame_bytes`` is refused from its frame header.

Usage::

    with RealtimeSession(settings, "qwen3.5-omni-plus-realtime", voice=voice) as rt:
        turn = rt.send_audio("question.wav")          # server VAD, paced like a microphone
        turn = rt.send_audio(clip, realtime=False)    # as fast as possible
        print(turn.latency()["ttfa_ms"])
        handle = rt.begin_turn()                      # audio as it comes (qvtools.realtime.streaming)
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
from .. import catalog
from ..config import Settings
from ..errors import (APIError, ConfigError, RealtimeError, SessionTimeout, TransportError,
                      VoiceModelMismatch, api_error_from_http, redact)
from . import endings
from . import events as ev
from .session_model import default_turn_detection, effective_session
from .streaming import TurnHandle
from .turn import Turn, TurnTracker

__all__ = ["RealtimeSession", "MAX_FRAME_BYTES", "TRAILING_SILENCE_MARGIN_MS"]

log = logging.getLogger(__name__)

_CLOSED = object()  # queue sentinel: the connection is gone

#: Largest WebSocket message the client accepts (bytes). Audio deltas are ~20 KB; a larger frame fails
#: the turn and closes the connection (issue 13: "a 20 MB frame costs 135 MB"). The length is checked from
#: the frame header, before the payload is read.
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Silence appended after the speech in server-VAD mode beyond the effective ``silence_duration_ms``
#: (§4.5 a [obs]: "keep sending silence after speech or speech_stopped never fires").
TRAILING_SILENCE_MARGIN_MS = 400
#: WebSocket close code "message too big" (RFC 6455 §7.4.1).
_CLOSE_TOO_BIG = 1009


def _voice_name_and_target(voice, voice_target_model):
    """Accept a voice name or an object with ``.voice`` / ``.target_model`` (enrollment ``Voice``)."""
    if voice is not None and not isinstance(voice, str):
        name = getattr(voice, "voice", None)
        target = getattr(voice, "target_model", None)
        if not isinstance(name, str):
            raise ConfigError(f"voice must be a name or a Voice, got {type(voice).__name__}")
        return name, voice_target_model or target
    return voice, voice_target_model


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _capped_frame_buffer(ws, max_bytes: int):
    """Replace websocket-client's frame reader with one that refuses a message longer than ``max_bytes``
    as soon as the frame header announces it (before the payload is read or allocated)."""
    import websocket

    try:
        from websocket._abnf import frame_buffer

        old = ws.frame_buffer
        recv, skip = old.recv, old.skip_utf8_validation
    except (ImportError, AttributeError) as exc:  # websocket-client internals changed
        log.warning("cannot cap received frame sizes with this websocket-client (%s); max_frame_bytes is not "
                    "enforced", exc)
        return

    class _Capped(frame_buffer):
        total = 0

        def recv_length(self) -> None:
            super().recv_length()
            opcode = self.header[4]
            if opcode == websocket.ABNF.OPCODE_CONT:
                self.total += int(self.length)
            elif opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                self.total = int(self.length)
            else:
                return  # control frames are at most 125 bytes (RFC 6455 §5.5)
            if self.total > max_bytes:
                raise _FrameTooLarge(self.total, max_bytes)

    capped = _Capped(recv, skip)
    capped.recv_buffer = old.recv_buffer
    ws.frame_buffer = capped


# session_config keyword -> the session keys it produces
_KW_KEYS = {"input_format": ("audio",), "output_format": ("audio",),
            "legacy_formats": ("input_audio_format", "output_audio_format"),
            "turn_detection": ("turn_detection",), "threshold": ("turn_detection",),
            "prefix_padding_ms": ("turn_detection",), "silence_duration_ms": ("turn_detection",),
            "transcription": ("input_audio_transcription",)}


def _only_given(config: dict) -> dict:
    """The ``session`` object for ``update(**config)`` holding only what the caller named.

    :func:`~qvtools.realtime.events.session_config` fills in ``modalities``, ``turn_detection`` and
    ``input_audio_transcription`` defaults; re-sending those in a later update would silently switch a
    manual session back to server VAD."""
    full = ev.session_config(**config)
    keep = set()
    for kw in config:
        keep.update(_KW_KEYS.get(kw, (kw,)))
    return {k: v for k, v in full.items() if k in keep}


class _FrameTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"the service sent a message of {size:,} bytes, more than max_frame_bytes={limit:,}; "
                         "the connection was closed (raise max_frame_bytes if this is expected)")


class RealtimeSession:
    """A Qwen-Omni-Realtime connection (cloud or local service) that runs measured turns.

    ``settings`` gives the URL and key (:class:`~qvtools.config.Settings`); ``model`` goes into
    ``?model=``. Session options (``voice``, ``instructions``, ``turn_detection`` = ``"server_vad"``/
    ``"semantic_vad"``/``None``, ``threshold``, ``silence_duration_ms``, ``prefix_padding_ms``,
    ``transcription``, ``modalities``, ``input_sample_rate``/``output_sample_rate`` (qwen3.5 only),
    sampling parameters via ``session_extra``) are sent in one ``session.update`` on connect.

    **The client trusts what it sent** (issue 9, §4.2/§7.2): manual vs VAD mode, sample rates and format
    strings come from :attr:`effective` -- the requested configuration merged with the model family's
    defaults (:mod:`qvtools.catalog`) -- never from ``session.updated``. The server's echo is kept in
    :attr:`echo` for inspection; disagreements are logged at DEBUG.

    A cloned voice enrolled for another model is refused *before* connecting
    (:class:`~qvtools.errors.VoiceModelMismatch`; SEED: target_model "must equal the later realtime
    ?model=, otherwise synthesis fails"). After the service answered a response trigger with a lone
    ``error`` (§7.3: a later ``session.update`` on that connection gets no answer), :meth:`update`,
    :meth:`send_audio` and :meth:`send_text` raise :class:`~qvtools.errors.RealtimeError` saying the
    session must be reopened. Received messages larger than ``max_frame_bytes`` close the connection.
    """

    def __init__(self, settings: Settings, model: str, *, voice=None, voice_target_model: str | None = None,
                 instructions: str | None = None, turn_detection: Any = "server_vad",
                 threshold: float | None = None, silence_duration_ms: int | None = None,
                 prefix_padding_ms: int | None = None, transcription: Any = True,
                 modalities=("text", "audio"), input_sample_rate: int | None = None,
                 output_sample_rate: int | None = None, seed: int | None = None,
                 session_extra: dict | None = None, timeout: float | None = None,
                 response_timeout: float = 60.0, max_frame_bytes: int = MAX_FRAME_BYTES):
        if not model or not isinstance(model, str):
            raise ConfigError("model must be a realtime model name, e.g. 'qwen3.5-omni-plus-realtime'")
        voice, voice_target_model = _voice_name_and_target(voice, voice_target_model)
        if settings.is_cloud and isinstance(session_extra, dict) and "qvtools" in session_extra:
            # the qvtools session extension (fault injection) exists only on the local service
            raise ConfigError("session_extra['qvtools'] (fault injection) is for the qvtools local service only; "
                              f"remove it for the {settings.region} region")
        if ev.is_cloned_voice(voice) and voice_target_model is not None \
                and not catalog.clone_usable_with(voice_target_model, model):
            # SEED §2.1: "Must equal the later realtime ?model=, otherwise synthesis fails".
            raise VoiceModelMismatch(
                f"voice {voice!r} was enrolled for target_model {voice_target_model!r} but the session model is "
                f"{model!r}; enroll the voice for {model!r} or open the session with {voice_target_model!r}")
        if not isinstance(max_frame_bytes, int) or isinstance(max_frame_bytes, bool) or max_frame_bytes < 1024:
            raise ConfigError(f"max_frame_bytes must be an integer of at least 1024 bytes, got {max_frame_bytes!r}")
        self.settings = settings
        self.model = model
        self.family = catalog.family(model)
        self.timeout = float(timeout if timeout is not None else settings.timeout_s)
        self.response_timeout = float(response_timeout)
        self.max_frame_bytes = max_frame_bytes
        #: After a cancel ends a turn at ``output_item.done``, wait this long for a ``response.done``.
        self.cancel_grace_s = 1.0
        fmt_in = ("pcm", int(input_sample_rate)) if input_sample_rate else None
        fmt_out = ("pcm", int(output_sample_rate)) if output_sample_rate else None
        self._initial = ev.session_config(
            modalities=modalities, voice=voice, instructions=instructions, input_format=fmt_in,
            output_format=fmt_out, turn_detection=turn_detection, threshold=threshold,
            prefix_padding_ms=prefix_padding_ms, silence_duration_ms=silence_duration_ms,
            transcription=transcription, seed=seed, **(session_extra or {}))
        #: What the client relies on: the family defaults with every acknowledged request merged in.
        #: Until the first ``session.updated`` it already includes the initial request (that is what will
        #: be sent on connect).
        self.effective: dict = effective_session(model, self._initial)
        #: The last ``session`` object the server sent (``session.created`` / ``session.updated``): for
        #: inspection only -- the real echo is partial (§7.2).
        self.echo: dict = {}
        #: The ``qvtools`` metadata field of ``session.created`` (only the qvtools local service sends one:
        #: ``latency_source``, ``note``, ...); {} otherwise. Informative only, never relied on.
        self.service_info: dict = {}
        self.session_id: str | None = None
        self.marks: dict[str, float] = {}
        self.turns: list[Turn] = []
        self._ws = None
        self._reader: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_info: str | None = None
        #: The close code the server sent (1005 for a close frame without one, 1006 for a lost connection).
        self.close_code: int | None = None
        self._tracker: TurnTracker | None = None
        self._reopen: RealtimeError | None = None  # set after §7.3 / §7.12: this connection is unusable
        self._past_items: set[str] = set()  # user item ids of earlier turns (late transcription events)

    # ----------------------------------------------------------------------------- construction
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
    def closed_because(self) -> str | None:
        """Why the connection ended (close code and redacted reason, a lost socket, an oversized frame)."""
        return self._close_info

    @property
    def config(self) -> dict:
        """The server's last echo (same as :attr:`echo`; kept for compatibility). Inspection only."""
        return self.echo

    @property
    def voice(self) -> str | None:
        """The voice the client requested (else the family default, §4.2)."""
        v = self.effective.get("voice")
        return v if isinstance(v, str) else None

    @property
    def manual(self) -> bool:
        """True when the client asked for ``turn_detection: null`` (§4.5 b)."""
        return self.effective.get("turn_detection") is None

    @property
    def silence_duration_ms(self) -> float | None:
        """Effective ``turn_detection.silence_duration_ms`` (§4.2 default 800), None in manual mode."""
        td = self.effective.get("turn_detection")
        if td is None:
            return None
        value = _obj(td).get("silence_duration_ms", default_turn_detection()["silence_duration_ms"])
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else float(catalog.DEFAULT_SILENCE_DURATION_MS)

    @property
    def input_sample_rate(self) -> int:
        return int(ev.input_format(self.effective)[1])

    @property
    def output_sample_rate(self) -> int:
        return int(ev.output_format(self.effective)[1])

    @property
    def input_audio_format(self) -> str:
        """The format string of the input audio (``pcm`` / ``pcm16``, §7.1) the client expects."""
        return str(self.effective.get("input_audio_format"))

    @property
    def output_audio_format(self) -> str:
        return str(self.effective.get("output_audio_format"))

    def _redact(self, text) -> str:
        return redact(text, self.settings.api_key)

    # -------------------------------------------------------------------------------- transport
    def connect(self) -> "RealtimeSession":
        """Open the socket (Bearer auth, ``?model=``), wait for ``session.created``, send the initial update.

        If anything fails after the upgrade (no ``session.created`` in time, an ``error`` answer to the
        first ``session.update``, a malformed answer), the socket and the reader thread are closed before
        the error is raised (issue 13).
        """
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
            raise TransportError(f"cannot connect to {self.url}: {self._redact(exc)}") from None
        try:
            self.marks["connect"] = time.perf_counter()
            _capped_frame_buffer(ws, self.max_frame_bytes)
            ws.settimeout(None)  # the reader blocks; closing the socket unblocks it
            self._ws = ws
            self._reader = threading.Thread(target=self._read_loop, name="qvtools-realtime-reader", daemon=True)
            self._reader.start()
            created = self._wait_for(("session.created",), self.timeout, what="session.created")
            session = created.get("session")
            if not isinstance(session, dict):
                raise RealtimeError("invalid_event", "the service sent a session.created whose 'session' is not "
                                    f"an object ({type(session).__name__}); cannot use this connection")
            self.echo = dict(session)
            info = session.get("qvtools")
            self.service_info = dict(info) if isinstance(info, dict) else {}
            sid = session.get("id")
            self.session_id = sid if isinstance(sid, str) else None
            self.marks["session_ready"] = time.perf_counter()
            if self._initial:
                self.update(self._initial)
        except BaseException:
            self.close(timeout=1.0)
            raise
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
                    reason = bytes(data[2:]).decode("utf-8", "replace").strip() if len(data) > 2 else ""
                    self.close_code = code if code is not None else endings.CLOSE_NO_STATUS
                    self._close_info = (f"server closed the connection (code {self.close_code}"
                                        + (f": {self._redact(reason)})" if reason else ")"))
                    break
                # binary frames are ignored (§4.1 [sdk])
        except _FrameTooLarge as exc:
            self._close_info = str(exc)
            log.warning("%s", exc)
            try:
                ws.send_close(_CLOSE_TOO_BIG, b"message too big")
                ws.sock and ws.sock.shutdown(socket.SHUT_RDWR)
            except Exception:
                pass
        except Exception as exc:  # socket gone: tell the consumer instead of raising in a thread
            if not self._closed.is_set():
                self.close_code = endings.CLOSE_ABNORMAL
                self._close_info = f"connection lost: {type(exc).__name__}: {self._redact(exc)}"
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
                log.warning("ignoring a malformed frame while waiting for %s", what)
                continue
            if self._tracker is not None:
                self._tracker.feed_event(event, t)
            if event.type in types:
                return event
            if event.type == "error":
                raise self._error_from(event)
            log.debug("skipping %s while waiting for %s", event.type, what)

    def _error_from(self, event: ev.Event) -> RealtimeError:
        """A :class:`RealtimeError` from an ``error`` event (any shape; server text redacted)."""
        err = event.get("error")
        if not isinstance(err, dict):
            err = {"message": err if err is not None else "the service sent an error event without details"}

        def text(key):
            value = err.get(key)
            return self._redact(value) if value is not None else None

        eid = err.get("event_id") or event.get("event_id")
        exc = RealtimeError(text("code"), text("message") or "", type=text("type"), param=text("param"),
                            event_id=self._redact(eid) if eid is not None else None)
        if exc.code == "response_idle_timeout":  # §7.12: the service closes the connection next (1007)
            self._reopen = RealtimeError(exc.code, f"{exc.message} -- the service closed this session for being "
                                         "idle (§7.12); open a new session", type=exc.type)
        return exc

    def _log_disagreements(self, what: str, echo: dict) -> None:
        """DEBUG-log where the echo disagrees with what the client relies on (the echo is not trusted, §7.2)."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        mine = self.effective
        for key in ("voice", "input_audio_format", "output_audio_format", "turn_detection", "modalities"):
            if key in echo and echo[key] != mine.get(key):
                log.debug("%s says %s=%r; the client keeps %r (its request / the family default)",
                          what, key, echo[key], mine.get(key))
        if "audio" in echo:
            for side, fmt_of in (("input", ev.input_format), ("output", ev.output_format)):
                try:
                    theirs = fmt_of(echo)
                except (TypeError, ValueError, AttributeError):
                    theirs = None
                if theirs != fmt_of(mine):
                    log.debug("%s says audio.%s format %r; the client uses %r", what, side, theirs, fmt_of(mine))

    # ------------------------------------------------------------------------------- operations
    def _check_usable(self) -> None:
        if self._reopen is not None:
            raise RealtimeError(self._reopen.code, self._reopen.message, type=self._reopen.type)

    def update(self, session: dict | None = None, **config) -> dict:
        """Send ``session.update`` and wait for ``session.updated``; returns the server's echo (inspection
        only, §7.2). On success the request is merged into :attr:`effective`.

        An ``error`` answer raises :class:`~qvtools.errors.RealtimeError` (``param`` names the field); no
        answer within ``timeout`` raises :class:`~qvtools.errors.SessionTimeout`. After a §7.3 error at
        generation (the service then never answers a ``session.update`` on that connection) it raises at
        once, saying the session must be reopened.
        """
        self._check_usable()
        if session is not None:
            if config:
                raise ConfigError("pass either a session dict or keyword arguments to update(), not both")
            event = ev.session_update(session)
        else:
            event = ev.session_update(_only_given(config))
        request = event["session"]
        self._send(event)
        updated = self._wait_for(("session.updated",), self.timeout, what="session.updated")
        echo = updated.get("session")
        self.effective = effective_session(self.model, request, base=self.effective)
        if isinstance(echo, dict):
            self.echo = dict(echo)
            sid = echo.get("id")
            if isinstance(sid, str):
                self.session_id = sid
            self._log_disagreements("session.updated", echo)
        else:
            log.debug("session.updated carried no session object (%s)", type(echo).__name__)
        return self.echo

    def cancel(self) -> None:
        """Send ``response.cancel``; the running :meth:`send_audio` ends with status ``"cancelled"``.

        Safe to call from an ``on_event`` callback or another thread.
        """
        tracker = self._tracker
        t = self._send(ev.response_cancel())
        if tracker is not None:
            tracker.cancel_requested = True
            tracker.mark("cancel_sent", t)

    def send_silence(self, seconds: float, *, settle_timeout: float = 2.0) -> None:
        """Send ``seconds`` of zero PCM outside any turn (the §7.22 keep-alive of a muted microphone,
        :class:`qvtools.realtime.keepalive.KeepAlive`). In push-to-talk mode it is followed by
        ``input_audio_buffer.clear`` so it never becomes part of the next committed turn; the service may
        already have made a user item for it (§7.4), so the wait (at most ``settle_timeout``) for
        ``input_audio_buffer.cleared`` marks that item as past and the next turn does not adopt it."""
        n = int(round(self.input_sample_rate * float(seconds)))
        self._send(ev.audio_append(bytes(2 * n)))
        if not self.manual:
            return
        self._send(ev.audio_clear())
        tracker = self._new_tracker()
        try:
            self._pump(tracker, None, until=time.perf_counter() + settle_timeout,
                       stop=lambda: any(e.type == "input_audio_buffer.cleared" for e in tracker.turn.events))
        finally:
            if tracker.turn.user_item_id:
                self._past_items.add(tracker.turn.user_item_id)
            self._tracker = None

    def trailing_silence_for(self, silence_duration_ms: float | None = None) -> int:
        """Trailing silence (ms) sent after the speech in server-VAD mode: the effective
        ``silence_duration_ms`` (200–6000, §4.2) plus :data:`TRAILING_SILENCE_MARGIN_MS`."""
        sd = self.silence_duration_ms if silence_duration_ms is None else silence_duration_ms
        return int(round((sd if sd is not None else catalog.DEFAULT_SILENCE_DURATION_MS) + TRAILING_SILENCE_MARGIN_MS))

    def _new_tracker(self) -> TurnTracker:
        tracker = TurnTracker(self.model, voice=self.voice, session_id=self.session_id,
                              sample_rate=self.output_sample_rate, marks=self.marks,
                              secrets=(self.settings.api_key,), ignore_items=self._past_items)
        self._tracker = tracker
        return tracker

    def begin_turn(self, *, manual: bool | None = None,
                   on_event: Callable[[ev.Event], None] | None = None) -> TurnHandle:
        """Start a streamed user turn: a :class:`~qvtools.realtime.streaming.TurnHandle` whose
        ``append(pcm, speech=...)``, ``poll(timeout)`` and ``finish()`` send the audio as it comes (a file,
        a microphone) and return the :class:`Turn` (:mod:`qvtools.realtime.streaming`).

        ``manual`` defaults to the mode the client requested (``turn_detection=None``, never the echo,
        §7.2): push-to-talk ends with ``commit`` + ``response.create``, server VAD with trailing silence.
        ``on_event`` sees every event of the turn (it may call :meth:`cancel`). Late events of an earlier
        turn are processed first. Raises :class:`~qvtools.errors.RealtimeError` when the session must be
        reopened (§7.3, §7.12); a closed connection gives a handle whose turn has already failed.
        """
        self._check_usable()
        return TurnHandle(self, manual=self.manual if manual is None else manual, on_event=on_event)

    def send_audio(self, src, *, realtime: bool = True, chunk_ms: int = 100, trailing_silence_ms: int | None = None,
                   manual: bool | None = None, timeout: float | None = None,
                   on_event: Callable[[ev.Event], None] | None = None) -> Turn:
        """Stream one utterance and collect the reply as a :class:`Turn` (on :meth:`begin_turn`).

        The audio (path, bytes, file or ``(samples, rate)``) is resampled to the session input rate
        (16 kHz unless the client asked for another) and sent as PCM16 ``append`` events of ``chunk_ms``
        (100 ms = 3,200 bytes, §4.1), paced like a microphone (``realtime=True``) or as fast as possible.
        With server VAD, silence follows the speech ("keep sending silence after speech or speech_stopped
        never fires", §4.5 a): ``trailing_silence_ms`` defaults to the effective ``silence_duration_ms``
        plus a margin (:meth:`trailing_silence_for`). ``manual`` defaults to the mode the client requested
        (``turn_detection=None``): it sends ``commit`` then ``response.create`` (§4.5 b). ``on_event`` sees
        every event (it may call :meth:`cancel`). A dropped connection or an ``error`` in place of a
        response ends the turn at once with status ``"failed"`` and the partial reply.
        """
        if chunk_ms <= 0:
            raise ConfigError(f"chunk_ms must be positive, got {chunk_ms}")
        self._check_usable()
        rate = self.input_sample_rate
        x, _ = _audio.load(src, mono=True, sample_rate=rate)
        step = 2 * max(1, int(round(rate * chunk_ms / 1000.0)))  # bytes per chunk
        speech = _audio.to_pcm16(x)
        turn = self.begin_turn(manual=manual, on_event=on_event)
        start = time.perf_counter()
        for k, i in enumerate(range(0, len(speech), step)):
            if turn.done:
                break
            turn.append(speech[i:i + step], speech=True)
            turn.poll(start + (k + 1) * chunk_ms / 1000.0 - time.perf_counter() if realtime else 0.0)
        return turn.finish(trailing_silence_ms=trailing_silence_ms, realtime=realtime, chunk_ms=chunk_ms,
                           timeout=timeout)

    def send_text(self, text: str, *, timeout: float | None = None, instructions: str | None = None,
                  on_event: Callable[[ev.Event], None] | None = None) -> Turn:
        """A text user turn: ``conversation.item.create`` (``input_text``, RT §4.3) then ``response.create``.

        The ack may carry a server-made item id (§7.13); it is recorded as ``Turn.user_item_id`` and never
        waited for. The end of user input (mark ``speech_end_sent``) is the moment ``response.create`` is sent.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("text must be a non-empty string")
        if self.family.ignores_text_turns:
            log.warning("%s is reported to ignore typed (text) turns (§7.27); send audio for a reliable reply",
                        self.model)
        self._check_usable()
        tracker = self._new_tracker()
        wait = float(timeout if timeout is not None else self.response_timeout)
        try:
            self._drain(tracker, on_event, armed=False)
            self._send(ev.text_item_create(text))
            t = self._send(ev.response_create(instructions=instructions))
            for name in ("response_create_sent", "speech_end_sent", "last_audio_sent"):
                tracker.mark(name, t)
            self._pump(tracker, on_event, until=time.perf_counter() + wait, stop_when_done=True)
            if not tracker.done:
                tracker.fail(tracker.no_reply_message(wait))
        except TransportError as exc:
            self._fail_closed(tracker, str(exc))
        return self._end(tracker.result())

    def _end(self, turn: Turn) -> Turn:
        tracker = self._tracker
        if tracker is not None and turn.status == "cancelled" and "response_done" not in turn.marks \
                and self.connected:
            # a server may follow the cancel's *.done events with response.done (§4.5 c); take it if quick
            self._pump(tracker, None, until=time.perf_counter() + self.cancel_grace_s,
                       stop=lambda: "response_done" in turn.marks)
        if tracker is not None and tracker.ended_by_error and self._reopen is None:
            m = turn.marks
            triggered = any(k in m for k in ("response_create_sent", "commit_sent", "speech_stopped", "committed"))
            if triggered and not tracker.error_param:
                # §7.3: the response trigger was answered by a lone error (no param named); the service then
                # ignores a session.update on this connection, so the connection is not used again. An error
                # naming the offending field (``param``, e.g. "response.create" for "Cannot create response
                # while user is speaking", §7.18) is a refused request and leaves the session usable.
                self._reopen = RealtimeError(
                    tracker.error_code, f"the service answered the response with an error ({turn.error}); it does "
                    "not answer on this connection afterwards (§7.3) -- close this session and open a new one")
        if tracker is not None and tracker.error_code == "response_idle_timeout" and self._reopen is None:
            self._reopen = RealtimeError("response_idle_timeout", f"{turn.error} -- the service closed this "
                                         "session for being idle (§7.12); open a new session")
        if turn.user_item_id:
            self._past_items.add(turn.user_item_id)
        self._tracker = None
        self.turns.append(turn)
        if turn.status == "failed":
            log.warning("turn failed: %s", turn.error)
        return turn

    def _handle(self, tracker: TurnTracker, item, on_event) -> None:
        t, text = item
        if text is _CLOSED:
            self._fail_closed(tracker, "connection closed")
            return
        event = tracker.feed(text, t)
        if event is None:
            return
        if on_event is not None:
            on_event(event)

    def _fail_closed(self, tracker: TurnTracker, fallback: str) -> None:
        """End the turn because the connection closed (§7.24): a bare close (1005) right after
        ``speech_stopped`` names the voice and family; 1011, or an abnormal end during a response, marks
        the turn transient; a 1007 reason is in :attr:`closed_because` and so in ``Turn.error``."""
        if tracker.done:
            return
        marks = tracker.turn.marks
        during = tracker.response_active
        message = self._close_info if self._close_info and not self.connected else fallback
        if self.close_code == endings.CLOSE_NO_STATUS and "speech_stopped" in marks \
                and "response_created" not in marks:
            message = endings.bare_close_message(self.voice, self.family.name)
        tracker.fail(message)
        if endings.transient_close(self.close_code, during):
            tracker.turn.transient = True

    def _drain(self, tracker, on_event, *, armed: bool = True) -> None:
        tracker.armed = armed
        try:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                self._handle(tracker, item, on_event)
        finally:
            tracker.armed = True

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
