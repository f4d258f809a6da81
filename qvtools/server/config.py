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
per API key                    (8)
concurrent realtime sessions   ``max_sessions`` (16)      HTTP 429 ``Throttling.RateQuota`` before the upgrade
(all keys)
WebSocket message size         ``realtime_max_frame_      close 1009 (message too big)
                               bytes`` (16 MiB)
appended-audio buffer          ``realtime_max_buffer_s``  ``error`` event ``input_audio_buffer_limit_exceeded``,
                               (60 s)                     buffer dropped, session continues
idle session (no response      ``realtime_idle_timeout_   ``error`` event ``response_idle_timeout``, then
generated)                     s`` (300 s)                close 1007 with the same text (§7.12)
realtime free text             ``realtime_max_*_chars``   ``error`` event ``invalid_value``, ``param`` names the
                               instructions 32,768;       field (``session.instructions``, ``item.content[0].
                               item text 32,768; names    text``, ``event_id`` ...); the session continues
                               and ids 256; tools JSON
                               65,536
invalid text (lone surrogate   --                         ``error`` event ``invalid_value``, ``param`` names the
``\\ud800`` in any string)                                 field; the session continues
session length                 ``realtime_max_session_s`` ``error`` event ``session_expired``, close 1000
                               (7200 s)
=============================  =========================  ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ServiceConfig", "MAX_DATA_URI_BYTES"]

#: "Exceeded limit on max bytes per data-uri item : 10485760" (protocol reference §3, §2.1: < 10 MB encoded).
MAX_DATA_URI_BYTES = 10_485_760

# Realtime free-text limits (issue 13: no limit let twenty 15 MiB ``session.update`` events hold 1.4 GB).
# The cloud's own limits are undocumented; these are ours, generous for real prompts.
#: ``session.instructions`` and ``response.instructions`` (characters).
MAX_INSTRUCTIONS_CHARS = 32_768
#: Text of a ``conversation.item.create`` item (``input_text`` parts together, a ``function_call_output``).
MAX_TEXT_CHARS = 32_768
#: Names and ids: ``voice``, ``event_id``, item ``id``, ``call_id``, transcription model.
MAX_NAME_CHARS = 256
#: ``session.tools`` as compact JSON.
MAX_TOOLS_CHARS = 65_536
__all__ += ["MAX_INSTRUCTIONS_CHARS", "MAX_TEXT_CHARS", "MAX_NAME_CHARS", "MAX_TOOLS_CHARS"]


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
    # Defaults follow the OBSERVED cloud behaviour (§7); every earlier guess is kept as a choice.
    #: False (default): any ``…-omni-…-realtime`` name is accepted (§7.8, ``catalog.is_realtime_model``);
    #: True: only the catalog's families (``catalog.is_known_model``). Other names get 404 ``ModelNotFound``.
    realtime_reject_unknown_model: bool = False
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
    #: Send ``response.done`` after ``response.cancel`` (§4.5 c [obs 2026]; the v2 SDK needs it). False: the
    #: older models' behaviour (no ``response.done``, [obs RELAY]).
    realtime_response_done_on_cancel: bool = True
    #: ``response.done`` status after a cancel: "cancelled" (observed, §7.6) or "incomplete" (earlier guess).
    realtime_cancel_status: str = "cancelled"
    #: When an unusable voice (unknown clone, clone of another target model, a built-in the family does not
    #: offer, §7.11) is refused: "generation" (observed, §7.3: accepted at ``session.update``, a lone
    #: ``error`` at the next response trigger, no ``response.created``) or "update" (earlier guess).
    realtime_voice_error_timing: str = "generation"
    #: After that generation-time voice error, leave further ``session.update`` events unanswered (§7.3:
    #: "a later session.update on that connection got no answer"; the client must reconnect).
    realtime_dead_after_voice_error: bool = True
    #: Key sets of the ``session`` echo: "observed" (§7.1 ``session.created``, §7.2 ``session.updated``: no
    #: ``turn_detection``, no ``audio`` object) or "full" (the whole effective configuration, earlier guess).
    realtime_session_keys: str = "observed"
    #: Put the ``qvtools`` metadata field (latencies SIMULATED, profile name) into ``session.created``.
    realtime_metadata: bool = True
    #: Ids of ``conversation.item.create`` items: "server" (observed, §7.13: a client-chosen id is not kept)
    #: or "client" (keep the client's id, earlier guess).
    realtime_item_ids: str = "server"
    #: Shape of ``…input_audio_transcription.delta``: "stash" (observed, §7.14: ``text`` empty, ``stash`` the
    #: sentence so far) or "text" (the transcript in ``text``, earlier guess).
    realtime_transcription_delta: str = "stash"
    #: Manual mode (§7.4): "early" sends the user item's ``conversation.item.created`` at the first append
    #: of a turn and input-transcription deltas while audio is still appended; "commit" (earlier guess,
    #: §4.5 b) sends the item after ``committed`` and the transcription after it.
    realtime_manual_user_item: str = "early"
    #: Manual mode with "early": re-transcribe the buffer so far (Whisper, whole-utterance) after every this
    #: many seconds of newly appended audio and send the partial text as a delta (0: deltas only at commit).
    realtime_partial_transcription_s: float = 1.0
    #: Answer ``session.finish`` with an I140-style ``error`` instead of ``session.finished`` (§4.3 [obs I140]).
    realtime_finish_error: bool = False
    #: Idle close: after this many seconds without a generated response (and no response in progress), an
    #: ``error`` with code ``response_idle_timeout`` and then close 1007 with the same text (§7.12).
    realtime_idle_timeout_s: float = 300.0
    #: "observed" (§7.12, above) or "legacy" (seconds without any client frame; ``idle_timeout``, close 1000).
    realtime_idle_close: str = "observed"
    #: Hard cap on a session's length (§4.1 "At most 120 min").
    realtime_max_session_s: float = 7200.0
    #: Concurrent realtime sessions per API key; the handshake beyond it is refused *before the upgrade*
    #: with HTTP 429 ``Throttling.RateQuota`` (§3 429 codes) and ``Retry-After: 1``; the client raises
    #: ``APIError(429, "Throttling.RateQuota")`` (``retryable``). 0 disables the limit. The default is
    #: what an otherwise idle 2-core machine holds with every session talking at once
    #: (benchmarks/bench_load.py, 1 min per step: 8 sessions 91 turns/min, TTFA p95 2.7 s, no errors;
    #: 12 sessions saturated, TTFA p95 5.6 s). A busy machine saturates earlier (4 on a loaded one).
    max_sessions_per_key: int = 8
    #: Concurrent realtime sessions over all keys (issue 13: any key is accepted, so a per-key cap alone
    #: does not bound the service). Refused like the per-key cap (HTTP 429 ``Throttling.RateQuota`` before
    #: the upgrade). Default: the measured talking capacity (8 sessions clean, 12 saturated, above) is below
    #: the 16 concurrent sessions the latency work needs from one address, so the cap is that floor, 16;
    #: beyond it sessions only add queueing. 0 disables it.
    max_sessions: int = 16
    #: Free-text size limits of realtime events (the table above; constants MAX_* of this module). An event
    #: over one gets ``error`` ``invalid_value`` naming the field in ``param``; the session continues.
    realtime_max_instructions_chars: int = MAX_INSTRUCTIONS_CHARS
    realtime_max_text_chars: int = MAX_TEXT_CHARS
    realtime_max_name_chars: int = MAX_NAME_CHARS
    realtime_max_tools_chars: int = MAX_TOOLS_CHARS
    #: Cloned voices whose decoded profile the realtime half keeps in memory (LRU), so a ``session.update``
    #: or a response never re-reads the stored enrollment audio (issue 13).
    realtime_voice_cache_size: int = 64
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
