"""The algorithms this TPM implements: one registry that GetCapability(ALGS), the self tests,
TPM2_TestParms and the object commands all draw from.

An algorithm is listed only when some command can use it. Each entry carries its
TPMA_ALGORITHM attributes (Part 2 §8.2, values from the TCG Algorithm Registry), the roles it
plays in the TPMI_ALG_* interface types (Part 2 §9.27-9.31: which union selectors accept it), the
shape of its scheme details, the key sizes it supports, and its known-answer self test.

Implementing a new algorithm is one :func:`register` call, e.g. for AES::

    register(Algorithm(ALG.AES, AlgAttr.SYMMETRIC, {Role.SYM_OBJECT, Role.SYM},
                       key_bits=(128, 256), self_test=aes_kat))

after which GetCapability lists it, TPMT_PUBLIC_PARMS accepts it where Part 2 allows it, and the
self tests cover it. ECC curves have their own registry (:data:`ECC_CURVES`,
GetCapability(ECC_CURVES), TPMI_ECC_CURVE).

The second half of this module declares the wire types whose allowed values come from the
registry (TPMT_PUBLIC_PARMS and its parts, Part 2 §11-12), each rejecting a value outside its
TPMI type with the response code Part 2 gives that type.
"""

from __future__ import annotations

import enum
import hmac as _hmac
from dataclasses import dataclass, field
from typing import Any, Callable

import construct as c

from . import crypto, symcipher
from .constants import ALG, RC, AlgAttr, ECC_CURVE
from .errors import TpmError
from .wire import TPMI_ALG_HASH, UINT16, UINT32, Checked

# ---------------------------------------------------------------------------- the registry


class Role(enum.Enum):
    """Where an algorithm identifier is accepted: one role per TPMI_ALG_* type (Part 2 §9)."""

    #: TPMI_ALG_HASH: a hash algorithm (registry type "H" only).
    HASH = "hash"
    #: TPMI_ALG_PUBLIC: the type of an object (Part 2 §12.2.2).
    PUBLIC = "public"
    #: TPMI_ALG_KEYEDHASH_SCHEME: HMAC or XOR (Part 2 §11.1.19).
    KEYEDHASH_SCHEME = "keyedhash-scheme"
    #: TPMI_ALG_KDF: a key derivation function (Part 2 §9.31).
    KDF = "kdf"
    #: TPMI_ALG_SYM: a symmetric algorithm for sessions (XOR or a block cipher; Part 2 §9.28).
    SYM = "sym"
    #: TPMI_ALG_SYM_OBJECT: a block cipher for objects (Part 2 §9.29).
    SYM_OBJECT = "sym-object"
    #: TPMI_ALG_SYM_MODE: a block cipher mode (Part 2 §9.30).
    SYM_MODE = "sym-mode"
    #: TPMI_ALG_RSA_SCHEME: an RSA signing or encryption scheme (Part 2 §11.2.4.1).
    RSA_SCHEME = "rsa-scheme"
    #: TPMI_ALG_ECC_SCHEME: an ECC signing or key-exchange scheme (Part 2 §11.2.5.4).
    ECC_SCHEME = "ecc-scheme"
    #: TPMI_ALG_SIG_SCHEME: a signature scheme (Part 2 §11.2.1.4).
    SIG_SCHEME = "sig-scheme"


class Details(enum.Enum):
    """The scheme details an algorithm selects in the TPMU_*_SCHEME unions (Part 2 §11.1-11.2)."""

    #: No details (TPMS_EMPTY): RSAES, TPM_ALG_NULL, and algorithms that are no schemes.
    NONE = "none"
    #: One hashAlg: TPMS_SCHEME_HASH and its aliases (HMAC, RSASSA, OAEP, ECDSA, the KDFs ...).
    HASH = "hash"
    #: hashAlg then kdf: TPMS_SCHEME_XOR.
    HASH_KDF = "hash-kdf"
    #: hashAlg then a UINT16 count: TPMS_SCHEME_ECDAA.
    HASH_COUNT = "hash-count"


@dataclass(frozen=True)
class Algorithm:
    """One implemented algorithm.

    ``attributes`` is its TPMA_ALGORITHM as GetCapability(ALGS) reports it; ``roles`` the TPMI
    types that accept it; ``details`` what follows it as a scheme selector; ``key_bits`` the
    key sizes of a cipher or RSA (TPMI_*_KEY_BITS); ``self_test`` its known-answer test, which
    returns False when the implementation computes a wrong answer.
    """

    alg: int
    attributes: AlgAttr
    roles: frozenset[Role] = frozenset()
    details: Details = Details.NONE
    key_bits: tuple[int, ...] = ()
    self_test: Callable[[], bool] | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", ALG(self.alg).name)


#: Implemented algorithms by TPM_ALG_ID, filled by :func:`register`.
ALGORITHMS: dict[int, Algorithm] = {}

#: Implemented ECC curves (TPM_ECC_CURVE -> key size in bits), in curve-id order when listed;
#: filled with :func:`register_curve` below.
ECC_CURVES: dict[int, int] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Add ``algorithm`` to the registry (once per algorithm)."""
    if algorithm.alg in ALGORITHMS:
        raise RuntimeError(f"algorithm {algorithm.name} registered twice")
    ALGORITHMS[algorithm.alg] = algorithm
    return algorithm


def register_curve(curve: ECC_CURVE, key_bits: int) -> None:
    """Add an implemented ECC curve (TPMI_ECC_CURVE, GetCapability(ECC_CURVES))."""
    if curve in ECC_CURVES:
        raise RuntimeError(f"curve {curve.name} registered twice")
    ECC_CURVES[int(curve)] = key_bits


def implemented() -> list[Algorithm]:
    """Every implemented algorithm, in TPM_ALG_ID order (the order GetCapability lists them)."""
    return [ALGORITHMS[a] for a in sorted(ALGORITHMS)]


def with_role(role: Role) -> frozenset[int]:
    """The algorithm ids that the TPMI type of ``role`` accepts (TPM_ALG_NULL never included)."""
    return frozenset(a for a, info in ALGORITHMS.items() if role in info.roles)


def testable() -> list[Algorithm]:
    """The algorithms that have a self test, in TPM_ALG_ID order."""
    return [a for a in implemented() if a.self_test is not None]


# ---------------------------------------------------------------------------- self tests
#
# Known-answer tests from published vectors. Each compares the implementation's answer with the
# published one: a wrong answer means the implementation is broken, and the TPM enters failure
# mode (Part 1 §12.3: a failed self test puts the TPM in Failure mode).

#: FIPS 180-2 appendix examples: the digest of "abc".
_HASH_ABC = {
    ALG.SHA1: "a9993e364706816aba3e25717850c26c9cd0d89d",
    ALG.SHA256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ALG.SHA384: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                "8086072ba1e7cc2358baeca134c825a7",
    ALG.SHA512: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
}
#: HMAC test case 2 of RFC 2202 (SHA-1) and RFC 4231 (SHA-2): key "Jefe",
#: data "what do ya want for nothing?".
_HMAC_KEY, _HMAC_DATA = b"Jefe", b"what do ya want for nothing?"
_HMAC_JEFE = {
    ALG.SHA1: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
    ALG.SHA256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ALG.SHA384: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                "8e2240ca5e69e2c78b3239ecfab21649",
    ALG.SHA512: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
}
#: The KDFa vector of the TCG reference implementation's self test (Part 4, KDF test data):
#: SHA-256, 160 bits.
KDFA_VECTOR = dict(
    hash_alg=ALG.SHA256,
    key=bytes.fromhex("271fa08bbdc5060ec3dfa928ff9b73123a12da0c"),
    label=b"KDFSELFTESTLABEL",
    context_u=bytes.fromhex("ce244f395dca7391"),
    context_v=bytes.fromhex("da504031ddf12e83"),
    bits=160,
    expected=bytes.fromhex("bb0259e1c8ba607e6a2cd704b69a902e9ade84c4"),
)


def _hash_kat(alg: ALG) -> Callable[[], bool]:
    """The known-answer test of hash ``alg``: its digest of "abc" and HMAC test case 2 (the
    TPM's HMAC is built on the hash, so the hash test covers HMAC with it, as in Part 4)."""

    def test() -> bool:
        h = crypto.HASHES[alg]
        ok_hash = _hmac.compare_digest(h.digest(b"abc"), bytes.fromhex(_HASH_ABC[alg]))
        ok_hmac = _hmac.compare_digest(h.hmac(_HMAC_KEY, _HMAC_DATA),
                                       bytes.fromhex(_HMAC_JEFE[alg]))
        return ok_hash and ok_hmac

    test.__name__ = f"kat_{alg.name.lower()}"
    return test


#: SP 800-38A appendix F.3.13, F.3.15 and F.3.17: CFB128-AES128/192/256 encryption of the
#: first plaintext block under the published keys and IV.
AES_CFB_VECTORS = {
    128: "2b7e151628aed2a6abf7158809cf4f3c",
    192: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
    256: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
}
AES_CFB_IV = "000102030405060708090a0b0c0d0e0f"
AES_CFB_PLAINTEXT = "6bc1bee22e409f96e93d7e117393172a"
AES_CFB_CIPHERTEXT = {
    128: "3b3fd92eb72dad20333449f8e83cfb4a",
    192: "cdc80d6fddf18cab34c25909c99a4174",
    256: "dc7e84bfda79164b7ecd8486985d3860",
}


def _aes_kat() -> bool:
    """The known-answer test of AES in CFB mode (the mode that protects every sensitive area)
    with the SP 800-38A vectors, for each key size, both directions."""
    iv, pt = bytes.fromhex(AES_CFB_IV), bytes.fromhex(AES_CFB_PLAINTEXT)
    for bits, key in AES_CFB_VECTORS.items():
        k, ct = bytes.fromhex(key), bytes.fromhex(AES_CFB_CIPHERTEXT[bits])
        if not _hmac.compare_digest(symcipher.cfb_encrypt(ALG.AES, k, iv, pt), ct):
            return False
        if not _hmac.compare_digest(symcipher.cfb_decrypt(ALG.AES, k, iv, ct), pt):
            return False
    return True


def _kdfa_kat() -> bool:
    """The known-answer test of KDFa (Part 1 §11.4.10.2) with :data:`KDFA_VECTOR`."""
    v = KDFA_VECTOR
    out = crypto.kdfa(v["hash_alg"], v["key"], v["label"], v["context_u"], v["context_v"],
                      v["bits"])
    return _hmac.compare_digest(out, v["expected"])


# ---------------------------------------------------------------------------- what is implemented
#
# TPMA_ALGORITHM values are the TCG Algorithm Registry's classification of each algorithm;
# swtpm 0.7.1 reports the same values for these algorithms.

for _alg in crypto.HASHES:
    register(Algorithm(_alg, AlgAttr.HASH, frozenset({Role.HASH}),
                       self_test=_hash_kat(ALG(_alg))))
# HMAC: a keyed-hash object scheme and a signature scheme (with an HMAC key), Part 2 §11.1.19.
register(Algorithm(ALG.HMAC, AlgAttr.HASH | AlgAttr.SIGNING,
                   frozenset({Role.KEYEDHASH_SCHEME, Role.SIG_SCHEME}), Details.HASH))
# KEYEDHASH: the object type of HMAC keys and sealed data, Part 2 §12.2.3.6.
register(Algorithm(ALG.KEYEDHASH,
                   AlgAttr.HASH | AlgAttr.OBJECT | AlgAttr.SIGNING | AlgAttr.ENCRYPTING,
                   frozenset({Role.PUBLIC})))
# XOR: the hash-based obfuscation of Part 1 §11.4.6.3, a keyed-hash scheme and a session cipher.
register(Algorithm(ALG.XOR, AlgAttr.HASH | AlgAttr.SYMMETRIC,
                   frozenset({Role.KEYEDHASH_SCHEME, Role.SYM}), Details.HASH_KDF))
# KDF1_SP800_108: KDFa (Part 1 §11.4.10.2), the KDF of XOR and of every TPM key derivation.
register(Algorithm(ALG.KDF1_SP800_108, AlgAttr.HASH | AlgAttr.METHOD, frozenset({Role.KDF}),
                   Details.HASH, self_test=_kdfa_kat))

# The object types (Part 2 §12.2.2), with the key sizes this TPM generates and loads: RSA
# 1024-3072 (as swtpm 0.7.1, whose MAX_RSA_KEY_BITS is 3072), ECC on the curves registered
# below, symmetric ciphers (AES) and keyed hashes (above).
register(Algorithm(ALG.RSA, AlgAttr.ASYMMETRIC | AlgAttr.OBJECT, frozenset({Role.PUBLIC}),
                   key_bits=(1024, 2048, 3072)))
register(Algorithm(ALG.ECC, AlgAttr.ASYMMETRIC | AlgAttr.OBJECT, frozenset({Role.PUBLIC})))
register(Algorithm(ALG.SYMCIPHER, AlgAttr.OBJECT, frozenset({Role.PUBLIC})))
# AES: the block cipher of storage keys (TPMT_SYM_DEF_OBJECT) and of symcipher objects.
# 128 and 256 bits only, like swtpm 0.7.1 (libtpms' profile leaves AES-192 out): a key or
# session that works here must work on the swtpm it replaces, and the other way round.
register(Algorithm(ALG.AES, AlgAttr.SYMMETRIC, frozenset({Role.SYM_OBJECT, Role.SYM}),
                   key_bits=(128, 256), self_test=_aes_kat))
# CFB: the mode of every TPM-internal encryption (Part 1 "Protected Storage").
register(Algorithm(ALG.CFB, AlgAttr.SYMMETRIC | AlgAttr.ENCRYPTING, frozenset({Role.SYM_MODE})))
# CTR, OFB, CBC and ECB: the other modes of TPM2_EncryptDecrypt (Part 3 §15.2;
# symcipher.encrypt_decrypt), which swtpm 0.7.1 lists with the same attributes.
for _mode in (ALG.CTR, ALG.OFB, ALG.CBC, ALG.ECB):
    register(Algorithm(_mode, AlgAttr.SYMMETRIC | AlgAttr.ENCRYPTING,
                       frozenset({Role.SYM_MODE})))
# Asymmetric schemes a key may carry (Part 2 §11.2): the object commands create and load keys
# with them, and check them against the key's attributes (sign/decrypt/restricted).
_SIG, _ENC = AlgAttr.ASYMMETRIC | AlgAttr.SIGNING, AlgAttr.ASYMMETRIC | AlgAttr.ENCRYPTING
register(Algorithm(ALG.RSASSA, _SIG, frozenset({Role.RSA_SCHEME, Role.SIG_SCHEME}),
                   Details.HASH))
register(Algorithm(ALG.RSAES, _ENC, frozenset({Role.RSA_SCHEME})))
register(Algorithm(ALG.RSAPSS, _SIG, frozenset({Role.RSA_SCHEME, Role.SIG_SCHEME}),
                   Details.HASH))
register(Algorithm(ALG.OAEP, _ENC, frozenset({Role.RSA_SCHEME}), Details.HASH))
register(Algorithm(ALG.ECDSA, _SIG, frozenset({Role.ECC_SCHEME, Role.SIG_SCHEME}),
                   Details.HASH))
register(Algorithm(ALG.ECDH, AlgAttr.ASYMMETRIC | AlgAttr.METHOD, frozenset({Role.ECC_SCHEME}),
                   Details.HASH))
register(Algorithm(ALG.ECSCHNORR, _SIG, frozenset({Role.ECC_SCHEME, Role.SIG_SCHEME}),
                   Details.HASH))
# ECDAA (Part 1 "ECDAA"): the anonymous signing scheme whose details carry the commit
# counter (TPMS_SCHEME_ECDAA); signing pairs with TPM2_Commit (commands/ecc.py).
register(Algorithm(ALG.ECDAA, _SIG, frozenset({Role.ECC_SCHEME, Role.SIG_SCHEME}),
                   Details.HASH_COUNT))

#: The signing schemes of each asymmetric key type (the reference's CryptIsAsymSignScheme).
SIGN_SCHEMES: dict[int, frozenset[int]] = {
    ALG.RSA: frozenset({ALG.RSASSA, ALG.RSAPSS}),
    ALG.ECC: frozenset({ALG.ECDSA, ALG.ECDAA, ALG.ECSCHNORR}),
}
#: The decryption schemes of each asymmetric key type (CryptIsAsymDecryptScheme): RSA
#: encryption paddings, and ECDH as the key-exchange "decryption" of an ECC key.
DECRYPT_SCHEMES: dict[int, frozenset[int]] = {
    ALG.RSA: frozenset({ALG.RSAES, ALG.OAEP}),
    ALG.ECC: frozenset({ALG.ECDH}),
}

# The NIST prime curves of FIPS 186-4 (through ``cryptography``) and BN P-256 (pure Python,
# ecmath.py; the curve of ECDAA): the curves ECC keys use.
for _curve, _bits in ((ECC_CURVE.NIST_P256, 256), (ECC_CURVE.NIST_P384, 384),
                      (ECC_CURVE.NIST_P521, 521), (ECC_CURVE.BN_P256, 256)):
    register_curve(_curve, _bits)

del _alg, _mode, _SIG, _ENC, _curve, _bits

# ---------------------------------------------------------------------------- wire types


class _ContextChecked(c.Adapter):
    """Like :class:`~swtpm_py.tpm.wire.Checked`, but the check also sees the enclosing
    structure (a key size is valid or not depending on the algorithm before it)."""

    def __init__(self, subcon: c.Construct, check: Callable[[Any, Any], None]) -> None:
        super().__init__(subcon)
        self.check = check

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        self.check(obj, context)
        return obj

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return obj


def _selector(role: Role, rc: RC, allow_null: bool) -> Callable[[int], None]:
    """A TPMI_ALG_* check: the algorithms of ``role`` (and TPM_ALG_NULL for a '+' type);
    anything else is ``rc`` (the code Part 2 gives the type)."""

    def check(alg: int) -> None:
        if alg in with_role(role) or (allow_null and alg == ALG.NULL):
            return
        raise TpmError(rc, detail=f"algorithm 0x{alg:04x} is not a {role.value}")

    return check


def tpmi_alg(role: Role, rc: RC, allow_null: bool = False) -> c.Construct:
    """A TPMI_ALG_* wire type backed by the registry."""
    return Checked(UINT16, _selector(role, rc, allow_null))


def details_of(alg: int) -> Details:
    """The scheme details that follow selector ``alg`` (none for TPM_ALG_NULL)."""
    info = ALGORITHMS.get(alg)
    return info.details if info is not None else Details.NONE


#: TPMI_ALG_KDF+ (Part 2 §9.31: TPM_RC_KDF).
TPMI_ALG_KDF_NULL = tpmi_alg(Role.KDF, RC.KDF, allow_null=True)

#: The scheme details unions, by shape (Part 2 §11.1.17-11.2.3): TPMS_SCHEME_HASH,
#: TPMS_SCHEME_XOR, TPMS_SCHEME_ECDAA, TPMS_EMPTY.
SCHEME_DETAILS: dict[Details, c.Construct] = {
    Details.NONE: c.Struct(),
    Details.HASH: c.Struct("hashAlg" / TPMI_ALG_HASH),
    Details.HASH_KDF: c.Struct("hashAlg" / TPMI_ALG_HASH, "kdf" / TPMI_ALG_KDF_NULL),
    Details.HASH_COUNT: c.Struct("hashAlg" / TPMI_ALG_HASH, "count" / UINT16),
}


def scheme(selector: c.Construct) -> c.Construct:
    """A TPMT_*_SCHEME: the selector, then the details it selects."""
    return c.Struct("scheme" / selector,
                    "details" / c.Switch(lambda ctx: details_of(ctx.scheme), SCHEME_DETAILS))


def _check_key_bits(alg: int, bits: int) -> None:
    # Part 2 §11.1.5 TPMI_!ALG.S_KEY_BITS and §11.2.4.6 TPMI_RSA_KEY_BITS: a key size the
    # algorithm does not support is TPM_RC_VALUE.
    if bits not in ALGORITHMS[alg].key_bits:
        raise TpmError(RC.VALUE, detail=f"{bits}-bit key for 0x{alg:04x}")


def sym_def_object(allow_null: bool) -> c.Construct:
    """TPMT_SYM_DEF_OBJECT(+) (Part 2 §11.1.7): a block cipher, its key size and its mode;
    only the algorithm when it is TPM_ALG_NULL. A cipher that is not implemented is
    TPM_RC_SYMMETRIC, a mode TPM_RC_MODE (TPMI_ALG_SYM_MODE+ allows NULL)."""
    not_null = c.this.algorithm != ALG.NULL
    return c.Struct(
        "algorithm" / tpmi_alg(Role.SYM_OBJECT, RC.SYMMETRIC, allow_null),
        "keyBits" / c.If(not_null, _ContextChecked(
            UINT16, lambda bits, ctx: _check_key_bits(ctx.algorithm, bits))),
        "mode" / c.If(not_null, tpmi_alg(Role.SYM_MODE, RC.MODE, allow_null=True)),
    )


def _check_curve(curve: int) -> None:
    # Part 2 §11.2.5.5 TPMI_ECC_CURVE: a curve the TPM does not implement is TPM_RC_CURVE.
    if curve not in ECC_CURVES:
        raise TpmError(RC.CURVE, detail=f"curve 0x{curve:04x}")


#: TPMS_KEYEDHASH_PARMS (Part 2 §12.2.3.3): TPMT_KEYEDHASH_SCHEME+ whose selector is
#: TPMI_ALG_KEYEDHASH_SCHEME+ (TPM_RC_VALUE).
TPMS_KEYEDHASH_PARMS = c.Struct(
    "scheme" / scheme(tpmi_alg(Role.KEYEDHASH_SCHEME, RC.VALUE, allow_null=True)))
#: TPMS_SYMCIPHER_PARMS (Part 2 §12.2.3.5): a cipher is required (no NULL).
TPMS_SYMCIPHER_PARMS = c.Struct("sym" / sym_def_object(allow_null=False))
#: TPMS_RSA_PARMS (Part 2 §12.2.3.5): TPMI_ALG_RSA_SCHEME+ is TPM_RC_VALUE.
TPMS_RSA_PARMS = c.Struct(
    "symmetric" / sym_def_object(allow_null=True),
    "scheme" / scheme(tpmi_alg(Role.RSA_SCHEME, RC.VALUE, allow_null=True)),
    "keyBits" / Checked(UINT16, lambda bits: _check_key_bits(ALG.RSA, bits)),
    "exponent" / UINT32,
)
#: TPMS_ECC_PARMS (Part 2 §12.2.3.6): TPMI_ALG_ECC_SCHEME+ is TPM_RC_SCHEME, the curve
#: TPM_RC_CURVE, the KDF scheme's selector TPM_RC_KDF.
TPMS_ECC_PARMS = c.Struct(
    "symmetric" / sym_def_object(allow_null=True),
    "scheme" / scheme(tpmi_alg(Role.ECC_SCHEME, RC.SCHEME, allow_null=True)),
    "curveID" / Checked(UINT16, _check_curve),
    "kdf" / scheme(TPMI_ALG_KDF_NULL),
)

#: TPMI_ALG_PUBLIC (Part 2 §12.2.2): an object type the TPM does not implement is TPM_RC_TYPE.
TPMI_ALG_PUBLIC = tpmi_alg(Role.PUBLIC, RC.TYPE)

#: TPMU_PUBLIC_PARMS by object type (Part 2 §12.2.3.7).
TPMU_PUBLIC_PARMS = {
    ALG.KEYEDHASH: TPMS_KEYEDHASH_PARMS,
    ALG.SYMCIPHER: TPMS_SYMCIPHER_PARMS,
    ALG.RSA: TPMS_RSA_PARMS,
    ALG.ECC: TPMS_ECC_PARMS,
}

#: TPMT_PUBLIC_PARMS (Part 2 §12.2.3.8): the parameters of an object type, what
#: TPM2_TestParms checks and the public area of every object carries.
TPMT_PUBLIC_PARMS = c.Struct(
    "type" / TPMI_ALG_PUBLIC,
    "parameters" / c.Switch(c.this.type, TPMU_PUBLIC_PARMS),
)
