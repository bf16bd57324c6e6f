"""Protected storage: how a parent wraps the sensitive area of its child into a TPM2B_PRIVATE
and unwraps it again (Part 1 "Protected Storage"; the reference implementation's
SensitiveToPrivate() / PrivateToSensitive()).

The layout of a TPM2B_PRIVATE made by TPM2_Create, all fields big-endian::

    integrity   TPM2B_DIGEST  HMAC_parentNameAlg(HMACkey, ivArea || encSensitive || Name)
    ivArea      TPM2B_IV      16 random octets (one AES block)
    encSensitive              CFB(symKey, iv, TPM2B_SENSITIVE)  (u16 size || TPMT_SENSITIVE)

with (Part 1 "Protected Storage": symmetric protection and integrity)

* symKey  = KDFa(parent nameAlg, parent seedValue, "STORAGE", Name, "", keyBits of the parent's
  symmetric definition),
* HMACkey = KDFa(parent nameAlg, parent seedValue, "INTEGRITY", "", "", digest bits).

Name is the Name of the object being protected, so a private area only loads with the public
area it was made for. Unwrapping checks the integrity before decrypting: a changed octet
anywhere is TPM_RC_INTEGRITY.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from .constants import RC
from .crypto import HASHES, kdfa
from .errors import TpmError
from .symcipher import BLOCK_SIZES, cfb_decrypt, cfb_encrypt
from .wire import MAX_DIGEST_SIZE

STORAGE_LABEL = b"STORAGE"
INTEGRITY_LABEL = b"INTEGRITY"


def _protection_keys(parent_public: Any, seed: bytes, name: bytes) -> tuple[int, int, bytes,
                                                                             bytes]:
    """(hash, cipher, symKey, HMACkey) for protecting the object ``name`` under a parent."""
    hash_alg = parent_public.nameAlg
    sym = parent_public.parameters.symmetric
    sym_key = kdfa(hash_alg, seed, STORAGE_LABEL, name, b"", sym.keyBits)
    hmac_key = kdfa(hash_alg, seed, INTEGRITY_LABEL, b"", b"", HASHES[hash_alg].size * 8)
    return hash_alg, sym.algorithm, sym_key, hmac_key


def wrap(parent_public: Any, parent_seed: bytes, name: bytes, sensitive: bytes,
         random: Callable[[int], bytes]) -> bytes:
    """The TPM2B_PRIVATE contents protecting the marshalled TPMT_SENSITIVE ``sensitive`` of the
    object ``name`` under the parent (its public area and seedValue)."""
    hash_alg, cipher, sym_key, hmac_key = _protection_keys(parent_public, parent_seed, name)
    iv = random(BLOCK_SIZES[cipher])
    plain = len(sensitive).to_bytes(2, "big") + sensitive
    body = len(iv).to_bytes(2, "big") + iv + cfb_encrypt(cipher, sym_key, iv, plain)
    integrity = HASHES[hash_alg].hmac(hmac_key, body, name)
    return len(integrity).to_bytes(2, "big") + integrity + body


def unwrap(parent_public: Any, parent_seed: bytes, name: bytes, private: bytes) -> bytes:
    """The marshalled TPMT_SENSITIVE inside ``private`` (TPM2B_PRIVATE contents) for the object
    ``name``.

    Errors as the reference's UnwrapOuter() and PrivateToSensitive(): a truncated or oversized
    integrity field is TPM_RC_INSUFFICIENT / TPM_RC_SIZE, a wrong HMAC TPM_RC_INTEGRITY, an IV
    that is not one block TPM_RC_VALUE, and a decrypted area whose size field does not match
    TPM_RC_SENSITIVE (format-0, so never numbered).
    """
    hash_alg, cipher, sym_key, hmac_key = _protection_keys(parent_public, parent_seed, name)
    integrity, body = split_digest(private)
    if not hmac.compare_digest(integrity, HASHES[hash_alg].hmac(hmac_key, body, name)):
        raise TpmError(RC.INTEGRITY, detail="private area integrity check failed")
    iv, enc = split_tpm2b(body, max(BLOCK_SIZES.values()), "IV")
    if len(iv) != BLOCK_SIZES[cipher]:
        raise TpmError(RC.VALUE, detail="IV is not one block")
    plain = cfb_decrypt(cipher, sym_key, iv, enc)
    if len(plain) < 2 or int.from_bytes(plain[:2], "big") + 2 != len(plain):
        raise TpmError(RC.SENSITIVE, detail="sensitive area size mismatch")
    return plain[2:]


# ---------------------------------------------------------------------------- outer wrapper
#
# Credentials and duplication blobs (Part 1 §23.3.2.3 "Outer Duplication Wrapper", §24
# "Credential Protection"; the reference's ProduceOuterWrap() / UnwrapOuter() with useIV
# FALSE) use the same keys as protected storage, derived from a seed the sender shares with
# the protector's private key instead of the parent's seedValue, and no IV: the CFB IV is
# all zeros (each seed is fresh, so each key is used once)::
#
#     integrity   TPM2B_DIGEST  HMAC_protectorNameAlg(HMACkey, encData || Name)
#     encData                   CFB(symKey, 0, data)


def outer_wrap(protector_public: Any, seed: bytes, name: bytes, data: bytes) -> bytes:
    """``data`` under the outer wrapper of the protector (public area) for the object
    ``name``, with the shared ``seed``."""
    hash_alg, cipher, sym_key, hmac_key = _protection_keys(protector_public, seed, name)
    enc = cfb_encrypt(cipher, sym_key, bytes(BLOCK_SIZES[cipher]), data)
    integrity = HASHES[hash_alg].hmac(hmac_key, enc, name)
    return len(integrity).to_bytes(2, "big") + integrity + enc


def outer_unwrap(protector_public: Any, seed: bytes, name: bytes, blob: bytes) -> bytes:
    """Invert :func:`outer_wrap` (UnwrapOuter()): the integrity first (TPM_RC_INSUFFICIENT /
    TPM_RC_SIZE for a bad integrity field, TPM_RC_INTEGRITY for a wrong HMAC), then the
    decrypted data."""
    hash_alg, cipher, sym_key, hmac_key = _protection_keys(protector_public, seed, name)
    integrity, enc = split_digest(blob)
    if not hmac.compare_digest(integrity, HASHES[hash_alg].hmac(hmac_key, enc, name)):
        raise TpmError(RC.INTEGRITY, detail="outer integrity check failed")
    return cfb_decrypt(cipher, sym_key, bytes(BLOCK_SIZES[cipher]), enc)


def split_tpm2b(blob: bytes, max_size: int, what: str) -> tuple[bytes, bytes]:
    """Unmarshal a leading TPM2B of at most ``max_size`` octets: (its contents, the rest).
    Fewer octets than announced is TPM_RC_INSUFFICIENT, a larger size TPM_RC_SIZE (both
    unnumbered, as the reference's unmarshalling inside a blob returns them)."""
    if len(blob) < 2:
        raise TpmError(RC.INSUFFICIENT, detail=f"no {what}")
    size = int.from_bytes(blob[:2], "big")
    if size > max_size:
        raise TpmError(RC.SIZE, detail=f"{what} of {size} octets is too large")
    if len(blob) < 2 + size:
        raise TpmError(RC.INSUFFICIENT, detail=f"{what} truncated")
    return blob[2:2 + size], blob[2 + size:]


def split_digest(blob: bytes) -> tuple[bytes, bytes]:
    """Unmarshal a leading TPM2B_DIGEST (an integrity field): (digest, rest)."""
    return split_tpm2b(blob, MAX_DIGEST_SIZE, "integrity")
