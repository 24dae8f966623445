"""The global tree: the left fold over the best chain's events.

``state(chain) = foldl(apply_block, genesis_state, blocks)``. It answers ``/global/principals``
(keys, address, balance, nonce), ``/global/fragments`` (who holds which fragment of a path) and
storage contracts. Applying a block returns an undo record that restores every key it touched,
so disconnecting is exact, and a fresh fold (`reindex`) is the reference every test compares to.
"""
