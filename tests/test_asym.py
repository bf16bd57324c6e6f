"""TPM2_RSA_Encrypt, TPM2_RSA_Decrypt, TPM2_ECDH_KeyGen, TPM2_ECDH_ZGen and
TPM2_ECC_Parameters (Part 3 §14).

* In process, with keys whose private part the test knows (TPM2_LoadExternal): what the TPM
  encrypts, ``cryptography`` decrypts (OAEP with and without a label, PKCS#1 v1.5, raw RSA),
  and the other way round; ECDH points are recomputed outside (d·(k·G) = (d·k mod n)·G).
* Differential: the same raw commands to swtpm_py and the real swtpm: deterministic results
  (raw RSA, ECDH_ZGen, ECC_Parameters) octet for octet, the codes of invalid calls.
* tpm2-tools (tpm2_rsaencrypt / _rsadecrypt, tpm2_ecdhkeygen / _ecdhzgen,
  tpm2_geteccparameters) and tpm2-pytss ESAPI against the emulator.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC_CURVE, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import (TPM2B_ECC_POINT, TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMS_ECC_POINT,
                              TPMT_RSA_DECRYPT)

from swtpm_py.tpm import Tpm, asymmetric, algorithms
from swtpm_py.tpm.constants import ALG, CC, ECC_CURVE, RC, RH
from swtpm_py.tpm.objects_wire import TPMS_ALGORITHM_DETAIL_ECC

from objcmd import (A, NULL_SYM, STORAGE, authed, b2, cmd, create_primary, ecc_template, flush,
                    load_external, parse_create_primary, parse_load, rc, rsa_template,
                    symcipher_template, u16)

Send = Callable[[bytes], bytes]
H1, P1, P2, P3 = 0x100, 0x140, 0x240, 0x340
RC_FAILURE, RC_ATTRIBUTES, RC_VALUE, RC_SCHEME, RC_SIZE, RC_KEY = \
    0x101, 0x082, 0x084, 0x092, 0x095, 0x09C
RC_CURVE, RC_ECC_POINT = 0x0A6, 0x0A7

#: An unrestricted decryption key usable with a password; noDA so that no DA bookkeeping
#: interferes.
DEC = A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA
SIGN = A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
OAEP256 = u16(ALG.OAEP, ALG.SHA256)
RSAES = u16(ALG.RSAES)
RAW = u16(ALG.NULL)
CURVES = {ECC_CURVE.NIST_P256: ec.SECP256R1(), ECC_CURVE.NIST_P384: ec.SECP384R1(),
          ECC_CURVE.NIST_P521: ec.SECP521R1()}
SIZES = {ECC_CURVE.NIST_P256: 32, ECC_CURVE.NIST_P384: 48, ECC_CURVE.NIST_P521: 66}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key known to the test."""
    return rsa.generate_private_key(65537, 2048)


# ---------------------------------------------------------------------------- helpers


def rsa_areas(key: rsa.RSAPrivateKey, attrs: int = DEC, scheme: bytes = RAW,
              private: bool = True) -> tuple[bytes, bytes]:
    """(TPMT_PUBLIC, TPMT_SENSITIVE or empty) of ``key``."""
    nums = key.private_numbers()
    k = key.key_size // 8
    public = rsa_template(attrs, sym=NULL_SYM, scheme=scheme,
                          unique=nums.public_numbers.n.to_bytes(k, "big"))
    sensitive = (u16(ALG.RSA) + b2(b"") + b2(b"") + b2(nums.p.to_bytes(k // 2, "big"))
                 if private else b"")
    return public, sensitive


def ecc_areas(key: ec.EllipticCurvePrivateKey, curve: int = ECC_CURVE.NIST_P256,
              attrs: int = DEC, scheme: bytes = RAW, private: bool = True) -> tuple[bytes, bytes]:
    """(TPMT_PUBLIC, TPMT_SENSITIVE or empty) of ``key``."""
    size = SIZES[curve]
    nums = key.public_key().public_numbers()
    public = ecc_template(attrs, sym=NULL_SYM, scheme=scheme, curve=curve,
                          x=nums.x.to_bytes(size, "big"), y=nums.y.to_bytes(size, "big"))
    sensitive = (u16(ALG.ECC) + b2(b"") + b2(b"")
                 + b2(key.private_numbers().private_value.to_bytes(size, "big"))
                 if private else b"")
    return public, sensitive


def load(send: Send, areas: tuple[bytes, bytes]) -> int:
    """TPM2_LoadExternal into the NULL hierarchy; the handle."""
    response = send(load_external(*areas))
    assert rc(response) == 0, hex(rc(response))
    return parse_load(response)[0]


def rsa_encrypt(handle: int, message: bytes, scheme: bytes = RAW, label: bytes = b"") -> bytes:
    """TPM2_RSA_Encrypt (no authorization)."""
    return cmd(CC.RSA_Encrypt, struct.pack(">I", handle) + b2(message) + scheme + b2(label))


def rsa_decrypt(handle: int, ciphertext: bytes, scheme: bytes = RAW,
                label: bytes = b"") -> bytes:
    """TPM2_RSA_Decrypt with the empty password."""
    return authed(CC.RSA_Decrypt, struct.pack(">I", handle),
                  b2(ciphertext) + scheme + b2(label))


def ecdh_keygen(handle: int) -> bytes:
    """TPM2_ECDH_KeyGen (no authorization)."""
    return cmd(CC.ECDH_KeyGen, struct.pack(">I", handle))


def point(x: bytes, y: bytes) -> bytes:
    """TPM2_ECC_POINT."""
    return b2(b2(x) + b2(y))


def ecdh_zgen(handle: int, in_point: bytes) -> bytes:
    """TPM2_ECDH_ZGen with the empty password (``in_point`` a TPM2B_ECC_POINT)."""
    return authed(CC.ECDH_ZGen, struct.pack(">I", handle), in_point)


def ecc_parameters(curve: int) -> bytes:
    """TPM2_ECC_Parameters."""
    return cmd(CC.ECC_Parameters, u16(curve))


def tpm2b_result(response: bytes) -> bytes:
    """The first TPM2B of a successful response (sessions or not)."""
    assert rc(response) == 0, hex(rc(response))
    off = 14 if response[:2] == b"\x80\x02" else 10
    size = struct.unpack_from(">H", response, off)[0]
    return response[off + 2:off + 2 + size]


def points(response: bytes) -> list[tuple[bytes, bytes]]:
    """The TPM2B_ECC_POINTs of a successful response, as (x, y)."""
    assert rc(response) == 0, hex(rc(response))
    if response[:2] == b"\x80\x02":
        off, end = 14, 14 + struct.unpack_from(">I", response, 10)[0]
    else:
        off, end = 10, len(response)
    out = []
    while off < end:
        total = struct.unpack_from(">H", response, off)[0]
        body = response[off + 2:off + 2 + total]
        xs = struct.unpack_from(">H", body)[0]
        out.append((body[2:2 + xs], body[4 + xs:]))
        off += 2 + total
    return out


def oaep(label: bytes = b"", alg: hashes.HashAlgorithm | None = None) -> padding.OAEP:
    """cryptography's OAEP with MGF1 (SHA-256 by default)."""
    alg = alg or hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(alg), algorithm=alg, label=label or None)


def multiple(curve: int, k: int) -> tuple[bytes, bytes]:
    """k·G as two coordinates of the curve's size, from ``cryptography``."""
    nums = ec.derive_private_key(k, CURVES[curve]).public_key().public_numbers()
    return nums.x.to_bytes(SIZES[curve], "big"), nums.y.to_bytes(SIZES[curve], "big")


# ---------------------------------------------------------------------------- RSA in process


def test_rsa_encrypt_is_decrypted_outside(tpm: Tpm, rsa_key: rsa.RSAPrivateKey) -> None:
    """RSA_Encrypt with a public key: OAEP-SHA256 (no label, a label with its NUL, which is
    part of the OAEP label), OAEP-SHA1, RSAES-PKCS1-v1_5 and raw RSA, each decrypted by
    ``cryptography`` with the private key."""
    handle = load(tpm.execute, rsa_areas(rsa_key, private=False))
    message = b"a secret message"
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, message, OAEP256)))
    assert len(ct) == 256 and rsa_key.decrypt(ct, oaep()) == message
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, message, OAEP256, b"my label\0")))
    assert rsa_key.decrypt(ct, oaep(b"my label\0")) == message
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, message, u16(ALG.OAEP, ALG.SHA1))))
    assert rsa_key.decrypt(ct, oaep(alg=hashes.SHA1())) == message
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, message, RSAES)))
    assert rsa_key.decrypt(ct, padding.PKCS1v15()) == message
    # Raw: the message is a number (leading zeros do not count), c = m^e mod n.
    nums = rsa_key.private_numbers()
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, b"\x00\x00" + message, RAW)))
    assert ct == pow(int.from_bytes(message, "big"), 65537,
                     nums.public_numbers.n).to_bytes(256, "big")


def test_rsa_decrypt_of_outside_encryption(tpm: Tpm, rsa_key: rsa.RSAPrivateKey) -> None:
    """RSA_Decrypt of what ``cryptography`` encrypted with the public key, in each scheme;
    raw decryption returns the whole modulus-sized number."""
    handle = load(tpm.execute, rsa_areas(rsa_key))
    pub = rsa_key.public_key()
    message = os.urandom(40)
    for scheme, pad, label in ((OAEP256, oaep(), b""), (OAEP256, oaep(b"lbl\0"), b"lbl\0"),
                               (RSAES, padding.PKCS1v15(), b"")):
        ct = pub.encrypt(message, pad)
        assert tpm2b_result(tpm.execute(rsa_decrypt(handle, ct, scheme, label))) == message
    n = rsa_key.private_numbers().public_numbers.n
    ct = pow(int.from_bytes(message, "big"), 65537, n).to_bytes(256, "big")
    assert tpm2b_result(tpm.execute(rsa_decrypt(handle, ct))) == message.rjust(256, b"\0")
    # A wrong label is a padding failure (swtpm 0.7.1: TPM_RC_FAILURE from OpenSSL).
    ct = pub.encrypt(message, oaep(b"one\0"))
    assert rc(tpm.execute(rsa_decrypt(handle, ct, OAEP256, b"two\0"))) == RC_FAILURE


def test_the_keys_scheme_is_used_or_must_match(tpm: Tpm, rsa_key: rsa.RSAPrivateKey) -> None:
    """CryptRsaSelectScheme(): a key with an OAEP-SHA256 scheme uses it when the caller says
    TPM_ALG_NULL, accepts the same scheme, and refuses another (TPM_RC_SCHEME + P2)."""
    handle = load(tpm.execute, rsa_areas(rsa_key, scheme=OAEP256))
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, b"m", RAW)))
    assert rsa_key.decrypt(ct, oaep()) == b"m"
    ct = tpm2b_result(tpm.execute(rsa_encrypt(handle, b"m", OAEP256)))
    assert tpm2b_result(tpm.execute(rsa_decrypt(handle, ct))) == b"m"
    for other in (u16(ALG.OAEP, ALG.SHA1), RSAES):
        assert rc(tpm.execute(rsa_encrypt(handle, b"m", other))) == RC_SCHEME + P2
        assert rc(tpm.execute(rsa_decrypt(handle, ct, other))) == RC_SCHEME + P2


# ---------------------------------------------------------------------------- ECC in process


@pytest.mark.parametrize("curve", list(CURVES), ids=lambda c: ECC_CURVE(c).name)
def test_zgen_is_the_point_product(tpm: Tpm, curve: int) -> None:
    """ECDH_ZGen(Q) = d·Q with both coordinates: for Q = k·G that is (d·k mod n)·G, which
    ``cryptography`` computes from the scalar alone."""
    key = ec.generate_private_key(CURVES[curve])
    d = key.private_numbers().private_value
    handle = load(tpm.execute, ecc_areas(key, curve))
    n = asymmetric.CURVE_PARAMETERS[curve].n
    k = int.from_bytes(os.urandom(SIZES[curve]), "big") % (n - 1) + 1
    [z] = points(tpm.execute(ecdh_zgen(handle, point(*multiple(curve, k)))))
    assert z == multiple(curve, d * k % n)


@pytest.mark.parametrize("curve", list(CURVES), ids=lambda c: ECC_CURVE(c).name)
def test_keygen_z_is_zgen_of_the_ephemeral_point(tpm: Tpm, curve: int) -> None:
    """ECDH_KeyGen's Z is what the key holder computes from the ephemeral public point:
    ECDH_ZGen(Qe) inside, and ``cryptography``'s ECDH x-coordinate outside; each call makes a
    new ephemeral key."""
    key = ec.generate_private_key(CURVES[curve])
    handle = load(tpm.execute, ecc_areas(key, curve))
    z, qe = points(tpm.execute(ecdh_keygen(handle)))
    assert points(tpm.execute(ecdh_zgen(handle, point(*qe)))) == [z]
    peer = ec.EllipticCurvePublicNumbers(int.from_bytes(qe[0], "big"),
                                         int.from_bytes(qe[1], "big"),
                                         CURVES[curve]).public_key()
    assert key.exchange(ec.ECDH(), peer) == z[0]
    assert points(tpm.execute(ecdh_keygen(handle)))[1] != qe


def test_keygen_with_a_tpm_key(tpm: Tpm) -> None:
    """A key the TPM made (a primary ECC decryption key): ZGen(Qe) equals KeyGen's Z."""
    template = ecc_template(DEC | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN,
                            sym=NULL_SYM, scheme=u16(ALG.ECDH, ALG.SHA256))
    handle = parse_create_primary(tpm.execute(create_primary(template)))["handle"]
    z, qe = points(tpm.execute(ecdh_keygen(handle)))
    assert points(tpm.execute(ecdh_zgen(handle, point(*qe)))) == [z]


def test_ecc_parameters_are_the_curves(tpm: Tpm) -> None:
    """ECC_Parameters of every implemented curve: G and n are ``cryptography``'s (1·G and the
    order), G is on y² = x³ + ax + b mod p, a = -3, the KDF is KDF1_SP800_56A with the
    curve's hash; an unimplemented curve is TPM_RC_CURVE + P1."""
    for curve, bits in algorithms.ECC_CURVES.items():
        if curve not in CURVES:
            continue  # BN P-256 (a = 0, no KDF): tests/test_bn.py
        response = tpm.execute(ecc_parameters(curve))
        assert rc(response) == 0
        d = TPMS_ALGORITHM_DETAIL_ECC.parse(response[10:])
        size = SIZES[curve]
        assert (d.curveID, d.keySize) == (curve, bits)
        assert (d.gX, d.gY) == multiple(curve, 1)
        p, a, b = (int.from_bytes(v, "big") for v in (d.p, d.a, d.b))
        gx, gy = int.from_bytes(d.gX, "big"), int.from_bytes(d.gY, "big")
        assert a == p - 3 and (gy * gy - gx ** 3 - a * gx - b) % p == 0
        order = int.from_bytes(d.n, "big")
        assert multiple(curve, order - 1)[0] == d.gX  # (n-1)·G = -G
        assert all(len(v) == size for v in (d.p, d.a, d.b, d.gX, d.gY, d.n))
        assert d.h == b"\x01"
        assert d.kdf.scheme == 0x0020 and d.sign.scheme == ALG.NULL
    assert rc(tpm.execute(ecc_parameters(0x0099))) == RC_CURVE + P1


# ---------------------------------------------------------------------------- differential


def both(pair: dict, build: Callable[..., bytes], *areas: tuple[bytes, bytes]) -> dict:
    """Load ``areas`` into both emulators, send ``build(*handles)``, flush; the responses."""
    out = {}
    for kind, emu in pair.items():
        handles = [load(emu.command, a) for a in areas]
        out[kind] = emu.command(build(*handles))
        for h in handles:
            assert rc(emu.command(flush(h))) == 0
    return out


def test_deterministic_results_are_swtpms(pair: dict, rsa_key: rsa.RSAPrivateKey) -> None:
    """Raw RSA encryption and decryption, ECDH_ZGen and ECC_Parameters: swtpm's octets."""
    areas = rsa_areas(rsa_key)
    msg, ct = os.urandom(100), b"\x01" + os.urandom(255)
    for build in (lambda h: rsa_encrypt(h, msg), lambda h: rsa_encrypt(h, b""),
                  lambda h: rsa_decrypt(h, ct),
                  lambda h: rsa_decrypt(h, bytes(256))):
        got = both(pair, build, areas)
        assert rc(got["swtpm"]) == 0 and got["swtpm_py"] == got["swtpm"]
    for curve in CURVES:
        key = ec.generate_private_key(CURVES[curve])
        k = int.from_bytes(os.urandom(16), "big") + 1
        got = both(pair, lambda h: ecdh_zgen(h, point(*multiple(curve, k))),
                   ecc_areas(key, curve))
        assert rc(got["swtpm"]) == 0 and got["swtpm_py"] == got["swtpm"]
        got = {kind: emu.command(ecc_parameters(curve)) for kind, emu in pair.items()}
        assert rc(got["swtpm"]) == 0 and got["swtpm_py"] == got["swtpm"]


def test_randomised_results_work_on_both(pair: dict, rsa_key: rsa.RSAPrivateKey) -> None:
    """OAEP and PKCS#1 v1.5 results of either emulator decrypt on the other, and KeyGen's
    results agree with ZGen on both."""
    areas = rsa_areas(rsa_key)
    handles = {kind: load(emu.command, areas) for kind, emu in pair.items()}
    try:
        for scheme, label in ((OAEP256, b"x\0"), (RSAES, b"")):
            ct = {kind: tpm2b_result(emu.command(rsa_encrypt(handles[kind], b"hi", scheme,
                                                             label)))
                  for kind, emu in pair.items()}
            for kind, other in (("swtpm", "swtpm_py"), ("swtpm_py", "swtpm")):
                response = pair[kind].command(rsa_decrypt(handles[kind], ct[other], scheme,
                                                          label))
                assert tpm2b_result(response) == b"hi"
    finally:
        for kind, emu in pair.items():
            emu.command(flush(handles[kind]))


def _restricted_rsa(send: Send) -> int:
    template = rsa_template(STORAGE, bits=1024)
    return parse_create_primary(send(create_primary(template)))["handle"]


ECC_KEY = ec.generate_private_key(ec.SECP256R1())


def _rsa_cases(key: rsa.RSAPrivateKey) -> list:
    dec = rsa_areas(key)
    oaep_key = rsa_areas(key, scheme=OAEP256)
    signing = rsa_areas(key, attrs=SIGN, scheme=u16(ALG.RSASSA, ALG.SHA256), private=False)
    ecc = ecc_areas(ECC_KEY)
    n = key.private_numbers().public_numbers.n.to_bytes(256, "big")
    return [
        ("label without NUL", dec, lambda h: rsa_encrypt(h, b"m", OAEP256, b"abc"),
         RC_VALUE + P3),
        ("label before scheme", oaep_key, lambda h: rsa_encrypt(h, b"m", RSAES, b"a"),
         RC_VALUE + P3),
        ("decrypt label without NUL", dec,
         lambda h: rsa_decrypt(h, bytes(256), OAEP256, b"ab"), RC_VALUE + P3),
        ("signing scheme as inScheme", dec, lambda h: rsa_encrypt(h, b"m", u16(ALG.RSASSA,
                                                                                ALG.SHA256)),
         RC_VALUE + P2),
        ("scheme differs from key's", oaep_key,
         lambda h: rsa_encrypt(h, b"m", u16(ALG.OAEP, ALG.SHA1)), RC_SCHEME + P2),
        ("decrypt scheme differs", oaep_key, lambda h: rsa_decrypt(h, bytes(256), RSAES),
         RC_SCHEME + P2),
        ("signing key", signing, lambda h: rsa_encrypt(h, b"m"), RC_ATTRIBUTES + H1),
        ("ECC key", ecc, lambda h: rsa_encrypt(h, b"m"), RC_KEY + H1),
        ("ECC key decrypt", ecc, lambda h: rsa_decrypt(h, bytes(256)), RC_KEY + H1),
        ("OAEP message too long", dec, lambda h: rsa_encrypt(h, bytes(200), OAEP256),
         RC_FAILURE),
        ("PKCS#1 message too long", dec, lambda h: rsa_encrypt(h, b"\1" * 250, RSAES),
         RC_FAILURE),
        ("raw message not below n", dec, lambda h: rsa_encrypt(h, n), RC_FAILURE),
        ("raw message longer than n", dec, lambda h: rsa_encrypt(h, b"\1" * 257), RC_VALUE),
        ("message larger than the buffer", dec, lambda h: rsa_encrypt(h, b"\1" * 385),
         RC_SIZE + P1),
        ("cipher text short", dec, lambda h: rsa_decrypt(h, b"\1" * 255), RC_SIZE),
        ("cipher text long", dec, lambda h: rsa_decrypt(h, b"\1" * 257), RC_SIZE),
        ("cipher text empty", dec, lambda h: rsa_decrypt(h, b""), RC_SIZE),
        ("cipher text not below n", dec, lambda h: rsa_decrypt(h, n), RC_FAILURE),
        ("bad OAEP padding", dec, lambda h: rsa_decrypt(h, b"\0" * 255 + b"\5", OAEP256),
         RC_FAILURE),
        ("bad PKCS#1 padding", dec, lambda h: rsa_decrypt(h, b"\0" * 255 + b"\5", RSAES),
         RC_FAILURE),
    ]


def _ecc_cases(rsa_key: rsa.RSAPrivateKey) -> list:
    key = ecc_areas(ECC_KEY)
    signing = ecc_areas(ECC_KEY, attrs=SIGN, scheme=u16(ALG.ECDSA, ALG.SHA256))
    x, y = multiple(ECC_CURVE.NIST_P256, 5)
    off = (int.from_bytes(y, "big") + 1).to_bytes(32, "big")
    return [
        ("point not on the curve", key, lambda h: ecdh_zgen(h, point(x, off)),
         RC_ECC_POINT + P1),
        ("short coordinates", key, lambda h: ecdh_zgen(h, point(b"\1", b"\2")),
         RC_ECC_POINT + P1),
        ("empty coordinates", key, lambda h: ecdh_zgen(h, point(b"", b"")), RC_ECC_POINT + P1),
        ("empty point", key, lambda h: ecdh_zgen(h, b2(b"")), RC_SIZE + P1),
        ("octets after the point", key,
         lambda h: ecdh_zgen(h, b2(b2(x) + b2(y) + b"\0")), RC_SIZE + P1),
        ("signing key on ZGen", signing, lambda h: ecdh_zgen(h, point(x, y)),
         RC_ATTRIBUTES + H1),
        ("signing key on KeyGen", signing, lambda h: ecdh_keygen(h), 0),
        ("RSA key on KeyGen", rsa_areas(rsa_key, private=False), lambda h: ecdh_keygen(h),
         RC_KEY + H1),
    ]


def test_error_codes_are_swtpms(pair: dict, rsa_key: rsa.RSAPrivateKey) -> None:
    """Invalid calls (and a few valid edge cases): swtpm 0.7.1's code from both emulators.
    swtpm's TPM_RC_FAILURE for a padding or size failure comes from OpenSSL; swtpm_py answers
    the same and keeps working."""
    failures = []
    for name, areas, build, code in _rsa_cases(rsa_key) + _ecc_cases(rsa_key):
        got = both(pair, build, areas)
        codes = (rc(got["swtpm"]), rc(got["swtpm_py"]))
        if codes != (code, code):
            failures.append((name, [hex(c) for c in codes], hex(code)))
    assert failures == []


def test_restricted_keys(pair: dict) -> None:
    """A restricted decryption key (a storage primary) encrypts with RSA_Encrypt but may not
    RSA_Decrypt (TPM_RC_ATTRIBUTES + H1); an ECC storage key may not ECDH_ZGen."""
    for emu in pair.values():
        handle = _restricted_rsa(emu.command)
        try:
            assert tpm2b_result(emu.command(rsa_encrypt(handle, b"m", OAEP256)))
            assert rc(emu.command(rsa_decrypt(handle, bytes(128), OAEP256))) == \
                RC_ATTRIBUTES + H1
        finally:
            emu.command(flush(handle))
        handle = parse_create_primary(emu.command(create_primary(ecc_template())))["handle"]
        try:
            x, y = multiple(ECC_CURVE.NIST_P256, 3)
            assert rc(emu.command(ecdh_zgen(handle, point(x, y)))) == RC_ATTRIBUTES + H1
            assert len(points(emu.command(ecdh_keygen(handle)))) == 2
        finally:
            emu.command(flush(handle))


def test_unknown_curve(pair: dict) -> None:
    """A curve no one implements is TPM_RC_CURVE + P1 on both."""
    for emu in pair.values():
        assert rc(emu.command(ecc_parameters(0x0099))) == RC_CURVE + P1


# ---------------------------------------------------------------------------- clients


def _tools(emu, cwd) -> Callable[..., subprocess.CompletedProcess]:
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)

    def tool(*args: str) -> subprocess.CompletedProcess:
        # No resource manager: flush what each tool leaves loaded.
        done = subprocess.run(args, env=env, check=True, capture_output=True, cwd=cwd)
        subprocess.run(("tpm2_flushcontext", "-t"), env=env, check=True, capture_output=True,
                       cwd=cwd)
        return done

    return tool


def test_tpm2_rsaencrypt_rsadecrypt(emulator, tmp_path, rsa_key: rsa.RSAPrivateKey) -> None:
    """tpm2_loadexternal of a PEM key, tpm2_rsaencrypt with -s oaep (with and without -l),
    rsaes and null: ``cryptography`` decrypts each; tpm2_rsadecrypt gives the message back."""
    tool = _tools(emulator, tmp_path)
    (tmp_path / "key.pem").write_bytes(rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    tool("tpm2_loadexternal", "-G", "rsa", "-r", "key.pem", "-c", "key.ctx")
    message = b"attack at dawn"
    (tmp_path / "msg").write_bytes(message)
    tool("tpm2_rsaencrypt", "-c", "key.ctx", "-s", "oaep", "-o", "ct1", "msg")
    assert rsa_key.decrypt((tmp_path / "ct1").read_bytes(), oaep()) == message
    tool("tpm2_rsaencrypt", "-c", "key.ctx", "-s", "oaep", "-l", "mylabel", "-o", "ct2", "msg")
    # tpm2-tools sends the label with its terminating NUL, which OAEP hashes.
    assert rsa_key.decrypt((tmp_path / "ct2").read_bytes(), oaep(b"mylabel\0")) == message
    tool("tpm2_rsaencrypt", "-c", "key.ctx", "-s", "rsaes", "-o", "ct3", "msg")
    assert rsa_key.decrypt((tmp_path / "ct3").read_bytes(), padding.PKCS1v15()) == message
    tool("tpm2_rsaencrypt", "-c", "key.ctx", "-s", "null", "-o", "ct4", "msg")
    n = rsa_key.private_numbers().public_numbers.n
    assert (tmp_path / "ct4").read_bytes() == pow(int.from_bytes(message, "big"), 65537,
                                                  n).to_bytes(256, "big")
    for ct, scheme, extra in (("ct1", "oaep", ()), ("ct2", "oaep", ("-l", "mylabel")),
                              ("ct3", "rsaes", ())):
        tool("tpm2_rsadecrypt", "-c", "key.ctx", "-s", scheme, *extra, "-o", "back", ct)
        assert (tmp_path / "back").read_bytes() == message


def test_tpm2_ecdh_and_eccparameters(emulator, tmp_path) -> None:
    """tpm2_ecdhkeygen gives Qe and Z, tpm2_ecdhzgen(Qe) gives Z again (a key made by
    tpm2_createprimary -G ecc with the decrypt attribute); tpm2_geteccparameters writes the
    TPMS_ALGORITHM_DETAIL_ECC swtpm_py computes."""
    tool = _tools(emulator, tmp_path)
    tool("tpm2_createprimary", "-C", "o", "-G", "ecc256:ecdh-sha256", "-a",
         "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|noda", "-c", "key.ctx")
    tool("tpm2_ecdhkeygen", "-c", "key.ctx", "-u", "qe.bin", "-o", "z.bin")
    tool("tpm2_ecdhzgen", "-c", "key.ctx", "-u", "qe.bin", "-o", "z2.bin")
    z = (tmp_path / "z.bin").read_bytes()
    assert len(z) >= 64 and (tmp_path / "z2.bin").read_bytes() == z
    tool("tpm2_geteccparameters", "ecc256", "-o", "params.bin")
    expected = TPMS_ALGORITHM_DETAIL_ECC.build(asymmetric.algorithm_detail(ECC_CURVE.NIST_P256))
    assert (tmp_path / "params.bin").read_bytes() == expected


def test_pytss(any_emulator, rsa_key: rsa.RSAPrivateKey) -> None:
    """tpm2-pytss ESAPI on both emulators, through an HMAC session that encrypts parameters:
    rsa_encrypt / rsa_decrypt with an OAEP label, ecdh_key_gen and ecdh_zgen agreeing with
    each other and with ``cryptography``, ecc_parameters' fields."""
    key = ec.generate_private_key(ec.SECP384R1())
    with TCTILdr.parse(any_emulator.tcti) as tcti, ESAPI(tcti) as esys:
        public, sensitive = rsa_areas(rsa_key)
        handle = esys.load_external(TPM2B_PUBLIC.unmarshal(b2(public))[0],
                                    TPM2B_SENSITIVE.unmarshal(b2(sensitive))[0])
        # A session that encrypts the first parameter both ways (every command here but
        # ECC_Parameters allows it, as the reference's attribute table says).
        session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                          "aes128cfb", TPM2_ALG.SHA256)
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
        ct = esys.rsa_encrypt(handle, b"pytss", scheme, b"lab\0", session1=session)
        assert rsa_key.decrypt(bytes(ct), oaep(b"lab\0")) == b"pytss"
        assert bytes(esys.rsa_decrypt(handle, ct, scheme, b"lab\0",
                                      session1=session)) == b"pytss"
        with pytest.raises(TSS2_Exception):
            esys.rsa_decrypt(handle, ct, scheme, b"other\0")
        esys.flush_context(handle)

        public, sensitive = ecc_areas(key, ECC_CURVE.NIST_P384)
        handle = esys.load_external(TPM2B_PUBLIC.unmarshal(b2(public))[0],
                                    TPM2B_SENSITIVE.unmarshal(b2(sensitive))[0])
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.ENCRYPT)
        z, qe = esys.ecdh_key_gen(handle, session1=session)
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        z2 = esys.ecdh_zgen(handle, qe, session1=session)
        assert bytes(z2.point.x) == bytes(z.point.x) and bytes(z2.point.y) == bytes(z.point.y)
        peer = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(qe.point.x), "big"),
                                             int.from_bytes(bytes(qe.point.y), "big"),
                                             ec.SECP384R1()).public_key()
        assert key.exchange(ec.ECDH(), peer) == bytes(z.point.x)
        k_g = multiple(ECC_CURVE.NIST_P384, 7)
        z3 = esys.ecdh_zgen(handle, TPM2B_ECC_POINT(TPMS_ECC_POINT(x=k_g[0], y=k_g[1])))
        d = key.private_numbers().private_value
        assert (bytes(z3.point.x), bytes(z3.point.y)) == multiple(
            ECC_CURVE.NIST_P384, 7 * d % asymmetric.CURVE_PARAMETERS[ECC_CURVE.NIST_P384].n)

        params = esys.ecc_parameters(TPM2_ECC_CURVE.NIST_P256)
        assert params.keySize == 256
        assert (bytes(params.gX), bytes(params.gY)) == multiple(ECC_CURVE.NIST_P256, 1)
        assert bytes(params.n) == asymmetric.CURVE_PARAMETERS[
            ECC_CURVE.NIST_P256].n.to_bytes(32, "big")


def test_public_only_keys_are_not_authorized_by_policy(pair: dict,
                                                      rsa_key: rsa.RSAPrivateKey) -> None:
    """A key loaded without its sensitive area, whose authPolicy a fresh policy session
    satisfies, still cannot be used for RSA_Decrypt, ECDH_ZGen or EncryptDecrypt:
    TPM_RC_AUTH_UNAVAILABLE, as swtpm answers."""
    policy = bytes(32)  # the digest of a policy session nothing has extended
    ecc_pub = ecc_areas(ECC_KEY, attrs=A.DECRYPT | A.NO_DA)[0]
    ecc_pub = ecc_pub.replace(struct.pack(">I", A.DECRYPT | A.NO_DA) + b2(b""),
                              struct.pack(">I", A.DECRYPT | A.NO_DA) + b2(policy))
    rsa_pub = rsa_template(A.DECRYPT | A.NO_DA, sym=NULL_SYM, policy=policy,
                           unique=rsa_key.private_numbers().public_numbers.n.to_bytes(256, "big"))
    sym_attrs = A.DECRYPT | A.SIGN_ENCRYPT | A.NO_DA
    sym_pub = symcipher_template(sym_attrs, unique=bytes(32)).replace(
        struct.pack(">I", sym_attrs) + b2(b""), struct.pack(">I", sym_attrs) + b2(policy))
    x, y = multiple(ECC_CURVE.NIST_P256, 2)
    calls = [(ecc_pub, CC.ECDH_ZGen, point(x, y)),
             (rsa_pub, CC.RSA_Decrypt, b2(bytes(256)) + RAW + b2(b"")),
             (sym_pub, CC.EncryptDecrypt, b"\0" + u16(ALG.CFB) + b2(bytes(16)) + b2(b"abc"))]
    for emu in pair.values():
        start = emu.command(cmd(CC.StartAuthSession, struct.pack(">II", RH.NULL, RH.NULL)
                                + b2(bytes(16)) + b2(b"") + b"\x01" + u16(ALG.NULL)
                                + u16(ALG.SHA256)))
        assert rc(start) == 0
        session = struct.unpack(">I", start[10:14])[0]
        area = struct.pack(">I", session) + b2(b"") + b"\x01" + b2(b"")
        try:
            for public, code, params in calls:
                handle = load(emu.command, (public, b""))
                try:
                    response = emu.command(authed(code, struct.pack(">I", handle), params, area))
                    assert rc(response) == RC.AUTH_UNAVAILABLE, (emu.kind, CC(code).name)
                finally:
                    emu.command(flush(handle))
        finally:
            emu.command(flush(session))
