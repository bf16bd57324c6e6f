"""PCR commands: TPM2_PCR_Read, PCR_Extend, PCR_Event, PCR_Reset (Part 3 §22)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC, RC, RH
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_DH_PCR, TPMI_DH_PCR_NULL
from ..pcr import PCR_ATTRIBUTES, can_extend, can_reset, counts_update
from ..registry import Auth, HandleSpec, command
from ..wire import (TPM2B_EVENT, TPML_DIGEST, TPML_DIGEST_VALUES, TPML_PCR_SELECTION, UINT32)

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
