"""Dictionary-attack functions (Part 3 §25): TPM2_DictionaryAttackLockReset and
TPM2_DictionaryAttackParameters. The DA logic itself is :mod:`swtpm_py.tpm.da`.

Both need lockoutAuth (USER role of TPM_RH_LOCKOUT, itself DA-protected: a wrong lockoutAuth
locks lockoutAuth out) and are declared ``nv=True`` as in the reference implementation's
command attributes (TPMA_CC.nv, compared with swtpm's by tests/test_capability.py): the core
commits the new DA state before the response leaves, so it survives a power cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import da
from ..constants import CC
from ..handles import TPMI_RH_LOCKOUT
from ..registry import Auth, HandleSpec, command
from ..wire import UINT32

if TYPE_CHECKING:
    from ..core import CommandContext


@command(CC.DictionaryAttackLockReset,
         handles=(HandleSpec("lockHandle", TPMI_RH_LOCKOUT, Auth.USER),),
         nv=True)
def dictionary_attack_lock_reset(ctx: CommandContext, lock_handle: int) -> None:
    """Part 3 §25.2: cancel the effect of authorization failures: failedTries := 0 (the TPM
    leaves lockout). lockoutAuth's own lockout is not affected (it needs lockoutAuth)."""
    da.lock_reset(ctx.tpm)


@command(CC.DictionaryAttackParameters,
         handles=(HandleSpec("lockHandle", TPMI_RH_LOCKOUT, Auth.USER),),
         params=(UINT32, UINT32, UINT32),
         nv=True)
def dictionary_attack_parameters(ctx: CommandContext, lock_handle: int, new_max_tries: int,
                                 new_recovery_time: int, lockout_recovery: int) -> None:
    """Part 3 §25.3: set maxTries, recoveryTime (seconds; 0 disables DA protection) and
    lockoutRecovery (seconds; 0: a lockoutAuth failure holds until the next Startup). Any
    UINT32 is accepted, as in the reference."""
    da.set_parameters(ctx.tpm, new_max_tries, new_recovery_time, lockout_recovery)
