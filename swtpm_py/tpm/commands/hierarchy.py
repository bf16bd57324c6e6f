"""Hierarchy administration (Part 3 §24): TPM2_HierarchyControl, TPM2_HierarchyChangeAuth,
TPM2_SetPrimaryPolicy, TPM2_ChangeEPS, TPM2_ChangePPS, TPM2_Clear and TPM2_ClearControl; and
TPM2_SetAlgorithmSet (Part 3 §30.4).

Where the state lives (Part 1 §14, Part 2 §8.6-8.7):

* ownerAuth, endorsementAuth and lockoutAuth are persistent (:class:`PersistentData`), they
  survive every Startup; TPMA_PERMANENT.ownerAuthSet/endorsementAuthSet/lockoutAuthSet are
  computed from them (properties.permanent).
* platformAuth is state-clear data (:class:`StateClearData`): it is the Empty Buffer again after
  every TPM Reset and TPM Restart, and only a TPM Resume keeps it.
* shEnable, ehEnable and phEnableNV are state-clear data; phEnable is SET by every Startup
  (:class:`VolatileData`). TPMA_STARTUP_CLEAR reports all four (properties.startup_clear).
* ownerPolicy, endorsementPolicy and lockoutPolicy are persistent; platformPolicy is
  state-clear data, like platformAuth. disableClear is persistent.
* The seeds (EPS, SPS, PPS) and proofs are persistent; TPM2_ChangeEPS, TPM2_ChangePPS and
  TPM2_Clear replace them, and with them every primary key and saved context of the hierarchy.

Every command here is declared ``nv=True``, as in the reference implementation's command
attributes (TPMA_CC.nv is reported by GetCapability(COMMANDS) and compared with swtpm's by the
tests): the core commits the permanent blob before the response leaves, so an acknowledged
ownerAuth/endorsementAuth/lockoutAuth survives a kill -9, and it cancels a preceding orderly
Shutdown (the reference's g_clearOrderly for the state-clear changes: a Shutdown(STATE) taken
before the change would otherwise resume the old enables / platformAuth). Committing when only
state-clear data changed writes an unchanged permanent blob, which is harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import nv, objects
from ..constants import ALG, CC, RC, RH
from ..core import SEED_SIZE
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import (TPMI_RH_CLEAR, TPMI_RH_ENABLES, TPMI_RH_HIERARCHY, TPMI_RH_HIERARCHY_AUTH,
                       TPMI_RH_PLATFORM, handle_param)
from ..registry import Auth, HandleSpec, command
from ..state import Policy
from ..wire import TPM2B_AUTH, TPM2B_DIGEST, TPMI_ALG_HASH_NULL, UINT32
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


# ---------------------------------------------------------------------------- SetPrimaryPolicy

#: TPMI_RH_HIERARCHY_POLICY (Part 2 §9.13): the hierarchies that have an authPolicy — the same
#: four handles as TPMI_RH_HIERARCHY_AUTH here (swtpm 0.7.1 has no ACT handles: TPM_RC_VALUE).
TPMI_RH_HIERARCHY_POLICY = TPMI_RH_HIERARCHY_AUTH


@command(CC.SetPrimaryPolicy,
         handles=(HandleSpec("authHandle", TPMI_RH_HIERARCHY_POLICY, Auth.USER),),
         params=(TPM2B_DIGEST, TPMI_ALG_HASH_NULL),
         nv=True)
def set_primary_policy(ctx: CommandContext, auth_handle: int, auth_policy: bytes,
                       hash_alg: int) -> None:
    """Part 3 §24.3: set the authPolicy of a hierarchy.

    The policy must be exactly a digest of ``hashAlg`` — empty for TPM_ALG_NULL, which removes
    the policy (TPM_RC_SIZE + parameter 1 otherwise). platformPolicy is state-clear data (gone
    at the next TPM Reset/Restart), the others are persistent.
    """
    size = HASHES[hash_alg].size if hash_alg != ALG.NULL else 0
    if len(auth_policy) != size:
        raise TpmError(RC.SIZE, parameter=1,
                       detail=f"a policy of {len(auth_policy)} octets for algorithm {hash_alg:#x}")
    tpm = ctx.tpm
    policy = Policy(hash_alg, auth_policy)
    if auth_handle == RH.OWNER:
        tpm.perm.owner_policy = policy
    elif auth_handle == RH.ENDORSEMENT:
        tpm.perm.endorsement_policy = policy
    elif auth_handle == RH.LOCKOUT:
        tpm.perm.lockout_policy = policy
    else:  # RH.PLATFORM
        tpm.vol.state_clear.platform_policy = policy


# ---------------------------------------------------------------------------- ChangePPS / ChangeEPS


def _new_secret(ctx: CommandContext) -> bytes:
    """A new seed or proof from the TPM's random number generator (Part 1 §14.3)."""
    return ctx.tpm.drbg.generate(SEED_SIZE)


@command(CC.ChangePPS,
         handles=(HandleSpec("authHandle", TPMI_RH_PLATFORM, Auth.USER),),
         nv=True)
def change_pps(ctx: CommandContext, auth_handle: int) -> None:
    """Part 3 §24.5: replace the platform primary seed (PPS) and phProof.

    Every primary key of the platform hierarchy changes and its saved contexts no longer load;
    platformPolicy becomes the Empty Policy (platformAuth is kept), and so do the PCR
    authPolicies (set by the platform with TPM2_PCR_SetAuthPolicy); the loaded and persistent
    objects of the platform hierarchy are removed, and — as the reference's
    NvFlushHierarchy(TPM_RH_PLATFORM) — so are the NV indices with TPMA_NV_PLATFORMCREATE.
    """
    tpm = ctx.tpm
    tpm.perm.pps = _new_secret(ctx)
    tpm.perm.ph_proof = _new_secret(ctx)
    tpm.vol.state_clear.platform_policy = Policy()
    tpm.perm.pcr_policies = {}
    objects.flush_hierarchy(tpm, RH.PLATFORM)
    objects.evict_hierarchy(tpm, RH.PLATFORM)
    nv.flush_hierarchy(tpm, RH.PLATFORM)


@command(CC.ChangeEPS,
         handles=(HandleSpec("authHandle", TPMI_RH_PLATFORM, Auth.USER),),
         nv=True)
def change_eps(ctx: CommandContext, auth_handle: int) -> None:
    """Part 3 §24.4: replace the endorsement primary seed (EPS) and ehProof.

    Every primary key of the endorsement hierarchy (the EK) changes and its saved contexts no
    longer load; endorsementAuth becomes the Empty Auth and endorsementPolicy the Empty
    Policy; ehEnable is SET; the loaded and persistent objects of the endorsement hierarchy
    are removed (NV indices belong to the owner or the platform and stay).
    """
    tpm = ctx.tpm
    tpm.perm.eps = _new_secret(ctx)
    tpm.perm.eh_proof = _new_secret(ctx)
    tpm.vol.state_clear.eh_enable = True
    tpm.perm.endorsement_auth = b""
    tpm.perm.endorsement_policy = Policy()
    objects.flush_hierarchy(tpm, RH.ENDORSEMENT)
    objects.evict_hierarchy(tpm, RH.ENDORSEMENT)


# ---------------------------------------------------------------------------- Clear / ClearControl

#: Dictionary-attack parameters after TPM2_Clear: the manufacturer defaults of the reference's
#: DAPreInstall_Init() (maxTries 3, recoveryTime and lockoutRecovery 1000 s).
DEFAULT_MAX_TRIES = 3
DEFAULT_RECOVERY_TIME = 1000
DEFAULT_LOCKOUT_RECOVERY = 1000


@command(CC.Clear,
         handles=(HandleSpec("authHandle", TPMI_RH_CLEAR, Auth.USER),),
         nv=True)
def clear(ctx: CommandContext, auth_handle: int) -> None:
    """Part 3 §24.6: remove the owner and the endorsement user (lockout or platform
    authorization).

    TPM_RC_DISABLED while TPMA_PERMANENT.disableClear is SET. Otherwise, as the reference's
    TPM2_Clear():

    * new SPS, shProof and ehProof (the EPS stays: the EK does not change);
    * shEnable and ehEnable SET; ownerAuth, endorsementAuth and lockoutAuth the Empty Auth,
      their policies the Empty Policy (a response HMAC for lockoutAuth uses the new, empty
      value);
    * the loaded and persistent objects of the owner and endorsement hierarchies removed, and
      every NV index without TPMA_NV_PLATFORMCREATE undefined;
    * dictionary-attack parameters back to their defaults, failedTries 0, lockoutAuth usable;
    * Clock 0 and safe; resetCount, restartCount, clearCount and auditCounter 0;
    * the PCR authValues the Empty Auth, and pcrUpdateCounter incremented (the reference's
      PCRChanged(0)).
    """
    tpm = ctx.tpm
    perm, sc, reset = tpm.perm, tpm.vol.state_clear, tpm.vol.state_reset
    if perm.disable_clear:
        raise TpmError(RC.DISABLED, detail="TPM2_Clear is disabled (disableClear)")
    perm.sps = _new_secret(ctx)
    perm.sh_proof = _new_secret(ctx)
    perm.eh_proof = _new_secret(ctx)
    sc.sh_enable = sc.eh_enable = True
    perm.owner_auth = perm.endorsement_auth = perm.lockout_auth = b""
    perm.owner_policy, perm.endorsement_policy, perm.lockout_policy = Policy(), Policy(), Policy()
    for hierarchy in (RH.OWNER, RH.ENDORSEMENT):
        objects.flush_hierarchy(tpm, hierarchy)
        objects.evict_hierarchy(tpm, hierarchy)
    nv.flush_hierarchy(tpm, RH.OWNER)
    perm.failed_tries = 0
    perm.max_tries = DEFAULT_MAX_TRIES
    perm.recovery_time = DEFAULT_RECOVERY_TIME
    perm.lockout_recovery = DEFAULT_LOCKOUT_RECOVERY
    perm.lockout_auth_enabled = True
    tpm.set_clock(0)
    tpm.vol.clock_safe = True
    perm.reset_count = reset.restart_count = reset.clear_count = 0
    perm.audit_counter = 0
    sc.pcr_auth = {}
    reset.pcr_counter = (reset.pcr_counter + 1) & 0xFFFFFFFF


@command(CC.ClearControl,
         handles=(HandleSpec("auth", TPMI_RH_CLEAR, Auth.USER),),
         params=(TPMI_YES_NO,),
         nv=True)
def clear_control(ctx: CommandContext, auth: int, disable: int) -> None:
    """Part 3 §24.7: SET or CLEAR TPMA_PERMANENT.disableClear (persistent).

    Platform authorization may do both; lockout authorization may only SET it: asking it to
    CLEAR the flag is TPM_RC_AUTH_FAIL without a number, as the reference answers (the spec
    names no code).
    """
    if auth == RH.LOCKOUT and disable != YES:
        raise TpmError(RC.AUTH_FAIL, detail="lockoutAuth may not CLEAR disableClear")
    ctx.tpm.perm.disable_clear = disable == YES


# ---------------------------------------------------------------------------- SetAlgorithmSet


@command(CC.SetAlgorithmSet,
         handles=(HandleSpec("authHandle", TPMI_RH_PLATFORM, Auth.USER),),
         params=(UINT32,),
         nv=True)
def set_algorithm_set(ctx: CommandContext, auth_handle: int, algorithm_set: int) -> None:
    """Part 3 §30.4: the platform selects an algorithm set. Which algorithms a set enables is
    the manufacturer's; this TPM (like the reference and swtpm 0.7.1) has one set of
    algorithms whatever the value, and only records it: persistent, reported as
    TPM_PT_ALGORITHM_SET."""
    ctx.tpm.perm.algorithm_set = algorithm_set
