"""``DATADIR/config.toml``: what a data directory is for and how its processes run.

Read once per command and validated whole by pydantic models, so a typo (``[node] lisen``), a
wrong type or an unknown network stops the command with one line naming the file and the key,
instead of being silently ignored. Every value can be overridden, in this order of precedence:
a command-line flag, then a ``BLOCKCOIN_*`` environment variable, then this file, then the
built-in default. The network is fixed when the directory is created (``blockcoin init``): a
later command on the directory takes it from here, and one that names another is refused.

Example::

    network = "regtest"

    [node]
    listen = "0.0.0.0:28633"
    api = "127.0.0.1:28634"
    connect = ["127.0.0.1:29633"]
    mine = false
    log_level = "info"

    [host]
    capacity = "10G"
    min_price = "1sat"
    payout = "blk1..."
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chain.core.errors import ConfigError

CONFIG_NAME = "config.toml"
LogLevel = Literal["debug", "info", "warning", "error"]
NetworkName = Literal["main", "test", "regtest"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    """``[node]``: the defaults of ``blockcoin node``."""

    listen: str | None = None
    api: str | None = None
    connect: list[str] = Field(default_factory=list)
    announce: str | None = None
    mine: bool = False
    threads: int | None = Field(default=None, ge=1)
    log_level: LogLevel = "info"


class HostConfig(_Section):
    """``[host]``: the defaults of ``blockcoin host start`` (sizes and amounts as on the
    command line: ``10G``, ``1sat``, ``0.5``)."""

    capacity: str | None = None
    min_price: str = "1sat"
    max_collateral: str | None = None
    payout: str | None = None
    listen: str = "127.0.0.1:0"
    log_level: LogLevel = "info"


class OwnerConfig(_Section):
    """``[store]``: the defaults of the owner's agent (``store put``, ``store serve``)."""

    listen: str = "127.0.0.1:0"
    log_level: LogLevel = "info"


class Config(_Section):
    network: NetworkName
    node: NodeConfig = Field(default_factory=NodeConfig)
    host: HostConfig = Field(default_factory=HostConfig)
    store: OwnerConfig = Field(default_factory=OwnerConfig)


def config_path(datadir: Path) -> Path:
    return datadir / CONFIG_NAME


def load_config(datadir: Path) -> Config | None:
    """The data directory's validated config, or None if it has none yet."""
    path = config_path(datadir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise ConfigError(f"{datadir} is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {where}: {first['msg']}{more}") from None


def configured_network(datadir: Path) -> str | None:
    config = load_config(datadir)
    return config.network if config is not None else None


def write_new_config(datadir: Path, network: str) -> None:
    """The config a fresh data directory starts with: its network, nothing else."""
    path = config_path(datadir)
    path.write_text(f'network = "{network}"\n')
    path.chmod(0o600)
