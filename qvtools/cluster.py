"""Run comparison turns on a Dask ``distributed`` cluster (``qvtools compare --scheduler ADDRESS``).

:class:`qvtools.experiment.Experiment` accepts any ``concurrent.futures.Executor``; a Dask
``Client.get_executor()`` is one, so turns run on the cluster's workers while the coordinating process
(the one calling :meth:`Experiment.run`) alone writes the run directory: workers return each row and
reply (:func:`qvtools.experiment.run_turn_detached`), the coordinator saves the reply and appends the
row, so every turn is recorded exactly once, resume included (issue 12, item 5).

What a worker needs: qvtools installed (``pip install 'qvtools[dask]'``) and a network path to the
service named in the task's settings -- the real service, or for the local region ONE local service all
workers reach (``qvtools serve --host 0.0.0.0`` on one machine, ``QVTOOLS_BASE_URL`` on the
coordinator): cloned voices live in that service's store, so a worker's own private service would not
know them. :func:`dask_executor` warns when the settings point at a loopback address and some worker
runs on another host. The settings travel inside each task, API key included: use a TLS scheduler
(``tls://``) when the key is a real one and the cluster spans machines.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["dask_executor", "loopback_url", "remote_worker_hosts"]

log = logging.getLogger(__name__)


def _import_client():
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("running on a Dask cluster needs the 'distributed' package: "
                          "pip install 'qvtools[dask]'") from None
    return Client


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_url(url: str | None) -> bool:
    """True when ``url`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    return bool(url) and _is_loopback(urlsplit(url).hostname)


def remote_worker_hosts(client) -> list[str]:
    """Hosts of the cluster's workers that are not this machine (by loopback address or host name)."""
    here = {socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        here.update(socket.gethostbyname_ex(socket.gethostname())[2])
    hosts = set()
    for address in client.scheduler_info().get("workers", {}):
        host = urlsplit(address).hostname
        if host and not _is_loopback(host) and host not in here:
            hosts.add(host)
    return sorted(hosts)


@contextlib.contextmanager
def dask_executor(address: str, *, timeout: float = 30.0, base_url: str | None = None):
    """A ``concurrent.futures`` executor on the Dask scheduler at ``address`` (e.g. ``tcp://host:8786``);
    the client is closed on exit.

    ``timeout`` bounds the connection to the scheduler (seconds). ``base_url``: the service the turns
    will use; a loopback URL while workers run on other hosts is logged as a warning (those workers
    cannot reach it).
    """
    Client = _import_client()
    if not address or not isinstance(address, str):
        raise ConfigError(f"a Dask scheduler address is needed (e.g. tcp://host:8786), got {address!r}")
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        if loopback_url(base_url):
            remote = remote_worker_hosts(client)
            if remote:
                log.warning("the service is at %s (this machine only) but Dask workers run on %s; they cannot "
                            "reach it: serve it on a reachable address (qvtools serve --host 0.0.0.0) and set "
                            "QVTOOLS_BASE_URL", base_url, ", ".join(remote))
        executor = client.get_executor()
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)
    finally:
        client.close()
