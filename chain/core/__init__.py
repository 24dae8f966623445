"""The chain's primitives: canonical encoding, hashes, keys and principals, paths, writecaps,
events, headers and blocks, storage-proof arithmetic, network parameters and the one error
hierarchy. They import nothing else of the project, and every other package builds on them."""
