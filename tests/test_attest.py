"""Attestation (Part 3 §18, §31.16): TPM2_Quote, TPM2_Certify, TPM2_CertifyCreation,
TPM2_GetTime, TPM2_GetSessionAuditDigest, TPM2_GetCommandAuditDigest, TPM2_NV_Certify.

* In process: the TPMS_ATTEST of each command parsed field by field here (an independent
  parser), its signature verified with ``cryptography``; PCR digests recomputed from
  TPM2_PCR_Read; the clock obfuscation of non-endorsement signers undone with an independent
  KDFa over shProof; the command and session audit digests recomputed client side.
* Differential: the same raw commands to swtpm_py and the real swtpm 0.7.1 with the same
  external keys (same Names): the same response codes for valid and invalid calls, and the
  same deterministic TPMS_ATTEST fields (magic, type, qualifiedSigner, extraData, attested).
* tpm2-tools (quote + checkquote, certify, certifycreation, gettime, nvcertify,
  getcommandauditdigest, getsessionauditdigest) and tpm2-pytss ESAPI on both emulators.
* Anonymous signing (ECDAA after TPM2_Commit) and the cancelled orderly shutdown after a
  signed attestation, against swtpm.

Measured on swtpm 0.7.1 and asserted for both: qualifyingData takes up to 66 octets
(sizeof(TPMT_HA)); a quote without a signing key, or with a key without scheme and no
inScheme, is TPM_RC_SCHEME + P2; an unsigned attestation names TPM_RH_NULL as its signer;
NV_Certify with size and offset zero gives TPM_ST_ATTEST_NV_DIGEST; an ECDAA attestation has
empty qualifiedSigner and extraData; a signed attestation after Shutdown(STATE) makes the
next Startup(STATE) fail (TPM_RC_VALUE + P1), an unsigned one does not.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ST
from tpm2_pytss.types import (TPM2B_PUBLIC, TPML_PCR_SELECTION, TPMS_ATTEST as PYTSS_ATTEST,
                              TPMT_SIG_SCHEME)

from emulator import Emulator
from objcmd import (A, NULL_SYM, SIGNING, authed, b2, cmd, create, create_primary, flush, load,
                    parse_create, parse_create_primary, parse_load, parse_read_public, pw, rc,
                    read_public, rsa_template, u16)
from sessclient import AUDIT, CONTINUE, Use, call, kdfa, start_session
from test_signing import RSA_KEY, loaded, rsa_public, rsa_sensitive, scheme

from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, PT, RH, ST

MAGIC = 0xFF544347
H1, H2, H3, P1, P2, P3, P4 = 0x100, 0x200, 0x300, 0x140, 0x240, 0x340, 0x440
TPM_RC_KEY, TPM_RC_SCHEME, TPM_RC_SIZE, TPM_RC_TICKET = 0x09C, 0x092, 0x095, 0x0A0
TPM_RC_TYPE, TPM_RC_VALUE = 0x08A, 0x084
TPM_RC_NV_RANGE, TPM_RC_NV_UNINITIALIZED, TPM_RC_NV_AUTHORIZATION = 0x146, 0x14A, 0x149
#: A restricted RSASSA-SHA256 signing key (an AK); noDA so that raw commands see no RETRY.
AK_TEMPLATE = rsa_template(SIGNING | A.RESTRICTED | A.NO_DA, NULL_SYM,
                           u16(ALG.RSASSA, ALG.SHA256))
#: An unrestricted signing key without a scheme.
PLAIN_TEMPLATE = rsa_template(SIGNING | A.NO_DA, NULL_SYM)
RSASSA = scheme(ALG.RSASSA, ALG.SHA256)
NV_INDEX = 0x01500001


def u32(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v) for v in values)


def pcr_selection(bank: int, pcrs: list[int]) -> bytes:
    """TPML_PCR_SELECTION of one bank."""
    bits = bytearray(3)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return u32(1) + u16(bank) + b"\x03" + bytes(bits)


# ---------------------------------------------------------------------------- parsing


class Reader:
    """Big-endian reader of TPM structures."""

    def __init__(self, data: bytes) -> None:
        self.s = io.BytesIO(data)

    def int(self, size: int) -> int:
        return int.from_bytes(self.s.read(size), "big")

    def b2(self) -> bytes:
        return self.s.read(self.int(2))

    def rest(self) -> bytes:
        return self.s.read()


@dataclass
class Attest:
    """A parsed TPMS_ATTEST (Part 2 §10.12.12) with the raw octets that were signed."""
    raw: bytes
    magic: int
    type: int
    signer: bytes
    extra: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: int
    firmware: int
    attested: dict


def parse_attest(raw: bytes) -> Attest:
    r = Reader(raw)
    head = (r.int(4), r.int(2), r.b2(), r.b2(), r.int(8), r.int(4), r.int(4), r.int(1),
            r.int(8))
    st = head[1]
    if st == ST.ATTEST_QUOTE:
        sel = [(r.int(2), r.s.read(r.int(1))) for _ in range(r.int(4))]
        attested = dict(select=sel, digest=r.b2())
    elif st == ST.ATTEST_CERTIFY:
        attested = dict(name=r.b2(), qualified_name=r.b2())
    elif st == ST.ATTEST_CREATION:
        attested = dict(name=r.b2(), creation_hash=r.b2())
    elif st == ST.ATTEST_TIME:
        attested = dict(time=r.int(8), clock=r.int(8), reset_count=r.int(4),
                        restart_count=r.int(4), safe=r.int(1), firmware=r.int(8))
    elif st == ST.ATTEST_COMMAND_AUDIT:
        attested = dict(counter=r.int(8), alg=r.int(2), digest=r.b2(), command_digest=r.b2())
    elif st == ST.ATTEST_SESSION_AUDIT:
        attested = dict(exclusive=r.int(1), digest=r.b2())
    elif st == ST.ATTEST_NV:
        attested = dict(name=r.b2(), offset=r.int(2), contents=r.b2())
    elif st == ST.ATTEST_NV_DIGEST:
        attested = dict(name=r.b2(), digest=r.b2())
    else:
        raise AssertionError(f"attestation type 0x{st:04x}")
    assert r.rest() == b"", "trailing octets after TPMS_ATTEST"
    return Attest(raw, *head, attested=attested)


def attest_response(response: bytes) -> tuple[Attest, bytes]:
    """(TPMS_ATTEST, marshalled TPMT_SIGNATURE) of an attestation command's response."""
    assert rc(response) == 0, hex(rc(response))
    size = struct.unpack_from(">I", response, 10)[0]      # parameterSize
    r = Reader(response[14:14 + size])
    attest = parse_attest(r.b2())
    return attest, r.rest()


def verify_rsassa(modulus: bytes, attest: Attest, signature: bytes) -> None:
    """Raise unless ``signature`` (TPMT_SIGNATURE, RSASSA-SHA256) signs the attestation."""
    r = Reader(signature)
    assert (r.int(2), r.int(2)) == (ALG.RSASSA, ALG.SHA256)
    key = rsa.RSAPublicNumbers(65537, int.from_bytes(modulus, "big")).public_key()
    key.verify(r.b2(), attest.raw, padding.PKCS1v15(), hashes.SHA256())


def modulus_of(execute, handle: int) -> bytes:
    public, _, _ = parse_read_public(execute(read_public(handle)))
    return public[-256:]


# ---------------------------------------------------------------------------- raw commands


def quote(handle: int, data: bytes = b"", in_scheme: bytes = scheme(),
          pcrs: bytes = pcr_selection(ALG.SHA256, [0, 16])) -> bytes:
    return authed(CC.Quote, u32(handle), b2(data) + in_scheme + pcrs)


def certify(obj: int, signer: int, data: bytes = b"", in_scheme: bytes = scheme()) -> bytes:
    return authed(CC.Certify, u32(obj, signer), b2(data) + in_scheme, pw(), pw())


def certify_creation(signer: int, obj: int, creation_hash: bytes, ticket: bytes,
                     data: bytes = b"", in_scheme: bytes = scheme()) -> bytes:
    return authed(CC.CertifyCreation, u32(signer, obj),
                  b2(data) + b2(creation_hash) + in_scheme + ticket)


def get_time(signer: int, data: bytes = b"", in_scheme: bytes = scheme()) -> bytes:
    return authed(CC.GetTime, u32(RH.ENDORSEMENT, signer), b2(data) + in_scheme, pw(), pw())


def get_command_audit_digest(signer: int, data: bytes = b"") -> bytes:
    return authed(CC.GetCommandAuditDigest, u32(RH.ENDORSEMENT, signer),
                  b2(data) + scheme(), pw(), pw())


def nv_certify(signer: int, size: int, offset: int, data: bytes = b"",
               auth: int = RH.OWNER, index: int = NV_INDEX) -> bytes:
    return authed(CC.NV_Certify, u32(signer, auth, index),
                  b2(data) + scheme() + u16(size, offset), pw(), pw())


def define_nv(execute, attrs: int = 0x02060006, size: int = 16) -> None:
    """An ordinary index written and read by the owner or itself (noDA)."""
    public = u32(NV_INDEX) + u16(ALG.SHA256) + u32(attrs) + b2(b"") + u16(size)
    assert rc(execute(authed(CC.NV_DefineSpace, u32(RH.OWNER), b2(b"") + b2(public)))) == 0


def write_nv(execute, data: bytes) -> None:
    assert rc(execute(authed(CC.NV_Write, u32(RH.OWNER, NV_INDEX), b2(data) + u16(0)))) == 0


def flush_transients(execute) -> None:
    """Flush every loaded object (the module's emulator pair is shared by its tests)."""
    r = execute(cmd(CC.GetCapability, u32(1, 0x80000000, 16)))    # TPM_CAP_HANDLES
    count = struct.unpack_from(">I", r, 15)[0]
    for handle in struct.unpack_from(f">{count}I", r, 19):
        assert rc(execute(flush(handle))) == 0


def primary(execute, template: bytes = AK_TEMPLATE, hierarchy: int = RH.ENDORSEMENT) -> dict:
    response = execute(create_primary(template, hierarchy))
    assert rc(response) == 0, hex(rc(response))
    return parse_create_primary(response)


def pcr_values(execute, bank: int, pcrs: list[int]) -> list[bytes]:
    r = Reader(execute(cmd(CC.PCR_Read, pcr_selection(bank, pcrs)))[10:])
    r.int(4)
    for _ in range(r.int(4)):
        r.int(2), r.s.read(r.int(1))
    return [r.b2() for _ in range(r.int(4))]


def firmware(execute) -> int:
    r = execute(cmd(CC.GetCapability, u32(6, PT.FIRMWARE_VERSION_1, 2)))
    _, v1, _, v2 = struct.unpack_from(">IIII", r, 19)
    return v1 << 32 | v2


# ---------------------------------------------------------------------------- in process


def test_quote_verifies_outside_the_tpm(tpm: Tpm) -> None:
    """A quote by an endorsement-hierarchy AK: signed over the TPMS_ATTEST octets, the PCR
    digest that of PCR_Read's values, the signer the AK's Qualified Name, extraData the nonce,
    and the clock and firmware in plain text (no obfuscation in the endorsement hierarchy)."""
    ex = tpm.execute
    ak = primary(ex)
    assert rc(ex(authed(CC.PCR_Extend, u32(16), u32(1) + u16(ALG.SHA256) + b"\x11" * 32))) == 0
    attest, sig = attest_response(ex(quote(ak["handle"], b"nonce-1")))
    verify_rsassa(modulus_of(ex, ak["handle"]), attest, sig)
    _, _, qualified = parse_read_public(ex(read_public(ak["handle"])))
    assert (attest.magic, attest.type, attest.signer, attest.extra) == (
        MAGIC, ST.ATTEST_QUOTE, qualified, b"nonce-1")
    assert attest.attested["select"] == [(ALG.SHA256, b"\x01\x00\x01")]
    values = pcr_values(ex, ALG.SHA256, [0, 16])
    assert attest.attested["digest"] == hashlib.sha256(b"".join(values)).digest()
    assert (attest.reset_count, attest.restart_count) == (tpm.perm.reset_count, 0)
    assert attest.firmware == firmware(ex)
    # The signature covers every octet: one changed bit fails.
    tampered = Attest(**{**attest.__dict__, "raw": attest.raw[:-1] + b"\x00"})
    with pytest.raises(Exception):
        verify_rsassa(modulus_of(ex, ak["handle"]), tampered, sig)


def test_clock_obfuscation_of_owner_keys(tpm: Tpm) -> None:
    """Part 1 "Privacy": a signer of the owner hierarchy (or none) sees resetCount,
    restartCount and firmwareVersion offset by KDFa(SHA-512, shProof, "OBFUSCATE",
    qualifiedSigner, -, 128) read as two little-endian UINT64 (as libtpms on x86); the
    attested TPMS_TIME_INFO of TPM2_GetTime stays in plain text."""
    ex = tpm.execute
    for signer in (primary(ex, PLAIN_TEMPLATE, RH.OWNER)["handle"], RH.NULL):
        attest, sig = attest_response(ex(get_time(signer, b"t", RSASSA)))
        if signer == RH.NULL:
            assert attest.signer == u32(RH.NULL) and sig == u16(ALG.NULL)
        stream = kdfa(ALG.SHA512, tpm.perm.sh_proof, b"OBFUSCATE", attest.signer, b"", 128)
        first, second = (int.from_bytes(stream[:8], "little"),
                         int.from_bytes(stream[8:], "little"))
        plain = attest.attested
        assert plain["firmware"] == firmware(ex)
        assert (plain["reset_count"], plain["restart_count"]) == (tpm.perm.reset_count, 0)
        assert attest.firmware == (plain["firmware"] + first) % 2**64
        assert attest.reset_count == (plain["reset_count"] + (second >> 32)) % 2**32
        assert attest.restart_count == (plain["restart_count"] + second) % 2**32
        assert 0 <= attest.clock - plain["clock"] < 1000


def test_certify_and_certify_creation(tpm: Tpm) -> None:
    """Certify names the object and its Qualified Name; CertifyCreation its Name and
    creationHash, and only with the creation ticket TPM2_Create gave (TPM_RC_TICKET + P4)."""
    ex = tpm.execute
    ak = primary(ex)
    parent = primary(ex, rsa_template(), RH.OWNER)
    created = parse_create(ex(create(parent["handle"], PLAIN_TEMPLATE)))
    obj, name = parse_load(ex(load(parent["handle"], created["private"], created["public"])))
    _, _, qualified = parse_read_public(ex(read_public(obj)))
    modulus = modulus_of(ex, ak["handle"])
    attest, sig = attest_response(ex(certify(obj, ak["handle"], b"cert")))
    verify_rsassa(modulus, attest, sig)
    assert attest.type == ST.ATTEST_CERTIFY
    assert attest.attested == dict(name=name, qualified_name=qualified)
    t = created["ticket"]
    ticket = u16(t.tag) + u32(t.hierarchy) + b2(t.digest)
    attest, sig = attest_response(ex(certify_creation(ak["handle"], obj,
                                                      created["creation_hash"], ticket)))
    verify_rsassa(modulus, attest, sig)
    assert attest.attested == dict(name=name, creation_hash=created["creation_hash"])
    wrong = ex(certify_creation(ak["handle"], obj, bytes(32), ticket))
    assert rc(wrong) == TPM_RC_TICKET + P4


def test_command_audit_digest_reported_then_reset(tpm: Tpm) -> None:
    """GetCommandAuditDigest reports the digest computed client side for a sequence of
    audited commands, the counter and the digest of the audit list; signed, it clears the
    digest, so the next audited command starts a new one and counts."""
    from test_audit import audited_sequence, set_audit
    ex = tpm.execute
    ak = primary(ex)
    log = audited_sequence(ex)
    attest, sig = attest_response(ex(get_command_audit_digest(ak["handle"], b"audit")))
    verify_rsassa(modulus_of(ex, ak["handle"]), attest, sig)
    codes = sorted([CC.SetCommandCodeAuditStatus, CC.PCR_Extend, CC.PCR_Read])
    assert attest.attested == dict(
        counter=1, alg=ALG.SHA256, digest=log.digest,
        command_digest=hashlib.sha256(struct.pack(">3I", *codes)).digest())
    assert tpm.vol.state_reset.command_audit_digest == b""
    # The next audited command starts a new digest: the counter moves on.
    assert rc(ex(set_audit(set_list=[CC.PCR_Read]))) == 0
    attest, _ = attest_response(ex(get_command_audit_digest(RH.NULL)))
    assert attest.attested["counter"] == 2 and len(attest.attested["digest"]) == 32
    # Unsigned, the report leaves the digest as it is (the reference's behaviour).
    again, _ = attest_response(ex(get_command_audit_digest(RH.NULL)))
    assert again.attested["digest"] == attest.attested["digest"]


def test_session_audit_digest(tpm: Tpm) -> None:
    """An HMAC session auditing GetRandom and PCR_Read: GetSessionAuditDigest reports
    H(H(zeros || cpHash1 || rpHash1) || cpHash2 || rpHash2) and that it is the exclusive audit
    session; a session that never audited is TPM_RC_TYPE on the session handle."""
    ex = tpm.execute
    ak = primary(ex)
    session = start_session(ex)
    digest = bytes(32)
    for code, params in ((CC.GetRandom, u16(8)),
                         (CC.PCR_Read, pcr_selection(ALG.SHA256, [0]))):
        result = call(ex, code, [], params, [Use(session, CONTINUE | AUDIT, auth=None)])
        assert result.rc == 0
        cp = hashlib.sha256(u32(code) + params).digest()
        rp = hashlib.sha256(u32(0) + u32(code) + result.parameters).digest()
        digest = hashlib.sha256(digest + cp + rp).digest()
    body = b2(b"sess") + scheme()
    attest, sig = attest_response(ex(authed(CC.GetSessionAuditDigest,
                                            u32(RH.ENDORSEMENT, ak["handle"], session.handle),
                                            body, pw(), pw())))
    verify_rsassa(modulus_of(ex, ak["handle"]), attest, sig)
    assert attest.type == ST.ATTEST_SESSION_AUDIT
    assert attest.attested == dict(exclusive=1, digest=digest)
    other = start_session(ex)
    r = ex(authed(CC.GetSessionAuditDigest, u32(RH.ENDORSEMENT, ak["handle"], other.handle),
                  body, pw(), pw()))
    assert rc(r) == TPM_RC_TYPE + H3


def test_nv_certify(tpm: Tpm) -> None:
    """NV_Certify attests a range of the index (TPM_ST_ATTEST_NV), or with size and offset
    zero the digest of all of it with the scheme's hash (TPM_ST_ATTEST_NV_DIGEST); the read
    rules of NV_Read apply."""
    ex = tpm.execute
    ak = primary(ex)
    define_nv(ex)
    assert rc(ex(nv_certify(ak["handle"], 4, 0))) == TPM_RC_NV_UNINITIALIZED
    write_nv(ex, b"0123456789abcdef")
    public = Reader(ex(cmd(CC.NV_ReadPublic, u32(NV_INDEX)))[10:])
    public.b2()
    index_name = public.b2()
    modulus = modulus_of(ex, ak["handle"])
    attest, sig = attest_response(ex(nv_certify(ak["handle"], 4, 3, b"nv")))
    verify_rsassa(modulus, attest, sig)
    assert attest.attested == dict(name=index_name, offset=3, contents=b"3456")
    attest, sig = attest_response(ex(nv_certify(ak["handle"], 0, 0)))
    verify_rsassa(modulus, attest, sig)
    assert attest.type == ST.ATTEST_NV_DIGEST
    assert attest.attested == dict(name=index_name,
                                   digest=hashlib.sha256(b"0123456789abcdef").digest())
    assert rc(ex(nv_certify(ak["handle"], 8, 9))) == TPM_RC_NV_RANGE


# ---------------------------------------------------------------------------- differential


def _deterministic(attest: Attest) -> tuple:
    """The fields two TPMs with the same keys must agree on (the clock, the firmware version
    and the obfuscated fields differ)."""
    attested = dict(attest.attested)
    for volatile in ("time", "clock", "firmware"):
        attested.pop(volatile, None)
    return attest.magic, attest.type, attest.signer, attest.extra, attested


def test_codes_and_structures_as_swtpm(pair: dict[str, Emulator]) -> None:
    """The same raw commands to swtpm_py and swtpm 0.7.1, with the same external keys loaded
    (same Names): the same response codes for valid and invalid calls, and the same
    deterministic fields of every attestation."""
    results: dict[str, list] = {}
    for kind, emu in pair.items():
        ex = emu.command
        flush_transients(ex)
        out: list = []
        ak_name, ak_modulus = b"", b""

        def run(what: str, command: bytes, same_keys: bool = True,
                unequal: tuple[str, ...] = ()) -> None:
            """``same_keys``: False where an object of a primary seed is attested (its Name
            differs between the TPMs: only the field names are compared); ``unequal``:
            attested fields compared by size only."""
            response = ex(command)
            entry = [what, hex(rc(response))]
            if rc(response) == 0:
                attest, sig = attest_response(response)
                fields = _deterministic(attest)
                for name in unequal:
                    fields[4][name] = len(fields[4][name])
                entry.append(fields if same_keys else (fields[:2], fields[3], sorted(fields[4])))
                if sig != u16(ALG.NULL):
                    # Every signer here holds RSA_KEY (the AK only signs "restricted" cases).
                    modulus = RSA_KEY.public_key().public_numbers().n.to_bytes(256, "big")
                    if attest.signer == ak_name:
                        modulus = ak_modulus
                    verify_rsassa(modulus, attest, sig)
                    entry.append("signed")
            out.append(entry)

        # At most three objects are loaded at a time (TPM_PT_HR_TRANSIENT_MIN).
        plain, _ = loaded(ex, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
        keyed, _ = loaded(ex, rsa_public(RSA_KEY, key_scheme=RSASSA), rsa_sensitive(RSA_KEY))
        sel = pcr_selection(ALG.SHA256, [0, 1, 2])
        run("quote", quote(keyed, b"n", pcrs=sel))
        run("quote inScheme", quote(plain, b"n", RSASSA, sel))
        run("quote sha1 bank", quote(keyed, b"n", pcrs=pcr_selection(ALG.SHA1, [0, 23])))
        run("quote no scheme", quote(plain))
        run("quote null signer", quote(RH.NULL, in_scheme=RSASSA))
        run("quote other scheme", quote(keyed, in_scheme=scheme(ALG.RSAPSS, ALG.SHA256)))
        run("quote other hash", quote(keyed, in_scheme=scheme(ALG.RSASSA, ALG.SHA1)))
        run("quote 66 octets", quote(keyed, b"x" * 66))
        run("quote 67 octets", quote(keyed, b"x" * 67))
        run("certify", certify(plain, keyed, b"c"))
        run("certify unsigned", certify(keyed, RH.NULL, b"u"))
        run("certify no scheme", certify(keyed, plain))
        run("certify ecdsa on rsa", certify(keyed, plain,
                                            in_scheme=scheme(ALG.ECDSA, ALG.SHA256)))
        run("gettime", get_time(keyed, b"gt"))
        run("gettime unsigned", get_time(RH.NULL, b"gt"))
        run("command audit", get_command_audit_digest(RH.NULL, b"ca"))
        define_nv(ex)
        write_nv(ex, b"differential-nv!")
        run("nv certify", nv_certify(keyed, 5, 2, b"nv"))
        run("nv digest", nv_certify(keyed, 0, 0))
        run("nv digest unsigned", nv_certify(RH.NULL, 0, 0))
        run("nv range", nv_certify(keyed, 10, 7))
        run("nv too big", nv_certify(keyed, 1025, 0))
        run("nv by index auth", nv_certify(keyed, 1, 0, auth=NV_INDEX))
        run("nv wrong auth", nv_certify(keyed, 1, 0, auth=RH.PLATFORM))
        assert rc(ex(flush(plain))) == 0
        primary_key = primary(ex, rsa_template(), RH.OWNER)
        t = primary_key["ticket"]
        ticket = u16(t.tag) + u32(t.hierarchy) + b2(t.digest)
        run("certify creation", certify_creation(keyed, primary_key["handle"],
                                                 primary_key["creation_hash"], ticket, b"cc"),
            same_keys=False)
        run("certify creation bad ticket", certify_creation(keyed, primary_key["handle"],
                                                            bytes(32), ticket))
        run("certify creation wrong tag", certify_creation(
            keyed, primary_key["handle"], primary_key["creation_hash"],
            u16(ST.HASHCHECK) + ticket[2:]))
        ak = primary(ex)["handle"]
        _, _, ak_name = parse_read_public(ex(read_public(ak)))
        ak_modulus = modulus_of(ex, ak)
        run("quote restricted ak", quote(ak), same_keys=False)
        run("certify by ak", certify(keyed, ak), same_keys=False)
        for handle in (ak, primary_key["handle"]):
            assert rc(ex(flush(handle))) == 0
        decrypt, _ = loaded(ex, rsa_public(RSA_KEY, A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA),
                            rsa_sensitive(RSA_KEY))
        public_only, _ = loaded(ex, rsa_public(RSA_KEY))
        run("quote decrypt key", quote(decrypt, in_scheme=RSASSA))
        run("gettime decrypt key", get_time(decrypt, in_scheme=RSASSA))
        run("public only signer", quote(public_only, in_scheme=RSASSA))
        # Command audit after a change of the audit algorithm, then of a signed report (which
        # clears the digest) with GetCommandAuditDigest itself audited.
        from test_audit import set_audit
        assert rc(ex(set_audit(ALG.SHA384))) == 0
        run("command audit after algorithm change", get_command_audit_digest(RH.NULL))
        assert rc(ex(set_audit(set_list=[CC.GetCommandAuditDigest]))) == 0
        run("command audit signed", get_command_audit_digest(keyed))
        # The new digest covers the signed report's response (its clock): sizes only.
        run("command audit after signed", get_command_audit_digest(RH.NULL),
            unequal=("digest",))
        results[kind] = out
    for ours, theirs in zip(results["swtpm_py"], results["swtpm"], strict=True):
        assert ours == theirs


# ---------------------------------------------------------------------------- tpm2-tools


def _tool(emu: Emulator, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TPM2TOOLS_TCTI": emu.tcti})
    if check:
        assert r.returncode == 0, f"{args}: {r.stderr}"
    # tpm2-tools leave objects loaded; three slots fill up soon.
    subprocess.run(["tpm2_flushcontext", "-t"], capture_output=True, timeout=60,
                   env={**os.environ, "TPM2TOOLS_TCTI": emu.tcti})
    return r


def _pem_key(path: Path):
    return serialization.load_pem_public_key(path.read_bytes())


def _verify_tool_signature(key, message: bytes, signature: bytes) -> None:
    """tpm2-tools' plain signature output (-f plain): PKCS#1 v1.5 or DER ECDSA."""
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_tpm2_tools_attestation(any_emulator: Emulator, tmp_path: Path) -> None:
    """createek/createak, quote verified by tpm2_checkquote (a tampered message fails), and
    certify, certifycreation, gettime, nvcertify, getcommandauditdigest outputs verified here
    with ``cryptography`` against the AK's PEM public key."""
    emu, d = any_emulator, tmp_path
    p = {n: str(d / n) for n in ("ek.ctx", "ek.pub", "ak.ctx", "ak.pub", "ak.name", "ak.pem",
                                 "msg", "sig", "pcrs", "key.ctx", "key.pub", "key.priv",
                                 "primary.ctx", "chash", "ticket", "attest", "asig")}
    _tool(emu, "tpm2_createek", "-c", p["ek.ctx"], "-G", "rsa", "-u", p["ek.pub"])
    _tool(emu, "tpm2_createak", "-C", p["ek.ctx"], "-c", p["ak.ctx"], "-G", "rsa", "-g",
          "sha256", "-s", "rsassa", "-u", p["ak.pub"], "-f", "pem", "-n", p["ak.name"])
    ak_pem = d / "ak.pem"
    ak_pem.write_bytes(Path(p["ak.pub"]).read_bytes())
    key = _pem_key(ak_pem)
    _tool(emu, "tpm2_quote", "-c", p["ak.ctx"], "-l", "sha256:0,1,2", "-q", "abcdef01",
          "-m", p["msg"], "-s", p["sig"], "-o", p["pcrs"], "-g", "sha256")
    _tool(emu, "tpm2_checkquote", "-u", p["ak.pub"], "-m", p["msg"], "-s", p["sig"],
          "-f", p["pcrs"], "-g", "sha256", "-q", "abcdef01")
    attest = parse_attest(Path(p["msg"]).read_bytes())
    assert (attest.magic, attest.type, attest.extra) == (MAGIC, ST.ATTEST_QUOTE,
                                                         bytes.fromhex("abcdef01"))
    bad = d / "bad.msg"
    bad.write_bytes(Path(p["msg"]).read_bytes()[:-1] + b"\x00")
    assert _tool(emu, "tpm2_checkquote", "-u", p["ak.pub"], "-m", str(bad), "-s", p["sig"],
                 "-f", p["pcrs"], "-g", "sha256", "-q", "abcdef01",
                 check=False).returncode != 0

    # certify / certifycreation of a key created under an owner primary.
    _tool(emu, "tpm2_createprimary", "-C", "o", "-c", p["primary.ctx"])
    _tool(emu, "tpm2_create", "-C", p["primary.ctx"], "-u", p["key.pub"], "-r", p["key.priv"],
          "--creation-hash", p["chash"], "--creation-ticket", p["ticket"])
    _tool(emu, "tpm2_load", "-C", p["primary.ctx"], "-u", p["key.pub"], "-r", p["key.priv"],
          "-c", p["key.ctx"])
    _tool(emu, "tpm2_certify", "-c", p["key.ctx"], "-C", p["ak.ctx"], "-g", "sha256",
          "-o", p["attest"], "-s", p["asig"], "-f", "plain")
    attest = parse_attest(Path(p["attest"]).read_bytes())
    _verify_tool_signature(key, attest.raw, Path(p["asig"]).read_bytes())
    assert attest.type == ST.ATTEST_CERTIFY and attest.attested["name"][:2] == u16(ALG.SHA256)

    _tool(emu, "tpm2_certifycreation", "-C", p["ak.ctx"], "-c", p["key.ctx"],
          "-d", p["chash"], "-t", p["ticket"], "-g", "sha256", "-o", p["asig"],
          "-f", "plain", "--attestation", p["attest"])
    attest = parse_attest(Path(p["attest"]).read_bytes())
    _verify_tool_signature(key, attest.raw, Path(p["asig"]).read_bytes())
    assert attest.type == ST.ATTEST_CREATION
    assert attest.attested["creation_hash"] == Path(p["chash"]).read_bytes()[-32:]

    _tool(emu, "tpm2_gettime", "-c", p["ak.ctx"], "-g", "sha256", "-o", p["asig"],
          "-f", "plain", "--attestation", p["attest"], "-q", "cafe")
    attest = parse_attest(Path(p["attest"]).read_bytes())
    _verify_tool_signature(key, attest.raw, Path(p["asig"]).read_bytes())
    assert attest.type == ST.ATTEST_TIME and attest.extra == b"\xca\xfe"

    _tool(emu, "tpm2_nvdefine", "0x1500010", "-C", "o", "-s", "32", "-a",
          "ownerread|ownerwrite|authread|authwrite")
    nvdata = d / "nv.bin"
    nvdata.write_bytes(bytes(range(32)))
    _tool(emu, "tpm2_nvwrite", "0x1500010", "-C", "o", "-i", str(nvdata))
    _tool(emu, "tpm2_nvcertify", "-C", p["ak.ctx"], "-g", "sha256", "-f", "plain",
          "-o", p["asig"], "--attestation", p["attest"], "--size", "8", "--offset", "4",
          "0x1500010")
    attest = parse_attest(Path(p["attest"]).read_bytes())
    _verify_tool_signature(key, attest.raw, Path(p["asig"]).read_bytes())
    assert attest.type == ST.ATTEST_NV
    assert (attest.attested["offset"], attest.attested["contents"]) == (4, bytes(range(4, 12)))

    _tool(emu, "tpm2_getcommandauditdigest", "-c", p["ak.ctx"], "-g", "sha256",
          "-m", p["attest"], "-s", p["asig"], "-f", "plain")
    attest = parse_attest(Path(p["attest"]).read_bytes())
    _verify_tool_signature(key, attest.raw, Path(p["asig"]).read_bytes())
    assert attest.type == ST.ATTEST_COMMAND_AUDIT


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss_quote_and_certify(any_emulator: Emulator) -> None:
    """ESAPI Quote and Certify with an endorsement-hierarchy AK: the TPMS_ATTEST values, and
    the signatures verified with the AK's public key."""
    with ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}")) as esys:
        public = TPM2B_PUBLIC.parse(
            "rsa2048:rsassa-sha256:null",
            objectAttributes="sign|restricted|fixedtpm|fixedparent|sensitivedataorigin"
                             "|userwithauth|noda")
        ak, ak_public, _, _, _ = esys.create_primary(None, public, ESYS_TR.ENDORSEMENT)
        n = int.from_bytes(bytes(ak_public.publicArea.unique.rsa), "big")
        key = rsa.RSAPublicNumbers(65537, n).public_key()
        in_scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        quoted, signature = esys.quote(ak, TPML_PCR_SELECTION.parse("sha256:0,1,2"),
                                       b"pytss-nonce", in_scheme)
        attest, _ = PYTSS_ATTEST.unmarshal(bytes(quoted))
        assert (int(attest.magic), int(attest.type)) == (MAGIC, TPM2_ST.ATTEST_QUOTE)
        assert bytes(attest.extraData) == b"pytss-nonce"
        pcrs = esys.pcr_read(TPML_PCR_SELECTION.parse("sha256:0,1,2"))[2]
        digest = hashlib.sha256(b"".join(bytes(v) for v in pcrs)).digest()
        assert bytes(attest.attested.quote.pcrDigest) == digest
        key.verify(bytes(signature.signature.rsassa.sig), bytes(quoted), padding.PKCS1v15(),
                   hashes.SHA256())

        attestation, signature = esys.certify(ak, ak, b"self", in_scheme)
        attest, _ = PYTSS_ATTEST.unmarshal(bytes(attestation))
        name = bytes(esys.tr_get_name(ak))
        assert int(attest.type) == TPM2_ST.ATTEST_CERTIFY
        assert bytes(attest.attested.certify.name) == name
        key.verify(bytes(signature.signature.rsassa.sig), bytes(attestation),
                   padding.PKCS1v15(), hashes.SHA256())


def test_tpm2_tools_session_audit(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_getrandom audited by an audit session (tpm2_startauthsession --audit-session),
    then tpm2_getsessionauditdigest: the attestation of type SESSION_AUDIT, signed by the AK,
    with
    a digest of the session's hash size."""
    emu, d = any_emulator, tmp_path
    ak, ak_pub, session = str(d / "ak.ctx"), d / "ak.pem", str(d / "session.ctx")
    _tool(emu, "tpm2_createek", "-c", str(d / "ek.ctx"), "-G", "rsa", "-u", str(d / "ek.pub"))
    _tool(emu, "tpm2_createak", "-C", str(d / "ek.ctx"), "-c", ak, "-G", "rsa", "-g", "sha256",
          "-s", "rsassa", "-u", str(ak_pub), "-f", "pem", "-n", str(d / "ak.name"))
    _tool(emu, "tpm2_startauthsession", "--audit-session", "-S", session)
    _tool(emu, "tpm2_getrandom", "8", "-S", session, "-o", str(d / "random"))
    _tool(emu, "tpm2_getsessionauditdigest", "-c", ak, "-g", "sha256", "-m", str(d / "attest"),
          "-s", str(d / "sig"), "-f", "plain", "-S", session)
    attest = parse_attest((d / "attest").read_bytes())
    _verify_tool_signature(_pem_key(ak_pub), attest.raw, (d / "sig").read_bytes())
    assert attest.type == ST.ATTEST_SESSION_AUDIT
    assert len(attest.attested["digest"]) == 32 and attest.attested["digest"] != bytes(32)


@pytest.mark.parametrize("signer", ["ak", "null", "none"])
def test_signed_attestation_after_shutdown_as_swtpm(tmp_path: Path, platform: Platform,
                                                    signer: str) -> None:
    """A signed attestation after Shutdown(STATE) cancels the orderly shutdown (the
    reference's NvClearOrderly() in SignAttestInfo()): the next Startup(STATE) fails as after
    an unorderly shutdown; an unsigned one, or none, leaves TPM Resume possible. Same codes
    as swtpm (started without startup-clear, so that the Startup after _TPM_Init is ours).
    swtpm_py runs in process here: power_on() is its _TPM_Init."""
    from tpmcmd import power_on, shutdown, startup

    def sequence(ex) -> None:
        assert rc(ex(startup(clear=True))) == 0
        handle = primary(ex)["handle"] if signer == "ak" else RH.NULL
        assert rc(ex(shutdown(clear=False))) == 0
        if signer != "none":
            assert rc(ex(get_time(handle, b"after shutdown", RSASSA))) == 0

    with Emulator("swtpm", tmp_path / "swtpm", flags="not-need-init").start() as emu:
        sequence(emu.command)
        emu.ctrl(0x02, b"\0\0\0\0")                         # CMD_INIT: _TPM_Init
        theirs = rc(emu.command(startup(clear=False)))
    sequence(power_on(platform).execute)
    ours = rc(power_on(platform).execute(startup(clear=False)))
    assert ours == theirs
    assert (theirs != 0) == (signer == "ak")


def test_ecdaa_attestation_as_swtpm(pair: dict[str, Emulator]) -> None:
    """An anonymous scheme (ECDAA on BN P-256, after TPM2_Commit): the attestation names no
    signer and carries no extraData; the qualifying data goes into the signed digest
    H(qualifyingData || H(attest)), checked with the ECDAA verification equations; Certify
    leaves out the Qualified Name; the commit count is used up afterwards. Same codes and
    fields as swtpm."""
    from test_ecc_extras import (BN_P256, ECDAA, EXT_SIGN, check_ecdaa, do_commit,
                                 known_key, load as load_key)
    d, public, sensitive = known_key(0x0010, EXT_SIGN, ECDAA)
    results = {}
    for kind, emu in pair.items():
        ex = emu.command
        flush_transients(ex)
        handle = load_key(ex, public, sensitive)
        out = []
        for what in ("quote", "certify"):
            points, count = do_commit(ex, handle, BN_P256, d, False, False)
            in_scheme = u16(ALG.ECDAA, ALG.SHA256, count)
            command = (quote(handle, b"anon", in_scheme) if what == "quote"
                       else certify(handle, handle, b"anon", in_scheme))
            attest, sig = attest_response(ex(command))
            r = Reader(sig)
            assert (r.int(2), r.int(2)) == (ALG.ECDAA, ALG.SHA256)
            nonce_k, s = r.b2(), int.from_bytes(r.b2(), "big")
            digest = hashlib.sha256(b"anon" + hashlib.sha256(attest.raw).digest()).digest()
            check_ecdaa(BN_P256, d, points, nonce_k, s, digest)
            out.append(_deterministic(attest))
            out.append(hex(rc(ex(command))))           # the count is used up
        results[kind] = out
    assert results["swtpm_py"] == results["swtpm"]
    quoted, used, certified, _ = results["swtpm"]
    assert quoted[2:4] == (b"", b"") and certified[4]["qualified_name"] == b""
    assert used != "0x0"


def test_nv_certify_of_pin_index_as_swtpm(tmp_path: Path) -> None:
    """NV_Certify authorized by a PIN Pass index itself counts the use (pinCount + 1, even
    when the command then fails), until pinLimit makes the authValue unavailable: the same
    codes and certified contents as swtpm."""
    pin_pass = 0x02000000 | 0x00040000 | 0x00020000 | 0x00000002 | 0x90   # noDA, authread,
    results = {}                                        # ownerread, ownerwrite, TPM_NT_PIN_PASS
    for kind in ("swtpm_py", "swtpm"):
        with Emulator(kind, tmp_path / kind).start() as emu:
            ex = emu.command
            keyed, _ = loaded(ex, rsa_public(RSA_KEY, key_scheme=RSASSA),
                              rsa_sensitive(RSA_KEY))
            decrypt, _ = loaded(ex, rsa_public(RSA_KEY, A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA),
                                rsa_sensitive(RSA_KEY))
            define_nv(ex, pin_pass, 8)
            write_nv(ex, u32(0, 4))
            out = []
            # The decryption key fails (TPM_RC_KEY) after the authorization: counted.
            for signer in (keyed, RH.NULL, decrypt, keyed, keyed):
                r = ex(nv_certify(signer, 8, 0, auth=NV_INDEX))
                entry = [hex(rc(r))]
                if rc(r) == 0:
                    entry.append(attest_response(r)[0].attested["contents"])
                out.append(entry)
            results[kind] = out
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"][3] == ["0x0", u32(4, 4)]
