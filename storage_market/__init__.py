"""The local-tree client of the storage market.

A blocktree client encrypts each block under a random block key and hands that key out as
readcaps (to principals, and to children under their parent's key); cuts the encrypted block
into ``n`` zfec fragments any ``k`` of which rebuild it; commits to each fragment with a Merkle
tree over fixed-size leaves whose root goes on chain; and keeps its blocks in a local store
under their paths. Later layers build offers, the hosting service, challenges, payments,
retrieval and repair on these primitives. The package imports only chain primitives, never
the engine.
"""
