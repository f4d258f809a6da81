"""Scoring one turn: latency, usage and audio metrics (:func:`_score`), and the latency provenance columns
(:func:`_provenance`: what the latencies start at, whether the VAD silence wait is inside them)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

__all__ = ["DEFAULT_METRICS"]

#: Audio metrics computed for each reply (names understood by :func:`run_turn`).
DEFAULT_METRICS = ("speaker_similarity", "intelligibility", "f0_ratio", "loudness", "naturalness")


def _reference_audio(src):
    """The reference recording (a path or its bytes), mono."""
    from ..audio import load

    return load(src if isinstance(src, (bytes, bytearray, tuple)) else str(src), mono=True)


def _provenance(turn, turn_detection, silence_ms, session_cfg=None) -> dict:
    """What the turn's latencies start at and whether the VAD silence wait is inside them
    (qvtools.results: latency_origin, turn_detection, vad_silence_ms, vad_window_included)."""
    from ..metrics import END_OF_SPEECH_MARKS

    marks = getattr(turn, "marks", None) or {}
    if "response_create_sent" in marks and "first_audio_sent" not in marks:
        origin = "response_create_sent"  # a text turn: send_text marks speech end at response.create
    else:
        origin = next((m for m in END_OF_SPEECH_MARKS if m in marks), None)
    mode = "manual" if turn_detection is None or turn_detection == "manual" else str(turn_detection)
    if silence_ms is None and mode != "manual":
        td = (session_cfg or {}).get("turn_detection")
        silence_ms = td.get("silence_duration_ms") if isinstance(td, dict) else None
    t0, t_req = marks.get(origin), marks.get("response_create_sent")
    # manual / text turns: how long after the latency origin the client asked for the response (the server's
    # wait starts there; qvtools.server.latency replays response_created_ms minus this)
    request_ms = (t_req - t0) * 1000.0 if mode == "manual" and t0 is not None and t_req is not None else None
    return {"latency_origin": origin, "turn_detection": mode,
            "vad_silence_ms": float(silence_ms) if mode != "manual" and silence_ms is not None else None,
            "vad_window_included": bool(mode != "manual" and origin == "speech_end_sent"),
            "response_create_sent_ms": request_ms}


def _as_saved(turn):
    """The turn with its reply as :meth:`Turn.save` writes it and :func:`replay` reads it back
    (PCM16 WAV bytes decoded again), computed in memory so a worker writes nothing."""
    from ..audio import load, wav_bytes

    audio = getattr(turn, "audio", None)
    if audio is None or len(audio) == 0:
        return turn
    x, sr = load(wav_bytes(audio, turn.sample_rate), mono=True)
    return dataclasses.replace(turn, audio=x, sample_rate=int(sr))


def _score(turn, wanted: Sequence[str], reference=None) -> dict:
    """Latency, usage and audio metrics of a turn; ``reference`` is the voice's recording (path or bytes)."""
    from .. import metrics

    from ..audible import audible_latency

    out = dict(metrics.latency_metrics(turn))
    out.update(metrics.usage_metrics(getattr(turn, "usage", None)))
    audio = getattr(turn, "audio", None)
    if audio is None or len(audio) == 0:
        return out
    out.update(audible_latency(turn, out.get("ttfa_ms")))  # first audible speech (qvtools.audible)
    want = set(wanted)
    if want & {"speaker_similarity", "f0_ratio", "naturalness"} and reference is not None:
        reference = _reference_audio(reference)
    else:
        reference = None
    # intelligibility: the reply is transcribed and scored against what the model said it said
    # (the assistant transcript), so WER measures the synthesis, not the dialogue.
    out.update(metrics.audio_metrics(turn.audio, turn.sample_rate, reference=reference,
                                     expected_text=turn.assistant_transcript,
                                     asr="intelligibility" in want,
                                     speaker="speaker_similarity" in want))
    if "naturalness" in want:  # DNSMOS of the reply and of its reference (qvtools.naturalness)
        from ..naturalness import mos_columns

        out.update(mos_columns(turn.audio, turn.sample_rate, reference))
    return out
