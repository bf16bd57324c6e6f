"""Credential commands (Part 3 §12.5-12.6, Part 1 §24 "Credential Protection"):
TPM2_MakeCredential and TPM2_ActivateCredential.

A certificate authority that trusts an endorsement key sends a credential (a digest, usually
the key of a certificate) that only the TPM holding that EK and the object with the given Name
(an attestation key) can recover: the credential is protected by the outer wrapper with a seed
encrypted to the EK (:mod:`swtpm_py.tpm.duplication`). TPM2_MakeCredential needs no secret of
the TPM, so anyone can compute it (tpm2-tools does it with ``--tcti none``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import duplication, objects, secret
from ..constants import ALG, CC, RC
from ..crypto import HASHES
from ..errors import TpmError
from ..objects import TpmObject, check_object_handle
from ..objects_wire import ObjectAttr
from ..registry import Auth, HandleSpec, command
from ..wire import MAX_DIGEST_SIZE, TPM2B_DIGEST, TPM2B_NAME, tpm2b
from .asym import private_key_object
from .session import TPM2B_ENCRYPTED_SECRET

if TYPE_CHECKING:
    from ..core import CommandContext

#: TPM2B_ID_OBJECT (Part 2 §12.4.3): a TPMS_ID_OBJECT, two TPM2B_DIGESTs at most.
TPM2B_ID_OBJECT = tpm2b(2 * (2 + MAX_DIGEST_SIZE))


def _check_protector(obj: TpmObject) -> None:
    """Part 3 §12.5.1 / §12.6.1: the key protecting a credential must be an asymmetric,
    restricted decryption key (only those have a symmetric algorithm for the wrapper):
    TPM_RC_TYPE otherwise (the caller numbers it)."""
    attrs = obj.attributes
    if (obj.public.type not in (ALG.RSA, ALG.ECC) or not attrs & ObjectAttr.DECRYPT
            or not attrs & ObjectAttr.RESTRICTED):
        raise TpmError(RC.TYPE, detail="not an asymmetric restricted decryption key")


@command(CC.MakeCredential,
         handles=(HandleSpec("handle", check_object_handle),),
         params=(TPM2B_DIGEST, TPM2B_NAME),
         response=(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET))
def make_credential(ctx: CommandContext, handle: int, credential: bytes,
                    object_name: bytes) -> tuple[bytes, bytes]:
    """Part 3 §12.6: protect ``credential`` for the holder of the key ``handle`` (its public
    area suffices) and the object ``objectName``. A credential longer than the key's nameAlg
    digest is TPM_RC_SIZE + P1."""
    obj = objects.lookup(ctx.tpm, handle)
    try:
        _check_protector(obj)
    except TpmError as exc:
        raise TpmError(exc.rc, handle=1, detail=exc.detail) from None
    if len(credential) > HASHES[obj.public.nameAlg].size:
        raise TpmError(RC.SIZE, parameter=1, detail="credential longer than a digest")
    seed, encrypted = secret.encrypt_secret(obj.public, duplication.IDENTITY_LABEL,
                                            ctx.tpm.drbg)
    blob = duplication.make_credential_blob(obj.public, seed, object_name, credential)
    return blob, encrypted


@command(CC.ActivateCredential,
         handles=(HandleSpec("activateHandle", check_object_handle, Auth.ADMIN),
                  HandleSpec("keyHandle", check_object_handle, Auth.USER)),
         params=(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET),
         response=(TPM2B_DIGEST,))
def activate_credential(ctx: CommandContext, activate_handle: int, key_handle: int,
                        blob: bytes, encrypted_secret: bytes) -> Any:
    """Part 3 §12.5: recover the credential of ``credentialBlob`` with the key ``keyHandle``
    (which decrypts the seed) for the object ``activateHandle`` (whose Name the blob is bound
    to). Errors: TPM_RC_TYPE + H2 for a key that cannot protect credentials, the seed's
    decryption errors + P2, TPM_RC_INTEGRITY + P1 for a blob made for another key, object or
    changed in transit."""
    tpm = ctx.tpm
    activate = objects.lookup(tpm, activate_handle)
    key = private_key_object(ctx, key_handle)
    try:
        _check_protector(key)
    except TpmError as exc:
        raise TpmError(exc.rc, handle=2, detail=exc.detail) from None
    try:
        seed = secret.decrypt_secret(key, encrypted_secret, duplication.IDENTITY_LABEL)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=2, detail=exc.detail) from None
    try:
        return duplication.credential_from_blob(key.public, seed, activate.name, blob)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=1, detail=exc.detail) from None
