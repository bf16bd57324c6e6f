"""What survives a process restart: TPM Restart, TPM Reset and power loss, end to end.

Each scenario runs against swtpm_py and against the real swtpm with the same argv and the same
state directory handling, and asserts the same observable outcome (PCR values, ReadClock
counters, response codes). A restart is a power cycle: the new process needs a Startup (the
emulators run with ``--flags not-need-init`` and no startup-*), and what it resumes is only what
TPM2_Shutdown(STATE) saved and the permanent state.

Measured on swtpm 0.7.1 / libtpms 0.9.2 (the reference installed here), and asserted for both:

* swtpm 0.7.1 sends no Shutdown(STATE) on the TPM's behalf on SIGTERM, on the control
  channel's SHUTDOWN (``swtpm_ioctl -s``) or on INIT: stopping it without a TPM2_Shutdown is an
  unorderly shutdown (the next Startup(STATE) fails with TPM_RC_VALUE on parameter 1, and after
  Startup(CLEAR) Clock is not safe). swtpm_py follows the later swtpm releases described in
  REFERENCE.md §1 and issue 2 instead: it sends that Shutdown(STATE) unless
  ``--flags disable-auto-shutdown``; the tests pin both behaviours.
* Neither writes a volatile-state file on SIGTERM or SHUTDOWN: the restarted TPM is not
  started (TPM_RC_INITIALIZE until Startup).
* Shutdown(STATE) then Startup(CLEAR) is a TPM Restart (restartCount + 1), not a TPM Reset.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tpmcmd as T
from emulator import Emulator
from swtpm_py.tpm.constants import ALG, CC, RH

KINDS = ["swtpm_py", "swtpm"]
BANKS = {ALG.SHA1: hashlib.sha1, ALG.SHA256: hashlib.sha256, ALG.SHA384: hashlib.sha384,
         ALG.SHA512: hashlib.sha512}
#: PCRs written before the restart: three with StateSave (0-15) and the two resettable ones.
PCRS = [0, 7, 15, 16, 23]
SAVED = [0, 7, 15]
TPM_RC_INITIALIZE = 0x100
#: TPM_RC_VALUE + TPM_RC_P + TPM_RC_1: Startup(STATE) without a matching Shutdown(STATE).
TPM_RC_VALUE_PARAM_1 = 0x1C4
#: Flags of a restarted emulator: no automatic Startup, the test sends it.
NO_STARTUP = "not-need-init"


def digest_for(alg: int, pcr: int) -> bytes:
    """The digest extended into ``pcr`` of bank ``alg`` by these tests."""
    return BANKS[alg](f"measurement of PCR {pcr}".encode()).digest()


def measured(alg: int, pcr: int) -> bytes:
    """The value of ``pcr`` after one extend of :func:`digest_for` from its initial zeros."""
    size = BANKS[alg]().digest_size
    return BANKS[alg](bytes(size) + digest_for(alg, pcr)).digest()


def ok(emu: Emulator, command: bytes) -> bytes:
    """Send a command that must succeed; return the response."""
    response = emu.command(command)
    assert T.rc(response) == 0, f"{emu.kind}: rc 0x{T.rc(response):x} for {command[:10].hex()}"
    return response


def extend_all(emu: Emulator) -> None:
    """Extend every PCR of :data:`PCRS` in all four banks."""
    for pcr in PCRS:
        for alg in BANKS:
            ok(emu, T.pcr_extend(pcr, alg, digest_for(alg, pcr)))


def pcr_values(emu: Emulator) -> dict[int, dict[int, bytes]]:
    """{bank: {pcr: value}} of :data:`PCRS`."""
    return {alg: dict(zip(PCRS, T.pcr_values(ok(emu, T.pcr_read(alg, PCRS))), strict=True))
            for alg in BANKS}


def clock(emu: Emulator) -> dict:
    """ReadClock's fields."""
    return T.read_clock_info(ok(emu, T.cmd(CC.ReadClock)))


def owner_ticket(emu: Emulator) -> bytes:
    """The HASHCHECK ticket HMAC of a fixed message under the owner hierarchy: keyed with the
    owner proof, a permanent value (Part 1 §14.4)."""
    data = b"ticket across restarts"
    response = ok(emu, T.cmd(CC.Hash, struct.pack(">H", len(data)) + data
                             + struct.pack(">HI", ALG.SHA256, RH.OWNER)))
    off = 10 + 2 + 32
    tag, hierarchy, size = struct.unpack_from(">HIH", response, off)
    assert (tag, hierarchy, size) == (0x8024, RH.OWNER, 64)
    return response[off + 8:off + 8 + size]


def terminate(emu: Emulator) -> None:
    """SIGTERM: the process must exit 0 within 1 s (issue 2)."""
    start = time.monotonic()
    rc = emu.stop(timeout=5.0)
    elapsed = time.monotonic() - start
    assert rc == 0, f"{emu.kind} exited {rc} on SIGTERM"
    assert elapsed < 1.0, f"{emu.kind} took {elapsed:.2f}s to exit on SIGTERM"


def ioctl_shutdown(emu: Emulator) -> None:
    """The control channel's SHUTDOWN through the real swtpm_ioctl (libvirt's way): the tool
    succeeds and the process exits 0."""
    proc = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}", "-s"],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert emu.proc is not None
    assert emu.proc.wait(timeout=5) == 0
    emu.stop()


STOPS = {"sigterm": terminate, "ioctl-s": ioctl_shutdown}


class Machine:
    """One TPM (a state directory) whose emulator process is started again and again."""

    def __init__(self, kind: str, state_dir: Path) -> None:
        self.kind = kind
        self.state_dir = state_dir
        self._processes: list[Emulator] = []

    def power_on(self, flags: str = NO_STARTUP) -> Emulator:
        """Start a new emulator process on the state directory."""
        emu = Emulator(self.kind, self.state_dir, flags=flags)
        self._processes.append(emu)
        return emu.start()

    def cleanup(self) -> None:
        """Stop whatever still runs."""
        for emu in self._processes:
            emu.cleanup()


@pytest.fixture(params=KINDS)
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    """A new TPM of each kind in turn."""
    m = Machine(request.param, tmp_path / f"{request.param}-state")
    yield m
    m.cleanup()


@pytest.fixture
def first(machine: Machine) -> Emulator:
    """The machine's first process, after its first Startup(CLEAR) (startup-clear flag)."""
    return machine.power_on(flags="not-need-init,startup-clear")


@pytest.mark.parametrize("stop", list(STOPS))
def test_shutdown_state_restart_startup_state_resumes(machine: Machine, first: Emulator,
                                                     stop: str) -> None:
    """Shutdown(STATE), process exit, Startup(STATE) in a new process: a TPM Restart (Part 1
    §12.2.3). PCRs 0-15 come back in all banks, 16 and 23 start again at zero, restartCount
    counts, resetCount does not, Clock stays safe."""
    extend_all(first)
    before = pcr_values(first)
    assert clock(first)["reset_count"] == 1
    ok(first, T.shutdown(clear=False))
    STOPS[stop](first)

    second = machine.power_on()
    assert T.rc(second.command(T.cmd(CC.ReadClock))) == TPM_RC_INITIALIZE
    ok(second, T.startup(clear=False))
    after = pcr_values(second)
    for alg in BANKS:
        size = BANKS[alg]().digest_size
        assert {p: after[alg][p] for p in SAVED} == {p: before[alg][p] for p in SAVED}
        assert {p: after[alg][p] for p in SAVED} == {p: measured(alg, p) for p in SAVED}
        assert (after[alg][16], after[alg][23]) == (bytes(size), bytes(size))
    info = clock(second)
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (1, 1, 1)

    # A second Restart counts again; the saved state was consumed by the first.
    ok(second, T.shutdown(clear=False))
    STOPS[stop](second)
    third = machine.power_on()
    ok(third, T.startup(clear=False))
    assert (clock(third)["reset_count"], clock(third)["restart_count"]) == (1, 2)
    assert pcr_values(third)[ALG.SHA256][7] == measured(ALG.SHA256, 7)


@pytest.mark.parametrize("shutdown,counters", [("CLEAR", (2, 0)), ("STATE", (1, 1))])
def test_startup_clear_after_restart_resets_pcrs(machine: Machine, first: Emulator,
                                                 shutdown: str, counters: tuple[int, int]) -> None:
    """Startup(CLEAR) in a new process after an orderly shutdown: every PCR back to its initial
    value, Clock safe, the owner proof (permanent) unchanged. After Shutdown(CLEAR) it is a TPM
    Reset (resetCount + 1, restartCount 0); after Shutdown(STATE) a TPM Restart (restartCount
    + 1), Part 1 §12.2.3."""
    extend_all(first)
    ticket = owner_ticket(first)
    ok(first, T.shutdown(clear=shutdown == "CLEAR"))
    terminate(first)

    second = machine.power_on()
    ok(second, T.startup(clear=True))
    for alg, values in pcr_values(second).items():
        assert values == {p: bytes(BANKS[alg]().digest_size) for p in PCRS}
    info = clock(second)
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (*counters, 1)
    assert owner_ticket(second) == ticket


def test_startup_state_after_shutdown_clear_fails(machine: Machine, first: Emulator) -> None:
    """Shutdown(CLEAR) saves nothing to resume: Startup(STATE) is TPM_RC_VALUE (parameter 1);
    Startup(CLEAR) then works."""
    ok(first, T.shutdown(clear=True))
    terminate(first)
    second = machine.power_on()
    assert T.rc(second.command(T.startup(clear=False))) == TPM_RC_VALUE_PARAM_1
    ok(second, T.startup(clear=True))
    assert clock(second)["reset_count"] == 2


def test_permanent_state_survives_kill_9(machine: Machine, first: Emulator) -> None:
    """SIGKILL (power loss) loses nothing acknowledged: resetCount keeps counting across two
    kills and the owner proof is the same; the shutdown was unorderly, so Clock is not safe."""
    ticket = owner_ticket(first)
    assert clock(first)["reset_count"] == 1
    emu = first
    for expected_resets in (2, 3):
        emu.kill()
        emu = machine.power_on()
        ok(emu, T.startup(clear=True))
        info = clock(emu)
        assert (info["reset_count"], info["restart_count"], info["safe"]) == (
            expected_resets, 0, 0)
        assert owner_ticket(emu) == ticket


def test_startup_state_after_kill_9_fails(machine: Machine, first: Emulator) -> None:
    """A power loss without Shutdown is an unorderly shutdown: Startup(STATE) is TPM_RC_VALUE
    (parameter 1), and Startup(CLEAR) starts from initial PCR values with Clock not safe."""
    extend_all(first)
    first.kill()
    second = machine.power_on()
    assert T.rc(second.command(T.startup(clear=False))) == TPM_RC_VALUE_PARAM_1
    ok(second, T.startup(clear=True))
    assert pcr_values(second)[ALG.SHA1][0] == bytes(20)
    info = clock(second)
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (2, 0, 0)


def test_shutdown_state_survives_kill_9(machine: Machine, first: Emulator) -> None:
    """Shutdown(STATE) is acknowledged only once its state is stored: a SIGKILL right after it
    still allows Startup(STATE) with the PCRs."""
    extend_all(first)
    ok(first, T.shutdown(clear=False))
    first.kill()
    second = machine.power_on()
    ok(second, T.startup(clear=False))
    assert pcr_values(second)[ALG.SHA384][15] == measured(ALG.SHA384, 15)
    assert clock(second)["restart_count"] == 1


#: Whether the emulator sends TPM2_Shutdown(STATE) on the TPM's behalf when it stops (SIGTERM,
#: control SHUTDOWN, INIT) and the last command was not a Shutdown. swtpm_py does, as swtpm
#: does since 0.8 (REFERENCE.md §1, issue 2); the reference installed here, swtpm 0.7.1, does
#: not (measured: Startup(STATE) then fails with TPM_RC_VALUE).
AUTO_SHUTDOWN = {"swtpm_py": True, "swtpm": False}


def power_cycle(machine: Machine, emu: Emulator, how: str) -> Emulator:
    """Stop the TPM without a TPM2_Shutdown and power it on again: a new process after SIGTERM
    or ``swtpm_ioctl -s``, the same process after ``swtpm_ioctl -i`` (INIT)."""
    if how == "ioctl-i":
        proc = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}", "-i"],
                              capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return emu
    STOPS[how](emu)
    return machine.power_on()


def assert_unorderly(emu: Emulator) -> None:
    """The TPM saw an unorderly shutdown: Startup(STATE) is TPM_RC_VALUE, Startup(CLEAR) is a
    TPM Reset with initial PCRs and an unsafe Clock."""
    assert T.rc(emu.command(T.startup(clear=False))) == TPM_RC_VALUE_PARAM_1
    ok(emu, T.startup(clear=True))
    info = clock(emu)
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (2, 0, 0)
    assert pcr_values(emu)[ALG.SHA256][7] == bytes(32)


@pytest.mark.parametrize("how", ["sigterm", "ioctl-s", "ioctl-i"])
def test_stop_without_shutdown(machine: Machine, first: Emulator, how: str) -> None:
    """SIGTERM, swtpm_ioctl -s or -i while the TPM runs and the last command was not a
    Shutdown. Either way the TPM comes back unstarted (no volatile state is resumed). With the
    automatic Shutdown(STATE) (swtpm_py; swtpm >= 0.8) the stop counts as orderly and
    Startup(STATE) resumes the PCRs; without it (swtpm 0.7.1) it is an unorderly shutdown."""
    extend_all(first)
    emu = power_cycle(machine, first, how)
    assert T.rc(emu.command(T.cmd(CC.ReadClock))) == TPM_RC_INITIALIZE
    if AUTO_SHUTDOWN[machine.kind]:
        ok(emu, T.startup(clear=False))
        info = clock(emu)
        assert (info["reset_count"], info["restart_count"], info["safe"]) == (1, 1, 1)
        assert pcr_values(emu)[ALG.SHA256][7] == measured(ALG.SHA256, 7)
        assert pcr_values(emu)[ALG.SHA256][16] == bytes(32)
    else:
        assert_unorderly(emu)


@pytest.mark.parametrize("how", ["sigterm", "ioctl-s", "ioctl-i"])
def test_disable_auto_shutdown_is_unorderly(tmp_path: Path, how: str) -> None:
    """swtpm_py with ``--flags ...,disable-auto-shutdown`` (a swtpm >= 0.8 flag that 0.7.1
    rejects) behaves like swtpm 0.7.1 in the test above: the stop is unorderly."""
    machine = Machine("swtpm_py", tmp_path / "state")
    try:
        emu = machine.power_on(flags="not-need-init,startup-clear,disable-auto-shutdown")
        extend_all(emu)
        if how != "ioctl-i":
            STOPS[how](emu)
            emu = machine.power_on(flags="not-need-init,disable-auto-shutdown")
        else:
            emu = power_cycle(machine, emu, how)
        assert T.rc(emu.command(T.cmd(CC.ReadClock))) == TPM_RC_INITIALIZE
        assert_unorderly(emu)
    finally:
        machine.cleanup()
