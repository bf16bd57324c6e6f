"""Dictionary-attack protection (Part 1 §19.8.6; the reference implementation's DA.c and the DA
parts of SessionProcess.c, which swtpm 0.7.1 exhibits).

The state
    failedTries, maxTries, recoveryTime, lockoutRecovery, whether lockoutAuth may be used and
    the DA-used marker are persistent (:class:`~swtpm_py.tpm.state.PersistentData`): every
    change is committed to NV at once, also when the command itself fails (an authorization
    failure is an error response, and the core commits only successful NV commands). The
    self-healing timers and the reference's ``g_daUsed`` are volatile
    (:class:`~swtpm_py.tpm.state.VolatileData`), so a Startup restarts them.

The rules
    * An authorization that uses the authValue of a DA-protected entity (not exempt by
      :meth:`Tpm.da_exempt`: TPM_RH_LOCKOUT, objects without noDA, NV indices without NO_DA),
      or any use of a session bound to one, first checks the lockout (:func:`check_locked_out`,
      before the authValue is compared): TPM_RC_LOCKOUT, without a session number, while
      failedTries >= maxTries — or, for lockoutAuth, while its use is disabled.
    * A failure of such an authorization (:func:`increment_lockout`) is TPM_RC_AUTH_FAIL and
      counts: failedTries + 1 (not while recoveryTime is 0), or, for lockoutAuth, lockoutAuth
      disabled for lockoutRecovery seconds (until the next Startup when it is 0). Any other
      failure is TPM_RC_BAD_AUTH and counts nothing.
    * Self-healing (:func:`self_heal`): failedTries is decremented once per recoveryTime seconds
      of Time since the last failure, set to zero at once when recoveryTime is 0; lockoutAuth is
      usable again lockoutRecovery seconds after its failure. Applied lazily wherever the state
      is looked at, which gives the values the reference's per-command TimeUpdate() gives.
    * Unorderly shutdowns (USE_DA_USED, as libtpms builds it): the first DA-protected
      authorization after a Startup or Shutdown records in NV that DA was used and answers
      TPM_RC_RETRY (TSS stacks resubmit); a Startup after an unorderly shutdown increments
      failedTries only when that record is set. An orderly shutdown never counts.

Not reproduced: ACCUMULATE_SELF_HEAL_TIMER (the reference credits the healing time that passed
before an orderly shutdown); here the timers restart at every Startup, as the spec describes
("continuously powered").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import nv
from .constants import RC, RH
from .errors import TpmError
from .state import SU_NONE, SessionState

if TYPE_CHECKING:
    from .core import Tpm
    from .sessions import CommandAuth

#: recoveryTime and lockoutRecovery are in seconds, Time in milliseconds.
MS_PER_S = 1000


def self_heal(tpm: Tpm) -> None:
    """Part 1 §19.8.6 (the reference's DASelfHeal()): decrement failedTries by the number of
    whole recoveryTime periods of Time since the last failure (or clear it when recoveryTime is
    0), and enable lockoutAuth again once lockoutRecovery seconds passed since its failure
    (never by time when lockoutRecovery is 0). Committed to NV when anything changed."""
    if tpm.failure is not None or not tpm.vol.started:
        return
    p, v = tpm.perm, tpm.vol
    now = tpm.time_ms()
    changed = False
    if p.failed_tries:
        if p.recovery_time == 0:
            p.failed_tries = 0
            changed = True
        else:
            period = p.recovery_time * MS_PER_S
            steps = max(0, now - v.da_heal_timer) // period
            if steps:
                p.failed_tries = max(0, p.failed_tries - steps)
                v.da_heal_timer += steps * period
                changed = True
    if (not p.lockout_auth_enabled and p.lockout_recovery
            and now - v.da_lockout_timer >= p.lockout_recovery * MS_PER_S):
        p.lockout_auth_enabled = True
        changed = True
    if changed:
        tpm._commit_permanent()


def check_locked_out(tpm: Tpm, lockout_auth: bool) -> None:
    """The reference's CheckLockedOut(), for an authorization that will use the authValue of a
    DA-protected entity (``lockout_auth``: the entity is TPM_RH_LOCKOUT).

    TPM_RC_LOCKOUT when lockoutAuth is disabled (for lockoutAuth) or failedTries has reached
    maxTries (for any other entity). Then, for other entities, the first such authorization
    after a Startup or Shutdown records DA use in NV (the shutdown state becomes unorderly) and
    answers TPM_RC_RETRY, so that no DA failure can happen before the record is durable (swtpm
    0.7.1, measured: the first authorization of a DA-protected key after Startup is 0x922)."""
    self_heal(tpm)
    p = tpm.perm
    if lockout_auth:
        if not p.lockout_auth_enabled:
            raise TpmError(RC.LOCKOUT, detail="lockoutAuth is locked out")
        return
    if p.failed_tries >= p.max_tries:
        raise TpmError(RC.LOCKOUT, detail=f"failedTries {p.failed_tries} >= maxTries {p.max_tries}")
    if not tpm.vol.da_used:
        tpm.vol.da_used = True
        p.da_used = True
        p.orderly_state = SU_NONE
        tpm._commit_permanent()
        raise TpmError(RC.RETRY, detail="DA use recorded; resubmit the command")


def check_bound_sessions(tpm: Tpm, auth: CommandAuth) -> None:
    """Part 1 §19.8.6 for sessions bound to a DA-protected entity (the reference's
    ParseSessionBuffer() consistency loop): before any authorization is checked, each such
    session of the command is subject to the lockout of its bind entity, even when it
    authorizes nothing (a policy session is never bound, so a policy stays usable in lockout).

    The loop stops at the entries the reference rejects in the same loop before reaching the
    later sessions (a trial session, a password session that authorizes no handle): their own
    error comes first."""
    for use in auth.uses:
        session = use.session
        if session is None:
            if use.associated is None:
                return
            continue
        if session.trial:
            return
        if session.da_bound:
            check_locked_out(tpm, session.lockout_bound)


def check_authorization(tpm: Tpm, handle: int, include_auth: bool = True) -> None:
    """The lockout check of the reference's CheckAuthSession(), before the role checks and the
    authValue comparison: when the authorization uses the authValue of ``handle`` (always for a
    password session; ``include_auth`` for HMAC and policy sessions) and ``handle`` is
    DA-protected."""
    if include_auth and not tpm.da_exempt(handle):
        check_locked_out(tpm, handle == RH.LOCKOUT)


def increment_lockout(tpm: Tpm, handle: int | None, session: SessionState | None = None,
                      include_auth: bool = True) -> int:
    """The response code of a failed authorization of ``handle`` (None: a session that
    authorizes no handle) by ``session`` (None: the password session), and its DA consequences
    (the reference's IncrementLockout()).

    TPM_RC_BAD_AUTH when no DA-protected authValue was involved: the password session of an
    exempt entity; an HMAC or policy session neither bound to a DA-protected entity nor using
    the authValue of a DA-protected one. Otherwise TPM_RC_AUTH_FAIL, and the failure counts:
    a session bound to TPM_RH_LOCKOUT counts against lockoutAuth whatever it authorizes."""
    self_heal(tpm)  # (already done by the lockout check before; idempotent)
    if include_auth:
        # Part 2 §13.2: a PIN Fail index counts the failures of its own authValue.
        nv.pin_failed(tpm, handle)
    exempt = handle is None or tpm.da_exempt(handle)
    if session is None:
        if exempt:
            return RC.BAD_AUTH
    else:
        if session.lockout_bound:
            handle, exempt = RH.LOCKOUT, False
        if not session.da_bound and (exempt or not include_auth):
            return RC.BAD_AUTH
    p, v = tpm.perm, tpm.vol
    now = tpm.time_ms()
    if handle == RH.LOCKOUT:
        p.lockout_auth_enabled = False
        v.da_lockout_timer = now
    else:
        # Part 1 §19.8.6: with recoveryTime 0 the DA protection is disabled (nothing counts).
        if p.recovery_time:
            p.failed_tries += 1
        v.da_heal_timer = now
    # The command fails, so the core will not commit: the failure must be durable before the
    # response leaves, or a power cut would undo it.
    tpm._commit_permanent()
    return RC.AUTH_FAIL


def startup(tpm: Tpm, orderly: bool) -> None:
    """The reference's TPM2_Startup DA part and DAStartup(), after the new volatile state is in
    place (self-healing timers at zero). ``orderly``: the shutdown before was orderly.

    * lockoutAuth is enabled again when lockoutRecovery is 0;
    * after an unorderly shutdown (DA protection enabled, failedTries below maxTries),
      failedTries + 1 when a DA-protected authorization was used before it;
    * the record of DA use is consumed. Like the reference, it stays in effect (g_daUsed) when
      the increment did not apply, so the first DA-protected use then needs no TPM_RC_RETRY.
    Committed with the rest of Startup's persistent changes."""
    p = tpm.perm
    da_used = p.da_used
    p.da_used = False
    if p.lockout_recovery == 0:
        p.lockout_auth_enabled = True
    if p.recovery_time and p.failed_tries < p.max_tries and not orderly:
        p.failed_tries += int(da_used)
        da_used = False
    tpm.vol.da_used = da_used


def shutdown(tpm: Tpm) -> None:
    """TPM2_Shutdown (the reference, USE_DA_USED): the orderly state no longer records DA use,
    and the next DA-protected authorization must record it again (TPM_RC_RETRY), so that DA
    activity after the Shutdown makes it unorderly."""
    tpm.perm.da_used = False
    tpm.vol.da_used = False


def lockout_counter(tpm: Tpm) -> int:
    """TPM_PT_LOCKOUT_COUNTER: failedTries, self-healed to now."""
    self_heal(tpm)
    return tpm.perm.failed_tries


def in_lockout(tpm: Tpm) -> bool:
    """TPMA_PERMANENT.inLockout (Part 2 §8.6): failedTries has reached maxTries (always when
    maxTries is 0), self-healed to now."""
    self_heal(tpm)
    return tpm.perm.failed_tries >= tpm.perm.max_tries


def lock_reset(tpm: Tpm) -> None:
    """TPM2_DictionaryAttackLockReset (Part 3 §25.2): failedTries := 0."""
    tpm.perm.failed_tries = 0


def set_parameters(tpm: Tpm, max_tries: int, recovery_time: int, lockout_recovery: int) -> None:
    """TPM2_DictionaryAttackParameters (Part 3 §25.3): the new maxTries, recoveryTime and
    lockoutRecovery. failedTries is left as it is (the errata the reference follows), so a
    maxTries at or below it puts the TPM in lockout."""
    p = tpm.perm
    p.max_tries, p.recovery_time, p.lockout_recovery = max_tries, recovery_time, lockout_recovery
