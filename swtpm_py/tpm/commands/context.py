"""TPM2_ContextSave and TPM2_ContextLoad (Part 3 §28.2, §28.3) for transient objects and
sequences; the context format and its protection are in :mod:`swtpm_py.tpm.contexts`.

Saved sessions (Part 1 §30.5: the session stays assigned, its context counted against
TPM_PT_CONTEXT_GAP_MAX) are not implemented: ContextSave of a loaded session handle is
TPM_RC_VALUE + H1, and ContextLoad of a session context never verifies (this TPM made none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import contexts
from ..constants import CC, HT, RC
from ..errors import TpmError
from ..registry import HandleSpec, command
from .object import _check_context_handle

if TYPE_CHECKING:
    from ..core import CommandContext


@command(CC.ContextSave,
         handles=(HandleSpec("saveHandle", _check_context_handle),),
         response=(contexts.TPMS_CONTEXT,))
def context_save(ctx: CommandContext, handle: int) -> dict[str, Any]:
    """Part 3 §28.2: a protected copy of a loaded object's or sequence's context; the
    object stays loaded. The dispatcher has already answered TPM_RC_REFERENCE_H0 for an empty
    slot."""
    if handle >> 24 != HT.TRANSIENT:
        raise TpmError(RC.VALUE, handle=1, detail="session contexts are not implemented")
    return contexts.save(ctx.tpm, handle)


@command(CC.ContextLoad, params=(contexts.TPMS_CONTEXT,), response_handle=True)
def context_load(ctx: CommandContext, context: Any) -> int:
    """Part 3 §28.3: verify and decrypt a saved context and load it into a free slot with a
    new handle."""
    return contexts.load(ctx.tpm, context)

