"""Latency and usage from a :class:`~qvtools.realtime.turn.Turn`: the turn marks, :func:`latencies`,
:func:`latency_metrics` (plus chunk delivery and playback underruns) and :func:`usage_metrics` (tokens)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..catalog import DEFAULT_OUTPUT_SAMPLE_RATE
from .base import NAN, _check_sr

__all__ = ["EVENT_MARKS", "END_OF_SPEECH_MARKS", "LATENCY_NAMES", "latencies", "latency_metrics",
           "playback_underruns", "usage_metrics"]

#: Marks tried, in order, for "end of user speech" (docs/architecture.md, Turn contract:
#: "End of user speech = last_audio_sent of the speech part ... mark speech_end_sent").
END_OF_SPEECH_MARKS = ("speech_end_sent", "last_audio_sent")

# Event types that stand in for a missing mark (protocol reference §5 server events).
#: Realtime event type -> the turn mark its first occurrence sets (``Turn.marks``): the one table (issue 19);
#: :mod:`qvtools.realtime.turn` records marks from it and :data:`_MARK_EVENTS` (its inverse) is derived.
EVENT_MARKS = {
    "input_audio_buffer.speech_started": "speech_started",
    "input_audio_buffer.speech_stopped": "speech_stopped",
    "input_audio_buffer.committed": "committed",
    "conversation.item.input_audio_transcription.completed": "transcript_done",
    "response.created": "response_created",
    "response.audio_transcript.delta": "first_text_delta",
    "response.text.delta": "first_text_delta",
    "response.audio.delta": "first_audio_delta",
    "response.audio.done": "audio_done",
    "response.done": "response_done",
}
#: Mark name -> the event types that set it (a turn without marks falls back to its events).
_MARK_EVENTS = {mark: tuple(t for t, m in EVENT_MARKS.items() if m == mark)
                for mark in dict.fromkeys(EVENT_MARKS.values())}


def _mark(turn, name: str) -> float:
    marks = getattr(turn, "marks", None) or {}
    t = marks.get(name)
    if t is not None:
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = None
        if t is not None and np.isfinite(t):
            return t
    for ev in getattr(turn, "events", None) or ():
        if getattr(ev, "type", None) in _MARK_EVENTS.get(name, ()):
            return float(ev.t)
    return NAN


def _ms(t1: float, t0: float) -> float:
    return (t1 - t0) * 1000.0 if np.isfinite(t1) and np.isfinite(t0) else NAN


def playback_underruns(chunks, sample_rate: int, *, jitter_buffer_ms: float = 0.0) -> tuple[int, float]:
    """Simulate a player fed by ``chunks`` and return ``(underrun_count, underrun_ms)``.

    ``chunks`` is a list of ``(receive_time_s, n_samples)``. The player starts playing the first
    chunk ``jitter_buffer_ms`` after it arrives and then plays continuously; whenever the next chunk
    arrives after the audio queued so far has run out, the listener hears a gap (an underrun) that
    lasts until that chunk arrives. Chunks are taken in arrival order.
    """
    sr = _check_sr(sample_rate)
    if not chunks:
        return 0, NAN
    items = sorted((float(t), int(n)) for t, n in chunks)
    t0, n0 = items[0]
    play_end = t0 + jitter_buffer_ms / 1000.0 + n0 / sr
    count, total = 0, 0.0
    for t, n in items[1:]:
        if t > play_end + 1e-9:
            count += 1
            total += t - play_end
            play_end = t
        play_end += n / sr
    return count, total * 1000.0


#: The latency names (ms) of a turn, shared by :meth:`Turn.latency` and :func:`latency_metrics`
#: (issue 12: one vocabulary). "End" is the first of :data:`END_OF_SPEECH_MARKS` present.
LATENCY_NAMES = ("ttfa_ms", "ttft_ms", "ttfa_created_ms", "ttft_created_ms", "response_created_ms",
                 "speech_stopped_ms", "e2e_ms")


def latencies(turn) -> dict[str, float]:
    """The :data:`LATENCY_NAMES` of a turn in ms, NaN where a mark is missing:

    - ``ttfa_ms`` / ``ttft_ms``: end of user speech -> first ``response.audio.delta`` / first
      transcript (or text) delta;
    - ``ttfa_created_ms`` / ``ttft_created_ms``: the same from ``response.created`` (what the SDK's
      own metrics measure);
    - ``response_created_ms``: end of user speech -> ``response.created``;
    - ``speech_stopped_ms``: end of user speech -> ``input_audio_buffer.speech_stopped``;
    - ``e2e_ms``: end of user speech -> ``response.done``.
    """
    end = NAN
    for name in END_OF_SPEECH_MARKS:
        end = _mark(turn, name)
        if np.isfinite(end):
            break
    created = _mark(turn, "response_created")
    first_audio = _mark(turn, "first_audio_delta")
    first_text = _mark(turn, "first_text_delta")
    return {
        "ttfa_ms": _ms(first_audio, end),
        "ttft_ms": _ms(first_text, end),
        "ttfa_created_ms": _ms(first_audio, created),
        "ttft_created_ms": _ms(first_text, created),
        "response_created_ms": _ms(created, end),
        "speech_stopped_ms": _ms(_mark(turn, "speech_stopped"), end),
        "e2e_ms": _ms(_mark(turn, "response_done"), end),
    }


def latency_metrics(turn, *, jitter_buffer_ms: float = 0.0) -> dict[str, float]:
    """Latency and delivery metrics of one realtime turn (the ``Turn`` contract in docs/architecture.md).

    Reference point "end of user speech" is the mark ``speech_end_sent`` (fallback ``last_audio_sent``).
    A mark that is missing falls back to the first matching received event; if that is missing too the
    metric is ``NaN``. Returned keys:

    - the :data:`LATENCY_NAMES` of :func:`latencies` (``ttfa_ms`` ... ``e2e_ms``)
    - ``reply_duration_s``: reply audio length; ``chunk_count``: audio deltas received
    - ``delivery_rtf``: reply audio seconds per second of receiving (first to last chunk); > 1 is
      faster than real time; NaN with fewer than two chunks
    - ``gap_p95_ms`` / ``gap_max_ms``: inter-chunk arrival gaps
    - ``underrun_count`` / ``underrun_ms``: audible gaps of a player starting at the first chunk
      (+ ``jitter_buffer_ms``), see :func:`playback_underruns`
    """
    sr = getattr(turn, "sample_rate", None) or DEFAULT_OUTPUT_SAMPLE_RATE
    chunks = sorted((float(t), int(n)) for t, n in (getattr(turn, "audio_chunks", None) or ()))
    audio = getattr(turn, "audio", None)
    n_audio = int(np.asarray(audio).shape[0]) if audio is not None and np.asarray(audio).ndim >= 1 else 0
    if n_audio == 0 and chunks:
        n_audio = sum(n for _, n in chunks)
    reply_s = n_audio / sr

    if len(chunks) >= 2:
        times = np.array([t for t, _ in chunks])
        gaps_ms = np.diff(times) * 1000.0
        span = times[-1] - times[0]
        chunk_s = sum(n for _, n in chunks) / sr
        rtf = chunk_s / span if span > 0 else NAN
        gap_p95, gap_max = float(np.percentile(gaps_ms, 95)), float(gaps_ms.max())
    else:
        rtf = gap_p95 = gap_max = NAN
    under_n, under_ms = playback_underruns(chunks, sr, jitter_buffer_ms=jitter_buffer_ms)

    return {
        **latencies(turn),
        "reply_duration_s": float(reply_s),
        "delivery_rtf": float(rtf),
        "chunk_count": len(chunks),
        "gap_p95_ms": gap_p95,
        "gap_max_ms": gap_max,
        "underrun_count": under_n if chunks else NAN,
        "underrun_ms": under_ms,
    }


def usage_metrics(usage: Mapping | None) -> dict[str, float]:
    """Token counts of ``response.done.response.usage`` (protocol reference §5) as flat columns."""
    u = usage or {}
    inp = u.get("input_tokens_details") or {}
    out = u.get("output_tokens_details") or {}

    def num(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else NAN

    return {
        "input_tokens": num(u.get("input_tokens")),
        "output_tokens": num(u.get("output_tokens")),
        "total_tokens": num(u.get("total_tokens")),
        "input_text_tokens": num(inp.get("text_tokens")),
        "input_audio_tokens": num(inp.get("audio_tokens")),
        "output_text_tokens": num(out.get("text_tokens")),
        "output_audio_tokens": num(out.get("audio_tokens")),
    }
