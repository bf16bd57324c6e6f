"""Hierarchy administration: TPM2_HierarchyControl and TPM2_HierarchyChangeAuth (Part 3 §24).

Where the state lives (Part 1 §14, Part 2 §8.6-8.7):

* ownerAuth, endorsementAuth and lockoutAuth are persistent (:class:`PersistentData`), they
  survive every Startup; TPMA_PERMANENT.ownerAuthSet/endorsementAuthSet/lockoutAuthSet are
  computed from them (properties.permanent).
* platformAuth is state-clear data (:class:`StateClearData`): it is the Empty Buffer again after
  every TPM Reset and TPM Restart, and only a TPM Resume keeps it.
* shEnable, ehEnable and phEnableNV are state-clear data; phEnable is SET by every Startup
  (:class:`VolatileData`). TPMA_STARTUP_CLEAR reports all four (properties.startup_clear).

Both commands are declared ``nv=True``, as in the reference implementation's command
attributes (TPMA_CC.nv is reported by GetCapability(COMMANDS) and compared with swtpm's by the
tests): the core commits the permanent blob before the response leaves, so an acknowledged
ownerAuth/endorsementAuth/lockoutAuth survives a kill -9, and it cancels a preceding orderly
Shutdown (the reference's g_clearOrderly for the state-clear changes: a Shutdown(STATE) taken
before the change would otherwise resume the old enables / platformAuth). Committing when only
state-clear data changed writes an unchanged permanent blob, which is harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import objects
from ..constants import CC, RC, RH
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_RH_ENABLES, TPMI_RH_HIERARCHY, TPMI_RH_HIERARCHY_AUTH, handle_param
from ..registry import Auth, HandleSpec, command
from ..wire import TPM2B_AUTH
from .hash import TICKET_HASH
from .testing import TPMI_YES_NO

if TYPE_CHECKING:
    from ..core import CommandContext

#: The reference's CONTEXT_INTEGRITY_HASH_SIZE: the digest size of the context integrity hash
#: (TPM_PT_CONTEXT_HASH, SHA-512 here as in libtpms), the bound of a hierarchy authValue.
CONTEXT_INTEGRITY_HASH_SIZE = HASHES[TICKET_HASH].size

#: TPMI_YES_NO YES (Part 2 §9.2).
YES = 1


# ---------------------------------------------------------------------------- HierarchyControl


@command(CC.HierarchyControl,
         handles=(HandleSpec("authHandle", TPMI_RH_HIERARCHY, Auth.USER),),
         params=(handle_param(TPMI_RH_ENABLES), TPMI_YES_NO),
         nv=True)
def hierarchy_control(ctx: CommandContext, auth_handle: int, enable: int, state: int) -> None:
    """Part 3 §24.2: enable or disable a hierarchy (or the platform's NV indices).

    * phEnable and phEnableNV may only be changed with platform authorization;
    * shEnable (ehEnable) may be changed with platform or owner (endorsement) authorization,
      but a CLEAR one SET again only with platform authorization;
    * anything else is TPM_RC_AUTH_TYPE, without a handle number (as the reference answers).

    A hierarchy that becomes disabled has its loaded transient objects flushed; its
    persistent objects and its permanent handle then answer TPM_RC_HIERARCHY.
    """
    tpm = ctx.tpm
    sc = tpm.vol.state_clear
    select = state == YES
    if enable in (RH.PLATFORM, RH.PLATFORM_NV):
        # Only platformAuth/platformPolicy controls phEnable and phEnableNV.
        allowed = auth_handle == RH.PLATFORM
    elif enable == RH.OWNER:
        allowed = auth_handle in (RH.PLATFORM, RH.OWNER) and not (
            not sc.sh_enable and select and auth_handle != RH.PLATFORM)
    else:  # RH.ENDORSEMENT (TPMI_RH_ENABLES admits nothing else)
        allowed = auth_handle in (RH.PLATFORM, RH.ENDORSEMENT) and not (
            not sc.eh_enable and select and auth_handle != RH.PLATFORM)
    if not allowed:
        raise TpmError(RC.AUTH_TYPE,
                       detail=f"0x{auth_handle:08x} may not set 0x{enable:08x} to {state}")
    # Note: while phEnable is CLEAR platformAuth cannot authorize anything (the handle answers
    # TPM_RC_HIERARCHY), so phEnable comes back only with the next Startup.
    if enable == RH.PLATFORM:
        current = tpm.vol.ph_enable
    elif enable == RH.PLATFORM_NV:
        current = sc.ph_enable_nv
    elif enable == RH.OWNER:
        current = sc.sh_enable
    else:
        current = sc.eh_enable
    if current == select:
        return
    if enable == RH.PLATFORM:
        tpm.vol.ph_enable = select
    elif enable == RH.PLATFORM_NV:
        sc.ph_enable_nv = select
    elif enable == RH.OWNER:
        sc.sh_enable = select
    else:
        sc.eh_enable = select
    if not select and enable != RH.PLATFORM_NV:
        # Part 3 §24.2.1: the objects of a hierarchy that is disabled are flushed.
        objects.flush_hierarchy(tpm, enable)


# ---------------------------------------------------------------------------- HierarchyChangeAuth


@command(CC.HierarchyChangeAuth,
         handles=(HandleSpec("authHandle", TPMI_RH_HIERARCHY_AUTH, Auth.USER),),
         params=(TPM2B_AUTH,),
         nv=True)
def hierarchy_change_auth(ctx: CommandContext, auth_handle: int, new_auth: bytes) -> None:
    """Part 3 §24.8: replace the authValue of the owner, endorsement, platform or lockout
    hierarchy.

    Trailing zero octets are removed first (Part 1 §19.6.4.3: they are not significant in an
    authValue); what remains may not be longer than the context integrity digest
    (TPM_RC_SIZE + parameter 1).
    """
    tpm = ctx.tpm
    auth = new_auth.rstrip(b"\x00")
    if len(auth) > CONTEXT_INTEGRITY_HASH_SIZE:
        raise TpmError(RC.SIZE, parameter=1,
                       detail=f"newAuth of {len(auth)} octets exceeds the integrity digest")
    if auth_handle == RH.OWNER:
        tpm.perm.owner_auth = auth
    elif auth_handle == RH.ENDORSEMENT:
        tpm.perm.endorsement_auth = auth
    elif auth_handle == RH.LOCKOUT:
        tpm.perm.lockout_auth = auth
    else:  # RH.PLATFORM: state-clear data, lost at the next TPM Reset/Restart.
        tpm.vol.state_clear.platform_auth = auth
