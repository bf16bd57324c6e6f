"""Hash, HMAC and event sequences: TPM2_HMAC_Start, HashSequenceStart, SequenceUpdate,
SequenceComplete, EventSequenceComplete (Part 3 §17). The sequence objects themselves are in
:mod:`swtpm_py.tpm.sequences`.

The order of checks follows the reference implementation's commands (which swtpm exhibits;
tests/test_sequences.py compares the codes with swtpm's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import sequences
from ..constants import ALG, CC, RC, RH
from ..errors import TpmError
from ..handles import TPMI_DH_PCR_NULL, TPMI_RH_HIERARCHY_NULL, handle_param
from ..objects import check_object_handle
from ..objects_wire import ObjectAttr
from ..registry import Auth, HandleSpec, command
from ..wire import (TPM2B_AUTH, TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPMI_ALG_HASH_NULL,
                    TPML_DIGEST_VALUES, TPMT_TK_HASHCHECK)
from .hash import hashcheck_ticket
from .pcr import _check_extend, _extend

if TYPE_CHECKING:
    from ..core import CommandContext

#: TPMI_DH_OBJECT: a sequence handle is a transient object handle.
SEQUENCE_HANDLE = HandleSpec("sequenceHandle", check_object_handle, Auth.USER)


def _sequence(ctx: CommandContext, handle: int, *kinds: sequences.Kind) -> None:
    """The handle must be a sequence (of one of ``kinds`` when given): TPM_RC_MODE otherwise,
    on the sequence handle (the reference's ObjectIsSequence() / hashSeq / hmacSeq / eventSeq
    checks)."""
    seq = sequences.get(ctx.tpm, handle)
    if seq is None or (kinds and seq.kind not in kinds):
        n = 2 if ctx.code == CC.EventSequenceComplete else 1
        wanted = "/".join(k.name.lower() for k in kinds) or "any"
        raise TpmError(RC.MODE, handle=n, detail=f"0x{handle:08x} is not a {wanted} sequence")


def _flush_after_response(ctx: CommandContext, handle: int) -> None:
    """TPMA_CC.flushed (Part 2 §8.9): the completed sequence leaves the TPM — after the
    response is built, as the reference's ObjectCleanupEvict() does, because the response HMAC
    of a session authorizing the sequence includes the sequence's authValue (Part 1 §19.6.6;
    tpm2-tss checks it)."""
    ctx.after_response.append(lambda: sequences.flush(ctx.tpm, handle))


@command(CC.HashSequenceStart, params=(TPM2B_AUTH, TPMI_ALG_HASH_NULL), response_handle=True)
def hash_sequence_start(ctx: CommandContext, auth: bytes, hash_alg: int) -> int:
    """Part 3 §17.3: start a hash sequence, or with TPM_ALG_NULL an event sequence that
    digests with every implemented hash; the sequence's authValue is ``auth``."""
    return sequences.start(ctx.tpm, hash_alg, auth)


@command(CC.HMAC_Start, handles=(HandleSpec("handle", check_object_handle, Auth.USER),),
         params=(TPM2B_AUTH, TPMI_ALG_HASH_NULL), response_handle=True)
def hmac_start(ctx: CommandContext, handle: int, auth: bytes, hash_alg: int) -> int:
    """Part 3 §17.2: start an HMAC sequence keyed with the secret of an unrestricted
    keyed-hash signing key (TPM_RC_TYPE, TPM_RC_ATTRIBUTES, TPM_RC_KEY on the key handle).
    The key's HMAC scheme, if it has one, fixes the hash: ``hash_alg`` must then be it or
    TPM_ALG_NULL; without a scheme ``hash_alg`` is used. No hash at all is TPM_RC_VALUE."""
    key = sequences.loaded_object(ctx.tpm, handle)
    if key is None:
        raise TpmError(RC.TYPE, handle=1, detail="a sequence is no HMAC key")
    pub = key.public
    if pub.type != ALG.KEYEDHASH:
        raise TpmError(RC.TYPE, handle=1, detail="not a keyed-hash object")
    if key.attributes & ObjectAttr.RESTRICTED:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="restricted HMAC key")
    if not key.attributes & ObjectAttr.SIGN_ENCRYPT:
        raise TpmError(RC.KEY, handle=1, detail="not a signing key")
    scheme = pub.parameters.scheme
    if scheme.scheme != ALG.NULL:
        default = scheme.details.hashAlg
        hash_alg = default if hash_alg in (ALG.NULL, default) else ALG.NULL
    if hash_alg == ALG.NULL:
        raise TpmError(RC.VALUE, parameter=2, detail="no hash for the HMAC")
    return sequences.start(ctx.tpm, hash_alg, auth, hmac_key=key.sensitive.sensitive)


@command(CC.SequenceUpdate, handles=(SEQUENCE_HANDLE,), params=(TPM2B_MAX_BUFFER,))
def sequence_update(ctx: CommandContext, handle: int, data: bytes) -> None:
    """Part 3 §17.4: add data to a hash, HMAC or event sequence (TPM_RC_MODE for an
    object). For a hash sequence, the first update decides the ticket (see
    :func:`swtpm_py.tpm.sequences.ticket_safe`)."""
    _sequence(ctx, handle)
    sequences.update(ctx.tpm, handle, data)


@command(CC.SequenceComplete, handles=(SEQUENCE_HANDLE,),
         params=(TPM2B_MAX_BUFFER, handle_param(TPMI_RH_HIERARCHY_NULL)),
         response=(TPM2B_DIGEST, TPMT_TK_HASHCHECK))
def sequence_complete(ctx: CommandContext, handle: int, data: bytes, hierarchy: int) -> tuple:
    """Part 3 §17.5: add the last data, return the digest and flush the sequence. The ticket
    is computed as TPM2_Hash computes it, for ``hierarchy`` — unless the hierarchy is
    TPM_RH_NULL or the first block could have started with TPM_GENERATED_VALUE, which give the
    NULL ticket (hierarchy TPM_RH_NULL, empty digest)."""
    _sequence(ctx, handle, sequences.Kind.HASH, sequences.Kind.HMAC)
    seq, digests = sequences.finish(ctx.tpm, handle, data)
    _flush_after_response(ctx, handle)
    digest = digests[seq.hash_alg]
    if seq.kind is sequences.Kind.HMAC:
        # Part 3 §17.5: an HMAC sequence never produces a ticket.
        return digest, hashcheck_ticket(ctx.tpm, RH.NULL, seq.hash_alg, digest)
    safe = seq.ticket is sequences.Ticket.SAFE
    ticket = hashcheck_ticket(ctx.tpm, hierarchy if safe else RH.NULL, seq.hash_alg, digest)
    return digest, ticket


@command(CC.EventSequenceComplete,
         handles=(HandleSpec("pcrHandle", TPMI_DH_PCR_NULL, Auth.USER), SEQUENCE_HANDLE),
         params=(TPM2B_MAX_BUFFER,), response=(TPML_DIGEST_VALUES,))
def event_sequence_complete(ctx: CommandContext, pcr: int, handle: int, data: bytes) -> list:
    """Part 3 §17.6: add the last data, return the digest of every implemented hash, extend
    each allocated bank of ``pcr`` (not for TPM_RH_NULL) under the same locality, orderly and
    pcrUpdateCounter rules as TPM2_PCR_Event, and flush the sequence."""
    _sequence(ctx, handle, sequences.Kind.EVENT)
    if pcr != RH.NULL:
        _check_extend(ctx, pcr)
    _, digests = sequences.finish(ctx.tpm, handle, data)
    _flush_after_response(ctx, handle)
    if pcr != RH.NULL:
        for alg, digest in digests.items():
            _extend(ctx, pcr, alg, digest)
    return [dict(hashAlg=alg, digest=digest) for alg, digest in digests.items()]

