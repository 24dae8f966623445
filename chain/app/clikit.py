"""What every ``blockcoin`` command shares: the common options, the one-line error contract
and the data directory a network name and ``--datadir`` resolve to.

It sits with the primitives (it imports only them and typer) so that the storage market's
commands use the same pieces as the node's without importing the node.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from chain.core.errors import BlockcoinError
from chain.core.params import default_datadir, network

NetworkOpt = Annotated[str, typer.Option("--network", "-n", help="main, test or regtest.")]
DatadirOpt = Annotated[
    Path | None, typer.Option("--datadir", "-d", help="Data directory (default ~/.blockcoin/NETWORK).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the project's errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BlockcoinError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data) if as_json else text)


def resolve_datadir(net: str, datadir: Path | None) -> Path:
    """``--datadir`` if given, else the network's default; an unknown network is refused."""
    network(net)
    return datadir or default_datadir(net)
