"""Plots (matplotlib only here). Every function takes ``ax=None`` (or ``fig=None`` for multi-panel
figures), draws, and returns what it drew; none calls ``plt.show()``.

Tables are :mod:`qvtools.results` frames. When a table has rows with ``simulated == True`` and the plotted
metric is a timing figure (:func:`qvtools.results.is_simulated_metric`: latencies, ``delivery_rtf``, gaps),
the title says "(simulated latency)", so a chart of the local service's latency profiles is never mistaken
for a cloud measurement; an audio or quality metric (similarity, WER, loudness) is never labelled so.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "latency_ecdf",
    "latency_box",
    "event_waterfall",
    "waveform_spectrogram",
    "f0_contours",
    "similarity_heatmap",
    "simulated_suffix",
    "plain_text",
    "METRIC_LABELS",
]

log = logging.getLogger(__name__)

SIMULATED = " (simulated latency)"


def simulated_suffix(df: pd.DataFrame, metric: str | None = None) -> str:
    """``" (simulated latency)"`` when any row has ``simulated == True`` (and ``metric``, when given, is a
    timing figure, :func:`qvtools.results.is_simulated_metric`), else ``""``."""
    from .results import is_simulated_metric

    if "simulated" not in getattr(df, "columns", ()):
        return ""
    if metric is not None and not is_simulated_metric(metric):
        return ""
    sim = df["simulated"].astype("boolean").fillna(False)
    return SIMULATED if bool(sim.any()) else ""


def plain_text(value) -> str:
    """``str(value)`` shown literally by matplotlib: ``$`` escaped so data (a model or voice name such as
    ``a$x^2$``, issue 23) is never parsed as mathtext -- which fails at draw time, after the command
    reported success."""
    return str(value).replace("$", r"\$")


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    return ax


#: Axis labels of the intelligibility metrics (issue 10 item 5): which rows each one covers.
METRIC_LABELS = {"wer": "WER (word error rate; space-separated languages)",
                 "cer": "CER (character error rate; zh/ja/ko)"}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _groups(df: pd.DataFrame, metric: str, by: str | None) -> list[tuple[str, np.ndarray]]:
    missing = [c for c in (metric, by) if c and c not in df.columns]
    if missing:
        raise ConfigError(f"column(s) {missing} not in the table (have: {list(df.columns)})")
    values = pd.to_numeric(df[metric], errors="coerce").astype("float64")
    if metric in METRIC_LABELS and "error_metric" in df.columns:
        # WER only over the rows scored by WER, CER only over the zh/ja/ko rows (the row's error_metric)
        values = values.where((df["error_metric"].astype("string") == metric).fillna(False))
    if by is None:
        v = values.to_numpy()
        return [(metric, v[np.isfinite(v)])]
    out = []
    for key, g in values.groupby(df[by].astype("object").where(df[by].notna(), "<NA>"), sort=True):
        v = g.to_numpy()
        out.append((plain_text(key), v[np.isfinite(v)]))
    return out


def latency_ecdf(df: pd.DataFrame, metric: str = "ttfa_ms", by: str | None = "target_model", ax=None):
    """Empirical CDF of ``metric`` per group (step plot, n in the legend); returns the Axes."""
    ax = _axes(ax)
    for label, v in _groups(df, metric, by):
        if v.size == 0:
            continue
        xs = np.sort(v)
        ys = np.arange(1, xs.size + 1) / xs.size
        ax.step(np.r_[xs[0], xs], np.r_[0.0, ys], where="post", label=f"{label} (n={xs.size})")
    ax.set_xlabel(_label(metric))
    ax.set_ylabel("fraction of turns ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    ax.set_title(f"ECDF of {_label(metric).split(' (')[0]}" + (f" by {by}" if by else "") + simulated_suffix(df, metric))
    return ax


def latency_box(df: pd.DataFrame, metric: str = "ttfa_ms", by: str | None = "target_model", ax=None,
                *, show_points: bool = True):
    """Box plot of ``metric`` per group (whiskers 1.5 IQR, jittered points on top); returns the Axes."""
    ax = _axes(ax)
    groups = [(label, v) for label, v in _groups(df, metric, by) if v.size]
    if groups:
        ax.boxplot([v for _, v in groups], showfliers=not show_points)
        ax.set_xticks(range(1, len(groups) + 1))
        ax.set_xticklabels([f"{label}\n(n={v.size})" for label, v in groups], fontsize="small")
        if show_points:
            rng = np.random.default_rng(0)  # fixed jitter: the same table draws the same picture
            for i, (_, v) in enumerate(groups, 1):
                ax.plot(i + rng.uniform(-0.12, 0.12, v.size), v, ".", alpha=0.4, color="k", ms=3)
    ax.set_ylabel(_label(metric))
    if by:
        ax.set_xlabel(by)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(_label(metric).split(" (")[0] + (f" by {by}" if by else "") + simulated_suffix(df, metric))
    return ax


#: Marks drawn as vertical lines in :func:`event_waterfall` (Turn contract, docs/architecture.md).
WATERFALL_MARKS = ("first_audio_sent", "speech_end_sent", "last_audio_sent", "response_created",
                   "first_audio_delta", "response_done")


def event_waterfall(turn, ax=None, *, origin: str = "connect", simulated: bool | None = None):
    """Received events of one turn: one row per event type, one tick per event, time in ms since
    ``origin`` (a mark: ``"connect"`` or ``"first_audio_sent"``; the first event when the mark is
    missing). Key marks are dashed vertical lines. Returns the Axes."""
    ax = _axes(ax)
    marks: Mapping[str, float] = getattr(turn, "marks", None) or {}
    events = list(getattr(turn, "events", None) or ())
    t0 = marks.get(origin)
    origin_label = origin
    if t0 is None:
        candidates = [float(e.t) for e in events] + [float(v) for v in marks.values()]
        t0 = min(candidates) if candidates else 0.0
        origin_label = "first event"
    types: list[str] = []
    for e in events:
        if e.type not in types:
            types.append(e.type)
    for row, ty in enumerate(types):
        ts = np.array([(float(e.t) - t0) * 1000.0 for e in events if e.type == ty])
        ax.plot(ts, np.full(ts.size, row), "|", ms=12, mew=1.5, color="C0")
        ax.annotate(f"{ts.size}", (ts.max(), row), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize="x-small", color="0.4")
    ax.set_yticks(range(len(types)))
    ax.set_yticklabels(types, fontsize="small")
    ax.set_ylim(len(types) - 0.5 if types else 0.5, -0.5 if types else -0.5)
    for i, name in enumerate(m for m in WATERFALL_MARKS if m in marks):
        x = (float(marks[name]) - t0) * 1000.0
        ax.axvline(x, ls=(0, (4, 2 + i)), lw=0.9, color=plt.get_cmap("Dark2")(i), label=name)
    if ax.get_legend_handles_labels()[0]:
        # outside the plot area, so it never hides the late (response) rows
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", title="marks",
                  title_fontsize="x-small")
    ax.set_xlabel(f"ms since {origin_label}")
    ax.set_ylabel("event type")
    ax.grid(True, axis="x", alpha=0.3)
    model = getattr(turn, "model", None) or ""
    ax.set_title(f"Events of one turn {plain_text(model)}".rstrip() + (SIMULATED if simulated else ""))
    return ax


def _spectrogram_db(x: np.ndarray, sr: int, nfft: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.signal import stft

    nperseg = min(nfft, max(16, x.size))
    f, t, z = stft(x, fs=sr, nperseg=nperseg, noverlap=nperseg * 3 // 4)
    return f, t, 20.0 * np.log10(np.abs(z) + 1e-10)


def waveform_spectrogram(x, sr: int, ref=None, ref_sr: int | None = None, *, fig=None,
                         titles: Sequence[str] = ("Reply", "Reference"), max_hz: float | None = 8000.0):
    """Waveform (top) and spectrogram (bottom) of ``x``, with the reference ``ref`` beside it when
    given (same dB colour scale). Returns the Figure."""
    from .metrics import _mono

    clips = [(*_mono(x, sr), titles[0])]
    if ref is not None:
        if ref_sr is None:
            raise ConfigError("waveform_spectrogram: ref_sr is required with ref")
        clips.append((*_mono(ref, ref_sr), titles[1] if len(titles) > 1 else "Reference"))
    if fig is None:
        fig = plt.figure(figsize=(6 * len(clips), 5), layout="constrained")
    axes = fig.subplots(2, len(clips), squeeze=False, sharex="col")
    specs = [_spectrogram_db(a, s) if a.size else None for a, s, _ in clips]
    top = max((float(sp[2].max()) for sp in specs if sp is not None), default=0.0)
    mesh = None
    for col, ((a, s, title), sp) in enumerate(zip(clips, specs)):
        wax, sax = axes[0, col], axes[1, col]
        wax.plot(np.arange(a.size) / s, a, lw=0.5)
        wax.set_ylim(-1.05, 1.05)
        wax.set_ylabel("amplitude")
        wax.set_title(f"{title} ({a.size / s:.2f} s, {s} Hz)")
        if sp is not None:
            f, t, db = sp
            mesh = sax.pcolormesh(t, f, db, shading="auto", cmap="magma", vmin=top - 80, vmax=top)
        sax.set_ylim(0, min(max_hz or s / 2, s / 2))
        sax.set_xlabel("time (s)")
        sax.set_ylabel("frequency (Hz)")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes[1, :].tolist(), label="dB")
    return fig


def f0_contours(signals: Mapping[str, tuple] | Sequence[tuple], ax=None, **f0_kwargs):
    """F0 contours (WORLD via :func:`qvtools.metrics.f0_contour`) of several clips on one Axes.

    ``signals``: ``{label: (samples, sr)}`` or a list of ``(label, samples, sr)``. Unvoiced frames
    are gaps; the dotted line is each clip's median F0. Returns the Axes.
    """
    from .metrics import f0_contour

    items = list(signals.items()) if isinstance(signals, Mapping) else [(lab, (x, sr)) for lab, x, sr in signals]
    ax = _axes(ax)
    for i, (label, (x, sr)) in enumerate(items):
        t, f0 = f0_contour(x, sr, **f0_kwargs)
        f0 = np.where(f0 > 0, f0, np.nan)
        voiced = f0[np.isfinite(f0)]
        med = float(np.median(voiced)) if voiced.size else float("nan")
        label = plain_text(label)
        ax.plot(t, f0, lw=1.2, color=f"C{i}", label=f"{label} (median {med:.0f} Hz)" if voiced.size else label)
        if voiced.size:
            ax.axhline(med, ls=":", lw=0.8, color=f"C{i}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("F0 (Hz)")
    ax.grid(True, alpha=0.3)
    if items:
        ax.legend(loc="upper right", fontsize="small")
    ax.set_title("F0 contours")
    return ax


def similarity_heatmap(matrix_df: pd.DataFrame, ax=None, *, annotate: bool = True, vmin: float | None = None,
                       vmax: float | None = 1.0, cmap: str = "viridis", title: str = "Speaker similarity"):
    """Heat map of a square or rectangular similarity table (index = rows, columns = columns), with
    the values written in the cells. Returns the Axes."""
    if not isinstance(matrix_df, pd.DataFrame):
        raise ConfigError(f"similarity_heatmap expects a DataFrame, got {type(matrix_df).__name__}")
    ax = _axes(ax)
    m = matrix_df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]))
    ax.set_xticklabels([plain_text(c) for c in matrix_df.columns], rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(m.shape[0]))
    ax.set_yticklabels([plain_text(i) for i in matrix_df.index], fontsize="small")
    if annotate:
        lo, hi = np.nanmin(m) if np.isfinite(m).any() else 0.0, np.nanmax(m) if np.isfinite(m).any() else 1.0
        mid = (lo + hi) / 2
        for (r, c), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                        color="black" if v > mid else "white")
    ax.figure.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_xlabel(plain_text(matrix_df.columns.name or ""))
    ax.set_ylabel(plain_text(matrix_df.index.name or ""))
    ax.set_title(plain_text(title))
    return ax

