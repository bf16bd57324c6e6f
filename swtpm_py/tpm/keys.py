"""Key generation: the TPM's object creation (Part 1 "Object Creation"; the reference
implementation's CryptCreateObject()), deterministic for Primary Objects.

A Primary Object is a function of its hierarchy's seed and its template (Part 1 "Primary Objects"):
the TPM instantiates a DRBG from the seed, the label "Primary Object Creation", the Name of the
template and the template's sensitive data, and draws every random value of the key from it, in a
fixed order. The same template under the same seed gives the same key after any restart; a
different seed gives an unrelated key. Ordinary objects (TPM2_Create) draw from the TPM's own
random number generator instead, through the same code.

The DRBG is the one of the reference implementation (Part 4 §10.2.16, CryptRand.c): CTR_DRBG of
SP 800-90A §10.2.1 with AES-256, seeded through the reference's block-cipher derivation function;
:class:`SeededDrbg` follows it octet for octet. Then, per object type:

* ECC (FIPS 186-4 B.4.1 "extra random bits"): d = (c mod (n-1)) + 1 with c the
  order's size in octets plus 8 octets of DRBG output; Q = d·G through ``cryptography``.
* RSA: each prime is the first probable prime (sieve, Fermat, then Miller-Rabin with DRBG-drawn
  bases, FIPS 186-4 C.3.1) at or above a DRBG-drawn start whose two top bits are set, with
  gcd(p-1, e) = 1; the key is rejected and drawn again when p and q are too close (FIPS 186-4
  B.3.3). Built with ``cryptography``'s RSAPrivateNumbers. Generating a 2048-bit key takes a few
  hundred milliseconds in Python, so derived primaries are cached (the result is a function of
  its inputs, so a cache hit is exactly what the derivation would give).
* KEYEDHASH / SYMCIPHER: the key (unless the caller supplied it) from the DRBG, then seedValue,
  and unique = H(seedValue || key) (HMAC keyed with seedValue for a parent), Part 1 "Object
  Creation".
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import construct as c
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import ecmath
from .constants import ALG, ECC_CURVE, RC
from .crypto import HASHES
from .errors import TpmError
from .objects_wire import ObjectAttr

# ---------------------------------------------------------------------------- the DRBG

#: CTR_DRBG with AES-256: 32-octet key, 16-octet V, so a seed is 48 octets (seedlen).
DRBG_KEY_BYTES = 32
DRBG_BLOCK = 16
DRBG_SEED_BYTES = DRBG_KEY_BYTES + DRBG_BLOCK
#: The derivation function's fixed key: octets 0, 1, ..., 31 (Part 4 CryptRand.c DfStart()).
_DF_KEY = bytes(range(DRBG_KEY_BYTES))
#: Part 1 "Primary Objects": the purpose label of primary-object derivation (a TPM2B_STRING,
#: with its NUL).
PRIMARY_OBJECT_CREATION = b"Primary Object Creation\x00"


class RandomSource(Protocol):
    """Anything that produces random octets: the TPM's DRBG or a :class:`SeededDrbg`."""

    def generate(self, n: int) -> bytes:
        """``n`` octets."""


def _aes_ecb(key: bytes, blocks: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(blocks) + enc.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _counter_blocks(v: bytes, n: int) -> tuple[bytes, bytes]:
    """n successive values of V, each incremented before use (SP 800-90A §10.2.1.2), and the
    last one."""
    value = int.from_bytes(v, "big")
    out = b"".join(((value + i) % (1 << 128)).to_bytes(DRBG_BLOCK, "big")
                   for i in range(1, n + 1))
    return out, out[-DRBG_BLOCK:]


def derivation_function(data: bytes) -> bytes:
    """The reference implementation's derivation function (Part 4 CryptRand.c DfStart(),
    DfUpdate(), DfEnd()) from ``data`` to a 48-octet seed.

    Three chaining blocks start as AES-256 encryptions (under the fixed key 00..1f) of the
    counters 0, 1, 2; the first block's leading 8 octets then hold the input length and the seed
    length. The input, preceded by four zero octets and followed by 0x80 and zero padding to a
    block boundary, is absorbed one block B at a time: with a running value t that starts at
    zero, each chaining block X_i becomes E(t ^= X_i ^ B). The result is the three blocks.
    """
    def absorb(chain: list[bytes], block: bytes) -> list[bytes]:
        t = bytes(DRBG_BLOCK)
        inputs = []
        for x in chain:
            t = _xor(t, _xor(x, block))
            inputs.append(t)
        out = _aes_ecb(_DF_KEY, b"".join(inputs))
        return [out[i:i + DRBG_BLOCK] for i in range(0, len(out), DRBG_BLOCK)]

    chain = absorb([bytes([0, 0, 0, i]) + bytes(12) for i in range(3)], bytes(DRBG_BLOCK))
    chain[0] = (len(data).to_bytes(4, "big") + DRBG_SEED_BYTES.to_bytes(4, "big")
                + chain[0][8:])
    stream = bytes(4) + data
    full = len(stream) - len(stream) % DRBG_BLOCK
    for off in range(0, full, DRBG_BLOCK):
        chain = absorb(chain, stream[off:off + DRBG_BLOCK])
    tail = stream[full:] + b"\x80"
    chain = absorb(chain, tail + bytes(DRBG_BLOCK - len(tail)))
    return b"".join(chain)


class SeededDrbg:
    """A CTR_DRBG (SP 800-90A §10.2.1, AES-256, no derivation function in generate) instantiated
    from caller data, as the reference's DRBG_InstantiateSeeded(): the derivation function over
    seed || purpose || name || additional gives the seed material, which updates an all-zero
    state. Every :meth:`generate` call is followed by the update of §10.2.1.2, so the output
    depends on how it is requested, exactly as in the reference."""

    def __init__(self, seed: bytes, purpose: bytes, name: bytes, additional: bytes) -> None:
        self._key = bytes(DRBG_KEY_BYTES)
        self._v = bytes(DRBG_BLOCK)
        self._update(derivation_function(seed + purpose + name + additional))

    def _update(self, provided: bytes | None) -> None:
        blocks, _ = _counter_blocks(self._v, DRBG_SEED_BYTES // DRBG_BLOCK)
        temp = _aes_ecb(self._key, blocks)
        if provided is not None:
            temp = _xor(temp, provided)
        self._key, self._v = temp[:DRBG_KEY_BYTES], temp[DRBG_KEY_BYTES:]

    def generate(self, n: int) -> bytes:
        """``n`` octets (DRBG_Generate()), then the state update."""
        count = -(-n // DRBG_BLOCK)
        blocks, self._v = _counter_blocks(self._v, count)
        out = _aes_ecb(self._key, blocks)[:n]
        self._update(None)
        return out

    def additional_data(self, data: bytes) -> None:
        """Mix ``data`` into the state (DRBG_AdditionalData(): a reseed with the derivation
        function of ``data`` as the entropy input)."""
        self._update(derivation_function(data))


# ---------------------------------------------------------------------------- ECC

@dataclass(frozen=True)
class Curve:
    """An implemented ECC curve: its ``cryptography`` curve (None for a curve ``cryptography``
    lacks, BN P-256: its arithmetic is :mod:`swtpm_py.tpm.ecmath`'s), its order and its size."""

    curve: ec.EllipticCurve | None
    #: The order n of the base point (FIPS 186-4 appendix D.1.2).
    order: int
    #: Octets of a coordinate or scalar.
    size: int


CURVES: dict[int, Curve] = {
    ECC_CURVE.NIST_P256: Curve(ec.SECP256R1(), int(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16), 32),
    ECC_CURVE.NIST_P384: Curve(ec.SECP384R1(), int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
        "581a0db248b0a77aecec196accc52973", 16), 48),
    ECC_CURVE.NIST_P521: Curve(ec.SECP521R1(), int(
        "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "fffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e9138"
        "6409", 16), 66),
    # TPM_ECC_BN_P256 (TCG Algorithm Registry, ISO/IEC 15946-5): no ``cryptography`` curve.
    ECC_CURVE.BN_P256: Curve(None, int(
        "fffffffffffcf0cd46e5f25eee71a49e0cdc65fb1299921af62d536cd10b500d", 16), 32),
}


def ecc_private_scalar(curve: Curve, rand: RandomSource) -> int:
    """FIPS 186-4 B.4.1 (the reference's BnEccGetPrivate()): c from the order's octet size
    plus 64 bits of random octets, d = (c mod (n - 1)) + 1."""
    nbytes = (curve.order.bit_length() + 7) // 8
    c_value = int.from_bytes(rand.generate(nbytes + 8), "big")
    return c_value % (curve.order - 1) + 1


def ecc_public_point(curve: Curve, d: int) -> tuple[bytes, bytes]:
    """Q = d·G as two big-endian coordinates of the curve's size (through ``cryptography``
    where it knows the curve, otherwise :mod:`swtpm_py.tpm.ecmath`)."""
    if curve.curve is None:
        domain = next(dom for dom in ecmath.DOMAINS.values() if dom.n == curve.order)
        point = domain.base_multiply(d)
        assert point is not None  # 0 < d < n
        x, y = point
    else:
        numbers = ec.derive_private_key(d, curve.curve).public_key().public_numbers()
        x, y = numbers.x, numbers.y
    return x.to_bytes(curve.size, "big"), y.to_bytes(curve.size, "big")


# ---------------------------------------------------------------------------- RSA

#: Part 2 §12.2.3.5: exponent 0 means 2^16 + 1.
RSA_DEFAULT_EXPONENT = 65537
#: Trial-division bound of the sieve.
_SIEVE_BOUND = 1 << 14
_SIEVE_WINDOW = 4096  # odd candidates scanned per start value


def _small_primes(bound: int) -> list[int]:
    flags = bytearray([1]) * bound
    flags[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(bound) + 1):
        if flags[i]:
            flags[i * i::i] = bytes(len(range(i * i, bound, i)))
    return [i for i in range(3, bound) if flags[i]]


_PRIMES = _small_primes(_SIEVE_BOUND)


def _miller_rabin(n: int, bases: list[int]) -> bool:
    d, s = n - 1, 0
    while not d & 1:
        d >>= 1
        s += 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _mr_rounds(bits: int) -> int:
    """Miller-Rabin rounds for an error below 2^-100 (FIPS 186-4 table C.2 / C.3)."""
    return 7 if bits <= 512 else 5 if bits <= 1024 else 4


def is_probable_prime(n: int, rand: RandomSource) -> bool:
    """Trial division, then Miller-Rabin with bases drawn from ``rand``."""
    if n < 2:
        return False
    for p in _PRIMES[:64]:
        if n % p == 0:
            return n == p
    nbytes = (n.bit_length() + 7) // 8
    bases = [int.from_bytes(rand.generate(nbytes), "big") % (n - 3) + 2
             for _ in range(_mr_rounds(n.bit_length()))]
    return _miller_rabin(n, bases)


def rsa_prime(bits: int, e: int, rand: RandomSource) -> int:
    """A prime of exactly ``bits`` bits, top two bits set (so that a product of two has twice
    the bits), with gcd(p - 1, e) = 1, found by scanning up from a start drawn from ``rand``:
    a sieve of small primes over a window of odd candidates, a base-2 Fermat test, then
    Miller-Rabin with random bases."""
    while True:
        start = int.from_bytes(rand.generate(bits // 8), "big")
        start |= (3 << (bits - 2)) | 1
        sieve = bytearray([1]) * _SIEVE_WINDOW  # entry i stands for start + 2i
        for p in _PRIMES:
            # first i with start + 2i ≡ 0 (mod p): i ≡ -start / 2 (mod p)
            first = (-start * ((p + 1) // 2)) % p
            sieve[first::p] = bytes(len(range(first, _SIEVE_WINDOW, p)))
        for i in range(_SIEVE_WINDOW):
            if not sieve[i]:
                continue
            cand = start + 2 * i
            if cand.bit_length() != bits:
                break
            if pow(2, cand - 1, cand) != 1 or math.gcd(cand - 1, e) != 1:
                continue
            if is_probable_prime(cand, rand):
                return cand


def _is_prime_exponent(e: int) -> bool:
    if e < 2:
        return False
    return all(e % p for p in range(2, math.isqrt(e) + 1))


def rsa_exponent(exponent: int) -> int:
    """The public exponent a template asks for: 0 means 65537; anything else must be an odd
    prime of at least 65537 (Part 2 §12.2.3.5 / the reference's CryptRsaGenerateKey():
    TPM_RC_RANGE otherwise)."""
    if exponent == 0:
        return RSA_DEFAULT_EXPONENT
    if exponent < RSA_DEFAULT_EXPONENT or not _is_prime_exponent(exponent):
        raise TpmError(RC.RANGE, detail=f"RSA exponent {exponent}")
    return exponent


def rsa_generate(bits: int, e: int, rand: RandomSource) -> tuple[int, int]:
    """(n, p) of a new RSA key: two primes of bits/2 each that differ in their top 100 bits
    (FIPS 186-4 B.3.3 step 5.4), the larger one kept as the private value."""
    half = bits // 2
    while True:
        p = rsa_prime(half, e, rand)
        q = rsa_prime(half, e, rand)
        if abs(p - q) >> (half - 100) == 0:
            continue
        n = p * q
        if n.bit_length() == bits:
            return n, max(p, q)


def rsa_private_numbers(n: int, e: int, p: int) -> rsa.RSAPrivateNumbers:
    """The full private key from the modulus, the exponent and one prime (what a TPM's RSA
    sensitive area holds); TPM_RC_BINDING when p does not divide n."""
    if p <= 1 or n % p:
        raise TpmError(RC.BINDING, detail="RSA prime does not divide the modulus")
    q = n // p
    if q <= 1:
        raise TpmError(RC.BINDING, detail="RSA prime does not divide the modulus")
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    try:
        d = pow(e, -1, lam)
    except ValueError:
        raise TpmError(RC.BINDING, detail="RSA exponent not invertible") from None
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                 rsa.RSAPublicNumbers(e, n))


# ---------------------------------------------------------------------------- objects


def _digest_size(alg: int) -> int:
    return HASHES[alg].size


def symmetric_unique(public: Any, seed_value: bytes, secret: bytes) -> bytes:
    """Part 1 "Object Creation" (CryptComputeSymmetricUnique()): the unique field of a keyed-hash or
    symmetric object binds the public area to the secret: HMAC_nameAlg(seedValue, secret) for a
    parent (restricted decrypt), H_nameAlg(seedValue || secret) otherwise."""
    h = HASHES[public.nameAlg]
    attrs = public.objectAttributes
    if attrs & ObjectAttr.RESTRICTED and attrs & ObjectAttr.DECRYPT:
        return h.hmac(seed_value, secret)
    return h.digest(seed_value, secret)


def _keyedhash_secret(public: Any, data: bytes, rand: RandomSource) -> bytes:
    """CryptGenerateKeyedHash(): a supplied HMAC or XOR key may be at most one block of the
    scheme's hash (TPM_RC_SIZE); otherwise the TPM draws a digest-sized key."""
    sch = public.parameters.scheme
    if sch.scheme == ALG.NULL:
        hash_alg = public.nameAlg
    else:
        hash_alg = sch.details.hashAlg
    if data:
        attrs = public.objectAttributes
        if attrs & (ObjectAttr.DECRYPT | ObjectAttr.SIGN_ENCRYPT):
            if len(data) > HASHES[hash_alg].block_size:
                raise TpmError(RC.SIZE, detail="keyed-hash key longer than a hash block")
        return data
    return rand.generate(_digest_size(hash_alg))


def _symcipher_secret(public: Any, data: bytes, rand: RandomSource) -> bytes:
    """CryptGenerateKeySymmetric(): a supplied key must have exactly the key size
    (TPM_RC_KEY_SIZE); otherwise the TPM draws one."""
    key_bytes = public.parameters.sym.keyBits // 8
    if data:
        if len(data) != key_bytes:
            raise TpmError(RC.KEY_SIZE, detail=f"{len(data)}-octet key for "
                                               f"{public.parameters.sym.keyBits} bits")
        return data
    return rand.generate(key_bytes)


def create_object(public: Any, user_auth: bytes, data: bytes, rand: RandomSource, *,
                  eps_proofs: tuple[bytes, ...] = (), deterministic: bool = True) -> Any:
    """CryptCreateObject(): fill in the key of ``public`` (a parsed TPMT_PUBLIC, modified in
    place: its unique field) and return the TPMT_SENSITIVE.

    Every random value comes from ``rand``, in the reference's order: the key, then (after
    mixing ``eps_proofs`` into a primary's DRBG, for the endorsement hierarchy) the seedValue of
    nameAlg's size. ``deterministic`` False allows ``cryptography``'s own RSA generation (for
    ordinary objects, whose keys need not be reproducible). ``user_auth`` is the authValue
    (already padded by the caller); ``data`` the caller's secret, empty when the TPM makes it.
    """
    attrs = public.objectAttributes
    if attrs & ObjectAttr.SENSITIVE_DATA_ORIGIN:
        data = b""
    kind = public.type
    if kind == ALG.RSA:
        parms = public.parameters
        e = rsa_exponent(parms.exponent)
        bits = parms.keyBits
        if not deterministic and e == RSA_DEFAULT_EXPONENT:
            key = rsa.generate_private_key(e, bits)
            numbers = key.private_numbers()
            n, secret_int = numbers.public_numbers.n, max(numbers.p, numbers.q)
        else:
            n, secret_int = rsa_generate(bits, e, rand)
        public.unique = n.to_bytes(bits // 8, "big")
        secret = secret_int.to_bytes(bits // 16, "big")
    elif kind == ALG.ECC:
        curve = CURVES[public.parameters.curveID]
        d = ecc_private_scalar(curve, rand)
        x, y = ecc_public_point(curve, d)
        public.unique = c.Container(x=x, y=y)
        secret = d.to_bytes(curve.size, "big")
    elif kind == ALG.SYMCIPHER:
        secret = _symcipher_secret(public, data, rand)
    else:
        secret = _keyedhash_secret(public, data, rand)
    if isinstance(rand, SeededDrbg):
        for proof in eps_proofs:
            rand.additional_data(proof)
    seed_value = rand.generate(_digest_size(public.nameAlg))
    if kind in (ALG.SYMCIPHER, ALG.KEYEDHASH):
        public.unique = symmetric_unique(public, seed_value, secret)
    elif attrs & ObjectAttr.SIGN_ENCRYPT or not attrs & ObjectAttr.RESTRICTED:
        # Only a parent (restricted decryption key) keeps a seed for its children.
        seed_value = b""
    return c.Container(sensitiveType=kind, authValue=user_auth, seedValue=seed_value,
                       sensitive=secret)


# ---------------------------------------------------------------------------- primaries


class _PrimaryCache:
    """Derived primaries by the digest of everything they are derived from, least recently
    used first out. A hit returns exactly what the derivation would compute, without the
    prime search."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[Any, Any] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, value: tuple[Any, Any]) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (tests measure the derivation itself)."""
        with self._lock:
            self._entries.clear()


#: The cache of derived primary objects (bytes of public and sensitive area).
PRIMARY_CACHE = _PrimaryCache(64)


def derive_primary(seed: bytes, template_name: bytes, public: Any, user_auth: bytes,
                   data: bytes, *, eps_proofs: tuple[bytes, ...] = ()) -> Any:
    """Create a Primary Object (TPM2_CreatePrimary, Part 3 §24.1): a :class:`SeededDrbg` from
    the hierarchy ``seed``, :data:`PRIMARY_OBJECT_CREATION`, the Name of the template and the
    template's sensitive ``data``, then :func:`create_object`. Returns the TPMT_SENSITIVE and
    fills in ``public`` in place. Results are cached by the digest of all their inputs, as
    marshalled octets (immutable; parsed again on a hit)."""
    from .objects_wire import parse_public, parse_sensitive, public_bytes, sensitive_bytes

    key = hashlib.sha256(b"".join(len(part).to_bytes(4, "big") + part for part in (
        seed, template_name, user_auth, data, *eps_proofs))).digest()
    hit = PRIMARY_CACHE.get(key)
    if hit is not None:
        pub, sens = parse_public(hit[0]), parse_sensitive(hit[1])
        public.unique = pub.unique
        return sens
    drbg = SeededDrbg(seed, PRIMARY_OBJECT_CREATION, template_name, data)
    sensitive = create_object(public, user_auth, data, drbg, eps_proofs=eps_proofs)
    PRIMARY_CACHE.put(key, (public_bytes(public), sensitive_bytes(sensitive)))
    return sensitive


# ---------------------------------------------------------------------------- derived objects

#: Part 3 §12.9 / the reference's TPM_MAX_DERIVATION_BITS: the bits a derivation may draw
#: from its KDF (and the L of every KDFa block).
MAX_DERIVATION_BITS = 8192


class KdfDrbg:
    """The random source of a Derived Object (Part 1 "Derived Objects", Part 3 §12.9; the
    reference's DRBG_InstantiateSeededKdf() and the KDF branch of DRBG_Generate()).

    The output is the stream of KDFa blocks (Part 1 §11.4.10.2) keyed with the derivation
    parent's secret: block i is HMAC_hash(key, [i]32 || label || 00 || context ||
    [MAX_DERIVATION_BITS]32), i = 1, 2, ...; the label's zero octet is left out when the label
    already ends with one. Requests consume the stream in order, a partly used block is kept
    for the next request, and drawing more than MAX_DERIVATION_BITS in total is
    TPM_RC_NO_RESULT (the reference's DRBG_Generate() returns nothing then)."""

    def __init__(self, hash_alg: int, key: bytes, label: bytes, context: bytes) -> None:
        self._hash = HASHES[hash_alg]
        self._key = key
        if not label.endswith(b"\x00"):
            label += b"\x00"
        self._tail = label + context + MAX_DERIVATION_BITS.to_bytes(4, "big")
        self._counter = 0
        self._residual = b""

    def generate(self, n: int) -> bytes:
        """The next ``n`` octets of the stream."""
        if (self._counter * self._hash.size + n) * 8 > MAX_DERIVATION_BITS:
            raise TpmError(RC.NO_RESULT, detail="derivation KDF exhausted")
        out = self._residual[:n]
        self._residual = self._residual[n:]
        while len(out) < n:
            self._counter += 1
            block = self._hash.hmac(self._key, self._counter.to_bytes(4, "big"), self._tail)
            take = n - len(out)
            out += block[:take]
            self._residual = block[take:]
        return out


def derive_object(parent_public: Any, parent_secret: bytes, label: bytes, context: bytes,
                  public: Any, user_auth: bytes) -> Any:
    """Create a Derived Object (TPM2_CreateLoaded under a derivation parent, Part 3 §12.9):
    :func:`create_object` drawing every value from a :class:`KdfDrbg` keyed with the
    derivation parent's secret (its keyed-hash key, as the reference does) and the hash of the
    parent's XOR scheme, with ``label`` and ``context`` from TPMS_DERIVE. The caller's
    sensitive data is never used. Fills in ``public`` and returns the TPMT_SENSITIVE; the same
    parent, template, label and context always give the same key."""
    scheme = parent_public.parameters.scheme.details
    rand = KdfDrbg(scheme.hashAlg, parent_secret, label, context)
    return create_object(public, user_auth, b"", rand)
