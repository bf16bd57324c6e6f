"""Symmetric primitives (Part 3 §15): TPM2_EncryptDecrypt and TPM2_EncryptDecrypt2.

Both are the reference's EncryptDecryptShared(); TPM2_EncryptDecrypt2 takes inData first, so
that it may be encrypted by a session (Part 1 §21: only a TPM2B first parameter can be), and
reports the parameter numbers of its own order. The modes are in
:func:`swtpm_py.tpm.symcipher.encrypt_decrypt`; the mode parameter accepts the modes the
algorithm registry lists (TPMI_ALG_SYM_MODE+).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import symcipher
from ..algorithms import Role, tpmi_alg
from ..constants import ALG, CC, RC
from ..errors import TpmError
from ..objects import check_object_handle
from ..objects_wire import TPM2B_IV, ObjectAttr
from ..registry import Auth, HandleSpec, command
from ..wire import TPM2B_MAX_BUFFER
from .asym import private_key_object
from .testing import TPMI_YES_NO, YES

if TYPE_CHECKING:
    from ..core import CommandContext

#: TPMI_ALG_SYM_MODE+ (Part 2 §9.30): a mode the TPM implements, or TPM_ALG_NULL.
TPMI_ALG_SYM_MODE_NULL = tpmi_alg(Role.SYM_MODE, RC.MODE, allow_null=True)

#: Parameter numbers of (mode, ivIn, inData) in each command.
_ENCRYPT_DECRYPT_PARAMS = (2, 3, 4)
_ENCRYPT_DECRYPT2_PARAMS = (3, 4, 1)


def _shared(ctx: CommandContext, handle: int, decrypt: int, mode_in: int, iv: bytes,
            data: bytes, numbers: tuple[int, int, int]) -> tuple[bytes, bytes]:
    """EncryptDecryptShared() (Part 3 §15.2.1): returns (outData, ivOut)."""
    p_mode, p_iv, p_data = numbers
    obj = private_key_object(ctx, handle)
    public = obj.public
    if public.type != ALG.SYMCIPHER:
        raise TpmError(RC.KEY, handle=1, detail="not a symmetric cipher key")
    # The key must be unrestricted, with decrypt to decrypt and sign to encrypt.
    attrs = obj.attributes
    needed = ObjectAttr.DECRYPT if decrypt == YES else ObjectAttr.SIGN_ENCRYPT
    if attrs & ObjectAttr.RESTRICTED or not attrs & needed:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="the key does not allow this")
    sym = public.parameters.sym
    # An encryption mode (not a MAC mode such as CMAC) or TPM_ALG_NULL.
    mode = sym.mode
    if mode != ALG.NULL and mode not in symcipher.MODES:
        raise TpmError(RC.MODE, handle=1, detail="the key's mode cannot encrypt")
    # The key's mode rules; with TPM_ALG_NULL the caller chooses, otherwise the caller may
    # only repeat it (or say TPM_ALG_NULL).
    if mode != ALG.NULL:
        if mode_in not in (ALG.NULL, mode):
            raise TpmError(RC.MODE, parameter=p_mode, detail="mode differs from the key's")
    elif mode_in == ALG.NULL:
        raise TpmError(RC.MODE, parameter=p_mode, detail="neither key nor caller sets a mode")
    else:
        mode = mode_in
    # ECB takes no IV; every other mode exactly one block. CBC and ECB (no padding) take
    # whole blocks only.
    block = symcipher.BLOCK_SIZES[sym.algorithm]
    if len(iv) != (0 if mode == ALG.ECB else block):
        raise TpmError(RC.SIZE, parameter=p_iv, detail="ivIn is not one block")
    if mode in symcipher.BLOCK_MODES and len(data) % block:
        raise TpmError(RC.SIZE, parameter=p_data, detail="inData is not whole blocks")
    return symcipher.encrypt_decrypt(sym.algorithm, obj.sensitive.sensitive, mode, iv, data,
                                     decrypt == YES)


@command(CC.EncryptDecrypt,
         handles=(HandleSpec("keyHandle", check_object_handle, Auth.USER),),
         params=(TPMI_YES_NO, TPMI_ALG_SYM_MODE_NULL, TPM2B_IV, TPM2B_MAX_BUFFER),
         response=(TPM2B_MAX_BUFFER, TPM2B_IV))
def encrypt_decrypt(ctx: CommandContext, handle: int, decrypt: int, mode: int, iv: bytes,
                    data: bytes) -> tuple[bytes, bytes]:
    """Part 3 §15.2: encrypt (decrypt NO) or decrypt (YES) ``data`` with a symmetric cipher
    key; returns the result and the chaining value for a following call."""
    return _shared(ctx, handle, decrypt, mode, iv, data, _ENCRYPT_DECRYPT_PARAMS)


@command(CC.EncryptDecrypt2,
         handles=(HandleSpec("keyHandle", check_object_handle, Auth.USER),),
         params=(TPM2B_MAX_BUFFER, TPMI_YES_NO, TPMI_ALG_SYM_MODE_NULL, TPM2B_IV),
         response=(TPM2B_MAX_BUFFER, TPM2B_IV))
def encrypt_decrypt2(ctx: CommandContext, handle: int, data: bytes, decrypt: int, mode: int,
                     iv: bytes) -> tuple[bytes, bytes]:
    """Part 3 §15.3: TPM2_EncryptDecrypt with inData first."""
    return _shared(ctx, handle, decrypt, mode, iv, data, _ENCRYPT_DECRYPT2_PARAMS)
