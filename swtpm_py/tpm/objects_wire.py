"""Wire structures of objects (Part 2 §12): public and sensitive areas, creation data and
tickets, and the wrapped private area.

The parameters of an object (TPMT_PUBLIC_PARMS and its parts) are declared once, in
:mod:`swtpm_py.tpm.algorithms`, where the algorithm registry decides what they accept; this
module builds the public area around them. Every type rejects a value outside its TPMI type with
the code Part 2 gives that type, so the dispatcher reports e.g. TPM_RC_TYPE + P2 for an object
type the TPM does not implement.

Parsed values are construct Containers. :func:`public_bytes` and :func:`parse_public` convert
between a TPMT_PUBLIC and its canonical marshalling, which is what Names are computed over
(Part 1 §16).
"""

from __future__ import annotations

import enum
import io
from typing import Any, Callable

import construct as c

from .algorithms import TPMI_ALG_PUBLIC, TPMU_PUBLIC_PARMS
from .constants import ALG, RC
from .crypto import HASHES
from .errors import TpmError
from .wire import (MAX_DIGEST_SIZE, TPM2B_AUTH, TPM2B_DATA, TPM2B_DIGEST, TPM2B_NAME,
                   TPM2B_SENSITIVE_DATA, TPML_PCR_SELECTION, UINT8, UINT16, UINT32, Checked,
                   parse_stream, tpm2b)

#: Largest RSA key (MAX_RSA_KEY_BITS 3072, as swtpm 0.7.1): TPM2B_PUBLIC_KEY_RSA's capacity.
MAX_RSA_KEY_BYTES = 3072 // 8
#: Largest ECC parameter (NIST P-521): TPM2B_ECC_PARAMETER's capacity.
MAX_ECC_KEY_BYTES = (521 + 7) // 8
#: Largest symmetric key (AES-256): TPM2B_SYM_KEY's capacity.
MAX_SYM_KEY_BYTES = 32
#: Part 2 §11.2.4.7 RSA_PRIVATE_SIZE: room for a prime and the CRT values (five halves).
RSA_PRIVATE_SIZE = MAX_RSA_KEY_BYTES // 2 * 5
#: Part 2 §10.4.2 TPM2B_IV: at most one block of the largest block cipher (AES).
MAX_SYM_BLOCK_SIZE = 16


class ObjectAttr(enum.IntFlag):
    """TPMA_OBJECT bits (Part 2 §8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


#: Part 2 §8.3.2: TPMA_OBJECT bits 0, 3, 8-9, 12-15 and 20-31 are reserved (TPM_RC_RESERVED_BITS).
TPMA_OBJECT_RESERVED = 0xFFF0F309


def _check_object_attributes(value: int) -> None:
    if value & TPMA_OBJECT_RESERVED:
        raise TpmError(RC.RESERVED_BITS, detail=f"TPMA_OBJECT 0x{value:08x}")


TPMA_OBJECT = Checked(UINT32, _check_object_attributes)


def _check_name_alg(allow_null: bool) -> Callable[[int], None]:
    def check(alg: int) -> None:
        # Part 2 §12.2.4 nameAlg is a +TPMI_ALG_HASH: TPM_RC_HASH outside the type; NULL only
        # where the command allows it (TPM2_LoadExternal).
        if alg in HASHES or (allow_null and alg == ALG.NULL):
            return
        raise TpmError(RC.HASH, detail=f"nameAlg 0x{alg:04x}")
    return check


TPM2B_PUBLIC_KEY_RSA = tpm2b(MAX_RSA_KEY_BYTES)
TPM2B_ECC_PARAMETER = tpm2b(MAX_ECC_KEY_BYTES)
TPM2B_SYM_KEY = tpm2b(MAX_SYM_KEY_BYTES)
TPM2B_PRIVATE_KEY_RSA = tpm2b(RSA_PRIVATE_SIZE)

#: TPMS_ECC_POINT (Part 2 §11.2.5.2).
TPMS_ECC_POINT = c.Struct("x" / TPM2B_ECC_PARAMETER, "y" / TPM2B_ECC_PARAMETER)

#: TPMU_PUBLIC_ID by object type (Part 2 §12.2.3.2): the public key, or a digest binding the
#: public area to a symmetric secret.
TPMU_PUBLIC_ID = {
    ALG.KEYEDHASH: TPM2B_DIGEST,
    ALG.SYMCIPHER: TPM2B_DIGEST,
    ALG.RSA: TPM2B_PUBLIC_KEY_RSA,
    ALG.ECC: TPMS_ECC_POINT,
}


def tpmt_public(allow_null_name_alg: bool) -> c.Construct:
    """TPMT_PUBLIC (Part 2 §12.2.4), with or without TPM_ALG_NULL as nameAlg."""
    return c.Struct(
        "type" / TPMI_ALG_PUBLIC,
        "nameAlg" / Checked(UINT16, _check_name_alg(allow_null_name_alg)),
        "objectAttributes" / TPMA_OBJECT,
        "authPolicy" / TPM2B_DIGEST,
        "parameters" / c.Switch(c.this.type, TPMU_PUBLIC_PARMS),
        "unique" / c.Switch(c.this.type, TPMU_PUBLIC_ID),
    )


#: TPMT_PUBLIC as most commands take it (nameAlg must be a hash).
TPMT_PUBLIC = tpmt_public(False)
#: TPMT_PUBLIC as TPM2_LoadExternal takes it (Part 3 §12.3: nameAlg may be TPM_ALG_NULL).
TPMT_PUBLIC_NULL = tpmt_public(True)


class SizedStruct(c.Construct):
    """A TPM2B around a structure (Part 2 §10.4: "sized structures"): u16 size, then exactly
    that many octets holding ``subcon``.

    Part 2 §10.4 / the reference unmarshalling: a size of zero is TPM_RC_SIZE unless
    ``allow_empty`` (then the value is None), and a structure that does not consume exactly
    ``size`` octets is TPM_RC_SIZE. Running out of octets inside is TPM_RC_INSUFFICIENT as
    everywhere; a size larger than the remaining command too.
    """

    #: A TPM2B on the wire: the first parameter or response value may be session-encrypted.
    tpm2b = True

    def __init__(self, subcon: c.Construct, *, allow_empty: bool = False) -> None:
        super().__init__()
        self.subcon = subcon
        self.allow_empty = allow_empty

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        size = UINT16._parsereport(stream, context, path)
        if size == 0:
            if self.allow_empty:
                return None
            raise TpmError(RC.SIZE, detail="empty sized structure")
        data = c.stream_read(stream, size, path)
        inner = io.BytesIO(data)
        value = parse_stream(self.subcon, inner)
        if inner.tell() != size:
            raise TpmError(RC.SIZE, detail=f"structure is {inner.tell()} of {size} octets")
        return value

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        data = b"" if obj is None else self.subcon.build(obj)
        c.stream_write(stream, len(data).to_bytes(2, "big") + data, 2 + len(data), path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        raise c.SizeofError("variable size")


TPM2B_PUBLIC = SizedStruct(TPMT_PUBLIC)
#: TPM2B_PUBLIC of TPM2_LoadExternal (nameAlg may be TPM_ALG_NULL).
TPM2B_PUBLIC_NULL = SizedStruct(TPMT_PUBLIC_NULL)

#: TPMU_SENSITIVE_COMPOSITE by type (Part 2 §12.3.2.3).
TPMU_SENSITIVE_COMPOSITE = {
    ALG.RSA: TPM2B_PRIVATE_KEY_RSA,
    ALG.ECC: TPM2B_ECC_PARAMETER,
    ALG.KEYEDHASH: TPM2B_SENSITIVE_DATA,
    ALG.SYMCIPHER: TPM2B_SYM_KEY,
}
#: TPMT_SENSITIVE (Part 2 §12.3.2.4): the secret part of an object.
TPMT_SENSITIVE = c.Struct(
    "sensitiveType" / TPMI_ALG_PUBLIC,
    "authValue" / TPM2B_AUTH,
    "seedValue" / TPM2B_DIGEST,
    "sensitive" / c.Switch(c.this.sensitiveType, TPMU_SENSITIVE_COMPOSITE),
)
#: TPM2B_SENSITIVE (Part 2 §12.3.2.5); empty for a public-only TPM2_LoadExternal.
TPM2B_SENSITIVE = SizedStruct(TPMT_SENSITIVE, allow_empty=True)

#: TPMS_SENSITIVE_CREATE (Part 2 §11.1.15) and its sized form (§11.1.16).
TPMS_SENSITIVE_CREATE = c.Struct("userAuth" / TPM2B_AUTH, "data" / TPM2B_SENSITIVE_DATA)
TPM2B_SENSITIVE_CREATE = SizedStruct(TPMS_SENSITIVE_CREATE)

#: Part 2 §12.3.7 TPM2B_PRIVATE: capacity for the outer integrity, the IV and the largest
#: TPM2B_SENSITIVE (the reference implementation's sizeof(_PRIVATE) bound).
MAX_PRIVATE_BYTES = ((2 + MAX_DIGEST_SIZE) * 2 + 2 + MAX_SYM_BLOCK_SIZE
                     + 2 + 2 + (2 + MAX_DIGEST_SIZE) * 2 + 2 + RSA_PRIVATE_SIZE)
TPM2B_PRIVATE = tpm2b(MAX_PRIVATE_BYTES)


#: TPMS_CREATION_DATA (Part 2 §15.1) and its sized form (§15.2).
TPMS_CREATION_DATA = c.Struct(
    "pcrSelect" / TPML_PCR_SELECTION,
    "pcrDigest" / TPM2B_DIGEST,
    "locality" / UINT8,
    "parentNameAlg" / UINT16,
    "parentName" / TPM2B_NAME,
    "parentQualifiedName" / TPM2B_NAME,
    "outsideInfo" / TPM2B_DATA,
)
TPM2B_CREATION_DATA = SizedStruct(TPMS_CREATION_DATA)

#: TPMT_TK_CREATION (Part 2 §10.7.3).
TPMT_TK_CREATION = c.Struct("tag" / UINT16, "hierarchy" / UINT32, "digest" / TPM2B_DIGEST)


def public_bytes(public: Any) -> bytes:
    """The canonical marshalling of a TPMT_PUBLIC (what the Name is computed over)."""
    return TPMT_PUBLIC_NULL.build(public)


def parse_public(data: bytes, *, allow_null_name_alg: bool = True) -> Any:
    """Parse a complete TPMT_PUBLIC; extra octets are TPM_RC_SIZE."""
    con = TPMT_PUBLIC_NULL if allow_null_name_alg else TPMT_PUBLIC
    stream = io.BytesIO(data)
    value = parse_stream(con, stream)
    if stream.tell() != len(data):
        raise TpmError(RC.SIZE, detail="octets after TPMT_PUBLIC")
    return value


def sensitive_bytes(sensitive: Any) -> bytes:
    """The marshalling of a TPMT_SENSITIVE."""
    return TPMT_SENSITIVE.build(sensitive)


def parse_sensitive(data: bytes) -> Any:
    """Parse a complete TPMT_SENSITIVE; extra octets are TPM_RC_SIZE."""
    stream = io.BytesIO(data)
    value = parse_stream(TPMT_SENSITIVE, stream)
    if stream.tell() != len(data):
        raise TpmError(RC.SIZE, detail="octets after TPMT_SENSITIVE")
    return value


def name_of(public_area: bytes, name_alg: int) -> bytes:
    """Part 1 §16: an object's Name is nameAlg || H_nameAlg(TPMT_PUBLIC). An object whose
    nameAlg is TPM_ALG_NULL (TPM2_LoadExternal only) has no Name: the Empty Buffer."""
    if name_alg == ALG.NULL:
        return b""
    return name_alg.to_bytes(2, "big") + HASHES[name_alg].digest(public_area)


# ---------------------------------------------------------------------------- asymmetric and
# symmetric commands (Part 3 §14-15)

from .algorithms import DECRYPT_SCHEMES, ECC_CURVES, scheme  # noqa: E402


def _check_rsa_decrypt_scheme(alg: int) -> None:
    # Part 2 §11.2.4.3 TPMI_ALG_RSA_DECRYPT+: an RSA encryption scheme or TPM_ALG_NULL;
    # anything else is TPM_RC_VALUE.
    if alg != ALG.NULL and alg not in DECRYPT_SCHEMES[ALG.RSA]:
        raise TpmError(RC.VALUE, detail=f"0x{alg:04x} is no RSA decryption scheme")


def _check_ecc_curve(curve: int) -> None:
    # Part 2 §11.2.5.5 TPMI_ECC_CURVE: a curve the TPM does not implement is TPM_RC_CURVE.
    if curve not in ECC_CURVES:
        raise TpmError(RC.CURVE, detail=f"curve 0x{curve:04x}")


#: TPMT_RSA_DECRYPT (Part 2 §11.2.4.4): the scheme of TPM2_RSA_Encrypt / _Decrypt.
TPMT_RSA_DECRYPT = scheme(Checked(UINT16, _check_rsa_decrypt_scheme))
#: TPMI_ECC_CURVE (Part 2 §11.2.5.5).
TPMI_ECC_CURVE = Checked(UINT16, _check_ecc_curve)
#: TPM2B_ECC_POINT (Part 2 §11.2.5.3): a sized TPMS_ECC_POINT; empty is TPM_RC_SIZE.
TPM2B_ECC_POINT = SizedStruct(TPMS_ECC_POINT)
#: TPM2B_IV (Part 2 §10.4.11): at most one block.
TPM2B_IV = tpm2b(MAX_SYM_BLOCK_SIZE)

#: TPMT_KDF_SCHEME and TPMT_ECC_SCHEME as TPM2_ECC_Parameters returns them: a selector and,
#: unless it is TPM_ALG_NULL, the hashAlg (only built, never parsed by the TPM).
_DETAIL_SCHEME = c.Struct("scheme" / UINT16,
                          "details" / c.If(c.this.scheme != ALG.NULL,
                                           c.Struct("hashAlg" / UINT16)))
#: TPMS_ALGORITHM_DETAIL_ECC (Part 2 §11.2.5.3).
TPMS_ALGORITHM_DETAIL_ECC = c.Struct(
    "curveID" / UINT16,
    "keySize" / UINT16,
    "kdf" / _DETAIL_SCHEME,
    "sign" / _DETAIL_SCHEME,
    "p" / TPM2B_ECC_PARAMETER,
    "a" / TPM2B_ECC_PARAMETER,
    "b" / TPM2B_ECC_PARAMETER,
    "gX" / TPM2B_ECC_PARAMETER,
    "gY" / TPM2B_ECC_PARAMETER,
    "n" / TPM2B_ECC_PARAMETER,
    "h" / TPM2B_ECC_PARAMETER,
)
