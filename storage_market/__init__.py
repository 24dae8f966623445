"""The storage market: local blocktrees buy storage, hosts sell it and prove it on chain.

Data plane: a blocktree client encrypts each block under a random block key and hands that key
out as readcaps (to principals, and to children under their parent's key) (:mod:`.crypto`,
:mod:`.blockstore`); cuts the encrypted block into ``n`` zfec fragments any ``k`` of which
rebuild it (:mod:`.fragments`); and commits to each fragment with a Merkle tree over fixed-size
leaves whose root goes on chain (:mod:`.merkle`, hashed by the multi-buffer SHA-256 kernel of
:mod:`.sha256x`, which runs without the GIL).

Market: the owner agent (:mod:`.owner`) offers fragments (escrowing their pay on chain), hands
them to hosts, publishes their receipts, extends contracts and repairs after missed proofs; the
host agent (:mod:`.host`) takes offers, stores fragments durably (:mod:`.fragmentstore`) and
proves them every period from the block that opens it (:mod:`.proving`), paid by the chain;
:mod:`.retrieve` gets a block back from any ``k`` hosts; :mod:`.tree` is the person's blocktree
on top (directories, versions, sharing, links, the several nodes of one tree, revocation).
They talk over the node channel with the messages of :mod:`.protocol`, and reach the chain
only through the small :class:`~.chainclient.ChainClient` protocol: in process
(:mod:`.inprocess`, the one module that imports the node) or over a node's HTTP API
(:mod:`.httpclient`). The command line and the demo that drive them live in :mod:`chain.app`.
"""
