"""Statistics that follow the design of a comparison run: voice x prompt x repeat x model, paired and crossed.

Every turn of a run shares its reference voice with the turns of the other prompts and its prompt with the
turns of the other voices, so turns are not independent draws and a bootstrap that resamples turns gives
intervals that are too narrow when voices (or prompts) differ. This module holds the one implementation of:

- **Intervals** (:func:`bootstrap_interval`): ``"cluster"`` -- the two-way cluster ("pigeonhole") bootstrap
  of Owen (2007, *Ann. Appl. Stat.* 1(2)): each resample draws the voices with replacement AND the prompts
  with replacement, independently, and keeps every turn of each drawn (voice, prompt) cell (its repeats
  whole); a factor with a single level is held fixed (nothing to resample), and with one voice and one
  prompt the interval falls back to the turn bootstrap and says so. ``"turn"`` -- the former bootstrap
  over turns, kept as an option. The method actually used is returned as a label (:data:`INTERVAL_LABELS`)
  that tables and the report print beside the numbers.
- **Paired tests** (:func:`paired_test`): the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) on the
  per-cell differences (voice x prompt, repeats averaged: repeats are not new voices or prompts), with the
  matched-pairs rank-biserial correlation as effect size (Kerby 2014: share of favourable minus
  unfavourable rank sums, -1..1). Cells that share a voice are still not independent, which the test does
  not model; the verdict therefore asks for BOTH ``p_holm < alpha`` and a cluster interval that excludes 0.
- **Multiplicity** (:func:`holm`): Holm's step-down correction over the metrics of one report
  (``statsmodels.stats.multitest.multipletests(method="holm")``).
- **Verdicts** (:func:`verdict`) and meaningful rounding (:func:`format_value`).

The comparison table built from these is :func:`qvtools.results.compare_models`; the study planner is
:func:`qvtools.planner.plan_study`. This module imports no other qvtools module but ``errors``.

The metrics a report leads with and how each reads (lower/higher is better, median or rate, digits shown)
are :data:`HEADLINE_METRICS`; columns a run does not have are skipped, so the same list serves runs made
before and after the naturalness / calibrated-similarity / audible-latency columns existed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "MetricSpec",
    "HEADLINE_METRICS",
    "metric_spec",
    "headline_metrics",
    "has_values",
    "latency_rank_metric",
    "INTERVALS",
    "INTERVAL_LABELS",
    "CLUSTER_KEYS",
    "bootstrap_interval",
    "bootstrap_quantiles",
    "paired_test",
    "holm",
    "verdict",
    "short_names",
    "format_value",
]

log = logging.getLogger(__name__)

Interval = Literal["cluster", "turn"]
#: Interval methods: ``cluster`` (two-way voice x prompt bootstrap, the default) and ``turn``.
INTERVALS = ("cluster", "turn")
#: What a table says about its intervals, per method actually used.
INTERVAL_LABELS = {
    "cluster": "two-way cluster bootstrap (voices and prompts resampled)",
    "cluster-voices": "cluster bootstrap over voices (one prompt in the run)",
    "cluster-prompts": "cluster bootstrap over prompts (one voice in the run)",
    "turn": "turn bootstrap (turns resampled as if independent)",
    "turn-fallback": "turn bootstrap (one voice and one prompt: no clusters to resample)",
}
#: The crossed factors resampled by the cluster bootstrap.
CLUSTER_KEYS = ("voice_ref", "prompt_id")


# --------------------------------------------------------------------------- the headline metrics

@dataclass(frozen=True)
class MetricSpec:
    """How one metric is read in a comparison.

    ``better``: ``"lower"``, ``"higher"`` or ``None`` (no direction: e.g. an F0 ratio). ``stat``: the centre
    shown and compared, ``"median"`` or ``"mean"`` (a rate such as ``speaker_identified``). ``digits``:
    decimals shown (meaningful rounding). ``unit``: appended to values in verdicts. ``noun``: the verdict's
    word for a difference (``faster``/``slower`` for latencies)."""

    name: str
    label: str
    better: str | None
    stat: str = "median"
    digits: int = 2
    unit: str = ""
    noun: tuple[str, str] = ("higher", "lower")  # (when a - b > 0, when a - b < 0)
    percent: bool = False


_LATENCY = dict(better="lower", digits=0, unit=" ms", noun=("slower", "faster"))
#: The report's headline metrics, in order; a run's missing or empty columns are skipped.
#: Latency leads with ``ttfa_audible_ms`` (end of user speech -> first reply sample that is speech) where a run
#: has it; ``ttfa_ms`` (-> first audio message) is kept beside it.
HEADLINE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("ttfa_audible_ms", "time to first audible speech", **_LATENCY),
    MetricSpec("ttfa_ms", "time to first audio message", **_LATENCY),
    MetricSpec("reply_leading_silence_ms", "leading silence of the reply", **_LATENCY),
    MetricSpec("e2e_ms", "end of speech to response.done", **_LATENCY),
    MetricSpec("speaker_similarity", "speaker similarity (cosine)", "higher", digits=3),
    MetricSpec("speaker_similarity_norm", "speaker similarity, normalised", "higher", digits=2),
    MetricSpec("speaker_identified", "identification rate", "higher", stat="mean", digits=0, percent=True),
    MetricSpec("mos_ovrl", "DNSMOS overall", "higher", digits=2),
    MetricSpec("mos_sig", "DNSMOS signal", "higher", digits=2),
    MetricSpec("mos_bak", "DNSMOS background", "higher", digits=2),
    MetricSpec("mos_ovrl_delta", "DNSMOS overall, reply minus reference", "higher", digits=2),
    MetricSpec("wer", "word error rate", "lower", digits=3),
    MetricSpec("cer", "character error rate", "lower", digits=3),
)
_SPECS = {s.name: s for s in HEADLINE_METRICS}


def metric_spec(name: str) -> MetricSpec:
    """The spec of a headline metric; any other column gets a neutral spec (median, 3 digits, no direction)."""
    if name in _SPECS:
        return _SPECS[name]
    if str(name).endswith("_ms"):
        return MetricSpec(name, name, **_LATENCY)
    return MetricSpec(name, name, None, digits=3)


def has_values(df: pd.DataFrame, col: str) -> bool:
    """True when ``df`` has column ``col`` with at least one numeric value."""
    if col not in df.columns:
        return False
    return bool(pd.to_numeric(df[col].astype("object"), errors="coerce").notna().any())


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """The :data:`HEADLINE_METRICS` that ``df`` has values for, in order."""
    return [s.name for s in HEADLINE_METRICS if has_values(df, s.name)]


def latency_rank_metric(df: pd.DataFrame) -> str:
    """The latency models are ranked by: ``ttfa_audible_ms`` when the run has it, else ``ttfa_ms``."""
    return "ttfa_audible_ms" if has_values(df, "ttfa_audible_ms") else "ttfa_ms"


# --------------------------------------------------------------------------- weighted statistics

def _weighted_quantiles(x_sorted: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles (0..1) of ``x_sorted`` under each row of weights ``w`` (B, n): the inverse of the weighted
    ECDF, averaging the two neighbours where it is flat at q (so equal weights give numpy's median)."""
    c = np.cumsum(w, axis=1)
    total = c[:, -1:]
    out = np.empty((w.shape[0], len(qs)))
    n = x_sorted.size
    for j, q in enumerate(qs):
        t = q * total
        tol = 1e-9 * total
        lo = np.minimum((c < t - tol).sum(axis=1), n - 1)  # first index with c >= t
        hi = np.minimum((c <= t + tol).sum(axis=1), n - 1)  # first index with c > t
        out[:, j] = 0.5 * (x_sorted[lo] + x_sorted[hi])
    return out


def _weights(n: int, voices: np.ndarray | None, prompts: np.ndarray | None, method: str, n_boot: int,
             rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Resample weights (n_boot, n) per turn and the label of the method used."""
    if method not in INTERVALS:
        raise ConfigError(f"interval must be one of {INTERVALS}, got {method!r}")
    if method == "cluster" and voices is not None and prompts is not None:
        w = np.ones((n_boot, n))
        used = []
        for name, codes in (("voices", voices), ("prompts", prompts)):
            levels, inv = np.unique(codes, return_inverse=True)
            if levels.size < 2:
                continue
            counts = rng.multinomial(levels.size, np.full(levels.size, 1.0 / levels.size), size=n_boot)
            w *= counts[:, inv]
            used.append(name)
        if len(used) == 2:
            return w, "cluster"
        if used:
            return w, f"cluster-{used[0]}"
        method = "turn-fallback"
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    return counts, method if method.startswith("turn") else "turn"


def _codes(df: pd.DataFrame | None, col: str, n: int) -> np.ndarray | None:
    if df is None or col not in df.columns:
        return None
    return df[col].astype("object").where(df[col].notna(), "<NA>").astype(str).to_numpy()[:n]


def bootstrap_quantiles(values, qs: Sequence[float], *, clusters: pd.DataFrame | None = None,
                        interval: Interval = "cluster", ci: float = 0.95, n_boot: int = 1000,
                        seed=0) -> tuple[np.ndarray, str]:
    """Percentile-bootstrap intervals of the quantiles ``qs`` (0..1) of ``values``.

    ``clusters``: a frame aligned with ``values`` holding :data:`CLUSTER_KEYS` (``voice_ref``, ``prompt_id``);
    without it (or with ``interval="turn"``) turns are resampled. Non-finite values are dropped (with their
    cluster labels). Returns ``(bounds, method)``: bounds of shape (len(qs), 2) and the key of
    :data:`INTERVAL_LABELS` of the method used."""
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci!r}")
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    v = v[keep]
    voices = prompts = None
    if clusters is not None:
        c = clusters.reset_index(drop=True)[keep]
        voices, prompts = _codes(c, CLUSTER_KEYS[0], v.size), _codes(c, CLUSTER_KEYS[1], v.size)
    nan = np.full((len(qs), 2), np.nan)
    if v.size == 0:
        return nan, interval
    rng = np.random.default_rng(seed)
    w, used = _weights(v.size, voices, prompts, interval, int(n_boot), rng)
    order = np.argsort(v, kind="stable")
    boots = _weighted_quantiles(v[order], w[:, order], qs)
    alpha = (1 - ci) / 2
    return np.percentile(boots, [100 * alpha, 100 * (1 - alpha)], axis=0).T, used


def bootstrap_interval(values, stat: str = "median", *, clusters: pd.DataFrame | None = None,
                       interval: Interval = "cluster", ci: float = 0.95, n_boot: int = 1000,
                       seed=0) -> tuple[float, float, str]:
    """``(low, high, method)``: percentile-bootstrap interval of the median (or ``stat="mean"``) of ``values``,
    by the two-way cluster bootstrap (default) or the turn bootstrap; see the module docstring."""
    if stat == "median":
        bounds, used = bootstrap_quantiles(values, [0.5], clusters=clusters, interval=interval, ci=ci,
                                           n_boot=n_boot, seed=seed)
        return float(bounds[0, 0]), float(bounds[0, 1]), used
    if stat != "mean":
        raise ConfigError(f"stat must be 'median' or 'mean', got {stat!r}")
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    v = v[keep]
    if v.size == 0:
        return float("nan"), float("nan"), interval
    voices = prompts = None
    if clusters is not None:
        c = clusters.reset_index(drop=True)[keep]
        voices, prompts = _codes(c, CLUSTER_KEYS[0], v.size), _codes(c, CLUSTER_KEYS[1], v.size)
    w, used = _weights(v.size, voices, prompts, interval, int(n_boot), np.random.default_rng(seed))
    boots = (w @ v) / w.sum(axis=1)
    alpha = (1 - ci) / 2
    lo, hi = np.percentile(boots, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi), used


# --------------------------------------------------------------------------- tests and corrections

def _cell_means(pairs: pd.DataFrame) -> np.ndarray:
    keys = [k for k in CLUSTER_KEYS if k in pairs.columns]
    if not keys:
        return pairs["diff"].to_numpy(dtype=float)
    return pairs.groupby(keys, dropna=False)["diff"].mean().to_numpy(dtype=float)


def paired_test(pairs: pd.DataFrame) -> dict:
    """Wilcoxon signed-rank test of the paired differences ``pairs["diff"]`` after averaging the repeats of
    each (voice_ref, prompt_id) cell. Returns ``{p_value, effect_size, n_cells}``: the two-sided p-value
    (``scipy.stats.wilcoxon``, exact for small samples; 1.0 when every cell difference is 0; NaN with no cell)
    and the matched-pairs rank-biserial correlation (Kerby 2014; +1: a above b in every cell)."""
    from scipy.stats import rankdata, wilcoxon

    d = _cell_means(pairs) if len(pairs) else np.array([])
    d = d[np.isfinite(d)]
    out = {"p_value": float("nan"), "effect_size": float("nan"), "n_cells": int(d.size)}
    if d.size == 0:
        return out
    nz = d[d != 0]
    if nz.size == 0:
        out.update(p_value=1.0, effect_size=0.0)
        return out
    ranks = rankdata(np.abs(nz))
    out["effect_size"] = float((ranks[nz > 0].sum() - ranks[nz < 0].sum()) / ranks.sum())
    out["p_value"] = float(wilcoxon(nz, zero_method="wilcox", alternative="two-sided").pvalue)
    return out


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (``statsmodels.stats.multitest.multipletests(method="holm")``) over the finite
    entries; NaN stays NaN and is not counted as a test."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


# --------------------------------------------------------------------------- formatting and verdicts

def short_names(models: Sequence[str]) -> dict[str, str]:
    """Model name -> the part that tells it apart (``qwen3.5-omni-flash-realtime`` vs ``...-plus-...`` ->
    ``flash`` / ``plus``), by dropping the dash-separated words all names share at both ends."""
    parts = [str(m).split("-") for m in models]
    if len(parts) < 2:
        return {m: m for m in models}
    pre = 0
    while all(len(p) > pre + 1 for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(p) > pre + suf + 1 for p in parts) and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    names = {m: "-".join(p[pre:len(p) - suf]) for m, p in zip(models, parts)}
    return names if len(set(names.values())) == len(names) else {m: m for m in models}


def format_value(value, spec: MetricSpec | str, *, unit: bool = False) -> str:
    """``value`` rounded to the metric's meaningful digits (a rate as a percentage); ``"–"`` when missing."""
    spec = metric_spec(spec) if isinstance(spec, str) else spec
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    if spec.percent:
        return f"{100 * v:.{spec.digits}f} %"
    text = f"{v:,.{spec.digits}f}".replace(",", " ") if spec.digits == 0 else f"{v:.{spec.digits}f}"
    if text.startswith("-") and float(text.replace(" ", "")) == 0:
        text = text[1:]
    return text + (spec.unit if unit else "")


def verdict(spec: MetricSpec | str, a: str, b: str, diff: float, lo: float, hi: float, p_holm: float,
            alpha: float = 0.05, n_cells: int | None = None) -> str:
    """A plain sentence: ``"flash faster by 160 ms [130, 180]"`` when the paired difference is detected
    (``p_holm < alpha`` AND the interval excludes 0), else ``"no detectable difference"``; with ``n_cells``
    voice x prompt cells so few that even a difference in every cell could not reach ``alpha`` (the exact
    Wilcoxon p is at least 2 / 2**n), it says so instead. ``diff``/``lo``/``hi`` are a - b."""
    spec = metric_spec(spec) if isinstance(spec, str) else spec
    if not all(math.isfinite(x) for x in (diff, lo, hi)) or not math.isfinite(p_holm):
        return "not enough pairs to compare"
    if n_cells is not None and 2.0 / 2 ** int(n_cells) >= alpha:
        return f"too few voice × prompt cells to test ({int(n_cells)}; at least 6 needed)"
    if not (p_holm < alpha and (lo > 0 or hi < 0)):
        return "no detectable difference"
    if diff < 0:  # name the model with the smaller value, and show the magnitudes b - a
        winner, word, mag, lo_, hi_ = a, spec.noun[1], -diff, -hi, -lo
    else:
        winner, word, mag, lo_, hi_ = a, spec.noun[0], diff, lo, hi
    del b
    num = format_value(mag, spec)
    return (f"{winner} {word} by {num}{'' if spec.percent else spec.unit} "
            f"[{format_value(lo_, spec)}, {format_value(hi_, spec)}]")
