"""Notebook widgets (the only module that imports ipywidgets).

Every builder returns a widget and never calls ``display()``; the notebook shows
it by leaving it as the last expression of a cell.

- :func:`audio_player` plays audio exactly as recorded. ``IPython.display.Audio``
  rescales every clip to full scale by default, which would hide the loudness
  differences we measure, so the player embeds the unmodified clip as a base64
  data URL inside an ``<audio controls>`` element (:func:`qvtools.audio_html.audio_tag`,
  the one builder, shared with the HTML report).
- :class:`ComparisonGrid` lays out voice x prompt rows against the reference
  recording and each target model's reply, with metric badges.
- :class:`VoiceManager` lists, creates (with a preflight report) and deletes
  voices of a workspace.
- :func:`preflight_view` renders a :class:`~qvtools.preflight.PreflightReport`.
- :class:`RunProgress` is a live progress bar a run updates through a callback.
- :class:`ListeningTest` is a blinded listening test (A/B, SMOS, MOS) on a run (:mod:`qvtools.listening`).
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

import ipywidgets as widgets

from .config import TARGET_MODELS
from .errors import ConfigError, InvalidAudio, QVError
from .mic import LiveTalk, LiveTurn, Recorder  # microphone widgets (issue 14), anywidget-based
from .results import is_simulated_metric
from .audio_html import audio_tag

__all__ = [
    "audio_player",
    "metric_badge",
    "fallback_badge",
    "ComparisonGrid",
    "VoiceManager",
    "preflight_view",
    "RunProgress",
    "BADGE_METRICS",
    "DEFAULT_BADGES",
    "Recorder",
    "LiveTalk",
    "LiveTurn",
    "ListeningTest",
]

log = logging.getLogger(__name__)

#: Badges shown by default in the comparison grid (when the table has values for them).
DEFAULT_BADGES = ("ttfa_ms", "speaker_similarity", "wer", "cer")

#: Metric columns that can be shown as badges: column -> (label, format, lower is better).
BADGE_METRICS: dict[str, tuple[str, str, bool]] = {
    "ttfa_ms": ("TTFA", "{:.0f} ms", True),
    "e2e_ms": ("E2E", "{:.0f} ms", True),
    "speaker_similarity": ("sim", "{:.2f}", False),
    "wer": ("WER", "{:.0%}", True),
    "cer": ("CER", "{:.0%}", True),
    "loudness_lufs": ("", "{:.1f} LUFS", False),
}


# --------------------------------------------------------------------------- audio


def audio_player(wav_bytes_or_array: Any, sample_rate: int | None = None, *,
                 title: str | None = None) -> widgets.HTML:
    """A player for WAV/MP3/M4A bytes, a path, or a float/int16 array (with ``sample_rate``).

    Unlike ``IPython.display.Audio`` the clip is NOT normalised: an array is written as
    16-bit PCM as is (clipped to [-1, 1]), encoded bytes are embedded untouched.
    """
    return widgets.HTML(value=audio_tag(wav_bytes_or_array, sample_rate, title=title))


# --------------------------------------------------------------------------- badges


def _shown_for(metric: str, row) -> bool:
    """WER and CER badges follow the row's ``error_metric`` (CER for zh/ja/ko replies, WER otherwise; issue 10
    item 5); a row without one (older runs) shows WER only."""
    if metric not in ("wer", "cer"):
        return True
    kind = row.get("error_metric")
    return metric == (kind if isinstance(kind, str) and kind in ("wer", "cer") else "wer")


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False




def metric_badge(name: str, value: Any, *, simulated: bool = False) -> str:
    """A small HTML badge ``<span class="qv-badge" data-metric=name>label value</span>`` ('n/a' when missing).

    ``simulated=True`` marks a latency badge "(simulated)" (local service latency profiles)."""
    label, fmt, _ = BADGE_METRICS.get(name, (name, "{}", True))
    text = fmt.format(float(value)) if _finite(value) else "n/a"
    # timing badges (results.is_simulated_metric) are simulated on the local service and labelled so
    if simulated and is_simulated_metric(name) and _finite(value):
        text += " (simulated)"
    label = f"{label} " if label else ""
    return (f'<span class="qv-badge" data-metric="{html.escape(name)}" style="display:inline-block;'
            f'margin:1px 2px;padding:0 5px;border-radius:8px;background:#eef;font-size:11px;'
            f'font-family:monospace">{html.escape(label + text)}</span>')


# --------------------------------------------------------------------------- comparison grid


def _rows_of(df_or_rows: Any) -> list[dict]:
    if hasattr(df_or_rows, "to_dict") and hasattr(df_or_rows, "columns"):
        return [dict(r) for r in df_or_rows.to_dict(orient="records")]
    rows = list(df_or_rows)
    out = []
    for r in rows:
        if isinstance(r, Mapping):
            out.append(dict(r))
        elif hasattr(r, "__dataclass_fields__"):
            out.append({k: getattr(r, k) for k in r.__dataclass_fields__})
        else:
            raise TypeError(f"ComparisonGrid: a row must be a mapping or a dataclass, got {type(r).__name__}")
    return out


def _missing(v: Any) -> bool:
    """None, NaN or pandas' NA (without importing pandas here)."""
    return v is None or type(v).__name__ == "NAType" or (isinstance(v, float) and math.isnan(v))


def _truthy(v: Any) -> bool:
    return not _missing(v) and (v is True or str(v).lower() in ("true", "1"))


def fallback_badge(reason: Any = None) -> str:
    """The badge of a turn whose voice is a degraded clone (enrollment ``fallback_mode: true``, §7.9)."""
    why = "" if _missing(reason) or not str(reason).strip() else str(reason)
    title = "the service made this clone in fallback (degraded) mode" + (f": {why}" if why else "")
    return (f'<span class="qv-badge qv-fallback" data-metric="voice_fallback_mode" title="{html.escape(title)}" '
            'style="display:inline-block;margin:1px 2px;padding:0 5px;border-radius:8px;background:#fd8;'
            'color:#630;font-size:11px;font-weight:bold">&#9888; DEGRADED clone</span>')


#: The results columns (qvtools.results.COLUMNS) a comparison-grid row must have.
_GRID_KEYS = ("voice_ref", "prompt_id", "target_model")


def _value(row: Mapping, key: str) -> Any:
    v = row.get(key)
    return None if _missing(v) else v


class ComparisonGrid(widgets.VBox):
    """Voice x prompt rows; columns: the reference recording and each target model's reply.

    ``df_or_rows``: a results DataFrame (:func:`qvtools.results.to_frame`) or list of dicts with
    the :mod:`qvtools.results` columns ``voice_ref``, ``prompt_id``, ``target_model`` and ``audio_path``
    (the reply WAV; a relative path is resolved under ``audio_dir``), plus metric columns
    (:data:`BADGE_METRICS`). A row without ``voice_ref``/``prompt_id``/``target_model`` is a ConfigError. When a voice x prompt x model has several
    repeats, the first successful one is shown. ``references`` maps voice -> its
    reference audio (path, bytes or ``(samples, sr)``). ``models`` fixes the column order
    (default: the models seen, in catalog order -- :func:`qvtools.results.model_order`; any names);
    ``metrics`` the badges (default :data:`DEFAULT_BADGES`; any of :data:`BADGE_METRICS`).
    A cell whose voice was cloned in degraded mode (``voice_fallback_mode`` true, §7.9) carries a
    "DEGRADED clone" badge (:func:`fallback_badge`) with the service's ``voice_fallback_reason``.
    """

    def __init__(self, df_or_rows: Any, references: Mapping[str, Any] | None = None,
                 audio_dir: str | os.PathLike | None = None, *, models: Iterable[str] | None = None,
                 metrics: Iterable[str] | None = None):
        rows = _rows_of(df_or_rows)
        for i, r in enumerate(rows):
            absent = [k for k in _GRID_KEYS if _missing(r.get(k))]
            if absent:
                raise ConfigError(f"ComparisonGrid: row {i} has no {', '.join(absent)} (rows are "
                                  "qvtools.results rows: voice_ref, prompt_id, target_model, audio_path)")
        self.references = dict(references or {})
        self.audio_dir = Path(audio_dir) if audio_dir is not None else None
        seen_models = []
        for r in rows:
            m = r["target_model"]
            if m is not None and m not in seen_models:
                seen_models.append(m)
        if models is None:
            from .results import model_order

            models = model_order(seen_models)
        self.models = list(models)
        self.metrics = list(metrics) if metrics is not None else [
            m for m in DEFAULT_BADGES if any(_finite(r.get(m)) for r in rows)]
        # (voice, prompt) -> model -> chosen row (first completed repeat)
        self.cells: dict[tuple[str, str], dict[str, dict]] = {}
        for r in rows:
            key = (str(r["voice_ref"]), str(r["prompt_id"]))
            per_model = self.cells.setdefault(key, {})
            model = r["target_model"]
            ok = _missing(r.get("status")) or r.get("status") == "completed"
            prev = per_model.get(model)
            if prev is None or (ok and not (_missing(prev.get("status")) or prev.get("status") == "completed")):
                per_model[model] = r
        self.header = widgets.HTML(value=self._header_html())
        self.table = widgets.GridBox(children=self._build_children(), layout=widgets.Layout(
            grid_template_columns=f"minmax(140px, max-content) repeat({1 + len(self.models)}, max-content)",
            grid_gap="4px 12px", align_items="center"))
        self.table.add_class("qv-comparison-grid")
        super().__init__(children=[self.header, self.table])
        self.add_class("qv-comparison")

    def _header_html(self) -> str:
        n = len(self.cells)
        return (f"<b>{n} voice x prompt row{'s' if n != 1 else ''}</b>, models: "
                + ", ".join(html.escape(m) for m in self.models))

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)):
            p = Path(value)
            if not p.is_absolute() and self.audio_dir is not None:
                p = self.audio_dir / p
            return p
        return value

    def _cell(self, src: Any, badges: str, title: str) -> widgets.Widget:
        parts = []
        if src is not None:
            try:
                parts.append(audio_tag(self._resolve(src), title=title))
            except (QVError, ValueError, TypeError, OSError) as exc:
                log.warning("cannot load audio for %s: %s", title, exc)
                parts.append(f'<span class="qv-missing">audio unavailable: {html.escape(str(exc))}</span>')
        else:
            parts.append('<span class="qv-missing">no audio</span>')
        if badges:
            parts.append(f'<div style="max-width:230px;white-space:normal">{badges}</div>')
        out = widgets.HTML(value="".join(parts))
        out.add_class("qv-cell")
        return out

    def _build_children(self) -> list[widgets.Widget]:
        kids: list[widgets.Widget] = [widgets.HTML(value="<b>voice / prompt</b>"),
                                      widgets.HTML(value="<b>reference</b>")]
        kids += [widgets.HTML(value=f"<b>{html.escape(m)}</b>") for m in self.models]
        for (voice, prompt), per_model in sorted(self.cells.items()):
            kids.append(widgets.HTML(value=f"{html.escape(voice)}<br><small>{html.escape(prompt)}</small>"))
            kids.append(self._cell(self.references.get(voice), "", f"{voice} reference"))
            for m in self.models:
                row = per_model.get(m)
                if row is None:
                    kids.append(widgets.HTML(value='<span class="qv-missing">not run</span>'))
                    continue
                sim = row.get("simulated") is True or str(row.get("simulated")).lower() == "true"
                badges = "".join(metric_badge(k, row.get(k), simulated=sim) for k in self.metrics
                                 if _shown_for(k, row))
                status = row.get("status")
                if not _missing(status) and status != "completed":
                    badges += f' <span class="qv-status">{html.escape(str(status))}</span>'
                if _truthy(row.get("voice_fallback_mode")):
                    badges += fallback_badge(row.get("voice_fallback_reason"))
                kids.append(self._cell(_value(row, "audio_path"), badges, f"{voice} / {prompt} / {m}"))
        return kids

    @property
    def players(self) -> int:
        """How many ``<audio>`` players the grid holds."""
        return sum(isinstance(w, widgets.HTML) and "<audio" in w.value for w in self.table.children)


# --------------------------------------------------------------------------- preflight


def preflight_view(report: Any) -> widgets.HTML:
    """Render a preflight report (its ``_repr_html_``) as a widget."""
    if report is None:
        raise ValueError("preflight_view: no report (run qvtools.preflight.check(audio) first)")
    if hasattr(report, "_repr_html_"):
        body = report._repr_html_()
    else:
        body = f"<pre>{html.escape(repr(report))}</pre>"
    out = widgets.HTML(value=body)
    out.add_class("qv-preflight")
    return out


# --------------------------------------------------------------------------- voices


def _voice_field(v: Any, name: str) -> Any:
    return v.get(name) if isinstance(v, Mapping) else getattr(v, name, None)


class VoiceManager(widgets.VBox):
    """Voices of a workspace: a table, create from an upload or a microphone recording (after preflight;
    against the cloud a second click confirms the billed creation), delete with confirmation.

    Uses ``workspace.voices.list()``, ``.create(audio, target_model=..., preferred_name=...,
    language=...)`` and ``.delete(voice)``, and ``qvtools.preflight.check``.
    """

    def __init__(self, workspace: Any, *, target_models: Iterable[str] = TARGET_MODELS):
        self.workspace = workspace
        self.voices: list[Any] = []
        self.report = None
        self._pending_delete: list[str] = []
        self.table = widgets.HTML()
        self.table.add_class("qv-voice-table")
        self.selector = widgets.SelectMultiple(options=[], description="select", rows=5,
                                               layout=widgets.Layout(width="520px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.delete_button = widgets.Button(description="Delete selected", button_style="warning", icon="trash")
        self.confirm_label = widgets.HTML()
        self.confirm_button = widgets.Button(description="Confirm delete", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_box = widgets.HBox([self.confirm_label, self.confirm_button, self.cancel_button],
                                        layout=widgets.Layout(display="none"))
        self.upload = widgets.FileUpload(accept=".wav,.mp3,.m4a", multiple=False, description="Upload clip")
        self.name = widgets.Text(description="name", placeholder="letters, digits, _ (<= 16)")
        self.target_model = widgets.Dropdown(options=list(target_models), description="model")
        self.language = widgets.Text(value="en", description="language")
        self.create_button = widgets.Button(description="Create voice", button_style="success", disabled=True)
        self.preflight = widgets.HTML()
        self.status = widgets.HTML()
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.delete_button.on_click(lambda _b: self.request_delete())
        self.confirm_button.on_click(lambda _b: self.confirm_delete())
        self.cancel_button.on_click(lambda _b: self.cancel_delete())
        self.create_button.on_click(lambda _b: self.create())
        self.upload.observe(self._on_upload, names="value")
        # microphone (issue 14): a recording goes the way of an upload -- preflight, then prepare + create
        self.recorder = Recorder(label="or record", run_preflight=False)  # the manager runs it (load_clip)
        self.recorder.on_recorded(lambda rec: self.load_clip(rec.wav, "recording.wav"))
        self._billing_confirmed = False
        super().__init__(children=[
            widgets.HTML(value="<h4>Voices</h4>"), self.table, self.selector,
            widgets.HBox([self.refresh_button, self.delete_button]), self.confirm_box,
            widgets.HTML(value="<h4>Create a voice</h4>"), self.upload, self.recorder,
            widgets.HBox([self.name, self.target_model, self.language]), self.preflight, self.create_button,
            self.status])
        self.add_class("qv-voice-manager")
        self._clip: bytes | None = None
        self.refresh()

    # -- listing
    def refresh(self) -> list[Any]:
        try:
            self.voices = list(self.workspace.voices.list())
        except QVError as exc:
            self._say(f"cannot list voices: {exc}", error=True)
            return self.voices
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(_voice_field(v, k) or ''))}</td>"
                             for k in ("voice", "target_model", "language", "gmt_create")) + "</tr>"
            for v in self.voices)
        self.table.value = ("<table class='qv-voices'><tr><th>voice</th><th>target model</th><th>language</th>"
                            f"<th>created</th></tr>{rows}</table>" if self.voices else "<i>no voices yet</i>")
        self.selector.options = [str(_voice_field(v, "voice")) for v in self.voices]
        return self.voices

    # -- create
    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.load_clip(bytes(f["content"]), f.get("name"))

    def load_clip(self, data: bytes, name: str | None = None):
        """Run preflight on an uploaded clip and show the report; enables Create when it passes."""
        from . import preflight

        self._clip = bytes(data)
        self.create_button.disabled = True
        self._billing_confirmed = False  # a new clip asks again before a billed creation
        try:
            self.report = preflight.check(self._clip)
        except InvalidAudio as exc:
            self.report = None
            self.preflight.value = f"<b style='color:#b00'>{html.escape(str(exc))}</b>"
            return None
        self.preflight.value = preflight_view(self.report).value
        if not self.name.value and name:
            stem = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in Path(name).stem)[:16]
            self.name.value = stem
        self.create_button.disabled = not bool(getattr(self.report, "ok", True))
        return self.report

    def create(self):
        """Create a voice from the loaded clip (prepared by ``qvtools.preflight.prepare``)."""
        from . import preflight

        if self._clip is None:
            self._say("upload or record a clip first", error=True)
            return None
        if getattr(getattr(self.workspace, "settings", None), "is_cloud", False) and not self._billing_confirmed:
            from .experiment import BILLING_RULE  # SEED §2.4: every created voice is billed

            self._billing_confirmed = True  # the next click (or call) creates
            self.create_button.description = "Confirm: create (billed)"
            self._say(f"This creates a voice on the real service. {BILLING_RULE} Click again to confirm.")
            return None
        self._billing_confirmed = False
        self.create_button.description = "Create voice"
        try:
            prepared = preflight.prepare(self._clip)
            voice = self.workspace.voices.create(prepared.wav, target_model=self.target_model.value,
                                                 preferred_name=self.name.value, language=self.language.value or None)
        except (QVError, ValueError) as exc:  # InvalidAudio / ConfigError / APIError all say what to fix
            self._say(f"create failed: {exc}", error=True)
            return None
        self._say(f"created {_voice_field(voice, 'voice')}")
        self.refresh()
        return voice

    # -- delete
    def request_delete(self) -> list[str]:
        """First step: ask for confirmation of deleting the selected voices."""
        self._pending_delete = list(self.selector.value)
        if not self._pending_delete:
            self._say("select one or more voices first", error=True)
            return []
        n = len(self._pending_delete)
        self.confirm_label.value = (f"Delete {n} voice{'s' if n != 1 else ''} "
                                    f"({html.escape(', '.join(self._pending_delete))})? This cannot be undone.")
        self.confirm_box.layout.display = "flex"
        return self._pending_delete

    def cancel_delete(self) -> None:
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        self._say("delete cancelled")

    def confirm_delete(self) -> list[str]:
        """Second step: delete the voices named in :meth:`request_delete`."""
        deleted = []
        for name in self._pending_delete:
            try:
                self.workspace.voices.delete(name)
                deleted.append(name)
            except QVError as exc:
                self._say(f"delete {name} failed: {exc}", error=True)
        self._pending_delete = []
        self.confirm_box.layout.display = "none"
        if deleted:
            self._say(f"deleted {', '.join(deleted)}")
        self.refresh()
        return deleted

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00" if error else "#070"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"


# --------------------------------------------------------------------------- progress


class RunProgress(widgets.VBox):
    """Live progress of a run: an ``IntProgress`` and a label.

    Pass the instance (it is callable) as a progress callback: ``progress(done, total, message)``
    or ``progress(event_dict)`` with ``done``/``total``/``message`` keys. ``update`` does the same.
    """

    def __init__(self, total: int = 0, description: str = "run"):
        self.bar = widgets.IntProgress(value=0, min=0, max=max(int(total), 1), description=description)
        self.label = widgets.HTML(value=f"0 / {int(total)}")
        self.failed = 0
        super().__init__(children=[widgets.HBox([self.bar, self.label])])
        self.add_class("qv-run-progress")

    def update(self, done: int | None = None, total: int | None = None, message: str | None = None, *,
               failed: bool = False) -> None:
        if total is not None:
            self.bar.max = max(int(total), 1)
        if done is None:
            done = self.bar.value + 1
        if failed:
            self.failed += 1
        self.bar.value = min(int(done), self.bar.max)
        text = f"{self.bar.value} / {self.bar.max}"
        if self.failed:
            text += f", {self.failed} failed"
        if message:
            text += f" &mdash; {html.escape(str(message))}"
        self.label.value = text

    def __call__(self, *args, **kwargs) -> None:
        if len(args) == 1 and isinstance(args[0], Mapping):
            ev = dict(args[0])
            self.update(ev.get("done"), ev.get("total"), ev.get("message"),
                        failed=not _missing(ev.get("status")) and ev.get("status") != "completed")
        else:
            self.update(*args, **kwargs)

    def finish(self, message: str = "done") -> None:
        self.bar.value = self.bar.max
        self.bar.bar_style = "success" if not self.failed else "warning"
        self.update(self.bar.max, message=message)

    @property
    def done(self) -> int:
        return self.bar.value

    @property
    def total(self) -> int:
        return self.bar.max


# --------------------------------------------------------------------------- listening test


class ListeningTest(widgets.VBox):
    """A blinded listening test on a ``compare`` run (issue 21; design and answer log: :mod:`qvtools.listening`).

    ``kind``: ``"ab"`` (two models' replies to the same voice x prompt, answer A / B / Tie to ``question``
    ``"similarity"`` or ``"naturalness"``), ``"smos"`` (1-5 similarity, the reference playable) or ``"mos"``
    (1-5 naturalness, no reference). Model names are never put in any widget (only "A", "B", "this voice"):
    the trials, which hold them, stay on the Python side. Every player is loudness-matched
    (:func:`qvtools.listening.matched_audio`). The trial order and the A/B sides come from ``seed``
    (default: the seed of the rater's earlier answers to this test, else a fresh random one), recorded in
    every answer. Each click appends and fsyncs one answer to ``RUN_DIR/listening/<rater>.jsonl``; a rater who
    comes back sees only the trials not yet answered. ``attention``: that many checks (the reference against
    itself); ``limit``: rate only the first ``limit`` trials of the rater's order.
    """

    def __init__(self, run_dir: str | os.PathLike, rater: str, kind: str = "ab", *, question: str | None = None,
                 seed: int | None = None, attention: int = 0, limit: int | None = None):
        import secrets

        from . import listening
        from .report import load_run

        self.run_dir = Path(run_dir)
        self.rater = rater
        self.kind = kind
        listening.answers_path(run_dir, rater)  # checks the rater name before anything is read
        self.question = question or listening.KIND_QUESTION.get(kind, "")
        earlier = [a for a in listening.read_answers(run_dir, rater)
                   if a["kind"] == kind and a["question"] == self.question]
        if seed is None:
            seed = earlier[0]["seed"] if earlier else secrets.randbits(31)
        elif earlier and earlier[0]["seed"] != int(seed):
            raise ConfigError(f"rater {rater!r} answered this test with seed {earlier[0]['seed']}, not {seed}: "
                              "leave seed unset to resume, or use another rater name")
        self.seed = int(seed)
        self.trials = listening.design(run_dir, kind, seed=self.seed, question=question, attention=attention,
                                       limit=limit)
        self.pending = listening.remaining(self.trials, earlier)
        self._view = load_run(run_dir, quick=True)
        self.heading = widgets.HTML(value=f"<b>{html.escape(listening.QUESTIONS[self.question])}</b>")
        self.counter = widgets.HTML()
        self.stimuli = widgets.HTML()
        self.stimuli.add_class("qv-stimuli")
        labels = [("A", "A"), ("B", "B"), ("Tie", "tie")] if kind == "ab" else [(str(s), s) for s in listening.SCORES]
        self.buttons = []
        for text, value in labels:
            b = widgets.Button(description=text, layout=widgets.Layout(width="64px"))
            b.add_class("qv-answer")
            b.add_class(f"qv-answer-{text.lower()}")
            b.on_click(lambda _b, v=value: self._click(v))
            self.buttons.append(b)
        self.status = widgets.HTML()
        super().__init__(children=[self.heading, self.counter, self.stimuli, widgets.HBox(self.buttons), self.status])
        self.add_class("qv-listening-test")
        self._show()

    @property
    def current(self):
        """The trial on screen (a :class:`qvtools.listening.Trial`), None when all are answered."""
        return self.pending[0] if self.pending else None

    @property
    def done(self) -> bool:
        return not self.pending

    def _player(self, path: str, voice: str, label: str) -> str:
        from .listening import REFERENCE, matched_audio

        src = self._view.reference(voice) if path == REFERENCE else self._view.run_dir / path
        if src is None:
            return f'<span class="qv-missing">{html.escape(label)}: audio unavailable</span>'
        x, sr = matched_audio(src)
        return (f'<div class="qv-stimulus" style="margin:2px 0;display:flex;align-items:center"><b style="width:90px">'
                f'{html.escape(label)}</b>{audio_tag(x, sr, title=label)}</div>')

    def _show(self) -> None:
        total = len(self.trials)
        t = self.current
        if t is None:
            self.counter.value = f"All {total} trials answered. Thank you."
            self.stimuli.value = ""
            for b in self.buttons:
                b.disabled = True
            return
        self.counter.value = f"Trial {total - len(self.pending) + 1} of {total}"
        parts = []
        if self.kind == "smos" or (self.kind == "ab" and self.question == "similarity"):
            from .listening import REFERENCE

            parts.append(self._player(REFERENCE, t.voice, "reference"))
        names = ("A", "B") if self.kind == "ab" else ("this voice",)
        parts += [self._player(path, t.voice, name) for path, name in zip(t.audio, names)]
        self.stimuli.value = "".join(parts)

    def _click(self, value) -> None:
        try:
            self.answer(value)
        except QVError as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"

    def answer(self, value, *, scripted: bool = False) -> dict:
        """Record ``value`` for the current trial (what a button click does); returns the answer written.
        ``scripted``: a program answered, not a person (the answer is labelled so)."""
        from . import listening

        t = self.current
        if t is None:
            raise ConfigError("every trial of this listening test is answered")
        a = listening.make_answer(t, value, rater=self.rater, seed=self.seed, scripted=scripted)
        listening.append_answer(self.run_dir, a)
        self.pending.pop(0)
        self.status.value = ""
        self._show()
        return a

    def run_scripted(self, rater, n: int | None = None) -> int:
        """Let a scripted rater (``rater(trial) -> answer``, e.g. :class:`qvtools.listening.ScriptedRater`)
        answer the next ``n`` trials (all by default); returns how many it answered."""
        k = 0
        while self.current is not None and (n is None or k < n):
            self.answer(rater(self.current), scripted=True)
            k += 1
        return k
