"""NV indices (Part 3 §31): every index type and attribute, against the real swtpm 0.7.1.

Differential tests send the same raw commands (tests/nvcmd.py) to swtpm_py and swtpm and compare
the response codes, and the whole response where it is deterministic (NV_ReadPublic, NV_Read:
public areas, Names and data). Lifecycle tests power-cycle both emulators through the control
channel's INIT. In-process tests cover what the reference cannot show: the orderly counter's
high-water mark over repeated power losses, storage failures, and a full NV pool.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import nvcmd as N
import sessclient as S
from emulator import Emulator
from nvcmd import AUTH_RW, INDEX, OWNER_RW, nt
from tpmcmd import FakeClock, cmd, power_on, rc, startup, with_auth

from swtpm_py.tpm import MemoryStorage, Platform, Tpm, properties
from swtpm_py.tpm.constants import ALG, CAP, CC, HT, NT, PT, RC, RH, NvAttr as A
from swtpm_py.tpm.errors import rc_name
from swtpm_py.tpm.state import BlobKind, PersistentData, decode_blob

# Format-one codes as the reference numbers them (Part 2 §6.6.3).
P1, P2, H1, H2, S1 = 0x140, 0x240, 0x100, 0x200, 0x900
PLATFORM_INDEX = 0x01400000
CTRL_INIT = 0x02


def cc_policy(code: int) -> bytes:
    """The policyDigest of TPM2_PolicyCommandCode(code) from a fresh SHA-256 session."""
    return hashlib.sha256(bytes(32) + struct.pack(">II", CC.PolicyCommandCode, code)).digest()


# ---------------------------------------------------------------------------- differential


class Both:
    """The same commands to swtpm_py and swtpm; each call asserts that both answer alike."""

    def __init__(self, ours: Emulator, ref: Emulator) -> None:
        self.emus = (ours, ref)

    def __call__(self, command: bytes, expect: int | None = None, *,
                 exact: bool = False) -> bytes:
        """Send ``command`` to both; the response codes must agree (and equal ``expect`` when
        given), the responses too when ``exact``. Returns swtpm_py's response."""
        ours, ref = (emu.command(command) for emu in self.emus)
        assert rc_name(rc(ours)) == rc_name(rc(ref)), f"{command[6:10].hex()}"
        if expect is not None:
            assert rc_name(rc(ours)) == rc_name(expect)
        if exact:
            assert ours == ref
        return ours

    def each(self) -> Iterator[S.Send]:
        """The send functions of both emulators, for per-emulator session work."""
        return (emu.command for emu in self.emus)

    def init(self) -> None:
        """_TPM_Init of both through the control channel (a power cycle, same process)."""
        for emu in self.emus:
            assert emu.ctrl(CTRL_INIT, bytes(4), reply_size=4) == bytes(4)


def _cleanup(both: Both) -> None:
    """Undefine every index and re-enable platform NV, so that the next test starts clean."""
    both(with_auth(CC.HierarchyControl, struct.pack(">I", RH.PLATFORM),
                   struct.pack(">IB", RH.PLATFORM_NV, 1)))
    for send in both.each():
        for handle in _handles(send, HT.NV_INDEX):
            if rc(send(N.undefine_space(handle))):
                send(N.undefine_space(handle, auth_handle=RH.PLATFORM))
        for handle in _handles(send, HT.HMAC_SESSION):
            send(cmd(CC.FlushContext, struct.pack(">I", handle)))


def _handles(send: S.Send, handle_type: int) -> list[int]:
    """GetCapability(HANDLES) of one handle type."""
    resp = send(cmd(CC.GetCapability, struct.pack(">III", CAP.HANDLES, handle_type << 24, 64)))
    count = struct.unpack_from(">I", resp, 15)[0]
    return list(struct.unpack_from(f">{count}I", resp, 19))


@pytest.fixture
def both(pair: dict[str, Emulator]) -> Iterator[Both]:
    """swtpm_py and swtpm (module-scoped processes), cleaned of indices after each test."""
    b = Both(pair["swtpm_py"], pair["swtpm"])
    yield b
    _cleanup(b)


@pytest.mark.parametrize("attributes, size, kw, expect", [
    (A.OWNERWRITE, 8, {}, RC.ATTRIBUTES + P2),                           # no way to read
    (A.OWNERREAD, 8, {}, RC.ATTRIBUTES + P2),                            # no way to write
    (OWNER_RW | A.WRITTEN, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.WRITELOCKED, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.READLOCKED, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | 1 << 20, 8, {}, RC.RESERVED_BITS + P2),
    (OWNER_RW | 3 << 4, 8, {}, RC.ATTRIBUTES + P2),                      # no such type
    (OWNER_RW | nt(NT.COUNTER), 4, {}, RC.SIZE + P2),
    (OWNER_RW | nt(NT.COUNTER) | A.CLEAR_STCLEAR, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | nt(NT.BITS), 7, {}, RC.SIZE + P2),
    (OWNER_RW | nt(NT.EXTEND), 20, {}, RC.SIZE + P2),                    # SHA-256 needs 32
    (OWNER_RW | nt(NT.PIN_FAIL), 8, {}, RC.ATTRIBUTES + P2),             # PIN Fail needs NO_DA
    (A.AUTHWRITE | A.OWNERREAD | nt(NT.PIN_PASS), 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.GLOBALLOCK | nt(NT.PIN_PASS), 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.WRITEDEFINE | nt(NT.PIN_FAIL) | A.NO_DA, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.CLEAR_STCLEAR | A.WRITEDEFINE, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW | A.PLATFORMCREATE, 8, {}, RC.ATTRIBUTES + H1),
    (OWNER_RW | A.POLICY_DELETE, 8, {}, RC.ATTRIBUTES + P2),
    (OWNER_RW, 8, {"auth_handle": RH.PLATFORM}, RC.ATTRIBUTES + H1),
    (OWNER_RW | A.WRITEALL, 1025, {}, RC.SIZE + P2),
    (OWNER_RW, 2049, {}, RC.SIZE + P2),
    (OWNER_RW, 8, {"policy": b"x" * 20}, RC.SIZE + P2),
    (OWNER_RW, 8, {"auth": b"x" * 33}, RC.SIZE + P1),
    (OWNER_RW, 8, {"name_alg": ALG.SHA1, "auth": b"y" * 21}, RC.SIZE + P1),
    (OWNER_RW, 8, {"name_alg": ALG.NULL}, RC.HASH + P2),
    (OWNER_RW, 8, {"auth_handle": RH.ENDORSEMENT}, RC.VALUE + H1),
    (OWNER_RW, 8, {"password": b"wrong"}, RC.BAD_AUTH + S1),
    # Accepted: the largest index, trailing zeros of the authValue, every type.
    (OWNER_RW, 2048, {}, RC.SUCCESS),
    (OWNER_RW, 8, {"auth": b"x" * 32 + b"\x00"}, RC.SUCCESS),
    (OWNER_RW | nt(NT.EXTEND), 64, {"name_alg": ALG.SHA512}, RC.SUCCESS),
    (OWNER_RW | nt(NT.BITS) | A.ORDERLY, 8, {}, RC.SUCCESS),
    (A.OWNERWRITE | A.AUTHREAD | nt(NT.PIN_PASS), 8, {}, RC.SUCCESS),
    (A.PPWRITE | A.PPREAD | A.PLATFORMCREATE, 8, {"auth_handle": RH.PLATFORM}, RC.SUCCESS),
])
def test_define_space_checks(both: Both, attributes: int, size: int, kw: dict,
                             expect: int) -> None:
    """Part 3 §31.3.1: each refused combination with the reference's code and number; the
    accepted ones are defined (NV_ReadPublic then answers the same public area)."""
    both(N.define_space(INDEX, attributes, size, **kw), expect)
    if expect == RC.SUCCESS:
        both(N.read_public(INDEX), RC.SUCCESS, exact=True)


def test_define_twice_and_handle_types(both: Both) -> None:
    """An index defined twice is TPM_RC_NV_DEFINED; publicInfo.nvIndex must be an NV handle
    (TPM_RC_VALUE + P2); an undefined index is TPM_RC_HANDLE."""
    both(N.define_space(INDEX, OWNER_RW, 8), RC.SUCCESS)
    both(N.define_space(INDEX, OWNER_RW, 8), RC.NV_DEFINED)
    both(N.define_space(0x81000000, OWNER_RW, 8), RC.VALUE + P2)
    both(N.read_public(INDEX + 1), RC.HANDLE + H1)
    both(N.read(INDEX + 1, 1), RC.HANDLE + H2)
    both(N.read(INDEX, 1, auth_handle=0x80000000), RC.VALUE + H1)   # not a TPMI_RH_NV_AUTH
    both(N.undefine_space(INDEX, auth_handle=RH.PLATFORM), RC.SUCCESS)  # platform may
    both(N.read_public(INDEX), RC.HANDLE + H1)


def test_ordinary_read_write(both: Both) -> None:
    """Offsets and sizes (TPM_RC_VALUE for an offset beyond the index, TPM_RC_NV_RANGE beyond
    its end, TPM_PT_NV_BUFFER_MAX for reads), the erased content of unwritten bytes, WRITTEN
    (and with it the Name) after the first write, even an empty one."""
    both(N.define_space(INDEX, OWNER_RW, 16), RC.SUCCESS)
    unwritten = both(N.read_public(INDEX), RC.SUCCESS, exact=True)
    both(N.read(INDEX, 8), RC.NV_UNINITIALIZED)
    both(N.write(INDEX, b"", 16), RC.SUCCESS)
    written = both(N.read_public(INDEX), RC.SUCCESS, exact=True)
    assert N.parse_read_public(written)[2] == N.parse_read_public(unwritten)[2] | A.WRITTEN
    assert N.parse_read_public(written)[5] != N.parse_read_public(unwritten)[5]
    both(N.write(INDEX, b"abcd", 4), RC.SUCCESS)
    assert N.read_data(both(N.read(INDEX, 16), RC.SUCCESS, exact=True)) == \
        b"\xff" * 4 + b"abcd" + b"\xff" * 8
    both(N.read(INDEX, 3, 5), RC.SUCCESS, exact=True)
    both(N.read(INDEX, 0, 16), RC.SUCCESS, exact=True)
    both(N.read(INDEX, 0, 17), RC.VALUE + P2)
    both(N.read(INDEX, 2, 15), RC.NV_RANGE)
    both(N.read(INDEX, 1025), RC.VALUE + P1)
    both(N.write(INDEX, b"x" * 17), RC.NV_RANGE)
    both(N.write(INDEX, b"x", 17), RC.VALUE + P2)
    both(N.write(INDEX, b"x" * 2, 15), RC.NV_RANGE)
    both(N.write(INDEX, b"x" * 1025), RC.SIZE + P1)
    both(N.write(INDEX, b"z" * 16), RC.SUCCESS)
    both(N.read(INDEX, 16), RC.SUCCESS, exact=True)


def test_large_index_and_writeall(both: Both) -> None:
    """An index larger than TPM_PT_NV_BUFFER_MAX is written and read in pieces; WRITEALL
    refuses a partial write (TPM_RC_NV_RANGE)."""
    both(N.define_space(INDEX, OWNER_RW, 2048), RC.SUCCESS)
    both(N.write(INDEX, bytes(range(256)) * 4), RC.SUCCESS)
    both(N.write(INDEX, b"\x5a" * 1024, 1024), RC.SUCCESS)
    both(N.read(INDEX, 1024, 512), RC.SUCCESS, exact=True)
    both(N.define_space(INDEX + 1, OWNER_RW | A.WRITEALL, 8), RC.SUCCESS)
    both(N.write(INDEX + 1, b"x" * 7), RC.NV_RANGE)
    both(N.write(INDEX + 1, b"x", 7), RC.NV_RANGE)
    both(N.write(INDEX + 1, b"y" * 8), RC.SUCCESS)
    both(N.read(INDEX + 1, 8), RC.SUCCESS, exact=True)


def test_each_type_has_its_command(both: Both) -> None:
    """TPM2_NV_Write refuses counter, bit-field and extend indices (TPM_RC_ATTRIBUTES, no
    number); Increment, SetBits and Extend refuse other types (TPM_RC_ATTRIBUTES + H2)."""
    kinds = {NT.ORDINARY: 8, NT.COUNTER: 8, NT.BITS: 8, NT.EXTEND: 32}
    for i, (kind, size) in enumerate(kinds.items()):
        both(N.define_space(INDEX + i, OWNER_RW | nt(kind), size), RC.SUCCESS)
    for i, kind in enumerate(kinds):
        h = INDEX + i
        both(N.write(h, b"12345678"), RC.SUCCESS if kind == NT.ORDINARY else RC.ATTRIBUTES)
        both(N.increment(h), RC.SUCCESS if kind == NT.COUNTER else RC.ATTRIBUTES + H2)
        both(N.set_bits(h, 1), RC.SUCCESS if kind == NT.BITS else RC.ATTRIBUTES + H2)
        both(N.extend(h, b"e"), RC.SUCCESS if kind == NT.EXTEND else RC.ATTRIBUTES + H2)
        both(N.read_public(h), RC.SUCCESS, exact=True)


def test_counter(both: Both) -> None:
    """A counter starts at 1 on a new TPM, counts up, and a counter defined after one was
    undefined starts above the largest value that one had (values never repeat)."""
    both(N.define_space(INDEX, OWNER_RW | nt(NT.COUNTER), 8), RC.SUCCESS)
    both(N.read(INDEX, 8), RC.NV_UNINITIALIZED)
    for _ in range(3):
        both(N.increment(INDEX), RC.SUCCESS)
    value = N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True))
    both(N.read(INDEX, 4, 4), RC.SUCCESS, exact=True)
    both(N.undefine_space(INDEX), RC.SUCCESS)
    both(N.define_space(INDEX, OWNER_RW | nt(NT.COUNTER), 8), RC.SUCCESS)
    both(N.increment(INDEX), RC.SUCCESS)
    again = N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True))
    assert int.from_bytes(again, "big") == int.from_bytes(value, "big") + 1


def test_bits_and_extend(both: Both) -> None:
    """SetBits ORs into zero; Extend hashes into zeros with the index's nameAlg (SHA-1 and
    SHA-256 here); data up to TPM_PT_NV_BUFFER_MAX."""
    both(N.define_space(INDEX, OWNER_RW | nt(NT.BITS), 8), RC.SUCCESS)
    both(N.set_bits(INDEX, 0x5), RC.SUCCESS)
    both(N.set_bits(INDEX, 0x8000000000000100), RC.SUCCESS)
    assert N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True)) == \
        struct.pack(">Q", 0x8000000000000105)
    for i, (alg, size) in enumerate(((ALG.SHA256, 32), (ALG.SHA1, 20)), start=1):
        h = INDEX + i
        both(N.define_space(h, OWNER_RW | nt(NT.EXTEND), size, name_alg=alg), RC.SUCCESS)
        both(N.extend(h, b"hello"), RC.SUCCESS)
        both(N.extend(h, b"w" * 1024), RC.SUCCESS)
        both(N.extend(h, b"w" * 1025), RC.SIZE + P1)
        data = N.read_data(both(N.read(h, size), RC.SUCCESS, exact=True))
        name = {ALG.SHA256: "sha256", ALG.SHA1: "sha1"}[alg]
        first = hashlib.new(name, bytes(size) + b"hello").digest()
        assert data == hashlib.new(name, first + b"w" * 1024).digest()
        both(N.read_public(h), RC.SUCCESS, exact=True)


@pytest.mark.parametrize("attributes, auth_handle, read_rc, write_rc", [
    (OWNER_RW, RH.OWNER, RC.SUCCESS, RC.SUCCESS),
    (OWNER_RW, RH.PLATFORM, RC.NV_AUTHORIZATION, RC.NV_AUTHORIZATION),
    (OWNER_RW | A.NO_DA, INDEX, RC.AUTH_UNAVAILABLE, RC.AUTH_UNAVAILABLE),
    (A.PPWRITE | A.PPREAD, RH.PLATFORM, RC.SUCCESS, RC.SUCCESS),
    (A.PPWRITE | A.PPREAD, RH.OWNER, RC.NV_AUTHORIZATION, RC.NV_AUTHORIZATION),
    (AUTH_RW | A.NO_DA, INDEX, RC.SUCCESS, RC.SUCCESS),
    (AUTH_RW | A.NO_DA, RH.OWNER, RC.NV_AUTHORIZATION, RC.NV_AUTHORIZATION),
    (A.AUTHWRITE | A.OWNERREAD | A.NO_DA, INDEX, RC.AUTH_UNAVAILABLE, RC.SUCCESS),
    (A.OWNERWRITE | A.AUTHREAD | A.NO_DA, INDEX, RC.SUCCESS, RC.AUTH_UNAVAILABLE),
    (A.POLICYWRITE | A.POLICYREAD | A.NO_DA, INDEX, RC.AUTH_UNAVAILABLE,
     RC.AUTH_UNAVAILABLE),
])
def test_who_may_read_and_write(both: Both, attributes: int, auth_handle: int, read_rc: int,
                                write_rc: int) -> None:
    """PPWRITE/OWNERWRITE/AUTHWRITE and PPREAD/OWNERREAD/AUTHREAD: the authorization handle
    may be the platform, the owner or the index (with its authValue), as its attributes allow;
    otherwise TPM_RC_NV_AUTHORIZATION, or TPM_RC_AUTH_UNAVAILABLE when the index's authValue
    may not be used (POLICY* needs a policy session)."""
    auth = RH.PLATFORM if attributes & A.PPWRITE and auth_handle == RH.PLATFORM else RH.OWNER
    platform = bool(attributes & (A.PPWRITE | A.PPREAD)) and not attributes & A.OWNERWRITE
    both(N.define_space(INDEX, attributes | (A.PLATFORMCREATE if platform else 0), 8,
                        auth=b"pw", auth_handle=RH.PLATFORM if platform else auth), RC.SUCCESS)
    password = b"pw" if auth_handle == INDEX else b""
    both(N.write(INDEX, b"12345678", auth_handle=auth_handle, password=password), write_rc)
    if write_rc != RC.SUCCESS and attributes & A.OWNERWRITE:
        both(N.write(INDEX, b"12345678"), RC.SUCCESS)  # written, so that reads can succeed
    both(N.read(INDEX, 8, auth_handle=auth_handle, password=password), read_rc)


def test_wrong_index_password(both: Both) -> None:
    """A wrong authValue of an index is TPM_RC_BAD_AUTH with NO_DA and TPM_RC_AUTH_FAIL (a
    dictionary-attack failure) without."""
    both(N.define_space(INDEX, AUTH_RW | A.NO_DA, 8, auth=b"pw"), RC.SUCCESS)
    both(N.write(INDEX, b"x", auth_handle=INDEX, password=b"no"), RC.BAD_AUTH + S1)
    both(N.define_space(INDEX + 1, AUTH_RW, 8, auth=b"pw"), RC.SUCCESS)
    wrong = N.write(INDEX + 1, b"x", auth_handle=INDEX + 1, password=b"no")
    if rc(both(wrong)) == RC.RETRY:
        # The first DA-protected authorization after an unorderly startup must first record
        # that DA-protected authorizations were used (both answer TPM_RC_RETRY, see
        # swtpm_py.tpm.da); the retry is the real answer.
        both(wrong, RC.AUTH_FAIL + S1)
    else:
        assert rc(both(wrong)) == RC.AUTH_FAIL + S1


def test_write_lock(both: Both) -> None:
    """WriteLock needs WRITEDEFINE or WRITE_STCLEAR (TPM_RC_ATTRIBUTES + H2) and write
    authorization; a locked index is TPM_RC_NV_LOCKED for writes (after authorization),
    locking it again succeeds, and WRITELOCKED shows in its public area and Name."""
    both(N.define_space(INDEX, OWNER_RW, 8), RC.SUCCESS)
    both(N.write_lock(INDEX), RC.ATTRIBUTES + H2)
    both(N.define_space(INDEX + 1, OWNER_RW | A.WRITEDEFINE, 8), RC.SUCCESS)
    both(N.write_lock(INDEX + 1, auth_handle=RH.PLATFORM), RC.NV_AUTHORIZATION)
    both(N.write_lock(INDEX + 1), RC.SUCCESS)
    public = both(N.read_public(INDEX + 1), RC.SUCCESS, exact=True)
    assert N.parse_read_public(public)[2] & A.WRITELOCKED
    both(N.write(INDEX + 1, b"x"), RC.NV_LOCKED)
    both(N.write(INDEX + 1, b"x", password=b"bad"), RC.BAD_AUTH + S1)
    both(N.write_lock(INDEX + 1), RC.SUCCESS)
    both(N.write_lock(INDEX + 1, auth_handle=RH.PLATFORM), RC.SUCCESS)  # locked: no check


def test_read_lock(both: Both) -> None:
    """ReadLock needs READ_STCLEAR (TPM_RC_ATTRIBUTES + H2); an unwritten index may be
    locked; a locked index is TPM_RC_NV_LOCKED for reads but can still be written."""
    both(N.define_space(INDEX, OWNER_RW, 8), RC.SUCCESS)
    both(N.read_lock(INDEX), RC.ATTRIBUTES + H2)
    both(N.define_space(INDEX + 1, OWNER_RW | A.READ_STCLEAR, 8), RC.SUCCESS)
    both(N.read_lock(INDEX + 1, auth_handle=RH.PLATFORM), RC.NV_AUTHORIZATION)
    both(N.read_lock(INDEX + 1), RC.SUCCESS)
    both(N.read_public(INDEX + 1), RC.SUCCESS, exact=True)
    both(N.read(INDEX + 1, 8), RC.NV_LOCKED)
    both(N.write(INDEX + 1, b"x"), RC.SUCCESS)
    both(N.read_lock(INDEX + 1), RC.SUCCESS)
    both(N.read_lock(INDEX + 1, auth_handle=RH.PLATFORM), RC.SUCCESS)


def test_global_write_lock(both: Both) -> None:
    """GlobalWriteLock (owner or platform authorization) locks every GLOBALLOCK index and no
    other."""
    both(N.define_space(INDEX, OWNER_RW | A.GLOBALLOCK, 8), RC.SUCCESS)
    both(N.define_space(INDEX + 1, OWNER_RW, 8), RC.SUCCESS)
    both(N.global_write_lock(auth_handle=RH.ENDORSEMENT), RC.VALUE + H1)
    both(N.global_write_lock(), RC.SUCCESS)
    both(N.read_public(INDEX), RC.SUCCESS, exact=True)
    both(N.write(INDEX, b"x"), RC.NV_LOCKED)
    both(N.write(INDEX + 1, b"x"), RC.SUCCESS)
    both(N.global_write_lock(auth_handle=RH.PLATFORM), RC.SUCCESS)


def test_pin_pass(both: Both) -> None:
    """A PIN Pass index's authValue is unavailable until it is written and once pinCount has
    reached pinLimit; each successful use counts (visible in the data it reads)."""
    both(N.define_space(INDEX, A.OWNERWRITE | A.AUTHREAD | A.OWNERREAD | nt(NT.PIN_PASS), 8,
                        auth=b"pin"), RC.SUCCESS)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.AUTH_UNAVAILABLE)
    both(N.write(INDEX, struct.pack(">II", 0, 2)), RC.SUCCESS)
    for _ in range(2):
        both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.SUCCESS, exact=True)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.AUTH_UNAVAILABLE)
    assert N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True)) == struct.pack(">II", 2, 2)
    both(N.write(INDEX, struct.pack(">II", 1, 2)), RC.SUCCESS)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.SUCCESS, exact=True)
    both(N.read_public(INDEX), RC.SUCCESS, exact=True)


def test_pin_fail(both: Both) -> None:
    """A PIN Fail index (NO_DA): its authValue is usable while pinCount < pinLimit, a
    successful use sets pinCount back to 0, a wrong one is TPM_RC_BAD_AUTH."""
    both(N.define_space(INDEX, A.OWNERWRITE | A.OWNERREAD | A.AUTHREAD | A.NO_DA
                        | nt(NT.PIN_FAIL), 8, auth=b"pin"), RC.SUCCESS)
    both(N.write(INDEX, struct.pack(">II", 1, 2)), RC.SUCCESS)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.SUCCESS, exact=True)
    assert N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True)) == struct.pack(">II", 0, 2)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"bad"), RC.BAD_AUTH + S1)
    both(N.write(INDEX, struct.pack(">II", 2, 2)), RC.SUCCESS)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.AUTH_UNAVAILABLE)


def test_platform_indices_and_ph_enable_nv(both: Both) -> None:
    """Platform indices (PLATFORMCREATE): the owner cannot undefine them
    (TPM_RC_NV_AUTHORIZATION); while phEnableNV is CLEAR they do not exist (TPM_RC_HANDLE)
    and none can be defined (TPM_RC_HIERARCHY + H1); owner indices stay."""
    both(N.define_space(PLATFORM_INDEX, A.PPWRITE | A.PPREAD | A.PLATFORMCREATE, 8,
                        auth_handle=RH.PLATFORM), RC.SUCCESS)
    both(N.define_space(INDEX, OWNER_RW, 8), RC.SUCCESS)
    both(N.undefine_space(PLATFORM_INDEX), RC.NV_AUTHORIZATION)
    both(with_auth(CC.HierarchyControl, struct.pack(">I", RH.PLATFORM),
                   struct.pack(">IB", RH.PLATFORM_NV, 0)), RC.SUCCESS)
    both(N.read_public(PLATFORM_INDEX), RC.HANDLE + H1)
    both(N.undefine_space(PLATFORM_INDEX, auth_handle=RH.PLATFORM), RC.HANDLE + H2)
    both(N.define_space(PLATFORM_INDEX + 1, A.PPWRITE | A.PPREAD | A.PLATFORMCREATE, 8,
                        auth_handle=RH.PLATFORM), RC.HIERARCHY + H1)
    both(N.read_public(INDEX), RC.SUCCESS, exact=True)
    both(cmd(CC.GetCapability, struct.pack(">III", CAP.HANDLES, HT.NV_INDEX << 24, 8)),
         RC.SUCCESS, exact=True)
    both(with_auth(CC.HierarchyControl, struct.pack(">I", RH.PLATFORM),
                   struct.pack(">IB", RH.PLATFORM_NV, 1)), RC.SUCCESS)
    both(cmd(CC.GetCapability, struct.pack(">III", CAP.HANDLES, HT.NV_INDEX << 24, 8)),
         RC.SUCCESS, exact=True)


# ---------------------------------------------------------------------------- policy sessions


def _policy_session(send: S.Send, code: int) -> S.Session:
    """A policy session that has run TPM2_PolicyCommandCode(code)."""
    session = S.start_session(send, session_type=1)
    assert rc(send(cmd(CC.PolicyCommandCode, struct.pack(">II", session.handle, code)))) == 0
    return session


def _name(send: S.Send, handle: int) -> bytes:
    return N.parse_read_public(send(N.read_public(handle)))[5]


def _policy_use(session: S.Session, attributes: int = S.CONTINUE) -> S.Use:
    """The policy session in a command: no authValue, an empty HMAC (empty session key)."""
    return S.Use(session, attributes=attributes, auth=b"", hmac_override=b"")


def test_change_auth(both: Both) -> None:
    """NV_ChangeAuth needs a policy session (ADMIN role: a password is TPM_RC_AUTH_TYPE)
    whatever POLICYREAD/POLICYWRITE say; the policy must match (TPM_RC_POLICY_FAIL); the new
    authValue works, the old one no longer does, and the Name does not change."""
    both(N.define_space(INDEX, OWNER_RW | A.AUTHREAD | A.NO_DA, 8,
                        policy=cc_policy(CC.NV_ChangeAuth)), RC.SUCCESS)
    both(N.write(INDEX, b"12345678"), RC.SUCCESS)
    both(N.change_auth(INDEX, b"new"), RC.AUTH_TYPE)
    results = []
    for send in both.each():
        name = _name(send, INDEX)
        wrong = _policy_session(send, CC.NV_Write)
        bad = S.call(send, CC.NV_ChangeAuth, [(INDEX, name)], S.b2(b"new"),
                     [_policy_use(wrong, 0)]).rc
        session = _policy_session(send, CC.NV_ChangeAuth)
        long = S.call(send, CC.NV_ChangeAuth, [(INDEX, name)], S.b2(b"x" * 33),
                      [_policy_use(session)]).rc
        ok = S.call(send, CC.NV_ChangeAuth, [(INDEX, name)], S.b2(b"new\x00\x00"),
                    [_policy_use(session, 0)]).rc
        results.append((bad, long, ok, _name(send, INDEX) == name,
                        rc(send(N.read(INDEX, 8, auth_handle=INDEX, password=b"new"))),
                        rc(send(N.read(INDEX, 8, auth_handle=INDEX, password=b"")))))
    assert results[0] == results[1] == [(RC.POLICY_FAIL + S1, RC.SIZE + P1, 0, True, 0,
                                         RC.BAD_AUTH + S1)][0]


@pytest.mark.parametrize("attributes, code, expect", [
    (A.POLICYWRITE | A.OWNERREAD, CC.NV_Write, RC.SUCCESS),
    (A.POLICYREAD | A.OWNERWRITE, CC.NV_Write, RC.AUTH_UNAVAILABLE),
    (A.POLICYREAD | A.OWNERWRITE, CC.NV_Read, RC.SUCCESS),
    (A.POLICYWRITE | A.OWNERREAD, CC.NV_Read, RC.AUTH_UNAVAILABLE),
])
def test_policy_read_write(both: Both, attributes: int, code: int, expect: int) -> None:
    """POLICYWRITE / POLICYREAD: the index's authPolicy authorizes writes / reads only when
    the attribute is SET (TPM_RC_AUTH_UNAVAILABLE otherwise)."""
    both(N.define_space(INDEX, attributes, 8, policy=cc_policy(code)), RC.SUCCESS)
    if attributes & A.OWNERWRITE:
        both(N.write(INDEX, b"12345678"), RC.SUCCESS)
    params = S.b2(b"ab") + S.u16(0) if code == CC.NV_Write else S.u16(8) + S.u16(0)
    for send in both.each():
        name = _name(send, INDEX)
        session = _policy_session(send, code)
        assert S.call(send, code, [(INDEX, name), (INDEX, name)], params,
                      [_policy_use(session, 0)]).rc == expect
        send(cmd(CC.FlushContext, struct.pack(">I", session.handle)))


def test_undefine_space_special(both: Both) -> None:
    """A POLICY_DELETE index: UndefineSpace refuses it (TPM_RC_ATTRIBUTES + H2);
    UndefineSpaceSpecial deletes it with its policy (ADMIN role) and platformAuth, and refuses
    an index without POLICY_DELETE (TPM_RC_ATTRIBUTES + H1)."""
    for handle, attrs in ((PLATFORM_INDEX, A.POLICY_DELETE), (PLATFORM_INDEX + 1, 0)):
        both(N.define_space(handle, A.PPWRITE | A.PPREAD | A.PLATFORMCREATE | attrs, 8,
                            auth_handle=RH.PLATFORM,
                            policy=cc_policy(CC.NV_UndefineSpaceSpecial)), RC.SUCCESS)
    both(N.undefine_space(PLATFORM_INDEX, auth_handle=RH.PLATFORM), RC.ATTRIBUTES + H2)
    both(N.undefine_space_special(PLATFORM_INDEX), RC.AUTH_TYPE)
    for send in both.each():
        results = []
        for handle in (PLATFORM_INDEX + 1, PLATFORM_INDEX):
            session = _policy_session(send, CC.NV_UndefineSpaceSpecial)
            handles = [(handle, _name(send, handle)), (RH.PLATFORM, S.u32(RH.PLATFORM))]
            results.append(S.call(send, CC.NV_UndefineSpaceSpecial, handles, b"",
                                  [_policy_use(session, 0), S.Use(None)]).rc)
        assert results == [RC.ATTRIBUTES + H1, RC.SUCCESS]
        assert rc(send(N.read_public(PLATFORM_INDEX))) == RC.HANDLE + H1


# ---------------------------------------------------------------------------- lifecycle


#: Indices whose attributes change at Startup, by what they test.
LIFECYCLE = {
    "write_stclear": (INDEX, OWNER_RW | A.WRITE_STCLEAR),
    "writedefine": (INDEX + 1, OWNER_RW | A.WRITEDEFINE),
    "writedefine_stclear": (INDEX + 2, OWNER_RW | A.WRITEDEFINE | A.WRITE_STCLEAR),
    "globallock": (INDEX + 3, OWNER_RW | A.GLOBALLOCK),
    "globallock_writedefine": (INDEX + 4, OWNER_RW | A.GLOBALLOCK | A.WRITEDEFINE),
    "read_stclear": (INDEX + 5, OWNER_RW | A.READ_STCLEAR),
    "clear_stclear": (INDEX + 6, OWNER_RW | A.CLEAR_STCLEAR),
    "orderly": (INDEX + 7, OWNER_RW | A.ORDERLY),
    "orderly_counter": (INDEX + 8, OWNER_RW | A.ORDERLY | nt(NT.COUNTER)),
    "counter": (INDEX + 9, OWNER_RW | nt(NT.COUNTER)),
    "orderly_bits": (INDEX + 10, OWNER_RW | A.ORDERLY | nt(NT.BITS)),
    "orderly_writedefine": (INDEX + 11, OWNER_RW | A.ORDERLY | A.WRITEDEFINE),
    "orderly_counter_writedefine": (INDEX + 12, OWNER_RW | A.ORDERLY | A.WRITEDEFINE
                                    | nt(NT.COUNTER)),
    "orderly_writedefine_unwritten": (INDEX + 13, OWNER_RW | A.ORDERLY | A.WRITEDEFINE),
}


@pytest.fixture
def lifecycle(tmp_path) -> Iterator[Both]:
    """Fresh swtpm_py and swtpm for power cycles. swtpm 0.7.1 sends no TPM2_Shutdown of its
    own at INIT; swtpm_py does unless told not to (disable-auto-shutdown), so it is told."""
    ours = Emulator("swtpm_py", tmp_path / "ours",
                    flags="not-need-init,startup-clear,disable-auto-shutdown").start()
    ref = Emulator("swtpm", tmp_path / "ref").start()
    try:
        yield Both(ours, ref)
    finally:
        ours.cleanup()
        ref.cleanup()


def _use_all(both: Both) -> None:
    """Write every lifecycle index, then lock what can be locked."""
    for name, (handle, attrs) in LIFECYCLE.items():
        kind = (attrs >> 4) & 0xF
        if name.endswith("_unwritten"):
            continue
        if kind == NT.COUNTER:
            both(N.increment(handle), RC.SUCCESS)
        elif kind == NT.BITS:
            both(N.set_bits(handle, 3), RC.SUCCESS)
        else:
            both(N.write(handle, b"12345678"), RC.SUCCESS)
    for name in ("write_stclear", "writedefine", "writedefine_stclear", "orderly_writedefine",
                 "orderly_counter_writedefine", "orderly_writedefine_unwritten"):
        both(N.write_lock(LIFECYCLE[name][0]), RC.SUCCESS)
    both(N.read_lock(LIFECYCLE["read_stclear"][0]), RC.SUCCESS)
    both(N.global_write_lock(), RC.SUCCESS)


def _compare_all(both: Both) -> None:
    """Every lifecycle index's public area (attributes, Name) and data agree."""
    for handle, _ in LIFECYCLE.values():
        both(N.read_public(handle), RC.SUCCESS, exact=True)
        both(N.read(handle, 8), exact=True)


@pytest.mark.parametrize("shutdown_type, startup_type", [
    (1, 1),      # TPM Resume: everything stays
    (1, 0),      # TPM Restart
    (0, 0),      # TPM Reset
    (None, 0),   # TPM Reset after a power loss (no Shutdown)
])
def test_startup_effects(lifecycle: Both, shutdown_type: int | None, startup_type: int) -> None:
    """Part 3 §31 at Startup: READLOCKED clears; WRITELOCKED clears unless WRITEDEFINE
    (even with WRITE_STCLEAR, and for GlobalWriteLock) — an orderly counter's lock survives
    an orderly shutdown only, another orderly index's TPM Restart only; CLEAR_STCLEAR clears
    WRITTEN;
    orderly indices other than counters lose WRITTEN at TPM Reset; an orderly counter keeps
    counting across an orderly shutdown and jumps to its high-water mark after a power loss."""
    both = lifecycle
    for handle, attrs in LIFECYCLE.values():
        both(N.define_space(handle, attrs, 8), RC.SUCCESS)
    _use_all(both)
    both(N.increment(LIFECYCLE["orderly_counter"][0]), RC.SUCCESS)
    if shutdown_type is not None:
        both(cmd(CC.Shutdown, struct.pack(">H", shutdown_type)), RC.SUCCESS)
    both.init()
    both(cmd(CC.Startup, struct.pack(">H", startup_type)), RC.SUCCESS)
    _compare_all(both)
    # The next cycle starts from what this one left.
    both(N.increment(LIFECYCLE["orderly_counter"][0]), RC.SUCCESS)
    both(cmd(CC.Shutdown, struct.pack(">H", 0)), RC.SUCCESS)
    both.init()
    both(cmd(CC.Startup, struct.pack(">H", 0)), RC.SUCCESS)
    _compare_all(both)


# ---------------------------------------------------------------------------- in-process


def _value(tpm: Tpm, handle: int) -> int:
    response = tpm.execute(N.read(handle, 8))
    assert rc(response) == RC.SUCCESS
    return int.from_bytes(N.read_data(response), "big")


def test_orderly_counter_high_water(platform: Platform) -> None:
    """An orderly counter never goes back: across orderly shutdowns it continues exactly;
    after each power loss it resumes above every value it reported (NV copy written through
    whenever the low bits wrap), however many power losses follow each other."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    handle = INDEX
    assert rc(tpm.execute(N.define_space(handle, OWNER_RW | A.ORDERLY | nt(NT.COUNTER), 8))) == 0
    reported = 0
    for cycle in range(6):
        for _ in range(100 * cycle + 7):
            assert rc(tpm.execute(N.increment(handle))) == 0
            value = _value(tpm, handle)
            assert value > reported
            reported = value
        if cycle % 2:
            assert rc(tpm.execute(cmd(CC.Shutdown, b"\x00\x00"))) == 0
        tpm = power_on(platform)              # power loss unless just shut down
        assert rc(tpm.execute(startup())) == 0
        after = _value(tpm, handle)
        if cycle % 2:
            assert after == reported          # orderly: nothing lost, nothing skipped
        else:
            assert after >= reported          # unorderly: the high-water mark
            assert after - reported <= properties.CAPACITY.orderly_count
        reported = after
    # Power losses in a row without a single increment: the first moves it to the top of its
    # window (NV | MAX_ORDERLY_COUNT, as swtpm), the next ones no further.
    values = []
    for _ in range(3):
        tpm = power_on(platform)
        assert rc(tpm.execute(startup())) == 0
        values.append(_value(tpm, handle))
    assert reported <= values[0] == values[1] == values[2]


def _stored_data(tpm: Tpm, handle: int) -> bytes:
    """The data of an index in the permanent blob as last committed."""
    perm = decode_blob(BlobKind.PERMANENT, tpm.permanent_blob(), PersistentData)
    return perm.nv_indices[handle].data


def test_orderly_data_stays_in_ram_until_shutdown(platform: Platform) -> None:
    """Writing an orderly index's data does not rewrite the permanent blob (only the first
    write, which SETs WRITTEN, does); TPM2_Shutdown writes it, and TPM Restart reads it back."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(N.define_space(INDEX, OWNER_RW | A.ORDERLY, 8))) == 0
    assert rc(tpm.execute(N.write(INDEX, b"first..."))) == 0
    assert _stored_data(tpm, INDEX) == b"first..."
    assert rc(tpm.execute(N.write(INDEX, b"second.."))) == 0
    assert _stored_data(tpm, INDEX) == b"first..."
    assert N.read_data(tpm.execute(N.read(INDEX, 8))) == b"second.."
    assert rc(tpm.execute(cmd(CC.Shutdown, b"\x00\x01"))) == 0
    assert _stored_data(tpm, INDEX) == b"second.."
    tpm = power_on(platform)
    platform.storage.delete(BlobKind.VOLATILE)  # no volatile blob: the data comes from NV
    assert rc(tpm.execute(startup())) == 0
    assert N.read_data(tpm.execute(N.read(INDEX, 8))) == b"second.."


@pytest.mark.parametrize("command", [
    N.write(INDEX, b"new data"),
    N.write(INDEX + 1, b"new data"),          # orderly, first write: RAM must not change
    N.increment(INDEX + 2),
    N.undefine_space(INDEX),
    N.define_space(INDEX + 3, OWNER_RW, 8),
    N.write_lock(INDEX),
])
def test_storage_failure_changes_nothing(platform: Platform, command: bytes) -> None:
    """An NV command whose permanent blob cannot be stored fails (TPM_RC_FAILURE, failure
    mode) and leaves the stored state and the TPM's memory — orderly RAM data included — as
    they were; after the next _TPM_Init everything is as before the command."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(N.define_space(INDEX, OWNER_RW | A.WRITEDEFINE, 8))) == 0
    assert rc(tpm.execute(N.define_space(INDEX + 1, OWNER_RW | A.ORDERLY, 8))) == 0
    assert rc(tpm.execute(N.define_space(INDEX + 2, OWNER_RW | nt(NT.COUNTER), 8))) == 0
    assert rc(tpm.execute(N.write(INDEX, b"old data"))) == 0
    assert rc(tpm.execute(N.increment(INDEX + 2))) == 0
    stored = dict(platform.storage.blobs)  # type: ignore[attr-defined]
    perm = tpm.permanent_blob()
    orderly = dict(tpm.vol.nv_orderly)
    platform.storage.fail_with = OSError("disk full")  # type: ignore[attr-defined]
    assert rc(tpm.execute(command)) == RC.FAILURE
    assert platform.storage.blobs == stored  # type: ignore[attr-defined]
    assert tpm.permanent_blob() == perm
    assert tpm.vol.nv_orderly == orderly
    platform.storage.fail_with = None  # type: ignore[attr-defined]
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    public = tpm.execute(N.read_public(INDEX))
    assert N.parse_read_public(public)[2] & (A.WRITTEN | A.WRITELOCKED) == A.WRITTEN
    assert N.read_data(tpm.execute(N.read(INDEX, 8))) == b"old data"
    assert rc(tpm.execute(N.read(INDEX + 1, 8))) == RC.NV_UNINITIALIZED
    assert _value(tpm, INDEX + 2) == 1
    assert rc(tpm.execute(N.read_public(INDEX + 3))) == RC.HANDLE + H1


def _property(tpm: Tpm, pt: int) -> int:
    response = tpm.execute(cmd(CC.GetCapability, struct.pack(">III", CAP.TPM_PROPERTIES, pt, 1)))
    prop, value = struct.unpack_from(">II", response, 19)
    assert prop == pt
    return value


def test_nv_full(tpm: Tpm) -> None:
    """Indices and persistent objects share the NV pool: defining until it is full ends with
    TPM_RC_NV_SPACE, the failed define leaves nothing behind, the properties count the indices,
    and undefining one frees room for the next."""
    cap = properties.CAPACITY
    avail = _property(tpm, PT.HR_PERSISTENT_AVAIL)
    size = cap.nv_index_max
    defined = []
    while True:
        handle = INDEX + len(defined)
        response = tpm.execute(N.define_space(handle, OWNER_RW, size))
        if rc(response) != RC.SUCCESS:
            assert rc(response) == RC.NV_SPACE
            break
        defined.append(handle)
    assert len(defined) == cap.nv_bytes // (cap.nv_index_overhead + size)
    assert rc(tpm.execute(N.read_public(INDEX + len(defined)))) == RC.HANDLE + H1
    assert _property(tpm, PT.HR_NV_INDEX) == len(defined)
    assert _property(tpm, PT.HR_PERSISTENT_AVAIL) < avail
    assert _property(tpm, PT.NV_COUNTERS_AVAIL) == 0
    # Small indices still fit in what is left; then nothing does.
    assert rc(tpm.execute(N.define_space(0x01600000, OWNER_RW | nt(NT.COUNTER), 8))) in (
        RC.SUCCESS, RC.NV_SPACE)
    assert rc(tpm.execute(N.undefine_space(defined[0]))) == RC.SUCCESS
    assert rc(tpm.execute(N.define_space(INDEX + 5000, OWNER_RW, size))) == RC.SUCCESS
    assert rc(tpm.execute(N.define_space(INDEX + 5001, OWNER_RW, size))) == RC.NV_SPACE


def test_counters_and_handles_reported(tpm: Tpm) -> None:
    """TPM_PT_NV_COUNTERS counts counter indices; GetCapability(HANDLES) lists the indices
    in order; TPM_PT_NV_BUFFER_MAX and TPM_PT_NV_INDEX_MAX are the limits the commands use."""
    for i, kind in enumerate((NT.COUNTER, NT.ORDINARY, NT.COUNTER)):
        assert rc(tpm.execute(N.define_space(INDEX + 10 - i, OWNER_RW | nt(kind), 8))) == 0
    assert _property(tpm, PT.NV_COUNTERS) == 2
    response = tpm.execute(cmd(CC.GetCapability,
                               struct.pack(">III", CAP.HANDLES, HT.NV_INDEX << 24, 10)))
    assert struct.unpack_from(">4I", response, 15) == (3, INDEX + 8, INDEX + 9, INDEX + 10)
    assert _property(tpm, PT.NV_BUFFER_MAX) == 1024
    assert _property(tpm, PT.NV_INDEX_MAX) == 2048


def test_indices_survive_power_loss(platform: Platform) -> None:
    """Every acknowledged NV change is in the permanent blob: a new TPM instance over the same
    storage (no Shutdown) has the indices, their data, auth and locks."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(N.define_space(INDEX, AUTH_RW | A.NO_DA | A.WRITEDEFINE, 8,
                                         auth=b"pw"))) == 0
    assert rc(tpm.execute(N.write(INDEX, b"persists", auth_handle=INDEX, password=b"pw"))) == 0
    assert rc(tpm.execute(N.write_lock(INDEX, auth_handle=INDEX, password=b"pw"))) == 0
    name = N.parse_read_public(tpm.execute(N.read_public(INDEX)))[5]
    tpm = power_on(Platform(storage=MemoryStorage(), clock=FakeClock()))
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(N.read_public(INDEX))) == RC.HANDLE + H1
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    assert N.parse_read_public(tpm.execute(N.read_public(INDEX)))[5] == name
    assert N.read_data(tpm.execute(N.read(INDEX, 8, auth_handle=INDEX, password=b"pw"))) == \
        b"persists"
    assert rc(tpm.execute(N.write(INDEX, b"x", auth_handle=INDEX, password=b"pw"))) == \
        RC.NV_LOCKED


@pytest.mark.parametrize("size, count", [(2048, 0), (512, 0), (500, 1), (64, 6), (8, 25)])
def test_orderly_ram_space(both: Both, size: int, count: int) -> None:
    """Orderly indices keep their data in a RAM area of 512 octets, 12 more per index
    (swtpm's RAM_INDEX_SPACE): the index that does not fit there is TPM_RC_NV_SPACE."""
    kind = nt(NT.COUNTER) if size == 8 else 0
    for i in range(count):
        both(N.define_space(INDEX + i, OWNER_RW | A.ORDERLY | kind, size), RC.SUCCESS)
    both(N.define_space(INDEX + count, OWNER_RW | A.ORDERLY | kind, size), RC.NV_SPACE)
    both(N.define_space(INDEX + count, OWNER_RW | kind, size), RC.SUCCESS)  # not orderly: fits


# ---------------------------------------------------------------------------- NV policies


def _policy_get_digest(send: S.Send, session: S.Session) -> bytes:
    response = send(cmd(CC.PolicyGetDigest, struct.pack(">I", session.handle)))
    assert rc(response) == RC.SUCCESS
    return response[12:]


def _policy_nv(session: S.Session, operand: bytes, offset: int, operation: int,
               auth_handle: int = RH.OWNER, index: int = INDEX) -> bytes:
    """TPM2_PolicyNV with a password session for ``auth_handle``."""
    return with_auth(CC.PolicyNV, struct.pack(">III", auth_handle, index, session.handle),
                     S.b2(operand) + struct.pack(">HH", offset, operation))


def _policy_authorize_nv(session: S.Session, auth_handle: int = RH.OWNER,
                         index: int = INDEX) -> bytes:
    return with_auth(CC.PolicyAuthorizeNV,
                     struct.pack(">III", auth_handle, index, session.handle), b"")


EQ, NEQ, SIGNED_GT, UNSIGNED_GT, UNSIGNED_LE, BITSET, BITCLEAR = 0, 1, 2, 3, 9, 10, 11


def test_policy_nv(both: Both) -> None:
    """PolicyNV compares the index's data with operandB (TPM_RC_POLICY when the condition
    fails), after NV_Read's access checks; offsets and sizes are checked (TPM_RC_VALUE + P2,
    TPM_RC_SIZE + P1); a trial session checks nothing; the digests agree with swtpm's."""
    both(N.define_space(INDEX, OWNER_RW | A.READ_STCLEAR, 8), RC.SUCCESS)
    cases = [(b"\x01\x02", 0, EQ), (b"\x01\x02", 0, NEQ), (b"\x80", 0, SIGNED_GT),
             (b"\x00\x01", 0, UNSIGNED_GT), (b"\x05\x06\x07\x08", 4, UNSIGNED_LE),
             (b"\x01", 0, BITSET), (b"\x02", 0, BITCLEAR), (b"\x08", 7, EQ),
             (b"\x01" * 2, 7, EQ), (b"\x01", 9, EQ), (b"", 8, EQ)]
    results = []
    for send in both.each():
        got = []
        session = S.start_session(send, session_type=1)
        got.append(rc(send(_policy_nv(session, b"\x01", 0, EQ))))        # not written yet
        send(N.write(INDEX, bytes(range(1, 9))))
        for operand, offset, operation in cases:
            got.append(rc(send(_policy_nv(session, operand, offset, operation))))
        got.append(rc(send(_policy_nv(session, b"\x01", 0, EQ, auth_handle=RH.PLATFORM))))
        got.append(_policy_get_digest(send, session))
        trial = S.start_session(send, session_type=3)
        for operand, offset, operation in cases:
            got.append(rc(send(_policy_nv(trial, operand, offset, operation))))
        got.append(_policy_get_digest(send, trial))
        send(N.read_lock(INDEX))
        got.append(rc(send(_policy_nv(session, b"\x01", 0, EQ))))
        for s in (session, trial):
            send(cmd(CC.FlushContext, struct.pack(">I", s.handle)))
        results.append(got)
    ours, ref = results
    assert ours == ref
    # Data 01..08: 0102 == 0102; != fails; 01 > -128 signed; 0102 > 0001; 05060708 <= itself;
    # bit 0 set, bit 1 clear; 08 at offset 7; then the range errors and the wrong authorizer.
    assert ours[:13] == [RC.NV_UNINITIALIZED, 0, RC.POLICY, 0, 0, 0, 0, 0, 0,
                         RC.SIZE + P1, RC.VALUE + P2, 0, RC.NV_AUTHORIZATION]
    assert ours[-1] == RC.NV_LOCKED


def test_policy_authorize_nv(both: Both) -> None:
    """PolicyAuthorizeNV: the policyDigest so far must be the TPMT_HA in the index
    (TPM_RC_HASH for another algorithm, TPM_RC_VALUE for another digest); then the digest
    becomes H(0 || TPM_CC_PolicyAuthorizeNV || Name of the index), as swtpm computes it."""
    approved = cc_policy(CC.NV_Read)
    both(N.define_space(INDEX, OWNER_RW, 2 + 64), RC.SUCCESS)
    results = []
    for send in both.each():
        got = []
        session = _policy_session(send, CC.NV_Read)
        for stored in (struct.pack(">H", ALG.SHA256) + bytes(32),
                       struct.pack(">H", ALG.SHA1) + approved[:20],
                       struct.pack(">H", ALG.SHA256) + approved):
            send(N.write(INDEX, stored))
            got.append(rc(send(_policy_authorize_nv(session))))
        got.append(_policy_get_digest(send, session))
        name = _name(send, INDEX)
        got.append(name)
        send(cmd(CC.FlushContext, struct.pack(">I", session.handle)))
        results.append(got)
    ours, ref = results
    assert ours == ref
    assert ours[:3] == [RC.VALUE, RC.HASH, RC.SUCCESS]
    assert ours[3] == hashlib.sha256(bytes(32) + struct.pack(">I", CC.PolicyAuthorizeNV)
                                     + ours[4]).digest()


# ---------------------------------------------------------------------------- wire


def test_nv_public_round_trip() -> None:
    """TPM2B_NV_PUBLIC parses what it builds and what nvcmd builds; a zero size and a size
    that does not match the contents are TPM_RC_SIZE (Part 2 §13.6)."""
    from swtpm_py.tpm.errors import TpmError
    from swtpm_py.tpm.wire import TPM2B_NV_PUBLIC
    raw = N.nv_public(INDEX, OWNER_RW | nt(NT.COUNTER), 8, ALG.SHA384, b"p" * 48)
    value = TPM2B_NV_PUBLIC.parse(raw)
    assert (value.nvIndex, value.nameAlg, value.attributes, value.authPolicy, value.dataSize) \
        == (INDEX, ALG.SHA384, OWNER_RW | nt(NT.COUNTER), b"p" * 48, 8)
    assert TPM2B_NV_PUBLIC.build(value) == raw
    for bad in (b"\x00\x00", struct.pack(">H", len(raw) - 1) + raw[2:] + b"\x00",
                struct.pack(">H", len(raw) - 3) + raw[2:]):
        with pytest.raises(TpmError) as err:
            TPM2B_NV_PUBLIC.parse(bad)
        assert err.value.rc == RC.SIZE


def test_define_space_malformed_public(both: Both) -> None:
    """A TPM2B_NV_PUBLIC whose size is zero or disagrees with its contents is TPM_RC_SIZE +
    P2, as swtpm answers (unmarshalling before any other check)."""
    good = N.nv_public(INDEX, OWNER_RW, 8)
    for public in (b"\x00\x00", struct.pack(">H", len(good) - 3) + good[2:],
                   struct.pack(">H", len(good)) + good[2:] + b"\x00"):
        both(with_auth(CC.NV_DefineSpace, struct.pack(">I", RH.OWNER), b"\x00\x00" + public))


#: The single TPMA_NV bits (not the type field), for random attribute sets.
_FLAGS = [flag for flag in A if flag != A.TPM_NT_MASK]


@settings(max_examples=150, deadline=None)
@given(attributes=st.builds(lambda base, kind, flags: base | nt(kind) | sum(set(flags)),
                            st.sampled_from([OWNER_RW, AUTH_RW | A.NO_DA, A.PPWRITE | A.PPREAD
                                             | A.PLATFORMCREATE, 0]),
                            st.sampled_from(list(NT)),
                            st.lists(st.sampled_from(_FLAGS), max_size=4)),
       size=st.sampled_from([0, 1, 8, 20, 32, 64, 600]),
       name_alg=st.sampled_from([ALG.SHA1, ALG.SHA256, ALG.SHA512]),
       ops=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 70), st.integers(0, 70)),
                    max_size=12))
def test_random_indices_never_fail_internally(attributes: int, size: int, name_alg: int,
                                              ops: list) -> None:
    """Whatever the attributes and the operations, every answer is a TPM response code —
    never TPM_RC_FAILURE from an internal error — and the TPM leaves no half-made index."""
    tpm = power_on(Platform(storage=MemoryStorage(), clock=FakeClock()))
    assert rc(tpm.execute(startup())) == RC.SUCCESS
    platform = bool(attributes & A.PLATFORMCREATE)
    owner = RH.PLATFORM if platform else RH.OWNER
    kind = (attributes >> 4) & 0xF
    if kind == NT.EXTEND:
        size = {ALG.SHA1: 20, ALG.SHA256: 32, ALG.SHA512: 64}[name_alg]
    elif kind != NT.ORDINARY:
        size = 8
    defined = rc(tpm.execute(N.define_space(INDEX, attributes, size, name_alg=name_alg,
                                            auth_handle=owner))) == RC.SUCCESS
    event("defined" if defined else "refused")
    builders = [
        lambda a, b: N.write(INDEX, bytes(a), b, auth_handle=owner),
        lambda a, b: N.read(INDEX, a, b, auth_handle=owner),
        lambda a, b: N.read(INDEX, a, b, auth_handle=INDEX),
        lambda a, b: N.increment(INDEX, auth_handle=owner),
        lambda a, b: N.extend(INDEX, bytes(a), auth_handle=owner),
        lambda a, b: N.set_bits(INDEX, (a << b) & 0xFFFFFFFFFFFFFFFF, auth_handle=owner),
        lambda a, b: N.write_lock(INDEX, auth_handle=owner),
        lambda a, b: N.read_lock(INDEX, auth_handle=owner),
        lambda a, b: N.global_write_lock(),
        lambda a, b: cmd(CC.Shutdown, struct.pack(">H", a & 1)),
    ]
    for op, a, b in ops:
        response = tpm.execute(builders[op](a, b))
        assert rc(response) != RC.FAILURE and tpm.failure is None
        if op == 9 and rc(response) == RC.SUCCESS:
            tpm.power_on()
            assert rc(tpm.execute(startup(clear=bool(b & 1)))) in (RC.SUCCESS, RC.VALUE + P1)
            if not tpm.vol.started:
                assert rc(tpm.execute(startup())) == RC.SUCCESS
    assert (rc(tpm.execute(N.read_public(INDEX))) == RC.SUCCESS) == defined
def test_pin_fail_counts_failures(both: Both) -> None:
    """A wrong authValue of a PIN Fail index counts in pinCount (TPM_RC_BAD_AUTH: NO_DA);
    at pinLimit the authValue is no longer available, even the right one."""
    both(N.define_space(INDEX, A.OWNERWRITE | A.OWNERREAD | A.AUTHREAD | A.NO_DA
                        | nt(NT.PIN_FAIL), 8, auth=b"pin"), RC.SUCCESS)
    both(N.write(INDEX, struct.pack(">II", 0, 2)), RC.SUCCESS)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"bad"), RC.BAD_AUTH + S1)
    assert N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True)) == struct.pack(">II", 1, 2)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"bad"), RC.BAD_AUTH + S1)
    assert N.read_data(both(N.read(INDEX, 8), RC.SUCCESS, exact=True)) == struct.pack(">II", 2, 2)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"bad"), RC.AUTH_UNAVAILABLE)
    both(N.read(INDEX, 8, auth_handle=INDEX, password=b"pin"), RC.AUTH_UNAVAILABLE)


def _policy_nv_written(session: S.Session, written: int) -> bytes:
    return cmd(CC.PolicyNvWritten, struct.pack(">IB", session.handle, written))


def test_policy_nv_written(both: Both) -> None:
    """PolicyNvWritten: the session authorizes an index only while its WRITTEN is as asserted
    (TPM_RC_POLICY_FAIL otherwise, and for an entity that is no index); a contradicting second
    assertion is TPM_RC_VALUE + P1; the digest is swtpm's."""
    both(N.define_space(INDEX, A.POLICYWRITE | A.POLICYREAD | A.OWNERWRITE | A.OWNERREAD, 8),
         RC.SUCCESS)
    results = []
    for send in both.each():
        got = []
        trial = S.start_session(send, session_type=3)
        assert rc(send(cmd(CC.PolicyCommandCode, struct.pack(">II", trial.handle, CC.NV_Write)))) == 0
        assert rc(send(_policy_nv_written(trial, 0))) == 0
        got.append(rc(send(_policy_nv_written(trial, 1))))
        digest = _policy_get_digest(send, trial)
        got.append(digest)
        send(N.undefine_space(INDEX))
        send(N.define_space(INDEX, A.POLICYWRITE | A.POLICYREAD | A.OWNERWRITE | A.OWNERREAD, 8,
                            policy=digest))
        for _ in range(2):   # written only once: the second time WRITTEN is SET
            session = _policy_session(send, CC.NV_Write)
            assert rc(send(_policy_nv_written(session, 0))) == 0
            got.append(S.call(send, CC.NV_Write, [(INDEX, _name(send, INDEX))] * 2,
                              S.b2(b"ab") + S.u16(0), [_policy_use(session, 0)]).rc)
        for s in (trial,):
            send(cmd(CC.FlushContext, struct.pack(">I", s.handle)))
        results.append(got)
    assert results[0] == results[1]
    assert results[0][0] == RC.VALUE + P1
    assert results[0][2:] == [RC.SUCCESS, RC.POLICY_FAIL + S1]
