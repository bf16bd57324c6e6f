"""qcow2 version 3, written natively (QEMU's docs/interop/qcow2.txt, "the spec" below).

What is implemented: the v3 header with feature bits, header extensions (unknown ones are kept
byte for byte), L1/L2 mapping, refcount tables and blocks of every refcount width (1-64 bits),
cluster allocation (lowest free cluster first, so freed clusters are reused), copy-on-write of
shared clusters and L2 tables, growing the refcount table, zero clusters and compressed (zlib)
clusters (read; written clusters become ordinary ones), internal snapshots (create, list,
apply, delete) and growing the virtual size.

Refused with a clear error: version 2, encryption, backing files, external data files,
compression types other than zlib, extended L2 entries, unknown incompatible features; writing
to images with the corrupt or the dirty bit (they can still be opened read-only).

Consistency model. This driver never sets the dirty bit and never uses lazy refcounts: the
refcounts on disk are always valid in the sense that no reachable cluster is ever counted
lower than its references. The write order guarantees it across a crash:

1. A new cluster's refcount is written first, then the cluster's contents (data, a copied L2
   table, a new L1 table, a new snapshot table), then a barrier (fdatasync), and only then the
   reference to it (the L2 entry, the L1 entry, the header field).
2. A cluster that lost a reference is decremented only after the change that removed the
   reference is durable (after a barrier; ordinary copy-on-write frees wait for the next
   :meth:`flush`).
3. The COPIED flag (bit 63 of L1/L2 entries: "refcount is exactly one, write in place") is
   cleared before the snapshot that shares a cluster becomes durable, and set only after the
   refcount decrement that makes it true is durable.

So a crash at any point leaves, at worst, leaked clusters (``qemu-img check`` reports them as
leaks and ``-r leaks`` reclaims them), never a reference to a freed cluster. One window cannot
be closed without a journal: inside a snapshot create/apply/delete, a refcount and the COPIED
flag that mirrors it live in different clusters, so a crash there can leave them disagreeing
(QEMU has the same window). Refcounts are then over-counted, never under-counted, so no data is
at risk, but ``qemu-img check`` calls the flags errors. Snapshot operations therefore mark the
header with a private extension (EXT_FLAG_UPDATE, which QEMU ignores and keeps) while they run;
a writable open that finds the mark recomputes the active COPIED flags and removes it.

The refcount invariant is QEMU's: a cluster's refcount is the number of paths to it from the
active L1 table and every snapshot's L1 table (a data cluster in an L2 table shared by two L1
tables counts two).
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from . import qcow2_format as f
from .base import NEW_IMAGE_MODE, Image, ImageError, SnapshotInfo, UnsupportedError
from .lock import ImageLock, permissions
from .raw import fd_size, open_fd, pread_exact, pwrite_all

#: QEMU's limits (block/qcow2.h): 32 MiB of L1 table, 8 MiB of refcount table, 65536
#: snapshots, a 64 MiB snapshot table, 2 MiB clusters.
MAX_L1_BYTES = 32 << 20
MAX_REFTABLE_BYTES = 8 << 20
MAX_SNAPSHOTS = 65536
MAX_SNAPSHOT_TABLE_BYTES = 64 << 20
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21

#: Memory the L2 table cache may use before it is emptied.
L2_CACHE_BYTES = 32 << 20

_U64 = struct.Struct(">Q")
_T = TypeVar("_T")


class CorruptImageError(ImageError):
    """The qcow2 metadata is inconsistent; ``qemu-img check -r all`` may repair it."""


@dataclass
class _Snapshot:
    """One snapshot table entry, with its extra data kept whole (unknown fields preserved)."""

    l1_table_offset: int
    l1_size: int
    id: str
    name: str
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size32: int
    extra: bytes

    @property
    def vm_state_size(self) -> int:
        """Spec: the 64-bit size in the extra data wins over the 32-bit field when present."""
        if len(self.extra) >= 8:
            return _U64.unpack_from(self.extra, 0)[0]
        return self.vm_state_size32

    def disk_size(self, default: int) -> int:
        """The virtual size when the snapshot was taken (extra data bytes 48-55)."""
        if len(self.extra) >= 16:
            return _U64.unpack_from(self.extra, 8)[0]
        return default

    def encode(self) -> bytes:
        """The entry as the spec lays it out, padded to 8 bytes."""
        idb, nameb = self.id.encode(), self.name.encode()
        return f.SnapshotEntry.build({
            "l1_table_offset": self.l1_table_offset, "l1_size": self.l1_size,
            "id_str_size": len(idb), "name_size": len(nameb),
            "date_sec": self.date_sec, "date_nsec": self.date_nsec,
            "vm_clock_nsec": self.vm_clock_nsec, "vm_state_size": self.vm_state_size32,
            "extra_data_size": len(self.extra), "extra_data": self.extra,
            "id_str": idb, "name": nameb,
        })

    def info(self, default_size: int) -> SnapshotInfo:
        """The public view of this entry."""
        return SnapshotInfo(id=self.id, name=self.name, vm_state_size=self.vm_state_size,
                            date_sec=self.date_sec, date_nsec=self.date_nsec,
                            vm_clock_nsec=self.vm_clock_nsec,
                            disk_size=self.disk_size(default_size))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _feature_names(exts: list[tuple[int, bytes]]) -> dict[tuple[int, int], str]:
    """(type, bit) -> name from the feature name table extension, if any."""
    names: dict[tuple[int, int], str] = {}
    for etype, data in exts:
        if etype != f.EXT_FEATURE_TABLE:
            continue
        for i in range(0, len(data) - 47, 48):
            try:
                e = f.FeatureName.parse(data[i:i + 48])
            except Exception:  # a garbled name only degrades an error message
                continue
            names[(e.type, e.bit)] = e.name
    return names


class Qcow2Image(Image):
    """An open qcow2 (v3) image. See the module docstring for what is supported and for the
    on-disk consistency guarantees.

    Metadata is cached in memory (L1 table, refcount table, refcount blocks, L2 tables) and
    written through, so a write that needs no allocation is one pwrite.
    """

    format_name = "qcow2"

    def __init__(self, path: str, readonly: bool = False, force_share: bool = False) -> None:
        """Open ``path``; raises ImageError (with the reason and the fix) or ImageLockedError."""
        self.path = str(path)
        self.readonly = readonly
        self._broken: str | None = None
        self._fd, _ = open_fd(self.path, readonly)
        self._lock = ImageLock(self._fd, self.path)
        try:
            self._lock.acquire(*permissions(not readonly, force_share))
            self._load()
        except BaseException:
            self._lock.release()
            os.close(self._fd)
            self._fd = -1
            raise

    # ----------------------------------------------------------------------------- opening

    def _load(self) -> None:
        head = pread_exact(self._fd, 0, f.HEADER_V3_LENGTH)
        if head[:4] != f.MAGIC:
            raise ImageError(f"{self.path} is not a qcow2 image (no QFI\\xfb magic)")
        version = struct.unpack_from(">I", head, 4)[0]
        if version == 2:
            raise ImageError(f"{self.path} is a qcow2 version 2 (compat=0.10) image; only "
                             f"version 3 is supported. Upgrade it with: qemu-img amend -f qcow2 "
                             f"-o compat=1.1 {self.path}")
        if version != 3:
            raise ImageError(f"{self.path}: unsupported qcow2 version {version}")
        hdr = f.Header.parse(head)
        cb = hdr.cluster_bits
        if not MIN_CLUSTER_BITS <= cb <= MAX_CLUSTER_BITS:
            raise ImageError(f"{self.path}: unsupported cluster size 2^{cb} (512 B - 2 MiB)")
        self._cb = cb
        self._cs = cs = 1 << cb
        if (hdr.header_length < f.HEADER_V3_LENGTH or hdr.header_length % 8
                or hdr.header_length > cs):
            raise CorruptImageError(f"{self.path}: invalid header length {hdr.header_length}")
        cluster0 = pread_exact(self._fd, 0, cs)
        self._hdr = {k: v for k, v in hdr.items() if not k.startswith("_") and k != "magic"}
        # Spec "Additional fields": fields past byte 104 are kept as they are.
        self._hdr_extra = cluster0[f.HEADER_V3_LENGTH:hdr.header_length]
        self._exts = self._parse_extensions(cluster0, hdr.header_length)
        self._check_features()

        # Spec "Header": refcount_order may not exceed 6.
        order = hdr.refcount_order
        if order > 6:
            raise CorruptImageError(f"{self.path}: refcount_order {order} > 6")
        self._rc_bits = 1 << order
        self._rc_max = (1 << self._rc_bits) - 1
        self._rbe = cs * 8 // self._rc_bits  # refcount block entries
        self._l2e = cs // 8  # L2 table entries

        size, l1_size, l1_off = hdr.size, hdr.l1_size, hdr.l1_table_offset
        if l1_size * 8 > MAX_L1_BYTES:
            raise ImageError(f"{self.path}: L1 table of {l1_size} entries exceeds QEMU's limit")
        if l1_size < self._size_to_l1(size):
            raise CorruptImageError(f"{self.path}: L1 table ({l1_size} entries) too small for "
                                    f"the virtual size {size}")
        if l1_size and (l1_off % cs or l1_off == 0):
            raise CorruptImageError(f"{self.path}: L1 table offset {l1_off:#x} is not a "
                                    f"nonzero cluster boundary")
        self._l1 = list(struct.unpack(f">{l1_size}Q", pread_exact(self._fd, l1_off, l1_size * 8)))

        rt_off, rt_clusters = hdr.refcount_table_offset, hdr.refcount_table_clusters
        if rt_off % cs or rt_off == 0 or rt_clusters == 0:
            raise CorruptImageError(f"{self.path}: invalid refcount table location")
        if rt_clusters * cs > MAX_REFTABLE_BYTES:
            raise ImageError(f"{self.path}: refcount table exceeds QEMU's limit")
        n = rt_clusters * cs // 8
        self._rtable = list(struct.unpack(f">{n}Q", pread_exact(self._fd, rt_off, n * 8)))
        self._rblocks: dict[int, bytearray] = {}
        self._l2cache: dict[int, list[int]] = {}
        self._l2cache_max = max(16, L2_CACHE_BYTES // cs)
        self._pending_frees: list[tuple[int, int]] = []
        self._free_hint = 0
        self._alloc_end = _ceil_div(fd_size(self._fd), cs)
        self._snapshots, self._snapshots_bytes = self._read_snapshots()

        if not self.readonly and self._hdr["autoclear_features"]:
            # Spec "autoclear_features": a writer that does not maintain these features
            # (bitmaps, raw external data) must clear the bits before writing.
            self._hdr["autoclear_features"] = 0
            self._write_header()
            self._barrier()
        if not self.readonly and any(t == f.EXT_FLAG_UPDATE for t, _ in self._exts):
            # A snapshot operation was interrupted: make the active COPIED flags agree with
            # the (durable) refcounts again.
            self._fix_active_copied()
            self._end_flag_update()
            self._barrier()

    def _parse_extensions(self, cluster0: bytes, start: int) -> list[tuple[int, bytes]]:
        """Spec "Header extensions": (type, data) up to the end marker, in order."""
        exts = []
        stream = io.BytesIO(cluster0)
        stream.seek(start)
        while True:
            if len(cluster0) - stream.tell() < 8:
                raise CorruptImageError(f"{self.path}: header extensions run past the first "
                                        f"cluster without an end marker")
            try:
                ext = f.HeaderExtension.parse_stream(stream)
            except Exception:
                raise CorruptImageError(f"{self.path}: malformed header extension") from None
            if ext.type == f.EXT_END:
                self._header_bytes = stream.tell()
                return exts
            exts.append((ext.type, bytes(ext.data)))

    def _check_features(self) -> None:
        h = self._hdr
        p = self.path
        if h["crypt_method"]:
            raise ImageError(f"{p} is encrypted (crypt_method {h['crypt_method']}); encrypted "
                             f"qcow2 images are not supported")
        if h["backing_file_offset"]:
            raise ImageError(f"{p} has a backing file; qcow2 images with backing files are not "
                             f"supported (flatten it with: qemu-img convert -O qcow2 {p} NEW)")
        inc = h["incompatible_features"]
        unknown = inc & ~f.INCOMPAT_KNOWN
        if unknown:
            names = _feature_names(self._exts)
            bits = [b for b in range(64) if unknown >> b & 1]
            desc = ", ".join(names.get((0, b), f"bit {b}") for b in bits)
            raise ImageError(f"{p} uses incompatible qcow2 features this driver does not know: "
                             f"{desc}")
        if inc & f.INCOMPAT_DATA_FILE:
            raise ImageError(f"{p} keeps its data in an external data file; not supported")
        compression_type = self._hdr_extra[0] if self._hdr_extra else 0
        if inc & f.INCOMPAT_COMPRESSION or compression_type:
            raise ImageError(f"{p} uses compression type {compression_type} (zstd); only zlib "
                             f"is supported (convert with: qemu-img convert -O qcow2 "
                             f"-o compression_type=zlib {p} NEW)")
        if inc & f.INCOMPAT_EXTL2:
            raise ImageError(f"{p} uses extended L2 entries (subclusters); not supported "
                             f"(convert with: qemu-img convert -O qcow2 -o extended_l2=off "
                             f"{p} NEW)")
        if not self.readonly and inc & f.INCOMPAT_CORRUPT:
            raise ImageError(f"{p} is marked corrupt; it can only be opened read-only. Repair "
                             f"it with: qemu-img check -r all {p}")
        if not self.readonly and inc & f.INCOMPAT_DIRTY:
            raise ImageError(f"{p} has the dirty bit set (a writer with lazy refcounts did not "
                             f"close it); its refcounts may be wrong. Repair it with: "
                             f"qemu-img check -r all {p}")

    def _read_snapshots(self) -> tuple[list[_Snapshot], int]:
        nb, off = self._hdr["nb_snapshots"], self._hdr["snapshots_offset"]
        if nb == 0:
            return [], 0
        if nb > MAX_SNAPSHOTS or off % self._cs or off == 0:
            raise CorruptImageError(f"{self.path}: invalid snapshot table ({nb} at {off:#x})")
        snaps, pos = [], off
        for _ in range(nb):
            fixed = pread_exact(self._fd, pos, 40)
            id_len, name_len = struct.unpack_from(">HH", fixed, 12)
            extra_len = struct.unpack_from(">I", fixed, 36)[0]
            total = _ceil_div(40 + extra_len + id_len + name_len, 8) * 8
            if pos + total - off > MAX_SNAPSHOT_TABLE_BYTES:
                raise CorruptImageError(f"{self.path}: snapshot table too large")
            e = f.SnapshotEntry.parse(fixed + pread_exact(self._fd, pos + 40, total - 40))
            if e.l1_table_offset % self._cs or e.l1_size * 8 > MAX_L1_BYTES:
                raise CorruptImageError(f"{self.path}: snapshot {e.id_str!r} has an invalid L1 "
                                        f"table")
            snaps.append(_Snapshot(
                l1_table_offset=e.l1_table_offset, l1_size=e.l1_size,
                id=e.id_str.decode(errors="replace"), name=e.name.decode(errors="replace"),
                date_sec=e.date_sec, date_nsec=e.date_nsec, vm_clock_nsec=e.vm_clock_nsec,
                vm_state_size32=e.vm_state_size, extra=bytes(e.extra_data)))
            pos += total
        return snaps, pos - off

    # ------------------------------------------------------------------------- low level

    def _size_to_l1(self, size: int) -> int:
        return _ceil_div(size, self._cs * self._l2e)

    def _pread(self, off: int, n: int) -> bytes:
        return pread_exact(self._fd, off, n)

    def _pwrite(self, off: int, data: bytes | bytearray | memoryview) -> None:
        pwrite_all(self._fd, off, data)

    def _barrier(self) -> None:
        """Everything written so far is durable before anything written next."""
        os.fdatasync(self._fd)

    def _write_header(self) -> None:
        """Rewrite the header, its additional fields and the extensions in cluster 0 (every
        field that changes lives in the first 512-byte sector, which disks write atomically)."""
        buf = bytearray(f.Header.build(self._hdr))
        buf += self._hdr_extra
        for etype, data in self._exts:
            buf += f.HeaderExtension.build({"type": etype, "length": len(data), "data": data})
        buf += bytes(8)  # end marker
        if len(buf) > self._cs:
            raise ImageError(f"{self.path}: header and extensions do not fit in one cluster")
        # Zero what a longer previous header left behind (nothing else may live there).
        self._pwrite(0, buf.ljust(self._header_bytes, b"\0"))
        self._header_bytes = len(buf)

    def _check_open(self, write: bool) -> None:
        if self._fd < 0:
            raise ImageError(f"{self.path}: image is closed")
        if self._broken:
            raise ImageError(f"{self.path}: an earlier failure left the in-memory state "
                             f"unreliable ({self._broken}); close and reopen the image")
        if write and self.readonly:
            raise ImageError(f"{self.path}: image was opened read-only")

    def _guard(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a metadata-changing operation. Metadata is written through and the in-memory
        copy changes only with the disk, so a refusal (ImageError) leaves both consistent, at
        worst with leaked clusters. An I/O error, corruption or bug may not: it poisons the
        open image until it is reopened."""
        try:
            return fn(*args)
        except OSError as e:
            self._broken = f"I/O error: {e.strerror or e}"
            raise ImageError(f"{self.path}: I/O error: {e.strerror or e}") from e
        except CorruptImageError as e:
            self._broken = str(e)
            raise
        except ImageError:
            raise
        except Exception as e:
            self._broken = f"internal error: {e!r}"
            raise

    # -------------------------------------------------------------------------- refcounts

    def _refblock(self, rt: int) -> bytearray | None:
        """The refcount block for refcount-table index ``rt`` (None: not allocated)."""
        block = self._rblocks.get(rt)
        if block is not None:
            return block
        if rt >= len(self._rtable):
            return None
        off = self._rtable[rt] & f.REFT_OFFSET_MASK
        if off == 0:
            return None
        if self._rtable[rt] & ~f.REFT_OFFSET_MASK or off % self._cs:
            raise CorruptImageError(f"{self.path}: refcount table entry {rt} is not aligned")
        block = bytearray(self._pread(off, self._cs))
        self._rblocks[rt] = block
        return block

    def _rc_get(self, block: bytearray, i: int) -> int:
        bits = self._rc_bits
        if bits >= 8:
            w = bits >> 3
            return int.from_bytes(block[i * w:i * w + w], "big")
        # Spec "Refcount block entry": sub-byte widths count bit 0 as the least significant.
        per = 8 // bits
        return block[i // per] >> (i % per * bits) & ((1 << bits) - 1)

    def _rc_set(self, block: bytearray, i: int, value: int) -> tuple[int, int]:
        """Store a refcount; returns the byte span of the block that changed."""
        bits = self._rc_bits
        if bits >= 8:
            w = bits >> 3
            block[i * w:i * w + w] = value.to_bytes(w, "big")
            return i * w, i * w + w
        per = 8 // bits
        shift = i % per * bits
        mask = ((1 << bits) - 1) << shift
        b = i // per
        block[b] = (block[b] & ~mask) | (value << shift)
        return b, b + 1

    def refcount(self, cluster: int) -> int:
        """The refcount of host cluster number ``cluster`` (0 when no block covers it)."""
        block = self._refblock(cluster // self._rbe)
        return 0 if block is None else self._rc_get(block, cluster % self._rbe)

    def _check_deltas(self, deltas: dict[int, int]) -> None:
        """Refuse refcount changes that would go below zero (corruption) or above what
        refcount_bits can store (too many snapshots) before anything is written."""
        for c, d in deltas.items():
            new = self.refcount(c) + d
            if new < 0:
                raise CorruptImageError(f"{self.path}: refcount of cluster {c} would drop below "
                                        f"zero; run qemu-img check -r all {self.path}")
            if new > self._rc_max:
                raise ImageError(f"{self.path}: refcount of cluster {c} would exceed "
                                 f"{self._rc_max} (refcount_bits={self._rc_bits}); too many "
                                 f"snapshots share it")

    def _refcount_apply(self, deltas: dict[int, int], avoid: frozenset[int] = frozenset()) -> None:
        """Add ``deltas[cluster]`` to each cluster's refcount, writing through. Everything is
        checked before anything is written. Clusters that gain a reference and have no
        refcount block get one (allocated outside ``avoid`` and the clusters in ``deltas``)."""
        deltas = {c: d for c, d in deltas.items() if d}
        if not deltas:
            return
        self._check_deltas(deltas)
        keep_free = avoid | frozenset(deltas)
        for c in sorted(deltas):
            if deltas[c] > 0 and self._refblock(c // self._rbe) is None:
                self._create_refblock(c // self._rbe, keep_free)
        by_block: dict[int, list[int]] = {}
        for c in deltas:
            by_block.setdefault(c // self._rbe, []).append(c)
        for rt, clusters in sorted(by_block.items()):
            block = self._refblock(rt)
            assert block is not None
            lo, hi = self._cs, 0
            for c in clusters:
                new = self._rc_get(block, c % self._rbe) + deltas[c]
                a, b = self._rc_set(block, c % self._rbe, new)
                lo, hi = min(lo, a), max(hi, b)
                if new == 0:
                    self._free_hint = min(self._free_hint, c)
                    self._l2cache.pop(c * self._cs, None)
                elif c >= self._alloc_end:
                    self._alloc_end = c + 1
            self._pwrite((self._rtable[rt] & f.REFT_OFFSET_MASK) + lo, block[lo:hi])

    def _find_free(self, n: int, avoid: frozenset[int]) -> int:
        """The lowest cluster number starting ``n`` consecutive clusters with refcount 0."""
        rbe = self._rbe
        i = run_start = self._free_hint
        run = 0
        first_free = -1
        while True:
            rt = i // rbe
            end = (rt + 1) * rbe
            block = self._refblock(rt)
            while i < end:
                if block is None or self._rc_get(block, i % rbe) == 0:
                    if first_free < 0:
                        # Every cluster between the old hint and here is in use.
                        first_free = self._free_hint = i
                    if i not in avoid:
                        if run == 0:
                            run_start = i
                        run += 1
                        if run == n:
                            return run_start
                        i += 1
                        continue
                run = 0
                i += 1

    def _alloc(self, n: int = 1) -> int:
        """Allocate ``n`` contiguous clusters (refcount 1, written through); their offset."""
        start = self._find_free(n, frozenset())
        self._refcount_apply({start + i: 1 for i in range(n)})
        if self._free_hint >= start and self._free_hint < start + n:
            self._free_hint = start + n
        return start * self._cs

    def _free_deltas(self, off: int, length: int, deltas: dict[int, int]) -> None:
        """Add -1 for every cluster overlapping [off, off+length) (qcow2_free_clusters)."""
        for c in range(off // self._cs, (off + length - 1) // self._cs + 1):
            deltas[c] = deltas.get(c, 0) - 1

    def _create_refblock(self, rt: int, avoid: frozenset[int]) -> None:
        """Give refcount-table index ``rt`` a refcount block. It is placed inside the range it
        covers when possible (then it counts itself), written, made durable, and only then
        entered in the refcount table."""
        if rt >= len(self._rtable):
            self._grow_refcount_table(rt + 1, avoid)
            if self._refblock(rt) is not None:
                return
        block = bytearray(self._cs)
        first = rt * self._rbe
        b = next((c for c in range(first, first + self._rbe) if c not in avoid), None)
        if b is not None:
            self._rc_set(block, b - first, 1)
            self._alloc_end = max(self._alloc_end, b + 1)
        else:
            b = self._find_free(1, avoid)
            self._refcount_apply({b: 1}, avoid | {b})
            if self._refblock(rt) is not None:  # the recursion covered this range already
                self._refcount_apply({b: -1})
                return
        self._pwrite(b * self._cs, block)
        self._barrier()
        self._rblocks[rt] = block
        self._rtable[rt] = b * self._cs
        self._pwrite(self._hdr["refcount_table_offset"] + 8 * rt, _U64.pack(b * self._cs))

    def _end_cluster(self) -> int:
        """One past the last cluster in use or in the file."""
        return max(_ceil_div(fd_size(self._fd), self._cs), self._alloc_end)

    def _grow_refcount_table(self, min_entries: int, avoid: frozenset[int]) -> None:
        """Move the refcount table to the end of the file with room for ``min_entries``
        entries, together with the refcount blocks that count the new table and themselves.
        New blocks and table are durable before the header points at them; the old table is
        freed afterwards."""
        cs, rbe, per_cluster = self._cs, self._rbe, self._cs // 8
        old = self._rtable
        start = max(self._end_cluster(), max(avoid) + 1 if avoid else 0)
        entries = _ceil_div(max(min_entries, 2 * len(old)), per_cluster) * per_cluster
        while True:
            tc = entries // per_cluster
            blocks: dict[int, int] = {}  # table index -> cluster of its new block
            nxt = start + tc
            while True:
                need = [rt for rt in range(start // rbe, (nxt - 1) // rbe + 1)
                        if rt not in blocks and not (rt < len(old) and old[rt])]
                if not need:
                    break
                for rt in need:
                    blocks[rt] = nxt
                    nxt += 1
            if max(blocks, default=0) < entries:
                break
            entries += per_cluster
        if entries * 8 > MAX_REFTABLE_BYTES:
            raise ImageError(f"{self.path}: the refcount table would exceed QEMU's limit")
        new_table = old + [0] * (entries - len(old))
        new_blocks = {rt: bytearray(cs) for rt in blocks}
        in_old_blocks: dict[int, int] = {}
        for c in range(start, nxt):
            rt = c // rbe
            if rt in new_blocks:
                self._rc_set(new_blocks[rt], c % rbe, 1)
            else:
                in_old_blocks[c] = 1
        self._refcount_apply(in_old_blocks, avoid)
        for rt, c in blocks.items():
            new_table[rt] = c * cs
            self._pwrite(c * cs, new_blocks[rt])
        self._pwrite(start * cs, struct.pack(f">{entries}Q", *new_table))
        self._barrier()
        old_off, old_clusters = self._hdr["refcount_table_offset"], self._hdr[
            "refcount_table_clusters"]
        self._hdr["refcount_table_offset"] = start * cs
        self._hdr["refcount_table_clusters"] = tc
        self._write_header()
        self._barrier()
        self._rtable = new_table
        self._rblocks.update(new_blocks)
        self._alloc_end = max(self._alloc_end, nxt)
        deltas: dict[int, int] = {}
        self._free_deltas(old_off, old_clusters * cs, deltas)
        self._refcount_apply(deltas)

    # ----------------------------------------------------------------------- L1/L2 mapping

    def _l2_load(self, off: int) -> list[int]:
        table = self._l2cache.get(off)
        if table is None:
            if off % self._cs:
                raise CorruptImageError(f"{self.path}: L2 table offset {off:#x} not aligned")
            if len(self._l2cache) >= self._l2cache_max:
                self._l2cache.clear()
            table = list(struct.unpack(f">{self._l2e}Q", self._pread(off, self._cs)))
            self._l2cache[off] = table
        return table

    def _l2_write(self, off: int, table: list[int]) -> None:
        self._pwrite(off, struct.pack(f">{self._l2e}Q", *table))
        self._l2cache[off] = table

    def _compressed_range(self, entry: int) -> tuple[int, int]:
        """Spec "Compressed Clusters Descriptor": (host offset, byte length)."""
        x = 62 - (self._cb - 8)
        coff = entry & ((1 << x) - 1)
        nb_sectors = (entry >> x & ((1 << (self._cb - 8)) - 1)) + 1
        return coff, nb_sectors * 512 - (coff & 511)

    def _cluster_content(self, entry: int) -> bytes:
        """The full guest contents of the cluster an L2 entry describes."""
        cs = self._cs
        if entry & f.OFLAG_COMPRESSED:
            coff, clen = self._compressed_range(entry)
            d = zlib.decompressobj(-15)
            try:
                out = d.decompress(self._pread(coff, clen), cs)
            except zlib.error as e:
                raise CorruptImageError(f"{self.path}: compressed cluster at {coff:#x}: "
                                        f"{e}") from None
            if len(out) != cs:
                raise CorruptImageError(f"{self.path}: compressed cluster at {coff:#x} is "
                                        f"short")
            return out
        host = entry & f.OFFSET_MASK
        if entry & f.OFLAG_ZERO or not host:
            return bytes(cs)
        return self._pread(host, cs)

    def _entry_for(self, gc: int) -> int:
        """The L2 entry of guest cluster ``gc`` (0 when unallocated)."""
        l1i, l2i = divmod(gc, self._l2e)
        l2off = self._l1[l1i] & f.OFFSET_MASK
        return self._l2_load(l2off)[l2i] if l2off else 0

    # ------------------------------------------------------------------------ public I/O

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._hdr["size"]:
            raise ImageError(f"{self.path}: access at {offset}+{length} is outside the virtual "
                             f"disk ({self._hdr['size']} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        """Read guest bytes; unallocated and zero clusters read as zeros."""
        self._check_open(False)
        self._check_range(offset, length)
        cs = self._cs
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            gc, o = divmod(pos, cs)
            n = min(cs - o, end - pos)
            entry = self._entry_for(gc)
            host = entry & f.OFFSET_MASK
            if entry & f.OFLAG_COMPRESSED:
                out += self._cluster_content(entry)[o:o + n]
            elif entry & f.OFLAG_ZERO or not host:
                out += bytes(n)
            else:
                out += self._pread(host + o, n)
            pos += n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        """Write guest bytes. In place when the cluster is not shared (COPIED); otherwise the
        cluster (and its L2 table, if shared) is copied first. One barrier separates new
        clusters from the entries that reference them."""
        self._check_open(True)
        self._check_range(offset, len(data))
        self._guard(self._write, offset, memoryview(data).cast("B"))

    def _write(self, offset: int, data: memoryview) -> None:
        cs, l2e = self._cs, self._l2e
        new_tables: dict[int, tuple[int, list[int]]] = {}  # l1 index -> (offset, table)
        # Entries of existing L2 tables, written (on disk and in memory) after the barrier:
        # (table, L2 table offset, index, entry).
        entry_writes: list[tuple[list[int], int, int, int]] = []
        frees: list[tuple[int, int]] = []
        need_barrier = False
        pos = 0
        while pos < len(data):
            gc, o = divmod(offset + pos, cs)
            n = min(cs - o, len(data) - pos)
            chunk = data[pos:pos + n]
            l1i, l2i = divmod(gc, l2e)
            if l1i in new_tables:
                l2off, table = new_tables[l1i]
                fresh = True
            else:
                l1e = self._l1[l1i]
                l2off = l1e & f.OFFSET_MASK
                if l2off and l1e & f.OFLAG_COPIED:
                    table, fresh = self._l2_load(l2off), False
                else:
                    # Unallocated or shared L2 table: a new one (a copy), referenced from L1
                    # after the barrier; the old one loses this reference.
                    table = list(self._l2_load(l2off)) if l2off else [0] * l2e
                    if l2off:
                        frees.append((l2off, cs))
                    l2off = self._alloc()
                    new_tables[l1i] = (l2off, table)
                    fresh = True
            entry = table[l2i]
            host = entry & f.OFFSET_MASK
            if host and entry & f.OFLAG_COPIED and not entry & f.OFLAG_COMPRESSED:
                if entry & f.OFLAG_ZERO:
                    # A preallocated zero cluster we own: fill it, then drop the zero flag.
                    content = bytearray(cs)
                    content[o:o + n] = chunk
                    self._pwrite(host, content)
                    new_entry = entry & ~f.OFLAG_ZERO
                    need_barrier = True
                else:
                    self._pwrite(host + o, chunk)
                    pos += n
                    continue
            else:
                if n == cs:
                    content = chunk
                else:
                    content = bytearray(self._cluster_content(entry))
                    content[o:o + n] = chunk
                new_host = self._alloc()
                self._pwrite(new_host, content)
                new_entry = new_host | f.OFLAG_COPIED
                need_barrier = True
                if entry & f.OFLAG_COMPRESSED:
                    frees.append(self._compressed_range(entry))
                elif host:
                    frees.append((host, cs))
            if fresh:
                table[l2i] = new_entry
            else:
                entry_writes.append((table, l2off, l2i, new_entry))
            pos += n
        for l2off, table in new_tables.values():
            self._l2_write(l2off, table)
        if need_barrier or new_tables:
            self._barrier()
        for table, l2off, l2i, entry in entry_writes:
            self._pwrite(l2off + 8 * l2i, _U64.pack(entry))
            table[l2i] = entry
            cached = self._l2cache.get(l2off)
            if cached is not None:  # the cache may have reloaded the table meanwhile
                cached[l2i] = entry
        l1_base = self._hdr["l1_table_offset"]
        for l1i, (l2off, _) in sorted(new_tables.items()):
            self._l1[l1i] = l2off | f.OFLAG_COPIED
            self._pwrite(l1_base + 8 * l1i, _U64.pack(self._l1[l1i]))
        # Rule 2 of the module docstring: freed only after the next barrier (in flush()).
        self._pending_frees.extend(frees)

    def flush(self) -> None:
        """fdatasync; then release the clusters earlier copy-on-writes replaced (their
        decrements need no flush of their own: losing one only leaks a cluster)."""
        self._check_open(False)
        if self.readonly:
            return
        self._guard(self._flush)

    def _flush(self) -> bool:
        self._barrier()
        if not self._pending_frees:
            return False
        deltas: dict[int, int] = {}
        for off, length in self._pending_frees:
            self._free_deltas(off, length, deltas)
        self._pending_frees = []
        self._refcount_apply(deltas)
        return True

    def size(self) -> int:
        """The virtual size in bytes."""
        return self._hdr["size"]

    def resize(self, new_size: int) -> None:
        """Grow the virtual size (a multiple of 512, like QEMU requires); the L1 table moves
        to a larger place when needed."""
        self._check_open(True)
        if new_size % 512:
            raise ImageError(f"{self.path}: the new size must be a multiple of 512 bytes")
        if new_size < self._hdr["size"]:
            raise ImageError(f"{self.path}: shrinking from {self._hdr['size']} to {new_size} "
                             f"bytes is refused (it would destroy data)")
        self._guard(self._resize, new_size)

    def _resize(self, new_size: int) -> None:
        need = self._size_to_l1(new_size)
        if need * 8 > MAX_L1_BYTES:
            raise ImageError(f"{self.path}: {new_size} bytes needs an L1 table larger than "
                             f"QEMU's limit; use a larger cluster size")
        if need > len(self._l1):
            self._replace_l1(self._l1 + [0] * (need - len(self._l1)), new_size)
        else:
            self._hdr["size"] = new_size
            self._write_header()
            self._barrier()

    def _write_new_l1(self, entries: list[int]) -> int:
        """Allocate clusters for an L1 table, write ``entries`` there (COPIED flags as given)
        and return the offset (0 for an empty table, which owns no cluster)."""
        nclusters = _ceil_div(len(entries) * 8, self._cs)
        if not nclusters:
            return 0
        off = self._alloc(nclusters)
        buf = struct.pack(f">{len(entries)}Q", *entries)
        self._pwrite(off, buf.ljust(nclusters * self._cs, b"\0"))
        return off

    def _replace_l1(self, entries: list[int], new_size: int) -> None:
        """Write ``entries`` as the active L1 table in new clusters, switch the header to it
        (and to ``new_size``) after a barrier, then free the old table."""
        off = self._write_new_l1(entries)
        self._barrier()
        old_off, old_size = self._hdr["l1_table_offset"], self._hdr["l1_size"]
        self._hdr.update(l1_table_offset=off, l1_size=len(entries), size=new_size)
        self._write_header()
        self._barrier()
        self._l1 = list(entries)
        if old_size:
            deltas: dict[int, int] = {}
            self._free_deltas(old_off, old_size * 8, deltas)
            self._refcount_apply(deltas)

    # -------------------------------------------------------------------------- snapshots

    @property
    def supports_snapshots(self) -> bool:
        """qcow2 has internal snapshots."""
        return True

    def snapshot_list(self) -> list[SnapshotInfo]:
        """The internal snapshots in table order (creation order)."""
        self._check_open(False)
        return [s.info(self._hdr["size"]) for s in self._snapshots]

    def _find_snapshot(self, name: str) -> _Snapshot:
        # QEMU's find_snapshot_by_id_or_name: an id match first, then a name match.
        for s in self._snapshots:
            if s.id == name:
                return s
        for s in self._snapshots:
            if s.name == name:
                return s
        have = ", ".join(f"{s.id}:{s.name}" for s in self._snapshots) or "none"
        raise ImageError(f"{self.path}: no snapshot with id or name {name!r} (snapshots: "
                         f"{have})")

    def _read_l1(self, off: int, n: int) -> list[int]:
        return list(struct.unpack(f">{n}Q", self._pread(off, n * 8)))

    def _tree_deltas(self, l1: list[int], addend: int, deltas: dict[int, int]) -> None:
        """Add ``addend`` for every L2 table and every data cluster the tree under ``l1``
        references (qcow2_update_snapshot_refcount's walk)."""
        cs = self._cs
        for l1e in l1:
            l2off = l1e & f.OFFSET_MASK
            if not l2off:
                continue
            for entry in self._l2_load(l2off):
                if not entry:
                    continue
                if entry & f.OFLAG_COMPRESSED:
                    coff, clen = self._compressed_range(entry)
                    for c in range(coff // cs, (coff + clen - 1) // cs + 1):
                        deltas[c] = deltas.get(c, 0) + addend
                else:
                    host = entry & f.OFFSET_MASK
                    if host:
                        deltas[host // cs] = deltas.get(host // cs, 0) + addend
            deltas[l2off // cs] = deltas.get(l2off // cs, 0) + addend

    def _fix_copied(self, l1: list[int]) -> list[int]:
        """Make every COPIED flag in the L2 tables under ``l1`` say "refcount == 1", writing
        changed tables; returns ``l1`` with its own flags fixed the same way."""
        cs = self._cs
        out = []
        for l1e in l1:
            l2off = l1e & f.OFFSET_MASK
            if not l2off:
                out.append(l1e & ~f.OFLAG_COPIED)
                continue
            table = self._l2_load(l2off)
            changed = False
            for i, entry in enumerate(table):
                if not entry:
                    continue
                host = entry & f.OFFSET_MASK
                if host and not entry & f.OFLAG_COMPRESSED and self.refcount(host // cs) == 1:
                    want = entry | f.OFLAG_COPIED
                else:
                    want = entry & ~f.OFLAG_COPIED
                if want != entry:
                    table[i] = want
                    changed = True
            if changed:
                self._l2_write(l2off, table)
            out.append(l1e | f.OFLAG_COPIED if self.refcount(l2off // cs) == 1
                       else l1e & ~f.OFLAG_COPIED)
        return out

    def _fix_active_copied(self) -> None:
        """Recompute the active tree's COPIED flags and write the L1 entries that changed."""
        new = self._fix_copied(self._l1)
        base = self._hdr["l1_table_offset"]
        for i, (old, e) in enumerate(zip(self._l1, new)):
            if old != e:
                self._pwrite(base + 8 * i, _U64.pack(e))
        self._l1 = new

    def _begin_flag_update(self) -> None:
        """Mark the image (a private header extension, which QEMU ignores and keeps) before a
        snapshot operation: until it ends, a crash can leave COPIED flags that disagree with
        (over-counted, never under-counted) refcounts. ``qemu-img check`` reports those as
        OFLAG_COPIED errors; they are harmless to data, and our next writable open repairs
        them and drops the mark."""
        if not any(t == f.EXT_FLAG_UPDATE for t, _ in self._exts):
            self._exts.append((f.EXT_FLAG_UPDATE, f.FLAG_UPDATE_NOTE))
        self._write_header()
        self._barrier()

    def _end_flag_update(self) -> None:
        """The operation's flags and refcounts are durable: drop the mark."""
        self._barrier()
        self._exts = [(t, d) for t, d in self._exts if t != f.EXT_FLAG_UPDATE]
        self._write_header()

    def _write_snapshot_table(self, snaps: list[_Snapshot]) -> None:
        """Write a new snapshot table, point the header at it (after a barrier), free the old
        one."""
        data = b"".join(s.encode() for s in snaps)
        if len(data) > MAX_SNAPSHOT_TABLE_BYTES:
            raise ImageError(f"{self.path}: the snapshot table would exceed QEMU's limit")
        off = 0
        if snaps:
            n = _ceil_div(len(data), self._cs)
            off = self._alloc(n)
            self._pwrite(off, data.ljust(n * self._cs, b"\0"))
        self._barrier()
        old_off, old_bytes = self._hdr["snapshots_offset"], self._snapshots_bytes
        self._hdr.update(nb_snapshots=len(snaps), snapshots_offset=off)
        self._write_header()
        self._barrier()
        self._snapshots, self._snapshots_bytes = list(snaps), len(data)
        if old_bytes:
            deltas: dict[int, int] = {}
            self._free_deltas(old_off, old_bytes, deltas)
            self._refcount_apply(deltas)

    def snapshot_create(self, name: str, vm_clock_nsec: int = 0) -> SnapshotInfo:
        """Create an internal snapshot of the current disk (no VM state). Names must be
        unique here (qemu-img allows duplicates; a duplicate would make apply ambiguous)."""
        self._check_open(True)
        raw = name.encode()
        if not raw or len(raw) > 0xFFFF:
            raise ImageError("a snapshot name must be 1-65535 bytes")
        if any(s.name == name for s in self._snapshots):
            raise ImageError(f"{self.path}: a snapshot named {name!r} already exists")
        if len(self._snapshots) >= MAX_SNAPSHOTS:
            raise ImageError(f"{self.path}: too many snapshots ({MAX_SNAPSHOTS} at most)")
        return self._guard(self._snapshot_create, name, vm_clock_nsec)

    def _snapshot_create(self, name: str, vm_clock_nsec: int) -> SnapshotInfo:
        self._flush()
        # The snapshot shares every cluster of the active tree: count it, and clear the
        # active COPIED flags, before the snapshot exists on disk.
        deltas: dict[int, int] = {}
        self._tree_deltas(self._l1, 1, deltas)
        self._check_deltas(deltas)
        self._begin_flag_update()
        self._refcount_apply(deltas)
        self._fix_active_copied()
        n = len(self._l1)
        l1_off = self._write_new_l1([e & ~f.OFLAG_COPIED for e in self._l1])
        ids = [int(s.id) for s in self._snapshots if s.id.isdigit()]
        now = time.time_ns()
        snap = _Snapshot(
            l1_table_offset=l1_off, l1_size=n, id=str(max(ids, default=0) + 1), name=name,
            date_sec=now // 10**9 & 0xFFFFFFFF, date_nsec=now % 10**9,
            vm_clock_nsec=vm_clock_nsec, vm_state_size32=0,
            extra=f.SnapshotExtra.build({"vm_state_size_large": 0,
                                         "disk_size": self._hdr["size"], "icount": 0}))
        self._write_snapshot_table(self._snapshots + [snap])
        self._end_flag_update()
        return snap.info(self._hdr["size"])

    def snapshot_apply(self, name: str) -> None:
        """Revert the disk to the snapshot (by id, else by name); the virtual size becomes the
        snapshot's. The snapshot stays."""
        self._check_open(True)
        snap = self._find_snapshot(name)
        self._guard(self._snapshot_apply, snap)

    def _snapshot_apply(self, snap: _Snapshot) -> None:
        self._flush()
        sn_l1 = self._read_l1(snap.l1_table_offset, snap.l1_size)
        new_size = snap.disk_size(self._hdr["size"])
        deltas: dict[int, int] = {}
        self._tree_deltas(sn_l1, 1, deltas)
        self._check_deltas(deltas)
        self._begin_flag_update()
        self._refcount_apply(deltas)
        need = max(len(sn_l1), self._size_to_l1(new_size))
        new_l1 = self._fix_copied(sn_l1 + [0] * (need - len(sn_l1)))
        old_l1 = self._l1
        self._replace_l1(new_l1, new_size)
        deltas = {}
        self._tree_deltas(old_l1, -1, deltas)
        self._refcount_apply(deltas)
        self._barrier()
        self._fix_active_copied()
        self._end_flag_update()

    def snapshot_delete(self, name: str) -> None:
        """Delete the snapshot (by id, else by name) and free what only it referenced."""
        self._check_open(True)
        snap = self._find_snapshot(name)
        self._guard(self._snapshot_delete, snap)

    def _snapshot_delete(self, snap: _Snapshot) -> None:
        self._flush()
        sn_l1 = self._read_l1(snap.l1_table_offset, snap.l1_size)
        self._begin_flag_update()
        self._write_snapshot_table([s for s in self._snapshots if s is not snap])
        deltas: dict[int, int] = {}
        self._tree_deltas(sn_l1, -1, deltas)
        self._free_deltas(snap.l1_table_offset, snap.l1_size * 8, deltas)
        self._refcount_apply(deltas)
        self._barrier()
        self._fix_active_copied()
        self._end_flag_update()

    # ---------------------------------------------------------------------------- the rest

    def info(self) -> dict[str, object]:
        """Format details, as ``qemu-img info`` reports them."""
        self._check_open(False)
        return {
            "format": self.format_name, "virtual_size": self._hdr["size"],
            "cluster_size": self._cs, "refcount_bits": self._rc_bits,
            "compat": "1.1", "snapshots": len(self._snapshots),
            "lazy_refcounts": bool(self._hdr["compatible_features"] & f.COMPAT_LAZY_REFCOUNTS),
            "dirty": bool(self._hdr["incompatible_features"] & f.INCOMPAT_DIRTY),
            "corrupt": bool(self._hdr["incompatible_features"] & f.INCOMPAT_CORRUPT),
            "file_size": fd_size(self._fd),
        }

    def close(self) -> None:
        """Flush (releasing pending frees durably), release the locks, close (idempotent)."""
        if self._fd < 0:
            return
        try:
            if not self.readonly and not self._broken:
                if self._guard(self._flush):
                    self._barrier()
        finally:
            self._lock.release()
            os.close(self._fd)
            self._fd = -1


def create_qcow2(path: str, size: int, cluster_size: int = 65536) -> None:
    """Create a new qcow2 v3 image the way ``qemu-img create -f qcow2`` lays it out: header
    (with the feature name table for clusters of 8 KiB and more, as QEMU 7.2 writes it),
    refcount table in cluster 1, refcount block in cluster 2, L1 table from cluster 3; 16-bit
    refcounts, zlib. ``size`` is rounded up to a multiple of 512 like qemu-img does. The file
    must not exist or be empty."""
    if cluster_size & (cluster_size - 1) or not 512 <= cluster_size <= 1 << MAX_CLUSTER_BITS:
        raise ImageError(f"cluster size {cluster_size} must be a power of two in 512 B - 2 MiB")
    if size < 0:
        raise ImageError("the size must not be negative")
    size = _ceil_div(size, 512) * 512
    cs = cluster_size
    if _ceil_div(size, cs * (cs // 8)) * 8 > MAX_L1_BYTES:
        raise ImageError(f"{size} bytes need an L1 table larger than QEMU's limit with "
                         f"{cs}-byte clusters; use a larger cluster size")
    hdr = {
        "version": 3, "backing_file_offset": 0, "backing_file_size": 0,
        "cluster_bits": cs.bit_length() - 1, "size": 0, "crypt_method": 0, "l1_size": 0,
        "l1_table_offset": 0, "refcount_table_offset": cs, "refcount_table_clusters": 1,
        "nb_snapshots": 0, "snapshots_offset": 0, "incompatible_features": 0,
        "compatible_features": 0, "autoclear_features": 0, "refcount_order": 4,
        "header_length": f.HEADER_LENGTH,
    }
    head = bytearray(f.Header.build(hdr)) + bytes(f.HEADER_LENGTH - f.HEADER_V3_LENGTH)
    if cs >= 8192:
        table = f.feature_table_bytes()
        head += f.HeaderExtension.build({"type": f.EXT_FEATURE_TABLE, "length": len(table),
                                         "data": table})
    head += bytes(8)
    reftable = _U64.pack(2 * cs)
    refblock = b"\0\x01" * 3  # clusters 0-2: header, refcount table, refcount block
    skeleton = head.ljust(cs, b"\0") + reftable.ljust(cs, b"\0") + refblock.ljust(cs, b"\0")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, NEW_IMAGE_MODE)
    except OSError as e:
        raise ImageError(f"cannot create {path}: {e.strerror}") from None
    try:
        lock = ImageLock(fd, path)
        lock.acquire(*permissions(True))
        if fd_size(fd):
            raise ImageError(f"{path} already exists and is not empty; refusing to overwrite")
        pwrite_all(fd, 0, skeleton)
        os.fsync(fd)
    finally:
        os.close(fd)
    with Qcow2Image(path) as img:
        img.resize(size)


__all__ = ["Qcow2Image", "CorruptImageError", "create_qcow2", "UnsupportedError"]
