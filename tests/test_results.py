"""qvtools.results: schema, to_frame, summaries with bootstrap CIs, paired differences."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qvtools import metrics, results
from qvtools.errors import ConfigError

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"


def test_docstring_table_matches_columns():
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", results.__doc__, flags=re.M)
    assert [name for name, _ in documented] == list(results.COLUMNS)
    assert all(results.COLUMNS[name][0] == dtype for name, dtype in documented)


def test_metric_functions_produce_schema_columns():
    from qvtools.realtime.turn import Turn

    lat = metrics.latency_metrics(Turn(model=PLUS))
    assert set(lat) <= set(results.COLUMNS)
    assert set(metrics.usage_metrics(None)) <= set(results.COLUMNS)


def test_to_frame_order_dtypes_unknown_and_missing():
    rows = [
        {"zzz_extra": 1, "ttfa_ms": 512.5, "target_model": PLUS, "repeat": 0, "simulated": True,
         "status": "completed", "chunk_count": 12},
        {"target_model": FLASH, "repeat": 1, "status": "failed", "error": "boom", "another": "x"},
    ]
    df = results.to_frame(rows)
    assert list(df.columns[: len(results.COLUMNS)]) == list(results.COLUMNS)
    assert list(df.columns[len(results.COLUMNS):]) == ["zzz_extra", "another"]
    for name, (dtype, _) in results.COLUMNS.items():
        assert str(df[name].dtype) == dtype, name
    assert df.loc[0, "ttfa_ms"] == 512.5 and math.isnan(df.loc[1, "ttfa_ms"])
    assert math.isnan(df.loc[0, "loudness_lufs"])
    assert df.loc[1, "error"] == "boom" and pd.isna(df.loc[0, "error"])
    assert df.loc[0, "simulated"] == True and pd.isna(df.loc[1, "simulated"])  # noqa: E712
    assert df["chunk_count"].iloc[0] == 12
    # round-trips through parquet with the same dtypes
    assert len(results.to_frame([])) == 0


def test_to_frame_parquet_roundtrip(tmp_path):
    df = results.to_frame([{"ttfa_ms": 1.0, "target_model": PLUS, "repeat": 2, "simulated": False}])
    df.to_parquet(tmp_path / "r.parquet")
    back = pd.read_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(results.to_frame(back), df)


def test_to_frame_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="ttfa_ms"):
        results.to_frame([{"ttfa_ms": "fast"}])
    with pytest.raises(ConfigError, match="row 0"):
        results.to_frame([("not", "a dict")])


def _synthetic(rng, n_prompts=30):
    rows = []
    for p in range(n_prompts):
        for rep in range(2):
            base = rng.normal(800, 100)
            rows.append({"target_model": PLUS, "voice_ref": "v1", "prompt_id": f"p{p}", "repeat": rep,
                         "status": "completed", "ttfa_ms": base + 200, "e2e_ms": base + 2000})
            rows.append({"target_model": FLASH, "voice_ref": "v1", "prompt_id": f"p{p}", "repeat": rep,
                         "status": "completed", "ttfa_ms": base, "e2e_ms": base + 1500})
    rows.append({"target_model": FLASH, "voice_ref": "v1", "prompt_id": "px", "repeat": 0,
                 "status": "failed", "error": "timeout"})
    return results.to_frame(rows)


def test_summarize_percentiles_and_ci(rng):
    df = _synthetic(rng)
    s = results.summarize(df, metrics=("ttfa_ms", "e2e_ms"), n_boot=500)
    assert set(s["target_model"]) == {PLUS, FLASH} and len(s) == 4
    flash = s[(s.target_model == FLASH) & (s.metric == "ttfa_ms")].iloc[0]
    assert flash["n"] == 61 and flash["n_completed"] == 60 and flash["n_valid"] == 60
    assert flash["success_rate"] == pytest.approx(60 / 61)
    v = df[(df.target_model == FLASH) & (df.status == "completed")]["ttfa_ms"].to_numpy()
    for q in (50, 90, 95):
        assert flash[f"p{q}"] == pytest.approx(np.percentile(v, q))
        assert flash[f"p{q}_lo"] <= flash[f"p{q}"] <= flash[f"p{q}_hi"]
    # seeded: same input -> same CIs
    pd.testing.assert_frame_equal(s, results.summarize(df, metrics=("ttfa_ms", "e2e_ms"), n_boot=500))


def test_summarize_overall_and_empty_groups():
    df = results.to_frame([{"target_model": PLUS, "status": "failed"}, {"target_model": FLASH, "status": "completed",
                                                                       "ttfa_ms": 700.0}])
    s = results.summarize(df, by=None, metrics="ttfa_ms", n_boot=50)
    assert len(s) == 1 and s.loc[0, "p50"] == 700.0 and s.loc[0, "p50_lo"] == 700.0
    per = results.summarize(df, metrics="ttfa_ms", n_boot=50).set_index("target_model")
    assert math.isnan(per.loc[PLUS, "p50"]) and per.loc[PLUS, "success_rate"] == 0.0
    with pytest.raises(ConfigError, match="nope"):
        results.summarize(df, metrics="nope")
    with pytest.raises(ConfigError, match="ci"):
        results.summarize(df, ci=1.5)


def test_summarize_labels_simulated_latency_metrics():
    rows = [{"target_model": FLASH, "status": "completed", "simulated": True, "ttfa_ms": 800.0 + i,
             "speaker_similarity": 0.8} for i in range(3)]
    rows += [{"target_model": PLUS, "status": "completed", "simulated": False, "ttfa_ms": 900.0,
              "speaker_similarity": 0.7}]
    s = results.summarize(results.to_frame(rows), metrics=("ttfa_ms", "speaker_similarity"), n_boot=20)
    flags = {(r.target_model, r.metric): r.simulated for r in s.itertuples()}
    assert flags == {(FLASH, "ttfa_ms"): True, (FLASH, "speaker_similarity"): False,
                     (PLUS, "ttfa_ms"): False, (PLUS, "speaker_similarity"): False}
    assert results.paired_differences(results.to_frame(rows), "ttfa_ms").simulated is True
    assert results.paired_differences(results.to_frame(rows), "speaker_similarity").simulated is False
    # no simulated column in the input: no column in the output
    plain = results.summarize(pd.DataFrame({"target_model": [FLASH], "ttfa_ms": [1.0]}), metrics="ttfa_ms", n_boot=5)
    assert "simulated" not in plain.columns


def test_every_timing_column_is_flagged_simulated_and_no_audio_column():
    # issue 11: delivery_rtf comes from the profile's delivery rate, yet its summary said simulated = False
    assert set(results.SIMULATED_COLUMNS) <= set(results.COLUMNS)
    for col in ("delivery_rtf", "response_created_ms", "ttfa_created_ms", "gap_p95_ms", "underrun_count"):
        assert results.is_simulated_metric(col), col
    for col in ("speaker_similarity", "wer", "loudness_lufs", "reply_duration_s", "output_audio_tokens",
                "vad_silence_ms", "metrics_s"):
        assert not results.is_simulated_metric(col), col
    rows = [{"target_model": FLASH, "status": "completed", "simulated": True, "delivery_rtf": 2.0 + i,
             "underrun_count": 0, "wer": 0.1} for i in range(3)]
    s = results.summarize(results.to_frame(rows), metrics=("delivery_rtf", "underrun_count", "wer"), n_boot=20)
    assert dict(zip(s["metric"], s["simulated"])) == {"delivery_rtf": True, "underrun_count": True, "wer": False}
    assert results.paired_differences(results.to_frame(rows), "delivery_rtf").simulated is True


def test_latency_source_is_a_schema_column():
    df = results.to_frame([{"target_model": FLASH, "latency_source": "replay:run/results.parquet"}])
    assert str(df["latency_source"].dtype) == "string" and df.loc[0, "latency_source"] == "replay:run/results.parquet"
    assert list(df.columns).index("latency_source") == list(df.columns).index("simulated") + 1


def test_paired_differences(rng):
    df = _synthetic(rng)
    r = results.paired_differences(df, "ttfa_ms", n_boot=500)
    assert r.a == PLUS and r.b == FLASH and r.n_pairs == 60
    assert r.median_diff == pytest.approx(200.0)
    assert r.ci_low == pytest.approx(200.0) and r.ci_high == pytest.approx(200.0)
    assert r.a_lower_ratio == 0.0
    assert list(r.pairs.columns) == ["voice_ref", "prompt_id", "repeat", "a", "b", "diff"]
    assert r.to_dict()["n_pairs"] == 60


def test_paired_differences_noisy_ci_and_unpaired(rng):
    rows = []
    for p in range(40):
        rows.append({"target_model": PLUS, "voice_ref": "v", "prompt_id": f"p{p}", "repeat": 0,
                     "status": "completed", "ttfa_ms": 1000 + rng.normal(0, 50)})
        rows.append({"target_model": FLASH, "voice_ref": "v", "prompt_id": f"p{p}", "repeat": 0,
                     "status": "completed", "ttfa_ms": 900 + rng.normal(0, 50)})
    rows.append({"target_model": PLUS, "voice_ref": "v", "prompt_id": "only-plus", "repeat": 0,
                 "status": "completed", "ttfa_ms": 5.0})
    r = results.paired_differences(results.to_frame(rows), "ttfa_ms", n_boot=1000)
    assert r.n_pairs == 40
    assert r.ci_low < r.median_diff < r.ci_high
    assert 50 < r.ci_low and r.ci_high < 150
    empty = results.paired_differences(results.to_frame(rows[:1]), "ttfa_ms")
    assert empty.n_pairs == 0 and math.isnan(empty.median_diff)


def test_bootstrap_ci_contains_median(rng):
    v = rng.normal(10, 1, 200)
    lo, hi = results.bootstrap_ci(v, n_boot=500)
    assert lo < np.median(v) < hi and hi - lo < 0.6


def test_bootstrap_ci_is_scipy_bootstrap():
    """bootstrap_ci now calls scipy.stats.bootstrap; these are the numbers of the former loop (issue 12)."""
    def former(v, stat, ci=0.95, n_boot=1000, seed=0):
        rng = np.random.default_rng(seed)
        boots = np.array([stat(v[rng.integers(0, v.size, v.size)]) for _ in range(n_boot)])
        return tuple(float(b) for b in np.percentile(boots, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]))

    for n in (2, 5, 6, 37, 200):
        v = np.random.default_rng(n).lognormal(6, 0.3, n)
        # same resamples, same percentiles; scipy's reductions run in another order: equal to the last bit or two
        for stat in (np.median, np.mean):
            assert results.bootstrap_ci(v, stat, seed=3) == pytest.approx(former(v, stat, seed=3), rel=1e-14, abs=0)
        assert results.bootstrap_ci(v, ci=0.9, n_boot=300) == pytest.approx(former(v, np.median, ci=0.9, n_boot=300),
                                                                          rel=1e-14, abs=0)
    assert results.bootstrap_ci([4.0, np.nan]) == (4.0, 4.0)
    assert results.bootstrap_ci(np.full(10, 2.0)) == (2.0, 2.0)
    assert all(math.isnan(b) for b in results.bootstrap_ci([np.nan]))


# --------------------------------------------------------------------------- any model names (issue 9 item 2)

Q3, Q38, NEW = "qwen3-omni-flash-realtime", "qwen3.8-omni-flash-realtime", "qwen9-omni-giga-realtime"


def test_model_order_is_catalog_order_then_as_given():
    assert results.model_order([NEW, Q38, FLASH + "-2026-03-15", "zz-custom", PLUS, FLASH + "-2026-03-15"]) == \
        [PLUS, FLASH + "-2026-03-15", Q38, NEW, "zz-custom"]


def test_paired_differences_pairs_any_two_models_present():
    rows = []
    for p in range(5):
        for m, base in ((NEW, 300.0), (Q3, 500.0), (Q38, 800.0)):
            rows.append({"target_model": m, "voice_ref": "v", "prompt_id": f"p{p}", "repeat": 0,
                         "status": "completed", "ttfa_ms": base + p})
    df = results.to_frame(rows)
    r = results.paired_differences(df, "ttfa_ms", n_boot=50)  # default: first two in catalog order
    assert (r.a, r.b) == (Q3, Q38) and r.n_pairs == 5 and r.median_diff == pytest.approx(-300.0)
    r = results.paired_differences(df, "ttfa_ms", NEW, Q3, n_boot=50)
    assert r.n_pairs == 5 and r.median_diff == pytest.approx(-200.0)
    r = results.paired_differences(df, "ttfa_ms", b=NEW, n_boot=50)
    assert (r.a, r.b) == (Q3, NEW)
    with pytest.raises(ConfigError, match="two different models"):
        results.paired_differences(df, "ttfa_ms", Q3, Q3)


# --------------------------------------------------------------------------- degraded clones and latency provenance

def test_fallback_and_provenance_columns_typed():
    df = results.to_frame([
        {"target_model": PLUS, "voice_fallback_mode": True, "voice_fallback_reason": "text mismatch",
         "audio_pacing": "realtime", "turn_detection": "server_vad", "vad_silence_ms": 800,
         "latency_origin": "speech_end_sent", "vad_window_included": True},
        {"target_model": FLASH, "audio_pacing": "fast", "turn_detection": "manual",
         "latency_origin": "speech_end_sent", "vad_window_included": False}])
    assert df["voice_fallback_mode"].tolist()[0] is True and pd.isna(df.loc[1, "voice_fallback_mode"])
    assert str(df["vad_silence_ms"].dtype) == "float64" and df.loc[0, "vad_silence_ms"] == 800.0
    note = results.latency_provenance(df)
    assert "last audio chunk holding speech" in note
    assert "microphone pace" in note and "as fast as possible" in note
    assert "800 ms" in note and "INCLUDE" in note and "Manual turns" in note
    assert "unrecorded" in results.latency_provenance(results.to_frame([{"target_model": PLUS}]))


# --------------------------------------------------------------------------- tokens and user-supplied prices

def _usage_rows():
    return results.to_frame([
        {"target_model": PLUS, "status": "completed", "input_tokens": 120, "output_tokens": 300,
         "input_text_tokens": 20, "input_audio_tokens": 100, "output_text_tokens": 50, "output_audio_tokens": 250},
        {"target_model": PLUS, "status": "failed", "input_tokens": 10, "input_text_tokens": 10},
        {"target_model": FLASH + "-2026-03-15", "status": "completed", "input_tokens": 60, "output_tokens": 100,
         "input_text_tokens": 10, "input_audio_tokens": 50, "output_text_tokens": 20, "output_audio_tokens": 80},
        {"target_model": NEW, "status": "completed"}])


def test_token_totals_per_model():
    t = results.token_totals(_usage_rows())
    assert list(t.index) == [PLUS, FLASH + "-2026-03-15", NEW]
    assert t.loc[PLUS, "input_text_tokens"] == 30 and t.loc[PLUS, "output_audio_tokens"] == 250
    assert t.loc[PLUS, "turns"] == 2 and t.loc[PLUS, "turns_with_usage"] == 2
    assert t.loc[NEW, "turns_with_usage"] == 0 and t.loc[NEW, "input_tokens"] == 0


def test_estimate_cost_only_from_the_users_table(tmp_path):
    table = {"currency": "XYZ", "source": "my test table", "per_tokens": 1000,
             "models": {PLUS: {"input_text": 1.0, "input_audio": 2.0, "output_text": 3.0, "output_audio": 4.0},
                        FLASH: {"input_text": 0.5, "input_audio": 0.5, "output_text": 0.5}},
             "voice_creation": 0.25}
    path = tmp_path / "prices.json"
    path.write_text(__import__("json").dumps(table))
    cost = results.estimate_cost(_usage_rows(), path, voices_created=4)
    assert cost.loc[PLUS, "cost"] == pytest.approx((30 * 1 + 100 * 2 + 50 * 3 + 250 * 4) / 1000)
    # the dated snapshot is priced by its base name; it used output audio, which the table does not price
    assert math.isnan(cost.loc[FLASH + "-2026-03-15", "cost"])
    assert math.isnan(cost.loc[NEW, "cost"])  # no price for this model: no estimate
    assert cost.loc["voice creation", "cost"] == pytest.approx(1.0)
    assert set(cost["currency"]) == {"XYZ"} and set(cost["priced_by"]) == {"my test table"}


@pytest.mark.parametrize("doc, fragment", [
    ({"models": {PLUS: {"input_text": 1}}}, "currency"),
    ({"currency": "USD", "models": {}}, "non-empty 'models'"),
    ({"currency": "USD", "models": {PLUS: {"input_txt": 1}}}, "unknown keys"),
    ({"currency": "USD", "models": {PLUS: {"input_text": -1}}}, "non-negative"),
    ({"currency": "USD", "models": {PLUS: {"input_text": "cheap"}}}, "non-negative"),
    ({"currency": "USD", "per_tokens": 0, "models": {PLUS: {"input_text": 1}}}, "per_tokens"),
])
def test_bad_price_tables_are_clear_errors(doc, fragment):
    with pytest.raises(ConfigError, match=fragment):
        results.load_prices(doc)


def test_price_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        results.load_prices(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not readable JSON"):
        results.load_prices(tmp_path / "bad.json")


def test_no_price_is_written_into_qvtools():
    """Item 6: prices come only from the user's table; qvtools' sources define none."""
    prices_in_format = {float(x) for x in re.findall(r'"(?:input|output)_(?:text|audio)": ([0-9.]+)',
                                                     results.PRICES_FORMAT)}
    assert prices_in_format == {0.0}  # the documented example holds placeholders only
    source = Path(results.__file__).read_text()
    assert not re.search(r'"(?:input|output)_(?:text|audio)":\s*[1-9]', source)


# --------------------------------------------------------------------------- every column the runner writes (issue 12 item 6)

#: Columns only the runner writes (not the metric functions): each must be a documented column.
RUNNER_COLUMNS = ("audio_path", "session_s", "metrics_s", "turn_wall_s", "started_at", "finished_at",
                  "metrics_error")


def test_a_failed_enrollment_row_holds_only_documented_columns(tmp_path):
    """The runner's row for a turn whose voice could not be cloned (no network): every key is a column."""
    from qvtools import experiment as ex
    from qvtools.config import Settings

    task = ex.TurnTask(turn_id="t0", run_id="r", voice="ava", model="qwen3.5-omni-flash-realtime", prompt="p",
                       repeat=0, settings=Settings(region="local", data_dir=tmp_path), voice_id=None,
                       voice_target_model=None, prompt_path=str(tmp_path / "p.wav"),
                       reference_path=str(tmp_path / "ava.wav"), audio_dir=None, enroll_error="APIError: refused")
    row, turn = ex.run_turn_detached(task)
    assert turn is None and row["status"] == "failed" and row["error"] == "APIError: refused"
    assert set(row) <= set(results.COLUMNS), sorted(set(row) - set(results.COLUMNS))
    assert {"started_at", "finished_at", "session_s", "metrics_s", "turn_wall_s"} <= set(row)
    df = results.to_frame([row])
    assert list(df.columns) == list(results.COLUMNS) and df.loc[0, "session_s"] == 0.0


@pytest.mark.slow  # a whole run (two turns) on the local service, ~10 s
def test_every_key_of_a_recorded_run_is_a_documented_column(tmp_path, monkeypatch):
    """A tiny run on the local service (real sockets): every key of every turns.jsonl row is in COLUMNS,
    and to_frame keeps every value (no column dropped, none left over as 'unknown')."""
    from qvtools import experiment as ex
    from qvtools.config import Settings
    from qvtools.workspace import connect

    settings = Settings(region="local", api_key="sk-FAKEKEY-schema-test", data_dir=tmp_path / "data")
    model = "qwen3.5-omni-flash-realtime"
    with connect(settings) as ws:
        run = ex.Experiment(ws, tmp_path / "ok", voices=ex.sample_voices()[:1], prompts=ex.sample_prompts()[:1],
                            models=(model,), workers=1, metrics=(), progress=False)
        run.run()

        def broken_score(*args, **kwargs):
            raise RuntimeError("scoring broke")

        monkeypatch.setattr(ex.scoring, "_score", broken_score)  # the one scoring function (experiment/scoring.py)
        # another prompt: the two journals are framed together and turn ids are unique per table (issue 23)
        bad = ex.Experiment(ws, tmp_path / "bad", voices=ex.sample_voices()[:1],
                            prompts=ex.sample_prompts()[1:2], models=(model,), workers=1, metrics=(),
                            progress=False)
        bad.run()
    rows = ex.read_turns(run.turns_path) + ex.read_turns(bad.turns_path)
    assert [r["status"] for r in rows] == ["completed", "completed"], rows
    keys = set().union(*rows)
    assert keys <= set(results.COLUMNS), sorted(keys - set(results.COLUMNS))
    assert set(RUNNER_COLUMNS) <= keys  # the run really wrote them
    # the metric functions' columns arrived too (audio metrics are computed even with metrics=())
    assert {"ttfa_ms", "input_tokens", "loudness_lufs", "f0_median_hz"} <= keys
    assert rows[1]["metrics_error"] == "RuntimeError: scoring broke" and "metrics_error" not in rows[0]
    df = results.to_frame(rows)
    assert list(df.columns) == list(results.COLUMNS)
    for i, row in enumerate(rows):
        for k, v in row.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                assert pd.isna(df.loc[i, k]), k
            elif isinstance(v, float):
                assert df.loc[i, k] == pytest.approx(v), k
            else:
                assert df.loc[i, k] == v, k
    for col in ("session_s", "metrics_s", "turn_wall_s"):
        assert str(df[col].dtype) == "float64" and (df[col] >= 0).all()
    assert df.loc[0, "audio_path"] == f"audio/{rows[0]['turn_id']}.wav"
    assert (df["started_at"] <= df["finished_at"]).all()


def test_semantic_vad_rows_say_what_their_latencies_include_and_retries_are_typed():
    """issue 18: semantic-VAD turns get their own provenance sentence; attempts/transient are typed columns."""
    df = results.to_frame([
        {"target_model": PLUS, "status": "rejected", "turn_detection": "semantic_vad", "attempts": 1,
         "transient": False, "latency_origin": "speech_end_sent", "vad_window_included": True},
        {"target_model": PLUS, "status": "completed", "turn_detection": "semantic_vad", "attempts": 2,
         "transient": False, "latency_origin": "speech_end_sent", "vad_window_included": True}])
    assert str(df["attempts"].dtype) == "Int64" and df["attempts"].tolist() == [1, 2]
    assert str(df["transient"].dtype) == "boolean"
    note = results.latency_provenance(df)
    assert "semantic VAD" in note and "INCLUDE" in note and "Manual turns" not in note
