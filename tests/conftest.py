"""Shared fixtures. Test data from ../shared/data/speech is located through QVTOOLS_SPEECH_DIR
(default: ../shared/data/speech next to the checkout) and skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def speech_dir() -> Path | None:
    env = os.environ.get("QVTOOLS_SPEECH_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "speech"
    return path if (path / "manifest.csv").is_file() else None


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def speech_data() -> Path:
    path = speech_dir()
    if path is None:
        pytest.skip("shared speech data not found: set QVTOOLS_SPEECH_DIR or place ../shared/data/speech beside the checkout")
    return path
