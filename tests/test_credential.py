"""Credentials (Part 3 §12.5 TPM2_ActivateCredential, §12.6 TPM2_MakeCredential, Part 1 §24).

* tpm2-tools on both emulators: ``tpm2_makecredential`` without a TPM (``-T none``, tpm2-tss'
  own implementation) and with one, then ``tpm2_activatecredential`` returns the secret; a
  changed credential blob is TPM_RC_INTEGRITY, a credential made for another EK is refused.
* Independent computation (hashlib/hmac/``cryptography``, no swtpm_py code): a credential
  made here activates on both TPMs; a credential the TPM makes for a public key whose private
  key only the test knows is opened here (RSA-OAEP and ECC KDFe seeds).
* Differential error codes: the same invalid calls to swtpm_py and swtpm 0.7.1.
* tpm2-pytss ESAPI: make_credential / activate_credential.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_DIGEST, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

from emulator import Emulator
from objcmd import (SIGNING, A, authed, b2, cmd, create, create_primary,
                    ecc_template, flush, load, load_external, parse_create,
                    parse_create_primary, parse_load, pw, rc, rsa_template, u16)
from sessclient import kdfa, kdfe, mac
from swtpm_py.tpm.constants import CC, RC, RH

#: Format-1 parameter / handle numbers.
P1, P2, H1, H2 = 0x140, 0x240, 0x100, 0x200
#: An endorsement-key-like protector: restricted decryption, AES-128 CFB; userWithAuth SET so
#: that a password authorizes it in raw tests.
EK_ATTRS = (A.RESTRICTED | A.DECRYPT | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
            | A.USER_WITH_AUTH)
#: Attributes of an external (public-only) protector: restricted decryption.
EXT_ATTRS = A.RESTRICTED | A.DECRYPT | A.USER_WITH_AUTH
RSASSA_KEY = rsa_template(SIGNING, sym=u16(0x10), scheme=u16(0x14, 0x0B))
IDENTITY = b"IDENTITY"


# ---------------------------------------------------------------------------- independent side


def aes_cfb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    """AES-CFB with a zero IV (the outer wrapper, Part 1 §24.4)."""
    c = Cipher(algorithms.AES(key), CFB(bytes(16)))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def oaep(hash_name: str = "sha256") -> padding.OAEP:
    """RSAES-OAEP with label "IDENTITY" and its NUL."""
    h = getattr(hashes, hash_name.upper())()
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=IDENTITY + b"\x00")


def wrap_credential(seed: bytes, name: bytes, credential: bytes, key_bits: int = 128) -> bytes:
    """Part 1 §24.4 with a SHA-256 protector: TPM2B_ID_OBJECT contents
    (integrityHMAC, encIdentity)."""
    sym = kdfa(0x0B, seed, b"STORAGE", name, b"", key_bits)
    hmac_key = kdfa(0x0B, seed, b"INTEGRITY", b"", b"", 256)
    enc = aes_cfb(sym, b2(credential), True)
    return b2(mac(0x0B, hmac_key, enc, name)) + enc


def unwrap_credential(seed: bytes, name: bytes, blob: bytes) -> bytes:
    """Check the integrity and decrypt a credential blob; the credential."""
    size = struct.unpack(">H", blob[:2])[0]
    integrity, enc = blob[2:2 + size], blob[2 + size:]
    hmac_key = kdfa(0x0B, seed, b"INTEGRITY", b"", b"", 256)
    assert integrity == mac(0x0B, hmac_key, enc, name)
    plain = aes_cfb(kdfa(0x0B, seed, b"STORAGE", name, b"", 128), enc, False)
    assert struct.unpack(">H", plain[:2])[0] == len(plain) - 2
    return plain[2:]


def rsa_public(resp: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of a CreatePrimary response."""
    unique = parse_create_primary(resp)["public"].unique
    return rsa.RSAPublicNumbers(65537, int.from_bytes(unique, "big")).public_key()


def u32(v: int) -> bytes:
    """A big-endian UINT32."""
    return struct.pack(">I", v)


def make_credential(handle: int, credential: bytes, name: bytes) -> bytes:
    """TPM2_MakeCredential (no authorization)."""
    return cmd(CC.MakeCredential, u32(handle) + b2(credential) + b2(name))


def activate(activate_handle: int, key: int, blob: bytes, secret: bytes) -> bytes:
    """TPM2_ActivateCredential with two password sessions."""
    return authed(CC.ActivateCredential, u32(activate_handle) + u32(key),
                  b2(blob) + b2(secret), pw(), pw())


def response_params(resp: bytes, sessions: bool) -> list[bytes]:
    """The TPM2B parameters of a response."""
    off = 14 if sessions else 10
    out = []
    end = off + struct.unpack(">I", resp[10:14])[0] if sessions else len(resp)
    while off < end:
        size = struct.unpack(">H", resp[off:off + 2])[0]
        out.append(resp[off + 2:off + 2 + size])
        off += 2 + size
    return out


def handle_of(resp: bytes) -> int:
    """The response handle."""
    assert rc(resp) == 0, hex(rc(resp))
    return struct.unpack(">I", resp[10:14])[0]


def retrying(send: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """``send`` that resubmits a command answered TPM_RC_RETRY, as TSS stacks do (both TPMs
    answer it to the first use of a DA-protected authValue after start, and swtpm to its
    first TPM2_Create)."""
    def wrapped(command: bytes) -> bytes:
        for _ in range(5):
            resp = send(command)
            if rc(resp) != RC.RETRY:
                return resp
        return resp
    return wrapped


def flush_all(send: Callable[[bytes], bytes]) -> None:
    """Flush every transient object."""
    for h in range(0x80000000, 0x80000003):
        send(flush(h))


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory):
    """swtpm_py and the real swtpm, started once for the module (warmed up: swtpm answers its
    first TPM2_Create with TPM_RC_RETRY)."""
    emus: dict[str, Emulator] = {}
    try:
        for kind in ("swtpm_py", "swtpm"):
            emus[kind] = Emulator(kind, tmp_path_factory.mktemp(kind) / "state").start()
            p = handle_of(emus[kind].command(create_primary(rsa_template())))
            emus[kind].command(create(p, RSASSA_KEY))
            flush_all(emus[kind].command)
        yield emus
    finally:
        for emu in emus.values():
            emu.cleanup()


def ek_and_ak(send: Callable[[bytes], bytes]) -> tuple[int, bytes, int, bytes]:
    """(EK handle, EK CreatePrimary response, AK handle, AK Name): an RSA EK-like primary in
    the endorsement hierarchy and an RSA signing key loaded under it (a restricted decryption
    key is a parent)."""
    ek_resp = send(create_primary(rsa_template(EK_ATTRS), RH.ENDORSEMENT))
    ek = handle_of(ek_resp)
    child = parse_create(send(create(ek, RSASSA_KEY)))
    ak, name = parse_load(send(load(ek, child["private"], child["public"])))
    return ek, ek_resp, ak, name


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_independent_credential_activates(emulators: dict[str, Emulator], kind: str) -> None:
    """A credential made here (OAEP seed with label "IDENTITY", KDFa "STORAGE"/"INTEGRITY",
    AES-CFB, HMAC over encIdentity || Name) activates; the same blob for another object, with
    one octet changed, or with another seed does not (TPM_RC_INTEGRITY + P1)."""
    send = retrying(emulators[kind].command)
    try:
        ek, ek_resp, ak, ak_name = ek_and_ak(send)
        seed = os.urandom(32)
        secret = rsa_public(ek_resp).encrypt(seed, oaep())
        credential = b"sixteen octets!!"
        blob = wrap_credential(seed, ak_name, credential)
        resp = send(activate(ak, ek, blob, secret))
        assert rc(resp) == 0
        assert response_params(resp, True) == [credential]
        # The EK is the activated object: its Name is not the one the blob is bound to.
        assert rc(send(activate(ek, ek, blob, secret))) == RC.INTEGRITY | P1
        for i in (3, len(blob) - 1):
            bad = bytearray(blob)
            bad[i] ^= 1
            assert rc(send(activate(ak, ek, bytes(bad), secret))) == RC.INTEGRITY | P1
        other = rsa_public(ek_resp).encrypt(os.urandom(32), oaep())
        assert rc(send(activate(ak, ek, blob, other))) == RC.INTEGRITY | P1
    finally:
        flush_all(send)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
@pytest.mark.parametrize("key_type", ["rsa", "ecc"])
def test_tpm_credential_opens_outside(emulators: dict[str, Emulator], kind: str,
                                      key_type: str) -> None:
    """TPM2_MakeCredential for an external public key whose private key only the test holds:
    the seed decrypts here (RSA-OAEP "IDENTITY", or ECDH then KDFe "IDENTITY" with the
    ephemeral point's and the key's x-coordinates) and the blob opens to the credential."""
    send = retrying(emulators[kind].command)
    name = b"\x00\x0b" + os.urandom(32)
    credential = os.urandom(20)
    try:
        if key_type == "rsa":
            priv = rsa.generate_private_key(65537, 2048)
            n = priv.public_key().public_numbers().n.to_bytes(256, "big")
            handle = handle_of(send(load_external(rsa_template(EXT_ATTRS, unique=n),
                                                  hierarchy=RH.OWNER)))
        else:
            priv = ec.generate_private_key(ec.SECP256R1())
            nums = priv.public_key().public_numbers()
            x, y = nums.x.to_bytes(32, "big"), nums.y.to_bytes(32, "big")
            handle = handle_of(send(load_external(ecc_template(EXT_ATTRS, x=x, y=y),
                                                  hierarchy=RH.OWNER)))
        resp = send(make_credential(handle, credential, name))
        assert rc(resp) == 0
        blob, secret = response_params(resp, False)
        if key_type == "rsa":
            seed = priv.decrypt(secret, oaep())
        else:
            qx = secret[2:2 + struct.unpack(">H", secret[:2])[0]]
            rest = secret[2 + len(qx):]
            qy = rest[2:]
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(qx, "big"),
                                                 int.from_bytes(qy, "big"),
                                                 ec.SECP256R1()).public_key()
            z = priv.exchange(ec.ECDH(), peer)
            seed = kdfe(0x0B, z, IDENTITY, qx, x, 256)
        assert len(seed) == 32
        assert unwrap_credential(seed, name, blob) == credential
    finally:
        flush_all(send)


def _error_codes(send: Callable[[bytes], bytes]) -> list[int]:
    """Invalid credential calls, in order; their response codes."""
    ek, ek_resp, ak, ak_name = ek_and_ak(send)
    codes = []
    # MakeCredential: a signing key cannot protect a credential; a credential longer than the
    # key's nameAlg digest; an unloaded handle.
    codes.append(rc(send(make_credential(ak, b"x", ak_name))))
    codes.append(rc(send(make_credential(ek, bytes(33), ak_name))))
    codes.append(rc(send(make_credential(0x80000002, b"x", ak_name))))
    resp = send(make_credential(ek, b"secret", ak_name))
    codes.append(rc(resp))
    blob, secret = response_params(resp, False)
    # ActivateCredential: keyHandle that is no restricted decryption key; a secret that does
    # not decrypt; a blob cut short; an integrity field longer than any digest.
    codes.append(rc(send(activate(ak, ak, blob, secret))))
    codes.append(rc(send(activate(ak, ek, blob, bytes(256)))))
    codes.append(rc(send(activate(ak, ek, blob, secret[:-1]))))
    codes.append(rc(send(activate(ak, ek, blob[:20], secret))))
    codes.append(rc(send(activate(ak, ek, b"\x00\x50" + blob[2:], secret))))
    codes.append(rc(send(activate(ak, ek, b"", secret))))
    # An extra octet after the credential: the integrity covers it, so it is INTEGRITY first.
    codes.append(rc(send(activate(ak, ek, blob + b"\x00", secret))))
    # An ECC EK: a point off the curve, an octet after the point (ignored, as libtpms does), a
    # truncated point, and a good point of another seed.
    send(flush(ek))
    ecc_ek = handle_of(send(create_primary(ecc_template(EK_ATTRS), RH.ENDORSEMENT)))
    resp = send(make_credential(ecc_ek, b"secret", ak_name))
    codes.append(rc(resp))
    blob, secret = response_params(resp, False)
    codes.append(rc(send(activate(ak, ecc_ek, blob, secret))))
    off_curve = secret[:-1] + bytes([secret[-1] ^ 1])
    codes.append(rc(send(activate(ak, ecc_ek, blob, off_curve))))
    codes.append(rc(send(activate(ak, ecc_ek, blob, secret + b"\x00"))))
    codes.append(rc(send(activate(ak, ecc_ek, blob, secret[:-3]))))
    other = response_params(send(make_credential(ecc_ek, b"secret", ak_name)), False)[1]
    codes.append(rc(send(activate(ak, ecc_ek, blob, other))))
    return codes


def test_error_codes_match_swtpm(emulators: dict[str, Emulator]) -> None:
    """The same invalid calls get swtpm 0.7.1's codes from swtpm_py."""
    results = {}
    for kind, emu in emulators.items():
        try:
            results[kind] = [hex(c) for c in _error_codes(retrying(emu.command))]
        finally:
            flush_all(emu.command)
    assert results["swtpm_py"] == results["swtpm"]
    # Measured on swtpm 0.7.1. An OAEP decoding failure is TPM_RC_FAILURE there (libtpms
    # reports OpenSSL's failure so); the reference's code says TPM_RC_VALUE + P2.
    assert results["swtpm"] == [hex(x) for x in (
        RC.TYPE | H1, RC.SIZE | P1, RC.REFERENCE_H0, 0, RC.TYPE | H2, RC.FAILURE,
        RC.SIZE | P2, RC.INSUFFICIENT | P1, RC.SIZE | P1, RC.INSUFFICIENT | P1,
        RC.INTEGRITY | P1, 0, 0, RC.ECC_POINT | P2, 0, RC.INSUFFICIENT | P2,
        RC.INTEGRITY | P1)]


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator | None, cwd: Path, name: str, *args: str,
         ok: bool = True) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` (None: ``-T none``) in ``cwd``."""
    tcti = emu.tcti if emu is not None else "none"
    proc = subprocess.run([name, "-T", tcti, *args], capture_output=True, timeout=60, cwd=cwd)
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def _activate_tool(emu: Emulator, cwd: Path, blob: str, ok: bool = True,
                   ek: str = "ek.ctx") -> subprocess.CompletedProcess:
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_startauthsession", "--policy-session", "-S", "s.ctx")
    tool(emu, cwd, "tpm2_policysecret", "-S", "s.ctx", "-c", "e")
    proc = tool(emu, cwd, "tpm2_activatecredential", "-c", "ak.ctx", "-C", ek, "-i", blob,
                "-o", "out.bin", "-P", "session:s.ctx", ok=ok)
    tool(emu, cwd, "tpm2_flushcontext", "s.ctx")
    return proc


def test_tools_make_and_activate(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_makecredential with and without the TPM for the EK public key and the AK's Name;
    tpm2_activatecredential (EK authorized by PolicySecret(endorsement)) returns the secret.
    A changed blob is TPM_RC_INTEGRITY + P1; a credential for another EK is refused."""
    emu = any_emulator
    tool(emu, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    tool(emu, tmp_path, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g",
         "sha256", "-s", "rsassa", "-u", "ak.pub", "-n", "ak.name")
    tool(emu, tmp_path, "tpm2_flushcontext", "-t")
    secret = b"attestation-key-secret"
    (tmp_path / "secret.bin").write_bytes(secret)
    name = (tmp_path / "ak.name").read_bytes().hex()
    tool(None, tmp_path, "tpm2_makecredential", "-u", "ek.pub", "-s", "secret.bin", "-n",
         name, "-o", "cred.none")
    tool(emu, tmp_path, "tpm2_makecredential", "-u", "ek.pub", "-s", "secret.bin", "-n",
         name, "-o", "cred.tpm")
    for blob in ("cred.none", "cred.tpm"):
        (tmp_path / "out.bin").unlink(missing_ok=True)
        _activate_tool(emu, tmp_path, blob)
        assert (tmp_path / "out.bin").read_bytes() == secret
    # tpm2-tools' file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
    data = bytearray((tmp_path / "cred.tpm").read_bytes())
    data[8 + 2 + 5] ^= 0x80
    (tmp_path / "cred.bad").write_bytes(bytes(data))
    proc = _activate_tool(emu, tmp_path, "cred.bad", ok=False)
    assert proc.returncode != 0
    assert b"(0x1df)" in proc.stderr.lower() and b"integrity" in proc.stderr.lower()
    # A credential made for another EK (ECC this time): its seed does not decrypt with the
    # RSA EK (an OAEP error on the secret) — nothing is revealed.
    tool(emu, tmp_path, "tpm2_createek", "-c", "ek2.ctx", "-G", "ecc", "-u", "ek2.pub")
    tool(emu, tmp_path, "tpm2_flushcontext", "-t")
    tool(None, tmp_path, "tpm2_makecredential", "-u", "ek2.pub", "-s", "secret.bin", "-n",
         name, "-o", "cred.other")
    (tmp_path / "out.bin").unlink(missing_ok=True)
    proc = _activate_tool(emu, tmp_path, "cred.other", ok=False)
    assert proc.returncode != 0 and not (tmp_path / "out.bin").exists()
    # The ECC EK opens its own.
    _activate_tool(emu, tmp_path, "cred.other", ek="ek2.ctx")
    assert (tmp_path / "out.bin").read_bytes() == secret


@pytest.mark.parametrize("holder,maker", [("swtpm_py", "swtpm"), ("swtpm", "swtpm_py")])
def test_tools_credential_across_tpms(tmp_path: Path, holder: str, maker: str) -> None:
    """One TPM makes the credential for the other's EK (loaded there as an external public
    key by tpm2_makecredential); the EK's TPM activates it."""
    one = Emulator(holder, tmp_path / "holder").start()
    two = Emulator(maker, tmp_path / "maker").start()
    try:
        tool(one, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
        tool(one, tmp_path, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc",
             "-g", "sha256", "-s", "ecdsa", "-u", "ak.pub", "-n", "ak.name")
        tool(one, tmp_path, "tpm2_flushcontext", "-t")
        secret = os.urandom(32)
        (tmp_path / "secret.bin").write_bytes(secret)
        tool(two, tmp_path, "tpm2_makecredential", "-u", "ek.pub", "-s", "secret.bin", "-n",
             (tmp_path / "ak.name").read_bytes().hex(), "-o", "cred.bin")
        _activate_tool(one, tmp_path, "cred.bin")
        assert (tmp_path / "out.bin").read_bytes() == secret
    finally:
        one.cleanup()
        two.cleanup()


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss_make_and_activate(any_emulator: Emulator) -> None:
    """ESAPI make_credential with the TPM, then activate_credential returns the credential;
    ESAPI checks the response HMACs of the password-less sessions and every Name."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    try:
        ek_template = TPM2B_PUBLIC.parse(
            "rsa2048:aes128cfb", objectAttributes=(
                TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH))
        ek = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), ek_template,
                                primary_handle=ESYS_TR.ENDORSEMENT)[0]
        ak_template = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256",
            objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATE_ATTRS & ~TPMA_OBJECT.DECRYPT)
        priv, pub = ctx.create(ek, TPM2B_SENSITIVE_CREATE(), ak_template)[:2]
        ak = ctx.load(ek, priv, pub)
        ak_name = ctx.tr_get_name(ak)
        credential = TPM2B_DIGEST(b"pytss credential")
        blob, secret = ctx.make_credential(ek, credential, ak_name)
        got = ctx.activate_credential(ak, ek, blob, secret)
        assert bytes(got) == b"pytss credential"
        # Bound to the AK's Name: the EK as activated object is an integrity failure.
        with pytest.raises(TSS2_Exception) as err:
            ctx.activate_credential(ek, ek, blob, secret)
        assert err.value.rc == RC.INTEGRITY | P1
    finally:
        ctx.close()
