"""Keep-alive for a live session whose microphone is muted (issue 18; protocol reference §7.22, §7.12).

Qwen's own realtime client (``QwenLM/Qwen-Live-Harness``, §7.22) sends **1 s of zero PCM every 30 s** while
the microphone is muted; without input the service closes an idle session (§7.12: ``response_idle_timeout``
then close 1007). :class:`KeepAlive` is the same rule as a small clock-driven object: :meth:`tick` sends the
silence when :data:`KEEPALIVE_INTERVAL_S` have passed since the last audio (:meth:`touch` records audio the
caller sent itself). In push-to-talk (manual) mode the silence is followed by ``input_audio_buffer.clear``
so it never becomes part of the next committed turn. Used by :class:`qvtools.mic.LiveTalk`
(``keepalive=True``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

__all__ = ["KEEPALIVE_INTERVAL_S", "KEEPALIVE_SILENCE_S", "KeepAlive"]

log = logging.getLogger(__name__)

#: §7.22: Qwen's own client sends the silence every 30 s ...
KEEPALIVE_INTERVAL_S = 30.0
#: ... and it is 1 s of zero PCM.
KEEPALIVE_SILENCE_S = 1.0


class KeepAlive:
    """Sends :data:`KEEPALIVE_SILENCE_S` of zero PCM at the session's input rate once per ``interval_s``
    of silence from the caller. ``clock`` (monotonic seconds) is injectable for tests."""

    def __init__(self, session, *, interval_s: float = KEEPALIVE_INTERVAL_S, silence_s: float = KEEPALIVE_SILENCE_S,
                 clock: Callable[[], float] = time.monotonic):
        if not interval_s > 0 or not silence_s > 0:
            raise ValueError(f"interval_s and silence_s must be positive, got {interval_s!r}, {silence_s!r}")
        self.session = session
        self.interval_s = float(interval_s)
        self.silence_s = float(silence_s)
        self._clock = clock
        self._last = clock()
        #: How many keep-alives were sent.
        self.sent = 0

    def touch(self) -> None:
        """The caller sent audio itself: the next keep-alive is due ``interval_s`` from now."""
        self._last = self._clock()

    def due(self) -> bool:
        return self._clock() - self._last >= self.interval_s

    def tick(self) -> bool:
        """Send the silence if it is due and the session is connected; True when it was sent."""
        s = self.session
        if not self.due() or not s.connected:
            return False
        s.send_silence(self.silence_s)  # push-to-talk: then clear, settled (RealtimeSession.send_silence)
        self.sent += 1
        self._last = self._clock()
        log.debug("keep-alive: %.1f s of silence sent to the muted session", self.silence_s)
        return True
