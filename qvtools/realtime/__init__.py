"""Qwen-Omni-Realtime: the shared event model, turn tracking and the websocket-client session."""

from . import events
from .session import RealtimeSession
from .streaming import TurnHandle
from .turn import TimedEvent, Turn, TurnTracker

__all__ = ["events", "RealtimeSession", "TurnHandle", "TimedEvent", "Turn", "TurnTracker"]
