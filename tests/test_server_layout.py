"""The local service's layout (issue 12): handlers import from http.py, never from app.py; no import cycle
inside qvtools.server (imports inside functions counted); state under typed app keys, none under strings."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
from aiohttp import web

import qvtools.server as server_pkg

SERVER = Path(server_pkg.__file__).parent


def _imports(path: Path) -> set[str]:
    """The qvtools.server modules ``path`` imports (relative ``from .x import`` / ``from . import x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qvtools.server."):
            out.add(node.module.split(".")[2])
    return out


def test_no_module_of_the_service_imports_the_app_module_but_the_package():
    importers = sorted(p.stem for p in SERVER.glob("*.py") if "app" in _imports(p))
    assert importers == ["__init__"]


def test_no_import_cycle_inside_the_service():
    graph = {p.stem: {m for m in _imports(p) if (SERVER / f"{m}.py").exists()} for p in SERVER.glob("*.py")
             if p.stem != "__init__"}
    # tts <-> tts_kokoro is another helper's (issue 12 item 1); every other module must be acyclic
    graph = {m: deps - {"tts", "tts_kokoro"} for m, deps in graph.items() if m not in ("tts", "tts_kokoro")}
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in seen:
            return
        stack.append(m)
        for d in graph.get(m, ()):
            visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)


def test_the_app_keeps_its_state_under_typed_keys(tmp_path):
    from qvtools.server import ServiceConfig, create_app
    from qvtools.server.enrollment import ENROLL_SLOTS
    from qvtools.server.faults import FAULTS
    from qvtools.server.http import CONFIG, TRACE
    from qvtools.server.realtime import REALTIME

    with warnings.catch_warnings():
        warnings.simplefilter("error", web.NotAppKeyWarning)  # a string key would raise here
        app = create_app(ServiceConfig(warm_speech=False), tmp_path)
    assert all(isinstance(k, web.AppKey) for k in app)
    assert {CONFIG, TRACE, FAULTS, ENROLL_SLOTS, REALTIME} <= set(app)
    assert app[REALTIME].open == set() and app[REALTIME].active == {}


def test_startup_opens_the_store_and_pools_and_teardown_closes_them(tmp_path):
    from qvtools.server import LocalService, ServiceConfig

    svc = LocalService(data_dir=tmp_path, config=ServiceConfig(warm_speech=False)).start()
    try:
        from qvtools.server.http import ENROLL_EXECUTOR

        pool = svc.app[ENROLL_EXECUTOR]
        assert svc.store.list("sk-x", 0, 10) == ([], 0) and svc.port > 0
    finally:
        svc.stop()
    with pytest.raises(RuntimeError):  # shut down by the cleanup context
        pool.submit(int)
