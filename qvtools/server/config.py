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
