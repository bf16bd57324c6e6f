"""TPM2_SetCommandCodeAuditStatus (Part 3 §21.2) and the command audit counter properties.

The audit digest itself is kept by :mod:`swtpm_py.tpm.audit` (Part 1 §32.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import construct as c

from .. import properties
from ..audit import ALG_CHANGED, ALWAYS_AUDITED, NEVER_AUDITED, hash_alg
from ..constants import ALG, CC, PT, RC
from ..errors import TpmError
from ..handles import TPMI_RH_PROVISION
from ..registry import COMMANDS, Auth, HandleSpec, command
from ..state import PersistentData
from ..wire import TPMI_ALG_HASH_NULL, UINT32, Checked, compiled
from .capability import MAX_CAP_CC

if TYPE_CHECKING:
    from ..core import CommandContext


def _check_cc_count(count: int) -> None:
    # TPML_CC unmarshalling: more than MAX_CAP_CC entries is TPM_RC_SIZE.
    if count > MAX_CAP_CC:
        raise TpmError(RC.SIZE, detail=f"TPML_CC count {count} > {MAX_CAP_CC}")


#: TPML_CC as a command parameter (Part 2 §10.9.1), the count checked.
TPML_CC_PARAM = compiled(c.PrefixedArray(Checked(UINT32, _check_cc_count), UINT32))


def set_audit(perm: PersistentData, code: int) -> bool:
    """Add ``code`` to the audit list; commands not implemented and TPM2_Shutdown are ignored
    (the reference's CommandAuditSet()). Returns whether the list changed."""
    codes = perm.audit_commands
    if code not in COMMANDS or code in NEVER_AUDITED or code in codes:
        return False
    codes.append(code)
    codes.sort()
    return True


def clear_audit(perm: PersistentData, code: int) -> bool:
    """Remove ``code`` from the audit list; TPM2_SetCommandCodeAuditStatus stays
    (CommandAuditClear()). Returns whether the list changed."""
    codes = perm.audit_commands
    if code in ALWAYS_AUDITED or code not in codes:
        return False
    codes.remove(code)
    return True


@command(CC.SetCommandCodeAuditStatus,
         handles=(HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),),
         params=(TPMI_ALG_HASH_NULL, TPML_CC_PARAM, TPML_CC_PARAM), nv=True)
def set_command_code_audit_status(ctx: CommandContext, auth: int, audit_alg: int,
                                  set_list: list, clear_list: list) -> None:
    """Part 3 §21.2: change the audit hash algorithm, or the list of audited commands.

    A new algorithm (not TPM_ALG_NULL and not the current one) may not come with changes to
    the lists (TPM_RC_VALUE for auditAlg); it clears the digest, and this command is then not
    audited. Otherwise setList is added, then clearList removed; codes of commands that are
    not implemented are ignored, TPM2_Shutdown cannot be audited and
    TPM2_SetCommandCodeAuditStatus cannot be removed (the reference's behaviour).
    """
    perm = ctx.tpm.perm
    if audit_alg not in (ALG.NULL, hash_alg(ctx.tpm)):
        if set_list or clear_list:
            raise TpmError(RC.VALUE, parameter=1,
                           detail="the algorithm and the lists cannot change together")
        perm.audit_hash_alg = audit_alg
        ctx.tpm.vol.state_reset.command_audit_digest = ALG_CHANGED
        return
    for code in set_list:
        set_audit(perm, code)
    for code in clear_list:
        clear_audit(perm, code)


# Part 2 §6.13: TPM_PT_AUDIT_COUNTER_0 / _1 are the high and low 32 bits of auditCounter.
properties.provide(PT.AUDIT_COUNTER_0, lambda tpm: tpm.perm.audit_counter >> 32)
properties.provide(PT.AUDIT_COUNTER_1, lambda tpm: tpm.perm.audit_counter & 0xFFFFFFFF)
