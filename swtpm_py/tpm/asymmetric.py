"""RSA encryption and ECC point arithmetic for the asymmetric commands (Part 3 §14):
TPM2_RSA_Encrypt / TPM2_RSA_Decrypt (the reference's CryptRsaEncrypt() / CryptRsaDecrypt()),
TPM2_ECDH_KeyGen / TPM2_ECDH_ZGen (CryptEccPointMultiply()) and TPM2_ECC_Parameters (the
reference's curve table).

RSA padding comes from ``cryptography`` (OAEP, PKCS#1 v1.5 encryption) or is done here (the
"raw" TPM_ALG_NULL scheme, PKCS#1 v1.5 unpadding); ECC points are multiplied here in Jacobian
coordinates, because ``cryptography`` gives only the x-coordinate of a shared point and the TPM
returns both.

Where swtpm 0.7.1 (libtpms over OpenSSL) answers differently from the reference's C code, its
codes are used, and the comment says so: a padding failure or a value that is not below the
modulus is TPM_RC_FAILURE there (OpenSSL's error, passed on without entering failure mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .constants import ALG, ECC_CURVE, RC
from .errors import TpmError
from .keys import CURVES, RSA_DEFAULT_EXPONENT, ecc_public_point
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


@dataclass(frozen=True)
class CurveParameters:
    """The domain parameters of a prime curve y² = x³ + ax + b over GF(p) (Part 2 §11.2.5.3
    TPMS_ALGORITHM_DETAIL_ECC, FIPS 186-4 appendix D.1.2), with the TPM's defaults for it."""

    curve_id: int
    key_bits: int
    p: int
    b: int
    #: The KDF the reference's curve table gives the curve (KDF1_SP800_56A with this hash).
    kdf_hash: int

    @property
    def a(self) -> int:
        """a = -3 for the NIST curves."""
        return self.p - 3

    @property
    def size(self) -> int:
        """Octets of a coordinate."""
        return CURVES[self.curve_id].size

    @property
    def n(self) -> int:
        """The order of the base point."""
        return CURVES[self.curve_id].order

    @property
    def generator(self) -> tuple[int, int]:
        """G, as 1·G."""
        x, y = ecc_public_point(CURVES[self.curve_id], 1)
        return int.from_bytes(x, "big"), int.from_bytes(y, "big")


#: FIPS 186-4 appendix D.1.2.3-D.1.2.5: p and b of the implemented NIST curves (n and G come
#: from :data:`swtpm_py.tpm.keys.CURVES`); the cofactor of each is 1.
CURVE_PARAMETERS: dict[int, CurveParameters] = {c.curve_id: c for c in (
    CurveParameters(
        ECC_CURVE.NIST_P256, 256,
        int("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", 16),
        int("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b", 16),
        ALG.SHA256),
    CurveParameters(
        ECC_CURVE.NIST_P384, 384,
        int("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
            "feffffffff0000000000000000ffffffff", 16),
        int("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875a"
            "c656398d8a2ed19d2a85c8edd3ec2aef", 16),
        ALG.SHA384),
    CurveParameters(
        ECC_CURVE.NIST_P521, 521,
        (1 << 521) - 1,
        int("0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef1"
            "09e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b50"
            "3f00", 16),
        ALG.SHA512),
)}

#: TPM_ALG_KDF1_SP800_56A (not an algorithm this TPM otherwise offers: only named in the
#: curve details of TPM2_ECC_Parameters, as in the reference's table).
KDF1_SP800_56A = 0x0020


def on_curve(params: CurveParameters, x: int, y: int) -> bool:
    """Whether (x, y) is a point of the curve (coordinates reduced, equation holds)."""
    p = params.p
    if not (0 <= x < p and 0 <= y < p):
        return False
    return (y * y - (x * x * x + params.a * x + params.b)) % p == 0


def _jacobian_double(params: CurveParameters, pt: tuple[int, int, int]) -> tuple[int, int, int]:
    x, y, z = pt
    p = params.p
    if y == 0 or z == 0:
        return (1, 1, 0)
    ysq = y * y % p
    s = 4 * x * ysq % p
    m = (3 * x * x + params.a * pow(z, 4, p)) % p
    nx = (m * m - 2 * s) % p
    ny = (m * (s - nx) - 8 * ysq * ysq) % p
    nz = 2 * y * z % p
    return nx, ny, nz


def _jacobian_add(params: CurveParameters, p1: tuple[int, int, int],
                  p2: tuple[int, int, int]) -> tuple[int, int, int]:
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    p = params.p
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1sq, z2sq = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2sq % p, x2 * z1sq % p
    s1, s2 = y1 * z2sq * z2 % p, y2 * z1sq * z1 % p
    if u1 == u2:
        return _jacobian_double(params, p1) if s1 == s2 else (1, 1, 0)
    h, r = (u2 - u1) % p, (s2 - s1) % p
    h2 = h * h % p
    h3 = h * h2 % p
    u1h2 = u1 * h2 % p
    nx = (r * r - h3 - 2 * u1h2) % p
    ny = (r * (u1h2 - nx) - s1 * h3) % p
    nz = h * z1 * z2 % p
    return nx, ny, nz


def point_multiply(curve_id: int, x: bytes, y: bytes, d: int) -> tuple[bytes, bytes]:
    """CryptEccPointMultiply(): d·(x, y) as two coordinates of the curve's size.
    TPM_RC_ECC_POINT when (x, y) is not on the curve, TPM_RC_NO_RESULT when the product is the
    point at infinity."""
    params = CURVE_PARAMETERS[curve_id]
    px, py = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    if not on_curve(params, px, py):
        raise TpmError(RC.ECC_POINT, detail="point not on the curve")
    result: tuple[int, int, int] = (1, 1, 0)
    addend = (px, py, 1)
    k = d % params.n
    while k:
        if k & 1:
            result = _jacobian_add(params, result, addend)
        addend = _jacobian_double(params, addend)
        k >>= 1
    if result[2] == 0:
        raise TpmError(RC.NO_RESULT, detail="point at infinity")
    p = params.p
    zinv = pow(result[2], -1, p)
    ax = result[0] * zinv * zinv % p
    ay = result[1] * zinv * zinv * zinv % p
    return ax.to_bytes(params.size, "big"), ay.to_bytes(params.size, "big")


def algorithm_detail(curve_id: int) -> dict:
    """TPMS_ALGORITHM_DETAIL_ECC of an implemented curve (Part 2 §11.2.5.3), as the
    reference's curve table gives it: the curve's KDF, no signing scheme, and the domain
    parameters as octet strings of the coordinate size (the cofactor as one octet)."""
    params = CURVE_PARAMETERS[curve_id]
    size = params.size
    gx, gy = params.generator

    def octets(value: int) -> bytes:
        return value.to_bytes(size, "big")

    return dict(curveID=curve_id, keySize=params.key_bits,
                kdf=dict(scheme=KDF1_SP800_56A, details=dict(hashAlg=params.kdf_hash)),
                sign=dict(scheme=ALG.NULL, details=dict()),
                p=octets(params.p), a=octets(params.a), b=octets(params.b), gX=octets(gx),
                gY=octets(gy), n=octets(params.n), h=b"\x01")
