"""Node processes on loopback: one way to start, watch and stop ``blockcoin node`` children.

The demo, ``scripts/devnet``, the network benchmarks and the multi-process tests all run real
nodes as child processes; they share this module so that a port race, a node that exits at
start or a node that ignores SIGTERM is handled once, the same way everywhere:

- ports are picked free on 127.0.0.1 just before the start; another process may take one before
  the node binds it, so a node that exits with "address already in use" is started again on
  fresh ports (three tries);
- a node is ready when it has written ``node.json`` and its API answers ``/status``; a child
  that exits before that is reported at once with the end of its log;
- each child runs in its own session, so a terminal's Ctrl-C reaches the parent alone, which
  stops its children in order: SIGTERM to the group, SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chain.core.errors import BlockcoinError
from chain.net.http import ApiClient

T = TypeVar("T")

PORT_ATTEMPTS = 3
STOP_TIMEOUT = 15.0


class ProcessError(BlockcoinError):
    """A child process did not start, or a wait for it timed out."""

    code = "process"


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port nobody listens on now (and, with ``taken``, not handed out before)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def blockcoin_command(*args: str) -> list[str]:
    """``blockcoin ARGS`` run by this interpreter (installed or not)."""
    return [sys.executable, "-m", "chain", *args]


def node_command(datadir: Path, p2p: str, api: str, *extra: str,
                 network: str = "regtest") -> list[str]:
    """The command line of a node on ``datadir`` listening on ``p2p`` and serving ``api``."""
    return blockcoin_command("node", "--network", network, "--datadir", str(datadir),
                             "--listen", p2p, "--api", api, *extra)


def child_env() -> dict[str, str]:
    """The environment of a child: the parent's, with this source tree importable (a checkout
    run without installing, as the scripts do)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{path}" if path else root)


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_until(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """The first truthy result of ``fn``; :class:`ProcessError` after ``timeout`` seconds. A
    call that raises counts as not yet (a node may be starting or busy), except a
    :class:`ProcessError`, which says that waiting longer is pointless."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except ProcessError:
            raise
        except Exception as exc:  # the node may not be up yet
            value, last = None, exc
        if value:
            return value
        time.sleep(interval)
    raise ProcessError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class NodeProcess:
    """A ``blockcoin node`` child on free loopback ports, its output appended to a log file."""

    def __init__(self, datadir: Path, *args: str, name: str = "node",
                 log_path: Path | None = None, taken: set[int] | None = None) -> None:
        self.datadir = datadir
        self.name = name
        self.args = list(args)
        self.log_path = log_path or datadir.parent / f"{name}.log"
        self._taken = taken
        self.p2p_port = free_port(taken)
        self.api_port = free_port(taken)
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: ApiClient | None = None

    @property
    def p2p(self) -> str:
        return f"127.0.0.1:{self.p2p_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def spawn(self) -> NodeProcess:
        """Start the child without waiting for it (see :meth:`wait_ready`)."""
        cmd = node_command(self.datadir, self.p2p, f"127.0.0.1:{self.api_port}", *self.args)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=child_env(),
                                         start_new_session=True)
        return self

    def start(self, timeout: float = 60.0) -> NodeProcess:
        """Start the child and wait until it serves, on fresh ports if its own were taken."""
        for attempt in range(PORT_ATTEMPTS):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except ProcessError:
                if attempt == PORT_ATTEMPTS - 1 or not self.lost_port_race():
                    raise
            self.stop()
            self.p2p_port, self.api_port = free_port(self._taken), free_port(self._taken)
        raise AssertionError("unreachable")

    def lost_port_race(self) -> bool:
        tail = self.log()[-800:]
        return "address already in use" in tail or "cannot listen" in tail

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(self.ready, timeout, f"{self.name} to serve its API")

    def ready(self) -> bool:
        """Whether the node serves; :class:`ProcessError` if it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessError(f"{self.name} exited with status {self.proc.returncode}"
                               f"{self.tail()}")
        if not (self.datadir / "node.json").exists():
            return False
        self.client.get("/status")
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def client(self) -> ApiClient:
        """A client of the node's API with its cookie token."""
        if self._client is None:
            token = (self.datadir / "api.cookie").read_text().strip()
            self._client = ApiClient(self.api, token, timeout=30)
        return self._client

    @property
    def principal(self) -> str:
        return str(json.loads((self.datadir / "node.json").read_text())["principal"])

    def get(self, path: str) -> Any:
        return self.client.get(path)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, body)

    def tip(self) -> tuple[int, str]:
        data = self.get("/tip")
        return int(data["height"]), str(data["hash"])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 12) -> str:
        text = self.log().rstrip().splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(text) if text else ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to the child's group, then SIGKILL if it has not exited within ``timeout``.
        The API client is closed after the node is gone, so that requests in flight get the
        answers a stopping node gives them."""
        try:
            if self.proc is None:
                return None
            if self.proc.poll() is None:
                signal_group(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    signal_group(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            return self.proc.returncode
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
