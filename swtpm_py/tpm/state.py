"""The TPM's state, grouped as Part 1 §37 groups it, and its three blobs.

* :class:`PersistentData` — Part 1 "persistent data" (seeds, proofs, hierarchy auths and
  policies, counters, clock, allocation, orderly flag). It is the *permanent* blob and is
  committed before the response of any command that changed it.
* :class:`StateClearData` / :class:`StateResetData` — what Shutdown(STATE) preserves; together
  with the saved PCRs they form the *savestate* blob (consumed by the next Startup).
* :class:`VolatileData` — everything in RAM, so that a stopped TPM can carry on exactly where it
  was (swtpm's *volatile* blob: STORE_VOLATILE, GET_STATEBLOB, migration).

Blob format (never pickle): a header declared with construct — magic ``swtpmpy\\0``, kind, format
version, body length and a SHA-256 over those header fields and the body — then a canonical JSON body (sorted keys, no
spaces, bytes as hex). The body is self-describing and readable by humans; serialising the
same state twice gives the same bytes. A reader accepts every format version up to its own and
fills fields that an older version did not have with their defaults; a newer version is
refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import construct as c

from .constants import ALG, CC

#: Bumped when a field changes meaning; adding a field with a default does not bump it.
FORMAT_VERSION = 1
MAGIC = b"swtpmpy\x00"

#: The orderly-state value that means "no orderly shutdown happened" (Part 1 §37.7.3).
SU_NONE = 0xFFFF


class BlobKind(enum.IntEnum):
    """The three state blobs, numbered as swtpm's GET/SET_STATEBLOB types."""

    PERMANENT = 1
    VOLATILE = 2
    SAVESTATE = 3


class StateError(Exception):
    """A state blob cannot be read: wrong magic, kind, version, checksum or content."""


BLOB_HEADER = c.Struct(
    "magic" / c.Const(MAGIC),
    "kind" / c.Int8ub,
    "version" / c.Int16ub,
    "length" / c.Int32ub,
    "sha256" / c.Bytes(32),
)


@dataclass
class Policy:
    """An authPolicy: hash algorithm and digest (TPM_ALG_NULL and empty when unset)."""

    alg: int = ALG.NULL
    digest: bytes = b""


@dataclass
class NvIndexState:
    """One NV index (the reference's NV_INDEX): its TPMS_NV_PUBLIC (Part 2 §13.5), authValue
    and data.

    ``attributes`` holds the TPMA_NV bits as they are now (WRITTEN, WRITELOCKED and READLOCKED
    change during the index's life, and with them its Name).
    """

    handle: int = 0
    name_alg: int = ALG.SHA256
    attributes: int = 0
    auth_policy: bytes = b""
    auth_value: bytes = b""
    data_size: int = 0
    #: The data as stored in NV. For a TPMA_NV_ORDERLY index the current value lives in RAM
    #: (:attr:`VolatileData.nv_orderly`) and reaches NV at an orderly shutdown.
    data: bytes = b""


@dataclass
class PersistentData:
    """Part 1 §37.7 persistent data: lives in NV, i.e. the permanent blob."""

    eps: bytes = b""
    sps: bytes = b""
    pps: bytes = b""
    eh_proof: bytes = b""
    sh_proof: bytes = b""
    ph_proof: bytes = b""
    owner_auth: bytes = b""
    endorsement_auth: bytes = b""
    lockout_auth: bytes = b""
    owner_policy: Policy = field(default_factory=Policy)
    endorsement_policy: Policy = field(default_factory=Policy)
    lockout_policy: Policy = field(default_factory=Policy)
    disable_clear: bool = False
    #: TPM2_SetAlgorithmSet's value, reported as TPM_PT_ALGORITHM_SET.
    algorithm_set: int = 0
    #: Part 2 §10.11.1 resetCount: TPM Resets since the last TPM2_Clear.
    reset_count: int = 0
    #: Clock (ms) as last written to NV; Clock continues from here after power loss.
    clock: int = 0
    #: Shutdown type of the last orderly shutdown, or SU_NONE.
    orderly_state: int = SU_NONE
    #: Banks allocated for the next TPM Reset (TPM2_PCR_Allocate takes effect then).
    pcr_allocation: list[int] = field(
        default_factory=lambda: [ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512])
    #: PCR authPolicies (TPM2_PCR_SetAuthPolicy) by PCR index: every PCR of a policy group
    #: has its group's policy (the reference's gp.pcrPolicies).
    pcr_policies: dict[int, Policy] = field(default_factory=dict)
    #: Command audit (Part 1 §32.2): hash algorithm, audited command codes and auditCounter.
    #: A new TPM audits TPM2_SetCommandCodeAuditStatus with the context integrity hash
    #: (SHA-512), as the reference's CommandAuditPreInstall_Init().
    audit_hash_alg: int = ALG.SHA512
    audit_commands: list[int] = field(default_factory=lambda: [CC.SetCommandCodeAuditStatus])
    audit_counter: int = 0
    #: Commands that need physical presence when TPM_RH_PLATFORM authorizes them
    #: (TPM2_PP_Commands; a new TPM lists TPM2_PP_Commands, which always requires it).
    pp_commands: list[int] = field(default_factory=lambda: [CC.PP_Commands])
    #: Dictionary-attack state (Part 1 §19.8.6; the reference's DAPreInstall_Init() defaults):
    #: failedTries, maxTries, recoveryTime and lockoutRecovery (both in seconds).
    failed_tries: int = 0
    max_tries: int = 3
    recovery_time: int = 1000
    lockout_recovery: int = 1000
    #: Whether lockoutAuth may be used (CLEAR for lockoutRecovery after a lockoutAuth failure).
    lockout_auth_enabled: bool = True
    #: A DA-protected authorization was used since the last Startup/Shutdown (the reference's
    #: orderlyState == SU_DA_USED_VALUE): an unorderly shutdown then counts as a DA failure.
    da_used: bool = False
    #: Persistent objects by handle (TPM2_EvictControl), each an object record
    #: (swtpm_py.tpm.objects); they live in NV and survive everything but TPM2_Clear.
    persistent_objects: dict[int, bytes] = field(default_factory=dict)
    #: Defined NV indices by handle (TPM2_NV_DefineSpace, Part 3 §31.3).
    nv_indices: dict[int, NvIndexState] = field(default_factory=dict)
    #: The largest value an undefined counter index had (the reference's maxCounter): a new
    #: counter starts above it, so no counter value ever repeats (Part 1 §37.2.3).
    nv_max_counter: int = 0


@dataclass
class StateClearData:
    """Part 1 §37.8 state-clear data: reset by TPM Reset and TPM Restart, kept by TPM Resume."""

    sh_enable: bool = True
    eh_enable: bool = True
    ph_enable_nv: bool = True
    platform_auth: bytes = b""
    platform_policy: Policy = field(default_factory=Policy)
    #: authValue of the PCRs that have one, by PCR index (TPM2_PCR_SetAuthValue).
    pcr_auth: dict[int, bytes] = field(default_factory=dict)


@dataclass
class StateResetData:
    """Part 1 §37.9 state-reset data: reset by TPM Reset, kept by TPM Restart and Resume."""

    null_proof: bytes = b""
    null_seed: bytes = b""
    clear_count: int = 0
    #: Part 2 §10.11.1 restartCount: TPM Restarts/Resumes since the last TPM Reset.
    restart_count: int = 0
    #: pcrUpdateCounter reported by PCR_Read (Part 3 §22.4).
    pcr_counter: int = 0
    object_context_id: int = 0
    #: The session context counter (the reference's gr.contextCounter): the sequence of the
    #: next saved session context; 0 until the first one, which gets MAX_LOADED_SESSIONS + 1.
    context_counter: int = 0
    #: Saved sessions (Part 1 §30.5): handle -> sequence of its latest saved context (the
    #: reference's contextArray). State-reset data, so they survive TPM Restart and Resume
    #: and are gone after TPM Reset.
    saved_sessions: dict[int, int] = field(default_factory=dict)
    command_audit_digest: bytes = b""
    #: Part 1 "Commit" (the reference's gr.commitCounter): the count the next TPM2_Commit /
    #: TPM2_EC_Ephemeral returns (its low 16 bits).
    commit_counter: int = 0
    #: gr.commitArray as a bit mask: bit (count mod 128) is set while that commit is unused.
    commit_array: int = 0
    #: gr.commitNonce: the secret from which each commit's random value is derived; drawn
    #: on first use after a TPM Reset (empty until then).
    commit_nonce: bytes = b""


@dataclass
class SavedState:
    """What Shutdown(STATE) writes for the next Startup (the savestate blob)."""

    state_clear: StateClearData = field(default_factory=StateClearData)
    state_reset: StateResetData = field(default_factory=StateResetData)
    #: Values of the PCRs with the stateSave attribute, by bank algorithm.
    pcrs: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass
class SessionState:
    """One authorization session loaded in TPM memory (Part 1 §19.6; the reference's SESSION).

    Policy fields (Part 3 §23) are meaningful for policy and trial sessions only.
    """

    handle: int = 0
    #: A policy (or trial) session rather than an HMAC session.
    policy: bool = False
    #: A trial policy session: computes a policyDigest, authorizes nothing.
    trial: bool = False
    #: authHash: the session's hash algorithm.
    auth_hash: int = ALG.NULL
    #: The TPM's current nonce (as long as the nonceCaller of TPM2_StartAuthSession).
    nonce_tpm: bytes = b""
    #: KDFa(authHash, bind.authValue || salt, "ATH", nonceTPM, nonceCaller); empty when the
    #: session is neither bound nor salted.
    session_key: bytes = b""
    #: TPMT_SYM_DEF of parameter encryption: algorithm, keyBits (the hash for XOR), mode.
    sym_alg: int = ALG.NULL
    sym_key_bits: int = 0
    sym_mode: int = ALG.NULL
    #: The bind value (Name and authValue, sessions.bind_value) of the bind entity of a bound
    #: HMAC session; empty when not bound.
    bound_entity: bytes = b""
    #: Bound to an entity subject to dictionary-attack protection (and to TPM_RH_LOCKOUT).
    da_bound: bool = False
    lockout_bound: bool = False
    #: Used as an audit session, and its audit digest.
    audit: bool = False
    audit_digest: bytes = b""
    policy_digest: bytes = b""
    #: TPM2_PolicyCommandCode's command (0: any).
    command_code: int = 0
    #: TPMA_LOCALITY of TPM2_PolicyLocality (0: any).
    locality: int = 0
    #: pcrUpdateCounter when TPM2_PolicyPCR ran (0: no PCR check).
    pcr_counter: int = 0
    #: cpHash, nameHash or templateHash the policy requires (empty: none).
    cp_hash: bytes = b""
    cp_hash_defined: bool = False
    template_set: bool = False
    auth_value_needed: bool = False
    password_needed: bool = False
    pp_required: bool = False
    #: TPM2_PolicyNvWritten: the authorized entity must be an NV index whose TPMA_NV_WRITTEN
    #: is ``nv_written_state`` (Part 3 §23.21).
    nv_written_check: bool = False
    nv_written_state: bool = False
    #: Time (ms) after which the policy session has expired (0: never).
    timeout: int = 0
    #: Time (ms) when the session started or its nonce last rolled (policy sessions).
    start_time: int = 0


@dataclass
class SessionTable:
    """The sessions of a running TPM (volatile): the loaded ones, in the order they were
    loaded (GetCapability lists them by handle)."""

    loaded: list[SessionState] = field(default_factory=list)
    #: Handle of the exclusive audit session (Part 1 §32.4.4), 0 when there is none.
    exclusive_audit: int = 0


@dataclass
class VolatileData:
    """The RAM state of a running TPM (the volatile blob)."""

    started: bool = False
    ph_enable: bool = True
    #: Banks in use since the last TPM Reset.
    pcr_banks: list[int] = field(default_factory=list)
    #: TPM2_PCR_Allocate ran since _TPM_Init (the reference's g_pcrReConfig): Shutdown(STATE)
    #: is refused until the new allocation took effect.
    pcr_reconfig: bool = False
    pcrs: dict[int, list[bytes]] = field(default_factory=dict)
    state_clear: StateClearData = field(default_factory=StateClearData)
    state_reset: StateResetData = field(default_factory=StateResetData)
    #: Clock (ms) at the moment the blob was made; a restored TPM continues from here.
    clock: int = 0
    #: Time (ms since _TPM_Init) at the moment the blob was made.
    time: int = 0
    clock_safe: bool = True
    established: bool = False
    self_tested: bool = False
    #: Whether the last TPM2_Startup followed an orderly shutdown (TPMA_STARTUP_CLEAR.orderly).
    startup_orderly: bool = True
    #: Loaded transient objects by handle, each an object record (swtpm_py.tpm.objects); a
    #: TPM2_Startup builds a new VolatileData, so they never survive Startup (Part 1 §30.2).
    loaded_objects: dict[int, bytes] = field(default_factory=dict)
    #: Locality of the last TPM2_Startup (0 or 3); Shutdown(STATE) records it for the resume.
    startup_locality: int = 0
    #: Current data of TPMA_NV_ORDERLY NV indices by handle (Part 3 §31.3.1: kept in RAM, written
    #: to NV at an orderly shutdown).
    nv_orderly: dict[int, bytes] = field(default_factory=dict)
    #: Authorization sessions; a TPM2_Startup builds a new VolatileData, so loaded sessions never
    #: survive Startup (Part 1 §19.6.1; the reference's SessionStartup()).
    sessions: SessionTable = field(default_factory=SessionTable)
    #: The reference's g_daUsed: :attr:`PersistentData.da_used` has been recorded in NV since
    #: the last Startup/Shutdown, so DA-protected authorizations may proceed (swtpm_py.tpm.da).
    da_used: bool = False
    #: Time (ms) from which failedTries and lockoutAuth self-heal (the reference's
    #: s_selfHealTimer and s_lockoutTimer); a Startup restarts both at zero.
    da_heal_timer: int = 0
    da_lockout_timer: int = 0


T = TypeVar("T")


def to_jsonable(obj: Any) -> Any:
    """Turn a state dataclass (recursively) into JSON-compatible values: bytes become hex."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(int(k)) if isinstance(k, int) else k: to_jsonable(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def from_jsonable(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_jsonable` output; missing dataclass fields
    keep their defaults (older format versions)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise StateError(f"{tp.__name__}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: from_jsonable(hints[f.name], data[f.name])
                  for f in dataclasses.fields(tp) if f.name in data}
        return tp(**kwargs)
    if tp is bytes:
        if not isinstance(data, str):
            raise StateError("expected hex")
        return bytes.fromhex(data)
    if tp is bool:
        if not isinstance(data, bool):
            raise StateError("expected a boolean")
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise StateError("expected an integer")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise StateError("expected a string")
        return data
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(data, list):
            raise StateError("expected a list")
        return [from_jsonable(item, v) for v in data]
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        if not isinstance(data, dict):
            raise StateError("expected an object")
        return {(int(k) if key_t is int else k): from_jsonable(val_t, v) for k, v in data.items()}
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_jsonable(inner, data)
    raise StateError(f"unsupported type {tp!r}")


def encode_blob(kind: BlobKind, obj: Any) -> bytes:
    """Serialise ``obj`` (a state dataclass) as a blob of ``kind``."""
    body = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
    header = BLOB_HEADER.build(dict(kind=kind, version=FORMAT_VERSION, length=len(body),
                                     sha256=_checksum(kind, FORMAT_VERSION, body)))
    return header + body


def _checksum(kind: int, version: int, body: bytes) -> bytes:
    """SHA-256 over magic, kind, version, length and body: any changed byte is detected."""
    prefix = MAGIC + bytes([kind]) + version.to_bytes(2, "big") + len(body).to_bytes(4, "big")
    return hashlib.sha256(prefix + body).digest()


def decode_blob(kind: BlobKind, data: bytes, tp: type[T]) -> T:
    """Parse a blob of ``kind`` into ``tp``; anything wrong raises :class:`StateError`."""
    if len(data) < BLOB_HEADER.sizeof():
        raise StateError(f"{kind.name.lower()} blob too short ({len(data)} bytes)")
    try:
        header = BLOB_HEADER.parse(data)
    except c.ConstructError:
        raise StateError(f"{kind.name.lower()} blob: not a swtpm_py state blob") from None
    if header.kind != kind:
        raise StateError(f"expected a {kind.name.lower()} blob, got kind {header.kind}")
    if header.version > FORMAT_VERSION:
        raise StateError(f"{kind.name.lower()} blob has format version {header.version}; this "
                         f"swtpm_py reads up to {FORMAT_VERSION}: upgrade swtpm_py")
    body = data[BLOB_HEADER.sizeof():]
    if len(body) != header.length or _checksum(kind, header.version, body) != header.sha256:
        raise StateError(f"{kind.name.lower()} blob is damaged (length or checksum mismatch)")
    try:
        return from_jsonable(tp, json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{kind.name.lower()} blob content: {exc}") from None
