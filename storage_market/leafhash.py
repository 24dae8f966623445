"""Leaf digests of a record's data fragments, hashed while the record is still being sealed.

A put seals the payload on one core in a single AES-GCM pass; the data fragments are then
plain slices of the record (:func:`storage_market.fragments.split_in_place`), so their Merkle
leaves are final as soon as the cipher has passed them. Hashing them as the seal goes, on the
other core, takes the data fragments' trees off the path between the seal and the offers,
which is left with zfec's parity and its trees.

Only the last data fragment's short last leaf and padding wait for the end (the padding is
written after the seal); :meth:`DataLeaves.finish` hashes them and returns the roots, equal bit
for bit to :func:`storage_market.merkle.merkle_root` of each fragment.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from storage_market import fragments, sha256x
from storage_market.merkle import check_leaf_size, leaf_count


class DataLeaves:
    """The leaf digests of the ``k`` data fragments of a record being sealed.

    :meth:`advance` (a :data:`~storage_market.blockstore.RecordProgress`, called by the sealing
    thread each time more of the record is final) queues the newly complete leaves for a helper
    thread; :meth:`finish`, with the padded fragments, hashes what is left and builds the
    roots. Use as a context manager, so the helper thread ends however the put does.
    """

    def __init__(self, k: int, leaf_size: int) -> None:
        check_leaf_size(leaf_size)
        self.k = k
        self.leaf = leaf_size
        self._size = 0  # of a fragment, known from the record's size at the first advance
        self._whole = 0  # whole leaves in a fragment
        self._next: list[int] = []  # the next leaf to hash in each fragment
        self._digests: list[bytearray] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="leaf-hash")
        self._jobs: list[Future[int]] = []

    def __enter__(self) -> DataLeaves:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _layout(self, fragment_size: int) -> None:
        self._size = fragment_size
        self._whole = fragment_size // self.leaf
        self._next = [0] * self.k
        count = leaf_count(fragment_size, self.leaf)
        self._digests = [bytearray(count * sha256x.DIGEST) for _ in range(self.k)]

    def advance(self, record: memoryview, final: int) -> None:
        """The first ``final`` bytes of ``record`` will not change: queue every whole leaf of
        a data fragment that lies in them and is not hashed yet."""
        if not self._next:
            self._layout(fragments.fragment_size(record.nbytes, self.k))
        for i in range(self.k):
            base = i * self._size
            end = min(self._whole, max(0, final - base) // self.leaf)
            start = self._next[i]
            if end <= start:
                continue
            self._next[i] = end
            data = record[base + start * self.leaf : base + end * self.leaf]
            out = memoryview(self._digests[i])[start * sha256x.DIGEST : end * sha256x.DIGEST]
            self._jobs.append(self._pool.submit(sha256x.leaf_digests_into, data, self.leaf, out))

    def finish(self, data_fragments: list[memoryview]) -> list[bytes]:
        """The Merkle roots of the final (padded) data fragments, in index order."""
        for job in self._jobs:
            job.result()
        self._jobs.clear()
        if not self._next:  # nothing was hashed during the seal
            self._layout(data_fragments[0].nbytes)
        for i, fragment in enumerate(data_fragments):
            start = self._next[i]
            out = memoryview(self._digests[i])[start * sha256x.DIGEST :]
            sha256x.leaf_digests_into(fragment[start * self.leaf :], self.leaf, out)
            self._next[i] = self._whole
        return [sha256x.root_of(d) for d in self._digests]
