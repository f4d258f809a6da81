"""Packaging (issue 12, items 4 and 1): the sample data and the report notebook ship inside the package and
are found with importlib.resources; one copy of each; ``__version__`` has one home and no module imports
the package root; and a wheel built from the checkout, installed NON-editable in a fresh virtual
environment, runs ``qvtools compare`` and ``qvtools report`` from a directory outside the checkout."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import qvtools
from qvtools import experiment, report, resources

ROOT = Path(__file__).resolve().parents[1]  # the checkout (tests never ship in the wheel)
PACKAGE = Path(qvtools.__file__).resolve().parent
FLASH = "qwen3.5-omni-flash-realtime"


# --------------------------------------------------------------------------- package data

def test_samples_and_report_notebook_are_inside_the_package():
    samples = resources.samples_dir()
    assert samples.resolve().is_relative_to(PACKAGE)
    assert experiment.DATA_DIR == samples
    assert [v.name for v in experiment.sample_voices()] and experiment.sample_prompts()
    for spec in experiment.sample_voices() + experiment.sample_prompts():
        assert spec.path.resolve().is_relative_to(PACKAGE / "samples"), spec.path
    assert report.NOTEBOOK == resources.report_notebook()
    assert report.NOTEBOOK.resolve().is_relative_to(PACKAGE) and report.NOTEBOOK.is_file()
    assert (samples / "README.md").is_file()  # the licences travel with the audio


def test_one_copy_of_the_samples_and_of_the_report_notebook():
    assert not list((ROOT / "data").rglob("*.wav")) and not list((ROOT / "data").glob("*.json"))
    assert (ROOT / "data" / "make_samples.py").is_file()
    link = ROOT / "notebooks" / "05_report.ipynb"
    assert link.is_symlink(), "notebooks/05_report.ipynb must be a link to the packaged notebook, not a copy"
    assert link.resolve() == report.NOTEBOOK.resolve()


def test_make_samples_writes_into_the_package():
    text = (ROOT / "data" / "make_samples.py").read_text(encoding="utf-8")
    assert 'SAMPLES = HERE.parent / "qvtools" / "samples"' in text and "default=SAMPLES" in text


def test_no_checkout_relative_paths_for_package_data():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"parents\[\d+\]\s*/\s*[\"'](data|notebooks)[\"']", line):
                bad.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not bad, bad


# --------------------------------------------------------------------------- __version__ and the import graph

def _imports_of_the_root(path: Path) -> list[str]:
    """Imports of the package root ``qvtools`` itself (not of a submodule) in one module's source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for qvtools/x.py
    submodules = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name == "qvtools"]
        elif isinstance(node, ast.ImportFrom):
            root = (node.level == 0 and node.module == "qvtools") or \
                   (node.level == depth + 1 and node.module is None)
            if root:
                out += [f"from qvtools import {a.name}" for a in node.names if a.name not in submodules]
    return out


def test_no_module_imports_the_package_root():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        found = _imports_of_the_root(path)
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert not offenders, offenders


def test_version_has_one_home():
    from qvtools import _version

    assert qvtools.__version__ is _version.__version__
    homes = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")
             if re.search(r"^__version__\s*=", p.read_text(encoding="utf-8"), re.M)]
    assert homes == [Path("_version.py")]
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "qvtools._version.__version__"}


def test_version_is_printed(capsys):
    from qvtools.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"qvtools {qvtools.__version__}"


# --------------------------------------------------------------------------- the wheel in a fresh venv

_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".ipynb_checkpoints", "reports")
_NO_BACKEND = ("No matching distribution found", "Could not find a version", "Failed to establish a new connection",
               "Network is unreachable", "Temporary failure in name resolution")


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DASHSCOPE_", "QVTOOLS_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _run(cmd, *, cwd, env, timeout):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (the checkout itself is left untouched)."""
    pytest.importorskip("build", reason="the 'build' package (PEP 517 front end) is not installed")
    base = tmp_path_factory.mktemp("wheel")
    src, dist = base / "src", base / "dist"
    shutil.copytree(ROOT, src, ignore=_IGNORE)  # symlinks are followed: notebooks/05 becomes a plain file
    proc = _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], cwd=base,
                env=_clean_env(), timeout=900)
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in _NO_BACKEND):
        pytest.skip(f"the build backend (setuptools) could not be installed: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (found,) = dist.glob("qvtools-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_the_samples_and_the_notebook(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"qvtools/samples/{p.relative_to(resources.samples_dir()).as_posix()}"
                for p in resources.samples_dir().rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert expected and expected <= names, sorted(expected - names)
    assert "qvtools/notebooks/05_report.ipynb" in names and "qvtools/_version.py" in names
    assert not [n for n in names if n.startswith(("data/", "notebooks/", "tests/"))]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {qvtools.__version__}" in meta and "Provides-Extra: dask" in meta


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_compare_and_report_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=_clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    py, cli = venv / "bin" / "python", venv / "bin" / "qvtools"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    # NON-editable install of the wheel with the extras the main job needs (pip's cache makes this quick).
    proc = _run([py, "-m", "pip", "install", "-q", f"{wheel}[local,eval,notebooks]"], cwd=tmp_path,
                env=_clean_env(), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    outside = tmp_path / "elsewhere"  # not the checkout, not the package: nothing to find by accident
    outside.mkdir()
    env = _clean_env(QVTOOLS_DATA_DIR=str(tmp_path / "data"))
    proc = _run([py, "-c", "import json, qvtools, qvtools.resources as r, qvtools.report as rep; "
                 "print(json.dumps([qvtools.__file__, qvtools.__version__, str(r.samples_dir()), str(rep.NOTEBOOK)]))"],
                cwd=outside, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    where, version, samples, notebook = json.loads(proc.stdout)
    site = str(venv / "lib")
    assert where.startswith(site) and samples.startswith(site) and notebook.startswith(site)
    assert version == qvtools.__version__ and not where.startswith(str(ROOT))

    run_dir = outside / "run"
    proc = _run([cli, "compare", "--quick", "--models", FLASH, "--out", run_dir, "--workers", "1", "--no-report"],
                cwd=outside, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "turns.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["status"] == "completed", rows
    assert rows[0]["voice_ref"] == "ava" and (run_dir / rows[0]["audio_path"]).is_file()  # the packaged samples
    assert (run_dir / "results.parquet").is_file()

    proc = _run([cli, "report", run_dir, "--sample-turns", "1"], cwd=outside, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "SIMULATED" in html and "data:audio/wav;base64," in html


@pytest.mark.slow
def test_make_samples_regenerates_the_packaged_copy_byte_for_byte():
    pytest.importorskip("piper", reason="the sample generator needs piper-tts (qvtools[local])")
    env = _clean_env(PYTHONPATH=str(ROOT))
    proc = _run([sys.executable, ROOT / "data" / "make_samples.py", "--check"], cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    assert sum(line.startswith("same ") for line in lines) == len(list(resources.samples_dir().rglob("*.wav"))) + 2
