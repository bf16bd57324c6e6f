"""The two-phase ECC commands: TPM2_Commit (Part 3 §19.2), TPM2_EC_Ephemeral (§19.3) and
TPM2_ZGen_2Phase (§14.7), with the commit state they share with ECDAA signing (Part 1 "Commit";
the reference's CryptGenerateR(), CryptCommit() and CryptEndCommit()).

Each commit hands out a count (the low 16 bits of a 64-bit counter, state-reset data) and marks
it outstanding in a 128-slot array; the random value r of a commit is never stored but derived
again when it is used, from a per-reset secret nonce, the key's Name (none for
EC_Ephemeral/ZGen_2Phase) and the full count. Using a count (ECDAA signing, ZGen_2Phase)
clears its slot, so a count works once; one that is not outstanding, or is older than the
array remembers, is refused with TPM_RC_VALUE.

Check order and response codes follow swtpm 0.7.1 (libtpms), measured by
tests/test_ecc_extras.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import ecmath
from ..constants import ALG, CC, RC
from ..crypto import HASHES
from ..errors import TpmError
from ..keys import SeededDrbg
from ..objects import TpmObject, check_object_handle
from ..objects_wire import TPM2B_ECC_PARAMETER, TPM2B_ECC_POINT, TPMI_ECC_CURVE, ObjectAttr
from ..registry import Auth, HandleSpec, command
from ..signatures import ecdaa_count, sign
from ..wire import TPM2B_SENSITIVE_DATA, UINT16, Checked
from .asym import private_key_object

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: Slots of the commit array (the reference's gr.commitArray: 16 octets).
COMMIT_SLOTS = 128
#: The purpose label of a commit's random value (a NUL-terminated string, as the reference's
#: COMMIT_STRING).
COMMIT_LABEL = b"ECDAA Commit\x00"
#: Size of the per-reset commit nonce.
COMMIT_NONCE_BYTES = 32


# ---------------------------------------------------------------------------- commit state


def _full_count(tpm: Tpm, count: int) -> int | None:
    """The outstanding commit whose low 16 bits are ``count``, as its full 64-bit count, or
    None when there is none (never issued, already used, or too old to be remembered)."""
    reset = tpm.vol.state_reset
    current = reset.commit_counter
    full = (current & ~0xFFFF) | count
    if full >= current:
        full -= 0x10000
    if full < 0 or current - full > COMMIT_SLOTS:
        return None
    if not reset.commit_array >> (full % COMMIT_SLOTS) & 1:
        return None
    return full


def _commit_random(tpm: Tpm, curve_id: int, name: bytes, full: int) -> int:
    """CryptGenerateR(): the random value 0 < r < n of commit ``full`` on the curve, drawn
    from a DRBG seeded with the commit nonce, the label, ``name`` and the count."""
    reset = tpm.vol.state_reset
    if not reset.commit_nonce:
        reset.commit_nonce = tpm.drbg.generate(COMMIT_NONCE_BYTES)
    n = ecmath.DOMAINS[curve_id].n
    size = (n.bit_length() + 7) // 8
    drbg = SeededDrbg(reset.commit_nonce, COMMIT_LABEL, name, full.to_bytes(8, "big"))
    while True:
        r = int.from_bytes(drbg.generate(size), "big") & ((1 << n.bit_length()) - 1)
        if 0 < r < n:
            return r


def _next_random(tpm: Tpm, curve_id: int, name: bytes) -> int:
    """The random value the next commit (not yet counted) will have."""
    return _commit_random(tpm, curve_id, name, tpm.vol.state_reset.commit_counter)


def _commit(tpm: Tpm) -> int:
    """CryptCommit(): count the commit whose random value was just used, mark it outstanding
    and return its 16-bit count."""
    reset = tpm.vol.state_reset
    count = reset.commit_counter
    reset.commit_array |= 1 << (count % COMMIT_SLOTS)
    reset.commit_counter = count + 1
    return count & 0xFFFF


def _end_commit(tpm: Tpm, full: int) -> None:
    """CryptEndCommit(): the commit has been used."""
    tpm.vol.state_reset.commit_array &= ~(1 << (full % COMMIT_SLOTS))


def committed_random(tpm: Tpm, curve_id: int, name: bytes, count: int) -> tuple[int, int]:
    """(r, full count) of the outstanding commit ``count``; TPM_RC_VALUE (unnumbered) when
    it is not outstanding."""
    full = _full_count(tpm, count)
    if full is None:
        raise TpmError(RC.VALUE, detail=f"commit count {count} is not outstanding")
    return _commit_random(tpm, curve_id, name, full), full


def ecdaa_sign(tpm: Tpm, key: TpmObject, in_scheme: Any, hash_alg: int,
               digest: bytes) -> dict:
    """CryptSign() for ECDAA (BnSignEcdaa()): sign with the random value committed by
    TPM2_Commit for the scheme's count, then retire the count. A count that is not
    outstanding is TPM_RC_VALUE (unnumbered, as swtpm 0.7.1 answers TPM2_Sign)."""
    curve_id = key.public.parameters.curveID
    r, full = committed_random(tpm, curve_id, key.name, ecdaa_count(key, in_scheme))
    signature = sign(key, ALG.ECDAA, hash_alg, digest, tpm.drbg, ecdaa_r=r)
    _end_commit(tpm, full)
    return signature


# ---------------------------------------------------------------------------- helpers


def _point(domain: ecmath.Domain, value: Any) -> tuple[int, int] | None:
    """A TPMS_ECC_POINT as integers when it lies on the curve (coordinates no longer than the
    curve's), else None."""
    if len(value.x) > domain.size or len(value.y) > domain.size:
        return None
    x, y = int.from_bytes(value.x, "big"), int.from_bytes(value.y, "big")
    return (x, y) if domain.contains(x, y) else None


def _octets(domain: ecmath.Domain, point: tuple[int, int] | None) -> dict:
    """A TPMS_ECC_POINT of coordinates of the curve's size (empty for no point)."""
    if point is None:
        return dict(x=b"", y=b"")
    return dict(x=point[0].to_bytes(domain.size, "big"), y=point[1].to_bytes(domain.size, "big"))


def _product(domain: ecmath.Domain, k: int, point: tuple[int, int]) -> tuple[int, int]:
    """[k]point; the point at infinity is TPM_RC_NO_RESULT (CryptEccPointMultiply())."""
    result = domain.multiply(k, point)
    if result is None:
        raise TpmError(RC.NO_RESULT, detail="point at infinity")
    return result


def _check_key_exchange(alg: int) -> None:
    # Part 2 §11.2.5.4 TPMI_ECC_KEY_EXCHANGE: the key-exchange schemes this TPM implements
    # (ECDH; libtpms in swtpm 0.7.1 has no ECMQV either, and SM2 needs SM3); anything else is
    # TPM_RC_SCHEME.
    if alg != ALG.ECDH:
        raise TpmError(RC.SCHEME, detail=f"0x{alg:04x} is not a key-exchange scheme")


TPMI_ECC_KEY_EXCHANGE = Checked(UINT16, _check_key_exchange)


# ---------------------------------------------------------------------------- commands


@command(CC.EC_Ephemeral,
         params=(TPMI_ECC_CURVE,),
         response=(TPM2B_ECC_POINT, UINT16))
def ec_ephemeral(ctx: CommandContext, curve_id: int) -> tuple[dict, int]:
    """Part 3 §19.3: the first phase of a two-phase key exchange: Q = [r]G on ``curveID``
    for the random value r of a new commit, and the commit's count (which TPM2_ZGen_2Phase
    then uses)."""
    domain = ecmath.DOMAINS[curve_id]
    r = _next_random(ctx.tpm, curve_id, b"")
    q = _product(domain, r, domain.generator)
    return _octets(domain, q), _commit(ctx.tpm)


@command(CC.ZGen_2Phase,
         handles=(HandleSpec("keyA", check_object_handle, Auth.USER),),
         params=(TPM2B_ECC_POINT, TPM2B_ECC_POINT, TPMI_ECC_KEY_EXCHANGE, UINT16),
         response=(TPM2B_ECC_POINT, TPM2B_ECC_POINT))
def zgen_2phase(ctx: CommandContext, key_a: int, qs_b: Any, qe_b: Any, in_scheme: int,
                counter: int) -> tuple[dict, dict]:
    """Part 3 §14.7: the second phase of a two-phase key exchange with the static key A (an
    unrestricted ECC decryption key) and the ephemeral key of commit ``counter``:
    for ECDH (SP 800-56A C(2e, 2s)) Z1 = [dsA]QsB and Z2 = [deA]QeB. The commit is used up.
    """
    tpm = ctx.tpm
    key = private_key_object(ctx, key_a)
    if key.public.type != ALG.ECC:
        raise TpmError(RC.KEY, handle=1, detail="not an ECC key")
    attrs = key.attributes
    if attrs & ObjectAttr.RESTRICTED or not attrs & ObjectAttr.DECRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="not an unrestricted decryption key")
    own = key.public.parameters.scheme.scheme
    if own not in (ALG.NULL, in_scheme):
        raise TpmError(RC.SCHEME, parameter=3, detail="inScheme differs from the key's")
    curve_id = key.public.parameters.curveID
    domain = ecmath.DOMAINS[curve_id]
    qs = _point(domain, qs_b)
    if qs is None:
        raise TpmError(RC.ECC_POINT, parameter=1, detail="inQsB is not on the curve")
    qe = _point(domain, qe_b)
    if qe is None:
        raise TpmError(RC.ECC_POINT, parameter=2, detail="inQeB is not on the curve")
    full = _full_count(tpm, counter)
    if full is None:
        raise TpmError(RC.VALUE, parameter=4, detail=f"commit count {counter} not outstanding")
    de = _commit_random(tpm, curve_id, b"", full)
    ds = int.from_bytes(key.sensitive.sensitive, "big")
    z1, z2 = _product(domain, ds, qs), _product(domain, de, qe)
    _end_commit(tpm, full)
    return _octets(domain, z1), _octets(domain, z2)


@command(CC.Commit,
         handles=(HandleSpec("signHandle", check_object_handle, Auth.USER),),
         params=(TPM2B_ECC_POINT, TPM2B_SENSITIVE_DATA, TPM2B_ECC_PARAMETER),
         response=(TPM2B_ECC_POINT, TPM2B_ECC_POINT, TPM2B_ECC_POINT, UINT16))
def commit(ctx: CommandContext, sign_handle: int, p1: Any, s2: bytes,
           y2: bytes) -> tuple[dict, dict, dict, int]:
    """Part 3 §19.2: the first phase of an ECDAA signature with the key ``signHandle``
    (whose scheme must be ECDAA): with r the random value of a new commit,
    E = [r]P1 (or [r]G when neither P1 nor P2 is given) and, when s2 and y2 give
    P2 = (H_nameAlg(s2) mod p, y2), K = [d]P2 and L = [r]P2. Returns K, L, E (empty points
    where not computed) and the commit's count, which TPM2_Sign's ECDAA scheme names.
    """
    tpm = ctx.tpm
    key = private_key_object(ctx, sign_handle)
    public = key.public
    if public.type != ALG.ECC:
        raise TpmError(RC.KEY, handle=1, detail="not an ECC key")
    # CryptIsSchemeAnonymous(): only an ECDAA key commits.
    if public.parameters.scheme.scheme != ALG.ECDAA:
        raise TpmError(RC.SCHEME, handle=1, detail="the key's scheme is not ECDAA")
    if (len(s2) == 0) != (len(y2) == 0):
        raise TpmError(RC.SIZE, parameter=3, detail="s2 and y2 go together")
    curve_id = public.parameters.curveID
    domain = ecmath.DOMAINS[curve_id]
    r = _next_random(tpm, curve_id, key.name)
    p2 = None
    if s2:
        # x2 = H_nameAlg(s2) mod p; swtpm 0.7.1 blames P2's absence from the curve on s2
        # (TPM_RC_ECC_POINT + P2), where the reference's text names P1.
        x2 = int.from_bytes(HASHES[public.nameAlg].digest(s2), "big") % domain.p
        p2 = _point(domain, _Coordinates(x2.to_bytes(domain.size, "big"), y2))
        if p2 is None:
            raise TpmError(RC.ECC_POINT, parameter=2, detail="P2 is not on the curve")
    m = None
    if p1.x or p1.y:
        m = _point(domain, p1)
        if m is None:
            raise TpmError(RC.ECC_POINT, parameter=1, detail="P1 is not on the curve")
    # CryptEccCommitCompute().
    k = l_point = e = None
    if p2 is not None:
        d = int.from_bytes(key.sensitive.sensitive, "big")
        k, l_point = _product(domain, d, p2), _product(domain, r, p2)
    if m is not None or p2 is None:
        e = _product(domain, r, m if m is not None else domain.generator)
    return (_octets(domain, k), _octets(domain, l_point), _octets(domain, e), _commit(tpm))


class _Coordinates:
    """A TPMS_ECC_POINT-like pair of coordinate octet strings."""

    def __init__(self, x: bytes, y: bytes) -> None:
        self.x, self.y = x, y
