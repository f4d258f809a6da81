"""qvtools.stats: design-respecting intervals, paired tests, Holm, verdicts and the study planner.

Controlled inputs (issue 20 item 6): a simulated crossed voice x prompt x repeat data set with strong voice
effects, where the true paired difference is known."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from qvtools import planner, results, stats
from qvtools.errors import ConfigError
from qvtools.experiment import voice_creation_cost

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"


def _crossed(rng, *, V=8, P=6, R=2, delta=100.0, sd_voice=60.0, sd_prompt=30.0, sd_turn=15.0,
             metric="ttfa_ms") -> pd.DataFrame:
    """plus = flash + delta + voice effect + prompt effect + noise, on every voice x prompt x repeat."""
    u, w = rng.normal(0, sd_voice, V), rng.normal(0, sd_prompt, P)
    rows = []
    for v in range(V):
        for p in range(P):
            for r in range(R):
                base = 800 + rng.normal(0, 100)
                key = dict(voice_ref=f"v{v}", prompt_id=f"p{p}", repeat=r, status="completed")
                rows.append({**key, "target_model": FLASH, metric: base})
                rows.append({**key, "target_model": PLUS, metric: base + delta + u[v] + w[p] + rng.normal(0, sd_turn)})
    return results.to_frame(rows)


def test_cluster_interval_is_wider_and_covers_near_nominal_rate():
    rng = np.random.default_rng(20)
    n_sim, true = 60, 100.0
    cover = {"cluster": 0, "turn": 0}
    width = {"cluster": [], "turn": []}
    for i in range(n_sim):
        df = _crossed(rng, delta=true)
        for method in cover:
            r = results.paired_differences(df, "ttfa_ms", PLUS, FLASH, interval=method, n_boot=300, seed=i)
            assert r.interval == method
            cover[method] += r.ci_low <= true <= r.ci_high
            width[method].append(r.ci_high - r.ci_low)
    assert np.mean(width["cluster"]) > 2 * np.mean(width["turn"])
    # nominal 95 %: the two-way bootstrap is slightly conservative (measured 98/100 with another seed);
    # resampling turns as if independent covers about half the time here
    assert cover["cluster"] / n_sim >= 0.88
    assert cover["turn"] / n_sim <= 0.75


def test_interval_method_is_named_and_falls_back_without_clusters():
    rng = np.random.default_rng(1)
    one_voice = _crossed(rng, V=1, P=10)
    r = results.paired_differences(one_voice, "ttfa_ms", PLUS, FLASH, n_boot=100)
    assert r.interval == "cluster-prompts"
    one_cell = _crossed(rng, V=1, P=1, R=10)
    r = results.paired_differences(one_cell, "ttfa_ms", PLUS, FLASH, n_boot=100)
    assert r.interval == "turn-fallback" and r.ci_low < r.ci_high
    assert set(stats.INTERVAL_LABELS) >= {"cluster", "cluster-voices", "cluster-prompts", "turn", "turn-fallback"}
    s = results.summarize(_crossed(rng), metrics="ttfa_ms", n_boot=100)
    assert set(s["interval"]) == {"cluster"}
    assert set(results.summarize(_crossed(rng), metrics="ttfa_ms", n_boot=100, interval="turn")["interval"]) == {"turn"}
    with pytest.raises(ConfigError, match="interval"):
        results.paired_differences(one_voice, "ttfa_ms", PLUS, FLASH, interval="pairs")


def test_weighted_median_with_equal_weights_is_numpy_median():
    for n in (1, 2, 5, 6):
        x = np.sort(np.random.default_rng(n).normal(size=n))
        got = stats._weighted_quantiles(x, np.ones((1, n)), [0.5])[0, 0]
        assert got == pytest.approx(np.median(x))


def test_paired_test_is_wilcoxon_on_cell_means():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(3)
    df = _crossed(rng, V=5, P=4, R=3, delta=10.0)
    r = results.paired_differences(df, "ttfa_ms", PLUS, FLASH, n_boot=50)
    cells = r.pairs.groupby(["voice_ref", "prompt_id"])["diff"].mean().to_numpy()
    assert r.n_cells == 20 and r.n_pairs == 60
    assert r.p_value == pytest.approx(wilcoxon(cells).pvalue)
    pos = pd.DataFrame({"voice_ref": list("abcdef"), "prompt_id": "p", "diff": [1.0, 2, 3, 4, 5, 6]})
    t = stats.paired_test(pos)
    assert t["effect_size"] == 1.0 and t["p_value"] == pytest.approx(2 / 2 ** 6)  # exact: one sign pattern of 64
    zero = stats.paired_test(pos.assign(diff=0.0))
    assert zero["p_value"] == 1.0 and zero["effect_size"] == 0.0
    assert math.isnan(stats.paired_test(pos.iloc[0:0])["p_value"])


def test_holm_matches_statsmodels_and_a_hand_step_down():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1])
    # by hand: sorted p * (m - rank), running max, capped at 1
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    expect = np.empty_like(adj)
    expect[order] = adj
    assert np.allclose(stats.holm(p), expect)
    with_nan = stats.holm([0.01, np.nan, 0.02])
    assert math.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], multipletests([0.01, 0.02], method="holm")[1])


def test_compare_models_headline_rows_and_verdicts():
    rng = np.random.default_rng(5)
    df = _crossed(rng, V=10, P=8, delta=160.0, sd_voice=10.0, sd_prompt=5.0)
    df["speaker_similarity"] = 0.8 + rng.normal(0, 0.01, len(df))
    t = results.compare_models(df, n_boot=300)
    assert list(t["metric"]) == ["ttfa_ms", "speaker_similarity"]  # headline order, missing columns skipped
    lat = t.set_index("metric").loc["ttfa_ms"]
    assert lat["a"] == PLUS and lat["interval_method"] == "cluster"
    assert lat["p_holm"] >= lat["p_value"] and lat["p_holm"] < 0.05
    m = re.fullmatch(r"plus slower by (\d+) ms \[(\d+), (\d+)\]", lat["verdict"])
    assert m, lat["verdict"]
    assert 140 <= int(m.group(1)) <= 180 and int(m.group(2)) <= 160 <= int(m.group(3))
    assert t.set_index("metric").loc["speaker_similarity", "verdict"] == "no detectable difference"
    assert np.allclose(t["p_holm"], stats.holm(t["p_value"]))


def test_verdict_and_formatting():
    assert stats.verdict("ttfa_audible_ms", "plus", "flash", -160.4, -181.0, -129.6, 0.001) == \
        "plus faster by 160 ms [130, 181]"
    assert stats.verdict("ttfa_ms", "plus", "flash", 160.0, 130.0, 180.0, 0.2) == "no detectable difference"
    assert stats.verdict("ttfa_ms", "plus", "flash", 10.0, -5.0, 20.0, 0.001) == "no detectable difference"
    assert stats.verdict("ttfa_ms", "plus", "flash", 548.0, 540.0, 560.0, 0.25, n_cells=3).startswith(
        "too few voice × prompt cells to test (3")
    assert stats.verdict("ttfa_ms", "plus", "flash", 548.0, 540.0, 560.0, 0.03, n_cells=6).startswith("plus slower")
    assert stats.verdict("speaker_similarity", "plus", "flash", 0.031, 0.012, 0.05, 0.01) == \
        "plus higher by 0.031 [0.012, 0.050]"
    assert stats.verdict("speaker_identified", "a", "b", -0.25, -0.4, -0.1, 0.01) == "a lower by 25 % [10 %, 40 %]"
    assert stats.format_value(392.971, "ttfa_ms") == "393" and stats.format_value(1234.5, "e2e_ms") == "1 234"
    assert stats.format_value(float("nan"), "wer") == "–" and stats.format_value(None, "wer") == "–"
    assert stats.short_names([PLUS, FLASH]) == {PLUS: "plus", FLASH: "flash"}
    assert stats.short_names(["alpha", "beta"]) == {"alpha": "alpha", "beta": "beta"}
    q3 = "qwen3-omni-flash-realtime"
    assert stats.short_names([q3, FLASH]) == {q3: "qwen3", FLASH: "qwen3.5"}


def test_headline_metrics_skip_missing_columns_and_rank_latency():
    df = results.to_frame([{"target_model": PLUS, "ttfa_ms": 1.0, "wer": 0.1}])
    assert stats.headline_metrics(df) == ["ttfa_ms", "wer"] and stats.latency_rank_metric(df) == "ttfa_ms"
    df["ttfa_audible_ms"] = 5.0
    assert stats.headline_metrics(df)[0] == "ttfa_audible_ms" and stats.latency_rank_metric(df) == "ttfa_audible_ms"


def test_planner_sizes_and_prices_a_study():
    rng = np.random.default_rng(9)
    pilot = _crossed(rng, V=4, P=4, R=2, delta=0.0, sd_voice=20.0, sd_prompt=10.0, sd_turn=30.0)
    for m, tok in ((PLUS, 900), (FLASH, 700)):
        pilot.loc[pilot["target_model"] == m, "total_tokens"] = tok
    easy = planner.plan_study(pilot, {"ttfa_ms": 200.0}, PLUS, FLASH, n_sim=40, seed=1)
    hard = planner.plan_study(pilot, {"ttfa_ms": 30.0}, PLUS, FLASH, n_sim=40, seed=1)
    e, h = easy.table.iloc[0], hard.table.iloc[0]
    assert e["power"] >= 0.8 and h["power"] >= 0.8
    assert e["turns"] < h["turns"]  # a smaller difference needs a bigger study
    cost = hard.cost.iloc[0]
    V, P, R = int(h["voices"]), int(h["prompts"]), int(h["repeats"])
    assert cost["voices_to_create"] == 2 * V and cost["turns"] == 2 * V * P * R
    assert cost["total_tokens"] == pytest.approx((900 + 700) * V * P * R)
    assert cost["voice_cost_usd"] == 0.0  # inside the free quota
    assert "voices" in hard.text() and "billing rule" in hard.text()
    tight = planner.plan_study(pilot, {"ttfa_ms": 30.0}, PLUS, FLASH, n_sim=40, seed=1,
                             free_creations_left=0)
    assert tight.cost.iloc[0]["voice_cost_usd"] == pytest.approx(0.01 * 2 * V)
    impossible = planner.plan_study(pilot, {"ttfa_ms": 0.01}, PLUS, FLASH, n_sim=10, max_voices=3,
                                  max_prompts=3)
    assert math.isnan(impossible.table.iloc[0]["voices"]) and "not detected" in impossible.text()
    with pytest.raises(ConfigError, match="positive"):
        planner.plan_study(pilot, {"ttfa_ms": -5})


def test_voice_creation_cost_follows_the_billing_rule():
    assert voice_creation_cost(10) == 0.0
    assert voice_creation_cost(10, free_left=4) == pytest.approx(0.06)
    assert voice_creation_cost(1500, free_left=1000) == pytest.approx(5.0)
