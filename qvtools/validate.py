"""THE validator of numbers read from files (issue 23: hostile numbers are refused, not averaged).

Every numeric input a user or a colleague supplies in a file goes through :func:`number`: the rows of
``turns.jsonl`` (:func:`check_row`, with the results schema), the delays and delivery rates a service
replays (``qvtools serve --latency-from``, :mod:`qvtools.server.latency`) and a price table
(``--prices``, :func:`qvtools.results.load_prices`). A value must be a real number -- not a boolean, not
a string --, finite, and in range; otherwise a :class:`~qvtools.errors.ConfigError` names the file, the
line or row and the field. (NaN is JSON's "missing" in a journal row -- ``append_row`` writes it for an
absent mark -- and is accepted as missing where ``allow_missing``; infinities never are.)

The documented limits:

- :data:`MAX_MS` -- any ``*_ms`` figure in a results row: 0 .. 1 hour.
- :data:`MAX_REPLAY_DELAY_MS` -- a delay the local service replays: 0 .. 120 s (the realtime client's
  default reply timeout is 60 s; a longer delay can only be a mistake or an attack, and would leave
  every session silent).
- :data:`MIN_DELIVERY_RTF` -- a delivery rate (audio seconds per second): at least 0.01 (100 times slower
  than real time); ``delivery_rtf`` 1e-300 would pace chunks ~1e299 s apart.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from .errors import ConfigError

__all__ = [
    "MAX_MS",
    "MAX_REPLAY_DELAY_MS",
    "MIN_DELIVERY_RTF",
    "MAX_COUNT",
    "TURN_STATUSES",
    "number",
    "check_row",
]

#: Largest ``*_ms`` figure accepted in a results row (1 hour).
MAX_MS = 3_600_000.0
#: Largest delay the local service replays from a measured run (``--latency-from``): 120 s.
MAX_REPLAY_DELAY_MS = 120_000.0
#: Smallest delivery rate accepted (audio seconds per second of delivery).
MIN_DELIVERY_RTF = 0.01
#: Largest count (tokens, chunks, repeats) accepted in a row.
MAX_COUNT = 10**12
#: The statuses a turn row can hold (qvtools.realtime.turn.Turn.status).
TURN_STATUSES = ("completed", "incomplete", "failed", "cancelled")


def number(value: Any, *, where: str, low: float | None = None, high: float | None = None,
           allow_missing: bool = False, integer: bool = False) -> float | None:
    """``value`` as a float, checked: a real number (not bool / str), finite, ``low <= value <= high``;
    ``integer``: a whole number. ``allow_missing``: None and NaN give None. Otherwise a ConfigError
    naming ``where`` (file, line / row, field)."""
    if value is None and allow_missing:
        return None
    if type(value).__name__ in ("bool", "bool_") or not isinstance(value, numbers.Real):
        kind = type(value).__name__
        raise ConfigError(f"{where}: expected a number, got {kind} {str(value)[:40]!r}")
    try:
        x = float(value)
    except OverflowError:
        digits = int(int(value).bit_length() * 0.30103) + 1  # str() of a huge int may itself refuse
        raise ConfigError(f"{where}: the number has about {digits} digits; out of range") from None
    if math.isnan(x):
        if allow_missing:
            return None
        raise ConfigError(f"{where}: NaN is not a number here")
    if not math.isfinite(x):
        raise ConfigError(f"{where}: must be finite, got {x}")
    if integer and not x.is_integer():
        raise ConfigError(f"{where}: must be a whole number, got {x}")
    if low is not None and x < low:
        raise ConfigError(f"{where}: must be " + ("non-negative" if low == 0 else f">= {low:g}") + f", got {x:g}")
    if high is not None and x > high:
        raise ConfigError(f"{where}: must be <= {high:g}, got {x:g}")
    return x


def _range(name: str, dtype: str) -> tuple[float | None, float | None]:
    if name.endswith("_ms"):
        return 0.0, MAX_MS
    if name.endswith("_s"):
        return 0.0, MAX_MS / 1000.0
    if name == "delivery_rtf":
        return MIN_DELIVERY_RTF, None
    if dtype == "Int64":
        return 0.0, float(MAX_COUNT)
    return None, None


def check_row(row: Mapping, *, where: str, dtypes: Mapping[str, tuple]) -> dict:
    """A journal row checked against the results schema ``dtypes`` (``results.COLUMNS``: name ->
    (dtype, description)): numeric columns hold finite in-range numbers (``*_ms``/``*_s`` >= 0, counts
    whole and >= 0, ``delivery_rtf`` >= :data:`MIN_DELIVERY_RTF`), boolean columns booleans, ``status``
    one of :data:`TURN_STATUSES` (surrounding blanks removed). Returns the row (a copy, normalised);
    a bad value is a ConfigError naming ``where`` and the field. Columns outside the schema pass."""
    out = dict(row)
    for name, value in row.items():
        spec = dtypes.get(name)
        if spec is None or value is None:
            continue
        dtype = spec[0]
        field = f"{where}, field {name!r}"
        if dtype in ("float64", "Int64"):
            low, high = _range(name, dtype)
            x = number(value, where=field, low=low, high=high, allow_missing=True, integer=dtype == "Int64")
            out[name] = x if dtype == "float64" or x is None else int(x)
        elif dtype == "boolean":
            if not isinstance(value, bool):
                raise ConfigError(f"{field}: expected true/false, got {type(value).__name__} {str(value)[:40]!r}")
        elif name == "status":
            if not isinstance(value, str) or value.strip() not in TURN_STATUSES:
                raise ConfigError(f"{field}: expected one of {', '.join(TURN_STATUSES)}, got {str(value)[:40]!r}")
            out[name] = value.strip()
        elif dtype == "string" and not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {type(value).__name__}")
    return out
