"""Wire structures of TPM 2.0 (Part 2), declared with construct.

Each structure that a command takes or returns is declared here once. Unmarshalling rules
that Part 2 attaches to a type (size limits, allowed algorithm values) are expressed with
:class:`Checked`, which raises :class:`~swtpm_py.tpm.errors.TpmError` with the spec's code; the
dispatcher then adds the parameter or handle number.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Callable

import construct as c

from .constants import ALG, HR_HMAC_SESSION, HR_POLICY_SESSION, RC, RH
from .crypto import HASHES
from .errors import TpmError

UINT8 = c.Int8ub
UINT16 = c.Int16ub
UINT32 = c.Int32ub
UINT64 = c.Int64ub
INT32 = c.Int32sb

#: Largest TPM2B_MAX_BUFFER (MAX_DIGEST_BUFFER in libtpms' configuration).
MAX_DIGEST_BUFFER = 1024
#: Largest digest the TPM knows (SHA-512).
MAX_DIGEST_SIZE = 64
#: Number of PCRs (PC Client profile) and the matching select size.
PCR_COUNT = 24
PCR_SELECT_MIN = (PCR_COUNT + 7) // 8
PCR_SELECT_MAX = PCR_SELECT_MIN
#: Number of hash algorithms implemented (bounds TPML_PCR_SELECTION, TPML_DIGEST_VALUES).
HASH_COUNT = len(HASHES)


class Checked(c.Adapter):
    """A construct whose decoded value is passed to ``check``, which may raise TpmError."""

    def __init__(self, subcon: c.Construct, check: Callable[[Any], None]) -> None:
        super().__init__(subcon)
        self.check = check

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        self.check(obj)
        return obj

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return obj


class CompiledBuild(c.Construct):
    """``subcon`` with construct's compiled builder (3-4 times faster) and its ordinary parser.

    construct's compiled *parser* reads with ``io.read(n)`` and does not notice a short read,
    so a truncated command would not be TPM_RC_INSUFFICIENT: parsing stays interpreted. The
    TPM builds only values it made itself, where the compiled builder is exact. Used for the
    structures most responses carry (benchmarks/README.md has the measurements).
    """

    def __init__(self, subcon: c.Construct) -> None:
        super().__init__()
        self.subcon = subcon
        self.builder = subcon.compile()
        self.flagbuildnone = subcon.flagbuildnone

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return self.builder._build(obj, stream, context, path)

    def _sizeof(self, context: Any, path: str) -> int:
        return self.subcon._sizeof(context, path)


def compiled(con: c.Construct) -> c.Construct:
    """``con`` with a compiled builder (see :class:`CompiledBuild`)."""
    return CompiledBuild(con)


def tpm2b(max_size: int) -> c.Construct:
    """A TPM2B: u16 size then that many bytes. Part 2 §10.1: a size above the buffer's capacity
    is TPM_RC_SIZE."""

    def check(size: int) -> None:
        if size > max_size:
            raise TpmError(RC.SIZE, detail=f"TPM2B size {size} > {max_size}")

    return c.Prefixed(Checked(UINT16, check), c.GreedyBytes)


TPM2B_DIGEST = tpm2b(MAX_DIGEST_SIZE)
TPM2B_NONCE = TPM2B_DIGEST
TPM2B_AUTH = TPM2B_DIGEST
#: TPM2B_DATA (Part 2 §10.4.3): up to sizeof(TPMT_HA), a hash algorithm and the largest digest
#: (swtpm 0.7.1 takes 66 octets of qualifyingData and refuses 67 with TPM_RC_SIZE).
TPM2B_DATA = tpm2b(2 + MAX_DIGEST_SIZE)
TPM2B_MAX_BUFFER = tpm2b(MAX_DIGEST_BUFFER)
TPM2B_EVENT = tpm2b(1024)
TPM2B_SENSITIVE_DATA = tpm2b(128)
TPM2B_NAME = tpm2b(2 + MAX_DIGEST_SIZE)


def _check_hash(allow_null: bool) -> Callable[[int], None]:
    def check(alg: int) -> None:
        if alg in HASHES or (allow_null and alg == ALG.NULL):
            return
        raise TpmError(RC.HASH, detail=f"hash algorithm 0x{alg:04x}")
    return check


#: TPMI_ALG_HASH (no NULL) and TPMI_ALG_HASH+ (NULL allowed): unknown value is TPM_RC_HASH.
TPMI_ALG_HASH = Checked(UINT16, _check_hash(False))
TPMI_ALG_HASH_NULL = Checked(UINT16, _check_hash(True))


def _check_select_size(size: int) -> None:
    # Part 2 §10.6.2: sizeofSelect below PCR_SELECT_MIN or above PCR_SELECT_MAX is TPM_RC_VALUE.
    if not PCR_SELECT_MIN <= size <= PCR_SELECT_MAX:
        raise TpmError(RC.VALUE, detail=f"sizeofSelect {size}")


def _check_count(limit: int, rc: int = RC.SIZE) -> Callable[[int], None]:
    def check(count: int) -> None:
        if count > limit:
            raise TpmError(rc, detail=f"list count {count} > {limit}")
    return check


#: TPMS_PCR_SELECTION (Part 2 §10.6.2): the hash is a TPMI_ALG_HASH, so an algorithm the TPM
#: does not implement is TPM_RC_HASH (measured on swtpm 0.7.1); an implemented but unallocated
#: bank is not an error (PCR_Read returns an empty selection for it).
TPMS_PCR_SELECTION = c.Struct(
    "hash" / TPMI_ALG_HASH,
    "sizeofSelect" / Checked(UINT8, _check_select_size),
    "pcrSelect" / c.Bytes(c.this.sizeofSelect),
)
TPML_PCR_SELECTION = compiled(c.PrefixedArray(Checked(UINT32, _check_count(HASH_COUNT)),
                                             TPMS_PCR_SELECTION))

#: TPMT_HA (Part 2 §10.3.2): a hash algorithm and a digest of exactly its size (the hash is
#: checked first, so the switch always has an arm).
TPMT_HA = c.Struct(
    "hashAlg" / TPMI_ALG_HASH,
    "digest" / c.Switch(c.this.hashAlg, {int(alg): c.Bytes(h.size) for alg, h in HASHES.items()}),
)
TPML_DIGEST_VALUES = compiled(c.PrefixedArray(Checked(UINT32, _check_count(HASH_COUNT)),
                                              TPMT_HA))
TPML_DIGEST = compiled(c.PrefixedArray(Checked(UINT32, _check_count(8)), TPM2B_DIGEST))

#: TPMS_CLOCK_INFO and TPMS_TIME_INFO (Part 2 §10.11).
TPMS_CLOCK_INFO = c.Struct(
    "clock" / UINT64, "resetCount" / UINT32, "restartCount" / UINT32, "safe" / UINT8,
)
TPMS_TIME_INFO = compiled(c.Struct("time" / UINT64, "clockInfo" / TPMS_CLOCK_INFO))

#: TPMT_TK_HASHCHECK (Part 2 §10.7.6).
TPMT_TK_HASHCHECK = compiled(c.Struct("tag" / UINT16, "hierarchy" / UINT32,
                                      "digest" / TPM2B_DIGEST))

#: Command and response headers (Part 1 §18).
COMMAND_HEADER = c.Struct("tag" / UINT16, "commandSize" / UINT32, "commandCode" / UINT32)
RESPONSE_HEADER = c.Struct("tag" / UINT16, "responseSize" / UINT32, "responseCode" / UINT32)

#: Part 2 §7.5 / TPM_PT_ACTIVE_SESSIONS_MAX: session handles are HMAC_SESSION_FIRST + n and
#: POLICY_SESSION_FIRST + n for n below this (libtpms: MAX_ACTIVE_SESSIONS = 64).
MAX_ACTIVE_SESSIONS = 64


def _check_auth_session(handle: int) -> None:
    # Part 2 §9.8 TPMI_SH_AUTH_SESSION: TPM_RS_PW, or an HMAC or policy session handle in the
    # implemented range; anything else is TPM_RC_VALUE.
    if handle == RH.PW or any(0 <= handle - first < MAX_ACTIVE_SESSIONS
                              for first in (HR_HMAC_SESSION, HR_POLICY_SESSION)):
        return
    raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not an authorization session")


#: TPMA_SESSION bits 3 and 4 are reserved (Part 2 §8.4): setting one is TPM_RC_RESERVED_BITS.
TPMA_SESSION_RESERVED = 0x18


def _check_session_attributes(attributes: int) -> None:
    if attributes & TPMA_SESSION_RESERVED:
        raise TpmError(RC.RESERVED_BITS, detail=f"TPMA_SESSION 0x{attributes:02x}")


TPMI_SH_AUTH_SESSION = Checked(UINT32, _check_auth_session)
TPMA_SESSION = Checked(UINT8, _check_session_attributes)

#: One entry of a command's authorization area (TPMS_AUTH_COMMAND, Part 2 §10.13.2), fields
#: unmarshalled and checked in order, as the reference implementation does.
TPMS_AUTH_COMMAND = c.Struct(
    "sessionHandle" / TPMI_SH_AUTH_SESSION,
    "nonce" / TPM2B_NONCE,
    "sessionAttributes" / TPMA_SESSION,
    "hmac" / TPM2B_AUTH,
)
def _read(stream: io.BytesIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise TpmError(RC.INSUFFICIENT, detail=f"needed {n} octets, got {len(data)}")
    return data


def _read_tpm2b(stream: io.BytesIO, max_size: int) -> bytes:
    size = int.from_bytes(_read(stream, 2), "big")
    if size > max_size:
        raise TpmError(RC.SIZE, detail=f"TPM2B size {size} > {max_size}")
    return _read(stream, size)


def parse_auth_command(stream: io.BytesIO) -> tuple[int, bytes, int, bytes]:
    """One TPMS_AUTH_COMMAND from ``stream``: (sessionHandle, nonce, sessionAttributes, hmac),
    each field read and checked in order exactly as :data:`TPMS_AUTH_COMMAND` parses it (the
    tests hold the two equal), without construct's per-field overhead: every command with an
    authorization area goes through here (about a quarter of an HMAC-session command's time
    before)."""
    handle = int.from_bytes(_read(stream, 4), "big")
    _check_auth_session(handle)
    nonce = _read_tpm2b(stream, MAX_DIGEST_SIZE)
    attributes = _read(stream, 1)[0]
    _check_session_attributes(attributes)
    return handle, nonce, attributes, _read_tpm2b(stream, MAX_DIGEST_SIZE)


#: One entry of a response's authorization area (TPMS_AUTH_RESPONSE, Part 2 §10.13.3).
TPMS_AUTH_RESPONSE = compiled(c.Struct(
    "nonce" / TPM2B_NONCE, "sessionAttributes" / UINT8, "hmac" / TPM2B_AUTH,
))

# Capability data (Part 2 §10.8-10.10).
TPMS_ALG_PROPERTY = c.Struct("alg" / UINT16, "algProperties" / UINT32)
TPMS_TAGGED_PROPERTY = c.Struct("property" / UINT32, "value" / UINT32)
TPMS_TAGGED_PCR_SELECT = c.Struct(
    "tag" / UINT32, "sizeofSelect" / UINT8, "pcrSelect" / c.Bytes(c.this.sizeofSelect),
)
def _policy_digest_size(ctx: Any) -> int:
    return HASHES[ctx.hashAlg].size if ctx.hashAlg in HASHES else 0


#: TPMS_TAGGED_POLICY (Part 2 §10.8.5) whose TPMT_HA may be TPM_ALG_NULL with no digest (a
#: hierarchy without an authPolicy, as swtpm reports it).
TPMS_TAGGED_POLICY = c.Struct(
    "handle" / UINT32,
    "policyHash" / c.Struct("hashAlg" / UINT16, "digest" / c.Bytes(_policy_digest_size)),
)
#: TPMS_ACT_DATA (Part 2 §10.8.6).
TPMS_ACT_DATA = c.Struct("handle" / UINT32, "timeout" / UINT32, "attributes" / UINT32)
# The capability lists are only ever built by the TPM: compiled builders (GetCapability of
# TPM_PROPERTIES builds ~46 entries; see benchmarks/README.md).
TPML_ALG_PROPERTY = compiled(c.PrefixedArray(UINT32, TPMS_ALG_PROPERTY))
TPML_HANDLE = compiled(c.PrefixedArray(UINT32, UINT32))
TPML_CCA = compiled(c.PrefixedArray(UINT32, UINT32))
TPML_CC = compiled(c.PrefixedArray(UINT32, UINT32))
class PairList(c.Construct):
    """A TPML of (UINT32, UINT32) pairs — TPML_TAGGED_TPM_PROPERTY — parsed as its declaration
    ``PrefixedArray(UINT32, Struct(first/UINT32, second/UINT32))`` and built with one
    ``struct.pack``: GetCapability(TPM_PROPERTIES) returns up to 127 pairs, and building them
    one construct at a time was most of that command's time (the tests compare the bytes with
    swtpm's and with the declaration's)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__()
        self.names = (first, second)
        self.subcon = c.PrefixedArray(UINT32, c.Struct(first / UINT32, second / UINT32))

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        first, second = self.names
        flat = [v for item in obj for v in (item[first], item[second])]
        data = struct.pack(f">I{len(flat)}I", len(obj), *flat)
        c.stream_write(stream, data, len(data), path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        raise c.SizeofError("a TPML has no fixed size")


TPML_TAGGED_TPM_PROPERTY = PairList("property", "value")
TPML_TAGGED_PCR_PROPERTY = compiled(c.PrefixedArray(UINT32, TPMS_TAGGED_PCR_SELECT))
TPML_ECC_CURVE = compiled(c.PrefixedArray(UINT32, UINT16))
TPML_TAGGED_POLICY = c.PrefixedArray(UINT32, TPMS_TAGGED_POLICY)
TPML_ACT_DATA = c.PrefixedArray(UINT32, TPMS_ACT_DATA)
#: Part 2 §10.9.3: at most MAX_ALG_LIST_SIZE (64) entries; swtpm answers TPM_RC_SIZE for 65.
TPML_ALG = c.PrefixedArray(Checked(UINT32, _check_count(64)), UINT16)

#: Part 2 §10.10.2 TPMS_CAPABILITY_DATA: the union arm is chosen by the capability.
TPMU_CAPABILITIES = {
    0x0: TPML_ALG_PROPERTY,
    0x1: TPML_HANDLE,
    0x2: TPML_CCA,
    0x3: TPML_CC,
    0x4: TPML_CC,
    0x5: TPML_PCR_SELECTION,
    0x6: TPML_TAGGED_TPM_PROPERTY,
    0x7: TPML_TAGGED_PCR_PROPERTY,
    0x8: TPML_ECC_CURVE,
    0x9: TPML_TAGGED_POLICY,
    0xA: TPML_ACT_DATA,
}
TPMS_CAPABILITY_DATA = c.Struct(
    "capability" / UINT32,
    "data" / c.Switch(c.this.capability, TPMU_CAPABILITIES),
)


def parse_stream(con: c.Construct, stream: io.BytesIO) -> Any:
    """Parse one value from ``stream``; running out of bytes is TPM_RC_INSUFFICIENT."""
    try:
        return con.parse_stream(stream)
    except c.StreamError as exc:
        raise TpmError(RC.INSUFFICIENT, detail=str(exc)) from None
    except c.SwitchError as exc:
        raise TpmError(RC.SELECTOR, detail=str(exc)) from None


def pcr_bitmap(select: bytes) -> list[int]:
    """The PCR indexes set in a pcrSelect bitmap (bit n of octet n/8 = PCR n)."""
    return [i * 8 + b for i, octet in enumerate(select) for b in range(8) if octet >> b & 1]


def bitmap_of(pcrs: list[int], size: int = PCR_SELECT_MIN) -> bytes:
    """The pcrSelect bitmap of ``size`` octets with the given PCR indexes set."""
    out = bytearray(size)
    for pcr in pcrs:
        out[pcr // 8] |= 1 << (pcr % 8)
    return bytes(out)


# NV indices (Part 2 §13).

#: Largest data of one NV read/write/extend (MAX_NV_BUFFER_SIZE, TPM_PT_NV_BUFFER_MAX).
MAX_NV_BUFFER_SIZE = 1024
#: Largest NV index data (MAX_NV_INDEX_SIZE, TPM_PT_NV_INDEX_MAX).
MAX_NV_INDEX_SIZE = 2048
#: TPMA_NV bits 20-24 are reserved (Part 2 §13.4): setting one is TPM_RC_RESERVED_BITS.
TPMA_NV_RESERVED = 0x01F00000

TPM2B_MAX_NV_BUFFER = tpm2b(MAX_NV_BUFFER_SIZE)


def check_nv_index(handle: int) -> None:
    """Part 2 §9.24 TPMI_RH_NV_INDEX: a handle of type TPM_HT_NV_INDEX, else TPM_RC_VALUE."""
    if handle >> 24 != 0x01:
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not an NV index handle")


def _check_nv_attributes(attributes: int) -> None:
    if attributes & TPMA_NV_RESERVED:
        raise TpmError(RC.RESERVED_BITS, detail=f"TPMA_NV 0x{attributes:08x}")


def _check_nv_data_size(size: int) -> None:
    # libtpms' TPMS_NV_PUBLIC unmarshalling bounds dataSize by MAX_NV_INDEX_SIZE (TPM_RC_SIZE).
    if size > MAX_NV_INDEX_SIZE:
        raise TpmError(RC.SIZE, detail=f"dataSize {size} > {MAX_NV_INDEX_SIZE}")


#: TPMS_NV_PUBLIC (Part 2 §13.5), each field checked as it is unmarshalled.
TPMS_NV_PUBLIC = c.Struct(
    "nvIndex" / Checked(UINT32, check_nv_index),
    "nameAlg" / TPMI_ALG_HASH,
    "attributes" / Checked(UINT32, _check_nv_attributes),
    "authPolicy" / TPM2B_DIGEST,
    "dataSize" / Checked(UINT16, _check_nv_data_size),
)


class _SizedNvPublic(c.Construct):
    """TPM2B_NV_PUBLIC (Part 2 §13.6): a size that may not be zero and must equal the octets
    the TPMS_NV_PUBLIC inside takes (TPM_RC_SIZE otherwise)."""

    tpm2b = True

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        size = UINT16._parsereport(stream, context, path)
        if size == 0:
            raise TpmError(RC.SIZE, detail="empty TPM2B_NV_PUBLIC")
        start = stream.tell()
        value = TPMS_NV_PUBLIC._parsereport(stream, context, path)
        if stream.tell() - start != size:
            raise TpmError(RC.SIZE, detail="TPM2B_NV_PUBLIC size does not match its contents")
        return value

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        body = TPMS_NV_PUBLIC.build(obj)
        stream.write(len(body).to_bytes(2, "big") + body)
        return obj


TPM2B_NV_PUBLIC = _SizedNvPublic()
