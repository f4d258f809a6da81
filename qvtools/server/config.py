"""Configuration of the local service (:class:`ServiceConfig`).

A plain dataclass with defaults, so other parts of the service (the realtime half)
can add their own fields here without touching the enrollment code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServiceConfig", "MAX_DATA_URI_BYTES"]

#: "Exceeded limit on max bytes per data-uri item : 10485760" (protocol reference §3, §2.1: < 10 MB encoded).
MAX_DATA_URI_BYTES = 10_485_760


@dataclass
class ServiceConfig:
    """Knobs of the local service. Defaults follow the documented limits (protocol reference §2.4)."""

    #: None: any non-empty ``Authorization: Bearer <key>`` is accepted (each key is its own voice scope).
    api_key: str | None = None
    #: "1,000 voices per account" (§2.4); exceeding it gives ``Throttling.AllocationQuota``.
    voice_quota: int = 1000
    #: Largest data URL accepted in ``input.audio.data`` (encoded length, §2.1 "< 10 MB").
    max_data_uri_bytes: int = MAX_DATA_URI_BYTES
    #: Largest request body read at all; the body is read in chunks and refused once past it.
    max_body_bytes: int = MAX_DATA_URI_BYTES + 64 * 1024
    #: "max 60 s" (§2.4).
    max_audio_s: float = 60.0
    #: "Sample rate ≥ 24 kHz" (§2.4).
    min_sample_rate: int = 24000
    #: "≥ 3 s of continuous clear speech" (§2.4), measured with Silero VAD.
    min_continuous_speech_s: float = 3.0
    #: MIME types accepted in the data URL (§2.1).
    allowed_mime: tuple = ("audio/wav", "audio/mpeg", "audio/mp4")

    # --- realtime (qvtools/server/realtime.py; protocol reference §4, §5 items 4-10) ---------------
    #: Reject a handshake for a model outside §4.1 with 404 ``ModelNotFound`` (§5.4 [guess]).
    realtime_reject_unknown_model: bool = True
    #: "simulated" adds per-model delays (qvtools/server/latency.py, SIMULATED numbers); "none" disables them.
    realtime_latency: str = "simulated"
    #: Multiplies every simulated delay (0 disables them).
    realtime_latency_scale: float = 1.0
    #: Per-profile field overrides, e.g. ``{"plus": {"first_audio_ms": 900}}``.
    realtime_latency_profiles: dict | None = None
    #: Reply text mode of the stand-in model: "conversation" or "echo".
    realtime_reply_mode: str = "conversation"
    #: Milliseconds of audio per ``response.audio.delta`` (§5.8 [guess] 100-200 ms).
    realtime_audio_chunk_ms: int = 100
    #: Send ``response.done`` (status "incomplete") after ``response.cancel`` (§5.9: the v2 SDK needs it).
    realtime_response_done_on_cancel: bool = True
    #: Answer ``session.finish`` with an I140-style ``error`` instead of ``session.finished`` (§4.3 [obs I140]).
    realtime_finish_error: bool = False
    #: Close a session after this many seconds without a client frame (§4.1 [obs RELAY] about 300 s).
    realtime_idle_timeout_s: float = 300.0
    #: Hard cap on a session's length (§4.1 "At most 120 min").
    realtime_max_session_s: float = 7200.0
    #: Load the speech engines (Whisper, Piper, the TTS source profile) in the background right after
    #: startup, so the first realtime turn is not ~3 s slower. Never delays readiness; False: load on first use.
    warm_speech: bool = True
