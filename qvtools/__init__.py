"""qvtools: research toolkit for Qwen voice cloning and Qwen-Omni-Realtime."""

import logging

from . import audio, catalog, metrics, preflight, results
from ._version import __version__
from .config import REGIONS, TARGET_MODELS, Settings
from .enrollment import Voice, VoiceClient
from .errors import (APIError, ConfigError, InvalidAudio, LatencySourceError, MissingExtra, QVError, RealtimeError,
                     SessionTimeout, TransportError, VoiceModelMismatch)
from .experiment import Experiment
from .realtime.session import RealtimeSession
from .realtime.turn import Turn
from .registry import VoiceRegistry
from .workspace import Workspace, connect

__all__ = [
    "__version__",
    "audio",
    "catalog",
    "preflight",
    "metrics",
    "results",
    "Settings",
    "REGIONS",
    "TARGET_MODELS",
    "QVError",
    "ConfigError",
    "InvalidAudio",
    "APIError",
    "TransportError",
    "RealtimeError",
    "SessionTimeout",
    "VoiceModelMismatch",
    "LatencySourceError",
    "MissingExtra",
    "connect",
    "Workspace",
    "Voice",
    "VoiceClient",
    "VoiceRegistry",
    "RealtimeSession",
    "Turn",
    "Experiment",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
