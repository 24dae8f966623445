"""The storage market's exception family.

Everything here derives from :class:`StorageError`, itself a :class:`chain.core.errors.BlockcoinError`,
so the CLI and the hosting service can catch one family for anything a peer, a disk or a user can
provoke. Decoders of storage formats raise :class:`FormatError` (a ``StorageError``), never
``chain.core.errors.DecodeError``: a caller of this package needs to catch only one family. Each class
carries a stable ``code`` so logs and tests can tell failures apart without parsing prose.
"""

from __future__ import annotations

from chain.core.errors import BlockcoinError


class StorageError(BlockcoinError):
    """Root of every error the storage market raises on purpose."""

    code = "storage"


class FormatError(StorageError):
    """Bytes that are not the one canonical encoding of a storage object (readcap, record...)."""

    code = "storage-format"


class IntegrityError(StorageError):
    """Data that fails a checksum, a Merkle root or a padding check: corrupt or forged."""

    code = "storage-integrity"


class DecryptError(StorageError):
    """An AEAD open that failed: wrong key, tampered ciphertext, or wrong path or version."""

    code = "storage-decrypt"


class NoReadcap(StorageError):
    """A block header that holds no readcap for the principal asking."""

    code = "storage-no-readcap"


class NotEnoughFragments(StorageError):
    """Fewer than ``k`` distinct usable fragments to decode or rebuild a block."""

    code = "storage-not-enough-fragments"


class FragmentError(StorageError):
    """Fragment parameters or buffers that cannot belong together (index, k, n, sizes)."""

    code = "storage-fragment"


class PayloadTooLarge(StorageError):
    """A payload over the largest block the formats (and the AEAD) accept."""

    code = "storage-too-large"


class InvalidPath(StorageError):
    """A blocktree path that is malformed, so no block can live under it."""

    code = "storage-path"


class BlockNotFound(StorageError):
    """No block stored under the path asked for."""

    code = "storage-not-found"


class TreeError(StorageError):
    """A local blocktree operation refused: a path outside the tree or the node's grant, an
    unknown or unannounced principal, a kind of block the operation does not apply to."""

    code = "storage-tree"


class GrantError(TreeError):
    """A writecap that cannot be used here: expired, issued to another node, for another
    network, badly signed, or past its allowance."""

    code = "storage-grant"
