"""The node's engine: the chain state (fork choice, connect and disconnect, reindex), the
mempool, block templates and mining, the wallet, the header tree the peers sync against, and the
node core that runs all of it on one thread for the network and the API."""
