"""Voice activity detection with Silero VAD (v6, MIT), run directly with onnxruntime.

The ONNX model ships inside faster-whisper (``faster_whisper/assets/silero_vad_v6.onnx``),
so nothing is downloaded at run time. The model is loaded lazily on first use and cached;
importing this module has no side effects.

How the model is fed (as ``faster_whisper.vad.SileroVADModel`` does): 16 kHz audio cut into
512-sample windows (32 ms), each window prefixed with the last 64 samples of the window
before it (zeros for the first), batched as rows of 576 samples; the LSTM state ``h``/``c``
runs across the rows of a batch and is carried between batches.

- :func:`speech_probabilities` -- one speech probability per 32 ms frame (:data:`FRAME_S`).
- :func:`speech_segments` -- speech regions in seconds (offline, used by preflight).
- :func:`longest_continuous_speech` -- the §2.4 "continuous speech" measure (gaps < 0.6 s bridged),
  shared by preflight and the local service.
- :class:`StreamingVAD` -- incremental ``speech_started`` / ``speech_stopped`` events with the
  realtime API's ``server_vad`` knobs (``threshold``, ``prefix_padding_ms``,
  ``silence_duration_ms``; protocol reference §4.2, §4.4), used by the local service.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import spec
from .catalog import DEFAULT_PREFIX_PADDING_MS, DEFAULT_SILENCE_DURATION_MS, DEFAULT_VAD_THRESHOLD
from .audio import as_mono, from_pcm16
from .errors import ConfigError

__all__ = [
    "FRAME_S",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "MODEL_NAME",
    "model_path",
    "speech_probabilities",
    "speech_segments",
    "segments_from_probabilities",
    "longest_continuous",
    "longest_continuous_speech",
    "VADEvent",
    "StreamingVAD",
]

log = logging.getLogger(__name__)

#: The model's native rate; other rates are resampled to it.
SAMPLE_RATE = 16000
#: Samples per model window at 16 kHz.
FRAME_SAMPLES = 512
#: Samples of left context prepended to every window (Silero v5/v6 input layout).
CONTEXT_SAMPLES = 64
#: Seconds per probability frame (512 / 16000).
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
MODEL_NAME = "silero_vad_v6"

_FRAME_MS = 1000.0 * FRAME_S
_BATCH_ROWS = 10000  # rows per session.run for long offline inputs (as faster-whisper)


def model_path() -> Path:
    """Path of the Silero VAD ONNX file bundled in faster-whisper."""
    try:
        import faster_whisper
    except ImportError as exc:  # a hard dependency: say so rather than fall back silently
        raise ImportError("qvtools.vad needs faster-whisper (it bundles the Silero VAD model): "
                          "pip install faster-whisper") from exc
    path = Path(faster_whisper.__file__).resolve().parent / "assets" / f"{MODEL_NAME}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model not found at {path}; reinstall faster-whisper>=1.0")
    return path


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    path = model_path()
    log.debug("loading Silero VAD from %s", path)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)


class _Runner:
    """Feeds whole 512-sample windows to the model, carrying context and LSTM state."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def run(self, x16: np.ndarray) -> np.ndarray:
        """Probabilities for ``len(x16) // 512`` windows (x16 must be a multiple of 512 long)."""
        n = len(x16) // FRAME_SAMPLES
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = np.asarray(x16[: n * FRAME_SAMPLES], dtype=np.float32).reshape(n, FRAME_SAMPLES)
        ctx = np.empty((n, CONTEXT_SAMPLES), dtype=np.float32)
        ctx[0] = self.context
        if n > 1:
            ctx[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        rows = np.concatenate([ctx, frames], axis=1)
        session = _session()
        out = []
        for i in range(0, n, _BATCH_ROWS):
            probs, self.h, self.c = session.run(None, {"input": rows[i:i + _BATCH_ROWS], "h": self.h, "c": self.c})
            out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        self.context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.concatenate(out)


def _to_16k(x, sr) -> np.ndarray:
    return as_mono(x, sr, SAMPLE_RATE)


def speech_probabilities(x: np.ndarray, sr: int) -> np.ndarray:
    """Silero speech probability per 32 ms frame (:data:`FRAME_S`); frame ``i`` covers
    ``[i * FRAME_S, (i + 1) * FRAME_S)`` seconds. Multi-channel input is averaged, any rate is
    resampled to 16 kHz; the last partial window is zero-padded."""
    x16 = _to_16k(x, sr)
    pad = (-len(x16)) % FRAME_SAMPLES
    if pad:
        x16 = np.concatenate([x16, np.zeros(pad, dtype=np.float32)])
    return _Runner().run(x16)


def segments_from_probabilities(probs: np.ndarray, duration_s: float | None = None, *, threshold: float = 0.5,
                                min_speech_ms: int = 250, min_silence_ms: int = 300,
                                pad_ms: int = 30) -> list[tuple[float, float]]:
    """Speech regions (seconds) from frame probabilities, with Silero's hysteresis:
    speech starts at ``p >= threshold`` and ends after ``min_silence_ms`` below
    ``threshold - 0.15``. Regions shorter than ``min_speech_ms`` are dropped; the rest are
    padded by ``pad_ms`` on both sides (clamped to the audio) and merged where they touch."""
    _check_threshold(threshold)
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    total = len(probs) * FRAME_S if duration_s is None else float(duration_s)
    neg = max(threshold - 0.15, 0.01)
    min_sil_frames = max(1, int(np.ceil(min_silence_ms / _FRAME_MS)))
    raw: list[tuple[int, int]] = []
    start = None
    silence_from = None
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, silence_from = i, None
            continue
        if p >= threshold:
            silence_from = None
        elif p < neg:
            if silence_from is None:
                silence_from = i
            if i + 1 - silence_from >= min_sil_frames:
                raw.append((start, silence_from))
                start, silence_from = None, None
    if start is not None:
        raw.append((start, silence_from if silence_from is not None else len(probs)))
    segs: list[tuple[float, float]] = []
    for a, b in raw:
        if (b - a) * _FRAME_MS < min_speech_ms:
            continue
        s = max(0.0, a * FRAME_S - pad_ms / 1000.0)
        e = min(total, b * FRAME_S + pad_ms / 1000.0)
        if segs and s <= segs[-1][1]:
            segs[-1] = (segs[-1][0], max(segs[-1][1], e))
        else:
            segs.append((s, e))
    return [(round(s, 4), round(e, 4)) for s, e in segs]


def speech_segments(x: np.ndarray, sr: int, *, threshold: float = 0.5, min_speech_ms: int = 250,
                    min_silence_ms: int = 300, pad_ms: int = 30) -> list[tuple[float, float]]:
    """Speech regions ``[(start_s, end_s), ...]`` of a recording (see :func:`segments_from_probabilities`)."""
    x = np.asarray(x)
    probs = speech_probabilities(x, sr)
    return segments_from_probabilities(probs, x.shape[0] / int(sr), threshold=threshold,
                                       min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms, pad_ms=pad_ms)


def longest_continuous(segments, max_gap_s: float | None = None) -> float:
    """Seconds of the longest continuous speech in ``[(start_s, end_s), ...]``: segments whose gap is
    shorter than ``max_gap_s`` (default :data:`qvtools.spec.CONTINUITY_GAP_S`, 0.6 s: a comma or a
    breath) are bridged into one run. 0.0 without segments.

    The one implementation of "≥ 3 s of continuous clear speech" (§2.4 of the protocol reference):
    ``qvtools check`` (:mod:`qvtools.preflight`) and the local service's create use it, so a clip the
    check passes is not refused by the service (issue 12)."""
    gap = spec.CONTINUITY_GAP_S if max_gap_s is None else float(max_gap_s)
    merged: list[list[float]] = []
    for s, e in segments:
        if merged and s - merged[-1][1] < gap:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return max((e - s for s, e in merged), default=0.0)


def longest_continuous_speech(x: np.ndarray, sr: int) -> float:
    """Seconds of the longest continuous speech of a recording: :func:`speech_segments` (defaults)
    bridged by :func:`longest_continuous`. Compare with :data:`qvtools.spec.MIN_CONTINUOUS_SPEECH_S`."""
    return longest_continuous(speech_segments(x, sr))


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"VAD threshold must be between 0 and 1 (exclusive), got {threshold}")


@dataclass(frozen=True)
class VADEvent:
    """A turn-detection event.

    ``kind`` is ``"speech_started"`` or ``"speech_stopped"``. ``audio_ms`` is the position in
    the input stream the event refers to, in ms since the first sample fed: for
    ``speech_started`` the speech onset minus ``prefix_padding_ms`` (never below 0), as
    ``input_audio_buffer.speech_started.audio_start_ms``; for ``speech_stopped`` the end of
    speech (where the trailing silence began), as ``speech_stopped.audio_end_ms`` (§4.4).
    ``detected_ms`` is the stream position at which the event was decided (for a stop, about
    ``audio_ms + silence_duration_ms``).
    """

    kind: str
    audio_ms: int
    detected_ms: int = 0


class StreamingVAD:
    """Incremental server-VAD: feed float PCM chunks, get speech start/stop events.

    Mirrors ``turn_detection`` of type ``server_vad`` (protocol reference §4.2): speech starts
    on the first 32 ms frame with probability ``>= threshold``; it stops once the probability
    has stayed below ``threshold - 0.15`` (Silero's hysteresis) for ``silence_duration_ms``.
    Chunks of any length are accepted; whole 32 ms windows are batched into one model call
    per :meth:`feed` and the remainder (plus model context and state) is carried over.
    Input at other rates than 16 kHz is resampled with a streaming resampler.
    Not thread-safe: use one instance per audio stream.
    """

    def __init__(self, threshold: float = DEFAULT_VAD_THRESHOLD, prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS,
                 silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS, sample_rate: int = SAMPLE_RATE):
        _check_threshold(threshold)
        if int(prefix_padding_ms) < 0:
            raise ConfigError(f"prefix_padding_ms must be >= 0, got {prefix_padding_ms}")
        if int(silence_duration_ms) <= 0:
            raise ConfigError(f"silence_duration_ms must be > 0, got {silence_duration_ms}")
        if int(sample_rate) <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
        self.threshold = float(threshold)
        self.prefix_padding_ms = int(prefix_padding_ms)
        self.silence_duration_ms = int(silence_duration_ms)
        self.sample_rate = int(sample_rate)
        self._neg_threshold = max(self.threshold - 0.15, 0.01)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and state (e.g. after ``input_audio_buffer.clear``)."""
        self._runner = _Runner()
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames = 0  # 32 ms frames processed
        self._fed_samples = 0
        self._speaking = False
        self._silence_from: int | None = None  # frame index where the current silence began
        self._resampler = None
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    @property
    def speaking(self) -> bool:
        """True between a ``speech_started`` and the following ``speech_stopped``."""
        return self._speaking

    @property
    def silence_since_ms(self) -> int | None:
        """While speaking: where the current run of silence began (ms of the stream, what a
        ``speech_stopped`` would report as ``audio_ms`` if the silence lasts), else None. Lets a
        server start work on the utterance before the stop is decided (issue 11)."""
        if not self._speaking or self._silence_from is None:
            return None
        return self._ms(self._silence_from)

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio fed so far (at the input rate)."""
        return int(round(1000.0 * self._fed_samples / self.sample_rate))

    @property
    def processed_ms(self) -> int:
        """Milliseconds of audio the model has seen (whole 32 ms frames)."""
        return int(round(self._frames * _FRAME_MS))

    def feed(self, chunk) -> list[VADEvent]:
        """Process a chunk (float samples in [-1, 1]; PCM16 ``bytes`` are accepted too)."""
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            x = from_pcm16(chunk)
        else:
            x = np.asarray(chunk)
            if np.issubdtype(x.dtype, np.integer):
                x = from_pcm16(x.astype(np.int16))
            x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._fed_samples += len(x)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._pending = np.concatenate([self._pending, x]) if len(self._pending) else x
        n = len(self._pending) // FRAME_SAMPLES
        if n == 0:
            return []
        probs = self._runner.run(self._pending[: n * FRAME_SAMPLES])
        self._pending = self._pending[n * FRAME_SAMPLES:].copy()
        return self._step(probs)

    def _ms(self, frame: int) -> int:
        return int(round(frame * _FRAME_MS))

    def _step(self, probs: np.ndarray) -> list[VADEvent]:
        events: list[VADEvent] = []
        for p in probs:
            i = self._frames
            self._frames += 1
            if not self._speaking:
                if p >= self.threshold:
                    self._speaking = True
                    self._silence_from = None
                    # audio_start_ms includes prefix_padding_ms, never before the stream start (§4.2/§4.4)
                    start = max(0, self._ms(i) - self.prefix_padding_ms)
                    events.append(VADEvent("speech_started", start, self._ms(i + 1)))
                continue
            if p >= self.threshold:
                self._silence_from = None
            elif p < self._neg_threshold:
                if self._silence_from is None:
                    self._silence_from = i
                # speech stops after silence_duration_ms of silence (§4.2 turn_detection)
                if self._ms(i + 1) - self._ms(self._silence_from) >= self.silence_duration_ms:
                    events.append(VADEvent("speech_stopped", self._ms(self._silence_from), self._ms(i + 1)))
                    self._speaking = False
                    self._silence_from = None
        return events
