"""Opening and creating images: format probing and the two constructors the store uses."""

from __future__ import annotations

import os

from .base import NEW_IMAGE_MODE, Image, ImageError
from .lock import ImageLock, permissions
from .qcow2 import Qcow2Image, create_qcow2
from .raw import RawImage, fd_size, open_fd, pread_exact

#: The formats this package reads and writes.
FORMATS = ("raw", "qcow2")

#: Magic numbers at offset 0 of image formats this package does not handle. Probing refuses
#: them instead of treating them as raw (which would let a store overwrite a foreign image).
_FOREIGN_MAGICS = {
    b"KDMV": "vmdk",
    b"vhdxfile": "vhdx",
    b"conectix": "vpc (VHD)",
    b"QED\0": "qed",
    b"LUKS\xba\xbe": "luks",
}


def probe_format(path: str) -> str:
    """"qcow2" when the file starts with the qcow2 magic, else "raw".

    As in QEMU, probing trusts the first bytes of the file: an image a guest can write to
    should be opened with an explicit format, or a guest could make a raw image look like
    qcow2. Known foreign formats (vmdk, vhdx, vpc, qed, luks) are refused.
    """
    fd, _ = open_fd(str(path), readonly=True)
    try:
        head = pread_exact(fd, 0, min(16, fd_size(fd)))
    finally:
        os.close(fd)
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    for magic, name in _FOREIGN_MAGICS.items():
        if head.startswith(magic):
            raise ImageError(f"{path} is a {name} image; only raw and qcow2 are supported "
                             f"(convert it with: qemu-img convert -O qcow2 {path} NEW)")
    return "raw"


def open_image(path: str, format: str | None = None, readonly: bool = False,
               force_share: bool = False) -> Image:
    """Open an image, probing the format when ``format`` is None. Takes QEMU's image locks:
    a writable open fails with ImageLockedError while QEMU/qemu-img/another opener uses the
    image; ``readonly=True, force_share=True`` inspects an image in use (like ``qemu-img -U``;
    the contents may be changing underneath)."""
    fmt = format or probe_format(path)
    if fmt == "raw":
        return RawImage(str(path), readonly=readonly, force_share=force_share)
    if fmt == "qcow2":
        return Qcow2Image(str(path), readonly=readonly, force_share=force_share)
    raise ImageError(f"unknown image format {fmt!r}; use one of: {', '.join(FORMATS)}")


def create_image(path: str, format: str, size: int, cluster_size: int = 65536) -> None:
    """Create an image of ``size`` virtual bytes at ``path``, which must be missing or an
    empty regular file. Like qemu-img, the size is rounded up to a multiple of 512 (QEMU
    sees raw files in whole sectors). raw: a sparse file of that size. qcow2: a v3 image laid
    out like ``qemu-img create -f qcow2 -o cluster_size=...``. The new file and its
    directory entry are durable when this returns."""
    path = str(path)
    if format == "qcow2":
        create_qcow2(path, size, cluster_size)
    elif format == "raw":
        if size < 0:
            raise ImageError("the size must not be negative")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, NEW_IMAGE_MODE)
        except OSError as e:
            raise ImageError(f"cannot create {path}: {e.strerror}") from None
        try:
            ImageLock(fd, path).acquire(*permissions(True))
            if fd_size(fd):
                raise ImageError(f"{path} already exists and is not empty; refusing to "
                                 f"overwrite")
            os.ftruncate(fd, -(-size // 512) * 512)
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        raise ImageError(f"unknown image format {format!r}; use one of: {', '.join(FORMATS)}")
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
