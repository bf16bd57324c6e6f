"""TPM2_ContextSave / TPM2_ContextLoad (Part 3 §28.2-28.3, Part 1 §30) for objects and
sequences.

* In process: save, flush, load and use; the blob's layout recomputed outside the TPM with
  hmac/hashlib/``cryptography`` from the hierarchy proof; every octet of the blob and every
  TPMS_CONTEXT field guarded by the integrity HMAC; contexts dying with TPM Reset (all of
  them: the null proof and resetCount change), stClear contexts with TPM Restart too; a
  disabled hierarchy, full object memory; sequences carried across a save/load.
* Differential (raw commands): the response codes of swtpm 0.7.1 for the same calls.
* tpm2-pytss ESAPI on both emulators: context_save / context_load round trips, tampered
  contexts.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

from swtpm_py.tpm import MemoryStorage, Platform, Tpm, contexts, core, properties
from swtpm_py.tpm.constants import ALG, CAP, CC, PT, RC, RH
from swtpm_py.tpm.crypto import kdfa
from swtpm_py.tpm.properties import CAPACITY
from swtpm_py.tpm.state import BlobKind

from emulator import Emulator
from test_objects import new_tpm, ok
from objcmd import (STORAGE, authed, b2, cmd, create, create_primary, ecc_template, flush,
                    load, parse_create, parse_create_primary, parse_load, parse_read_public,
                    rc, read_public, u16)

P1, H1 = 0x140, 0x100
INTEGRITY_P1 = RC.INTEGRITY | P1


# ---------------------------------------------------------------------------- raw commands


def context_save(handle: int) -> bytes:
    """TPM2_ContextSave(saveHandle)."""
    return cmd(CC.ContextSave, struct.pack(">I", handle))


def pack_context(ctx: dict) -> bytes:
    """TPMS_CONTEXT, marshalled by hand (Part 2 §14.5)."""
    return (struct.pack(">QII", ctx["sequence"], ctx["savedHandle"], ctx["hierarchy"])
            + b2(ctx["contextBlob"]))


def parse_context(response: bytes) -> dict:
    """The TPMS_CONTEXT of a successful ContextSave response, unmarshalled by hand."""
    assert rc(response) == 0, hex(rc(response))
    sequence, saved, hierarchy, size = struct.unpack_from(">QIIH", response, 10)
    blob = response[28:28 + size]
    assert len(blob) == size and len(response) == 28 + size
    return dict(sequence=sequence, savedHandle=saved, hierarchy=hierarchy, contextBlob=blob)


def context_load(ctx: dict) -> bytes:
    """TPM2_ContextLoad(context)."""
    return cmd(CC.ContextLoad, pack_context(ctx))


def loaded_handle(response: bytes) -> int:
    """The handle of a successful ContextLoad."""
    assert rc(response) == 0, hex(rc(response))
    assert len(response) == 14
    return struct.unpack_from(">I", response, 10)[0]


def hierarchy_control(enable: int, state: int) -> bytes:
    """TPM2_HierarchyControl(TPM_RH_PLATFORM, enable, state) with the empty platformAuth."""
    return authed(CC.HierarchyControl, struct.pack(">I", RH.PLATFORM),
                  struct.pack(">IB", enable, state))


def seq_start(alg: int = ALG.SHA256) -> bytes:
    """TPM2_HashSequenceStart with an empty authValue."""
    return cmd(CC.HashSequenceStart, b2(b"") + u16(alg))


def seq_update(handle: int, data: bytes) -> bytes:
    """TPM2_SequenceUpdate."""
    return authed(CC.SequenceUpdate, struct.pack(">I", handle), b2(data))


def seq_complete(handle: int, data: bytes) -> bytes:
    """TPM2_SequenceComplete (no ticket: TPM_RH_NULL)."""
    return authed(CC.SequenceComplete, struct.pack(">I", handle),
                  b2(data) + struct.pack(">I", RH.NULL))


# ---------------------------------------------------------------------------- in process


def restart(tpm: Tpm, storage: MemoryStorage, shutdown: int, startup: int) -> Tpm:
    """Shutdown(``shutdown``), power cycle, Startup(``startup``) (0 CLEAR, 1 STATE)."""
    ok(tpm, cmd(CC.Shutdown, u16(shutdown)))
    again = Tpm(Platform(storage))
    again.power_on()
    ok(again, cmd(CC.Startup, u16(startup)))
    return again


@pytest.fixture
def tpm() -> Tpm:
    """A started TPM in memory."""
    return new_tpm()


def primary(tpm: Tpm, hierarchy: int = RH.OWNER, attrs: int = STORAGE) -> dict:
    """An ECC P-256 storage primary (fast), parsed."""
    return parse_create_primary(ok(tpm, create_primary(ecc_template(attrs), hierarchy)))


def test_round_trip_object(tpm: Tpm) -> None:
    """Save, flush, load into a new slot: the same Name and Qualified Name, and the object
    still works as a parent (its sensitive area came back)."""
    parent = primary(tpm)
    assert parent["handle"] == 0x80000000
    other = primary(tpm, RH.ENDORSEMENT)
    before = parse_read_public(ok(tpm, read_public(parent["handle"])))
    saved = parse_context(ok(tpm, context_save(parent["handle"])))
    assert (saved["savedHandle"], saved["hierarchy"]) == (contexts.SAVED_OBJECT, RH.OWNER)
    # Saving leaves the object loaded.
    assert parse_read_public(ok(tpm, read_public(parent["handle"]))) == before
    ok(tpm, flush(parent["handle"]))
    ok(tpm, flush(other["handle"]))
    primary(tpm, RH.ENDORSEMENT)  # takes slot 0: the context loads into the next free slot
    handle = loaded_handle(tpm.execute(context_load(saved)))
    assert handle == 0x80000001
    assert parse_read_public(ok(tpm, read_public(handle))) == before
    assert before[1] == parent["name"]
    child = parse_create(ok(tpm, create(handle, ecc_template())))
    child_handle, _ = parse_load(ok(tpm, load(handle, child["private"], child["public"])))
    assert child_handle == 0x80000002
    # A context can be loaded more than once (three slots: make room).
    ok(tpm, flush(0x80000000))
    assert loaded_handle(tpm.execute(context_load(saved))) == 0x80000000
    assert parse_read_public(ok(tpm, read_public(0x80000000))) == before


def test_blob_layout_recomputed(tpm: Tpm) -> None:
    """The blob is HMAC-SHA512 integrity || AES-256-CFB(fingerprint || record), keyed from
    the owner proof as Part 1 §30.3 and the module docstring describe."""
    parent = primary(tpm)
    saved = parse_context(ok(tpm, context_save(parent["handle"])))
    blob, seq, handle = saved["contextBlob"], saved["sequence"], saved["savedHandle"]
    proof = tpm.perm.sh_proof
    assert blob[:2] == u16(64)
    integrity, encrypted = blob[2:66], blob[66:]
    expected = hmac.new(proof, struct.pack(">Q", tpm.perm.reset_count) + struct.pack(
        ">QI", seq, handle) + encrypted, "sha512").digest()
    assert integrity == expected
    keys = kdfa(ALG.SHA512, proof, b"CONTEXT", struct.pack(">Q", seq),
                struct.pack(">I", handle), 384)
    dec = Cipher(algorithms.AES(keys[:32]), CFB(keys[32:])).decryptor()
    plain = dec.update(encrypted) + dec.finalize()
    assert plain[:8] == struct.pack(">Q", seq)
    assert plain[8:] == tpm.vol.loaded_objects[parent["handle"]]


def test_sequence_numbers_increase(tpm: Tpm) -> None:
    """Every object context gets the next value of the context counter."""
    a = primary(tpm)["handle"]
    b = primary(tpm, RH.NULL)["handle"]
    numbers = [parse_context(ok(tpm, context_save(h)))["sequence"] for h in (a, b, a, b, a)]
    assert numbers == sorted(set(numbers)) and numbers[0] >= 1
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_every_octet_is_protected(tpm: Tpm) -> None:
    """Part 1 §30.3: a change to any octet of the blob, or to the sequence, saved handle or
    hierarchy, is TPM_RC_INTEGRITY + P1, and nothing is loaded."""
    saved = parse_context(ok(tpm, context_save(primary(tpm)["handle"])))
    blob = saved["contextBlob"]
    for i in range(2, len(blob)):
        bad = dict(saved, contextBlob=blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1:])
        assert rc(tpm.execute(context_load(bad))) == INTEGRITY_P1, i
    for field, value in (("sequence", saved["sequence"] + 1),
                         ("savedHandle", contexts.SAVED_ST_CLEAR),
                         ("savedHandle", contexts.SAVED_SEQUENCE),
                         ("hierarchy", RH.ENDORSEMENT), ("hierarchy", RH.NULL)):
        assert rc(tpm.execute(context_load(dict(saved, **{field: value})))) == INTEGRITY_P1
    # A truncated blob and a wrong integrity size are caught before the HMAC.
    assert rc(tpm.execute(context_load(dict(saved, contextBlob=blob[:40])))) == (
        RC.INSUFFICIENT)
    assert rc(tpm.execute(context_load(dict(saved, contextBlob=u16(32) + blob[2:])))) == (
        RC.SIZE | P1)
    assert rc(tpm.execute(context_load(dict(saved, contextBlob=blob[:70])))) == RC.SIZE | P1
    assert list(tpm.vol.loaded_objects) == [0x80000000]


def test_contexts_and_tpm_reset() -> None:
    """TPM Restart keeps ordinary object contexts loadable, stClear ones not; TPM Reset (the
    null proof and resetCount change) invalidates every object context, in particular the
    NULL hierarchy's."""
    storage = MemoryStorage()
    tpm = new_tpm(storage)
    owner = primary(tpm)
    null = primary(tpm, RH.NULL)
    st_clear = primary(tpm, attrs=STORAGE | TPMA_OBJECT.STCLEAR)
    saved = {name: parse_context(ok(tpm, context_save(obj["handle"])))
             for name, obj in (("owner", owner), ("null", null), ("stclear", st_clear))}
    assert saved["stclear"]["savedHandle"] == contexts.SAVED_ST_CLEAR
    assert saved["null"]["hierarchy"] == RH.NULL
    # TPM Resume: everything loads.
    tpm = restart(tpm, storage, 1, 1)
    for ctx in saved.values():
        loaded_handle(tpm.execute(context_load(ctx)))
    # TPM Restart (Shutdown(STATE), Startup(CLEAR)): stClear contexts die.
    tpm = restart(tpm, storage, 1, 0)
    assert parse_read_public(ok(tpm, read_public(loaded_handle(
        tpm.execute(context_load(saved["null"]))))))[1] == null["name"]
    loaded_handle(tpm.execute(context_load(saved["owner"])))
    assert rc(tpm.execute(context_load(saved["stclear"]))) == INTEGRITY_P1
    # TPM Reset (Shutdown(CLEAR), Startup(CLEAR)): all die.
    tpm = restart(tpm, storage, 0, 0)
    for ctx in saved.values():
        assert rc(tpm.execute(context_load(ctx))) == INTEGRITY_P1
    # The counter starts again, but the new null proof keeps an old context out even when
    # a new one has its sequence number.
    again = parse_context(ok(tpm, context_save(primary(tpm, RH.NULL)["handle"])))
    assert again["contextBlob"] != saved["owner"]["contextBlob"]


def test_disabled_hierarchy_and_full_memory(tpm: Tpm) -> None:
    """A context of a disabled hierarchy is TPM_RC_HIERARCHY + P1 (after the integrity
    check); with every slot taken, TPM_RC_OBJECT_MEMORY."""
    saved = parse_context(ok(tpm, context_save(primary(tpm)["handle"])))
    null_saved = parse_context(ok(tpm, context_save(primary(tpm, RH.NULL)["handle"])))
    ok(tpm, hierarchy_control(RH.OWNER, 0))
    assert rc(tpm.execute(context_load(saved))) == RC.HIERARCHY | P1
    assert rc(tpm.execute(context_load(dict(saved, sequence=saved["sequence"] + 1)))) == (
        INTEGRITY_P1)
    ok(tpm, hierarchy_control(RH.OWNER, 1))
    while len(tpm.vol.loaded_objects) < CAPACITY.loaded_objects:
        loaded_handle(tpm.execute(context_load(null_saved)))
    assert rc(tpm.execute(context_load(saved))) == RC.OBJECT_MEMORY
    ok(tpm, flush(0x80000001))
    assert loaded_handle(tpm.execute(context_load(saved))) == 0x80000001


def test_sequence_context(tpm: Tpm) -> None:
    """A hash sequence saved, flushed and loaded carries on where it was."""
    handle = struct.unpack_from(">I", ok(tpm, seq_start()), 10)[0]
    ok(tpm, seq_update(handle, b"first part, "))
    saved = parse_context(ok(tpm, context_save(handle)))
    assert (saved["savedHandle"], saved["hierarchy"]) == (contexts.SAVED_SEQUENCE, RH.NULL)
    ok(tpm, flush(handle))
    again = loaded_handle(tpm.execute(context_load(saved)))
    ok(tpm, seq_update(again, b"second part"))
    response = ok(tpm, seq_complete(again, b"."))
    digest = response[16:16 + 32]
    assert digest == hashlib.sha256(b"first part, second part.").digest()


def test_large_sequence_context(tpm: Tpm) -> None:
    """A sequence's context holds its hash state at a checkpoint (swtpm_py.tpm.sequences),
    not the data: it has the same size after 4 KiB as after 100 octets, fits a 4096-octet
    response, and the sequence continues after ContextLoad (as swtpm 0.7.1, which keeps a
    fixed-size hash state)."""
    handle = struct.unpack_from(">I", ok(tpm, seq_start()), 10)[0]
    ok(tpm, seq_update(handle, bytes(128)))
    small = ok(tpm, context_save(handle))
    for _ in range(39):
        ok(tpm, seq_update(handle, bytes(100)))
    ok(tpm, seq_update(handle, bytes(68)))
    response = ok(tpm, context_save(handle))
    assert len(response) == len(small) and len(response) - 10 <= contexts.MAX_OBJECT_CONTEXT
    ok(tpm, flush(handle))
    again = loaded_handle(tpm.execute(context_load(parse_context(response))))
    response = ok(tpm, seq_complete(again, b""))
    assert response[16:48] == hashlib.sha256(bytes(4096)).digest()


def test_context_save_errors(tpm: Tpm) -> None:
    """An empty slot is TPM_RC_REFERENCE_H0; a persistent or permanent handle is not a
    TPMI_DH_CONTEXT (TPM_RC_VALUE + H1)."""
    assert rc(tpm.execute(context_save(0x80000000))) == RC.REFERENCE_H0
    assert rc(tpm.execute(context_save(0x81000001))) == RC.VALUE | H1
    assert rc(tpm.execute(context_save(RH.OWNER))) == RC.VALUE | H1


def test_context_properties(tpm: Tpm) -> None:
    """GetCapability reports the context cipher (AES-256) and the largest object context,
    which bounds every context saved."""
    assert properties.value(tpm, PT.CONTEXT_SYM) == ALG.AES
    assert properties.value(tpm, PT.CONTEXT_SYM_SIZE) == 256
    assert properties.value(tpm, PT.CONTEXT_HASH) == ALG.SHA512
    assert properties.value(tpm, PT.MAX_OBJECT_CONTEXT) == contexts.MAX_OBJECT_CONTEXT
    # The largest context fits both the ContextSave response and the ContextLoad command.
    assert 10 + contexts.MAX_OBJECT_CONTEXT == core.MAX_RESPONSE_SIZE == core.MAX_COMMAND_SIZE
    response = ok(tpm, context_save(primary(tpm)["handle"]))
    assert len(response) - 10 <= contexts.MAX_OBJECT_CONTEXT


def test_context_survives_volatile_blob() -> None:
    """The context counter is in the volatile state: a TPM restored from its volatile blob
    loads contexts saved before and keeps counting up."""
    storage = MemoryStorage()
    tpm = new_tpm(storage)
    saved = parse_context(ok(tpm, context_save(primary(tpm)["handle"])))
    storage.store(BlobKind.VOLATILE, tpm.volatile_blob())
    restored = Tpm(Platform(storage))
    restored.power_on()  # _TPM_Init resumes from the volatile blob (no Startup)
    assert restored.vol.started
    handle = loaded_handle(restored.execute(context_load(saved)))
    assert parse_context(ok(restored, context_save(handle)))["sequence"] == (
        saved["sequence"] + 1)


# ---------------------------------------------------------------------------- differential

#: Raw calls and the response code swtpm 0.7.1 gives (measured); both emulators must agree.


@pytest.fixture(scope="module")
def both(pair: dict[str, Emulator]) -> dict[str, Emulator]:
    """swtpm_py and the real swtpm, started (conftest's module-scoped pair)."""
    return pair


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_differential_codes(both: dict, kind: str) -> None:
    """The same calls give the same codes on both: round trip, tampered blob, changed
    fields, empty slot, non-context handles, a bad savedHandle, full object memory."""
    emu = both[kind]
    run = emu.command
    handle = parse_create_primary(run(create_primary(ecc_template())))["handle"]
    try:
        saved = parse_context(run(context_save(handle)))
        assert saved["savedHandle"] == 0x80000000 and saved["hierarchy"] == RH.OWNER
        blob = saved["contextBlob"]
        new = loaded_handle(run(context_load(saved)))
        assert parse_read_public(run(read_public(new)))[1] == parse_read_public(
            run(read_public(handle)))[1]
        assert rc(run(flush(new))) == 0
        for i in (2, 40, 66, 70, len(blob) // 2, len(blob) - 1):
            bad = dict(saved, contextBlob=blob[:i] + bytes([blob[i] ^ 0x80]) + blob[i + 1:])
            assert rc(run(context_load(bad))) == INTEGRITY_P1, i
        assert rc(run(context_load(dict(saved, sequence=saved["sequence"] ^ 1)))) == (
            INTEGRITY_P1)
        assert rc(run(context_load(dict(saved, hierarchy=RH.ENDORSEMENT)))) == INTEGRITY_P1
        assert rc(run(context_load(dict(saved, savedHandle=0x80000002)))) == INTEGRITY_P1
        assert rc(run(context_load(dict(saved, savedHandle=0x80000003)))) == RC.VALUE | P1
        assert rc(run(context_load(dict(saved, hierarchy=RH.LOCKOUT)))) == RC.VALUE | P1
        # Malformed blobs: a truncated integrity is TPM_RC_INSUFFICIENT without a number,
        # a wrong digest size or no room for the fingerprint TPM_RC_SIZE + P1, an oversized
        # blob TPM_RC_COMMAND_SIZE (measured on swtpm 0.7.1).
        for short in (b"", blob[:40]):
            assert rc(run(context_load(dict(saved, contextBlob=short)))) == RC.INSUFFICIENT
        for size in (65, 100, 0xFFFF):
            bad_blob = u16(size) + blob[2:]
            assert rc(run(context_load(dict(saved, contextBlob=bad_blob)))) == RC.SIZE
        for bad_blob in (u16(32) + blob[2:], u16(0) + blob[2:], blob[:70]):
            assert rc(run(context_load(dict(saved, contextBlob=bad_blob)))) == RC.SIZE | P1
        assert rc(run(context_load(dict(saved, contextBlob=blob + bytes(6000))))) == (
            RC.COMMAND_SIZE)
        assert rc(run(context_load(dict(saved, savedHandle=0x02000000)))) == INTEGRITY_P1
        assert rc(run(context_save(0x80000002))) == RC.REFERENCE_H0
        assert rc(run(context_save(0x81000001))) == RC.VALUE | H1
        # Fill the object memory with copies, then one more.
        extra = []
        while True:
            response = run(context_load(saved))
            if rc(response) != 0:
                assert rc(response) == RC.OBJECT_MEMORY
                break
            extra.append(loaded_handle(response))
            assert len(extra) < 64
        for h in extra:
            assert rc(run(flush(h))) == 0
    finally:
        run(flush(handle))


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_differential_sequences_st_clear_and_disabled(both: dict, kind: str) -> None:
    """Both emulators: a hash sequence's context (savedHandle 0x80000001, TPM_RH_NULL)
    carries its data across a flush; an stClear object's is 0x80000002; a context of a
    disabled hierarchy is TPM_RC_HIERARCHY + P1, but only once its integrity holds."""
    run = both[kind].command
    handle = struct.unpack_from(">I", run(seq_start()), 10)[0]
    assert rc(run(seq_update(handle, b"abc"))) == 0
    saved = parse_context(run(context_save(handle)))
    assert (saved["savedHandle"], saved["hierarchy"]) == (0x80000001, RH.NULL)
    assert rc(run(flush(handle))) == 0
    again = loaded_handle(run(context_load(saved)))
    response = run(seq_complete(again, b"d"))
    assert rc(response) == 0 and response[16:48] == hashlib.sha256(b"abcd").digest()
    st = parse_create_primary(run(create_primary(ecc_template(STORAGE | TPMA_OBJECT.STCLEAR),
                                                 RH.NULL)))["handle"]
    st_saved = parse_context(run(context_save(st)))
    assert (st_saved["savedHandle"], st_saved["hierarchy"]) == (0x80000002, RH.NULL)
    assert st_saved["sequence"] > saved["sequence"]
    assert rc(run(flush(st))) == 0
    owner = parse_create_primary(run(create_primary(ecc_template())))["handle"]
    owner_saved = parse_context(run(context_save(owner)))
    assert rc(run(flush(owner))) == 0
    assert rc(run(hierarchy_control(RH.OWNER, 0))) == 0
    try:
        assert rc(run(context_load(owner_saved))) == RC.HIERARCHY | P1
        tampered = dict(owner_saved, sequence=owner_saved["sequence"] + 1)
        assert rc(run(context_load(tampered))) == INTEGRITY_P1
    finally:
        assert rc(run(hierarchy_control(RH.OWNER, 1))) == 0


# ---------------------------------------------------------------------------- tpm2-pytss


STORAGE_ATTRS = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
                 | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                 | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_pytss_context_save_load(both: dict, kind: str) -> None:
    """ESAPI context_save / flush / context_load: the loaded object has the same Name (ESAPI
    checks it against the saved metadata) and creates children; a tampered context is
    TPM_RC_INTEGRITY on parameter 1 from both emulators."""
    emu = both[kind]
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
    try:
        handle, *_ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
            "ecc256:aes128cfb", objectAttributes=STORAGE_ATTRS), ESYS_TR.OWNER)
        name = bytes(ctx.tr_get_name(handle))
        saved = ctx.context_save(handle)
        assert saved.savedHandle == 0x80000000 and saved.hierarchy == RH.OWNER
        ctx.flush_context(handle)
        again = ctx.context_load(saved)
        assert bytes(ctx.read_public(again)[1]) == name
        ctx.create(again, TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256", objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH))
        second = ctx.context_save(again)
        assert second.sequence > saved.sequence
        blob = bytearray(bytes(second.contextBlob))
        blob[100] ^= 0x01
        second.contextBlob = bytes(blob)
        with pytest.raises(TSS2_Exception) as err:
            ctx.context_load(second)
        assert err.value.rc & 0xFFF == INTEGRITY_P1
        ctx.flush_context(again)
    finally:
        ctx.close()


def test_capability_context_properties_differ_only_in_bounds(both: dict) -> None:
    """TPM_PT_CONTEXT_SYM, _SYM_SIZE and _HASH as swtpm reports them."""
    values = {}
    for kind, emu in both.items():
        response = emu.command(cmd(CC.GetCapability, struct.pack(
            ">III", CAP.TPM_PROPERTIES, PT.CONTEXT_HASH, 3)))
        assert rc(response) == 0
        count = struct.unpack_from(">I", response, 15)[0]
        values[kind] = dict(struct.iter_unpack(">II", response[19:19 + 8 * count]))
    assert values["swtpm_py"] == values["swtpm"]
    assert values["swtpm"] == {PT.CONTEXT_HASH: ALG.SHA512, PT.CONTEXT_SYM: ALG.AES,
                               PT.CONTEXT_SYM_SIZE: 256}
