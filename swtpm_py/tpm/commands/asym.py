"""Asymmetric primitives (Part 3 §14): TPM2_RSA_Encrypt, TPM2_RSA_Decrypt, TPM2_ECDH_KeyGen,
TPM2_ECDH_ZGen and TPM2_ECC_Parameters.

Each handler checks in the order of the reference implementation's command, which swtpm 0.7.1
exhibits (tests/test_asym.py compares the codes with swtpm's): the key's type (TPM_RC_KEY), its
attributes (TPM_RC_ATTRIBUTES), the label, then the scheme. The cryptography is in
:mod:`swtpm_py.tpm.asymmetric`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import asymmetric, objects
from ..constants import ALG, CC, RC
from ..errors import TpmError
from ..keys import CURVES, ecc_private_scalar, ecc_public_point
from ..objects import TpmObject, check_object_handle
from ..objects_wire import (TPM2B_ECC_POINT, TPM2B_PUBLIC_KEY_RSA, TPMI_ECC_CURVE,
                            TPMS_ALGORITHM_DETAIL_ECC, TPMT_RSA_DECRYPT, ObjectAttr)
from ..registry import Auth, HandleSpec, command
from ..wire import TPM2B_DATA

if TYPE_CHECKING:
    from ..core import CommandContext


def private_key_object(ctx: CommandContext, handle: int) -> TpmObject:
    """The loaded object ``handle`` of a command that uses its sensitive area. An object
    loaded without one cannot be authorized for the USER role, not even with a policy
    (swtpm 0.7.1: TPM_RC_AUTH_UNAVAILABLE, measured; the session layer lets a policy session
    through, so the command checks it)."""
    obj = objects.lookup(ctx.tpm, handle)
    if obj.public_only:
        raise TpmError(RC.AUTH_UNAVAILABLE, detail="the object has no sensitive area")
    return obj


def _key(ctx: CommandContext, handle: int, kind: int, private: bool = False) -> TpmObject:
    """The loaded key ``handle``, which must be of type ``kind`` (TPM_RC_KEY + H1), with its
    sensitive area when ``private``."""
    obj = private_key_object(ctx, handle) if private else objects.lookup(ctx.tpm, handle)
    if obj.public.type != kind:
        raise TpmError(RC.KEY, handle=1, detail="wrong key type")
    return obj


def _rsa_scheme(obj: TpmObject, in_scheme: Any, label: bytes) -> Any:
    """The label check (TPM_RC_VALUE + P3) and the scheme selection (TPM_RC_SCHEME + P2)
    shared by RSA_Encrypt and RSA_Decrypt."""
    if not asymmetric.label_ok(label):
        raise TpmError(RC.VALUE, parameter=3, detail="label is not NUL-terminated")
    selected = asymmetric.select_scheme(obj.public.parameters.scheme, in_scheme)
    if selected is None:
        raise TpmError(RC.SCHEME, parameter=2, detail="inScheme differs from the key's")
    return selected


@command(CC.RSA_Encrypt,
         handles=(HandleSpec("keyHandle", check_object_handle),),
         params=(TPM2B_PUBLIC_KEY_RSA, TPMT_RSA_DECRYPT, TPM2B_DATA),
         response=(TPM2B_PUBLIC_KEY_RSA,))
def rsa_encrypt(ctx: CommandContext, handle: int, message: bytes, in_scheme: Any,
                label: bytes) -> bytes:
    """Part 3 §14.2: encrypt ``message`` with the public part of an RSA key that has the
    decrypt attribute (restricted or not: no secret is used), with OAEP, RSAES-PKCS1-v1_5 or
    no padding; no authorization."""
    obj = _key(ctx, handle, ALG.RSA)
    if not obj.attributes & ObjectAttr.DECRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="not a decryption key")
    scheme = _rsa_scheme(obj, in_scheme, label)
    return asymmetric.rsa_encrypt(obj.public, scheme, message, label)


@command(CC.RSA_Decrypt,
         handles=(HandleSpec("keyHandle", check_object_handle, Auth.USER),),
         params=(TPM2B_PUBLIC_KEY_RSA, TPMT_RSA_DECRYPT, TPM2B_DATA),
         response=(TPM2B_PUBLIC_KEY_RSA,))
def rsa_decrypt(ctx: CommandContext, handle: int, ciphertext: bytes, in_scheme: Any,
                label: bytes) -> bytes:
    """Part 3 §14.3: decrypt with an unrestricted RSA decryption key (a restricted one only
    decrypts what the TPM itself checks, e.g. secrets of TPM2_ActivateCredential)."""
    obj = _key(ctx, handle, ALG.RSA, private=True)
    attrs = obj.attributes
    if attrs & ObjectAttr.RESTRICTED or not attrs & ObjectAttr.DECRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="not an unrestricted decryption key")
    scheme = _rsa_scheme(obj, in_scheme, label)
    return asymmetric.rsa_decrypt(obj, scheme, ciphertext, label)


def _on_curve(public: Any) -> bool:
    params = asymmetric.CURVE_PARAMETERS[public.parameters.curveID]
    return asymmetric.on_curve(params, int.from_bytes(public.unique.x, "big"),
                               int.from_bytes(public.unique.y, "big"))


@command(CC.ECDH_KeyGen,
         handles=(HandleSpec("keyHandle", check_object_handle),),
         response=(TPM2B_ECC_POINT, TPM2B_ECC_POINT))
def ecdh_keygen(ctx: CommandContext, handle: int) -> tuple[dict, dict]:
    """Part 3 §14.4: a new ephemeral key pair (de, Qe) on the curve of an ECC key; returns
    Z = de·Qs (Qs the key's public point) and Qe. Any ECC key will do, and only its public
    part is used (no authorization)."""
    obj = _key(ctx, handle, ALG.ECC)
    public = obj.public
    curve_id = public.parameters.curveID
    if not _on_curve(public):
        raise TpmError(RC.KEY, handle=1, detail="the key's point is not on the curve")
    d = ecc_private_scalar(CURVES[curve_id], ctx.tpm.drbg)
    zx, zy = asymmetric.point_multiply(curve_id, public.unique.x, public.unique.y, d)
    qx, qy = ecc_public_point(CURVES[curve_id], d)
    return dict(x=zx, y=zy), dict(x=qx, y=qy)


@command(CC.ECDH_ZGen,
         handles=(HandleSpec("keyHandle", check_object_handle, Auth.USER),),
         params=(TPM2B_ECC_POINT,),
         response=(TPM2B_ECC_POINT,))
def ecdh_zgen(ctx: CommandContext, handle: int, in_point: Any) -> dict:
    """Part 3 §14.5: Z = ds·Qb for the caller's point Qb and the private key ds of an
    unrestricted ECC decryption key whose scheme is ECDH or TPM_ALG_NULL; a point that is not
    on the curve is TPM_RC_ECC_POINT + P1."""
    obj = _key(ctx, handle, ALG.ECC, private=True)
    attrs = obj.attributes
    if attrs & ObjectAttr.RESTRICTED or not attrs & ObjectAttr.DECRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="not an unrestricted decryption key")
    public = obj.public
    if public.parameters.scheme.scheme not in (ALG.ECDH, ALG.NULL):
        raise TpmError(RC.SCHEME, handle=1, detail="the key's scheme is not ECDH")
    d = int.from_bytes(obj.sensitive.sensitive, "big")
    try:
        x, y = asymmetric.point_multiply(public.parameters.curveID, in_point.x, in_point.y, d)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=1, detail=exc.detail) from None
    return dict(x=x, y=y)


@command(CC.ECC_Parameters,
         params=(TPMI_ECC_CURVE,),
         response=(TPMS_ALGORITHM_DETAIL_ECC,))
def ecc_parameters(ctx: CommandContext, curve_id: int) -> dict:
    """Part 3 §14.6: the domain parameters of an implemented curve."""
    return asymmetric.algorithm_detail(curve_id)
