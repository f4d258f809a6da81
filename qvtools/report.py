"""Run reports: execute the packaged ``05_report.ipynb`` notebook on a run directory and export one HTML file.

:func:`build_report` injects the parameters (``run_dir``, ``quick``, ``sample_turns``, ``prices``) after the
cell tagged ``parameters`` (papermill's convention, done here with nbclient alone), executes the
notebook, and writes ``RUN_DIR/report.html`` with nbconvert's HTML exporter: code hidden
(``exclude_input``), figures embedded as PNG, audio embedded as ``data:audio/wav;base64`` URLs and
no external scripts (no require.js / MathJax from a CDN), so the file opens offline.

The notebook stays thin; everything it shows comes from :class:`RunView` (``load_run(run_dir)``).
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio_html import audio_tag
from .errors import ConfigError, QVError, redact
from .resources import report_notebook
from .rundir import write_atomic

__all__ = [
    "build_report",
    "load_run",
    "default_run",
    "demo_run",
    "RunView",
    "audio_tag",
    "NOTEBOOK",
    "REPORT_FILE",
    "SIMULATED_NOTE",
    "FALLBACK_NOTE",
    "ERROR_METRIC_NOTE",
    "QUALITY_COLUMNS",
    "LATENCY_COLUMNS",
    "Note",
    "INTERVAL",
]

log = logging.getLogger(__name__)

#: The parameterised report notebook, shipped inside the package (``qvtools/notebooks/05_report.ipynb``;
#: ``notebooks/05_report.ipynb`` of a checkout is a symbolic link to it).
NOTEBOOK = report_notebook()
REPORT_FILE = "report.html"
#: Shown at the top of every report of a run against the local service.
SIMULATED_NOTE = ("Latencies in this report are SIMULATED: the run used the offline local service, whose "
                  "per-model delays are synthetic profiles or a replayed run (qvtools.server.latency; the "
                  "latency_source column says which). They test the tooling, "
                  "not Qwen-Omni-Realtime; do not quote them as model performance.")

#: Shown when a run used degraded clones (create answered ``fallback_mode: true``, §7.9).
FALLBACK_NOTE = ("Some cloned voices were made in DEGRADED mode (the enrollment answered fallback_mode: true, "
                 "e.g. poor audio or a text mismatch): their turns measure a fallback voice, not a faithful "
                 "clone. They are listed under \"Degraded clones\" and flagged per turn (voice_fallback_mode).")

#: Rate and length of the audio embedded in the report (keeps report.html a few MB).
EMBED_SR = 16000
EMBED_REFERENCE_S = 8.0
EMBED_REPLY_S = 20.0
#: Columns summarised and paired in the report; the audible TTFA first (issue 20: leading silence is not speech).
LATENCY_COLUMNS = ("ttfa_audible_ms", "ttfa_ms", "reply_leading_silence_ms", "ttft_ms", "e2e_ms",
                   "response_created_ms", "delivery_rtf")
#: Intelligibility: ``wer`` over the rows scored by WER and ``cer`` over the zh/ja/ko rows scored by CER
#: (``error_metric``; the frame is split by :func:`qvtools.metrics.by_error_metric`, issue 10 item 5).
QUALITY_COLUMNS = ("speaker_similarity", "speaker_similarity_norm", "mos_ovrl", "mos_ovrl_delta", "mos_sig",
                   "mos_bak", "mos_p808", "wer", "cer", "f0_ratio", "loudness_lufs", "reply_duration_s")
#: Said under the summary: which rows each error metric covers.
ERROR_METRIC_NOTE = ("Intelligibility of the replies: WER (word error rate) on rows in space-separated languages "
                     "and CER (character error rate) on Chinese, Japanese and Korean rows (asr_language, "
                     "error_metric); each is summarised over its own rows only, never mixed.")

#: The interval method of every table of the report (qvtools.stats: voices and prompts resampled).
INTERVAL = "cluster"


class Note(str):
    """A sentence a report table shows instead of an empty table: renders as a paragraph in the notebook and
    its HTML export (a plain ``str`` would be shown as a quoted Python repr)."""

    def _repr_html_(self) -> str:
        return f'<p class="qv-note">{html.escape(str(self))}</p>'

    def _repr_markdown_(self) -> str:
        return str(self)


def _rounded(table, metric_of):
    """Cells rounded to each row's metric's meaningful digits (qvtools.stats.metric_spec), as Python numbers
    (ints where no decimals are meaningful) in object columns, so pandas shows each at its own precision."""
    import pandas as pd

    from .stats import metric_spec

    out = table.astype("object").copy()
    for idx in out.index:
        spec = metric_spec(metric_of(idx))
        for col in out.columns:
            v = out.at[idx, col]
            if isinstance(v, (bool, np.bool_)) or isinstance(v, str) or v is None:
                continue
            if isinstance(v, (int, np.integer)):
                out.at[idx, col] = int(v)
                continue
            if isinstance(v, (float, np.floating)):
                if not np.isfinite(v):
                    out.at[idx, col] = "–"
                elif col in ("success_rate", "a_lower_ratio", "ci"):
                    out.at[idx, col] = round(float(v), 2)
                elif col in ("p_value", "p_holm"):
                    out.at[idx, col] = _p_text(v)
                elif col == "effect_size":
                    out.at[idx, col] = round(float(v), 2)
                else:
                    d = spec.digits + (2 if spec.percent else 0)
                    out.at[idx, col] = int(round(float(v))) if d == 0 else round(float(v), d)
    return out if isinstance(out, pd.DataFrame) else out


def _p_text(p) -> str:
    p = float(p)
    if not np.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- qvtools report: the lab template without external scripts (require.js, MathJax, Mermaid CDNs). -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
_TEMPLATE_NAME = "qvtools_report.html.j2"


# --------------------------------------------------------------------------- audio

# --------------------------------------------------------------------------- the view of a run

@dataclass
class RunView:
    """A finished (or partial) run, loaded for reporting."""

    run_dir: Path
    meta: dict
    frame: "object"  # pandas.DataFrame (results.to_frame schema; wer/cer split by metrics.by_error_metric)
    quick: bool = False
    #: The user's price table (:func:`qvtools.results.load_prices`), or None: no cost estimate.
    prices: dict | None = None
    _refs: dict = field(default_factory=dict, repr=False)
    #: encoder -> model -> (median speaker_similarity, turns) when the rows mix speaker encoders (then the
    #: frame's similarity columns are blanked: :func:`qvtools.similarity.unpooled`); empty otherwise.
    mixed_encoders: dict = field(default_factory=dict)

    # -- facts
    @property
    def simulated(self) -> bool:
        """True when the latencies come from the local service's simulated profiles. The banner follows
        the ROWS (issue 23: an edited ``run.json`` or a resumed run cannot drop it): any row with
        ``simulated`` true or a ``simulated:``/``replay:`` latency source makes it true; ``run.json``
        can only add it."""
        f = self.frame
        if "simulated" in f and bool(f["simulated"].astype("boolean").fillna(False).any()):
            return True
        if any(s.startswith(("simulated:", "replay:")) for s in self.latency_sources):
            return True
        if "simulated_latency" in self.meta:
            return self.meta["simulated_latency"] is not False
        return self.meta.get("region", "local") == "local"

    @property
    def latency_sources(self) -> list[str]:
        """The run's ``latency_source`` values (``simulated:flash``, ``replay:<run>/<file>``, ``measured`` ...)."""
        if "latency_source" not in self.frame:
            return []
        return sorted(set(self.frame["latency_source"].dropna().astype(str)))

    @property
    def ok(self):
        """Rows of completed turns."""
        if "status" not in self.frame:
            return self.frame
        return self.frame[(self.frame["status"] == "completed").fillna(False).astype(bool)]

    # -- HTML blocks
    def header_html(self) -> str:
        m = self.meta
        n = len(self.frame)
        n_ok = len(self.ok)
        models = ", ".join(self.models)
        parts = [f"<h1>Voice-clone comparison: {html.escape(models)}</h1>",
                 f"<p>Run <code>{html.escape(self.run_dir.name)}</code>: {n_ok} of {n} turns completed"
                 f" ({len(m.get('voices') or {})} reference voices, {len(m.get('prompts') or {})} prompts, "
                 f"{m.get('repeats', '?')} repeat(s)); region <b>{html.escape(str(m.get('region')))}</b>.</p>"]
        if self.simulated:
            sources = self.latency_sources
            note = SIMULATED_NOTE + (f" Latency source: {', '.join(sources)}." if sources else "")
            parts.append('<div class="qv-simulated" style="border:2px solid #c00;background:#fee;padding:8px;'
                         'margin:8px 0;font-weight:bold">&#9888; ' + html.escape(note) + "</div>")
        parts.append('<p class="qv-latency-origin"><b>How latencies were measured.</b> '
                     + html.escape(self.latency_note()) + "</p>")
        if self.metrics_note():
            parts.append('<p class="qv-metrics-note"><b>How the voices were judged.</b> '
                         + html.escape(self.metrics_note()) + "</p>")
        if self.degraded_voices:
            parts.append('<div class="qv-fallback" style="border:2px solid #c60;background:#fff3e0;padding:8px;'
                         'margin:8px 0;font-weight:bold">&#9888; ' + html.escape(FALLBACK_NOTE) + " ("
                         + html.escape(", ".join(f"{v} for {m}" for v, m in self.degraded_voices)) + ")</div>")
        if n_ok < n:
            parts.append(f'<p style="color:#a40">{n - n_ok} turn(s) did not complete; see "Failed turns".</p>')
        return "\n".join(parts)

    def metadata_table(self):
        """Run metadata as a two-column table (the API key never is in run.json; scrubbed again here)."""
        import pandas as pd

        m = self.meta
        versions = m.get("versions") or {}
        rows = [
            ("region", m.get("region")), ("simulated latency", self.simulated),
            ("latency source", ", ".join(self.latency_sources) or None),
            ("models", ", ".join(m.get("models") or [])), ("repeats", m.get("repeats")),
            ("seed", m.get("seed")), ("realtime pacing", m.get("realtime_pacing")),
            ("started", m.get("created_at")), ("finished", m.get("finished_at")),
            ("host", m.get("host")), ("git commit", m.get("git_commit")),
            ("turns planned / recorded / completed",
             f"{m.get('planned_turns')} / {len(self.frame)} / {len(self.ok)}"),
        ]
        rows += [(f"version: {k}", v) for k, v in versions.items()]
        key = os.environ.get("DASHSCOPE_API_KEY")
        return pd.DataFrame([(k, redact(str(v), key, limit=None, keep_newlines=True)) for k, v in rows], columns=["field", "value"]).set_index("field")

    def encoder_note(self) -> str:
        """For a run whose rows mix speaker encoders: that the similarity columns are left out of every table
        and each encoder's median per model instead; empty otherwise."""
        if not self.mixed_encoders:
            return ""
        per = "; ".join(f"{e}: " + ", ".join(f"{m} {v:.2f} ({n} turns)" for m, (v, n) in models.items())
                        for e, models in self.mixed_encoders.items())
        return (f"This run's speaker similarity comes from {len(self.mixed_encoders)} different encoders, whose "
                "scores are different quantities: the similarity columns are left out of every table and chart "
                f"rather than pooled. Median speaker_similarity per encoder and model: {per}. To compare, rescore "
                "the whole run with one encoder: qvtools replay RUN_DIR --similarity-encoder NAME.")

    def metrics_note(self) -> str:
        """Which models scored similarity and naturalness and how (issue 20); empty for a run without them."""
        ok = self.ok
        parts = []
        if self.mixed_encoders:
            parts.append(self.encoder_note())
        encoders = sorted(set(ok["similarity_encoder"].dropna())) if "similarity_encoder" in ok else []
        if encoders:
            parts.append(f"Speaker similarity by {' and '.join(encoders)}"
                         + (" (different encoders: never compare their scores)" if len(encoders) > 1 else "")
                         + ": speaker_similarity is the raw cosine to the reference, speaker_similarity_norm the "
                         "cosine s-normalised against impostors (the run's other references and the packaged sample "
                         "voices), ref_ceiling_similarity the reference's two halves compared, speaker_identified "
                         "whether the reply is closest to its own reference among the run's references.")
        mos = sorted(set(ok["mos_model"].dropna())) if "mos_model" in ok else []
        if mos:
            parts.append(f"Naturalness by {', '.join(mos)}: predicted listener scores on a 1-5 scale, "
                         "no reference needed; mos_ovrl_delta is the reply minus its reference recording.")
        if "ttfa_audible_ms" in ok and ok["ttfa_audible_ms"].notna().any():
            parts.append("ttfa_audible_ms runs to the first reply sample that is speech (Silero VAD), as played "
                         "at the chunk arrival times; reply_leading_silence_ms is the silence before it.")
        return " ".join(parts)

    def latency_note(self) -> str:
        """What the latencies are measured from and how the audio was sent (results.latency_provenance);
        a run from before the provenance columns falls back to run.json."""
        from . import results

        frame = self.frame
        if "audio_pacing" not in frame or frame["audio_pacing"].isna().all():
            pacing = self.meta.get("audio_pacing") or (
                None if "realtime_pacing" not in self.meta else "realtime" if self.meta["realtime_pacing"] else "fast")
            frame = frame.assign(audio_pacing=pacing)
        return results.latency_provenance(frame)

    # -- degraded clones (§7.9)
    @property
    def degraded_voices(self) -> list[tuple[str, str]]:
        """(reference voice, model) pairs whose clone was made in fallback (degraded) mode."""
        t = self.fallback_frame()
        return [] if t is None else list(zip(t["voice_ref"], t["target_model"]))

    def fallback_frame(self):
        if "voice_fallback_mode" not in self.frame:
            return None
        bad = self.frame[self.frame["voice_fallback_mode"].fillna(False).astype(bool)]
        if bad.empty:
            return None
        cols = ["voice_ref", "target_model", "voice", "voice_fallback_reason"]
        g = bad.groupby(cols[:3], dropna=False, sort=True)
        out = g.size().rename("turns").reset_index()
        reasons = g["voice_fallback_reason"].first().reset_index(drop=True)
        out.insert(3, "fallback_reason", reasons.astype("object").where(reasons.notna(), "(no reason given)"))
        return out

    def fallback_table(self):
        """Voices cloned in degraded mode (voice_fallback_mode), with the service's reason and turn count."""
        t = self.fallback_frame()
        if t is None:
            return Note("None: every clone used in this run was made normally (or the service did not say).")
        return t

    # -- tokens and cost
    def usage_table(self):
        """Token totals per model (qvtools.results.token_totals): input/output, text/audio."""
        from . import results

        totals = results.token_totals(self.frame)
        if totals.empty or not totals["turns_with_usage"].any():
            return Note("No turn reported token usage.")
        return totals

    def cost_table(self):
        """Estimated cost per model, ONLY from the price table the user supplied (none ships with qvtools)."""
        from . import results

        if self.prices is None:
            return Note("No price table was given, so no cost is estimated (qvtools ships no prices). Pass "
                        "--prices prices.json to qvtools compare / report / replay; the format is in "
                        "qvtools.results.PRICES_FORMAT.")
        return results.estimate_cost(self.frame, self.prices, voices_created=int(self.meta.get("voices_created") or 0))

    # -- tables
    @property
    def models(self) -> list[str]:
        """The run's models as given (run.json), then any other model in the table in catalog order."""
        from . import results

        listed = list(self.meta.get("models") or [])
        seen = [m for m in results.model_order(self.frame["target_model"].dropna().astype(str)) if m not in listed]
        return listed + seen

    def _metrics(self, names) -> list[str]:
        ok = self.ok
        return [m for m in names if m in ok and ok[m].notna().any()]

    def summary_table(self):
        """Per model and metric: n, success rate, mean and p50/p90/p95 with bootstrap CIs
        (qvtools.results.summarize) for the latency and the voice-quality metrics."""
        from . import results

        metrics = self._metrics(LATENCY_COLUMNS + QUALITY_COLUMNS)
        if not metrics:
            return Note("No completed turn has metrics yet.")
        table = results.summarize(self.frame, metrics=metrics, interval=INTERVAL, **self._boot())
        # n: turns of the model; n_valid: turns with a value (e.g. only the zh/ja/ko rows have a cer)
        cols = ["n", "n_valid", "success_rate", "mean", "p50", "p50_lo", "p50_hi", "p95", "p95_lo", "p95_hi",
                "interval"]
        if "simulated" in table:  # results.is_simulated_metric: timing figures of a local run say so
            cols.insert(0, "simulated")
        return _rounded(table.set_index(["target_model", "metric"])[cols], lambda idx: idx[1])

    def paired_table(self):
        """The first model minus each other model, paired on voice x prompt x repeat
        (qvtools.results.paired_differences); any model names, in the run's order."""
        import pandas as pd

        from . import results

        from .stats import holm

        models = self._paired_models()
        if len(models) < 2:
            return Note("Only one model in this run: nothing to pair.")
        a = models[0]
        rows = []
        for b in models[1:]:  # Holm over the metrics of each comparison
            part = [results.paired_differences(self.frame, m, a, b, interval=INTERVAL, **self._boot()).to_dict()
                    for m in self._metrics(LATENCY_COLUMNS + QUALITY_COLUMNS + self._extra_metrics())]
            for r, ph in zip(part, holm([r["p_value"] for r in part])):
                r["p_holm"] = ph
            rows += part
        if not rows:
            return Note("No paired metrics yet.")
        index = ["metric"] if len(models) == 2 else ["b", "metric"]
        table = pd.DataFrame(rows).set_index(index)
        return _rounded(table, lambda idx: idx if isinstance(idx, str) else idx[-1])

    def _paired_models(self) -> list[str]:
        return [m for m in self.models if m in set(self.frame["target_model"].dropna())]

    def _extra_metrics(self) -> tuple:
        """Headline metrics the fixed detail lists lack (naturalness, calibrated similarity, audible latency)."""
        from .stats import headline_metrics

        return tuple(m for m in headline_metrics(self.ok) if m not in LATENCY_COLUMNS + QUALITY_COLUMNS)

    # -- the headline: the answer first
    def headline(self):
        """One row per headline metric (qvtools.stats.HEADLINE_METRICS present in the run): each model's median
        (a rate: its mean) rounded to meaningful digits, the paired difference with its two-way cluster interval,
        the Holm-adjusted p-value and a plain verdict. The first model of the run against the second."""
        import pandas as pd

        from .results import compare_models
        from .stats import format_value, metric_spec, short_names

        models = self._paired_models()
        if len(models) < 2:
            return Note("Only one model in this run: no comparison to headline.")
        a, b = models[0], models[1]
        t = compare_models(self.ok, None, a, b, interval=INTERVAL, **self._boot())
        if t.empty:
            return Note("No completed turn has a headline metric yet.")
        names = short_names([a, b])
        rows = []
        for r in t.itertuples():
            spec = metric_spec(r.metric)
            label = spec.label + (f" ({spec.unit.strip()})" if spec.unit else "")
            if r.simulated:
                label += " [simulated]"
            stat = "median" if spec.stat == "median" else "rate" if spec.percent else "mean"
            rows.append({"metric": label, "statistic": stat,
                         names[a]: format_value(r.a_centre, spec), names[b]: format_value(r.b_centre, spec),
                         f"difference {names[a]} − {names[b]} [95 % interval]":
                             f"{format_value(r.diff, spec)} [{format_value(r.ci_low, spec)}, "
                             f"{format_value(r.ci_high, spec)}]",
                         "pairs": int(r.n_pairs), "p (Holm)": _p_text(r.p_holm), "verdict": r.verdict})
        return pd.DataFrame(rows).set_index("metric")

    def headline_note(self) -> "Note":
        """How to read the headline: the models, the interval, the test, the correction, the latency ranking."""
        from .stats import INTERVAL_LABELS, latency_rank_metric

        models = self._paired_models()
        if len(models) < 2:
            return Note("")
        from .results import compare_models

        rank = latency_rank_metric(self.ok)
        used = set()
        t = compare_models(self.ok, [rank], models[0], models[1], interval=INTERVAL, n_boot=20)
        used.update(t["interval_method"].dropna())
        interval = "; ".join(INTERVAL_LABELS.get(u, u) for u in sorted(used)) or INTERVAL_LABELS[INTERVAL]
        rank_text = ("time to first audible speech (ttfa_audible_ms: end of user speech to the first reply sample "
                     "that is speech)" if rank == "ttfa_audible_ms" else
                     "time to first audio message (ttfa_ms; this run has no audible-speech latency, so leading "
                     "silence in the replies is not accounted for)")
        extra = (f" Only the first two models are in the headline; {', '.join(models[2:])} appear in the detail "
                 "tables." if len(models) > 2 else "")
        encoders = (sorted(set(self.ok["similarity_encoder"].dropna().astype(str)))
                    if "similarity_encoder" in self.ok else [])
        if self.mixed_encoders:  # never pooled: the similarity columns were blanked (load_run), shown per encoder
            extra += " " + self.encoder_note()
        elif len(encoders) == 1:
            extra += f" Speaker similarity is scored by the {encoders[0]} encoder."
        return Note(f"{models[0]} against {models[1]} on the same reference voice, prompt and repeat. Differences "
                    f"are the median of the paired differences (a rate: their mean) with a 95 % interval by "
                    f"{interval}; p is a Wilcoxon signed-rank test on the per voice × prompt mean differences, "
                    "Holm-corrected across the metrics of this table. A verdict names a difference only when the "
                    f"Holm-corrected p is below 0.05 and the interval excludes zero. Latency is ranked by "
                    f"{rank_text}.{extra}")

    def per_voice_table(self):
        """Per reference voice and model: turns, speaker similarity, identification rate, DNSMOS and the
        reference-vs-reference ceiling (the columns the run has), weakest similarity first."""
        import pandas as pd

        from .stats import format_value

        ok = self.ok
        cols = [c for c in ("speaker_similarity", "speaker_similarity_norm", "speaker_identified", "mos_ovrl",
                            "ref_mos_ovrl", "ref_ceiling_similarity", "wer", "cer") if c in self._metrics([c])]
        if ok.empty or not cols:
            return Note("No completed turn has a per-voice metric yet.")
        num = ok.assign(**{c: pd.to_numeric(ok[c].astype("object"), errors="coerce").astype("float64")
                           for c in cols})
        g = num.groupby(["voice_ref", "target_model"], dropna=False)
        agg = {c: ("mean" if c == "speaker_identified" else "median") for c in cols}
        t = g.agg(agg)
        t.insert(0, "turns", g.size())
        sort = "speaker_similarity" if "speaker_similarity" in t else cols[0]
        t = t.sort_values(sort)
        out = t.astype("object")
        for c in cols:
            out[c] = [format_value(v, c) for v in t[c]]
        out.index.names = ["reference voice", "model"]
        return out.rename(columns={"speaker_identified": "identified", "speaker_similarity": "similarity (median)"})

    def failures_table(self):
        cols = [c for c in ("turn_id", "voice_ref", "target_model", "prompt_id", "repeat", "status", "error")
                if c in self.frame]
        bad = self.frame.drop(index=self.ok.index)
        if bad.empty:
            return Note("None: every turn completed.")
        return bad[cols].reset_index(drop=True)

    def _boot(self) -> dict:
        return {"n_boot": 200} if self.quick else {}

    # -- figures (qvtools.plots draws; one figure per call, shown by the notebook's inline backend)
    def plot_latency(self) -> list:
        """ECDFs on a log axis of the latency models are ranked by (audible TTFA when the run has it) and of
        the time to the first audio message, and box plots of TTFA / end-to-end latency per model."""
        from . import plots
        from .stats import latency_rank_metric

        drawn = []
        rank = latency_rank_metric(self.ok)
        ecdfs = [rank] + (["ttfa_ms"] if rank != "ttfa_ms" else [])
        for metric in self._metrics(ecdfs):
            drawn.append(plots.latency_ecdf(self.ok, metric, log=True))
        for metric in self._metrics(["ttfa_ms", "e2e_ms"]):
            drawn.append(plots.latency_box(self.ok, metric))
        return drawn

    def similarity_matrix(self):
        """Mean speaker similarity to the reference: reference voice x model."""
        ok = self.ok
        if "speaker_similarity" not in self._metrics(["speaker_similarity"]):
            return None
        m = ok.assign(speaker_similarity=ok["speaker_similarity"].astype("float64")).pivot_table(
            index="voice_ref", columns="target_model", values="speaker_similarity", aggfunc="mean")
        m.index.name, m.columns.name = "reference voice", "target model"
        return m

    def plot_quality(self) -> list:
        """Speaker similarity per voice x model (heat map) and per model (box); WER (space-separated languages)
        and CER (zh/ja/ko rows) per model, each over its own rows."""
        from . import plots

        drawn = []
        matrix = self.similarity_matrix()
        if matrix is not None and not matrix.empty:
            drawn.append(plots.similarity_heatmap(matrix, vmin=0.0, title="Speaker similarity to the reference"))
        for metric in self._metrics(("speaker_similarity", "wer", "cer", "f0_ratio")):
            drawn.append(plots.latency_box(self.ok, metric))
        return drawn

    # -- audio
    def sample(self, n: int = 6):
        """A deterministic sample of completed turns with audio, grouped so each (voice, prompt,
        repeat) appears under every model next to each other, spread across voices."""
        ok = self.ok
        if "audio_path" in ok:
            ok = ok[ok["audio_path"].notna()]
        if ok.empty or n <= 0:
            return ok.iloc[0:0]
        ok = ok.sort_values(["voice_ref", "prompt_id", "repeat", "target_model"])
        groups = {}
        for key, g in ok.groupby(["voice_ref", "prompt_id", "repeat"], sort=True):
            groups.setdefault(key[0], []).append(g)
        picked, depth = [], 0
        while sum(len(g) for g in picked) < n and any(depth < len(v) for v in groups.values()):
            for voice in sorted(groups):
                if depth < len(groups[voice]) and sum(len(g) for g in picked) < n:
                    picked.append(groups[voice][depth])
            depth += 1
        import pandas as pd

        return pd.concat(picked).head(n)

    def reference(self, voice: str):
        """The reference recording of a voice, (samples, sr), or None when it is not on disk."""
        from .audio import load

        if voice not in self._refs:
            from .rundir import read_audio, reference_path

            voices = self.meta.get("voices") if isinstance(self.meta.get("voices"), dict) else {}
            # never an arbitrary absolute path from a shared run.json (issue 23): run dir or samples only
            path = reference_path(self.run_dir, voices.get(voice), where=f"run.json voices[{voice!r}]")
            try:
                self._refs[voice] = read_audio(path, where=f"reference of {voice}") if path else None
            except Exception as exc:
                log.warning("reference of %s not readable: %s", voice, exc)
                self._refs[voice] = None
        return self._refs[voice]

    def audio_html(self, n: int = 6) -> str:
        """A table of ``n`` sample turns: reference player, reply player, transcript and scores."""
        sample = self.sample(n)
        if sample.empty:
            return "<p>No completed turn with audio to play.</p>"
        rows = []
        for _, r in sample.iterrows():
            ref = self.reference(r["voice_ref"])
            ref_tag = (audio_tag(ref, max_s=EMBED_REFERENCE_S, rate=EMBED_SR, title=f"reference {r['voice_ref']}")
                       if ref else "(reference missing)")
            try:
                from .rundir import contained, read_audio

                where = f"turn {r['turn_id']}, audio_path"
                reply = read_audio(contained(self.run_dir, r["audio_path"], where=where), where=where)
                reply_tag = audio_tag(reply, max_s=EMBED_REPLY_S, rate=EMBED_SR, title=f"reply {r['turn_id']}")
            except Exception as exc:
                reply_tag = f"(reply audio unreadable: {html.escape(str(exc))})"
            scores = []
            from .metrics import ERROR_METRIC_LABELS

            kind = r.get("error_metric")
            kind = kind if isinstance(kind, str) and kind in ERROR_METRIC_LABELS else "wer"
            for col, fmt in (("speaker_similarity", "sim {:.2f}"), (kind, ERROR_METRIC_LABELS[kind] + " {:.2f}"),
                             ("f0_ratio", "F0 ratio {:.2f}"), ("ttfa_ms", "TTFA {:.0f} ms")):
                v = r.get(col)
                if v is not None and np.isfinite(_num(v)):
                    scores.append(fmt.format(_num(v)))
            text = r.get("assistant_transcript")
            text = text if isinstance(text, str) else ""  # <NA> has no truth value
            if _flag(r.get("voice_fallback_mode")):
                scores.append("DEGRADED clone (fallback_mode)")
            rows.append(
                "<tr>"
                f"<td>{html.escape(str(r['voice_ref']))}</td><td>{html.escape(str(r['target_model']))}</td>"
                f"<td>{html.escape(str(r['prompt_id']))} #{int(r['repeat'])}</td>"
                f"<td>{ref_tag}</td><td>{reply_tag}</td>"
                f"<td>{html.escape(str(text))}</td><td>{html.escape(', '.join(scores))}</td>"
                "</tr>")
        head = ("<tr><th>voice</th><th>model</th><th>prompt</th><th>reference (first "
                f"{EMBED_REFERENCE_S:.0f} s)</th><th>reply</th><th>assistant transcript</th><th>scores</th></tr>")
        return f'<table class="qv-audio">{head}{"".join(rows)}</table>'


def _flag(v) -> bool:
    return v is True or (v is not None and not isinstance(v, float) and str(v).lower() == "true")


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def load_run(run_dir, *, quick: bool = False, prices=None) -> RunView:
    """Load ``run.json`` + the results (``results.parquet``, or ``turns.jsonl`` for a partial run).

    ``prices``: a price table (path or dict, :data:`qvtools.results.PRICES_FORMAT`); default the run's
    ``prices.json`` when it has one. Without one the report estimates no cost."""
    import pandas as pd

    from . import results
    from .experiment import PRICES_FILE, RESULTS_FILE, RUN_FILE, TURNS_FILE, read_turns

    if run_dir is None:
        raise ConfigError("run_dir is not set: pass the directory of a run (qvtools compare --out RUN_DIR)")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir}")
    from .rundir import check_run_rows, read_object

    meta = read_object(run_dir / RUN_FILE, where=RUN_FILE) if (run_dir / RUN_FILE).is_file() else {}
    parquet, turns = run_dir / RESULTS_FILE, run_dir / TURNS_FILE
    if parquet.is_file() and (not turns.is_file() or parquet.stat().st_mtime >= turns.stat().st_mtime):
        try:
            frame, source = pd.read_parquet(parquet), RESULTS_FILE
        except Exception as exc:  # a corrupt or foreign file
            raise ConfigError(f"{RESULTS_FILE}: not a readable results table ({type(exc).__name__})") from None
    elif turns.is_file():
        frame, source = results.to_frame(read_turns(turns)), TURNS_FILE
    else:
        raise ConfigError(f"{run_dir} holds no {TURNS_FILE} or {RESULTS_FILE}; is it a qvtools run directory?")
    # issue 23: every turn id has the runner's shape and every audio_path stays inside the run directory
    check_run_rows(run_dir, frame.to_dict("records"), where=source)
    if prices is None and (run_dir / PRICES_FILE).is_file():
        prices = run_dir / PRICES_FILE
    from .metrics import by_error_metric

    from .similarity import medians_by_encoder, unpooled

    frame = by_error_metric(results.to_frame(frame))
    pooled, encoders = unpooled(frame)  # two encoders' similarity scores are never pooled
    return RunView(run_dir, meta, pooled, quick=quick,
                   prices=results.load_prices(prices) if prices is not None else None,
                   mixed_encoders=medians_by_encoder(frame) if len(encoders) > 1 else {})


def default_run() -> Path:
    """The newest run under ``./reports`` (or the checkout's ``reports/``); a fresh demo run if none."""
    roots = [Path.cwd() / "reports", Path(__file__).resolve().parents[1] / "reports"]
    runs = sorted({p.parent.resolve() for root in roots if root.is_dir() for p in root.glob("*/turns.jsonl")},
                  key=lambda p: (p / "turns.jsonl").stat().st_mtime)
    return runs[-1] if runs else demo_run()


def demo_run(out=None) -> Path:
    """A tiny run (one sample voice, one prompt, both target models) on the local service."""
    import tempfile

    from .experiment import Experiment, sample_prompts, sample_voices
    from .workspace import connect

    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="qvtools-demo-run-"))
    with connect(region="local") as ws:
        Experiment(ws, out, voices=sample_voices()[:1], prompts=sample_prompts()[:1], progress=False).run()
    return out


# --------------------------------------------------------------------------- notebook -> HTML

def _inject(nb, params: dict):
    import nbformat

    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise QVError("the report notebook has no cell tagged 'parameters'")
    src = "# Parameters injected by qvtools.report.build_report\n" + "\n".join(
        f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(idx + 1, cell)
    return nb


def build_report(run_dir, *, sample_turns: int = 6, timeout: float = 600, quick: bool = False,
                 notebook=None, kernel_name: str = "python3", prices=None) -> Path:
    """Execute the report notebook on ``run_dir`` and write ``run_dir/report.html``; return its path.

    ``timeout`` bounds each cell (seconds). ``prices``: the user's price table (path) for the cost
    estimate (default: ``run_dir/prices.json`` if present); it is validated before the notebook runs.
    Raises :class:`~qvtools.errors.QVError` naming the failing cell when the notebook fails.
    """
    import jinja2
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir}")
    if prices is not None:
        from collections.abc import Mapping

        from .results import load_prices

        checked = load_prices(prices)  # a bad table is a clear error here, not a failed notebook cell
        prices = checked if isinstance(prices, Mapping) else str(Path(prices).resolve())
    nb_path = Path(notebook) if notebook else NOTEBOOK
    nb = nbformat.read(nb_path, as_version=4)
    _inject(nb, {"run_dir": str(run_dir), "quick": bool(quick), "sample_turns": int(sample_turns),
                 "prices": prices})
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(run_dir)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        if getattr(exc, "ename", None) in ("ConfigError", "InvalidAudio"):
            # a run directory the report refuses (qvtools.rundir / validate): the same one-line error as
            # in-process, not the notebook's traceback
            raise ConfigError(f"{exc.evalue}") from None
        raise QVError(f"the report notebook failed on {run_dir}: {str(exc)[-1500:]}") from None
    key = os.environ.get("DASHSCOPE_API_KEY")
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True,
                            extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                            template_file=_TEMPLATE_NAME)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": f"qvtools report {run_dir.name}"}})
    out = run_dir / REPORT_FILE
    write_atomic(out, redact(body, key, limit=None, keep_newlines=True).encode("utf-8"))  # never a half report
    log.info("report written to %s", out)
    return out
