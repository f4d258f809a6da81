"""The local service in a subprocess, for benchmarks that must not count its CPU or memory as theirs.

``ServiceProcess(data_dir, config_dict)`` starts ``serve_forever`` on port 0 and waits (bounded) for the
URL line it prints; with ``warm=True`` it prints only once the speech engines are loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SERVER = r"""
import json, sys
from qvtools.server import ServiceConfig, serve_forever
cfg = ServiceConfig(**json.loads(sys.argv[2]))
warm = sys.argv[3] == "1"
def ready(svc):
    if warm:
        svc.wait_speech_ready(120)
    print(svc.url, flush=True)
serve_forever(port=0, data_dir=sys.argv[1], config=cfg, on_ready=ready)
"""


class ServiceProcess:
    """``url``/``ws_url`` once started; ``rss_mb()`` and ``cpu_s()`` read from /proc; ``stop()``."""

    def __init__(self, data_dir: Path, config: dict, *, warm: bool = False, timeout: float = 150.0):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(data_dir), json.dumps(config),
                                      "1" if warm else "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0].startswith("http"):
            self.stop()
            raise RuntimeError(f"the service did not print its URL within {timeout:.0f} s")
        self.url = line[0].strip()
        self.ws_url = "ws" + self.url[len("http"):]

    def rss_mb(self) -> float:
        try:
            for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    return int(row.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
