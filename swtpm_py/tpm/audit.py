"""Command audit (Part 1 §32.2): the commands in the audit list extend the command audit
digest when they succeed.

The dispatcher calls :func:`begin` once the command is authorized (before the handler runs,
so that the Names in cpHash are those the command was sent with) and :func:`finish` with the
response of a successful command:

* cpHash := H_auditAlg(commandCode || Name1 || Name2 || Name3 || parameters as sent);
* rpHash := H_auditAlg(TPM_RC_SUCCESS || commandCode || response parameters as sent);
* digest := H_auditAlg(digest || cpHash || rpHash), the digest starting at zeros;
* the first extension after the digest was cleared (TPM Reset, a change of the audit
  algorithm, TPM2_GetCommandAuditDigest) increments auditCounter, which is persistent
  (the reference's CommandAudit(), as swtpm 0.7.1 shows in TPM_PT_AUDIT_COUNTER_0/1).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .constants import ALG, CC, ST
from .crypto import HASHES
from .entity import resolve

if TYPE_CHECKING:
    from .core import CommandContext, Tpm
    from .registry import CommandSpec

#: Placeholder digest meaning "the audit algorithm was just changed": the command that changed
#: it is not audited, and the digest starts anew with the next audited command (the reference
#: marks this with a digest size of one).
ALG_CHANGED = b"\x00"

#: Commands that cannot be audited (the reference's CommandAuditSet()).
NEVER_AUDITED = frozenset({CC.Shutdown})
#: Commands that are always audited (CommandAuditClear() refuses to clear it).
ALWAYS_AUDITED = frozenset({CC.SetCommandCodeAuditStatus})


def hash_alg(tpm: Tpm) -> int:
    """The command audit hash algorithm. A permanent state written before command audit
    existed holds TPM_ALG_NULL: it audits with the manufacturing default, SHA-512."""
    alg = tpm.perm.audit_hash_alg
    return alg if alg in HASHES else ALG.SHA512


def is_audited(tpm: Tpm, code: int) -> bool:
    """Whether command ``code`` is in the command audit list."""
    return code in tpm.perm.audit_commands


def begin(ctx: CommandContext, handles: list[int], parameters: bytes) -> bytes | None:
    """The cpHash of an audited command, taken before its handler runs; None when the command
    is not audited. ``parameters`` is the parameter area as sent (before decryption)."""
    tpm = ctx.tpm
    if not is_audited(tpm, ctx.code):
        return None
    alg = hash_alg(tpm)
    if ctx.auth is not None:
        return ctx.auth.cp_hash(alg)
    names = [resolve(tpm, h).name for h in handles]
    return HASHES[alg].digest(struct.pack(">I", ctx.code), *names, parameters)


def response_parameters(spec: CommandSpec, response: bytes) -> bytes:
    """The parameter area of a successful response (Part 1 §18.8): after the header and the
    response handle, and, with sessions, after parameterSize and before the sessions."""
    offset = 10 + (4 if spec.response_handle else 0)
    tag = struct.unpack_from(">H", response)[0]
    if tag == ST.SESSIONS:
        size = struct.unpack_from(">I", response, offset)[0]
        return response[offset + 4:offset + 4 + size]
    return response[offset:]


def reset_digest(tpm: Tpm) -> None:
    """Clear the command audit digest after TPM2_GetCommandAuditDigest reported it (Part 3
    §18.6): the next audited command starts a new digest and increments auditCounter."""
    tpm.vol.state_reset.command_audit_digest = b""


def finish(tpm: Tpm, spec: CommandSpec, cp_hash: bytes, response: bytes) -> None:
    """Extend the command audit digest with a successful audited command."""
    reset = tpm.vol.state_reset
    if reset.command_audit_digest == ALG_CHANGED:
        reset.command_audit_digest = b""
        return
    h = HASHES[hash_alg(tpm)]
    if not reset.command_audit_digest:
        reset.command_audit_digest = bytes(h.size)
        tpm.perm.audit_counter = (tpm.perm.audit_counter + 1) & 0xFFFFFFFFFFFFFFFF
        # auditCounter is persistent: in NV before the response leaves.
        tpm._commit_permanent()
    rp_hash = h.digest(bytes(4), struct.pack(">I", spec.code),
                       response_parameters(spec, response))
    reset.command_audit_digest = h.digest(reset.command_audit_digest, cp_hash, rp_hash)
