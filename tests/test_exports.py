"""The public surface: every module declares ``__all__``, its names exist, and the package
re-exports agree with the modules they come from (as websockets' test_exports.py)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import qvtools

MODULES = sorted(m.name for m in pkgutil.walk_packages(qvtools.__path__, "qvtools.")
                 if not m.name.split(".")[-1].startswith("_"))


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all_and_names_exist(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ has duplicates"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_package_all_names_exist():
    missing = [n for n in qvtools.__all__ if not hasattr(qvtools, n)]
    assert not missing
    assert len(set(qvtools.__all__)) == len(qvtools.__all__)


def test_reexports_are_public_names_of_their_module():
    for name in qvtools.__all__:
        obj = getattr(qvtools, name)
        home = getattr(obj, "__module__", None)
        if home and home.startswith("qvtools.") and not isinstance(obj, type(qvtools)):
            module = importlib.import_module(home)
            assert name in module.__all__, f"qvtools.{name} is re-exported but not in {home}.__all__"
            assert getattr(module, name) is obj


def test_every_error_is_reexported():
    from qvtools import errors

    classes = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)
               and issubclass(getattr(errors, n), Exception)]
    assert len(classes) >= 8
    assert set(classes) <= set(qvtools.__all__)
    for name in classes:
        assert getattr(qvtools, name) is getattr(errors, name)


@pytest.mark.parametrize("module, names", [
    ("qvtools.workspace", ["connect", "Workspace"]),
    ("qvtools.enrollment", ["Voice", "VoiceClient"]),
    ("qvtools.registry", ["VoiceRegistry"]),
])
def test_entry_points_reexported(module, names):
    mod = importlib.import_module(module)
    for name in names:
        assert name in mod.__all__ and name in qvtools.__all__
        assert getattr(qvtools, name) is getattr(mod, name)


def test_server_package_surface():
    server = importlib.import_module("qvtools.server")
    for name in ("LocalService", "ServiceConfig", "ServerTrace", "create_app", "serve_forever"):
        assert name in server.__all__
