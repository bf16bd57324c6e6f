"""SHA-1, SHA-2 and HMAC with a state that can be exported and imported (FIPS 180-4, RFC 2104).

hashlib's objects cannot give out their internal state, yet a hash or HMAC sequence must be
saved in a context of bounded size (Part 1 §30, TPM2_ContextSave of a sequence object) and
continued after TPM2_ContextLoad — so :mod:`swtpm_py.tpm.sequences` keeps, beside its fast
hashlib objects, the state of these pure-Python hashers.

A state (:class:`State`) is what FIPS 180-4 §6 carries from one block to the next: the
chaining value H (the eight — five for SHA-1 — working words after the last compressed
block, big-endian), the number of message octets compressed so far, and the octets of the
next, still partial, block. SHA-384 keeps the eight 64-bit words of its H (64 octets), like
SHA-512; only its digest is truncated to 48 octets.

``align`` (a multiple of the block size) sets how many octets are compressed at a time: with
``align=128`` SHA-1 and SHA-256 compress two blocks at a time, so hashers of different block
sizes fed the same data have compressed exactly the same octets and share one pending tail.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------------------- constants

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF

#: FIPS 180-4 §4.2.2: the SHA-224/256 round constants.
_K256 = (
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
)

#: FIPS 180-4 §4.2.3: the SHA-384/512 round constants.
_K512 = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)


# ---------------------------------------------------------------------------- compression


def _compress_sha1(h: list[int], data: memoryview) -> None:
    """FIPS 180-4 §6.1.2 on each 64-octet block of ``data``, updating ``h`` in place."""
    h0, h1, h2, h3, h4 = h
    for off in range(0, len(data), 64):
        w = list(struct.unpack_from(">16L", data, off))
        for t in range(16, 80):
            x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
            w.append(((x << 1) | (x >> 31)) & _M32)
        a, b, c, d, e = h0, h1, h2, h3, h4
        # §4.1.1: Ch for rounds 0-19, Parity for 20-39 and 60-79, Maj for 40-59.
        for t in range(20):
            tmp = ((((a << 5) | (a >> 27)) & _M32) + ((b & c) | (~b & d)) + e + 0x5A827999
                   + w[t]) & _M32
            a, b, c, d, e = tmp, a, ((b << 30) | (b >> 2)) & _M32, c, d
        for t in range(20, 40):
            tmp = ((((a << 5) | (a >> 27)) & _M32) + (b ^ c ^ d) + e + 0x6ED9EBA1
                   + w[t]) & _M32
            a, b, c, d, e = tmp, a, ((b << 30) | (b >> 2)) & _M32, c, d
        for t in range(40, 60):
            tmp = ((((a << 5) | (a >> 27)) & _M32) + ((b & c) | (b & d) | (c & d)) + e
                   + 0x8F1BBCDC + w[t]) & _M32
            a, b, c, d, e = tmp, a, ((b << 30) | (b >> 2)) & _M32, c, d
        for t in range(60, 80):
            tmp = ((((a << 5) | (a >> 27)) & _M32) + (b ^ c ^ d) + e + 0xCA62C1D6
                   + w[t]) & _M32
            a, b, c, d, e = tmp, a, ((b << 30) | (b >> 2)) & _M32, c, d
        h0, h1, h2, h3, h4 = ((h0 + a) & _M32, (h1 + b) & _M32, (h2 + c) & _M32,
                              (h3 + d) & _M32, (h4 + e) & _M32)
    h[:] = [h0, h1, h2, h3, h4]


def _compress_sha256(h: list[int], data: memoryview) -> None:
    """FIPS 180-4 §6.2.2 on each 64-octet block of ``data``, updating ``h`` in place."""
    k = _K256
    for off in range(0, len(data), 64):
        w = list(struct.unpack_from(">16L", data, off))
        for t in range(16, 64):
            x, y = w[t - 15], w[t - 2]
            s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
            s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M32)
        a, b, c, d, e, f, g, hh = h
        for t in range(64):
            s1 = ((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))
            t1 = (hh + (s1 & _M32) + ((e & f) ^ (~e & g)) + k[t] + w[t]) & _M32
            s0 = ((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))
            t2 = (s0 & _M32) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M32, c, b, a, (t1 + t2) & _M32
        h[:] = [(x + y) & _M32 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]


def _compress_sha512(h: list[int], data: memoryview) -> None:
    """FIPS 180-4 §6.4.2 on each 128-octet block of ``data``, updating ``h`` in place (also
    SHA-384's, §6.5)."""
    k = _K512
    for off in range(0, len(data), 128):
        w = list(struct.unpack_from(">16Q", data, off))
        for t in range(16, 80):
            x, y = w[t - 15], w[t - 2]
            s0 = ((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56)) ^ (x >> 7)
            s1 = ((y >> 19) | (y << 45)) ^ ((y >> 61) | (y << 3)) ^ (y >> 6)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            s1 = ((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))
            t1 = (hh + (s1 & _M64) + ((e & f) ^ (~e & g)) + k[t] + w[t]) & _M64
            s0 = ((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))
            t2 = (s0 & _M64) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M64, c, b, a, (t1 + t2) & _M64
        h[:] = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]


@dataclass(frozen=True)
class _Algorithm:
    """One hash of FIPS 180-4: block and digest sizes, word format, H(0), compression."""

    name: str
    block_size: int
    digest_size: int
    #: struct format of one word of H ("L" 32 bits, "Q" 64 bits).
    word: str
    initial: tuple[int, ...]
    compress: object
    #: Octets of the message length appended by the padding (FIPS 180-4 §5.1).
    length_size: int

    @property
    def state_size(self) -> int:
        """Octets of the exported chaining value."""
        return struct.calcsize(">" + self.word * len(self.initial))


#: The implemented hashes by hashlib name, with their initial hash values (FIPS 180-4 §5.3).
ALGORITHMS: dict[str, _Algorithm] = {
    "sha1": _Algorithm("sha1", 64, 20, "L", (
        0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0), _compress_sha1, 8),
    "sha256": _Algorithm("sha256", 64, 32, "L", (
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19), _compress_sha256, 8),
    "sha384": _Algorithm("sha384", 128, 48, "Q", (
        0xcbbb9d5dc1059ed8, 0x629a292a367cd507, 0x9159015a3070dd17, 0x152fecd8f70e5939,
        0x67332667ffc00b31, 0x8eb44a8768581511, 0xdb0c2e0d64f98fa7, 0x47b5481dbefa4fa4),
        _compress_sha512, 16),
    "sha512": _Algorithm("sha512", 128, 64, "Q", (
        0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
        0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179),
        _compress_sha512, 16),
}

#: The largest block size: an ``align`` that suits every algorithm.
MAX_BLOCK_SIZE = max(a.block_size for a in ALGORITHMS.values())


# ---------------------------------------------------------------------------- hashers


@dataclass(frozen=True)
class State:
    """An exported hash state: the chaining value after ``compressed`` octets, and the
    octets fed since (shorter than the hasher's ``align``)."""

    chain: bytes
    compressed: int
    pending: bytes = b""


class Hash:
    """A running hash with the interface of hashlib's objects (update, copy, digest) whose
    state can be exported (:meth:`export`) and imported (:func:`restore`)."""

    def __init__(self, name: str, data: bytes = b"", align: int | None = None) -> None:
        self.alg = ALGORITHMS[name]
        self.name = name
        self.digest_size = self.alg.digest_size
        self.block_size = self.alg.block_size
        self.align = align or self.alg.block_size
        if self.align % self.alg.block_size:
            raise ValueError(f"align {self.align} is not a multiple of {self.alg.block_size}")
        self._h = list(self.alg.initial)
        self._compressed = 0
        self._pending = bytearray()
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data``: whole multiples of ``align`` octets are compressed, the rest kept."""
        buf = self._pending
        buf += data
        n = len(buf) - len(buf) % self.align
        if n:
            with memoryview(buf) as view:
                self.alg.compress(self._h, view[:n])
            del buf[:n]
            self._compressed += n

    def copy(self) -> Hash:
        """An independent copy of this hasher."""
        other = Hash.__new__(Hash)
        other.__dict__.update(self.__dict__)
        other._h = list(self._h)
        other._pending = bytearray(self._pending)
        return other

    def export(self) -> State:
        """The current state."""
        chain = struct.pack(">" + self.alg.word * len(self._h), *self._h)
        return State(chain, self._compressed, bytes(self._pending))

    def digest(self) -> bytes:
        """FIPS 180-4 §5.1 padding (a 1 bit, zeros, the bit length) and the final hash; the
        hasher itself is unchanged."""
        alg = self.alg
        bits = (self._compressed + len(self._pending)) * 8
        tail = bytes(self._pending) + b"\x80"
        tail += bytes(-(len(tail) + alg.length_size) % alg.block_size)
        tail += bits.to_bytes(alg.length_size, "big")
        h = list(self._h)
        alg.compress(h, memoryview(tail))
        return struct.pack(">" + alg.word * len(h), *h)[:alg.digest_size]

    def hexdigest(self) -> str:
        """The digest in hexadecimal."""
        return self.digest().hex()


def restore(name: str, state: State, align: int | None = None) -> Hash:
    """A hasher continuing from ``state`` (which must have compressed a multiple of
    ``align`` octets, and have fewer than ``align`` pending)."""
    hasher = Hash(name, align=align)
    alg = hasher.alg
    if len(state.chain) != alg.state_size:
        raise ValueError(f"a {name} chaining value has {alg.state_size} octets")
    if state.compressed % hasher.align or len(state.pending) >= hasher.align:
        raise ValueError("state not aligned")
    hasher._h = list(struct.unpack(">" + alg.word * len(alg.initial), state.chain))
    hasher._compressed = state.compressed
    hasher._pending = bytearray(state.pending)
    return hasher


# ---------------------------------------------------------------------------- HMAC


def _keyed_pad(name: str, key: bytes, pad: int) -> bytes:
    """RFC 2104 §2: the key (hashed first if longer than a block) padded with zeros to one
    block and XORed with ``pad`` (0x36 for ipad, 0x5C for opad)."""
    block = ALGORITHMS[name].block_size
    if len(key) > block:
        key = hashlib.new(name, key).digest()
    return bytes(b ^ pad for b in key.ljust(block, b"\0"))


class Hmac:
    """RFC 2104 HMAC: H((K ^ opad) || H((K ^ ipad) || text)). The inner keyed state (a
    :class:`Hash` that has absorbed K ^ ipad) is the exportable part; the outer one is fed
    with K ^ opad when the digest is taken."""

    def __init__(self, name: str, key: bytes, data: bytes = b"", align: int | None = None,
                 inner: Hash | None = None) -> None:
        self.name = name
        self.key = key
        self.digest_size = ALGORITHMS[name].digest_size
        if inner is None:
            inner = Hash(name, _keyed_pad(name, key, 0x36), align)
        self.inner = inner
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data`` to the inner hash."""
        self.inner.update(data)

    def copy(self) -> Hmac:
        """An independent copy."""
        return Hmac(self.name, self.key, inner=self.inner.copy())

    def export(self) -> State:
        """The inner keyed state (it counts the K ^ ipad block among the compressed octets)."""
        return self.inner.export()

    def digest(self) -> bytes:
        """The HMAC of everything fed so far; the object is unchanged."""
        outer = Hash(self.name, _keyed_pad(self.name, self.key, 0x5C))
        outer.update(self.inner.digest())
        return outer.digest()

    def hexdigest(self) -> str:
        """The HMAC in hexadecimal."""
        return self.digest().hex()


def restore_hmac(name: str, key: bytes, state: State, align: int | None = None) -> Hmac:
    """An HMAC continuing from the inner keyed ``state`` of an :class:`Hmac` with ``key``."""
    return Hmac(name, key, inner=restore(name, state, align))
