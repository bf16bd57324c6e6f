"""TPM2_Startup and TPM2_Shutdown (Part 3 §9.3, §9.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC, RC, SU
from ..errors import TpmError
from ..registry import command
from ..wire import UINT16, Checked

if TYPE_CHECKING:
    from ..core import CommandContext


def _check_su(value: int) -> None:
    if value not in (SU.CLEAR, SU.STATE):
        raise TpmError(RC.VALUE, detail=f"TPM_SU 0x{value:04x}")


TPM_SU = Checked(UINT16, _check_su)


@command(CC.Startup, params=(TPM_SU,), nv=True)
def startup(ctx: CommandContext, startup_type: int) -> None:
    """Part 3 §9.3: TPM Reset, TPM Restart or TPM Resume, chosen by the type and the previous
    shutdown."""
    ctx.tpm.startup(startup_type, ctx.locality)


@command(CC.Shutdown, params=(TPM_SU,), nv=True)
def shutdown(ctx: CommandContext, shutdown_type: int) -> None:
    """Part 3 §9.4: prepare for power loss; STATE saves what Startup(STATE) resumes."""
    ctx.tpm.shutdown(shutdown_type)

