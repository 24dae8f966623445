"""Ledger errors."""

from chain.core.errors import BlockcoinError


class LedgerError(BlockcoinError):
    """The ledger's database cannot be opened, read or written."""

    code = "ledger"


class DatadirLocked(LedgerError):
    """Another process (a running node?) holds the data directory's database."""

    code = "datadir-locked"


class CorruptLedger(LedgerError):
    """Stored bytes that do not decode: the database is damaged; run `blockcoin reindex`."""

    code = "corrupt-ledger"
