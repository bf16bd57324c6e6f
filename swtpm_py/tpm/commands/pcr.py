"""PCR commands: TPM2_PCR_Read, PCR_Extend, PCR_Event, PCR_Reset, and the PCR administration
commands PCR_Allocate, PCR_SetAuthPolicy, PCR_SetAuthValue (Part 3 §22)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC, RC, RH
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_DH_PCR, TPMI_DH_PCR_NULL, TPMI_RH_PLATFORM, handle_param
from ..pcr import (DRTM_PCR, FULL_SELECT, EMPTY_SELECT, HCRTM_PCR, PCR_ATTRIBUTES, PCR_STORAGE,
                   allocation_request, allocation_size, auth_group, can_extend, can_reset,
                   counts_update, policy_group)
from ..registry import Auth, HandleSpec, command
from ..state import Policy
from ..wire import (PCR_COUNT, TPM2B_AUTH, TPM2B_DIGEST, TPM2B_EVENT, TPMI_ALG_HASH_NULL,
                    TPML_DIGEST, TPML_DIGEST_VALUES, TPML_PCR_SELECTION, UINT8, UINT32,
                    pcr_bitmap)

if TYPE_CHECKING:
    from ..core import CommandContext


def _changed(ctx: CommandContext, pcr: int) -> None:
    """Part 3 §22.4: pcrUpdateCounter counts every change of a PCR, one per bank extended,
    except for the PCRs the profile excludes (PCRChanged() in the reference implementation)."""
    if counts_update(pcr):
        reset = ctx.tpm.vol.state_reset
        reset.pcr_counter = (reset.pcr_counter + 1) & 0xFFFFFFFF


def _extend(ctx: CommandContext, pcr: int, alg: int, digest: bytes) -> None:
    if ctx.tpm.pcrs.extend(pcr, alg, digest):
        _changed(ctx, pcr)


def _check_extend(ctx: CommandContext, pcr: int) -> None:
    """The locality must be allowed to extend ``pcr``; extending a PCR that Shutdown(STATE)
    saved invalidates that saved state (Part 3 §9.4.1, the reference implementation's
    RETURN_IF_ORDERLY in PCR_Extend and PCR_Event)."""
    if not can_extend(pcr, ctx.locality):
        raise TpmError(RC.LOCALITY, detail=f"locality {ctx.locality} may not extend PCR {pcr}")
    if PCR_ATTRIBUTES[pcr].state_save:
        ctx.tpm.clear_orderly()


@command(CC.PCR_Read, params=(TPML_PCR_SELECTION,),
         response=(UINT32, TPML_PCR_SELECTION, TPML_DIGEST))
def pcr_read(ctx: CommandContext, selection: list) -> tuple:
    """Part 3 §22.4: up to eight selected values, with the selection actually returned."""
    out_sel, digests = ctx.tpm.pcrs.read(selection)
    return ctx.tpm.vol.state_reset.pcr_counter, out_sel, digests


@command(CC.PCR_Extend, handles=(HandleSpec("pcrHandle", TPMI_DH_PCR_NULL, Auth.USER),),
         params=(TPML_DIGEST_VALUES,))
def pcr_extend(ctx: CommandContext, pcr: int, digests: list) -> None:
    """Part 3 §22.2: extend each digest into the bank of its algorithm; TPM_RH_NULL is a
    no-op that still checks its arguments."""
    if pcr == RH.NULL:
        return
    _check_extend(ctx, pcr)
    for entry in digests:
        _extend(ctx, pcr, entry.hashAlg, entry.digest)


@command(CC.PCR_Event, handles=(HandleSpec("pcrHandle", TPMI_DH_PCR_NULL, Auth.USER),),
         params=(TPM2B_EVENT,), response=(TPML_DIGEST_VALUES,))
def pcr_event(ctx: CommandContext, pcr: int, event: bytes) -> list:
    """Part 3 §22.3: digest the event with every implemented hash and extend the banks."""
    digests = [dict(hashAlg=alg, digest=h.digest(event)) for alg, h in HASHES.items()]
    if pcr != RH.NULL:
        _check_extend(ctx, pcr)
        for d in digests:
            _extend(ctx, pcr, d["hashAlg"], d["digest"])
    return digests


@command(CC.PCR_Reset, handles=(HandleSpec("pcrHandle", TPMI_DH_PCR, Auth.USER),))
def pcr_reset(ctx: CommandContext, pcr: int) -> None:
    """Part 3 §22.8: only PCRs the profile makes resettable, from an allowed locality."""
    if not can_reset(pcr, ctx.locality):
        raise TpmError(RC.LOCALITY, detail=f"locality {ctx.locality} may not reset PCR {pcr}")
    ctx.tpm.pcrs.reset(pcr)
    _changed(ctx, pcr)


# ---------------------------------------------------------------------------- administration


@command(CC.PCR_Allocate, handles=(HandleSpec("authHandle", TPMI_RH_PLATFORM, Auth.USER),),
         params=(TPML_PCR_SELECTION,), response=(UINT8, UINT32, UINT32, UINT32), nv=True)
def pcr_allocate(ctx: CommandContext, auth: int, selection: list) -> tuple:
    """Part 3 §22.5: record the PCR allocation the next TPM Reset uses (not Restart or Resume:
    core.startup takes ``perm.pcr_allocation`` only on TPM Reset).

    As the reference's PCRAllocate(): banks not named keep their current allocation, the last
    of a repeated bank wins, PCR 0 (H-CRTM) and PCR 17 (DRTM) must each stay in some bank
    (TPM_RC_PCR), and the response is allocationSuccess, maxPCR, sizeNeeded and sizeAvailable
    (all PCRs of all banks always fit). Shutdown(STATE) is refused until the next _TPM_Init
    (``vol.pcr_reconfig``, the reference's g_pcrReConfig).

    This TPM allocates whole banks only: a pcrSelect that selects some but not all PCRs is
    TPM_RC_VALUE (swtpm 0.7.1 accepts partial banks).
    """
    tpm = ctx.tpm
    # The request modifies the allocation in effect, not an earlier pending one (libtpms
    # writes the new allocation to NV only; swtpm 0.7.1 shows this in sizeNeeded).
    selects = allocation_request(tpm.vol.pcr_banks, selection)
    allocated = [pcr for sel in selects.values() for pcr in pcr_bitmap(sel)]
    if HCRTM_PCR not in allocated or DRTM_PCR not in allocated:
        raise TpmError(RC.PCR, detail="the allocation must keep PCR 0 and PCR 17")
    if any(sel not in (FULL_SELECT, EMPTY_SELECT) for sel in selects.values()):
        raise TpmError(RC.VALUE, parameter=1, detail="only whole PCR banks can be allocated")
    tpm.perm.pcr_allocation = [alg for alg, sel in selects.items() if sel == FULL_SELECT]
    tpm.vol.pcr_reconfig = True
    return 1, PCR_COUNT, allocation_size(selects), PCR_STORAGE


#: TPMI_DH_PCR as a parameter (pcrNum of TPM2_PCR_SetAuthPolicy).
TPMI_DH_PCR_PARAM = handle_param(TPMI_DH_PCR)


@command(CC.PCR_SetAuthPolicy, handles=(HandleSpec("authHandle", TPMI_RH_PLATFORM, Auth.USER),),
         params=(TPM2B_DIGEST, TPMI_ALG_HASH_NULL, TPMI_DH_PCR_PARAM), nv=True)
def pcr_set_auth_policy(ctx: CommandContext, auth: int, policy: bytes, alg: int,
                        pcr: int) -> None:
    """Part 3 §22.6: set the authPolicy of the policy group ``pcr`` belongs to (persistent).
    The policy must be a digest of ``alg`` (TPM_RC_SIZE; TPM_ALG_NULL with an empty policy
    removes it); a PCR outside the policy groups is TPM_RC_VALUE for pcrNum."""
    digest_size = HASHES[alg].size if alg in HASHES else 0
    if len(policy) != digest_size:
        raise TpmError(RC.SIZE, parameter=1, detail="authPolicy is no digest of hashAlg")
    group = policy_group(pcr)
    if group is None:
        raise TpmError(RC.VALUE, parameter=3, detail=f"PCR {pcr} has no authPolicy")
    for member in group:
        ctx.tpm.perm.pcr_policies[member] = Policy(alg, bytes(policy))


@command(CC.PCR_SetAuthValue, handles=(HandleSpec("pcrHandle", TPMI_DH_PCR, Auth.USER),),
         params=(TPM2B_AUTH,))
def pcr_set_auth_value(ctx: CommandContext, pcr: int, auth: bytes) -> None:
    """Part 3 §22.7: set the authValue of the group ``pcr`` belongs to (state-clear data: it
    survives TPM Resume only). A PCR outside the authValue groups is TPM_RC_VALUE (with no
    handle number, as the reference and swtpm 0.7.1 answer)."""
    group = auth_group(pcr)
    if group is None:
        raise TpmError(RC.VALUE, detail=f"PCR {pcr} has no authValue")
    # State-clear data changes: a preceding Shutdown(STATE) no longer describes the TPM
    # (the reference's RETURN_IF_ORDERLY).
    ctx.tpm.clear_orderly()
    for member in group:
        ctx.tpm.vol.state_clear.pcr_auth[member] = bytes(auth)
