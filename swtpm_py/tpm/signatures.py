"""Signatures: the signing schemes of keys (Part 1 "Signing Schemes"), signature computation
and verification, and their wire types (Part 2 §11.2.1.5 TPMT_SIG_SCHEME, §11.3 TPMT_SIGNATURE,
§10.7.4 TPMT_TK_VERIFIED).

What this TPM signs and verifies, as the reference implementation (libtpms, which swtpm 0.7.1
runs) does:

* RSASSA-PKCS1-v1_5 and RSASSA-PSS with RSA keys (``cryptography``). PSS signatures carry a salt
  as long as the digest (as swtpm 0.7.1's do, measured by tests/test_signing.py, and as the
  reference's PssEncode() when the modulus has room); verification accepts any salt length.
* ECDSA with ECC keys: signing through ``cryptography`` with a random nonce; verification here,
  on the curve, because the reference verifies with whatever digest it is given (the digest is
  truncated to the order's size as FIPS 186-4 says; its length need not match the signature's
  hash algorithm).
* EC-Schnorr in the reference's own form (Part 1 "EC Schnorr", CryptEccSignature.c
  BnSignEcSchnorr()): R = [k]G, r = H(R.x || digest) truncated to the order's octets (not
  reduced), s = k + r·d mod n; verified by recomputing H(([s]G - [r]Q).x || digest).
* ECDAA (Part 1 "ECDAA", the reference's BnSignEcdaa()), signing only: with r the value a
  TPM2_Commit produced for the scheme's count, a fresh nonce k, T = H(k || digest) and
  s = r + T·d mod n, the signature is (k, s). The TPM does not verify ECDAA signatures (the
  reference's CryptEccValidateSignature() knows no ECDAA: TPM_RC_SCHEME).
* HMAC signatures with keyed-hash keys: HMAC_hash(key secret, digest) in a TPMT_HA.

Point arithmetic (verification, and signing on BN P-256, which ``cryptography`` lacks) is
:mod:`swtpm_py.tpm.ecmath`'s.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

import construct as c
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from . import ecmath, keys
from .algorithms import SIGN_SCHEMES, Role, scheme, tpmi_alg
from .constants import ALG, RC, ST
from .crypto import HASHES
from .errors import TpmError
from .handles import ticket_param
from .objects import TpmObject
from .objects_wire import TPM2B_ECC_PARAMETER, TPM2B_PUBLIC_KEY_RSA, ObjectAttr
from .wire import TPM2B_DIGEST, TPMI_ALG_HASH, UINT16, UINT32

# ---------------------------------------------------------------------------- wire types

#: TPMI_ALG_SIG_SCHEME+ (Part 2 §11.2.1.4): a signature scheme or TPM_ALG_NULL; anything else
#: is TPM_RC_SCHEME.
TPMI_ALG_SIG_SCHEME_NULL = tpmi_alg(Role.SIG_SCHEME, RC.SCHEME, allow_null=True)
#: TPMI_ALG_SIG_SCHEME without TPM_ALG_NULL (a signature given to TPM2_VerifySignature).
TPMI_ALG_SIG_SCHEME = tpmi_alg(Role.SIG_SCHEME, RC.SCHEME)

#: TPMT_SIG_SCHEME+ (Part 2 §11.2.1.5): the scheme, then its details (a hashAlg).
TPMT_SIG_SCHEME = scheme(TPMI_ALG_SIG_SCHEME_NULL)


def _ha_digest_size(ctx: Any) -> int:
    return HASHES[ctx.hashAlg].size


#: TPMT_HA (Part 2 §10.3.2): a hash algorithm and a digest of exactly its size.
TPMT_HA = c.Struct("hashAlg" / TPMI_ALG_HASH, "digest" / c.Bytes(_ha_digest_size))
#: TPMS_SIGNATURE_RSA (Part 2 §11.3.1): RSASSA and RSAPSS signatures.
TPMS_SIGNATURE_RSA = c.Struct("hash" / TPMI_ALG_HASH, "sig" / TPM2B_PUBLIC_KEY_RSA)
#: TPMS_SIGNATURE_ECC (Part 2 §11.3.2): ECDSA and EC-Schnorr signatures.
TPMS_SIGNATURE_ECC = c.Struct("hash" / TPMI_ALG_HASH, "signatureR" / TPM2B_ECC_PARAMETER,
                              "signatureS" / TPM2B_ECC_PARAMETER)
#: TPMU_SIGNATURE (Part 2 §11.3.3) by signature algorithm.
TPMU_SIGNATURE = {
    ALG.RSASSA: TPMS_SIGNATURE_RSA,
    ALG.RSAPSS: TPMS_SIGNATURE_RSA,
    ALG.ECDSA: TPMS_SIGNATURE_ECC,
    ALG.ECSCHNORR: TPMS_SIGNATURE_ECC,
    ALG.ECDAA: TPMS_SIGNATURE_ECC,
    ALG.HMAC: TPMT_HA,
}


def tpmt_signature(allow_null: bool) -> c.Construct:
    """TPMT_SIGNATURE (Part 2 §11.3.4): the algorithm, then the signature it selects
    (nothing for TPM_ALG_NULL, where ``allow_null``)."""
    selector = TPMI_ALG_SIG_SCHEME_NULL if allow_null else TPMI_ALG_SIG_SCHEME
    return c.Struct("sigAlg" / selector,
                    "signature" / c.Switch(c.this.sigAlg, TPMU_SIGNATURE, default=c.Pass))


#: TPMT_SIGNATURE as a command parameter (TPM2_VerifySignature: no NULL signature) and as a
#: response (built, never checked).
TPMT_SIGNATURE = tpmt_signature(allow_null=False)
TPMT_SIGNATURE_NULL = tpmt_signature(allow_null=True)


#: TPMT_TK_HASHCHECK as a command parameter (Part 2 §10.7.6).
TPMT_TK_HASHCHECK_IN = ticket_param("hash-check", ST.HASHCHECK)
#: TPMT_TK_VERIFIED (Part 2 §10.7.4).
TPMT_TK_VERIFIED = c.Struct("tag" / UINT16, "hierarchy" / UINT32, "digest" / TPM2B_DIGEST)


# ---------------------------------------------------------------------------- schemes


def key_scheme(obj: TpmObject) -> Any:
    """The signing scheme an object carries in its public area (TPMT_*_SCHEME): the
    asymmetric scheme of an RSA or ECC key, the keyed-hash scheme of a keyed-hash object."""
    return obj.public.parameters.scheme


def is_signing_key(obj: TpmObject) -> bool:
    """The reference's IsSigningObject(): the sign attribute, and not a symmetric cipher."""
    return bool(obj.attributes & ObjectAttr.SIGN_ENCRYPT) and obj.public.type != ALG.SYMCIPHER


#: The signature schemes each key type signs with (the reference's
#: CryptIsAsymSignScheme(), and HMAC for keyed-hash keys).
KEY_SIGN_SCHEMES: dict[int, frozenset[int]] = {
    **SIGN_SCHEMES,
    ALG.KEYEDHASH: frozenset({ALG.HMAC}),
}


def select_scheme(obj: TpmObject, in_scheme: Any) -> tuple[int, int]:
    """The reference's CryptSelectSignScheme(): (scheme, hashAlg) for signing with ``obj``.

    A key without a scheme signs with ``in_scheme``, which must then not be TPM_ALG_NULL; a key
    with a scheme signs with it when ``in_scheme`` is TPM_ALG_NULL, and otherwise
    ``in_scheme`` must be the same scheme with the same hash. A symmetric key never signs.
    Any conflict, or a scheme the key type cannot sign with, is TPM_RC_SCHEME (the caller
    numbers it: inScheme).
    """
    if obj.public.type == ALG.SYMCIPHER:
        raise TpmError(RC.SCHEME, detail="a symmetric key does not sign")
    own = key_scheme(obj)
    if own.scheme == ALG.NULL:
        if in_scheme.scheme == ALG.NULL:
            raise TpmError(RC.SCHEME, detail="neither the key nor the command has a scheme")
        # swtpm 0.7.1 refuses here (TPM_RC_SCHEME + P2, measured) a scheme the key type
        # cannot sign with, where the reference code would fail later in CryptSign().
        if in_scheme.scheme not in KEY_SIGN_SCHEMES[obj.public.type]:
            raise TpmError(RC.SCHEME, detail="the key type cannot sign with this scheme")
        return in_scheme.scheme, in_scheme.details.hashAlg
    if in_scheme.scheme == ALG.NULL:
        if own.scheme == ALG.ECDAA:
            # swtpm 0.7.1 (measured): an ECDAA key signs only when the command names the
            # scheme, and with it the commit count.
            raise TpmError(RC.SCHEME, detail="ECDAA needs the scheme and count in inScheme")
        return own.scheme, own.details.hashAlg
    if (own.scheme, own.details.hashAlg) != (in_scheme.scheme, in_scheme.details.hashAlg):
        raise TpmError(RC.SCHEME, detail="the scheme differs from the key's")
    return own.scheme, own.details.hashAlg


# ---------------------------------------------------------------------------- keys

#: ``cryptography`` hash classes by TPM algorithm.
_HASH_CLASSES = {ALG.SHA1: hashes.SHA1, ALG.SHA256: hashes.SHA256, ALG.SHA384: hashes.SHA384,
                 ALG.SHA512: hashes.SHA512}


def _hash(alg: int) -> hashes.HashAlgorithm:
    return _HASH_CLASSES[alg]()


def _rsa_exponent(public: Any) -> int:
    # Part 2 §12.2.3.5: an exponent of zero means 2^16 + 1.
    return public.parameters.exponent or keys.RSA_DEFAULT_EXPONENT


@functools.lru_cache(maxsize=32)
def _rsa_private(n: int, e: int, p: int) -> rsa.RSAPrivateKey:
    # Building (and checking) a private key costs more than a signature: keep recent ones.
    return keys.rsa_private_numbers(n, e, p).private_key()


def rsa_public_key(public: Any) -> rsa.RSAPublicKey:
    """The RSA public key of a public area."""
    n = int.from_bytes(public.unique, "big")
    return rsa.RSAPublicNumbers(_rsa_exponent(public), n).public_key()


def ecc_public_point(public: Any) -> tuple[int, int]:
    """The public point of an ECC public area."""
    return int.from_bytes(public.unique.x, "big"), int.from_bytes(public.unique.y, "big")


def _curve(public: Any) -> keys.Curve:
    return keys.CURVES[public.parameters.curveID]


# ---------------------------------------------------------------------------- signing


def sign(obj: TpmObject, sig_alg: int, hash_alg: int, digest: bytes,
         random: keys.RandomSource, ecdaa_r: int | None = None) -> dict:
    """The reference's CryptSign(): sign ``digest`` with the loaded key ``obj`` under scheme
    ``sig_alg`` with ``hash_alg``; returns the TPMT_SIGNATURE. A scheme the key type cannot
    use is TPM_RC_SCHEME (unnumbered, as the reference returns it). The digest has the size
    of ``hash_alg`` (TPM2_Sign checks it, or a ticket vouches for it). ECDAA needs
    ``ecdaa_r``, the committed random value of the scheme's count (the caller is
    :func:`swtpm_py.tpm.commands.ecc.ecdaa_sign`); without one it is TPM_RC_SCHEME."""
    public = obj.public
    if public.type == ALG.RSA and sig_alg in (ALG.RSASSA, ALG.RSAPSS):
        return dict(sigAlg=sig_alg, signature=dict(hash=hash_alg,
                                                   sig=_rsa_sign(obj, sig_alg, hash_alg, digest)))
    if public.type == ALG.ECC and (sig_alg in (ALG.ECDSA, ALG.ECSCHNORR)
                                   or (sig_alg == ALG.ECDAA and ecdaa_r is not None)):
        curve = _curve(public)
        d = int.from_bytes(obj.sensitive.sensitive, "big")
        if sig_alg == ALG.ECDSA:
            r, s = _ecdsa_sign(public.parameters.curveID, d, hash_alg, digest, random)
        elif sig_alg == ALG.ECSCHNORR:
            r, s = _schnorr_sign(curve, d, hash_alg, digest, random)
        else:
            assert ecdaa_r is not None
            nonce_k, s = _ecdaa_sign(curve, d, hash_alg, digest, random, ecdaa_r)
            return dict(sigAlg=sig_alg, signature=dict(
                hash=hash_alg, signatureR=nonce_k, signatureS=s.to_bytes(curve.size, "big")))
        return dict(sigAlg=sig_alg, signature=dict(
            hash=hash_alg, signatureR=r.to_bytes(curve.size, "big"),
            signatureS=s.to_bytes(curve.size, "big")))
    if public.type == ALG.KEYEDHASH and sig_alg == ALG.HMAC:
        mac = HASHES[hash_alg].hmac(obj.sensitive.sensitive, digest)
        return dict(sigAlg=ALG.HMAC, signature=dict(hashAlg=hash_alg, digest=mac))
    # select_scheme() lets through only schemes of the key's type (CryptSign()'s default:
    # TPM_RC_SCHEME).
    raise TpmError(RC.SCHEME, detail=f"scheme 0x{sig_alg:04x} does not suit the key")


def _rsa_sign(obj: TpmObject, sig_alg: int, hash_alg: int, digest: bytes) -> bytes:
    public = obj.public
    key = _rsa_private(int.from_bytes(public.unique, "big"), _rsa_exponent(public),
                       int.from_bytes(obj.sensitive.sensitive, "big"))
    algorithm = utils.Prehashed(_hash(hash_alg))
    if sig_alg == ALG.RSASSA:
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        # PSS with MGF1 of the same hash and a salt as long as the digest, or as long as the
        # modulus allows (RFC 8017 §9.1.1: emLen >= hLen + sLen + 2).
        em_len = (key.key_size - 1 + 7) // 8
        salt = min(len(digest), em_len - len(digest) - 2)
        pad = padding.PSS(mgf=padding.MGF1(_hash(hash_alg)), salt_length=salt)
    try:
        return key.sign(digest, pad, algorithm)
    except ValueError:
        # The modulus is too small for the encoding (RSASSA_Encode(): TPM_RC_SIZE).
        raise TpmError(RC.SIZE, detail="the key is too small for the scheme") from None


def _ecdsa_digest(n: int, digest: bytes) -> int:
    """FIPS 186-4 §6.4: e is the leftmost bits of the digest, as many as the order has."""
    e = int.from_bytes(digest, "big")
    excess = len(digest) * 8 - n.bit_length()
    return e >> excess if excess > 0 else e


def _ecdsa_sign(curve_id: int, d: int, hash_alg: int, digest: bytes,
                random: keys.RandomSource) -> tuple[int, int]:
    curve = keys.CURVES[curve_id]
    if curve.curve is not None:
        key = ec.derive_private_key(d, curve.curve)
        der = key.sign(digest, ec.ECDSA(utils.Prehashed(_hash(hash_alg))))
        return utils.decode_dss_signature(der)
    # A curve ``cryptography`` lacks (BN P-256): FIPS 186-4 §6.4.1 here, k from the TPM's
    # DRBG (BnSignEcdsa()): r = ([k]G).x mod n, s = k⁻¹(e + r·d) mod n, again if either is 0.
    domain = ecmath.DOMAINS[curve_id]
    n = domain.n
    e = _ecdsa_digest(n, digest)
    while True:
        k = keys.ecc_private_scalar(curve, random)
        point = domain.base_multiply(k)
        assert point is not None
        r = point[0] % n
        s = pow(k, -1, n) * (e + r * d) % n
        if r and s:
            return r, s


def _schnorr_digest(curve: keys.Curve, hash_alg: int, x: int, digest: bytes) -> int:
    """H(x || digest) truncated to the order's octets (the reference's SchnorrReduce())."""
    order_bytes = (curve.order.bit_length() + 7) // 8
    e = HASHES[hash_alg].digest(x.to_bytes(order_bytes, "big"), digest)
    return int.from_bytes(e[:order_bytes], "big")


def _schnorr_sign(curve: keys.Curve, d: int, hash_alg: int, digest: bytes,
                  random: keys.RandomSource) -> tuple[int, int]:
    # BnSignEcSchnorr(): a fresh key pair (k, R = [k]G) for each attempt; r from R.x and the
    # digest, s = k + r·d mod n, again when s is zero.
    while True:
        k = keys.ecc_private_scalar(curve, random)
        x = int.from_bytes(keys.ecc_public_point(curve, k)[0], "big")
        r = _schnorr_digest(curve, hash_alg, x, digest)
        s = (k + r * d) % curve.order
        if s:
            return r, s


def _ecdaa_sign(curve: keys.Curve, d: int, hash_alg: int, digest: bytes,
                random: keys.RandomSource, r: int) -> tuple[bytes, int]:
    # BnSignEcdaa(): a fresh 0 < k < n (in as few octets as it needs, as the reference
    # converts it), T = H(k || digest) and s = r + T·d mod n, again if s is zero.
    while True:
        k = keys.ecc_private_scalar(curve, random)
        nonce_k = k.to_bytes((k.bit_length() + 7) // 8, "big")
        t = int.from_bytes(HASHES[hash_alg].digest(nonce_k, digest), "big")
        s = (r + t * d) % curve.order
        if s:
            return nonce_k, s


def ecdaa_count(obj: TpmObject, in_scheme: Any) -> int:
    """The commit count an ECDAA signature uses: the caller's scheme's, or the key's when the
    caller gave TPM_ALG_NULL (CryptSelectSignScheme() copies the whole scheme)."""
    chosen = in_scheme if in_scheme.scheme != ALG.NULL else key_scheme(obj)
    return chosen.details.count


# ---------------------------------------------------------------------------- verification


def verify(obj: TpmObject, digest: bytes, signature: Any) -> None:
    """The reference's CryptValidateSignature(): raise TPM_RC_SIGNATURE unless ``signature``
    is a genuine signature of ``digest`` by ``obj``; TPM_RC_SCHEME for a signature algorithm
    the key type has no use for; TPM_RC_HANDLE for an HMAC key loaded without its secret.
    The codes carry no number: the caller adds the parameter's. The key's own scheme does not
    restrict what it verifies (except for HMAC keys): anyone may load any public key."""
    public = obj.public
    sig_alg = signature.sigAlg
    if public.type == ALG.RSA:
        if sig_alg not in (ALG.RSASSA, ALG.RSAPSS):
            raise TpmError(RC.SCHEME, detail="not an RSA signature")
        _rsa_verify(public, sig_alg, digest, signature.signature)
    elif public.type == ALG.ECC:
        if sig_alg not in (ALG.ECDSA, ALG.ECSCHNORR):
            raise TpmError(RC.SCHEME, detail="not an ECC signature")
        _ecc_verify(public, sig_alg, digest, signature.signature)
    elif public.type == ALG.KEYEDHASH:
        if obj.public_only:
            raise TpmError(RC.HANDLE, detail="HMAC key loaded without its secret")
        _hmac_verify(obj, digest, signature)
    else:
        raise TpmError(RC.SCHEME, detail="the key cannot verify signatures")


def _bad(detail: str) -> TpmError:
    return TpmError(RC.SIGNATURE, detail=detail)


def _rsa_verify(public: Any, sig_alg: int, digest: bytes, sig: Any) -> None:
    # CryptRsaValidateSignature(): the signature is exactly as long as the modulus, and the
    # digest must have the size of the signature's hash (OpenSSL checks it).
    if len(sig.sig) != len(public.unique):
        raise _bad("signature size differs from the modulus")
    if len(digest) != HASHES[sig.hash].size:
        raise _bad("digest size differs from the signature's hash")
    if sig_alg == ALG.RSASSA:
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        pad = padding.PSS(mgf=padding.MGF1(_hash(sig.hash)), salt_length=padding.PSS.AUTO)
    try:
        rsa_public_key(public).verify(sig.sig, digest, pad, utils.Prehashed(_hash(sig.hash)))
    except (InvalidSignature, ValueError):
        raise _bad("RSA signature does not verify") from None


def _ecc_verify(public: Any, sig_alg: int, digest: bytes, sig: Any) -> None:
    curve = _curve(public)
    n = curve.order
    r, s = int.from_bytes(sig.signatureR, "big"), int.from_bytes(sig.signatureS, "big")
    # CryptEccValidateSignature(): 0 < r < n and 0 < s < n for every ECC scheme.
    if not (0 < r < n and 0 < s < n):
        raise _bad("r or s out of range")
    q = ecc_public_point(public)
    domain = ecmath.DOMAINS[public.parameters.curveID]
    g = domain.generator
    if sig_alg == ALG.ECDSA:
        # FIPS 186-4 §6.4.2.
        e = _ecdsa_digest(n, digest)
        w = pow(s, -1, n)
        point = domain.mul_add(e * w % n, g, r * w % n, q)
        if point is None or point[0] % n != r:
            raise _bad("ECDSA signature does not verify")
    else:
        # BnValidateSignatureEcSchnorr(): E = [s]G - [r]Q, then H(E.x || digest) must be r.
        point = domain.mul_add(s, g, (n - r) % n, q)
        if point is None or _schnorr_digest(curve, sig.hash, point[0], digest) != r:
            raise _bad("EC-Schnorr signature does not verify")


def _hmac_verify(obj: TpmObject, digest: bytes, signature: Any) -> None:
    # CryptHMACVerifySignature(): an HMAC signature; a key with a scheme verifies only
    # signatures of that scheme and hash.
    if signature.sigAlg != ALG.HMAC:
        raise TpmError(RC.SCHEME, detail="not an HMAC signature")
    ha = signature.signature
    own = key_scheme(obj)
    if own.scheme != ALG.NULL and (own.scheme, own.details.hashAlg) != (ALG.HMAC, ha.hashAlg):
        raise _bad("HMAC signature of another hash than the key's")
    expected = HASHES[ha.hashAlg].hmac(obj.sensitive.sensitive, digest)
    if not hmac.compare_digest(expected, ha.digest):
        raise _bad("HMAC signature does not verify")
