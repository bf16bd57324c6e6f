"""TPM2_ContextSave and TPM2_ContextLoad (Part 3 §28.2, §28.3) for transient objects and
sequences, and for HMAC and policy sessions (Part 1 §30.5: a saved session keeps its handle
and loads again from its latest context only); the context format and its protection are in
:mod:`swtpm_py.tpm.contexts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import contexts, properties, sessions
from ..constants import CC, HT
from ..registry import HandleSpec, command
from .object import _check_context_handle

if TYPE_CHECKING:
    from ..core import CommandContext


@command(CC.ContextSave,
         handles=(HandleSpec("saveHandle", _check_context_handle),),
         response=(contexts.TPMS_CONTEXT,))
def context_save(ctx: CommandContext, handle: int) -> dict[str, Any]:
    """Part 3 §28.2: a protected copy of a loaded object's or sequence's context (the object
    stays loaded) or of a session's (the session becomes saved). The dispatcher has already
    answered TPM_RC_REFERENCE_H0 for an empty slot."""
    if handle >> 24 != HT.TRANSIENT:
        return contexts.save_session(ctx.tpm, handle)
    return contexts.save(ctx.tpm, handle)


@command(CC.ContextLoad, params=(contexts.TPMS_CONTEXT,), response_handle=True)
def context_load(ctx: CommandContext, context: Any) -> int:
    """Part 3 §28.3: verify and decrypt a saved context and load it into a free slot with a
    new handle."""
    return contexts.load(ctx.tpm, context)



properties.register_handle_source(properties.SAVED_SESSION, sessions.saved_handles)
