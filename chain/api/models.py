"""The shapes of the API's JSON, as pydantic models: what requests may carry and what answers hold.

The OpenAPI document's schemas are generated from these models (:mod:`chain.api.openapi`), so a
field added here is documented by construction; the tests validate real answers against them,
so an answer that drifts from its model fails a test. Request models forbid unknown fields, as
the handlers do; answer models name every field a client may rely on and allow more where an
answer is open-ended (events of every kind, contracts, peers). The storage agents' requests and
answers, which the node forwards, are :mod:`chain.net.control`'s models, listed here too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from chain.core.events import Kind
from chain.net.control import HostPolicy, PolicyUpdate, PutAnswer, Quote, QuoteRequest

Hex64 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
PrincipalText = Annotated[str, Field(pattern="^blk[a-z2-7]{58}$")]
Count = Annotated[int, Field(ge=0)]
Amount = Annotated[str, Field(description="coins (1.5) or base units (150sat)", max_length=64)]
KindName = Annotated[str, Field(json_schema_extra={"enum": [k.name.lower() for k in Kind]})]


class Answer(BaseModel):
    """An answer: clients ignore fields they do not know."""

    model_config = ConfigDict(extra="allow")


class Request(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# --- answers ---------------------------------------------------------------------------------


class Error(Answer):
    error: str
    message: str


class Status(Answer):
    network: str
    principal: PrincipalText
    height: Count
    hash: Hex64
    best_header_height: Count
    syncing: bool
    peers: Count
    outbound: Count = 0
    inbound: Count = 0
    mempool: Count = 0
    mining: bool = False
    listen: str | None = None
    agent: str = ""
    api_version: str = ""
    uptime: float = 0.0


class Tip(Answer):
    height: Count
    hash: Hex64
    time: Count
    bits: str
    work: str = Field(description="hex")


class Header(Answer):
    hash: Hex64
    height: int | None
    prev: Hex64
    time: Count
    bits: str
    nonce: Count


class Headers(Answer):
    headers: list[Header]


class Event(Answer):
    """An event; the fields of its body follow its kind."""

    id: Hex64
    kind: KindName
    size: Count
    signer: PrincipalText | None = None
    nonce: Count | None = None
    fee: Count | None = None
    account: str | None = None


class Block(Header):
    size: Count
    best_chain: bool = True
    events: list[Event]


class EventStatus(Answer):
    status: Literal["pending", "confirmed"]
    block: str | None = None
    height: int | None = None
    position: int | None = None
    event: Event


class Submitted(Answer):
    id: Hex64
    status: str


class Mempool(Answer):
    count: Count
    bytes: Count
    matching: Count
    events: list[Event]


class ProvenKey(Answer):
    key: str
    value: str | None
    proof: str = Field(description="state tree proof (docs/consensus.md)")


class StateProof(Answer):
    block: Hex64
    height: Count
    state_root: Hex64
    items: list[ProvenKey]


class HostRecord(Answer):
    bytes_stored: Count
    contracts_active: Count
    contracts_failed: Count
    proven_periods: Count
    missed_periods: Count
    earned: Count
    collateral_locked: Count


class Principal(Answer):
    principal: PrincipalText
    balance: Count
    nonce: Count
    next_nonce: Count
    pending: Count = 0
    ed25519: str | None = None
    x25519: str | None = None
    address: str | None = None
    updated_height: Count = 0
    host: HostRecord | None = None
    proof: StateProof | None = None


class Fragments(Answer):
    path: str
    fragments: dict[str, list[dict[str, object]]] = Field(
        description="fragment index -> holders")
    proof: StateProof | None = None


class Contract(Answer):
    id: Hex64
    owner: PrincipalText
    state: Literal["offered", "active", "released", "ended", "expired", "failed"]
    escrow: Count
    collateral_locked: Count
    host: str | None = None
    payout: str | None = None
    price: Count = 0
    collateral: Count = 0
    periods: Count = 0
    proven_periods: Count = 0
    missed_periods: Count = 0
    paid_total: Count = 0
    proof: StateProof | None = None


class Contracts(Answer):
    contracts: list[Contract]


class Peer(Answer):
    principal: PrincipalText
    address: str
    direction: Literal["inbound", "outbound"]
    best_height: int = 0


class Peers(Answer):
    peers: list[Peer]
    addresses: Count = 0
    dialing: list[str] = []


class Bans(Answer):
    bans: list[dict[str, object]]


class Mined(Answer):
    mined: list[Hex64]
    height: Count
    hash: Hex64


class StateDigest(Answer):
    digest: Hex64
    keys: Count
    height: Count
    hash: Hex64


class Dialling(Answer):
    address: str
    status: str


class Session(Answer):
    logged_in: bool


class NodeView(Answer):
    network: str
    wallet: PrincipalText
    host: str | None
    height: Count
    hash: Hex64
    syncing: bool
    best_header_height: Count
    period_blocks: Count
    logged_in: bool


class Alert(Answer):
    level: str
    code: str
    message: str


class HostContract(Contract):
    period: int | None = None
    window_closes: int | None = None
    blocks_left: int | None = None
    proven_this_period: bool | None = None


class HostView(Answer):
    principal: PrincipalText
    node_host: bool
    tip: Count
    balance: Count
    record: HostRecord | None
    capacity: int | None
    used: Count
    free: int | None
    disk: dict[str, object] | None
    contracts: list[HostContract]
    alerts: list[Alert]


class OwnerFile(Answer):
    path: str
    k: Count
    n: Count
    held: Count
    health: Literal["healthy", "degraded", "at-risk", "ended"]
    contracts: Count
    liability_per_period: Count
    paid_total: Count
    missed_periods: Count


class OwnerView(Answer):
    principal: PrincipalText
    tip: Count
    files: list[OwnerFile]
    repairs: list[dict[str, object]]
    liability_per_period: Count
    host_earnings_per_period: Count
    paying_hosts: list[PrincipalText]
    contracts: list[Contract]
    #: for this node's wallet: whether an owner agent runs on its data directory (None else)
    agent_running: bool | None


class Series(Answer):
    series: Literal["chain", "host", "owner"]
    principal: str | None
    bucket: Count
    period_blocks: Count
    tip: Count
    hash: Hex64
    fields: list[str]
    points: list[list[int]]


class Found(Answer):
    kind: Literal["block", "event", "contract", "principal", "path"]
    id: str


# --- requests --------------------------------------------------------------------------------


class SubmitEvent(Request):
    event: str = Field(description="canonical event bytes, hex or base64")


class ConnectPeer(Request):
    address: str = Field(pattern="^(blk[a-z2-7]{58}@)?[^@ /]+:[0-9]{1,5}$")


class BanRequest(Request):
    network: str = Field(max_length=64)
    seconds: int | None = Field(default=None, ge=1, le=10**8,
                                description="default: the node's --ban-seconds")
    reason: str = Field(default="", max_length=200)


MAX_MINE = 100  # blocks one POST /mine may ask for
MAX_EXTEND = 10_000  # periods one extension may add


class MineRequest(Request):
    blocks: int = Field(default=1, ge=1, le=MAX_MINE)
    to: PrincipalText | None = None


class Login(Request):
    token: str = Field(max_length=200)


class SendRequest(Request):
    to: PrincipalText
    amount: Amount
    fee: Amount | None = None


class ReleaseRequest(Request):
    fee: Amount | None = None


class ExtendRequest(Request):
    periods: int = Field(ge=1, le=MAX_EXTEND)
    fee: Amount | None = None


ANSWERS: tuple[type[BaseModel], ...] = (
    Error, Status, Tip, Headers, Header, Event, Block, EventStatus, Submitted, Mempool, Principal,
    StateProof, HostRecord, Fragments, Contract, Contracts, Peer, Peers, Bans, Mined, StateDigest,
    Dialling, Session, NodeView, Alert, HostView, OwnerFile, OwnerView, Series, Found, Quote,
    PutAnswer, HostPolicy)
REQUESTS: tuple[type[BaseModel], ...] = (
    SubmitEvent, ConnectPeer, BanRequest, MineRequest, Login, SendRequest, ReleaseRequest,
    ExtendRequest, QuoteRequest, PolicyUpdate)
