"""Files that ship inside the qvtools package, found with :mod:`importlib.resources`.

The sample data (reference voices, spoken prompts, their manifests and licence notes) lives in
``qvtools/samples/`` and the report notebook in ``qvtools/notebooks/05_report.ipynb``, so a wheel
installed anywhere (not only a checkout) has them: ``qvtools compare`` and ``qvtools report`` run from
any directory (issue 12, item 4; CONVENTIONS.md "Package data through importlib.resources").

There is ONE copy of each file. In a checkout, ``data/make_samples.py`` regenerates the packaged
samples in place, and ``notebooks/05_report.ipynb`` is a symbolic link to the packaged notebook (the
same file, so JupyterLab and ``pytest --nbval-lax notebooks`` see what ``qvtools report`` executes).

Both functions return real filesystem paths. For an installed package (a directory in site-packages,
an editable install or a checkout on ``PYTHONPATH``) that is the package directory itself; if qvtools
were imported from a zip archive, :func:`importlib.resources.as_file` extracts the resource once for
the life of the process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
from importlib import resources
from pathlib import Path

from .errors import ConfigError

__all__ = ["SAMPLES", "REPORT_NOTEBOOK", "samples_dir", "report_notebook", "resource_path"]

#: Package-relative location of the sample data (voices/, prompts/, voices.json, prompts.json).
SAMPLES = "samples"
#: Package-relative location of the parameterised report notebook ``qvtools report`` executes.
REPORT_NOTEBOOK = "notebooks/05_report.ipynb"

_extracted = contextlib.ExitStack()  # resources extracted from a zip import live until exit
atexit.register(_extracted.close)


@functools.lru_cache(maxsize=None)
def resource_path(relative: str) -> Path:
    """A filesystem path of the packaged file or directory ``relative`` (``/``-separated).

    Existence is not checked here (importing qvtools must not fail on an incomplete install); the
    readers say what is missing (e.g. :func:`qvtools.experiment.sample_voices`).
    """
    traversable = resources.files(__package__).joinpath(*relative.split("/"))
    if isinstance(traversable, Path):
        path = traversable
    else:  # not a plain directory (e.g. a zip import): materialise it for this process
        try:
            path = _extracted.enter_context(resources.as_file(traversable))
        except (OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot read the packaged resource {relative!r} of qvtools: {exc}") from None
    return path


def samples_dir() -> Path:
    """The directory of the packaged sample data: ``voices/*.wav``, ``prompts/*.wav``,
    ``voices.json``, ``prompts.json`` and ``README.md`` (how they were made, licences)."""
    return resource_path(SAMPLES)


def report_notebook() -> Path:
    """The packaged report notebook (``qvtools/notebooks/05_report.ipynb``)."""
    return resource_path(REPORT_NOTEBOOK)
