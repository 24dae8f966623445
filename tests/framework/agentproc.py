"""Long-running ``blockcoin`` agents (``host start``, ``store serve``) as subprocesses: started
with ``--json`` so their first stdout line says they are ready, stopped with SIGTERM and, if
they hang, SIGKILL (every wait bounded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.framework.netkit import ROOT


def spawn(*args: str) -> subprocess.Popen[str]:
    """A long-running agent whose first stdout line is its --json ready line."""
    return subprocess.Popen([sys.executable, "-m", "chain", *args, "--json"], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ready_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the test's timeout, and the agent exits on error
    assert line, proc.stderr.read() if proc.stderr else ""
    found: dict[str, object] = json.loads(line)
    return found


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
