"""Duplication (Part 3 §13.1 TPM2_Duplicate, §13.2 TPM2_Rewrap, §13.3 TPM2_Import; Part 1 §23).

* tpm2-tools between two emulators, in every direction between swtpm_py and the real swtpm:
  ``tpm2_duplicate`` of a key created with a PolicyCommandCode(Duplicate) policy to the other
  TPM's storage key (loaded there as an external public key), ``tpm2_import`` on the other TPM,
  then a signature made there verifies with ``cryptography`` against the original public key.
  The wire format is the spec's, so a key duplicated by swtpm imports into swtpm_py and back.
  A fixedTPM key is refused (TPM_RC_ATTRIBUTES + H1).
* Independent computation (hashlib/``cryptography``): a duplicate for TPM_RH_NULL with an inner
  wrapper opens here to the key's private part; a blob made here (an outer wrapper with an
  RSA-OAEP "DUPLICATE" seed) imports, and the imported key signs verifiably.
* Differential error codes against swtpm 0.7.1 for invalid Duplicate / Import / Rewrap calls.
* tpm2-pytss ESAPI duplicate / import.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (TPM2B_DATA, TPM2B_DIGEST, TPM2B_PRIVATE, TPM2B_PUBLIC,
                              TPM2B_SENSITIVE_CREATE, TPMT_SIG_SCHEME, TPMT_SYM_DEF,
                              TPMT_SYM_DEF_OBJECT, TPMT_TK_HASHCHECK)

from emulator import Emulator
from objcmd import (STORAGE, A, authed, b2, cmd, create, create_primary, flush, load,
                    load_external, parse_create, parse_load, pw, rc, rsa_template, u16)
from sessclient import kdfa, mac
from swtpm_py.tpm.constants import CC, RC, RH
from test_credential import (aes_cfb, handle_of, make_credential, response_params, retrying,
                             u32)

P1, P2, P3, P4, H1, H2, S1 = 0x140, 0x240, 0x340, 0x440, 0x100, 0x200, 0x900
#: PolicyCommandCode(TPM2_Duplicate) from the empty SHA-256 digest (Part 3 §23.11).
DUP_POLICY = hashlib.sha256(bytes(32) + u32(CC.PolicyCommandCode) + u32(CC.Duplicate)).digest()
#: A duplicable RSA signing key (fixedTPM and fixedParent CLEAR).
MOVABLE = A.SENSITIVE_DATA_ORIGIN | A.USER_WITH_AUTH | A.SIGN_ENCRYPT
RSASSA = u16(0x14, 0x0B)
NULL_SYM = u16(0x10)
AES128 = u16(0x06, 128, 0x43)


def key_template(attrs: int = MOVABLE, policy: bytes = DUP_POLICY) -> bytes:
    """An RSA-2048 RSASSA-SHA256 signing key with the duplication policy."""
    return rsa_template(attrs, sym=NULL_SYM, scheme=RSASSA, policy=policy)


# ---------------------------------------------------------------------------- raw commands


def policy_session(send: Callable[[bytes], bytes], code: int = CC.Duplicate) -> int:
    """A policy session (unsalted, unbound) after PolicyCommandCode(``code``)."""
    body = (u32(RH.NULL) + u32(RH.NULL) + b2(os.urandom(16)) + b2(b"") + b"\x01"
            + NULL_SYM + u16(0x0B))
    handle = handle_of(send(cmd(CC.StartAuthSession, body)))
    assert rc(send(cmd(CC.PolicyCommandCode, u32(handle) + u32(code)))) == 0
    return handle


def policy_auth(handle: int) -> bytes:
    """The session's authorization (no HMAC: no key and no authValue; not continued)."""
    return u32(handle) + b2(os.urandom(16)) + b"\x00" + b2(b"")


def duplicate(send: Callable[[bytes], bytes], obj: int, new_parent: int, key: bytes = b"",
              sym: bytes = NULL_SYM, session: bytes | None = None,
              code: int = CC.Duplicate) -> bytes:
    """TPM2_Duplicate's response, authorized by a fresh PolicyCommandCode(``code``) session
    (flushed afterwards, even when the command fails) or by ``session``."""
    handle = None
    if session is None:
        handle = policy_session(send, code)
        session = policy_auth(handle)
    resp = send(authed(CC.Duplicate, u32(obj) + u32(new_parent), b2(key) + sym, session))
    if handle is not None:
        send(flush(handle))
    return resp


def import_(parent: int, public: bytes, blob: bytes, seed: bytes, key: bytes = b"",
            sym: bytes = NULL_SYM) -> bytes:
    """TPM2_Import with a password session."""
    return authed(CC.Import, u32(parent), b2(key) + b2(public) + b2(blob) + b2(seed) + sym,
                  pw())


def rewrap(old: int, new: int, blob: bytes, name: bytes, seed: bytes) -> bytes:
    """TPM2_Rewrap with a password session for the old parent."""
    return authed(CC.Rewrap, u32(old) + u32(new), b2(blob) + b2(name) + b2(seed), pw())


def flush_all(send: Callable[[bytes], bytes]) -> None:
    """Flush every transient object."""
    for h in range(0x80000000, 0x80000003):
        send(flush(h))


def _created(send: Callable[[bytes], bytes], parent: int, template: bytes) -> dict:
    resp = send(create(parent, template))
    assert rc(resp) == 0, hex(rc(resp))
    return parse_create(resp)


def _error_codes(send: Callable[[bytes], bytes]) -> list[int]:
    """Valid and invalid duplication calls in order; their response codes."""
    codes: list[int] = []
    parent = handle_of(send(create_primary(rsa_template(STORAGE))))
    movable = _created(send, parent, key_template())
    fixed = _created(send, parent, key_template(MOVABLE | A.FIXED_TPM | A.FIXED_PARENT))
    encdup = _created(send, parent, key_template(MOVABLE | A.ENCRYPTED_DUPLICATION))
    k, k_name = parse_load(send(load(parent, movable["private"], movable["public"])))
    f = handle_of(send(load(parent, fixed["private"], fixed["public"])))
    # Duplicate: fixedTPM/fixedParent; a signing key as new parent; encryptedDuplication
    # without an inner wrapper, and to TPM_RH_NULL; an inner key with TPM_ALG_NULL or of the
    # wrong size; a password instead of the policy; a policy for another command.
    codes.append(rc(duplicate(send, f, parent)))
    codes.append(rc(duplicate(send, k, k)))
    send(flush(f))
    e = handle_of(send(load(parent, encdup["private"], encdup["public"])))
    codes.append(rc(duplicate(send, e, parent)))
    codes.append(rc(duplicate(send, e, RH.NULL, sym=AES128)))
    send(flush(e))
    codes.append(rc(duplicate(send, k, parent, key=b"x")))
    codes.append(rc(duplicate(send, k, parent, key=bytes(5), sym=AES128)))
    codes.append(rc(duplicate(send, k, parent, session=pw())))
    codes.append(rc(duplicate(send, k, parent, code=CC.Sign)))
    # A valid duplicate with both wrappers; the caller's key is not echoed back.
    inner = bytes(range(16))
    resp = duplicate(send, k, parent, key=inner, sym=AES128)
    codes.append(rc(resp))
    key_out, blob, seed = response_params(resp, True)
    assert key_out == b""
    public = movable["public"]
    # Import: the right key, a changed blob, the wrong inner key, a fixedTPM public area,
    # a missing seed, a signing key as parent, a key of the wrong size, a seed that does not
    # decrypt.
    resp = send(import_(parent, public, blob, seed, inner, AES128))
    codes.append(rc(resp))
    bad = bytearray(blob)
    bad[40] ^= 1
    codes.append(rc(send(import_(parent, public, bytes(bad), seed, inner, AES128))))
    codes.append(rc(send(import_(parent, public, blob, seed, bytes(16), AES128))))
    fixed_public = bytearray(public)
    fixed_public[4:8] = u32(MOVABLE | A.FIXED_TPM | A.FIXED_PARENT)
    codes.append(rc(send(import_(parent, bytes(fixed_public), blob, seed, inner, AES128))))
    codes.append(rc(send(import_(parent, public, blob, b"", inner, AES128))))
    codes.append(rc(send(import_(k, public, blob, seed, inner, AES128))))
    codes.append(rc(send(import_(parent, public, blob, seed, inner[:8], AES128))))
    codes.append(rc(send(import_(parent, public, blob, bytes(256), inner, AES128))))
    # Rewrap: a seed without an old parent; the outer wrapper moved to the same parent, then
    # imported; a changed blob.
    codes.append(rc(send(rewrap(RH.NULL, parent, blob, k_name, seed))))
    resp = send(rewrap(parent, parent, blob, k_name, seed))
    codes.append(rc(resp))
    blob2, seed2 = response_params(resp, True)
    codes.append(rc(send(import_(parent, public, blob2, seed2, inner, AES128))))
    codes.append(rc(send(rewrap(parent, parent, bytes(bad), k_name, seed))))
    codes.append(rc(send(rewrap(parent, k, blob, k_name, seed))))
    return codes


def test_error_codes_match_swtpm(pair: dict[str, Emulator]) -> None:
    """The same calls get swtpm 0.7.1's codes from swtpm_py (measured there)."""
    results = {}
    for kind, emu in pair.items():
        send = retrying(emu.command)
        try:
            results[kind] = [hex(c) for c in _error_codes(send)]
        finally:
            flush_all(send)
    assert results["swtpm_py"] == results["swtpm"]
    # A wrong inner key decrypts the integrity's size field to garbage: TPM_RC_SIZE before any
    # digest comparison; so does a blob with an outer wrapper imported without its seed.
    assert results["swtpm"] == [hex(x) for x in (
        RC.ATTRIBUTES | H1, RC.TYPE | H2, RC.SYMMETRIC | P2, RC.HIERARCHY | H2,
        RC.SIZE | P1, RC.SIZE | P1, RC.AUTH_TYPE, RC.POLICY_FAIL | S1, 0,
        0, RC.INTEGRITY | P3, RC.SIZE | P3, RC.ATTRIBUTES | P2, RC.SIZE | P3,
        RC.TYPE | H1, RC.SIZE | P1, RC.FAILURE,
        RC.HANDLE | H1, 0, 0, RC.INTEGRITY | P1, RC.TYPE | H2)]


def _edge_codes(send: Callable[[bytes], bytes]) -> list[int]:
    """Boundary calls: an empty Name or credential, an empty or one-octet duplicate, a
    public-only object duplicated, Rewrap between two TPM_RH_NULLs and with a missing seed."""
    p = handle_of(send(create_primary(rsa_template(STORAGE))))
    key = _created(send, p, key_template())
    name = u16(0x0B) + bytes(32)
    codes = [rc(send(make_credential(p, b"x", b""))),
             rc(send(make_credential(p, b"", name))),
             rc(send(import_(p, key["public"], b"", b""))),
             rc(send(import_(p, key["public"], b"\x00", b"")))]
    ext = handle_of(send(load_external(key["public"], hierarchy=RH.OWNER)))
    codes.append(rc(duplicate(send, ext, p)))
    codes.append(rc(send(rewrap(RH.NULL, RH.NULL, b"abc", name, b""))))
    codes.append(rc(send(rewrap(p, RH.NULL, b"abc", name, b""))))
    # A seed that does not decrypt (OAEP failure, wrong size): TPM_RC_VALUE + P3 whatever the
    # cause; an empty blob and an empty Name pass through when nothing is unwrapped.
    codes.append(rc(send(rewrap(p, RH.NULL, b"abc", name, bytes(256)))))
    codes.append(rc(send(rewrap(p, RH.NULL, b"abc", name, bytes(255)))))
    codes.append(rc(send(rewrap(RH.NULL, p, b"", b"", b""))))
    for h in range(0x03000000, 0x03000004):
        send(flush(h))
    return codes


def test_edge_cases_match_swtpm(pair: dict[str, Emulator]) -> None:
    """Boundary calls get swtpm 0.7.1's codes (measured there): an empty duplicate is
    TPM_RC_INSUFFICIENT + P3, a public-only object cannot be authorized for duplication
    (TPM_RC_AUTH_UNAVAILABLE), a seed-less Rewrap from a parent TPM_RC_HANDLE + H1."""
    results = {}
    for kind, emu in pair.items():
        send = retrying(emu.command)
        try:
            results[kind] = [hex(c) for c in _edge_codes(send)]
        finally:
            flush_all(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == [hex(x) for x in (
        0, 0, RC.INSUFFICIENT | P3, RC.INSUFFICIENT | P3, RC.AUTH_UNAVAILABLE, 0,
        RC.HANDLE | H1, RC.VALUE | P3, RC.VALUE | P3, 0)]


def selection_policy(new_parent_name: bytes) -> bytes:
    """PolicyDuplicationSelect(newParentName, includeObject NO) from the empty SHA-256 digest
    (Part 3 §23.15)."""
    return hashlib.sha256(bytes(32) + u32(CC.PolicyDuplicationSelect) + new_parent_name
                          + b"\x00").digest()


def _selection_codes(send: Callable[[bytes], bytes]) -> list[int]:
    """Duplication authorized by PolicyDuplicationSelect: only to the selected parent
    (TPM_RH_NULL here); then TPM2_Rewrap adds the outer wrapper to a real parent and the
    result imports."""
    codes: list[int] = []
    parent = handle_of(send(create_primary(rsa_template(STORAGE))))
    null_name = u32(RH.NULL)
    key = _created(send, parent, key_template(policy=selection_policy(null_name)))
    k, k_name = parse_load(send(load(parent, key["private"], key["public"])))

    def select(new_parent_name: bytes) -> bytes:
        body = (u32(RH.NULL) + u32(RH.NULL) + b2(os.urandom(16)) + b2(b"") + b"\x01"
                + NULL_SYM + u16(0x0B))
        handle = handle_of(send(cmd(CC.StartAuthSession, body)))
        codes.append(rc(send(cmd(CC.PolicyDuplicationSelect, u32(handle) + b2(k_name)
                                 + b2(new_parent_name) + b"\x00"))))
        return policy_auth(handle)

    def parent_name() -> bytes:
        resp = send(cmd(CC.ReadPublic, u32(parent)))
        size = struct.unpack(">H", resp[10:12])[0]
        nsize = struct.unpack(">H", resp[12 + size:14 + size])[0]
        return resp[14 + size:14 + size + nsize]

    # Selected NULL, asked for the parent: the nameHash differs (policy digest matches).
    resp = send(authed(CC.Duplicate, u32(k) + u32(parent), b2(b"") + NULL_SYM,
                       select(null_name)))
    codes.append(rc(resp))
    # Selected the parent: the policy digest differs from the key's authPolicy.
    resp = send(authed(CC.Duplicate, u32(k) + u32(parent), b2(b"") + NULL_SYM,
                       select(parent_name())))
    codes.append(rc(resp))
    resp = send(authed(CC.Duplicate, u32(k) + u32(RH.NULL), b2(b"") + NULL_SYM,
                       select(null_name)))
    codes.append(rc(resp))
    _, blob, seed = response_params(resp, True)
    assert seed == b""
    resp = send(rewrap(RH.NULL, parent, blob, k_name, b""))
    codes.append(rc(resp))
    blob2, seed2 = response_params(resp, True)
    resp = send(import_(parent, key["public"], blob2, seed2))
    codes.append(rc(resp))
    codes.append(rc(send(load(parent, response_params(resp, True)[0], key["public"]))))
    # The wrapped blob rewrapped back to TPM_RH_NULL is the plain one again.
    resp = send(rewrap(parent, RH.NULL, blob2, k_name, seed2))
    codes.append(rc(resp))
    assert response_params(resp, True) == [blob, b""]
    for h in range(0x03000000, 0x03000004):
        send(flush(h))
    return codes


def test_duplication_select_and_rewrap(pair: dict[str, Emulator]) -> None:
    """PolicyDuplicationSelect limits TPM2_Duplicate to the selected new parent
    (TPM_RC_POLICY_FAIL + S1 otherwise); Rewrap from TPM_RH_NULL to a parent and back; the
    rewrapped blob imports and loads. Codes as swtpm 0.7.1's."""
    results = {}
    for kind, emu in pair.items():
        send = retrying(emu.command)
        try:
            results[kind] = [hex(c) for c in _selection_codes(send)]
        finally:
            flush_all(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == [hex(x) for x in (
        0, RC.POLICY_FAIL | S1, 0, RC.POLICY_FAIL | S1, 0, 0, 0, 0, 0, 0)]


def test_null_parent_inner_wrapper_opens_outside(pair: dict[str, Emulator]) -> None:
    """TPM2_Duplicate to TPM_RH_NULL with an AES-128 inner wrapper and no key given: the TPM
    returns the key it chose and no seed; the blob opens here (AES-CFB, zero IV) with
    H_nameAlg(TPM2B_SENSITIVE || Name) in front, and the sensitive area holds a prime factor
    of the key's modulus. The same blob without the inner wrapper is the plain TPM2B."""
    for kind, emu in pair.items():
        send = retrying(emu.command)
        try:
            parent = handle_of(send(create_primary(rsa_template(STORAGE))))
            key = _created(send, parent, key_template())
            k, name = parse_load(send(load(parent, key["private"], key["public"])))
            resp = duplicate(send, k, RH.NULL, sym=AES128)
            assert rc(resp) == 0, kind
            inner, blob, seed = response_params(resp, True)
            assert len(inner) == 16 and seed == b""
            plain = aes_cfb(inner, blob, False)
            assert plain[:2] == u16(32)
            integrity, sensitive = plain[2:34], plain[34:]
            assert integrity == hashlib.sha256(sensitive + name).digest()
            size = struct.unpack(">H", sensitive[:2])[0]
            assert size == len(sensitive) - 2
            # TPMT_SENSITIVE: type, authValue, seedValue, then the prime.
            area = sensitive[2:]
            assert area[:2] == u16(0x0001)
            off = 2
            for _ in range(2):
                off += 2 + struct.unpack(">H", area[off:off + 2])[0]
            prime = int.from_bytes(area[off + 2:], "big")
            modulus = int.from_bytes(key["public"][-256:], "big")
            assert prime > 1 and modulus % prime == 0, kind
            resp = duplicate(send, k, RH.NULL)
            assert response_params(resp, True) == [b"", sensitive, b""]
        finally:
            flush_all(send)


def outside_duplicate(parent_public: bytes) -> tuple:
    """A duplication blob made here for an RSA key generated here: the outer wrapper to the
    RSA storage key ``parent_public`` (TPMT_PUBLIC octets; SHA-256 nameAlg, AES-128), with a
    seed RSA-OAEP-encrypted under label "DUPLICATE". Returns (private key, public area, blob,
    encrypted seed)."""
    priv = rsa.generate_private_key(65537, 2048)
    n = priv.public_key().public_numbers().n.to_bytes(256, "big")
    p = priv.private_numbers().p.to_bytes(128, "big")
    public = rsa_template(A.USER_WITH_AUTH | A.SIGN_ENCRYPT, sym=NULL_SYM, scheme=RSASSA,
                          unique=n)
    name = u16(0x0B) + hashlib.sha256(public).digest()
    sensitive = u16(0x0001) + b2(b"") + b2(b"") + b2(p)
    parent_n = int.from_bytes(parent_public[-256:], "big")
    seed = os.urandom(32)
    sha = hashes.SHA256()
    enc_seed = rsa.RSAPublicNumbers(65537, parent_n).public_key().encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(sha), algorithm=sha, label=b"DUPLICATE\x00"))
    enc = aes_cfb(kdfa(0x0B, seed, b"STORAGE", name, b"", 128), b2(sensitive), True)
    integrity = mac(0x0B, kdfa(0x0B, seed, b"INTEGRITY", b"", b"", 256), enc, name)
    return priv, public, b2(integrity) + enc, enc_seed


def test_outside_blob_imports_and_signs(pair: dict[str, Emulator]) -> None:
    """A key duplicated here to the TPM's storage key imports; loaded from the returned
    private area it signs, and the signature verifies with the key made here."""
    for kind, emu in pair.items():
        send = retrying(emu.command)
        try:
            parent = handle_of(send(create_primary(rsa_template(STORAGE))))
            parent_public = _public_of(send, parent)
            priv, public, blob, seed = outside_duplicate(parent_public)
            resp = send(import_(parent, public, blob, seed))
            assert rc(resp) == 0, (kind, hex(rc(resp)))
            out_private = response_params(resp, True)[0]
            k = handle_of(send(load(parent, out_private, public)))
            digest = hashlib.sha256(b"signed by an imported key").digest()
            resp = send(_sign(k, digest))
            assert rc(resp) == 0, (kind, hex(rc(resp)))
            sig = _signature(resp)
            priv.public_key().verify(sig, b"signed by an imported key", padding.PKCS1v15(),
                                     hashes.SHA256())
        finally:
            flush_all(send)


def _public_of(send: Callable[[bytes], bytes], handle: int) -> bytes:
    """TPMT_PUBLIC octets of a loaded object (TPM2_ReadPublic)."""
    resp = send(cmd(CC.ReadPublic, u32(handle)))
    assert rc(resp) == 0
    size = struct.unpack(">H", resp[10:12])[0]
    return resp[12:12 + size]


def _sign(handle: int, digest: bytes) -> bytes:
    """TPM2_Sign of a SHA-256 digest with the key's scheme and the NULL hashcheck ticket."""
    ticket = u16(0x8024) + u32(RH.NULL) + b2(b"")
    return authed(CC.Sign, u32(handle), b2(digest) + u16(0x10) + ticket, pw())


def _signature(resp: bytes) -> bytes:
    """The RSASSA signature of a TPM2_Sign response (TPMT_SIGNATURE: sigAlg, hash, TPM2B)."""
    params = resp[14:]
    size = struct.unpack(">H", params[4:6])[0]
    return params[6:6 + size]


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator, cwd: Path, name: str, *args: str,
         ok: bool = True) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` in ``cwd``, then flush transient objects."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60,
                          cwd=cwd)
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    subprocess.run(["tpm2_flushcontext", "-T", emu.tcti, "-t"], capture_output=True,
                   timeout=60, cwd=cwd)
    return proc


def _duplicate_tool(src: Emulator, cwd: Path, wrap: str, attrs: str,
                    ok: bool = True) -> subprocess.CompletedProcess:
    """Create a key with the duplication policy on ``src`` and duplicate it to np.ctx (the
    new parent's public area, loaded external)."""
    tool(src, cwd, "tpm2_startauthsession", "-S", "t.ctx")
    tool(src, cwd, "tpm2_policycommandcode", "-S", "t.ctx", "-L", "policy.dat",
         "TPM2_CC_Duplicate")
    tool(src, cwd, "tpm2_flushcontext", "t.ctx")
    tool(src, cwd, "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa", "-c", "p1.ctx")
    tool(src, cwd, "tpm2_create", "-C", "p1.ctx", "-g", "sha256", "-G", "rsa:rsassa-sha256",
         "-r", "key.prv", "-u", "key.pub", "-L", "policy.dat", "-a", attrs)
    tool(src, cwd, "tpm2_load", "-C", "p1.ctx", "-r", "key.prv", "-u", "key.pub", "-c",
         "key.ctx")
    tool(src, cwd, "tpm2_loadexternal", "-C", "o", "-u", "p2.pub", "-c", "np.ctx")
    tool(src, cwd, "tpm2_startauthsession", "--policy-session", "-S", "s.ctx")
    tool(src, cwd, "tpm2_policycommandcode", "-S", "s.ctx", "-L", "policy.dat",
         "TPM2_CC_Duplicate")
    extra = ["-G", "aes", "-o", "inner.key"] if wrap == "aes" else ["-G", "null"]
    proc = tool(src, cwd, "tpm2_duplicate", "-C", "np.ctx", "-c", "key.ctx", *extra, "-p",
                "session:s.ctx", "-r", "dup.prv", "-s", "dup.seed", ok=ok)
    tool(src, cwd, "tpm2_flushcontext", "s.ctx")
    return proc


@pytest.mark.parametrize("src,dst,wrap,parent", [
    ("swtpm_py", "swtpm_py", "null", "rsa"),
    ("swtpm_py", "swtpm", "aes", "rsa"),
    ("swtpm", "swtpm_py", "aes", "ecc"),
    ("swtpm", "swtpm_py", "null", "rsa"),
    ("swtpm_py", "swtpm", "null", "ecc"),
])
def test_tools_duplicate_to_another_tpm(tmp_path: Path, src: str, dst: str, wrap: str,
                                        parent: str) -> None:
    """tpm2_duplicate on one TPM to the other's storage key (RSA: OAEP seed, ECC: KDFe seed),
    tpm2_import there, tpm2_load and tpm2_sign there; the signature verifies with
    ``cryptography`` against the public key the first TPM created."""
    one = Emulator(src, tmp_path / "one").start()
    two = Emulator(dst, tmp_path / "two").start()
    try:
        tool(two, tmp_path, "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", parent,
             "-c", "p2.ctx")
        tool(two, tmp_path, "tpm2_readpublic", "-c", "p2.ctx", "-o", "p2.pub")
        _duplicate_tool(one, tmp_path, wrap, "sensitivedataorigin|userwithauth|sign")
        extra = ["-G", "aes", "-k", "inner.key"] if wrap == "aes" else []
        tool(two, tmp_path, "tpm2_import", "-C", "p2.ctx", "-u", "key.pub", "-i", "dup.prv",
             "-r", "key2.prv", "-s", "dup.seed", *extra)
        tool(two, tmp_path, "tpm2_load", "-C", "p2.ctx", "-u", "key.pub", "-r", "key2.prv",
             "-c", "key2.ctx")
        message = b"moved between TPMs\n"
        (tmp_path / "msg").write_bytes(message)
        tool(two, tmp_path, "tpm2_sign", "-c", "key2.ctx", "-g", "sha256", "-f", "plain",
             "-o", "sig", "msg")
        area = (tmp_path / "key.pub").read_bytes()
        assert area[-258:-256] == u16(256)
        n = int.from_bytes(area[-256:], "big")
        rsa.RSAPublicNumbers(65537, n).public_key().verify(
            (tmp_path / "sig").read_bytes(), message, padding.PKCS1v15(), hashes.SHA256())
    finally:
        one.cleanup()
        two.cleanup()


def test_tools_fixed_tpm_key_is_refused(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_duplicate of a fixedTPM|fixedParent key (authorized by its duplication policy) is
    TPM_RC_ATTRIBUTES + H1 (0x182) on both TPMs."""
    emu = any_emulator
    tool(emu, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "p2.ctx")
    tool(emu, tmp_path, "tpm2_readpublic", "-c", "p2.ctx", "-o", "p2.pub")
    proc = _duplicate_tool(emu, tmp_path, "null",
                           "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                           ok=False)
    assert proc.returncode != 0
    assert b"(0x182)" in proc.stderr.lower(), proc.stderr


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss_duplicate_import(any_emulator: Emulator) -> None:
    """ESAPI: a key with PolicyCommandCode(Duplicate) duplicated (TPM-chosen AES inner key) to
    a second storage key, imported under it, loaded, and its signature verified by the TPM
    with the original key."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    try:
        storage = TPM2B_PUBLIC.parse(
            "rsa2048:aes128cfb",
            objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS)
        parent = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), storage)[0]
        template = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256", objectAttributes=(TPMA_OBJECT.SENSITIVEDATAORIGIN
                                                      | TPMA_OBJECT.USERWITHAUTH
                                                      | TPMA_OBJECT.SIGN_ENCRYPT))
        template.publicArea.authPolicy = TPM2B_DIGEST(DUP_POLICY)
        priv, pub = ctx.create(parent, TPM2B_SENSITIVE_CREATE(), template)[:2]
        key = ctx.load(parent, priv, pub)
        sym = TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.AES)
        sym.keyBits.aes = 128
        sym.mode.aes = TPM2_ALG.CFB
        session = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                         TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        ctx.policy_command_code(session, TPM2_CC.Duplicate)
        key_out, dup, seed = ctx.duplicate(key, parent, TPM2B_DATA(), sym, session1=session)
        assert len(bytes(key_out)) == 16 and len(bytes(seed)) == 256
        imported = ctx.import_(parent, key_out, pub, dup, seed, sym)
        moved = ctx.load(parent, imported, pub)
        assert ctx.tr_get_name(moved) == ctx.tr_get_name(key)
        digest = TPM2B_DIGEST(hashlib.sha256(b"pytss").digest())
        sig = ctx.sign(moved, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                       TPMT_TK_HASHCHECK(tag=0x8024, hierarchy=RH.NULL))
        ctx.verify_signature(key, digest, sig)
        # A changed blob: TPM_RC_INTEGRITY on the duplicate parameter.
        bad = bytearray(bytes(dup))
        bad[10] ^= 1
        with pytest.raises(TSS2_Exception) as err:
            ctx.import_(parent, key_out, pub, TPM2B_PRIVATE(bytes(bad)), seed, sym)
        assert err.value.rc == RC.INTEGRITY | P3
    finally:
        ctx.close()


def test_command_attributes_match_swtpm(pair: dict[str, Emulator]) -> None:
    """TPMA_CC of the credential and duplication commands as swtpm 0.7.1 reports them."""
    for code in (CC.MakeCredential, CC.ActivateCredential, CC.Duplicate, CC.Rewrap,
                 CC.Import):
        answers = []
        for emu in pair.values():
            resp = emu.command(cmd(CC.GetCapability, u32(2) + u32(code) + u32(1)))
            assert rc(resp) == 0
            # moreData, capability, count, then the TPMA_CC.
            answers.append(struct.unpack(">I", resp[19:23])[0])
        assert answers[0] == answers[1], hex(code)
        assert answers[0] & 0xFFFF == code
