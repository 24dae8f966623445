"""The LevelDB-backed event ledger: blocks, the header index with cumulative work, the best
chain's height and event indexes, and undo records. Every block connect or disconnect is one
atomic write batch, so a crash leaves either the old tip or the new one, never a mix."""
