"""TPM2_Sign, TPM2_VerifySignature and TPM2_HMAC (Part 3 §20.3, §20.2, §15.5).

* In process: keys loaded with TPM2_LoadExternal from key pairs made by ``cryptography`` sign,
  and the signatures are verified outside the TPM (RSASSA also compared octet for octet: it is
  deterministic); signatures made outside are verified by the TPM, tampered ones refused; the
  verification ticket and hash-check tickets are recomputed from the hierarchy proofs; HMAC is
  compared with hmac.new().
* Differential: the same raw commands to swtpm_py and the real swtpm 0.7.1 (the same external
  keys on both): the same response codes, identical RSASSA signatures, and every ECDSA,
  EC-Schnorr and PSS signature made by one emulator verified by the other.
* tpm2-tools (tpm2_sign, tpm2_verifysignature, tpm2_hmac) and tpm2-pytss ESAPI, with the
  signatures checked by ``cryptography`` on the PEM key tpm2_readpublic exports.

Measured on swtpm 0.7.1 (libtpms 0.9) and asserted for both emulators:

* a PSS signature's salt is as long as the digest; EC-Schnorr is the reference's own form (the
  signatures of each emulator verify on the other);
* TPM2_Sign: a key without the sign attribute is TPM_RC_KEY on the handle (0x19c), an X.509
  signing key TPM_RC_ATTRIBUTES (0x182); no scheme, a conflicting scheme or hash, and a scheme
  of another key type (where the reference code would fail later) are TPM_RC_SCHEME + P2
  (0x2d2); a digest of the wrong size without ticket TPM_RC_SIZE + P1 (0x1d5); a ticket that
  does not match TPM_RC_TICKET + P3 (0x3e0) — a ticket of another hierarchy than the key's is
  accepted;
* TPM2_VerifySignature: a key without the sign attribute is TPM_RC_ATTRIBUTES on the handle,
  a bad signature TPM_RC_SIGNATURE + P2 (0x2db), a signature of another key type or NULL
  TPM_RC_SCHEME + P2, an HMAC key loaded public only TPM_RC_HANDLE + P2 (0x2cb);
* TPM2_HMAC: the rules of TPM2_HMAC_Start (0x18a, 0x2c4).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_SE, TPM2_ST, TPMA_SESSION
from tpm2_pytss.types import (TPM2B_DIGEST, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                              TPMT_SIG_SCHEME, TPMT_SYM_DEF, TPMT_TK_HASHCHECK)

from emulator import Emulator
from objcmd import (A, NULL_SYM, SIGNING, authed, b2, cmd, create, create_primary,
                    ecc_template, evict_control, keyedhash_template, load, load_external, parse_create,
                    parse_create_primary, parse_load, rc, rsa_template, u16)

from swtpm_py.tpm import Tpm
from swtpm_py.tpm.commands.hash import TICKET_HASH, hierarchy_proof
from swtpm_py.tpm.constants import ALG, CC, RH, ST
from swtpm_py.tpm.crypto import HASHES
from swtpm_py.tpm.signatures import TPMT_SIGNATURE_NULL, TPMT_TK_VERIFIED, TPMU_SIGNATURE
from swtpm_py.tpm.wire import TPM2B_DIGEST as W_TPM2B_DIGEST, parse_stream

H1, P1, P2, P3 = 0x100, 0x140, 0x240, 0x340
TPM_RC_KEY, TPM_RC_SCHEME, TPM_RC_SIGNATURE, TPM_RC_TICKET = 0x09C, 0x092, 0x09B, 0x0A0
TPM_RC_SIZE, TPM_RC_ATTRIBUTES, TPM_RC_TYPE, TPM_RC_VALUE = 0x095, 0x082, 0x08A, 0x084
TPM_RC_HASH, TPM_RC_TAG = 0x083, 0x097

HASH_CLASSES = {ALG.SHA1: hashes.SHA1, ALG.SHA256: hashes.SHA256, ALG.SHA384: hashes.SHA384,
                ALG.SHA512: hashes.SHA512}
CURVE_IDS = {3: ec.SECP256R1, 4: ec.SECP384R1, 5: ec.SECP521R1}
#: Attributes of a key loaded with TPM2_LoadExternal (no fixedTPM/fixedParent/restricted).
#: noDA: a DA-protected first use after Startup may be answered TPM_RC_RETRY (swtpm records
#: the DA state first), which raw commands here do not resubmit.
EXTERNAL_SIGNING = A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
NULL_TICKET = struct.pack(">HIH", ST.HASHCHECK, RH.NULL, 0)

Execute = Callable[[bytes], bytes]

# Key pairs generated once per test run and loaded into both emulators.
RSA_KEY = rsa.generate_private_key(65537, 2048)
ECC_KEYS = {3: ec.generate_private_key(ec.SECP256R1()), 4: ec.generate_private_key(ec.SECP384R1()),
            5: ec.generate_private_key(ec.SECP521R1())}
HMAC_SECRET = bytes(range(32))
#: The seedValue of the external HMAC key (as long as its nameAlg's digest).
HMAC_SEED = b"\x5a" * 32


# ---------------------------------------------------------------------------- raw commands


def scheme(alg: int = ALG.NULL, hash_alg: int | None = None) -> bytes:
    """TPMT_SIG_SCHEME."""
    return u16(alg) if hash_alg is None else u16(alg, hash_alg)


def sign(handle: int, digest: bytes, in_scheme: bytes = scheme(),
         ticket: bytes = NULL_TICKET, password: bytes = b"") -> bytes:
    """TPM2_Sign with a password session."""
    return authed(CC.Sign, struct.pack(">I", handle), b2(digest) + in_scheme + ticket,
                  struct.pack(">IHB", RH.PW, 0, 1) + b2(password))


def verify_signature(handle: int, digest: bytes, signature: bytes) -> bytes:
    """TPM2_VerifySignature (no authorization)."""
    return cmd(CC.VerifySignature, struct.pack(">I", handle) + b2(digest) + signature)


def hmac_cmd(handle: int, data: bytes, hash_alg: int = ALG.NULL) -> bytes:
    """TPM2_HMAC with an empty password."""
    return authed(CC.HMAC, struct.pack(">I", handle), b2(data) + u16(hash_alg))


def hash_cmd(data: bytes, alg: int = ALG.SHA256, hierarchy: int = RH.OWNER) -> bytes:
    """TPM2_Hash."""
    return cmd(CC.Hash, b2(data) + struct.pack(">HI", alg, hierarchy))


def hash_ticket(response: bytes) -> tuple[bytes, bytes]:
    """(digest, marshalled TPMT_TK_HASHCHECK) of a TPM2_Hash response."""
    assert rc(response) == 0, hex(rc(response))
    size = struct.unpack_from(">H", response, 10)[0]
    return response[12:12 + size], response[12 + size:]


def signature_of(response: bytes) -> bytes:
    """The marshalled TPMT_SIGNATURE of a TPM2_Sign response."""
    assert rc(response) == 0, hex(rc(response))
    stream = io.BytesIO(response[14:])
    parse_stream(TPMT_SIGNATURE_NULL, stream)
    return response[14:14 + stream.tell()]


def parsed_signature(response: bytes):
    """The TPMT_SIGNATURE of a TPM2_Sign response, parsed."""
    return TPMT_SIGNATURE_NULL.parse(signature_of(response))


def rsa_signature(alg: int, hash_alg: int, sig: bytes) -> bytes:
    """A marshalled TPMT_SIGNATURE of an RSA scheme."""
    return u16(alg, hash_alg) + b2(sig)


def ecc_signature(alg: int, hash_alg: int, r: int, s: int, size: int) -> bytes:
    """A marshalled TPMT_SIGNATURE of an ECC scheme."""
    return u16(alg, hash_alg) + b2(r.to_bytes(size, "big")) + b2(s.to_bytes(size, "big"))


# ---------------------------------------------------------------------------- external keys


def rsa_public(key: rsa.RSAPrivateKey, attrs: int = EXTERNAL_SIGNING,
               key_scheme: bytes = scheme()) -> bytes:
    """TPMT_PUBLIC of an RSA key pair made outside."""
    n = key.public_key().public_numbers().n
    return rsa_template(attrs, sym=NULL_SYM, scheme=key_scheme, bits=key.key_size,
                        unique=n.to_bytes(key.key_size // 8, "big"))


def rsa_sensitive(key: rsa.RSAPrivateKey) -> bytes:
    """TPMT_SENSITIVE of an RSA key pair: one prime."""
    p = key.private_numbers().p
    return u16(ALG.RSA) + b2(b"") + b2(b"") + b2(p.to_bytes(key.key_size // 16, "big"))


def ecc_public(key: ec.EllipticCurvePrivateKey, curve: int, attrs: int = EXTERNAL_SIGNING,
               key_scheme: bytes = scheme()) -> bytes:
    """TPMT_PUBLIC of an ECC key pair made outside."""
    size = (key.curve.key_size + 7) // 8
    nums = key.public_key().public_numbers()
    return ecc_template(attrs, sym=NULL_SYM, scheme=key_scheme, curve=curve,
                        x=nums.x.to_bytes(size, "big"), y=nums.y.to_bytes(size, "big"))


def ecc_sensitive(key: ec.EllipticCurvePrivateKey) -> bytes:
    """TPMT_SENSITIVE of an ECC key pair: the private scalar."""
    size = (key.curve.key_size + 7) // 8
    return u16(ALG.ECC) + b2(b"") + b2(b"") + b2(
        key.private_numbers().private_value.to_bytes(size, "big"))


def hmac_public(attrs: int = EXTERNAL_SIGNING, key_scheme: bytes = scheme(ALG.HMAC, ALG.SHA256),
                secret: bytes = HMAC_SECRET) -> bytes:
    """TPMT_PUBLIC of an HMAC key with ``secret`` (unique = H(seedValue || secret))."""
    return keyedhash_template(attrs, scheme=key_scheme,
                              unique=hashlib.sha256(HMAC_SEED + secret).digest())


def hmac_sensitive(secret: bytes = HMAC_SECRET) -> bytes:
    """TPMT_SENSITIVE of an HMAC key."""
    return u16(ALG.KEYEDHASH) + b2(b"") + b2(HMAC_SEED) + b2(secret)


def loaded(execute: Execute, public: bytes, sensitive: bytes = b"",
           hierarchy: int = RH.NULL) -> tuple[int, bytes]:
    """LoadExternal; (handle, name)."""
    response = execute(load_external(public, sensitive, hierarchy))
    assert rc(response) == 0, hex(rc(response))
    return parse_load(response)


def digest_of(data: bytes, alg: int = ALG.SHA256) -> bytes:
    """H_alg(data)."""
    return HASHES[alg].digest(data)


# ============================================================================ in process


@pytest.mark.parametrize("hash_alg", [ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512])
def test_rsassa_signature_is_pkcs1v15(tpm: Tpm, hash_alg: int) -> None:
    """An RSASSA signature is the PKCS#1 v1.5 signature ``cryptography`` makes with the same
    key, octet for octet, and verifies outside."""
    handle, _ = loaded(tpm.execute, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    digest = digest_of(b"message", hash_alg)
    sig = parsed_signature(tpm.execute(sign(handle, digest, scheme(ALG.RSASSA, hash_alg))))
    assert (sig.sigAlg, sig.signature.hash) == (ALG.RSASSA, hash_alg)
    algorithm = utils.Prehashed(HASH_CLASSES[hash_alg]())
    assert sig.signature.sig == RSA_KEY.sign(digest, padding.PKCS1v15(), algorithm)
    RSA_KEY.public_key().verify(sig.signature.sig, digest, padding.PKCS1v15(), algorithm)


@pytest.mark.parametrize("hash_alg", [ALG.SHA256, ALG.SHA512])
def test_rsapss_signature_verifies_with_digest_length_salt(tpm: Tpm, hash_alg: int) -> None:
    """An RSAPSS signature verifies outside with MGF1 of the scheme's hash and a salt as long
    as the digest; two signatures of one digest differ (random salt)."""
    handle, _ = loaded(tpm.execute, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    digest = digest_of(b"message", hash_alg)
    sigs = [parsed_signature(tpm.execute(sign(handle, digest, scheme(ALG.RSAPSS, hash_alg))))
            for _ in range(2)]
    assert sigs[0].signature.sig != sigs[1].signature.sig
    h = HASH_CLASSES[hash_alg]()
    pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    for sig in sigs:
        assert sig.sigAlg == ALG.RSAPSS
        RSA_KEY.public_key().verify(sig.signature.sig, digest, pss, utils.Prehashed(h))


def test_rsapss_salt_shrinks_to_fit_a_small_modulus(tpm: Tpm) -> None:
    """RSA-1024 with SHA-512 has no room for a 64-octet salt: the salt is the 62 octets that
    fit (emLen - hLen - 2), as swtpm 0.7.1's (measured)."""
    key = rsa.generate_private_key(65537, 1024)
    handle, _ = loaded(tpm.execute, rsa_public(key), rsa_sensitive(key))
    digest = digest_of(b"message", ALG.SHA512)
    sig = parsed_signature(tpm.execute(sign(handle, digest, scheme(ALG.RSAPSS, ALG.SHA512))))
    h = hashes.SHA512()
    key.public_key().verify(sig.signature.sig, digest,
                            padding.PSS(mgf=padding.MGF1(h), salt_length=62),
                            utils.Prehashed(h))


@pytest.mark.parametrize("curve,hash_alg", [(3, ALG.SHA256), (4, ALG.SHA384), (3, ALG.SHA512),
                                            (4, ALG.SHA1), (5, ALG.SHA512)])
def test_ecdsa_signature_verifies_outside(tpm: Tpm, curve: int, hash_alg: int) -> None:
    """An ECDSA signature (r, s of the curve's size) verifies with ``cryptography``."""
    key = ECC_KEYS[curve]
    handle, _ = loaded(tpm.execute, ecc_public(key, curve), ecc_sensitive(key))
    digest = digest_of(b"message", hash_alg)
    sig = parsed_signature(tpm.execute(sign(handle, digest, scheme(ALG.ECDSA, hash_alg))))
    size = (key.curve.key_size + 7) // 8
    assert len(sig.signature.signatureR) == len(sig.signature.signatureS) == size
    der = utils.encode_dss_signature(int.from_bytes(sig.signature.signatureR, "big"),
                                     int.from_bytes(sig.signature.signatureS, "big"))
    key.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(HASH_CLASSES[hash_alg]())))


def test_key_scheme_is_used_and_conflicts_refused(tpm: Tpm) -> None:
    """A key with a scheme signs with it when the command gives TPM_ALG_NULL, accepts the same
    scheme, and refuses another scheme or hash (TPM_RC_SCHEME + P2); a key without a scheme
    needs one from the command, of its own key type (TPM_RC_SCHEME + P2, as swtpm)."""
    handle, _ = loaded(tpm.execute, rsa_public(RSA_KEY, key_scheme=scheme(ALG.RSASSA,
                                                                          ALG.SHA256)),
                       rsa_sensitive(RSA_KEY))
    digest = digest_of(b"x")
    sig = parsed_signature(tpm.execute(sign(handle, digest)))
    assert (sig.sigAlg, sig.signature.hash) == (ALG.RSASSA, ALG.SHA256)
    assert rc(tpm.execute(sign(handle, digest, scheme(ALG.RSASSA, ALG.SHA256)))) == 0
    assert rc(tpm.execute(sign(handle, digest, scheme(ALG.RSAPSS, ALG.SHA256)))) == \
        TPM_RC_SCHEME | P2
    assert rc(tpm.execute(sign(handle, digest, scheme(ALG.RSASSA, ALG.SHA1)))) == \
        TPM_RC_SCHEME | P2
    plain, _ = loaded(tpm.execute, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    assert rc(tpm.execute(sign(plain, digest))) == TPM_RC_SCHEME | P2
    assert rc(tpm.execute(sign(plain, digest, scheme(ALG.ECDSA, ALG.SHA256)))) == \
        TPM_RC_SCHEME | P2


def test_digest_size_must_match_the_scheme_hash(tpm: Tpm) -> None:
    """Without a ticket the digest must be as long as the scheme's hash: TPM_RC_SIZE + P1."""
    handle, _ = loaded(tpm.execute, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    response = tpm.execute(sign(handle, digest_of(b"x", ALG.SHA1), scheme(ALG.RSASSA,
                                                                          ALG.SHA256)))
    assert rc(response) == TPM_RC_SIZE | P1


def test_verify_signature_made_outside_and_ticket(tpm: Tpm) -> None:
    """VerifySignature accepts RSASSA, PSS (any salt) and ECDSA signatures made by
    ``cryptography`` with a public key loaded in the owner hierarchy, and returns the
    TPMT_TK_VERIFIED HMAC(ownerProof, TPM_ST_VERIFIED || digest || keyName); a tampered
    signature or digest is TPM_RC_SIGNATURE + P2."""
    digest = digest_of(b"signed outside")
    prehashed = utils.Prehashed(hashes.SHA256())
    handle, name = loaded(tpm.execute, rsa_public(RSA_KEY), hierarchy=RH.OWNER)
    pss_max = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    cases = [rsa_signature(ALG.RSASSA, ALG.SHA256,
                           RSA_KEY.sign(digest, padding.PKCS1v15(), prehashed)),
             rsa_signature(ALG.RSAPSS, ALG.SHA256, RSA_KEY.sign(digest, pss_max, prehashed))]
    for signature in cases:
        response = tpm.execute(verify_signature(handle, digest, signature))
        assert rc(response) == 0, hex(rc(response))
        ticket = TPMT_TK_VERIFIED.parse(response[10:])
        expected = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, RH.OWNER),
                                            struct.pack(">H", ST.VERIFIED), digest, name)
        assert (ticket.tag, ticket.hierarchy, ticket.digest) == (ST.VERIFIED, RH.OWNER, expected)
        tampered = signature[:-1] + bytes([signature[-1] ^ 1])
        assert rc(tpm.execute(verify_signature(handle, digest, tampered))) == \
            TPM_RC_SIGNATURE | P2
        assert rc(tpm.execute(verify_signature(handle, digest_of(b"other"), signature))) == \
            TPM_RC_SIGNATURE | P2
    key = ECC_KEYS[3]
    ecc_handle, _ = loaded(tpm.execute, ecc_public(key, 3))
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(prehashed)))
    response = tpm.execute(verify_signature(ecc_handle, digest,
                                            ecc_signature(ALG.ECDSA, ALG.SHA256, r, s, 32)))
    assert rc(response) == 0
    # A key of the NULL hierarchy gets the NULL ticket.
    assert TPMT_TK_VERIFIED.parse(response[10:]) == dict(tag=ST.VERIFIED, hierarchy=RH.NULL,
                                                         digest=b"")
    bad = ecc_signature(ALG.ECDSA, ALG.SHA256, r, (s + 1) % 2**256, 32)
    assert rc(tpm.execute(verify_signature(ecc_handle, digest, bad))) == TPM_RC_SIGNATURE | P2
    # An RSA signature for an ECC key is TPM_RC_SCHEME.
    assert rc(tpm.execute(verify_signature(ecc_handle, digest, cases[0]))) == \
        TPM_RC_SCHEME | P2


@pytest.mark.parametrize("curve,hash_alg", [(3, ALG.SHA256), (3, ALG.SHA512), (4, ALG.SHA256),
                                            (5, ALG.SHA384)])
def test_ecschnorr_signs_and_verifies(tpm: Tpm, curve: int, hash_alg: int) -> None:
    """EC-Schnorr signatures of the TPM verify in the TPM and fail for another digest (hashes
    longer and shorter than the curve order; the differential test checks the arithmetic
    against swtpm's)."""
    key = ECC_KEYS[curve]
    handle, _ = loaded(tpm.execute, ecc_public(key, curve), ecc_sensitive(key))
    digest = digest_of(b"schnorr", hash_alg)
    signature = signature_of(tpm.execute(sign(handle, digest, scheme(ALG.ECSCHNORR,
                                                                     hash_alg))))
    assert rc(tpm.execute(verify_signature(handle, digest, signature))) == 0
    assert rc(tpm.execute(verify_signature(handle, digest_of(b"x"), signature))) == \
        TPM_RC_SIGNATURE | P2


def test_restricted_key_needs_hash_ticket(tpm: Tpm) -> None:
    """A restricted signing key signs a digest only with the ticket TPM2_Hash issued for it:
    the NULL ticket, a ticket for other data and the NULL ticket TPM2_Hash gives data starting
    with TPM_GENERATED_VALUE are TPM_RC_TICKET + P3."""
    template = rsa_template(SIGNING | A.RESTRICTED | A.NO_DA, sym=NULL_SYM,
                            scheme=scheme(ALG.RSASSA, ALG.SHA256))
    created = parse_create_primary(tpm.execute(create_primary(template)))
    handle = created["handle"]
    digest, ticket = hash_ticket(tpm.execute(hash_cmd(b"data to sign")))
    sig = parsed_signature(tpm.execute(sign(handle, digest, ticket=ticket)))
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(created["public"].unique, "big"))
    public.public_key().verify(sig.signature.sig, digest, padding.PKCS1v15(),
                               utils.Prehashed(hashes.SHA256()))
    assert rc(tpm.execute(sign(handle, digest))) == TPM_RC_TICKET | P3
    _, other = hash_ticket(tpm.execute(hash_cmd(b"other data")))
    assert rc(tpm.execute(sign(handle, digest, ticket=other))) == TPM_RC_TICKET | P3
    generated, null_ticket = hash_ticket(tpm.execute(hash_cmd(b"\xffTCG forged quote")))
    assert null_ticket == NULL_TICKET
    assert rc(tpm.execute(sign(handle, generated, ticket=null_ticket))) == TPM_RC_TICKET | P3


def test_hmac_matches_hmac_new(tpm: Tpm) -> None:
    """TPM2_HMAC and an HMAC signature equal hmac.new() with the key's secret; the HMAC
    signature verifies; a key with a scheme refuses another hash (TPM_RC_VALUE + P2)."""
    handle, _ = loaded(tpm.execute, hmac_public(), hmac_sensitive())
    response = tpm.execute(hmac_cmd(handle, b"some data"))
    assert rc(response) == 0
    assert parse_stream(W_TPM2B_DIGEST, io.BytesIO(response[14:])) == \
        hmac.new(HMAC_SECRET, b"some data", "sha256").digest()
    assert rc(tpm.execute(hmac_cmd(handle, b"x", ALG.SHA1))) == TPM_RC_VALUE | P2
    digest = digest_of(b"y")
    sig = parsed_signature(tpm.execute(sign(handle, digest)))
    assert sig.sigAlg == ALG.HMAC
    assert sig.signature.digest == hmac.new(HMAC_SECRET, digest, "sha256").digest()
    assert rc(tpm.execute(verify_signature(handle, digest, signature_of(
        tpm.execute(sign(handle, digest)))))) == 0
    # A keyed-hash key may go without a scheme only when it both signs and decrypts.
    free, _ = loaded(tpm.execute, hmac_public(EXTERNAL_SIGNING | A.DECRYPT, scheme()),
                     hmac_sensitive())
    response = tpm.execute(hmac_cmd(free, b"z", ALG.SHA384))
    assert parse_stream(W_TPM2B_DIGEST, io.BytesIO(response[14:])) == \
        hmac.new(HMAC_SECRET, b"z", "sha384").digest()
    assert rc(tpm.execute(hmac_cmd(free, b"z"))) == TPM_RC_VALUE | P2


def test_persistent_keys_sign_and_hmac(tpm: Tpm) -> None:
    """Keys made persistent with EvictControl sign, verify (owner ticket) and HMAC through
    their persistent handles."""
    template = ecc_template(SIGNING | A.NO_DA, sym=NULL_SYM, scheme=scheme(ALG.ECDSA,
                                                                          ALG.SHA256))
    created = parse_create_primary(tpm.execute(create_primary(template)))
    assert rc(tpm.execute(evict_control(RH.OWNER, created["handle"], 0x81000100))) == 0
    digest = digest_of(b"persistent")
    signature = signature_of(tpm.execute(sign(0x81000100, digest)))
    response = tpm.execute(verify_signature(0x81000100, digest, signature))
    assert rc(response) == 0
    ticket = TPMT_TK_VERIFIED.parse(response[10:])
    expected = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, RH.OWNER),
                                        struct.pack(">H", ST.VERIFIED), digest, created["name"])
    assert (ticket.hierarchy, ticket.digest) == (RH.OWNER, expected)
    hmac_template = keyedhash_template(A.SIGN_ENCRYPT | A.FIXED_TPM | A.FIXED_PARENT
                                       | A.USER_WITH_AUTH | A.NO_DA,
                                       scheme=scheme(ALG.HMAC, ALG.SHA384))
    created = parse_create_primary(tpm.execute(create_primary(hmac_template,
                                                              data=HMAC_SECRET)))
    assert rc(tpm.execute(evict_control(RH.OWNER, created["handle"], 0x81000101))) == 0
    response = tpm.execute(hmac_cmd(0x81000101, b"data"))
    assert parse_stream(W_TPM2B_DIGEST, io.BytesIO(response[14:])) == \
        hmac.new(HMAC_SECRET, b"data", "sha384").digest()


# ============================================================================ differential


def bogus_ticket(tag: int = ST.HASHCHECK, hierarchy: int = RH.OWNER,
                 digest: bytes = b"\x01" * 64) -> bytes:
    """A marshalled TPMT_TK_HASHCHECK no TPM issued."""
    return struct.pack(">HI", tag, hierarchy) + b2(digest)


def differential_cases(keys: dict[str, int]) -> list[tuple[str, bytes]]:
    """Valid and invalid Sign / VerifySignature / HMAC calls with the loaded ``keys`` (those
    whose keys are not loaded are skipped)."""
    d256, d384, d1 = digest_of(b"m"), digest_of(b"m", ALG.SHA384), digest_of(b"m", ALG.SHA1)
    pre = utils.Prehashed(hashes.SHA256())
    pkcs1 = rsa_signature(ALG.RSASSA, ALG.SHA256, RSA_KEY.sign(d256, padding.PKCS1v15(), pre))
    r, s = utils.decode_dss_signature(ECC_KEYS[4].sign(d384, ec.ECDSA(utils.Prehashed(
        hashes.SHA384()))))
    ecdsa384 = ecc_signature(ALG.ECDSA, ALG.SHA384, r, s, 48)
    mac = u16(ALG.HMAC, ALG.SHA256) + hmac.new(HMAC_SECRET, d256, "sha256").digest()
    (rsa_key, rsa_pss_key, rsa_owner_pub, rsa_decrypt, p256, p384_pub, hmac_key, hmac_pub,
     hmac_free, rsa_x509) = (keys.get(k, 0) for k in (
         "rsa", "rsa-pss", "rsa-owner-pub", "rsa-decrypt", "p256", "p384-pub", "hmac",
         "hmac-pub", "hmac-free", "rsa-x509"))
    cases = [
        (rsa_key, "rsassa", sign(rsa_key, d256, scheme(ALG.RSASSA, ALG.SHA256))),
        (rsa_key, "pss", sign(rsa_key, d256, scheme(ALG.RSAPSS, ALG.SHA256))),
        (rsa_pss_key, "pss-key-scheme", sign(rsa_pss_key, d256)),
        (rsa_key, "pss-sha384", sign(rsa_key, d384, scheme(ALG.RSAPSS, ALG.SHA384))),
        (rsa_key, "no-scheme", sign(rsa_key, d256)),
        (rsa_key, "ecdsa-on-rsa", sign(rsa_key, d256, scheme(ALG.ECDSA, ALG.SHA256))),
        (rsa_pss_key, "conflicting-scheme", sign(rsa_pss_key, d256,
                                                 scheme(ALG.RSASSA, ALG.SHA256))),
        (rsa_pss_key, "conflicting-hash", sign(rsa_pss_key, d256, scheme(ALG.RSAPSS, ALG.SHA1))),
        (rsa_key, "digest-size", sign(rsa_key, d1, scheme(ALG.RSASSA, ALG.SHA256))),
        (rsa_key, "bad-hash", sign(rsa_key, d256, scheme(ALG.RSASSA, 0x0099))),
        (rsa_key, "bad-scheme", sign(rsa_key, d256, scheme(ALG.OAEP, ALG.SHA256))),
        (rsa_key, "ticket-tag", sign(rsa_key, d256, scheme(ALG.RSASSA, ALG.SHA256),
                                     bogus_ticket(tag=ST.VERIFIED))),
        (rsa_key, "ticket-hierarchy", sign(rsa_key, d256, scheme(ALG.RSASSA, ALG.SHA256),
                                           bogus_ticket(hierarchy=RH.LOCKOUT))),
        (rsa_key, "ticket-forged", sign(rsa_key, d256, scheme(ALG.RSASSA, ALG.SHA256),
                                        bogus_ticket())),
        (rsa_decrypt, "decrypt-key", sign(rsa_decrypt, d256, scheme(ALG.RSASSA, ALG.SHA256))),
        (p256, "ecdsa", sign(p256, d256, scheme(ALG.ECDSA, ALG.SHA256))),
        (p256, "ecdsa-sha384-p256", sign(p256, d384, scheme(ALG.ECDSA, ALG.SHA384))),
        (p256, "ecschnorr", sign(p256, d256, scheme(ALG.ECSCHNORR, ALG.SHA256))),
        (p256, "ecschnorr-sha384", sign(p256, d384, scheme(ALG.ECSCHNORR, ALG.SHA384))),
        (p256, "ecschnorr-sha1", sign(p256, d1, scheme(ALG.ECSCHNORR, ALG.SHA1))),
        (p256, "rsassa-on-ecc", sign(p256, d256, scheme(ALG.RSASSA, ALG.SHA256))),
        (hmac_key, "hmac-sign", sign(hmac_key, d256)),
        (hmac_key, "hmac-sign-conflict", sign(hmac_key, d1, scheme(ALG.HMAC, ALG.SHA1))),
        (hmac_key, "hmac", hmac_cmd(hmac_key, b"data", ALG.SHA256)),
        (hmac_key, "hmac-default", hmac_cmd(hmac_key, b"data")),
        (hmac_key, "hmac-other-hash", hmac_cmd(hmac_key, b"data", ALG.SHA512)),
        (p256, "hmac-ecc-key", hmac_cmd(p256, b"data", ALG.SHA256)),
        (rsa_owner_pub, "verify-pkcs1", verify_signature(rsa_owner_pub, d256, pkcs1)),
        (rsa_owner_pub, "verify-pkcs1-tampered", verify_signature(
            rsa_owner_pub, d256, pkcs1[:-1] + bytes([pkcs1[-1] ^ 0x80]))),
        (rsa_owner_pub, "verify-pkcs1-short", verify_signature(rsa_owner_pub, d256,
                                                               pkcs1[:4] + b2(b"\x01"))),
        (rsa_owner_pub, "verify-pkcs1-as-pss", verify_signature(rsa_owner_pub, d256,
                                                                u16(ALG.RSAPSS) + pkcs1[2:])),
        (rsa_owner_pub, "verify-wrong-digest", verify_signature(rsa_owner_pub, d384, pkcs1)),
        (rsa_owner_pub, "verify-null-sig", verify_signature(rsa_owner_pub, d256, u16(ALG.NULL))),
        (rsa_owner_pub, "verify-ecdsa-on-rsa", verify_signature(rsa_owner_pub, d384, ecdsa384)),
        (rsa_decrypt, "verify-decrypt-key", verify_signature(rsa_decrypt, d256, pkcs1)),
        (p384_pub, "verify-ecdsa", verify_signature(p384_pub, d384, ecdsa384)),
        (p384_pub, "verify-ecdsa-r0", verify_signature(p384_pub, d384, ecc_signature(
            ALG.ECDSA, ALG.SHA384, 0, s, 48))),
        (p384_pub, "verify-ecdsa-other-digest", verify_signature(p384_pub, d256, ecdsa384)),
        (p384_pub, "verify-ecdsa-truncated-digest", verify_signature(
            p384_pub, d384[:40], ecc_signature(ALG.ECDSA, ALG.SHA384, r, s, 48))),
        (hmac_key, "verify-hmac", verify_signature(hmac_key, d256, mac)),
        (hmac_key, "verify-hmac-bad", verify_signature(hmac_key, d256, mac[:-1] + b"\x00")),
        (hmac_pub, "verify-hmac-public-only", verify_signature(hmac_pub, d256, mac)),
        (hmac_key, "verify-hmac-null-hash", verify_signature(hmac_key, d256,
                                                             u16(ALG.HMAC, ALG.NULL))),
        (hmac_key, "verify-hmac-sha1", verify_signature(hmac_key, d256, u16(
            ALG.HMAC, ALG.SHA1) + hmac.new(HMAC_SECRET, d256, "sha1").digest())),
        (p384_pub, "verify-ecdaa", verify_signature(p384_pub, d384, u16(0x001A)
                                                    + ecdsa384[2:])),
        (rsa_key, "hmac-scheme-on-rsa", sign(rsa_key, d256, scheme(ALG.HMAC, ALG.SHA256))),
        (hmac_free, "rsassa-on-keyedhash", sign(hmac_free, d256, scheme(ALG.RSASSA,
                                                                        ALG.SHA256))),
        (hmac_free, "hmac-sha384-no-key-scheme", sign(hmac_free, d384, scheme(ALG.HMAC,
                                                                              ALG.SHA384))),
        (hmac_free, "keyedhash-no-scheme", sign(hmac_free, d256)),
        (hmac_free, "hmac-no-key-scheme", hmac_cmd(hmac_free, b"data", ALG.SHA1)),
        (hmac_free, "hmac-no-hash", hmac_cmd(hmac_free, b"data")),
        (rsa_x509, "x509sign-key", sign(rsa_x509, d256, scheme(ALG.RSASSA, ALG.SHA256))),
    ]
    return [(name, command) for key, name, command in cases if key]


#: Which external keys are loaded together (three object slots) for the differential cases.
PHASES = (
    {"rsa": (lambda: rsa_public(RSA_KEY), lambda: rsa_sensitive(RSA_KEY), RH.NULL),
     "rsa-pss": (lambda: rsa_public(RSA_KEY, key_scheme=scheme(ALG.RSAPSS, ALG.SHA256)),
                 lambda: rsa_sensitive(RSA_KEY), RH.NULL),
     "rsa-decrypt": (lambda: rsa_public(RSA_KEY, attrs=A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA),
                     lambda: rsa_sensitive(RSA_KEY), RH.NULL)},
    {"p256": (lambda: ecc_public(ECC_KEYS[3], 3), lambda: ecc_sensitive(ECC_KEYS[3]), RH.NULL),
     "hmac": (hmac_public, hmac_sensitive, RH.NULL),
     "hmac-pub": (hmac_public, lambda: b"", RH.NULL)},
    {"rsa-owner-pub": (lambda: rsa_public(RSA_KEY), lambda: b"", RH.OWNER),
     "p384-pub": (lambda: ecc_public(ECC_KEYS[4], 4), lambda: b"", RH.NULL),
     "rsa-decrypt": (lambda: rsa_public(RSA_KEY, attrs=A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA),
                     lambda: rsa_sensitive(RSA_KEY), RH.NULL)},
    {"rsa": (lambda: rsa_public(RSA_KEY), lambda: rsa_sensitive(RSA_KEY), RH.NULL),
     "hmac-free": (lambda: hmac_public(EXTERNAL_SIGNING | A.DECRYPT, scheme()),
                   hmac_sensitive, RH.NULL),
     "rsa-x509": (lambda: rsa_public(RSA_KEY, attrs=EXTERNAL_SIGNING | A.X509_SIGN),
                  lambda: rsa_sensitive(RSA_KEY), RH.NULL)},
)


def differential_run(execute: Execute) -> tuple[list[tuple[str, str, bytes]], dict[str, bytes]]:
    """Run :func:`differential_cases` phase by phase; returns ([(case, rc, comparable)],
    {case: signature}). Comparable is the whole response of deterministic successes (RSASSA,
    HMAC), the ticket's tag and hierarchy for a verification, else empty."""
    deterministic = {"rsassa", "hmac-sign", "hmac", "hmac-default",
                     "hmac-sha384-no-key-scheme", "hmac-no-key-scheme"}
    results, signatures = [], {}
    for phase in PHASES:
        keys = {}
        for name, (public, sensitive, hierarchy) in phase.items():
            keys[name] = loaded(execute, public(), sensitive(), hierarchy)[0]
        try:
            for name, command in differential_cases(keys):
                response = execute(command)
                code = rc(response)
                comparable = response if name in deterministic and code == 0 else b""
                if code == 0 and command[6:10] == struct.pack(">I", CC.Sign) and \
                        int.from_bytes(response[14:16], "big") in TPMU_SIGNATURE:
                    signatures[name] = signature_of(response)
                if code == 0 and name.startswith("verify"):
                    ticket = TPMT_TK_VERIFIED.parse(response[10:])
                    comparable = struct.pack(">HIH", ticket.tag, ticket.hierarchy,
                                             len(ticket.digest))
                results.append((name, hex(code), comparable))
        finally:
            for handle in keys.values():
                execute(cmd(CC.FlushContext, struct.pack(">I", handle)))
    return results, signatures


def test_differential_against_swtpm(pair: dict[str, Emulator]) -> None:
    """The same calls on swtpm_py and the real swtpm: the same response codes (and identical
    RSASSA / HMAC responses); each randomised signature (PSS, ECDSA, EC-Schnorr) made by one
    emulator verifies on the other, and PSS salts are as long as the digest on both."""
    results, signatures = {}, {}
    for kind, emu in pair.items():
        results[kind], signatures[kind] = differential_run(emu.command)
    assert results["swtpm_py"] == results["swtpm"]
    assert {name for name, code, _ in results["swtpm"] if code == "0x0"} >= {
        "rsassa", "pss", "ecdsa", "ecschnorr", "verify-pkcs1", "verify-ecdsa", "verify-hmac"}
    digests = {"pss": digest_of(b"m"), "pss-key-scheme": digest_of(b"m"),
               "pss-sha384": digest_of(b"m", ALG.SHA384), "ecdsa": digest_of(b"m"),
               "ecdsa-sha384-p256": digest_of(b"m", ALG.SHA384),
               "ecschnorr": digest_of(b"m"), "ecschnorr-sha384": digest_of(b"m", ALG.SHA384),
               "ecschnorr-sha1": digest_of(b"m", ALG.SHA1)}
    for maker, checker in (("swtpm", "swtpm_py"), ("swtpm_py", "swtpm")):
        execute = pair[checker].command
        rsa_pub = loaded(execute, rsa_public(RSA_KEY))[0]
        ecc_pub = loaded(execute, ecc_public(ECC_KEYS[3], 3))[0]
        try:
            for name, digest in digests.items():
                sig = signatures[maker][name]
                key = ecc_pub if name.startswith("ec") else rsa_pub
                response = execute(verify_signature(key, digest, sig))
                assert rc(response) == 0, (maker, checker, name, hex(rc(response)))
                if name.startswith("pss"):
                    parsed = TPMT_SIGNATURE_NULL.parse(sig)
                    h = HASH_CLASSES[parsed.signature.hash]()
                    RSA_KEY.public_key().verify(
                        parsed.signature.sig, digest,
                        padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
                        utils.Prehashed(h))
        finally:
            for handle in (rsa_pub, ecc_pub):
                execute(cmd(CC.FlushContext, struct.pack(">I", handle)))


def restricted_run(execute: Execute) -> list[tuple[str, str]]:
    """A restricted RSASSA key (CreatePrimary, owner) signing with hash-check tickets of
    TPM2_Hash and of a hash sequence, and without; [(case, rc)]."""
    template = rsa_template(SIGNING | A.RESTRICTED | A.NO_DA, sym=NULL_SYM,
                            scheme=scheme(ALG.RSASSA, ALG.SHA256))
    created = execute(create_primary(template))
    assert rc(created) == 0, hex(rc(created))
    key = parse_create_primary(created)["handle"]
    digest, ticket = hash_ticket(execute(hash_cmd(b"data to sign")))
    _, endorsement_ticket = hash_ticket(execute(hash_cmd(b"data to sign",
                                                         hierarchy=RH.ENDORSEMENT)))
    _, sha1_ticket = hash_ticket(execute(hash_cmd(b"data to sign", ALG.SHA1)))
    generated, null_ticket = hash_ticket(execute(hash_cmd(b"\xffTCG" + b"x" * 60)))
    start = execute(cmd(CC.HashSequenceStart, b2(b"") + u16(ALG.SHA256)))
    seq = struct.unpack_from(">I", start, 10)[0]
    completed = execute(authed(CC.SequenceComplete, struct.pack(">I", seq),
                               b2(b"data to sign") + struct.pack(">I", RH.OWNER)))
    assert rc(completed) == 0
    # Drop the parameter size and the password session's response (nonce, attributes, hmac).
    seq_digest, seq_ticket = hash_ticket(completed[:10] + completed[14:-5])
    assert seq_digest == digest
    cases = [
        ("hash-ticket", sign(key, digest, ticket=ticket)),
        ("hash-ticket-same-scheme", sign(key, digest, scheme(ALG.RSASSA, ALG.SHA256), ticket)),
        ("sequence-ticket", sign(key, digest, ticket=seq_ticket)),
        ("endorsement-ticket", sign(key, digest, ticket=endorsement_ticket)),
        ("no-ticket", sign(key, digest)),
        ("sha1-ticket", sign(key, digest, ticket=sha1_ticket)),
        ("generated", sign(key, generated, ticket=null_ticket)),
        ("other-digest", sign(key, digest_of(b"other"), ticket=ticket)),
    ]
    results = [(name, hex(rc(execute(command)))) for name, command in cases]
    execute(cmd(CC.FlushContext, struct.pack(">I", key)))
    return results


def test_restricted_key_differential(pair: dict[str, Emulator]) -> None:
    """Hash-check tickets for a restricted key: the same codes on both emulators (a ticket of
    another hierarchy is accepted by both: the ticket HMAC is keyed with the proof of the
    hierarchy it names, which the reference does not compare with the key's)."""
    results = {kind: restricted_run(emu.command) for kind, emu in pair.items()}
    assert results["swtpm_py"] == results["swtpm"]
    assert dict(results["swtpm"]) == {
        "hash-ticket": "0x0", "hash-ticket-same-scheme": "0x0", "sequence-ticket": "0x0",
        "endorsement-ticket": "0x0", "no-ticket": "0x3e0", "sha1-ticket": "0x3e0",
        "generated": "0x3e0", "other-digest": "0x3e0"}


# ============================================================================ tpm2-tools


def tool(emu: Emulator, cwd: Path, name: str, *args: str,
         ok: bool = True) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` in ``cwd``; with ``ok`` it must succeed. Every
    tool leaves the contexts it loaded in the TPM's three slots (no resource manager), so they
    are flushed after each one, as tpm2-tools' own tests do."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60,
                          cwd=cwd)
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    subprocess.run(["tpm2_flushcontext", "-T", emu.tcti, "-t"], capture_output=True,
                   timeout=60, cwd=cwd, check=True)
    return proc


#: tpm2_create key specs, tpm2_sign -s scheme, hash, and how ``cryptography`` verifies.
TOOL_KEYS = [
    ("rsa2048:rsassa-sha256:null", "rsassa", "sha256"),
    ("rsa2048:rsapss-sha256:null", "rsapss", "sha256"),
    ("ecc256:ecdsa-sha256:null", "ecdsa", "sha256"),
    ("ecc384:ecdsa-sha384:null", "ecdsa", "sha384"),
]


def check_plain_signature(pem: bytes, signature: bytes, message: bytes, sig_scheme: str,
                          hash_name: str) -> None:
    """Verify a ``-f plain`` signature (RSA octets, or DER for ECDSA) with ``cryptography``;
    raises InvalidSignature."""
    key = serialization.load_pem_public_key(pem)
    h = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}[hash_name]()
    if sig_scheme == "rsassa":
        key.verify(signature, message, padding.PKCS1v15(), h)
    elif sig_scheme == "rsapss":
        key.verify(signature, message, padding.PSS(mgf=padding.MGF1(h),
                                                   salt_length=h.digest_size), h)
    else:
        key.verify(signature, message, ec.ECDSA(h))


def test_tools_sign_and_verify(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_create + tpm2_load + tpm2_readpublic -f pem, then tpm2_sign -f plain (checked by
    ``cryptography`` on the PEM key) and in TSS format (checked by tpm2_verifysignature, which
    writes the ticket and refuses another message), for RSASSA, RSAPSS and ECDSA keys."""
    emu = any_emulator
    (tmp_path / "msg.dat").write_bytes(b"message to sign\n")
    (tmp_path / "other.dat").write_bytes(b"another message\n")
    tool(emu, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    for spec, sig_scheme, hash_name in TOOL_KEYS:
        tool(emu, tmp_path, "tpm2_create", "-C", "primary.ctx", "-G", spec, "-u", "k.pub",
             "-r", "k.priv")
        tool(emu, tmp_path, "tpm2_load", "-C", "primary.ctx", "-u", "k.pub", "-r", "k.priv",
             "-c", "k.ctx")
        tool(emu, tmp_path, "tpm2_readpublic", "-c", "k.ctx", "-o", "k.pem", "-f", "pem")
        tool(emu, tmp_path, "tpm2_sign", "-c", "k.ctx", "-g", hash_name, "-s", sig_scheme,
             "-f", "plain", "-o", "sig.plain", "msg.dat")
        check_plain_signature((tmp_path / "k.pem").read_bytes(),
                              (tmp_path / "sig.plain").read_bytes(), b"message to sign\n",
                              sig_scheme, hash_name)
        tool(emu, tmp_path, "tpm2_sign", "-c", "k.ctx", "-g", hash_name, "-s", sig_scheme,
             "-o", "sig.tss", "msg.dat")
        tool(emu, tmp_path, "tpm2_verifysignature", "-c", "k.ctx", "-g", hash_name,
             "-m", "msg.dat", "-s", "sig.tss", "-t", "ticket.bin")
        ticket = TPMT_TK_VERIFIED.parse((tmp_path / "ticket.bin").read_bytes())
        assert (ticket.tag, ticket.hierarchy, len(ticket.digest)) == (ST.VERIFIED, RH.OWNER,
                                                                      64)
        refused = tool(emu, tmp_path, "tpm2_verifysignature", "-c", "k.ctx", "-g", hash_name,
                       "-m", "other.dat", "-s", "sig.tss", ok=False)
        assert refused.returncode != 0
        assert b"parameter(2):the signature is not valid" in refused.stderr, refused.stderr


def test_tools_verify_openssl_signature(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_loadexternal of a PEM public key and tpm2_verifysignature of a signature made by
    ``cryptography`` (tpm2-tools' plain RSASSA format)."""
    emu = any_emulator
    message = b"signed by openssl\n"
    (tmp_path / "msg.dat").write_bytes(message)
    (tmp_path / "ext.pem").write_bytes(RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "sig.raw").write_bytes(RSA_KEY.sign(message, padding.PKCS1v15(),
                                                    hashes.SHA256()))
    tool(emu, tmp_path, "tpm2_loadexternal", "-C", "o", "-G", "rsa", "-u", "ext.pem",
         "-c", "ext.ctx")
    tool(emu, tmp_path, "tpm2_verifysignature", "-c", "ext.ctx", "-g", "sha256",
         "-m", "msg.dat", "-f", "rsassa", "-s", "sig.raw")
    (tmp_path / "msg.dat").write_bytes(message + b"!")
    refused = tool(emu, tmp_path, "tpm2_verifysignature", "-c", "ext.ctx", "-g", "sha256",
                   "-m", "msg.dat", "-f", "rsassa", "-s", "sig.raw", ok=False)
    assert refused.returncode != 0


def test_tools_hmac(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_hmac with an HMAC key whose secret the caller chose (raw TPM2_Create with
    sensitiveDataOrigin clear, then Load): the output equals hmac.new()."""
    emu = any_emulator
    primary = parse_create_primary(emu.command(create_primary(rsa_template())))["handle"]
    template = keyedhash_template(A.SIGN_ENCRYPT | A.FIXED_TPM | A.FIXED_PARENT
                                  | A.USER_WITH_AUTH | A.NO_DA,
                                  scheme=scheme(ALG.HMAC, ALG.SHA256))
    response = emu.command(create(primary, template, data=HMAC_SECRET))
    assert rc(response) == 0, hex(rc(response))
    created = parse_create(response)
    handle, _ = parse_load(emu.command(load(primary, created["private"], created["public"])))
    data = b"x" * 3000  # more than one TPM2B_MAX_BUFFER: the tool uses a sequence then
    (tmp_path / "data.bin").write_bytes(data)
    for payload in (data, b"short"):
        (tmp_path / "data.bin").write_bytes(payload)
        subprocess.run(["tpm2_hmac", "-T", emu.tcti, "-c", hex(handle), "-o", "mac.bin",
                        "data.bin"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
        assert (tmp_path / "mac.bin").read_bytes() == hmac.new(HMAC_SECRET, payload,
                                                               "sha256").digest()


# ============================================================================ tpm2-pytss


@pytest.fixture
def esapi(any_emulator: Emulator):
    """ESAPI over the swtpm TCTI to each emulator in turn."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def esapi_primary(ctx: ESAPI, spec: str, attrs: str, data: bytes = b"") -> tuple:
    """A primary key of the owner hierarchy from a tpm2-pytss template: (handle, public)."""
    pub = TPM2B_PUBLIC.parse(spec, objectAttributes=attrs)
    sens = TPM2B_SENSITIVE_CREATE()
    if data:
        sens.sensitive.data = data
    handle, public, _, _, _ = ctx.create_primary(sens, pub, ESYS_TR.OWNER)
    return handle, public


SIGN_ATTRS = "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|nodA"
NULL_HASHCHECK = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)


@pytest.mark.parametrize("spec", ["rsa2048:rsassa-sha256:null", "rsa2048:rsapss-sha256:null",
                                  "ecc256:ecdsa-sha256:null"])
def test_pytss_sign_and_verify(esapi: ESAPI, spec: str) -> None:
    """ESAPI sign with the key's scheme: the signature verifies with ``cryptography`` on the
    key ESAPI returned (its public area's Name was recomputed by ESAPI) and with
    verify_signature, whose ticket is the owner's; a tampered signature raises
    TPM_RC_SIGNATURE + P2."""
    key, public = esapi_primary(esapi, spec, SIGN_ATTRS)
    digest = hashlib.sha256(b"pytss message").digest()
    signature = esapi.sign(key, TPM2B_DIGEST(digest), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                           NULL_HASHCHECK)
    pre = utils.Prehashed(hashes.SHA256())
    if signature.sigAlg in (TPM2_ALG.RSASSA, TPM2_ALG.RSAPSS):
        n = int.from_bytes(bytes(public.publicArea.unique.rsa), "big")
        pub_key = rsa.RSAPublicNumbers(65537, n).public_key()
        sig = bytes(signature.signature.rsassa.sig)
        pad = (padding.PKCS1v15() if signature.sigAlg == TPM2_ALG.RSASSA else
               padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32))
        pub_key.verify(sig, digest, pad, pre)
    else:
        point = public.publicArea.unique.ecc
        pub_key = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(point.x), "big"),
                                                int.from_bytes(bytes(point.y), "big"),
                                                ec.SECP256R1()).public_key()
        der = utils.encode_dss_signature(
            int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big"))
        pub_key.verify(der, digest, ec.ECDSA(pre))
    ticket = esapi.verify_signature(key, TPM2B_DIGEST(digest), signature)
    assert (ticket.tag, ticket.hierarchy, len(bytes(ticket.digest))) == (
        TPM2_ST.VERIFIED, TPM2_RH.OWNER, 64)
    with pytest.raises(TSS2_Exception) as exc:
        esapi.verify_signature(key, TPM2B_DIGEST(hashlib.sha256(b"other").digest()), signature)
    assert exc.value.rc & 0xFFF == TPM_RC_SIGNATURE | P2
    esapi.flush_context(key)


def test_pytss_restricted_key_with_hash_ticket(esapi: ESAPI) -> None:
    """A restricted key signs what ESAPI hash() hashed, with the ticket it returned; without
    the ticket the TPM refuses (TPM_RC_TICKET + P3)."""
    key, public = esapi_primary(esapi, "rsa2048:rsassa-sha256:null", SIGN_ATTRS + "|restricted")
    digest, ticket = esapi.hash(b"attested data", TPM2_ALG.SHA256, ESYS_TR.OWNER)
    signature = esapi.sign(key, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), ticket)
    n = int.from_bytes(bytes(public.publicArea.unique.rsa), "big")
    rsa.RSAPublicNumbers(65537, n).public_key().verify(
        bytes(signature.signature.rsassa.sig), hashlib.sha256(b"attested data").digest(),
        padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    with pytest.raises(TSS2_Exception) as exc:
        esapi.sign(key, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), NULL_HASHCHECK)
    assert exc.value.rc & 0xFFF == TPM_RC_TICKET | P3
    esapi.flush_context(key)


def test_pytss_hmac(esapi: ESAPI) -> None:
    """ESAPI hmac with a caller-chosen secret equals hmac.new() (the key's SHA-256, or the
    requested hash for a key without scheme), also through an HMAC session that encrypts the
    data both ways (the buffer and outHMAC are the first parameters, TPM2Bs)."""
    attrs = "sign|fixedtpm|fixedparent|userwithauth|noda"
    key, _ = esapi_primary(esapi, "hmac:sha256", attrs, HMAC_SECRET)
    assert bytes(esapi.hmac(key, b"hmac data", TPM2_ALG.NULL)) == hmac.new(
        HMAC_SECRET, b"hmac data", "sha256").digest()
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                       TPMT_SYM_DEF.parse("aes128cfb"), TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT
                                | TPMA_SESSION.DECRYPT)
    assert bytes(esapi.hmac(key, b"secret data", TPM2_ALG.SHA256, session1=session)) == \
        hmac.new(HMAC_SECRET, b"secret data", "sha256").digest()
    esapi.flush_context(session)
    esapi.flush_context(key)
    key, _ = esapi_primary(esapi, "keyedhash", attrs + "|decrypt", HMAC_SECRET)
    assert bytes(esapi.hmac(key, b"hmac data", TPM2_ALG.SHA512)) == hmac.new(
        HMAC_SECRET, b"hmac data", "sha512").digest()
    esapi.flush_context(key)

