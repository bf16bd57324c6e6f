"""Policy commands (Part 3 §23, Enhanced Authorization): each extends the policyDigest of a
policy or trial session and, in a real policy session, records the condition that
:func:`swtpm_py.tpm.sessions.authorize` checks when the session is used.

Every update has the form policyDigest_new := H(policyDigest_old || TPM_CC || arguments) with
the session's authHash (Part 1 §19.7.2); the arguments of each command are given with it. A
trial session skips the checks that need the TPM's state (PCR values, an earlier PolicyOR
branch) and only computes the digest, which is how tpm2-tools' ``tpm2_policy*`` tools build a
policy offline.
"""

from __future__ import annotations

import enum
import hmac as _hmac
from typing import TYPE_CHECKING, Any

import construct as c

from .. import nv, objects, sequences, sessions, signatures
from ..constants import ALG, CC, HR_POLICY_SESSION, HT, NT, RC, RH, ST
from ..crypto import HASHES
from ..entity import resolve
from ..errors import TpmError
from ..handles import TPMI_RH_NV_AUTH, TPMI_RH_NV_INDEX, ticket_param
from ..objects import check_object_handle
from ..registry import COMMANDS, Auth, HandleSpec, command
from ..signatures import TPMT_SIGNATURE
from ..state import SessionState
from ..wire import (INT32, MAX_ACTIVE_SESSIONS, TPM2B_DIGEST, TPM2B_NAME, TPM2B_NONCE,
                    TPML_PCR_SELECTION, TPMS_TIME_INFO, UINT8, UINT16, UINT32, Checked,
                    pcr_bitmap, tpm2b)
from .clock import time_info
from .hash import TICKET_HASH, hierarchy_proof
from .session import check_entity
from .signing import verified_ticket
from .testing import TPMI_YES_NO, YES

if TYPE_CHECKING:
    from ..core import CommandContext


def _check_policy_session(handle: int) -> None:
    # Part 2 §9.9 TPMI_SH_POLICY: a policy session handle in the implemented range.
    if not 0 <= handle - HR_POLICY_SESSION < MAX_ACTIVE_SESSIONS:
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a policy session handle")


#: The policySession handle of every policy command (no authorization).
POLICY_SESSION = HandleSpec("policySession", _check_policy_session)


def _count_2_to_8(count: int) -> None:
    # Part 2 §10.9.6 TPML_DIGEST of TPM2_PolicyOR: two to eight digests, else TPM_RC_SIZE.
    if not 2 <= count <= 8:
        raise TpmError(RC.SIZE, detail=f"{count} digests in pHashList")


#: TPML_DIGEST as TPM2_PolicyOR takes it.
TPML_DIGEST_OR = c.PrefixedArray(Checked(UINT32, _count_2_to_8), TPM2B_DIGEST)


def _session(ctx: CommandContext, handle: int) -> SessionState:
    session = sessions.get(ctx.tpm, handle)
    assert session is not None  # the handle was resolved as a loaded policy session
    return session


@command(CC.PolicyRestart, handles=(POLICY_SESSION,))
def policy_restart(ctx: CommandContext, handle: int) -> None:
    """Part 3 §23.13: start the policy over (digest zero, no conditions); the nonce stays."""
    sessions.reset_policy(_session(ctx, handle))


@command(CC.PolicyGetDigest, handles=(POLICY_SESSION,), response=(TPM2B_DIGEST,))
def policy_get_digest(ctx: CommandContext, handle: int) -> bytes:
    """Part 3 §23.19: the current policyDigest."""
    return _session(ctx, handle).policy_digest


@command(CC.PolicyAuthValue, handles=(POLICY_SESSION,))
def policy_auth_value(ctx: CommandContext, handle: int) -> None:
    """Part 3 §23.17: the authorized entity's authValue must key the session HMAC.
    Update: H(digest || TPM_CC_PolicyAuthValue)."""
    session = _session(ctx, handle)
    sessions.policy_update(session, CC.PolicyAuthValue)
    session.auth_value_needed, session.password_needed = True, False


@command(CC.PolicyPassword, handles=(POLICY_SESSION,))
def policy_password(ctx: CommandContext, handle: int) -> None:
    """Part 3 §23.18: the authValue is sent in the clear in the session's hmac field. The
    digest is the same as PolicyAuthValue's, H(digest || TPM_CC_PolicyAuthValue), so one
    policy admits either."""
    session = _session(ctx, handle)
    sessions.policy_update(session, CC.PolicyAuthValue)
    session.password_needed, session.auth_value_needed = True, False


@command(CC.PolicyCommandCode, handles=(POLICY_SESSION,), params=(UINT32,))
def policy_command_code(ctx: CommandContext, handle: int, code: int) -> None:
    """Part 3 §23.11: the session authorizes only ``code``. A different code already set is
    TPM_RC_VALUE, a command the TPM does not implement TPM_RC_POLICY_CC (both + P1; in this
    order, as swtpm 0.7.1 answers). Update: H(digest || TPM_CC_PolicyCommandCode || code)."""
    session = _session(ctx, handle)
    if session.command_code and session.command_code != code:
        raise TpmError(RC.VALUE, parameter=1, detail="another command code is already set")
    if code not in COMMANDS:
        raise TpmError(RC.POLICY_CC, parameter=1, detail=f"command 0x{code:x} not implemented")
    sessions.policy_update(session, CC.PolicyCommandCode, code.to_bytes(4, "big"))
    session.command_code = code


@command(CC.PolicyLocality, handles=(POLICY_SESSION,), params=(UINT8,))
def policy_locality(ctx: CommandContext, handle: int, locality: int) -> None:
    """Part 3 §23.14: the localities (TPMA_LOCALITY) the session may be used from. Zero, a
    switch between ordinary and extended localities, or an empty intersection with an earlier
    setting is TPM_RC_RANGE + P1. Update: H(digest || TPM_CC_PolicyLocality || locality)."""
    session = _session(ctx, handle)
    previous = session.locality
    if locality == 0 or (previous and (previous < 32) != (locality < 32)):
        raise TpmError(RC.RANGE, parameter=1, detail=f"locality 0x{locality:02x}")
    if locality < 32:
        # Ordinary localities: the intersection with what earlier assertions allowed.
        setting = (previous or 0x1F) & locality
        if not setting:
            raise TpmError(RC.RANGE, parameter=1, detail="no locality left")
    else:
        if previous and previous != locality:
            raise TpmError(RC.RANGE, parameter=1, detail="another extended locality")
        setting = locality
    sessions.policy_update(session, CC.PolicyLocality, bytes([locality]))
    session.locality = setting


def _filtered(ctx: CommandContext, selection: list) -> list[tuple[int, int, bytes]]:
    """The selection with the bits of banks that are not allocated cleared (the reference's
    FilterPcr(), whose result also enters the policy digest). TPMS_PCR_SELECTION admits only
    the PCRs the TPM has (sizeofSelect is exactly PCR_SELECT_MIN)."""
    return [(sel.hash, sel.sizeofSelect,
             bytes(sel.pcrSelect) if sel.hash in ctx.tpm.pcrs.values
             else bytes(len(sel.pcrSelect)))
            for sel in selection]


def pcr_digest(ctx: CommandContext, alg: int, selection: list[tuple[int, int, bytes]]) -> bytes:
    """Part 3 §23.7: H_alg of the selected PCR values, bank by bank in selection order, each
    bank's PCRs in ascending order (the reference's PCRComputeCurrentDigest())."""
    parts = []
    for bank_alg, _, bits in selection:
        bank = ctx.tpm.pcrs.values.get(bank_alg)
        if bank is not None:
            parts += [bank[pcr] for pcr in pcr_bitmap(bits)]
    return HASHES[alg].digest(*parts)


@command(CC.PolicyPCR, handles=(POLICY_SESSION,), params=(TPM2B_DIGEST, TPML_PCR_SELECTION))
def policy_pcr(ctx: CommandContext, handle: int, digest: bytes, selection: list) -> None:
    """Part 3 §23.7: the session is good only while the selected PCRs have their current
    values. In a policy session a given pcrDigest must equal the digest of the current values
    (TPM_RC_VALUE + P1) and an earlier PolicyPCR must still hold (TPM_RC_PCR_CHANGED); a trial
    session uses the given pcrDigest, or the current values when none is given.
    Update: H(digest || TPM_CC_PolicyPCR || pcrs || pcrDigest)."""
    session = _session(ctx, handle)
    tpm = ctx.tpm
    pcrs = _filtered(ctx, selection)
    current = pcr_digest(ctx, session.auth_hash, pcrs)
    if not session.trial:
        counter = tpm.vol.state_reset.pcr_counter
        if session.pcr_counter and session.pcr_counter != counter:
            raise TpmError(RC.PCR_CHANGED, detail="PCRs changed since the last PolicyPCR")
        if digest and digest != current:
            raise TpmError(RC.VALUE, parameter=1, detail="pcrDigest is not the PCRs' digest")
    elif digest:
        current = digest
    marshalled = len(pcrs).to_bytes(4, "big") + b"".join(
        alg.to_bytes(2, "big") + bytes([size]) + bits for alg, size, bits in pcrs)
    sessions.policy_update(session, CC.PolicyPCR, marshalled, current)
    if not session.trial:
        session.pcr_counter = tpm.vol.state_reset.pcr_counter


@command(CC.PolicyOR, handles=(POLICY_SESSION,), params=(TPML_DIGEST_OR,))
def policy_or(ctx: CommandContext, handle: int, digests: list) -> None:
    """Part 3 §23.6: the policy holds if the current digest is one of ``digests`` (any, in a
    trial session); else TPM_RC_VALUE + P1. Update: H(0...0 || TPM_CC_PolicyOR || digests),
    the digests' data concatenated."""
    session = _session(ctx, handle)
    if not session.trial and session.policy_digest not in [bytes(d) for d in digests]:
        raise TpmError(RC.VALUE, parameter=1, detail="policyDigest is in none of the branches")
    session.policy_digest = bytes(HASHES[session.auth_hash].size)
    sessions.policy_update(session, CC.PolicyOR, *[bytes(d) for d in digests])


@command(CC.PolicyCpHash, handles=(POLICY_SESSION,), params=(TPM2B_DIGEST,))
def policy_cp_hash(ctx: CommandContext, handle: int, cp_hash: bytes) -> None:
    """Part 3 §23.9: the session authorizes only the command with this cpHash. A cpHash of
    another size than the session's digest is TPM_RC_SIZE + P1; a different cpHash or a
    nameHash set before is TPM_RC_CPHASH. Update: H(digest || TPM_CC_PolicyCpHash || cpHashA)."""
    session = _session(ctx, handle)
    if len(cp_hash) != HASHES[session.auth_hash].size:
        raise TpmError(RC.SIZE, parameter=1, detail="cpHashA of the wrong size")
    if session.cp_hash and (not session.cp_hash_defined or session.cp_hash != cp_hash):
        raise TpmError(RC.CPHASH, detail="another cpHash/nameHash is set")
    sessions.policy_update(session, CC.PolicyCpHash, cp_hash)
    session.cp_hash, session.cp_hash_defined = cp_hash, True


@command(CC.PolicyNameHash, handles=(POLICY_SESSION,), params=(TPM2B_DIGEST,))
def policy_name_hash(ctx: CommandContext, handle: int, name_hash: bytes) -> None:
    """Part 3 §23.10: the session authorizes only a command on the entities whose Names hash to
    ``name_hash``. Wrong size is TPM_RC_SIZE + P1; any cpHash, nameHash or template set before
    TPM_RC_CPHASH. Update: H(digest || TPM_CC_PolicyNameHash || nameHash)."""
    session = _session(ctx, handle)
    if len(name_hash) != HASHES[session.auth_hash].size:
        raise TpmError(RC.SIZE, parameter=1, detail="nameHash of the wrong size")
    if session.cp_hash or session.cp_hash_defined or session.template_set:
        raise TpmError(RC.CPHASH, detail="a cpHash/nameHash/template is already set")
    sessions.policy_update(session, CC.PolicyNameHash, name_hash)
    session.cp_hash = name_hash


@command(CC.PolicyPhysicalPresence, handles=(POLICY_SESSION,))
def policy_physical_presence(ctx: CommandContext, handle: int) -> None:
    """Part 3 §23.12: physical presence must be asserted when the session is used.
    Update: H(digest || TPM_CC_PolicyPhysicalPresence)."""
    session = _session(ctx, handle)
    sessions.policy_update(session, CC.PolicyPhysicalPresence)
    session.pp_required = True


@command(CC.PolicyTemplate, handles=(POLICY_SESSION,), params=(TPM2B_DIGEST,))
def policy_template(ctx: CommandContext, handle: int, template_hash: bytes) -> None:
    """Part 3 §23.21: the session authorizes only creating an object from the template whose
    digest is ``template_hash``. A different template set before is TPM_RC_VALUE + P1, a
    cpHash or nameHash TPM_RC_CPHASH, a wrong size TPM_RC_SIZE + P1.
    Update: H(digest || TPM_CC_PolicyTemplate || templateHash)."""
    session = _session(ctx, handle)
    if session.template_set:
        if template_hash != session.cp_hash:
            raise TpmError(RC.VALUE, parameter=1, detail="another template is set")
    elif session.cp_hash:
        raise TpmError(RC.CPHASH, detail="a cpHash/nameHash is already set")
    if len(template_hash) != HASHES[session.auth_hash].size:
        raise TpmError(RC.SIZE, parameter=1, detail="templateHash of the wrong size")
    sessions.policy_update(session, CC.PolicyTemplate, template_hash)
    session.cp_hash, session.template_set = template_hash, True


#: Part 2 §10.4.8 TPM2B_TIMEOUT: an implementation-specific timeout; here the 64-bit Time
#: (ms) at which the authorization expires, with EXPIRATION_BIT set when it also ends at the
#: next TPM Reset (the reference's format, which swtpm returns).
TPM2B_TIMEOUT = tpm2b(8)
EXPIRATION_BIT = 1 << 63
#: TPMT_TK_AUTH (Part 2 §10.7.5).
TPMT_TK_AUTH = c.Struct("tag" / UINT16, "hierarchy" / UINT32, "digest" / TPM2B_DIGEST)


def auth_timeout(ctx: CommandContext, session: SessionState, expiration: int,
                 nonce_tpm: bytes) -> int:
    """Part 3 §23.3 (the reference's ComputeAuthTimeout()): 0 for no expiration; else
    |expiration| seconds after the session's start when the authorization is tied to the
    session (nonceTPM given), or the absolute Time of |expiration| seconds (keeping the
    current millisecond) when it is not."""
    if expiration == 0:
        return 0
    seconds = abs(expiration) * 1000
    if nonce_tpm:
        return session.start_time + seconds
    return seconds + ctx.tpm.time_ms() % 1000


def policy_parameter_checks(ctx: CommandContext, session: SessionState, timeout: int,
                            cp_hash: bytes, nonce_tpm: bytes, blame_nonce: int,
                            blame_cp_hash: int, blame_expiration: int) -> None:
    """Part 3 §23.3/§23.4 (the reference's PolicyParameterChecks()): a given nonceTPM must be
    the session's (TPM_RC_NONCE), a timeout must lie ahead (TPM_RC_EXPIRED), a cpHashA must
    have the session's digest size (TPM_RC_SIZE) and agree with one set before
    (TPM_RC_CPHASH)."""
    if nonce_tpm and nonce_tpm != session.nonce_tpm:
        raise TpmError(RC.NONCE, parameter=blame_nonce, detail="not this session's nonceTPM")
    if timeout and timeout < ctx.tpm.time_ms():
        raise TpmError(RC.EXPIRED, parameter=blame_expiration, detail="already expired")
    if cp_hash:
        if len(cp_hash) != len(session.policy_digest):
            raise TpmError(RC.SIZE, parameter=blame_cp_hash, detail="cpHashA of the wrong size")
        if session.cp_hash and cp_hash != session.cp_hash:
            raise TpmError(RC.CPHASH, detail="another cpHash is set")


def policy_context_update(session: SessionState, code: int, name: bytes, policy_ref: bytes,
                          cp_hash: bytes, timeout: int) -> None:
    """Part 3 §23.3/§23.4 (the reference's PolicyContextUpdate()): policyDigest :=
    H(H(policyDigest || code || name) || policyRef); record cpHashA and the earliest timeout."""
    sessions.policy_update(session, code, name)
    session.policy_digest = HASHES[session.auth_hash].digest(session.policy_digest, policy_ref)
    if cp_hash:
        session.cp_hash, session.cp_hash_defined = cp_hash, True
    if timeout and (session.timeout == 0 or session.timeout > timeout):
        session.timeout = timeout


def entity_hierarchy(ctx: CommandContext, handle: int) -> int:
    """The hierarchy of an entity (the reference's EntityGetHierarchy()): a hierarchy handle
    itself, an object's hierarchy, TPM_RH_OWNER for everything else."""
    if handle in (RH.PLATFORM, RH.ENDORSEMENT, RH.NULL):
        return handle
    if handle >> 24 in (HT.TRANSIENT, HT.PERSISTENT):
        return objects.lookup(ctx.tpm, handle).hierarchy
    if handle >> 24 == HT.NV_INDEX:
        return nv.hierarchy_of(nv.lookup(ctx.tpm, handle))
    return RH.OWNER


def auth_ticket(ctx: CommandContext, tag: int, hierarchy: int, timeout: int,
                expires_on_reset: bool, cp_hash: bytes, policy_ref: bytes,
                name: bytes) -> dict:
    """TPMT_TK_AUTH (Part 2 §10.7.5): HMAC, keyed with the hierarchy's proof, over the tag,
    cpHashA, policyRef, the authorizing entity's Name and the timeout, and — when the
    authorization ends at the next TPM Reset — resetCount, so that the ticket dies with it.
    Only this TPM checks its tickets (TPM2_PolicyTicket), so the octets are its own choice."""
    tail = timeout.to_bytes(8, "big")
    if timeout and expires_on_reset:
        tail += ctx.tpm.perm.reset_count.to_bytes(4, "big")
    digest = HASHES[TICKET_HASH].hmac(hierarchy_proof(ctx.tpm, hierarchy), tag.to_bytes(2, "big"),
                                      cp_hash, policy_ref, name, tail)
    return dict(tag=tag, hierarchy=hierarchy, digest=digest)


def ticket_output(ctx: CommandContext, tag: int, entity: int, issue: bool, timeout: int,
                  nonce_tpm: bytes, cp_hash: bytes, policy_ref: bytes,
                  name: bytes) -> tuple[bytes, dict]:
    """The timeout and TPMT_TK_AUTH TPM2_PolicySigned and TPM2_PolicySecret return. With
    ``issue`` (a negative expiration in a policy session): the timeout — its top bit set when
    no nonceTPM ties the authorization to the session, so that it ends at the next TPM Reset
    (the reference's format, which swtpm returns) — and a ticket of the entity's hierarchy for
    TPM2_PolicyTicket; otherwise an empty timeout and the NULL ticket."""
    if not issue:
        return b"", dict(tag=tag, hierarchy=RH.NULL, digest=b"")
    expires_on_reset = not nonce_tpm
    ticket = auth_ticket(ctx, tag, entity_hierarchy(ctx, entity), timeout, expires_on_reset,
                         cp_hash, policy_ref, name)
    flag = EXPIRATION_BIT if expires_on_reset else 0
    return (timeout | flag).to_bytes(8, "big"), ticket


def _is_pin_pass(ctx: CommandContext, handle: int) -> bool:
    """Whether ``handle`` is an NV index of type TPM_NT_PIN_PASS."""
    return (handle >> 24 == HT.NV_INDEX
            and nv.nv_type(nv.lookup(ctx.tpm, handle).attributes) == NT.PIN_PASS)


@command(CC.PolicySecret,
         handles=(HandleSpec("authHandle", check_entity, Auth.USER), POLICY_SESSION),
         params=(TPM2B_NONCE, TPM2B_DIGEST, TPM2B_NONCE, INT32),
         response=(TPM2B_TIMEOUT, TPMT_TK_AUTH))
def policy_secret(ctx: CommandContext, auth_handle: int, handle: int, nonce_tpm: bytes,
                  cp_hash: bytes, policy_ref: bytes, expiration: int) -> tuple[bytes, dict]:
    """Part 3 §23.4: the caller proved knowledge of authHandle's authorization (the dispatcher
    checked the session that authorizes it). In a policy session the parameters are checked
    (nonceTPM P1, cpHashA P2, expiration P4). Update: H(H(digest || TPM_CC_PolicySecret ||
    authHandle.Name) || policyRef). A negative expiration of a policy session returns the
    timeout and a ticket for TPM2_PolicyTicket; otherwise both are empty (a NULL ticket)."""
    session = _session(ctx, handle)
    timeout = 0
    if not session.trial:
        timeout = auth_timeout(ctx, session, expiration, nonce_tpm)
        policy_parameter_checks(ctx, session, timeout, cp_hash, nonce_tpm, 1, 2, 4)
    name = resolve(ctx.tpm, auth_handle).name
    policy_context_update(session, CC.PolicySecret, name, policy_ref, cp_hash, timeout)
    # No ticket for a PIN Pass index: each use must count in its pinCount (the reference's
    # NvIsPinPassIndex() exception).
    issue = expiration < 0 and not session.trial and not _is_pin_pass(ctx, auth_handle)
    return ticket_output(ctx, ST.AUTH_SECRET, auth_handle, issue, timeout, nonce_tpm, cp_hash,
                         policy_ref, name)


# ---------------------------------------------------------------------------- PolicyTicket


#: TPMT_TK_AUTH as a command parameter (Part 2 §10.7.5): from PolicySigned or PolicySecret.
TPMT_TK_AUTH_IN = ticket_param("authorization", ST.AUTH_SIGNED, ST.AUTH_SECRET)


@command(CC.PolicyTicket, handles=(POLICY_SESSION,),
         params=(TPM2B_TIMEOUT, TPM2B_DIGEST, TPM2B_NONCE, TPM2B_NAME, TPMT_TK_AUTH_IN))
def policy_ticket(ctx: CommandContext, handle: int, timeout: bytes, cp_hash: bytes,
                  policy_ref: bytes, auth_name: bytes, ticket: Any) -> None:
    """Part 3 §23.5: a ticket from TPM2_PolicySigned or TPM2_PolicySecret (expiration < 0)
    stands in for that command, with the same policyDigest update.

    A trial session may not use it (TPM_RC_ATTRIBUTES + H1: a trial proves nothing, so it
    should run the original command). The timeout must be the 8 octets the TPM returned
    (TPM_RC_SIZE + P1); its top bit says whether the ticket dies with TPM Reset and is removed
    before the checks of cpHashA (P2) and timeout (P1), then the ticket must be the one this
    TPM computes from the parameters (TPM_RC_TICKET + P5)."""
    session = _session(ctx, handle)
    if session.trial:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="a trial session cannot use a ticket")
    if len(timeout) != 8:
        raise TpmError(RC.SIZE, parameter=1, detail="timeout is not the TPM's 8 octets")
    value = int.from_bytes(timeout, "big")
    expires_on_reset = bool(value & EXPIRATION_BIT)
    value &= ~EXPIRATION_BIT
    policy_parameter_checks(ctx, session, value, cp_hash, b"", 0, 2, 1)
    expected = auth_ticket(ctx, ticket.tag, ticket.hierarchy, value, expires_on_reset,
                           cp_hash, policy_ref, auth_name)
    if not _hmac.compare_digest(expected["digest"], ticket.digest):
        raise TpmError(RC.TICKET, parameter=5, detail="ticket does not verify")
    code = CC.PolicySigned if ticket.tag == ST.AUTH_SIGNED else CC.PolicySecret
    policy_context_update(session, code, auth_name, policy_ref, cp_hash, value)


# ---------------------------------------------------------------------------- PolicyCounterTimer


class EO(enum.IntEnum):
    """TPM_EO: the comparisons of TPM2_PolicyCounterTimer and TPM2_PolicyNV (Part 2 §6.8)."""

    EQ = 0x0000
    NEQ = 0x0001
    SIGNED_GT = 0x0002
    UNSIGNED_GT = 0x0003
    SIGNED_LT = 0x0004
    UNSIGNED_LT = 0x0005
    SIGNED_GE = 0x0006
    UNSIGNED_GE = 0x0007
    SIGNED_LE = 0x0008
    UNSIGNED_LE = 0x0009
    BITSET = 0x000A
    BITCLEAR = 0x000B


def _check_eo(value: int) -> None:
    if value not in EO._value2member_map_:
        raise TpmError(RC.VALUE, detail=f"0x{value:04x} is no TPM_EO")


TPM_EO = Checked(UINT16, _check_eo)
#: TPM2B_OPERAND (Part 2 §10.4.6): as large as a digest.
TPM2B_OPERAND = TPM2B_DIGEST


def check_condition(operation: int, a: bytes, b: bytes) -> bool:
    """Part 3 §23.7/§23.9 (the reference's PolicySptCheckCondition()): compare ``a`` (the
    TPM's data) with ``b`` (operandB), two big-endian numbers of the same length, or test the
    bits of ``b`` in ``a``."""
    if operation == EO.BITSET:
        return all(x & y == y for x, y in zip(a, b))
    if operation == EO.BITCLEAR:
        return all(x & y == 0 for x, y in zip(a, b))
    signed = operation in (EO.SIGNED_GT, EO.SIGNED_LT, EO.SIGNED_GE, EO.SIGNED_LE)
    x = int.from_bytes(a, "big", signed=signed)
    y = int.from_bytes(b, "big", signed=signed)
    return {EO.EQ: x == y, EO.NEQ: x != y,
            EO.SIGNED_GT: x > y, EO.UNSIGNED_GT: x > y,
            EO.SIGNED_LT: x < y, EO.UNSIGNED_LT: x < y,
            EO.SIGNED_GE: x >= y, EO.UNSIGNED_GE: x >= y,
            EO.SIGNED_LE: x <= y, EO.UNSIGNED_LE: x <= y}[EO(operation)]


def operand_update(session: SessionState, code: int, operand: bytes, offset: int,
                   operation: int, *names: bytes) -> None:
    """policyDigest := H(policyDigest || code || H(operandB || offset || operation) || names)
    (Part 3 §23.7 PolicyNV, §23.9 PolicyCounterTimer)."""
    hash_ = HASHES[session.auth_hash]
    args = hash_.digest(operand, offset.to_bytes(2, "big"), operation.to_bytes(2, "big"))
    sessions.policy_update(session, code, args, *names)


@command(CC.PolicyCounterTimer, handles=(POLICY_SESSION,), params=(TPM2B_OPERAND, UINT16, TPM_EO))
def policy_counter_timer(ctx: CommandContext, handle: int, operand: bytes, offset: int,
                         operation: int) -> None:
    """Part 3 §23.9: the policy holds only while the TPMS_TIME_INFO (Time, Clock, resetCount,
    restartCount, safe: 25 octets, big-endian, as TPM2_ReadClock returns it) compares as
    asked with operandB at ``offset``.

    An offset beyond the structure is TPM_RC_VALUE + P2 and an operand reaching past its end
    TPM_RC_RANGE (without a parameter number, as the reference answers), in trial sessions too
    (such a policy could never be satisfied). A real session checks the condition now
    (TPM_RC_POLICY); the digest update is H(digest || TPM_CC_PolicyCounterTimer ||
    H(operandB || offset || operation))."""
    info = TPMS_TIME_INFO.build(time_info(ctx))
    if offset > len(info):
        raise TpmError(RC.VALUE, parameter=2, detail=f"offset {offset} beyond TPMS_TIME_INFO")
    if offset + len(operand) > len(info):
        raise TpmError(RC.RANGE, detail="operandB reaches past TPMS_TIME_INFO")
    session = _session(ctx, handle)
    if not session.trial and not check_condition(operation, info[offset:offset + len(operand)],
                                                 operand):
        raise TpmError(RC.POLICY, detail="counter/timer condition not met")
    operand_update(session, CC.PolicyCounterTimer, operand, offset, operation)


# ---------------------------------------------------------------------------- PolicyDuplicationSelect


@command(CC.PolicyDuplicationSelect, handles=(POLICY_SESSION,),
         params=(TPM2B_NAME, TPM2B_NAME, TPMI_YES_NO))
def policy_duplication_select(ctx: CommandContext, handle: int, object_name: bytes,
                              new_parent_name: bytes, include_object: int) -> None:
    """Part 3 §23.15: the session authorizes TPM2_Duplicate of objectName to newParentName
    only: nameHash := H(objectName || newParentName) is checked against the Names of
    TPM2_Duplicate's handles, and the command code is set to TPM2_Duplicate.

    A session that already holds a cpHash/nameHash answers TPM_RC_CPHASH, one with a command
    code TPM_RC_COMMAND_CODE. Update: H(digest || TPM_CC_PolicyDuplicationSelect ||
    [objectName if includeObject] || newParentName || includeObject)."""
    session = _session(ctx, handle)
    if session.cp_hash:
        raise TpmError(RC.CPHASH, detail="the session already has a cpHash or nameHash")
    if session.command_code:
        raise TpmError(RC.COMMAND_CODE, detail="the session already has a command code")
    hash_ = HASHES[session.auth_hash]
    session.cp_hash = hash_.digest(object_name, new_parent_name)
    session.cp_hash_defined = session.template_set = False
    selected = object_name if include_object == YES else b""
    sessions.policy_update(session, CC.PolicyDuplicationSelect, selected, new_parent_name,
                           bytes([include_object]))
    session.command_code = CC.Duplicate


# ---------------------------------------------------------------------------- NV policies


def _nv_read_checks(ctx: CommandContext, auth_handle: int, nv_index: int) -> nv.NvIndexState:
    """The read checks TPM2_PolicyNV and TPM2_PolicyAuthorizeNV make of the index (the
    reference's NvReadAccessChecks(); a PIN index that authorized itself counts the use)."""
    index = nv.lookup(ctx.tpm, nv_index)
    if auth_handle == nv_index and nv.is_pin(index.attributes):
        nv.pin_authorized(ctx.tpm, index)
        ctx.tpm._commit_permanent()
    nv.check_read_access(auth_handle, index)
    return index


@command(CC.PolicyNV,
         handles=(HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER),
                  HandleSpec("nvIndex", TPMI_RH_NV_INDEX), POLICY_SESSION),
         params=(TPM2B_OPERAND, UINT16, TPM_EO))
def policy_nv(ctx: CommandContext, auth_handle: int, nv_index: int, handle: int,
              operand: bytes, offset: int, operation: int) -> None:
    """Part 3 §23.8: the policy holds only while the index's data at ``offset`` compares as
    asked with operandB. A real session reads the index with the read checks of NV_Read
    (TPM_RC_NV_AUTHORIZATION, TPM_RC_NV_LOCKED, TPM_RC_NV_UNINITIALIZED), an offset beyond
    the index is TPM_RC_VALUE + P2, an operand reaching past its end TPM_RC_SIZE + P1, an
    unmet condition TPM_RC_POLICY; a trial session checks nothing. Update:
    H(digest || TPM_CC_PolicyNV || H(operandB || offset || operation) || nvIndex Name)."""
    session = _session(ctx, handle)
    if not session.trial:
        index = _nv_read_checks(ctx, auth_handle, nv_index)
        if offset > index.data_size:
            raise TpmError(RC.VALUE, parameter=2, detail=f"offset {offset} beyond the index")
        if index.data_size - offset < len(operand):
            raise TpmError(RC.SIZE, parameter=1, detail="operandB reaches past the index")
        data = nv.read_data(ctx.tpm, index)[offset:offset + len(operand)]
        if not check_condition(operation, data, operand):
            raise TpmError(RC.POLICY, detail="NV condition not met")
    operand_update(session, CC.PolicyNV, operand, offset, operation,
                   nv.name(nv.lookup(ctx.tpm, nv_index)))


@command(CC.PolicyAuthorizeNV,
         handles=(HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER),
                  HandleSpec("nvIndex", TPMI_RH_NV_INDEX), POLICY_SESSION))
def policy_authorize_nv(ctx: CommandContext, auth_handle: int, nv_index: int,
                        handle: int) -> None:
    """Part 3 §23.22: the session's policyDigest must be the TPMT_HA stored in the index (read
    with the read checks of NV_Read): another hash algorithm is TPM_RC_HASH, another digest
    (or data that is no TPMT_HA) TPM_RC_VALUE. Then policyDigest := H(0...0 ||
    TPM_CC_PolicyAuthorizeNV || nvIndex Name) — the policy can be changed by rewriting the
    index. A trial session checks nothing."""
    session = _session(ctx, handle)
    if not session.trial:
        index = _nv_read_checks(ctx, auth_handle, nv_index)
        data = nv.read_data(ctx.tpm, index)
        alg = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        if alg != session.auth_hash:
            raise TpmError(RC.HASH, detail="the index holds a digest of another algorithm")
        size = HASHES[alg].size
        if len(data) < 2 + size or not _hmac.compare_digest(data[2:2 + size],
                                                            session.policy_digest):
            raise TpmError(RC.VALUE, detail="policyDigest is not the one in the index")
    session.policy_digest = bytes(HASHES[session.auth_hash].size)
    sessions.policy_update(session, CC.PolicyAuthorizeNV, nv.name(nv.lookup(ctx.tpm, nv_index)))



@command(CC.PolicyNvWritten, handles=(POLICY_SESSION,), params=(TPMI_YES_NO,))
def policy_nv_written(ctx: CommandContext, handle: int, written_set: int) -> None:
    """Part 3 §23.21: the session authorizes only an NV index whose TPMA_NV_WRITTEN is
    ``writtenSet`` (checked when the session is used: TPM_RC_POLICY_FAIL otherwise, also for
    an entity that is no NV index). Asserting the opposite of an earlier PolicyNvWritten is
    TPM_RC_VALUE + P1. Update: H(digest || TPM_CC_PolicyNvWritten || writtenSet)."""
    session = _session(ctx, handle)
    state = written_set == YES
    if session.nv_written_check and session.nv_written_state != state:
        raise TpmError(RC.VALUE, parameter=1, detail="contradicts an earlier PolicyNvWritten")
    session.nv_written_check, session.nv_written_state = True, state
    sessions.policy_update(session, CC.PolicyNvWritten, bytes([written_set]))

# ---------------------------------------------------------------------------- PolicySigned


def signature_hash(signature: Any) -> int:
    """The hash algorithm of a TPMT_SIGNATURE (the reference's CryptGetSignHashAlg())."""
    if signature.sigAlg == ALG.HMAC:
        return signature.signature.hashAlg
    return signature.signature.hash


@command(CC.PolicySigned,
         handles=(HandleSpec("authObject", check_object_handle), POLICY_SESSION),
         params=(TPM2B_NONCE, TPM2B_DIGEST, TPM2B_NONCE, INT32, TPMT_SIGNATURE),
         response=(TPM2B_TIMEOUT, TPMT_TK_AUTH))
def policy_signed(ctx: CommandContext, auth_object: int, handle: int, nonce_tpm: bytes,
                  cp_hash: bytes, policy_ref: bytes, expiration: int,
                  auth: Any) -> tuple[bytes, dict]:
    """Part 3 §23.3: the holder of authObject's private key approved this policy by signing
    aHash := H_sigHash(nonceTPM || expiration || cpHashA || policyRef) (expiration as the
    32-bit two's complement). In a policy session the parameters are checked (nonceTPM P1,
    cpHashA P2, expiration P4), then the signature (TPM_RC_SIGNATURE/SCHEME/HANDLE + P5) —
    with any key, signing attribute or not (the reference's CryptValidateSignature()). A
    trial session checks nothing. Update: H(H(digest || TPM_CC_PolicySigned ||
    authObject.Name) || policyRef). A negative expiration of a policy session returns the
    timeout and a ticket for TPM2_PolicyTicket, as TPM2_PolicySecret does."""
    session = _session(ctx, handle)
    key = sequences.loaded_object(ctx.tpm, auth_object)
    timeout = 0
    if not session.trial:
        timeout = auth_timeout(ctx, session, expiration, nonce_tpm)
        policy_parameter_checks(ctx, session, timeout, cp_hash, nonce_tpm, 1, 2, 4)
        a_hash = HASHES[signature_hash(auth)].digest(
            nonce_tpm, (expiration & 0xFFFFFFFF).to_bytes(4, "big"), cp_hash, policy_ref)
        if key is None:
            raise TpmError(RC.SCHEME, parameter=5, detail="a sequence cannot verify")
        try:
            signatures.verify(key, a_hash, auth)
        except TpmError as exc:
            raise TpmError(exc.rc, parameter=5, detail=exc.detail) from None
    name = resolve(ctx.tpm, auth_object).name
    policy_context_update(session, CC.PolicySigned, name, policy_ref, cp_hash, timeout)
    return ticket_output(ctx, ST.AUTH_SIGNED, auth_object, expiration < 0 and not session.trial,
                         timeout, nonce_tpm, cp_hash, policy_ref, name)


# ---------------------------------------------------------------------------- PolicyAuthorize


#: TPMT_TK_VERIFIED as a command parameter (Part 2 §10.7.4): from TPM2_VerifySignature.
TPMT_TK_VERIFIED_IN = ticket_param("verification", ST.VERIFIED)


@command(CC.PolicyAuthorize, handles=(POLICY_SESSION,),
         params=(TPM2B_DIGEST, TPM2B_NONCE, TPM2B_NAME, TPMT_TK_VERIFIED_IN))
def policy_authorize(ctx: CommandContext, handle: int, approved_policy: bytes,
                     policy_ref: bytes, key_sign: bytes, check_ticket: Any) -> None:
    """Part 3 §23.16: replace the policy reached so far by the authority's: if the session's
    policyDigest is approvedPolicy (TPM_RC_VALUE + P1) and checkTicket is the TPM2_VerifySignature
    ticket of the key named keySign over aHash := H_keyNameAlg(approvedPolicy || policyRef)
    (TPM_RC_VALUE + P4), the digest becomes H(H(0...0 || TPM_CC_PolicyAuthorize || keySign) ||
    policyRef). keySign must be a Name of a hash this TPM has (TPM_RC_HASH + P3) and of that
    hash's size (TPM_RC_SIZE + P3), also in a trial session, which checks nothing else."""
    session = _session(ctx, handle)
    alg = int.from_bytes(key_sign[:2], "big") if len(key_sign) >= 2 else ALG.NULL
    if alg not in HASHES:
        raise TpmError(RC.HASH, parameter=3, detail="keySign is no Name of a known hash")
    if len(key_sign) - 2 != HASHES[alg].size:
        raise TpmError(RC.SIZE, parameter=3, detail="keySign has the wrong size")
    if not session.trial:
        if not _hmac.compare_digest(session.policy_digest, approved_policy):
            raise TpmError(RC.VALUE, parameter=1, detail="not the policy reached so far")
        a_hash = HASHES[alg].digest(approved_policy, policy_ref)
        expected = verified_ticket(ctx.tpm, check_ticket.hierarchy, a_hash, key_sign)
        if not _hmac.compare_digest(expected["digest"], check_ticket.digest):
            raise TpmError(RC.VALUE, parameter=4, detail="checkTicket does not verify")
    session.policy_digest = bytes(len(session.policy_digest))
    policy_context_update(session, CC.PolicyAuthorize, key_sign, policy_ref, b"", 0)
