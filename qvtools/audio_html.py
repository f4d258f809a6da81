"""The one ``<audio controls>`` element of qvtools: a clip embedded as a base64 data URL, never normalised
(the report and :func:`qvtools.widgets.audio_player` both use :func:`audio_tag`; ``qvtools.report`` re-exports
it)."""

from __future__ import annotations

import base64
import html
import os

import numpy as np

__all__ = ["audio_tag"]

_MIME_BY_CONTAINER = {"wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4", "mp4": "audio/mp4",
                      "ogg": "audio/ogg", "flac": "audio/flac"}


def _encoded_audio(src, sample_rate: int | None) -> tuple[bytes, str]:
    """Encoded bytes + MIME type of a clip. Arrays become 16-bit WAV, unscaled (clipped only)."""
    from . import audio as qaudio
    from .errors import InvalidAudio

    if isinstance(src, tuple) and len(src) == 2 and sample_rate is None:
        src, sample_rate = src
    if isinstance(src, np.ndarray) or (isinstance(src, list) and src and not isinstance(src[0], (bytes, str))):
        if sample_rate is None:
            raise ValueError("audio_player: an array needs sample_rate=... (e.g. 24000)")
        x = np.asarray(src)
        if x.size == 0:
            raise InvalidAudio("audio_player: the array holds no samples")
        if np.issubdtype(x.dtype, np.integer):
            x, _ = qaudio.load((x, int(sample_rate)))
        # to_pcm16 clips to [-1, 1] and never rescales: the player keeps the recorded loudness.
        return qaudio.wav_bytes(np.asarray(x, dtype=np.float32), int(sample_rate), "PCM_16"), "audio/wav"
    if isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(src, "read"):
        data = qaudio.read_bytes(src)
    else:
        raise TypeError(f"audio_player: cannot play {type(src).__name__}; pass WAV bytes, a path, "
                        "or a numpy array with sample_rate")
    if not data:
        raise InvalidAudio("audio_player: the audio is empty (0 bytes)")
    mime = _MIME_BY_CONTAINER.get(qaudio.probe(data).container)
    if mime is None:  # a container browsers may not play: decode and re-encode as 16-bit WAV, unscaled
        x, sr = qaudio.load(data)
        return qaudio.wav_bytes(x, sr, "PCM_16"), "audio/wav"
    return data, mime


def audio_tag(src, sample_rate: int | None = None, *, title: str | None = None, max_s: float | None = None,
              rate: int | None = None) -> str:
    """The one ``<audio controls>`` builder (this report and :func:`qvtools.widgets.audio_player`).

    ``src``: encoded bytes (WAV/MP3/M4A/OGG/FLAC), a path, a file object, ``(samples, sr)``, or an
    array with ``sample_rate``. The clip is embedded as a base64 data URL and is NOT normalised
    (``IPython.display.Audio`` rescales to full scale, which would hide the loudness differences we
    measure): encoded bytes go in untouched (a container browsers may not play is re-encoded as 16-bit
    WAV), arrays as 16-bit PCM, clipped to [-1, 1] only. ``max_s`` keeps the first ``max_s`` seconds
    and ``rate`` resamples to that rate (mono 16-bit WAV then); the report uses both to keep
    ``report.html`` a few MB.
    """
    data, mime = _encoded_audio(src, sample_rate)
    if max_s is not None or rate:
        from .audio import load, resample, wav_bytes

        x, sr = load(data, mono=True)
        if max_s is not None:
            x = x[: int(max_s * sr)]
        if rate and sr != rate:
            x, sr = resample(x, sr, rate), rate
        data, mime = wav_bytes(np.asarray(x, dtype=np.float32), sr, "PCM_16"), "audio/wav"
    b64 = base64.b64encode(data).decode("ascii")
    title_attr = f' title="{html.escape(title, quote=True)}"' if title else ""
    return (f'<audio controls preload="metadata"{title_attr} '
            f'style="height:32px;max-width:220px" src="data:{mime};base64,{b64}"></audio>')
