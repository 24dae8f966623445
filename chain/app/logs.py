"""Where a process's log goes: stderr and ``DATADIR/logs/COMPONENT.log``, rotated.

Each long-running component (``node``, ``host``, ``owner``) writes its own file in the data
directory it works on, so an operator finds a host's history next to its fragments even after
the terminal is gone. Files rotate at :data:`MAX_BYTES` and :data:`BACKUPS` old ones are kept,
so a node that runs for months takes bounded space. Every line carries a timestamp, the level
and the logger's name. At INFO a log tells the story an operator follows: new tips, contracts
made and ended, proofs, missed periods and payments; DEBUG adds the detail.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from chain.core.errors import ConfigError

MAX_BYTES = 10 << 20
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")


def log_file(datadir: Path, component: str) -> Path:
    return datadir / "logs" / f"{component}.log"


def setup_logging(datadir: Path, component: str, level: str = "info", *,
                  stderr: bool = True) -> Path:
    """Send the process's log records at ``level`` and above to the component's rotating file
    (and to stderr unless told not to); the file's path."""
    if level.lower() not in LEVELS:
        raise ConfigError(f"unknown log level {level!r} (choose from {', '.join(LEVELS)})")
    number = getattr(logging, level.upper())
    path = log_file(datadir, component)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS)]
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(number)
    logging.getLogger("aiohttp").setLevel(max(number, logging.WARNING))
    return path
