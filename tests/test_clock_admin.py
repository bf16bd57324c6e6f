"""TPM2_ClockSet and TPM2_ClockRateAdjust (Part 3 §29.2-29.3), and Clock's way to NV
(TPM_PT_CLOCK_UPDATE, Part 1 §36.4).

In-process with a settable clock (exact values), differentially against the real swtpm
0.7.1 (codes, the safe flag, the direction and size of a rate adjustment measured in real
time), across process restarts and kill -9, through tpm2-tools (tpm2_setclock,
tpm2_readclock, tpm2_clockrateadjust) and tpm2-pytss ESAPI.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_CLOCK

from emulator import Emulator
from tpmcmd import FakeClock, cmd, power_on, pw_session, rc, read_clock_info, shutdown, startup
from tpmcmd import with_auth

from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.constants import CC, RC, RH
from swtpm_py.tpm.core import CLOCK_NOMINAL
from swtpm_py.tpm.state import BlobKind, PersistentData, decode_blob

SUCCESS = 0
VALUE_H1 = RC.VALUE + 0x100
VALUE_P1 = RC.VALUE + 0x040 + 0x100
INSUFFICIENT_P1 = RC.INSUFFICIENT + 0x040 + 0x100
#: Part 3 §29.2: the largest Clock TPM2_ClockSet accepts.
CLOCK_MAX = 0xFFFF000000000000
#: TPM_CLOCK_ADJUST (Part 2 §6.4).
COARSE_SLOWER, MEDIUM_SLOWER, FINE_SLOWER, NO_CHANGE = -3, -2, -1, 0
FINE_FASTER, MEDIUM_FASTER, COARSE_FASTER = 1, 2, 3
TOOLS_TIMEOUT = 60


# ---------------------------------------------------------------------------- commands


def clock_set(new_time: int, h: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_ClockSet with a password session."""
    return with_auth(CC.ClockSet, struct.pack(">I", h), struct.pack(">Q", new_time),
                     pw_session(password))


def rate_adjust(adjust: int, h: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_ClockRateAdjust with a password session."""
    return with_auth(CC.ClockRateAdjust, struct.pack(">I", h), struct.pack(">b", adjust),
                     pw_session(password))


def read(send) -> dict:
    """ReadClock's TPMS_TIME_INFO as a dict (time, clock, reset_count, restart_count, safe)."""
    response = send(cmd(CC.ReadClock))
    assert rc(response) == SUCCESS
    return read_clock_info(response)


def fake_clock(platform: Platform) -> FakeClock:
    """The platform's settable clock."""
    assert isinstance(platform.clock, FakeClock)
    return platform.clock


def stored_clock(platform: Platform) -> int:
    """Clock as the permanent blob in storage holds it."""
    blob = platform.storage.load(BlobKind.PERMANENT)
    assert blob is not None
    return decode_blob(BlobKind.PERMANENT, blob, PersistentData).clock


# ---------------------------------------------------------------------------- ClockSet


def test_clock_set(tpm: Tpm, platform: Platform) -> None:
    """Clock moves forward to newTime and keeps running from there; Time does not move.
    Earlier than Clock, or above 0xFFFF000000000000, is TPM_RC_VALUE + P1; setting it to
    itself is allowed. Owner or platform authorization (TPM_RC_VALUE + H1 otherwise)."""
    clock = fake_clock(platform)
    before = read(tpm.execute)
    assert rc(tpm.execute(clock_set(10**6))) == SUCCESS
    clock.now += 250
    after = read(tpm.execute)
    assert after["clock"] == 10**6 + 250
    assert after["time"] == before["time"] + 250
    assert rc(tpm.execute(clock_set(10**6 + 250, RH.PLATFORM))) == SUCCESS
    assert rc(tpm.execute(clock_set(10**6))) == VALUE_P1
    assert rc(tpm.execute(clock_set(CLOCK_MAX + 1))) == VALUE_P1
    assert read(tpm.execute)["clock"] == 10**6 + 250
    for h in (RH.ENDORSEMENT, RH.LOCKOUT, RH.NULL):
        assert rc(tpm.execute(clock_set(2 * 10**6, h))) == VALUE_H1
    short = with_auth(CC.ClockSet, struct.pack(">I", RH.OWNER), bytes(7), pw_session())
    assert rc(tpm.execute(short)) == INSUFFICIENT_P1
    assert rc(tpm.execute(clock_set(CLOCK_MAX))) == SUCCESS
    assert read(tpm.execute)["clock"] == CLOCK_MAX


def test_clock_set_is_in_nv_before_the_response(platform: Platform) -> None:
    """A power loss right after ClockSet keeps the new Clock (it then continues from there,
    marked not safe: the shutdown was not orderly)."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert rc(tpm.execute(clock_set(5 * 10**9))) == SUCCESS
    assert stored_clock(platform) == 5 * 10**9
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    info = read(tpm.execute)
    assert info["clock"] == 5 * 10**9 and info["safe"] == 0


def test_clock_set_makes_clock_safe(platform: Platform) -> None:
    """After an unorderly shutdown Clock is not safe; a ClockSet that writes Clock to NV (it
    crosses a TPM_PT_CLOCK_UPDATE boundary) makes it safe again (the reference's
    TimeClockUpdate()), one that stays within the same 4096 ms does not."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    clock = read(tpm.execute)["clock"]
    assert read(tpm.execute)["safe"] == 0
    assert rc(tpm.execute(clock_set((clock | 0xFFF) - 1))) == SUCCESS
    assert read(tpm.execute)["safe"] == 0
    assert rc(tpm.execute(clock_set(clock + 10**6))) == SUCCESS
    assert read(tpm.execute)["safe"] == 1


# ---------------------------------------------------------------------------- NV updates


def test_clock_reaches_nv_every_4096_ms(platform: Platform) -> None:
    """TPM_PT_CLOCK_UPDATE (4096 ms): while commands run, Clock is written to NV whenever it
    crosses a multiple of 4096 ms, so a power loss costs less than 4.1 s of Clock; in between
    nothing is written."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    clock = fake_clock(platform)
    start = read(tpm.execute)["clock"]
    assert start < 4096
    writes = []
    store = platform.storage.store
    platform.storage.store = lambda kind, data: (writes.append(kind), store(kind, data))[1]
    clock.now += 3000 - start
    read(tpm.execute)
    assert writes == [] and stored_clock(platform) < 4096
    clock.now += 1500  # Clock is now 4500: the next command writes it
    assert read(tpm.execute)["clock"] == 4500
    assert writes == [BlobKind.PERMANENT] and stored_clock(platform) == 4500
    clock.now += 20_000
    read(tpm.execute)
    assert stored_clock(platform) == 24_500
    clock.now += 4000  # power lost 4 s after the last write
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert read(tpm.execute)["clock"] == 24_500


def test_periodic_write_makes_clock_safe(platform: Platform) -> None:
    """The periodic NV write of Clock sets the safe flag again after an unorderly shutdown."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert read(tpm.execute)["safe"] == 0
    fake_clock(platform).now += 5000
    assert read(tpm.execute)["safe"] == 1


# ---------------------------------------------------------------------------- ClockRateAdjust


def test_rate_adjust_steps(tpm: Tpm, platform: Platform) -> None:
    """Each TPM_CLOCK_ADJUST moves the rate by the reference's step (coarse 300, medium 30,
    fine 1 in 30000): SLOWER makes Time and Clock advance by 30000/(30000 + step) of real
    time, FASTER by 30000/(30000 - step); NO_CHANGE keeps the rate."""
    clock = fake_clock(platform)
    for adjust, rate in [(COARSE_SLOWER, 30300), (MEDIUM_SLOWER, 30330), (FINE_SLOWER, 30331),
                         (NO_CHANGE, 30331), (FINE_FASTER, 30330), (MEDIUM_FASTER, 30300),
                         (COARSE_FASTER, 30000), (COARSE_FASTER, 29700)]:
        assert rc(tpm.execute(rate_adjust(adjust))) == SUCCESS
        before = read(tpm.execute)
        clock.now += rate * 10
        after = read(tpm.execute)
        assert after["clock"] - before["clock"] == CLOCK_NOMINAL * 10, adjust
        assert after["time"] - before["time"] == CLOCK_NOMINAL * 10, adjust


def test_rate_adjust_limit_and_reset(platform: Platform) -> None:
    """The rate stays within 30000 +/- 5000 (16.7%) however often it is adjusted, and
    _TPM_Init restores the nominal rate."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    clock = fake_clock(platform)
    for adjust, steps, rate in [(COARSE_SLOWER, 20, 35000), (COARSE_FASTER, 40, 25000)]:
        for _ in range(steps):
            assert rc(tpm.execute(rate_adjust(adjust, RH.PLATFORM))) == SUCCESS
        before = read(tpm.execute)["clock"]
        clock.now += rate
        assert read(tpm.execute)["clock"] - before == CLOCK_NOMINAL
    assert rc(tpm.execute(shutdown())) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    before = read(tpm.execute)
    clock.now += 30000
    after = read(tpm.execute)
    assert after["clock"] - before["clock"] == after["time"] - before["time"] == 30000


def test_rate_adjust_argument_checks(tpm: Tpm) -> None:
    """TPM_CLOCK_ADJUST outside -3..3 is TPM_RC_VALUE + P1; owner or platform only."""
    for value in (4, -4, 127, -128):
        assert rc(tpm.execute(rate_adjust(value))) == VALUE_P1
    assert rc(tpm.execute(rate_adjust(0, RH.ENDORSEMENT))) == VALUE_H1


# ---------------------------------------------------------------------------- differential


def test_codes_and_safe_flag_equal_swtpm(tmp_path: Path) -> None:
    """The same commands give the same codes on both, and the safe flag behaves alike after a
    kill -9 (not safe) and a ClockSet far ahead (safe again).

    One deviation, on purpose: Part 3 §29.2 requires ClockSet to update the NV copy of Clock
    before it responds, and swtpm_py does (the Clock set survives kill -9); swtpm 0.7.1 does
    not write its state for a Clock change alone (libtpms' TimeClockUpdate() restores
    g_updateNV), so after kill -9 its Clock starts over from the last state it did write."""
    results, persisted = {}, {}
    for kind in ("swtpm_py", "swtpm"):
        with Emulator(kind, tmp_path / kind) as emu:
            send = emu.command
            codes = [rc(send(c)) for c in (
                clock_set(10**8), clock_set(10**8 - 1), clock_set(CLOCK_MAX + 1),
                clock_set(10**9, RH.ENDORSEMENT), rate_adjust(4), rate_adjust(-4),
                rate_adjust(0, RH.LOCKOUT), rate_adjust(COARSE_FASTER, RH.PLATFORM),
                rate_adjust(NO_CHANGE))]
            info = read(send)
            assert info["clock"] >= 10**8
            emu.kill()
        with Emulator(kind, tmp_path / kind) as emu:
            first = read(emu.command)
            persisted[kind] = first["clock"] >= 10**8
            assert rc(emu.command(clock_set(first["clock"] + 10**7))) == SUCCESS
            second = read(emu.command)
        results[kind] = (codes, info["safe"], first["safe"], second["safe"],
                         first["reset_count"], second["clock"] >= first["clock"] + 10**7)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == ([SUCCESS, VALUE_P1, VALUE_P1, VALUE_H1, VALUE_P1, VALUE_P1,
                                 VALUE_H1, SUCCESS, SUCCESS], 1, 0, 1, 2, True)
    assert persisted == {"swtpm_py": True, "swtpm": False}


def measured_rate(emu: Emulator, seconds: float = 1.0) -> float:
    """How fast the emulator's Clock runs against real time (1.0: nominal)."""
    before, t0 = read(emu.command), time.monotonic()
    time.sleep(seconds)
    after, t1 = read(emu.command), time.monotonic()
    return (after["clock"] - before["clock"]) / ((t1 - t0) * 1000)


def test_rate_adjust_is_measurable_like_swtpm(any_emulator: Emulator) -> None:
    """Twenty COARSE_SLOWER steps (capped at +5000) make Clock run at 30000/35000 = 0.857 of
    real time on both emulators, COARSE_FASTER back past nominal makes it run faster
    (25000: 1.2); the bounds leave room for scheduling delays."""
    for _ in range(20):
        assert rc(any_emulator.command(rate_adjust(COARSE_SLOWER))) == SUCCESS
    assert 0.80 < measured_rate(any_emulator) < 0.91
    for _ in range(40):
        assert rc(any_emulator.command(rate_adjust(COARSE_FASTER))) == SUCCESS
    assert 1.12 < measured_rate(any_emulator) < 1.26


# ---------------------------------------------------------------------------- processes


@pytest.mark.parametrize("ending", ["stop", "kill"])
def test_clock_survives_process_end(tmp_path: Path, ending: str) -> None:
    """A set Clock is there after SIGTERM or SIGKILL and a new process, and runs on."""
    with Emulator("swtpm_py", tmp_path / "state") as emu:
        assert rc(emu.command(clock_set(7 * 10**9))) == SUCCESS
        emu.kill() if ending == "kill" else emu.stop()
    with Emulator("swtpm_py", tmp_path / "state") as emu:
        assert read(emu.command)["clock"] >= 7 * 10**9


# ---------------------------------------------------------------------------- tpm2-tools


def _tool(emu: Emulator, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
    return subprocess.run(list(args), env=env, capture_output=True, text=True,
                          timeout=TOOLS_TIMEOUT)


def _readclock(emu: Emulator) -> dict:
    out = _tool(emu, "tpm2_readclock")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tpm2_tools(tmp_path: Path, kind: str) -> None:
    """tpm2_setclock then tpm2_readclock shows a clock at least the set value; an earlier
    value is refused; tpm2_clockrateadjust with each adjuster succeeds, 'sss' many times slows
    Clock down measurably, an invalid adjuster is refused by the tool."""
    with Emulator(kind, tmp_path / "state") as emu:
        assert _readclock(emu)["clock_info"]["safe"] in (1, "yes", True)
        out = _tool(emu, "tpm2_setclock", str(3 * 10**9))
        assert out.returncode == 0, out.stderr
        info = _readclock(emu)
        assert 3 * 10**9 <= info["clock_info"]["clock"] < 3 * 10**9 + 60_000
        assert info["clock_info"]["reset_count"] == 1
        out = _tool(emu, "tpm2_setclock", "-c", "p", str(10**9))
        assert out.returncode != 0 and "0x1c4" in out.stderr.lower()
        for adjuster in ("s", "ss", "f", "ff", "fff"):
            out = _tool(emu, "tpm2_clockrateadjust", adjuster)
            assert out.returncode == 0, (adjuster, out.stderr)
        for _ in range(17):
            out = _tool(emu, "tpm2_clockrateadjust", "-c", "p", "sss")
            assert out.returncode == 0, out.stderr
        assert measured_rate(emu) < 0.93
        assert _tool(emu, "tpm2_clockrateadjust", "x").returncode != 0


# ---------------------------------------------------------------------------- tpm2-pytss


def test_pytss(any_emulator: Emulator) -> None:
    """ESAPI clock_set, read_clock and clock_rate_adjust; going back raises TPM_RC_VALUE."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    try:
        ctx.clock_set(4 * 10**9)
        info = ctx.read_clock()
        assert info.clockInfo.clock >= 4 * 10**9
        assert info.clockInfo.safe == 1
        with pytest.raises(TSS2_Exception) as exc:
            ctx.clock_set(10**9, auth=ESYS_TR.PLATFORM)
        assert exc.value.rc == VALUE_P1
        ctx.clock_rate_adjust(TPM2_CLOCK.COARSE_SLOWER)
        ctx.clock_rate_adjust(TPM2_CLOCK.COARSE_FASTER, auth=ESYS_TR.PLATFORM)
        assert ctx.read_clock().clockInfo.clock >= info.clockInfo.clock
    finally:
        ctx.close()
