"""QEMU-compatible image locks, so QEMU, qemu-img and this package never write one image at once.

QEMU's file-posix driver (block/file-posix.c, ``raw_apply_lock_bytes`` / ``raw_check_lock_bytes``)
marks permissions with Linux open-file-description (OFD) byte-range locks on the image file
itself. Every lock it takes is a *shared* (read) lock on one byte:

- byte ``100 + i`` while the opener holds permission ``i``;
- byte ``200 + i`` while the opener does *not share* permission ``i`` with others.

Permission bits (include/block/block-common.h, QEMU >= 6.2): 0 consistent-read, 1 write,
2 write-unchanged, 3 resize. QEMU <= 6.1 also had bit 4 "graph-mod"; a permission nobody holds
and everybody shares takes no byte, so leaving byte 104/204 alone is compatible with both.

An opener first takes its own bytes, then tests for conflicts with a *write* lock probe
(``F_OFD_GETLK``): for each permission it wants it probes ``200 + i`` (someone refuses to share
it), for each permission it refuses to share it probes ``100 + i`` (someone holds it). Taking
before testing makes two racing openers both fail rather than both succeed. OFD locks belong to
the open file description, so two opens in one process conflict like two processes do, and the
locks vanish when the descriptor is closed (also on ``kill -9``).

Measured with qemu-io 7.2 (/proc/locks): a qcow2 image open read-write locks 100, 101, 103 and
201, 203; read-only locks 100 and 201, 203; ``-U`` (force share) locks only 100; a raw image open
read-write locks 100, 101 (the raw format shares everything).
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import struct

from .base import ImageError, ImageLockedError

#: First byte of the "permission held" range (file-posix.c RAW_LOCK_PERM_BASE).
LOCK_PERM_BASE = 100
#: First byte of the "permission not shared" range (file-posix.c RAW_LOCK_SHARED_BASE).
LOCK_SHARED_BASE = 200


class Perm(enum.IntFlag):
    """QEMU's block permissions (BLK_PERM_*); the bit number is the lock byte's offset."""

    CONSISTENT_READ = 0x01
    WRITE = 0x02
    WRITE_UNCHANGED = 0x04
    RESIZE = 0x08


#: Every permission QEMU >= 6.2 knows (BLK_PERM_ALL).
PERM_ALL = Perm.CONSISTENT_READ | Perm.WRITE | Perm.WRITE_UNCHANGED | Perm.RESIZE

#: The names QEMU prints in its lock errors (block.c bdrv_perm_names).
PERM_NAMES = {
    Perm.CONSISTENT_READ: "consistent read",
    Perm.WRITE: "write",
    Perm.WRITE_UNCHANGED: "write unchanged",
    Perm.RESIZE: "resize",
}

# struct flock (fcntl(2)): short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid,
# padded to the alignment of off_t. OFD locks require l_pid == 0.
_FLOCK = struct.Struct("@hhqqi")
_FLOCK_SIZE = -(-_FLOCK.size // 8) * 8


def _flock(kind: int, start: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, start, 1, 0).ljust(_FLOCK_SIZE, b"\0")


def _perm_bits(perms: Perm) -> list[tuple[int, Perm]]:
    return [(i, p) for i, p in enumerate(Perm) if perms & p]


def permissions(writable: bool, force_share: bool = False) -> tuple[Perm, Perm]:
    """The (held, shared) permissions an opener takes, the way QEMU's qcow2 driver takes them
    on its image file (block.c bdrv_default_perms_for_storage): a writer holds consistent-read,
    write and resize and shares neither write nor resize; a reader holds consistent-read and
    shares neither either (so a reader and a writer exclude each other, like ``qemu-img info``
    without ``-U``); ``force_share`` (a reader only, like ``-U``) shares everything."""
    if writable:
        if force_share:
            raise ValueError("force_share is only allowed for read-only opens (like qemu-img -U)")
        return (Perm.CONSISTENT_READ | Perm.WRITE | Perm.RESIZE,
                Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED)
    if force_share:
        return Perm.CONSISTENT_READ, PERM_ALL
    return Perm.CONSISTENT_READ, Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED


class ImageLock:
    """The QEMU-style permission locks one open image holds on its file descriptor."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.held = Perm(0)
        self.shared = PERM_ALL
        self._locked: set[int] = set()

    def acquire(self, held: Perm, shared: Perm) -> None:
        """Take the lock bytes for ``held`` / not-``shared`` permissions, then verify nobody
        else conflicts; on a conflict release everything and raise :class:`ImageLockedError`."""
        try:
            for i, _ in _perm_bits(held):
                self._lock(LOCK_PERM_BASE + i)
            for i, _ in _perm_bits(PERM_ALL & ~shared):
                self._lock(LOCK_SHARED_BASE + i)
            # file-posix.c raw_check_lock_bytes: a permission we want must not be refused by
            # anyone (byte 200+i), a permission we refuse must not be held by anyone (100+i).
            for i, p in _perm_bits(held):
                if self._taken(LOCK_SHARED_BASE + i):
                    raise ImageLockedError(
                        f'Failed to get "{PERM_NAMES[p]}" lock on {self.path}: the image is in '
                        f"use by another process (QEMU, qemu-img, another emulator) or another "
                        f"open in this one, which does not allow it. Stop that user first, or "
                        f"open the image read-only with sharing (like qemu-img -U) to inspect "
                        f"it.")
            for i, p in _perm_bits(PERM_ALL & ~shared):
                if self._taken(LOCK_PERM_BASE + i):
                    raise ImageLockedError(
                        f'Failed to get shared "{PERM_NAMES[p]}" lock on {self.path}: the image '
                        f"is in use with \"{PERM_NAMES[p]}\" permission by another process "
                        f"(QEMU, qemu-img, another emulator) or another open in this one. Stop "
                        f"that user first, or open the image read-only with sharing (like "
                        f"qemu-img -U) to inspect it.")
        except BaseException:
            self.release()
            raise
        self.held, self.shared = held, shared

    def release(self) -> None:
        """Drop every lock byte this opener holds (closing the descriptor also drops them)."""
        for off in sorted(self._locked):
            try:
                fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, off))
            except OSError:
                pass  # the descriptor is going away; its close releases the lock anyway
        self._locked.clear()
        self.held, self.shared = Perm(0), PERM_ALL

    def _lock(self, off: int) -> None:
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK, off))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                # Someone holds a write lock on a permission byte: QEMU never does, but
                # treat it as the conflict it is.
                raise ImageLockedError(
                    f"Failed to lock byte {off} of {self.path}: another process holds an "
                    f"exclusive lock on the image") from None
            raise ImageError(f"cannot lock {self.path} (byte {off}): {e.strerror}") from None
        self._locked.add(off)

    def _taken(self, off: int) -> bool:
        """Whether another open file description holds a lock on byte ``off`` (a write-lock
        probe, as qemu_lock_fd_test does)."""
        res = fcntl.fcntl(self.fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, off))
        return _FLOCK.unpack(res[:_FLOCK.size])[0] != fcntl.F_UNLCK
