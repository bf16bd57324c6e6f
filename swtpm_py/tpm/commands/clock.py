"""TPM2_ReadClock (Part 3 §29.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC
from ..registry import command
from ..wire import TPMS_TIME_INFO

if TYPE_CHECKING:
    from ..core import CommandContext


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
