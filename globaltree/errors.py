"""Global tree errors (consensus failures use chain.core.errors' ValidationError family)."""

from chain.core.errors import BlockcoinError


class GlobalTreeError(BlockcoinError):
    code = "globaltree"


class NotFound(GlobalTreeError):
    """A query for a principal, path or contract the global tree does not know."""

    code = "not-found"


class StateProofError(GlobalTreeError):
    """A proof of a global-tree answer that is malformed, incomplete, or does not lead to the
    state root of the header it names."""

    code = "state-proof"
