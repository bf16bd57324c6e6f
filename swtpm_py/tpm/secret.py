"""Secret sharing with a loaded asymmetric decryption key (Part 1 §24 "Secret Sharing", the
reference's CryptSecretDecrypt()): how a caller hands the TPM a secret — the salt of a session
(label "SECRET"), and later the seeds of TPM2_ActivateCredential and TPM2_Import.

* RSA: the secret is RSAES-OAEP-encrypted with the key's scheme hash (its nameAlg when the key
  has no scheme) and the label, NUL included (Part 1 §24.4 / B.10.3).
* ECC: the secret is an ephemeral public point Qe; Z is the x-coordinate of d·Qe, and the
  shared value is KDFe(nameAlg, Z, label, Qe.x, Qs.x, digest bits) (Part 1 §24.5, C.6.1).

:func:`encrypt_secret` is the sender's side (TPM2_MakeCredential, TPM2_Duplicate and
TPM2_Rewrap encrypt a fresh seed to a key, possibly of another TPM).

RSA and ECDH come from ``cryptography``; only the TPM's framing is written here.
"""

from __future__ import annotations

import functools
import io
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from . import ecmath
from .constants import ALG, RC
from .crypto import HASHES
from .errors import TpmError
from .keys import (CURVES, RSA_DEFAULT_EXPONENT, ecc_private_scalar, ecc_public_point,
                   rsa_private_numbers)
from .objects_wire import TPMS_ECC_POINT, parse_public, parse_sensitive
from .wire import parse_stream

#: Part 1 §24: the label of a session salt (a TPM2B_STRING with its terminating NUL).
SECRET_LABEL = b"SECRET\x00"

_CRYPTO_HASHES = {ALG.SHA1: hashes.SHA1, ALG.SHA256: hashes.SHA256, ALG.SHA384: hashes.SHA384,
                  ALG.SHA512: hashes.SHA512}


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3, SP 800-56A §5.8.1 concatenation KDF): H([i]32 || Z || label ||
    PartyUInfo || PartyVInfo) for i = 1, 2, ..., truncated to ``bits``. ``label`` is used as
    given (the caller includes its NUL)."""
    h = HASHES[hash_alg]
    nbytes = (bits + 7) // 8
    out = bytearray()
    counter = 0
    while len(out) < nbytes:
        counter += 1
        out += h.digest(counter.to_bytes(4, "big"), z, label, party_u, party_v)
    result = bytearray(out[:nbytes])
    if bits % 8:
        result[0] &= (1 << (bits % 8)) - 1
    return bytes(result)


def _rsa_decrypt(obj: Any, secret: bytes, label: bytes) -> bytes:
    public = obj.public
    scheme = public.parameters.scheme
    if scheme.scheme == ALG.NULL:
        hash_alg = public.nameAlg
    elif scheme.scheme == ALG.OAEP:
        hash_alg = scheme.details.hashAlg
    else:
        raise TpmError(RC.SCHEME, detail="the key's scheme is not OAEP")
    if hash_alg not in _CRYPTO_HASHES:
        raise TpmError(RC.SCHEME, detail="OAEP without a hash")

    # CryptRsaDecrypt(): a ciphertext of another size than the modulus is TPM_RC_SIZE; an OAEP
    # decoding failure is TPM_RC_FAILURE in swtpm 0.7.1 (libtpms reports OpenSSL's failure so,
    # measured with TPM2_ActivateCredential; the reference says TPM_RC_VALUE).
    if len(secret) != len(public.unique):
        raise TpmError(RC.SIZE, detail="secret is not the modulus' size")
    key = _private_key(obj.public_area, obj.sensitive_area)
    algorithm = _CRYPTO_HASHES[hash_alg]()
    try:
        data = key.decrypt(secret, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm,
                                                label=label))
    except ValueError:
        raise TpmError(RC.FAILURE, detail="OAEP decryption failed") from None
    if len(data) > HASHES[hash_alg].size:
        raise TpmError(RC.VALUE, detail="secret larger than a digest")
    return data


def _ecc_decrypt(obj: Any, secret: bytes, label: bytes) -> bytes:
    public = obj.public
    curve = CURVES.get(public.parameters.curveID)
    if curve is None:
        raise TpmError(RC.CURVE, detail="curve not implemented")
    # CryptSecretDecrypt() unmarshals the point and ignores what follows it (swtpm 0.7.1
    # accepts octets after the point, measured with TPM2_ActivateCredential).
    point = parse_stream(TPMS_ECC_POINT, io.BytesIO(secret))
    if curve.curve is None:
        # BN P-256: no ``cryptography`` curve, the arithmetic of ecmath.
        z = _ecdh_x(public.parameters.curveID, int.from_bytes(obj.sensitive.sensitive, "big"),
                    point, RC.ECC_POINT)
    else:
        try:
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(point.x, "big"),
                                                 int.from_bytes(point.y, "big"),
                                                 curve.curve).public_key()
        except ValueError:
            raise TpmError(RC.ECC_POINT, detail="point not on the curve") from None
        key = _private_key(obj.public_area, obj.sensitive_area)
        z = key.exchange(ec.ECDH(), peer)
    bits = 8 * HASHES[public.nameAlg].size
    return kdfe(public.nameAlg, z, label, point.x, public.unique.x, bits)


def _ecdh_x(curve_id: int, d: int, point: Any, bad: RC) -> bytes:
    """The x-coordinate of [d]point (ECDH's Z) on a curve ``cryptography`` lacks; ``bad``
    when the point is not on the curve."""
    domain = ecmath.DOMAINS[curve_id]
    x, y = int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big")
    product = domain.multiply(d, (x, y)) if domain.contains(x, y) else None
    if product is None:
        raise TpmError(bad, detail="point not on the curve")
    return product[0].to_bytes(domain.size, "big")


@functools.lru_cache(maxsize=16)
def _private_key(public_area: bytes, sensitive_area: bytes) -> Any:
    """The ``cryptography`` private key of an object's areas (built once per key: RSA key
    construction checks the primes)."""
    public, sensitive = parse_public(public_area), parse_sensitive(sensitive_area)
    if public.type == ALG.RSA:
        n = int.from_bytes(public.unique, "big")
        e = public.parameters.exponent or RSA_DEFAULT_EXPONENT
        return rsa_private_numbers(n, e, int.from_bytes(sensitive.sensitive, "big")).private_key()
    return ec.derive_private_key(int.from_bytes(sensitive.sensitive, "big"),
                                 CURVES[public.parameters.curveID].curve)


def decrypt_secret(obj: Any, secret: bytes, label: bytes) -> bytes:
    """The secret an RSA or ECC decryption key ``obj`` (a loaded
    :class:`~swtpm_py.tpm.objects.TpmObject` with its sensitive area) shares with whoever
    encrypted ``secret`` for it. Failures raise TpmError (TPM_RC_VALUE, _SCHEME, _ECC_POINT
    ...), which TPM2_StartAuthSession reports as TPM_RC_VALUE for encryptedSalt."""
    if obj.public.type == ALG.RSA:
        return _rsa_decrypt(obj, secret, label)
    return _ecc_decrypt(obj, secret, label)


def encrypt_secret(public: Any, label: bytes, random: Any) -> tuple[bytes, bytes]:
    """CryptSecretEncrypt() (Part 1 §24): a fresh secret for the holder of the private part of
    the RSA or ECC key with public area ``public`` and its encrypted form, as (secret,
    TPM2B_ENCRYPTED_SECRET contents). Needs only the public key (TPM2_MakeCredential,
    TPM2_Duplicate and TPM2_Rewrap encrypt to keys of other TPMs loaded public-only).

    * RSA: a nameAlg-sized random secret, RSAES-OAEP-encrypted with nameAlg and ``label``.
    * ECC: an ephemeral key pair on the key's curve; the secret is KDFe(nameAlg, Z, label,
      Qe.x, Qs.x) and its encrypted form the marshalled TPMS_ECC_POINT Qe. A public point
      that is not on the curve is TPM_RC_KEY.

    ``random`` is the TPM's DRBG (``generate(n)``)."""
    hash_alg = public.nameAlg
    size = HASHES[hash_alg].size
    if public.type == ALG.RSA:
        secret = random.generate(size)
        n = int.from_bytes(public.unique, "big")
        e = public.parameters.exponent or RSA_DEFAULT_EXPONENT
        algorithm = _CRYPTO_HASHES[hash_alg]()
        try:
            encrypted = rsa.RSAPublicNumbers(e, n).public_key().encrypt(
                secret, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm,
                                     label=label))
        except ValueError:
            raise TpmError(RC.KEY, detail="the key cannot OAEP-encrypt a digest") from None
        return secret, encrypted
    if public.type != ALG.ECC:
        raise TpmError(RC.KEY, detail="not an asymmetric key")
    curve = CURVES.get(public.parameters.curveID)
    if curve is None:
        raise TpmError(RC.KEY, detail="curve not implemented")
    qs = public.unique
    if curve.curve is None:
        d = ecc_private_scalar(curve, random)
        z = _ecdh_x(public.parameters.curveID, d, qs, RC.KEY)
    else:
        try:
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(qs.x, "big"),
                                                 int.from_bytes(qs.y, "big"),
                                                 curve.curve).public_key()
        except ValueError:
            raise TpmError(RC.KEY, detail="public point not on the curve") from None
        d = ecc_private_scalar(curve, random)
        z = ec.derive_private_key(d, curve.curve).exchange(ec.ECDH(), peer)
    qe_x, qe_y = ecc_public_point(curve, d)
    secret = kdfe(hash_alg, z, label, qe_x, qs.x, 8 * size)
    return secret, TPMS_ECC_POINT.build(dict(x=qe_x, y=qe_y))
