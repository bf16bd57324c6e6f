"""NV indices (Part 1 §37 "NV Memory", Part 2 §13, Part 3 §31): the model the NV commands,
TPM2_Clear, the sessions and the handle/NV-usage reports share.

Where an index lives:

* Its public area, authValue and data are in :attr:`PersistentData.nv_indices` (the permanent
  blob), so every change is committed before the response of the command that made it.
* A TPMA_NV_ORDERLY index keeps its current data in RAM (:attr:`VolatileData.nv_orderly`,
  Part 1 §37.2.2); it reaches the permanent blob at an orderly TPM2_Shutdown
  (:func:`on_shutdown`), and for counters also whenever the low bits of the count wrap (every
  MAX_ORDERLY_COUNT + 1 increments), so that after an unorderly shutdown the counter can resume
  above every value it ever reported (:func:`on_startup`).
* WRITTEN, WRITELOCKED and READLOCKED are bits of the index's current attributes; they are
  part of its public area and therefore of its Name (Part 2 §13.4).

Behaviour follows the reference implementation (NV_spt.c, NVDynamic.c) that swtpm 0.7.1 runs;
tests/test_nv.py compares it with swtpm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .constants import CC, HT, NT, RC, RH, NvAttr, NV_TYPE_SHIFT
from .crypto import HASHES
from .entity import Entity, register_resolver
from .errors import TpmError
from .state import NvIndexState, Policy
from .wire import TPMS_NV_PUBLIC

if TYPE_CHECKING:
    from .core import Tpm

#: The attribute bits that change during an index's life (not settable at TPM2_NV_DefineSpace).
STATE_BITS = NvAttr.WRITTEN | NvAttr.WRITELOCKED | NvAttr.READLOCKED

#: Commands that write an index (the reference's IsWriteOperation()): authorization of the
#: index for them uses AUTHWRITE / POLICYWRITE. TPM2_NV_WriteLock counts as a write.
WRITE_OPERATIONS = frozenset({CC.NV_Write, CC.NV_Increment, CC.NV_SetBits, CC.NV_Extend,
                              CC.NV_WriteLock})

#: Commands that read an index (the reference's IsReadOperation()): authorization of the index
#: for them uses AUTHREAD / POLICYREAD. TPM2_NV_ReadLock counts as a read.
READ_OPERATIONS = frozenset({CC.NV_Read, CC.NV_ReadLock, CC.PolicyNV, CC.NV_Certify})

#: RAM for the data of orderly indices (libtpms' RAM_INDEX_SPACE) and what each one takes
#: besides its data there (its size, handle and attributes: 3 x 4 octets). Measured on swtpm
#: 0.7.1: one orderly index of 500 octets fits, 512 do not; six of 64 octets fit, seven do not.
RAM_INDEX_SPACE = 512
RAM_INDEX_OVERHEAD = 12

#: Initial content of index data that was never written (the reference erases NV to 0xFF).
ERASED = 0xFF


# ---------------------------------------------------------------------------- the table


def indices(tpm: Tpm) -> dict[int, NvIndexState]:
    """The defined NV indices by handle."""
    return tpm.perm.nv_indices


def hierarchy_of(index: NvIndexState) -> int:
    """The hierarchy an index belongs to: TPM_RH_PLATFORM when TPMA_NV_PLATFORMCREATE is SET,
    otherwise TPM_RH_OWNER (Part 2 §13.4)."""
    return RH.PLATFORM if index.attributes & NvAttr.PLATFORMCREATE else RH.OWNER


def nv_type(attributes: int) -> int:
    """The TPM_NT of an index's attributes (bits 4-7)."""
    return (attributes & NvAttr.TPM_NT_MASK) >> NV_TYPE_SHIFT


def is_pin(attributes: int) -> bool:
    """Whether the index is a PIN Pass or PIN Fail index (Part 2 §13.2)."""
    return nv_type(attributes) in (NT.PIN_PASS, NT.PIN_FAIL)


def visible(tpm: Tpm, index: NvIndexState) -> bool:
    """Part 1 §37.3 (the reference's NvIndexIsAccessible()): an owner index does not exist
    while shEnable is CLEAR, a platform index while phEnableNV is CLEAR."""
    sc = tpm.vol.state_clear
    if index.attributes & NvAttr.PLATFORMCREATE:
        return sc.ph_enable_nv
    return sc.sh_enable


def lookup(tpm: Tpm, handle: int) -> NvIndexState:
    """The index at ``handle``; TPM_RC_HANDLE when it is not defined or not visible."""
    index = indices(tpm).get(handle)
    if index is None or not visible(tpm, index):
        raise TpmError(RC.HANDLE, detail=f"NV index 0x{handle:08x} not defined")
    return index


def written(tpm: Tpm, handle: int | None) -> bool | None:
    """TPMA_NV_WRITTEN of the index at ``handle``; None when ``handle`` is no defined index
    (what TPM2_PolicyNvWritten's check at authorization needs)."""
    index = indices(tpm).get(handle) if handle is not None else None
    return None if index is None else bool(index.attributes & NvAttr.WRITTEN)


def handles(tpm: Tpm) -> list[int]:
    """The defined NV indices (GetCapability(HANDLES), TPM_PT_HR_NV_INDEX): all of them, also
    those hidden while their hierarchy is disabled, as the reference's NvCapGetIndex()
    (measured on swtpm 0.7.1)."""
    return list(indices(tpm))


# ---------------------------------------------------------------------------- public area, Name


def public(index: NvIndexState) -> dict:
    """The index's TPMS_NV_PUBLIC as the wire layer builds it."""
    return dict(nvIndex=index.handle, nameAlg=index.name_alg, attributes=index.attributes,
                authPolicy=index.auth_policy, dataSize=index.data_size)


def name(index: NvIndexState) -> bytes:
    """Part 1 §16: Name = nameAlg || H_nameAlg(TPMS_NV_PUBLIC) with the current attributes."""
    digest = HASHES[index.name_alg].digest(TPMS_NV_PUBLIC.build(public(index)))
    return index.name_alg.to_bytes(2, "big") + digest


def entity(index: NvIndexState) -> Entity:
    """What authorization needs of an index: Name, authValue, authPolicy, NO_DA."""
    policy = Policy(index.name_alg, index.auth_policy) if index.auth_policy else Policy()
    return Entity(index.handle, name(index), auth_value=index.auth_value, auth_policy=policy,
                  no_da=bool(index.attributes & NvAttr.NO_DA))


def _resolve(tpm: Tpm, handle: int) -> Entity:
    return entity(lookup(tpm, handle))


register_resolver(HT.NV_INDEX, _resolve)


# ---------------------------------------------------------------------------- authorization


def auth_value_available(tpm: Tpm, handle: int, code: int) -> bool:
    """Part 1 §19.7.1 for an index (the reference's IsAuthValueAvailable()): its authValue
    authorizes a write only with AUTHWRITE, anything else only with AUTHREAD — except a PIN
    index, whose authValue is usable while it is written and pinCount < pinLimit."""
    index = lookup(tpm, handle)
    attrs = index.attributes
    if code in WRITE_OPERATIONS:
        return bool(attrs & NvAttr.AUTHWRITE)
    if is_pin(attrs):
        if not attrs & NvAttr.WRITTEN:
            return False
        count, limit = pin_values(tpm, index)
        return count < limit
    return bool(attrs & NvAttr.AUTHREAD)


def policy_available(tpm: Tpm, handle: int, code: int) -> bool:
    """Part 1 §19.7.1 for an index (the reference's IsAuthPolicyAvailable()): its authPolicy
    authorizes a write only with POLICYWRITE, a read only with POLICYREAD; for other commands
    (TPM2_NV_ChangeAuth and TPM2_NV_UndefineSpaceSpecial, ADMIN role) it is always available
    (measured on swtpm 0.7.1: ChangeAuth of an index with neither attribute succeeds)."""
    attrs = lookup(tpm, handle).attributes
    if code in WRITE_OPERATIONS:
        return bool(attrs & NvAttr.POLICYWRITE)
    if code in READ_OPERATIONS:
        return bool(attrs & NvAttr.POLICYREAD)
    return True


def check_read_access(auth_handle: int, index: NvIndexState) -> None:
    """The reference's NvReadAccessChecks(): READLOCKED is TPM_RC_NV_LOCKED; owner or platform
    authorization needs OWNERREAD or PPREAD, else the index must authorize itself
    (TPM_RC_NV_AUTHORIZATION); an index never written is TPM_RC_NV_UNINITIALIZED (checked
    last, so that NV_ReadLock of an unwritten index works)."""
    attrs = index.attributes
    if attrs & NvAttr.READLOCKED:
        raise TpmError(RC.NV_LOCKED, detail="index is read locked")
    _check_authorizer(auth_handle, index, NvAttr.OWNERREAD, NvAttr.PPREAD)
    if not attrs & NvAttr.WRITTEN:
        raise TpmError(RC.NV_UNINITIALIZED, detail="index never written")


def check_write_access(auth_handle: int, index: NvIndexState) -> None:
    """The reference's NvWriteAccessChecks(): WRITELOCKED is TPM_RC_NV_LOCKED; owner or
    platform authorization needs OWNERWRITE or PPWRITE, else the index must authorize itself
    (TPM_RC_NV_AUTHORIZATION)."""
    if index.attributes & NvAttr.WRITELOCKED:
        raise TpmError(RC.NV_LOCKED, detail="index is write locked")
    _check_authorizer(auth_handle, index, NvAttr.OWNERWRITE, NvAttr.PPWRITE)


def _check_authorizer(auth_handle: int, index: NvIndexState, owner_bit: int,
                      platform_bit: int) -> None:
    # Authorization by the index itself was checked against AUTHREAD/AUTHWRITE or
    # POLICYREAD/POLICYWRITE by the session (auth_value_available / policy_available).
    if auth_handle == RH.OWNER:
        ok = bool(index.attributes & owner_bit)
    elif auth_handle == RH.PLATFORM:
        ok = bool(index.attributes & platform_bit)
    else:
        ok = auth_handle == index.handle
    if not ok:
        raise TpmError(RC.NV_AUTHORIZATION, detail=f"0x{auth_handle:08x} may not do this")


# ---------------------------------------------------------------------------- data


def read_data(tpm: Tpm, index: NvIndexState) -> bytes:
    """The index's current data (RAM for an orderly index, else NV)."""
    if index.attributes & NvAttr.ORDERLY:
        return tpm.vol.nv_orderly.get(index.handle, index.data)
    return index.data


def write_data(tpm: Tpm, index: NvIndexState, offset: int, data: bytes,
               defer: Callable[[Callable[[], None]], None], *, to_nv: bool = False) -> None:
    """Write ``data`` at ``offset`` and SET TPMA_NV_WRITTEN (the reference's
    NvWriteIndexData()).

    The data of an orderly index goes to RAM, and to NV as well when ``to_nv`` or when this
    first write SETs WRITTEN (the reference writes an orderly index through when its
    attributes change: after a power loss an orderly counter resumes from that NV copy, see
    :func:`on_startup`). The RAM change is handed to ``defer`` (the command's after-response
    list), so it happens only once the permanent blob of the command is committed: a command
    whose commit fails leaves RAM and NV as they were."""
    old = read_data(tpm, index)
    new = old[:offset] + data + old[offset + len(data):]
    first = not index.attributes & NvAttr.WRITTEN
    index.attributes |= NvAttr.WRITTEN
    if index.attributes & NvAttr.ORDERLY:
        if to_nv or first:
            index.data = new
        handle = index.handle
        defer(lambda: tpm.vol.nv_orderly.__setitem__(handle, new))
    else:
        index.data = new


def uint64(data: bytes) -> int:
    """A counter's or bit field's value (big-endian, as NV_Read returns it)."""
    return int.from_bytes(data[:8], "big")


def pin_values(tpm: Tpm, index: NvIndexState) -> tuple[int, int]:
    """(pinCount, pinLimit) of a PIN index (TPMS_NV_PIN_COUNTER_PARAMETERS, Part 2 §13.8)."""
    data = read_data(tpm, index)
    return int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")


def pin_authorized(tpm: Tpm, index: NvIndexState) -> None:
    """A successful authorization with a PIN index's authValue (Part 2 §13.2): a PIN Pass
    index counts it (pinCount + 1), a PIN Fail index starts counting failures afresh
    (pinCount := 0), as swtpm 0.7.1 does (measured)."""
    kind = nv_type(index.attributes)
    count, limit = pin_values(tpm, index)
    if kind == NT.PIN_PASS:
        count += 1
    elif kind == NT.PIN_FAIL:
        count = 0
    else:
        return
    index.data = (count & 0xFFFFFFFF).to_bytes(4, "big") + limit.to_bytes(4, "big")


def pin_failed(tpm: Tpm, handle: int | None) -> None:
    """A failed authorization with the authValue of ``handle``: for a written PIN Fail index
    pinCount counts the failure, up to pinLimit (Part 2 §13.2; a PIN Fail index is NO_DA, its
    own count replaces the dictionary-attack logic)."""
    index = indices(tpm).get(handle) if handle is not None else None
    if index is None or nv_type(index.attributes) != NT.PIN_FAIL:
        return
    if not index.attributes & NvAttr.WRITTEN:
        return
    count, limit = pin_values(tpm, index)
    if count < limit:
        index.data = (count + 1).to_bytes(4, "big") + limit.to_bytes(4, "big")
        # The command fails, so the core will not commit: the count must be durable before
        # the response leaves.
        tpm._commit_permanent()


# ---------------------------------------------------------------------------- define, delete


def define(tpm: Tpm, pub: Any, auth: bytes) -> NvIndexState:
    """Add the index described by the parsed TPMS_NV_PUBLIC ``pub`` (checked by the caller),
    its data erased (0xFF octets, as the reference's NV)."""
    index = NvIndexState(handle=pub.nvIndex, name_alg=pub.nameAlg, attributes=pub.attributes,
                         auth_policy=bytes(pub.authPolicy), auth_value=auth,
                         data_size=pub.dataSize)
    index.data = bytes([ERASED]) * index.data_size
    indices(tpm)[index.handle] = index
    if index.attributes & NvAttr.ORDERLY:
        tpm.vol.nv_orderly[index.handle] = index.data
    return index


def delete(tpm: Tpm, handle: int) -> None:
    """Remove an index (the reference's NvDeleteIndex()). A counter's value is remembered in
    the max counter, so that a later counter starts above it."""
    index = indices(tpm).pop(handle)
    if nv_type(index.attributes) == NT.COUNTER and index.attributes & NvAttr.WRITTEN:
        tpm.perm.nv_max_counter = max(tpm.perm.nv_max_counter, uint64(read_data(tpm, index)))
    tpm.vol.nv_orderly.pop(handle, None)


def flush_hierarchy(tpm: Tpm, hierarchy: int) -> list[int]:
    """Undefine every NV index of ``hierarchy`` (the reference's NvFlushHierarchy() for
    indices, used by TPM2_Clear for TPM_RH_OWNER, Part 3 §24.6). Returns their handles."""
    gone = [h for h, index in indices(tpm).items() if hierarchy_of(index) == hierarchy]
    for handle in gone:
        delete(tpm, handle)
    return gone


# ---------------------------------------------------------------------------- lifecycle


def on_startup(tpm: Tpm, *, resume: bool, reset: bool, orderly: bool) -> None:
    """TPM2_Startup's effects on indices (Part 3 §31; the reference's NvEntityStartup(), as
    swtpm 0.7.1 exhibits it — tests/test_nv.py).

    At TPM Reset and TPM Restart (not Resume): READLOCKED is CLEAR; WRITELOCKED is CLEAR
    unless the index has WRITEDEFINE (then the lock, by TPM2_NV_WriteLock or
    TPM2_NV_GlobalWriteLock, is permanent even with WRITE_STCLEAR); WRITTEN is CLEAR for
    CLEAR_STCLEAR indices, and at TPM Reset also for orderly indices other than counters
    (their data lived in RAM). The reference keeps an orderly index's lock in RAM with its
    data: a counter's survives an orderly shutdown but not a power loss, another orderly
    index's survives TPM Restart (if the index is written) but not TPM Reset (measured on
    swtpm 0.7.1; tests/test_nv.py).

    Then the RAM copies of orderly indices are loaded from NV. After an unorderly shutdown an
    orderly counter's NV copy may lag: it is written through whenever the low bits covered by
    MAX_ORDERLY_COUNT (TPM_PT_ORDERLY_COUNT) wrap, so the lost RAM value was at most
    NV | MAX_ORDERLY_COUNT, where the counter resumes — never below a value it reported."""
    from .properties import CAPACITY  # properties imports the core, which imports this module
    for index in indices(tpm).values():
        attrs = index.attributes
        counter = nv_type(attrs) == NT.COUNTER
        if not resume:
            attrs &= ~NvAttr.READLOCKED
            if not attrs & NvAttr.ORDERLY:
                kept = True
            else:
                kept = orderly if counter else not reset and bool(attrs & NvAttr.WRITTEN)
            if not (attrs & NvAttr.WRITEDEFINE and kept):
                attrs &= ~NvAttr.WRITELOCKED
            if attrs & NvAttr.CLEAR_STCLEAR or (reset and attrs & NvAttr.ORDERLY
                                                 and not counter):
                attrs &= ~NvAttr.WRITTEN
            index.attributes = attrs
        if not attrs & NvAttr.ORDERLY:
            continue
        if not orderly and counter and attrs & NvAttr.WRITTEN:
            index.data = (uint64(index.data) | CAPACITY.orderly_count).to_bytes(8, "big")
        tpm.vol.nv_orderly[index.handle] = index.data


def on_shutdown(tpm: Tpm) -> None:
    """TPM2_Shutdown (Part 1 §37.2.2): the RAM data of orderly indices is written to NV."""
    for handle, data in tpm.vol.nv_orderly.items():
        index = indices(tpm).get(handle)
        if index is not None:
            index.data = data


def ram_fits(tpm: Tpm, data_size: int) -> bool:
    """Whether one more orderly index of ``data_size`` octets fits in RAM_INDEX_SPACE."""
    used = sum(RAM_INDEX_OVERHEAD + index.data_size for index in indices(tpm).values()
               if index.attributes & NvAttr.ORDERLY)
    return used + RAM_INDEX_OVERHEAD + data_size <= RAM_INDEX_SPACE


def used_bytes(tpm: Tpm, overhead: int) -> tuple[int, int]:
    """(NV bytes the indices take — ``overhead`` plus the data size each —, counter indices)."""
    table = indices(tpm).values()
    return (sum(overhead + index.data_size for index in table),
            sum(1 for index in table if nv_type(index.attributes) == NT.COUNTER))
