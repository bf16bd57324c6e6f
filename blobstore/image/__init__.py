"""Image drivers behind one small interface (:class:`blobstore.image.base.Image`).

``open_image(path, format=None, readonly=False, force_share=False)`` opens a raw or qcow2
image (probing the format when not given) and ``create_image(path, format, size,
cluster_size=65536)`` creates one. Both take QEMU-compatible image locks.
"""

from .base import Image, ImageError, ImageLockedError, SnapshotInfo, UnsupportedError
from .open import FORMATS, create_image, open_image, probe_format

__all__ = ["FORMATS", "Image", "ImageError", "ImageLockedError", "SnapshotInfo",
           "UnsupportedError", "create_image", "open_image", "probe_format"]
