"""Long-running ``blockcoin`` agents (``host start``, ``store serve``) as subprocesses: started
with ``--json`` so their first stdout line says they are ready, stopped with SIGTERM and, if
they hang, SIGKILL (every wait bounded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.framework.netkit import ROOT


def spawn(*args: str) -> subprocess.Popen[str]:
    """A long-running agent whose first stdout line is its --json ready line."""
    return subprocess.Popen([sys.executable, "-m", "chain", *args, "--json"], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ready_line(proc: subprocess.Popen[str], log: Path | None = None) -> dict[str, Any]:
    """The agent's --json ready line; if it exits instead, the end of what it said (its stderr
    pipe, or ``log`` where its output goes)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the test's timeout, and the agent exits on error
    if not line:
        said = log.read_text()[-2000:] if log is not None else (
            proc.stderr.read() if proc.stderr else "")
        raise AssertionError(f"agent exited with {proc.wait(10)}: {said}")
    found: dict[str, Any] = json.loads(line)
    return found


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
