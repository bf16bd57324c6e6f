"""NV commands (Part 3 §31): define, undefine, read, write, counters, bit fields, extend
indices, locks and authValue changes of NV indices. The model is :mod:`swtpm_py.tpm.nv`.

Every command that changes an index is declared ``nv=True`` exactly as the reference's command
attributes (TPMA_CC.nv, compared with swtpm's by tests/test_capability.py): the core commits the
permanent blob before the response leaves, and rolls it back when the command fails. The checks
and their order are the reference implementation's (NVCommands.c, NV_spt.c), which swtpm 0.7.1
runs; tests/test_nv.py compares responses with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import nv, properties
from ..constants import CC, HT, NT, RC, RH, NvAttr
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_RH_NV_AUTH, TPMI_RH_NV_INDEX, TPMI_RH_PLATFORM, TPMI_RH_PROVISION
from ..registry import Auth, HandleSpec, command
from ..wire import (MAX_NV_BUFFER_SIZE, MAX_NV_INDEX_SIZE, TPM2B_AUTH, TPM2B_MAX_NV_BUFFER,
                    TPM2B_NAME, TPM2B_NV_PUBLIC, UINT16, UINT64)

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: Parameter numbers the reference blames in TPM2_NV_DefineSpace.
_AUTH, _PUBLIC_INFO = 1, 2

#: The index types this TPM implements (all of Part 2 §13.2).
_TYPES = frozenset({NT.ORDINARY, NT.COUNTER, NT.BITS, NT.EXTEND, NT.PIN_PASS, NT.PIN_FAIL})

_AUTH_HANDLE = HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER)
_NV_INDEX = HandleSpec("nvIndex", TPMI_RH_NV_INDEX)


# ---------------------------------------------------------------------------- NV usage


def nv_usage(tpm: Tpm) -> properties.NvUsage:
    """What the NV indices take of the shared NV pool (properties.nv_usage adds the
    persistent objects)."""
    used, counters = nv.used_bytes(tpm, properties.CAPACITY.nv_index_overhead)
    return properties.NvUsage(bytes_used=used, counters=counters)


properties.register_nv_usage(nv_usage)
properties.register_handle_source(HT.NV_INDEX, nv.handles)


def _check_space(tpm: Tpm, data_size: int, counter: bool) -> None:
    """Part 3 §31.3.1: an index that does not fit in the NV pool is TPM_RC_NV_SPACE (as is a
    counter beyond TPM_PT_NV_COUNTERS_MAX, when there is one)."""
    cap = properties.CAPACITY
    usage = properties.nv_usage(tpm)
    if usage.bytes_used + cap.nv_index_overhead + data_size > cap.nv_bytes:
        raise TpmError(RC.NV_SPACE, detail="NV memory full")
    if counter and cap.nv_counters_max and usage.counters >= cap.nv_counters_max:
        raise TpmError(RC.NV_SPACE, detail="no more counter indices")


# ---------------------------------------------------------------------------- define / undefine


@command(CC.NV_DefineSpace,
         handles=(HandleSpec("authHandle", TPMI_RH_PROVISION, Auth.USER),),
         params=(TPM2B_AUTH, TPM2B_NV_PUBLIC),
         nv=True)
def nv_define_space(ctx: CommandContext, auth_handle: int, auth: bytes, pub: Any) -> None:
    """Part 3 §31.3: define an index, with the checks of the reference's NvDefineSpace() in
    their order: authPolicy and authValue sizes (TPM_RC_SIZE), phEnableNV for the platform
    (TPM_RC_HIERARCHY), the type and its data size, the attribute combinations
    (TPM_RC_ATTRIBUTES), the creator against PLATFORMCREATE, WRITEALL against
    TPM_PT_NV_BUFFER_MAX, an index already defined (TPM_RC_NV_DEFINED) and the space left
    (TPM_RC_NV_SPACE)."""
    tpm = ctx.tpm
    attrs = pub.attributes
    name_size = HASHES[pub.nameAlg].size
    if pub.authPolicy and len(pub.authPolicy) != name_size:
        raise TpmError(RC.SIZE, parameter=_PUBLIC_INFO, detail="authPolicy size != nameAlg's")
    auth = auth.rstrip(b"\x00")
    if len(auth) > name_size:
        raise TpmError(RC.SIZE, parameter=_AUTH, detail="authValue longer than nameAlg digest")
    if auth_handle == RH.PLATFORM and not tpm.vol.state_clear.ph_enable_nv:
        raise TpmError(RC.HIERARCHY, handle=1, detail="phEnableNV is CLEAR")
    kind = nv.nv_type(attrs)
    if kind not in _TYPES:
        raise TpmError(RC.ATTRIBUTES, parameter=_PUBLIC_INFO, detail=f"TPM_NT {kind}")
    if kind == NT.ORDINARY:
        size_ok = pub.dataSize <= MAX_NV_INDEX_SIZE
    elif kind == NT.EXTEND:
        size_ok = pub.dataSize == name_size
    else:
        size_ok = pub.dataSize == 8
    if not size_ok:
        raise TpmError(RC.SIZE, parameter=_PUBLIC_INFO, detail=f"dataSize {pub.dataSize}")
    _check_define_attributes(kind, attrs)
    platform_create = bool(attrs & NvAttr.PLATFORMCREATE)
    if platform_create != (auth_handle == RH.PLATFORM):
        # The creator must be able to delete the index again.
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="PLATFORMCREATE does not match")
    if attrs & NvAttr.POLICY_DELETE and auth_handle != RH.PLATFORM:
        raise TpmError(RC.ATTRIBUTES, parameter=_PUBLIC_INFO,
                       detail="POLICY_DELETE needs the platform")
    if pub.dataSize > MAX_NV_BUFFER_SIZE and attrs & NvAttr.WRITEALL:
        raise TpmError(RC.SIZE, parameter=_PUBLIC_INFO, detail="WRITEALL index too large")
    if pub.nvIndex in nv.indices(tpm):
        raise TpmError(RC.NV_DEFINED, detail=f"0x{pub.nvIndex:08x} already defined")
    _check_space(tpm, pub.dataSize, kind == NT.COUNTER)
    if attrs & NvAttr.ORDERLY and not nv.ram_fits(tpm, pub.dataSize):
        raise TpmError(RC.NV_SPACE, detail="no RAM left for orderly index data")
    nv.define(tpm, pub, auth)


def _check_define_attributes(kind: int, attrs: int) -> None:
    """The attribute rules of Part 3 §31.3.1 (TPM_RC_ATTRIBUTES + publicInfo)."""
    def refuse(why: str) -> TpmError:
        return TpmError(RC.ATTRIBUTES, parameter=_PUBLIC_INFO, detail=why)

    if kind == NT.COUNTER and attrs & NvAttr.CLEAR_STCLEAR:
        raise refuse("a counter cannot be CLEAR_STCLEAR")
    if kind == NT.PIN_FAIL and not attrs & NvAttr.NO_DA:
        raise refuse("a PIN Fail index must be NO_DA")
    if kind in (NT.PIN_FAIL, NT.PIN_PASS) and attrs & (NvAttr.AUTHWRITE | NvAttr.GLOBALLOCK
                                                       | NvAttr.WRITEDEFINE):
        raise refuse("a PIN index cannot be AUTHWRITE, GLOBALLOCK or WRITEDEFINE")
    if attrs & nv.STATE_BITS:
        raise refuse("WRITTEN, WRITELOCKED and READLOCKED cannot be set")
    if not attrs & (NvAttr.OWNERREAD | NvAttr.PPREAD | NvAttr.AUTHREAD | NvAttr.POLICYREAD):
        raise refuse("no way to read the index")
    if not attrs & (NvAttr.OWNERWRITE | NvAttr.PPWRITE | NvAttr.AUTHWRITE | NvAttr.POLICYWRITE):
        raise refuse("no way to write the index")
    if attrs & NvAttr.CLEAR_STCLEAR and attrs & NvAttr.WRITEDEFINE:
        raise refuse("CLEAR_STCLEAR with WRITEDEFINE")


@command(CC.NV_UndefineSpace,
         handles=(HandleSpec("authHandle", TPMI_RH_PROVISION, Auth.USER), _NV_INDEX),
         nv=True)
def nv_undefine_space(ctx: CommandContext, auth_handle: int, nv_index: int) -> None:
    """Part 3 §31.4: delete an index. One with POLICY_DELETE needs
    TPM2_NV_UndefineSpaceSpecial (TPM_RC_ATTRIBUTES + handle 2); the owner may not delete a
    platform index (TPM_RC_NV_AUTHORIZATION)."""
    index = nv.lookup(ctx.tpm, nv_index)
    if index.attributes & NvAttr.POLICY_DELETE:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="index needs UndefineSpaceSpecial")
    if auth_handle == RH.OWNER and index.attributes & NvAttr.PLATFORMCREATE:
        raise TpmError(RC.NV_AUTHORIZATION, detail="owner cannot delete a platform index")
    nv.delete(ctx.tpm, nv_index)


@command(CC.NV_UndefineSpaceSpecial,
         handles=(HandleSpec("nvIndex", TPMI_RH_NV_INDEX, Auth.ADMIN),
                  HandleSpec("platform", TPMI_RH_PLATFORM, Auth.USER)),
         nv=True)
def nv_undefine_space_special(ctx: CommandContext, nv_index: int, platform: int) -> None:
    """Part 3 §31.5: delete a POLICY_DELETE index with its policy (ADMIN role) and platform
    authorization; any other index is TPM_RC_ATTRIBUTES + handle 1."""
    index = nv.lookup(ctx.tpm, nv_index)
    if not index.attributes & NvAttr.POLICY_DELETE:
        raise TpmError(RC.ATTRIBUTES, handle=1, detail="index is not POLICY_DELETE")
    nv.delete(ctx.tpm, nv_index)


# ---------------------------------------------------------------------------- public area


@command(CC.NV_ReadPublic, handles=(_NV_INDEX,), response=(TPM2B_NV_PUBLIC, TPM2B_NAME))
def nv_read_public(ctx: CommandContext, nv_index: int) -> tuple[dict, bytes]:
    """Part 3 §31.6: the index's public area (current attributes) and its Name."""
    index = nv.lookup(ctx.tpm, nv_index)
    return nv.public(index), nv.name(index)


# ---------------------------------------------------------------------------- writes


@command(CC.NV_Write, handles=(_AUTH_HANDLE, _NV_INDEX), params=(TPM2B_MAX_NV_BUFFER, UINT16),
         nv=True)
def nv_write(ctx: CommandContext, auth_handle: int, nv_index: int, data: bytes,
             offset: int) -> None:
    """Part 3 §31.7: write ``data`` at ``offset`` of an ordinary or PIN index. Counter, bit
    field and extend indices are TPM_RC_ATTRIBUTES; an offset beyond the index TPM_RC_VALUE +
    parameter 2; data that does not fit, or less than the whole of a WRITEALL index,
    TPM_RC_NV_RANGE."""
    index = nv.lookup(ctx.tpm, nv_index)
    nv.check_write_access(auth_handle, index)
    if nv.nv_type(index.attributes) in (NT.COUNTER, NT.BITS, NT.EXTEND):
        raise TpmError(RC.ATTRIBUTES, detail="use the command of the index type")
    if offset > index.data_size:
        raise TpmError(RC.VALUE, parameter=2, detail=f"offset {offset}")
    if len(data) > index.data_size - offset:
        raise TpmError(RC.NV_RANGE, detail="data beyond the end of the index")
    if index.attributes & NvAttr.WRITEALL and len(data) < index.data_size:
        raise TpmError(RC.NV_RANGE, detail="WRITEALL index needs a full write")
    nv.write_data(ctx.tpm, index, offset, data, ctx.after_response.append)


@command(CC.NV_Increment, handles=(_AUTH_HANDLE, _NV_INDEX), nv=True)
def nv_increment(ctx: CommandContext, auth_handle: int, nv_index: int) -> None:
    """Part 3 §31.8: add one to a counter index. An unwritten counter starts from the largest
    value any deleted counter had (so counter values never repeat, Part 1 §37.2.3). An orderly
    counter is written through to NV whenever its low bits wrap (MAX_ORDERLY_COUNT)."""
    tpm = ctx.tpm
    index = nv.lookup(tpm, nv_index)
    nv.check_write_access(auth_handle, index)
    if nv.nv_type(index.attributes) != NT.COUNTER:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="not a counter index")
    if index.attributes & NvAttr.WRITTEN:
        value = nv.uint64(nv.read_data(tpm, index))
    else:
        value = tpm.perm.nv_max_counter
    value = (value + 1) & 0xFFFFFFFFFFFFFFFF
    wrap = properties.CAPACITY.orderly_count
    nv.write_data(tpm, index, 0, value.to_bytes(8, "big"), ctx.after_response.append,
                  to_nv=value & wrap == 0)


@command(CC.NV_Extend, handles=(_AUTH_HANDLE, _NV_INDEX), params=(TPM2B_MAX_NV_BUFFER,),
         nv=True)
def nv_extend(ctx: CommandContext, auth_handle: int, nv_index: int, data: bytes) -> None:
    """Part 3 §31.9: index := H_nameAlg(index || data) for an extend index (zeros before the
    first extend)."""
    tpm = ctx.tpm
    index = nv.lookup(tpm, nv_index)
    nv.check_write_access(auth_handle, index)
    if nv.nv_type(index.attributes) != NT.EXTEND:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="not an extend index")
    h = HASHES[index.name_alg]
    old = nv.read_data(tpm, index) if index.attributes & NvAttr.WRITTEN else bytes(h.size)
    nv.write_data(tpm, index, 0, h.digest(old, data), ctx.after_response.append)


@command(CC.NV_SetBits, handles=(_AUTH_HANDLE, _NV_INDEX), params=(UINT64,), nv=True)
def nv_set_bits(ctx: CommandContext, auth_handle: int, nv_index: int, bits: int) -> None:
    """Part 3 §31.10: OR ``bits`` into a bit-field index (zero before the first write)."""
    tpm = ctx.tpm
    index = nv.lookup(tpm, nv_index)
    nv.check_write_access(auth_handle, index)
    if nv.nv_type(index.attributes) != NT.BITS:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="not a bit-field index")
    old = nv.uint64(nv.read_data(tpm, index)) if index.attributes & NvAttr.WRITTEN else 0
    nv.write_data(tpm, index, 0, (old | bits).to_bytes(8, "big"), ctx.after_response.append)


@command(CC.NV_WriteLock, handles=(_AUTH_HANDLE, _NV_INDEX), nv=True)
def nv_write_lock(ctx: CommandContext, auth_handle: int, nv_index: int) -> None:
    """Part 3 §31.11: SET WRITELOCKED on an index with WRITEDEFINE or WRITE_STCLEAR (else
    TPM_RC_ATTRIBUTES + handle 2). Locking a locked index succeeds."""
    index = nv.lookup(ctx.tpm, nv_index)
    try:
        nv.check_write_access(auth_handle, index)
    except TpmError as exc:
        if exc.rc == RC.NV_AUTHORIZATION:
            raise
        return  # already locked: nothing to do
    if not index.attributes & (NvAttr.WRITEDEFINE | NvAttr.WRITE_STCLEAR):
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="index cannot be write locked")
    index.attributes |= NvAttr.WRITELOCKED


@command(CC.NV_GlobalWriteLock,
         handles=(HandleSpec("authHandle", TPMI_RH_PROVISION, Auth.USER),), nv=True)
def nv_global_write_lock(ctx: CommandContext, auth_handle: int) -> None:
    """Part 3 §31.12: SET WRITELOCKED on every index with GLOBALLOCK (the reference's
    NvSetGlobalLock()). The lock lasts until the next TPM Reset or Restart, or forever for an
    index with WRITEDEFINE but not WRITE_STCLEAR (see :func:`nv.on_startup`)."""
    for index in nv.indices(ctx.tpm).values():
        if index.attributes & NvAttr.GLOBALLOCK:
            index.attributes |= NvAttr.WRITELOCKED


# ---------------------------------------------------------------------------- reads


@command(CC.NV_Read, handles=(_AUTH_HANDLE, _NV_INDEX), params=(UINT16, UINT16),
         response=(TPM2B_MAX_NV_BUFFER,))
def nv_read(ctx: CommandContext, auth_handle: int, nv_index: int, size: int,
            offset: int) -> bytes:
    """Part 3 §31.13: ``size`` octets from ``offset``. More than TPM_PT_NV_BUFFER_MAX is
    TPM_RC_VALUE + parameter 1, an offset beyond the index TPM_RC_VALUE + parameter 2, a range
    beyond its end TPM_RC_NV_RANGE."""
    tpm = ctx.tpm
    index = nv.lookup(tpm, nv_index)
    _pin_authorized(ctx, auth_handle, index)
    nv.check_read_access(auth_handle, index)
    if size > MAX_NV_BUFFER_SIZE:
        raise TpmError(RC.VALUE, parameter=1, detail=f"size {size}")
    if offset > index.data_size:
        raise TpmError(RC.VALUE, parameter=2, detail=f"offset {offset}")
    if size > index.data_size - offset:
        raise TpmError(RC.NV_RANGE, detail="range beyond the end of the index")
    return nv.read_data(tpm, index)[offset:offset + size]


def _pin_authorized(ctx: CommandContext, auth_handle: int, index: Any) -> None:
    """A PIN index that authorized this command with its authValue counts the use, before the
    command's own checks (as the reference does in its authorization code), and the count is
    committed at once: NV_Read is no TPMA_CC.nv command, and a failing command still counts."""
    if auth_handle == index.handle and nv.is_pin(index.attributes):
        nv.pin_authorized(ctx.tpm, index)
        ctx.tpm._commit_permanent()


@command(CC.NV_ReadLock, handles=(_AUTH_HANDLE, _NV_INDEX), nv=True)
def nv_read_lock(ctx: CommandContext, auth_handle: int, nv_index: int) -> None:
    """Part 3 §31.14: SET READLOCKED on a READ_STCLEAR index (else TPM_RC_ATTRIBUTES +
    handle 2) until the next TPM Reset or Restart. An unwritten index may be locked; a locked
    one is locked again without error."""
    index = nv.lookup(ctx.tpm, nv_index)
    _pin_authorized(ctx, auth_handle, index)
    try:
        nv.check_read_access(auth_handle, index)
    except TpmError as exc:
        if exc.rc == RC.NV_AUTHORIZATION:
            raise
        if exc.rc == RC.NV_LOCKED:
            return
    if not index.attributes & NvAttr.READ_STCLEAR:
        raise TpmError(RC.ATTRIBUTES, handle=2, detail="index cannot be read locked")
    index.attributes |= NvAttr.READLOCKED


# ---------------------------------------------------------------------------- authValue


@command(CC.NV_ChangeAuth, handles=(HandleSpec("nvIndex", TPMI_RH_NV_INDEX, Auth.ADMIN),),
         params=(TPM2B_AUTH,), nv=True)
def nv_change_auth(ctx: CommandContext, nv_index: int, new_auth: bytes) -> None:
    """Part 3 §31.15: a new authValue (ADMIN role, i.e. a policy session); trailing zeros
    are dropped and it may not be longer than the nameAlg digest (TPM_RC_SIZE + parameter 1)."""
    index = nv.lookup(ctx.tpm, nv_index)
    auth = new_auth.rstrip(b"\x00")
    if len(auth) > HASHES[index.name_alg].size:
        raise TpmError(RC.SIZE, parameter=1, detail="newAuth longer than the nameAlg digest")
    index.auth_value = auth
