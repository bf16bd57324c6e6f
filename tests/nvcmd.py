"""Builders for raw NV commands (Part 3 §31 wire layout), with password sessions.

Every builder returns the command bytes; the default password is the Empty Buffer. Handles
default to the owner hierarchy as the authorization.
"""

from __future__ import annotations

import struct

from tpmcmd import cmd, pw_session, with_auth

from swtpm_py.tpm.constants import ALG, CC, NT, RH, NvAttr

#: A first NV index handle for tests (Part 2 §7.3: the owner range 0x01000000-0x013FFFFF).
INDEX = 0x01500000

#: Attributes of a plain owner-readable/-writable index.
OWNER_RW = NvAttr.OWNERWRITE | NvAttr.OWNERREAD
#: Attributes of an index its own authValue reads and writes.
AUTH_RW = NvAttr.AUTHWRITE | NvAttr.AUTHREAD


def nt(kind: NT) -> int:
    """The TPMA_NV type bits of index type ``kind``."""
    return int(kind) << 4


def nv_public(index: int, attributes: int, size: int, name_alg: int = ALG.SHA256,
              policy: bytes = b"") -> bytes:
    """TPM2B_NV_PUBLIC (Part 2 §13.6)."""
    body = (struct.pack(">IHI", index, name_alg, attributes)
            + struct.pack(">H", len(policy)) + policy + struct.pack(">H", size))
    return struct.pack(">H", len(body)) + body


def define_space(index: int, attributes: int, size: int, *, auth_handle: int = RH.OWNER,
                 auth: bytes = b"", name_alg: int = ALG.SHA256, policy: bytes = b"",
                 password: bytes = b"") -> bytes:
    """TPM2_NV_DefineSpace."""
    params = struct.pack(">H", len(auth)) + auth + nv_public(index, attributes, size, name_alg,
                                                             policy)
    return with_auth(CC.NV_DefineSpace, struct.pack(">I", auth_handle), params,
                     pw_session(password))


def undefine_space(index: int, *, auth_handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_NV_UndefineSpace."""
    return with_auth(CC.NV_UndefineSpace, struct.pack(">II", auth_handle, index), b"",
                     pw_session(password))


def read_public(index: int) -> bytes:
    """TPM2_NV_ReadPublic."""
    return cmd(CC.NV_ReadPublic, struct.pack(">I", index))


def parse_read_public(response: bytes) -> tuple[int, int, int, bytes, int, bytes]:
    """(nvIndex, nameAlg, attributes, authPolicy, dataSize, name) of an NV_ReadPublic
    response."""
    size = struct.unpack_from(">H", response, 10)[0]
    index, alg, attrs, psize = struct.unpack_from(">IHIH", response, 12)
    policy = response[24:24 + psize]
    data_size = struct.unpack_from(">H", response, 24 + psize)[0]
    off = 12 + size
    nsize = struct.unpack_from(">H", response, off)[0]
    return index, alg, attrs, policy, data_size, response[off + 2:off + 2 + nsize]


def _auth_cmd(code: int, auth_handle: int, index: int, params: bytes, password: bytes) -> bytes:
    handles = struct.pack(">II", auth_handle, index)
    return with_auth(code, handles, params, pw_session(password))


def write(index: int, data: bytes, offset: int = 0, *, auth_handle: int = RH.OWNER,
          password: bytes = b"") -> bytes:
    """TPM2_NV_Write."""
    return _auth_cmd(CC.NV_Write, auth_handle, index,
                     struct.pack(">H", len(data)) + data + struct.pack(">H", offset), password)


def read(index: int, size: int, offset: int = 0, *, auth_handle: int = RH.OWNER,
         password: bytes = b"") -> bytes:
    """TPM2_NV_Read."""
    return _auth_cmd(CC.NV_Read, auth_handle, index, struct.pack(">HH", size, offset), password)


def read_data(response: bytes) -> bytes:
    """The data of an NV_Read response (sessions tag: after parameterSize)."""
    size = struct.unpack_from(">H", response, 14)[0]
    return response[16:16 + size]


def increment(index: int, *, auth_handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_NV_Increment."""
    return _auth_cmd(CC.NV_Increment, auth_handle, index, b"", password)


def extend(index: int, data: bytes, *, auth_handle: int = RH.OWNER,
           password: bytes = b"") -> bytes:
    """TPM2_NV_Extend."""
    return _auth_cmd(CC.NV_Extend, auth_handle, index, struct.pack(">H", len(data)) + data,
                     password)


def set_bits(index: int, bits: int, *, auth_handle: int = RH.OWNER,
             password: bytes = b"") -> bytes:
    """TPM2_NV_SetBits."""
    return _auth_cmd(CC.NV_SetBits, auth_handle, index, struct.pack(">Q", bits), password)


def write_lock(index: int, *, auth_handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_NV_WriteLock."""
    return _auth_cmd(CC.NV_WriteLock, auth_handle, index, b"", password)


def read_lock(index: int, *, auth_handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_NV_ReadLock."""
    return _auth_cmd(CC.NV_ReadLock, auth_handle, index, b"", password)


def global_write_lock(*, auth_handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_NV_GlobalWriteLock."""
    return with_auth(CC.NV_GlobalWriteLock, struct.pack(">I", auth_handle), b"",
                     pw_session(password))


def change_auth(index: int, new_auth: bytes, *sessions: bytes) -> bytes:
    """TPM2_NV_ChangeAuth (the ADMIN role needs a policy session: pass its entry)."""
    return with_auth(CC.NV_ChangeAuth, struct.pack(">I", index),
                     struct.pack(">H", len(new_auth)) + new_auth, *(sessions or (pw_session(),)))


def undefine_space_special(index: int, *sessions: bytes) -> bytes:
    """TPM2_NV_UndefineSpaceSpecial (index: ADMIN role, then platform)."""
    return with_auth(CC.NV_UndefineSpaceSpecial, struct.pack(">II", index, RH.PLATFORM), b"",
                     *(sessions or (pw_session(), pw_session())))
