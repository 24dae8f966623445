"""The key layout of the node's one LevelDB database, in one place.

One database holds the ledger (owned by :mod:`ledger.store`) and the global tree (owned by
:mod:`globaltree`, everything under ``S``), so a block's connect writes both in one atomic batch.
Each prefix is one byte; the global tree's records take a second. Heights are 8-byte big-endian
so they sort. Every global-tree key except the state tree's own nodes (``TREE``) is a leaf of
the state tree that the header's state root commits to (:mod:`chain.core.statetree`). Nothing
outside the two owners reads these keys: the engine goes through ``LedgerStore`` and the global
tree's views and queries.
"""

from __future__ import annotations

# --- the ledger ------------------------------------------------------------------------------
BLOCK = b"B"  # hash -> block bytes
INDEX = b"I"  # hash -> index entry (header, height, cumulative work, status)
HEIGHT = b"H"  # height -> hash of the best chain's block at that height
EVENT = b"E"  # event id -> block hash + position, for the best chain's events
UNDO = b"U"  # hash -> undo record of a connected block
PENDING = b"P"  # event id -> pending event (the persisted mempool)
TIP = b"T"  # -> best tip hash
META = b"M"  # name -> metadata
META_NETWORK = META + b"network"
META_SCHEMA = META + b"schema"
META_REINDEX = META + b"reindex"  # target tip of a reindex in progress

# --- the global tree -------------------------------------------------------------------------
STATE = b"S"
ACCOUNT = STATE + b"a"  # principal -> account
CONTRACT = STATE + b"c"  # contract id -> contract
FRAGMENT = STATE + b"f"  # SHA-256(path) -> (index, host, contract id)... (/global/fragments)
CLOSING = STATE + b"x"  # height contract id -> (an offer expiring, a window closing)
BY_OWNER = STATE + b"o"  # owner contract id ->
BY_HOST = STATE + b"h"  # host contract id ->
HOLDER = STATE + b"p"  # SHA-256(path) host -> contract id
HOST = STATE + b"k"  # host -> public host record
REVOKED = STATE + b"r"  # owner principal -> revoked until (time)
SPENT = STATE + b"w"  # writecap link id -> spent through it
TREE = STATE + b"n"  # depth (u16be) masked path (32) -> state tree node, not itself committed
