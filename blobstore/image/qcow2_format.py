"""On-disk structures of qcow2 version 3, declared with construct.

Source of every layout and constant: QEMU's docs/interop/qcow2.txt ("the spec" below). All
numbers are big-endian.
"""

from __future__ import annotations

import construct as c

#: Spec "Header": bytes 0-3, "QFI\xfb".
MAGIC = b"QFI\xfb"

#: Spec "Header": the v3 header is at least 104 bytes (through header_length).
HEADER_V3_LENGTH = 104
#: What QEMU writes today: the 104 bytes, compression_type (byte 104) and padding to 8.
HEADER_LENGTH = 112

# Spec "Header", incompatible_features (bytes 72-79).
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION
                  | INCOMPAT_EXTL2)
# compatible_features (bytes 80-87).
COMPAT_LAZY_REFCOUNTS = 1 << 0
# autoclear_features (bytes 88-95).
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# Spec "Header extensions": type codes.
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
#: This package's own extension ("bsop"), present while a snapshot operation runs (see
#: Qcow2Image._begin_flag_update). Spec: other types are "unknown header extension, can be
#: safely ignored"; QEMU keeps unknown extensions when it rewrites the header.
EXT_FLAG_UPDATE = 0x62736F70
FLAG_UPDATE_NOTE = b"blobstore: snapshot operation in progress; COPIED flags to be rechecked"

# Spec "Cluster mapping": L1/L2 entries.
#: Bit 63: the cluster (L2 table / data) has refcount exactly one; only accurate in the
#: active tables.
OFLAG_COPIED = 1 << 63
#: L2 bit 62: compressed cluster.
OFLAG_COMPRESSED = 1 << 62
#: Standard cluster descriptor bit 0: the cluster reads as zeros.
OFLAG_ZERO = 1 << 0
#: Bits 9-55: host offset of an L2 table or a standard data cluster.
OFFSET_MASK = 0x00FFFFFFFFFFFE00
#: L1 entry bits the spec reserves (1-8, 56-62).
L1E_RESERVED = 0x7F000000000001FE
#: Standard L2 entry bits the spec reserves (1-8, 56-61).
L2E_RESERVED = 0x3F000000000001FE
#: Refcount table entry bits 9-63: offset of a refcount block.
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00

#: Spec "Snapshots": v3 images must carry extra data through byte 55 (vm state size, disk
#: size); QEMU 7.2 also writes an icount field (bytes 56-63).
SNAPSHOT_EXTRA_MIN = 16
SNAPSHOT_EXTRA_QEMU = 24

#: Names of the features QEMU lists in its feature name table (spec "Feature name table").
FEATURE_NAMES: tuple[tuple[int, int, str], ...] = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

#: Spec "Header", bytes 0-103.
Header = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int32ub,
    "backing_file_offset" / c.Int64ub,
    "backing_file_size" / c.Int32ub,
    "cluster_bits" / c.Int32ub,
    "size" / c.Int64ub,
    "crypt_method" / c.Int32ub,
    "l1_size" / c.Int32ub,
    "l1_table_offset" / c.Int64ub,
    "refcount_table_offset" / c.Int64ub,
    "refcount_table_clusters" / c.Int32ub,
    "nb_snapshots" / c.Int32ub,
    "snapshots_offset" / c.Int64ub,
    "incompatible_features" / c.Int64ub,
    "compatible_features" / c.Int64ub,
    "autoclear_features" / c.Int64ub,
    "refcount_order" / c.Int32ub,
    "header_length" / c.Int32ub,
)

#: Spec "Header extensions": type, length, data, padding to a multiple of 8. A type of 0 ends
#: the list.
HeaderExtension = c.Struct(
    "type" / c.Int32ub,
    "length" / c.Int32ub,
    "data" / c.Bytes(c.this.length),
    c.Padding(lambda ctx: -ctx.length % 8),
)

#: Spec "Feature name table": one 48-byte entry.
FeatureName = c.Struct(
    "type" / c.Int8ub,
    "bit" / c.Int8ub,
    "name" / c.PaddedString(46, "utf8"),
)

#: Spec "Snapshots": one snapshot table entry, padded to a multiple of 8.
SnapshotEntry = c.Aligned(8, c.Struct(
    "l1_table_offset" / c.Int64ub,
    "l1_size" / c.Int32ub,
    "id_str_size" / c.Int16ub,
    "name_size" / c.Int16ub,
    "date_sec" / c.Int32ub,
    "date_nsec" / c.Int32ub,
    "vm_clock_nsec" / c.Int64ub,
    "vm_state_size" / c.Int32ub,
    "extra_data_size" / c.Int32ub,
    "extra_data" / c.Bytes(c.this.extra_data_size),
    "id_str" / c.Bytes(c.this.id_str_size),
    "name" / c.Bytes(c.this.name_size),
))

#: Spec "Snapshots", extra data bytes 40-63 of an entry (the known prefix).
SnapshotExtra = c.Struct(
    "vm_state_size_large" / c.Int64ub,
    "disk_size" / c.Int64ub,
    "icount" / c.Int64sb,
)


def feature_table_bytes() -> bytes:
    """The feature name table extension data QEMU writes into new images."""
    return b"".join(FeatureName.build({"type": t, "bit": b, "name": n})
                    for t, b, n in FEATURE_NAMES)
