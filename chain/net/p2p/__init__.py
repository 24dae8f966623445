"""The peer-to-peer protocol: messages, peers and their addresses, header sync with pre-sync,
block download, event relay with recent rejects, bans, eviction and connection limits."""
