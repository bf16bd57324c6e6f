"""HMAC sessions, parameter encryption and audit sessions (Part 1 §19.6, §21, §32.4; Part 3
§11.1), checked three ways:

* the primitives (KDFa, XOR and AES-CFB parameter encryption) against independent
  computations with ``cryptography``;
* raw commands through an independent session client (tests/sessclient.py) against swtpm_py
  *and* the real swtpm in the same test — same response codes, HMACs that verify, values
  recomputed with hashlib;
* tpm2-pytss ESAPI, which computes and verifies every HMAC itself and rejects a response it
  cannot verify.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from hypothesis import HealthCheck, given, settings, strategies as st
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_SE, TPMA_OBJECT, TPMA_SESSION
from tpm2_pytss.types import (TPM2B_AUTH, TPM2B_EVENT, TPM2B_MAX_BUFFER, TPM2B_PUBLIC,
                              TPM2B_SENSITIVE_CREATE, TPM2B_SENSITIVE_DATA,
                              TPML_PCR_SELECTION, TPMS_SENSITIVE_CREATE, TPMT_SYM_DEF, TPMU_SYM_KEY_BITS,
                              TPMU_SYM_MODE)

import sessclient as sc
from emulator import Emulator
from sessclient import (ALG_AES, ALG_NULL, ALG_XOR, AUDIT, AUDIT_EXCLUSIVE, CONTINUE, DECRYPT,
                        ENCRYPT, Use, b2, call, rc_of, start_session, u16, u32)
from tpmcmd import FakeClock, cmd, pcr_read, pcr_values, power_on, shutdown, startup

from swtpm_py.tpm import MemoryStorage, Platform, Tpm, paramenc, secret
from swtpm_py.tpm.constants import ALG, CC, RH
from swtpm_py.tpm.crypto import kdfa
from swtpm_py.tpm.registry import COMMANDS
from swtpm_py.tpm.state import BlobKind

SHA1, SHA256, SHA384, SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
HASHLIB = {SHA1: "sha1", SHA256: "sha256", SHA384: "sha384", SHA512: "sha512"}
TPM_RH_OWNER = 0x40000001
PCR16 = 16
#: Response codes measured on swtpm 0.7.1 (format 1: + 0x100 per session number, 0x800 = S).
BAD_AUTH_S1 = 0x9A2
AUTH_FAIL_S1 = 0x98E
ATTRIBUTES_S1, ATTRIBUTES_S2 = 0x982, 0xA82
SYMMETRIC_S1 = 0x996
HANDLE_S1, HANDLE_S2 = 0x98B, 0xA8B
REFERENCE_S0 = 0x918
SESSION_MEMORY = 0x903
HANDLE_P1 = 0x1CB


# ---------------------------------------------------------------------------- primitives


@pytest.mark.parametrize("alg", [SHA1, SHA256, SHA384, SHA512])
@pytest.mark.parametrize("bits", [8, 128, 256, 384, 520, 1024])
def test_kdfa_is_sp800_108_counter_mode(alg: int, bits: int) -> None:
    """KDFa (Part 1 §11.4.10.2) equals cryptography's KBKDF-HMAC in counter mode for every
    label the sessions use, empty keys included."""
    for key in (b"", b"k" * 7, os.urandom(64), os.urandom(200)):
        for label in (b"ATH", b"CFB", b"XOR"):
            u, v = os.urandom(16), os.urandom(32)
            assert kdfa(alg, key, label, u, v, bits) == sc.kdfa(alg, key, label, u, v, bits)


@pytest.mark.parametrize("alg", [SHA1, SHA256, SHA384, SHA512])
def test_kdfe_is_the_sp800_56a_concatenation_kdf(alg: int) -> None:
    """KDFe (Part 1 §11.4.10.3) equals cryptography's ConcatKDFHash with otherInfo = label ||
    PartyUInfo || PartyVInfo."""
    for bits in (160, 256, 512, 1000 * 8):
        z, u, v = os.urandom(32), os.urandom(32), os.urandom(48)
        reference = ConcatKDFHash(algorithm=sc.CRYPTO_HASHES[HASHLIB[alg]](), length=bits // 8,
                                  otherinfo=b"SECRET\x00" + u + v).derive(z)
        assert secret.kdfe(alg, z, b"SECRET\x00", u, v, bits) == reference


@pytest.mark.parametrize("alg", [SHA1, SHA256, SHA512])
@pytest.mark.parametrize("size", [0, 1, 20, 63, 64, 65, 1000])
def test_parameter_encryption_matches_an_independent_computation(alg: int, size: int) -> None:
    """XOR and AES-128/256-CFB parameter encryption (Part 1 §21) against cryptography, in
    both directions; each decrypts what it encrypts."""
    key, newer, older = os.urandom(40), os.urandom(20), os.urandom(32)
    data = os.urandom(size)
    xor = paramenc.SymDef(ALG.XOR, ALG.SHA256)
    enc = paramenc.transform(xor, alg, key, newer, older, data, decrypt=False)
    assert enc == sc.xor_crypt(alg, key, newer, older, data)
    assert paramenc.transform(xor, alg, key, newer, older, enc, decrypt=True) == data
    for bits in (128, 256):
        aes = paramenc.SymDef(ALG.AES, bits, ALG.CFB)
        enc = paramenc.encrypt_response_parameter(aes, alg, key, newer, older, data)
        assert enc == sc.cfb_crypt(alg, key, bits, newer, older, data, True)
        assert paramenc.decrypt_command_parameter(aes, alg, key, newer, older, enc) == data
        if size >= 16:
            assert enc != data  # (equal 16 random octets: probability 2^-128)


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def both(pair: dict[str, Emulator]) -> Iterator[dict[str, Emulator]]:
    """The pair with no session loaded before and after the test."""
    for emu in pair.values():
        flush_all(emu.command)
    yield pair
    for emu in pair.values():
        flush_all(emu.command)


def loaded_sessions(send: sc.Send) -> list[int]:
    """GetCapability(HANDLES, TPM_HT_LOADED_SESSION)."""
    resp = send(cmd(CC.GetCapability, u32(1) + u32(0x02000000) + u32(64)))
    assert rc_of(resp) == 0
    count = struct.unpack_from(">I", resp, 15)[0]
    return list(struct.unpack_from(f">{count}I", resp, 19))


def flush_all(send: sc.Send) -> None:
    for handle in loaded_sessions(send):
        assert rc_of(send(cmd(CC.FlushContext, u32(handle)))) == 0


def start_raw(send: sc.Send, nonce: bytes, session_type: int = 0, auth_hash: int = SHA256,
              bind: int = RH.NULL, sym: bytes = u16(ALG_NULL), tpm_key: int = RH.NULL,
              salt: bytes = b"") -> bytes:
    """A raw StartAuthSession response."""
    return send(cmd(CC.StartAuthSession, u32(tpm_key) + u32(bind) + b2(nonce) + b2(salt)
                    + bytes([session_type]) + sym + u16(auth_hash)))


def pcr(send: sc.Send, alg: int, index: int) -> bytes:
    """One PCR value."""
    return pcr_values(send(pcr_read(alg, [index])))[0]


def event_digests(parameters: bytes) -> dict[int, bytes]:
    """The TPML_DIGEST_VALUES of a PCR_Event response, by algorithm."""
    count = struct.unpack_from(">I", parameters)[0]
    out, off = {}, 4
    for _ in range(count):
        alg = struct.unpack_from(">H", parameters, off)[0]
        size = hashlib.new(HASHLIB[alg]).digest_size
        out[alg] = parameters[off + 2:off + 2 + size]
        off += 2 + size
    return out


def pcr_event(send: sc.Send, data: bytes, uses: list[Use], index: int = PCR16) -> sc.Result:
    """TPM2_PCR_Event(index, data) with ``uses``."""
    return call(send, CC.PCR_Event, [(index, u32(index))], b2(data), uses)


def check_event(send: sc.Send, before: dict[int, bytes], data: bytes, result: sc.Result) -> None:
    """PCR_Event returned H(data) in every bank and extended PCR 16 with it."""
    assert result.rc == 0
    digests = event_digests(result.parameters)
    assert digests == {alg: hashlib.new(HASHLIB[alg], data).digest() for alg in HASHLIB}
    for alg in HASHLIB:
        assert pcr(send, alg, PCR16) == hashlib.new(HASHLIB[alg], before[alg]
                                                    + digests[alg]).digest()


def pcr16(send: sc.Send) -> dict[int, bytes]:
    return {alg: pcr(send, alg, PCR16) for alg in HASHLIB}


# ---------------------------------------------------------------------------- StartAuthSession

#: StartAuthSession arguments and the code swtpm 0.7.1 answers (measured).
START_ERRORS = [
    ("nonceCaller of 15", dict(nonce=b"n" * 15), 0x1D5),
    ("nonceCaller above the digest size", dict(nonce=b"n" * 33), 0x1D5),
    ("SHA-1 nonce of 21", dict(nonce=b"n" * 21, auth_hash=SHA1), 0x1D5),
    ("salt without tpmKey", dict(salt=b"\x01"), 0x2C4),
    ("encryptedSalt above 384 octets", dict(salt=b"s" * 385), 0x2D5),
    ("session type 7", dict(session_type=7), 0x3C4),
    ("symmetric 0x25", dict(sym=u16(0x25)), 0x4D6),
    ("XOR with an unknown hash", dict(sym=u16(ALG_XOR) + u16(0x99)), 0x4C3),
    ("AES-512", dict(sym=u16(ALG_AES) + u16(512) + u16(0x43)), 0x4C4),
    ("AES in ECB mode", dict(sym=u16(ALG_AES) + u16(128) + u16(0x44)), 0x4C9),
    ("AES with mode NULL", dict(sym=u16(ALG_AES) + u16(128) + u16(ALG_NULL)), 0x4C9),
    ("authHash NULL", dict(auth_hash=ALG_NULL), 0x5C3),
    ("tpmKey TPM_RH_OWNER", dict(tpm_key=TPM_RH_OWNER), 0x184),
    ("tpmKey not loaded", dict(tpm_key=0x80000000), 0x910),
    ("bind TPM_RS_PW", dict(bind=RH.PW), 0x284),
    ("bind a session handle", dict(bind=0x02000000), 0x284),
    ("bind a persistent handle that does not exist", dict(bind=0x81000000), 0x28B),
    ("bind an NV index that does not exist", dict(bind=0x01000000), 0x28B),
]


def test_start_auth_session_errors_match_swtpm(both: dict[str, Emulator]) -> None:
    """Every malformed StartAuthSession gets swtpm's code, parameter/handle number included."""
    for name, args, expected in START_ERRORS:
        args = dict(args)
        nonce = args.pop("nonce", b"n" * 16)
        got = {kind: rc_of(start_raw(emu.command, nonce, **args)) for kind, emu in both.items()}
        assert got == {"swtpm_py": expected, "swtpm": expected}, name


def test_session_handles_slots_and_capability(both: dict[str, Emulator]) -> None:
    """HMAC and policy sessions share one index space (0x02000000, 0x02000001, 0x03000002),
    nonceTPM is as long as nonceCaller, the fourth session finds no slot, GetCapability and
    TPM_PT_HR_LOADED list what is loaded, and FlushContext removes a session (by its index, as
    swtpm does)."""
    for emu in both.values():
        send = emu.command
        r1 = start_raw(send, b"a" * 16)
        r2 = start_raw(send, b"b" * 20, auth_hash=SHA1)
        r3 = start_raw(send, b"c" * 32, session_type=1)
        handles = [struct.unpack_from(">I", r, 10)[0] for r in (r1, r2, r3)]
        assert handles == [0x02000000, 0x02000001, 0x03000002], emu.kind
        nonces = [r[16:] for r in (r1, r2, r3)]
        assert [len(n) for n in nonces] == [16, 20, 32]
        assert len(set(nonces)) == 3
        assert rc_of(start_raw(send, b"d" * 16)) == SESSION_MEMORY
        assert loaded_sessions(send) == handles
        props = send(cmd(CC.GetCapability, u32(6) + u32(0x203) + u32(4)))
        values = dict(struct.iter_unpack(">II", props[19:19 + 8 * 4]))
        assert (values[0x203], values[0x204], values[0x205]) == (3, 0, 3)
        # Flushing 0x02000002 flushes the policy session in slot 2 (the index is what counts).
        assert rc_of(send(cmd(CC.FlushContext, u32(0x02000002)))) == 0
        assert loaded_sessions(send) == handles[:2]
        assert rc_of(send(cmd(CC.FlushContext, u32(0x03000002)))) == HANDLE_P1
        assert struct.unpack_from(">I", start_raw(send, b"e" * 16, session_type=3), 10)[0] \
            == 0x03000002


# ---------------------------------------------------------------------------- HMAC sessions


@pytest.mark.parametrize("alg", [SHA1, SHA256, SHA384, SHA512])
def test_hmac_sessions_authorize_pcr_event(both: dict[str, Emulator], alg: int) -> None:
    """Unbound, bound to the authorized PCR (its authValue left out of the HMAC) and bound to
    another entity: PCR_Event is authorized, the response HMAC verifies with a new nonceTPM
    each time, and PCR 16 holds H(old || H(event)) in every bank."""
    for emu in both.values():
        send = emu.command
        for bind, bound in ((RH.NULL, False), (PCR16, True), (TPM_RH_OWNER, False)):
            s = start_session(send, auth_hash=alg, bind=bind)
            assert bool(s.session_key) == (bind != RH.NULL)
            seen = {s.nonce_tpm}
            for i in range(2):
                before = pcr16(send)
                data = f"event {i} {bind:x}".encode()
                check_event(send, before, data, pcr_event(send, data, [Use(s, bound=bound)]))
                assert s.nonce_tpm not in seen
                seen.add(s.nonce_tpm)
            assert rc_of(send(cmd(CC.FlushContext, u32(s.handle)))) == 0


def test_wrong_hmac_is_bad_auth_and_rolls_nothing(both: dict[str, Emulator]) -> None:
    """A wrong HMAC for a PCR (no DA protection) is TPM_RC_BAD_AUTH for session 1; the session
    stays loaded with its nonce, so the next correct command succeeds."""
    for emu in both.values():
        send = emu.command
        s = start_session(send)
        nonce = s.nonce_tpm
        before = pcr16(send)
        bad = pcr_event(send, b"x", [Use(s, hmac_override=b"\x00" * 32)])
        assert bad.rc == BAD_AUTH_S1, emu.kind
        assert s.nonce_tpm == nonce and pcr16(send) == before
        check_event(send, before, b"y", pcr_event(send, b"y", [Use(s)]))


def test_empty_hmac_is_enough_without_a_key(both: dict[str, Emulator]) -> None:
    """Part 1 §19.6.5: with no sessionKey and an empty authValue an empty HMAC authorizes, and
    the response HMAC is empty too; with a key it is a bad HMAC."""
    for emu in both.values():
        send = emu.command
        s = start_session(send)
        before = pcr16(send)
        check_event(send, before, b"e", pcr_event(send, b"e", [Use(s, hmac_override=b"")]))
        bound = start_session(send, bind=TPM_RH_OWNER)
        assert pcr_event(send, b"e", [Use(bound, hmac_override=b"")]).rc == BAD_AUTH_S1


def test_continue_session_clear_flushes_after_success_only(both: dict[str, Emulator]) -> None:
    """continueSession clear: the session is flushed with the successful response, but stays
    when the command fails."""
    for emu in both.values():
        send = emu.command
        s = start_session(send)
        assert pcr_event(send, b"x", [Use(s, attributes=0, hmac_override=b"\x01")]).rc \
            == BAD_AUTH_S1
        assert loaded_sessions(send) == [s.handle]
        assert pcr_event(send, b"x", [Use(s, attributes=0)]).rc == 0
        assert loaded_sessions(send) == []
        assert pcr_event(send, b"x", [Use(s)]).rc == REFERENCE_S0


def test_session_attribute_errors_match_swtpm(both: dict[str, Emulator]) -> None:
    """The reference's checks of HMAC/policy entries: a session must have a purpose, decrypt
    and encrypt need a TPM2B parameter and a cipher, a trial session authorizes nothing, the
    handle type must match, a session appears once and decrypts alone."""
    for emu in both.values():
        send = emu.command
        plain = start_session(send)
        aes = start_session(send, sym_alg=ALG_AES, sym_bits=128)
        trial = start_session(send, session_type=3)
        get_random = (CC.GetRandom, [], u16(8))
        extend = (CC.PCR_Extend, [(PCR16, u32(PCR16))], u32(1) + u16(SHA1) + bytes(20))
        event = (CC.PCR_Event, [(PCR16, u32(PCR16))], b2(b"data"))
        cases = [
            (get_random, [Use(plain, auth=None)], ATTRIBUTES_S1),
            (get_random, [Use(aes, DECRYPT | CONTINUE, auth=None)], ATTRIBUTES_S1),
            (extend, [Use(aes, DECRYPT | CONTINUE)], ATTRIBUTES_S1),
            (event, [Use(aes, ENCRYPT | CONTINUE)], ATTRIBUTES_S1),
            (event, [Use(plain, DECRYPT | CONTINUE)], SYMMETRIC_S1),
            (event, [Use(trial)], ATTRIBUTES_S1),
            (event, [Use(plain), Use(plain, AUDIT | CONTINUE, auth=None)], HANDLE_S2),
            (event, [Use(aes, DECRYPT | CONTINUE), Use(plain, DECRYPT | CONTINUE, auth=None)],
             ATTRIBUTES_S2),
            (event, [Use(None)], 0),
        ]
        for (code, handles, params), uses, expected in cases:
            assert call(send, code, handles, params, uses).rc == expected, (emu.kind, uses)
        # A handle of the other type for a loaded index.
        wrong_type = sc.Session(trial.handle - 0x01000000, SHA256, b"", b"")
        assert pcr_event(send, b"x", [Use(wrong_type)]).rc == HANDLE_S1
        assert pcr_event(send, b"x", [Use(sc.Session(0x02000030, SHA256, b"", b""))]).rc \
            == REFERENCE_S0


# ---------------------------------------------------------------------------- encryption


@pytest.mark.parametrize("sym_alg,bits", [(ALG_XOR, SHA256), (ALG_AES, 128), (ALG_AES, 256)])
@pytest.mark.parametrize("alg", [SHA1, SHA256, SHA512])
def test_parameter_encryption_both_directions(both: dict[str, Emulator], sym_alg: int,
                                              bits: int, alg: int) -> None:
    """Decrypt (PCR_Event's event, Hash's data) and encrypt (GetRandom's bytes, Hash's digest)
    with XOR and AES-CFB, bound sessions included (whose keys add the authValue): the TPM
    reads what the client encrypted and the client reads what the TPM encrypted."""
    data = os.urandom(100)
    for emu in both.values():
        send = emu.command
        for bind in (RH.NULL, TPM_RH_OWNER):
            s = start_session(send, auth_hash=alg, bind=bind, sym_alg=sym_alg, sym_bits=bits)
            before = pcr16(send)
            check_event(send, before, data,
                        pcr_event(send, data, [Use(s, DECRYPT | CONTINUE)]))
            r = call(send, CC.GetRandom, [], u16(32), [Use(s, ENCRYPT | CONTINUE, auth=None)])
            assert r.rc == 0 and struct.unpack_from(">H", r.parameters)[0] == 32
            r = call(send, CC.Hash, [], b2(data) + u16(SHA256) + u32(RH.NULL),
                     [Use(s, ENCRYPT | DECRYPT | CONTINUE, auth=None)])
            assert r.rc == 0, emu.kind
            assert r.parameters[2:34] == hashlib.sha256(data).digest()
            send(cmd(CC.FlushContext, u32(s.handle)))


def test_separate_encryption_session_nonces_enter_the_auth_hmac(
        both: dict[str, Emulator]) -> None:
    """Part 1 §19.6.5: when another session decrypts, the authorizing first session's HMAC
    covers that session's nonceTPM — a client that leaves it out gets TPM_RC_BAD_AUTH."""
    for emu in both.values():
        send = emu.command
        auth = start_session(send, bind=TPM_RH_OWNER)
        enc = start_session(send, sym_alg=ALG_AES, sym_bits=128)
        audit = start_session(send, auth_hash=SHA384)
        before = pcr16(send)
        uses = [Use(auth), Use(enc, DECRYPT | CONTINUE, auth=None),
                Use(audit, AUDIT | CONTINUE, auth=None)]
        check_event(send, before, b"three sessions", pcr_event(send, b"three sessions", uses))
        # Session 1's HMAC without the decrypt session's nonce.
        r = call(send, CC.PCR_Event, [(PCR16, u32(PCR16))], b2(b"z"),
                 [Use(auth), Use(enc, DECRYPT | CONTINUE, auth=None)], extra_nonces=False)
        assert r.rc == BAD_AUTH_S1


# ---------------------------------------------------------------------------- audit


def test_audit_session_exclusivity_matches_swtpm(both: dict[str, Emulator]) -> None:
    """An audit session becomes exclusive at its first use and reports auditExclusive while
    only it is used; any command without it ends the exclusivity, auditReset starts over."""
    for emu in both.values():
        send = emu.command
        s = start_session(send)

        def audited(extra: int = 0) -> int:
            r = call(send, CC.GetRandom, [], u16(4), [Use(s, AUDIT | CONTINUE | extra, auth=None)])
            assert r.rc == 0
            return r.attributes[0] & AUDIT_EXCLUSIVE

        assert audited() == AUDIT_EXCLUSIVE
        assert audited() == AUDIT_EXCLUSIVE
        assert rc_of(send(cmd(CC.GetRandom, u16(4)))) == 0
        assert audited() == 0
        # Claiming exclusivity that was lost is TPM_RC_EXCLUSIVE.
        r = call(send, CC.GetRandom, [], u16(4),
                 [Use(s, AUDIT | AUDIT_EXCLUSIVE | CONTINUE, auth=None)])
        assert r.rc == 0x121, emu.kind
        assert audited(0x04) == AUDIT_EXCLUSIVE


def test_audit_digest_is_the_chain_of_cp_and_rp_hashes(tpm: Tpm) -> None:
    """Part 1 §32.4: digest := H(digest || cpHash || rpHash), from zeros at the first use."""
    s = start_session(tpm.execute, auth_hash=SHA384)
    expected = bytes(48)
    for n in (4, 9):
        use = Use(s, AUDIT | CONTINUE, auth=None)
        r = call(tpm.execute, CC.GetRandom, [], u16(n), [use])
        cp = sc.digest(SHA384, u32(CC.GetRandom), u16(n))
        rp = sc.digest(SHA384, u32(0), u32(CC.GetRandom), r.parameters)
        expected = sc.digest(SHA384, expected, cp, rp)
    (state,) = tpm.vol.sessions.loaded
    assert state.audit and state.audit_digest == expected


# ---------------------------------------------------------------------------- state


def test_sessions_live_in_the_volatile_state_and_end_at_startup(platform: Platform) -> None:
    """A loaded session travels in the volatile blob (save → load → save is byte-stable and
    the session still authorizes after a power cycle that resumes the blob); TPM2_Startup
    flushes it."""
    tpm = power_on(platform)
    assert rc_of(tpm.execute(startup())) == 0
    s = start_session(tpm.execute, bind=TPM_RH_OWNER, sym_alg=ALG_AES, sym_bits=128)
    assert pcr_event(tpm.execute, b"1", [Use(s, DECRYPT | CONTINUE)]).rc == 0
    blob = tpm.volatile_blob()
    platform.storage.store(BlobKind.VOLATILE, blob)
    again = power_on(platform)
    assert again.volatile_blob() == blob
    assert pcr_event(again.execute, b"2", [Use(s, DECRYPT | CONTINUE)]).rc == 0
    assert loaded_sessions(again.execute) == [s.handle]
    assert rc_of(again.execute(shutdown(clear=False))) == 0
    platform.storage.delete(BlobKind.VOLATILE)
    third = power_on(platform)
    assert rc_of(third.execute(startup(clear=False))) == 0
    assert loaded_sessions(third.execute) == []


def test_sessions_do_not_leak_between_tpms() -> None:
    """Two TPMs keep separate session tables."""
    a, b = (power_on(Platform(MemoryStorage(), clock=FakeClock())) for _ in range(2))
    for t in (a, b):
        assert rc_of(t.execute(startup())) == 0
    start_session(a.execute)
    assert loaded_sessions(a.execute) == [0x02000000] and loaded_sessions(b.execute) == []


# ---------------------------------------------------------------------------- ESAPI


def connect(emu: Emulator) -> ESAPI:
    """ESAPI over tpm2-tss's swtpm TCTI."""
    return ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))


def sym_def(kind: str) -> TPMT_SYM_DEF:
    """A TPMT_SYM_DEF: null, xor, aes128 or aes256."""
    if kind == "null":
        return TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
    if kind == "xor":
        return TPMT_SYM_DEF(algorithm=TPM2_ALG.XOR,
                            keyBits=TPMU_SYM_KEY_BITS(exclusiveOr=TPM2_ALG.SHA256))
    return TPMT_SYM_DEF(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=int(kind[3:])),
                        mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))


@pytest.fixture
def esys(emulator: Emulator) -> Iterator[ESAPI]:
    """ESAPI to a fresh swtpm_py."""
    ctx = connect(emulator)
    yield ctx
    ctx.close()


@pytest.mark.parametrize("kind", ["null", "xor", "aes128", "aes256"])
def test_esapi_sessions(esys: ESAPI, kind: str) -> None:
    """ESAPI (which verifies every response HMAC and decrypts the response parameter) with
    unbound and bound sessions of every authHash: GetRandom, Hash and PCR_Event give the
    values hashlib computes."""
    enc = TPMA_SESSION.ENCRYPT if kind != "null" else TPMA_SESSION.AUDIT
    dec = TPMA_SESSION.DECRYPT if kind != "null" else TPMA_SESSION.AUDIT
    keep = TPMA_SESSION.CONTINUESESSION
    for bind in (ESYS_TR.NONE, ESYS_TR.OWNER, ESYS_TR.PCR16):
        for alg in (TPM2_ALG.SHA1, TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512):
            s = esys.start_auth_session(ESYS_TR.NONE, bind, TPM2_SE.HMAC, sym_def(kind), alg)
            esys.trsess_set_attributes(s, keep | enc)
            assert len(bytes(esys.get_random(24, session1=s))) == 24
            esys.trsess_set_attributes(s, keep | enc | dec)
            data = os.urandom(64)
            d, _ = esys.hash(TPM2B_MAX_BUFFER(data), TPM2_ALG.SHA384, ESYS_TR.OWNER, session1=s)
            assert bytes(d) == hashlib.sha384(data).digest()
            before = bytes(esys.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))[2][0])
            esys.trsess_set_attributes(s, keep | (dec if kind != "null" else 0))
            values = esys.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(data), session1=s)
            got = {v.hashAlg: bytes(getattr(v.digest, HASHLIB[v.hashAlg])) for v in values}
            assert got == {a: hashlib.new(name, data).digest() for a, name in HASHLIB.items()}
            after = bytes(esys.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))[2][0])
            assert after == hashlib.sha256(before + hashlib.sha256(data).digest()).digest()
            esys.flush_context(s)


def test_esapi_continue_session_and_capability(esys: ESAPI) -> None:
    """A session is listed by GetCapability(HANDLES) while loaded; continueSession clear
    flushes it with the response."""
    s = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym_def("aes128"),
                                TPM2_ALG.SHA256)
    assert esys_sessions(esys) == [0x02000000]
    esys.trsess_set_attributes(s, TPMA_SESSION.ENCRYPT)
    esys.get_random(8, session1=s)
    assert esys_sessions(esys) == []


def esys_sessions(ctx: ESAPI) -> list[int]:
    """The loaded sessions by GetCapability(HANDLES) through ESAPI."""
    _, data = ctx.get_capability(TPM2_CAP.HANDLES, 0x02000000, 10)
    handles = data.data.handles
    return [handles[i] for i in range(handles.count)]


def primary_with_auth(ctx: ESAPI, auth: bytes, no_da: bool) -> ESYS_TR:
    """An ECC storage primary under the owner with userAuth ``auth``."""
    attrs = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
             | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
             | TPMA_OBJECT.USERWITHAUTH | (TPMA_OBJECT.NODA if no_da else 0))
    public = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=attrs)
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(auth)))
    return ctx.create_primary(sensitive, public)[0]


def test_wrong_password_through_hmac_session_matches_swtpm(both: dict[str, Emulator]) -> None:
    """A wrong authValue in an HMAC session: TPM_RC_BAD_AUTH for the owner and a PCR (exempt
    from DA), TPM_RC_AUTH_FAIL for a DA-protected object, on both emulators."""
    sealed = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=TPMA_OBJECT.FIXEDTPM
                                | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH)
    data = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(b"secret")))
    got: dict[str, list[int]] = {}
    for kind, emu in both.items():
        ctx = connect(emu)
        try:
            codes = []
            s = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                       sym_def("null"), TPM2_ALG.SHA256)
            for protected in (False, True):
                key = primary_with_auth(ctx, b"right", no_da=not protected)
                ctx.tr_set_auth(key, b"wrong")
                with pytest.raises(TSS2_Exception) as exc:
                    ctx.create(key, data, sealed, session1=s)
                codes.append(exc.value.rc)
                ctx.tr_set_auth(key, b"right")
                ctx.create(key, data, sealed, session1=s)
                ctx.flush_context(key)
            ctx.tr_set_auth(ESYS_TR.PCR16, b"wrong")
            with pytest.raises(TSS2_Exception) as exc:
                ctx.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"x"), session1=s)
            codes.append(exc.value.rc)
            ctx.flush_context(s)
            got[kind] = codes
        finally:
            ctx.close()
    assert got["swtpm_py"] == got["swtpm"] == [BAD_AUTH_S1, AUTH_FAIL_S1, BAD_AUTH_S1]


# ---------------------------------------------------------------------------- property


_SYMS = [u16(ALG_NULL), u16(ALG_XOR) + u16(SHA256), u16(ALG_AES) + u16(128) + u16(0x43),
         u16(ALG_AES) + u16(256) + u16(0x43), u16(ALG_AES) + u16(128) + u16(0x44)]
_POLICY_COMMANDS = [
    (CC.PolicyRestart, st.just(b"")), (CC.PolicyGetDigest, st.just(b"")),
    (CC.PolicyAuthValue, st.just(b"")), (CC.PolicyPassword, st.just(b"")),
    (CC.PolicyPhysicalPresence, st.just(b"")),
    (CC.PolicyCommandCode, st.sampled_from([CC.PCR_Event, CC.Create, 0x1FF]).map(u32)),
    (CC.PolicyLocality, st.integers(0, 255).map(lambda v: bytes([v]))),
    (CC.PolicyCpHash, st.binary(max_size=40).map(b2)),
    (CC.PolicyNameHash, st.binary(max_size=40).map(b2)),
    (CC.PolicyTemplate, st.binary(max_size=40).map(b2)),
    (CC.PolicyOR, st.lists(st.binary(max_size=34), max_size=9).map(
        lambda ds: u32(len(ds)) + b"".join(b2(d) for d in ds))),
    (CC.PolicyPCR, st.tuples(st.binary(max_size=34), st.sampled_from([0, 1, 16, 23])).map(
        lambda a: b2(a[0]) + u32(1) + u16(SHA256) + b"\x03"
        + (1 << a[1]).to_bytes(3, "little"))),
]


@st.composite
def _session_ops(draw: st.DrawFn) -> list[tuple]:
    """A random sequence of session operations: starts (valid and invalid), flushes, commands
    with random authorization areas, policy commands with random arguments."""
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["start", "flush", "command", "policy"]))
        handle = draw(st.sampled_from([0x02000000, 0x02000001, 0x02000002, 0x03000000,
                                       0x03000001, 0x03000002, 0x03000003, RH.PW]))
        if kind == "start":
            ops.append(("start", draw(st.sampled_from([0, 1, 3, 2])),
                        draw(st.sampled_from([SHA1, SHA256, SHA512, 0x10])),
                        draw(st.integers(0, 66)), draw(st.sampled_from(_SYMS)),
                        draw(st.sampled_from([RH.NULL, TPM_RH_OWNER, PCR16, RH.LOCKOUT]))))
        elif kind == "flush":
            ops.append(("flush", handle))
        elif kind == "command":
            entries = draw(st.lists(st.tuples(
                st.sampled_from([0x02000000, 0x02000001, 0x03000001, RH.PW]),
                st.binary(max_size=20), st.integers(0, 255).filter(lambda a: not a & 0x18),
                st.binary(max_size=32)), min_size=1, max_size=3))
            ops.append(("command", draw(st.sampled_from(["event", "random", "hash"])),
                        entries))
        else:
            code, args = draw(st.sampled_from(_POLICY_COMMANDS))
            ops.append(("policy", code, handle, draw(args)))
    return ops


def _well_formed(response: bytes) -> int:
    """The response code of a well-formed response; no internal failure."""
    tag, size, rc = struct.unpack_from(">HII", response)
    assert size == len(response) and tag in (0x8001, 0x8002)
    assert rc != 0x101, "TPM_RC_FAILURE: an internal error"
    assert (tag == 0x8002) <= (rc == 0)
    return rc


@given(ops=_session_ops())
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
def test_random_session_operations_never_break_the_tpm(ops: list[tuple]) -> None:
    """Whatever sequence of session operations arrives, every response is well formed, no
    internal error occurs, and the volatile state still serialises and loads back."""
    platform = Platform(MemoryStorage(), clock=FakeClock())
    tpm = power_on(platform)
    assert rc_of(tpm.execute(startup())) == 0
    bodies = {"event": (CC.PCR_Event, u32(PCR16), b2(b"event")),
              "random": (CC.GetRandom, b"", u16(8)),
              "hash": (CC.Hash, b"", b2(b"data") + u16(SHA256) + u32(RH.NULL))}
    for op in ops:
        if op[0] == "start":
            _, se, alg, n, sym, bind = op
            resp = tpm.execute(cmd(CC.StartAuthSession, u32(RH.NULL) + u32(bind) + b2(b"n" * n)
                                   + b2(b"") + bytes([se]) + sym + u16(alg)))
        elif op[0] == "flush":
            resp = tpm.execute(cmd(CC.FlushContext, u32(op[1])))
        elif op[0] == "command":
            code, handles, params = bodies[op[1]]
            area = b"".join(u32(h) + b2(nonce) + bytes([attrs]) + b2(mac)
                            for h, nonce, attrs, mac in op[2])
            resp = tpm.execute(cmd(code, handles + u32(len(area)) + area + params, 0x8002))
        else:
            resp = tpm.execute(cmd(op[1], u32(op[2]) + op[3]))
        _well_formed(resp)
    blob = tpm.volatile_blob()
    platform.storage.store(BlobKind.VOLATILE, blob)
    assert power_on(platform).volatile_blob() == blob


# ---------------------------------------------------------------------------- declarations

#: The commands whose first parameter / first response parameter sessions may encrypt: the
#: reference's DECRYPT_2 and ENCRYPT_2 attributes (libtpms CommandAttributeData.h, which swtpm
#: 0.7.1 uses), for the commands this TPM implements or soon will.
DECRYPT_2 = {CC.CreatePrimary, CC.CreateLoaded, CC.PCR_Event, CC.StirRandom,
             CC.ObjectChangeAuth, CC.Create,
             CC.Load, CC.LoadExternal, CC.Hash, CC.StartAuthSession, CC.PolicySecret,
             CC.PolicyCpHash, CC.PolicyNameHash, CC.PolicyPCR, CC.PolicyTemplate,
             CC.PolicyNV, CC.PolicyAuthorize, CC.PolicyCounterTimer, CC.PolicyTicket,
             CC.PolicyDuplicationSelect, CC.PolicySigned, CC.HierarchyChangeAuth,
             CC.NV_DefineSpace, CC.NV_Write, CC.NV_Extend, CC.NV_ChangeAuth, CC.Sign,
             CC.SequenceUpdate, CC.HashSequenceStart, CC.HMAC_Start, CC.EventSequenceComplete,
             CC.SequenceComplete, CC.Import, CC.Duplicate, CC.Quote,
             CC.Certify, CC.RSA_Encrypt, CC.RSA_Decrypt, CC.VerifySignature,
             CC.PCR_SetAuthValue, CC.PCR_SetAuthPolicy, CC.SetPrimaryPolicy, CC.ECDH_ZGen,
             CC.EncryptDecrypt2, CC.HMAC, CC.CertifyCreation, CC.GetTime,
             CC.GetSessionAuditDigest, CC.GetCommandAuditDigest, CC.NV_Certify,
             CC.Commit, CC.ZGen_2Phase, CC.MakeCredential, CC.ActivateCredential, CC.Rewrap,
             CC.CertifyX509}
ENCRYPT_2 = {CC.CreatePrimary, CC.CreateLoaded, CC.ObjectChangeAuth, CC.Create, CC.Load,
             CC.LoadExternal,
             CC.ReadPublic, CC.GetRandom, CC.GetTestResult, CC.Hash, CC.StartAuthSession,
             CC.PolicySecret, CC.PolicySigned, CC.PolicyGetDigest, CC.NV_Read, CC.Unseal,
             CC.NV_ReadPublic, CC.SequenceComplete, CC.Import, CC.Duplicate, CC.Quote,
             CC.Certify, CC.RSA_Encrypt, CC.RSA_Decrypt, CC.ECDH_KeyGen, CC.ECDH_ZGen,
             CC.EncryptDecrypt, CC.EncryptDecrypt2, CC.HMAC, CC.CertifyCreation, CC.GetTime,
             CC.GetSessionAuditDigest, CC.GetCommandAuditDigest, CC.NV_Certify,
             CC.Commit, CC.ZGen_2Phase, CC.EC_Ephemeral, CC.MakeCredential,
             CC.ActivateCredential, CC.Rewrap, CC.CertifyX509}
@pytest.mark.parametrize("code", sorted(COMMANDS), ids=lambda code: CC(code).name)
def test_encryptable_parameters_are_the_references(code: int) -> None:
    """The registry derives from each command's first parameter and first response parameter
    whether a session may encrypt them; the result is the reference's attribute table."""
    spec = COMMANDS[code]
    assert (spec.decrypt, spec.encrypt) == (code in DECRYPT_2, code in ENCRYPT_2)


def test_sessions_bound_to_objects_match_swtpm(both: dict[str, Emulator]) -> None:
    """A session bound to an object with an authValue authorizes that object without the
    authValue in its HMACs and, salted by it, another entity (ESAPI verifies every response);
    an object loaded without its sensitive area cannot be bound (TPM_RC_HANDLE, handle 2)."""
    sealed = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=TPMA_OBJECT.FIXEDTPM
                                | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH)
    data = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(b"secret")))
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    external = TPM2B_PUBLIC.parse("ecc256", objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT
                                  | TPMA_OBJECT.USERWITHAUTH)
    external.publicArea.unique.ecc.x = point.x.to_bytes(32, "big")
    external.publicArea.unique.ecc.y = point.y.to_bytes(32, "big")
    got = {}
    for kind, emu in both.items():
        ctx = connect(emu)
        try:
            key = primary_with_auth(ctx, b"key auth", no_da=True)
            codes = []
            for kind_of_sym in ("null", "aes128"):
                s = ctx.start_auth_session(ESYS_TR.NONE, key, TPM2_SE.HMAC,
                                           sym_def(kind_of_sym), TPM2_ALG.SHA256)
                attrs = TPMA_SESSION.CONTINUESESSION | (
                    TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT if kind_of_sym != "null" else 0)
                ctx.trsess_set_attributes(s, attrs)
                ctx.create(key, data, sealed, session1=s)
                before = bytes(ctx.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))[2][0])
                ctx.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION)
                ctx.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"bound"), session1=s)
                after = bytes(ctx.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))[2][0])
                assert after == hashlib.sha256(before + hashlib.sha256(b"bound").digest()).digest()
                ctx.flush_context(s)
            public_only = ctx.load_external(external, hierarchy=ESYS_TR.RH_NULL)
            try:
                ctx.start_auth_session(ESYS_TR.NONE, public_only, TPM2_SE.HMAC, sym_def("null"),
                                       TPM2_ALG.SHA256)
                codes.append(0)
            except TSS2_Exception as exc:
                codes.append(exc.rc)
            ctx.flush_context(public_only)
            ctx.flush_context(key)
            got[kind] = codes
        finally:
            ctx.close()
    assert got["swtpm_py"] == got["swtpm"] == [0x28B]


# ---------------------------------------------------------------------------- salted sessions

_DECRYPT_KEY = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA)


@pytest.mark.parametrize("template", ["rsa2048:aes128cfb", "ecc256:aes128cfb",
                                      "ecc384:aes256cfb"])
def test_salted_sessions(both: dict[str, Emulator], template: str) -> None:
    """Salted sessions (Part 1 §19.6.8 with Part 1 §24 secret sharing: RSA-OAEP or ECDH +
    KDFe, label "SECRET"), unbound and bound, with AES-CFB encryption both ways: ESAPI
    encrypts the salt to the TPM's key, derives the same session key and verifies every
    response; the values are hashlib's."""
    for emu in both.values():
        ctx = connect(emu)
        try:
            key = ctx.create_primary(TPM2B_SENSITIVE_CREATE(),
                                     TPM2B_PUBLIC.parse(template, objectAttributes=_DECRYPT_KEY))[0]
            for bind in (ESYS_TR.NONE, ESYS_TR.OWNER):
                for alg in (TPM2_ALG.SHA1, TPM2_ALG.SHA256, TPM2_ALG.SHA512):
                    s = ctx.start_auth_session(key, bind, TPM2_SE.HMAC, sym_def("aes128"), alg)
                    ctx.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION
                                              | TPMA_SESSION.ENCRYPT | TPMA_SESSION.DECRYPT)
                    data = os.urandom(48)
                    digest, _ = ctx.hash(TPM2B_MAX_BUFFER(data), TPM2_ALG.SHA256,
                                         ESYS_TR.OWNER, session1=s)
                    assert bytes(digest) == hashlib.sha256(data).digest(), emu.kind
                    ctx.flush_context(s)
            ctx.flush_context(key)
        finally:
            ctx.close()


def test_tpm_key_errors_match_swtpm(both: dict[str, Emulator]) -> None:
    """A salt that is empty or does not decrypt (TPM_RC_VALUE + P2), a tpmKey that is no
    decryption key (TPM_RC_ATTRIBUTES + H1) or not asymmetric (TPM_RC_KEY + H1): swtpm's
    codes."""
    signing = TPM2B_PUBLIC.parse("ecc256", objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT
                                 | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
                                 | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH)
    symmetric = TPM2B_PUBLIC.parse("aes128cfb", objectAttributes=TPMA_OBJECT.DECRYPT
                               | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
                               | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                               | TPMA_OBJECT.USERWITHAUTH)
    storage = TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=_DECRYPT_KEY)
    got = {}
    for kind, emu in both.items():
        ctx = connect(emu)
        try:
            handles = [ctx.tr_get_tpm_handle(ctx.create_primary(TPM2B_SENSITIVE_CREATE(), t)[0])
                       for t in (storage, signing, symmetric)]
            rsa_key, sign_key, symmetric_key = handles
            codes = [rc_of(start_raw(emu.command, b"n" * 16, tpm_key=rsa_key)),
                     rc_of(start_raw(emu.command, b"n" * 16, tpm_key=rsa_key, salt=b"x" * 256)),
                     rc_of(start_raw(emu.command, b"n" * 16, tpm_key=rsa_key, salt=b"x" * 10)),
                     rc_of(start_raw(emu.command, b"n" * 16, tpm_key=sign_key, salt=b"x" * 65)),
                     rc_of(start_raw(emu.command, b"n" * 16, tpm_key=symmetric_key, salt=b"x"))]
            for handle in handles:
                emu.command(cmd(CC.FlushContext, u32(handle)))
            got[kind] = codes
        finally:
            ctx.close()
    assert got["swtpm_py"] == got["swtpm"] == [0x2C4, 0x2C4, 0x2C4, 0x182, 0x19C]
