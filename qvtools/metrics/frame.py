"""pandas helpers for results tables of text metrics (display only)."""

from __future__ import annotations

import numpy as np

from .text import ERROR_METRICS

__all__ = ["ERROR_METRIC_LABELS", "by_error_metric"]


#: Display names of the error metrics (tables, plots, badges).
ERROR_METRIC_LABELS = {"wer": "WER", "cer": "CER"}


def by_error_metric(frame):
    """A copy of a results table for display (issue 10 item 5): ``wer`` kept only on rows whose
    ``error_metric`` is "wer" and ``cer`` only on rows whose ``error_metric`` is "cer" (zh/ja/ko), so a
    summary of ``wer`` is over the space-separated languages and one of ``cer`` over the CJK rows, never
    a mix. Rows without ``error_metric`` (runs before it existed) count as WER rows: they keep ``wer`` and
    lose ``cer``."""
    import pandas as pd

    out = frame.copy()
    kind = (out["error_metric"].astype("string") if "error_metric" in out
            else pd.Series(pd.NA, index=out.index, dtype="string")).fillna("wer")
    rate = out["error_rate"].astype("float64") if "error_rate" in out else None
    for name in ERROR_METRICS:
        value = out[name].astype("float64") if name in out else pd.Series(np.nan, index=out.index)
        if rate is not None:
            value = rate.where(rate.notna(), value)
        if name in out or rate is not None:
            out[name] = value.where(kind == name, np.nan).astype("float64")
    return out
