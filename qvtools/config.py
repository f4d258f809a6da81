"""Settings, read from the environment in one place (:meth:`Settings.from_env`).

Every variable is documented in the README. The API key is kept out of ``repr``
and can be scrubbed from any text with :meth:`Settings.redact` (:func:`qvtools.errors.redact`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .catalog import DEFAULT_COMPARE_MODELS
from .errors import ConfigError, redact

__all__ = ["Settings", "REGIONS", "TARGET_MODELS", "ENROLLMENT_MODEL", "ENROLLMENT_PATH",
           "REALTIME_PATH", "LOCAL_API_KEY"]

#: Documented regions (protocol reference §1). ``local`` is the embedded local service.
REGIONS = {
    "beijing": ("https://dashscope.aliyuncs.com", "wss://dashscope.aliyuncs.com"),
    "singapore": ("https://dashscope-intl.aliyuncs.com", "wss://dashscope-intl.aliyuncs.com"),
    "local": (None, None),
}
_REGION_ALIASES = {"cn": "beijing", "cn-beijing": "beijing", "intl": "singapore",
                   "ap-southeast-1": "singapore", "sg": "singapore"}

#: The two realtime target models a cloned voice is enrolled for by default (SEED §2.1;
#: ../shared/reference/dashscope-protocol.md §2.1); the full catalog of model families lives in
#: :mod:`qvtools.catalog`.
TARGET_MODELS = DEFAULT_COMPARE_MODELS
ENROLLMENT_MODEL = "qwen-voice-enrollment"
ENROLLMENT_PATH = "/api/v1/services/audio/tts/customization"
REALTIME_PATH = "/api-ws/v1/realtime"
#: Key the embedded local service is started with when no key is configured.
LOCAL_API_KEY = "sk-local-qvtools"


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("qvtools", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Where to connect and with which credentials.

    ``region`` is ``local`` (default), ``beijing`` or ``singapore``. ``base_url``
    overrides the HTTP base (e.g. a ``qvtools serve`` already running); the
    WebSocket base is derived from it unless ``ws_url`` is set.
    """

    region: str = "local"
    api_key: str | None = field(default=None, repr=False)
    workspace: str | None = None
    base_url: str | None = None
    ws_url: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    timeout_s: float = 30.0

    def __post_init__(self):
        region = _REGION_ALIASES.get(self.region.lower(), self.region.lower())
        if region not in REGIONS:
            raise ConfigError(f"unknown region {self.region!r}; use one of {', '.join(REGIONS)}")
        object.__setattr__(self, "region", region)
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Build settings from ``DASHSCOPE_*`` / ``QVTOOLS_*`` variables (see README)."""
        env = os.environ if environ is None else environ
        kw: dict = {}
        if env.get("QVTOOLS_REGION"):
            kw["region"] = env["QVTOOLS_REGION"]
        if env.get("DASHSCOPE_API_KEY"):
            kw["api_key"] = env["DASHSCOPE_API_KEY"]
        if env.get("DASHSCOPE_WORKSPACE"):
            kw["workspace"] = env["DASHSCOPE_WORKSPACE"]
        if env.get("QVTOOLS_BASE_URL"):
            kw["base_url"] = env["QVTOOLS_BASE_URL"].rstrip("/")
        if env.get("QVTOOLS_WS_URL"):
            kw["ws_url"] = env["QVTOOLS_WS_URL"].rstrip("/")
        if env.get("QVTOOLS_DATA_DIR"):
            kw["data_dir"] = Path(env["QVTOOLS_DATA_DIR"]).expanduser()
        if env.get("QVTOOLS_TIMEOUT_S"):
            try:
                kw["timeout_s"] = float(env["QVTOOLS_TIMEOUT_S"])
            except ValueError:
                raise ConfigError("QVTOOLS_TIMEOUT_S must be a number of seconds") from None
        kw.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**kw)
        if settings.is_cloud and not settings.api_key:
            raise ConfigError(
                f"region {settings.region!r} needs DASHSCOPE_API_KEY; unset QVTOOLS_REGION to use the local service")
        return settings

    @property
    def is_cloud(self) -> bool:
        return self.region != "local" and self.base_url is None

    def with_base_url(self, base_url: str, api_key: str | None = None) -> "Settings":
        return replace(self, base_url=base_url.rstrip("/"), api_key=api_key or self.api_key)

    @property
    def http_base(self) -> str:
        if self.base_url:
            return self.base_url
        http, _ = REGIONS[self.region]
        if http is None:
            raise ConfigError("the local region has no URL until the local service is started (qvtools.connect())")
        return http

    @property
    def ws_base(self) -> str:
        if self.ws_url:
            return self.ws_url
        if self.base_url:
            return "ws" + self.base_url[len("http"):] if self.base_url.startswith("http") else self.base_url
        _, ws = REGIONS[self.region]
        if ws is None:
            raise ConfigError("the local region has no URL until the local service is started (qvtools.connect())")
        return ws

    @property
    def enrollment_url(self) -> str:
        return self.http_base + ENROLLMENT_PATH

    @property
    def realtime_url(self) -> str:
        return self.ws_base + REALTIME_PATH

    def auth_headers(self) -> dict:
        if not self.api_key:
            raise ConfigError("no API key: set DASHSCOPE_API_KEY")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if self.workspace:
            headers["X-DashScope-WorkSpace"] = self.workspace
        return headers

    def redact(self, text: str) -> str:
        return redact(text, self.api_key)
