"""Dictionary-attack protection (Part 1 §19.8.6, Part 3 §25): failedTries, lockout, lockoutAuth,
self-healing, TPM2_DictionaryAttackLockReset/Parameters, persistence across power cycles.

* Differential: each scenario sends the same raw commands to swtpm_py and to the real swtpm
  0.7.1 (fresh state each) and records every response code and the DA properties
  (TPM_PT_LOCKOUT_COUNTER..LOCKOUT_RECOVERY, TPMA_PERMANENT.inLockout); the two records must be
  equal, and the values swtpm shows are asserted too, so a shared regression cannot hide.
* In-process with a FakeClock: self-healing after recoveryTime, lockoutAuth after
  lockoutRecovery, and what power cycles (orderly or not) do to failedTries.
* tpm2-tools (tpm2_dictionarylockout, tpm2_getcap) and tpm2-pytss (ESAPI) against both.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

import objcmd as o
import sessclient as sc
from emulator import Emulator
from tpmcmd import FakeClock, power_on, shutdown, startup

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import CAP, CC, PT, RC, RH, PermanentAttr
from swtpm_py.tpm.state import BlobKind, PersistentData, decode_blob

Send = Callable[[bytes], bytes]
A = o.A

#: Format-1 codes of session 1 (Part 2 §6.6.3: TPM_RC_S | 1 << 8).
S1 = 0x800 | 0x100
AUTH_FAIL_S1 = RC.AUTH_FAIL | S1  # 0x98e
BAD_AUTH_S1 = RC.BAD_AUTH | S1  # 0x9a2
#: A DA-protected storage primary (the default template minus noDA) and a noDA one.
DA_PARENT = o.ecc_template(o.STORAGE & ~A.NO_DA)
NODA_PARENT = o.ecc_template(o.STORAGE)
#: A cheap child to create under them: sealed data.
SEALED = o.keyedhash_template(A.USER_WITH_AUTH | A.FIXED_TPM | A.FIXED_PARENT | A.NO_DA)
#: Part 3 §23.18: PolicyPassword extends the digest with TPM_CC_PolicyAuthValue.
POLICY_PASSWORD = hashlib.sha256(bytes(32) + struct.pack(">I", CC.PolicyAuthValue)).digest()


# ---------------------------------------------------------------------------- helpers


def u32(*values: int) -> bytes:
    """Big-endian UINT32s."""
    return b"".join(struct.pack(">I", v) for v in values)


def lock_reset(password: bytes = b"") -> bytes:
    """TPM2_DictionaryAttackLockReset with lockoutAuth ``password``."""
    return o.authed(CC.DictionaryAttackLockReset, u32(RH.LOCKOUT), b"", o.pw(password))


def da_parameters(max_tries: int, recovery: int, lockout_recovery: int,
                  password: bytes = b"") -> bytes:
    """TPM2_DictionaryAttackParameters with lockoutAuth ``password``."""
    return o.authed(CC.DictionaryAttackParameters, u32(RH.LOCKOUT),
                    u32(max_tries, recovery, lockout_recovery), o.pw(password))


def change_lockout_auth(new: bytes, password: bytes = b"") -> bytes:
    """TPM2_HierarchyChangeAuth(TPM_RH_LOCKOUT)."""
    return o.authed(CC.HierarchyChangeAuth, u32(RH.LOCKOUT), o.b2(new), o.pw(password))


def use_key(parent: int, password: bytes) -> bytes:
    """A command that needs the USER authorization of ``parent`` (TPM2_Create of sealed data)."""
    return o.create(parent, SEALED, data=b"x", parent_auth=password)


def da_state(send: Send) -> tuple[int, int, int, int, bool]:
    """(TPM_PT_LOCKOUT_COUNTER, MAX_AUTH_FAIL, LOCKOUT_INTERVAL, LOCKOUT_RECOVERY,
    TPMA_PERMANENT.inLockout) read with GetCapability(TPM_PROPERTIES)."""

    def props(first: int, count: int) -> list[int]:
        resp = send(o.cmd(CC.GetCapability, u32(CAP.TPM_PROPERTIES, first, count)))
        assert o.rc(resp) == 0, hex(o.rc(resp))
        n = struct.unpack_from(">I", resp, 15)[0]
        return [struct.unpack_from(">II", resp, 19 + 8 * i)[1] for i in range(n)]

    counter, max_tries, interval, recovery = props(PT.LOCKOUT_COUNTER, 4)
    (permanent,) = props(PT.PERMANENT, 1)
    return counter, max_tries, interval, recovery, bool(permanent & PermanentAttr.IN_LOCKOUT)


def primary(send: Send, template: bytes = DA_PARENT, auth: bytes = b"pw") -> tuple[int, bytes]:
    """(handle, Name) of a new owner primary with ``auth``."""
    resp = send(o.create_primary(template, auth=auth))
    assert o.rc(resp) == 0, hex(o.rc(resp))
    fields = o.parse_create_primary(resp)
    return fields["handle"], fields["name"]


@pytest.fixture
def both(tmp_path) -> Iterator[dict[str, Emulator]]:
    """swtpm_py and the real swtpm, each with fresh state (the DA state of one test must not
    leak into the next)."""
    emus: dict[str, Emulator] = {}
    try:
        for kind in ("swtpm_py", "swtpm"):
            emus[kind] = Emulator(kind, tmp_path / kind).start()
        yield emus
    finally:
        for emu in emus.values():
            emu.cleanup()


def differential(both: dict[str, Emulator], scenario: Callable[[Emulator], list]) -> list:
    """Run ``scenario`` on both emulators; its records must be equal. Returns swtpm's."""
    records = {kind: scenario(emu) for kind, emu in both.items()}
    assert records["swtpm_py"] == records["swtpm"]
    return records["swtpm"]


# ---------------------------------------------------------------------------- differential


def test_failures_count_up_to_lockout_and_lock_reset_clears(both) -> None:
    """Wrong passwords for a DA-protected key: the first DA-protected authorization after
    Startup answers TPM_RC_RETRY (libtpms USE_DA_USED), then each failure is TPM_RC_AUTH_FAIL and
    counts; at maxTries (3) every DA-protected authorization is TPM_RC_LOCKOUT, even the right
    password, while noDA entities keep working (wrong password: TPM_RC_BAD_AUTH, not counted).
    DictionaryAttackLockReset (lockoutAuth) ends the lockout."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        key, _ = primary(send)
        noda, _ = primary(send, NODA_PARENT)
        rec: list = [o.rc(send(use_key(key, b"pw")))]  # RETRY: records DA use
        rec.append(o.rc(send(use_key(key, b"pw"))))
        for _ in range(3):
            rec.append(o.rc(send(use_key(key, b"bad"))))
            rec.append(da_state(send))
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(o.rc(send(use_key(key, b"bad"))))
        rec.append(o.rc(send(use_key(noda, b"bad"))))
        rec.append(o.rc(send(use_key(noda, b"pw"))))
        rec.append(da_state(send))
        rec.append(o.rc(send(lock_reset())))
        rec.append(da_state(send))
        rec.append(o.rc(send(use_key(key, b"pw"))))
        return rec

    rec = differential(both, scenario)
    assert rec == [RC.RETRY, 0,
                   AUTH_FAIL_S1, (1, 3, 1000, 1000, False),
                   AUTH_FAIL_S1, (2, 3, 1000, 1000, False),
                   AUTH_FAIL_S1, (3, 3, 1000, 1000, True),
                   RC.LOCKOUT, RC.LOCKOUT, BAD_AUTH_S1, 0, (3, 3, 1000, 1000, True),
                   0, (0, 3, 1000, 1000, False), 0]


def test_lockout_auth_failure_locks_lockout_auth(both) -> None:
    """A wrong lockoutAuth is TPM_RC_AUTH_FAIL and locks lockoutAuth (not failedTries): then
    even the right one is TPM_RC_LOCKOUT for DictionaryAttackLockReset, DictionaryAttackParameters
    and HierarchyChangeAuth(LOCKOUT), while other DA-protected keys stay usable. No TPM_RC_RETRY:
    the DA-use record concerns failedTries only."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        rec: list = [o.rc(send(change_lockout_auth(b"lk")))]
        rec.append(o.rc(send(lock_reset(b"wrong"))))
        rec.append(da_state(send))
        rec.append(o.rc(send(lock_reset(b"lk"))))
        rec.append(o.rc(send(da_parameters(5, 6, 7, b"lk"))))
        rec.append(o.rc(send(change_lockout_auth(b"", b"lk"))))
        key, _ = primary(send)
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(da_state(send))
        return rec

    rec = differential(both, scenario)
    assert rec == [0, AUTH_FAIL_S1, (0, 3, 1000, 1000, False), RC.LOCKOUT, RC.LOCKOUT,
                   RC.LOCKOUT, RC.RETRY, 0, (0, 3, 1000, 1000, False)]


def test_parameters_max_tries_and_recovery_time(both) -> None:
    """DictionaryAttackParameters sets maxTries, recoveryTime, lockoutRecovery (TPM_PT_*);
    failedTries is kept, so a maxTries at or below it means lockout (maxTries 0: always, and
    LockReset does not help); recoveryTime 0 disables DA: failures are still TPM_RC_AUTH_FAIL
    but do not count, and failedTries is cleared."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        key, _ = primary(send)
        rec: list = [o.rc(send(use_key(key, b"pw")))]
        rec.append(o.rc(send(da_parameters(5, 6, 7))))
        rec.append(da_state(send))
        rec += [o.rc(send(use_key(key, b"bad"))) for _ in range(2)]
        rec.append(o.rc(send(da_parameters(2, 6, 7))))
        rec.append(da_state(send))
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(o.rc(send(da_parameters(0, 6, 7))))
        rec.append(o.rc(send(lock_reset())))
        rec.append(da_state(send))
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(o.rc(send(da_parameters(3, 6, 7))))
        rec.append(o.rc(send(use_key(key, b"bad"))))
        rec.append(da_state(send))
        rec.append(o.rc(send(da_parameters(3, 0, 7))))
        rec.append(da_state(send))
        rec.append(o.rc(send(use_key(key, b"bad"))))
        rec.append(da_state(send))
        return rec

    rec = differential(both, scenario)
    assert rec == [RC.RETRY, 0, (0, 5, 6, 7, False), AUTH_FAIL_S1, AUTH_FAIL_S1,
                   0, (2, 2, 6, 7, True), RC.LOCKOUT,
                   0, 0, (0, 0, 6, 7, True), RC.LOCKOUT,
                   0, AUTH_FAIL_S1, (1, 3, 6, 7, False),
                   0, (0, 3, 0, 7, False), AUTH_FAIL_S1, (0, 3, 0, 7, False)]


def test_hmac_and_policy_sessions(both) -> None:
    """Wrong HMACs (unbound HMAC session) and wrong passwords (PolicyPassword) for a
    DA-protected key count; in lockout both are TPM_RC_LOCKOUT before the HMAC is checked. A
    session bound to the DA-protected key is subject to the lockout whatever it authorizes
    (here a noDA key), and its failures count even there. An unbound HMAC session for a noDA
    key is neither counted nor locked out."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        # One key for both kinds of session (TPM2_Create needs a free object slot): userWithAuth
        # and an authPolicy of PolicyPassword.
        key, key_name = primary(send, o.ecc_template(o.STORAGE & ~A.NO_DA,
                                                     policy=POLICY_PASSWORD))
        noda, noda_name = primary(send, NODA_PARENT)
        create = o.sensitive_create(b"", b"x") + o.b2(SEALED) + o.b2(b"") + o.NO_PCRS

        def hmac_use(handle: int, name: bytes, session: sc.Session, auth: bytes,
                     wrong: bool = False, bound: bool = False) -> int:
            use = sc.Use(session, auth=auth, bound=bound,
                         hmac_override=bytes(32) if wrong else None)
            return sc.call(send, CC.Create, [(handle, name)], create, [use]).rc

        rec: list = []
        hmac = sc.start_session(send)
        rec.append(hmac_use(key, key_name, hmac, b"pw"))  # RETRY
        rec.append(hmac_use(key, key_name, hmac, b"pw"))
        rec.append(hmac_use(key, key_name, hmac, b"pw", wrong=True))
        rec.append(hmac_use(noda, noda_name, hmac, b"pw", wrong=True))
        rec.append(da_state(send)[0])
        policy = sc.start_session(send, session_type=1)
        sc_resp = send(o.cmd(CC.PolicyPassword, u32(policy.handle)))
        rec.append(o.rc(sc_resp))
        rec.append(hmac_use(key, key_name, policy, b"", wrong=True))
        rec.append(da_state(send)[0])
        bound = sc.start_session(send, bind=key, bind_auth=b"pw")
        rec.append(hmac_use(noda, noda_name, bound, b"pw", wrong=True))
        rec.append(da_state(send))
        rec.append(hmac_use(key, key_name, hmac, b"pw"))
        rec.append(hmac_use(key, key_name, hmac, b"pw", wrong=True))
        rec.append(hmac_use(key, key_name, policy, b"", wrong=True))
        rec.append(hmac_use(noda, noda_name, bound, b"pw"))
        rec.append(hmac_use(noda, noda_name, hmac, b"pw"))
        return rec

    rec = differential(both, scenario)
    assert rec == [RC.RETRY, 0, AUTH_FAIL_S1, BAD_AUTH_S1, 1, 0, AUTH_FAIL_S1, 2,
                   AUTH_FAIL_S1, (3, 3, 1000, 1000, True),
                   RC.LOCKOUT, RC.LOCKOUT, RC.LOCKOUT, RC.LOCKOUT, 0]


def test_session_bound_to_lockout_counts_against_lockout_auth(both) -> None:
    """A failed HMAC of a session bound to TPM_RH_LOCKOUT counts against lockoutAuth even when
    the session authorizes something else (the reference's isLockoutBound); after that the
    session itself is refused with TPM_RC_LOCKOUT."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        noda, noda_name = primary(send, NODA_PARENT)
        create = o.sensitive_create(b"", b"x") + o.b2(SEALED) + o.b2(b"") + o.NO_PCRS
        bound = sc.start_session(send, bind=RH.LOCKOUT)
        rec: list = []
        for wrong in (True, False):
            use = sc.Use(bound, auth=b"pw", hmac_override=bytes(32) if wrong else None)
            rec.append(sc.call(send, CC.Create, [(noda, noda_name)], create, [use]).rc)
        rec.append(o.rc(send(lock_reset())))
        rec.append(da_state(send))
        return rec

    rec = differential(both, scenario)
    assert rec == [AUTH_FAIL_S1, RC.LOCKOUT, RC.LOCKOUT, (0, 3, 1000, 1000, False)]


def test_self_healing_and_lockout_recovery_in_real_time(both) -> None:
    """With recoveryTime and lockoutRecovery of 1 s, a failure heals and lockoutAuth is usable
    again after a second of Time."""

    def scenario(emu: Emulator) -> list:
        send = emu.command
        key, _ = primary(send)
        rec: list = [o.rc(send(da_parameters(3, 1, 1)))]
        rec.append(o.rc(send(use_key(key, b"pw"))))
        rec.append(o.rc(send(use_key(key, b"bad"))))
        rec.append(o.rc(send(lock_reset(b"bad"))))
        rec.append(da_state(send))
        rec.append(o.rc(send(lock_reset())))
        return rec

    rec = differential(both, scenario)
    assert rec == [0, RC.RETRY, AUTH_FAIL_S1, AUTH_FAIL_S1, (1, 3, 1, 1, False), RC.LOCKOUT]
    time.sleep(1.2)
    after = {kind: [da_state(emu.command), o.rc(emu.command(lock_reset()))]
             for kind, emu in both.items()}
    assert after["swtpm_py"] == after["swtpm"] == [(0, 3, 1, 1, False), 0]


def test_power_loss_after_da_use_counts(both) -> None:
    """kill -9 (no TPM2_Shutdown) after a DA-protected authorization: the next Startup counts the
    unorderly shutdown as a failure, on top of the failure already in NV (it was committed
    before its TPM_RC_AUTH_FAIL response). A power loss without DA use since Startup counts
    nothing."""
    records = {}
    for kind, emu in both.items():
        send = emu.command
        key, _ = primary(send)
        rec = [o.rc(send(use_key(key, b"pw"))), o.rc(send(use_key(key, b"bad"))),
               da_state(send)]
        emu.kill()
        emu.start()
        rec.append(da_state(emu.command))
        emu.kill()
        emu.start()
        rec.append(da_state(emu.command))
        records[kind] = rec
    assert records["swtpm_py"] == records["swtpm"] == [
        RC.RETRY, AUTH_FAIL_S1, (1, 3, 1000, 1000, False), (2, 3, 1000, 1000, False),
        (2, 3, 1000, 1000, False)]


# ---------------------------------------------------------------------------- in-process


@pytest.fixture
def clock(platform: Platform) -> FakeClock:
    """The FakeClock of the ``tpm`` fixture's platform."""
    assert isinstance(platform.clock, FakeClock)
    return platform.clock


def test_self_healing_decrements_per_recovery_time(tpm: Tpm, clock: FakeClock) -> None:
    """Part 1 §19.8.6: failedTries is decremented once per recoveryTime seconds since the last
    failure (each failure restarts the period), down to zero; in lockout until it is below
    maxTries."""
    send = tpm.execute
    key, _ = primary(send)
    assert o.rc(send(da_parameters(3, 10, 1000))) == 0
    assert o.rc(send(use_key(key, b"pw"))) == RC.RETRY
    for _ in range(3):
        assert o.rc(send(use_key(key, b"bad"))) == AUTH_FAIL_S1
        clock.now += 5000  # each failure restarts the 10 s period
    assert da_state(send)[0] == 3 and da_state(send)[4]
    clock.now += 4999  # 9.999 s after the last failure
    assert o.rc(send(use_key(key, b"pw"))) == RC.LOCKOUT
    clock.now += 1
    assert da_state(send)[:1] == (2,) and not da_state(send)[4]
    assert o.rc(send(use_key(key, b"pw"))) == 0
    clock.now += 10_000
    assert da_state(send)[0] == 1
    clock.now += 25_000
    assert da_state(send)[0] == 0
    assert decode_blob(BlobKind.PERMANENT, tpm.permanent_blob(), PersistentData).failed_tries == 0


def test_recovery_time_zero_clears_failed_tries(tpm: Tpm) -> None:
    """Part 1 §19.8.6: recoveryTime 0 disables DA protection: failedTries is cleared and
    failures no longer count (they are still TPM_RC_AUTH_FAIL)."""
    send = tpm.execute
    key, _ = primary(send)
    assert o.rc(send(use_key(key, b"pw"))) == RC.RETRY
    assert o.rc(send(use_key(key, b"bad"))) == AUTH_FAIL_S1
    assert o.rc(send(da_parameters(3, 0, 1000))) == 0
    assert da_state(send)[0] == 0
    assert o.rc(send(use_key(key, b"bad"))) == AUTH_FAIL_S1
    assert da_state(send) == (0, 3, 0, 1000, False)


def test_lockout_recovery(platform: Platform, tpm: Tpm, clock: FakeClock) -> None:
    """lockoutAuth is refused for lockoutRecovery seconds after its failure; with
    lockoutRecovery 0 until the next Startup — which survives a power cycle: the disabled
    state is persistent."""
    send = tpm.execute
    assert o.rc(send(da_parameters(3, 1000, 30))) == 0
    assert o.rc(send(lock_reset(b"bad"))) == AUTH_FAIL_S1
    clock.now += 29_999
    assert o.rc(send(lock_reset())) == RC.LOCKOUT
    clock.now += 1
    assert o.rc(send(lock_reset())) == 0
    assert o.rc(send(da_parameters(3, 1000, 0))) == 0
    assert o.rc(send(lock_reset(b"bad"))) == AUTH_FAIL_S1
    clock.now += 10_000_000
    assert o.rc(send(lock_reset())) == RC.LOCKOUT
    # A power cycle without Startup does not help (the resumed TPM keeps its state) ...
    assert o.rc(send(shutdown())) == 0
    again = power_on(platform)
    assert again.perm.lockout_auth_enabled is False
    # ... the next Startup does (lockoutRecovery 0).
    assert o.rc(again.execute(startup())) == 0
    assert o.rc(again.execute(lock_reset())) == 0


def test_lockout_recovery_restarts_at_startup(platform: Platform, tpm: Tpm,
                                              clock: FakeClock) -> None:
    """The lockoutAuth timer counts Time since Startup: a lockoutAuth failure just before a
    power cycle keeps lockoutAuth refused for lockoutRecovery seconds after the next Startup
    (Part 1 §19.8.6: the TPM must be continuously powered for that long)."""
    assert o.rc(tpm.execute(da_parameters(3, 1000, 60))) == 0
    clock.now += 50_000
    assert o.rc(tpm.execute(lock_reset(b"bad"))) == AUTH_FAIL_S1
    assert o.rc(tpm.execute(shutdown())) == 0
    again = power_on(platform)
    assert o.rc(again.execute(startup())) == 0
    clock.now += 59_000
    assert o.rc(again.execute(lock_reset())) == RC.LOCKOUT
    clock.now += 1_000
    assert o.rc(again.execute(lock_reset())) == 0


def boot(platform: Platform, orderly_before: Tpm | None) -> Tpm:
    """Power-cycle: an orderly TPM2_Shutdown of ``orderly_before`` (if given), _TPM_Init,
    TPM2_Startup(CLEAR)."""
    if orderly_before is not None:
        assert o.rc(orderly_before.execute(shutdown())) == 0
    t = power_on(platform)
    assert o.rc(t.execute(startup())) == 0
    return t


def test_failed_tries_survive_power_cycles(platform: Platform, tpm: Tpm) -> None:
    """failedTries is persistent; only an unorderly shutdown after a DA-protected authorization
    (since the last Startup or Shutdown) adds a failure (libtpms USE_DA_USED)."""
    key, _ = primary(tpm.execute)
    assert o.rc(tpm.execute(use_key(key, b"pw"))) == RC.RETRY
    assert o.rc(tpm.execute(use_key(key, b"bad"))) == AUTH_FAIL_S1
    # Orderly: kept as it is.
    t = boot(platform, tpm)
    assert da_state(t.execute)[0] == 1
    # Unorderly, no DA use since Startup: not counted.
    t = boot(platform, None)
    assert da_state(t.execute)[0] == 1
    # Unorderly after DA use (a successful one): counted.
    key, _ = primary(t.execute)
    assert o.rc(t.execute(use_key(key, b"pw"))) == RC.RETRY
    assert o.rc(t.execute(use_key(key, b"pw"))) == 0
    t = boot(platform, None)
    assert da_state(t.execute)[0] == 2
    # DA use before an orderly Shutdown: not counted.
    key, _ = primary(t.execute)
    assert o.rc(t.execute(use_key(key, b"pw"))) == RC.RETRY
    t = boot(platform, t)
    assert da_state(t.execute)[0] == 2
    # DA use after the Shutdown makes it unorderly again (needs a new TPM_RC_RETRY).
    key, _ = primary(t.execute)
    assert o.rc(t.execute(use_key(key, b"pw"))) == RC.RETRY
    assert o.rc(t.execute(shutdown())) == 0
    assert o.rc(t.execute(use_key(key, b"pw"))) == RC.RETRY
    t = boot(platform, None)
    assert da_state(t.execute) == (3, 3, 1000, 1000, True)
    # In lockout an unorderly shutdown adds nothing (failedTries stays at maxTries).
    t = boot(platform, None)
    assert da_state(t.execute)[0] == 3


def test_failure_is_committed_before_the_response(platform: Platform, tpm: Tpm) -> None:
    """An authorization failure fails the command, yet failedTries is in NV when the response
    leaves; a storage failure at that point is TPM_RC_FAILURE, not an uncounted failure."""
    key, _ = primary(tpm.execute)
    assert o.rc(tpm.execute(use_key(key, b"pw"))) == RC.RETRY
    assert o.rc(tpm.execute(use_key(key, b"bad"))) == AUTH_FAIL_S1
    stored = platform.storage.load(BlobKind.PERMANENT)
    assert decode_blob(BlobKind.PERMANENT, stored, PersistentData).failed_tries == 1
    assert isinstance(platform.storage, MemoryStorage)
    platform.storage.fail_with = OSError("disk gone")
    assert o.rc(tpm.execute(use_key(key, b"bad"))) == RC.FAILURE


def test_noda_and_exempt_entities_never_count(tpm: Tpm) -> None:
    """Hierarchies (other than lockout) and noDA objects are exempt: wrong passwords are
    TPM_RC_BAD_AUTH, nothing counts, nothing is refused in lockout, and no TPM_RC_RETRY."""
    send = tpm.execute
    noda, _ = primary(send, NODA_PARENT)
    assert o.rc(send(da_parameters(0, 1000, 1000))) == 0  # maxTries 0: always in lockout
    assert o.rc(send(use_key(noda, b"bad"))) == BAD_AUTH_S1
    assert o.rc(send(use_key(noda, b"pw"))) == 0
    assert o.rc(send(o.create_primary(NODA_PARENT, hierarchy_auth=b"bad"))) == BAD_AUTH_S1
    assert da_state(send) == (0, 0, 1000, 1000, True)


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator, cwd, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu``."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, cwd=cwd,
                          timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {proc.returncode}:\n"
                             + proc.stderr.decode(errors="replace"))
    return proc


def test_tpm2_dictionarylockout(any_emulator: Emulator, tmp_path) -> None:
    """tpm2_dictionarylockout -s sets the parameters tpm2_getcap shows; failed passwords of a
    DA-protected key (tpm2_create -P) raise TPM2_PT_LOCKOUT_COUNTER; -c clears it."""
    emu = any_emulator

    def variable() -> dict:
        return yaml.safe_load(tool(emu, tmp_path, "tpm2_getcap", "properties-variable").stdout)

    tool(emu, tmp_path, "tpm2_dictionarylockout", "-s", "-n", "5", "-t", "6", "-l", "7")
    props = variable()
    assert (props["TPM2_PT_MAX_AUTH_FAIL"], props["TPM2_PT_LOCKOUT_INTERVAL"],
            props["TPM2_PT_LOCKOUT_RECOVERY"], props["TPM2_PT_LOCKOUT_COUNTER"]) == (5, 6, 7, 0)
    tool(emu, tmp_path, "tpm2_createprimary", "-C", "o", "-G", "ecc", "-p", "pw", "-a",
         "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
         "-c", "prim.ctx")
    for _ in range(2):
        proc = tool(emu, tmp_path, "tpm2_create", "-C", "prim.ctx", "-P", "bad", "-G", "ecc",
                    "-u", "k.pub", "-r", "k.priv", check=False)
        assert proc.returncode != 0 and b"0x98E" in proc.stderr
        # The failed tool leaves prim.ctx loaded (no resource manager): flush it.
        tool(emu, tmp_path, "tpm2_flushcontext", "-t")
    props = variable()
    assert props["TPM2_PT_LOCKOUT_COUNTER"] == 2
    assert props["TPM2_PT_PERMANENT"]["inLockout"] == 0
    tool(emu, tmp_path, "tpm2_dictionarylockout", "-c")
    assert variable()["TPM2_PT_LOCKOUT_COUNTER"] == 0
    # The right password works (tpm2-tss resubmits after TPM_RC_RETRY by itself).
    tool(emu, tmp_path, "tpm2_create", "-C", "prim.ctx", "-P", "pw", "-G", "ecc",
         "-u", "k.pub", "-r", "k.priv")


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss_dictionary_attack_commands(any_emulator: Emulator) -> None:
    """ESAPI dictionary_attack_parameters / dictionary_attack_lock_reset, with lockoutAuth set,
    and the values read back with get_capability."""
    from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPM2_CAP, TPM2_PT

    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    try:
        def props() -> dict[int, int]:
            _, data = ctx.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.LOCKOUT_COUNTER, 4)
            return {int(p.property): int(p.value) for p in data.data.tpmProperties}

        ctx.hierarchy_change_auth(ESYS_TR.LOCKOUT, b"lk")
        ctx.tr_set_auth(ESYS_TR.LOCKOUT, b"lk")
        ctx.dictionary_attack_parameters(7, 60, 120)
        assert props() == {PT.LOCKOUT_COUNTER: 0, PT.MAX_AUTH_FAIL: 7, PT.LOCKOUT_INTERVAL: 60,
                           PT.LOCKOUT_RECOVERY: 120}
        # A failure through tpm2-pytss (send the raw command: ESAPI would use the set auth).
        key, _ = primary(any_emulator.command)
        assert o.rc(any_emulator.command(use_key(key, b"pw"))) == RC.RETRY
        assert o.rc(any_emulator.command(use_key(key, b"bad"))) == AUTH_FAIL_S1
        assert props()[PT.LOCKOUT_COUNTER] == 1
        ctx.dictionary_attack_lock_reset()
        assert props()[PT.LOCKOUT_COUNTER] == 0
        ctx.tr_set_auth(ESYS_TR.LOCKOUT, b"wrong")
        with pytest.raises(TSS2_Exception) as err:
            ctx.dictionary_attack_lock_reset()
        assert err.value.rc == AUTH_FAIL_S1
        ctx.tr_set_auth(ESYS_TR.LOCKOUT, b"lk")
        with pytest.raises(TSS2_Exception) as err:
            ctx.dictionary_attack_parameters(3, 1000, 1000)
        assert err.value.rc == RC.LOCKOUT
    finally:
        ctx.close()
