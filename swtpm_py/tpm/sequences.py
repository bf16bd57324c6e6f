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

Serialisation. The slot record (:data:`SEQUENCE_RECORD`) must carry a loaded sequence exactly
(volatile blob: STORE_VOLATILE, GET_STATEBLOB, migration; TPM2_ContextSave), and a saved
context must fit TPM_PT_MAX_OBJECT_CONTEXT whatever the sequence has hashed — resource
managers (tpm2-abrmd, /dev/tpmrm0) save every transient object between commands. libtpms keeps
the fixed-size hash state; hashlib cannot export its state, so the record keeps a
*checkpoint*: the chaining value of every hash the sequence computes
(:mod:`swtpm_py.tpm.hashstate`, FIPS 180-4 written out) after ``compressed`` octets — for an
HMAC sequence, of the inner hash that starts with the K ^ ipad block (RFC 2104) — and the
*tail* of data fed since, at the end of the record so SequenceUpdate appends to it.
``compressed`` is a multiple of 128 octets (:data:`ALIGN`, the largest block), so the banks of
an event sequence share one tail. ``compressed`` 0 means nothing was compressed: the tail is
all the data and the chaining values are H(0) (for HMAC, K ^ ipad not yet absorbed either).

Speed: while a sequence is live its hashlib/hmac objects are cached per TPM beside the record
they belong to, and SequenceUpdate only feeds them and appends to the tail. The pure-Python
hashers (about 1 MB/s per bank, against hashlib's hundreds) run only to move the checkpoint
forward ("compaction"): when the tail passes :data:`TAIL_LIMIT` (which bounds memory and the
volatile blob; small sequences — tpm2_hash of a few KiB, the benchmark — never reach it), and
at TPM2_ContextSave (:func:`compact`), which then leaves a tail shorter than 128 octets. A
record rebuilt from outside the cache (a restored volatile blob, TPM2_ContextLoad) continues
with hashlib if its checkpoint is still at 0, else with the pure-Python hashers seeded from the
checkpoint; their state is then exported directly at the next compaction. Measured on one
core: the benchmark's 4 KiB hash_sequence is as fast as with the previous format (~2,800
ops/s in process, no compaction); 1 MiB through a SHA-256 sequence in 1 KiB updates takes
about 1.5 s with or without a context save after every update (previously 0.3 s without
saves, quadratic in the length, and no save possible past 4 KiB).

Record format versions: the first octet is the tag. :data:`SEQUENCE_TAG` (0xF2) is the
checkpoint format above; :data:`OLD_SEQUENCE_TAG` (0xF1), written by earlier versions of
swtpm_py, had the same header followed by all the data hashed. Such a record (in an older
volatile blob, or in a context saved before the upgrade — it is integrity-protected as it is,
so it still loads) is converted when first used: the data becomes the tail of a checkpoint at
0, which loses nothing.
"""

from __future__ import annotations

import enum
import hmac
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as c

from . import hashstate, objects
from .constants import ALG, RC, TPM_GENERATED_VALUE
from .crypto import HASHES
from .entity import Entity
from .errors import TpmError
from .state import Policy
from .wire import UINT8, UINT16, UINT64

if TYPE_CHECKING:
    import hashlib

    from .core import Tpm

    #: A running hash or HMAC: hashlib/hmac's, or an exportable one of hashstate.
    Hasher = hashlib._Hash | hmac.HMAC | hashstate.Hash | hashstate.Hmac

#: First octet of a sequence's slot record (the checkpoint format). Object records start with
#: their format version (1), so the kinds of slot records never collide.
SEQUENCE_TAG = 0xF2
#: First octet of the previous record format (all the data hashed, no checkpoint): still read.
OLD_SEQUENCE_TAG = 0xF1
#: The checkpoint is always a multiple of this many octets (the largest hash block).
ALIGN = hashstate.MAX_BLOCK_SIZE
#: The longest tail a live sequence keeps before moving its checkpoint forward.
TAIL_LIMIT = 16 * 1024


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
#: sequence), ticket state, authValue, HMAC key (empty unless an HMAC sequence), the octets
#: compressed into the checkpoint, then the chaining value of each hash of
#: :meth:`Sequence.algorithms` (hashstate's state_size octets each) and the tail.
SEQUENCE_RECORD = c.Struct(
    "tag" / c.Const(SEQUENCE_TAG, UINT8),
    "kind" / UINT8,
    "hashAlg" / UINT16,
    "ticket" / UINT8,
    "auth" / c.Prefixed(UINT16, c.GreedyBytes),
    "key" / c.Prefixed(UINT16, c.GreedyBytes),
    "compressed" / UINT64,
    "state" / c.GreedyBytes,
)
#: The record up to its checkpoint, and the offset where the checkpoint starts.
_HEADER = c.Struct(*SEQUENCE_RECORD.subcons[:-2], "end" / c.Tell)


def _name(alg: int) -> str:
    return HASHES[alg].name


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
        """The record up to its checkpoint."""
        return SEQUENCE_RECORD.build(dict(kind=self.kind, hashAlg=self.hash_alg,
                                          ticket=self.ticket, auth=self.auth_value,
                                          key=self.key, compressed=0, state=b""))[:-8]

    def initial(self) -> bytes:
        """The checkpoint of a sequence that has compressed nothing: 0 and each H(0)."""
        states = (hashstate.Hash(_name(alg)).export().chain for alg in self.algorithms())
        return bytes(8) + b"".join(states)

    def state_size(self) -> int:
        """Octets of the checkpoint (count and chaining values)."""
        return 8 + sum(hashstate.ALGORITHMS[_name(alg)].state_size
                       for alg in self.algorithms())

    def new(self, data: bytes | memoryview = b"") -> dict[int, Hasher]:
        """Fresh hashlib hash (or HMAC) states by algorithm, fed with ``data``."""
        if self.kind is Kind.HMAC:
            return {self.hash_alg: hmac.new(self.key, data, _name(self.hash_alg))}
        return {alg: HASHES[alg].new(data) for alg in self.algorithms()}

    def restore(self, record: bytes, start: int) -> dict[int, Hasher]:
        """Exportable hashers by algorithm continuing from the checkpoint at ``start`` in
        ``record``, fed with its tail."""
        compressed = int.from_bytes(record[start:start + 8], "big")
        off = start + 8
        out: dict[int, Hasher] = {}
        for alg in self.algorithms():
            name = _name(alg)
            size = hashstate.ALGORITHMS[name].state_size
            state = hashstate.State(bytes(record[off:off + size]), compressed)
            off += size
            if self.kind is Kind.HMAC:
                out[alg] = (hashstate.Hmac(name, self.key, align=ALIGN) if compressed == 0
                            else hashstate.restore_hmac(name, self.key, state, ALIGN))
            else:
                out[alg] = (hashstate.Hash(name, align=ALIGN) if compressed == 0
                            else hashstate.restore(name, state, ALIGN))
        tail = memoryview(record)[off:]
        for h in out.values():
            h.update(tail)
        return out


def is_sequence_record(record: bytes) -> bool:
    """Whether a slot record is a sequence (and not an object), of either format."""
    return record[:1] in (bytes([SEQUENCE_TAG]), bytes([OLD_SEQUENCE_TAG]))


def _parse(record: bytes) -> tuple[Sequence, int]:
    """The sequence of ``record`` and the offset where its checkpoint (or, in the old format,
    its data) starts.

    Read with slices rather than :data:`_HEADER` (which declares the same layout and against
    which the tests hold this): every command on a sequence parses its record several times,
    and construct's generic parsing was most of a SequenceUpdate's time. Records are only
    ever built by this module (or restored from an integrity-checked context)."""
    auth_end = 7 + int.from_bytes(record[5:7], "big")
    key_end = auth_end + 2 + int.from_bytes(record[auth_end:auth_end + 2], "big")
    seq = Sequence(Kind(record[1]), int.from_bytes(record[2:4], "big"), Ticket(record[4]),
                   bytes(record[7:auth_end]), bytes(record[auth_end + 2:key_end]))
    return seq, key_end


def _upgrade(record: bytes) -> bytes:
    """A record of either format in the current one: the old format's data becomes the tail
    of a checkpoint at 0."""
    if record[0] == SEQUENCE_TAG:
        return record
    seq, start = _parse(record)
    return seq.header() + seq.initial() + record[start:]


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


def _record(tpm: Tpm, handle: int) -> bytes:
    """The record of the sequence at ``handle``, converted to the current format in place."""
    record = tpm.vol.loaded_objects[handle]
    if record[0] != SEQUENCE_TAG:
        record = _upgrade(record)
        tpm.vol.loaded_objects[handle] = record
    return record


def _hashers(tpm: Tpm, handle: int, record: bytes, seq: Sequence,
             start: int) -> dict[int, Hasher]:
    """Hash objects holding the state of the sequence stored as ``record`` (cached, or
    rebuilt from the record: hashlib while the checkpoint is at 0, else exportable hashers);
    the caller may update them."""
    cached = _LIVE.setdefault(tpm, {}).get(handle)
    if cached is not None and cached[0] is record:
        return cached[1]
    if record[start:start + 8] == bytes(8):
        return seq.new(memoryview(record)[start + seq.state_size():])
    return seq.restore(record, start)


def _compact(seq: Sequence, record: bytes, start: int, hashers: dict[int, Hasher]) -> bytes:
    """``record`` with its checkpoint moved to the last multiple of :data:`ALIGN` octets
    (the tail is then shorter than ALIGN). Exportable live hashers give their state directly;
    hashlib ones cannot, so the checkpoint is recomputed from the record."""
    if not all(isinstance(h, (hashstate.Hash, hashstate.Hmac)) for h in hashers.values()):
        hashers = seq.restore(record, start)
    states = [hashers[alg].export() for alg in seq.algorithms()]
    # Every hasher has the same alignment and was fed the same data.
    assert len({(s.compressed, s.pending) for s in states}) == 1
    if states[0].compressed == 0:
        # Nothing to compress yet (and an HMAC's pending octets would include K ^ ipad,
        # which a checkpoint at 0 leaves out): the record stays as it is.
        return record
    return (record[:start] + states[0].compressed.to_bytes(8, "big")
            + b"".join(s.chain for s in states) + states[0].pending)


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
    _store(tpm, handle, seq.header() + seq.initial(), seq.new())
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
    record = _record(tpm, handle)
    seq, start = _parse(record)
    hashers = _hashers(tpm, handle, record, seq, start)
    if seq.kind is Kind.HASH and seq.ticket is Ticket.UNDECIDED:
        decided = Ticket.SAFE if ticket_safe(data) else Ticket.UNSAFE
        record = record[:4] + bytes([decided]) + record[5:]
    for h in hashers.values():
        h.update(data)
    record += data
    if len(record) - start - seq.state_size() > TAIL_LIMIT:
        record = _compact(seq, record, start, hashers)
    _store(tpm, handle, record, hashers)


def compact(tpm: Tpm, handle: int) -> bytes:
    """The record of the sequence at ``handle`` with its checkpoint moved forward (a tail
    shorter than :data:`ALIGN` octets), as TPM2_ContextSave saves it: its size depends only
    on the authValue and key, never on the data hashed. The sequence stays loaded with it."""
    record = _record(tpm, handle)
    seq, start = _parse(record)
    if len(record) - start - seq.state_size() < ALIGN:
        return record
    hashers = _hashers(tpm, handle, record, seq, start)
    record = _compact(seq, record, start, hashers)
    _store(tpm, handle, record, hashers)
    return record


def finish(tpm: Tpm, handle: int, data: bytes) -> tuple[Sequence, dict[int, bytes]]:
    """Add the last ``data`` and return the sequence (its ticket state decided, with ``data``
    as the first block if nothing came before) with its digests by algorithm. The sequence
    stays loaded: the caller flushes it (:func:`flush`)."""
    record = _record(tpm, handle)
    seq, start = _parse(record)
    hashers = _hashers(tpm, handle, record, seq, start)
    if seq.kind is Kind.HASH and seq.ticket is Ticket.UNDECIDED:
        seq = Sequence(seq.kind, seq.hash_alg,
                       Ticket.SAFE if ticket_safe(data) else Ticket.UNSAFE, seq.auth_value,
                       seq.key)
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
objects.register_slot_kind(OLD_SEQUENCE_TAG, _resolve)
