"""TPM2_PP_Commands (Part 3 §26.2): the list of commands that need physical presence when
TPM_RH_PLATFORM authorizes them.

swtpm has no way to assert physical presence (libtpms' _plat__PhysicalPresenceAsserted() stays
FALSE), and neither has this platform unless the embedding :class:`~swtpm_py.tpm.Platform`'s
``physical_presence`` says so. The dispatcher refuses a command on the list that
TPM_RH_PLATFORM authorizes without it (TPM_RC_PP for the session, before the authorization is
checked, as swtpm 0.7.1 answers); TPM2_PP_Commands is always on the list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC
from ..handles import TPMI_RH_PLATFORM
from ..registry import COMMANDS, Auth, HandleSpec, command
from .audit import TPML_CC_PARAM

if TYPE_CHECKING:
    from ..core import CommandContext

#: Commands that always require physical presence (the reference's PP_REQUIRED attribute).
PP_REQUIRED = frozenset({CC.PP_Commands})
#: Commands that TPM2_PP_Commands may make require physical presence: those TPM_RH_PLATFORM
#: may authorize (the reference's PP_COMMAND attribute in CommandAttributeData.h).
PP_COMMAND = frozenset({
    CC.NV_UndefineSpaceSpecial, CC.EvictControl, CC.HierarchyControl, CC.NV_UndefineSpace,
    CC.ChangeEPS, CC.ChangePPS, CC.Clear, CC.ClearControl, CC.ClockSet,
    CC.HierarchyChangeAuth, CC.NV_DefineSpace, CC.PCR_Allocate, CC.PCR_SetAuthPolicy,
    CC.SetPrimaryPolicy, CC.FieldUpgradeStart, CC.ClockRateAdjust, CC.CreatePrimary,
    CC.NV_GlobalWriteLock, CC.SetCommandCodeAuditStatus,
})


@command(CC.PP_Commands, handles=(HandleSpec("auth", TPMI_RH_PLATFORM, Auth.USER),),
         params=(TPML_CC_PARAM, TPML_CC_PARAM), nv=True)
def pp_commands(ctx: CommandContext, auth: int, set_list: list, clear_list: list) -> None:
    """Part 3 §26.2: add setList to, then remove clearList from, the physical presence list.

    As the reference: codes of commands that are not implemented or cannot require physical
    presence are ignored in setList, and commands that always require it stay (clearList).
    Physical presence was checked by the dispatcher (TPM2_PP_Commands is always on the list).
    """
    tpm = ctx.tpm
    codes = tpm.perm.pp_commands
    for code in set_list:
        if code in COMMANDS and code in PP_COMMAND and code not in codes:
            codes.append(code)
    for code in clear_list:
        if code in codes and code not in PP_REQUIRED:
            codes.remove(code)
    codes.sort()
