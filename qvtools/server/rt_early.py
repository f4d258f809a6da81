"""Early language detection for a realtime connection (issue 22 item 4).

A session whose language nobody named (no session language, no voice enrollment language, more than one
candidate) used to learn it only from the ASR of its first turn, after ``speech_stopped``: the reply's opener
waited for that ASR, and sessions that started together queued their detections one behind the other (the
capacity criterion of ``benchmarks/bench_load.py`` failed at 8 such sessions). Here, once the first utterance has
lasted ``ServiceConfig.realtime_early_language_s`` (a shorter one: once the silence after it began), Whisper
base detects the language of that audio, first in the ASR lane (:mod:`qvtools.server.asr_lane`), while the user
goes on speaking (or the VAD waits out its silence window); the result is the turn's expected language
(:func:`qvtools.server.turn_language.expected_language` step 3b), so the opener is made ahead in it, as for a
named language. The turn's own ASR still detects on the whole utterance for its transcript; what it finds is
the language of the later turns (:meth:`TurnState.heard`). When-to-run is decided by
:meth:`qvtools.server.rt_turns.TurnState.early_due` (no socket); this module only starts the job.
"""

from __future__ import annotations

import asyncio
import logging

from ..audio import from_pcm16, resample
from .asr_lane import EARLY
from .rt_state import REALTIME, get_speech

__all__ = ["start", "settled"]

log = logging.getLogger(__name__)


def start(conn) -> None:
    """After an append under server VAD: start the detection on ``conn`` (a realtime ``_Connection``) when it
    is due (:meth:`TurnState.early_due`), at most one per utterance."""
    seconds = float(conn.cfg.realtime_early_language_s)
    due = conn.turns.early_due(conn.input.speech_so_far(), seconds,
                               lambda: conn._expected_language(audio=True) is not None)
    if due is None:
        return
    item, start_ms, end_ms = due
    pcm = conn.input.slice_ms(start_ms, end_ms)
    if pcm:
        log.debug("session %s: detecting the language of %s early (%d ms of audio)", conn.session_id, item,
                  end_ms - start_ms)
        conn.turns.early_task = conn.spawn(_detect(conn, item, from_pcm16(pcm), conn.in_rate))


async def settled(conn) -> None:
    """Wait for the early detection in flight, if any (a response or a speculative reply about to decide its
    language: the detection is first in the ASR lane, so this is a short wait, and it spares the turn the wait
    for its whole transcription). Never raises but for the caller's own cancellation."""
    task = conn.turns.early_task
    if task is not None and not task.done():
        await asyncio.wait([task])


async def _detect(conn, item: str, x, rate: int) -> None:
    speech = get_speech(conn.app)
    x16 = resample(x, rate, 16000) if rate != 16000 else x
    try:
        lang = await conn.run_asr(EARLY, speech.detect_language, x16, conn.app[REALTIME].language_candidates,
                                  conn.cfg.realtime_asr_window)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # best effort: the turn's own ASR detects the language as before
        log.info("session %s: early language detection failed (%s)", conn.session_id, type(exc).__name__)
        return
    conn.turns.detected_early(item, lang)
    conn.turns.early_task = None
    log.debug("session %s: language detected early in %s: %s", conn.session_id, item, lang)
    if conn.turns.early_language is not None:
        conn.prepare_next_opener(speech, conn.turns.turn_index)  # the opener in that language, ahead
