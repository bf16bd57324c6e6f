"""Consistency rules for object public and sensitive areas, with the spec's response codes
(Part 3 §12.1 TPM2_Create / §24.1 TPM2_CreatePrimary / §12.2 TPM2_Load / §12.3
TPM2_LoadExternal "Detailed Actions"; the reference implementation's CreateChecks(),
PublicAttributesValidation(), SchemeChecks() and CryptValidateKeys(), whose order of checks
swtpm exhibits and tests/test_objects.py pins against it).

The functions raise :class:`~swtpm_py.tpm.errors.TpmError` with an unnumbered format-1 code
where the command decides which parameter to blame (:func:`blame`), and with the number already
attached where the rule itself names the area at fault.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from . import algorithms
from .constants import ALG, RC
from .crypto import HASHES
from .errors import TpmError, for_parameter
from .keys import CURVES, ecc_public_point, rsa_private_numbers, symmetric_unique
from .objects_wire import ObjectAttr

A = ObjectAttr


@contextlib.contextmanager
def blame(parameter: int) -> Iterator[None]:
    """Attach parameter number ``parameter`` to a format-1 code raised inside that has none
    (the reference's RcSafeAddToResult())."""
    try:
        yield
    except TpmError as exc:
        raise TpmError(for_parameter(exc.rc, parameter), detail=exc.detail) from None


def _has(attrs: int, bit: A) -> bool:
    return bool(attrs & bit)


def adjust_auth(auth: bytes, name_alg: int) -> bytes:
    """AdjustAuthSize(): an authValue may not be longer than nameAlg's digest once trailing
    zeros are removed (TPM_RC_SIZE); it is then zero-padded to the digest size. With nameAlg
    TPM_ALG_NULL the bound is the largest digest."""
    size = HASHES[name_alg].size if name_alg in HASHES else max(h.size for h in HASHES.values())
    if len(auth.rstrip(b"\x00")) > size:
        raise TpmError(RC.SIZE, detail="authValue longer than the nameAlg digest")
    return auth[:size].ljust(size, b"\x00")


def create_checks(parent: Any | None, public: Any, data_size: int) -> None:
    """CreateChecks(): the rules only creation has, then :func:`public_attributes_validation`.
    ``parent`` is the parent object, or None for a Primary Object."""
    attrs = public.objectAttributes
    origin = _has(attrs, A.SENSITIVE_DATA_ORIGIN)
    # Part 3 §12.1.1: data comes from the caller exactly when sensitiveDataOrigin is CLEAR.
    if not origin and data_size == 0:
        raise TpmError(RC.ATTRIBUTES, detail="sensitiveDataOrigin CLEAR without data")
    if parent is not None and origin and data_size != 0:
        raise TpmError(RC.ATTRIBUTES, detail="sensitiveDataOrigin SET with data")
    if public.type in (ALG.KEYEDHASH, ALG.SYMCIPHER):
        if public.type == ALG.KEYEDHASH and not _has(attrs, A.SIGN_ENCRYPT) \
                and not _has(attrs, A.DECRYPT) and origin:
            # A sealed data object holds the caller's data; the TPM cannot make it up.
            raise TpmError(RC.ATTRIBUTES, detail="data object with sensitiveDataOrigin")
        if _has(attrs, A.RESTRICTED) and not origin \
                and (_has(attrs, A.FIXED_PARENT) or _has(attrs, A.FIXED_TPM)):
            raise TpmError(RC.ATTRIBUTES, detail="restricted symmetric key with caller data")
    elif not origin:
        # Part 3 §12.1.1: the TPM generates every asymmetric key itself.
        raise TpmError(RC.ATTRIBUTES, detail="asymmetric key without sensitiveDataOrigin")
    public_attributes_validation(parent, public)


def public_attributes_validation(parent: Any | None, public: Any) -> None:
    """PublicAttributesValidation(): nameAlg, authPolicy size, and the consistency of
    fixedTPM, fixedParent, encryptedDuplication, restricted, sign and decrypt, then the
    schemes (:func:`scheme_checks`)."""
    attrs = public.objectAttributes
    parent_attrs = parent.public.objectAttributes if parent is not None else 0
    if public.nameAlg == ALG.NULL:
        raise TpmError(RC.HASH, detail="nameAlg TPM_ALG_NULL")
    if public.authPolicy and len(public.authPolicy) != HASHES[public.nameAlg].size:
        raise TpmError(RC.SIZE, detail="authPolicy is not a nameAlg digest")
    if parent is None or _has(parent_attrs, A.FIXED_TPM):
        # Part 1 "Object Attributes": under a fixedTPM parent (or a seed) fixedTPM and
        # fixedParent agree.
        if _has(attrs, A.FIXED_PARENT) != _has(attrs, A.FIXED_TPM):
            raise TpmError(RC.ATTRIBUTES, detail="fixedTPM and fixedParent differ")
    elif _has(attrs, A.FIXED_TPM):
        raise TpmError(RC.ATTRIBUTES, detail="fixedTPM under a duplicable parent")
    if _has(attrs, A.SIGN_ENCRYPT) == _has(attrs, A.DECRYPT):
        if _has(attrs, A.RESTRICTED):
            raise TpmError(RC.ATTRIBUTES, detail="restricted key must sign or decrypt")
        if public.type != ALG.KEYEDHASH and not _has(attrs, A.SIGN_ENCRYPT):
            raise TpmError(RC.ATTRIBUTES, detail="only a data object neither signs nor "
                                                 "decrypts")
    if _has(attrs, A.FIXED_TPM) and _has(attrs, A.ENCRYPTED_DUPLICATION):
        raise TpmError(RC.ATTRIBUTES, detail="encryptedDuplication on a fixedTPM object")
    if parent is not None and not _has(parent_attrs, A.FIXED_TPM):
        if _has(attrs, A.ENCRYPTED_DUPLICATION) != _has(parent_attrs, A.ENCRYPTED_DUPLICATION):
            raise TpmError(RC.ATTRIBUTES, detail="encryptedDuplication differs from parent")
    if parent is not None and is_derivation_parent(parent):
        # Part 3 §12.9.1: a Derived Object shares its parent's fixedTPM and is fixedParent.
        if _has(attrs, A.FIXED_TPM) != _has(parent_attrs, A.FIXED_TPM):
            raise TpmError(RC.ATTRIBUTES, detail="derived object's fixedTPM differs from "
                                                 "its parent's")
        if not _has(attrs, A.FIXED_PARENT):
            raise TpmError(RC.ATTRIBUTES, detail="derived object without fixedParent")
    scheme_checks(parent, public)


def is_derivation_parent(obj: Any) -> bool:
    """ObjectSetLoadedAttributes(): a loaded restricted decryption keyed-hash object with its
    sensitive area and a nameAlg, not loaded as external, is a derivation parent (Part 1
    "Derived Objects"; TPM2_CreateLoaded derives objects from its secret)."""
    attrs = obj.public.objectAttributes
    return (obj.public.type == ALG.KEYEDHASH and not obj.external and not obj.public_only
            and obj.public.nameAlg in HASHES and _has(attrs, A.RESTRICTED)
            and _has(attrs, A.DECRYPT))


def scheme_checks(parent: Any | None, public: Any) -> None:
    """SchemeChecks(): the scheme a key carries must suit its attributes (TPM_RC_SCHEME), a
    storage key needs a symmetric algorithm and no other asymmetric key may have one
    (TPM_RC_SYMMETRIC), an ECC key's KDF must be NULL (TPM_RC_KDF), and a non-duplicable
    storage key uses its parent's nameAlg and symmetric definition (TPM_RC_HASH /
    TPM_RC_SYMMETRIC)."""
    attrs = public.objectAttributes
    sign, decrypt = _has(attrs, A.SIGN_ENCRYPT), _has(attrs, A.DECRYPT)
    restricted = _has(attrs, A.RESTRICTED)
    parms = public.parameters
    sym = None
    if public.type == ALG.SYMCIPHER:
        sym = parms.sym
    elif public.type == ALG.KEYEDHASH:
        scheme = parms.scheme.scheme
        if sign == decrypt:
            if scheme != ALG.NULL:
                raise TpmError(RC.SCHEME, detail="keyed hash with both or neither use")
        elif sign and scheme != ALG.HMAC:
            raise TpmError(RC.SCHEME, detail="keyed-hash signing key without HMAC")
        elif decrypt:
            if scheme != ALG.XOR:
                raise TpmError(RC.SCHEME, detail="keyed-hash decryption key without XOR")
            if restricted:
                if parms.scheme.details.kdf != ALG.KDF1_SP800_108:
                    raise TpmError(RC.SCHEME, detail="derivation parent needs KDFa")
    else:
        scheme = parms.scheme.scheme
        sym = parms.symmetric
        if sign == decrypt:
            if scheme != ALG.NULL:
                raise TpmError(RC.SCHEME, detail="scheme on a sign+decrypt key")
        elif sign:
            if scheme in algorithms.SIGN_SCHEMES[public.type]:
                if parms.scheme.details.hashAlg == ALG.NULL:
                    raise TpmError(RC.SCHEME, detail="signing scheme without hash")
            elif restricted or scheme != ALG.NULL:
                raise TpmError(RC.SCHEME, detail="not a signing scheme")
        elif restricted:
            if scheme != ALG.NULL:
                raise TpmError(RC.SCHEME, detail="storage key with a scheme")
        elif scheme != ALG.NULL and scheme not in algorithms.DECRYPT_SCHEMES[public.type]:
            raise TpmError(RC.SCHEME, detail="not a decryption scheme")
        if not (restricted and decrypt) and sym.algorithm != ALG.NULL:
            raise TpmError(RC.SYMMETRIC, detail="symmetric algorithm on a non-storage key")
        if public.type == ALG.ECC and parms.kdf.scheme != ALG.NULL:
            raise TpmError(RC.KDF, detail="ECC key with a KDF")
    if sym is not None and restricted and decrypt:
        if sym.algorithm == ALG.NULL:
            raise TpmError(RC.SYMMETRIC, detail="storage key without a symmetric algorithm")
        if _has(attrs, A.FIXED_PARENT) and parent is not None:
            if public.nameAlg != parent.public.nameAlg:
                raise TpmError(RC.HASH, detail="storage key nameAlg differs from parent's")
            if (sym.algorithm, sym.keyBits, sym.mode) != _parent_symmetric(parent.public):
                raise TpmError(RC.SYMMETRIC, detail="storage key cipher differs from parent's")


def _parent_symmetric(parent_public: Any) -> tuple[int, int, int]:
    """The (algorithm, keyBits, mode) a non-duplicable storage child must share with its
    parent. A derivation parent (keyed hash, TPM2_CreateLoaded) has no symmetric definition:
    the reference compares the same octets of its parameters, which hold its XOR scheme
    (scheme, hashAlg, kdf), so no child storage key ever matches (TPM_RC_SYMMETRIC, as swtpm
    0.7.1 answers)."""
    parms = parent_public.parameters
    if parent_public.type == ALG.KEYEDHASH:
        sch = parms.scheme
        details = sch.details if sch.scheme != ALG.NULL else None
        return (sch.scheme, details.hashAlg if details else 0, details.kdf if details else 0)
    psym = parms.symmetric
    return (psym.algorithm, psym.keyBits, psym.mode)


def validate_keys(public: Any, sensitive: Any | None, blame_public: int,
                  blame_sensitive: int) -> None:
    """CryptValidateKeys(): the public and sensitive areas of a key that did not come from
    this TPM (TPM2_LoadExternal, or a child of a duplicable parent) must belong together.
    Codes carry the number of the area at fault (``blame_public`` / ``blame_sensitive``)."""
    digest = HASHES[public.nameAlg].size if public.nameAlg in HASHES else 0
    parms, unique = public.parameters, public.unique

    def fail(rc: int, n: int = 0, detail: str = "") -> TpmError:
        return TpmError(for_parameter(rc, n) if n else rc, detail=detail)

    if sensitive is not None:
        if sensitive.sensitiveType != public.type:
            raise fail(RC.TYPE, blame_sensitive, "sensitive type differs from public type")
        if digest and len(sensitive.authValue) > digest:
            raise fail(RC.SIZE, blame_sensitive, "authValue longer than nameAlg digest")
    if public.type == ALG.RSA:
        nbytes = parms.keyBits // 8
        if len(unique) != nbytes or unique[0] < 0x80:
            raise fail(RC.KEY, blame_public, "modulus size")
        if parms.exponent != 0 and parms.exponent < 7:
            raise fail(RC.VALUE, blame_public, "exponent")
        if sensitive is not None:
            prime = sensitive.sensitive
            if len(prime) * 2 != nbytes or prime[0] < 0x80:
                raise fail(RC.KEY_SIZE, blame_sensitive, "prime size")
            e = parms.exponent or 65537
            rsa_private_numbers(int.from_bytes(unique, "big"), e,
                                int.from_bytes(prime, "big"))
    elif public.type == ALG.ECC:
        curve = CURVES[parms.curveID]
        if sensitive is None:
            if len(unique.x) != curve.size or len(unique.y) != curve.size:
                raise fail(RC.KEY, blame_public, "point size")
            if public.nameAlg != ALG.NULL and not point_on_curve(parms.curveID, unique):
                raise fail(RC.ECC_POINT, blame_public, "point not on the curve")
        else:
            d = int.from_bytes(sensitive.sensitive, "big")
            if not 0 < d < curve.order or len(sensitive.sensitive) > curve.size:
                raise fail(RC.KEY_SIZE, 0, "private scalar out of range")
            if public.nameAlg != ALG.NULL:
                x, y = ecc_public_point(curve, d)
                if (int.from_bytes(unique.x, "big"), int.from_bytes(unique.y, "big")) != (
                        int.from_bytes(x, "big"), int.from_bytes(y, "big")):
                    raise fail(RC.BINDING, 0, "public point is not d*G")
    else:
        if sensitive is None:
            if len(unique) != digest:
                raise fail(RC.KEY, blame_public, "unique is not a nameAlg digest")
            return
        if public.type == ALG.SYMCIPHER:
            if len(sensitive.sensitive) * 8 != parms.sym.keyBits:
                raise fail(RC.KEY_SIZE, blame_sensitive, "symmetric key size")
        else:
            sch = parms.scheme
            limit = HASHES[sch.details.hashAlg].block_size \
                if sch.scheme != ALG.NULL else 128
            if len(sensitive.sensitive) > limit:
                raise fail(RC.KEY_SIZE, blame_sensitive, "keyed-hash key size")
        if public.nameAlg != ALG.NULL:
            if len(sensitive.seedValue) != digest:
                raise fail(RC.KEY_SIZE, blame_sensitive, "seedValue size")
            if symmetric_unique(public, sensitive.seedValue, sensitive.sensitive) != unique:
                raise fail(RC.BINDING, 0, "unique does not match the secret")


def point_on_curve(curve_id: int, point: Any) -> bool:
    """Whether (x, y) is a point of the curve (BN P-256 has no ``cryptography`` curve)."""
    from . import ecmath
    return ecmath.DOMAINS[curve_id].contains(int.from_bytes(point.x, "big"),
                                             int.from_bytes(point.y, "big"))
