"""The raw driver: a regular file or a block device whose bytes are the virtual disk."""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from .base import Image, ImageError
from .lock import ImageLock, permissions

#: ioctl(BLKGETSIZE64) from linux/fs.h: _IOR(0x12, 114, size_t) -> u64 device size in bytes.
BLKGETSIZE64 = 0x80081272


def open_fd(path: str, readonly: bool) -> tuple[int, os.stat_result]:
    """Open ``path`` for an image driver (close-on-exec), refusing what is neither a regular
    file nor a block device."""
    try:
        fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"cannot open {path}: no such file (create it first)") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not a regular file or block device") from None
    except OSError as e:
        raise ImageError(f"cannot open {path}{'' if readonly else ' for writing'}: "
                         f"{e.strerror}") from None
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        os.close(fd)
        raise ImageError(f"{path} is neither a regular file nor a block device")
    return fd, st


def fd_size(fd: int) -> int:
    """The size in bytes of a regular file or block device."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("@Q", buf)[0]
    return st.st_size


def pread_exact(fd: int, offset: int, length: int) -> bytes:
    """Read ``length`` bytes at ``offset``; bytes past the end of the file read as zeros."""
    parts = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            parts.append(bytes(length - got))
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def pwrite_all(fd: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` at ``offset`` (os.pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class RawImage(Image):
    """A raw image: regular file (resizable) or block device (fixed size).

    Opening takes QEMU's image locks (see :mod:`blobstore.image.lock`): a writable open
    excludes every other writer and every non-sharing reader; a read-only open excludes
    writers unless ``force_share`` is given (like ``qemu-img -U``).
    """

    format_name = "raw"

    def __init__(self, path: str, readonly: bool = False, force_share: bool = False) -> None:
        """Open the image at ``path``; raises ImageError / ImageLockedError."""
        self.path = str(path)
        self.readonly = readonly
        self._fd, st = open_fd(self.path, readonly)
        self._is_device = stat.S_ISBLK(st.st_mode)
        self._lock = ImageLock(self._fd, self.path)
        try:
            self._lock.acquire(*permissions(not readonly, force_share))
            self._size = fd_size(self._fd)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _check(self, offset: int, length: int, write: bool) -> None:
        if self._fd < 0:
            raise ImageError(f"{self.path}: image is closed")
        if write and self.readonly:
            raise ImageError(f"{self.path}: image was opened read-only")
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ImageError(f"{self.path}: access at {offset}+{length} is outside the image "
                             f"({self._size} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``."""
        self._check(offset, length, False)
        return pread_exact(self._fd, offset, length)

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (within the size)."""
        self._check(offset, len(data), True)
        pwrite_all(self._fd, offset, data)

    def flush(self) -> None:
        """fdatasync: the data (and a grown file size) reach stable storage."""
        if self._fd < 0:
            raise ImageError(f"{self.path}: image is closed")
        if not self.readonly:
            os.fdatasync(self._fd)

    def size(self) -> int:
        """The size in bytes."""
        return self._size

    def resize(self, new_size: int) -> None:
        """Grow a regular file to ``new_size`` bytes (the new part reads as zeros)."""
        self._check(0, 0, True)
        if self._is_device:
            raise ImageError(f"{self.path} is a block device; its size cannot be changed here")
        if new_size < self._size:
            raise ImageError(f"{self.path}: shrinking from {self._size} to {new_size} bytes is "
                             f"refused (it would destroy data)")
        os.ftruncate(self._fd, new_size)
        os.fdatasync(self._fd)
        self._size = new_size

    def info(self) -> dict[str, object]:
        """Format, virtual size and whether the image is a block device."""
        return {"format": self.format_name, "virtual_size": self._size,
                "block_device": self._is_device}

    def close(self) -> None:
        """Flush, release the locks and close the file (idempotent)."""
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            self._lock.release()
            os.close(self._fd)
            self._fd = -1
