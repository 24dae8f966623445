"""One lock for loading native (numba) kernels in a process.

The miner's kernels and the storage market's multi-buffer SHA-256 are compiled by numba, or
loaded from its on-disk cache, when their modules are first imported. Two threads doing that at
once (the node's miner starting while an agent preloads the hash kernel in the background) have
been seen to die in an LLVM assertion; numba's own compiler lock does not cover every path of a
first import. Whoever imports such a module holds this lock.
"""

from __future__ import annotations

import threading

KERNEL_LOAD_LOCK = threading.RLock()
