"""Node-to-node networking: :mod:`chain.net.channel`, the Noise XX secure channel and the
transports it runs over (shared with the storage market), and :mod:`chain.net.p2p`, the peer
protocol, sync, relay and defence built on it."""
