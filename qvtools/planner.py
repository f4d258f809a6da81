"""Study planner: from a pilot run, the voices x prompts x repeats that detect a chosen difference between two
models with a chosen power, and what that run costs against the cloud (``qvtools plan RUN_DIR``).

Power is simulated by resampling the pilot's own voices, prompts and repeats (so its voice and prompt effects
carry over) and applying a detection rule close to the report's (:mod:`qvtools.stats`: Wilcoxon signed-rank
on the per voice x prompt means AND a two-way interval that excludes 0). Voices to create are priced by the
enrollment billing rule (:func:`qvtools.experiment.voice_creation_cost`); tokens are scaled from the pilot.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from .errors import ConfigError
from .experiment import FREE_VOICE_CREATIONS, voice_creation_cost
from .stats import format_value, has_values, short_names

__all__ = ["DEFAULT_EFFECTS", "StudyPlan", "plan_study"]

log = logging.getLogger(__name__)


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
                 f"alpha {self.alpha} shared by the {max(1, len(self.table))} planned metric(s) (each tested at "
                 f"alpha / {max(1, len(self.table))}: Holm's strictest step), "
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
    if default_effects and has_values(df, "ttfa_audible_ms"):
        effects.pop("ttfa_ms")  # the default latency target is the audible one when the run has it
    if a is None or b is None:
        a, b = results.pick_pair(df)
    planned = [m for m in effects if has_values(df, m)]
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
