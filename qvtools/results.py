"""Results tables: the column schema, ``to_frame(rows)``, summaries with bootstrap CIs, paired differences.

One row per realtime turn. Rows are flat dicts built by the experiment runner from the turn's
identifiers, :func:`qvtools.metrics.latency_metrics`, :func:`qvtools.metrics.usage_metrics` and
:func:`qvtools.metrics.audio_metrics`; :func:`to_frame` puts them into this schema (column order and
dtypes below; unknown columns are kept after these; missing values are ``NaN`` for numbers and
``<NA>`` for strings/booleans). Units are in the column names.

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
| `simulated` | boolean | True when latencies come from the local service's simulated profiles |
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
| `asr_text` | string | offline ASR transcript of the reply |
| `wer` | float64 | word error rate of `asr_text` vs the expected text (normalised) |
| `cer` | float64 | character error rate, same normalisation |
| `asr_model` | string | ASR model name |
| `asr_language` | string | language the ASR used for the row (given, from the text's script, or detected) |
| `error_metric` | string | `cer` for zh/ja/ko, `wer` otherwise (`qvtools.lang.error_metric`) |
| `error_rate` | float64 | the row's `error_metric` value |
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "COLUMNS",
    "LATENCY_METRICS",
    "PAIR_KEYS",
    "to_frame",
    "summarize",
    "bootstrap_ci",
    "paired_differences",
    "PairedDifferences",
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
    "simulated": ("boolean", "latencies come from the local service's simulated profiles"),
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
    "asr_text": ("string", "offline ASR transcript of the reply"),
    "wer": ("float64", "word error rate vs the expected text"),
    "cer": ("float64", "character error rate vs the expected text"),
    "asr_model": ("string", "ASR model name"),
    "asr_language": ("string", "language the ASR used (given, from the text's script, or detected)"),
    "error_metric": ("string", "cer for zh/ja/ko, wer otherwise"),
    "error_rate": ("float64", "the row's error_metric value"),
}

#: Default metrics of :func:`summarize`.
LATENCY_METRICS = ("ttfa_ms", "ttft_ms", "e2e_ms")

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
    n = len(raw)
    out = {}
    for name, (dtype, _) in COLUMNS.items():
        col = raw[name] if name in raw.columns else pd.Series([None] * n, index=raw.index, dtype="object")
        out[name] = _cast(col, dtype, name)
    extra = [c for c in raw.columns if c not in COLUMNS]
    for c in extra:
        out[c] = raw[c]
    return pd.DataFrame(out, index=raw.index).reset_index(drop=True)


def _check_columns(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"{what}: column(s) {missing} not in the table (have: {list(df.columns)})")


def bootstrap_ci(values, stat=np.median, *, ci: float = 0.95, n_boot: int = 1000, seed=0) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``stat`` over ``values`` (NaNs dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = np.array([stat(v[rng.integers(0, v.size, v.size)]) for _ in range(int(n_boot))])
    alpha = (1 - ci) / 2
    lo, hi = np.percentile(boots, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


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
    (present when ``df`` has that column) is True for a latency metric (``*_ms``) of a group with
    simulated rows, so a table of summaries labels simulated latencies itself.
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
            if has_simulated:  # latency figures from the local service's simulated profiles say so
                rec["simulated"] = bool(metric.endswith("_ms") and sim.any())
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
    simulated: bool = False  # a latency metric (``*_ms``) measured on simulated latency profiles

    def to_dict(self) -> dict[str, Any]:
        """The summary fields (without the pairs table)."""
        return {k: getattr(self, k) for k in ("metric", "simulated", "a", "b", "n_pairs", "median_diff", "ci_low",
                                              "ci_high", "mean_diff", "a_lower_ratio", "ci")}


def paired_differences(df: pd.DataFrame, metric: str, a: str = "qwen3.5-omni-plus-realtime",
                       b: str = "qwen3.5-omni-flash-realtime", *, on: Sequence[str] = PAIR_KEYS,
                       model_col: str = "target_model", completed_only: bool = True, ci: float = 0.95,
                       n_boot: int = 1000, seed: int = 0) -> PairedDifferences:
    """Median of the per-pair differences ``a - b`` of ``metric`` with a bootstrap CI.

    A pair is the same ``on`` key (voice_ref, prompt_id, repeat) measured with both models; keys with
    only one model (or a non-finite value) are dropped. Several rows for one key and model are
    averaged. ``pairs`` holds the table ``*on, a, b, diff``.
    """
    on = list(on)
    _check_columns(df, on + [metric, model_col], "paired_differences")
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
    simulated = bool(metric.endswith("_ms") and "simulated" in df.columns
                     and df["simulated"].fillna(False).astype(bool).any())
    return PairedDifferences(metric=metric, a=a, b=b, n_pairs=int(diff.size), median_diff=med, ci_low=lo,
                             ci_high=hi, mean_diff=mean, a_lower_ratio=lower, ci=ci, pairs=pairs,
                             simulated=simulated)
