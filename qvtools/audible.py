"""Latency to audible speech: when the listener first hears the reply *speak*, not when its first audio arrives.

Speech-to-speech services may start a reply with silence (a public voice-agent benchmark measured
75-341 ms of leading silence), so ``ttfa_ms`` (end of user speech -> first ``response.audio.delta``)
flatters the service that pads more. Here the reply audio *as received* is run through Silero VAD
(:mod:`qvtools.vad`) to find its first speech sample, and the chunk arrival times
(``Turn.audio_chunks``) say when that sample is played:

- a player starts the first chunk when it arrives and plays continuously; a chunk that arrives after
  the queued audio ran out starts when it arrives (the player of :func:`qvtools.metrics.playback_underruns`,
  no jitter buffer), so sample ``i`` of chunk ``k`` is heard at ``start_k + (i - offset_k) / sr``;
- ``reply_leading_silence_ms``: ms of reply audio before the first speech sample (audio time; the
  same whatever the network did);
- ``ttfa_audible_ms``: end of user speech (the turn's ``latency_origin``, as ``ttfa_ms``) -> the first
  speech sample is heard = ``ttfa_ms`` + (play time of that sample - arrival of the first chunk).
  With chunks arriving faster than real time this is ``ttfa_ms + reply_leading_silence_ms``; an
  underrun inside the leading silence adds to it.

The speech onset is the start of the first Silero speech region (threshold 0.5, regions shorter than
250 ms ignored, no padding), so the figure has the VAD's 32 ms frame resolution. Both are NaN when the
reply holds no speech the VAD accepts, or has no chunk times.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .catalog import DEFAULT_OUTPUT_SAMPLE_RATE

__all__ = ["AUDIBLE_COLUMNS", "speech_onset_s", "play_time_s", "audible_latency"]

log = logging.getLogger(__name__)

#: The columns :func:`audible_latency` returns (qvtools.results schema).
AUDIBLE_COLUMNS = ("ttfa_audible_ms", "reply_leading_silence_ms")

NAN = float("nan")


def speech_onset_s(x, sr: int) -> float:
    """Seconds from the start of ``x`` to its first speech (Silero VAD region start, no padding); NaN
    when no speech region is found."""
    from . import vad

    a = np.asarray(x)
    if a.shape[0] == 0:
        return NAN
    segs = vad.speech_segments(a, sr, pad_ms=0)
    return float(segs[0][0]) if segs else NAN


def play_time_s(chunks, sample_rate: int, sample_index: int) -> float:
    """When a player fed by ``chunks`` (``(receive_time_s, n_samples)``, arrival order) plays sample
    ``sample_index`` of the concatenated reply, in the clock of the receive times. NaN when the chunks
    do not reach that sample."""
    sr = int(sample_rate)
    play_end = -math.inf
    offset = 0
    for t, n in sorted((float(t), int(n)) for t, n in chunks):
        start = max(t, play_end)  # an underrun: the chunk starts when it arrives
        if sample_index < offset + n:
            return start + (sample_index - offset) / sr
        play_end = start + n / sr
        offset += n
    return NAN


def audible_latency(turn, ttfa_ms: float | None = None) -> dict:
    """``{"ttfa_audible_ms", "reply_leading_silence_ms"}`` of a turn (module docstring).

    ``ttfa_ms``: the turn's ``ttfa_ms`` when already computed (else :func:`qvtools.metrics.latencies`).
    """
    out = dict.fromkeys(AUDIBLE_COLUMNS, NAN)
    audio = getattr(turn, "audio", None)
    sr = int(getattr(turn, "sample_rate", None) or DEFAULT_OUTPUT_SAMPLE_RATE)
    if audio is None or np.asarray(audio).shape[0] == 0:
        return out
    onset = speech_onset_s(audio, sr)
    if not math.isfinite(onset):
        return out
    out["reply_leading_silence_ms"] = onset * 1000.0
    chunks = list(getattr(turn, "audio_chunks", None) or ())
    if ttfa_ms is None:
        from .metrics import latencies

        ttfa_ms = latencies(turn)["ttfa_ms"]
    if not chunks or ttfa_ms is None or not math.isfinite(float(ttfa_ms)):
        return out
    first_arrival = min(float(t) for t, _ in chunks)
    heard = play_time_s(chunks, sr, int(round(onset * sr)))
    if math.isfinite(heard):
        out["ttfa_audible_ms"] = float(ttfa_ms) + (heard - first_arrival) * 1000.0
    return out
