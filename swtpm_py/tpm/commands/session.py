"""TPM2_StartAuthSession (Part 3 §11.1), and the session handles' place in the TPM: session
slots from the TPM's capacity, GetCapability(HANDLES) of loaded sessions and TPM2_FlushContext
of session handles. The sessions themselves are :mod:`swtpm_py.tpm.sessions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import construct as c

from .. import algorithms, objects, properties, secret, sessions
from ..algorithms import Role, tpmi_alg
from ..constants import ALG, CC, HR_NV_INDEX, HT, RC, RH, SE
from ..crypto import HASHES
from ..errors import TpmError
from ..objects_wire import ObjectAttr
from ..paramenc import SymDef
from ..registry import HandleSpec, command
from ..wire import PCR_COUNT, TPM2B_NONCE, TPMI_ALG_HASH, UINT8, UINT16, Checked, tpm2b
from .object import register_flusher

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: TPM2B_ENCRYPTED_SECRET (Part 2 §11.4.33): the largest secret is an RSA-3072 ciphertext
#: (swtpm 0.7.1's MAX_RSA_KEY_BYTES, 384 octets).
TPM2B_ENCRYPTED_SECRET = tpm2b(384)


def _check_tpm_key(handle: int) -> None:
    # Part 2 §9.3 TPMI_DH_OBJECT+: a loaded-object handle or TPM_RH_NULL; else TPM_RC_VALUE.
    if handle != RH.NULL:
        objects.check_object_handle(handle)


#: Part 2 §9.6 TPMI_DH_ENTITY: the permanent handles that have an authValue.
_ENTITY_PERMANENT = frozenset({RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.LOCKOUT})


def check_entity(handle: int, allow_null: bool = False) -> None:
    """Part 2 §9.6 TPMI_DH_ENTITY(+): an entity with an authValue (hierarchy, lockout, object,
    NV index, PCR), or TPM_RH_NULL for the '+' type. TPM_RS_PW, session handles and anything
    else are TPM_RC_VALUE."""
    if (handle in _ENTITY_PERMANENT or handle < PCR_COUNT
            or handle >> 24 == HR_NV_INDEX >> 24 or (allow_null and handle == RH.NULL)):
        return
    if handle >> 24 in (HT.TRANSIENT, HT.PERSISTENT):
        objects.check_object_handle(handle)
        return
    raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_DH_ENTITY")


def _check_bind(handle: int) -> None:
    check_entity(handle, allow_null=True)


def _check_session_type(value: int) -> None:
    # Part 2 §6.11 TPM_SE: HMAC, POLICY or TRIAL; anything else is TPM_RC_VALUE.
    if value not in (SE.HMAC, SE.POLICY, SE.TRIAL):
        raise TpmError(RC.VALUE, detail=f"TPM_SE 0x{value:02x}")


_SYM_ALG = tpmi_alg(Role.SYM, RC.SYMMETRIC, allow_null=True)
_SYM_MODE = tpmi_alg(Role.SYM_MODE, RC.MODE, allow_null=True)


def _check_key_bits(alg: int, bits: int) -> None:
    # Part 2 §11.1.5 TPMI_!ALG.S_KEY_BITS: a key size the cipher does not have is TPM_RC_VALUE.
    if bits not in algorithms.ALGORITHMS[alg].key_bits:
        raise TpmError(RC.VALUE, detail=f"{bits}-bit key for 0x{alg:04x}")


class _SymDef(c.Construct):
    """TPMT_SYM_DEF+ (Part 2 §11.1.6) as a :class:`~swtpm_py.tpm.paramenc.SymDef`: the
    algorithm (TPMI_ALG_SYM+, TPM_RC_SYMMETRIC), then for XOR its hash (TPMI_ALG_HASH,
    TPM_RC_HASH) and for a block cipher its key size (TPM_RC_VALUE) and mode
    (TPMI_ALG_SYM_MODE+, TPM_RC_MODE); TPM_ALG_NULL has neither."""

    def _parse(self, stream: Any, context: Any, path: str) -> SymDef:
        alg = _SYM_ALG._parsereport(stream, context, path)
        if alg == ALG.NULL:
            return SymDef(alg)
        if alg == ALG.XOR:
            return SymDef(alg, TPMI_ALG_HASH._parsereport(stream, context, path))
        bits = UINT16._parsereport(stream, context, path)
        _check_key_bits(alg, bits)
        return SymDef(alg, bits, _SYM_MODE._parsereport(stream, context, path))

    def _build(self, obj: SymDef, stream: Any, context: Any, path: str) -> SymDef:
        data = obj.alg.to_bytes(2, "big")
        if obj.alg != ALG.NULL:
            data += obj.key_bits.to_bytes(2, "big")
        if obj.alg not in (ALG.NULL, ALG.XOR):
            data += obj.mode.to_bytes(2, "big")
        c.stream_write(stream, data, len(data), path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        raise c.SizeofError("variable size")


TPMT_SYM_DEF = _SymDef()


@command(CC.StartAuthSession,
         handles=(HandleSpec("tpmKey", _check_tpm_key), HandleSpec("bind", _check_bind)),
         params=(TPM2B_NONCE, TPM2B_ENCRYPTED_SECRET, Checked(UINT8, _check_session_type),
                 TPMT_SYM_DEF, TPMI_ALG_HASH),
         response=(TPM2B_NONCE,), response_handle=True)
def start_auth_session(ctx: CommandContext, tpm_key: int, bind: int, nonce_caller: bytes,
                       encrypted_salt: bytes, session_type: int, symmetric: SymDef,
                       auth_hash: int) -> tuple[int, bytes]:
    """Part 3 §11.1: start an HMAC, policy or trial session.

    Checked in the reference's order: nonceCaller of 16 octets up to the digest size of
    authHash (TPM_RC_SIZE + P1); the salt (:func:`decrypt_salt`); a bind object with
    its sensitive area (TPM_RC_HANDLE + H2); a block cipher only in CFB mode (TPM_RC_MODE + P4);
    then a free slot (TPM_RC_SESSION_MEMORY) and a free handle (TPM_RC_SESSION_HANDLES).
    """
    tpm = ctx.tpm
    if not 16 <= len(nonce_caller) <= HASHES[auth_hash].size:
        raise TpmError(RC.SIZE, parameter=1, detail=f"nonceCaller of {len(nonce_caller)}")
    salt = decrypt_salt(tpm, tpm_key, encrypted_salt)
    if bind >> 24 in (HT.TRANSIENT, HT.PERSISTENT) and objects.lookup(tpm, bind).public_only:
        # An object loaded without its sensitive area has no authValue to bind to.
        raise TpmError(RC.HANDLE, handle=2, detail="bind object has no sensitive area")
    if symmetric.alg not in (ALG.NULL, ALG.XOR) and symmetric.mode != ALG.CFB:
        raise TpmError(RC.MODE, parameter=4, detail="session ciphers run in CFB mode")
    capacity = properties.CAPACITY
    if len(sessions.loaded(tpm)) >= capacity.loaded_sessions:
        raise TpmError(RC.SESSION_MEMORY, detail="all session slots are in use")
    used = {h & sessions.INDEX_MASK for h in sessions.loaded_handles(tpm)}
    used |= {h & sessions.INDEX_MASK
             for h in properties.handles(tpm, properties.SAVED_SESSION)}
    free = [i for i in range(capacity.active_sessions) if i not in used]
    if not free:
        raise TpmError(RC.SESSION_HANDLES, detail="all session handles are in use")
    session = sessions.start(tpm, session_type=session_type, auth_hash=auth_hash,
                             nonce_caller=nonce_caller, sym=symmetric, bind=bind, salt=salt,
                             index=free[0])
    return session.handle, session.nonce_tpm


def decrypt_salt(tpm: Tpm, tpm_key: int, encrypted_salt: bytes) -> bytes:
    """Part 3 §11.1: the salt of a session. Without tpmKey (TPM_RH_NULL) there is none and
    encryptedSalt must be empty (TPM_RC_VALUE + P2). Otherwise, in the reference's order:
    tpmKey must be an asymmetric key (TPM_RC_KEY + H1), encryptedSalt not empty
    (TPM_RC_VALUE + P2), the key loaded with its sensitive area (TPM_RC_HANDLE + H1) and a
    decryption key (TPM_RC_ATTRIBUTES + H1); a salt that does not decrypt (Part 1 §24, label
    "SECRET") is TPM_RC_VALUE + P2."""
    if tpm_key == RH.NULL:
        if encrypted_salt:
            raise TpmError(RC.VALUE, parameter=2, detail="encryptedSalt without tpmKey")
        return b""
    key = objects.lookup(tpm, tpm_key)
    if key.public.type not in (ALG.RSA, ALG.ECC):
        raise TpmError(RC.KEY, handle=1, detail="tpmKey is not an asymmetric key")
    if not encrypted_salt:
        raise TpmError(RC.VALUE, parameter=2, detail="empty encryptedSalt")
    if key.public_only:
        raise TpmError(RC.HANDLE, handle=1, detail="tpmKey has no sensitive area")
    if not key.attributes & ObjectAttr.DECRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="tpmKey is not a decryption key")
    try:
        return secret.decrypt_secret(key, encrypted_salt, secret.SECRET_LABEL)
    except TpmError as exc:
        raise TpmError(RC.VALUE, parameter=2, detail=exc.detail) from None


properties.register_handle_source(properties.LOADED_SESSION, sessions.loaded_handles)
register_flusher(HT.HMAC_SESSION, sessions.flush_context)
register_flusher(HT.POLICY_SESSION, sessions.flush_context)
