"""What every ``blockcoin`` command shares: the common options, the one-line error contract
and where a command acts (data directory and network).

Where: ``--datadir`` (or ``BLOCKCOIN_DATADIR``), else ``$BLOCKCOIN_HOME/NETWORK`` (default
``~/.blockcoin/NETWORK``). Which network: ``--network`` (or ``BLOCKCOIN_NETWORK``), else the one
the data directory's ``config.toml`` names, else the command's default (``main``); a flag or
variable that contradicts the config is refused, since one directory holds one chain.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from chain.core.errors import BlockcoinError, ConfigError
from chain.core.params import NetworkParams, default_datadir, network
from chain.node.config import Config, load_config

NETWORK_ENV = "BLOCKCOIN_NETWORK"
DATADIR_ENV = "BLOCKCOIN_DATADIR"

NetworkOpt = Annotated[str | None, typer.Option(
    "--network", "-n", envvar=NETWORK_ENV, show_default=False,
    help="main, test or regtest (default: the data directory's config.toml, else main).")]
DatadirOpt = Annotated[Path | None, typer.Option(
    "--datadir", "-d", envvar=DATADIR_ENV, show_default=False,
    help="Data directory (default: $BLOCKCOIN_HOME/NETWORK, else ~/.blockcoin/NETWORK).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Where:
    """The data directory a command acts on, its network and its validated config."""

    datadir: Path
    params: NetworkParams
    config: Config | None

    @property
    def net(self) -> str:
        return self.params.name


def locate(net: str | None, datadir: Path | None, default_net: str = "main") -> Where:
    """Resolve ``--network`` and ``--datadir`` as the module docstring says."""
    if net is not None:
        network(net)  # an unknown name is refused before any path is made of it
    path = datadir or default_datadir(net or default_net)
    config = load_config(path)
    configured = config.network if config is not None else None
    if net is not None and configured is not None and net != configured:
        raise ConfigError(f"{path} is a {configured!r} data directory, not {net!r}")
    return Where(path, network(net or configured or default_net), config)


def os_error_line(exc: OSError) -> str:
    """``/nonexistent/x: No such file or directory``: the path and the reason, no repr."""
    reason = exc.strerror or str(exc)
    name = exc.filename
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return f"{name}: {reason}" if name else reason


def friendly(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 1: the
    project's own errors, and what the operating system says about a path (missing,
    not writable, not a directory)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BlockcoinError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(os_error_line(exc))

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    """Print ``error: MESSAGE`` (first line only) on stderr and exit with status 1."""
    line = message.strip().splitlines()[0] if message.strip() else "failed"
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1)


def emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data) if as_json else text)
