"""The object store: transient objects loaded in TPM memory (Part 1 "Object Store"), their
Names (Part 1 §16), and how the rest of the TPM finds them.

Loaded objects live in slots, as many as :attr:`~swtpm_py.tpm.properties.Capacity.loaded_objects`
(TPM_PT_HR_TRANSIENT_MIN); a full store is TPM_RC_OBJECT_MEMORY. As in the reference
implementation (which swtpm exhibits), the handle of an object is TRANSIENT_FIRST plus its slot
number, so the first object loaded is 0x80000000 and a flushed slot's handle is reused. Handles
past the last slot are not TPMI_DH_OBJECT values at all (TPM_RC_VALUE).

Each loaded object is kept in ``VolatileData.loaded_objects`` as one record (its marshalled public
and sensitive areas, Name, Qualified Name, hierarchy and load flags; :data:`OBJECT_RECORD`), so it
travels in the volatile blob (STORE_VOLATILE, migration) and nothing else needs saving. A new
VolatileData is built at every TPM2_Startup, so transient objects never survive Startup
(Part 1 "Context Management": transient objects do not survive TPM Reset, TPM Restart or
TPM Resume).

Registered here: the entity resolver for TPM_HT_TRANSIENT (authorization and names), the handle
source of GetCapability(HANDLES) and the TPM_PT_HR_TRANSIENT_* counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import construct as c

from . import properties
from .constants import ALG, HR_PERSISTENT, HR_TRANSIENT, HT, RC, RH
from .crypto import HASHES
from .entity import Entity, register_resolver
from .errors import TpmError
from .objects_wire import ObjectAttr, parse_public, parse_sensitive
from .state import Policy
from .wire import UINT8, UINT16, UINT32

if TYPE_CHECKING:
    from .core import Tpm

#: Part 2 §7.5: the first transient handle; the last one is TRANSIENT_FIRST + slots - 1.
TRANSIENT_FIRST = HR_TRANSIENT
#: Part 2 §7.5 (PC Client profile): persistent object handles 0x81000000-0x81FFFFFF.
PERSISTENT_FIRST = HR_PERSISTENT
PERSISTENT_LAST = HR_PERSISTENT | 0x00FFFFFF


def transient_last() -> int:
    """The last transient handle (TRANSIENT_FIRST + MAX_LOADED_OBJECTS - 1)."""
    return TRANSIENT_FIRST + properties.CAPACITY.loaded_objects - 1


def check_object_handle(handle: int) -> None:
    """TPMI_DH_OBJECT (Part 2 §9.3): a transient handle of a slot or a persistent handle;
    anything else is TPM_RC_VALUE."""
    if TRANSIENT_FIRST <= handle <= transient_last() or is_persistent(handle):
        return
    raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_DH_OBJECT")


# ---------------------------------------------------------------------------- objects

#: Load flags kept with an object (the reference implementation's OBJECT_ATTRIBUTES).
FLAG_PRIMARY = 0x01       # created by TPM2_CreatePrimary
FLAG_TEMPORARY = 0x02     # in the NULL hierarchy, or external (may not be made persistent)
FLAG_ST_CLEAR = 0x04      # stClear, itself or inherited from an ancestor
FLAG_EXTERNAL = 0x08      # loaded with TPM2_LoadExternal
FLAG_EVICT = 0x10         # the RAM copy of a persistent object

#: The record of one loaded object in the volatile blob (and later in saved contexts): a
#: format version, the load flags, the hierarchy, then the marshalled TPMT_PUBLIC, the
#: marshalled TPMT_SENSITIVE (empty for a public-only object), the Name and the Qualified Name.
RECORD_VERSION = 1
OBJECT_RECORD = c.Struct(
    "version" / UINT8,
    "flags" / UINT16,
    "hierarchy" / UINT32,
    "public" / c.Prefixed(UINT16, c.GreedyBytes),
    "sensitive" / c.Prefixed(UINT16, c.GreedyBytes),
    "name" / c.Prefixed(UINT16, c.GreedyBytes),
    "qualifiedName" / c.Prefixed(UINT16, c.GreedyBytes),
)


@dataclass(frozen=True)
class TpmObject:
    """One object: its areas as marshalled, and what the TPM knows about it besides."""

    public_area: bytes
    sensitive_area: bytes
    name: bytes
    qualified_name: bytes
    #: TPM_RH_OWNER, _ENDORSEMENT, _PLATFORM or _NULL.
    hierarchy: int
    flags: int = 0

    @functools.cached_property
    def public(self) -> Any:
        """The parsed TPMT_PUBLIC (do not modify)."""
        return parse_public(self.public_area)

    @functools.cached_property
    def sensitive(self) -> Any:
        """The parsed TPMT_SENSITIVE, or None for a public-only object."""
        return parse_sensitive(self.sensitive_area) if self.sensitive_area else None

    @property
    def attributes(self) -> ObjectAttr:
        """TPMA_OBJECT."""
        return ObjectAttr(self.public.objectAttributes)

    @property
    def public_only(self) -> bool:
        """Loaded without its sensitive area."""
        return not self.sensitive_area

    @property
    def primary(self) -> bool:
        """Created by TPM2_CreatePrimary (or its persistent copy)."""
        return bool(self.flags & FLAG_PRIMARY)

    @property
    def temporary(self) -> bool:
        """An object of the NULL hierarchy or an external one (Part 1 "Object Creation")."""
        return bool(self.flags & FLAG_TEMPORARY)

    @property
    def st_clear(self) -> bool:
        """stClear, set on the object or inherited from its parent."""
        return bool(self.flags & FLAG_ST_CLEAR)

    @property
    def external(self) -> bool:
        """Loaded by TPM2_LoadExternal."""
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def is_parent(self) -> bool:
        """An ordinary storage parent (ObjectSetLoadedAttributes()): a restricted decryption
        key with a sensitive area and a nameAlg, that is not a keyed hash (those are
        derivation parents) and not external."""
        a = self.attributes
        return (not self.external and not self.public_only and self.public.nameAlg in HASHES
                and bool(a & ObjectAttr.RESTRICTED) and bool(a & ObjectAttr.DECRYPT)
                and self.public.type != ALG.KEYEDHASH)

    @property
    def seed_value(self) -> bytes:
        """The parent seed of the sensitive area (protects the children, Part 1 "Protected
        Storage")."""
        return self.sensitive.seedValue if self.sensitive is not None else b""

    @property
    def auth_value(self) -> bytes:
        """The authValue (Part 1 §19.6.4); empty for a public-only object."""
        return self.sensitive.authValue if self.sensitive is not None else b""

    def record(self) -> bytes:
        """This object as :data:`OBJECT_RECORD` octets."""
        return OBJECT_RECORD.build(dict(
            version=RECORD_VERSION, flags=self.flags, hierarchy=self.hierarchy,
            public=self.public_area, sensitive=self.sensitive_area, name=self.name,
            qualifiedName=self.qualified_name))


@functools.lru_cache(maxsize=64)
def from_record(data: bytes) -> TpmObject:
    """The object of :data:`OBJECT_RECORD` octets (memoised: a record never changes, so its
    areas are parsed once per record)."""
    rec = OBJECT_RECORD.parse(data)
    if rec.version != RECORD_VERSION:
        raise ValueError(f"object record version {rec.version}")
    return TpmObject(rec.public, rec.sensitive, rec.name, rec.qualifiedName, rec.hierarchy,
                     rec.flags)


def qualified_name(parent_qn: bytes, name_alg: int, name: bytes) -> bytes:
    """Part 1 §16 (Qualified Name): QN = nameAlg || H_nameAlg(QN of the parent || Name); a
    hierarchy's QN is its handle."""
    return name_alg.to_bytes(2, "big") + HASHES[name_alg].digest(parent_qn, name)


# ---------------------------------------------------------------------------- the store


def _slots(tpm: Tpm) -> dict[int, bytes]:
    return tpm.vol.loaded_objects


def _persistent(tpm: Tpm) -> dict[int, bytes]:
    return tpm.perm.persistent_objects


def is_persistent(handle: int) -> bool:
    """Whether ``handle`` is in the persistent object range."""
    return PERSISTENT_FIRST <= handle <= PERSISTENT_LAST


def loaded_handles(tpm: Tpm) -> list[int]:
    """The handles of the loaded transient objects, ascending."""
    return sorted(_slots(tpm))


def persistent_handles(tpm: Tpm) -> list[int]:
    """The handles of the persistent objects, ascending."""
    return sorted(_persistent(tpm))


def lookup(tpm: Tpm, handle: int) -> TpmObject:
    """The transient or persistent object ``handle`` refers to; TPM_RC_HANDLE when there is
    none."""
    record = (_persistent(tpm) if is_persistent(handle) else _slots(tpm)).get(handle)
    if record is None:
        raise TpmError(RC.HANDLE, detail=f"no object at 0x{handle:08x}")
    if record[0] in SLOT_KINDS:
        # A sequence is no object to read, sign with or load under (the reference's
        # ReadPublic: TPM_RC_SEQUENCE).
        raise TpmError(RC.SEQUENCE, detail=f"0x{handle:08x} is a sequence")
    return from_record(record)


#: Slot records that are not objects (hash sequences, swtpm_py.tpm.sequences), by their first
#: octet (an object record starts with its version), with the resolver of their entity.
SLOT_KINDS: dict[int, Callable[[Tpm, int, bytes], Entity]] = {}


def register_slot_kind(tag: int, resolver: Callable[[Tpm, int, bytes], Entity]) -> None:
    """Let slot records starting with octet ``tag`` hold something other than an object,
    resolved for authorization by ``resolver(tpm, handle, record)``."""
    SLOT_KINDS[tag] = resolver


def free_handle(tpm: Tpm) -> int:
    """The handle of the first free slot (FindEmptyObjectSlot()); TPM_RC_OBJECT_MEMORY when
    every slot is taken. This is the extension point for other users of object slots (hash
    and HMAC sequences, TPM2_ContextLoad)."""
    slots = _slots(tpm)
    for i in range(properties.CAPACITY.loaded_objects):
        if TRANSIENT_FIRST + i not in slots:
            return TRANSIENT_FIRST + i
    raise TpmError(RC.OBJECT_MEMORY, detail="all object slots are in use")


def insert(tpm: Tpm, obj: TpmObject) -> int:
    """Load ``obj`` into the first free slot and return its handle."""
    handle = free_handle(tpm)
    _slots(tpm)[handle] = obj.record()
    return handle


def make_persistent(tpm: Tpm, handle: int, obj: TpmObject) -> None:
    """Store ``obj`` in NV at the persistent ``handle`` (TPM2_EvictControl): TPM_RC_NV_DEFINED
    when the handle is taken, TPM_RC_NV_SPACE when NV has no room for another object. The
    caller's command is declared nv=True, so the permanent blob is committed before the
    response."""
    if handle in _persistent(tpm):
        raise TpmError(RC.NV_DEFINED, detail=f"0x{handle:08x} is taken")
    if properties.persistent_avail(tpm) == 0:
        raise TpmError(RC.NV_SPACE, detail="no room for another persistent object")
    _persistent(tpm)[handle] = obj.record()


def evict(tpm: Tpm, handle: int) -> None:
    """Remove the persistent object at ``handle``."""
    if _persistent(tpm).pop(handle, None) is None:
        raise TpmError(RC.HANDLE, detail=f"no object at 0x{handle:08x}")


def persistent_nv_usage(tpm: Tpm) -> properties.NvUsage:
    """What persistent objects take of the shared NV pool (TPMA_MEMORY.sharedNV): one
    :attr:`~swtpm_py.tpm.properties.Capacity.persistent_object_bytes` each. The NV-index module
    adds its own usage to this when it registers."""
    return properties.NvUsage(bytes_used=len(_persistent(tpm))
                              * properties.CAPACITY.persistent_object_bytes)


def flush(tpm: Tpm, handle: int) -> None:
    """Remove the object at ``handle`` (TPM_RC_HANDLE if there is none)."""
    if _slots(tpm).pop(handle, None) is None:
        raise TpmError(RC.HANDLE, detail=f"no object at 0x{handle:08x}")


def flush_hierarchy(tpm: Tpm, hierarchy: int) -> list[int]:
    """Flush every loaded transient object of ``hierarchy`` (the reference's
    ObjectFlushHierarchy(), used when TPM2_HierarchyControl disables a hierarchy, Part 3
    §24.2); persistent objects stay in NV and look undefined (TPM_RC_HANDLE) while it is
    disabled. Sequences (:data:`SLOT_KINDS`) belong to no hierarchy and stay. Returns the
    flushed handles."""
    slots = _slots(tpm)
    gone = [h for h, rec in slots.items()
            if rec[0] not in SLOT_KINDS and from_record(rec).hierarchy == hierarchy]
    for handle in gone:
        del slots[handle]
    return gone


def evict_hierarchy(tpm: Tpm, hierarchy: int) -> list[int]:
    """Remove every persistent object of ``hierarchy`` from NV (the object part of the
    reference's NvFlushHierarchy(), used by TPM2_Clear, TPM2_ChangeEPS and TPM2_ChangePPS,
    Part 3 §24.4-24.6). The caller's command is declared nv=True. Returns the removed
    handles."""
    persistent = _persistent(tpm)
    gone = [h for h, rec in persistent.items() if from_record(rec).hierarchy == hierarchy]
    for handle in gone:
        del persistent[handle]
    return gone


def hierarchy_enabled(tpm: Tpm, hierarchy: int) -> bool:
    """Whether ``hierarchy`` is enabled (the NULL hierarchy always is)."""
    sc = tpm.vol.state_clear
    return {RH.OWNER: sc.sh_enable, RH.ENDORSEMENT: sc.eh_enable,
            RH.PLATFORM: tpm.vol.ph_enable}.get(hierarchy, True)


def entity(obj: TpmObject, handle: int) -> Entity:
    """What authorization needs of an object (Part 1 §19.7): its authValue and authPolicy,
    and the TPMA_OBJECT bits that govern them. A public-only object has no authValue to use
    (the reference's IsAuthValueAvailable(): TPM_RC_AUTH_UNAVAILABLE for the USER role)."""
    a = obj.attributes
    pub = obj.public
    return Entity(handle, obj.name, auth_value=obj.auth_value,
                  auth_policy=Policy(pub.nameAlg, pub.authPolicy),
                  user_with_auth=bool(a & ObjectAttr.USER_WITH_AUTH) and not obj.public_only,
                  admin_with_policy=bool(a & ObjectAttr.ADMIN_WITH_POLICY),
                  no_da=bool(a & ObjectAttr.NO_DA), public_only=obj.public_only)


def _resolve_transient(tpm: Tpm, handle: int) -> Entity:
    # Part 1 §18.4 / the reference's EntityGetLoadStatus(): a transient handle with no object
    # behind it is the warning TPM_RC_REFERENCE_H0 (+ the handle's index), not TPM_RC_HANDLE.
    record = _slots(tpm).get(handle)
    if record is None:
        raise TpmError(RC.REFERENCE_H0, detail=f"no object at 0x{handle:08x}")
    other = SLOT_KINDS.get(record[0])
    if other is not None:
        return other(tpm, handle, record)
    return entity(from_record(record), handle)


#: The platform's part of the persistent range (Part 2 §7.5, PC Client: 0x81800000 and up).
PLATFORM_PERSISTENT_FIRST = PERSISTENT_FIRST + 0x00800000


def _resolve_persistent(tpm: Tpm, handle: int) -> Entity:
    # Part 3 §5.6.2 / the reference's ObjectLoadEvict(): a persistent object of a disabled
    # hierarchy looks undefined, TPM_RC_HANDLE like no object at all (measured on swtpm
    # 0.7.1). The handle's range decides first: the platform's range needs phEnable, the
    # owner's range shEnable; then an object of the endorsement hierarchy needs ehEnable.
    # (The reference exempts TPM2_EvictControl from the ehEnable rule, so that such an object
    # can still be evicted; a resolver does not see the command code, so it is not exempted.)
    enabled = (tpm.vol.ph_enable if handle >= PLATFORM_PERSISTENT_FIRST
               else tpm.vol.state_clear.sh_enable)
    if not enabled:
        raise TpmError(RC.HANDLE, detail=f"0x{handle:08x}: its hierarchy is disabled")
    record = _persistent(tpm).get(handle)
    if record is None:
        raise TpmError(RC.HANDLE, detail=f"no persistent object at 0x{handle:08x}")
    obj = from_record(record)
    if obj.hierarchy == RH.ENDORSEMENT and not tpm.vol.state_clear.eh_enable:
        raise TpmError(RC.HANDLE, detail="the object's hierarchy is disabled")
    return entity(obj, handle)


register_resolver(HT.TRANSIENT, _resolve_transient)
register_resolver(HT.PERSISTENT, _resolve_persistent)
properties.register_handle_source(HT.TRANSIENT, loaded_handles)
properties.register_handle_source(HT.PERSISTENT, persistent_handles)
properties.register_nv_usage(persistent_nv_usage)
