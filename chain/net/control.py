"""The storage agents' local control API: how the node's dashboard reaches the owner agent
(``blockcoin store serve``) and the host agent (``blockcoin host start``) running on its data
directory, without the node importing the agents.

The agents are separate processes, a layer above the node's API. Each serves a small HTTP API
on a Unix socket inside its own directory (``DATADIR/store/control.sock``,
``DATADIR/host/control.sock``), mode 0600 in a 0700 directory: whoever can connect to it can
already read the wallet key beside it, so the socket needs no token of its own, and no port is
opened. The node checks the dashboard's login, then forwards the request's bytes to the socket
and the agent's answer back (:func:`forward`); the agent does the work with its own state and
keys. No socket (or a socket nobody listens on) means no agent runs there:
:class:`AgentAbsent`, which the node turns into a 503 naming the command to run.

The models below are the one contract between the two ends: the agents validate what they
receive with them and the node's OpenAPI document is generated from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chain.core.errors import BlockcoinError

log = logging.getLogger("blockcoin.control")

SOCKET_NAME = "control.sock"
#: What the dashboard uploads at most: a browser upload cannot resume, so a larger file is
#: better put with `blockcoin store put` (which carries on after an interruption).
MAX_UPLOAD = 1 << 30
"""The largest file the dashboard stores: the owner agent holds a block's record and its
fragments in memory while it seals and offers them, and an interrupted browser upload starts
again from its first byte; ``blockcoin store put`` takes larger files."""
MAX_PERIODS = 100_000
UPLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class Agent:
    """One kind of agent: the directory it keeps in a data directory and the command that
    runs it (named in the error when it is not running)."""

    name: str
    directory: str
    command: str

    def socket(self, datadir: Path) -> Path:
        return datadir / self.directory / SOCKET_NAME

    def absent(self) -> str:
        return (f"no {self.name} agent running on this node's data directory: run "
                f"{self.command}")


OWNER = Agent("owner", "store", "blockcoin store serve")
HOST = Agent("host", "host", "blockcoin host start")


class AgentAbsent(BlockcoinError):
    """Nothing listens on the agent's control socket."""

    code = "agent-not-running"


# --- the contract ----------------------------------------------------------------------------


class ControlRequest(BaseModel):
    """A request body or query: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class ControlAnswer(BaseModel):
    """An answer: clients ignore fields they do not know."""

    model_config = ConfigDict(extra="allow")


Amount = Annotated[str, Field(description="coins (1.5) or base units (150sat)", max_length=64)]
SizeText = Annotated[str, Field(description="bytes, or with a unit in powers of 1024 (512M, "
                                            "10G)", max_length=32)]
PrincipalText = Annotated[str, Field(pattern="^blk[a-z2-7]{58}$")]


class PutTerms(ControlRequest):
    """How a file is stored: the choices of ``blockcoin store put``, with its defaults."""

    path: str = Field(min_length=1, max_length=1024,
                      description="blocktree path: /<principal>/..., or relative to the wallet's "
                                  "tree")
    k: int = Field(default=3, ge=1, le=256, description="fragments needed to read it back")
    n: int = Field(default=5, ge=1, le=256, description="fragments stored, one per host")
    price: Amount = Field(default="100000sat", description="per fragment per period")
    collateral: Amount = Field(default="100000sat",
                               description="asked of each host per fragment per period")
    periods: int = Field(default=12, ge=1, le=MAX_PERIODS, description="periods paid for now")


class QuoteRequest(PutTerms):
    size: int = Field(ge=0, le=MAX_UPLOAD, description="the file's size in bytes")


class PutQuery(PutTerms):
    """The query of a put; its body is the file's bytes."""

    max_cost: int = Field(ge=0, description="the total cost (base units) the user confirmed: a "
                                            "put that would cost more is refused")


class Quote(ControlAnswer):
    """What a put spends: ``escrow`` is price × n × periods, ``fees`` those of the events the
    owner signs for it, ``total`` both."""

    path: str
    size: int
    k: int
    n: int
    price: int
    collateral: int
    periods: int
    period_blocks: int
    escrow: int
    fees: int
    total: int


class PutAnswer(Quote):
    version: str
    fragment_size: int
    offers: list[str] = Field(description="the offers' event ids (a fragment's contract id)")
    resumed: bool = Field(description="an interrupted put of the same bytes carried on: nothing "
                                      "new was spent")


class HostPolicy(ControlAnswer):
    capacity: int
    min_price: int
    max_collateral: int | None = Field(description="null: whatever the balance covers")
    payout: str | None = Field(description="null: the host's own key")


class PolicyUpdate(ControlRequest):
    """A change of the host's policy: fields left out stay as they are; ``max_collateral``
    null lifts the cap."""

    capacity: SizeText | None = None
    min_price: Amount | None = None
    max_collateral: Amount | None = None
    payout: PrincipalText | None = None


MODELS: tuple[type[BaseModel], ...] = (QuoteRequest, PutQuery, Quote, PutAnswer, HostPolicy,
                                       PolicyUpdate)


# --- the agent's side ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: web.Application, agent: Agent, datadir: Path) -> AsyncIterator[Path | None]:
    """Serve ``app`` on the agent's control socket for as long as the block runs; the socket's
    path, or None where it cannot be made (a data directory whose path is too long for a Unix
    socket): the agent then runs without its control API and says so in its log."""
    path = agent.socket(datadir)
    # a socket left by an agent that died: the directory's lock, held by the caller, says
    # no other agent runs here
    path.unlink(missing_ok=True)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        try:
            await web.UnixSite(runner, str(path)).start()
        except OSError as exc:
            log.warning("no control socket at %s (%s): the dashboard cannot reach this agent",
                        path, exc)
            yield None
            return
        os.chmod(path, 0o600)
        yield path
    finally:
        await runner.cleanup()
        path.unlink(missing_ok=True)


# --- the node's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Forwarded:
    status: int
    body: bytes
    content_type: str


async def running(agent: Agent, datadir: Path, timeout: float = 1.0) -> bool:
    """Whether an agent listens on its control socket in ``datadir`` (a connection is
    accepted): what a page shows before anyone acts, so a form does not end in a 503."""
    path = agent.socket(datadir)
    if not path.exists():
        return False
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def forward(agent: Agent, datadir: Path, method: str, target: str, *,
                  body: bytes | AsyncIterable[bytes] | None = None,
                  headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> Forwarded:
    """Send one request to the agent running on ``datadir`` and return its answer as it came;
    :class:`AgentAbsent` when none listens there."""
    path = agent.socket(datadir)
    if not path.exists():
        raise AgentAbsent(agent.absent())
    connector = aiohttp.UnixConnector(path=str(path))
    async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            async with session.request(method, f"http://agent{target}", data=body,
                                       headers=dict(headers or {})) as response:
                return Forwarded(response.status, await response.read(),
                                 response.headers.get("Content-Type", "application/json"))
        except aiohttp.ClientConnectorError:  # a socket left behind, or one being torn down
            raise AgentAbsent(agent.absent()) from None
