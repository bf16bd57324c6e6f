"""Clocks and timers (Part 3 §29): TPM2_ReadClock, TPM2_ClockSet and TPM2_ClockRateAdjust.

Time counts the milliseconds since _TPM_Init; Clock counts the milliseconds the TPM has been
powered over its whole life and reaches NV at least every TPM_PT_CLOCK_UPDATE ms (Part 1 §36;
the core's timer, :meth:`~swtpm_py.tpm.core.Tpm.clock_ms`). Both run at the rate that
TPM2_ClockRateAdjust sets; _TPM_Init resets the rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import construct as c

from ..constants import CC, RC
from ..errors import TpmError
from ..handles import TPMI_RH_PROVISION
from ..registry import Auth, HandleSpec, command
from ..wire import TPMS_TIME_INFO, UINT64, Checked

if TYPE_CHECKING:
    from ..core import CommandContext

#: Part 3 §29.2: the largest Clock TPM2_ClockSet accepts (a TPM has its Clock roll over no
#: sooner than that).
CLOCK_SET_MAX = 0xFFFF000000000000

#: TPM_CLOCK_ADJUST (Part 2 §6.4) as the step it adds to the reference platform's rate divisor
#: (its CLOCK_ADJUST_COARSE/_MEDIUM/_FINE: 1%, 0.1% and one count of CLOCK_NOMINAL); a positive
#: step slows Time and Clock down (swtpm 0.7.1, measured).
CLOCK_ADJUST_STEPS = {
    -3: 300,   # TPM_CLOCK_COARSE_SLOWER
    -2: 30,    # TPM_CLOCK_MEDIUM_SLOWER
    -1: 1,     # TPM_CLOCK_FINE_SLOWER
    0: 0,      # TPM_CLOCK_NO_CHANGE
    1: -1,     # TPM_CLOCK_FINE_FASTER
    2: -30,    # TPM_CLOCK_MEDIUM_FASTER
    3: -300,   # TPM_CLOCK_COARSE_FASTER
}


def _check_clock_adjust(value: int) -> None:
    # Part 2 §6.4: an INT8 outside the TPM_CLOCK_ADJUST constants is TPM_RC_VALUE.
    if value not in CLOCK_ADJUST_STEPS:
        raise TpmError(RC.VALUE, detail=f"TPM_CLOCK_ADJUST {value}")


#: TPM_CLOCK_ADJUST (Part 2 §6.4): a signed octet, -3 to 3.
TPM_CLOCK_ADJUST = Checked(c.Int8sb, _check_clock_adjust)


def time_info(ctx: CommandContext) -> dict:
    """TPMS_TIME_INFO now: Time, Clock, resetCount, restartCount and the safe flag."""
    tpm = ctx.tpm
    return dict(time=tpm.time_ms(), clockInfo=dict(
        clock=tpm.clock_ms(), resetCount=tpm.perm.reset_count,
        restartCount=tpm.vol.state_reset.restart_count, safe=int(tpm.vol.clock_safe)))


@command(CC.ReadClock, response=(TPMS_TIME_INFO,))
def read_clock(ctx: CommandContext) -> dict:
    """Part 3 §29.1: the current time and clock values, unsigned."""
    return time_info(ctx)


@command(CC.ClockSet,
         handles=(HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),),
         params=(UINT64,),
         nv=True)
def clock_set(ctx: CommandContext, auth: int, new_time: int) -> None:
    """Part 3 §29.2: advance Clock to ``newTime`` ms (owner or platform authorization).

    Clock never goes back: a ``newTime`` below the current Clock, or above
    :data:`CLOCK_SET_MAX`, is TPM_RC_VALUE + parameter 1. The new Clock is in NV before the
    response (nv=True: the commit writes Clock), and a Clock that reached NV is safe again.

    swtpm 0.7.1 differs observably here and is not followed: it does not store its state for
    a Clock change alone (libtpms' TimeClockUpdate() restores g_updateNV), so a kill -9 right
    after ClockSet loses the new Clock there; Part 3 §29.2 requires the NV update.
    """
    tpm = ctx.tpm
    if new_time > CLOCK_SET_MAX or new_time < tpm.clock_ms():
        raise TpmError(RC.VALUE, parameter=1,
                       detail=f"newTime {new_time} (Clock is {tpm.clock_ms()})")
    tpm.set_clock(new_time)


@command(CC.ClockRateAdjust,
         handles=(HandleSpec("auth", TPMI_RH_PROVISION, Auth.USER),),
         params=(TPM_CLOCK_ADJUST,))
def clock_rate_adjust(ctx: CommandContext, auth: int, rate_adjust: int) -> None:
    """Part 3 §29.3: make Time and Clock run slower or faster by a coarse, medium or fine
    step (owner or platform authorization), within the platform's bound of +/-16.7%. The rate
    is platform state, not NV: _TPM_Init resets it."""
    ctx.tpm.adjust_clock_rate(CLOCK_ADJUST_STEPS[rate_adjust])
