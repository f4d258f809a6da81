"""Blinded listening tests on a ``compare`` run (issue 21): trial design, the answer log, and the summary.

Three kinds (:data:`KINDS`):

- ``ab``: the same voice x prompt x repeat from two models, in random order; the rater answers
  ``"A"``, ``"B"`` or ``"tie"`` to one question (:data:`QUESTIONS`: similarity to the reference speaker,
  or naturalness);
- ``smos``: one reply rated 1-5 for similarity to the reference (the reference is playable);
- ``mos``: one reply rated 1-5 for naturalness (no reference).

Trials are made by :func:`design` from the run's completed turns. The order of the trials and the A/B sides are
drawn from a per-rater ``seed`` recorded in every answer, so a rater who comes back gets the same design and only
the trials not yet answered (:func:`remaining`). An attention check plays the reference against itself (``ab``:
the expected answer is ``"tie"``; ``smos``/``mos``: a score of at least :data:`ATTENTION_MIN_SCORE`); those
answers carry ``attention: true`` and stay out of every table but ``"attention"``.

Answers go to ``RUN_DIR/listening/<rater>.jsonl``, one JSON object per answer (:data:`ANSWER_FIELDS`), appended
and fsynced (:func:`append_answer`). :func:`read_answers` reports a bad line with its file and line number
(:class:`AnswerFileError`), never skips it. :func:`summarize` turns the answers into tables;
:func:`report_html` is the "Listening test" section of ``qvtools report``.

Model names live only in the trials (Python side) and the answer files, never in what a rater's page shows
(:class:`qvtools.widgets.ListeningTest`).
"""

from __future__ import annotations

import datetime as _dt
import html
import itertools
import json
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, QVError

__all__ = [
    "KINDS",
    "QUESTIONS",
    "KIND_QUESTION",
    "AB_ANSWERS",
    "SCORES",
    "ANSWER_FIELDS",
    "LISTENING_DIR",
    "REFERENCE",
    "ATTENTION_MIN_SCORE",
    "TARGET_LUFS",
    "VS_METRICS",
    "Trial",
    "AnswerFileError",
    "answers_path",
    "design",
    "remaining",
    "append_answer",
    "make_answer",
    "read_answers",
    "matched_audio",
    "ScriptedRater",
    "simulate_panel",
    "summarize",
    "report_html",
]

log = logging.getLogger(__name__)

#: The kinds of listening test.
KINDS = ("ab", "smos", "mos")
#: The questions, by name -> the text shown to the rater.
QUESTIONS = {
    "similarity": "Which sounds more like the reference speaker?",
    "naturalness": "Which sounds more natural?",
    "smos": "How similar is this voice to the reference speaker? (1 = not at all, 5 = the same speaker)",
    "mos": "How natural does this speech sound? (1 = bad, 5 = excellent)",
}
#: The question each kind asks (``ab`` asks ``similarity`` unless told ``naturalness``).
KIND_QUESTION = {"ab": "similarity", "smos": "smos", "mos": "mos"}
AB_ANSWERS = ("A", "B", "tie")
SCORES = (1, 2, 3, 4, 5)
#: Fields every answer line holds (more may follow: ``attention``, ``item``).
ANSWER_FIELDS = ("rater", "kind", "trial", "voice", "prompt", "repeat", "shown", "answer", "question", "seed", "t")
LISTENING_DIR = "listening"
#: The name of the reference recording in ``shown`` (attention checks).
REFERENCE = "reference"
#: An attention check on ``smos``/``mos`` passes with a score of at least this.
ATTENTION_MIN_SCORE = 4
#: Playback loudness of every stimulus (BS.1770 integrated, peak-safe): the players are loudness-matched.
TARGET_LUFS = -23.0
_MAX_PEAK_DBFS = -1.0
#: Human score -> the objective column it is compared with in ``vs_metrics``, and the question of ``ab``
#: whose verdict that column predicts.
VS_METRICS = {"smos": "speaker_similarity", "mos": "mos_ovrl"}
_AB_METRIC = {"similarity": "speaker_similarity", "naturalness": "mos_ovrl"}
_RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AnswerFileError(QVError, ValueError):
    """A line of an answer file is not a valid answer (the message names the file and the line)."""


@dataclass(frozen=True)
class Trial:
    """One trial of a rater. ``shown``: the models in display order (``A``, ``B`` for ``ab``); ``audio``: the
    reply paths (relative to the run directory; :data:`REFERENCE` plays the voice's reference)."""

    trial: int
    kind: str
    question: str
    voice: str
    prompt: str
    repeat: int
    shown: tuple[str, ...]
    audio: tuple[str, ...]
    attention: bool = False

    @property
    def key(self) -> tuple:
        """What identifies the trial across sessions (the display order aside)."""
        return (self.kind, self.question, self.voice, self.prompt, int(self.repeat), tuple(sorted(self.shown)),
                bool(self.attention))

    @property
    def text(self) -> str:
        return QUESTIONS[self.question]


def _check_kind(kind: str, question: str | None) -> str:
    if kind not in KINDS:
        raise ConfigError(f"listening test kind {kind!r} is not one of {', '.join(KINDS)}")
    question = question or KIND_QUESTION[kind]
    allowed = ("similarity", "naturalness") if kind == "ab" else (KIND_QUESTION[kind],)
    if question not in allowed:
        raise ConfigError(f"kind {kind!r} asks {' or '.join(allowed)}, not {question!r}")
    return question


def answers_path(run_dir, rater: str) -> Path:
    """``RUN_DIR/listening/<rater>.jsonl``; a rater name is 1-64 letters, digits, ``_.-``."""
    if not isinstance(rater, str) or not _RATER.match(rater):
        raise ConfigError(f"rater name {rater!r} is not valid: use 1-64 letters, digits, '_', '.', '-' "
                          "(it names the answer file)")
    return Path(run_dir) / LISTENING_DIR / f"{rater}.jsonl"


def _run(run_dir):
    from .report import load_run

    return load_run(run_dir, quick=True)


def _items(view) -> dict[tuple[str, str, int], dict[str, str]]:
    """(voice, prompt, repeat) -> model -> reply audio path, over completed turns with audio."""
    ok = view.ok
    if "audio_path" in ok:
        ok = ok[ok["audio_path"].notna()]
    out: dict[tuple[str, str, int], dict[str, str]] = {}
    for r in ok.to_dict(orient="records"):
        out.setdefault((str(r["voice_ref"]), str(r["prompt_id"]), int(r["repeat"])), {})[
            str(r["target_model"])] = str(r["audio_path"])
    return out


def design(run_dir, kind: str, *, seed: int, question: str | None = None, attention: int = 0,
           limit: int | None = None) -> list[Trial]:
    """The trials of one rater, in that rater's order (``seed`` decides the order and the A/B sides).

    ``ab``: one trial per voice x prompt x repeat and pair of models that both answered it; ``smos``/``mos``:
    one per completed turn. ``limit`` keeps the first ``limit`` of the shuffled trials; ``attention`` adds that
    many checks (the reference against itself) at random places. A run with nothing to rate is a ConfigError."""
    from .results import model_order

    question = _check_kind(kind, question)
    view = _run(run_dir)
    items = _items(view)
    rng = np.random.default_rng(int(seed))
    raw: list[tuple] = []
    for (voice, prompt, repeat), per_model in sorted(items.items()):
        models = model_order(per_model)
        if kind == "ab":
            for a, b in itertools.combinations(models, 2):
                raw.append((voice, prompt, repeat, (a, b), (per_model[a], per_model[b])))
        else:
            raw.extend((voice, prompt, repeat, (m,), (per_model[m],)) for m in models)
    if not raw:
        need = "two models answering the same voice x prompt" if kind == "ab" else "a completed turn with audio"
        raise ConfigError(f"{run_dir}: nothing to rate for a {kind!r} test (it needs {need})")
    order = rng.permutation(len(raw))
    if limit is not None:
        order = order[: max(int(limit), 0)]
    chosen = []
    for i in order:
        voice, prompt, repeat, models, paths = raw[int(i)]
        if kind == "ab" and rng.random() < 0.5:
            models, paths = models[::-1], paths[::-1]
        chosen.append((voice, prompt, repeat, models, paths, False))
    voices = sorted({v for v, *_ in raw})
    with_ref = [v for v in voices if view.reference(v) is not None]
    for _ in range(int(attention)):
        if not with_ref:
            raise ConfigError("attention checks need the reference recordings of the run's voices (run.json)")
        v = with_ref[int(rng.integers(len(with_ref)))]
        shown = (REFERENCE, REFERENCE) if kind == "ab" else (REFERENCE,)
        chosen.insert(int(rng.integers(len(chosen) + 1)), (v, REFERENCE, 0, shown, shown, True))
    return [Trial(trial=i, kind=kind, question=question, voice=v, prompt=p, repeat=int(r), shown=tuple(m),
                  audio=tuple(a), attention=att) for i, (v, p, r, m, a, att) in enumerate(chosen)]


def remaining(trials: list[Trial], answers: list[dict]) -> list[Trial]:
    """The trials not yet answered (by content: kind, question, voice, prompt, repeat, models, attention)."""
    done = {(a["kind"], a["question"], a["voice"], a["prompt"], int(a["repeat"]), tuple(sorted(a["shown"])),
             bool(a.get("attention", False))) for a in answers}
    return [t for t in trials if t.key not in done]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_answer(trial: Trial, answer: Any, *, rater: str, seed: int, scripted: bool = False) -> dict:
    """The answer line of ``trial`` (checked: ``"A"``/``"B"``/``"tie"`` for ``ab``, 1-5 otherwise).
    ``scripted``: the answer came from a program (:class:`ScriptedRater`), not a person; tables and the
    report label such answers simulated."""
    if trial.kind == "ab":
        if answer not in AB_ANSWERS:
            raise ConfigError(f"an ab answer is one of {', '.join(AB_ANSWERS)}, not {answer!r}")
    else:
        if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)) or int(answer) not in SCORES:
            raise ConfigError(f"a {trial.kind} answer is a whole score 1-5, not {answer!r}")
        answer = int(answer)
    return {"rater": rater, "kind": trial.kind, "trial": int(trial.trial), "voice": trial.voice,
            "prompt": trial.prompt, "repeat": int(trial.repeat), "shown": list(trial.shown), "answer": answer,
            "question": trial.question, "seed": int(seed), "t": _now(), "attention": bool(trial.attention),
            "scripted": bool(scripted)}


def append_answer(run_dir, answer: dict) -> Path:
    """Append one answer (validated first: nothing is written for a bad one) and fsync the file."""
    _validate(answer, "answer", 0)
    path = answers_path(run_dir, answer["rater"])
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(answer, ensure_ascii=False, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    return path


def _validate(a: Any, where: str, lineno: int) -> None:
    def bad(why: str):
        at = f"{where} line {lineno}" if lineno else where
        raise AnswerFileError(f"{at}: {why}")

    if not isinstance(a, dict):
        bad(f"not a JSON object ({type(a).__name__})")
    missing = [k for k in ANSWER_FIELDS if k not in a]
    if missing:
        bad(f"missing {', '.join(missing)}")
    if a["kind"] not in KINDS:
        bad(f"kind {a['kind']!r} is not one of {', '.join(KINDS)}")
    shown = a["shown"]
    want = 2 if a["kind"] == "ab" else 1
    if not isinstance(shown, list) or len(shown) != want or not all(isinstance(s, str) and s for s in shown):
        bad(f"shown must list {want} model name(s) for kind {a['kind']!r}, got {shown!r}")
    if a["kind"] == "ab":
        if a["answer"] not in AB_ANSWERS:
            bad(f"answer {a['answer']!r} is not one of {', '.join(AB_ANSWERS)}")
        if a["question"] not in ("similarity", "naturalness"):
            bad(f"question {a['question']!r} is not similarity or naturalness")
    else:
        if isinstance(a["answer"], bool) or not isinstance(a["answer"], int) or a["answer"] not in SCORES:
            bad(f"answer {a['answer']!r} is not a score 1-5")
        if a["question"] != KIND_QUESTION[a["kind"]]:
            bad(f"question {a['question']!r} does not belong to kind {a['kind']!r}")
    for k in ("attention", "scripted"):
        if k in a and not isinstance(a[k], bool):
            bad(f"{k} must be true or false, got {a[k]!r}")
    for k in ("trial", "repeat", "seed"):
        if isinstance(a[k], bool) or not isinstance(a[k], int):
            bad(f"{k} must be an integer, got {a[k]!r}")
    if not isinstance(a["rater"], str) or not _RATER.match(a["rater"]):
        bad(f"rater {a['rater']!r} is not a valid rater name")
    try:
        _dt.datetime.fromisoformat(str(a["t"]).replace("Z", "+00:00"))
    except ValueError:
        bad(f"t {a['t']!r} is not an ISO time")


def read_answers(run_dir, rater: str | None = None) -> list[dict]:
    """Every answer under ``RUN_DIR/listening`` (or one rater's). A bad line -- not JSON, a missing field, a
    value out of range, a rater not matching the file name -- raises :class:`AnswerFileError` naming the file
    and the line; nothing is skipped."""
    root = Path(run_dir) / LISTENING_DIR
    paths = [answers_path(run_dir, rater)] if rater is not None else sorted(root.glob("*.jsonl"))
    out = []
    for path in paths:
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    raise AnswerFileError(f"{path} line {lineno}: empty line")
                try:
                    a = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AnswerFileError(f"{path} line {lineno}: not JSON ({exc.msg})") from None
                _validate(a, str(path), lineno)
                if a["rater"] != path.stem:
                    raise AnswerFileError(f"{path} line {lineno}: rater {a['rater']!r} in the file of {path.stem!r}")
                out.append(a)
    return out


def matched_audio(path, target_lufs: float = TARGET_LUFS) -> tuple[np.ndarray, int]:
    """A stimulus at ``target_lufs`` (BS.1770 integrated; the gain is limited so the peak stays below
    -1 dBFS): every player of a test plays at the same loudness."""
    from .audio import load
    from .metrics import FLOOR_DB, loudness_lufs

    x, sr = load(path, mono=True)
    lufs = loudness_lufs(x, sr)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if math.isfinite(lufs) and lufs > FLOOR_DB and peak > 0:
        gain_db = min(target_lufs - lufs, _MAX_PEAK_DBFS - 20 * math.log10(peak))
        x = x * np.float32(10 ** (gain_db / 20))
    return np.clip(x, -1.0, 1.0).astype(np.float32), sr


# --------------------------------------------------------------------------- scripted raters


@dataclass
class ScriptedRater:
    """A rater for headless runs and simulations: in ``ab`` it prefers ``prefer`` with probability ``share``
    (ties with probability ``tie``); in ``smos``/``mos`` it scores ``prefer`` ``high`` and others ``low``
    (+-1 at random). Attention checks are answered correctly. It reads ``Trial.shown`` on the Python side;
    nothing of it reaches a page."""

    prefer: str
    share: float = 0.7
    tie: float = 0.0
    high: int = 4
    low: int = 3
    seed: int = 0
    rng: Any = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0 or not 0.0 <= self.tie < 1.0:
            raise ConfigError("ScriptedRater: share must be in [0, 1] and tie in [0, 1)")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, trial: Trial):
        if trial.attention:
            return "tie" if trial.kind == "ab" else 5
        if trial.kind == "ab":
            if self.rng.random() < self.tie:
                return "tie"
            if self.prefer not in trial.shown:
                return "A" if self.rng.random() < 0.5 else "B"
            wins = self.rng.random() < self.share
            side = trial.shown.index(self.prefer)
            return AB_ANSWERS[side if wins else 1 - side]
        base = self.high if trial.shown[0] == self.prefer else self.low
        return int(np.clip(base + int(self.rng.integers(-1, 2)), 1, 5))


def simulate_panel(run_dir, raters: dict[str, ScriptedRater], kind: str, *, question: str | None = None,
                   attention: int = 0, limit: int | None = None, seed: int = 0) -> int:
    """Let scripted raters answer a whole test (each rater its own seed); returns the answers written."""
    n = 0
    for i, (name, rater) in enumerate(raters.items()):
        s = seed * 1000 + i
        trials = design(run_dir, kind, seed=s, question=question, attention=attention, limit=limit)
        for t in remaining(trials, read_answers(run_dir, name)):
            append_answer(run_dir, make_answer(t, rater(t), rater=name, seed=s, scripted=True))
            n += 1
    return n


# --------------------------------------------------------------------------- summary


def _two_way_boot(rater_idx, item_idx, values, n_boot: int, rng, stat) -> tuple[float, float]:
    """Percentile 95 % interval of ``stat(values, weights)`` resampling raters AND items (clusters) with
    replacement; an answer's weight is (times its rater was drawn) x (times its item was drawn)."""
    nr, ni = int(rater_idx.max()) + 1, int(item_idx.max()) + 1
    out = []
    for _ in range(n_boot):
        wr = np.bincount(rng.integers(0, nr, nr), minlength=nr)
        wi = np.bincount(rng.integers(0, ni, ni), minlength=ni)
        w = wr[rater_idx] * wi[item_idx]
        if w.sum() > 0:
            v = stat(values, w)
            if math.isfinite(v):
                out.append(v)
    if not out:
        return float("nan"), float("nan")
    lo, hi = np.percentile(out, [2.5, 97.5])
    return float(lo), float(hi)


def _codes(keys) -> np.ndarray:
    index: dict = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=int)


def _weighted_mean(v, w):
    return float(np.sum(v * w) / np.sum(w))


def _pair_rows(ab: list[dict]):
    """Each ab answer as (question, model_a, model_b, win_a: 1/0/nan, item) with (model_a, model_b) in catalog
    order."""
    from .results import model_order

    rows = []
    for a in ab:
        ma, mb = model_order(a["shown"])
        pick = a["answer"]
        win = float("nan") if pick == "tie" else float(a["shown"][0 if pick == "A" else 1] == ma)
        rows.append((a["question"], ma, mb, win, (a["voice"], a["prompt"], a["repeat"]), a["rater"],
                     bool(a.get("scripted"))))
    return rows


def _metric_share(view, ma: str, mb: str, items, column: str) -> tuple[float, int]:
    """Share of the rated items on which ``ma``'s ``column`` beats ``mb``'s (the objective verdict)."""
    frame = view.ok
    if column not in frame:
        return float("nan"), 0
    val = {(str(r["voice_ref"]), str(r["prompt_id"]), int(r["repeat"]), str(r["target_model"])): r[column]
           for r in frame.to_dict(orient="records")}
    wins = []
    for v, p, r in set(items):
        x, y = val.get((v, p, r, ma)), val.get((v, p, r, mb))
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y) and x != y:
            wins.append(x > y)
    return (float(np.mean(wins)) if wins else float("nan")), len(wins)


def _metric_model(column: str) -> str:
    if column == "speaker_similarity":
        from .speaker import MODEL_NAME

        return MODEL_NAME
    return f"the model the run recorded for {column} (see qvtools.results.COLUMNS)"


def summarize(run_dir, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Tables of a run's answers (attention checks excluded but in ``"attention"``):

    - ``"preference"``: per question and model pair: ``n``, ``ties``, ``share_a`` (non-tie answers preferring
      ``model_a``), ``ci_low``/``ci_high`` (95 % percentile bootstrap resampling raters and items),
      ``p_value`` (two-sided sign test), and the objective verdict beside it: ``metric``,
      ``metric_share_a`` (share of the rated items on which ``model_a`` scores higher), ``metric_n``;
    - ``"scores"``: per kind (``smos``, ``mos``) and model: ``n``, ``mean``, ``ci_low``, ``ci_high`` (same bootstrap);
    - ``"strengths"``: Bradley-Terry log-strengths (``choix.ilsr_pairwise``, ties left out) per question when
      more than two models were compared;
    - ``"agreement"``: Krippendorff's alpha (``krippendorff``; ordinal: B < tie < A, or the 1-5 scale) per
      kind and question, with the raters and items it covers;
    - ``"vs_metrics"``: Spearman's rho between the per-turn mean SMOS and ``speaker_similarity``, and MOS and
      ``mos_ovrl`` (when the run has it), with ``n``, a 95 % Fisher-z interval (variance 1.06/(n-3),
      Fieller et al. 1957) and the metric's model;
    - ``"attention"``: per rater, checks answered and passed.
    """
    import pandas as pd
    from scipy import stats

    answers = read_answers(run_dir)
    rng = np.random.default_rng(seed)
    view = _run(run_dir)
    rated = [a for a in answers if not a.get("attention")]
    checks = [a for a in answers if a.get("attention")]

    pref_rows = []
    pairs = _pair_rows([a for a in rated if a["kind"] == "ab"])
    for (q, ma, mb), group in itertools.groupby(sorted(pairs, key=lambda r: r[:3]), key=lambda r: r[:3]):
        group = list(group)
        win = np.array([g[3] for g in group])
        decided = ~np.isnan(win)
        n_dec, wins_a = int(decided.sum()), int(np.nansum(win))
        share = wins_a / n_dec if n_dec else float("nan")
        lo = hi = p = float("nan")
        if n_dec:
            sel = [g for g, d in zip(group, decided) if d]
            lo, hi = _two_way_boot(_codes(g[5] for g in sel), _codes(g[4] for g in sel), win[decided], n_boot,
                                   rng, _weighted_mean)
            p = float(stats.binomtest(wins_a, n_dec, 0.5).pvalue)
        column = _AB_METRIC[q]
        m_share, m_n = _metric_share(view, ma, mb, [g[4] for g in group], column)
        pref_rows.append({"question": q, "model_a": ma, "model_b": mb, "n": len(group), "ties": len(group) - n_dec,
                          "share_a": share, "ci_low": lo, "ci_high": hi, "p_value": p, "metric": column,
                          "metric_model": _metric_model(column), "metric_share_a": m_share, "metric_n": m_n,
                          "simulated": any(g[6] for g in group)})
    preference = pd.DataFrame(pref_rows, columns=["question", "model_a", "model_b", "n", "ties", "share_a", "ci_low",
                                                  "ci_high", "p_value", "metric", "metric_model", "metric_share_a",
                                                  "metric_n", "simulated"])

    score_rows = []
    for kind in ("smos", "mos"):
        sub = [a for a in rated if a["kind"] == kind]
        for model in sorted({a["shown"][0] for a in sub}):
            s = [a for a in sub if a["shown"][0] == model]
            v = np.array([a["answer"] for a in s], dtype=float)
            lo, hi = _two_way_boot(_codes(a["rater"] for a in s), _codes((a["voice"], a["prompt"], a["repeat"])
                                                                        for a in s), v, n_boot, rng, _weighted_mean)
            score_rows.append({"kind": kind, "model": model, "n": len(s), "mean": float(v.mean()), "ci_low": lo,
                               "ci_high": hi, "simulated": any(a.get("scripted") for a in s)})
    scores = pd.DataFrame(score_rows, columns=["kind", "model", "n", "mean", "ci_low", "ci_high", "simulated"])

    return {"preference": preference, "scores": scores, "strengths": _strengths(pairs),
            "agreement": _agreement(rated), "vs_metrics": _vs_metrics(rated, view), "attention": _attention(checks)}


def _strengths(pairs):
    import pandas as pd

    cols = ["question", "model", "strength", "comparisons"]
    rows = []
    for q in sorted({p[0] for p in pairs}):
        sub = [p for p in pairs if p[0] == q and not math.isnan(p[3])]
        models = sorted({p[1] for p in sub} | {p[2] for p in sub})
        if len(models) <= 2:
            continue
        import choix

        idx = {m: i for i, m in enumerate(models)}
        data = [(idx[ma], idx[mb]) if w == 1.0 else (idx[mb], idx[ma]) for _, ma, mb, w, *_ in sub]
        params = choix.ilsr_pairwise(len(models), data, alpha=0.01)
        for m in models:
            rows.append({"question": q, "model": m, "strength": float(params[idx[m]]),
                         "comparisons": sum(m in (p[1], p[2]) for p in sub)})
    return pd.DataFrame(rows, columns=cols)


def _agreement(rated):
    import pandas as pd

    cols = ["kind", "question", "alpha", "level", "raters", "items", "note"]
    rows = []
    for (kind, q) in sorted({(a["kind"], a["question"]) for a in rated}):
        sub = [a for a in rated if a["kind"] == kind and a["question"] == q]
        if kind == "ab":
            coded = [(r[5], (r[4], r[1], r[2]), 0.0 if math.isnan(r[3]) else (1.0 if r[3] == 1.0 else -1.0))
                     for r in _pair_rows(sub)]
        else:
            coded = [(a["rater"], (a["voice"], a["prompt"], a["repeat"], a["shown"][0]), float(a["answer"]))
                     for a in sub]
        raters = sorted({c[0] for c in coded})
        units = sorted({c[1] for c in coded}, key=str)
        mat = np.full((len(raters), len(units)), np.nan)
        ri, ui = {r: i for i, r in enumerate(raters)}, {u: i for i, u in enumerate(units)}
        for r, u, v in coded:
            mat[ri[r], ui[u]] = v  # a repeated answer of a rater to a unit: the last one
        alpha, note = float("nan"), ""
        pairable = int(np.sum(np.sum(~np.isnan(mat), axis=0) >= 2))
        if len(raters) < 2 or pairable == 0:
            note = "needs two raters answering the same items"
        else:
            import krippendorff

            try:
                alpha = float(krippendorff.alpha(reliability_data=mat, level_of_measurement="ordinal"))
            except ValueError as exc:  # e.g. every answer the same value
                note = str(exc)
        rows.append({"kind": kind, "question": q, "alpha": alpha, "level": "ordinal", "raters": len(raters),
                     "items": pairable, "note": note})
    return pd.DataFrame(rows, columns=cols)


def _vs_metrics(rated, view):
    import pandas as pd
    from scipy import stats

    cols = ["human", "metric", "metric_model", "n", "rho", "ci_low", "ci_high", "p_value", "interval"]
    rows = []
    frame = view.ok
    for kind, column in VS_METRICS.items():
        sub = [a for a in rated if a["kind"] == kind]
        if not sub or column not in frame:
            continue
        human: dict = {}
        for a in sub:
            human.setdefault((a["voice"], a["prompt"], a["repeat"], a["shown"][0]), []).append(a["answer"])
        metric = {(str(r["voice_ref"]), str(r["prompt_id"]), int(r["repeat"]), str(r["target_model"])): r[column]
                  for r in frame.to_dict(orient="records")}
        xs, ys = [], []
        for k, v in human.items():
            m = metric.get(k)
            try:
                m = float(m)
            except (TypeError, ValueError):
                continue
            if math.isfinite(m):
                xs.append(float(np.mean(v)))
                ys.append(m)
        n = len(xs)
        rho = lo = hi = p = float("nan")
        if n >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
            res = stats.spearmanr(xs, ys)
            rho, p = float(res.statistic), float(res.pvalue)
            if n > 3 and abs(rho) < 1:
                z, se = math.atanh(rho), math.sqrt(1.06 / (n - 3))
                lo, hi = math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)
        rows.append({"human": kind.upper(), "metric": column, "metric_model": _metric_model(column), "n": n,
                     "rho": rho, "ci_low": lo, "ci_high": hi, "p_value": p,
                     "interval": "95 % Fisher z, var 1.06/(n-3)"})
    return pd.DataFrame(rows, columns=cols)


def _attention(checks):
    import pandas as pd

    rows = []
    for rater in sorted({a["rater"] for a in checks}):
        s = [a for a in checks if a["rater"] == rater]
        passed = sum((a["answer"] == "tie") if a["kind"] == "ab" else (a["answer"] >= ATTENTION_MIN_SCORE) for a in s)
        rows.append({"rater": rater, "checks": len(s), "passed": passed})
    return pd.DataFrame(rows, columns=["rater", "checks", "passed"])


# --------------------------------------------------------------------------- report section


def report_html(run_dir, *, n_boot: int = 2000) -> str:
    """The "Listening test" section of the report: empty when the run has no answers."""
    if not any((Path(run_dir) / LISTENING_DIR).glob("*.jsonl")):
        return ""
    t = summarize(run_dir, n_boot=n_boot)
    answers = read_answers(run_dir)
    raters = sorted({a["rater"] for a in answers})
    scripted = sum(bool(a.get("scripted")) for a in answers)
    parts = ["<h2>Listening test</h2>"]
    if scripted:
        parts.append(f'<p class="qv-simulated"><b>SIMULATED: {scripted} of {len(answers)} answers come from a '
                     "scripted rater (qvtools.listening.ScriptedRater), not a person; rows holding them are "
                     "marked simulated. They test the tooling, they are no human verdict.</b></p>")
    parts += [f"<p>{len(answers)} answers from {len(raters)} rater(s) ({html.escape(', '.join(raters))}), blinded "
              "(model names hidden, order and A/B side randomised per rater, players loudness-matched to "
              f"{TARGET_LUFS:g} LUFS). Intervals: 95 % percentile bootstrap resampling raters and items; "
              "p: two-sided sign test. The human verdict (<code>share_a</code>) stands beside the objective one "
              "(<code>metric_share_a</code>: share of the same items on which model_a's metric is higher; metric "
              "model named per row).</p>"]
    for name, title in (("preference", "A/B preference"), ("scores", "SMOS and MOS (1-5)"),
                        ("strengths", "Bradley-Terry strengths (choix)"),
                        ("agreement", "Inter-rater agreement (Krippendorff's alpha)"),
                        ("vs_metrics", "Human scores vs objective metrics (Spearman)"),
                        ("attention", "Attention checks (reference against itself)")):
        frame = t[name]
        if not frame.empty:
            parts.append(f"<h3>{title}</h3>" + frame.to_html(index=False, float_format=lambda v: f"{v:.3g}",
                                                               classes="qv-listening", border=0))
    return "\n".join(parts)
