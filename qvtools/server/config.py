"""Configuration of the local service (:class:`ServiceConfig`).

A plain dataclass with defaults, so other parts of the service (the realtime half)
can add their own fields here without touching the enrollment code.

Limits (each enforced while the data streams in, never after buffering everything):

=============================  =========================  ====================================================
limit                          field (default)            over it
=============================  =========================  ====================================================
request body                   ``max_body_bytes``         400 ``InvalidParameter`` "Exceeded limit on max bytes
                               (10 MiB + 64 KiB)          per data-uri item"; read in 64 KiB chunks, refused
                                                          on the chunk that passes it (or on Content-Length)
data URL length                ``max_data_uri_bytes``     400 ``InvalidParameter`` (same message, §2.1 < 10 MB)
                               (10,485,760)
decoded audio duration         ``max_audio_s`` (60 s)     400 ``Audio.DurationLimitError``; checked on the
                                                          header, and decoding stops one sample past 60 s
concurrent realtime sessions   ``max_sessions_per_key``   HTTP 429 ``Throttling.RateQuota`` before the upgrade
per API key                    (4)
WebSocket message size         ``realtime_max_frame_      close 1009 (message too big)
                               bytes`` (16 MiB)
appended-audio buffer          ``realtime_max_buffer_s``  ``error`` event ``input_audio_buffer_limit_exceeded``,
                               (60 s)                     buffer dropped, session continues
idle session                   ``realtime_idle_timeout_   ``error`` event ``idle_timeout``, close 1000
                               s`` (300 s)
session length                 ``realtime_max_session_s`` ``error`` event ``session_expired``, close 1000
                               (7200 s)
=============================  =========================  ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ServiceConfig", "MAX_DATA_URI_BYTES"]

#: "Exceeded limit on max bytes per data-uri item : 10485760" (protocol reference §3, §2.1: < 10 MB encoded).
MAX_DATA_URI_BYTES = 10_485_760


@dataclass
class ServiceConfig:
    """Knobs of the local service. Defaults follow the documented limits (protocol reference §2.4)."""

    #: None: any non-empty ``Authorization: Bearer <key>`` is accepted (each key is its own voice scope).
    api_key: str | None = field(default=None, repr=False)  # never in a repr (a secret)
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
    #: Concurrent realtime sessions per API key; the handshake beyond it is refused *before the upgrade*
    #: with HTTP 429 ``Throttling.RateQuota`` (§3 429 codes) and ``Retry-After: 1``; the client raises
    #: ``APIError(429, "Throttling.RateQuota")`` (``retryable``). 0 disables the limit. The default is
    #: what an otherwise idle 2-core machine holds with every session talking at once
    #: (benchmarks/bench_load.py, 1 min per step: 8 sessions 91 turns/min, TTFA p95 2.7 s, no errors;
    #: 12 sessions saturated, TTFA p95 5.6 s). A busy machine saturates earlier (4 on a loaded one).
    max_sessions_per_key: int = 8
    #: Largest WebSocket message accepted from a client (bytes). A bigger frame closes the socket with
    #: 1009 "message too big" (RFC 6455 §7.4.1); a 60 s PCM16 append at 24 kHz is ~3.9 MB of base64.
    realtime_max_frame_bytes: int = 16 * 1024 * 1024
    #: Most audio the ``input_audio_buffer`` holds (seconds at the input rate). An append past it is
    #: answered by an ``error`` event (code ``input_audio_buffer_limit_exceeded``), the buffer is dropped
    #: (as by ``input_audio_buffer.clear``) and the session continues. With server VAD, audio outside
    #: speech is trimmed to the prefix padding, so only one utterance (or one manual turn) counts.
    realtime_max_buffer_s: float = 60.0
    #: Load the speech engines (Whisper, Piper, the TTS source profile) in the background right after
    #: startup, so the first realtime turn is not ~3 s slower. Never delays readiness; False: load on first use.
    warm_speech: bool = True

    # --- fault injection (qvtools/server/faults.py; README "Fault injection"); all off by default ------
    #: Fault plans by target: an API key or ``"*"`` (every key) -> ``FaultPlan`` or a dict of its fields.
    faults: dict | None = None
    #: Route ``GET/POST /qvtools/faults`` (set plans on the running service over HTTP). Local service only.
    fault_control: bool = False
    #: Honour a client's ``session.update`` ``{"qvtools": {"faults": {...}}}`` for its own session.
    allow_client_faults: bool = False
    #: Longest a realtime send may block (a client that stops reading fills the socket buffers); then
    #: the connection is aborted and "slow reader" logged, instead of buffering for it without bound.
    realtime_send_timeout_s: float = 10.0
