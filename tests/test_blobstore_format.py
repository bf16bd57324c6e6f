"""The blobstore's on-disk structures: parse, build and size agree with the byte layout that
docs/blobstore-format.md specifies (expected bytes are spelled out with struct, independently of
the construct declarations), and decoding refuses what the specification says to refuse."""

from __future__ import annotations

import hashlib
import struct

import construct as c
import pytest

from blobstore import format as fmt
from blobstore.format import (DamagedError, Directory, Entry, IncompatibleError, SlotHeader,
                              Superblock, TruncatedError)

UUID = bytes(range(16))


def roundtrip(con: c.Construct, value: dict, expected: bytes) -> None:
    """``value`` builds to ``expected``, which parses back to the same bytes; sizeof agrees."""
    built = con.build(value)
    assert built == expected
    assert con.build(con.parse(built)) == expected
    assert con.sizeof() == len(expected)


def padded(text: str, n: int) -> bytes:
    return text.encode().ljust(n, b"\0")


SB_FIELDS = dict(version=1, incompatible_features=0, compatible_features=0x8000, uuid=UUID,
                 sector_size=4096, directory_capacity=31, directory_size=8192,
                 directory_offsets=[4096, 12288], data_offset=20480, created_ns=123456789,
                 producer="prod 1", label="tpm0", reserved=bytes(fmt.SUPERBLOCK_RESERVED),
                 checksum=b"\xaa" * 32)
SB_BYTES = (b"BLOBSTOR" + struct.pack(">IQQ", 1, 0, 0x8000) + UUID
            + struct.pack(">IIIQQQQ", 4096, 31, 8192, 4096, 12288, 20480, 123456789)
            + padded("prod 1", 32) + padded("tpm0", 64) + bytes(296) + b"\xaa" * 32)

DIR_FIELDS = dict(uuid=UUID, generation=7, entry_count=2, reserved=0, next_free=1 << 20,
                  checksum=b"\x55" * 32)
DIR_BYTES = b"BLOBDIR\0" + UUID + struct.pack(">QIIQ", 7, 2, 0, 1 << 20) + b"\x55" * 32

ENTRY_FIELDS = dict(owner="tpm", name="permanent", max_size=65536, slot_offsets=[20480, 90112],
                    created_ns=99, producer="p", flags=0, reserved=bytes(fmt.ENTRY_RESERVED))
ENTRY_BYTES = (padded("tpm", 64) + padded("permanent", 64)
               + struct.pack(">QQQQ", 65536, 20480, 90112, 99) + padded("p", 32)
               + struct.pack(">I", 0) + bytes(60))

SLOT_FIELDS = dict(flags=1, uuid=UUID, entry_index=3, slot_number=1, seq=(1 << 64) - 1,
                   length=0, mtime_ns=42, checksum=b"\x01" * 32)
SLOT_BYTES = (b"BSLT" + struct.pack(">I", 1) + UUID
              + struct.pack(">IIQQQ", 3, 1, (1 << 64) - 1, 0, 42) + b"\x01" * 32)


@pytest.mark.parametrize("con, value, expected", [
    (fmt.SUPERBLOCK, SB_FIELDS, SB_BYTES),
    (fmt.DIRECTORY_HEADER, DIR_FIELDS, DIR_BYTES),
    (fmt.ENTRY, ENTRY_FIELDS, ENTRY_BYTES),
    (fmt.SLOT_HEADER, SLOT_FIELDS, SLOT_BYTES),
    (fmt.SLOT_HEADER.compile(), SLOT_FIELDS, SLOT_BYTES),
], ids=["superblock", "directory-header", "entry", "slot-header", "slot-header-compiled"])
def test_roundtrip(con, value, expected):
    roundtrip(con, value, expected)


def test_sizes_match_the_specification():
    assert len(SB_BYTES) == fmt.SUPERBLOCK_SIZE == 512
    assert fmt.DIRECTORY_HEADER_SIZE == 80
    assert fmt.ENTRY.sizeof() == fmt.ENTRY_SIZE == 256
    assert fmt.SLOT_HEADER_SIZE == 88


SB = Superblock(uuid=UUID, sector_size=4096, directory_capacity=31, directory_size=8192,
                directory_offsets=(4096, 12288), data_offset=20480, created_ns=5,
                producer="prod", label="lbl")


def test_superblock_encode_decode():
    raw = fmt.encode_superblock(SB)
    assert len(raw) == 512
    assert raw[-32:] == hashlib.sha256(raw[:480]).digest()
    assert fmt.decode_superblock(raw) == SB


def reseal(raw: bytes, offset: int, patch: bytes) -> bytes:
    """Patch superblock bytes and recompute the checksum (a well-formed but different store)."""
    b = bytearray(raw)
    b[offset:offset + len(patch)] = patch
    return bytes(b[:480]) + hashlib.sha256(bytes(b[:480])).digest()


def test_superblock_unknown_incompatible_feature_is_refused():
    raw = reseal(fmt.encode_superblock(SB), 12, struct.pack(">Q", 1 << 5))
    with pytest.raises(IncompatibleError, match="incompatible features 0x20"):
        fmt.decode_superblock(raw)


def test_superblock_unknown_compatible_feature_is_ignored():
    raw = reseal(fmt.encode_superblock(SB), 20, struct.pack(">Q", 1 << 63))
    sb = fmt.decode_superblock(raw)
    assert sb.compatible_features == 1 << 63
    assert sb.sector_size == 4096


def test_superblock_other_version_is_refused_even_without_valid_checksum():
    raw = bytearray(fmt.encode_superblock(SB))
    raw[8:12] = struct.pack(">I", 2)
    with pytest.raises(IncompatibleError, match="version 2"):
        fmt.decode_superblock(bytes(raw))


@pytest.mark.parametrize("offset", [0, 7, 8 + 4 + 16 + 3, 200, 479, 480, 511])
def test_superblock_any_flipped_bit_is_damage(offset):
    raw = bytearray(fmt.encode_superblock(SB))
    raw[offset] ^= 0x10
    with pytest.raises((DamagedError, IncompatibleError)) as exc:
        fmt.decode_superblock(bytes(raw))
    # Only the version field may turn a flip into "incompatible".
    assert exc.type is DamagedError or 8 <= offset < 12


def test_superblock_short_is_truncated():
    with pytest.raises(TruncatedError):
        fmt.decode_superblock(fmt.encode_superblock(SB)[:300])


@pytest.mark.parametrize("patch_offset, patch, reason", [
    (44, struct.pack(">I", 3000), "power of two"),               # sector size
    (52, struct.pack(">I", 4096), "does not fit capacity"),      # directory size
    (64, struct.pack(">Q", 8192), "overlap"),                    # directory B inside A
])
def test_superblock_impossible_geometry_is_damage(patch_offset, patch, reason):
    raw = reseal(fmt.encode_superblock(SB), patch_offset, patch)
    with pytest.raises(DamagedError, match=reason):
        fmt.decode_superblock(raw)


ENTRIES = (Entry("tpm", "permanent", 1000, (20480, 24576), 7, "p"),
           Entry("tpm", "volatile", 5000, (28672, 36864), 8, "p"))
DIRECTORY = Directory(uuid=UUID, generation=3, next_free=45056, entries=ENTRIES)


def test_directory_encode_decode():
    raw = fmt.encode_directory(DIRECTORY, 31, 4096)
    assert len(raw) == 8192
    assert raw[80:80 + 512] == b"".join(fmt.encode_entry(e) for e in ENTRIES)
    assert fmt.decode_directory(raw, SB) == DIRECTORY


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b.__setitem__(slice(0, 80), bytes(80)), "blank"),
    (lambda b: b.__setitem__(0, 0x41), "bad magic"),
    (lambda b: b.__setitem__(100, b[100] ^ 1), "checksum"),
    (lambda b: b.__setitem__(35, 99), "exceeds capacity"),
])
def test_directory_damage(mutate, reason):
    raw = bytearray(fmt.encode_directory(DIRECTORY, 31, 4096))
    mutate(raw)
    with pytest.raises(DamagedError, match=reason):
        fmt.decode_directory(bytes(raw), SB)


def test_directory_of_another_store_is_refused():
    other = Directory(uuid=b"\xff" * 16, generation=3, next_free=45056, entries=ENTRIES)
    with pytest.raises(DamagedError, match="UUID"):
        fmt.decode_directory(fmt.encode_directory(other, 31, 4096), SB)


def test_directory_entry_with_overlapping_slots_is_refused():
    bad = Directory(uuid=UUID, generation=1, next_free=45056,
                    entries=(Entry("a", "b", 5000, (20480, 24576), 0, ""),))
    with pytest.raises(DamagedError, match="impossible slots"):
        fmt.decode_directory(fmt.encode_directory(bad, 31, 4096), SB)


def test_directory_overflow_is_refused_when_building():
    with pytest.raises(ValueError):
        fmt.encode_directory(DIRECTORY, 1, 4096)


HEADER = SlotHeader(uuid=UUID, entry_index=2, slot_number=1, seq=9, length=5, mtime_ns=11)


def verify(raw: bytes, **kw):
    args = dict(uuid=UUID, entry_index=2, slot_number=1, capacity=100)
    args.update(kw)
    return fmt.verify_slot(raw[:88], raw[88:], **args)


def test_slot_encode_verify():
    raw = fmt.encode_slot(HEADER, b"hello")
    assert raw[88:] == b"hello"
    assert raw[56:88] == hashlib.sha256(raw[:56] + b"hello").digest()
    assert verify(raw) == HEADER


@pytest.mark.parametrize("kw, reason", [
    (dict(uuid=b"\x00" * 16), "UUID"),
    (dict(entry_index=3), "entry 2 slot 1"),
    (dict(slot_number=0), "entry 2 slot 1"),
    (dict(capacity=4), "exceeds"),
])
def test_slot_in_the_wrong_place_is_refused(kw, reason):
    with pytest.raises(DamagedError, match=reason):
        verify(fmt.encode_slot(HEADER, b"hello"), **kw)


@pytest.mark.parametrize("offset", range(0, 93))
def test_slot_every_flipped_byte_is_detected(offset):
    raw = bytearray(fmt.encode_slot(HEADER, b"hello"))
    raw[offset] ^= 0x01
    with pytest.raises(DamagedError):
        verify(bytes(raw))


def test_slot_short_data_is_refused():
    raw = fmt.encode_slot(HEADER, b"hello")
    with pytest.raises(DamagedError, match="only 4 of 5"):
        verify(raw[:-1])


def test_slot_header_length_must_match_data():
    with pytest.raises(ValueError):
        fmt.encode_slot(HEADER, b"toolong")


def test_seq_comparison_wraps():
    top = (1 << 64) - 1
    assert fmt.seq_newer(2, 1)
    assert not fmt.seq_newer(1, 2)
    assert not fmt.seq_newer(5, 5)
    assert fmt.seq_newer(0, top)
    assert not fmt.seq_newer(top, 0)


def test_geometry_helpers():
    assert fmt.slot_size(0, 4096) == 4096
    assert fmt.slot_size(4096 - 88, 4096) == 4096
    assert fmt.slot_size(4096 - 87, 4096) == 8192
    assert fmt.slot_capacity(8192) == 8192 - 88
    assert fmt.directory_size(31, 4096) == 8192
    assert fmt.directory_size(32, 4096) == 12288
    for bad in (256, 1000, 3 << 10, 2 << 20):
        with pytest.raises(ValueError):
            fmt.check_sector_size(bad)
    fmt.check_sector_size(512)
