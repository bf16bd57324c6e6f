"""Signing commands: TPM2_Sign (Part 3 §20.3), TPM2_VerifySignature (§20.2) and TPM2_HMAC
(§15.5). The schemes and the signature arithmetic are in :mod:`swtpm_py.tpm.signatures`.

The order of checks is that of the reference implementation's commands (libtpms, which swtpm
0.7.1 runs); tests/test_signing.py compares the response codes with swtpm's.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from .. import sequences
from . import ecc
from ..constants import ALG, CC, RC, RH, ST
from ..crypto import HASHES
from ..errors import TpmError
from ..objects import check_object_handle
from ..objects_wire import ObjectAttr
from ..registry import Auth, HandleSpec, command
from ..signatures import (TPMT_SIG_SCHEME, TPMT_SIGNATURE, TPMT_SIGNATURE_NULL,
                          TPMT_TK_HASHCHECK_IN, TPMT_TK_VERIFIED, is_signing_key,
                          select_scheme, sign as sign_digest, verify)
from ..wire import TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPMI_ALG_HASH_NULL
from .hash import TICKET_HASH, hashcheck_ticket, hierarchy_proof

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm


def verified_ticket(tpm: Tpm, hierarchy: int, digest: bytes, name: bytes) -> dict:
    """TPMT_TK_VERIFIED (Part 2 §10.7.4, the reference's TicketComputeVerified()):
    HMAC_contextHash(proof of the hierarchy, TPM_ST_VERIFIED || digest || keyName)."""
    mac = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, hierarchy),
                                   int(ST.VERIFIED).to_bytes(2, "big"), digest, name)
    return dict(tag=ST.VERIFIED, hierarchy=hierarchy, digest=mac)


def _ticket_valid(tpm: Tpm, ticket: Any, hash_alg: int, digest: bytes) -> bool:
    """Whether a TPMT_TK_HASHCHECK is the one this TPM computes for ``digest`` and
    ``hash_alg`` (the reference's TicketComputeHashCheck(), then a comparison). No ticket of
    the NULL hierarchy is ever valid: TPM2_Hash and TPM2_SequenceComplete give those only with
    an empty digest, never with the HMAC the reference would compute with the null proof."""
    if ticket.hierarchy == RH.NULL:
        return False
    expected = hashcheck_ticket(tpm, ticket.hierarchy, hash_alg, digest)["digest"]
    return hmac.compare_digest(expected, ticket.digest)


@command(CC.Sign,
         handles=(HandleSpec("keyHandle", check_object_handle, Auth.USER),),
         params=(TPM2B_DIGEST, TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK_IN),
         response=(TPMT_SIGNATURE_NULL,))
def sign(ctx: CommandContext, handle: int, digest: bytes, in_scheme: Any,
         validation: Any) -> dict:
    """Part 3 §20.3: sign an externally computed digest.

    The key must be a signing key (TPM_RC_KEY on the handle) not meant for X.509 certificates
    (TPM_RC_ATTRIBUTES); the scheme is the key's or ``inScheme`` (TPM_RC_SCHEME + P2 when they
    conflict or neither is set). A restricted key signs only a digest the TPM computed itself
    from data not starting with TPM_GENERATED_VALUE, proven by a hash-check ticket
    (TPM_RC_TICKET + P3); a ticket given to an unrestricted key is checked as well. Without a
    ticket the digest must have the size of the scheme's hash (TPM_RC_SIZE + P1).
    """
    tpm = ctx.tpm
    key = sequences.loaded_object(tpm, handle)
    if key is None or not is_signing_key(key) or key.public_only:
        raise TpmError(RC.KEY, handle=1, detail="not a signing key")
    if key.attributes & ObjectAttr.X509_SIGN:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="an X.509 signing key")
    try:
        sig_alg, hash_alg = select_scheme(key, in_scheme)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=2, detail=exc.detail) from None
    if validation.digest or key.attributes & ObjectAttr.RESTRICTED:
        if not _ticket_valid(tpm, validation, hash_alg, digest):
            raise TpmError(RC.TICKET, parameter=3, detail="hash-check ticket does not match")
    elif len(digest) != HASHES[hash_alg].size:
        raise TpmError(RC.SIZE, parameter=1, detail="digest size differs from the scheme's hash")
    if sig_alg == ALG.ECDAA:
        # ECDAA signs with the random value of the Commit named by the scheme's count.
        return ecc.ecdaa_sign(tpm, key, in_scheme, hash_alg, digest)
    return sign_digest(key, sig_alg, hash_alg, digest, tpm.drbg)


@command(CC.VerifySignature,
         handles=(HandleSpec("keyHandle", check_object_handle),),
         params=(TPM2B_DIGEST, TPMT_SIGNATURE),
         response=(TPMT_TK_VERIFIED,))
def verify_signature(ctx: CommandContext, handle: int, digest: bytes, signature: Any) -> dict:
    """Part 3 §20.2: check a signature with a loaded key (public only will do, except for an
    HMAC key). The key needs the sign attribute (TPM_RC_ATTRIBUTES on the handle); a signature
    that does not verify is TPM_RC_SIGNATURE + P2, one of a scheme the key type cannot check
    TPM_RC_SCHEME + P2. The ticket proves the check to this TPM later (TPM2_PolicyAuthorize);
    for a key of the NULL hierarchy or without nameAlg it is the NULL ticket."""
    tpm = ctx.tpm
    key = sequences.loaded_object(tpm, handle)
    if key is None or not key.attributes & ObjectAttr.SIGN_ENCRYPT:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="not a signing key")
    try:
        verify(key, digest, signature)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=2, detail=exc.detail) from None
    if key.hierarchy == RH.NULL or key.public.nameAlg == ALG.NULL:
        return dict(tag=ST.VERIFIED, hierarchy=RH.NULL, digest=b"")
    return verified_ticket(tpm, key.hierarchy, digest, key.name)


@command(CC.HMAC,
         handles=(HandleSpec("handle", check_object_handle, Auth.USER),),
         params=(TPM2B_MAX_BUFFER, TPMI_ALG_HASH_NULL),
         response=(TPM2B_DIGEST,))
def hmac_(ctx: CommandContext, handle: int, buffer: bytes, hash_alg: int) -> bytes:
    """Part 3 §15.5: HMAC ``buffer`` with the secret of an unrestricted keyed-hash signing key
    (TPM_RC_TYPE, TPM_RC_ATTRIBUTES, TPM_RC_KEY on the handle). The key's HMAC scheme, if it
    has one, fixes the hash: ``hashAlg`` must then be it or TPM_ALG_NULL; without a scheme
    ``hashAlg`` is used. No hash at all is TPM_RC_VALUE + P2 (the rules of TPM2_HMAC_Start)."""
    key = sequences.loaded_object(ctx.tpm, handle)
    if key is None or key.public.type != ALG.KEYEDHASH:
        raise TpmError(RC.TYPE, handle=1, detail="not a keyed-hash object")
    if key.attributes & ObjectAttr.RESTRICTED:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="restricted HMAC key")
    if not key.attributes & ObjectAttr.SIGN_ENCRYPT:
        raise TpmError(RC.KEY, handle=1, detail="not a signing key")
    own = key.public.parameters.scheme
    if own.scheme != ALG.NULL:
        default = own.details.hashAlg
        hash_alg = default if hash_alg in (ALG.NULL, default) else ALG.NULL
    if hash_alg == ALG.NULL:
        raise TpmError(RC.VALUE, parameter=2, detail="no hash for the HMAC")
    return HASHES[hash_alg].hmac(key.sensitive.sensitive if key.sensitive else b"", buffer)
