"""TPM2_CreateLoaded (Part 3 §12.9): primaries, ordinary objects and Derived Objects.

* In process: a primary made by CreateLoaded is the one CreatePrimary makes from the same
  template; an ordinary object's outPrivate loads with TPM2_Load under the same Name; a Derived
  Object's key is recomputed here from the spec (KDFa stream keyed with the derivation parent's
  secret, then FIPS 186-4 B.4.1) with hmac and ``cryptography``.
* Differential against swtpm 0.7.1: a table of valid and invalid calls, same code from both;
  Derived Objects of a parent whose secret the caller chose are byte-identical on both TPMs.
* tpm2-tools (``tpm2_create -c``, which uses CreateLoaded) and tpm2-pytss ``create_loaded``
  (a TPM2B_TEMPLATE, and a derived key with its TPMS_DERIVE) on both emulators.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPM2B_TEMPLATE,
                              TPMT_PUBLIC)

from emulator import Emulator
from objcmd import (AES128CFB, NULL_SYM, SIGNING, STORAGE, A, authed, b2, create_primary,
                    ecc_template, flush, keyedhash_template, load, parse_create_primary,
                    parse_load, pw, rc, read_public, parse_read_public, rsa_template,
                    sensitive_create, symcipher_template, u16)
from swtpm_py.tpm.constants import ALG, CC, RH

P256_ORDER = int("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)
#: A derivation parent whose key the caller supplies (so both TPMs hold the same secret):
#: restricted decrypt keyed hash with XOR/KDFa; caller data means fixedTPM/fixedParent CLEAR.
DERIVATION = A.RESTRICTED | A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA
PARENT_SECRET = bytes(range(32))
#: A derived ECDSA key: fixedParent (required), fixedTPM as its parent, no sensitiveDataOrigin.
DERIVED_SIGNING = A.SIGN_ENCRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH | A.NO_DA
ECDSA_SHA256 = u16(ALG.ECDSA, ALG.SHA256)

TPM_RC_TYPE_P2 = 0x2CA
TPM_RC_ATTRIBUTES = 0x082
TPM_RC_ATTRIBUTES_P2 = 0x2C2
TPM_RC_SIZE_P2 = 0x2D5
TPM_RC_SYMMETRIC_P2 = 0x2D6
TPM_RC_INSUFFICIENT = 0x09A
TPM_RC_TYPE_H1 = 0x18A
TPM_RC_VALUE_H1 = 0x184
TPM_RC_SIZE_P1 = 0x1D5
TPM_RC_OBJECT_MEMORY = 0x902


# ---------------------------------------------------------------------------- raw commands


def create_loaded(parent: int, template: bytes, auth: bytes = b"", data: bytes = b"") -> bytes:
    """TPM2_CreateLoaded (password session for the parent)."""
    return authed(CC.CreateLoaded, struct.pack(">I", parent),
                  sensitive_create(auth, data) + b2(template), pw())


def parse_created(response: bytes) -> dict:
    """objectHandle, outPrivate (TPM2B contents), outPublic (TPMT_PUBLIC octets), name."""
    handle = struct.unpack(">I", response[10:14])[0]
    s = response[18:]
    fields = []
    for _ in range(3):
        n = struct.unpack(">H", s[:2])[0]
        fields.append(s[2:2 + n])
        s = s[2 + n:]
    return dict(handle=handle, private=fields[0], public=fields[1], name=fields[2])


def derivation_parent(hash_alg: int = ALG.SHA256) -> bytes:
    """The keyed-hash template of a derivation parent."""
    return keyedhash_template(DERIVATION, scheme=u16(ALG.XOR, hash_alg, ALG.KDF1_SP800_108))


def derived_ecc(label: bytes = b"label", context: bytes = b"context",
                attrs: int = DERIVED_SIGNING) -> bytes:
    """A TPMT_TEMPLATE of an ECC P-256 key whose unique field is TPMS_DERIVE."""
    return (u16(ALG.ECC, ALG.SHA256) + struct.pack(">I", attrs) + b2(b"") + NULL_SYM
            + ECDSA_SHA256 + u16(3) + u16(ALG.NULL) + b2(label) + b2(context))


def derived_aes(label: bytes = b"label", context: bytes = b"context") -> bytes:
    """A TPMT_TEMPLATE of an AES-128-CFB key with TPMS_DERIVE."""
    return (u16(ALG.SYMCIPHER, ALG.SHA256)
            + struct.pack(">I", A.DECRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH | A.NO_DA)
            + b2(b"") + u16(ALG.AES, 128, ALG.CFB) + b2(label) + b2(context))


def derived_rsa() -> bytes:
    """An RSA template with TPMS_DERIVE (RSA keys cannot be derived)."""
    return (u16(ALG.RSA, ALG.SHA256) + struct.pack(">I", DERIVED_SIGNING) + b2(b"")
            + NULL_SYM + u16(ALG.RSASSA, ALG.SHA256) + struct.pack(">HI", 2048, 0)
            + b2(b"label") + b2(b"context"))


def ecc_point(public: bytes) -> tuple[int, int]:
    """(x, y) of a marshalled ECC P-256 TPMT_PUBLIC with an empty authPolicy."""
    unique = public[-(2 + 32) * 2:]
    return int.from_bytes(unique[2:34], "big"), int.from_bytes(unique[36:68], "big")


def kdfa_stream(key: bytes, label: bytes, context: bytes, n: int,
                hash_name: str = "sha256") -> bytes:
    """Part 1 §11.4.10.2 KDFa blocks with L = 8192 (TPM_MAX_DERIVATION_BITS)."""
    out = b""
    i = 0
    while len(out) < n:
        i += 1
        out += hmac.new(key, struct.pack(">I", i) + label + b"\x00" + context
                        + struct.pack(">I", 8192), hash_name).digest()
    return out[:n]


# ---------------------------------------------------------------------------- in process


def _ok(tpm, command: bytes) -> bytes:
    response = tpm.execute(command)
    assert rc(response) == 0, hex(rc(response))
    return response


@pytest.mark.parametrize("hierarchy", [RH.OWNER, RH.ENDORSEMENT, RH.NULL])
def test_primary_is_create_primarys(tpm, hierarchy: int) -> None:
    """Under a hierarchy CreateLoaded derives the Primary Object CreatePrimary derives from
    the same template: same public area and Name; no outPrivate."""
    template = ecc_template()
    made = parse_created(_ok(tpm, create_loaded(hierarchy, template)))
    primary = parse_create_primary(_ok(tpm, create_primary(template, hierarchy)))
    assert made["private"] == b""
    assert made["name"] == primary["name"]
    public, name, _ = parse_read_public(_ok(tpm, read_public(primary["handle"])))
    assert made["public"] == public and made["name"] == name
    assert made["name"] == b"\x00\x0b" + hashlib.sha256(made["public"]).digest()


def test_ordinary_object_loads_with_load(tpm) -> None:
    """Under a storage parent the object is loaded and its outPrivate is the wrapping
    TPM2_Create returns: TPM2_Load accepts it and gives the same Name."""
    srk = parse_create_primary(_ok(tpm, create_primary(ecc_template())))["handle"]
    made = parse_created(_ok(tpm, create_loaded(
        srk, ecc_template(SIGNING | A.NO_DA, sym=NULL_SYM, scheme=ECDSA_SHA256))))
    assert made["private"]
    public, name, _ = parse_read_public(_ok(tpm, read_public(made["handle"])))
    assert (public, name) == (made["public"], made["name"])
    _ok(tpm, flush(made["handle"]))
    handle, loaded_name = parse_load(_ok(tpm, load(srk, made["private"], made["public"])))
    assert loaded_name == made["name"]


def test_derived_key_is_the_kdfa_derivation(tpm) -> None:
    """Part 1 "Derived Objects": the ECC private key comes from the KDFa stream keyed with the
    parent's secret (d = c mod (n-1) + 1 from the first 40 octets): its public point is
    recomputed here. The same parent, label and context give it again; another context, or
    the label and context taken from the sensitive data instead, as the spec says."""
    parent = parse_created(_ok(tpm, create_loaded(RH.OWNER, derivation_parent(),
                                                  data=PARENT_SECRET)))["handle"]
    first = parse_created(_ok(tpm, create_loaded(parent, derived_ecc())))
    assert first["private"] == b""
    c_value = int.from_bytes(kdfa_stream(PARENT_SECRET, b"label", b"context", 40), "big")
    d = c_value % (P256_ORDER - 1) + 1
    expected = ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers()
    assert ecc_point(first["public"]) == (expected.x, expected.y)
    _ok(tpm, flush(first["handle"]))
    again = parse_created(_ok(tpm, create_loaded(parent, derived_ecc())))
    assert again["public"] == first["public"]
    _ok(tpm, flush(again["handle"]))
    other = parse_created(_ok(tpm, create_loaded(parent, derived_ecc(context=b"other"))))
    assert ecc_point(other["public"]) != ecc_point(first["public"])
    _ok(tpm, flush(other["handle"]))
    from_data = parse_created(_ok(tpm, create_loaded(
        parent, derived_ecc(b"", b""), data=b2(b"label") + b2(b"context"))))
    assert from_data["public"] == first["public"]


@pytest.mark.parametrize("hash_alg,hash_name", [(ALG.SHA256, "sha256"),
                                               (ALG.SHA384, "sha384")])
def test_derived_aes_key_unique_binds_the_drawn_key(tpm, hash_alg: int,
                                                    hash_name: str) -> None:
    """A derived AES key: the key is the first 16 octets of the stream (HMAC with the hash of
    the parent's XOR scheme), seedValue the next 32 (the child's nameAlg size), and
    unique = H(seedValue || key) (Part 1 "Object Creation")."""
    parent = parse_created(_ok(tpm, create_loaded(RH.OWNER, derivation_parent(
        hash_alg=hash_alg), data=PARENT_SECRET)))["handle"]
    made = parse_created(_ok(tpm, create_loaded(parent, derived_aes())))
    stream = kdfa_stream(PARENT_SECRET, b"label", b"context", 48, hash_name)
    key, seed = stream[:16], stream[16:48]
    assert made["public"][-32:] == hashlib.sha256(seed + key).digest()


# ---------------------------------------------------------------------------- differential


@pytest.fixture(scope="module")
def loaded(pair: dict[str, Emulator]) -> dict[str, dict[str, int]]:
    """On each emulator: an ECC storage primary and a derivation parent (caller's secret),
    handles by role; the third object slot stays free for the objects the tests create."""
    out = {}
    for kind, emu in pair.items():
        handles = {}
        for role, command in (
                ("srk", create_primary(ecc_template())),
                ("derive", create_loaded(RH.OWNER, derivation_parent(), data=PARENT_SECRET))):
            response = emu.command(command)
            assert rc(response) == 0, (kind, role, hex(rc(response)))
            handles[role] = struct.unpack(">I", response[10:14])[0]
        out[kind] = handles
    return out


#: (name, command from the role handles, the code swtpm 0.7.1 answers).
CASES: list[tuple[str, Callable[[dict], bytes], int]] = [
    ("primary", lambda h: create_loaded(RH.NULL, ecc_template()), 0),
    ("ordinary", lambda h: create_loaded(h["srk"], ecc_template(
        SIGNING | A.NO_DA, sym=NULL_SYM, scheme=ECDSA_SHA256)), 0),
    ("derived ECC", lambda h: create_loaded(h["derive"], derived_ecc()), 0),
    ("derived AES", lambda h: create_loaded(h["derive"], derived_aes()), 0),
    ("derived from sensitive data", lambda h: create_loaded(
        h["derive"], derived_ecc(b"", b""), data=b2(b"l") + b2(b"c")), 0),
    ("lockout as parent", lambda h: create_loaded(RH.LOCKOUT, ecc_template()),
     TPM_RC_VALUE_H1),
    ("derived RSA", lambda h: create_loaded(h["derive"], derived_rsa()), TPM_RC_TYPE_P2),
    ("derived with sensitiveDataOrigin", lambda h: create_loaded(
        h["derive"], derived_ecc(attrs=DERIVED_SIGNING | A.SENSITIVE_DATA_ORIGIN)),
     TPM_RC_ATTRIBUTES),
    ("derived without fixedParent", lambda h: create_loaded(
        h["derive"], derived_ecc(attrs=DERIVED_SIGNING & ~A.FIXED_PARENT)),
     TPM_RC_ATTRIBUTES_P2),
    ("derived fixedTPM under non-fixedTPM parent", lambda h: create_loaded(
        h["derive"], derived_ecc(attrs=DERIVED_SIGNING | A.FIXED_TPM)), TPM_RC_ATTRIBUTES_P2),
    ("derived storage key", lambda h: create_loaded(h["derive"], (
        u16(ALG.ECC, ALG.SHA256) + struct.pack(">I", A.RESTRICTED | A.DECRYPT | A.FIXED_PARENT
                                               | A.USER_WITH_AUTH)
        + b2(b"") + AES128CFB + u16(ALG.NULL, 3, ALG.NULL) + b2(b"") + b2(b""))),
     TPM_RC_SYMMETRIC_P2),
    ("label of 33 octets", lambda h: create_loaded(h["derive"], derived_ecc(b"x" * 33)),
     TPM_RC_SIZE_P2),
    ("octets after the template", lambda h: create_loaded(h["derive"], derived_ecc() + b"\0"),
     TPM_RC_SIZE_P2),
    ("truncated TPMS_DERIVE in sensitive data", lambda h: create_loaded(
        h["derive"], derived_ecc(b"", b""), data=b"\x00"), TPM_RC_INSUFFICIENT),
    ("template of 485 octets", lambda h: create_loaded(RH.NULL, ecc_template() + bytes(
        485 - len(ecc_template()))), TPM_RC_SIZE_P2),
    ("authValue longer than nameAlg", lambda h: create_loaded(
        RH.NULL, ecc_template(), auth=b"a" * 33), TPM_RC_SIZE_P1),
    ("storage primary without sensitiveDataOrigin", lambda h: create_loaded(
        RH.NULL, ecc_template(STORAGE & ~A.SENSITIVE_DATA_ORIGIN)), TPM_RC_ATTRIBUTES_P2),
    ("RSA ordinary key with caller data", lambda h: create_loaded(
        h["srk"], rsa_template(SIGNING, sym=NULL_SYM), data=b"x"), TPM_RC_ATTRIBUTES_P2),
    ("keyed-hash ordinary object", lambda h: create_loaded(h["srk"], keyedhash_template(
        A.USER_WITH_AUTH | A.FIXED_TPM | A.FIXED_PARENT), data=b"sealed"), 0),
    ("AES ordinary key", lambda h: create_loaded(h["srk"], symcipher_template(
        A.DECRYPT | A.SIGN_ENCRYPT | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
        | A.USER_WITH_AUTH)), 0),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_codes_match_swtpm(pair: dict[str, Emulator], loaded: dict, case: tuple) -> None:
    """The same raw command to both emulators: swtpm's code from each. A created object is
    flushed again at once (three slots)."""
    _, build, expected = case
    got = {}
    for kind, emu in pair.items():
        response = emu.command(build(loaded[kind]))
        got[kind] = rc(response)
        if got[kind] == 0:
            assert rc(emu.command(flush(parse_created(response)["handle"]))) == 0
    assert got == {"swtpm_py": expected, "swtpm": expected}


def test_object_memory_full(pair: dict[str, Emulator], loaded: dict) -> None:
    """With every slot taken: TPM_RC_OBJECT_MEMORY; a signing key as parent is TPM_RC_TYPE
    on the handle even then (the parent is checked first). The signing key has noDA, so no
    DA bookkeeping (TPM_RC_RETRY) interferes."""
    got = {}
    for kind, emu in pair.items():
        signer = parse_created(emu.command(create_loaded(RH.NULL, ecc_template(
            SIGNING | A.NO_DA, sym=NULL_SYM, scheme=ECDSA_SHA256))))["handle"]
        got[kind] = (rc(emu.command(create_loaded(RH.NULL, ecc_template()))),
                     rc(emu.command(create_loaded(signer, ecc_template()))))
        assert rc(emu.command(flush(signer))) == 0
    assert got == {"swtpm_py": (TPM_RC_OBJECT_MEMORY, TPM_RC_TYPE_H1),
                   "swtpm": (TPM_RC_OBJECT_MEMORY, TPM_RC_TYPE_H1)}


def _derived_keyedhash(attrs: int, scheme: bytes) -> bytes:
    return (u16(ALG.KEYEDHASH, ALG.SHA256) + struct.pack(">I", attrs) + b2(b"") + scheme
            + b2(b"label") + b2(b"context"))


DERIVED_TEMPLATES = {
    "ecc": derived_ecc(),
    "aes": derived_aes(),
    "empty label": derived_ecc(b"", b"ctx"),
    "32-octet label": derived_ecc(b"a" * 32),
    "ecdh P-256": (u16(ALG.ECC, ALG.SHA256)
                   + struct.pack(">I", A.DECRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH)
                   + b2(b"") + NULL_SYM + u16(ALG.ECDH, ALG.SHA256) + u16(3, ALG.NULL)
                   + b2(b"l") + b2(b"c")),
    "ecdsa P-384": (u16(ALG.ECC, ALG.SHA384)
                    + struct.pack(">I", A.SIGN_ENCRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH)
                    + b2(b"") + NULL_SYM + u16(ALG.ECDSA, ALG.SHA384) + u16(4, ALG.NULL)
                    + b2(b"l") + b2(b"c")),
    "hmac key": _derived_keyedhash(A.SIGN_ENCRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH,
                                   u16(ALG.HMAC, ALG.SHA256)),
    "sealed data": _derived_keyedhash(A.FIXED_PARENT | A.USER_WITH_AUTH, u16(ALG.NULL)),
    "derivation parent": _derived_keyedhash(
        A.RESTRICTED | A.DECRYPT | A.FIXED_PARENT | A.USER_WITH_AUTH,
        u16(ALG.XOR, ALG.SHA256, ALG.KDF1_SP800_108)),
}


@pytest.mark.parametrize("template", list(DERIVED_TEMPLATES.values()),
                         ids=list(DERIVED_TEMPLATES))
def test_derived_objects_equal_swtpms(pair: dict[str, Emulator], loaded: dict,
                                      template: bytes) -> None:
    """With the same parent secret, swtpm_py derives exactly swtpm's object: the same public
    area and Name (the derivation is fully specified)."""
    made = {}
    for kind, emu in pair.items():
        response = emu.command(create_loaded(loaded[kind]["derive"], template))
        assert rc(response) == 0, kind
        made[kind] = parse_created(response)
        assert rc(emu.command(flush(made[kind]["handle"]))) == 0
    assert made["swtpm_py"]["public"] == made["swtpm"]["public"]
    assert made["swtpm_py"]["name"] == made["swtpm"]["name"]


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` in ``cwd``; it must succeed."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def test_tpm2_create_with_context_output(any_emulator: Emulator, tmp_path: Path) -> None:
    """``tpm2_create -c`` creates and loads in one TPM2_CreateLoaded: the loaded key's public
    area is key.pub, and key.priv/key.pub load again with tpm2_load under the same Name."""
    emu, cwd = any_emulator, tmp_path
    tool(emu, cwd, "tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_create", "-C", "primary.ctx", "-G", "ecc256", "-u", "key.pub",
         "-r", "key.priv", "-c", "key.ctx")
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    first = tool(emu, cwd, "tpm2_readpublic", "-c", "key.ctx", "-n", "key1.name").stdout
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_load", "-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv",
         "-c", "again.ctx", "-n", "key2.name")
    assert (cwd / "key1.name").read_bytes() == (cwd / "key2.name").read_bytes()
    assert b"name:" in first
    public = (cwd / "key.pub").read_bytes()[2:]
    assert (cwd / "key1.name").read_bytes() == b"\x00\x0b" + hashlib.sha256(public).digest()


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss_create_loaded(tmp_path: Path) -> None:
    """ESAPI create_loaded (ESAPI recomputes the Name of what it gets back): a primary from a
    TPM2B_TEMPLATE equals ESAPI create_primary's key; a derived key from a template with
    TPMS_DERIVE is the same on both TPMs; an RSA derived key fails with TPM_RC_TYPE + P2 on
    both; through an AES-CFB session encrypting both ways the caller's secret and the
    outPrivate cross the wire encrypted and still work."""
    points, codes = {}, {}
    for kind in ("swtpm_py", "swtpm"):
        emu = Emulator(kind, tmp_path / kind).start()
        ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
        try:
            template = TPMT_PUBLIC.parse("ecc256:ecdsa-sha256",
                                         "sign|fixedtpm|fixedparent|sensitivedataorigin"
                                         "|userwithauth|noda")
            handle, private, public = ctx.create_loaded(
                ESYS_TR.NULL, TPM2B_SENSITIVE_CREATE(), TPM2B_TEMPLATE(template.marshal()))
            assert len(private) == 0
            ctx.flush_context(handle)
            primary, pub2, _, _, _ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(),
                                                        TPM2B_PUBLIC(publicArea=template),
                                                        ESYS_TR.NULL)
            assert bytes(pub2.publicArea.unique.ecc.x) == bytes(
                public.publicArea.unique.ecc.x)
            ctx.flush_context(primary)
            # The parent's secret goes in encrypted (DECRYPT_2): if the TPM decrypted it
            # wrongly, the derived key below would differ from the other TPM's.
            session = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                             "aes128cfb", TPM2_ALG.SHA256)
            ctx.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                      | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
            parent, _, _ = ctx.create_loaded(ESYS_TR.RH_OWNER, _sensitive(PARENT_SECRET),
                                             TPM2B_TEMPLATE(derivation_parent()),
                                             session1=session)
            derived, private, public = ctx.create_loaded(parent, TPM2B_SENSITIVE_CREATE(),
                                                         TPM2B_TEMPLATE(derived_ecc()))
            assert len(private) == 0
            points[kind] = (bytes(public.publicArea.unique.ecc.x),
                            bytes(public.publicArea.unique.ecc.y))
            ctx.flush_context(derived)
            with pytest.raises(TSS2_Exception) as info:
                ctx.create_loaded(parent, TPM2B_SENSITIVE_CREATE(),
                                  TPM2B_TEMPLATE(derived_rsa()))
            codes[kind] = info.value.rc
            ctx.flush_context(parent)
            # An ordinary object's outPrivate comes back encrypted (ENCRYPT_2) and loads.
            srk, _, _, _, _ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), "ecc256")
            child, private, public = ctx.create_loaded(
                srk, TPM2B_SENSITIVE_CREATE(), TPM2B_TEMPLATE(template.marshal()),
                session1=session)
            ctx.flush_context(child)
            assert ctx.tr_get_name(ctx.load(srk, private, public)).marshal()[2:] == (
                b"\x00\x0b" + hashlib.sha256(public.publicArea.marshal()).digest())
            ctx.flush_context(session)
        finally:
            ctx.close()
            emu.cleanup()
    assert points["swtpm_py"] == points["swtpm"]
    assert codes == {"swtpm_py": TPM_RC_TYPE_P2, "swtpm": TPM_RC_TYPE_P2}


def _sensitive(data: bytes) -> TPM2B_SENSITIVE_CREATE:
    """TPM2B_SENSITIVE_CREATE carrying ``data``."""
    from tpm2_pytss.types import TPM2B_SENSITIVE_DATA, TPMS_SENSITIVE_CREATE
    return TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data)))
