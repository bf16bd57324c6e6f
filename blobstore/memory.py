"""An in-memory :class:`~blobstore.image.base.Image` with fault injection, for tests.

It models a disk with a volatile write cache:

- ``write`` lands in the cache (reads see it at once); ``flush`` makes it durable.
- :meth:`MemoryImage.cut_power_after` arms a power cut: after that many more bytes have been
  written, the write in progress stops part-way (a *torn write*, cut at any byte) and every later
  operation raises :class:`PowerFailure`.
- :meth:`MemoryImage.crash` returns the disk as it is after power comes back: the durable bytes,
  plus whichever unflushed writes the caller chooses to have reached the medium (all of them,
  none -- *lost unflushed writes* -- or any subset of sectors, modelling reordering).
- ``fail_reads`` / ``fail_writes`` / ``fail_flushes`` make the next N calls raise ImageError
  (an I/O error the process survives).
"""

from __future__ import annotations

from typing import Callable, Iterable

from .image.base import Image, ImageError


class PowerFailure(Exception):
    """Raised by a :class:`MemoryImage` once its injected power cut has happened. Deliberately
    not an ImageError: nothing in the store may handle it, exactly like a real power loss."""


class MemoryImage(Image):
    """A disk image held in memory (see the module docstring for its fault model)."""

    format_name = "memory"

    def __init__(self, size: int = 0, data: bytes | None = None, *,
                 sector_size: int = 512, path: str = "<memory>") -> None:
        """An image of ``size`` zero bytes, or holding ``data`` (which fixes the size).
        ``sector_size`` is the granularity :meth:`crash` uses to pick unflushed sectors."""
        self.path = path
        self.sector_size = sector_size
        self._durable = bytearray(data if data is not None else bytes(size))
        self._view = bytearray(self._durable)
        #: Sector numbers written since the last flush.
        self._dirty: set[int] = set()
        self._cut_after: int | None = None
        self._powered = True
        self._closed = False
        self.fail_reads = 0
        self.fail_writes = 0
        self.fail_flushes = 0
        #: Counters tests use to prove what an operation touched.
        self.writes: list[tuple[int, int]] = []
        self.flushes = 0

    # -- fault injection ---------------------------------------------------------------------

    def cut_power_after(self, nbytes: int) -> None:
        """Cut the power once ``nbytes`` more bytes have been written: the write that crosses
        the limit keeps only its first bytes, then raises PowerFailure; when the limit falls
        exactly at the end of a write, the next operation (typically its flush) fails."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._cut_after = nbytes

    def crash(self, keep: str | Iterable[int] | Callable[[int], bool] = "none") -> "MemoryImage":
        """A new image holding what the disk would hold after a power loss now and a restart:
        the durable content plus the unflushed sectors selected by ``keep`` ("all", "none", an
        iterable of sector numbers, or a predicate on the sector number). This image is left
        as it is, so a test may take several such pictures of one run."""
        if keep == "all":
            chosen = set(self._dirty)
        elif keep == "none":
            chosen = set()
        elif callable(keep):
            chosen = {s for s in self._dirty if keep(s)}
        else:
            chosen = set(keep) & self._dirty
        disk = bytearray(self._durable)
        for s in chosen:
            a = s * self.sector_size
            disk[a:a + self.sector_size] = self._view[a:a + self.sector_size]
        return MemoryImage(data=bytes(disk), sector_size=self.sector_size, path=self.path)

    @property
    def dirty_sectors(self) -> frozenset[int]:
        """Sectors written since the last flush."""
        return frozenset(self._dirty)

    @property
    def durable(self) -> bytes:
        """What the medium holds now (without unflushed writes)."""
        return bytes(self._durable)

    def snapshot_bytes(self) -> bytes:
        """What reads see now (durable plus unflushed)."""
        return bytes(self._view)

    # -- Image -------------------------------------------------------------------------------

    def _check(self, offset: int, length: int) -> None:
        if self._cut_after == 0:
            self._powered = False
        if not self._powered:
            raise PowerFailure("the power is off")
        if self._closed:
            raise ImageError(f"{self.path}: image is closed")
        if offset < 0 or length < 0 or offset + length > len(self._view):
            raise ImageError(f"{self.path}: access at {offset}+{length} is outside the image "
                             f"({len(self._view)} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        """Read from the cache-coherent view."""
        self._check(offset, length)
        if self.fail_reads:
            self.fail_reads -= 1
            raise ImageError(f"{self.path}: injected read error at {offset}")
        return bytes(self._view[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        """Write into the volatile cache (or tear, when a power cut is armed)."""
        self._check(offset, len(data))
        if self.fail_writes:
            self.fail_writes -= 1
            raise ImageError(f"{self.path}: injected write error at {offset}")
        torn = self._cut_after is not None and len(data) > self._cut_after
        if torn:
            data = data[:self._cut_after]
        self._view[offset:offset + len(data)] = data
        if data:
            first = offset // self.sector_size
            last = (offset + len(data) - 1) // self.sector_size
            self._dirty.update(range(first, last + 1))
        self.writes.append((offset, len(data)))
        if self._cut_after is not None:
            self._cut_after -= len(data)
        if torn:
            self._powered = False
            raise PowerFailure(f"power cut during a write at {offset}")

    def flush(self) -> None:
        """Make every cached write durable."""
        self._check(0, 0)
        if self.fail_flushes:
            self.fail_flushes -= 1
            raise ImageError(f"{self.path}: injected flush error")
        for s in self._dirty:
            a = s * self.sector_size
            self._durable[a:a + self.sector_size] = self._view[a:a + self.sector_size]
        self._dirty.clear()
        self.flushes += 1

    def size(self) -> int:
        """The size in bytes."""
        return len(self._view)

    def resize(self, new_size: int) -> None:
        """Grow (durably: like ftruncate + fsync); shrinking is refused."""
        self._check(0, 0)
        if new_size < len(self._view):
            raise ImageError(f"{self.path}: shrinking is refused")
        grow = new_size - len(self._view)
        self._view.extend(bytes(grow))
        self._durable.extend(bytes(grow))

    def close(self) -> None:
        """Flush and close (a dead image just closes)."""
        if self._closed:
            return
        if self._powered:
            self.flush()
        self._closed = True
