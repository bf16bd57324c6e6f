"""The one small interface every image driver implements (raw, qcow2, ...).

Offsets and sizes are in bytes of the *virtual* disk (what a guest would see). ``flush`` makes
every completed write durable (fsync of the underlying file and, for formats with metadata, of
the metadata that references the data) — the blobstore counts a blob as written only after it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


#: Mode of the image files this package creates (before the umask): owner read/write only.
#: An image holds whatever its blobs hold — for a TPM its seeds and proofs in the clear — so
#: it must not be world-readable the way ``qemu-img create``'s 0644 files are.
NEW_IMAGE_MODE = 0o600


class ImageError(Exception):
    """An image cannot be opened, read or written; the message says what and how to fix it."""


class ImageLockedError(ImageError):
    """Another process (QEMU, qemu-img, another emulator) holds a conflicting image lock."""


class UnsupportedError(ImageError):
    """The operation does not exist for this image format (e.g. snapshots of a raw file)."""


@dataclass(frozen=True)
class SnapshotInfo:
    """One internal snapshot, as ``qemu-img snapshot -l`` lists it."""

    id: str
    name: str
    vm_state_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    disk_size: int


class Image(abc.ABC):
    """An open disk image. Use as a context manager or call :meth:`close`."""

    #: The format name as qemu-img spells it ("raw", "qcow2").
    format_name: str = ""
    #: The path the image was opened from.
    path: str = ""
    #: Whether the image was opened read-only (writes raise ImageError).
    readonly: bool = False

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``; unallocated areas read as zeros. Reading past
        the virtual size raises ImageError."""

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (within the virtual size)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every completed write durable."""

    @abc.abstractmethod
    def size(self) -> int:
        """The virtual size in bytes."""

    def resize(self, new_size: int) -> None:
        """Grow the virtual size to ``new_size`` bytes (shrinking is refused)."""
        raise UnsupportedError(f"{self.format_name} images cannot be resized here")

    @property
    def supports_snapshots(self) -> bool:
        """Whether the format has internal snapshots."""
        return False

    def snapshot_create(self, name: str) -> SnapshotInfo:
        """Create an internal snapshot called ``name`` of the current state."""
        raise UnsupportedError(f"{self.format_name} images have no internal snapshots")

    def snapshot_list(self) -> list[SnapshotInfo]:
        """The internal snapshots, oldest first."""
        raise UnsupportedError(f"{self.format_name} images have no internal snapshots")

    def snapshot_apply(self, name: str) -> None:
        """Revert the image to the snapshot with this name or id."""
        raise UnsupportedError(f"{self.format_name} images have no internal snapshots")

    def snapshot_delete(self, name: str) -> None:
        """Delete the snapshot with this name or id."""
        raise UnsupportedError(f"{self.format_name} images have no internal snapshots")

    def info(self) -> dict[str, object]:
        """Facts about the image for tools: at least ``format`` and ``virtual_size``; drivers
        add their own (qcow2: cluster_size, refcount_bits, snapshots, ...)."""
        return {"format": self.format_name, "virtual_size": self.size()}

    @abc.abstractmethod
    def close(self) -> None:
        """Flush, release locks and close the file."""

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
