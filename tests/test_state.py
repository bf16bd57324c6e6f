"""State blobs: versioned, self-describing, byte-stable, and refusing what they cannot read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.state import (BLOB_HEADER, FORMAT_VERSION, BlobKind, PersistentData,
                                SavedState, StateError, VolatileData, _checksum, decode_blob,
                                encode_blob)

from tpmcmd import pcr_extend, shutdown, startup


def running_tpm() -> tuple[Tpm, Platform]:
    platform = Platform(storage=MemoryStorage())
    tpm = Tpm(platform)
    tpm.power_on()
    tpm.execute(startup())
    tpm.execute(pcr_extend(3, 0x000B, b"\x01" * 32))
    return tpm, platform


@pytest.mark.parametrize("kind, tp", [(BlobKind.PERMANENT, PersistentData),
                                      (BlobKind.VOLATILE, VolatileData),
                                      (BlobKind.SAVESTATE, SavedState)])
def test_save_load_save_is_byte_stable(kind, tp):
    tpm, platform = running_tpm()
    tpm.execute(shutdown(clear=False))
    blobs = {BlobKind.PERMANENT: platform.storage.load(BlobKind.PERMANENT),
             BlobKind.VOLATILE: tpm.volatile_blob(),
             BlobKind.SAVESTATE: platform.storage.load(BlobKind.SAVESTATE)}
    blob = blobs[kind]
    assert encode_blob(kind, decode_blob(kind, blob, tp)) == blob


def test_blob_is_self_describing_json():
    tpm, platform = running_tpm()
    blob = platform.storage.load(BlobKind.PERMANENT)
    header = BLOB_HEADER.parse(blob)
    assert header.kind == BlobKind.PERMANENT and header.version == FORMAT_VERSION
    body = json.loads(blob[BLOB_HEADER.sizeof():])
    assert body["reset_count"] == 1 and len(bytes.fromhex(body["eps"])) == 64


def test_newer_format_version_is_refused_with_a_clear_error():
    tpm, platform = running_tpm()
    blob = bytearray(platform.storage.load(BlobKind.PERMANENT))
    blob[9:11] = (FORMAT_VERSION + 1).to_bytes(2, "big")
    with pytest.raises(StateError, match="upgrade"):
        decode_blob(BlobKind.PERMANENT, bytes(blob), PersistentData)


def test_older_blob_missing_fields_gets_defaults():
    body = json.dumps({"reset_count": 7}).encode()
    blob = BLOB_HEADER.build(dict(kind=1, version=FORMAT_VERSION, length=len(body),
                                  sha256=_checksum(1, FORMAT_VERSION, body))) + body
    perm = decode_blob(BlobKind.PERMANENT, blob, PersistentData)
    assert perm.reset_count == 7 and perm.max_tries == PersistentData().max_tries


def test_wrong_kind_is_refused():
    tpm, platform = running_tpm()
    with pytest.raises(StateError, match="expected a volatile"):
        decode_blob(BlobKind.VOLATILE, platform.storage.load(BlobKind.PERMANENT), VolatileData)


@given(st.binary(max_size=200))
def test_garbage_never_decodes(data):
    with pytest.raises(StateError):
        decode_blob(BlobKind.PERMANENT, data, PersistentData)


PERMANENT_BLOB = running_tpm()[1].storage.load(BlobKind.PERMANENT)


@pytest.mark.parametrize("pos", list(range(0, 48)) + [100, len(PERMANENT_BLOB) - 1])
def test_any_single_byte_change_is_detected(pos):
    blob = bytearray(PERMANENT_BLOB)
    blob[pos] ^= 0x01
    with pytest.raises(StateError):
        decode_blob(BlobKind.PERMANENT, bytes(blob), PersistentData)
