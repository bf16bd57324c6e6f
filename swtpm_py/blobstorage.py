"""The TPM's three state blobs in a blobstore (issue 3, items 1 and 5).

The TPM registers one blob per :class:`~swtpm_py.tpm.state.BlobKind` under the owner ``tpm``,
with a maximum size derived from its configured :class:`~swtpm_py.tpm.properties.Capacity`
(the same numbers GetCapability reports), and :class:`BlobstoreStorage` adapts an open
:class:`~blobstore.store.BlobStore` to the core's StateStorage protocol. A blob update is
durable when ``store`` returns (the blobstore flushes); a failing update raises, which puts
the TPM in failure mode without touching the stored copy.
"""

from __future__ import annotations

from blobstore.store import BlobStore, Registration

from .tpm.properties import CAPACITY, Capacity
from .tpm.state import BlobKind

#: Owner name of the TPM's blobs in the store.
OWNER = "tpm"
#: Blob name of each state blob.
BLOB_NAMES = {BlobKind.PERMANENT: "permanent", BlobKind.VOLATILE: "volatile",
              BlobKind.SAVESTATE: "savestate"}

#: State blobs are canonical JSON with bytes as hex: stored bytes take at most this many times
#: their binary size once keys and punctuation are counted (checked by the tests against
#: a TPM filled to capacity).
_ENCODING_FACTOR = 3
#: Room for the fixed part of each blob (seeds, proofs, hierarchy data, counters, PCRs).
_FIXED = {BlobKind.PERMANENT: 32 * 1024, BlobKind.VOLATILE: 64 * 1024,
          BlobKind.SAVESTATE: 32 * 1024}
#: Largest saved object and session contexts (TPM_PT_MAX_OBJECT/SESSION_CONTEXT of swtpm).
_OBJECT_CONTEXT = 2692
_SESSION_CONTEXT = 404


def blob_max_sizes(capacity: Capacity = CAPACITY) -> dict[BlobKind, int]:
    """The most bytes each state blob can take for a TPM of ``capacity``."""
    perm = capacity.nv_bytes
    vol = (capacity.loaded_objects * _OBJECT_CONTEXT
           + capacity.active_sessions * _SESSION_CONTEXT)
    save = capacity.active_sessions * _SESSION_CONTEXT
    return {BlobKind.PERMANENT: _FIXED[BlobKind.PERMANENT] + _ENCODING_FACTOR * perm,
            BlobKind.VOLATILE: _FIXED[BlobKind.VOLATILE] + _ENCODING_FACTOR * vol,
            BlobKind.SAVESTATE: _FIXED[BlobKind.SAVESTATE] + _ENCODING_FACTOR * save}


def registrations(capacity: Capacity = CAPACITY) -> list[Registration]:
    """What the TPM registers with the blobstore before it opens."""
    sizes = blob_max_sizes(capacity)
    return [Registration(OWNER, BLOB_NAMES[kind], sizes[kind]) for kind in BlobKind]


class BlobstoreStorage:
    """The core's StateStorage over an open blobstore (which it owns and closes)."""

    def __init__(self, store: BlobStore) -> None:
        self.blobstore = store

    def load(self, kind: BlobKind) -> bytes | None:
        """The stored blob of ``kind`` (newest valid slot), or None."""
        return self.blobstore.read(OWNER, BLOB_NAMES[kind])

    def store(self, kind: BlobKind, data: bytes) -> None:
        """Durably replace the blob of ``kind``."""
        self.blobstore.write(OWNER, BLOB_NAMES[kind], data)

    def delete(self, kind: BlobKind) -> None:
        """Remove the blob of ``kind`` (its slots keep an 'absent' record)."""
        self.blobstore.delete(OWNER, BLOB_NAMES[kind])

    def close(self) -> None:
        """Close the store and its image (releasing the image locks)."""
        self.blobstore.close()
