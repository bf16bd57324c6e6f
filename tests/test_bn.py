"""The BN P-256 curve (TPM_ECC_BN_P256, the ECDAA curve; TCG Algorithm Registry, ISO/IEC
15946-5): keys, ECDSA, ECDH and TPM2_ECC_Parameters on it, and the one pure-Python curve
arithmetic (swtpm_py.tpm.ecmath) every ECC operation ``cryptography`` cannot do goes through.

* In process: every curve's domain parameters are consistent (G on the curve, [n]G = O), the
  module agrees with ``cryptography`` on the NIST curves, and primaries on BN P-256 are
  deterministic and on the curve.
* Differential against swtpm 0.7.1: ECC_Parameters(BN_P256) octet for octet; GetCapability
  lists it where swtpm does; TestParms accepts it; CreatePrimary works on both with the point
  on the curve; with a BN key whose private part the test knows (TPM2_LoadExternal on both),
  the ECDSA signature of each emulator verifies on the other and under an ECDSA verification
  written here, and ECDH_ZGen gives the same point on both, the one computed here.

The test's own curve arithmetic (:class:`Curve`, affine, double-and-add) is independent of
swtpm_py's.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from swtpm_py.tpm import Tpm, algorithms, ecmath, keys
from swtpm_py.tpm.constants import ALG, CAP, CC, ECC_CURVE, RH
from swtpm_py.tpm.objects_wire import TPMS_ALGORITHM_DETAIL_ECC

from objcmd import (A, NULL_SYM, SIGNING, authed, b2, cmd, create_primary, ecc_points,
                    ecc_template, flush, load_external, parse_create_primary, parse_load, pw, rc,
                    u16)

P1, P2 = 0x140, 0x240
RC_SIGNATURE = 0x09B
BN = ECC_CURVE.BN_P256
#: An unrestricted signing key usable with a password, without DA (for CreatePrimary).
SIGN = SIGNING | A.NO_DA
#: Attributes of keys loaded with their private part by TPM2_LoadExternal (no fixedTPM or
#: fixedParent there): a signing key and a decryption key.
EXT_SIGN = A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
EXT_DEC = A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA


# ---------------------------------------------------------------------------- test-side math


class Curve:
    """y² = x³ + ax + b over GF(p) with base point G of order n: plain affine arithmetic,
    written for the tests (independent of swtpm_py.tpm.ecmath)."""

    def __init__(self, p: int, a: int, b: int, g: tuple[int, int], n: int) -> None:
        self.p, self.a, self.b, self.g, self.n = p, a, b, g, n
        self.size = (p.bit_length() + 7) // 8

    def on(self, pt: tuple[int, int]) -> bool:
        """Whether ``pt`` satisfies the curve equation."""
        x, y = pt
        return (y * y - x ** 3 - self.a * x - self.b) % self.p == 0

    def add(self, s: tuple[int, int] | None, t: tuple[int, int] | None) -> tuple[int, int] | None:
        """s + t (None: the point at infinity)."""
        if s is None:
            return t
        if t is None:
            return s
        p = self.p
        if s[0] == t[0] and (s[1] + t[1]) % p == 0:
            return None
        if s == t:
            lam = (3 * s[0] * s[0] + self.a) * pow(2 * s[1], -1, p) % p
        else:
            lam = (t[1] - s[1]) * pow(t[0] - s[0], -1, p) % p
        x = (lam * lam - s[0] - t[0]) % p
        return x, (lam * (s[0] - x) - s[1]) % p

    def mul(self, k: int, pt: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """[k]pt (pt defaults to G)."""
        addend: tuple[int, int] | None = self.g if pt is None else pt
        out = None
        while k:
            if k & 1:
                out = self.add(out, addend)
            addend = self.add(addend, addend)
            k >>= 1
        return out

    def octets(self, pt: tuple[int, int]) -> tuple[bytes, bytes]:
        """The point's coordinates as octet strings of the curve's size."""
        return pt[0].to_bytes(self.size, "big"), pt[1].to_bytes(self.size, "big")

    def ecdsa_verify(self, q: tuple[int, int], digest: bytes, r: int, s: int) -> bool:
        """FIPS 186-4 §6.4.2 (the digest no longer than the order here)."""
        if not (0 < r < self.n and 0 < s < self.n):
            return False
        w = pow(s, -1, self.n)
        e = int.from_bytes(digest, "big")
        pt = self.add(self.mul(e * w % self.n), self.mul(r * w % self.n, q))
        return pt is not None and pt[0] % self.n == r


#: BN P-256 as the TCG Algorithm Registry gives it: y² = x³ + 3, G = (1, 2).
BN_P256 = Curve(
    p=0xFFFFFFFFFFFCF0CD46E5F25EEE71A49F0CDC65FB12980A82D3292DDBAED33013, a=0, b=3, g=(1, 2),
    n=0xFFFFFFFFFFFCF0CD46E5F25EEE71A49E0CDC65FB1299921AF62D536CD10B500D)


def point_of(area: Any) -> tuple[int, int]:
    """The public point of a parsed TPMT_PUBLIC."""
    return int.from_bytes(area.unique.x, "big"), int.from_bytes(area.unique.y, "big")


def known_key(curve: Curve, attrs: int, scheme: bytes, curve_id: int = BN) -> tuple[int, bytes,
                                                                                     bytes]:
    """(d, TPMT_PUBLIC, TPMT_SENSITIVE) of a random key on ``curve``."""
    d = int.from_bytes(os.urandom(curve.size + 8), "big") % (curve.n - 1) + 1
    q = curve.mul(d)
    assert q is not None
    x, y = curve.octets(q)
    public = ecc_template(attrs, sym=NULL_SYM, scheme=scheme, curve=curve_id, x=x, y=y)
    sensitive = u16(ALG.ECC) + b2(b"") + b2(b"") + b2(d.to_bytes(curve.size, "big"))
    return d, public, sensitive


def loaded(send, public: bytes, sensitive: bytes = b"") -> int:
    """TPM2_LoadExternal into the NULL hierarchy; the handle."""
    response = send(load_external(public, sensitive))
    assert rc(response) == 0, hex(rc(response))
    return parse_load(response)[0]


def sign_cmd(handle: int, digest: bytes, scheme: bytes) -> bytes:
    """TPM2_Sign with a NULL ticket."""
    return authed(CC.Sign, struct.pack(">I", handle),
                  b2(digest) + scheme + struct.pack(">HI", 0x8024, RH.NULL) + b2(b""), pw())


def signature_rs(response: bytes) -> tuple[int, int, bytes]:
    """(r, s, the TPMT_SIGNATURE octets) of a TPM2_Sign response with an ECC signature."""
    assert rc(response) == 0, hex(rc(response))
    body = response[14:]
    r_size = struct.unpack_from(">H", body, 4)[0]
    r = body[6:6 + r_size]
    s_size = struct.unpack_from(">H", body, 6 + r_size)[0]
    s = body[8 + r_size:8 + r_size + s_size]
    return int.from_bytes(r, "big"), int.from_bytes(s, "big"), body[:8 + r_size + s_size]


def verify_cmd(handle: int, digest: bytes, signature: bytes) -> bytes:
    """TPM2_VerifySignature."""
    return cmd(CC.VerifySignature, struct.pack(">I", handle) + b2(digest) + signature)


# ---------------------------------------------------------------------------- in process


def test_domains_are_consistent() -> None:
    """Every curve's G is on it and has order n; BN P-256 is the registry's curve; the module
    agrees with ``cryptography`` on the NIST curves and with the test's own arithmetic on BN."""
    for curve_id, dom in ecmath.DOMAINS.items():
        assert dom.contains(*dom.generator), curve_id
        assert dom.base_multiply(dom.n) is None
        assert dom.base_multiply(dom.n - 1) == dom.negate(dom.generator)
        assert keys.CURVES[curve_id].order == dom.n
    bn = ecmath.DOMAINS[BN]
    assert (bn.p, bn.a, bn.b, bn.generator, bn.n) == (BN_P256.p, 0, 3, (1, 2), BN_P256.n)
    for curve_id, cv in ((ECC_CURVE.NIST_P256, ec.SECP256R1()),
                         (ECC_CURVE.NIST_P384, ec.SECP384R1()),
                         (ECC_CURVE.NIST_P521, ec.SECP521R1())):
        k = int.from_bytes(os.urandom(70), "big") % ecmath.DOMAINS[curve_id].n
        nums = ec.derive_private_key(k, cv).public_key().public_numbers()
        assert ecmath.DOMAINS[curve_id].base_multiply(k) == (nums.x, nums.y)
    for _ in range(3):
        u, v = (int.from_bytes(os.urandom(32), "big") for _ in range(2))
        q = BN_P256.mul(v)
        assert bn.mul_add(u, bn.generator, v, q) == BN_P256.add(BN_P256.mul(u), BN_P256.mul(v, q))
    assert BN in algorithms.ECC_CURVES and algorithms.ECC_CURVES[BN] == 256


def test_primary_on_bn_is_deterministic(tpm: Tpm) -> None:
    """CreatePrimary of a BN P-256 signing key: the point is [d]G on the curve, and the same
    template gives the same key again."""
    template = ecc_template(SIGN, sym=NULL_SYM, scheme=u16(ALG.ECDSA, ALG.SHA256), curve=BN)
    first = parse_create_primary(tpm.execute(create_primary(template)))
    again = parse_create_primary(tpm.execute(create_primary(template)))
    q = point_of(first["public"])
    assert BN_P256.on(q) and q == point_of(again["public"])


def test_ecdsa_and_ecdh_on_bn_in_process(tpm: Tpm) -> None:
    """A known BN key signs (the test verifies), verifies its own signature, refuses a
    tampered one; ECDH_ZGen is [d]P."""
    d, public, sensitive = known_key(BN_P256, EXT_SIGN, u16(ALG.NULL))
    handle = loaded(tpm.execute, public, sensitive)
    digest = hashlib.sha256(b"bn").digest()
    r, s, sig = signature_rs(tpm.execute(sign_cmd(handle, digest, u16(ALG.ECDSA, ALG.SHA256))))
    assert BN_P256.ecdsa_verify(BN_P256.mul(d), digest, r, s)
    assert rc(tpm.execute(verify_cmd(handle, digest, sig))) == 0
    bad = hashlib.sha256(b"other").digest()
    assert rc(tpm.execute(verify_cmd(handle, bad, sig))) == RC_SIGNATURE + P2
    # EC-Schnorr on BN: signs and verifies.
    _, _, sig = signature_rs(tpm.execute(sign_cmd(handle, digest,
                                                  u16(ALG.ECSCHNORR, ALG.SHA256))))
    assert rc(tpm.execute(verify_cmd(handle, digest, sig))) == 0
    dd, dpub, dsens = known_key(BN_P256, EXT_DEC, u16(ALG.NULL))
    dh = loaded(tpm.execute, dpub, dsens)
    k = int.from_bytes(os.urandom(32), "big") % BN_P256.n
    peer = BN_P256.mul(k)
    response = tpm.execute(authed(CC.ECDH_ZGen, struct.pack(">I", dh),
                                  b2(b2(BN_P256.octets(peer)[0]) + b2(BN_P256.octets(peer)[1]))))
    assert rc(response) == 0
    expected = BN_P256.octets(BN_P256.mul(dd * k % BN_P256.n))
    assert response[14:].startswith(b2(b2(expected[0]) + b2(expected[1])))


# ---------------------------------------------------------------------------- differential


def test_ecc_parameters_and_capability_are_swtpms(pair: dict) -> None:
    """ECC_Parameters(BN_P256) octet for octet (KDF and sign scheme NULL, a = 0, b = 3,
    G = (1, 2)); GetCapability(ECC_CURVES) lists BN P-256 after the NIST curves, as swtpm does
    (swtpm lists more curves); TestParms accepts BN P-256 ECDSA and ECDAA keys."""
    responses = {k: emu.command(cmd(CC.ECC_Parameters, u16(BN))) for k, emu in pair.items()}
    assert responses["swtpm_py"] == responses["swtpm"]
    detail = TPMS_ALGORITHM_DETAIL_ECC.parse(responses["swtpm_py"][10:])
    assert int.from_bytes(detail.p, "big") == BN_P256.p and detail.kdf.scheme == ALG.NULL
    curves = {}
    for kind, emu in pair.items():
        response = emu.command(cmd(CC.GetCapability, struct.pack(">III", CAP.ECC_CURVES, 0, 64)))
        assert rc(response) == 0
        count = struct.unpack_from(">I", response, 15)[0]
        curves[kind] = list(struct.unpack_from(f">{count}H", response, 19))
    assert curves["swtpm_py"] == [c for c in curves["swtpm"] if c in algorithms.ECC_CURVES]
    assert curves["swtpm_py"][-1] == BN
    for scheme in (u16(ALG.ECDSA, ALG.SHA256), u16(ALG.ECDAA, ALG.SHA256, 0), u16(ALG.NULL)):
        parms = u16(ALG.ECC) + NULL_SYM + scheme + u16(BN) + u16(ALG.NULL)
        codes = {k: rc(emu.command(cmd(CC.TestParms, parms))) for k, emu in pair.items()}
        assert codes == {"swtpm_py": 0, "swtpm": 0}


def test_primary_ecdsa_and_ecdh_across_emulators(pair: dict) -> None:
    """CreatePrimary on BN P-256 works on both (point on the curve); with a known BN key on
    both, each emulator's ECDSA signature verifies on the other and under the test's ECDSA;
    ECDH_ZGen gives the same point on both, the test's [d]P."""
    template = ecc_template(SIGN, sym=NULL_SYM, scheme=u16(ALG.ECDSA, ALG.SHA256), curve=BN)
    for emu in pair.values():
        response = emu.command(create_primary(template))
        assert rc(response) == 0
        created = parse_create_primary(response)
        assert BN_P256.on(point_of(created["public"]))
        assert rc(emu.command(flush(created["handle"]))) == 0
    d, public, sensitive = known_key(BN_P256, EXT_SIGN, u16(ALG.NULL))
    handles = {k: loaded(emu.command, public, sensitive) for k, emu in pair.items()}
    digest = hashlib.sha256(os.urandom(8)).digest()
    for kind, emu in pair.items():
        r, s, sig = signature_rs(emu.command(sign_cmd(handles[kind], digest,
                                                      u16(ALG.ECDSA, ALG.SHA256))))
        assert BN_P256.ecdsa_verify(BN_P256.mul(d), digest, r, s), kind
        for other, emu2 in pair.items():
            assert rc(emu2.command(verify_cmd(handles[other], digest, sig))) == 0, (kind, other)
    for kind, emu in pair.items():
        assert rc(emu.command(flush(handles[kind]))) == 0
    dd, dpub, dsens = known_key(BN_P256, EXT_DEC, u16(ALG.NULL))
    k = int.from_bytes(os.urandom(32), "big") % BN_P256.n
    px, py = BN_P256.octets(BN_P256.mul(k))
    out = {}
    for kind, emu in pair.items():
        h = loaded(emu.command, dpub, dsens)
        out[kind] = emu.command(authed(CC.ECDH_ZGen, struct.pack(">I", h), b2(b2(px) + b2(py))))
        bad = emu.command(authed(CC.ECDH_ZGen, struct.pack(">I", h), b2(b2(px) + b2(px))))
        out[kind + "-bad"] = rc(bad)
        assert rc(emu.command(flush(h))) == 0
    assert out["swtpm_py"] == out["swtpm"] and out["swtpm_py-bad"] == out["swtpm-bad"] != 0
    zx, zy = BN_P256.octets(BN_P256.mul(dd * k % BN_P256.n))
    assert out["swtpm"][14:].startswith(b2(b2(zx) + b2(zy)))


def test_ecdh_keygen_on_bn(pair: dict) -> None:
    """ECDH_KeyGen with a BN key: Qe is on the curve and Z = [de]Qs is [d]Qe, which the test
    computes with the key's known d."""
    d, public, sensitive = known_key(BN_P256, EXT_DEC, u16(ALG.NULL))
    for kind, emu in pair.items():
        h = loaded(emu.command, public, sensitive)
        (z, qe), _ = ecc_points(emu.command(cmd(CC.ECDH_KeyGen, struct.pack(">I", h))), 2)
        q = (int.from_bytes(qe[0], "big"), int.from_bytes(qe[1], "big"))
        assert BN_P256.on(q)
        assert BN_P256.octets(BN_P256.mul(d, q)) == z, kind
        assert rc(emu.command(flush(h))) == 0


def test_public_bn_key_and_salted_session_across_emulators(pair: dict) -> None:
    """A BN key created by swtpm, loaded public-only into swtpm_py, verifies swtpm's ECDSA
    signature; a session salted with a BN key (encryptedSalt a point Qe) starts on both, and
    a point off the curve is refused with the same code."""
    template = ecc_template(SIGN, sym=NULL_SYM, scheme=u16(ALG.ECDSA, ALG.SHA256), curve=BN)
    ref, ours = pair["swtpm"].command, pair["swtpm_py"].command
    created = parse_create_primary(ref(create_primary(template)))
    digest = hashlib.sha256(b"made by swtpm").digest()
    _, _, sig = signature_rs(ref(sign_cmd(created["handle"], digest,
                                          u16(ALG.ECDSA, ALG.SHA256))))
    assert rc(ref(flush(created["handle"]))) == 0
    x, y = BN_P256.octets(point_of(created["public"]))
    public = ecc_template(A.SIGN_ENCRYPT | A.USER_WITH_AUTH, sym=NULL_SYM,
                          scheme=u16(ALG.ECDSA, ALG.SHA256), curve=BN, x=x, y=y)
    handle = loaded(ours, public)
    assert rc(ours(verify_cmd(handle, digest, sig))) == 0
    assert rc(ours(flush(handle))) == 0
    _, dpub, dsens = known_key(BN_P256, EXT_DEC, u16(ALG.NULL))
    qe = BN_P256.octets(BN_P256.mul(int.from_bytes(os.urandom(32), "big") % BN_P256.n))
    codes = {}
    for kind, emu in pair.items():
        h = loaded(emu.command, dpub, dsens)
        codes[kind] = []
        for pt in (qe, (qe[0], qe[0])):
            body = (struct.pack(">II", h, RH.NULL) + b2(os.urandom(16))
                    + b2(b2(pt[0]) + b2(pt[1])) + struct.pack(">BH", 1, ALG.NULL)
                    + u16(ALG.SHA256))
            response = emu.command(cmd(CC.StartAuthSession, body))
            codes[kind].append(rc(response))
            if rc(response) == 0:
                session = struct.unpack_from(">I", response, 10)[0]
                assert rc(emu.command(flush(session))) == 0
        assert rc(emu.command(flush(h))) == 0
    assert codes["swtpm_py"] == codes["swtpm"] == [0, 0x2C4]
