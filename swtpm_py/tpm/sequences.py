"""Hash, HMAC and event sequence objects (Part 1 "Hash, HMAC, and Event Sequences", Part 3
§17).

A sequence lives in a transient object slot, like any loaded object (the reference
implementation's HASH_OBJECT shares the object array), so it takes a handle from
TRANSIENT_FIRST up, counts against TPM_PT_HR_TRANSIENT_AVAIL, answers TPM_RC_OBJECT_MEMORY when
the slots are full, is flushed by TPM2_FlushContext and never survives TPM2_Startup.

What a sequence is, as the reference's AllocateSequenceSlot() makes it: type and nameAlg
TPM_ALG_NULL, so its Name is the Empty Buffer (Part 1 §16; EntityGetName() of an object without
nameAlg); in the NULL hierarchy and temporary (never persistent); noDA (Part 1 §19.8.5: a
sequence is exempt from dictionary-attack counting); its authValue (given to
TPM2_HashSequenceStart or TPM2_HMAC_Start) is always usable for the USER role, with no
authPolicy. An HMAC sequence also keeps its key's secret.

Serialisation: the slot record (:data:`SEQUENCE_RECORD`) keeps the accumulated data itself,
not a hash state — hashlib states cannot be exported, and the volatile blob (STORE_VOLATILE,
GET_STATEBLOB, migration) must carry a loaded sequence exactly. The data is at the end of the
record, so SequenceUpdate appends to it. To avoid re-hashing everything at each update, the
live hashlib/hmac objects are cached per TPM beside the record they belong to; a record that did not
come from the cache (a restored volatile blob) is simply hashed again from its data. The cost
is memory and one copy of the data per update (proportional to what the sequence has hashed so
far), which is fine for what clients stream through sequences (event logs, files measured by
tpm2_pcrevent); it is the price of a state that survives a process restart.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as c

from . import objects
from .constants import ALG, RC, TPM_GENERATED_VALUE
from .crypto import HASHES
from .entity import Entity
from .errors import TpmError
from .state import Policy
from .wire import UINT8, UINT16

if TYPE_CHECKING:
    import hashlib

    from .core import Tpm

    #: A running hash or HMAC.
    Hasher = hashlib._Hash | hmac.HMAC

#: First octet of a sequence's slot record. Object records start with their format version
#: (1), so the two kinds of slot records never collide.
SEQUENCE_TAG = 0xF1


class Kind(enum.IntEnum):
    """What a sequence computes."""

    #: TPM2_HashSequenceStart(hashAlg): one digest, completed by TPM2_SequenceComplete.
    HASH = 1
    #: TPM2_HashSequenceStart(TPM_ALG_NULL): a digest with every implemented hash, completed
    #: by TPM2_EventSequenceComplete.
    EVENT = 2
    #: TPM2_HMAC_Start: an HMAC with a keyed-hash key's secret, completed by
    #: TPM2_SequenceComplete (never with a ticket).
    HMAC = 3


class Ticket(enum.IntEnum):
    """Part 3 §17.4/§17.5: whether a hash sequence may produce a hash-check ticket, decided by
    the first block of data (the reference's firstBlock/ticketSafe attributes)."""

    #: No SequenceUpdate yet: SequenceComplete's own buffer is the first block.
    UNDECIDED = 0
    #: The first block could not start with TPM_GENERATED_VALUE.
    SAFE = 1
    #: The first block was shorter than TPM_GENERATED_VALUE or started with it.
    UNSAFE = 2


#: The slot record of a sequence: tag, kind, hash algorithm (TPM_ALG_NULL for an event
#: sequence), ticket state, authValue, HMAC key (empty unless an HMAC sequence), then
#: everything hashed so far.
SEQUENCE_RECORD = c.Struct(
    "tag" / c.Const(SEQUENCE_TAG, UINT8),
    "kind" / UINT8,
    "hashAlg" / UINT16,
    "ticket" / UINT8,
    "auth" / c.Prefixed(UINT16, c.GreedyBytes),
    "key" / c.Prefixed(UINT16, c.GreedyBytes),
    "data" / c.GreedyBytes,
)
#: The record up to its data, and the offset where the data starts: parsed on every use of a
#: sequence without copying the data.
_HEADER = c.Struct(*SEQUENCE_RECORD.subcons[:-1], "end" / c.Tell)


@dataclass(frozen=True)
class Sequence:
    """One sequence object as its slot record holds it."""

    kind: Kind
    hash_alg: int
    ticket: Ticket
    auth_value: bytes
    #: The HMAC key of an HMAC sequence (the keyed-hash object's secret), else empty.
    key: bytes = b""

    def algorithms(self) -> list[int]:
        """The hashes this sequence computes: its hashAlg, or every implemented hash (in
        TPM_ALG_ID order) for an event sequence."""
        return list(HASHES) if self.kind is Kind.EVENT else [self.hash_alg]

    def header(self) -> bytes:
        """The record without data (what the data is appended to)."""
        return SEQUENCE_RECORD.build(dict(kind=self.kind, hashAlg=self.hash_alg,
                                          ticket=self.ticket, auth=self.auth_value,
                                          key=self.key, data=b""))

    def new(self, data: bytes | memoryview = b"") -> dict[int, Hasher]:
        """Fresh hash (or HMAC) states by algorithm, fed with ``data``."""
        if self.kind is Kind.HMAC:
            return {self.hash_alg: hmac.new(self.key, data, HASHES[self.hash_alg].name)}
        return {alg: HASHES[alg].new(data) for alg in self.algorithms()}


def is_sequence_record(record: bytes) -> bool:
    """Whether a slot record is a sequence (and not an object)."""
    return record[:1] == bytes([SEQUENCE_TAG])


def _parse(record: bytes) -> tuple[Sequence, int]:
    """The sequence of ``record`` and the offset where its data starts.

    Read with slices rather than :data:`_HEADER` (which declares the same layout and against
    which the tests hold this): every command on a sequence parses its record several times,
    and construct's generic parsing was most of a SequenceUpdate's time. Records are only
    ever built by this module (or restored from an integrity-checked context)."""
    auth_end = 7 + int.from_bytes(record[5:7], "big")
    key_end = auth_end + 2 + int.from_bytes(record[auth_end:auth_end + 2], "big")
    seq = Sequence(Kind(record[1]), int.from_bytes(record[2:4], "big"), Ticket(record[4]),
                   bytes(record[7:auth_end]), bytes(record[auth_end + 2:key_end]))
    return seq, key_end


def ticket_safe(block: bytes) -> bool:
    """The reference's TicketIsSafe(): a block may get a ticket only if it is at least as
    long as TPM_GENERATED_VALUE and does not start with it (Part 3 §17.5: the TPM must not
    vouch for data that could be a forged attestation structure)."""
    magic = TPM_GENERATED_VALUE.to_bytes(4, "big")
    return len(block) >= len(magic) and block[:len(magic)] != magic


# ---------------------------------------------------------------------------- live state

#: Per TPM: handle -> (the record the hashers belong to, the hashers by algorithm).
_LIVE: weakref.WeakKeyDictionary[Tpm, dict[int, tuple[bytes, dict[int, Hasher]]]] = \
    weakref.WeakKeyDictionary()


def _hashers(tpm: Tpm, handle: int, record: bytes) -> dict[int, Hasher]:
    """Hash objects holding the state of the sequence stored as ``record`` (cached, or
    recomputed from the record's data); the caller may update them."""
    live = _LIVE.setdefault(tpm, {})
    cached = live.get(handle)
    if cached is not None and cached[0] is record:
        return cached[1]
    seq, start = _parse(record)
    return seq.new(memoryview(record)[start:])


def _store(tpm: Tpm, handle: int, record: bytes, hashers: dict[int, Hasher]) -> None:
    tpm.vol.loaded_objects[handle] = record
    live = _LIVE.setdefault(tpm, {})
    # Forget hashers of slots that no longer hold the record they were cached for (flushed by
    # FlushContext, lost in a Startup), so their data is not kept alive.
    slots = tpm.vol.loaded_objects
    for h in [h for h, (rec, _) in live.items() if slots.get(h) is not rec]:
        del live[h]
    live[handle] = (record, hashers)


# ---------------------------------------------------------------------------- operations


def start(tpm: Tpm, hash_alg: int, auth: bytes, hmac_key: bytes | None = None) -> int:
    """Load a new sequence — an HMAC sequence when ``hmac_key`` is given, else a hash
    sequence, or an event sequence for TPM_ALG_NULL — and return its handle;
    TPM_RC_OBJECT_MEMORY when every slot is taken."""
    handle = objects.free_handle(tpm)
    if hmac_key is not None:
        kind = Kind.HMAC
    else:
        kind = Kind.EVENT if hash_alg == ALG.NULL else Kind.HASH
    seq = Sequence(kind, hash_alg, Ticket.UNDECIDED, auth, hmac_key or b"")
    record = seq.header()
    _store(tpm, handle, record, seq.new())
    return handle


def get(tpm: Tpm, handle: int) -> Sequence | None:
    """The sequence at ``handle``, or None when the slot holds an object (TPM_RC_REFERENCE_H0
    when it holds nothing)."""
    record = tpm.vol.loaded_objects.get(handle)
    if record is None:
        raise TpmError(RC.REFERENCE_H0, detail=f"nothing loaded at 0x{handle:08x}")
    return _parse(record)[0] if is_sequence_record(record) else None


def loaded_object(tpm: Tpm, handle: int) -> objects.TpmObject | None:
    """The object at ``handle``, or None when the slot holds a hash/HMAC/event sequence (a
    sequence is an object without type, attributes or keys in the reference, so every check
    of the key's type or attributes fails on it)."""
    record = tpm.vol.loaded_objects.get(handle)
    if record is not None and is_sequence_record(record):
        return None
    return objects.lookup(tpm, handle)


def update(tpm: Tpm, handle: int, data: bytes) -> None:
    """Add ``data`` to the sequence at ``handle``. For a hash sequence, the first update is
    the first block that decides the ticket (the reference's SequenceUpdate())."""
    record = tpm.vol.loaded_objects[handle]
    seq, _ = _parse(record)
    hashers = _hashers(tpm, handle, record)
    if seq.kind is Kind.HASH and seq.ticket is Ticket.UNDECIDED:
        decided = Ticket.SAFE if ticket_safe(data) else Ticket.UNSAFE
        header = dataclasses.replace(seq, ticket=decided).header()
        record = header + record[len(header):]
    for h in hashers.values():
        h.update(data)
    _store(tpm, handle, record + data, hashers)


def finish(tpm: Tpm, handle: int, data: bytes) -> tuple[Sequence, dict[int, bytes]]:
    """Add the last ``data`` and return the sequence (its ticket state decided, with ``data``
    as the first block if nothing came before) with its digests by algorithm. The sequence
    stays loaded: the caller flushes it (:func:`flush`)."""
    record = tpm.vol.loaded_objects[handle]
    seq, _ = _parse(record)
    hashers = _hashers(tpm, handle, record)
    if seq.kind is Kind.HASH and seq.ticket is Ticket.UNDECIDED:
        seq = dataclasses.replace(
            seq, ticket=Ticket.SAFE if ticket_safe(data) else Ticket.UNSAFE)
    digests = {}
    for alg, h in hashers.items():
        # A copy: the live state stays that of the record until the sequence is flushed.
        h = h.copy()
        h.update(data)
        digests[alg] = h.digest()
    return seq, digests


def flush(tpm: Tpm, handle: int) -> None:
    """Remove the sequence at ``handle`` (a completed sequence)."""
    objects.flush(tpm, handle)
    _LIVE.get(tpm, {}).pop(handle, None)


def _resolve(tpm: Tpm, handle: int, record: bytes) -> Entity:
    # AllocateSequenceSlot() / IsAuthValueAvailable(): the Name is the Empty Buffer, the
    # authValue is always available for USER role, no authPolicy, noDA.
    seq, _ = _parse(record)
    return Entity(handle, b"", auth_value=seq.auth_value, auth_policy=Policy(),
                  user_with_auth=True, admin_with_policy=False, no_da=True)


objects.register_slot_kind(SEQUENCE_TAG, _resolve)
