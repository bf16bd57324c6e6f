"""Elliptic-curve arithmetic in pure Python: the one implementation behind every ECC operation
that ``cryptography`` cannot do (its ECDH gives only the x-coordinate, it verifies only with
a digest of the signature's own size, and it has no Barreto-Naehrig curves at all).

A curve is y² = x³ + ax + b over GF(p) with a base point G of prime order n and cofactor h
(FIPS 186-4 appendix D.1.2 for the NIST curves; ISO/IEC 15946-5 and the TCG Algorithm
Registry for BN P-256, the curve of TPM_ECC_BN_P256). Points are affine (x, y) tuples of ints
and None for the point at infinity; multiplication works in Jacobian coordinates internally.
Only the ECC_CURVE ids are public keys into :data:`DOMAINS`.

This code does not run in constant time: the TPM's private scalars pass through it only for
curves ``cryptography`` lacks (BN P-256) and for the point products of key exchange, as in
any pure-Python TPM simulator; it is not a side-channel hardened implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import ECC_CURVE

#: An affine point, or None for the point at infinity.
Point = tuple[int, int] | None
_Jacobian = tuple[int, int, int]
_INFINITY: _Jacobian = (1, 1, 0)


@dataclass(frozen=True)
class Domain:
    """The domain parameters of a prime curve y² = x³ + ax + b over GF(p)."""

    curve_id: int
    #: Key size in bits (TPMS_ALGORITHM_DETAIL_ECC keySize).
    key_bits: int
    p: int
    a: int
    b: int
    gx: int
    gy: int
    #: The order of G.
    n: int
    #: The cofactor.
    h: int = 1

    @property
    def size(self) -> int:
        """Octets of a coordinate (and of a scalar: the order has as many bits as p here)."""
        return (self.p.bit_length() + 7) // 8

    @property
    def generator(self) -> tuple[int, int]:
        """G."""
        return self.gx, self.gy

    def contains(self, x: int, y: int) -> bool:
        """Whether (x, y) is a point of the curve: coordinates reduced, equation holds."""
        p = self.p
        if not (0 <= x < p and 0 <= y < p):
            return False
        return (y * y - (x * x * x + self.a * x + self.b)) % p == 0

    # -------------------------------------------------------------- Jacobian arithmetic

    def _double(self, pt: _Jacobian) -> _Jacobian:
        x, y, z = pt
        p = self.p
        if y == 0 or z == 0:
            return _INFINITY
        ysq = y * y % p
        s = 4 * x * ysq % p
        m = (3 * x * x + self.a * pow(z, 4, p)) % p
        nx = (m * m - 2 * s) % p
        ny = (m * (s - nx) - 8 * ysq * ysq) % p
        return nx, ny, 2 * y * z % p

    def _add(self, p1: _Jacobian, p2: _Jacobian) -> _Jacobian:
        if p1[2] == 0:
            return p2
        if p2[2] == 0:
            return p1
        p = self.p
        x1, y1, z1 = p1
        x2, y2, z2 = p2
        z1sq, z2sq = z1 * z1 % p, z2 * z2 % p
        u1, u2 = x1 * z2sq % p, x2 * z1sq % p
        s1, s2 = y1 * z2sq * z2 % p, y2 * z1sq * z1 % p
        if u1 == u2:
            return self._double(p1) if s1 == s2 else _INFINITY
        h, r = (u2 - u1) % p, (s2 - s1) % p
        h2 = h * h % p
        h3 = h * h2 % p
        u1h2 = u1 * h2 % p
        nx = (r * r - h3 - 2 * u1h2) % p
        ny = (r * (u1h2 - nx) - s1 * h3) % p
        return nx, ny, h * z1 * z2 % p

    def _affine(self, pt: _Jacobian) -> Point:
        if pt[2] == 0:
            return None
        p = self.p
        zinv = pow(pt[2], -1, p)
        zinv2 = zinv * zinv % p
        return pt[0] * zinv2 % p, pt[1] * zinv2 * zinv % p

    @staticmethod
    def _jacobian(pt: Point) -> _Jacobian:
        return _INFINITY if pt is None else (pt[0], pt[1], 1)

    # -------------------------------------------------------------- public operations

    def add(self, a: Point, b: Point) -> Point:
        """a + b."""
        return self._affine(self._add(self._jacobian(a), self._jacobian(b)))

    def negate(self, a: Point) -> Point:
        """-a."""
        return None if a is None else (a[0], (-a[1]) % self.p)

    def multiply(self, k: int, pt: Point) -> Point:
        """[k]pt (k reduced modulo the order first: every point used here is in G's group)."""
        return self.mul_add(k, pt, 0, None)

    def base_multiply(self, k: int) -> Point:
        """[k]G."""
        return self.multiply(k, self.generator)

    def mul_add(self, u: int, a: Point, v: int, b: Point) -> Point:
        """[u]a + [v]b in one pass over the bits of both scalars (Shamir's trick)."""
        u, v = u % self.n, v % self.n
        ja, jb = self._jacobian(a), self._jacobian(b)
        both = self._add(ja, jb)
        result = _INFINITY
        for i in range(max(u.bit_length(), v.bit_length()) - 1, -1, -1):
            result = self._double(result)
            bits = (u >> i & 1, v >> i & 1)
            if bits == (1, 1):
                result = self._add(result, both)
            elif bits == (1, 0):
                result = self._add(result, ja)
            elif bits == (0, 1):
                result = self._add(result, jb)
        return self._affine(result)


def _hex(value: str) -> int:
    return int(value.replace(" ", ""), 16)


#: The curves this TPM implements, by TPM_ECC_CURVE. NIST curves: FIPS 186-4 D.1.2.3-D.1.2.5
#: (a = -3). BN P-256: the TCG Algorithm Registry / ISO/IEC 15946-5 curve y² = x³ + 3 with
#: G = (1, 2), as libtpms' CryptEccData.c lists it.
DOMAINS: dict[int, Domain] = {d.curve_id: d for d in (
    Domain(ECC_CURVE.NIST_P256, 256,
           p=_hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff"),
           a=_hex("ffffffff00000001000000000000000000000000fffffffffffffffffffffffc"),
           b=_hex("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b"),
           gx=_hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"),
           gy=_hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"),
           n=_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")),
    Domain(ECC_CURVE.NIST_P384, 384,
           p=_hex("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                  "feffffffff0000000000000000ffffffff"),
           a=_hex("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                  "feffffffff0000000000000000fffffffc"),
           b=_hex("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875a"
                  "c656398d8a2ed19d2a85c8edd3ec2aef"),
           gx=_hex("aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a38"
                   "5502f25dbf55296c3a545e3872760ab7"),
           gy=_hex("3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c0"
                   "0a60b1ce1d7e819d7a431d7c90ea0e5f"),
           n=_hex("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                  "581a0db248b0a77aecec196accc52973")),
    Domain(ECC_CURVE.NIST_P521, 521,
           p=(1 << 521) - 1,
           a=(1 << 521) - 4,
           b=_hex("0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef1"
                  "09e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b50"
                  "3f00"),
           gx=_hex("00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d"
                   "3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5"
                   "bd66"),
           gy=_hex("011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e"
                   "662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd1"
                   "6650"),
           n=_hex("01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                  "fffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e9138"
                  "6409")),
    Domain(ECC_CURVE.BN_P256, 256,
           p=_hex("fffffffffffcf0cd46e5f25eee71a49f0cdc65fb12980a82d3292ddbaed33013"),
           a=0, b=3, gx=1, gy=2,
           n=_hex("fffffffffffcf0cd46e5f25eee71a49e0cdc65fb1299921af62d536cd10b500d")),
)}
