"""Pure metric functions: latency from a :class:`~qvtools.realtime.turn.Turn`, audio and text metrics.

Everything here takes plain values (arrays + sample rate, strings, a ``Turn``) and returns numbers
or flat dicts whose keys carry their unit (``ttfa_ms``, ``duration_s``, ``loudness_lufs``); the
column schema is documented in :mod:`qvtools.results`. Nothing here reads files, opens sockets or
prints. Missing information gives ``NaN`` (one convention for the whole package: also
:meth:`qvtools.realtime.turn.Turn.latency`, which returns :func:`latencies`), never an exception; *bad* input (a 3-D array, a
non-positive sample rate, non-finite samples) raises :class:`~qvtools.errors.InvalidAudio`.

Optional heavy parts are imported lazily: pyloudnorm (BS.1770 loudness), pyworld (F0),
:mod:`qvtools.speaker` (speaker embeddings) and :mod:`qvtools.asr` (Whisper tiny.en). A missing one
raises ``ImportError`` when that metric is asked for; there is no silent fallback.

Levels: ``rms_dbfs`` and ``peak_dbfs`` are ``20*log10`` of the sample RMS / peak with full scale
= 1.0, so a full-scale sine is -3.01 dBFS RMS (no AES17 +3 dB correction). Level values are floored
at :data:`FLOOR_DB` (digital silence gives -120 dB, not ``-inf``).

The package, by concern (issue 19): :mod:`~qvtools.metrics.latency` (from a ``Turn``),
:mod:`~qvtools.metrics.audio` (levels, F0, speaker similarity, the bundle; its caches are guarded by one lock),
:mod:`~qvtools.metrics.text` (normalisation, WER / CER, intelligibility) and :mod:`~qvtools.metrics.frame`
(pandas helpers). Every public name is importable from here.
"""

from __future__ import annotations

from .audio import (_METERS, _REF_EMBEDDINGS, _REF_F0, F0_CEIL_HZ, F0_FLOOR_HZ, F0_SAMPLE_RATE, SNR_CAP_DB,
                    _reference_f0_median, audio_metrics, clear_caches, clipping_ratio, duration_s, f0_contour,
                    f0_ratio, f0_stats, loudness_lufs, peak_dbfs, rms_dbfs, silence_ratio, snr_db, speaker_similarity,
                    speech_snr)
from .base import FLOOR_DB, _mono
from .frame import ERROR_METRIC_LABELS, by_error_metric
from .latency import (END_OF_SPEECH_MARKS, EVENT_MARKS, LATENCY_NAMES, latencies, latency_metrics,
                      playback_underruns, usage_metrics)
from .text import (ERROR_METRICS, INTELLIGIBILITY_COLUMNS, TRANSCRIPT_MISMATCH_THRESHOLD, cer, edit_distance,
                   error_rate, intelligibility, normalize_for_language, normalize_text, number_to_words,
                   score_transcript, transcript_mismatch, wer)

__all__ = [
    "EVENT_MARKS",
    "FLOOR_DB",
    "END_OF_SPEECH_MARKS",
    "LATENCY_NAMES",
    "INTELLIGIBILITY_COLUMNS",
    "latencies",
    "latency_metrics",
    "playback_underruns",
    "usage_metrics",
    "duration_s",
    "rms_dbfs",
    "peak_dbfs",
    "clipping_ratio",
    "loudness_lufs",
    "snr_db",
    "speech_snr",
    "SNR_CAP_DB",
    "silence_ratio",
    "f0_contour",
    "f0_stats",
    "f0_ratio",
    "speaker_similarity",
    "normalize_text",
    "number_to_words",
    "edit_distance",
    "wer",
    "cer",
    "normalize_for_language",
    "error_rate",
    "score_transcript",
    "by_error_metric",
    "ERROR_METRIC_LABELS",
    "transcript_mismatch",
    "TRANSCRIPT_MISMATCH_THRESHOLD",
    "ERROR_METRICS",
    "intelligibility",
    "audio_metrics",
    "clear_caches",
    "F0_SAMPLE_RATE",
    "F0_FLOOR_HZ",
    "F0_CEIL_HZ",
]
