"""Duplication commands (Part 3 §13, Part 1 §23 "Duplication"): TPM2_Duplicate, TPM2_Rewrap
and TPM2_Import.

An object whose fixedParent is CLEAR may be moved under another parent, of this TPM or of
another: TPM2_Duplicate (DUP role: a policy session with TPM2_PolicyCommandCode(Duplicate) or
TPM2_PolicyDuplicationSelect) exports its sensitive area with an optional inner wrapper (a
symmetric key the caller gets or gives) and an outer wrapper to the new parent, whose public
area suffices; TPM2_Rewrap moves an outer wrapper from one parent to another; TPM2_Import
removes both wrappers under the new parent and returns the object as an ordinary private area
of that parent (TPM2_Load loads it). The blob layout is in :mod:`swtpm_py.tpm.duplication`.

Each handler follows the order of checks of the reference implementation's command (swtpm
0.7.1; tests/test_duplication.py compares the codes with swtpm's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import duplication, objects, protection, secret
from ..algorithms import sym_def_object
from ..constants import ALG, CC, RC, RH
from ..crypto import HASHES
from ..errors import TpmError
from ..object_checks import blame, public_attributes_validation, validate_keys
from ..objects import TpmObject
from ..objects_wire import (MAX_PRIVATE_BYTES, TPM2B_PRIVATE, TPM2B_PUBLIC, ObjectAttr,
                            name_of, public_bytes, sensitive_bytes)
from ..registry import Auth, HandleSpec, command
from ..wire import TPM2B_DATA, TPM2B_NAME
from .asym import private_key_object
from .object import OBJECT_HANDLE
from .session import TPM2B_ENCRYPTED_SECRET, _check_tpm_key

if TYPE_CHECKING:
    from ..core import CommandContext

#: TPMT_SYM_DEF_OBJECT+ (Part 2 §11.1.7): the inner wrapper's cipher, or TPM_ALG_NULL.
TPMT_SYM_DEF_OBJECT_NULL = sym_def_object(allow_null=True)


def _storage(ctx: CommandContext, handle: int) -> TpmObject | None:
    """The reference's ObjectIsStorage(): a restricted decryption RSA or ECC key that does not
    sign (its public area suffices), or None when it is not one. TPM_RH_NULL is None too."""
    if handle == RH.NULL:
        return None
    obj = objects.lookup(ctx.tpm, handle)
    attrs = obj.attributes
    if (obj.public.type in (ALG.RSA, ALG.ECC) and attrs & ObjectAttr.RESTRICTED
            and attrs & ObjectAttr.DECRYPT and not attrs & ObjectAttr.SIGN_ENCRYPT):
        return obj
    return None


def _inner_key_size(sym_def: Any) -> int:
    return (sym_def.keyBits + 7) // 8


@command(CC.Duplicate,
         handles=(HandleSpec("objectHandle", OBJECT_HANDLE, Auth.DUP),
                  HandleSpec("newParentHandle", _check_tpm_key)),
         params=(TPM2B_DATA, TPMT_SYM_DEF_OBJECT_NULL),
         response=(TPM2B_DATA, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET))
def duplicate(ctx: CommandContext, object_handle: int, new_parent_handle: int,
              encryption_key_in: bytes, sym_def: Any) -> tuple[bytes, bytes, bytes]:
    """Part 3 §13.1: the object's sensitive area for the new parent, as (encryptionKeyOut,
    duplicate, outSymSeed).

    Errors: fixedParent SET (so every fixedTPM key) TPM_RC_ATTRIBUTES + H1; a new parent that
    is no storage key TPM_RC_TYPE + H2; encryptedDuplication without an inner wrapper
    TPM_RC_SYMMETRIC + P2 or without a new parent TPM_RC_HIERARCHY + H2; an encryptionKeyIn
    with TPM_ALG_NULL, or of another size than the cipher's key, TPM_RC_SIZE + P1."""
    tpm = ctx.tpm
    obj = private_key_object(ctx, object_handle)
    attrs = obj.attributes
    if attrs & ObjectAttr.FIXED_PARENT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="fixedParent objects never move")
    if obj.public.nameAlg not in HASHES:
        raise TpmError(RC.TYPE, handle=1, detail="object without a Name")
    new_parent = _storage(ctx, new_parent_handle)
    if new_parent_handle != RH.NULL and new_parent is None:
        raise TpmError(RC.TYPE, handle=2, detail="new parent is not a storage key")
    if attrs & ObjectAttr.ENCRYPTED_DUPLICATION:
        # Part 1 §23.3.2.4: such an object leaves the TPM only with both wrappers.
        if sym_def.algorithm == ALG.NULL:
            raise TpmError(RC.SYMMETRIC, parameter=2, detail="encryptedDuplication needs "
                                                             "an inner wrapper")
        if new_parent is None:
            raise TpmError(RC.HIERARCHY, handle=2, detail="encryptedDuplication needs an "
                                                          "outer wrapper")
    if sym_def.algorithm == ALG.NULL:
        if encryption_key_in:
            raise TpmError(RC.SIZE, parameter=1, detail="a key without an inner wrapper")
    elif encryption_key_in and len(encryption_key_in) != _inner_key_size(sym_def):
        raise TpmError(RC.SIZE, parameter=1, detail="key of the wrong size")
    if new_parent is not None:
        seed, out_sym_seed = secret.encrypt_secret(new_parent.public,
                                                   duplication.DUPLICATE_LABEL, tpm.drbg)
    else:
        seed, out_sym_seed = b"", b""
    inner_key = encryption_key_in
    if sym_def.algorithm != ALG.NULL and not inner_key:
        inner_key = tpm.drbg.generate(_inner_key_size(sym_def))
    blob = duplication.sensitive_to_duplicate(
        obj.sensitive_area, obj.name, obj.public.nameAlg,
        new_parent.public if new_parent is not None else None, seed, sym_def, inner_key)
    # Part 3 §13.1.2 encryptionKeyOut: the key the TPM chose; empty when the caller gave one
    # or there is no inner wrapper (swtpm 0.7.1 agrees).
    return (b"" if encryption_key_in else inner_key), blob, out_sym_seed


@command(CC.Rewrap,
         handles=(HandleSpec("oldParent", _check_tpm_key, Auth.USER),
                  HandleSpec("newParent", _check_tpm_key)),
         params=(TPM2B_PRIVATE, TPM2B_NAME, TPM2B_ENCRYPTED_SECRET),
         response=(TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET))
def rewrap(ctx: CommandContext, old_parent_handle: int, new_parent_handle: int,
           in_duplicate: bytes, name: bytes, in_sym_seed: bytes) -> tuple[bytes, bytes]:
    """Part 3 §13.2: replace the outer wrapper of a duplication blob for the object ``name``
    (TPM_RH_NULL on either side: no wrapper there), as (outDuplicate, outSymSeed).

    Errors: a seed without an old parent or an old parent without a seed TPM_RC_HANDLE + H1;
    a parent that is no storage key TPM_RC_TYPE + H1/H2; a seed that does not decrypt
    TPM_RC_VALUE + P3; the outer wrapper's errors + P1."""
    tpm = ctx.tpm
    if bool(in_sym_seed) != (old_parent_handle != RH.NULL):
        raise TpmError(RC.HANDLE, handle=1, detail="seed and old parent go together")
    inner = in_duplicate
    if old_parent_handle != RH.NULL:
        old_parent = _storage(ctx, old_parent_handle)
        if old_parent is None:
            raise TpmError(RC.TYPE, handle=1, detail="old parent is not a storage key")
        old_parent = private_key_object(ctx, old_parent_handle)
        try:
            seed = secret.decrypt_secret(old_parent, in_sym_seed, duplication.DUPLICATE_LABEL)
        except TpmError:
            raise TpmError(RC.VALUE, parameter=3, detail="seed does not decrypt") from None
        with blame(1):
            inner = protection.outer_unwrap(old_parent.public, seed, name, in_duplicate)
    if new_parent_handle == RH.NULL:
        return inner, b""
    new_parent = _storage(ctx, new_parent_handle)
    if new_parent is None:
        raise TpmError(RC.TYPE, handle=2, detail="new parent is not a storage key")
    seed, out_sym_seed = secret.encrypt_secret(new_parent.public, duplication.DUPLICATE_LABEL,
                                               tpm.drbg)
    if 2 + HASHES[new_parent.public.nameAlg].size + len(inner) > MAX_PRIVATE_BYTES:
        raise TpmError(RC.VALUE, parameter=1, detail="no room for an outer wrapper")
    return protection.outer_wrap(new_parent.public, seed, name, inner), out_sym_seed


@command(CC.Import,
         handles=(HandleSpec("parentHandle", OBJECT_HANDLE, Auth.USER),),
         params=(TPM2B_DATA, TPM2B_PUBLIC, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET,
                 TPMT_SYM_DEF_OBJECT_NULL),
         response=(TPM2B_PRIVATE,))
def import_(ctx: CommandContext, parent_handle: int, encryption_key: bytes, public: Any,
            in_duplicate: bytes, in_sym_seed: bytes, sym_def: Any) -> bytes:
    """Part 3 §13.3: remove the wrappers of a duplicated object under ``parentHandle`` and
    return it as that parent's private area (Part 1 "Protected Storage").

    Errors: fixedTPM or fixedParent SET TPM_RC_ATTRIBUTES + P2; a parent that is not a storage
    parent TPM_RC_TYPE + H1; an encryptionKey of the wrong size TPM_RC_SIZE + P1;
    encryptedDuplication without an inner wrapper TPM_RC_ATTRIBUTES + P1, without an outer one
    TPM_RC_ATTRIBUTES + P4; the seed's decryption errors + P4; the wrappers' errors
    (TPM_RC_INTEGRITY ...) + P3; under a fixedTPM parent the load checks of the areas."""
    tpm = ctx.tpm
    attrs = public.objectAttributes
    if attrs & (ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT):
        raise TpmError(RC.ATTRIBUTES, parameter=2, detail="fixedTPM/fixedParent object")
    parent = objects.lookup(tpm, parent_handle)
    if not parent.is_parent:
        raise TpmError(RC.TYPE, handle=1, detail="parent is not a storage key")
    if sym_def.algorithm != ALG.NULL:
        if len(encryption_key) != _inner_key_size(sym_def):
            raise TpmError(RC.SIZE, parameter=1, detail="key of the wrong size")
    else:
        if encryption_key:
            raise TpmError(RC.SIZE, parameter=1, detail="a key without an inner wrapper")
        if attrs & ObjectAttr.ENCRYPTED_DUPLICATION:
            raise TpmError(RC.ATTRIBUTES, parameter=1, detail="inner wrapper required")
    if in_sym_seed:
        if parent.public.type == ALG.SYMCIPHER:
            raise TpmError(RC.TYPE, handle=1, detail="a symmetric parent shares no seed")
        try:
            seed = secret.decrypt_secret(parent, in_sym_seed, duplication.DUPLICATE_LABEL)
        except TpmError as exc:
            raise TpmError(exc.rc, parameter=4, detail=exc.detail) from None
    else:
        if attrs & ObjectAttr.ENCRYPTED_DUPLICATION:
            raise TpmError(RC.ATTRIBUTES, parameter=4, detail="outer wrapper required")
        seed = b""
    name = name_of(public_bytes(public), public.nameAlg)
    with blame(3):
        sensitive = duplication.duplicate_to_sensitive(
            in_duplicate, name, public.nameAlg, parent.public, seed, sym_def, encryption_key)
    if parent.attributes & ObjectAttr.FIXED_TPM:
        # ObjectLoad() as TPM2_Load would do it, so that loading the result under a fixedTPM
        # parent may skip the key validation.
        if len(sensitive.seedValue) > HASHES[public.nameAlg].size:
            raise TpmError(RC.KEY_SIZE, parameter=3, detail="seedValue longer than a digest")
        with blame(2):
            public_attributes_validation(None, public)
        if sensitive.sensitiveType != public.type:
            raise TpmError(RC.TYPE, parameter=3, detail="sensitive type differs from public")
        validate_keys(public, sensitive, 2, 3)
    return protection.wrap(parent.public, parent.seed_value, name, sensitive_bytes(sensitive),
                           tpm.drbg.generate)
