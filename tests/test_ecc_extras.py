"""TPM2_EC_Ephemeral, TPM2_ZGen_2Phase, TPM2_Commit and ECDAA signing (Part 3 §19.3, §14.7,
§19.2; Part 1 "Commit" and "ECDAA").

* Both emulators (the same raw commands, keys whose private part the test knows loaded with
  TPM2_LoadExternal): EC_Ephemeral counts commits and returns a point on the curve;
  ZGen_2Phase (ECDH) gives Z1 = [dsA]QsB and Z2 = [deA]QeB, checked here against [bs]QsA and
  [be]QeA, and refuses a used or unknown count; Commit gives K = [d]P2 (checked here) and
  E, L on the curve; invalid calls get swtpm's codes.
* ECDAA: with s = r + T·d, T = H(k || digest), the signature (k, s) satisfies the ECDAA
  verification equations [s]P1 = E + [T]([d]P1), [s]P2 = L + [T]K and [s]G = E + [T]Q for the
  points of the commit, computed here; a count works once (both emulators over the wire,
  and swtpm_py's signer in process).
* The commit state is state-reset data: it survives TPM Restart, a TPM Reset forgets it.
* tpm2-tools: tpm2_ecephemeral, tpm2_commit, tpm2_zgen2phase; tpm2-pytss ESAPI
  (ec_ephemeral, zgen_2_phase, commit) with parameter encryption.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import construct as c
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from swtpm_py.tpm import Platform, Tpm, objects
from swtpm_py.tpm.commands import ecc
from swtpm_py.tpm.constants import ALG, ECC_CURVE
from swtpm_py.tpm.errors import TpmError

from emulator import Emulator
from objcmd import (A, NULL_SYM, b2, commit, ec_ephemeral, ecc_points, ecc_template, flush,
                    load_external, parse_load, rc, rsa_template, sign_digest, u16, zgen_2phase)
from test_bn import BN_P256, Curve
from tpmcmd import power_on, shutdown, startup

H1, P1, P2, P3, P4 = 0x100, 0x140, 0x240, 0x340, 0x440
RC_VALUE, RC_SCHEME, RC_SIZE, RC_KEY, RC_ATTRIBUTES = 0x084, 0x092, 0x095, 0x09C, 0x082
RC_CURVE, RC_ECC_POINT = 0x0A6, 0x0A7

#: NIST P-256 for the test's own arithmetic (FIPS 186-4 D.1.2.3).
P256 = Curve(
    p=2**256 - 2**224 + 2**192 + 2**96 - 1,
    a=-3, b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    g=(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
       0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5),
    n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
CURVES = {ECC_CURVE.NIST_P256: P256, ECC_CURVE.BN_P256: BN_P256}
#: Attributes of keys loaded with their private part by TPM2_LoadExternal.
EXT_SIGN = A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
EXT_DEC = A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA
ECDAA = u16(ALG.ECDAA, ALG.SHA256, 0)
Point = tuple[int, int]


def scalar(curve: Curve) -> int:
    """A random 0 < k < n."""
    return int.from_bytes(os.urandom(curve.size + 8), "big") % (curve.n - 1) + 1


def known_key(curve_id: int, attrs: int, scheme: bytes) -> tuple[int, bytes, bytes]:
    """(d, TPMT_PUBLIC, TPMT_SENSITIVE) of a random key on the curve."""
    curve = CURVES[curve_id]
    d = scalar(curve)
    x, y = curve.octets(curve.mul(d))
    public = ecc_template(attrs, sym=NULL_SYM, scheme=scheme, curve=curve_id, x=x, y=y)
    return d, public, u16(ALG.ECC) + b2(b"") + b2(b"") + b2(d.to_bytes(curve.size, "big"))


def load(send, public: bytes, sensitive: bytes) -> int:
    """TPM2_LoadExternal into the NULL hierarchy; the handle."""
    response = send(load_external(public, sensitive))
    assert rc(response) == 0, hex(rc(response))
    return parse_load(response)[0]


def as_int(pt: tuple[bytes, bytes]) -> Point:
    """A point's octet coordinates as integers."""
    return int.from_bytes(pt[0], "big"), int.from_bytes(pt[1], "big")


def point_bytes(curve: Curve, pt: Point) -> bytes:
    """A TPMS_ECC_POINT's octets."""
    x, y = curve.octets(pt)
    return b2(x) + b2(y)


def ephemeral(send, curve_id: int) -> tuple[Point, int]:
    """TPM2_EC_Ephemeral: (Q, counter)."""
    response = send(ec_ephemeral(curve_id))
    assert rc(response) == 0, hex(rc(response))
    (q,), rest = ecc_points(response, 1)
    return as_int(q), struct.unpack(">H", rest[:2])[0]


def point_p2(curve: Curve, name_hash=hashlib.sha256) -> tuple[bytes, bytes, Point]:
    """(s2, y2, P2) with P2 = (H(s2) mod p, y2) on the curve (p ≡ 3 mod 4 for both curves:
    y = v^((p+1)/4))."""
    while True:
        s2 = os.urandom(16)
        x = int.from_bytes(name_hash(s2).digest(), "big") % curve.p
        v = (x ** 3 + curve.a * x + curve.b) % curve.p
        y = pow(v, (curve.p + 1) // 4, curve.p)
        if y * y % curve.p == v:
            return s2, y.to_bytes(curve.size, "big"), (x, y)


def ecdaa_t(nonce_k: bytes, digest: bytes) -> int:
    """T = SHA-256(k || digest) (the key's ECDAA scheme hash)."""
    return int.from_bytes(hashlib.sha256(nonce_k + digest).digest(), "big")


def check_ecdaa(curve: Curve, d: int, points: dict, nonce_k: bytes, s: int,
                digest: bytes) -> None:
    """The ECDAA verification equations for the commit's points (E, and K, L with P2)."""
    t = ecdaa_t(nonce_k, digest)
    e = points.get("E")
    if "P1" in points:
        assert curve.mul(s, points["P1"]) == curve.add(e, curve.mul(t * d, points["P1"]))
    elif "P2" not in points:
        assert curve.mul(s) == curve.add(e, curve.mul(t, curve.mul(d)))
    if "P2" in points:
        assert curve.mul(s, points["P2"]) == curve.add(points["L"], curve.mul(t, points["K"]))


def do_commit(send, handle: int, curve: Curve, d: int, with_p1: bool,
              with_p2: bool) -> tuple[dict, int]:
    """TPM2_Commit with a random P1 = [m]G and/or P2; checks the shapes and K = [d]P2;
    returns the points and the counter."""
    points: dict = {}
    p1 = bytes(4)
    s2 = y2 = b""
    if with_p1:
        points["P1"] = curve.mul(scalar(curve))
        p1 = point_bytes(curve, points["P1"])
    if with_p2:
        s2, y2, points["P2"] = point_p2(curve)
    response = send(commit(handle, p1, s2, y2))
    assert rc(response) == 0, hex(rc(response))
    (k, l_point, e), rest = ecc_points(response, 3)
    if with_p2:
        points["K"], points["L"] = as_int(k), as_int(l_point)
        assert points["K"] == curve.mul(d, points["P2"])
        assert curve.on(points["L"])
    else:
        assert k == l_point == (b"", b"")
    if with_p1 or not with_p2:
        points["E"] = as_int(e)
        assert curve.on(points["E"])
    else:
        assert e == (b"", b"")
    return points, struct.unpack(">H", rest[:2])[0]


def sig_parts(response: bytes) -> tuple[bytes, int]:
    """(k, s) of a TPM2_Sign response with an ECDAA signature."""
    assert rc(response) == 0, hex(rc(response))
    body = response[14:]
    assert struct.unpack_from(">HH", body) == (ALG.ECDAA, ALG.SHA256)
    k_size = struct.unpack_from(">H", body, 4)[0]
    nonce_k = body[6:6 + k_size]
    s_size = struct.unpack_from(">H", body, 6 + k_size)[0]
    return nonce_k, int.from_bytes(body[8 + k_size:8 + k_size + s_size], "big")


# ---------------------------------------------------------------------------- EC_Ephemeral


def test_ec_ephemeral_counts_commits(any_emulator: Emulator) -> None:
    """Each EC_Ephemeral is a new commit: counters 0, 1, 2 ... shared by all curves; Q is on
    the curve; an unimplemented curve is TPM_RC_CURVE + P1."""
    send = any_emulator.command
    for expected, curve_id in enumerate((ECC_CURVE.NIST_P256, ECC_CURVE.BN_P256,
                                         ECC_CURVE.NIST_P256)):
        q, counter = ephemeral(send, curve_id)
        assert counter == expected and CURVES[curve_id].on(q)
    assert rc(send(ec_ephemeral(0x0099))) == RC_CURVE + P1


# ---------------------------------------------------------------------------- ZGen_2Phase


@pytest.mark.parametrize("curve_id", [ECC_CURVE.NIST_P256, ECC_CURVE.BN_P256],
                         ids=["p256", "bn256"])
def test_zgen_2phase_ecdh(any_emulator: Emulator, curve_id: int) -> None:
    """ECDH two-phase: Z1 = [dsA]QsB = [bs]QsA, Z2 = [deA]QeB = [be]QeA with QeA from
    EC_Ephemeral; the count is then used up (TPM_RC_VALUE + P4)."""
    send = any_emulator.command
    curve = CURVES[curve_id]
    d, public, sensitive = known_key(curve_id, EXT_DEC, u16(ALG.ECDH, ALG.SHA256))
    handle = load(send, public, sensitive)
    qe_a, counter = ephemeral(send, curve_id)
    bs, be = scalar(curve), scalar(curve)
    qs_b, qe_b = curve.mul(bs), curve.mul(be)
    response = send(zgen_2phase(handle, curve.octets(qs_b), curve.octets(qe_b), ALG.ECDH,
                                counter))
    assert rc(response) == 0, hex(rc(response))
    (z1, z2), _ = ecc_points(response, 2)
    assert as_int(z1) == curve.mul(bs, curve.mul(d))
    assert as_int(z2) == curve.mul(be, qe_a)
    again = send(zgen_2phase(handle, curve.octets(qs_b), curve.octets(qe_b), ALG.ECDH, counter))
    assert rc(again) == RC_VALUE + P4
    assert rc(send(flush(handle))) == 0


def test_zgen_2phase_errors_are_swtpms(pair: dict) -> None:
    """Invalid ZGen_2Phase calls get swtpm's codes: a signing key (TPM_RC_ATTRIBUTES + H1),
    another or no key-exchange scheme (TPM_RC_SCHEME + P3), points off the curve
    (TPM_RC_ECC_POINT + P1 / P2), a count never issued (TPM_RC_VALUE + P4); a count from an
    ephemeral key on another curve is accepted."""
    curve = BN_P256
    _, dec_pub, dec_sens = known_key(ECC_CURVE.BN_P256, EXT_DEC, u16(ALG.ECDH, ALG.SHA256))
    _, sig_pub, sig_sens = known_key(ECC_CURVE.BN_P256, EXT_SIGN, u16(ALG.NULL))
    g = curve.octets(curve.g)
    off = (g[0], g[0])
    codes: dict = {}
    for kind, emu in pair.items():
        send = emu.command
        dec, sig = load(send, dec_pub, dec_sens), load(send, sig_pub, sig_sens)
        _, counter = ephemeral(send, ECC_CURVE.NIST_P256)
        codes[kind] = [rc(send(zgen_2phase(*args))) for args in (
            (sig, g, g, ALG.ECDH, counter),
            (dec, g, g, ALG.ECMQV, counter),
            (dec, g, g, ALG.ECDSA, counter),
            (dec, off, g, ALG.ECDH, counter),
            (dec, g, off, ALG.ECDH, counter),
            (dec, g, g, ALG.ECDH, (counter + 7) & 0xFFFF),
            (dec, g, g, ALG.ECDH, counter),
        )]
        for h in (dec, sig):
            assert rc(send(flush(h))) == 0
    assert codes["swtpm_py"] == codes["swtpm"] == [
        RC_ATTRIBUTES + H1, RC_SCHEME + P3, RC_SCHEME + P3, RC_ECC_POINT + P1,
        RC_ECC_POINT + P2, RC_VALUE + P4, 0]


# ---------------------------------------------------------------------------- Commit / ECDAA


@pytest.mark.parametrize("curve_id", [ECC_CURVE.BN_P256, ECC_CURVE.NIST_P256],
                         ids=["bn256", "p256"])
def test_commit_points(any_emulator: Emulator, curve_id: int) -> None:
    """Commit without points gives only E; with P1 E = [r]P1; with s2, y2 also K = [d]P2 and
    L; each commit takes the next count."""
    send = any_emulator.command
    curve = CURVES[curve_id]
    d, public, sensitive = known_key(curve_id, EXT_SIGN, ECDAA)
    handle = load(send, public, sensitive)
    counters = [do_commit(send, handle, curve, d, p1, p2)[1]
                for p1, p2 in ((False, False), (True, False), (False, True), (True, True))]
    assert counters == [0, 1, 2, 3]
    assert rc(send(flush(handle))) == 0


def test_commit_errors_are_swtpms(pair: dict) -> None:
    """Invalid Commit calls get swtpm's codes: an RSA key (TPM_RC_KEY + H1), an ECC key whose
    scheme is not ECDAA (TPM_RC_SCHEME + H1), s2 without y2 (TPM_RC_SIZE + P3), P2 off the
    curve (TPM_RC_ECC_POINT + P2, as swtpm numbers it), P1 off the curve (+ P1)."""
    curve = BN_P256
    _, ecdaa_pub, ecdaa_sens = known_key(ECC_CURVE.BN_P256, EXT_SIGN, ECDAA)
    _, ecdsa_pub, ecdsa_sens = known_key(ECC_CURVE.BN_P256, EXT_SIGN,
                                         u16(ALG.ECDSA, ALG.SHA256))
    rsa_key = rsa.generate_private_key(65537, 2048).private_numbers()
    rsa_pub = rsa_template(EXT_SIGN, sym=NULL_SYM,
                           unique=rsa_key.public_numbers.n.to_bytes(256, "big"))
    rsa_sens = u16(ALG.RSA) + b2(b"") + b2(b"") + b2(rsa_key.p.to_bytes(128, "big"))
    codes: dict = {}
    for kind, emu in pair.items():
        send = emu.command
        key = load(send, ecdaa_pub, ecdaa_sens)
        other = load(send, ecdsa_pub, ecdsa_sens)
        rsa_handle = load(send, rsa_pub, rsa_sens)
        codes[kind] = [rc(send(cmd)) for cmd in (
            commit(rsa_handle), commit(other), commit(key, s2=b"abc"),
            commit(key, s2=b"abc", y2=b"\x05" * 32),
            commit(key, p1=b2(b"\x01") + b2(b"\x03")),
            commit(key, p1=point_bytes(curve, curve.g)))]
        for h in (key, other, rsa_handle):
            assert rc(send(flush(h))) == 0
    assert codes["swtpm_py"] == codes["swtpm"] == [
        RC_KEY + H1, RC_SCHEME + H1, RC_SIZE + P3, RC_ECC_POINT + P2, RC_ECC_POINT + P1, 0]


def test_ecdaa_sign(any_emulator: Emulator) -> None:
    """ECDAA over the wire: after Commit, TPM2_Sign with the count gives (k, s) satisfying
    the verification equations; the count then is used up (TPM_RC_VALUE), as is one never
    issued; the key's own scheme alone is not enough (TPM_RC_SCHEME + P2)."""
    send = any_emulator.command
    curve = BN_P256
    d, public, sensitive = known_key(ECC_CURVE.BN_P256, EXT_SIGN, ECDAA)
    handle = load(send, public, sensitive)
    for p1, p2 in ((False, False), (True, False), (True, True), (False, True)):
        points, counter = do_commit(send, handle, curve, d, p1, p2)
        digest = hashlib.sha256(os.urandom(8)).digest()
        scheme = u16(ALG.ECDAA, ALG.SHA256, counter)
        nonce_k, s = sig_parts(send(sign_digest(handle, digest, scheme)))
        check_ecdaa(curve, d, points, nonce_k, s, digest)
        assert rc(send(sign_digest(handle, digest, scheme))) == RC_VALUE
    assert rc(send(sign_digest(handle, bytes(32), u16(ALG.ECDAA, ALG.SHA256, 999)))) == RC_VALUE
    do_commit(send, handle, curve, d, False, False)
    assert rc(send(sign_digest(handle, bytes(32)))) == RC_SCHEME + P2


def test_ecdaa_sign_in_process(tpm: Tpm) -> None:
    """swtpm_py's ECDAA signer (commands/ecc.py ecdaa_sign, what TPM2_Sign calls for the
    ECDAA scheme) after Commits over the wire: the verification equations hold, a count works
    once, an unknown count is TPM_RC_VALUE; the key's scheme alone is TPM_RC_SCHEME + P2."""
    curve = BN_P256
    d, public, sensitive = known_key(ECC_CURVE.BN_P256, EXT_SIGN, ECDAA)
    handle = load(tpm.execute, public, sensitive)
    key = objects.lookup(tpm, handle)
    for p1, p2 in ((False, False), (True, False), (True, True), (False, True)):
        points, counter = do_commit(tpm.execute, handle, curve, d, p1, p2)
        digest = hashlib.sha256(os.urandom(8)).digest()
        scheme = c.Container(scheme=ALG.ECDAA, details=c.Container(hashAlg=ALG.SHA256,
                                                                   count=counter))
        sig = ecc.ecdaa_sign(tpm, key, scheme, ALG.SHA256, digest)
        assert sig["sigAlg"] == ALG.ECDAA
        body = sig["signature"]
        s = int.from_bytes(body["signatureS"], "big")
        check_ecdaa(curve, d, points, body["signatureR"], s, digest)
        with pytest.raises(TpmError) as err:
            ecc.ecdaa_sign(tpm, key, scheme, ALG.SHA256, digest)
        assert err.value.rc == RC_VALUE
    assert rc(tpm.execute(sign_digest(handle, bytes(32)))) == RC_SCHEME + P2


def test_commit_state_survives_restart_not_reset(tpm: Tpm, platform: Platform) -> None:
    """The commit counter and the outstanding commits are state-reset data: a TPM Restart
    (Shutdown(STATE), Startup(CLEAR)) keeps them, a TPM Reset starts again at 0."""
    curve = BN_P256
    d, public, sensitive = known_key(ECC_CURVE.BN_P256, EXT_DEC, u16(ALG.ECDH, ALG.SHA256))
    for _ in range(3):
        ephemeral(tpm.execute, ECC_CURVE.BN_P256)
    qe_a, counter = ephemeral(tpm.execute, ECC_CURVE.BN_P256)
    assert counter == 3
    assert rc(tpm.execute(shutdown(clear=False))) == 0
    tpm = power_on(platform)
    assert rc(tpm.execute(startup(clear=True))) == 0
    handle = load(tpm.execute, public, sensitive)
    g = curve.octets(curve.g)
    response = tpm.execute(zgen_2phase(handle, g, g, ALG.ECDH, counter))
    assert rc(response) == 0
    (_, z2), _ = ecc_points(response, 2)
    assert as_int(z2) == qe_a
    assert ephemeral(tpm.execute, ECC_CURVE.BN_P256)[1] == 4
    assert rc(tpm.execute(shutdown(clear=True))) == 0
    tpm = power_on(platform)
    assert rc(tpm.execute(startup(clear=True))) == 0
    assert ephemeral(tpm.execute, ECC_CURVE.BN_P256)[1] == 0


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a tpm2-tools binary against ``emu``; it must succeed."""
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=60)
    assert out.returncode == 0, (args, out.stderr.decode())
    return out


def read_point(path: Path) -> Point:
    """A TPM2B_ECC_POINT file (as tpm2-tools writes and reads them)."""
    data = path.read_bytes()
    xs = struct.unpack_from(">H", data, 2)[0]
    x = data[4:4 + xs]
    ys = struct.unpack_from(">H", data, 4 + xs)[0]
    return as_int((x, data[6 + xs:6 + xs + ys]))


def test_tools(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_ecephemeral (Q on P-256, counters 0 and 1), tpm2_commit with an ecc256:ecdaa key
    (E on the curve, counter 2), tpm2_zgen2phase (its default scheme, ECDH; its -s option
    accepts only signing-scheme names) with a key loaded from a PEM file whose
    private part the test knows (Z1 and Z2 recomputed here)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    emu, curve = any_emulator, P256
    for expected in (0, 1):
        tool(emu, "tpm2_ecephemeral", "-u", f"q{expected}.bin", "-t", f"c{expected}.bin",
             "ecc256", cwd=tmp_path)
        assert (tmp_path / f"c{expected}.bin").read_bytes() == struct.pack(">H", expected)
        assert curve.on(read_point(tmp_path / f"q{expected}.bin"))
    tool(emu, "tpm2_createprimary", "-C", "o", "-c", "prim.ctx", cwd=tmp_path)
    tool(emu, "tpm2_create", "-C", "prim.ctx", "-c", "key.ctx", "-G", "ecc256:ecdaa",
         cwd=tmp_path)
    tool(emu, "tpm2_flushcontext", "-t", cwd=tmp_path)
    tool(emu, "tpm2_commit", "-c", "key.ctx", "-t", "commit.ctr", "--eccpoint-K", "K.bin",
         "--eccpoint-L", "L.bin", "-u", "E.bin", cwd=tmp_path)
    assert (tmp_path / "commit.ctr").read_bytes() == struct.pack(">H", 2)
    assert curve.on(read_point(tmp_path / "E.bin"))
    tool(emu, "tpm2_flushcontext", "-t", cwd=tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    tool(emu, "tpm2_loadexternal", "-C", "n", "-G", "ecc", "-r", "key.pem", "-c", "dec.ctx",
         "-a", "decrypt|userwithauth", cwd=tmp_path)
    bs, be = scalar(curve), scalar(curve)
    for name, k in (("qsb.bin", bs), ("qeb.bin", be)):
        (tmp_path / name).write_bytes(b2(point_bytes(curve, curve.mul(k))))
    d = key.private_numbers().private_value
    tool(emu, "tpm2_zgen2phase", "-c", "dec.ctx", "-t", "1",
         "--static-public", "qsb.bin", "--ephemeral-public", "qeb.bin",
         "--output-Z1", "z1.bin", "--output-Z2", "z2.bin", cwd=tmp_path)
    assert read_point(tmp_path / "z1.bin") == curve.mul(bs * d % curve.n)
    assert read_point(tmp_path / "z2.bin") == curve.mul(be, read_point(tmp_path / "q1.bin"))


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss(any_emulator: Emulator) -> None:
    """tpm2-pytss ESAPI through an HMAC session that encrypts parameters both ways
    (EC_Ephemeral's Q, ZGen_2Phase's QsB and Z1, Commit's P1 and K): ec_ephemeral,
    zgen_2_phase (Z1, Z2 recomputed here) and commit (K = [d]P2, a valid E) on BN P-256."""
    from tpm2_pytss import ESAPI, TCTILdr
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC_CURVE, TPM2_SE, TPMA_SESSION
    from tpm2_pytss.types import TPM2B_ECC_POINT, TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMS_ECC_POINT

    curve = BN_P256

    def tss_point(pt: Point) -> TPM2B_ECC_POINT:
        x, y = curve.octets(pt)
        return TPM2B_ECC_POINT(TPMS_ECC_POINT(x=x, y=y))

    def from_tss(pt: TPM2B_ECC_POINT) -> Point:
        return as_int((bytes(pt.point.x), bytes(pt.point.y)))

    with TCTILdr.parse(any_emulator.tcti) as tcti, ESAPI(tcti) as esys:
        session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                          "aes128cfb", TPM2_ALG.SHA256)
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        d, public, sensitive = known_key(ECC_CURVE.BN_P256, EXT_DEC, u16(ALG.ECDH, ALG.SHA256))
        dec = esys.load_external(TPM2B_PUBLIC.unmarshal(b2(public))[0],
                                 TPM2B_SENSITIVE.unmarshal(b2(sensitive))[0])
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.ENCRYPT)
        qe, counter = esys.ec_ephemeral(TPM2_ECC_CURVE.BN_P256, session1=session)
        assert counter == 0 and curve.on(from_tss(qe))
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        bs, be = scalar(curve), scalar(curve)
        z1, z2 = esys.zgen_2_phase(dec, tss_point(curve.mul(bs)), tss_point(curve.mul(be)),
                                   TPM2_ALG.ECDH, counter, session1=ESYS_TR.PASSWORD,
                                   session2=session)
        assert from_tss(z1) == curve.mul(bs * d % curve.n)
        assert from_tss(z2) == curve.mul(be, from_tss(qe))
        esys.flush_context(dec)
        d, public, sensitive = known_key(ECC_CURVE.BN_P256, EXT_SIGN, ECDAA)
        key = esys.load_external(TPM2B_PUBLIC.unmarshal(b2(public))[0],
                                 TPM2B_SENSITIVE.unmarshal(b2(sensitive))[0])
        s2, y2, p2 = point_p2(curve)
        p1 = curve.mul(scalar(curve))
        k, l_point, e, counter = esys.commit(key, tss_point(p1), s2, y2,
                                             session1=ESYS_TR.PASSWORD, session2=session)
        assert counter == 1
        assert from_tss(k) == curve.mul(d, p2)
        assert curve.on(from_tss(l_point)) and curve.on(from_tss(e))
        esys.flush_context(key)
        esys.flush_context(session)
