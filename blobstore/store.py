"""The blobstore: registration, size computation, and a store of named blobs in an image.

Devices register ``(owner, name, max_size)`` before the store opens; :func:`required_size`
says how big the image must be (layout overhead included). :meth:`BlobStore.format` lays a
fresh store out; :meth:`BlobStore.open` opens an existing one and reconciles it with the
registrations (docs/blobstore-format.md, "Registration changes"). ``read``/``write``/``delete``
then work on one blob each: an update writes only that blob's older slot and flushes, so its
cost does not depend on how many other blobs the store holds.
"""

from __future__ import annotations

import enum
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .format import (DEFAULT_SECTOR_SIZE, DIRECTORY_HEADER_SIZE, ENTRY_SIZE, FORMAT_VERSION,
                     MAX_LABEL_BYTES, MAX_NAME_BYTES, MAX_PRODUCER_BYTES, MIN_DIRECTORY_CAPACITY,
                     PRODUCER, SEQ_MODULUS, SLOT_FLAG_DELETED, SLOT_HEADER_SIZE,
                     SUPERBLOCK_MAGIC, SUPERBLOCK_SIZE, DamagedError, Directory, Entry,
                     IncompatibleError, NotFormattedError, SlotHeader, StoreError, Superblock,
                     TruncatedError, align_up, check_sector_size, decode_directory,
                     decode_slot_header, decode_superblock, directory_size, encode_directory,
                     encode_slot, encode_superblock, is_zero, seq_newer, slot_capacity,
                     slot_size, verify_slot)
from .image.base import Image

__all__ = [
    "BlobInfo", "BlobStore", "BlobTooLargeError", "CheckReport", "CheckStatus", "DamagedError",
    "ImageTooSmallError", "IncompatibleError", "NotFormattedError", "Registration",
    "RegistrationError", "SlotInfo", "SlotState", "StoreError", "TruncatedError",
    "UnknownBlobError", "required_size", "probe", "SIZE_GRANULARITY", "FORMAT_VERSION",
]

#: Every required size is a whole number of KiB, so ``showsize``'s "Nkb" is exact: an image
#: of N KiB is big enough and one byte less is not.
SIZE_GRANULARITY = 1024
#: When no registrations say where a store would live, "unformatted" means that this many
#: leading bytes (or the whole image, if smaller) read as zero.
PROBE_SIZE = 1 << 20
#: Chunk size for format's wipe and for zero scans.
_CHUNK = 1 << 20


class ImageTooSmallError(StoreError):
    """The image is smaller than the store needs. ``required`` and ``actual`` are in bytes."""

    def __init__(self, required: int, actual: int, why: str = "", alternative: str = "") -> None:
        self.required = required
        self.actual = actual
        super().__init__(
            f"the image is too small{' ' + why if why else ''}: the store needs {required} "
            f"bytes ({required // 1024} KiB) but the image has {actual} bytes; grow the image "
            f"to at least {required} bytes{' or ' + alternative if alternative else ''}")


class RegistrationError(StoreError, ValueError):
    """A registration is invalid, or cannot be reconciled with the store on the image."""


class UnknownBlobError(StoreError, KeyError):
    """No blob with this owner and name exists in the store."""

    def __str__(self) -> str:
        return str(self.args[0])


class BlobTooLargeError(StoreError, ValueError):
    """A write is larger than the blob's registered maximum size."""


@dataclass(frozen=True)
class Registration:
    """A device's claim on one blob: its owner, its name and the largest size it will write."""

    owner: str
    name: str
    max_size: int

    def __post_init__(self) -> None:
        _check_name(self.owner, "owner")
        _check_name(self.name, "blob name")
        if "/" in self.owner:
            raise RegistrationError(f"owner {self.owner!r} contains '/' (the tool writes "
                                    f"blobs as OWNER/NAME)")
        if not isinstance(self.max_size, int) or self.max_size < 0:
            raise RegistrationError(f"max size of {self.owner}/{self.name} must be an integer "
                                    f">= 0, not {self.max_size!r}")

    @property
    def key(self) -> tuple[str, str]:
        """(owner, name)."""
        return (self.owner, self.name)


def _check_name(text: str, what: str) -> None:
    if not isinstance(text, str) or not text:
        raise RegistrationError(f"{what} must be a non-empty string")
    if "\0" in text or not text.isprintable():
        raise RegistrationError(f"{what} {text!r} contains unprintable characters")
    if len(text.encode()) > MAX_NAME_BYTES:
        raise RegistrationError(f"{what} {text!r} is longer than {MAX_NAME_BYTES} UTF-8 bytes")


def _check_registrations(registrations: Iterable[Registration]) -> tuple[Registration, ...]:
    regs = tuple(registrations)
    seen: set[tuple[str, str]] = set()
    for r in regs:
        if not isinstance(r, Registration):
            raise RegistrationError(f"not a Registration: {r!r}")
        if r.key in seen:
            raise RegistrationError(f"blob {r.owner}/{r.name} is registered twice")
        seen.add(r.key)
    return regs


def _directory_capacity(count: int, sector_size: int) -> int:
    """Entries a fresh directory gets: at least MIN_DIRECTORY_CAPACITY (room for blobs added
    later) and every entry that fits in the sectors it occupies anyway."""
    size = directory_size(max(count, MIN_DIRECTORY_CAPACITY), sector_size)
    return (size - DIRECTORY_HEADER_SIZE) // ENTRY_SIZE


@dataclass(frozen=True)
class _Layout:
    """Where a freshly formatted store puts everything."""

    sector_size: int
    directory_capacity: int
    directory_size: int
    directory_offsets: tuple[int, int]
    data_offset: int
    slot_offsets: tuple[tuple[int, int], ...]
    end: int

    @classmethod
    def fresh(cls, regs: Sequence[Registration], sector_size: int) -> "_Layout":
        check_sector_size(sector_size)
        cap = _directory_capacity(len(regs), sector_size)
        dsize = directory_size(cap, sector_size)
        a = align_up(SUPERBLOCK_SIZE, sector_size)
        b = a + dsize
        off = b + dsize
        data = off
        slots = []
        for r in regs:
            s = slot_size(r.max_size, sector_size)
            slots.append((off, off + s))
            off += 2 * s
        return cls(sector_size, cap, dsize, (a, b), data, tuple(slots), off)

    @property
    def required(self) -> int:
        return align_up(self.end, SIZE_GRANULARITY)


def required_size(registrations: Iterable[Registration],
                  sector_size: int = DEFAULT_SECTOR_SIZE) -> int:
    """Bytes an image needs for a store freshly formatted with these registrations: superblock,
    both directory copies and two slots per blob, rounded up to a whole KiB."""
    return _Layout.fresh(_check_registrations(registrations), sector_size).required


class SlotState(enum.Enum):
    """What a check finds in one slot."""

    BLANK = "blank"        # header all zero: never written
    VALID = "valid"        # checksum holds
    DAMAGED = "damaged"    # anything else: torn write, bit rot, foreign data


@dataclass(frozen=True)
class SlotInfo:
    """The state of one slot of a blob."""

    number: int
    offset: int
    state: SlotState
    header: SlotHeader | None = None
    problem: str = ""

    @property
    def seq(self) -> int | None:
        """The sequence number, when valid."""
        return self.header.seq if self.header else None


@dataclass(frozen=True)
class BlobInfo:
    """One blob as the directory and its slots describe it."""

    index: int
    owner: str
    name: str
    max_size: int
    created_ns: int
    producer: str
    registered: bool
    slots: tuple[SlotInfo, SlotInfo]
    current: int | None

    @property
    def current_header(self) -> SlotHeader | None:
        """The header of the copy reads return, if any."""
        return None if self.current is None else self.slots[self.current].header

    @property
    def present(self) -> bool:
        """Whether the blob exists (written and not deleted)."""
        h = self.current_header
        return h is not None and not h.deleted

    @property
    def length(self) -> int | None:
        """The blob's size in bytes when present."""
        h = self.current_header
        return h.length if h is not None and not h.deleted else None


class CheckStatus(enum.IntEnum):
    """A check's verdict; the value is the ``blobstore check`` exit code."""

    CLEAN = 0
    OLD_COPY_USED = 1
    DAMAGED = 2


@dataclass
class CheckReport:
    """What :meth:`BlobStore.check` found (and repaired)."""

    status: CheckStatus = CheckStatus.CLEAN
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def _add(self, status: CheckStatus, problem: str) -> None:
        self.status = max(self.status, status)
        self.problems.append(problem)


@dataclass
class _Blob:
    """Cached knowledge about one blob: which slot is current (once resolved)."""

    index: int
    entry: Entry
    limit: int
    registered: bool
    resolved: bool = False
    current: int | None = None
    header: SlotHeader | None = None


class BlobStore:
    """An open store. Create with :meth:`format` or :meth:`open`; it owns the image and closes
    it in :meth:`close`. Methods are thread-safe (one lock)."""

    def __init__(self, image: Image, sb: Superblock, directory: Directory, copy: int,
                 *, producer: str, clock: Callable[[], int]) -> None:
        """Use :meth:`format` or :meth:`open`."""
        self.image = image
        self.superblock = sb
        self._dir = directory
        self._dir_copy = copy
        self._producer = producer
        self._clock = clock
        self._lock = threading.RLock()
        self._blobs: dict[tuple[str, str], _Blob] = {}
        self._index_blobs(())

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def format(cls, image: Image, registrations: Iterable[Registration], *,
               sector_size: int = DEFAULT_SECTOR_SIZE, label: str = "",
               producer: str = PRODUCER, clock: Callable[[], int] = time.time_ns) -> "BlobStore":
        """Lay out a fresh, empty store for ``registrations`` (destroying what the image held in
        that region) and open it.

        Crash safety: the old superblock is zeroed and flushed first, then directories and slots
        are written and flushed, and the new superblock goes last. A crash at any point leaves
        either the complete new store or no superblock at all, never an old superblock that
        describes new directories."""
        regs = _check_registrations(registrations)
        _check_text(label, "label", MAX_LABEL_BYTES)
        _check_text(producer, "producer", MAX_PRODUCER_BYTES)
        layout = _Layout.fresh(regs, sector_size)
        if image.size() < layout.required:
            raise ImageTooSmallError(layout.required, image.size())
        now = clock()
        sb = Superblock(uuid=uuidlib.uuid4().bytes, sector_size=sector_size,
                        directory_capacity=layout.directory_capacity,
                        directory_size=layout.directory_size,
                        directory_offsets=layout.directory_offsets,
                        data_offset=layout.data_offset, created_ns=now, producer=producer,
                        label=label)
        entries = tuple(Entry(owner=r.owner, name=r.name, max_size=r.max_size,
                              slot_offsets=s, created_ns=now, producer=producer)
                        for r, s in zip(regs, layout.slot_offsets))
        directory = Directory(uuid=sb.uuid, generation=1, next_free=layout.end, entries=entries)

        image.write(0, bytes(SUPERBLOCK_SIZE))
        image.flush()
        region = bytearray(layout.end - SUPERBLOCK_SIZE)

        def put(offset: int, data: bytes) -> None:
            region[offset - SUPERBLOCK_SIZE:offset - SUPERBLOCK_SIZE + len(data)] = data

        raw_dir = encode_directory(directory, layout.directory_capacity, sector_size)
        for off in layout.directory_offsets:
            put(off, raw_dir)
        for i, e in enumerate(entries):
            put(e.slot_offsets[1], _initial_slot(sb.uuid, i, now))
        for start in range(0, len(region), _CHUNK):
            image.write(SUPERBLOCK_SIZE + start, bytes(region[start:start + _CHUNK]))
        image.flush()
        image.write(0, encode_superblock(sb))
        image.flush()
        store = cls(image, sb, directory, 0, producer=producer, clock=clock)
        store._index_blobs(regs)
        return store

    @classmethod
    def open(cls, image: Image, registrations: Iterable[Registration] = (), *,
             label: str | None = None, producer: str = PRODUCER,
             clock: Callable[[], int] = time.time_ns) -> "BlobStore":
        """Open the store on ``image`` and reconcile it with ``registrations``: new blobs are
        added and blobs whose max size grew get bigger slots, when the image has room (else
        ImageTooSmallError, nothing changed); blobs the store holds but nobody registered are
        kept untouched. ``label``, when given, must match the label the store was formatted
        with (a store formatted without a label opens under any).

        Raises NotFormattedError (all zero), DamagedError / TruncatedError, IncompatibleError,
        ImageTooSmallError, RegistrationError."""
        regs = _check_registrations(registrations)
        _check_text(producer, "producer", MAX_PRODUCER_BYTES)
        sb = probe(image, required_size(regs) if regs else 0)
        if label is not None and sb.label and sb.label != label:
            raise RegistrationError(f"this image holds the blobstore {sb.label!r}, not "
                                    f"{label!r}")
        size = image.size()
        dir_end = sb.directory_offsets[1] + sb.directory_size
        if size < dir_end:
            raise TruncatedError(f"the image ({size} bytes) is truncated: the store's "
                                 f"directories alone need {dir_end} bytes")
        copies: list[Directory | None] = []
        problems = []
        for i, off in enumerate(sb.directory_offsets):
            try:
                copies.append(decode_directory(image.read(off, sb.directory_size), sb))
            except DamagedError as e:
                copies.append(None)
                problems.append(f"copy {'AB'[i]}: {e}")
        copy = _newest_directory(copies)
        if copy is None:
            raise DamagedError("both copies of the blobstore directory are damaged ("
                               + "; ".join(problems) + ")")
        directory = copies[copy]
        assert directory is not None
        if size < directory.next_free:
            raise TruncatedError(f"the image ({size} bytes) is truncated: the store extends "
                                 f"to {directory.next_free} bytes")
        store = cls(image, sb, directory, copy, producer=producer, clock=clock)
        store._reconcile(regs)
        return store

    # -- public properties --------------------------------------------------------------------

    @property
    def uuid(self) -> uuidlib.UUID:
        """The store's UUID (new at every format)."""
        return uuidlib.UUID(bytes=self.superblock.uuid)

    @property
    def directory_generation(self) -> int:
        """Generation of the directory copy in use."""
        return self._dir.generation

    @property
    def directory_copy(self) -> int:
        """Which directory copy (0 = A, 1 = B) is in use."""
        return self._dir_copy

    @property
    def end(self) -> int:
        """Bytes of the image the store occupies."""
        return self._dir.next_free

    @property
    def format_version(self) -> int:
        """The on-disk format version."""
        return self.superblock.version

    def required_size(self, registrations: Iterable[Registration]) -> int:
        """Bytes the image needs for this store once reconciled with ``registrations``."""
        return self._plan(_check_registrations(registrations))[2]

    # -- blob operations ----------------------------------------------------------------------

    def names(self) -> list[tuple[str, str]]:
        """(owner, name) of every blob, in directory order."""
        return [(e.owner, e.name) for e in self._dir.entries]

    def read(self, owner: str, name: str) -> bytes | None:
        """The blob's bytes, or None when it was never written or was deleted.

        Raises UnknownBlobError, or DamagedError when neither slot holds a valid copy."""
        with self._lock:
            b = self._blob(owner, name)
            if b.resolved and b.current is not None and b.header is not None:
                try:
                    return self._read_current(b)
                except DamagedError:
                    pass  # damaged since we last looked: fall back to a full scan
            return self._resolve(b)

    def write(self, owner: str, name: str, data: bytes) -> None:
        """Replace the blob: write its older slot, flush. Returns once the new copy is durable;
        if it raises (ImageError), reads keep returning the previous copy."""
        data = bytes(data)
        with self._lock:
            b = self._blob(owner, name)
            if len(data) > b.limit:
                raise BlobTooLargeError(f"blob {owner}/{name}: {len(data)} bytes exceed its "
                                        f"max size of {b.limit} bytes")
            self._commit(b, data, 0, self._clock())

    def delete(self, owner: str, name: str) -> None:
        """Delete the blob (a durable update like write, so a crash leaves it or its absence).
        Deleting an absent blob does nothing."""
        with self._lock:
            b = self._blob(owner, name)
            if not b.resolved:
                self._resolve(b)
            if b.header is None or b.header.deleted:
                return
            self._commit(b, b"", SLOT_FLAG_DELETED, self._clock())

    def info(self, owner: str, name: str) -> BlobInfo:
        """Fresh state of one blob's slots, read from the image."""
        with self._lock:
            return self._info(self._blob(owner, name))

    def blobs(self) -> list[BlobInfo]:
        """Fresh state of every blob, in directory order."""
        with self._lock:
            return [self._info(self._blobs[(e.owner, e.name)]) for e in self._dir.entries]

    def check(self, repair: bool = False) -> CheckReport:
        """Verify both directory copies and every slot. A damaged copy next to a valid one is
        OLD_COPY_USED (the damaged one may have been the newer: a torn update or bit rot); a blob
        without any valid copy is DAMAGED. With ``repair``, damaged copies that have a valid
        twin are rewritten from it (same content and timestamp, next sequence number)."""
        with self._lock:
            report = CheckReport()
            sb = self.superblock
            for i, off in enumerate(sb.directory_offsets):
                try:
                    decode_directory(self.image.read(off, sb.directory_size), sb)
                except DamagedError as e:
                    report._add(CheckStatus.OLD_COPY_USED,
                                f"directory copy {'AB'[i]} is damaged ({e}); copy "
                                f"{'AB'[self._dir_copy]} (generation {self._dir.generation}) "
                                f"is used")
                    if repair:
                        self._commit_directory(self._dir.entries, self._dir.next_free)
                        report.repaired.append(f"directory copy {'AB'[i]} rewritten")
            for e in self._dir.entries:
                b = self._blobs[(e.owner, e.name)]
                info = self._info(b)
                label = f"blob {e.owner}/{e.name}"
                if info.current is None:
                    report._add(CheckStatus.DAMAGED, f"{label}: no valid copy ("
                                + "; ".join(f"slot {s.number}: {s.state.value}"
                                            + (f", {s.problem}" if s.problem else "")
                                            for s in info.slots) + ")")
                    continue
                for s in info.slots:
                    if s.state is not SlotState.DAMAGED:
                        continue
                    cur = info.slots[info.current]
                    report._add(CheckStatus.OLD_COPY_USED,
                                f"{label}: slot {s.number} is damaged ({s.problem}); the copy "
                                f"in slot {cur.number} (sequence {cur.seq}) is used")
                    if repair:
                        h = cur.header
                        assert h is not None
                        data = self.read(e.owner, e.name) or b""
                        self._commit(b, data, h.flags, h.mtime_ns)
                        report.repaired.append(f"{label}: slot {s.number} rewritten")
            return report

    def close(self) -> None:
        """Close the image (which flushes it)."""
        self.image.close()

    def __enter__(self) -> "BlobStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _index_blobs(self, regs: Sequence[Registration]) -> None:
        registered = {r.key: r for r in regs}
        blobs = {}
        for i, e in enumerate(self._dir.entries):
            old = self._blobs.get((e.owner, e.name))
            r = registered.get((e.owner, e.name))
            b = _Blob(index=i, entry=e, limit=r.max_size if r else e.max_size,
                      registered=r is not None)
            if old is not None and old.entry == e:
                b.resolved, b.current, b.header = old.resolved, old.current, old.header
            blobs[(e.owner, e.name)] = b
        self._blobs = blobs

    def _blob(self, owner: str, name: str) -> _Blob:
        try:
            return self._blobs[(owner, name)]
        except KeyError:
            known = ", ".join(f"{o}/{n}" for o, n in self.names()) or "none"
            raise UnknownBlobError(f"no blob {owner}/{name} in this store (blobs: {known})") \
                from None

    def _scan_slot(self, b: _Blob, k: int) -> tuple[SlotInfo, bytes | None]:
        """Read and verify slot ``k`` of ``b``: its state and, when valid, its data."""
        off = b.entry.slot_offsets[k]
        cap = slot_capacity(slot_size(b.entry.max_size, self.superblock.sector_size))
        head = self.image.read(off, SLOT_HEADER_SIZE)
        if is_zero(head):
            return SlotInfo(k, off, SlotState.BLANK), None
        try:
            length = decode_slot_header(head).length
            if length > cap:
                raise DamagedError(f"length {length} exceeds the slot's {cap} bytes")
            data = self.image.read(off + SLOT_HEADER_SIZE, length)
            h = verify_slot(head, data, uuid=self.superblock.uuid, entry_index=b.index,
                            slot_number=k, capacity=cap)
        except DamagedError as e:
            return SlotInfo(k, off, SlotState.DAMAGED, problem=str(e)), None
        return SlotInfo(k, off, SlotState.VALID, header=h), data

    def _scan(self, b: _Blob) -> tuple[tuple[SlotInfo, SlotInfo], int | None, bytes | None]:
        """Both slots of ``b``, the current one (newest valid; seq compared modulo 2**64), and
        its data. Updates the cache."""
        s0, d0 = self._scan_slot(b, 0)
        s1, d1 = self._scan_slot(b, 1)
        valid = [s for s in (s0, s1) if s.state is SlotState.VALID]
        current: int | None = None
        if len(valid) == 2:
            current = 1 if seq_newer(s1.header.seq, s0.header.seq) else 0  # type: ignore
        elif valid:
            current = valid[0].number
        b.resolved = True
        b.current = current
        b.header = None if current is None else (s0, s1)[current].header
        return (s0, s1), current, None if current is None else (d0, d1)[current]

    def _resolve(self, b: _Blob) -> bytes | None:
        (s0, s1), current, data = self._scan(b)
        if current is None:
            raise DamagedError(f"blob {b.entry.owner}/{b.entry.name} is damaged: no valid copy "
                               f"(slot 0: {s0.problem or s0.state.value}; slot 1: "
                               f"{s1.problem or s1.state.value}); `blobstore check` reports, "
                               f"writing the blob replaces it")
        assert b.header is not None
        return None if b.header.deleted else data

    def _read_current(self, b: _Blob) -> bytes | None:
        assert b.current is not None and b.header is not None
        if b.header.deleted:
            return None
        off = b.entry.slot_offsets[b.current]
        raw = self.image.read(off, SLOT_HEADER_SIZE + b.header.length)
        cap = slot_capacity(slot_size(b.entry.max_size, self.superblock.sector_size))
        h = verify_slot(raw[:SLOT_HEADER_SIZE], raw[SLOT_HEADER_SIZE:],
                        uuid=self.superblock.uuid, entry_index=b.index, slot_number=b.current,
                        capacity=cap)
        if h != b.header:
            raise DamagedError("slot changed under us")
        return raw[SLOT_HEADER_SIZE:]

    def _commit(self, b: _Blob, data: bytes, flags: int, mtime_ns: int) -> None:
        """Write ``data`` into the slot of ``b`` that is not current, flush, then make it
        current. The current slot is never written, so whatever happens to this write (torn,
        lost, I/O error) the previous copy stays readable."""
        if not b.resolved:
            try:
                self._resolve(b)
            except DamagedError:
                pass  # no valid copy: nothing to preserve, write slot 0
        target = 0 if b.current is None else 1 - b.current
        seq = 1 if b.header is None else (b.header.seq + 1) % SEQ_MODULUS
        header = SlotHeader(uuid=self.superblock.uuid, entry_index=b.index, slot_number=target,
                            seq=seq, length=len(data), mtime_ns=mtime_ns, flags=flags)
        self.image.write(b.entry.slot_offsets[target], encode_slot(header, data))
        self.image.flush()
        b.current, b.header = target, header

    def _info(self, b: _Blob) -> BlobInfo:
        slots, current, _ = self._scan(b)
        e = b.entry
        return BlobInfo(index=b.index, owner=e.owner, name=e.name, max_size=b.limit,
                        created_ns=e.created_ns, producer=e.producer, registered=b.registered,
                        slots=slots, current=current)

    def _plan(self, regs: Sequence[Registration]
              ) -> tuple[list[Registration], list[tuple[int, Registration]], int]:
        """What reconciling with ``regs`` takes: blobs to add, blobs to move to bigger slots,
        and the image size needed afterwards."""
        sector = self.superblock.sector_size
        index = {(e.owner, e.name): i for i, e in enumerate(self._dir.entries)}
        add, move = [], []
        end = self._dir.next_free
        for r in regs:
            i = index.get(r.key)
            if i is None:
                add.append(r)
                end += 2 * slot_size(r.max_size, sector)
            elif r.max_size > self._dir.entries[i].max_size:
                e = self._dir.entries[i]
                if slot_size(r.max_size, sector) > slot_size(e.max_size, sector):
                    end += 2 * slot_size(r.max_size, sector)
                move.append((i, r))
        return add, move, align_up(end, SIZE_GRANULARITY)

    def _reconcile(self, regs: Sequence[Registration]) -> None:
        """Apply registrations (docs/blobstore-format.md, "Registration changes").

        New slots are written and flushed before the directory that points at them (one A/B
        directory update), so a crash leaves the old directory and old slots, or the new ones."""
        add, move, needed = self._plan(regs)
        self._index_blobs(regs)
        if not (add or move):
            return
        sb = self.superblock
        sector = sb.sector_size
        if len(self._dir.entries) + len(add) > sb.directory_capacity:
            raise RegistrationError(
                f"the store's directory holds {sb.directory_capacity} blobs; "
                f"{len(self._dir.entries) + len(add)} would not fit: format the store again "
                f"(losing its content) to lay it out for the new registrations")
        if self.image.size() < needed:
            grown = ", ".join(f"{r.owner}/{r.name} grew to {r.max_size} bytes"
                              for _, r in move)
            added = ", ".join(f"{r.owner}/{r.name} is new" for r in add)
            changes = "; ".join(filter(None, (added, grown)))
            raise ImageTooSmallError(needed, self.image.size(),
                                     f"for the new registrations ({changes})",
                                     "format the store again (losing its content)")
        now = self._clock()
        entries = list(self._dir.entries)
        end = self._dir.next_free
        for i, r in move:
            e = entries[i]
            if slot_size(r.max_size, sector) == slot_size(e.max_size, sector):
                entries[i] = _replace_entry(e, max_size=r.max_size)
                continue
            b = self._blobs[r.key]
            try:
                data = self._resolve(b) or b""
            except DamagedError as exc:
                raise DamagedError(f"cannot move {r.owner}/{r.name} to bigger slots: "
                                   f"{exc}") from None
            assert b.header is not None
            size = slot_size(r.max_size, sector)
            offsets = (end, end + size)
            end += 2 * size
            h = b.header
            first = SlotHeader(uuid=sb.uuid, entry_index=i, slot_number=0,
                               seq=(h.seq + 1) % SEQ_MODULUS, length=len(data),
                               mtime_ns=h.mtime_ns, flags=h.flags)
            self.image.write(offsets[0], encode_slot(first, data))
            self.image.write(offsets[1], bytes(SLOT_HEADER_SIZE))
            entries[i] = _replace_entry(e, max_size=r.max_size, slot_offsets=offsets)
        for r in add:
            i = len(entries)
            size = slot_size(r.max_size, sector)
            offsets = (end, end + size)
            end += 2 * size
            self.image.write(offsets[0], bytes(SLOT_HEADER_SIZE))
            self.image.write(offsets[1], _initial_slot(sb.uuid, i, now))
            entries.append(Entry(owner=r.owner, name=r.name, max_size=r.max_size,
                                 slot_offsets=offsets, created_ns=now,
                                 producer=self._producer))
        self.image.flush()
        self._commit_directory(tuple(entries), end)
        self._index_blobs(regs)

    def _commit_directory(self, entries: tuple[Entry, ...], next_free: int) -> None:
        """Write the directory into the copy not in use (next generation), flush, switch."""
        sb = self.superblock
        target = 1 - self._dir_copy
        d = Directory(uuid=sb.uuid, generation=(self._dir.generation + 1) % SEQ_MODULUS,
                      next_free=next_free, entries=entries)
        self.image.write(sb.directory_offsets[target],
                         encode_directory(d, sb.directory_capacity, sb.sector_size))
        self.image.flush()
        self._dir, self._dir_copy = d, target


def _replace_entry(e: Entry, **changes: object) -> Entry:
    fields = dict(owner=e.owner, name=e.name, max_size=e.max_size, slot_offsets=e.slot_offsets,
                  created_ns=e.created_ns, producer=e.producer)
    fields.update(changes)
    return Entry(**fields)  # type: ignore[arg-type]


def _initial_slot(store_uuid: bytes, index: int, now: int) -> bytes:
    """Slot 1 of a new blob: a valid deletion with sequence 0, so a blob always has a valid
    copy -- a torn first write then reads as "absent", never as damage."""
    return encode_slot(SlotHeader(uuid=store_uuid, entry_index=index, slot_number=1, seq=0,
                                  length=0, mtime_ns=now, flags=SLOT_FLAG_DELETED), b"")


def _newest_directory(copies: list[Directory | None]) -> int | None:
    a, b = copies
    if a is None and b is None:
        return None
    if a is None:
        return 1
    if b is None:
        return 0
    return 1 if seq_newer(b.generation, a.generation) else 0


def _check_text(text: str, what: str, limit: int) -> None:
    if "\0" in text or len(text.encode()) > limit:
        raise RegistrationError(f"{what} {text!r} must be at most {limit} UTF-8 bytes without NUL")


def probe(image: Image, region: int = 0) -> Superblock:
    """The superblock of the store on ``image``, verified.

    NotFormattedError when the image holds no superblock and the first
    max(``region``, PROBE_SIZE) bytes (or the whole image) read as zero -- formatting would then
    destroy nothing; DamagedError when they do not (garbage, an interrupted format, another
    file system); IncompatibleError for a valid store this program must not use."""
    size = image.size()
    head = image.read(0, min(size, SUPERBLOCK_SIZE))
    if is_zero(head):
        limit = min(size, max(region, PROBE_SIZE))
        for start in range(0, limit, _CHUNK):
            chunk = image.read(start, min(_CHUNK, limit - start))
            if not is_zero(chunk):
                first = start + len(chunk) - len(chunk.lstrip(b"\0"))
                raise DamagedError(f"no blobstore superblock, but the image is not blank: "
                                   f"non-zero data at offset {first} (another file system, "
                                   f"garbage or an interrupted format)")
        raise NotFormattedError(f"the image is not formatted (its first {limit} bytes are all "
                                f"zero)")
    if size < SUPERBLOCK_SIZE and not head.startswith(SUPERBLOCK_MAGIC):
        raise DamagedError(f"the image is only {size} bytes and not blank: not a blobstore")
    return decode_superblock(head)

