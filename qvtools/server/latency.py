"""Latency of the local realtime service: SIMULATED profiles, or a REPLAY of a measured run.

The local service computes a reply in its own time (the offline speech engines); to make client-side latency
analysis meaningful offline, every response is held back by delays drawn per turn from a *latency source*,
chosen once per service by :class:`~qvtools.server.config.ServiceConfig` (:meth:`LatencySource.from_config`):

- **simulated** (default): ``realtime_latency="simulated"``, one :data:`PROFILES` entry per catalog tier
  (fields overridden by ``realtime_latency_profiles``); ``latency_source`` ``"simulated:flash"``,
  ``"simulated:plus"``, ...
- **replay of a run**: ``latency_from=`` a run directory, its ``results.parquet`` or ``turns.jsonl``
  (``qvtools serve --latency-from``); ``latency_source`` ``"replay:<run>/results.parquet"`` (never a full path);
- **none**: ``realtime_latency="none"``; ``latency_source`` ``"none"``.

``latency_source`` is in ``session.created``'s ``qvtools`` metadata field and in the results column of that name.

``realtime_latency_scale`` multiplies every delay of the first two (0 turns them off).

**When a message is sent.** Each response has three delays (:class:`TurnDelays`): ``response.created`` is sent
at *end of input + created delay* or when the reply is ready (user transcript, reply text, first synthesized
audio), **whichever is later**; the first ``response.audio.delta`` at *created + first-audio delay*
(transcript deltas go first, §7.5); later audio chunks ``chunk_ms / delivery rate`` apart, or as fast
as synthesis goes if that is slower. "End of input" is when the turn ended on the server: VAD
``speech_stopped`` (server VAD) or ``response.create`` (manual turns, text turns). So a delay is a floor: on a
machine slower than the delay the machine shows through, and a client measures the delay itself otherwise.
The local pipeline is meant to be faster than the cloud (issue 11), so the delays below are *the latency
model*, not padding over the machine.

**Simulated profiles** (:data:`PROFILES`) are NOT measurements: they are shaped on the few published
observations (§7.5, §7.6, §7.20 of the protocol reference), each figure's source cited where it is defined.
Draws are log-normal around the median, seeded by the session ``seed`` (a per-session random seed when
unset) and the turn index, so the same session config reproduces the same delays.

**Replay** (:class:`ReplayTable`) draws, per target model, one completed row of a measured run per turn
(seeded the same way) and uses its ``response_created_ms`` (end of speech -> ``response.created``),
``ttfa_created_ms`` (``response.created`` -> first audio) and ``delivery_rtf`` (audio seconds per second of
delivery). ``response_created_ms`` of a server-VAD row starts at the client's last speech chunk and so holds
the VAD silence wait (``vad_window_included``); the server's delay starts at ``speech_stopped``, so for such
rows the delay replayed is ``response_created_ms - speech_stopped_ms`` -- a replayed run then shows the source
run's ``response_created_ms`` again. Manual turns start their figure at the last chunk holding speech and the
server's delay at ``response.create``, so ``response_create_sent_ms`` (the rest of the audio and the commit) is
taken out likewise (rows from before that column: replayed as they are, the trailing audio then counts twice).
Text turns start at ``response.create`` and are replayed as they are. A row is drawn whole (the three figures of one turn stay together); a row
without a usable ``delivery_rtf`` takes one drawn from the model's other rows (none at all: unpaced). The drawn
``delivery_rtf`` paces the chunks after the first, so a replayed turn of n chunks measures about n/(n-1) times
it (+3 % for a 3 s reply in 100 ms chunks), and delivery can be no faster than the local synthesis.
A session on a model the file has no rows for is refused at the handshake (HTTP 400, the models the file
has in the message) unless ``latency_from_pool=True``, which draws from all rows of the file.
The ``simulated`` column of such a run stays True: the figures are replayed, not measured on this service.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import get_args

from ..catalog import base_model, family
from ..errors import ConfigError, LatencySourceError
from .config import LatencyMode

__all__ = ["LatencyProfile", "TurnDelays", "PROFILES", "profile_for_model", "LatencySimulator", "NO_DELAYS",
           "LATENCY_MODES", "REPLAY_COLUMNS", "ReplayTable", "ReplaySampler", "LatencySource"]

#: ``ServiceConfig.realtime_latency`` values (``latency_from`` set: a replay, which needs "simulated").
LATENCY_MODES = get_args(LatencyMode)

#: Columns a replayed run must have (qvtools.results schema).
REPLAY_COLUMNS = ("target_model", "status", "response_created_ms", "ttfa_created_ms", "delivery_rtf")


@dataclass(frozen=True)
class LatencyProfile:
    """Delays of one model family, in ms (log-normal around the median).

    - ``created_ms``: end of input -> ``response.created`` (most of the wait, §7.6); spread ``jitter``
      (sigma of the log);
    - ``first_audio_ms``: ``response.created`` -> first ``response.audio.delta`` (transcript deltas first,
      §7.5); spread ``first_audio_jitter`` (None: ``jitter``);
    - ``realtime_factor``: audio delivered per wall-clock second after the first chunk (2.0 = twice as
      fast as playback); 0 or less sends the remaining chunks without pacing.
    """

    name: str
    created_ms: float
    first_audio_ms: float
    jitter: float = 0.25
    realtime_factor: float = 2.0
    first_audio_jitter: float | None = None


# --- the figures the simulated profiles are built from (protocol reference, §7) --------------------------
#: §7.6, third-party report for qwen3.5-omni-flash-realtime: first audio p50 ≈ 299 ms, p95 ≈ 355 ms after
#: the end of input. MEASURED by a third party (one report, method unknown).
_FLASH_FIRST_AUDIO_P50_MS = 299.0
_FLASH_FIRST_AUDIO_P95_MS = 355.0
#: §7.6, the one qwen3.8-omni-flash trace: ``response.created`` came 539 / 340 / 417 ms after the request and
#: the first audio 577 / 665 / 592 ms after it, so ``response.created`` took 93 % / 51 % / 70 % of the wait to
#: first audio: median 70 % (the share used to split the 299 ms above). MEASURED (3 turns, client clock).
_CREATED_SHARE = 417.0 / 592.0
#: §7.5: audio frames of 15,360 bytes "every ~40-90 ms". Read as base64 characters of 24 kHz PCM16 mono (the
#: smaller of the two readings; as raw bytes it would be 320 ms) a frame is 240 ms of audio; at the 65 ms
#: midpoint that is 3.7x playback speed. DERIVED from an observation (unit of the log uncertain).
_FLASH_DELIVERY_RTF = 0.240 / 0.065
#: No plus-vs-flash measurement exists (§7.20: "that comparison is exactly what qvtools is for"): plus is
#: assumed 1.5x slower than flash in every delay and delivery, as the model sizes suggest. A GUESS.
_PLUS_VS_FLASH = 1.5
#: qwen-omni-turbo (older): nothing observed; assumed between flash and plus. A GUESS.
_TURBO_VS_FLASH = 1.25
#: Spreads (sigma of the log): chosen so the flash sum reproduces p95/p50 = 355/299 (§7.6) with
#: ``response.created`` tighter than the first-audio step, which varied 38-325 ms in the §7.6 trace.
#: FITTED to the third-party p50/p95 (tests/test_latency.py checks the fit).
_CREATED_JITTER = 0.12
_FIRST_AUDIO_JITTER = 0.25


def _scaled(name: str, ratio: float) -> LatencyProfile:
    return LatencyProfile(name, created_ms=round(_FLASH_FIRST_AUDIO_P50_MS * _CREATED_SHARE * ratio, 1),
                          first_audio_ms=round(_FLASH_FIRST_AUDIO_P50_MS * (1 - _CREATED_SHARE) * ratio, 1),
                          jitter=_CREATED_JITTER, first_audio_jitter=_FIRST_AUDIO_JITTER,
                          realtime_factor=round(_FLASH_DELIVERY_RTF / ratio, 2))


#: SIMULATED profiles (not measurements of the cloud), per catalog tier (``ModelFamily.latency_profile``):
#: flash from the §7.6 figures above (created ≈ 210 ms, first audio ≈ 89 ms later, sum p50 ≈ 299 / p95 ≈ 355 ms
#: from end of input; delivery 3.7x playback, §7.5); plus and turbo scaled from flash by GUESSED ratios.
PROFILES = {
    "plus": _scaled("plus", _PLUS_VS_FLASH),
    "flash": _scaled("flash", 1.0),
    "turbo": _scaled("turbo", _TURBO_VS_FLASH),
}


@dataclass(frozen=True)
class TurnDelays:
    """Seconds to wait at each step of one response."""

    created_s: float
    first_audio_s: float
    chunk_interval_s: float  # wait between audio chunks of ``chunk_ms`` ms; 0 = no pacing
    simulated: bool = True


NO_DELAYS = TurnDelays(0.0, 0.0, 0.0, simulated=False)


def profile_for_model(model: str, overrides: dict | None = None) -> LatencyProfile:
    """The profile named by the model's catalog family (``catalog.family(model).latency_profile``: ``plus``,
    ``flash`` or ``turbo``; names outside the catalog get the tier read from the name). ``overrides`` maps a
    profile name to a dict of field values (``{"plus": {"first_audio_ms": 900}}``)."""
    name = family(model).latency_profile
    prof = PROFILES.get(name, PROFILES["flash"])
    if overrides and name in overrides:
        known = {f.name for f in fields(LatencyProfile)}
        bad = set(overrides[name]) - known
        if bad:
            raise ValueError(f"unknown latency profile fields {sorted(bad)}; use {sorted(known - {'name'})}")
        prof = replace(prof, **overrides[name])
    return prof


def _session_seed(seed: int | None) -> int:
    return random.SystemRandom().randrange(2**31) if seed is None or seed < 0 else int(seed)


def _turn_rng(label: str, seed: int, turn_index: int) -> random.Random:
    h = hashlib.sha256(f"{label}\x1f{seed}\x1f{turn_index}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


class LatencySimulator:
    """Deterministic delay draws for one session: ``sample(turn_index, chunk_ms) -> TurnDelays``."""

    def __init__(self, profile: LatencyProfile, seed: int | None = None, *, scale: float = 1.0,
                 enabled: bool = True):
        self.profile = profile
        self.seed = _session_seed(seed)
        self.scale = float(scale)
        self.enabled = bool(enabled) and self.scale > 0

    def __repr__(self) -> str:
        return f"LatencySimulator({self.profile.name}, seed={self.seed}, scale={self.scale}, enabled={self.enabled})"

    def _rng(self, turn_index: int) -> random.Random:
        return _turn_rng(self.profile.name, self.seed, turn_index)

    def _draw(self, rng: random.Random, median_ms: float, sigma: float) -> float:
        if median_ms <= 0:
            return 0.0
        return median_ms * math.exp(rng.gauss(0.0, sigma)) * self.scale / 1000.0

    def sample(self, turn_index: int, chunk_ms: float = 100.0) -> TurnDelays:
        if not self.enabled:
            return NO_DELAYS
        p = self.profile
        rng = self._rng(turn_index)
        created = self._draw(rng, p.created_ms, p.jitter)
        first = self._draw(rng, p.first_audio_ms, p.jitter if p.first_audio_jitter is None else p.first_audio_jitter)
        rf = p.realtime_factor
        interval = (chunk_ms / 1000.0) / rf * self.scale if rf > 0 else 0.0
        return TurnDelays(created, first, interval, simulated=True)


# --------------------------------------------------------------------------------------------- replay

def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _check_replay_row(rec: dict, where: str) -> None:
    """The figures a replayed session would wait on, checked by THE validator (issue 23): delays 0 ..
    :data:`qvtools.validate.MAX_REPLAY_DELAY_MS`, a delivery rate >= :data:`qvtools.validate.MIN_DELIVERY_RTF`,
    real numbers (missing is NaN / None); otherwise a LatencySourceError naming the row and field, before
    any session starts."""
    import pandas as pd

    from ..validate import MAX_REPLAY_DELAY_MS, MIN_DELIVERY_RTF, number

    limits = {"response_created_ms": (0.0, MAX_REPLAY_DELAY_MS), "ttfa_created_ms": (0.0, MAX_REPLAY_DELAY_MS),
              "speech_stopped_ms": (0.0, MAX_REPLAY_DELAY_MS), "response_create_sent_ms": (0.0, MAX_REPLAY_DELAY_MS),
              "delivery_rtf": (MIN_DELIVERY_RTF, None)}
    for col, (low, high) in limits.items():
        value = rec.get(col)
        if value is None or value is pd.NA:
            continue
        try:
            number(value, where=f"{where}, field {col!r}", low=low, high=high, allow_missing=True)
        except ConfigError as exc:
            raise LatencySourceError(str(exc), source=where.split(" row ")[0][len("latency_from "):],
                                     problem="format") from None


class ReplayTable:
    """The completed rows of a measured run, per target model, as ``(created_ms, first_audio_ms, rtf)``
    (``rtf`` NaN when the row has none). Load with :meth:`load`; ``name`` is what metadata shows."""

    def __init__(self, name: str, rows: dict[str, list[tuple[float, float, float]]], *, pool: bool = False):
        self.name = name
        self.rows = {m: list(v) for m, v in rows.items() if v}
        self.pool = bool(pool)
        if not self.rows:
            raise LatencySourceError(f"latency_from {name}: no completed turns with response_created_ms and "
                                     "ttfa_created_ms to replay", source=name, problem="no_rows")

    def __repr__(self) -> str:
        return f"ReplayTable({self.name!r}, {', '.join(f'{m}: {len(v)}' for m, v in self.rows.items())})"

    @property
    def models(self) -> list[str]:
        return sorted(self.rows)

    @classmethod
    def load(cls, path, *, pool: bool = False) -> "ReplayTable":
        """Rows of a run directory (its ``results.parquet``, else ``turns.jsonl``), a ``.parquet`` results
        table or a ``turns.jsonl`` journal. Errors (:class:`~qvtools.errors.LatencySourceError`): no such
        path, no results in a directory, an unreadable file, missing columns, no completed rows."""
        import pandas as pd

        from ..experiment import RESULTS_FILE, TURNS_FILE, read_turns

        p = Path(path).expanduser()
        if not p.exists():
            raise LatencySourceError(f"latency_from: {p.name or path!s} does not exist; pass a run directory or "
                                     f"its {RESULTS_FILE}", source=str(p.name), problem="missing")
        if p.is_dir():
            if (p / RESULTS_FILE).is_file():
                p = p / RESULTS_FILE
            elif (p / TURNS_FILE).is_file():
                p = p / TURNS_FILE
            else:
                raise LatencySourceError(f"latency_from: the directory {p.name} holds no {RESULTS_FILE} or "
                                         f"{TURNS_FILE}; is it a qvtools run directory?", source=p.name,
                                         problem="missing")
        name = f"{p.parent.name}/{p.name}" if p.parent.name else p.name  # never a full path (home dirs)
        try:
            if p.suffix == ".parquet":
                frame = pd.read_parquet(p)
            elif p.suffix == ".jsonl":
                frame = pd.DataFrame.from_records(read_turns(p))
            else:
                raise LatencySourceError(f"latency_from {name}: expected a run directory, a .parquet results "
                                         f"table or a {TURNS_FILE}", source=name, problem="format")
        except LatencySourceError:
            raise
        except ConfigError as exc:  # a row refused by read_turns (issue 23): its file, line and field
            raise LatencySourceError(f"latency_from {name}: {exc}", source=name, problem="format") from None
        except Exception as exc:  # a corrupt or foreign file
            raise LatencySourceError(f"latency_from {name}: cannot read it ({type(exc).__name__})",
                                     source=name, problem="format") from None
        return cls.from_frame(frame, name, pool=pool)

    @classmethod
    def from_frame(cls, frame, name: str = "table", *, pool: bool = False) -> "ReplayTable":
        """The replayable rows of a results table (completed, finite created and first-audio figures)."""
        missing = [c for c in REPLAY_COLUMNS if c not in frame.columns]
        if missing:
            raise LatencySourceError(f"latency_from {name}: column(s) {missing} missing; replay needs a qvtools "
                                     f"results table with {list(REPLAY_COLUMNS)}", source=name,
                                     problem="columns")
        has_vad = "speech_stopped_ms" in frame.columns and "turn_detection" in frame.columns
        rows: dict[str, list] = {}
        for i, rec in enumerate(frame.to_dict("records")):
            status, model, mode = rec.get("status"), rec.get("target_model"), rec.get("turn_detection")
            if not (isinstance(status, str) and status == "completed" and isinstance(model, str)):
                continue  # (missing values are pd.NA: compared only once known to be strings)
            _check_replay_row(rec, f"latency_from {name} row {i + 1}")
            created, first, rtf = rec.get("response_created_ms"), rec.get("ttfa_created_ms"), rec.get("delivery_rtf")
            if not (_finite(created) and _finite(first)):
                continue
            created = float(created)
            if has_vad and isinstance(mode, str) and mode in ("server_vad", "semantic_vad") \
                    and _finite(rec.get("speech_stopped_ms")):
                # the server's delay starts at speech_stopped; the row's figure includes the VAD wait
                created -= float(rec["speech_stopped_ms"])
            elif _finite(rec.get("response_create_sent_ms")):
                # manual turns: the server's delay starts at response.create, sent this long after speech end
                created -= float(rec["response_create_sent_ms"])
            rtf = float(rtf) if _finite(rtf) and float(rtf) > 0 else float("nan")
            rows.setdefault(base_model(model), []).append((max(0.0, created), max(0.0, float(first)), rtf))
        return cls(name, rows, pool=pool)

    def problem(self, model: str) -> str | None:
        """Why a session on ``model`` cannot replay this table (no rows for it, pooling off), else None."""
        if base_model(model) in self.rows or self.pool:
            return None
        return (f"latency_from {self.name} has no completed turns of {base_model(model)!r} to replay; it has "
                f"{', '.join(self.models)} (set latency_from_pool to draw from all of them)")

    def rows_for(self, model: str) -> list[tuple[float, float, float]]:
        """The rows a session on ``model`` draws from; :class:`LatencySourceError` when there are none."""
        msg = self.problem(model)
        if msg is not None:
            raise LatencySourceError(msg, source=self.name, problem="model", model=base_model(model),
                                     models=self.models)
        rows = self.rows.get(base_model(model))
        return rows if rows else [r for m in self.models for r in self.rows[m]]


class ReplaySampler:
    """Deterministic draws of one session from a :class:`ReplayTable`: the same ``sample`` interface as
    :class:`LatencySimulator` (same seed and turn -> the same row)."""

    enabled = True

    def __init__(self, table: ReplayTable, model: str, seed: int | None = None, *, scale: float = 1.0):
        self.table = table
        self.model = base_model(model)
        self.rows = table.rows_for(model)
        self.rtfs = [r[2] for r in self.rows if not math.isnan(r[2])]
        self.seed = _session_seed(seed)
        self.scale = float(scale)
        self.enabled = self.scale > 0

    def __repr__(self) -> str:
        return f"ReplaySampler({self.table.name!r}, {self.model}, n={len(self.rows)}, seed={self.seed})"

    def sample(self, turn_index: int, chunk_ms: float = 100.0) -> TurnDelays:
        if not self.enabled:
            return NO_DELAYS
        rng = _turn_rng(f"replay\x1f{self.table.name}\x1f{self.model}", self.seed, turn_index)
        created, first, rtf = self.rows[rng.randrange(len(self.rows))]
        if math.isnan(rtf) and self.rtfs:
            rtf = self.rtfs[rng.randrange(len(self.rtfs))]
        interval = (chunk_ms / 1000.0) / rtf * self.scale if _finite(rtf) and rtf > 0 else 0.0
        return TurnDelays(created * self.scale / 1000.0, first * self.scale / 1000.0, interval, simulated=True)


class LatencySource:
    """What one service's sessions draw their delays from, built once from its config (:meth:`from_config`):
    ``kind`` is ``"simulated"``, ``"replay"`` or ``"none"``."""

    def __init__(self, kind: str = "simulated", *, scale: float = 1.0, overrides: dict | None = None,
                 replay: ReplayTable | None = None):
        if kind not in ("simulated", "replay", "none"):
            raise LatencySourceError(f"unknown latency source {kind!r}", problem="config")
        if kind == "replay" and replay is None:
            raise LatencySourceError("a replay latency source needs a ReplayTable", problem="config")
        self.kind = kind
        self.scale = float(scale)
        self.overrides = overrides
        self.replay = replay

    def __repr__(self) -> str:
        return f"LatencySource({self.kind}, scale={self.scale}, replay={self.replay!r})"

    @classmethod
    def from_config(cls, cfg) -> "LatencySource":
        """From ``ServiceConfig`` (``realtime_latency``, ``realtime_latency_scale``, ``realtime_latency_profiles``,
        ``latency_from``, ``latency_from_pool``); loads and checks a replay file now, so a bad one stops
        the service before it serves (:class:`~qvtools.errors.LatencySourceError`)."""
        mode = getattr(cfg, "realtime_latency", "simulated")
        if mode not in LATENCY_MODES:
            raise LatencySourceError(f"realtime_latency must be one of {LATENCY_MODES}, got {mode!r}",
                                     problem="config")
        scale = float(getattr(cfg, "realtime_latency_scale", 1.0))
        if not math.isfinite(scale) or scale < 0:
            raise LatencySourceError(f"realtime_latency_scale must be a number >= 0, got {scale!r}",
                                     problem="config")
        src = getattr(cfg, "latency_from", None)
        if src is not None and str(src) != "":
            if mode == "none":
                raise LatencySourceError("latency_from replays a run's latencies but realtime_latency is 'none'; "
                                         "drop one of them", problem="config")
            return cls("replay", scale=scale,
                       replay=ReplayTable.load(src, pool=bool(getattr(cfg, "latency_from_pool", False))))
        overrides = getattr(cfg, "realtime_latency_profiles", None)
        for name in overrides or {}:  # bad field names: now, not at the first session
            if name in PROFILES:
                try:
                    profile_for_model(f"qwen3.5-omni-{name}-realtime", overrides)
                except (TypeError, ValueError) as exc:
                    raise LatencySourceError(f"realtime_latency_profiles[{name!r}]: {exc}", problem="config") from None
        return cls(mode, scale=scale, overrides=overrides)

    def name_for(self, model: str) -> str:
        """The ``latency_source`` value of a session on ``model``: ``none``, ``simulated:<profile>`` or
        ``replay:<run>/<file>`` (plus ``+pooled`` when the model's rows come from all models)."""
        if self.kind == "none" or self.scale <= 0:
            return "none"
        if self.kind == "replay":
            pooled = base_model(model) not in self.replay.rows
            return f"replay:{self.replay.name}" + ("+pooled" if pooled else "")
        return f"simulated:{profile_for_model(model, self.overrides).name}"

    def problem(self, model: str) -> str | None:
        """Why a session on ``model`` cannot be served by this source (checked at the handshake), or None."""
        return self.replay.problem(model) if self.kind == "replay" else None

    def sampler(self, model: str, seed: int | None = None):
        """The per-session sampler: :class:`ReplaySampler` or :class:`LatencySimulator` (disabled for none)."""
        if self.kind == "replay":
            return ReplaySampler(self.replay, model, seed, scale=self.scale)
        return LatencySimulator(profile_for_model(model, self.overrides), seed, scale=self.scale,
                                enabled=self.kind == "simulated")

    def metadata(self, model: str) -> dict:
        """The latency part of ``session.created``'s ``qvtools`` metadata field."""
        meta = {"latency": self.kind if self.scale > 0 else "none", "latency_source": self.name_for(model)}
        if self.kind == "simulated":
            meta["latency_profile"] = profile_for_model(model, self.overrides).name
            meta["note"] = ("Latencies of this service are SIMULATED (qvtools.server.latency), not measurements "
                            "of the cloud service.")
        elif self.kind == "replay":
            meta["note"] = (f"Latencies of this service are SIMULATED: delays REPLAYED from the measured run "
                            f"{self.replay.name} (qvtools.server.latency) on the offline stand-in.")
        else:
            meta["note"] = ("Latencies of this service are SIMULATED by the offline stand-in with no added delay "
                            "(the local machine's processing), not measurements of the cloud service.")
        return meta
