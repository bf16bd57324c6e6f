"""Raw TPM 2.0 object commands for tests (Part 3 wire layout): templates, CreatePrimary,
Create, Load, LoadExternal, ReadPublic, FlushContext, ObjectChangeAuth, and response parsing
with swtpm_py's own construct declarations."""

from __future__ import annotations

import io
import struct

from swtpm_py.tpm.constants import ALG, CC, RH, ST
from swtpm_py.tpm.objects_wire import (TPM2B_CREATION_DATA, TPM2B_PUBLIC_NULL, ObjectAttr,
                                       TPMT_TK_CREATION)
from swtpm_py.tpm.wire import TPM2B_DIGEST, TPM2B_NAME, parse_stream

A = ObjectAttr
#: Attributes of a storage parent (tpm2-tools' default for tpm2_createprimary).
STORAGE = (A.RESTRICTED | A.DECRYPT | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
           | A.USER_WITH_AUTH | A.NO_DA)
#: Attributes of an unrestricted signing key.
SIGNING = (A.SIGN_ENCRYPT | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
           | A.USER_WITH_AUTH)
AES128CFB = struct.pack(">HHH", ALG.AES, 128, ALG.CFB)
NULL_SYM = struct.pack(">H", ALG.NULL)


def u16(*values: int) -> bytes:
    """Big-endian UINT16s."""
    return b"".join(struct.pack(">H", v) for v in values)


def b2(data: bytes) -> bytes:
    """A TPM2B."""
    return struct.pack(">H", len(data)) + data


def cmd(code: int, body: bytes = b"", tag: int = ST.NO_SESSIONS) -> bytes:
    """A command with ``body`` after the header."""
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def pw(password: bytes = b"") -> bytes:
    """A password session (TPM_RS_PW)."""
    return struct.pack(">IHB", RH.PW, 0, 1) + b2(password)


def authed(code: int, handles: bytes, params: bytes, *sessions: bytes) -> bytes:
    """A TPM_ST_SESSIONS command."""
    area = b"".join(sessions or (pw(),))
    return cmd(code, handles + struct.pack(">I", len(area)) + area + params, ST.SESSIONS)


def rc(response: bytes) -> int:
    """The response code."""
    return struct.unpack(">I", response[6:10])[0]


def rsa_template(attrs: int = STORAGE, sym: bytes = AES128CFB, scheme: bytes = u16(ALG.NULL),
                 bits: int = 2048, exponent: int = 0, name_alg: int = ALG.SHA256,
                 policy: bytes = b"", unique: bytes = b"") -> bytes:
    """TPMT_PUBLIC of an RSA key."""
    return (u16(ALG.RSA, name_alg) + struct.pack(">I", attrs) + b2(policy) + sym + scheme
            + struct.pack(">HI", bits, exponent) + b2(unique))


def ecc_template(attrs: int = STORAGE, sym: bytes = AES128CFB, scheme: bytes = u16(ALG.NULL),
                 curve: int = 3, kdf: bytes = u16(ALG.NULL), name_alg: int = ALG.SHA256,
                 policy: bytes = b"", x: bytes = b"", y: bytes = b"") -> bytes:
    """TPMT_PUBLIC of an ECC key."""
    return (u16(ALG.ECC, name_alg) + struct.pack(">I", attrs) + b2(policy) + sym + scheme
            + u16(curve) + kdf + b2(x) + b2(y))


def keyedhash_template(attrs: int, scheme: bytes = u16(ALG.NULL), name_alg: int = ALG.SHA256,
                       policy: bytes = b"", unique: bytes = b"") -> bytes:
    """TPMT_PUBLIC of a keyed-hash object (HMAC key or sealed data)."""
    return (u16(ALG.KEYEDHASH, name_alg) + struct.pack(">I", attrs) + b2(policy) + scheme
            + b2(unique))


def symcipher_template(attrs: int, bits: int = 128, mode: int = ALG.CFB,
                       name_alg: int = ALG.SHA256, unique: bytes = b"") -> bytes:
    """TPMT_PUBLIC of a symmetric cipher key."""
    return (u16(ALG.SYMCIPHER, name_alg) + struct.pack(">I", attrs) + b2(b"")
            + u16(ALG.AES, bits, mode) + b2(unique))


def sensitive_create(auth: bytes = b"", data: bytes = b"") -> bytes:
    """TPM2B_SENSITIVE_CREATE."""
    return b2(b2(auth) + b2(data))


NO_PCRS = struct.pack(">I", 0)


def create_primary(template: bytes, hierarchy: int = RH.OWNER, auth: bytes = b"",
                   data: bytes = b"", outside: bytes = b"", pcrs: bytes = NO_PCRS,
                   hierarchy_auth: bytes = b"") -> bytes:
    """TPM2_CreatePrimary."""
    return authed(CC.CreatePrimary, struct.pack(">I", hierarchy),
                  sensitive_create(auth, data) + b2(template) + b2(outside) + pcrs,
                  pw(hierarchy_auth))


def create(parent: int, template: bytes, auth: bytes = b"", data: bytes = b"",
           parent_auth: bytes = b"") -> bytes:
    """TPM2_Create."""
    return authed(CC.Create, struct.pack(">I", parent),
                  sensitive_create(auth, data) + b2(template) + b2(b"") + NO_PCRS,
                  pw(parent_auth))


def load(parent: int, private: bytes, public: bytes, parent_auth: bytes = b"") -> bytes:
    """TPM2_Load of a private area (TPM2B_PRIVATE contents) and a TPMT_PUBLIC."""
    return authed(CC.Load, struct.pack(">I", parent), b2(private) + b2(public),
                  pw(parent_auth))


def load_external(public: bytes, sensitive: bytes = b"", hierarchy: int = RH.NULL) -> bytes:
    """TPM2_LoadExternal (``sensitive`` a TPMT_SENSITIVE, or empty for public only)."""
    return cmd(CC.LoadExternal, b2(sensitive) + b2(public) + struct.pack(">I", hierarchy))


def read_public(handle: int) -> bytes:
    """TPM2_ReadPublic."""
    return cmd(CC.ReadPublic, struct.pack(">I", handle))


def flush(handle: int) -> bytes:
    """TPM2_FlushContext."""
    return cmd(CC.FlushContext, struct.pack(">I", handle))


def change_auth(handle: int, parent: int, new_auth: bytes, auth: bytes = b"") -> bytes:
    """TPM2_ObjectChangeAuth."""
    return authed(CC.ObjectChangeAuth, struct.pack(">II", handle, parent), b2(new_auth),
                  pw(auth))


def _params(response: bytes, sessions: bool, handle: bool) -> tuple[int | None, io.BytesIO]:
    stream = io.BytesIO(response)
    stream.seek(10)
    h = struct.unpack(">I", stream.read(4))[0] if handle else None
    if sessions:
        stream.read(4)
    return h, stream


def parse_create_primary(response: bytes) -> dict:
    """Fields of a TPM2_CreatePrimary response."""
    h, s = _params(response, True, True)
    return dict(handle=h, public=parse_stream(TPM2B_PUBLIC_NULL, s),
                creation_data=parse_stream(TPM2B_CREATION_DATA, s),
                creation_hash=parse_stream(TPM2B_DIGEST, s),
                ticket=parse_stream(TPMT_TK_CREATION, s), name=parse_stream(TPM2B_NAME, s))


def parse_create(response: bytes) -> dict:
    """Fields of a TPM2_Create response (private as its TPM2B contents, public as octets)."""
    _, s = _params(response, True, False)
    private = s.read(struct.unpack(">H", s.read(2))[0])
    public = s.read(struct.unpack(">H", s.read(2))[0])
    return dict(private=private, public=public,
                creation_data=parse_stream(TPM2B_CREATION_DATA, s),
                creation_hash=parse_stream(TPM2B_DIGEST, s),
                ticket=parse_stream(TPMT_TK_CREATION, s))


def parse_load(response: bytes) -> tuple[int, bytes]:
    """(handle, name) of a TPM2_Load / TPM2_LoadExternal response."""
    h, s = _params(response, response[:2] == struct.pack(">H", ST.SESSIONS), True)
    return h, parse_stream(TPM2B_NAME, s)


def parse_read_public(response: bytes) -> tuple[bytes, bytes, bytes]:
    """(public area octets, name, qualified name) of a TPM2_ReadPublic response."""
    _, s = _params(response, False, False)
    public = s.read(struct.unpack(">H", s.read(2))[0])
    return public, parse_stream(TPM2B_NAME, s), parse_stream(TPM2B_NAME, s)


def evict_control(auth: int, handle: int, persistent: int, password: bytes = b"") -> bytes:
    """TPM2_EvictControl."""
    return authed(CC.EvictControl, struct.pack(">II", auth, handle),
                  struct.pack(">I", persistent), pw(password))


# ---------------------------------------------------------------------------- ECC extras


def ecc_point(x: bytes, y: bytes) -> bytes:
    """TPM2B_ECC_POINT."""
    return b2(b2(x) + b2(y))


def ec_ephemeral(curve: int) -> bytes:
    """TPM2_EC_Ephemeral."""
    return cmd(CC.EC_Ephemeral, u16(curve))


def commit(handle: int, p1: bytes = bytes(4), s2: bytes = b"", y2: bytes = b"",
           auth: bytes = b"") -> bytes:
    """TPM2_Commit (``p1`` a TPMS_ECC_POINT's contents: by default the empty point, two empty
    coordinates, as TPM2B_ECC_POINT may not be empty)."""
    return authed(CC.Commit, struct.pack(">I", handle), b2(p1) + b2(s2) + b2(y2), pw(auth))


def zgen_2phase(handle: int, qsb: tuple[bytes, bytes], qeb: tuple[bytes, bytes],
                scheme: int, counter: int, auth: bytes = b"") -> bytes:
    """TPM2_ZGen_2Phase."""
    return authed(CC.ZGen_2Phase, struct.pack(">I", handle),
                  ecc_point(*qsb) + ecc_point(*qeb) + u16(scheme, counter), pw(auth))


def sign_digest(handle: int, digest: bytes, scheme: bytes = u16(ALG.NULL),
                auth: bytes = b"") -> bytes:
    """TPM2_Sign of ``digest`` with ``scheme`` (a TPMT_SIG_SCHEME) and a NULL ticket."""
    return authed(CC.Sign, struct.pack(">I", handle),
                  b2(digest) + scheme + struct.pack(">HI", ST.HASHCHECK, RH.NULL) + b2(b""),
                  pw(auth))


def ecc_points(response: bytes, count: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The first ``count`` TPM2B_ECC_POINTs of a successful response's parameters, as
    (x, y), and the octets after them."""
    _, stream = _params(response, response[:2] == b"\x80\x02", False)
    out = []
    for _ in range(count):
        size = struct.unpack(">H", stream.read(2))[0]
        inner = io.BytesIO(stream.read(size))
        x = inner.read(struct.unpack(">H", inner.read(2))[0]) if size else b""
        y = inner.read(struct.unpack(">H", inner.read(2))[0]) if size else b""
        out.append((x, y))
    return out, stream.read()
