"""Key generation (swtpm_py.tpm.keys): primary-key derivation checked octet for octet against
the real swtpm, RSA keys checked as keys, the DRBG's behaviour, and the derivation cache.

The golden vectors were measured on swtpm 0.7.1 / libtpms 0.9.2: a fresh swtpm made the primary
objects below, and its Primary Seeds and proofs were then read back from its state file (the
64-octet TPM2B values of its tpm2-00.permall). The same seed and template give swtpm_py the
same public area, octet for octet, for ECC (P-256, P-384, P-521), keyed-hash and symmetric
primaries, in the storage and the endorsement hierarchy: the DRBG, its derivation function, the
"Primary Object Creation" label, the template Name, the FIPS 186-4 B.4.1 scalar, the seedValue,
the unique field and the endorsement hierarchy's proof stirring all agree with the reference.
(RSA primaries use swtpm_py's own deterministic prime search, so they differ from swtpm's.)
:func:`test_live_swtpm_derivation` repeats the check against the installed swtpm.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from swtpm_py.tpm import keys
from swtpm_py.tpm.constants import ALG, RH
from swtpm_py.tpm.errors import TpmError
from swtpm_py.tpm.objects_wire import name_of, parse_public, public_bytes

from emulator import Emulator
from objcmd import (NULL_SYM, SIGNING, STORAGE, create_primary, ecc_template, flush,
                    keyedhash_template, rc, rsa_template, symcipher_template, u16)

#: swtpm 0.7.1's seeds and proofs (read from its state after making the vectors below).
SPS = bytes.fromhex("9feb12efc01e3118c0e1d63606de23ed55bba4e4510982c1e709e0f42081bc9d"
                    "57527efb174639688fe06ac4336fabe575988b6b4d7d806282c1e22cf504fc70")
EPS = bytes.fromhex("f69caf5c099c2a24c99704f3d4c2c1836c9e7bf4899477f2704f4b79fe8a8aa6"
                    "79db5626004a7f8850ebfbe25f0f352fcbe94e7f9c11a1e9dee4436cbbbab278")
SH_PROOF = bytes.fromhex("26890ab177d94f6d99b56298ffbf578c856a60206e3143f625c06e0b2adddeab"
                         "ec442e949eb90ea0e336f439d6c4e7dc94524129d32807ff346187153ba1e42e")
EH_PROOF = bytes.fromhex("329c471a4b3b9bfb1138263d489db4d12a82862a284e7ecce78aebbec6806f78"
                         "1a8b42ceab404584a59e09a69a4ac13b63552aa9591d77c1e522b296e8e01876")

#: (hierarchy, template TPMT_PUBLIC, sensitive data, swtpm's outPublic TPMT_PUBLIC), hex.
#: Templates are tpm2-pytss's "ecc256", "ecc384", "ecc521", "keyedhash", "aes128", one with
#: a preset unique field, and a sealed-data object.
VECTORS = [
    ("owner", "0023000b000600720000001000100003001000000000", "",
     "0023000b00060072000000100010000300100020f4eb4b19de4452bfef629223cb63b4cb953a2ea25e4b56db"
     "49434256901b55a80020eea81bc7cd23478263f63e995cfdf390d87e2f881c61db2ca45e78fdee0fdbbf"),
    ("owner", "0023000b000600720000001000100004001000000000", "",
     "0023000b0006007200000010001000040010003034bc549cbeb0ab7415751069a74e277bdfd22a25ccb8bb8c"
     "b82a40df840d1f08a248dfa112d14751dc22ef70eef4f1800030235965ea0679d019ad251cfbd69d40b5bd42"
     "652f8b1119a5222de58b3d97f181161359cdd3b71f3bfbd14888968eb351"),
    ("owner", "0023000b000600720000001000100005001000000000", "",
     "0023000b0006007200000010001000050010004200960731b3ce7ca48c79dde0701b7dd16c6556ffdf76cb99"
     "ac151bb61b3c63c20432ead7b46cc526c81b3a7a001cc0907cef89569e3b5233085a8dbadd87a12837dd0042"
     "010d0f7c8f42260dfb97c79574f3a2ea8fb9d42d9385a2da827761730f3f733c9f15c7c483c5b58e1a068085"
     "f99891c2339438b4ac9c3def1047ca1ea2a95ec0130b"),
    ("owner", "0008000b00060072000000100000", "",
     "0008000b0006007200000010002020d6fa1426f0d4b2c09a6fab7ffc7b95a0e29dd74cd2678d3ae25f4f2fc5"
     "4710"),
    ("owner", "0025000b0006007200000006008000100000", "",
     "0025000b0006007200000006008000100020858358d493c82ab0080da19115aff5fdf8942746fe0b7d4698ad"
     "b756c5051c87"),
    ("endorsement", "0023000b000600720000001000100003001000000000", "",
     "0023000b00060072000000100010000300100020bfb328e615c1068f5496e25ea4c1300a3563ff22e685c727"
     "2906a628090515f80020209cfd641c5894bba38564b1ee40aa4edb21080379cd9fb081aae060a52bdb86"),
    ("endorsement", "0023000b000600720000001000100004001000000000", "",
     "0023000b000600720000001000100004001000303f45cc599cd7a6be7280ec1265c2224ecd6c50e12a32888b"
     "fc135b725f908fada115e7ae3938345a5c1abadf03a59f3300301a7bdfe8841ecdd13fe73f62931faa71d9e8"
     "782cd3afb0a911cfe6439f76972fb1f12181607da392407deeb00d93e99e"),
    ("endorsement", "0023000b000600720000001000100005001000000000", "",
     "0023000b00060072000000100010000500100042005cb752eac501670d7ac4c31b052d97528922f35fa90436"
     "d89b9c17ed8a48a243a7764c50112ff24ae66437e4df6abea611d1a841edaa34cfc3d153557ce61c8d9d0042"
     "01d14c08f20b8bf03c4fea6e6232b42cd35def4965db46f97a48431db1ca08de60cbdce972565de5460c9be9"
     "708cdccde9cc0f638cc4d4fb18b2a33fefd01759f12f"),
    ("endorsement", "0008000b00060072000000100000", "",
     "0008000b0006007200000010002072c1cd88f3df738cbfdf6acc1278621f33fef5309c8d587b07750eb705c2"
     "ee16"),
    ("endorsement", "0025000b0006007200000006008000100000", "",
     "0025000b00060072000000060080001000207027bee787a9e4c4b86194e36e66bc6e81ef898b87ff47e0e9cd"
     "34bc9897361f"),
    ("owner", "0023000b000600720000001000100003001000206161616161616161616161616161616161616161"
     "61616161616161616161616100206262626262626262626262626262626262626262626262626262626262626"
     "262", "",
     "0023000b000600720000001000100003001000209d6b0fb448dc764949776c3ddf0a905982976f282302565d"
     "3c3fad02d0a84d5a002077a87ef738a040e6e7236cb8efb9acaf5d6e7299d11fab96a7f46f42da06dfa8"),
    ("owner", "0008000b00000052000000100000", b"seal me".hex(),
     "0008000b000000520000001000209ea4a5040084aaebb9a27b9d6dabef22e0b19d5ef4f005090264db5d0e8e"
     "f2db"),
]


def derive(seed: bytes, template: bytes, data: bytes = b"",
           proofs: tuple[bytes, ...] = ()) -> tuple[bytes, object]:
    """(public area, sensitive area) of the primary derived from ``seed`` and ``template``,
    computed afresh (the cache is cleared first)."""
    keys.PRIMARY_CACHE.clear()
    public = parse_public(template)
    sensitive = keys.derive_primary(seed, name_of(template, public.nameAlg), public, b"", data,
                                    eps_proofs=proofs)
    return public_bytes(public), sensitive


@pytest.mark.parametrize("hierarchy, template, data, expected", VECTORS,
                         ids=[f"{v[0]}-{v[1][:4]}-{i}" for i, v in enumerate(VECTORS)])
def test_golden_vectors_from_swtpm(hierarchy: str, template: str, data: str,
                                   expected: str) -> None:
    """The public area swtpm 0.7.1 derived from its seed is the one swtpm_py derives."""
    seed, proofs = (SPS, ()) if hierarchy == "owner" else (EPS, (SH_PROOF, EH_PROOF))
    public, _ = derive(seed, bytes.fromhex(template), bytes.fromhex(data), proofs)
    assert public.hex() == expected


def test_endorsement_proofs_only_change_the_seed_value() -> None:
    """Part 4 CryptCreateObject(): the endorsement hierarchy stirs shProof and ehProof into the
    DRBG after the key is made, so they change the seedValue (and the keyed-hash unique that
    hashes it) but not an asymmetric key."""
    ecc = bytes.fromhex(VECTORS[5][1])
    with_proofs = derive(EPS, ecc, proofs=(SH_PROOF, EH_PROOF))
    without = derive(EPS, ecc)
    assert with_proofs[0] == without[0]
    kh = bytes.fromhex(VECTORS[8][1])
    assert derive(EPS, kh, proofs=(SH_PROOF, EH_PROOF))[0] != derive(EPS, kh)[0]


def _permall_seeds(state_dir: Path) -> list[bytes]:
    """Every 64-octet TPM2B value in a swtpm state file (the seeds and proofs are among them)."""
    blob = (state_dir / "tpm2-00.permall").read_bytes()
    return [blob[i + 2:i + 66] for i in range(len(blob) - 66)
            if blob[i:i + 2] == b"\x00\x40"]


def test_live_swtpm_derivation(tmp_path: Path) -> None:
    """The installed swtpm's primaries, derived again by swtpm_py from the seeds in its state:
    an ECC P-256 signing key and a sealed object in the storage hierarchy, an ECC key and a
    keyed-hash key in the endorsement hierarchy (where the proofs count too)."""
    emu = Emulator("swtpm", tmp_path / "state").start()
    ecc = ecc_template(SIGNING, sym=NULL_SYM, scheme=u16(ALG.ECDSA, ALG.SHA256))
    hmac_key = keyedhash_template(SIGNING, scheme=u16(ALG.HMAC, ALG.SHA384))
    made = []
    try:
        for template, hierarchy, data in ((ecc, RH.OWNER, b""),
                                          (keyedhash_template(0x52), RH.OWNER, b"sealed"),
                                          (ecc, RH.ENDORSEMENT, b""),
                                          (hmac_key, RH.ENDORSEMENT, b"")):
            resp = emu.command(create_primary(template, hierarchy, data=data))
            assert rc(resp) == 0
            size = struct.unpack(">H", resp[18:20])[0]
            made.append((template, data, resp[20:20 + size]))
            assert rc(emu.command(flush(struct.unpack(">I", resp[10:14])[0]))) == 0
    finally:
        emu.cleanup()
    seeds = _permall_seeds(tmp_path / "state")
    sps = [s for s in seeds if derive(s, made[0][0])[0] == made[0][2]]
    assert len(sps) == 1
    assert derive(sps[0], made[1][0], made[1][1])[0] == made[1][2]
    eps = [s for s in seeds if derive(s, made[2][0])[0] == made[2][2]]
    assert len(eps) == 1 and eps != sps
    proofs = [(sh, eh) for sh, eh in itertools.product(seeds, repeat=2)
              if derive(eps[0], made[3][0], proofs=(sh, eh))[0] == made[3][2]]
    assert len(proofs) == 1


# ---------------------------------------------------------------------------- RSA


@pytest.mark.parametrize("bits", [1024, 2048, 3072])
def test_rsa_primary_is_a_valid_key(bits: int) -> None:
    """An RSA primary is a working key of the requested size: the modulus has exactly
    ``bits`` bits, the sensitive prime divides it, and ``cryptography`` signs and verifies
    with the key rebuilt from (n, e, p)."""
    template = rsa_template(SIGNING, sym=NULL_SYM, bits=bits)
    public_area, sensitive = derive(b"\x07" * 64, template)
    public = parse_public(public_area)
    n = int.from_bytes(public.unique, "big")
    p = int.from_bytes(sensitive.sensitive, "big")
    assert n.bit_length() == bits and len(sensitive.sensitive) == bits // 16
    assert n % p == 0 and p.bit_length() == bits // 2
    assert sensitive.seedValue == b""  # a signing key protects no children
    key = keys.rsa_private_numbers(n, 65537, p).private_key()
    sig = key.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(sig, b"message", padding.PKCS1v15(), hashes.SHA256())


def test_rsa_primary_is_deterministic_and_seed_bound() -> None:
    """Same seed and template: the same key. Another seed, or another template: another."""
    template = rsa_template()
    first = derive(b"\x01" * 64, template)
    assert derive(b"\x01" * 64, template) == first
    assert derive(b"\x02" * 64, template)[0] != first[0]
    assert derive(b"\x01" * 64, rsa_template(policy=b"p" * 32))[0] != first[0]
    # A storage key keeps a seed of its nameAlg's size for its children.
    assert len(first[1].seedValue) == 32


def test_rsa_exponents() -> None:
    """Exponent 0 means 65537; other exponents must be primes of at least 65537 (swtpm 0.7.1:
    TPM_RC_RANGE for 3, 17 and 65536; 65539 accepted)."""
    public_area, sensitive = derive(b"\x03" * 64, rsa_template(exponent=65539, bits=1024))
    n = int.from_bytes(parse_public(public_area).unique, "big")
    numbers = keys.rsa_private_numbers(n, 65539, int.from_bytes(sensitive.sensitive, "big"))
    assert pow(pow(12345, 65539, n), numbers.d, n) == 12345
    for bad in (3, 17, 65536, 65541 * 3):
        with pytest.raises(TpmError) as err:
            keys.rsa_exponent(bad)
        assert err.value.rc == 0x08D


def test_rsa_binding_errors() -> None:
    """A prime that does not divide the modulus is TPM_RC_BINDING."""
    with pytest.raises(TpmError) as err:
        keys.rsa_private_numbers(3 * 5 * 7, 65537, 11)
    assert err.value.rc == 0x0A5


# ---------------------------------------------------------------------------- ECC and DRBG


@pytest.mark.parametrize("curve_id", sorted(c for c, curve in keys.CURVES.items()
                                             if curve.curve is not None))
def test_ecc_keys_are_on_their_curve(curve_id: int) -> None:
    """The derived scalar is in [1, n-1], the point is d·G, and ``cryptography`` verifies an
    ECDSA signature made with it."""
    curve = keys.CURVES[curve_id]
    public_area, sensitive = derive(os.urandom(64), ecc_template(curve=curve_id))
    public = parse_public(public_area)
    d = int.from_bytes(sensitive.sensitive, "big")
    assert 1 <= d < curve.order and len(sensitive.sensitive) == curve.size
    key = ec.derive_private_key(d, curve.curve)
    nums = key.public_key().public_numbers()
    assert (nums.x, nums.y) == (int.from_bytes(public.unique.x, "big"),
                                int.from_bytes(public.unique.y, "big"))
    sig = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    ec.EllipticCurvePublicNumbers(nums.x, nums.y, curve.curve).public_key().verify(
        sig, b"m", ec.ECDSA(hashes.SHA256()))


def test_drbg_output_depends_on_request_sizes() -> None:
    """Part 4 DRBG_Generate(): every request ends with a state update, so two requests of 16
    octets differ from one of 32 — the order and sizes of the draws are part of the method."""
    a = keys.SeededDrbg(b"seed", b"purpose\x00", b"name", b"")
    b = keys.SeededDrbg(b"seed", b"purpose\x00", b"name", b"")
    first = a.generate(16) + a.generate(16)
    second = b.generate(32)
    assert first[:16] == second[:16] and first[16:] != second[16:]
    c = keys.SeededDrbg(b"seed", b"purpose\x00", b"name", b"x")
    assert c.generate(16) != second[:16]


def test_derivation_function_length_is_bound() -> None:
    """The derivation function absorbs the input length (DfStart()), so an input and the same
    input with a trailing zero octet (the padding would otherwise hide it) differ."""
    assert keys.derivation_function(b"ab") != keys.derivation_function(b"ab\x00")
    assert len(keys.derivation_function(b"")) == 48


# ---------------------------------------------------------------------------- the cache


def test_cache_returns_what_the_derivation_computes() -> None:
    """A cache hit is exactly the derived key, and makes an RSA-2048 primary fast."""
    seed, template = b"\x05" * 64, rsa_template()
    fresh = derive(seed, template)
    public = parse_public(template)
    start = time.perf_counter()
    sensitive = keys.derive_primary(seed, name_of(template, public.nameAlg), public, b"", b"")
    elapsed = time.perf_counter() - start
    assert (public_bytes(public), sensitive) == fresh
    assert elapsed < 0.05


def test_symmetric_primaries_use_template_sizes() -> None:
    """A symmetric primary's key has the template's size; its unique field is the HMAC of the
    key under the seedValue for a parent and a plain hash otherwise (Part 1 "Object Creation")."""
    storage = symcipher_template(STORAGE, bits=256)
    public_area, sensitive = derive(b"\x09" * 64, storage)
    public = parse_public(public_area)
    assert len(sensitive.sensitive) == 32 and len(sensitive.seedValue) == 32
    import hashlib
    import hmac
    assert public.unique == hmac.new(sensitive.seedValue, sensitive.sensitive,
                                     hashlib.sha256).digest()
