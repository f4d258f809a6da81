"""Simulated per-model latency for the local realtime service. SIMULATED, not measured.

The local service answers in a few milliseconds of real processing plus the offline speech
engines; to make client-side latency analysis meaningful offline, each response adds delays
drawn from a per-model :class:`LatencyProfile` ("plus" slower than "flash", as the model sizes
suggest). The numbers are placeholders chosen by us, **not** measurements of the cloud service;
``session.created`` says so in its ``qvtools`` metadata field.

Draws are deterministic: seeded by the session ``seed`` (or a per-session random seed when
unset) and the turn index, so the same session config reproduces the same delays.
``ServiceConfig.realtime_latency`` selects ``"simulated"`` (default) or ``"none"``;
``realtime_latency_scale`` multiplies every delay; ``realtime_latency_profiles`` overrides fields.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, fields, replace

from ..catalog import family

__all__ = ["LatencyProfile", "TurnDelays", "PROFILES", "profile_for_model", "LatencySimulator", "NO_DELAYS"]


@dataclass(frozen=True)
class LatencyProfile:
    """Delays of one model family, in ms (log-normal around the median with ``jitter`` sigma).

    - ``created_ms``: end of the user turn -> ``response.created`` (most of the wait, §7.6);
    - ``first_audio_ms``: ``response.created`` -> first ``response.audio.delta`` (transcript deltas first, §7.5);
    - ``realtime_factor``: audio generated per wall-clock second after the first chunk (2.0 = twice as
      fast as playback); 0 or less sends the remaining chunks without pacing.
    """

    name: str
    created_ms: float
    first_audio_ms: float
    jitter: float = 0.25
    realtime_factor: float = 2.0


#: SIMULATED placeholder profiles (not measurements). Shaped after the one observed trace (§7.6: "most of
#: the wait falls before ``response.created``, not after it": created 417-539 ms after the end of input,
#: first audio 40-175 ms later; qwen3.5-omni-flash first audio p50 ≈ 299 ms), with "plus" slower than
#: "flash" as the model sizes suggest. The delays are floors: the service computes the reply (transcript,
#: reply text, first synthesized sentence) before ``response.created`` and sends it at
#: ``end of input + created_ms`` or when that work is done, whichever is later; so on a busy machine the
#: machine shows through. The catalog names each family's profile (``ModelFamily.latency_profile``).
PROFILES = {
    "plus": LatencyProfile("plus", created_ms=650.0, first_audio_ms=180.0, jitter=0.25, realtime_factor=1.6),
    "flash": LatencyProfile("flash", created_ms=450.0, first_audio_ms=120.0, jitter=0.25, realtime_factor=2.5),
    "turbo": LatencyProfile("turbo", created_ms=500.0, first_audio_ms=150.0, jitter=0.30, realtime_factor=2.0),
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


class LatencySimulator:
    """Deterministic delay draws for one session: ``sample(turn_index, chunk_ms) -> TurnDelays``."""

    def __init__(self, profile: LatencyProfile, seed: int | None = None, *, scale: float = 1.0,
                 enabled: bool = True):
        self.profile = profile
        self.seed = random.SystemRandom().randrange(2**31) if seed is None or seed < 0 else int(seed)
        self.scale = float(scale)
        self.enabled = bool(enabled) and self.scale > 0

    def __repr__(self) -> str:
        return f"LatencySimulator({self.profile.name}, seed={self.seed}, scale={self.scale}, enabled={self.enabled})"

    def _rng(self, turn_index: int) -> random.Random:
        h = hashlib.sha256(f"{self.profile.name}\x1f{self.seed}\x1f{turn_index}".encode()).digest()
        return random.Random(int.from_bytes(h[:8], "big"))

    def _draw(self, rng: random.Random, median_ms: float) -> float:
        if median_ms <= 0:
            return 0.0
        return median_ms * math.exp(rng.gauss(0.0, self.profile.jitter)) * self.scale / 1000.0

    def sample(self, turn_index: int, chunk_ms: float = 100.0) -> TurnDelays:
        if not self.enabled:
            return NO_DELAYS
        rng = self._rng(turn_index)
        created = self._draw(rng, self.profile.created_ms)
        first = self._draw(rng, self.profile.first_audio_ms)
        rf = self.profile.realtime_factor
        interval = (chunk_ms / 1000.0) / rf * self.scale if rf > 0 else 0.0
        return TurnDelays(created, first, interval, simulated=True)
