"""The local blocktree: a person's tree of blocks as the chain's client (paper, "An Individual
Blocktree").

A tree is rooted at its owner's principal, ``/<owner>``. Every block below the root is placed on
the market like any other (the owner agent of :mod:`storage_market.owner` seals it, cuts it into
fragments and offers them), so that anyone the tree shares a block with can fetch it from the
hosts ``/global/fragments`` names. What this module adds is the tree around those blocks:

* **Directories and versions.** ``mkdir`` places an empty *directory* block (its kind is in the
  record header): it exists to carry readcaps and to wrap its children's keys. A put of a path
  that holds a block makes a new *version*: the old contracts are released and the new record
  offered; the old record is kept under ``store/versions`` so ``get --version`` still reads it.
  The index (``store/tree.json``) remembers each path's kind, size, readers and versions with
  the height they were offered at; ``ls`` and ``log`` read only it and the agent's state.
* **Sharing.** ``share PATH P`` puts a new version of ``PATH`` with a readcap for ``P``'s X25519
  key as ``/global/principals`` publishes it. The block key stays, so everything below is
  readable to ``P`` through the child-key wraps without touching it. ``unshare`` drops the
  readcap and **re-keys** ``PATH`` and everything below (fresh keys, so what ``P`` learnt opens
  no later version).
* **Links.** A link block's payload is a target path and a readcap for the target's key issued
  to the link's owner (the paper's symbolic link, which is how a node keeps a way into blocks,
  also of other trees, it could not otherwise open). Reading through a link follows it.
* **Several nodes of one tree.** ``grant`` gives another principal a readcap on a directory and
  a writecap (path, expiry, allowance) printed as a token; the node that imports it stores
  under that path, its offers paid from the tree's account and bounded on chain by the
  allowance. ``revoke`` publishes ``Revoke`` (the chain refuses the node's writecaps from then
  on) and re-keys every block under the node's paths, the ones the node wrote included (the
  tree finds them through its contracts on chain and opens them through the directory key).

Reading (:class:`Opener`) always asks the chain for the newest version of a path: the local
record serves it if it is that version, otherwise the block comes from its hosts, so a reader
never opens a stale copy, and a node that lost access notices on the next read.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.core.encoding import Reader, Writer
from chain.core.errors import BlockcoinError
from chain.core.events import FragmentReleased, Revoke
from chain.core.keys import KeyPair, PublicKeys
from chain.core.paths import MAX_PATH_BYTES, check_path, contains
from chain.core.principal import Principal
from chain.core.writecap import Writecap, check_writecap
from storage_market import retrieve
from storage_market.blockstore import (
    KIND_DIR,
    KIND_FILE,
    KIND_LINK,
    KINDS,
    BlockStore,
    StoredBlock,
)
from storage_market.chainclient import ChainClient, Signer
from storage_market.crypto import (
    Bytes,
    Plaintext,
    Readcap,
    decode_strict,
    find_readcap,
    new_block_key,
    parent_path,
    unwrap_child_key,
    valid_path,
)
from storage_market.errors import (
    BlockNotFound,
    DecryptError,
    FormatError,
    GrantError,
    NoReadcap,
    TreeError,
)
from storage_market.jsonstate import read_json, write_json
from storage_market.owner import ACTIVE, OwnerAgent, StoreOptions

LINK_MAGIC = b"BCLN"
LINK_FORMAT = 1
GRANT_PREFIX = "BCGRANT1"
GRANT_FORMAT = 1
MAX_LINK_HOPS = 8
CONFIRM_TIMEOUT = 120.0  # seconds a revocation waits to be mined


# --- links ---------------------------------------------------------------------------------------


def encode_link(target: str, cap: Readcap) -> bytes:
    """A link block's payload: ``"BCLN" | u8 format=1 | text target | readcap``."""
    w = Writer().raw(LINK_MAGIC).u8(LINK_FORMAT).text(valid_path(target))
    cap.write(w)
    return bytes(w)


def _read_link(r: Reader) -> tuple[str, Readcap]:
    if r.fixed(len(LINK_MAGIC)) != LINK_MAGIC:
        raise FormatError("not a link (bad magic)")
    if r.u8() != LINK_FORMAT:
        raise FormatError("unknown link format")
    return valid_path(r.text(MAX_PATH_BYTES)), Readcap.read(r)


def decode_link(data: Bytes) -> tuple[str, Readcap]:
    """The target path and readcap of a link's payload (FormatError if it is not one)."""
    return decode_strict(data, _read_link, "link")


# --- grants --------------------------------------------------------------------------------------


def encode_grant(chain_id: bytes, cap: Writecap) -> str:
    """A writecap as a token to paste or show as a QR code: ``BCGRANT1`` then base32 (upper
    case and digits only: QR's compact alphanumeric mode) of ``u8 format | bytes chain id |
    writecap chain`` and the first 4 bytes of its SHA-256, so a mistyped token is refused."""
    w = Writer().u8(GRANT_FORMAT).var_bytes(chain_id)
    cap.write(w)
    body = bytes(w)
    raw = body + hashlib.sha256(body).digest()[:4]
    return GRANT_PREFIX + base64.b32encode(raw).decode().rstrip("=")


def decode_grant(token: str) -> tuple[bytes, Writecap]:
    """The chain id and writecap of a grant token; :class:`GrantError` for anything else."""
    text = "".join(token.split()).upper()
    if not text.startswith(GRANT_PREFIX):
        raise GrantError(f"not a grant token (it starts with {GRANT_PREFIX})")
    data = text[len(GRANT_PREFIX):]
    try:
        raw = base64.b32decode(data + "=" * (-len(data) % 8))
    except ValueError as exc:
        raise GrantError("not a grant token (bad base32)") from exc
    body, check = raw[:-4], raw[-4:]
    if len(raw) < 5 or hashlib.sha256(body).digest()[:4] != check:
        raise GrantError("grant token checksum mismatch: mistyped or cut short")

    def read(r: Reader) -> tuple[bytes, Writecap]:
        if r.u8() != GRANT_FORMAT:
            raise FormatError("unknown grant format")
        return r.var_bytes(64), Writecap.read(r)

    try:
        return decode_strict(body, read, "grant token")
    except FormatError as exc:
        raise GrantError(str(exc)) from exc


def check_grant(chain_id: bytes, cap: Writecap, token_chain: bytes, me: Principal,
                now: int) -> Principal:
    """The tree a grant lets ``me`` write in, after the checks a node makes before it uses it
    (the chain makes them again for every event, revocation included)."""
    if token_chain != chain_id:
        raise GrantError("this grant is for another network")
    first = cap.links()[0]
    if first.issued_to != me:
        raise GrantError(f"this grant is issued to {first.issued_to}, not to this node ({me})")
    owner = cap.links()[-1].issuer
    try:
        check_writecap(chain_id, cap, me, cap.path, owner, now, lambda _p: False)
    except BlockcoinError as exc:
        raise GrantError(f"unusable grant: {exc}") from exc
    if check_path(cap.path) != owner:
        raise GrantError(f"this grant's path {cap.path} is outside its issuer's tree")
    return owner


# --- the index -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Version:
    version: bytes
    height: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version.hex(), "height": self.height, "size": self.size}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Version:
        return cls(bytes.fromhex(d["version"]), int(d["height"]), int(d["size"]))


@dataclass(slots=True)
class TreeNode:
    """One path of the tree as this node knows it."""

    path: str
    kind: int
    size: int = 0
    readers: dict[str, PublicKeys] = field(default_factory=dict)  # besides this node's key
    target: str | None = None  # a link's
    versions: list[Version] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": KINDS[self.kind], "size": self.size, "target": self.target,
                "readers": {p: [k.ed25519.hex(), k.x25519.hex()] for p, k in self.readers.items()},
                "versions": [v.to_json() for v in self.versions]}

    @classmethod
    def from_json(cls, path: str, d: dict[str, Any]) -> TreeNode:
        kind = {name: k for k, name in KINDS.items()}[d["kind"]]
        readers = {p: PublicKeys(bytes.fromhex(e), bytes.fromhex(x))
                   for p, (e, x) in d.get("readers", {}).items()}
        return cls(path, kind, int(d["size"]), readers, d.get("target"),
                   [Version.from_json(v) for v in d.get("versions", [])])


@dataclass(slots=True)
class Grant:
    """A writecap this tree issued."""

    principal: Principal
    path: str
    expiry: int
    allowance: int | None
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"principal": str(self.principal), "path": self.path, "expiry": self.expiry,
                "allowance": self.allowance, "revoked": self.revoked}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Grant:
        return cls(Principal.parse(d["principal"]), d["path"], int(d["expiry"]),
                   d.get("allowance"), bool(d.get("revoked")))


class TreeIndex:
    """``store/tree.json``: the paths this node wrote, the grants it issued, the one it holds.

    The index is what ``ls`` and ``log`` read, so they answer without a node; the blocks
    themselves (and the chain) stay the authority on keys and versions.
    """

    def __init__(self, datadir: Path) -> None:
        self.file = Path(datadir) / "store" / "tree.json"
        raw = read_json(self.file) or {}
        self.nodes: dict[str, TreeNode] = {
            p: TreeNode.from_json(p, d) for p, d in raw.get("nodes", {}).items()}
        self.grants: list[Grant] = [Grant.from_json(g) for g in raw.get("grants", [])]
        self.token: str | None = raw.get("grant")
        self.spent: int = int(raw.get("spent", 0))

    def save(self) -> None:
        write_json(self.file, {
            "nodes": {p: n.to_json() for p, n in sorted(self.nodes.items())},
            "grants": [g.to_json() for g in self.grants], "grant": self.token,
            "spent": self.spent})

    def under(self, path: str) -> list[TreeNode]:
        """``path`` and every indexed path below it, parents before children."""
        return sorted((n for p, n in self.nodes.items() if contains(path, p)),
                      key=lambda n: (n.path.count("/"), n.path))

    def children(self, path: str) -> list[TreeNode]:
        prefix = path + "/"
        return sorted((n for p, n in self.nodes.items()
                       if p.startswith(prefix) and "/" not in p[len(prefix):]),
                      key=lambda n: n.path)

    def link_prefix(self, path: str) -> TreeNode | None:
        """The indexed link that ``path`` is or lies below, if any."""
        head = path
        while head.count("/") >= 1:
            node = self.nodes.get(head)
            if node is not None and node.kind == KIND_LINK:
                return node
            if head.count("/") == 1:
                return None
            head = parent_path(head)
        return None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node writes as: its key, the tree it writes in and the path its writes stay
    under (the tree's root for the owner, the grant's path for a granted node)."""

    key: KeyPair
    tree: Principal
    top: str
    writecap: Writecap | None = None

    @property
    def delegated(self) -> bool:
        return self.writecap is not None

    def signer(self) -> Signer:
        if self.writecap is None:
            return Signer(self.key)
        return Signer(self.key, self.tree, self.writecap)

    def check_writable(self, path: str) -> str:
        valid_path(path)
        if not contains(self.top, path):
            if self.delegated:
                raise TreeError(f"{path} is outside this node's grant {self.top}")
            raise TreeError(f"{path} is outside this tree {self.top}")
        if path == self.top:
            raise TreeError(f"{path} is the {'grant' if self.delegated else 'tree'}'s own "
                            "directory: name a path below it")
        return path


def identity(datadir: Path, key: KeyPair, chain_id: bytes, now: int | None = None) -> Identity:
    """The identity of the node in ``datadir``: the owner of its own tree, or, once it imported
    a grant, a node of the granting tree (checked: not expired)."""
    index = TreeIndex(datadir)
    if index.token is None:
        return Identity(key, key.principal, key.principal.root_path)
    token_chain, cap = decode_grant(index.token)
    owner = check_grant(chain_id, cap, token_chain, key.principal,
                        int(time.time()) if now is None else now)
    return Identity(key, owner, cap.path, cap)


# --- reading -------------------------------------------------------------------------------------


class Opener:
    """Finds the newest version of a block and its key for one reader.

    A block's key comes from its own readcap for the reader or, failing that, from its parent's
    key through the child-key wrap, up to the nearest block that has a readcap for the reader
    (a shared directory) or a key this opener was told (a link's readcap).
    """

    def __init__(self, chain: ChainClient, key: KeyPair, blocks: BlockStore) -> None:
        self.chain = chain
        self.key = key
        self.blocks = blocks
        self.keys: dict[str, bytes] = {}
        self._blocks: dict[str, StoredBlock] = {}

    async def block(self, path: str) -> StoredBlock:
        """The newest version of ``path``: the one the chain's hosts hold (the local record if
        it is that version), else the local record of a block never placed (a tree's root)."""
        cached = self._blocks.get(path)
        if cached is not None:
            return cached
        local = self.blocks.header(path) if self.blocks.has(path) else None
        try:
            place = await retrieve.placement(self.chain, path)
        except BlockNotFound:
            if local is None:
                raise
            block = self.blocks.get(path)
        else:
            if local is not None and local.version == place.version:
                block = self.blocks.get(path)
            else:
                block = await retrieve.get_block(self.chain, self.key, path)
        self._blocks[path] = block
        return block

    async def key_of(self, path: str) -> bytes:
        known = self.keys.get(path)
        if known is not None:
            return known
        block = await self.block(path)
        try:
            key = find_readcap(block.header.readcaps, self.key.principal).open(self.key, path)
        except NoReadcap:
            if path.count("/") == 1 or block.header.parent_key is None:
                raise NoReadcap(f"{self.key.principal} holds no readcap for {path} or any "
                                "directory above it") from None
            parent = parent_path(path)
            try:
                parent_key = await self.key_of(parent)
            except BlockNotFound as exc:
                raise NoReadcap(f"{self.key.principal} holds no readcap for {path} ({exc})"
                                ) from None
            try:
                key = unwrap_child_key(parent_key, path, block.header.parent_key)
            except DecryptError as exc:
                raise DecryptError(f"{path} does not open with the key of {parent}: re-keyed "
                                   "since this reader's access was given") from exc
        self.keys[path] = key
        return key

    async def open(self, path: str) -> tuple[StoredBlock, bytearray]:
        block = await self.block(path)
        try:
            return block, block.open(await self.key_of(path))
        except DecryptError as exc:
            raise DecryptError(f"{path} does not open: {exc}") from exc

    async def follow(self, link: str) -> str:
        """A link's target, its key learnt from the link's readcap."""
        _, payload = await self.open(link)
        target, cap = decode_link(payload)
        self.keys[target] = cap.open(self.key, target)
        self._blocks.pop(target, None)
        return target

    async def read(self, path: str, index: TreeIndex | None = None
                   ) -> tuple[str, StoredBlock, bytearray]:
        """The block at ``path`` opened, following links (this node's, found in ``index``,
        and any link block met on the way): the path read, the block and its plaintext."""
        for _ in range(MAX_LINK_HOPS):
            link = index.link_prefix(path) if index is not None else None
            if link is not None:
                target = await self.follow(link.path)
                path = target + path[len(link.path):]
                index = None  # the target's tree is read as it is on chain
                continue
            block, payload = await self.open(path)
            if block.header.kind != KIND_LINK:
                return path, block, payload
            target, cap = decode_link(payload)
            self.keys[target] = cap.open(self.key, target)
            path = target
        raise TreeError(f"more than {MAX_LINK_HOPS} links on the way to {path}")


# --- the tree ------------------------------------------------------------------------------------


def _archive_dir(datadir: Path, path: str) -> Path:
    name = hashlib.sha256(b"blockcoin/v1/tree-versions\x00" + path.encode()).hexdigest()[:40]
    return Path(datadir) / "store" / "versions" / name


def archived(datadir: Path, path: str, version: bytes) -> StoredBlock | None:
    """An older version of one of this node's blocks, kept when a newer one replaced it."""
    target = _archive_dir(datadir, path) / f"{version.hex()}.blk"
    if not target.is_file():
        return None
    block = StoredBlock.decode(target.read_bytes())
    return block if block.path == path and block.version == version else None


@dataclass(slots=True)
class Item:
    """One block to place: a path, its kind, and what to seal (bytes or a file's name)."""

    path: str
    kind: int
    data: bytes | Path = b""
    target: str | None = None


async def lookup_reader(chain: ChainClient, principal: Principal) -> PublicKeys:
    """A principal's public keys as ``/global/principals`` holds them, or one clear line."""
    acct = await chain.principal(principal)
    if acct is None:
        raise TreeError(f"{principal} is unknown on chain")
    if acct.x25519 is None or acct.ed25519 is None:
        raise TreeError(f"{principal} has announced no encryption key on chain (it must run a "
                        "tree or store command once)")
    keys = PublicKeys(acct.ed25519, acct.x25519)
    if keys.principal != principal:
        raise TreeError(f"{principal}'s published key does not match its principal")
    return keys


class LocalTree:
    """The tree operations that place blocks, run with a started owner agent (hosts fetch the
    fragments from it while the operation waits for them to be placed)."""

    def __init__(self, datadir: Path, me: Identity, agent: OwnerAgent,
                 options: StoreOptions, wait: float | None = 120.0) -> None:
        self.datadir = Path(datadir)
        self.me = me
        self.agent = agent
        self.chain = agent.chain
        self.options = options
        self.wait = wait
        self.index = TreeIndex(datadir)
        self.blocks = agent.blocks

    # --- placing blocks -------------------------------------------------------------------

    def _missing_dirs(self, paths: Iterable[str]) -> list[str]:
        """Directories strictly between this node's top and ``paths`` that it has not made."""
        need: set[str] = set()
        for path in paths:
            head = path
            while head.count("/") > 1:
                head = parent_path(head)
                if not contains(self.me.top, head) or head == self.me.top:
                    break
                if head not in self.index.nodes:
                    need.add(head)
        return sorted(need, key=lambda p: (p.count("/"), p))

    async def _fetch_top(self) -> None:
        """A granted node keeps the newest version of its grant's directory, whose key its
        own blocks are wrapped under (the owner re-keys it on a revocation)."""
        if not self.me.delegated:
            return
        block = await retrieve.get_block(self.chain, self.me.key, self.me.top)
        try:
            block.block_key(self.me.key)
        except NoReadcap:
            raise GrantError(f"this node holds no readcap for {self.me.top} any more: the tree "
                             "revoked its grant and re-keyed the directory") from None
        if not self.blocks.has(self.me.top) or \
                self.blocks.header(self.me.top).version != block.version:
            self.blocks.put(block)

    def _check_allowance(self, count: int) -> None:
        cap = self.me.writecap
        if cap is None or cap.links()[0].allowance is None:
            return
        allowance = cap.links()[0].allowance
        assert allowance is not None
        need = count * self.options.n * self.options.price * self.options.periods
        if self.index.spent + need > allowance:
            raise GrantError(
                f"this node's grant allows {allowance} out of {self.me.tree}; {self.index.spent} "
                f"spent, and {count} block(s) would escrow {need}")

    def _archive(self, path: str) -> None:
        """Keep the local record of ``path``'s current version before a new one replaces it
        (a hard link: the rename that installs the new record leaves this name on the old)."""
        if not self.blocks.has(path):
            return
        header = self.blocks.header(path)
        folder = _archive_dir(self.datadir, path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{header.version.hex()}.blk"
        if not target.exists():
            os.link(self.blocks.file_for(path), target)

    async def _release(self, path: str) -> None:
        entry = self.agent.entries.get(path)
        if entry is not None and entry.live():
            await self.agent.release(path, flush=False)
        else:  # placed by another node of this tree: end its contracts as the tree
            for info in await self.chain.contracts_by_owner(self.me.tree):
                if info.offer.path == path and info.state in ("offered", "active"):
                    await self.agent.signer.submit(self.chain, FragmentReleased(info.id))

    async def place(self, items: list[Item], *, keys: dict[str, bytes] | None = None,
                    readers: dict[str, dict[str, PublicKeys]] | None = None) -> list[str]:
        """Place ``items`` (and the directories above them) as new blocks or new versions and
        wait until their fragments are held; the paths placed, parents first.

        ``keys`` forces a block key per path (re-keying: the old contracts of a path, whoever
        placed them, are released); ``readers`` sets a path's readers (by default a new
        version keeps the old one's)."""
        for item in items:
            self.me.check_writable(item.path)
        named = {i.path for i in items}
        dirs = [Item(p, KIND_DIR) for p in self._missing_dirs(named) if p not in named]
        todo = sorted(dirs + items, key=lambda i: (i.path.count("/"), i.path))
        await self._fetch_top()  # first: a revoked node learns it before anything else
        self._check_allowance(len(todo))
        placed: list[str] = []
        try:
            await self._place_each(todo, keys, readers, placed)
            await self.agent.state.flush()  # once for all the blocks' offers
            self.index.save()
            await self.wait_placed(placed)
        finally:
            if self.me.delegated:  # what this node's writecap spent, fees included
                self.index.spent += self.agent.signer.spent
                self.agent.signer.spent = 0
            self.index.save()
        return placed

    async def _place_each(self, todo: list[Item], keys: dict[str, bytes] | None,
                          readers: dict[str, dict[str, PublicKeys]] | None,
                          placed: list[str]) -> None:
        for item in todo:
            node = self.index.nodes.get(item.path)
            kept = node.readers if node is not None else {}
            who = readers.get(item.path, kept) if readers is not None else kept
            if node is not None or item.path in self.agent.entries or keys is not None:
                self._archive(item.path)
                await self._release(item.path)
            await self.agent.written(parent_path(item.path))
            size = await self._put(item, list(who.values()),
                                   None if keys is None else keys.get(item.path))
            node = TreeNode(item.path, item.kind, size, dict(who), item.target,
                            node.versions if node is not None else [])
            entry = self.agent.entries[item.path]
            node.versions.append(Version(entry.version, entry.slots[0].offered_height, size))
            self.index.nodes[item.path] = node
            placed.append(item.path)

    async def _put(self, item: Item, readers: list[PublicKeys], key: bytes | None) -> int:
        data: Plaintext
        if isinstance(item.data, Path):
            with item.data.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                await self.agent.put(item.path, fh, self.options, readers=readers,
                                     block_key=key, kind=item.kind, flush=False)
            return size
        data = item.data
        await self.agent.put(item.path, data, self.options, readers=readers, block_key=key,
                             kind=item.kind, flush=False)
        return len(item.data)

    async def wait_placed(self, paths: list[str]) -> None:
        """Until every fragment of ``paths`` is held (bounded by the tree's wait in total; a
        wait of None returns at once: the offers stand, and the agent hands them to hosts
        whenever it runs)."""
        if self.wait is None:
            return
        loop_deadline = time.monotonic() + self.wait
        short = []
        for path in paths:
            left = max(0.0, loop_deadline - time.monotonic())
            if not await self.agent.wait_placed(path, left):
                short.append(path)
        if short:
            entry = self.agent.entries[short[0]]
            raise TreeError(f"{len(short)} block(s) not fully placed within {self.wait:g} s "
                            f"({short[0]}: {entry.placed()} of {entry.n}); run the command "
                            "again or `blockcoin store serve` to carry on")

    # --- the commands ---------------------------------------------------------------------

    async def mkdir(self, path: str) -> list[str]:
        self.me.check_writable(path)
        if path in self.index.nodes:
            raise TreeError(f"{path} already exists")
        return await self.place([Item(path, KIND_DIR)])

    async def put(self, source: Path, path: str) -> list[str]:
        """A file as the block at ``path``, or a directory as ``path`` and, recursively, every
        file and directory in it (symbolic links on disk are not followed)."""
        self.me.check_writable(path)
        if source.is_dir():
            items = [Item(path, KIND_DIR)] if path not in self.index.nodes else []
            for local, rel in _walk(source):
                full = f"{path}/{rel}"
                valid_path(full)
                if local.is_dir():
                    if full not in self.index.nodes:
                        items.append(Item(full, KIND_DIR))
                else:
                    items.append(Item(full, KIND_FILE, local))
            return await self.place(items)
        if not source.is_file():
            raise TreeError(f"{source} is neither a file nor a directory")
        node = self.index.nodes.get(path)
        if node is not None and node.kind != KIND_FILE:
            raise TreeError(f"{path} is a {KINDS[node.kind]}, not a file")
        return await self.place([Item(path, KIND_FILE, source)])

    async def link(self, path: str, target: str) -> list[str]:
        valid_path(target)
        if path in self.index.nodes:
            raise TreeError(f"{path} already exists")
        opener = Opener(self.chain, self.me.key, self.blocks)
        key = await opener.key_of(target)
        cap = Readcap.issue(key, target, self.me.key.public)
        return await self.place([Item(path, KIND_LINK, encode_link(target, cap), target)])

    async def rm(self, path: str) -> int:
        """End the contracts of ``path`` and everything below it (the escrow left comes back)
        and forget them; the number of blocks removed."""
        self.me.check_writable(path)
        nodes = self.index.under(path)
        if not nodes:
            raise BlockNotFound(f"{path} is not in this tree")
        for node in reversed(nodes):
            if node.path in self.agent.entries:
                await self._release(node.path)
            self.blocks.delete(node.path)
            del self.index.nodes[node.path]
        await self.agent.state.flush()
        self.index.save()
        return len(nodes)

    def _node(self, path: str) -> TreeNode:
        node = self.index.nodes.get(path)
        if node is None:
            raise BlockNotFound(f"{path} is not in this tree")
        return node

    async def _payload(self, path: str) -> bytes | Path:
        """What a new version of one of this node's blocks seals: the current plaintext."""
        node = self._node(path)
        if node.kind == KIND_DIR:
            return b""
        opener = Opener(self.chain, self.me.key, self.blocks)
        _, payload = await opener.open(path)
        return bytes(payload)

    async def share(self, path: str, principal: Principal) -> list[str]:
        self.me.check_writable(path)
        if principal == self.me.key.principal:
            raise TreeError("a node always reads its own blocks")
        node = self._node(path)
        reader = await lookup_reader(self.chain, principal)
        who = {**node.readers, str(principal): reader}
        item = Item(path, node.kind, await self._payload(path), node.target)
        return await self.place([item], readers={path: who})

    async def unshare(self, path: str, principal: Principal) -> list[str]:
        self.me.check_writable(path)
        node = self._node(path)
        if str(principal) not in node.readers:
            raise TreeError(f"{path} is not shared with {principal}")
        return await self.rekey(path, {principal})

    async def rekey(self, top: str, drop: set[Principal]) -> list[str]:
        """New block keys for ``top`` and every block below it, readcaps for ``drop`` removed,
        and every new version placed; the paths re-keyed.

        Blocks other nodes of the tree wrote are found through the tree's contracts on chain
        and opened through the directory keys. Every old key is learnt before any block is
        replaced: a block's old key is wrapped under its parent's old key."""
        paths = {n.path for n in self.index.under(top)}
        for info in await self.chain.contracts_by_owner(self.me.tree):
            if info.state == "active" and contains(top, info.offer.path):
                paths.add(info.offer.path)
        ordered = sorted(paths, key=lambda p: (p.count("/"), p))
        opener = Opener(self.chain, self.me.key, self.blocks)
        items: list[Item] = []
        keys: dict[str, bytes] = {}
        readers: dict[str, dict[str, PublicKeys]] = {}
        dropped = {str(p) for p in drop}
        for path in ordered:
            block, payload = await opener.open(path)
            node = self.index.nodes.get(path)
            if node is not None:
                kept = {p: k for p, k in node.readers.items() if p not in dropped}
            else:  # written by another node: keep its readers but the dropped
                kept = {}
                for cap in block.header.readcaps:
                    if str(cap.recipient) not in dropped and cap.recipient != self.me.key.principal:
                        kept[str(cap.recipient)] = await lookup_reader(self.chain, cap.recipient)
            target = decode_link(payload)[0] if block.header.kind == KIND_LINK else None
            items.append(Item(path, block.header.kind, bytes(payload), target))
            keys[path] = new_block_key()
            readers[path] = kept
        return await self.place(items, keys=keys, readers=readers)

    async def grant(self, principal: Principal, path: str, expiry: int,
                    allowance: int | None) -> str:
        """A writecap for ``principal`` under ``path`` as a token, after placing a version of
        the directory at ``path`` with a readcap for it."""
        if self.me.delegated:
            raise GrantError("only the tree's owner grants (this node holds a grant itself)")
        self.me.check_writable(path)
        if principal == self.me.key.principal:
            raise GrantError("the owner needs no grant for its own tree")
        if expiry <= int(time.time()):
            raise GrantError("a grant's expiry is in the future")
        if allowance is not None and allowance < 0:
            raise GrantError("an allowance is not negative")
        reader = await lookup_reader(self.chain, principal)
        node = self.index.nodes.get(path)
        if node is not None and node.kind != KIND_DIR:
            raise TreeError(f"{path} is a {KINDS[node.kind]}: a node is granted a directory")
        who = {**(node.readers if node is not None else {}), str(principal): reader}
        await self.place([Item(path, KIND_DIR)], readers={path: who})
        cap = Writecap.issue(self.chain.chain_id, self.me.key, path, principal, expiry,
                             allowance=allowance)
        self.index.grants.append(Grant(principal, path, expiry, allowance))
        self.index.save()
        return encode_grant(self.chain.chain_id, cap)

    async def revoke(self, principal: Principal) -> tuple[bytes, list[str]]:
        """Publish ``Revoke`` for ``principal`` until its last grant expires, wait for it to
        be mined, then re-key every block under its grants; the event id and the paths."""
        grants = [g for g in self.index.grants if g.principal == principal and not g.revoked]
        if not grants:
            raise TreeError(f"{principal} holds no grant of this tree")
        until = max(g.expiry for g in grants)
        eid = await self.agent.signer.submit(self.chain, Revoke(principal, until))
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        height = await self.chain.tip_height()
        while await self.chain.event_status(eid) != "confirmed":
            if time.monotonic() > deadline:
                raise TreeError(f"the revocation was not mined within {CONFIRM_TIMEOUT:g} s: "
                                "is a node mining?")
            height = await self.chain.wait_for_block(height, 2.0)
        done: list[str] = []
        for g in grants:
            done += await self.rekey(g.path, {principal})
            g.revoked = True
        self.index.save()
        return eid, done


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every directory and regular file below ``root`` with its relative path, sorted;
    symbolic links are skipped (they could lead outside what was named)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            local = base / name
            if local.is_symlink():
                continue
            yield local, local.relative_to(root).as_posix()


# --- listing -------------------------------------------------------------------------------------


def health(placed: int, k: int, n: int) -> str:
    """``ok`` (all ``n`` held), ``degraded`` (at least ``k``) or ``at-risk`` (fewer)."""
    if placed >= n:
        return "ok"
    return "degraded" if placed >= k else "at-risk"


def listing(index: TreeIndex, entries: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """``ls``: the children of ``path`` (or ``path`` itself if it is not a directory)."""
    node = index.nodes.get(path)
    rows = [node] if node is not None and node.kind != KIND_DIR else index.children(path)
    if node is None and not rows and path.count("/") > 1:
        raise BlockNotFound(f"{path} is not in this tree")
    out = []
    for n in rows:
        entry = entries.get(n.path)
        placed = sum(1 for s in entry.slots if s.state == ACTIVE) if entry is not None else 0
        out.append({
            "path": n.path, "name": n.path.rsplit("/", 1)[1], "kind": KINDS[n.kind],
            "size": n.size, "versions": len(n.versions),
            "version": n.versions[-1].version.hex() if n.versions else None,
            "height": n.versions[-1].height if n.versions else None,
            "placed": placed, "n": entry.n if entry is not None else 0,
            "health": health(placed, entry.k, entry.n) if entry is not None else "local",
            "shared_with": sorted(n.readers), "target": n.target,
        })
    return out


def version_log(index: TreeIndex, path: str) -> list[dict[str, Any]]:
    node = index.nodes.get(path)
    if node is None:
        raise BlockNotFound(f"{path} is not in this tree")
    return [{"n": i + 1, **v.to_json()} for i, v in enumerate(node.versions)]


def pick_version(index: TreeIndex, path: str, wanted: str) -> bytes:
    """A version named by its number in ``log`` or by a prefix of its hex id."""
    versions = index.nodes[path].versions if path in index.nodes else []
    if wanted.isdigit() and 1 <= int(wanted) <= len(versions):
        return versions[int(wanted) - 1].version
    found = [v.version for v in versions if v.version.hex().startswith(wanted.lower())]
    if len(found) != 1 or len(wanted) < 4:
        raise BlockNotFound(f"{path} has no version {wanted!r} (see `blockcoin tree log {path}`)")
    return found[0]
