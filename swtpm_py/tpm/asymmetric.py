"""RSA encryption and ECC point arithmetic for the asymmetric commands (Part 3 §14):
TPM2_RSA_Encrypt / TPM2_RSA_Decrypt (the reference's CryptRsaEncrypt() / CryptRsaDecrypt()),
TPM2_ECDH_KeyGen / TPM2_ECDH_ZGen (CryptEccPointMultiply()) and TPM2_ECC_Parameters (the
reference's curve table).

RSA padding comes from ``cryptography`` (OAEP, PKCS#1 v1.5 encryption) or is done here (the
"raw" TPM_ALG_NULL scheme, PKCS#1 v1.5 unpadding); ECC points are multiplied by
:mod:`swtpm_py.tpm.ecmath`, because ``cryptography`` gives only the x-coordinate of a shared
point (and knows no BN curve) while the TPM returns both.

Where swtpm 0.7.1 (libtpms over OpenSSL) answers differently from the reference's C code, its
codes are used, and the comment says so: a padding failure or a value that is not below the
modulus is TPM_RC_FAILURE there (OpenSSL's error, passed on without entering failure mode).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import ecmath
from .constants import ALG, ECC_CURVE, RC
from .errors import TpmError
from .keys import RSA_DEFAULT_EXPONENT
from .secret import _private_key

_CRYPTO_HASHES = {ALG.SHA1: hashes.SHA1, ALG.SHA256: hashes.SHA256, ALG.SHA384: hashes.SHA384,
                  ALG.SHA512: hashes.SHA512}

# ---------------------------------------------------------------------------- RSA


def label_ok(label: bytes) -> bool:
    """Part 3 §14.2.1 / §14.3.1 (the reference's IsLabelProperlyFormatted()): a label is
    empty or a NUL-terminated string, used as given (NUL included) as the OAEP label."""
    return not label or label[-1] == 0


def select_scheme(key_scheme: Any, in_scheme: Any) -> Any | None:
    """CryptRsaSelectScheme() (Part 3 §14.2.1): the key's scheme when the caller's is
    TPM_ALG_NULL, the caller's when the key's is TPM_ALG_NULL or both are the same scheme with
    the same hash; None (TPM_RC_SCHEME) when they differ."""
    if key_scheme.scheme == ALG.NULL:
        return in_scheme
    if in_scheme.scheme == ALG.NULL:
        return key_scheme
    if (key_scheme.scheme == in_scheme.scheme
            and key_scheme.details.get("hashAlg") == in_scheme.details.get("hashAlg")):
        return in_scheme
    return None


def _modulus(public: Any) -> tuple[int, int, int]:
    """(n, e, k): the modulus, the public exponent and the modulus' size in octets."""
    n = int.from_bytes(public.unique, "big")
    return n, public.parameters.exponent or RSA_DEFAULT_EXPONENT, len(public.unique)


def _openssl_failure(what: str) -> TpmError:
    # swtpm 0.7.1 (libtpms over OpenSSL) reports a failed OpenSSL operation as TPM_RC_FAILURE
    # and keeps working; the reference's own code says TPM_RC_VALUE (or _SIZE).
    return TpmError(RC.FAILURE, detail=what)


def _oaep(hash_alg: int, label: bytes) -> padding.OAEP:
    algorithm = _CRYPTO_HASHES[hash_alg]()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label or None)


def rsa_encrypt(public: Any, scheme: Any, message: bytes, label: bytes) -> bytes:
    """CryptRsaEncrypt(): ``message`` encrypted with the RSA public area ``public`` under
    ``scheme`` (a TPMT_RSA_DECRYPT: OAEP, RSAES or TPM_ALG_NULL, the raw RSAEP of a number),
    as many octets as the modulus."""
    n, e, k = _modulus(public)
    if scheme.scheme == ALG.NULL:
        # Part 1 B.4 ("raw" RSA): the message is a number; leading zero octets do not count
        # against the size, a longer one is TPM_RC_VALUE.
        value = message.lstrip(b"\x00")
        if len(value) > k:
            raise TpmError(RC.VALUE, detail="message longer than the modulus")
        m = int.from_bytes(value, "big")
        if m >= n:
            raise _openssl_failure("message not below the modulus")
        return pow(m, e, n).to_bytes(k, "big")
    key = rsa.RSAPublicNumbers(e, n).public_key()
    pad = (_oaep(scheme.details.hashAlg, label) if scheme.scheme == ALG.OAEP
           else padding.PKCS1v15())
    try:
        return key.encrypt(message, pad)
    except ValueError:
        raise _openssl_failure("message too long for the padding") from None


def _pkcs1_unpad(block: bytes) -> bytes:
    """RSAES-PKCS1-v1_5 decoding (RFC 8017 §7.2.2): 00 02, at least eight non-zero padding
    octets, 00, the message."""
    sep = block.find(b"\x00", 2)
    if block[:2] != b"\x00\x02" or sep < 10:
        raise _openssl_failure("bad PKCS#1 v1.5 padding")
    return block[sep + 1:]


def rsa_decrypt(obj: Any, scheme: Any, ciphertext: bytes, label: bytes) -> bytes:
    """CryptRsaDecrypt(): ``ciphertext`` (exactly as long as the modulus: TPM_RC_SIZE
    otherwise) decrypted with the loaded RSA key ``obj`` under ``scheme``."""
    public = obj.public
    n, _, k = _modulus(public)
    if len(ciphertext) != k:
        raise TpmError(RC.SIZE, detail="cipher text is not the modulus' size")
    c = int.from_bytes(ciphertext, "big")
    if c >= n:
        raise _openssl_failure("cipher text not below the modulus")
    key = _private_key(obj.public_area, obj.sensitive_area)
    if scheme.scheme == ALG.OAEP:
        try:
            return key.decrypt(ciphertext, _oaep(scheme.details.hashAlg, label))
        except ValueError:
            raise _openssl_failure("bad OAEP padding") from None
    block = pow(c, key.private_numbers().d, n).to_bytes(k, "big")
    if scheme.scheme == ALG.RSAES:
        # Unpadded here: OpenSSL 3.2's implicit rejection would turn a bad padding into a
        # random message, where swtpm 0.7.1 reports an error.
        return _pkcs1_unpad(block)
    return block


# ---------------------------------------------------------------------------- ECC


#: The domain parameters of each implemented curve (p, a, b, G, n, h; :mod:`.ecmath`).
CURVE_PARAMETERS: dict[int, ecmath.Domain] = ecmath.DOMAINS

#: The KDF hash the reference's curve table gives each curve (KDF1_SP800_56A with it); a
#: curve without one (BN P-256) has TPM_ALG_NULL as its KDF, as swtpm 0.7.1 reports.
CURVE_KDF_HASH: dict[int, int] = {
    ECC_CURVE.NIST_P256: ALG.SHA256,
    ECC_CURVE.NIST_P384: ALG.SHA384,
    ECC_CURVE.NIST_P521: ALG.SHA512,
}

#: TPM_ALG_KDF1_SP800_56A (not an algorithm this TPM otherwise offers: only named in the
#: curve details of TPM2_ECC_Parameters, as in the reference's table).
KDF1_SP800_56A = 0x0020


def on_curve(params: ecmath.Domain, x: int, y: int) -> bool:
    """Whether (x, y) is a point of the curve (coordinates reduced, equation holds)."""
    return params.contains(x, y)


def point_multiply(curve_id: int, x: bytes, y: bytes, d: int) -> tuple[bytes, bytes]:
    """CryptEccPointMultiply(): d·(x, y) as two coordinates of the curve's size.
    TPM_RC_ECC_POINT when (x, y) is not on the curve, TPM_RC_NO_RESULT when the product is the
    point at infinity."""
    params = CURVE_PARAMETERS[curve_id]
    px, py = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    if not params.contains(px, py):
        raise TpmError(RC.ECC_POINT, detail="point not on the curve")
    result = params.multiply(d, (px, py))
    if result is None:
        raise TpmError(RC.NO_RESULT, detail="point at infinity")
    return result[0].to_bytes(params.size, "big"), result[1].to_bytes(params.size, "big")


def algorithm_detail(curve_id: int) -> dict:
    """TPMS_ALGORITHM_DETAIL_ECC of an implemented curve (Part 2 §11.2.5.3), as the
    reference's curve table gives it: the curve's KDF, no signing scheme, and the domain
    parameters as octet strings of the coordinate size (the cofactor as one octet)."""
    params = CURVE_PARAMETERS[curve_id]
    size = params.size
    gx, gy = params.generator

    def octets(value: int) -> bytes:
        return value.to_bytes(size, "big")

    kdf_hash = CURVE_KDF_HASH.get(curve_id)
    kdf = (dict(scheme=KDF1_SP800_56A, details=dict(hashAlg=kdf_hash)) if kdf_hash
           else dict(scheme=ALG.NULL, details=dict()))
    # swtpm 0.7.1 (measured): a coefficient a of zero (BN P-256) is one octet, as libtpms'
    # curve table stores it; every other value has the coordinate size.
    a = octets(params.a) if params.a else b"\x00"
    return dict(curveID=curve_id, keySize=params.key_bits, kdf=kdf,
                sign=dict(scheme=ALG.NULL, details=dict()),
                p=octets(params.p), a=a, b=octets(params.b), gX=octets(gx),
                gY=octets(gy), n=octets(params.n), h=bytes([params.h]))
