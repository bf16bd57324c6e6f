"""TPM properties (TPM_PT, Part 2 §6.13) computed from the implementation and the TPM's state,
the TPM's capacity, and the handles it holds.

Nothing here is a stored copy: each property is a function of the running TPM, evaluated when
GetCapability(TPM_PROPERTIES) asks, so the answer cannot drift from what the TPM does.

* :class:`Capacity` — how many objects, sessions and NV bytes the TPM has room for. The HR_*
  and NV properties come from it; the blobstore sizes the TPM's storage from it; the object,
  session and NV commands must refuse to exceed it.
* :data:`HANDLE_SOURCES` — per handle type, the handles the TPM currently holds. PCR and
  permanent handles are fixed; transient, persistent, NV and session handles are registered by
  the modules that create them (:func:`register_handle_source`). GetCapability(HANDLES) and
  the TPM_PT_HR_* counts both read them.
* :data:`PROPERTIES` — the provider of every defined property. A later module whose feature
  changes a value (context encryption, command audit) replaces its provider with
  :func:`provide`.

Values are those of swtpm 0.7.1 wherever they describe an equivalent choice, so that clients
tested against swtpm see the same TPM; where swtpm_py differs, the provider says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from .. import __version__
from . import algorithms, da, wire
from .commands.hash import TICKET_HASH
from .constants import ALG, HT, PT, RH, PermanentAttr, StartupClearAttr
from .core import CLOCK_UPDATE_BITS, MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE
from .crypto import HASHES
from .registry import COMMANDS

if TYPE_CHECKING:
    from .core import Tpm

# ---------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class Capacity:
    """How much the TPM holds. Object and session slots are swtpm 0.7.1's (libtpms'
    TpmProfile), so that software sized for swtpm fits; the NV pool holds about as many
    persistent objects as swtpm's (64 here, 65 there).

    Persistent objects and NV indices share one pool of ``nv_bytes`` (TPMA_MEMORY.sharedNV);
    room for ``persistent_min`` persistent objects is always kept free for them.
    """

    #: Transient objects loaded at once (MAX_LOADED_OBJECTS): TPM_PT_HR_TRANSIENT_MIN.
    loaded_objects: int = 3
    #: Sessions loaded at once (MAX_LOADED_SESSIONS): TPM_PT_HR_LOADED_MIN.
    loaded_sessions: int = 3
    #: Sessions tracked, loaded or saved (MAX_ACTIVE_SESSIONS): TPM_PT_ACTIVE_SESSIONS_MAX; the
    #: session handle range of the wire layer has the same bound.
    active_sessions: int = wire.MAX_ACTIVE_SESSIONS
    #: Largest difference between the contextIDs of two saved sessions (a 16-bit slot counter):
    #: TPM_PT_CONTEXT_GAP_MAX.
    context_gap_max: int = 0xFFFF
    #: NV bytes for NV index data and persistent objects together.
    nv_bytes: int = 128 * 1024
    #: Bytes of ``nv_bytes`` one persistent object takes (room for the largest object).
    persistent_object_bytes: int = 2048
    #: Persistent objects that always fit: TPM_PT_HR_PERSISTENT_MIN (PC Client minimum: 7).
    persistent_min: int = 7
    #: Largest NV index data: TPM_PT_NV_INDEX_MAX.
    nv_index_max: int = 2048
    #: Largest data of one NV read, write, extend or certify: TPM_PT_NV_BUFFER_MAX.
    nv_buffer_max: int = 1024
    #: Limit on counter indices apart from ``nv_bytes`` (0: none): TPM_PT_NV_COUNTERS_MAX.
    nv_counters_max: int = 0
    #: Largest lag of an orderly counter's NV copy: TPM_PT_ORDERLY_COUNT (MAX_ORDERLY_COUNT).
    orderly_count: int = 0xFF

    @property
    def nv_index_overhead(self) -> int:
        """NV bytes an index takes besides its data: its public area (handle, nameAlg,
        attributes, authPolicy, dataSize) and its authValue, both at their largest."""
        digest = wire.MAX_DIGEST_SIZE
        return 4 + 2 + 4 + (2 + digest) + 2 + (2 + digest)


#: The capacity of this TPM.
CAPACITY = Capacity()

# ---------------------------------------------------------------------------- handles

#: Part 2 §7.2: in GetCapability(HANDLES), handle type 0x02 lists the sessions loaded in TPM
#: memory (TPM_HT_LOADED_SESSION) and 0x03 the saved ones (TPM_HT_SAVED_SESSION).
LOADED_SESSION = HT.HMAC_SESSION
SAVED_SESSION = HT.POLICY_SESSION

#: The permanent handles this TPM implements, in order (Part 2 §7.4): the hierarchies, the
#: NULL hierarchy, the password session, and the platform NV enable.
PERMANENT_HANDLES: tuple[int, ...] = (RH.OWNER, RH.NULL, RH.PW, RH.LOCKOUT, RH.ENDORSEMENT,
                                      RH.PLATFORM, RH.PLATFORM_NV)

HandleSource = Callable[["Tpm"], Iterable[int]]


def _nothing(tpm: Tpm) -> tuple[int, ...]:
    """A handle type of which the TPM holds none (its feature is not implemented yet)."""
    return ()


#: The handles the TPM holds, by handle type (Part 2 §7.2). A type missing here is not a type
#: GetCapability(HANDLES) reports (TPM_RC_HANDLE).
HANDLE_SOURCES: dict[int, HandleSource] = {
    HT.PCR: lambda tpm: range(wire.PCR_COUNT),
    HT.NV_INDEX: _nothing,
    LOADED_SESSION: _nothing,
    SAVED_SESSION: _nothing,
    HT.PERMANENT: lambda tpm: PERMANENT_HANDLES,
    HT.TRANSIENT: _nothing,
    HT.PERSISTENT: _nothing,
}


def register_handle_source(handle_type: int, source: HandleSource) -> None:
    """Make ``source`` the provider of the handles of ``handle_type`` (once per type)."""
    if HANDLE_SOURCES.get(handle_type) is not _nothing:
        raise RuntimeError(f"handle type 0x{handle_type:02x} already has a source")
    HANDLE_SOURCES[handle_type] = source


def handles(tpm: Tpm, handle_type: int) -> list[int]:
    """The handles of ``handle_type`` the TPM holds, ascending."""
    return sorted(HANDLE_SOURCES[handle_type](tpm))


# ---------------------------------------------------------------------------- NV usage


@dataclass(frozen=True)
class NvUsage:
    """What the NV indices and persistent objects use of :attr:`Capacity.nv_bytes`."""

    #: NV bytes used (index overhead and data, persistent objects).
    bytes_used: int = 0
    #: Defined NV indices of type TPM_NT_COUNTER.
    counters: int = 0


#: The functions that report what they use of the NV pool (persistent objects, NV indices).
_nv_usage_sources: list[Callable[[Tpm], NvUsage]] = []


def register_nv_usage(source: Callable[[Tpm], NvUsage]) -> None:
    """Add a function that reports NV usage (the NV and persistent-object modules); the
    usage of the shared pool is the sum of all of them."""
    _nv_usage_sources.append(source)


def _nv_usage(tpm: Tpm) -> NvUsage:
    """The sum of the registered usage reports."""
    parts = [source(tpm) for source in _nv_usage_sources]
    return NvUsage(bytes_used=sum(p.bytes_used for p in parts),
                   counters=sum(p.counters for p in parts))


def nv_usage(tpm: Tpm) -> NvUsage:
    """Current NV usage: persistent objects and NV indices together (TPMA_MEMORY.sharedNV)."""
    return _nv_usage(tpm)


def persistent_avail(tpm: Tpm) -> int:
    """TPM_PT_HR_PERSISTENT_AVAIL: persistent objects that would still fit in NV."""
    free = CAPACITY.nv_bytes - nv_usage(tpm).bytes_used
    return max(0, free) // CAPACITY.persistent_object_bytes


def counters_avail(tpm: Tpm) -> int:
    """TPM_PT_NV_COUNTERS_AVAIL: counter indices that would still fit, after keeping room for
    ``persistent_min`` persistent objects."""
    free = CAPACITY.nv_bytes - nv_usage(tpm).bytes_used
    missing = max(0, CAPACITY.persistent_min - len(handles(tpm, HT.PERSISTENT)))
    free -= missing * CAPACITY.persistent_object_bytes
    avail = max(0, free) // (CAPACITY.nv_index_overhead + 8)
    if CAPACITY.nv_counters_max:
        avail = min(avail, CAPACITY.nv_counters_max - nv_usage(tpm).counters)
    return avail


# ---------------------------------------------------------------------------- fixed values


def chars(text: str) -> int:
    """Up to four ASCII characters as a property value, zero-padded (Part 2 §6.13:
    "a 4-octet value ... most significant octet is the first character")."""
    raw = text.encode("ascii")
    if len(raw) > 4:
        raise ValueError(f"{text!r} is longer than four characters")
    return int.from_bytes(raw.ljust(4, b"\x00"), "big")


#: The specification this TPM implements: TPM 2.0 Library, family "2.0", level 0, revision
#: 1.64, dated day 75 of 2021 — the version swtpm 0.7.1 (libtpms 0.9) reports.
SPEC_FAMILY = "2.0"
SPEC_LEVEL = 0
SPEC_REVISION = 164
SPEC_DAY_OF_YEAR = 75
SPEC_YEAR = 2021

#: TPM_PT_MANUFACTURER: swtpm's "IBM" (0x49424D00; QEMU's TIS DID_VID and swtpm_setup assume an
#: IBM software TPM, and tpm2-tools prints the vendor from it).
MANUFACTURER = "IBM"
#: TPM_PT_VENDOR_STRING_1..4: "SW" + " TPM" as swtpm (tpm2-tools' test suite treats a TPM whose
#: first string is "SW  " as a simulator); the last two name this implementation.
VENDOR_STRINGS = ("SW  ", " TPM", "swtp", "m_py")
#: TPM_PT_VENDOR_TPM_TYPE: swtpm's value.
VENDOR_TPM_TYPE = 1

#: TPMA_MEMORY (Part 2 §8.7): NV indices and persistent objects share one pool (sharedNV), and
#: a persistent object in use takes a transient-object slot (objectCopiedToRam), so a resource
#: manager keeps one slot free as it does for swtpm. RAM is not shared (separate object and
#: session slots).
MEMORY_SHARED_NV = 0x2
MEMORY_OBJECT_COPIED_TO_RAM = 0x4
MEMORY = MEMORY_SHARED_NV | MEMORY_OBJECT_COPIED_TO_RAM

#: TPM_PT_CLOCK_UPDATE: the most milliseconds that may pass between writes of Clock to NV, an
#: interval the core keeps (Tpm._maybe_update_clock; Part 1 §36.4; swtpm's value, 2^12 ms).
CLOCK_UPDATE_MS = 1 << CLOCK_UPDATE_BITS

#: TPM_PT_MAX_CAP_BUFFER: the largest TPMU_CAPABILITIES GetCapability returns (Part 2 §6.13).
MAX_CAP_BUFFER = 1024


def firmware_version(version: str = __version__) -> tuple[int, int]:
    """TPM_PT_FIRMWARE_VERSION_1 and _2 from the package version ``major.minor.patch``:
    major in the high and minor in the low 16 bits of the first, patch in the high 16 bits of
    the second (a pre-release suffix is not encoded)."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]]
    major, minor, patch = (numbers + [0, 0, 0])[:3]
    return (major & 0xFFFF) << 16 | (minor & 0xFFFF), (patch & 0xFFFF) << 16


def _command_counts() -> tuple[int, int]:
    """(library commands, vendor commands) in the registry: TPMA_CC.V marks vendor codes."""
    vendor = sum(1 for code in COMMANDS if code & 0x20000000)
    return len(COMMANDS) - vendor, vendor


# ---------------------------------------------------------------------------- variable values


def permanent(tpm: Tpm) -> int:
    """TPMA_PERMANENT (Part 2 §8.6) from the persistent data."""
    p = tpm.perm
    flags = 0
    if p.owner_auth:
        flags |= PermanentAttr.OWNER_AUTH_SET
    if p.endorsement_auth:
        flags |= PermanentAttr.ENDORSEMENT_AUTH_SET
    if p.lockout_auth:
        flags |= PermanentAttr.LOCKOUT_AUTH_SET
    if p.disable_clear:
        flags |= PermanentAttr.DISABLE_CLEAR
    # Part 1 §19.8.6: the TPM is in lockout while failedTries has reached maxTries (always,
    # when maxTries is zero).
    if da.in_lockout(tpm):
        flags |= PermanentAttr.IN_LOCKOUT
    # The EPS is generated by the TPM at manufacture (and by TPM2_ChangeEPS): never injected.
    flags |= PermanentAttr.TPM_GENERATED_EPS
    return int(flags)


def startup_clear(tpm: Tpm) -> int:
    """TPMA_STARTUP_CLEAR (Part 2 §8.7): the hierarchy enables, and whether the last
    TPM2_Startup followed an orderly TPM2_Shutdown."""
    sc = tpm.vol.state_clear
    flags = 0
    if tpm.vol.ph_enable:
        flags |= StartupClearAttr.PH_ENABLE
    if sc.sh_enable:
        flags |= StartupClearAttr.SH_ENABLE
    if sc.eh_enable:
        flags |= StartupClearAttr.EH_ENABLE
    if sc.ph_enable_nv:
        flags |= StartupClearAttr.PH_ENABLE_NV
    if _startup_was_orderly(tpm):
        flags |= StartupClearAttr.ORDERLY
    return int(flags)


def _startup_was_orderly(tpm: Tpm) -> bool:
    """Whether the last Startup followed an orderly Shutdown (TPMA_STARTUP_CLEAR.orderly)."""
    return tpm.vol.startup_orderly


def _loaded_sessions(tpm: Tpm) -> int:
    return len(handles(tpm, LOADED_SESSION))


def _active_sessions(tpm: Tpm) -> int:
    return _loaded_sessions(tpm) + len(handles(tpm, SAVED_SESSION))


# ---------------------------------------------------------------------------- the table

Provider = Callable[["Tpm"], int]


def _const(value: int) -> Provider:
    return lambda tpm: value


_FW1, _FW2 = firmware_version()

#: Every defined property and how to compute it, by TPM_PT.
PROPERTIES: dict[int, Provider] = {
    # -- fixed (PT_FIXED): change only with the implementation
    PT.FAMILY_INDICATOR: _const(chars(SPEC_FAMILY)),
    PT.LEVEL: _const(SPEC_LEVEL),
    PT.REVISION: _const(SPEC_REVISION),
    PT.DAY_OF_YEAR: _const(SPEC_DAY_OF_YEAR),
    PT.YEAR: _const(SPEC_YEAR),
    PT.MANUFACTURER: _const(chars(MANUFACTURER)),
    PT.VENDOR_STRING_1: _const(chars(VENDOR_STRINGS[0])),
    PT.VENDOR_STRING_2: _const(chars(VENDOR_STRINGS[1])),
    PT.VENDOR_STRING_3: _const(chars(VENDOR_STRINGS[2])),
    PT.VENDOR_STRING_4: _const(chars(VENDOR_STRINGS[3])),
    PT.VENDOR_TPM_TYPE: _const(VENDOR_TPM_TYPE),
    PT.FIRMWARE_VERSION_1: _const(_FW1),
    PT.FIRMWARE_VERSION_2: _const(_FW2),
    # The largest TPM2B_MAX_BUFFER a command takes (Hash, GetTestResult's outData ...).
    PT.INPUT_BUFFER: _const(wire.MAX_DIGEST_BUFFER),
    PT.HR_TRANSIENT_MIN: lambda tpm: CAPACITY.loaded_objects,
    PT.HR_PERSISTENT_MIN: lambda tpm: CAPACITY.persistent_min,
    PT.HR_LOADED_MIN: lambda tpm: CAPACITY.loaded_sessions,
    PT.ACTIVE_SESSIONS_MAX: lambda tpm: CAPACITY.active_sessions,
    PT.PCR_COUNT: _const(wire.PCR_COUNT),
    PT.PCR_SELECT_MIN: _const(wire.PCR_SELECT_MIN),
    PT.CONTEXT_GAP_MAX: lambda tpm: CAPACITY.context_gap_max,
    PT.NV_COUNTERS_MAX: lambda tpm: CAPACITY.nv_counters_max,
    PT.NV_INDEX_MAX: lambda tpm: CAPACITY.nv_index_max,
    PT.MEMORY: _const(MEMORY),
    PT.CLOCK_UPDATE: _const(CLOCK_UPDATE_MS),
    # The hash of tickets and (later) of context integrity.
    PT.CONTEXT_HASH: _const(TICKET_HASH),
    # Context encryption (swtpm_py.tpm.contexts): AES-256 in CFB mode, as swtpm.
    PT.CONTEXT_SYM: _const(ALG.AES),
    PT.CONTEXT_SYM_SIZE: _const(256),
    PT.ORDERLY_COUNT: lambda tpm: CAPACITY.orderly_count,
    PT.MAX_COMMAND_SIZE: _const(MAX_COMMAND_SIZE),
    PT.MAX_RESPONSE_SIZE: _const(MAX_RESPONSE_SIZE),
    PT.MAX_DIGEST: _const(max(h.size for h in HASHES.values())),
    # The largest object context TPM2_ContextSave returns (swtpm_py.tpm.contexts
    # MAX_OBJECT_CONTEXT: a TPMS_CONTEXT that fits a 4096-octet response; swtpm reports 2692).
    PT.MAX_OBJECT_CONTEXT: _const(4086),
    # Session contexts have the same bound (ours are ~550-620 octets of JSON; swtpm's 404).
    PT.MAX_SESSION_CONTEXT: _const(4086),
    # The platform-specific specification: swtpm reports the library's family, level,
    # revision and date here too, and so does swtpm_py (the PC Client profile's PCR layout is
    # implemented, but not the whole profile, so no TPM_PS value is claimed).
    PT.PS_FAMILY_INDICATOR: _const(chars(SPEC_FAMILY)),
    PT.PS_LEVEL: _const(SPEC_LEVEL),
    PT.PS_REVISION: _const(SPEC_REVISION),
    PT.PS_DAY_OF_YEAR: _const(SPEC_DAY_OF_YEAR),
    PT.PS_YEAR: _const(SPEC_YEAR),
    # Split signing (TPM2_Commit) needs ECC: none.
    PT.SPLIT_MAX: _const(0),
    PT.TOTAL_COMMANDS: lambda tpm: len(COMMANDS),
    PT.LIBRARY_COMMANDS: lambda tpm: _command_counts()[0],
    PT.VENDOR_COMMANDS: lambda tpm: _command_counts()[1],
    PT.NV_BUFFER_MAX: lambda tpm: CAPACITY.nv_buffer_max,
    # TPMA_MODES: not a FIPS 140-2 module.
    PT.MODES: _const(0),
    PT.MAX_CAP_BUFFER: _const(MAX_CAP_BUFFER),
    # -- variable (PT_VAR): change with the TPM's state
    PT.PERMANENT: permanent,
    PT.STARTUP_CLEAR: startup_clear,
    PT.HR_NV_INDEX: lambda tpm: len(handles(tpm, HT.NV_INDEX)),
    PT.HR_LOADED: _loaded_sessions,
    PT.HR_LOADED_AVAIL: lambda tpm: max(0, CAPACITY.loaded_sessions - _loaded_sessions(tpm)),
    PT.HR_ACTIVE: _active_sessions,
    PT.HR_ACTIVE_AVAIL: lambda tpm: max(0, CAPACITY.active_sessions - _active_sessions(tpm)),
    PT.HR_TRANSIENT_AVAIL: lambda tpm: max(
        0, CAPACITY.loaded_objects - len(handles(tpm, HT.TRANSIENT))),
    PT.HR_PERSISTENT: lambda tpm: len(handles(tpm, HT.PERSISTENT)),
    PT.HR_PERSISTENT_AVAIL: persistent_avail,
    PT.NV_COUNTERS: lambda tpm: nv_usage(tpm).counters,
    PT.NV_COUNTERS_AVAIL: counters_avail,
    # The platform's TPM2_SetAlgorithmSet value (0 until it sets one).
    PT.ALGORITHM_SET: lambda tpm: tpm.perm.algorithm_set,
    PT.LOADED_CURVES: lambda tpm: len(algorithms.ECC_CURVES),
    PT.LOCKOUT_COUNTER: da.lockout_counter,
    PT.MAX_AUTH_FAIL: lambda tpm: tpm.perm.max_tries,
    PT.LOCKOUT_INTERVAL: lambda tpm: tpm.perm.recovery_time,
    PT.LOCKOUT_RECOVERY: lambda tpm: tpm.perm.lockout_recovery,
    # NV writes are never rate-limited (no TPM_RC_NV_RATE).
    PT.NV_WRITE_RECOVERY: _const(0),
    # The command audit counter (high and low 32 bits): no command is audited until command
    # audit is implemented, so it is zero; the audit module provides the real counter.
    PT.AUDIT_COUNTER_0: _const(0),
    PT.AUDIT_COUNTER_1: _const(0),
}

#: Part 2 §6.13: properties come in groups of PT_GROUP; fixed ones in group 1, variable in 2.
PT_GROUP = 0x100
PT_FIXED = 0x100
PT_VAR = 0x200


def provide(prop: PT, provider: Provider) -> None:
    """Replace the provider of ``prop`` (a feature module whose state the value reports)."""
    if prop not in PROPERTIES:
        raise KeyError(f"{prop!r} is not a defined property")
    PROPERTIES[prop] = provider


def is_fixed(prop: int) -> bool:
    """Whether ``prop`` is in the fixed group (its value depends on no state)."""
    return PT_FIXED <= prop < PT_FIXED + PT_GROUP


def value(tpm: Tpm, prop: int) -> int:
    """The current value of the defined property ``prop``."""
    return int(PROPERTIES[prop](tpm)) & 0xFFFFFFFF


def in_group(start: int) -> list[int]:
    """The defined properties from ``start`` to the end of its group, ascending
    (GetCapability(TPM_PROPERTIES) never crosses a group, as swtpm)."""
    start = max(start, PT_FIXED)
    end = (start // PT_GROUP + 1) * PT_GROUP
    return [p for p in sorted(PROPERTIES) if start <= p < end]
