"""The qvtools version: defined here once, a leaf module (imports nothing from qvtools).

``qvtools.__version__``, ``qvtools.experiment`` (run.json) and ``qvtools.cli`` (``--version``) import it
from here, never from the package root (issue 12: that made ``qvtools`` <-> ``experiment``/``cli`` a
cycle); ``pyproject.toml`` reads it as the distribution's dynamic version.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
