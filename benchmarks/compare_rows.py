"""Compare two ``qvtools compare`` runs' ``results.parquet`` column by column (issue 19 item 6: "``qvtools
compare`` writes the same rows before and after" a refactor).

    python benchmarks/compare_rows.py RUN_A RUN_B [--strict]

``--strict`` compares every column by value: for two replays of ONE run (``qvtools replay`` recomputes the
latencies from the saved marks, so the timing columns must match too).

Rows are paired by ``turn_id`` (both runs must hold the same turn ids). Every column of either table is
printed with one verdict:

- ``equal``            deterministic column, same values (floats within 1e-9 relative; NaN == NaN);
- ``DIFFERS``          deterministic column, values differ (the script exits 1);
- ``timing, same dtype`` / ``TIMING DTYPE DIFFERS`` -- a column whose values depend on when and how fast
  the turn ran (wall-clock times, latencies; on the local service they are *simulated* delays plus this
  machine's scheduling), so only presence and dtype are compared (a dtype difference exits 1);
- ``run-specific``     identifies the run itself (``run_id`` is the run directory's name, ``voice`` the id of
  the voice the run cloned, which holds its creation time; the timestamps and service ids of each turn):
  compared for presence and dtype only;
- ``MISSING in A/B``   a column only one table has (exits 1).

Which columns are timing columns: the ``COLUMNS`` schema of :mod:`qvtools.results` (``*_ms``, ``*_s``
wall times, ``delivery_rtf`` ...), listed below in :data:`TIMING`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

#: Columns whose values depend on wall-clock timing (latencies are *simulated* on the local service, but
#: the simulated delay is added to this machine's real scheduling and decoding times).
TIMING = frozenset({
    "ttfa_ms", "ttft_ms", "ttfa_created_ms", "ttft_created_ms", "response_created_ms", "speech_stopped_ms",
    "e2e_ms", "ttfa_audible_ms", "response_create_sent_ms", "delivery_rtf", "gap_p95_ms", "gap_max_ms",
    "underrun_count", "underrun_ms", "session_s", "metrics_s", "turn_wall_s", "attempts",
})
#: Columns that name the run, the voice it cloned or the moment a turn ran: a cloned voice id holds its
#: creation time (``qwen-omni-vc-<name>-<UTC timestamp>-<hex>``), so two runs never share one.
RUN_SPECIFIC = frozenset({"run_id", "voice", "started_at", "finished_at", "session_id", "response_id"})


def _same(a, b) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        na = a is None or (isinstance(a, float) and math.isnan(a))
        nb = b is None or (isinstance(b, float) and math.isnan(b))
        return na and nb
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def compare(a: pd.DataFrame, b: pd.DataFrame, *, strict: bool = False) -> tuple[list[tuple[str, str, str]], bool]:
    """``([(column, verdict, detail)], ok)`` for two results tables paired by ``turn_id``; ``strict``: every
    column compared by value."""
    if set(a["turn_id"]) != set(b["turn_id"]):
        only_a, only_b = sorted(set(a["turn_id"]) - set(b["turn_id"])), sorted(set(b["turn_id"]) - set(a["turn_id"]))
        raise SystemExit(f"the runs hold different turns: only in A {only_a}, only in B {only_b}")
    a, b = a.set_index("turn_id").sort_index(), b.set_index("turn_id").sort_index()
    out, ok = [("turn_id", "equal", f"{len(a)} turns")], True
    for col in list(a.columns) + [c for c in b.columns if c not in a.columns]:
        if col not in b.columns or col not in a.columns:
            out.append((col, "MISSING in " + ("B" if col not in b.columns else "A"), ""))
            ok = False
            continue
        da, db = str(a[col].dtype), str(b[col].dtype)
        if not strict and (col in TIMING or col in RUN_SPECIFIC):
            kind = "timing" if col in TIMING else "run-specific"
            if da == db:
                out.append((col, f"{kind}, same dtype", da))
            else:
                out.append((col, f"{kind.upper()} DTYPE DIFFERS", f"{da} vs {db}"))
                ok = False
            continue
        bad = [t for t in a.index if not _same(_py(a.at[t, col]), _py(b.at[t, col]))]
        if da != db:
            out.append((col, "DIFFERS", f"dtype {da} vs {db}"))
            ok = False
        elif bad:
            t = bad[0]
            out.append((col, "DIFFERS", f"{len(bad)} turn(s), e.g. {t}: {a.at[t, col]!r} vs {b.at[t, col]!r}"))
            ok = False
        else:
            out.append((col, "equal", da))
    return out, ok


def _py(v):
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--strict", action="store_true", help="compare every column by value (two replays of one run)")
    args = ap.parse_args(argv)
    frames = [pd.read_parquet(d / "results.parquet") for d in (args.run_a, args.run_b)]
    rows, ok = compare(*frames, strict=args.strict)
    w = max(len(c) for c, _, _ in rows)
    for col, verdict, detail in rows:
        print(f"{col:<{w}}  {verdict:<26} {detail}")
    n_eq = sum(v == "equal" for _, v, _ in rows)
    n_t = sum(v.endswith("same dtype") for _, v, _ in rows)
    print(f"\n{n_eq} deterministic columns equal, {n_t} timing/run-specific columns with the same dtype, "
          f"{len(rows) - n_eq - n_t} differ -> {'SAME ROWS' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
