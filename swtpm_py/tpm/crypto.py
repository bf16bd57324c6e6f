"""Hash algorithms the TPM implements, and the primitives the spec builds on them.

Only what the TPM 2.0 specification defines on top of standard primitives lives here (for
example KDFa, Part 1 §11.4.10.2); the primitives themselves come from hashlib/hmac and
``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable

from .constants import ALG


@dataclass(frozen=True)
class HashAlg:
    """One implemented hash algorithm: TPM id, hashlib name, digest and block sizes."""

    alg: ALG
    name: str
    size: int
    block_size: int

    def new(self, data: bytes = b"") -> "hashlib._Hash":
        """A fresh hashlib object for this algorithm."""
        return hashlib.new(self.name, data)

    def digest(self, *parts: bytes) -> bytes:
        """The digest of the concatenation of ``parts``."""
        h = hashlib.new(self.name)
        for part in parts:
            h.update(part)
        return h.digest()

    def hmac(self, key: bytes, *parts: bytes) -> bytes:
        """HMAC (RFC 2104) with this hash over the concatenation of ``parts``."""
        mac = hmac.new(key, digestmod=self.name)
        for part in parts:
            mac.update(part)
        return mac.digest()


#: The implemented hashes, in TPM_ALG_ID order (the order GetCapability reports them).
HASHES: dict[int, HashAlg] = {
    ALG.SHA1: HashAlg(ALG.SHA1, "sha1", 20, 64),
    ALG.SHA256: HashAlg(ALG.SHA256, "sha256", 32, 64),
    ALG.SHA384: HashAlg(ALG.SHA384, "sha384", 48, 128),
    ALG.SHA512: HashAlg(ALG.SHA512, "sha512", 64, 128),
}


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP800-108 counter-mode KDF with HMAC.

    Each block is HMAC(key, [i]32 || label || 00 || contextU || contextV || [bits]32); the
    label gets its terminating zero octet only if it does not already end with one. The result
    is truncated to ``bits`` bits, keeping the high-order bits of the first octet zeroed.
    """
    h = HASHES[hash_alg]
    if not label.endswith(b"\x00"):
        label += b"\x00"
    out = bytearray()
    counter = 0
    tail = label + context_u + context_v + bits.to_bytes(4, "big")
    nbytes = (bits + 7) // 8
    while len(out) < nbytes:
        counter += 1
        out += h.hmac(key, counter.to_bytes(4, "big"), tail)
    result = bytearray(out[:nbytes])
    if bits % 8:
        result[0] &= (1 << (bits % 8)) - 1
    return bytes(result)


class Drbg:
    """The TPM's random number generator: HMAC_DRBG (SP 800-90A §10.1.2) with SHA-256.

    Seeded from platform entropy at power-on; TPM2_StirRandom mixes caller data in as
    additional input (Part 3 §16.2), which can only add to its unpredictability.
    """

    def __init__(self, entropy: Callable[[int], bytes]) -> None:
        self._entropy = entropy
        self._key = b"\x00" * 32
        self._v = b"\x01" * 32
        self._update(entropy(48))

    def _update(self, provided: bytes) -> None:
        sha = HASHES[ALG.SHA256]
        self._key = sha.hmac(self._key, self._v, b"\x00", provided)
        self._v = sha.hmac(self._key, self._v)
        if provided:
            self._key = sha.hmac(self._key, self._v, b"\x01", provided)
            self._v = sha.hmac(self._key, self._v)

    def stir(self, data: bytes) -> None:
        """Mix caller-provided data into the state (TPM2_StirRandom)."""
        self._update(self._entropy(32) + data)

    def generate(self, n: int) -> bytes:
        """``n`` random octets."""
        sha = HASHES[ALG.SHA256]
        out = bytearray()
        while len(out) < n:
            self._v = sha.hmac(self._key, self._v)
            out += self._v
        self._update(b"")
        return bytes(out[:n])
