"""Results tables: the column schema, ``to_frame(rows)``, summaries with bootstrap CIs, paired differences.

One row per realtime turn. Rows are flat dicts built by the experiment runner from the turn's
identifiers, :func:`qvtools.metrics.latency_metrics`, :func:`qvtools.metrics.usage_metrics` and
:func:`qvtools.metrics.audio_metrics`; :func:`to_frame` puts them into this schema (column order and
dtypes below; unknown columns are kept after these; missing values are ``NaN`` for numbers and
``<NA>`` for strings/booleans). Units are in the column names and the table below.

Latency provenance: every ``*_ms`` column measured "from end of user speech" starts at the client mark named
in ``latency_origin``; ``audio_pacing`` says whether the prompt was streamed at microphone pace or as fast as
possible, and ``turn_detection`` / ``vad_silence_ms`` / ``vad_window_included`` whether the server's VAD
silence wait is inside the figure (with server VAD it is: the server must hear ``silence_duration_ms`` of
silence before it answers; ``ttfa_created_ms`` / ``ttft_created_ms`` exclude it).

Token usage and cost: :func:`token_totals` sums the ``*_tokens`` columns per model; :func:`estimate_cost`
prices them with a table the USER supplies (:func:`load_prices`, format in :data:`PRICES_FORMAT`) -- no
price is written into qvtools.

Schema
------

| column | dtype | unit / meaning |
|---|---|---|
| `run_id` | string | experiment run identifier |
| `turn_id` | string | turn identifier, unique within a run |
| `voice_ref` | string | reference (enrollment) clip the voice was cloned from; pairing key |
| `voice` | string | voice name used in the session (cloned `qwen-omni-vc-*` or built-in) |
| `target_model` | string | realtime model, e.g. `qwen3.5-omni-plus-realtime` |
| `prompt_id` | string | user prompt identifier; pairing key |
| `repeat` | Int64 | repetition index of the same (voice_ref, prompt_id, model); pairing key |
| `status` | string | `completed` / `incomplete` / `failed` / `cancelled` |
| `error` | string | error message of a failed turn |
| `region` | string | `beijing` / `singapore` / `local` |
| `simulated` | boolean | True when the run used the local service: its latency and delivery figures (the columns of `SIMULATED_COLUMNS`) come from simulated profiles or a replayed run, not from DashScope |
| `latency_source` | string | where the service's delays came from: `measured` (the real service), or what the local service said in `session.created`: `simulated:<profile>` (e.g. `simulated:flash`), `replay:<run>/<file>` (a measured run replayed, `qvtools serve --latency-from`), `none` (no added delay) |
| `voice_fallback_mode` | boolean | the enrollment answered `fallback_mode: true`: a DEGRADED clone (§7.9); `<NA>` when the service did not say |
| `voice_fallback_reason` | string | the service's `fallback_reason` for a degraded clone |
| `latency_origin` | string | client mark every `*_ms` "end of user speech" figure starts at: `speech_end_sent` (last audio chunk holding speech sent, before any trailing silence), `last_audio_sent` or `response_create_sent` (text turns) |
| `audio_pacing` | string | how the prompt audio was sent: `realtime` (100 ms chunks at microphone pace) or `fast` (as fast as possible) |
| `turn_detection` | string | `server_vad` (the server ended the turn) or `manual` (client `commit` + `response.create`) |
| `vad_silence_ms` | float64 | ms, the server VAD `silence_duration_ms` in effect for the turn: the value requested, else the documented default of the model family (§4.2); NaN in manual mode |
| `vad_window_included` | boolean | True when the latencies from end of user speech include the server VAD silence window (server VAD + `speech_end_sent` origin) |
| `response_create_sent_ms` | float64 | ms, end of user speech (`latency_origin`) -> the client sent `response.create` (manual and text turns: the rest of the audio and the commit; 0 for text turns); NaN with server VAD |
| `session_id` | string | realtime session id |
| `response_id` | string | realtime response id |
| `user_transcript` | string | server transcript of the user audio |
| `assistant_transcript` | string | the model's transcript of its own reply |
| `ttfa_ms` | float64 | ms, end of user speech -> first `response.audio.delta` |
| `ttft_ms` | float64 | ms, end of user speech -> first text / transcript delta |
| `ttfa_created_ms` | float64 | ms, `response.created` -> first audio delta |
| `ttft_created_ms` | float64 | ms, `response.created` -> first text delta |
| `response_created_ms` | float64 | ms, end of user speech -> `response.created` |
| `speech_stopped_ms` | float64 | ms, end of user speech -> `input_audio_buffer.speech_stopped` (server VAD wait) |
| `e2e_ms` | float64 | ms, end of user speech -> `response.done` |
| `reply_duration_s` | float64 | s, reply audio length |
| `delivery_rtf` | float64 | reply audio s per s of receiving (first -> last chunk); > 1 faster than real time |
| `chunk_count` | Int64 | number of `response.audio.delta` chunks |
| `gap_p95_ms` | float64 | ms, 95th percentile inter-chunk arrival gap |
| `gap_max_ms` | float64 | ms, largest inter-chunk arrival gap |
| `underrun_count` | Int64 | audible gaps of a simulated player starting at the first chunk (+ jitter buffer) |
| `underrun_ms` | float64 | ms, total length of those gaps |
| `ttfa_audible_ms` | float64 | ms, end of user speech -> the first reply sample that is speech (Silero VAD on the reply as received) is played by a player fed at the chunk arrival times (`qvtools.audible`) |
| `reply_leading_silence_ms` | float64 | ms of reply audio before its first speech (Silero VAD; audio time) |
| `input_tokens` | Int64 | tokens, `usage.input_tokens` |
| `output_tokens` | Int64 | tokens, `usage.output_tokens` |
| `total_tokens` | Int64 | tokens, `usage.total_tokens` |
| `input_text_tokens` | Int64 | tokens, `usage.input_tokens_details.text_tokens` |
| `input_audio_tokens` | Int64 | tokens, `usage.input_tokens_details.audio_tokens` |
| `output_text_tokens` | Int64 | tokens, `usage.output_tokens_details.text_tokens` |
| `output_audio_tokens` | Int64 | tokens, `usage.output_tokens_details.audio_tokens` |
| `duration_s` | float64 | s, length of the scored clip |
| `rms_dbfs` | float64 | dBFS, RMS level (full-scale sine = -3.01) |
| `peak_dbfs` | float64 | dBFS, sample peak |
| `clipping_ratio` | float64 | fraction of samples at full scale (abs >= 0.999) |
| `loudness_lufs` | float64 | LUFS, integrated loudness (ITU-R BS.1770-4, pyloudnorm) |
| `snr_db` | float64 | dB, energy-based SNR estimate (quiet vs loud 20 ms frames) |
| `silence_ratio` | float64 | fraction of 20 ms frames below -50 dBFS |
| `f0_median_hz` | float64 | Hz, median F0 of voiced frames (WORLD DIO + StoneMask) |
| `f0_iqr_hz` | float64 | Hz, interquartile range of voiced F0 |
| `voiced_ratio` | float64 | fraction of F0 frames that are voiced |
| `ref_f0_median_hz` | float64 | Hz, median F0 of the reference clip |
| `f0_ratio` | float64 | `f0_median_hz / ref_f0_median_hz` |
| `speaker_similarity` | float64 | cosine similarity of speaker embeddings, reply vs reference (-1..1) |
| `speaker_model` | string | speaker embedding model name |
| `speaker_similarity_norm` | float64 | `speaker_similarity` s-normalised against the run's impostor cosines (other references + packaged sample voices; `qvtools.similarity`); 0 = impostor-like |
| `speaker_identified` | boolean | the reply is closer to its own reference than to every other reference of the run (closed-set identification); `<NA>` with one reference |
| `ref_ceiling_similarity` | float64 | cosine of the two halves of the row's reference recording (same speaker, same encoder): the ceiling, per voice |
| `similarity_encoder` | string | the speaker encoder behind the `speaker_similarity*` columns (never pool two) |
| `mos_sig` | float64 | DNSMOS P.835 SIG (speech signal, 1-5) of the reply (`qvtools.naturalness`) |
| `mos_bak` | float64 | DNSMOS P.835 BAK (background, 1-5) of the reply |
| `mos_ovrl` | float64 | DNSMOS P.835 OVRL (overall, 1-5) of the reply |
| `mos_p808` | float64 | DNSMOS P.808 MOS (1-5) of the reply |
| `ref_mos_ovrl` | float64 | DNSMOS P.835 OVRL of the reference recording |
| `mos_ovrl_delta` | float64 | `mos_ovrl - ref_mos_ovrl` (reply minus reference) |
| `mos_model` | string | the MOS model name (`qvtools.naturalness.MODEL_NAME`) |
| `asr_text` | string | offline ASR transcript of the reply |
| `wer` | float64 | word error rate of `asr_text` vs the expected text (normalised) |
| `cer` | float64 | character error rate, same normalisation |
| `asr_model` | string | ASR model name |
| `asr_language` | string | language the ASR used for the row (given, from the text's script, or detected) |
| `error_metric` | string | `cer` for zh/ja/ko, `wer` otherwise (`qvtools.lang.error_metric`) |
| `error_rate` | float64 | the row's `error_metric` value |
| `metrics_error` | string | why scoring the reply failed (the latency/usage columns may still be set); absent when scoring succeeded |
| `audio_path` | string | reply WAV relative to the run directory (`audio/<turn_id>.wav`); `<NA>` when no reply was saved |
| `started_at` | string | UTC ISO 8601 time (ms) the runner started the turn |
| `finished_at` | string | UTC ISO 8601 time (ms) the runner finished the turn (session and scoring) |
| `session_s` | float64 | s, wall time of the realtime session (connect, send, receive; 0 when enrollment failed) |
| `metrics_s` | float64 | s, wall time of scoring the reply (audio metrics, ASR, speaker embedding) |
| `turn_wall_s` | float64 | s, wall time of the whole turn (`>= session_s + metrics_s`) |
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .catalog import DEFAULT_COMPARE_MODELS, FAMILIES, base_model, family
from .errors import ConfigError

__all__ = [
    "COLUMNS",
    "LATENCY_METRICS",
    "SIMULATED_COLUMNS",
    "is_simulated_metric",
    "PAIR_KEYS",
    "to_frame",
    "summarize",
    "bootstrap_ci",
    "paired_differences",
    "PairedDifferences",
    "model_order",
    "pick_pair",
    "TOKEN_COLUMNS",
    "PRICE_KEYS",
    "PRICES_FORMAT",
    "load_prices",
    "token_totals",
    "estimate_cost",
    "latency_provenance",
]

log = logging.getLogger(__name__)

#: name -> (pandas dtype, unit / description). Order is the column order of :func:`to_frame`.
COLUMNS: dict[str, tuple[str, str]] = {
    # identifiers
    "run_id": ("string", "experiment run identifier"),
    "turn_id": ("string", "turn identifier, unique within a run"),
    "voice_ref": ("string", "reference (enrollment) clip the voice was cloned from; pairing key"),
    "voice": ("string", "voice name used in the session"),
    "target_model": ("string", "realtime model"),
    "prompt_id": ("string", "user prompt identifier; pairing key"),
    "repeat": ("Int64", "repetition index; pairing key"),
    "status": ("string", "completed / incomplete / failed / cancelled"),
    "error": ("string", "error message of a failed turn"),
    "region": ("string", "beijing / singapore / local"),
    "simulated": ("boolean", "local service: the SIMULATED_COLUMNS come from simulated profiles or a replayed run"),
    "latency_source": ("string", "measured / simulated:<profile> / replay:<run>/<file> / none"),
    # the cloned voice (qvtools.enrollment.Voice, §7.9 fallback_mode)
    "voice_fallback_mode": ("boolean", "True: the clone was made in DEGRADED mode (create answered "
                                       "fallback_mode: true, §7.9); <NA>: the service did not say"),
    "voice_fallback_reason": ("string", "the service's fallback_reason for a degraded clone"),
    # latency provenance (how the turn was driven; see the module docstring)
    "latency_origin": ("string", "client mark the end-of-speech latencies start at: speech_end_sent (last chunk "
                                 "holding speech sent) / last_audio_sent / response_create_sent"),
    "audio_pacing": ("string", "realtime (microphone-paced 100 ms chunks) / fast (as fast as possible)"),
    "turn_detection": ("string", "server_vad (the server ended the turn) / manual (commit + response.create)"),
    "vad_silence_ms": ("float64", "ms, server VAD silence_duration_ms in effect: requested, else the family default (NaN: manual)"),
    "vad_window_included": ("boolean", "latencies from end of speech include the server VAD silence window"),
    "response_create_sent_ms": ("float64", "ms, end of user speech -> response.create sent (manual/text turns; "
                                           "NaN with server VAD)"),
    "session_id": ("string", "realtime session id"),
    "response_id": ("string", "realtime response id"),
    "user_transcript": ("string", "server transcript of the user audio"),
    "assistant_transcript": ("string", "the model's transcript of its reply"),
    # latency / delivery (qvtools.metrics.latency_metrics)
    "ttfa_ms": ("float64", "ms, end of user speech -> first audio delta"),
    "ttft_ms": ("float64", "ms, end of user speech -> first text delta"),
    "ttfa_created_ms": ("float64", "ms, response.created -> first audio delta"),
    "ttft_created_ms": ("float64", "ms, response.created -> first text delta"),
    "response_created_ms": ("float64", "ms, end of user speech -> response.created"),
    "speech_stopped_ms": ("float64", "ms, end of user speech -> speech_stopped"),
    "e2e_ms": ("float64", "ms, end of user speech -> response.done"),
    "reply_duration_s": ("float64", "s, reply audio length"),
    "delivery_rtf": ("float64", "reply audio s per s of receiving; > 1 faster than real time"),
    "chunk_count": ("Int64", "number of audio delta chunks"),
    "gap_p95_ms": ("float64", "ms, p95 inter-chunk arrival gap"),
    "gap_max_ms": ("float64", "ms, largest inter-chunk arrival gap"),
    "underrun_count": ("Int64", "audible gaps of a simulated player"),
    "underrun_ms": ("float64", "ms, total length of audible gaps"),
    # latency to audible speech (qvtools.audible)
    "ttfa_audible_ms": ("float64", "ms, end of user speech -> first reply speech sample played (Silero VAD on "
                                   "the reply as received, player fed at the chunk arrival times)"),
    "reply_leading_silence_ms": ("float64", "ms of reply audio before its first speech (Silero VAD)"),
    # usage (qvtools.metrics.usage_metrics)
    "input_tokens": ("Int64", "tokens, usage.input_tokens"),
    "output_tokens": ("Int64", "tokens, usage.output_tokens"),
    "total_tokens": ("Int64", "tokens, usage.total_tokens"),
    "input_text_tokens": ("Int64", "tokens, usage.input_tokens_details.text_tokens"),
    "input_audio_tokens": ("Int64", "tokens, usage.input_tokens_details.audio_tokens"),
    "output_text_tokens": ("Int64", "tokens, usage.output_tokens_details.text_tokens"),
    "output_audio_tokens": ("Int64", "tokens, usage.output_tokens_details.audio_tokens"),
    # audio (qvtools.metrics.audio_metrics)
    "duration_s": ("float64", "s, clip length"),
    "rms_dbfs": ("float64", "dBFS, RMS level"),
    "peak_dbfs": ("float64", "dBFS, sample peak"),
    "clipping_ratio": ("float64", "fraction of samples at full scale"),
    "loudness_lufs": ("float64", "LUFS, integrated loudness (BS.1770-4)"),
    "snr_db": ("float64", "dB, energy-based SNR estimate"),
    "silence_ratio": ("float64", "fraction of 20 ms frames below -50 dBFS"),
    "f0_median_hz": ("float64", "Hz, median voiced F0"),
    "f0_iqr_hz": ("float64", "Hz, IQR of voiced F0"),
    "voiced_ratio": ("float64", "fraction of voiced F0 frames"),
    "ref_f0_median_hz": ("float64", "Hz, median voiced F0 of the reference"),
    "f0_ratio": ("float64", "f0_median_hz / ref_f0_median_hz"),
    "speaker_similarity": ("float64", "cosine similarity of speaker embeddings vs the reference"),
    "speaker_model": ("string", "speaker embedding model name"),
    # calibrated similarity (qvtools.similarity.calibrate, per run)
    "speaker_similarity_norm": ("float64", "speaker_similarity s-normalised against the run's impostor cosines"),
    "speaker_identified": ("boolean", "closer to its own reference than to every other reference of the run"),
    "ref_ceiling_similarity": ("float64", "cosine of the two halves of the reference (per voice): the ceiling"),
    "similarity_encoder": ("string", "speaker encoder behind the speaker_similarity* columns"),
    # naturalness (qvtools.naturalness, DNSMOS)
    "mos_sig": ("float64", "DNSMOS P.835 SIG of the reply (1-5)"),
    "mos_bak": ("float64", "DNSMOS P.835 BAK of the reply (1-5)"),
    "mos_ovrl": ("float64", "DNSMOS P.835 OVRL of the reply (1-5)"),
    "mos_p808": ("float64", "DNSMOS P.808 MOS of the reply (1-5)"),
    "ref_mos_ovrl": ("float64", "DNSMOS P.835 OVRL of the reference"),
    "mos_ovrl_delta": ("float64", "mos_ovrl - ref_mos_ovrl"),
    "mos_model": ("string", "MOS model name"),
    "asr_text": ("string", "offline ASR transcript of the reply"),
    "wer": ("float64", "word error rate vs the expected text"),
    "cer": ("float64", "character error rate vs the expected text"),
    "asr_model": ("string", "ASR model name"),
    "asr_language": ("string", "language the ASR used (given, from the text's script, or detected)"),
    "error_metric": ("string", "cer for zh/ja/ko, wer otherwise"),
    "error_rate": ("float64", "the row's error_metric value"),
    # run bookkeeping (qvtools.experiment.run_turn_detached / save_turn)
    "metrics_error": ("string", "why scoring the reply failed; absent when scoring succeeded"),
    "audio_path": ("string", "reply WAV relative to the run directory (audio/<turn_id>.wav)"),
    "started_at": ("string", "UTC ISO 8601 time (ms) the turn started"),
    "finished_at": ("string", "UTC ISO 8601 time (ms) the turn finished"),
    "session_s": ("float64", "s, wall time of the realtime session (0 when enrollment failed)"),
    "metrics_s": ("float64", "s, wall time of scoring the reply"),
    "turn_wall_s": ("float64", "s, wall time of the whole turn (>= session_s + metrics_s)"),
}

#: Default metrics of :func:`summarize`.
LATENCY_METRICS = ("ttfa_ms", "ttft_ms", "e2e_ms")

#: Columns whose values come from the service's timing, so on the local service from a SIMULATED (or replayed)
#: latency figure: the latencies, the delivery rate and everything derived from chunk arrival times, and the
#: wall times that contain those delays (issue 11: ``delivery_rtf`` comes from the profile's delivery rate).
#: Audio, quality and token columns are not here: they are the same whatever the latency source.
SIMULATED_COLUMNS = ("ttfa_ms", "ttft_ms", "ttfa_created_ms", "ttft_created_ms", "response_created_ms",
                     "speech_stopped_ms", "e2e_ms", "ttfa_audible_ms", "delivery_rtf", "gap_p95_ms", "gap_max_ms",
                     "underrun_count", "underrun_ms", "session_s", "turn_wall_s")


def is_simulated_metric(metric: str) -> bool:
    """True for a column of :data:`SIMULATED_COLUMNS` (or a ``*_ms`` column outside the schema, e.g. one a
    user derived): on the local service its values come from a simulated or replayed latency figure."""
    return metric in SIMULATED_COLUMNS or (str(metric).endswith("_ms") and metric not in COLUMNS)

#: A pair in :func:`paired_differences` is the same reference voice, prompt and repetition.
PAIR_KEYS = ("voice_ref", "prompt_id", "repeat")

_PERCENTILES = (50, 90, 95)


def _cast(series: pd.Series, dtype: str, name: str) -> pd.Series:
    try:
        if dtype == "float64":
            return pd.to_numeric(series, errors="raise").astype("float64")
        if dtype == "Int64":
            num = pd.to_numeric(series, errors="raise")
            return num.astype("Int64")
        if dtype == "boolean":
            return series.astype("boolean")
        if dtype == "string":
            return series.astype("object").where(series.notna(), None).astype("string")
        return series.astype(dtype)
    except (TypeError, ValueError) as exc:
        bad = series.dropna().head(3).tolist()
        raise ConfigError(f"column {name!r} must hold {dtype} values; got e.g. {bad!r} ({exc})") from None


def to_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts) -> DataFrame in the documented schema.

    Known columns come first in :data:`COLUMNS` order with their dtypes (every known column is
    present, missing values are NaN / <NA>); unknown columns follow in first-seen order, untouched.
    A value that cannot take its column's dtype raises :class:`~qvtools.errors.ConfigError`.
    """
    if isinstance(rows, pd.DataFrame):
        raw = rows.copy()
    else:
        rows = list(rows)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise ConfigError(f"to_frame expects dicts, row {i} is a {type(r).__name__}")
        raw = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    _check_unique_turns(raw)
    n = len(raw)
    out = {}
    for name, (dtype, _) in COLUMNS.items():
        col = raw[name] if name in raw.columns else pd.Series([None] * n, index=raw.index, dtype="object")
        out[name] = _cast(col, dtype, name)
    extra = [c for c in raw.columns if c not in COLUMNS]
    for c in extra:
        out[c] = raw[c]
    return pd.DataFrame(out, index=raw.index).reset_index(drop=True)


def _check_unique_turns(raw: pd.DataFrame) -> None:
    """A turn is one row (issue 23: two writers once journaled every turn twice and doubled ``n``)."""
    if "turn_id" not in raw.columns:
        return
    ids = raw["turn_id"].dropna()
    dupes = ids[ids.duplicated()]
    if len(dupes):
        shown = ", ".join(map(str, dupes.unique()[:3]))
        raise ConfigError(f"turn_id must be unique; {dupes.nunique()} repeated (e.g. {shown}): the journal holds "
                          "a turn twice (two writers?) -- keep one row per turn")


def _check_columns(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"{what}: column(s) {missing} not in the table (have: {list(df.columns)})")


def bootstrap_ci(values, stat=np.median, *, ci: float = 0.95, n_boot: int = 1000, seed=0) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``stat`` over ``values`` (NaNs dropped), computed by
    ``scipy.stats.bootstrap(method="percentile")`` (issue 12): with the same ``seed`` it draws the same resamples
    and gives the numbers of the former hand-written loop to within 1e-14 relative (the last bit or two:
    scipy reduces in another order; tests/test_results.py::test_bootstrap_ci_is_scipy_bootstrap).
    One finite value: ``(stat, stat)`` (scipy needs two observations)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(stat(v)), float(stat(v))
    res = bootstrap((v,), stat, n_resamples=int(n_boot), confidence_level=ci, method="percentile",
                    random_state=np.random.default_rng(seed))  # vectorized when stat takes axis=
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _boot_percentiles(v: np.ndarray, qs, ci: float, n_boot: int, rng) -> np.ndarray:
    """(len(qs), 2) CI bounds of the sample percentiles qs, vectorised in blocks."""
    alpha = (1 - ci) / 2
    if v.size == 1:
        return np.repeat(v, 2 * len(qs)).reshape(len(qs), 2)
    block = max(1, min(int(n_boot), 2_000_000 // v.size))
    parts = []
    done = 0
    while done < n_boot:
        k = min(block, n_boot - done)
        idx = rng.integers(0, v.size, size=(k, v.size))
        parts.append(np.percentile(v[idx], qs, axis=1))  # (len(qs), k)
        done += k
    boots = np.concatenate(parts, axis=1)
    return np.percentile(boots, [100 * alpha, 100 * (1 - alpha)], axis=1).T


def summarize(df: pd.DataFrame, by: str | Sequence[str] | None = ("target_model",),
              metrics: str | Sequence[str] = LATENCY_METRICS, *, ci: float = 0.95, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Per group and metric: n, success rate, p50/p90/p95 with percentile-bootstrap CIs.

    Returns one row per (group, metric) with columns ``*by, metric, [simulated,] n, n_completed, n_valid,
    success_rate, mean, p50, p50_lo, p50_hi, p90, p90_lo, p90_hi, p95, p95_lo, p95_hi``; ``simulated``
    (present when ``df`` has that column) is True for a timing metric (:func:`is_simulated_metric`: the
    latencies, ``delivery_rtf``, gaps, underruns) of a group with simulated rows, so a table of summaries
    labels simulated figures itself (never an audio or quality metric).
    ``n`` counts all turns of the group, ``success_rate`` is the share with ``status == "completed"``
    (NaN without a status column); the percentiles are over completed turns with a finite value
    (``n_valid``). Resampling is seeded, so the same input gives the same CIs.
    """
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci!r}")
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot!r}")
    by = [by] if isinstance(by, str) else list(by or ())
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _check_columns(df, by + metrics, "summarize")
    has_status = "status" in df.columns
    has_simulated = "simulated" in df.columns
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    records = []
    for gi, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        ok = (g["status"] == "completed").fillna(False).to_numpy(dtype=bool) if has_status else np.ones(len(g), bool)
        success = float(ok.mean()) if has_status and len(g) else float("nan")
        sim = g["simulated"].fillna(False).astype(bool).to_numpy() if has_simulated else None
        for mi, metric in enumerate(metrics):
            v = pd.to_numeric(g[metric], errors="coerce").astype("float64").to_numpy()[ok]
            v = v[np.isfinite(v)]
            rec = dict(zip(by, key))
            rec["metric"] = metric
            if has_simulated:  # figures from the local service's simulated/replayed latency say so
                rec["simulated"] = bool(is_simulated_metric(metric) and sim.any())
            rec.update(n=len(g), n_completed=int(ok.sum()), n_valid=int(v.size),
                       success_rate=success, mean=float(v.mean()) if v.size else float("nan"))
            if v.size:
                rng = np.random.default_rng([seed, gi, mi])
                point = np.percentile(v, _PERCENTILES)
                bounds = _boot_percentiles(v, _PERCENTILES, ci, int(n_boot), rng)
            else:
                point = np.full(len(_PERCENTILES), np.nan)
                bounds = np.full((len(_PERCENTILES), 2), np.nan)
            for q, p, (lo, hi) in zip(_PERCENTILES, point, bounds):
                rec[f"p{q}"], rec[f"p{q}_lo"], rec[f"p{q}_hi"] = float(p), float(lo), float(hi)
            records.append(rec)
    out = pd.DataFrame.from_records(records)
    out.attrs.update(ci=ci, n_boot=int(n_boot), seed=seed)
    return out


@dataclass
class PairedDifferences:
    """Paired comparison of ``metric`` between models ``a`` and ``b`` (difference = a - b)."""

    metric: str
    a: str
    b: str
    n_pairs: int
    median_diff: float
    ci_low: float
    ci_high: float
    mean_diff: float
    a_lower_ratio: float  # share of pairs where a's value is below b's
    ci: float = 0.95
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    simulated: bool = False  # a timing metric (is_simulated_metric) measured on simulated latency

    def to_dict(self) -> dict[str, Any]:
        """The summary fields (without the pairs table)."""
        return {k: getattr(self, k) for k in ("metric", "simulated", "a", "b", "n_pairs", "median_diff", "ci_low",
                                              "ci_high", "mean_diff", "a_lower_ratio", "ci")}


def model_order(models: Iterable[str]) -> list[str]:
    """Distinct model names in catalog order (:data:`qvtools.catalog.FAMILIES`; a dated snapshot or
    ``-latest`` sorts with its family), names outside the catalog after them in the order given."""
    seen = list(dict.fromkeys(m for m in models if isinstance(m, str) and m))
    rank = {name: i for i, name in enumerate(FAMILIES)}

    def key(item):
        i, m = item
        fam = family(m)
        return (rank.get(fam.name, len(rank)) if fam.known else len(rank), i)

    return [m for _, m in sorted(enumerate(seen), key=key)]


def pick_pair(df: pd.DataFrame, model_col: str = "target_model") -> tuple[str, str]:
    """The default ``(a, b)`` of :func:`paired_differences`: the first two models present in catalog
    order; with fewer than two present, completed from :data:`~qvtools.catalog.DEFAULT_COMPARE_MODELS`
    (so the comparison comes back empty rather than failing)."""
    present = model_order(df[model_col].dropna().astype(str)) if model_col in df.columns else []
    for m in DEFAULT_COMPARE_MODELS:
        if len(present) >= 2:
            break
        if m not in present:
            present.append(m)
    return present[0], present[1]


def paired_differences(df: pd.DataFrame, metric: str, a: str | None = None, b: str | None = None, *,
                       on: Sequence[str] = PAIR_KEYS, model_col: str = "target_model",
                       completed_only: bool = True, ci: float = 0.95, n_boot: int = 1000,
                       seed: int = 0) -> PairedDifferences:
    """Median of the per-pair differences ``a - b`` of ``metric`` with a bootstrap CI.

    ``a``/``b`` are any two model names of the table; by default the first two present in catalog
    order (:func:`pick_pair`). A pair is the same ``on`` key (voice_ref, prompt_id, repeat) measured
    with both models; keys with only one model (or a non-finite value) are dropped. Several rows for
    one key and model are averaged. ``pairs`` holds the table ``*on, a, b, diff``.
    """
    on = list(on)
    _check_columns(df, on + [metric, model_col], "paired_differences")
    if a is None or b is None:
        da, db = pick_pair(df, model_col)
        if a is None and b is None:
            a, b = da, db
        elif a is None:
            a = da if da != b else db
        else:
            b = db if db != a else da
    if a == b:
        raise ConfigError(f"paired_differences needs two different models, got {a!r} twice")
    d = df
    if completed_only and "status" in d.columns:
        d = d[(d["status"] == "completed").fillna(False)]
    d = d[d[model_col].isin([a, b])]
    vals = pd.to_numeric(d[metric], errors="coerce").astype("float64")
    d = d.assign(**{metric: vals})[on + [model_col, metric]]
    d = d[np.isfinite(d[metric])]
    if d.duplicated(on + [model_col]).any():
        log.info("paired_differences: several rows per key and model for %s; averaging them", metric)
    wide = d.groupby(on + [model_col], dropna=False)[metric].mean().unstack(model_col)
    for m in (a, b):
        if m not in wide.columns:
            wide[m] = np.nan
    wide = wide[[a, b]].dropna()
    pairs = wide.rename(columns={a: "a", b: "b"}).reset_index()
    pairs.columns.name = None
    pairs["diff"] = pairs["a"] - pairs["b"]
    diff = pairs["diff"].to_numpy(dtype=float)
    nan = float("nan")
    if diff.size:
        lo, hi = bootstrap_ci(diff, np.median, ci=ci, n_boot=n_boot, seed=seed)
        med, mean, lower = float(np.median(diff)), float(diff.mean()), float(np.mean(diff < 0))
    else:
        lo = hi = med = mean = lower = nan
    simulated = bool(is_simulated_metric(metric) and "simulated" in df.columns
                     and df["simulated"].fillna(False).astype(bool).any())
    return PairedDifferences(metric=metric, a=a, b=b, n_pairs=int(diff.size), median_diff=med, ci_low=lo,
                             ci_high=hi, mean_diff=mean, a_lower_ratio=lower, ci=ci, pairs=pairs,
                             simulated=simulated)


# --------------------------------------------------------------------------- latency provenance

def latency_provenance(df: pd.DataFrame) -> str:
    """One sentence saying what the table's latencies are measured from and how the audio was sent
    (from the ``latency_origin`` / ``audio_pacing`` / ``turn_detection`` / ``vad_*`` columns)."""
    def values(col):
        if col not in df.columns:
            return []
        return sorted({str(v) for v in df[col].dropna().tolist()})

    origin = {"speech_end_sent": "the moment the last audio chunk holding speech was sent (client clock, "
                                 "before any trailing silence)",
              "last_audio_sent": "the moment the last audio chunk was sent (client clock)",
              "response_create_sent": "the moment response.create was sent (client clock)"}
    pacing = {"realtime": "streamed at microphone pace (100 ms chunks in real time)",
              "fast": "sent as fast as possible"}
    parts = []
    origins = values("latency_origin")
    parts.append("Latencies 'from end of user speech' start at "
                 + ("; ".join(origin.get(o, o) for o in origins) if origins else "an unrecorded mark") + ".")
    paces = values("audio_pacing")
    parts.append("Prompt audio was " + (" / ".join(pacing.get(p, p) for p in paces) if paces
                                         else "sent with unrecorded pacing") + ".")
    modes = values("turn_detection")
    if "server_vad" in modes:
        sil = sorted({float(v) for v in pd.to_numeric(df.get("vad_silence_ms"), errors="coerce").dropna()}) \
            if "vad_silence_ms" in df.columns else []
        window = (", ".join(f"{v:.0f} ms" for v in sil) if sil else "the service default (not echoed, §7.2)")
        parts.append("With server VAD (silence_duration_ms " + window + ") the figures from end of speech INCLUDE "
                     "the server's silence wait; the 'from response.created' figures exclude it.")
    if "manual" in modes:
        parts.append("Manual turns (commit + response.create right after the audio) include no VAD wait.")
    return " ".join(parts)


# --------------------------------------------------------------------------- tokens and (user-priced) cost

#: Token columns summed by :func:`token_totals` (from the service's ``usage``, §4.4 response.done).
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "input_text_tokens", "input_audio_tokens",
                 "output_text_tokens", "output_audio_tokens")
#: Priced token kinds: price key -> token column.
PRICE_KEYS = {"input_text": "input_text_tokens", "input_audio": "input_audio_tokens",
              "output_text": "output_text_tokens", "output_audio": "output_audio_tokens"}

PRICES_FORMAT = """A price table is a JSON file YOU write from the price page of your region and account
(qvtools ships no prices: they differ per region, change over time and are not in our sources):

{
  "currency": "USD",
  "source": "where and when you read these prices",
  "per_tokens": 1000000,
  "models": {
    "qwen3.5-omni-plus-realtime": {"input_text": 0.0, "input_audio": 0.0, "output_text": 0.0, "output_audio": 0.0},
    "qwen3.5-omni-flash-realtime": {"input_text": 0.0, "input_audio": 0.0, "output_text": 0.0, "output_audio": 0.0}
  },
  "voice_creation": 0.0
}

Token prices are per ``per_tokens`` tokens (default 1,000,000) of each kind (usage.*_tokens_details); a model
is matched by its exact name, else without a dated / -latest suffix. ``voice_creation`` (optional) prices
each voice created by the run (SEED §2.4 / protocol reference §2.4 bill creations after a free quota). Models without a price get no
estimate."""


def _price(v, where: str) -> float:
    from .validate import number

    return number(v, where=f"price table: {where} (a non-negative number)", low=0.0)


def load_prices(src) -> dict:
    """Validate a user-supplied price table (a path to JSON, or a dict); returns a normalised dict
    ``{currency, source, per_tokens, models: {name: {input_text, input_audio, output_text, output_audio}},
    voice_creation}``. Format: :data:`PRICES_FORMAT`."""
    import json
    from pathlib import Path

    if src is None:
        raise ConfigError("no price table given")
    if isinstance(src, Mapping):
        doc = dict(src)
        where = "price table"
    else:
        path = Path(src)
        where = str(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"price table not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, OverflowError) as exc:
            raise ConfigError(f"price table {path} is not readable JSON: {type(exc).__name__}: "
                              f"{str(exc)[:120]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict) or not doc["models"]:
        raise ConfigError(f"{where} needs a non-empty 'models' object (format: qvtools.results.PRICES_FORMAT)")
    currency = doc.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        raise ConfigError(f"{where} needs a 'currency' (e.g. \"USD\")")
    from .validate import number

    per = number(doc.get("per_tokens", 1_000_000), where=f"{where}: per_tokens", low=1.0)
    models = {}
    for name, table in doc["models"].items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: models[{name!r}] must be an object of prices")
        unknown = set(table) - set(PRICE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: models[{name!r}] has unknown keys {sorted(unknown)}; "
                              f"use {', '.join(PRICE_KEYS)}")
        models[str(name)] = {k: _price(table[k], f"models[{name!r}].{k}") for k in PRICE_KEYS if k in table}
    out = {"currency": currency.strip(), "source": str(doc.get("source") or ""), "per_tokens": float(per),
           "models": models}
    if doc.get("voice_creation") is not None:
        out["voice_creation"] = _price(doc["voice_creation"], "voice_creation")
    return out


def token_totals(df: pd.DataFrame, by: str = "target_model") -> pd.DataFrame:
    """Per model: turns, turns with usage, and the sum of every token column (all turns, failed ones
    included: a failed turn may still have been billed)."""
    cols = [c for c in TOKEN_COLUMNS if c in df.columns]
    _check_columns(df, [by], "token_totals")
    rows = []
    for model in model_order(df[by].dropna().astype(str)):
        g = df[df[by] == model]
        rec = {by: model, "turns": len(g)}
        nums = {c: pd.to_numeric(g[c], errors="coerce") for c in cols}
        rec["turns_with_usage"] = int(pd.concat(nums.values(), axis=1).notna().any(axis=1).sum()) if cols else 0
        for c in cols:
            rec[c] = int(nums[c].fillna(0).sum())
        rows.append(rec)
    return pd.DataFrame(rows, columns=[by, "turns", "turns_with_usage", *cols]).set_index(by)


def _model_prices(prices: dict, model: str) -> dict | None:
    models = prices["models"]
    if model in models:
        return models[model]
    return models.get(base_model(model))


def estimate_cost(df: pd.DataFrame, prices, *, voices_created: int = 0, by: str = "target_model") -> pd.DataFrame:
    """Estimated cost per model from the token totals and a USER-supplied price table (:func:`load_prices`).

    Columns: the four priced token sums, ``cost`` (in ``currency``; NaN when the table has no price for
    the model, or lacks a price for a token kind the model used), ``currency`` and ``priced_by``
    (the table's ``source``). ``voices_created`` adds a ``voice creation`` row when the table prices it."""
    prices = load_prices(prices)
    totals = token_totals(df, by)
    rows = []
    for model, t in totals.iterrows():
        table = _model_prices(prices, str(model))
        rec = {by: model}
        cost = 0.0 if table is not None else float("nan")
        for key, col in PRICE_KEYS.items():
            n = int(t.get(col, 0) or 0)
            rec[col] = n
            if table is None:
                continue
            if key in table:
                cost += n * table[key] / prices["per_tokens"]
            elif n:
                cost = float("nan")  # tokens of a kind the table does not price
        rec["cost"] = cost
        rows.append(rec)
    if voices_created and "voice_creation" in prices:
        rows.append({by: "voice creation", "cost": voices_created * prices["voice_creation"]})
    out = pd.DataFrame(rows).set_index(by)
    out["currency"] = prices["currency"]
    out["priced_by"] = prices["source"]
    return out
