"""The miner's one exception type."""


class MinerError(ValueError):
    """Bad input to the miner: a header that is not 116 bytes, a target or
    nonce outside its range, a thread count below one, an unknown kernel.

    A ValueError subclass so callers that already catch ValueError for bad
    data keep working; the miner raises nothing else on purpose.
    """
