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
- **Comparison table** (:func:`compare_models`): one row per metric with each model's centre, the paired
  difference and its interval, ``p_value``, ``p_holm``, ``effect_size`` and a plain verdict.
- **Planner** (:func:`plan_study`): voices x prompts x repeats that detect a chosen difference with a chosen
  power, by simulation from a pilot run's own clusters, and what the full run costs.

The metrics a report leads with and how each reads (lower/higher is better, median or rate, digits shown)
are :data:`HEADLINE_METRICS`; columns a run does not have are skipped, so the same list serves runs made
before and after the naturalness / calibrated-similarity / audible-latency columns existed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "MetricSpec",
    "HEADLINE_METRICS",
    "metric_spec",
    "headline_metrics",
    "latency_rank_metric",
    "INTERVALS",
    "INTERVAL_LABELS",
    "CLUSTER_KEYS",
    "bootstrap_interval",
    "bootstrap_quantiles",
    "paired_test",
    "holm",
    "verdict",
    "compare_models",
    "short_names",
    "format_value",
    "DEFAULT_EFFECTS",
    "StudyPlan",
    "plan_study",
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


def _has_values(df: pd.DataFrame, col: str) -> bool:
    if col not in df.columns:
        return False
    return bool(pd.to_numeric(df[col].astype("object"), errors="coerce").notna().any())


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """The :data:`HEADLINE_METRICS` that ``df`` has values for, in order."""
    return [s.name for s in HEADLINE_METRICS if _has_values(df, s.name)]


def latency_rank_metric(df: pd.DataFrame) -> str:
    """The latency models are ranked by: ``ttfa_audible_ms`` when the run has it, else ``ttfa_ms``."""
    return "ttfa_audible_ms" if _has_values(df, "ttfa_audible_ms") else "ttfa_ms"


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


# --------------------------------------------------------------------------- model comparison table

def compare_models(df: pd.DataFrame, metrics: Sequence[str] | None = None, a: str | None = None,
                   b: str | None = None, *, interval: Interval = "cluster", ci: float = 0.95,
                   n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per metric: model ``a`` vs model ``b`` on the same voice x prompt x repeat.

    Columns: ``metric, label, a, b, a_centre, b_centre`` (each model's median -- the mean for a rate -- over
    its completed turns), ``stat, n_pairs, n_cells, diff`` (centre of the paired differences a - b),
    ``ci_low, ci_high`` (its interval, ``interval_method`` says which, :data:`INTERVAL_LABELS`), ``p_value``
    (:func:`paired_test`), ``p_holm`` (Holm over the metrics of this table), ``effect_size`` (rank-biserial),
    ``simulated`` (a timing metric measured on the local service's simulated latency) and ``verdict``.
    ``metrics`` default: :func:`headline_metrics`. ``a``/``b`` default: the first two models in catalog
    order (:func:`qvtools.results.pick_pair`)."""
    from . import results

    metrics = headline_metrics(df) if metrics is None else [m for m in metrics if m in df.columns]
    if a is None or b is None:
        a, b = results.pick_pair(df)
    ok = df
    if "status" in df.columns:
        ok = df[(df["status"] == "completed").fillna(False).astype(bool)]
    rows = []
    for i, m in enumerate(metrics):
        spec = metric_spec(m)
        frame = ok.assign(**{m: pd.to_numeric(ok[m].astype("object"), errors="coerce").astype("float64")})
        pd_ = results.paired_differences(frame, m, a, b, n_boot=n_boot, ci=ci, seed=seed + i, interval=interval,
                                         stat=spec.stat)
        centre = {}
        for model in (a, b):
            v = frame.loc[frame["target_model"] == model, m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            centre[model] = float(np.median(v) if spec.stat == "median" else v.mean()) if v.size else float("nan")
        rows.append({"metric": m, "label": spec.label, "a": a, "b": b, "a_centre": centre[a],
                     "b_centre": centre[b], "stat": spec.stat, "n_pairs": pd_.n_pairs, "n_cells": pd_.n_cells,
                     "diff": pd_.median_diff if spec.stat == "median" else pd_.mean_diff,
                     "ci_low": pd_.ci_low, "ci_high": pd_.ci_high, "interval_method": pd_.interval,
                     "p_value": pd_.p_value, "effect_size": pd_.effect_size, "simulated": pd_.simulated})
    out = pd.DataFrame(rows, columns=["metric", "label", "a", "b", "a_centre", "b_centre", "stat", "n_pairs",
                                      "n_cells", "diff", "ci_low", "ci_high", "interval_method", "p_value",
                                      "effect_size", "simulated"])
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm(out["p_value"]) if len(out) else [])
    names = short_names([a, b])
    out["verdict"] = [verdict(r.metric, names[a], names[b], r.diff, r.ci_low, r.ci_high, r.p_holm, alpha, r.n_cells)
                      for r in out.itertuples()]
    out.attrs.update(ci=ci, n_boot=int(n_boot), alpha=alpha, interval=interval)
    return out


# --------------------------------------------------------------------------- planner

#: Differences the planner sizes a study for by default (metric -> smallest difference worth detecting):
#: 50 ms of time to first audible speech (of the first audio message on runs without it), 0.02 speaker
#: similarity, 0.1 DNSMOS overall.
DEFAULT_EFFECTS: dict[str, float] = {"ttfa_audible_ms": 50.0, "ttfa_ms": 50.0, "speaker_similarity": 0.02,
                                     "mos_ovrl": 0.1}

_GRID = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
_REPEATS = (1, 2, 3)


@dataclass
class StudyPlan:
    """What :func:`plan_study` found: per metric, the cheapest design of the grid reaching ``power``.

    ``table``: one row per metric (``metric, effect, voices, prompts, repeats, turns, power`` -- the
    simulated power of that design; NaN design when none of the grid reaches it) and ``cost``: per planned
    design, voices to create, their price by the enrollment billing rule and token totals scaled from the
    pilot. ``warnings``: what limits the plan (e.g. a pilot with too few voices to show voice effects)."""

    a: str
    b: str
    power: float
    alpha: float
    table: pd.DataFrame
    cost: pd.DataFrame
    n_sim: int
    pilot: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def text(self) -> str:
        """The plan as plain text (what ``qvtools plan`` prints)."""
        names = short_names([self.a, self.b])
        lines = [f"Study plan: {names[self.a]} vs {names[self.b]}, {100 * self.power:.0f} % power at "
                 f"alpha {self.alpha} per metric (Bonferroni over the planned metrics: Holm's strictest step), "
                 f"by {self.n_sim} simulated studies per design resampled from the pilot's voices, prompts and "
                 f"repeats (pilot: {self.pilot.get('voices')} voices x {self.pilot.get('prompts')} prompts x "
                 f"{self.pilot.get('repeats')} repeats)."]
        for r in self.table.itertuples():
            eff = format_value(r.effect, r.metric, unit=True)
            if pd.isna(r.voices):
                lines.append(f"- {r.metric}: a difference of {eff} is not detected with {100 * self.power:.0f} % "
                             f"power by any design up to {max(_GRID)} voices x {max(_GRID)} prompts x "
                             f"{max(_REPEATS)} repeats (best: {r.power:.0%}).")
            else:
                lines.append(f"- {r.metric}: {eff} -> {int(r.voices)} voices x {int(r.prompts)} prompts x "
                             f"{int(r.repeats)} repeat(s) = {int(r.turns)} turns per model "
                             f"(simulated power {r.power:.0%}).")
        if not self.cost.empty:
            lines.append("Cost against the cloud of each design (voices to create: one clone per voice and model; "
                         "tokens scaled from the pilot's per-turn totals):")
            for r in self.cost.itertuples():
                lines.append(f"- {r.design}: {r.voices_to_create} voice(s) to create, ${r.voice_cost_usd:.2f} by the "
                             f"billing rule; {int(r.total_tokens):,} tokens in {int(r.turns)} turns"
                             + (f"; tokens {r.token_cost:.2f} {r.currency}" if pd.notna(r.token_cost) else ""))
        lines += [f"Note: {w}" for w in self.warnings]
        return "\n".join(lines)


def _pilot_pools(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The pilot's centred differences as a padded (voices, prompts, k) array and the count per cell; a cell
    the pilot lacks borrows its voice's other cells."""
    v = pairs["voice_ref"].astype(str)
    p = pairs["prompt_id"].astype(str)
    voices, prompts = sorted(v.unique()), sorted(p.unique())
    cells = {key: g["resid"].to_numpy(dtype=float) for key, g in pairs.groupby([v, p])}
    by_voice = {vv: np.concatenate([x for (a, _), x in cells.items() if a == vv]) for vv in voices}
    filled = {(vv, pp): cells.get((vv, pp), by_voice[vv]) for vv in voices for pp in prompts}
    k = max(x.size for x in filled.values())
    pool = np.zeros((len(voices), len(prompts), k))
    count = np.zeros((len(voices), len(prompts)), dtype=int)
    for i, vv in enumerate(voices):
        for j, pp in enumerate(prompts):
            x = filled[(vv, pp)]
            pool[i, j, :x.size], count[i, j] = x, x.size
    return pool, count


def _simulate_power(pool: np.ndarray, count: np.ndarray, effect: float, V: int, P: int, R: int, *, alpha: float,
                    n_sim: int, rng: np.random.Generator) -> float:
    """Share of ``n_sim`` simulated studies of V voices x P prompts x R repeats that detect ``effect``.

    Each study is drawn from the pilot (:func:`_pilot_pools`): voices and prompts with replacement (a voice
    keeps its own cells), each cell's R repeats with replacement from that pilot cell; the pilot's differences
    are centred on 0 and ``effect`` added. Detected: the Wilcoxon signed-rank test on the cell means (normal
    approximation: resampled cells tie, and scipy's exact-with-ties path is a slow permutation) gives p < alpha AND the two-way interval of the mean cell difference excludes 0 -- the interval from the
    crossed random-effects variance (Var = (MS_voice + MS_prompt - MS_residual) / (V P), method of moments,
    t with min(V, P) - 1 degrees of freedom), a fast stand-in for the report's cluster bootstrap."""
    from scipy.stats import t as student_t
    from scipy.stats import wilcoxon

    vs = rng.integers(0, pool.shape[0], (n_sim, V))
    ps = rng.integers(0, pool.shape[1], (n_sim, P))
    n = count[vs[:, :, None], ps[:, None, :]]  # (n_sim, V, P)
    k = (rng.random((n_sim, V, P, R)) * n[..., None]).astype(int)
    draws = pool[vs[:, :, None, None], ps[:, None, :, None], k]
    y = draws.mean(axis=3) + effect  # cell means (n_sim, V, P)
    flat = y.reshape(n_sim, V * P)
    if V * P < 2:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        p_w = np.asarray(wilcoxon(flat, axis=1, method="asymptotic").pvalue, dtype=float)
        g = y.mean(axis=(1, 2))
        rows, cols = y.mean(axis=2), y.mean(axis=1)
        ms_r = P * ((rows - g[:, None]) ** 2).sum(axis=1) / (V - 1) if V > 1 else np.zeros(n_sim)
        ms_c = V * ((cols - g[:, None]) ** 2).sum(axis=1) / (P - 1) if P > 1 else np.zeros(n_sim)
        resid = y - rows[:, :, None] - cols[:, None, :] + g[:, None, None]
        df_e = max(1, (V - 1) * (P - 1)) if V > 1 and P > 1 else max(1, V * P - 1)
        ms_e = (resid ** 2).sum(axis=(1, 2)) / df_e if V > 1 and P > 1 else flat.var(axis=1, ddof=1)
        var = np.maximum(ms_r + ms_c - (ms_e if V > 1 and P > 1 else 0.0), ms_e) / (V * P)
        df = max(1, min(V, P) - 1) if V > 1 and P > 1 else V * P - 1
        half = student_t.ppf(1 - alpha / 2, df) * np.sqrt(var)
    detected = (p_w < alpha) & (np.abs(g) > half)
    return float(np.mean(detected))


def plan_study(df: pd.DataFrame, effects: Mapping[str, float] | None = None, a: str | None = None,
               b: str | None = None, *, power: float = 0.8, alpha: float = 0.05, n_sim: int = 400, seed: int = 0, prices=None, free_creations_left: int | None = None,
               max_voices: int = max(_GRID), max_prompts: int = max(_GRID)) -> StudyPlan:
    """From a pilot run's table, how many voices x prompts x repeats detect each difference of ``effects``
    (metric -> difference, default :data:`DEFAULT_EFFECTS`, metrics the pilot lacks skipped; of the latency
    pair only ``ttfa_audible_ms`` is planned when present) with ``power``, and what that run costs.

    Power is simulated (:func:`_simulate_power`): studies are resampled from the pilot's own voices, prompts
    and repeats, so the pilot's voice and prompt effects carry over -- and a pilot with few voices or prompts
    shows few of them (a warning says so). Designs are tried from the cheapest (fewest turns) up; the first
    reaching ``power`` is kept. Each metric is tested at ``alpha / n_metrics`` (Holm's strictest step).
    Cost: voices to create (one clone per voice and model) priced by the enrollment billing rule
    (:func:`qvtools.experiment.voice_creation_cost`; ``free_creations_left`` defaults to the full free quota)
    and token totals scaled from the pilot's per-turn totals; ``prices`` (the user's table,
    :func:`qvtools.results.load_prices`) adds a token cost."""
    from . import results
    from .experiment import FREE_VOICE_CREATIONS, voice_creation_cost

    if not 0 < power < 1:
        raise ConfigError(f"power must be in (0, 1), got {power!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if int(n_sim) < 10:
        raise ConfigError(f"n_sim must be >= 10, got {n_sim!r}")
    default_effects = effects is None
    effects = dict(DEFAULT_EFFECTS if effects is None else effects)
    for m, e in effects.items():
        if not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
            raise ConfigError(f"the difference to detect for {m} must be a positive number, got {e!r}")
    if default_effects and _has_values(df, "ttfa_audible_ms"):
        effects.pop("ttfa_ms")  # the default latency target is the audible one when the run has it
    if a is None or b is None:
        a, b = results.pick_pair(df)
    planned = [m for m in effects if _has_values(df, m)]
    skipped = [m for m in effects if m not in planned]
    warnings = []
    if skipped:
        warnings.append(f"not planned (no values in the pilot): {', '.join(skipped)}")
    alpha_m = alpha / max(1, len(planned))
    rng = np.random.default_rng(seed)
    ok = df[(df["status"] == "completed").fillna(False).astype(bool)] if "status" in df.columns else df
    pilot = {"voices": int(ok["voice_ref"].nunique()), "prompts": int(ok["prompt_id"].nunique()),
             "repeats": int(ok["repeat"].nunique()) if "repeat" in ok.columns else 1}
    if pilot["voices"] < 4 or pilot["prompts"] < 4:
        warnings.append(f"the pilot has {pilot['voices']} voice(s) and {pilot['prompts']} prompt(s): the "
                        "simulation can only reuse those, so voice and prompt effects are poorly estimated; a "
                        "pilot of at least 4 voices x 4 prompts gives a more trustworthy plan")
    designs = sorted({(v, p, r) for v in _GRID for p in _GRID for r in _REPEATS
                      if v <= max_voices and p <= max_prompts}, key=lambda d: (d[0] * d[1] * d[2], d[0], d[2]))
    rows = []
    for m in planned:
        frame = ok.assign(**{m: pd.to_numeric(ok[m].astype("object"), errors="coerce").astype("float64")})
        pairs = results.paired_differences(frame, m, a, b, n_boot=1).pairs
        if pairs.empty:
            warnings.append(f"{m}: no paired turns in the pilot")
            continue
        pool, count = _pilot_pools(pairs.assign(resid=pairs["diff"] - pairs["diff"].mean()))
        found, best = None, 0.0
        for V, P, R in designs:
            pw = _simulate_power(pool, count, float(effects[m]), V, P, R, alpha=alpha_m, n_sim=int(n_sim), rng=rng)
            best = max(best, pw)
            if pw >= power:
                found = (V, P, R, pw)
                break
        if found:
            rows.append({"metric": m, "effect": float(effects[m]), "voices": found[0], "prompts": found[1],
                         "repeats": found[2], "turns": found[0] * found[1] * found[2], "power": found[3]})
        else:
            rows.append({"metric": m, "effect": float(effects[m]), "voices": np.nan, "prompts": np.nan,
                         "repeats": np.nan, "turns": np.nan, "power": best})
    table = pd.DataFrame(rows, columns=["metric", "effect", "voices", "prompts", "repeats", "turns", "power"])
    # -- cost of each distinct design found
    models = [a, b]
    totals = results.token_totals(df[df["target_model"].isin(models)])
    per_turn = {m: (totals.loc[m, "total_tokens"] / max(1, totals.loc[m, "turns"])) if m in totals.index else 0.0
                for m in models}
    token_cost_per_turn = None
    if prices is not None:
        est = results.estimate_cost(df[df["target_model"].isin(models)], prices)
        token_cost_per_turn = {m: (est.loc[m, "cost"] / max(1, totals.loc[m, "turns"])) if m in est.index
                               else float("nan") for m in models}
        currency = str(est["currency"].iloc[0]) if len(est) else ""
    free = FREE_VOICE_CREATIONS if free_creations_left is None else int(free_creations_left)
    cost_rows = []
    for r in table.dropna(subset=["voices"]).drop_duplicates(["voices", "prompts", "repeats"]).itertuples():
        V, P, R = int(r.voices), int(r.prompts), int(r.repeats)
        turns = V * P * R * len(models)
        n_voices = V * len(models)
        cost_rows.append({"design": f"{V} voices x {P} prompts x {R} repeat(s)", "turns": turns,
                          "voices_to_create": n_voices,
                          "voice_cost_usd": voice_creation_cost(n_voices, free_left=free),
                          "total_tokens": float(sum(per_turn[m] * V * P * R for m in models)),
                          "token_cost": (float(sum(token_cost_per_turn[m] * V * P * R for m in models))
                                         if token_cost_per_turn else float("nan")),
                          "currency": currency if token_cost_per_turn else ""})
    cost = pd.DataFrame(cost_rows, columns=["design", "turns", "voices_to_create", "voice_cost_usd",
                                            "total_tokens", "token_cost", "currency"])
    if prices is None:
        warnings.append("no price table given: token totals only (qvtools ships no token prices)")
    return StudyPlan(a=a, b=b, power=power, alpha=alpha, table=table, cost=cost, n_sim=int(n_sim), pilot=pilot,
                     warnings=warnings)
