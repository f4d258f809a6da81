"""The realtime input audio buffer and its server-VAD feed, as plain code (no socket, no awaits).

A connection (:mod:`qvtools.server.realtime`) turns an ``input_audio_buffer.append`` into bytes with
:func:`decode_append`, hands them to :meth:`InputBuffer.append` and gets back the VAD's turn events
(:class:`SpeechEvent`) to send and act on; :meth:`InputBuffer.take` gives the committed audio. Tests
drive it with bytes (``tests/test_rt_input.py``). § numbers refer to
``../shared/reference/dashscope-protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .. import audio as _audio
from ..realtime import events as ev

__all__ = ["InputBuffer", "SpeechEvent", "AppendError", "BufferFull", "decode_append", "strip_wav", "VAD_KEEP_MS",
           "image_problem", "MAX_IMAGE_B64"]

VAD_KEEP_MS = 500  # audio kept before the prefix padding while no speech is detected (VAD look-ahead)
MAX_IMAGE_B64 = 256 * 1024  # §4.3 "≤ 256 KB after base64"


class AppendError(ValueError):
    """An ``input_audio_buffer.append`` whose ``audio`` is unusable; the message is the ``error`` event's."""


class BufferFull(Exception):
    """The append would take the buffer past ``ServiceConfig.realtime_max_buffer_s``; nothing was added."""


def strip_wav(data: bytes) -> bytes:
    """PCM payload of a WAV chunk (``audio.input.format.type = wav``); raw data passes through."""
    if not data.startswith(b"RIFF") or len(data) < 12:
        return data
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"data":
            return data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise ValueError("the WAV chunk has no data chunk")


def decode_append(audio, fmt: str) -> bytes:
    """The PCM16 bytes of an append's ``audio`` field (base64; a WAV chunk when ``fmt == "wav"``).

    Raises :class:`AppendError` with the ``error`` event's message for a non-string, bad base64, a WAV
    chunk without data or an odd number of bytes (§4.3)."""
    if not isinstance(audio, str):
        raise AppendError("'audio' must be a base64 string.")
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise AppendError("'audio' is not valid base64.") from None
    if fmt == "wav":
        try:
            data = strip_wav(data)
        except ValueError as exc:
            raise AppendError(str(exc)) from None
    if len(data) % 2:
        raise AppendError(f"PCM16 audio must have an even number of bytes, got {len(data)}.")
    return data


def image_problem(image, audio_started: bool) -> str | None:
    """The ``error`` event's message for an unusable ``input_image_buffer.append`` (§4.3: after audio,
    base64 JPEG of at most :data:`MAX_IMAGE_B64` characters), else None."""
    if not audio_started:
        return "Error append image before append audio."
    if not isinstance(image, str) or len(image) > MAX_IMAGE_B64:
        return "'image' must be base64 JPEG of at most 256 KB."
    try:
        raw = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        return "'image' is not valid base64."
    if not raw.startswith(b"\xff\xd8\xff"):
        return "'image' must be a JPEG."
    return None


@dataclass(frozen=True)
class SpeechEvent:
    """A server-VAD turn event: ``kind`` ``"speech_started"`` or ``"speech_stopped"`` at ``audio_ms`` of
    the buffer's audio, for the user item ``item_id``; a stop carries the turn's ``start_ms`` too."""

    kind: str
    audio_ms: float
    item_id: str
    start_ms: int = 0


class InputBuffer:
    """``input_audio_buffer`` of one session: PCM16 bytes at ``rate`` Hz, at most ``max_s`` seconds, and the
    server VAD (:class:`qvtools.vad.StreamingVAD`) when ``turn_detection`` is set (§4.2, §5.7)."""

    def __init__(self, rate: int, max_s: float, turn_detection: dict | None = None):
        self.buf = bytearray()
        self.start_ms = 0.0  # audio time (ms since the VAD started) of buf[0]
        self.rate = int(rate)
        self.max_s = float(max_s)
        self.turn_detection = turn_detection
        self.vad = None
        self.speech_item: str | None = None  # the user item of the speech in progress (server VAD)
        self.speech_start_ms = 0
        self.configure(rate, turn_detection)

    def __len__(self) -> int:
        return len(self.buf)

    def __bool__(self) -> bool:
        return bool(self.buf)

    def configure(self, rate: int, turn_detection: dict | None) -> None:
        """A new input rate or ``turn_detection``: a fresh VAD (None: manual commits), the audio kept."""
        self.rate = int(rate)
        self.turn_detection = turn_detection
        if turn_detection is None:
            self.vad = None
            return
        from ..vad import StreamingVAD

        # §4.2 / §5.7: the VAD honours threshold, prefix_padding_ms and silence_duration_ms
        td = turn_detection
        self.vad = StreamingVAD(threshold=max(float(td["threshold"]), 0.0), prefix_padding_ms=td["prefix_padding_ms"],
                                silence_duration_ms=td["silence_duration_ms"], sample_rate=self.rate)
        self.speech_item = None
        self.start_ms = -1000.0 * len(self.buf) / 2 / self.rate

    def append(self, data: bytes) -> list[SpeechEvent]:
        """Add PCM16 ``data``; the VAD's turn events in order (none in manual mode).

        Raises :class:`BufferFull` (nothing added) past ``max_s``. After acting on the events (a stop
        commits with :meth:`take`), call :meth:`settle`."""
        cap = int(self.max_s * self.rate) * 2
        if len(self.buf) + len(data) > cap:
            raise BufferFull(f"The input audio buffer would exceed {self.max_s:g} s of audio; it was cleared. "
                             "Commit more often, or keep sending silence so the server VAD can end the turn.")
        self.buf.extend(data)
        if self.vad is None:
            return []
        out = []
        for vev in self.vad.feed(_audio.from_pcm16(data)):
            if vev.kind == "speech_started":
                self.speech_item = ev.new_id("item")
                self.speech_start_ms = int(vev.audio_ms)
                out.append(SpeechEvent("speech_started", vev.audio_ms, self.speech_item))
            elif vev.kind == "speech_stopped" and self.speech_item is not None:
                item, self.speech_item = self.speech_item, None
                out.append(SpeechEvent("speech_stopped", vev.audio_ms, item, self.speech_start_ms))
        return out

    def pending_stop(self) -> tuple[str, int, int, int] | None:
        """Server VAD in speech, now in silence: ``(item_id, start_ms, end_ms, silence_ms)`` -- the turn
        that a ``speech_stopped`` would commit if the silence lasts (:meth:`take` of ``start_ms``,
        ``end_ms``) and how long the silence has lasted so far; None otherwise. Speculative work started
        on it (issue 11) is valid only while the same tuple's first three fields come back."""
        vad = self.vad
        if vad is None or self.speech_item is None:
            return None
        since = vad.silence_since_ms
        if since is None:
            return None
        return self.speech_item, self.speech_start_ms, int(since), max(0, vad.processed_ms - int(since))

    def speech_so_far(self) -> tuple[str, int, int, int | None] | None:
        """Server VAD in an utterance (speech, or the silence before its ``speech_stopped``):
        ``(item_id, start_ms, processed_ms, silence_since_ms)`` (the last None while speech goes on); None
        otherwise."""
        if self.vad is None or self.speech_item is None:
            return None
        since = self.vad.silence_since_ms
        return self.speech_item, self.speech_start_ms, int(self.vad.processed_ms), None if since is None else int(since)

    def settle(self) -> None:
        """Server VAD outside speech: keep only what a next ``speech_started`` can reach back to
        (prefix_padding_ms, §4.2, plus the VAD look-ahead), so silence never fills the buffer."""
        if self.vad is None or self.speech_item is not None:
            return
        td = self.turn_detection or {}
        keep = 2 * int((int(td.get("prefix_padding_ms", 300)) + VAD_KEEP_MS) * self.rate / 1000.0)
        extra = len(self.buf) - keep
        if extra > 0:
            del self.buf[:extra]
            self.start_ms += 1000.0 * (extra // 2) / self.rate

    def slice_ms(self, start_ms: float | None, end_ms: float | None) -> bytes:
        """The buffered audio between two VAD times (all of it when ``start_ms`` is None)."""
        if start_ms is None:
            return bytes(self.buf)
        rate = self.rate
        a = max(0, int((start_ms - self.start_ms) * rate / 1000.0)) * 2
        b = len(self.buf) if end_ms is None else max(a, int((end_ms - self.start_ms) * rate / 1000.0) * 2)
        return bytes(self.buf[a:b])

    def take(self, start_ms: float | None = None, end_ms: float | None = None) -> bytes:
        """Commit: the audio (see :meth:`slice_ms`); the buffer is then empty, its clock at the VAD's."""
        pcm = self.slice_ms(start_ms, end_ms)
        self.buf.clear()
        self.start_ms = float(self.vad.position_ms) if self.vad is not None else 0.0
        return pcm

    def clear(self) -> None:
        """``input_audio_buffer.clear`` (or an overflow): audio and VAD state forgotten."""
        self.buf.clear()
        self.speech_item = None
        if self.vad is not None:
            self.vad.reset()
        self.start_ms = 0.0
