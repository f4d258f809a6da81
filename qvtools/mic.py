"""Microphone widgets (issue 14): record an enrollment clip and talk to a voice live, in the browser.

Built on ``anywidget`` (the front end is the plain ES module ``qvtools/static/mic.js``, no build step).
The browser captures mono float32 PCM at its own rate (usually 48 kHz) and posts each block to the
kernel as a binary buffer with the browser time it reached the page; a ping exchange estimates the
browser-to-kernel clock offset, so the **transport delay** (microphone frame -> kernel) is measured on
its own and never mixed into the service's latency.

- :class:`Recorder`: start/stop, level meter, the 60 s cap (SEED §2.4 "max 60 s",
  :data:`qvtools.preflight.MAX_DURATION_S`), the preflight table right after stop;
  ``.recording -> (samples, rate)``, ``.wav`` and ``.save(path)`` (16-bit WAV).
- :class:`LiveTalk`: streams the microphone into a :class:`~qvtools.realtime.session.RealtimeSession`
  (server VAD, or push-to-talk when the session was opened with ``turn_detection=None``), plays the
  reply as it arrives and keeps each exchange as a :class:`LiveTurn` -- the session's own
  :class:`~qvtools.realtime.turn.Turn` (same tracker, same marks as a file-driven turn) plus the
  transport delay as a separate field.
- :class:`ClockSync` / :class:`TransportStats`: the offset estimate and the delay statistics (pure).
"""

from __future__ import annotations

import html
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import audio as qaudio
from .errors import ConfigError, InvalidAudio, QVError
from .preflight import MAX_DURATION_S
from .resources import resource_path

__all__ = [
    "ClockSync",
    "TransportStats",
    "Recorder",
    "LiveTalk",
    "LiveTurn",
    "ASSET_DIR",
]

log = logging.getLogger(__name__)

#: Where the widgets' ES module and stylesheet live (package data, found with importlib.resources).
ASSET_DIR = resource_path("static")

#: Wait for a reply after the microphone stopped (s); every network wait has a timeout.
REPLY_TIMEOUT_S = 60.0
#: Capture rates accepted from the page (Hz): what browsers' AudioContexts offer (8 kHz .. 384 kHz).
MIN_MIC_RATE, MAX_MIC_RATE = 8000, 384000
#: Longest single microphone chunk accepted (s of audio at its rate); the page sends 4096-sample blocks.
MAX_CHUNK_S = 2.0
#: Most messages a LiveTalk worker may have waiting (~40 s of 4096-sample blocks at 48 kHz); more are dropped.
LIVE_QUEUE_MAX = 512


def _now_ms() -> float:
    """Kernel wall clock in epoch ms (the browser's clock is performance.timeOrigin + now(), also epoch ms)."""
    return time.time() * 1000.0


# --------------------------------------------------------------------------- clock + transport (pure)


class ClockSync:
    """Browser -> kernel clock offset from ping exchanges (NTP's estimate).

    A ping leaves the browser at ``b_send``, the kernel stamps ``k`` when answering, the pong arrives
    back at ``b_recv``. Assuming symmetric paths, ``offset = k - (b_send + b_recv) / 2`` (kernel minus
    browser, ms), with error at most half the round trip; the sample with the smallest round trip wins.
    """

    def __init__(self):
        self.samples: list[tuple[float, float]] = []  # (rtt_ms, offset_ms)

    def add(self, b_send: float, k: float, b_recv: float) -> float:
        rtt = float(b_recv) - float(b_send)
        if not np.isfinite(rtt) or rtt < 0:
            raise ValueError(f"a ping cannot come back before it left (rtt {rtt} ms)")
        off = float(k) - (float(b_send) + float(b_recv)) / 2.0
        self.samples.append((rtt, off))
        return off

    @property
    def offset_ms(self) -> float | None:
        return min(self.samples)[1] if self.samples else None

    @property
    def rtt_ms(self) -> float | None:
        return min(self.samples)[0] if self.samples else None

    @property
    def error_ms(self) -> float | None:
        """Bound on the offset error: half the smallest round trip."""
        return None if self.rtt_ms is None else self.rtt_ms / 2.0

    def to_kernel(self, browser_ms: float) -> float:
        """A browser timestamp on the kernel clock (unchanged before the first ping came back)."""
        return float(browser_ms) + (self.offset_ms or 0.0)


@dataclass
class TransportStats:
    """Microphone frame -> kernel delays (ms) of one recording or turn."""

    delays_ms: list[float] = field(default_factory=list)

    def add(self, browser_ms: float, kernel_ms: float, clock: ClockSync) -> float:
        d = float(kernel_ms) - clock.to_kernel(browser_ms)
        self.delays_ms.append(d)
        return d

    def summary(self) -> dict:
        """``{"n", "p50_ms", "p95_ms", "max_ms"}`` (None values without frames)."""
        if not self.delays_ms:
            return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
        a = np.asarray(self.delays_ms)
        return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
                "max_ms": float(a.max())}


def _fmt_ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def _msg_number(content: dict, name: str) -> float:
    """A finite number field of a page message (a timestamp), else InvalidAudio naming it."""
    v = content.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidAudio(f"message field {name!r} must be a number, got {type(v).__name__}")
    try:
        x = float(v)
    except OverflowError:
        raise InvalidAudio(f"message field {name!r} is out of range") from None
    if not np.isfinite(x):
        raise InvalidAudio(f"message field {name!r} must be finite, got {x}")
    return x


def _msg_rate(v) -> int:
    """A capture rate from the page: a whole number of Hz in [MIN_MIC_RATE, MAX_MIC_RATE], else InvalidAudio."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (MIN_MIC_RATE <= v <= MAX_MIC_RATE) \
            or float(v) != int(v):
        raise InvalidAudio(f"capture rate must be a whole number of Hz in {MIN_MIC_RATE}..{MAX_MIC_RATE}, "
                           f"got {str(v)[:40]!r}")
    return int(v)


# --------------------------------------------------------------------------- base widget


def _anywidget():
    try:
        import anywidget
    except ImportError as exc:  # the notebooks extra pulls it
        raise ConfigError("the microphone widgets need anywidget: pip install 'qvtools[notebooks]'") from exc
    return anywidget


def _traitlets():
    import traitlets

    return traitlets


_aw = _anywidget()
_t = _traitlets()


class _MicWidget(_aw.AnyWidget):
    """Shared capture protocol: ping/clock, start, chunk (+ float32 buffer), stop."""

    _esm = ASSET_DIR / "mic.js"
    _css = ASSET_DIR / "mic.css"
    label = _t.Unicode("").tag(sync=True)
    max_seconds = _t.Float(MAX_DURATION_S).tag(sync=True)
    status_html = _t.Unicode("").tag(sync=True)
    report_html = _t.Unicode("").tag(sync=True)

    def __init__(self, *, max_seconds: float = MAX_DURATION_S, label: str = "", **kw):
        if not 0 < float(max_seconds) <= MAX_DURATION_S:
            raise ConfigError(f"max_seconds must be in (0, {MAX_DURATION_S:g}] (SEED §2.4 max duration), "
                              f"got {max_seconds!r}")
        super().__init__(max_seconds=float(max_seconds), label=label, **kw)
        self.clock = ClockSync()
        self.transport = TransportStats()
        self.rate: int | None = None
        self.errors: list[str] = []
        #: Notices about microphone data that was dropped (past the cap, after stop, a bad chunk).
        self.dropped: list[str] = []
        self._active = False  # between start and stop
        self._n = 0  # samples accepted since start (the cap: max_seconds x rate, enforced as chunks arrive)
        self.on_msg(self._on_msg)

    # messages from the browser ------------------------------------------------------------
    def _on_msg(self, _widget, content, buffers) -> None:
        """Every message of the page, whatever its content (issue 23: total over arbitrary JSON and
        buffers, fuzzed in tests/test_mic.py): a malformed one is refused with a visible notice, never an
        uncaught exception in the kernel's comm handler."""
        k = _now_ms()
        kind = content.get("type") if isinstance(content, dict) else None
        kind = kind if isinstance(kind, str) else None
        try:
            if kind == "ping":
                self.send({"type": "pong", "b_send": _msg_number(content, "b_send"), "k": _now_ms()})
            elif kind == "clock":
                self.clock.add(*(_msg_number(content, f) for f in ("b_send", "k", "b_recv")))
            elif kind == "start":
                rate = _msg_rate(content.get("rate"))
                if self._active:
                    self._stop_capture("restart")
                self.rate, self._active, self._n = rate, True, 0
                self.transport = TransportStats()
                self._started(self.rate)
            elif kind == "chunk":
                self._on_chunk(content, buffers, k)
            elif kind == "stop":
                if not self._active and self.rate is not None:
                    return  # a second stop (button + cap): nothing more to do
                self._stop_capture(str(content.get("why", "button"))[:40])
            elif kind == "error":
                message = str(content.get("message"))[:500]
                self.errors.append(message)
                self._say(f"microphone: {message}", error=True)
        except Exception as exc:  # noqa: BLE001 -- a bad message must not escape into the comm handler
            log.warning("microphone message %s: %s", kind, exc, exc_info=not isinstance(exc, (QVError, ValueError)))
            self._say(f"{kind}: {exc}", error=True)

    def _on_chunk(self, content, buffers, k: float) -> None:
        if not self._active:
            return self._drop("a microphone chunk arrived after stop (or before start); ignored")
        if not buffers:
            raise InvalidAudio("a microphone chunk arrived without its audio buffer")
        rate = content.get("rate")
        if rate is not None and _msg_rate(rate) != self.rate:
            raise InvalidAudio(f"the capture rate changed mid-recording ({self.rate} -> {rate} Hz); chunk refused "
                               "-- stop and start again")
        t = _msg_number(content, "t")
        buf = buffers[0]
        size = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        if size > MAX_CHUNK_S * self.rate * 4:
            raise InvalidAudio(f"a microphone chunk of {size:,} bytes is longer than {MAX_CHUNK_S:g} s; refused")
        if size % 4:
            raise InvalidAudio(f"a microphone chunk of {size} bytes is not float32 samples; refused")
        x = np.frombuffer(bytes(buf), dtype=np.float32)
        if not np.isfinite(x).all():
            raise InvalidAudio("a microphone chunk holds NaN or infinite samples; refused")
        room = int(round(self.max_seconds * self.rate)) - self._n
        if room <= 0:
            return self._drop(f"the {self.max_seconds:g} s cap was reached; later microphone audio is dropped")
        if x.size > room:
            x = x[:room]
            self._drop(f"the {self.max_seconds:g} s cap was reached; the rest of the audio is dropped")
        self._n += x.size
        delay = self.transport.add(t, k, self.clock)
        self._chunk(x, self.rate, delay, k)

    def _stop_capture(self, why: str) -> None:
        self._active = False
        self._stopped(why)

    def _drop(self, notice: str) -> None:
        if not self.dropped or self.dropped[-1] != notice:
            self.dropped.append(notice)
            log.warning("microphone: %s", notice)
        self._say(notice, error=True)

    # feeding the protocol from Python (tests, benchmarks) ----------------------------------
    def feed(self, samples: np.ndarray, rate: int, *, block: int = 4096, clock: Callable[[], float] = _now_ms):
        """Play ``samples`` through the same handlers the browser messages reach (start, chunks, stop)."""
        x = np.asarray(samples, dtype=np.float32)
        self._on_msg(self, {"type": "start", "rate": int(rate)}, [])
        for i in range(0, len(x), block):
            self._on_msg(self, {"type": "chunk", "seq": i // block, "t": clock(), "rate": int(rate)},
                         [x[i:i + block].tobytes()])
        self._on_msg(self, {"type": "stop", "why": "feed"}, [])

    def stop(self) -> None:
        """Ask the browser to stop capturing (as the Stop button does)."""
        self.send({"type": "stop"})

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#070"
        self.status_html = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def transport_summary(self) -> dict:
        s = self.transport.summary()
        s.update(self._clock_fields())
        return s

    def _clock_fields(self) -> dict:
        return {"clock_offset_ms": self.clock.offset_ms, "clock_rtt_ms": self.clock.rtt_ms,
                "clock_error_ms": self.clock.error_ms}

    def _transport_text(self) -> str:
        s = self.transport_summary()
        return (f"transport microphone -> kernel: p50 {_fmt_ms(s['p50_ms'])}, p95 {_fmt_ms(s['p95_ms'])} "
                f"({s['n']} frames; clock offset {_fmt_ms(s['clock_offset_ms'])} +/- {_fmt_ms(s['clock_error_ms'])}) "
                "-- not service latency")

    # hooks
    def _started(self, rate: int) -> None: ...
    def _chunk(self, x: np.ndarray, rate: int, delay_ms: float, kernel_ms: float) -> None: ...
    def _stopped(self, why: str) -> None: ...


# --------------------------------------------------------------------------- Recorder


class Recorder(_MicWidget):
    """Record a clip in the browser; the preflight table (:func:`qvtools.preflight.check`) shows after stop.

    ``recording`` is ``(float32 mono samples, rate)`` at the browser's capture rate (no resampling: a
    48 kHz capture stays 48 kHz, above the 24 kHz floor of §2.4). ``on_recorded`` callbacks get the
    recorder after the preflight ran (``VoiceManager`` uses it).
    """

    def __init__(self, *, max_seconds: float = MAX_DURATION_S, run_preflight: bool = True,
                 label: str = "Record"):
        super().__init__(max_seconds=max_seconds, label=label)
        self.run_preflight = run_preflight
        self._parts: list[np.ndarray] = []
        self._recording: tuple[np.ndarray, int] | None = None
        self.report = None
        self._callbacks: list[Callable[["Recorder"], Any]] = []

    def on_recorded(self, callback: Callable[["Recorder"], Any]) -> None:
        self._callbacks.append(callback)

    def _started(self, rate: int) -> None:
        self._parts = []
        self._recording = None
        self.report = None
        self.report_html = ""
        self._say(f"recording at {rate} Hz (max {self.max_seconds:g} s)")

    def _chunk(self, x, rate, delay_ms, kernel_ms) -> None:
        self._parts.append(x)  # _MicWidget already capped the total at max_seconds x rate

    def _stopped(self, why: str) -> None:
        if self.rate is None:
            raise InvalidAudio("stop without start: nothing was recorded")
        x = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        x = x[: int(round(self.max_seconds * self.rate))]  # the cap holds even if the page sent more
        self._parts = []
        if x.size == 0:
            self._recording = None
            self._say("nothing was recorded (is the microphone allowed?)", error=True)
            return
        self._recording = (x, self.rate)
        self._say(f"recorded {x.size / self.rate:.2f} s at {self.rate} Hz ({why}); " + self._transport_text())
        if self.run_preflight:
            from . import preflight

            self.report = preflight.check(self._recording)
            self.report_html = f"<div class='qv-preflight'>{self.report._repr_html_()}</div>"
        for cb in list(self._callbacks):
            cb(self)

    @property
    def recording(self) -> tuple[np.ndarray, int]:
        if self._recording is None:
            raise InvalidAudio("no recording yet: press Start, speak, then Stop")
        return self._recording

    @property
    def duration_s(self) -> float:
        x, sr = self.recording
        return x.size / sr

    @property
    def wav(self) -> bytes:
        """The recording as 16-bit mono WAV (clipped, never rescaled)."""
        return qaudio.wav_bytes(*self.recording, "PCM_16")

    def save(self, path) -> Path:
        """Write the recording as 16-bit WAV, all or nothing (an error names the path)."""
        from .rundir import write_atomic

        return write_atomic(Path(path), self.wav)


# --------------------------------------------------------------------------- LiveTalk


@dataclass
class LiveTurn:
    """A live exchange: the session's :class:`~qvtools.realtime.turn.Turn` (its marks are the service
    side, same as a file-driven turn) and, as its own field, the microphone -> kernel transport delay."""

    turn: Any
    transport: dict
    mic_rate: int
    mode: str

    def row(self) -> dict:
        """A results row: the turn's latencies plus ``transport_*`` columns (kept apart on purpose)."""
        t = self.turn
        row = {"model": t.model, "voice": t.voice, "status": t.status, "error": t.error,
               "user_transcript": t.user_transcript, "assistant_transcript": t.assistant_transcript,
               "input_mode": f"microphone/{self.mode}", "mic_rate": self.mic_rate}
        row.update(t.latency())
        row.update({f"transport_{k}": v for k, v in self.transport.items()})
        return row


class LiveTalk(_MicWidget):
    """Talk to a voice through the microphone, streaming into ``session`` (a RealtimeSession).

    The mode follows the session (the client's own request, §7.2): ``turn_detection="server_vad"`` ->
    the server's VAD ends each turn (on Stop, trailing silence is sent as :meth:`RealtimeSession.send_audio`
    does, §4.5 a); ``turn_detection=None`` -> push-to-talk: Start .. Stop is one utterance, then
    ``commit`` + ``response.create`` (§4.5 b). Audio is resampled (soxr, streaming) to the session input
    rate and sent as PCM16 ``append`` events; the reply's audio deltas are played in the browser as they
    arrive. One worker thread owns the session and drives it only through its public streaming-turn API
    (:meth:`RealtimeSession.begin_turn` -> ``append`` / ``poll`` / ``finish``, the same path ``send_audio``
    takes); finished exchanges are in :attr:`turns`.

    Marks: the same tracker as ``send_audio``, with one difference the microphone imposes -- the client does
    not know where the speech ends, so ``speech_end_sent`` is the last microphone chunk sent before the
    server's ``speech_stopped`` arrived (server VAD; it includes the VAD's silence wait) or before Stop
    (push-to-talk). ``ttfa_ms`` of a server-VAD live turn is therefore shorter than a file-driven turn's by
    about ``silence_duration_ms``; compare ``ttfa_created_ms`` across the two.

    ``keepalive=True``: while the microphone is muted (between Stop and Start), 1 s of zero PCM every 30 s
    keeps the session from the §7.12 idle close, as Qwen's own client does (§7.22;
    :class:`qvtools.realtime.keepalive.KeepAlive`).
    """

    def __init__(self, session, *, max_seconds: float = MAX_DURATION_S, reply_timeout: float = REPLY_TIMEOUT_S,
                 keepalive: bool = False):
        from .realtime.keepalive import KeepAlive

        self.session = session
        self.keepalive = KeepAlive(session) if keepalive else None
        self.mode = "push_to_talk" if session.manual else "server_vad"
        super().__init__(max_seconds=max_seconds, label=f"Talk ({self.mode.replace('_', '-')})")
        self.reply_timeout = float(reply_timeout)
        self.turns: list[LiveTurn] = []
        self._q: queue.Queue = queue.Queue(maxsize=LIVE_QUEUE_MAX)  # bounded (issue 23)
        self._idle = threading.Event()
        self._idle.set()
        self._worker = threading.Thread(target=self._run, name="qvtools-livetalk", daemon=True)
        self._worker.start()

    # main thread: hand over to the worker ------------------------------------------------
    def _started(self, rate: int) -> None:
        self._idle.clear()
        self._hand_over(("start", rate, None))

    def _chunk(self, x, rate, delay_ms, kernel_ms) -> None:
        try:
            self._q.put_nowait(("chunk", x, delay_ms))
        except queue.Full:  # the worker is behind (a stalled service): drop, and say so
            self._drop(f"the live queue is full ({LIVE_QUEUE_MAX} messages); microphone audio dropped")

    def _stopped(self, why: str) -> None:
        self._hand_over(("stop", why, None))

    def _hand_over(self, item) -> None:
        """Queue a control message, waiting at most a few seconds for room (never forever)."""
        try:
            self._q.put(item, timeout=5.0)
        except queue.Full:
            raise QVError(f"the live worker is not keeping up; {item[0]} not delivered") from None

    def wait_idle(self, timeout: float) -> bool:
        """True once every exchange handed over so far has finished (bounded by ``timeout``)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        try:
            self._q.put(("quit", None, None), timeout=5.0)
        except queue.Full:
            log.warning("live worker queue full at close; the worker is abandoned (daemon thread)")
        self._worker.join(timeout=5)
        super().close()

    # worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        st: dict | None = None
        while True:
            try:
                kind, a, b = self._q.get(timeout=0.05)
            except queue.Empty:
                if st is not None:
                    self._poll(st)
                elif self.keepalive is not None:
                    self._keep_alive()
                continue
            try:
                if kind == "quit":
                    return
                if kind == "start":
                    st = self._begin(int(a))
                elif kind == "chunk" and st is not None:
                    st["delays"].append(b)
                    self._send_pcm(st, st["rs"].resample_chunk(a))
                    self._poll(st)
                elif kind == "stop" and st is not None:
                    self._finish(st)
                    st = None
                    self._idle.set()
            except Exception as exc:  # noqa: BLE001 -- the worker must outlive one bad exchange
                log.warning("live turn failed: %s", exc, exc_info=not isinstance(exc, QVError))
                self._say(f"live turn failed: {exc}", error=True)
                st = None
                self._idle.set()

    def _keep_alive(self) -> None:
        """Muted microphone: the §7.22 keep-alive when due; a failure is said, never raised."""
        try:
            self.keepalive.tick()
        except QVError as exc:
            log.info("keep-alive not sent: %s", exc)

    def _begin(self, rate: int) -> dict:
        import soxr

        s = self.session
        if not s.connected:
            s.connect()
        handle = s.begin_turn(manual=self.mode == "push_to_talk", on_event=self._on_event)
        self._say(f"listening at {rate} Hz -> {s.input_sample_rate} Hz ({self.mode})")
        return {"turn": handle, "rate": rate, "delays": [],
                "rs": soxr.ResampleStream(rate, s.input_sample_rate, 1, dtype="float32")}

    def _send_pcm(self, st, y: np.ndarray) -> None:
        """Microphone audio into the turn. The client does not know where the speech ends: each chunk sent
        before the server's VAD said ``speech_stopped`` (push-to-talk: before Stop) is the candidate."""
        handle = st["turn"]
        if y.size == 0 or handle.done:
            return
        handle.append(y, speech="speech_stopped" not in handle.turn.marks)
        if self.keepalive is not None:
            self.keepalive.touch()

    def _poll(self, st) -> None:
        handle = st["turn"]
        handle.poll(0.0)
        if handle.done:
            self._keep(st)
            st.update(self._begin(st["rate"]), rs=st["rs"])  # server VAD: the microphone goes on

    def _finish(self, st) -> None:
        handle = st["turn"]
        tail = st["rs"].resample_chunk(np.zeros(0, np.float32), last=True)
        self._send_pcm(st, tail)
        if "first_audio_sent" not in handle.turn.marks:
            handle.discard()  # Start .. Stop with no audio: no turn
            return
        # push-to-talk: commit + response.create; server VAD: trailing silence, paced (§4.5 a)
        handle.finish(timeout=self.reply_timeout)
        self._keep(st)

    def _keep(self, st) -> LiveTurn:
        turn = st["turn"].finish(timeout=self.reply_timeout)  # already ended: records and returns the Turn
        transport = TransportStats(list(st["delays"])).summary()
        transport.update(self._clock_fields())
        live = LiveTurn(turn, transport, st["rate"], self.mode)
        st["delays"] = []
        self.turns.append(live)
        lat = turn.latency()
        self._say(f"turn {len(self.turns)}: {turn.status}; you said: {turn.user_transcript!r}; "
                  f"service TTFA {_fmt_ms(lat.get('ttfa_ms'))}, E2E {_fmt_ms(lat.get('e2e_ms'))} | "
                  f"transport microphone -> kernel p50 {_fmt_ms(transport['p50_ms'])}, "
                  f"p95 {_fmt_ms(transport['p95_ms'])}, clock +/- {_fmt_ms(transport['clock_error_ms'])} "
                  "(separate from service latency)",
                  error=turn.status == "failed")
        return live

    def _on_event(self, event) -> None:
        if event.type == "response.audio.delta" and event.get("delta"):
            import base64

            pcm = base64.b64decode(event["delta"])
            self.send({"type": "play", "rate": self.session.output_sample_rate}, buffers=[pcm])
