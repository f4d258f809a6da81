"""qvtools.listening and widgets.ListeningTest (issue 21): design, blinding, the answer log, resume, summarize.

The statistics are checked on a small run directory written here (tones stand in for replies; what is tested is
the design, the log and the statistics, not audio). The real local service's run is exercised by
notebooks/06_listening_test.ipynb (nbval) and the browser test (tests/test_listening_browser.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from qvtools import listening
from qvtools.experiment import turn_id
from qvtools.listening import AnswerFileError, ScriptedRater

PLUS, FLASH, TURBO = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime", "qwen-omni-turbo-realtime"


def make_run(root, models=(PLUS, FLASH), voices=4, prompts=5, sims=None):
    """A run directory as ``compare`` writes it (turns.jsonl, run.json, audio/), replies being tones.
    ``sims``: model -> speaker_similarity of its turns (default: plus 0.8, others 0.6, +- item noise)."""
    rng = np.random.default_rng(7)
    (root / "audio").mkdir(parents=True)
    refs = {}
    for v in range(voices):
        ref = root / f"ref_v{v}.wav"
        sf.write(ref, 0.1 * np.sin(2 * np.pi * (150 + 20 * v) * np.arange(16000) / 16000), 16000)
        refs[f"v{v}"] = str(ref)
    rows = []
    for v in range(voices):
        for p in range(prompts):
            for k, m in enumerate(models):
                tid = turn_id(f"v{v}", m, f"p{p}", 0)  # the shape the runner writes (rundir.TURN_ID_RE)
                gain = 0.05 * (k + 1)
                sf.write(root / "audio" / f"{tid}.wav",
                         gain * np.sin(2 * np.pi * (200 + 30 * p) * np.arange(12000) / 24000), 24000)
                base = (sims or {}).get(m, 0.8 if m == PLUS else 0.6)
                rows.append({"run_id": "r", "turn_id": tid, "voice_ref": f"v{v}", "target_model": m,
                             "prompt_id": f"p{p}", "repeat": 0, "status": "completed",
                             "audio_path": f"audio/{tid}.wav", "assistant_transcript": "It is sunny.",
                             "speaker_similarity": float(base + rng.normal(0, 0.05))})
    (root / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "run.json").write_text(json.dumps({"voices": refs, "models": list(models)}), encoding="utf-8")
    return root


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def test_design_pairs_each_item_and_is_fixed_by_the_seed(run):
    a = listening.design(run, "ab", seed=3)
    assert len(a) == 4 * 5  # one pair per voice x prompt
    assert a == listening.design(run, "ab", seed=3)
    b = listening.design(run, "ab", seed=4)
    assert [t.key for t in a] != [t.key for t in b]  # another rater, another order
    sides = [t.shown[0] == PLUS for t in a + b]
    assert 0 < sum(sides) < len(sides)  # A/B side randomised
    assert len(listening.design(run, "smos", seed=1)) == 4 * 5 * 2
    assert len(listening.design(run, "mos", seed=1, limit=7, attention=2)) == 9


def test_bad_kind_question_rater_and_answer_are_refused(run):
    with pytest.raises(listening.ConfigError, match="kind"):
        listening.design(run, "abx", seed=1)
    with pytest.raises(listening.ConfigError, match="asks"):
        listening.design(run, "mos", seed=1, question="similarity")
    with pytest.raises(listening.ConfigError, match="rater name"):
        listening.answers_path(run, "../evil")
    t = listening.design(run, "smos", seed=1)[0]
    for bad in (0, 6, 3.5, "4", True):
        with pytest.raises(listening.ConfigError, match="1-5"):
            listening.make_answer(t, bad, rater="r1", seed=1)
    assert not (run / "listening").exists()  # nothing written for a refused answer


def test_answer_lines_hold_the_required_fields(run):
    t = listening.design(run, "ab", seed=5)[0]
    path = listening.append_answer(run, listening.make_answer(t, "B", rater="ann", seed=5))
    assert path == run / "listening" / "ann.jsonl"
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(listening.ANSWER_FIELDS) <= set(line)
    assert line["shown"] == list(t.shown) and line["answer"] == "B" and line["seed"] == 5
    assert line["t"].endswith("Z") and line["scripted"] is False  # a person's answer


def test_simulated_panel_preference_is_recovered_within_its_interval(tmp_path):
    """10 raters preferring plus 70 % of the time on 40 items: the share is near 0.7 and inside its CI."""
    run = make_run(tmp_path / "run", voices=5, prompts=8)
    panel = {f"r{i}": ScriptedRater(prefer=PLUS, share=0.7, tie=0.1, seed=i) for i in range(10)}
    assert listening.simulate_panel(run, panel, "ab", seed=1) == 400
    pref = listening.summarize(run, n_boot=500)["preference"]
    row = pref.iloc[0]
    assert (row.model_a, row.model_b, row.question) == (PLUS, FLASH, "similarity")
    assert row.n == 400 and 10 < row.ties < 80
    assert row.ci_low <= 0.7 <= row.ci_high
    assert abs(row.share_a - 0.7) < 0.06
    assert row.ci_high - row.ci_low < 0.2
    assert row.p_value < 1e-6
    assert row.metric == "speaker_similarity" and row.metric_share_a > 0.9  # plus has the higher similarity
    assert bool(row.simulated)  # scripted raters: labelled simulated


def test_no_preference_gives_an_interval_around_a_half(tmp_path):
    run = make_run(tmp_path / "run", voices=5, prompts=8)
    panel = {f"r{i}": ScriptedRater(prefer=PLUS, share=0.5, seed=100 + i) for i in range(8)}
    listening.simulate_panel(run, panel, "ab", seed=2)
    row = listening.summarize(run, n_boot=500)["preference"].iloc[0]
    assert row.ci_low <= 0.5 <= row.ci_high and row.p_value > 0.01


def test_scores_agreement_and_vs_metrics(run):
    panel = {f"r{i}": ScriptedRater(prefer=PLUS, high=4, low=2, seed=i) for i in range(4)}
    listening.simulate_panel(run, panel, "smos", attention=1, seed=3)
    t = listening.summarize(run, n_boot=300)
    scores = t["scores"].set_index("model")
    assert scores.loc[PLUS, "n"] == 4 * 20 and scores.loc[FLASH, "n"] == 4 * 20
    assert scores.loc[PLUS, "ci_low"] <= 4 <= scores.loc[PLUS, "ci_high"]
    assert scores.loc[FLASH, "ci_low"] <= 2 <= scores.loc[FLASH, "ci_high"]
    agree = t["agreement"].iloc[0]
    assert agree.kind == "smos" and agree.raters == 4 and 0.3 < agree.alpha <= 1
    vs = t["vs_metrics"].iloc[0]
    assert vs.metric == "speaker_similarity" and vs.n == 40 and vs.rho > 0.5
    assert vs.ci_low < vs.rho < vs.ci_high and "voicefilter" in vs.metric_model
    att = t["attention"]
    assert list(att.checks) == [1] * 4 and list(att.passed) == [1] * 4


def test_strengths_with_three_models(tmp_path):
    run = make_run(tmp_path / "run", models=(PLUS, FLASH, TURBO), voices=3, prompts=4)
    panel = {f"r{i}": ScriptedRater(prefer=PLUS, share=0.9, seed=i) for i in range(5)}
    listening.simulate_panel(run, panel, "ab", seed=4)
    s = listening.summarize(run, n_boot=200)["strengths"].set_index("model")
    assert len(s) == 3 and s["strength"].idxmax() == PLUS


def test_resumed_rater_sees_only_the_remaining_trials(run):
    from qvtools.widgets import ListeningTest

    first = ListeningTest(run, "bob", "ab", limit=6)
    assert len(first.pending) == 6
    answered = [first.current.key]
    first.answer("A")
    answered.append(first.current.key)
    first.answer("tie")
    again = ListeningTest(run, "bob", "ab", limit=6)
    assert again.seed == first.seed  # the seed comes from the rater's earlier answers
    assert len(again.pending) == 4
    assert not {t.key for t in again.pending} & set(answered)
    assert again.counter.value == "Trial 3 of 6"
    with pytest.raises(listening.ConfigError, match="seed"):
        ListeningTest(run, "bob", "ab", seed=first.seed + 1)
    again.run_scripted(ScriptedRater(prefer=PLUS, seed=1))
    assert again.done and all(b.disabled for b in again.buttons)
    assert len(listening.read_answers(run, "bob")) == 6


def _all_states(widget) -> str:
    """Every state a widget tree sends to the browser, as text."""
    seen, out, todo = set(), [], [widget]
    while todo:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        state = w.get_state()
        out.append(json.dumps(state, default=str))
        for key in ("children", "layout", "style"):
            v = getattr(w, key, None)
            todo.extend(v if isinstance(v, (list, tuple)) else [v] if v is not None and hasattr(v, "get_state")
                        else [])
    return "\n".join(out)


@pytest.mark.parametrize("kind", ["ab", "smos", "mos"])
def test_model_names_never_reach_the_widget_state(run, kind):
    from qvtools.widgets import ListeningTest

    test = ListeningTest(run, "eve", kind, attention=1, limit=5)
    seen_audio = 0
    while not test.done:
        state = _all_states(test)
        seen_audio += state.count("<audio")
        for name in (PLUS, FLASH, "omni", "plus", "flash", "audio/v"):
            assert name not in state
        test.answer("A" if kind == "ab" else 3)
    assert seen_audio >= 6


def test_players_are_loudness_matched(run):
    from qvtools.metrics import loudness_lufs

    models = json.loads((run / "run.json").read_text(encoding="utf-8"))["models"]
    quiet, _ = listening.matched_audio(run / "audio" / f"{turn_id('v0', models[0], 'p0', 0)}.wav")
    loud, sr = listening.matched_audio(run / "audio" / f"{turn_id('v0', models[1], 'p0', 0)}.wav")
    assert abs(loudness_lufs(quiet, sr) - listening.TARGET_LUFS) < 0.5
    assert abs(loudness_lufs(quiet, sr) - loudness_lufs(loud, sr)) < 0.5


@pytest.mark.parametrize("edit, reason", [
    (lambda a: "{not json", "not JSON"),
    (lambda a: json.dumps({**a, "answer": "C"}), "answer 'C'"),
    (lambda a: json.dumps({k: v for k, v in a.items() if k != "seed"}), "missing seed"),
    (lambda a: json.dumps({**a, "rater": "mallory"}), "rater 'mallory'"),
    (lambda a: json.dumps({**a, "shown": [PLUS]}), "shown"),
    (lambda a: "", "empty line"),
    (lambda a: json.dumps({**a, "scripted": "no"}), "scripted must be true or false"),
])
def test_tampered_answer_file_names_the_line(run, edit, reason):
    panel = {"kim": ScriptedRater(prefer=PLUS, seed=1)}
    listening.simulate_panel(run, panel, "ab", limit=4)
    path = run / "listening" / "kim.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = edit(json.loads(lines[2]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AnswerFileError, match=f"kim.jsonl line 3: .*{reason}"):
        listening.summarize(run)
    from qvtools.widgets import ListeningTest

    with pytest.raises(AnswerFileError, match="line 3"):
        ListeningTest(run, "kim", "ab")


def test_report_section_only_with_answers(run):
    assert listening.report_html(run) == ""
    listening.simulate_panel(run, {"r1": ScriptedRater(prefer=PLUS, seed=1),
                                   "r2": ScriptedRater(prefer=PLUS, seed=2)}, "ab", seed=9)
    section = listening.report_html(run, n_boot=200)
    assert "<h2>Listening test</h2>" in section and "A/B preference" in section
    assert "metric_share_a" in section and "Krippendorff" in section
    assert "SIMULATED: 40 of 40 answers come from a scripted rater" in section


@pytest.mark.slow
def test_qvtools_report_has_the_listening_section(run):
    from qvtools import report

    listening.simulate_panel(run, {"r1": ScriptedRater(prefer=PLUS, seed=1),
                                   "r2": ScriptedRater(prefer=PLUS, seed=2)}, "ab", seed=9)
    page = report.build_report(run, quick=True, sample_turns=2, timeout=300).read_text(encoding="utf-8")
    assert "<h2>Listening test</h2>" in page and "share_a" in page and "2 rater(s)" in page


def test_what_each_kind_plays(run):
    from qvtools.widgets import ListeningTest

    plays = {(k, q): ListeningTest(run, "zed", k, question=q, limit=2).stimuli.value.count("<audio")
             for k, q in (("ab", None), ("ab", "naturalness"), ("smos", None), ("mos", None))}
    # the reference is playable for similarity judgements only
    assert plays == {("ab", None): 3, ("ab", "naturalness"): 2, ("smos", None): 2, ("mos", None): 1}


def test_mos_is_set_beside_mos_ovrl_when_the_run_has_it(tmp_path):
    run = make_run(tmp_path / "run")
    rows = [json.loads(x) for x in (run / "turns.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in rows:  # a predicted naturalness that follows the model, as a run with mos_ovrl would hold
        r["mos_ovrl"] = (3.6 if r["target_model"] == PLUS else 2.9) + 0.02 * int(r["prompt_id"][1:])
    (run / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    listening.simulate_panel(run, {f"r{i}": ScriptedRater(prefer=PLUS, high=4, low=2, seed=i) for i in range(3)},
                             "mos", seed=5)
    listening.simulate_panel(run, {f"r{i}": ScriptedRater(prefer=PLUS, share=0.8, seed=i) for i in range(3)},
                             "ab", question="naturalness", seed=6)
    t = listening.summarize(run, n_boot=200)
    vs = t["vs_metrics"].set_index("metric")
    assert list(vs.index) == ["mos_ovrl"] and vs.loc["mos_ovrl", "human"] == "MOS" and vs.loc["mos_ovrl", "rho"] > 0.5
    pref = t["preference"].iloc[0]
    assert pref.question == "naturalness" and pref.metric == "mos_ovrl" and pref.metric_share_a == 1.0
