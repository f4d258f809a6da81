"""Audio in memory: load, probe, resample, mono, PCM16, WAV bytes and data URLs.

Inside the library audio is ``(samples, sample_rate)``: float32 numpy arrays in
[-1, 1], shape ``(n,)`` for mono or ``(n, channels)``. PCM16 bytes exist only at
the wire. Every loader accepts a path, ``bytes``, a binary file object, or an
already loaded ``(samples, sample_rate)`` tuple (soundfile's style).
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from . import spec
from .errors import InvalidAudio

__all__ = [
    "AudioInfo",
    "AudioSource",
    "as_array",
    "as_mono",
    "load",
    "probe",
    "read_bytes",
    "to_mono",
    "resample",
    "frame_power",
    "frame_energy_db",
    "to_pcm16",
    "from_pcm16",
    "wav_bytes",
    "data_url",
    "parse_data_url",
    "mime_for",
    "sniff_container",
    "ALLOWED_MIME",
    "MIME_CONTAINERS",
    "WAV_SUBTYPES",
]

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, io.IOBase, tuple]

#: MIME types the enrollment API accepts in a data URL and the container each label stands for
#: (§2.1, §2.4 "Format"), defined in :mod:`qvtools.spec`. The local service refuses content that does not
#: match its label (as :func:`sniff_container` names it).
ALLOWED_MIME = spec.ALLOWED_MIME
MIME_CONTAINERS = spec.MIME_CONTAINERS
#: Uncompressed WAV sample formats (soundfile subtypes). SEED §2.4 documents 16-bit; the other linear
#: PCM/float widths decode to at most 4x their size as float32. Compressed WAV codecs (ADPCM, GSM, …) are not.
WAV_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE")


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a recording, before decoding it all."""

    container: str  # "wav", "flac", "mp3", "m4a", "ogg", "array", ...
    codec: str  # soundfile subtype ("PCM_16", "FLOAT", "MPEG_LAYER_III") or the PyAV codec name ("aac")
    sample_rate: int
    channels: int
    duration_s: float
    size_bytes: int | None  # None for in-memory arrays
    video_streams: int = 0  # video tracks beside the audio (an MP4 film, a cover-art stream)

    @property
    def frames(self) -> int:
        """Sample frames per channel the header announces (0 when the duration is unknown)."""
        d = self.duration_s
        return int(round(d * self.sample_rate)) if d == d and d > 0 else 0

    @property
    def mime(self) -> str | None:
        return mime_for(self)


def mime_for(info: AudioInfo) -> str | None:
    """The enrollment MIME type for a container, or None when the API does not take it."""
    if info.container == "wav":
        return "audio/wav"
    if info.container == "mp3":
        return "audio/mpeg"
    if info.container in ("m4a", "mp4"):
        return "audio/mp4"
    return None


def sniff_container(data: bytes) -> str | None:
    """The container named by the first bytes (magic numbers), never by a label or a file name.

    ``wav`` (RIFF/RIFX/RF64 … WAVE), ``mp3`` (ID3 tag or an MPEG layer III frame), ``aac`` (ADTS),
    ``m4a`` (ISO-BMFF ``ftyp``: MP4/M4A/MOV), ``flac``, ``ogg``, ``aiff``, ``caf``; None when unknown.
    """
    head = bytes(data[:16])
    if len(head) < 4:
        return None
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"caff":
        return "caf"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3":
        return "mp3"
    if head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x3
        if layer == 0 and head[1] & 0xF0 == 0xF0:
            return "aac"  # ADTS: MPEG sync with layer bits 00
        if layer == 1:
            return "mp3"  # MPEG-1/2/2.5 layer III
        return "mpeg"  # layer I/II
    return None


def read_bytes(src: AudioSource) -> bytes | None:
    """The encoded bytes of a source (None for an in-memory array)."""
    if isinstance(src, tuple):
        return None
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise InvalidAudio(f"no such audio file: {path}")
        return path.read_bytes()
    if hasattr(src, "read"):
        pos = src.tell() if hasattr(src, "tell") else None
        data = src.read()
        if pos is not None and hasattr(src, "seek"):
            src.seek(pos)
        return bytes(data)
    raise TypeError(f"cannot read audio from {type(src).__name__}; pass a path, bytes, a file object or (samples, rate)")


def _sf_container(fmt: str) -> str:
    return {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff",
            "RF64": "wav"}.get(fmt.upper(), fmt.lower())


def _probe_av(data: bytes) -> AudioInfo:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise InvalidAudio("the file holds no audio stream")
            st = streams[0]
            video = sum(1 for s in container.streams if s.type == "video")
            ctx = st.codec_context
            if st.duration is not None and st.time_base is not None:
                duration = float(st.duration * st.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            else:
                duration = float("nan")
            fmt = container.format.name
            name = "m4a" if "mp4" in fmt or "m4a" in fmt or "mov" in fmt else fmt.split(",")[0]
            return AudioInfo(name, ctx.name, int(ctx.sample_rate), int(ctx.channels), duration, len(data), video)
    except InvalidAudio:
        raise
    except Exception as exc:  # PyAV raises many types (av.error.InvalidDataError, ...)
        raise InvalidAudio(f"cannot decode audio: {exc}") from None


def probe(src: AudioSource) -> AudioInfo:
    """Container, codec, rate, channels and duration without decoding the whole file."""
    if isinstance(src, tuple):
        x, sr = _check_tuple(src)
        return AudioInfo("array", "FLOAT", sr, 1 if x.ndim == 1 else x.shape[1], len(x) / sr, None)
    data = read_bytes(src)
    if not data:
        raise InvalidAudio("the audio is empty (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
        return AudioInfo(_sf_container(info.format), info.subtype, int(info.samplerate), int(info.channels),
                         info.frames / info.samplerate, len(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _probe_av(data)


def _check_tuple(src) -> tuple[np.ndarray, int]:
    if len(src) != 2:
        raise TypeError("an in-memory audio source is a (samples, sample_rate) tuple")
    return as_array(*src)


def as_array(x, sr) -> tuple[np.ndarray, int]:
    """Validate in-memory samples: 1-D or ``(n, channels)``, a positive rate; integer PCM is scaled
    to float32 in [-1, 1]. Raises :class:`InvalidAudio` with what was wrong."""
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise InvalidAudio(f"samples must be 1-D or (n, channels), got shape {x.shape}")
    if int(sr) <= 0:
        raise InvalidAudio(f"sample rate must be positive, got {sr}")
    if np.issubdtype(x.dtype, np.integer):
        x = from_pcm16(x.astype(np.int16)) if x.dtype == np.int16 else x.astype(np.float32) / np.iinfo(x.dtype).max
    return x.astype(np.float32, copy=False), int(sr)


def as_mono(x, sr, sample_rate: int | None = None) -> np.ndarray:
    """Validated mono float32 samples (NaN/inf zeroed), resampled to ``sample_rate`` when given."""
    x, sr = as_array(x, sr)
    x = np.nan_to_num(to_mono(x))
    if sample_rate is not None and int(sample_rate) != sr:
        x = resample(x, sr, int(sample_rate))
    return x


def _decode_av(data: bytes, limit_s: float | None = None) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise InvalidAudio("the file holds no audio stream")
            channels = stream.codec_context.channels or 1
            rate = stream.codec_context.sample_rate
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
            chunks = []
            wanted = None if limit_s is None else int(limit_s * rate) + 1
            got = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, 1 if channels == 1 else 2))
                    got += len(chunks[-1])
                if wanted is not None and got >= wanted:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, 1 if channels == 1 else 2))
    except InvalidAudio:
        raise
    except Exception as exc:
        raise InvalidAudio(f"cannot decode audio: {exc}") from None
    if not chunks:
        raise InvalidAudio("the audio stream decoded to no samples")
    x = np.concatenate(chunks).astype(np.float32)
    if limit_s is not None:
        x = x[:int(limit_s * rate) + 1]
    return (x[:, 0] if x.shape[1] == 1 else x), int(rate)


def load(src: AudioSource, *, mono: bool = False, sample_rate: int | None = None,
         limit_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode audio to float32 in [-1, 1].

    WAV/FLAC/OGG/MP3 go through libsndfile; M4A/AAC (and anything libsndfile
    refuses) through PyAV. ``mono`` averages channels; ``sample_rate`` resamples.
    ``limit_s`` stops decoding one sample past that many seconds, so a caller enforcing a
    duration limit sees ``len(x) > limit_s * sr`` without decoding (or holding) the rest.
    """
    if isinstance(src, tuple):
        x, sr = _check_tuple(src)
    else:
        data = read_bytes(src)
        if not data:
            raise InvalidAudio("the audio is empty (0 bytes)")
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                sr = f.samplerate
                frames = -1 if limit_s is None else int(limit_s * sr) + 1
                x = f.read(frames=frames, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            x, sr = _decode_av(data, limit_s)
        if x.size == 0:
            raise InvalidAudio("the audio holds no samples")
    if mono:
        x = to_mono(x)
    if sample_rate is not None and int(sample_rate) != sr:
        x = resample(x, sr, int(sample_rate))
        sr = int(sample_rate)
    return x, int(sr)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of ``(n, ch)`` audio; 1-D input is returned as is."""
    x = np.asarray(x, dtype=np.float32)
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ") -> np.ndarray:
    """High-quality resampling (libsoxr) of 1-D or ``(n, ch)`` float audio."""
    import soxr

    x = np.asarray(x, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return x
    return soxr.resample(x, int(sr_in), int(sr_out), quality=quality).astype(np.float32, copy=False)


def frame_power(x: np.ndarray, frame: int, hop: int | None = None, *, n_frames: int | None = None,
                starts=None) -> np.ndarray:
    """Mean square (power) of frames of 1-D audio, in float64: the one frame-energy implementation
    (issue 12; used by :mod:`qvtools.preflight`, :mod:`qvtools.metrics` and :mod:`qvtools.server.voice`).

    Frame ``i`` covers ``x[s_i : s_i + frame]``; samples outside ``x`` count as zeros. ``s_i`` is
    ``starts[i]`` (integer sample positions, may be negative) when given, else ``i * hop``
    (``hop`` defaults to ``frame``). ``n_frames`` defaults to the frames that fit inside ``x``; an ``x``
    shorter than one frame then gives one value, the power of all its samples (none when empty)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    frame = int(frame)
    if frame <= 0:
        raise ValueError(f"frame must be positive, got {frame}")
    if starts is not None:
        st = np.asarray(starts, dtype=np.int64).reshape(-1)
        if st.size == 0:
            return np.zeros(0)
        lo = min(0, int(st.min()))
        hi = max(a.shape[0], int(st.max()) + frame)
        padded = np.concatenate([np.zeros(-lo), a, np.zeros(hi - a.shape[0])])
        fr = padded[(st - lo)[:, None] + np.arange(frame)[None, :]]
        return np.mean(fr * fr, axis=1)
    hop = frame if hop is None else int(hop)
    if hop <= 0:
        raise ValueError(f"hop must be positive, got {hop}")
    if n_frames is None:
        if a.shape[0] < frame:  # shorter than one frame: its own power, one value (none when empty)
            return np.array([np.mean(a * a)]) if a.size else np.zeros(0)
        n_frames = (a.shape[0] - frame) // hop + 1
    n_frames = int(n_frames)
    if n_frames <= 0:
        return np.zeros(0)
    need = (n_frames - 1) * hop + frame
    if a.shape[0] < need:
        a = np.concatenate([a, np.zeros(need - a.shape[0])])
    if hop == frame:
        fr = a[:need].reshape(n_frames, frame)
        return np.mean(fr * fr, axis=1)
    return np.lib.stride_tricks.sliding_window_view(a[:need] * a[:need], frame)[::hop].mean(axis=1)


def frame_energy_db(x: np.ndarray, frame: int, hop: int | None = None, *, n_frames: int | None = None,
                    starts=None, eps: float = 1e-12) -> np.ndarray:
    """``10 * log10(frame_power + eps)`` per frame (see :func:`frame_power`); ``eps`` keeps digital
    silence finite (1e-12: -120 dB, the :data:`qvtools.metrics.FLOOR_DB` floor)."""
    return 10.0 * np.log10(frame_power(x, frame, hop, n_frames=n_frames, starts=starts) + eps)


def to_pcm16(x: np.ndarray) -> bytes:
    """Float audio to little-endian signed 16-bit PCM bytes (clipped to [-1, 1])."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def from_pcm16(data) -> np.ndarray:
    """PCM16 little-endian bytes (or an int16 array) to float32 in [-1, 1]."""
    if isinstance(data, np.ndarray):
        arr = data.astype(np.int16, copy=False)
    else:
        buf = bytes(data)
        if len(buf) % 2:
            raise InvalidAudio(f"PCM16 data must have an even number of bytes, got {len(buf)}")
        arr = np.frombuffer(buf, dtype="<i2")
    return (arr.astype(np.float32) / 32768.0).astype(np.float32)


def wav_bytes(x: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode audio as a WAV file in memory (16-bit PCM by default)."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), int(sample_rate), format="WAV", subtype=subtype)
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>`` as the enrollment API expects (§2.1)."""
    if mime not in ALLOWED_MIME:
        raise InvalidAudio(f"MIME type {mime!r} is not accepted; use one of {', '.join(ALLOWED_MIME)}")
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def parse_data_url(url: str) -> tuple[str, bytes]:
    """Split a ``data:<mime>;base64,<payload>`` URL into ``(mime, bytes)``; ValueError when malformed."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError("not a data URL")
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise ValueError("a data URL must look like data:<mime>;base64,<data>")
    mime = head[len("data:"):-len(";base64")].strip().lower()
    try:
        raw = base64.b64decode(payload, validate=True)
    except (ValueError, base64.binascii.Error):
        raise ValueError("the data URL payload is not valid base64") from None
    return mime, raw
