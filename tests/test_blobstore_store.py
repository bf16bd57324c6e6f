"""The blobstore on an in-memory image: sizing, blob operations, opening errors, registration
changes, timestamps, check and repair, and that an update touches only its own slot."""

from __future__ import annotations

import hashlib
import struct

import pytest

from blobstore import format as fmt
from blobstore.image.base import ImageError
from blobstore.memory import MemoryImage
from blobstore.store import (BlobStore, BlobTooLargeError, CheckStatus, DamagedError,
                             ImageTooSmallError, IncompatibleError, NotFormattedError,
                             Registration, RegistrationError, SlotState, TruncatedError,
                             UnknownBlobError, required_size)

TPM = [Registration("tpm", "permanent", 65536), Registration("tpm", "volatile", 32768),
       Registration("tpm", "savestate", 32768)]


class Clock:
    """A clock tests advance by hand (ns)."""

    def __init__(self, now: int = 1_700_000_000 * 10**9) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def fresh(regs=TPM, extra: int = 0, **kw) -> tuple[MemoryImage, BlobStore]:
    img = MemoryImage(required_size(regs, kw.get("sector_size", 4096)) + extra)
    return img, BlobStore.format(img, regs, **kw)


def reopen(img: MemoryImage, regs=TPM, **kw) -> tuple[MemoryImage, BlobStore]:
    """The image after a clean restart (everything flushed was kept; nothing else)."""
    new = img.crash("none")
    return new, BlobStore.open(new, regs, **kw)


# -- sizing ------------------------------------------------------------------------------------


def test_required_size_counts_superblock_directories_and_two_slots_per_blob():
    # 4 KiB superblock sector, 2 x 8 KiB directory copies (31 entries), then per blob two slots
    # of the 88-byte header plus max size, each rounded up to 4 KiB.
    expected = 4096 + 2 * 8192 + 2 * 69632 + 2 * 2 * 36864
    assert required_size(TPM) == expected == 300 * 1024


def test_required_size_of_nothing_and_of_many():
    assert required_size([]) == 4096 + 2 * 8192
    many = [Registration("o", f"b{i}", 10) for i in range(40)]
    # 40 entries need a 3-sector directory (80 + 40 * 256 = 10320 bytes).
    assert required_size(many) == 4096 + 2 * 12288 + 40 * 2 * 4096


@pytest.mark.parametrize("sector_size", [512, 1024, 4096, 65536])
def test_image_of_exactly_the_required_size_works_and_one_byte_less_is_refused(sector_size):
    regs = [Registration("a", "x", 100), Registration("a", "y", 1)]
    need = required_size(regs, sector_size)
    assert need % 1024 == 0
    with pytest.raises(ImageTooSmallError) as exc:
        BlobStore.format(MemoryImage(need - 1), regs, sector_size=sector_size)
    assert exc.value.required == need and exc.value.actual == need - 1
    assert f"{need} bytes" in str(exc.value) and f"{need - 1} bytes" in str(exc.value)
    img = MemoryImage(need)
    store = BlobStore.format(img, regs, sector_size=sector_size)
    store.write("a", "x", b"x" * 100)
    store.write("a", "x", b"y" * 100)
    store.write("a", "y", b"z")
    _, again = reopen(img, regs)
    assert again.read("a", "x") == b"y" * 100
    assert again.read("a", "y") == b"z"
    assert again.superblock.sector_size == sector_size


def test_sector_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        required_size(TPM, 1000)


# -- registrations -----------------------------------------------------------------------------


@pytest.mark.parametrize("owner, name, size, reason", [
    ("", "x", 1, "non-empty"),
    ("a/b", "x", 1, "contains '/'"),
    ("a", "x\0y", 1, "unprintable"),
    ("a", "x" * 65, 1, "64 UTF-8 bytes"),
    ("a", "é" * 33, 1, "64 UTF-8 bytes"),
    ("a", "x", -1, ">= 0"),
    ("a", "x", 1.5, ">= 0"),
])
def test_invalid_registration(owner, name, size, reason):
    with pytest.raises(RegistrationError, match=reason):
        Registration(owner, name, size)


def test_duplicate_registration_is_refused():
    with pytest.raises(RegistrationError, match="registered twice"):
        required_size([Registration("a", "x", 1), Registration("a", "x", 1)])


def test_names_may_use_the_whole_64_bytes_and_slashes_in_the_name():
    regs = [Registration("o" * 64, "n/with/slash" + "é" * 26, 10)]
    img, store = fresh(regs)
    store.write("o" * 64, regs[0].name, b"v")
    _, again = reopen(img, regs)
    assert again.names() == [("o" * 64, regs[0].name)]
    assert again.read("o" * 64, regs[0].name) == b"v"


# -- blob operations ---------------------------------------------------------------------------


def test_fresh_store_has_every_blob_absent():
    _, store = fresh()
    assert store.names() == [("tpm", "permanent"), ("tpm", "volatile"), ("tpm", "savestate")]
    assert [store.read(o, n) for o, n in store.names()] == [None, None, None]
    assert store.check().status is CheckStatus.CLEAN
    assert store.format_version == 1


def test_write_read_overwrite_delete_and_reopen():
    img, store = fresh()
    store.write("tpm", "permanent", b"one")
    store.write("tpm", "volatile", b"")
    assert store.read("tpm", "permanent") == b"one"
    assert store.read("tpm", "volatile") == b""          # empty is not absent
    store.write("tpm", "permanent", b"two" * 1000)
    store.write("tpm", "permanent", b"three")
    store.write("tpm", "savestate", b"s")
    store.delete("tpm", "savestate")
    store.delete("tpm", "savestate")                     # deleting what is absent: no-op
    assert store.read("tpm", "savestate") is None
    _, again = reopen(img)
    assert again.read("tpm", "permanent") == b"three"
    assert again.read("tpm", "volatile") == b""
    assert again.read("tpm", "savestate") is None
    info = again.info("tpm", "permanent")
    assert info.current_header.seq == 3
    assert {s.seq for s in info.slots} == {2, 3}
    assert info.length == 5 and info.present
    assert not again.info("tpm", "savestate").present


def test_blob_of_exactly_max_size_and_one_byte_more():
    _, store = fresh()
    store.write("tpm", "volatile", b"v" * 32768)
    assert store.read("tpm", "volatile") == b"v" * 32768
    with pytest.raises(BlobTooLargeError, match="32769 bytes exceed its max size of 32768"):
        store.write("tpm", "volatile", b"v" * 32769)
    assert store.read("tpm", "volatile") == b"v" * 32768


def test_unknown_blob():
    _, store = fresh()
    with pytest.raises(UnknownBlobError, match="no blob tpm/nv in this store .*tpm/permanent"):
        store.read("tpm", "nv")
    with pytest.raises(UnknownBlobError):
        store.write("other", "permanent", b"")


def test_update_writes_only_its_own_slot_and_flushes_once():
    img, store = fresh()
    store.write("tpm", "volatile", b"a")
    e = {(x.owner, x.name): x for x in store.blobs()}
    slot_of = {}
    for key, info in e.items():
        for s in info.slots:
            slot_of[s.offset] = (key, s.number)
    before_writes, before_flushes = len(img.writes), img.flushes
    store.write("tpm", "volatile", b"b" * 5000)
    new = img.writes[before_writes:]
    assert img.flushes == before_flushes + 1
    assert new == [(e[("tpm", "volatile")].slots[1].offset, 88 + 5000)]
    assert slot_of[new[0][0]] == (("tpm", "volatile"), 1)


def test_update_cost_does_not_grow_with_the_number_of_blobs():
    def cost(n: int) -> tuple[int, int, int]:
        regs = [Registration("dev", f"b{i}", 1000) for i in range(n)]
        img = MemoryImage(required_size(regs))
        BlobStore.format(img, regs).close()
        img = img.crash("none")
        reads: list[int] = []
        orig = img.read
        img.read = lambda off, ln: (reads.append(ln), orig(off, ln))[1]  # type: ignore
        store = BlobStore.open(img, regs)
        opened = sum(reads)
        store.write("dev", "b0", b"x" * 100)
        store.write("dev", "b0", b"y" * 100)
        reads.clear()
        w0 = len(img.writes)
        store.write("dev", "b0", b"z" * 100)
        return opened, sum(reads), sum(n for _, n in img.writes[w0:])

    small, large = cost(2), cost(300)
    assert small[1:] == large[1:] == (0, 188)   # one update: no reads, one 188-byte write
    # Opening reads the superblock and the directories, not the slots.
    assert small[0] == 512 + 2 * 8192
    assert large[0] == 512 + 2 * fmt.directory_size(300, 4096)


def test_timestamps():
    clock = Clock()
    img = MemoryImage(required_size(TPM))
    store = BlobStore.format(img, TPM, clock=clock, label="x")
    created = store.superblock.created_ns
    assert all(b.created_ns == created for b in store.blobs())
    store.write("tpm", "permanent", b"1")
    t1 = clock.now
    clock.now += 5 * 10**9
    store.write("tpm", "volatile", b"2")
    t2 = clock.now
    _, again = reopen(img, clock=clock)
    assert again.info("tpm", "permanent").current_header.mtime_ns == t1
    assert again.info("tpm", "volatile").current_header.mtime_ns == t2
    assert again.superblock.created_ns == created < t1 < t2
    assert again.superblock.producer == fmt.PRODUCER
    assert again.blobs()[0].producer == fmt.PRODUCER


def test_format_starts_clean_and_destroys_old_content():
    img, store = fresh()
    secret = b"SECRET-SEED-" * 100
    store.write("tpm", "permanent", secret)
    old_uuid = store.uuid
    store2 = BlobStore.format(img, TPM)
    assert store2.uuid != old_uuid
    assert store2.read("tpm", "permanent") is None
    assert b"SECRET-SEED-" not in img.durable
    _, again = reopen(img)
    assert again.read("tpm", "permanent") is None
    assert again.check().status is CheckStatus.CLEAN


def test_slots_of_another_store_are_never_valid():
    """A slot copied from another store (same layout, other UUID) fails verification."""
    img_a, a = fresh()
    img_b, b = fresh()
    a.write("tpm", "permanent", b"from a")
    a.write("tpm", "permanent", b"from a, newer")
    off = a.info("tpm", "permanent").slots[0].offset
    b.write("tpm", "permanent", b"b's own")
    img_b.write(off, img_a.read(off, 4096))        # slot 0 of a over slot 0 of b
    img_b.flush()
    _, again = reopen(img_b)
    info = again.info("tpm", "permanent")
    assert info.slots[0].state is SlotState.DAMAGED
    assert "UUID" in info.slots[0].problem
    assert again.read("tpm", "permanent") is None  # slot 1: the initial "absent" record


# -- opening: unformatted, damaged, truncated, incompatible -----------------------------------


def test_all_zero_image_is_not_formatted():
    with pytest.raises(NotFormattedError, match="not formatted"):
        BlobStore.open(MemoryImage(required_size(TPM)), TPM)
    with pytest.raises(NotFormattedError):
        BlobStore.open(MemoryImage(0))
    with pytest.raises(NotFormattedError):
        BlobStore.open(MemoryImage(100))


def test_garbage_is_damaged_not_unformatted():
    garbage = hashlib.sha256(b"x").digest() * 10000
    with pytest.raises(DamagedError, match="not a blobstore") as exc:
        BlobStore.open(MemoryImage(data=garbage), TPM)
    assert not isinstance(exc.value, NotFormattedError)
    with pytest.raises(DamagedError, match="only 100 bytes"):
        BlobStore.open(MemoryImage(data=b"\1" * 100))


def test_zero_superblock_with_data_behind_it_is_damaged():
    """Like an ext4 image (its first KiB is zero): formatting would destroy data."""
    data = bytearray(required_size(TPM))
    data[200_000] = 1
    with pytest.raises(DamagedError, match="non-zero data at offset 200000"):
        BlobStore.open(MemoryImage(data=bytes(data)), TPM)
    # Without registrations the first MiB is what counts.
    data = bytearray(2 << 20)
    data[(1 << 20) - 1] = 1
    with pytest.raises(DamagedError, match="offset 1048575"):
        BlobStore.open(MemoryImage(data=bytes(data)))
    data[(1 << 20) - 1] = 0
    data[(1 << 20)] = 1
    with pytest.raises(NotFormattedError, match="first 1048576 bytes"):
        BlobStore.open(MemoryImage(data=bytes(data)))


def test_truncated_images():
    img, store = fresh()
    store.write("tpm", "savestate", b"last blob")
    full = img.durable
    for cut in (len(full) - 1, len(full) - 4096, 20480, 4096 + 8192 + 100):
        with pytest.raises(TruncatedError, match="truncated"):
            BlobStore.open(MemoryImage(data=full[:cut]), TPM)
    with pytest.raises(TruncatedError, match="shorter than a superblock"):
        BlobStore.open(MemoryImage(data=full[:300]), TPM)


def patch_superblock(img: MemoryImage, offset: int, value: bytes) -> None:
    raw = bytearray(img.read(0, 512))
    raw[offset:offset + len(value)] = value
    raw[480:] = hashlib.sha256(bytes(raw[:480])).digest()
    img.write(0, bytes(raw))
    img.flush()


def test_unknown_incompatible_feature_is_refused_and_compatible_one_is_ignored():
    img, store = fresh()
    store.write("tpm", "permanent", b"p")
    patch_superblock(img, 20, struct.pack(">Q", 1 << 40))          # compatible
    _, again = reopen(img)
    assert again.read("tpm", "permanent") == b"p"
    patch_superblock(img, 12, struct.pack(">Q", 1))                # incompatible
    with pytest.raises(IncompatibleError, match="incompatible features 0x1"):
        reopen(img)
    patch_superblock(img, 8, struct.pack(">I", 2))
    with pytest.raises(IncompatibleError, match="version 2"):
        reopen(img)


def test_label_must_match_when_given():
    img, store = fresh(label="tpm0")
    assert reopen(img, label="tpm0")[1].superblock.label == "tpm0"
    assert reopen(img)[1].superblock.label == "tpm0"
    unlabeled, _ = fresh()
    assert reopen(unlabeled, label="any")[1].superblock.label == ""
    with pytest.raises(RegistrationError, match="holds the blobstore 'tpm0', not 'tpm1'"):
        reopen(img, label="tpm1")


def flip(img, offset: int) -> None:
    """Invert one byte of the image (writing a constant would be a no-op when the byte already
    holds it, e.g. 1 time in 256 inside a timestamp)."""
    img.write(offset, bytes([img.read(offset, 1)[0] ^ 0xFF]))


def test_one_damaged_directory_copy_falls_back_to_the_other():
    img, store = fresh()
    store.write("tpm", "permanent", b"p")
    a, b = store.superblock.directory_offsets
    flip(img, a + 100)
    img.flush()
    img2, again = reopen(img)
    assert again.read("tpm", "permanent") == b"p"
    assert again.directory_copy == 1
    report = again.check()
    assert report.status is CheckStatus.OLD_COPY_USED
    assert "directory copy A is damaged (checksum mismatch); copy B" in report.problems[0]
    assert again.check(repair=True).repaired == ["directory copy A rewritten"]
    assert again.check().status is CheckStatus.CLEAN
    flip(img2, b + 100)                            # now B is the damaged one, A repaired
    img2.flush()
    _, third = reopen(img2)
    assert third.read("tpm", "permanent") == b"p"
    assert third.directory_copy == 0


def test_both_directory_copies_damaged():
    img, store = fresh()
    for off in store.superblock.directory_offsets:
        flip(img, off + 100)
    img.flush()
    with pytest.raises(DamagedError, match="both copies of the blobstore directory"):
        reopen(img)


# -- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", [0, 1])
@pytest.mark.parametrize("where", [0, 30, 60, 88, 88 + 499])
def test_bit_flip_in_a_slot_uses_the_other_copy_and_check_reports_it(slot, where):
    img, store = fresh()
    store.write("tpm", "permanent", b"A" * 500)      # slot 0, seq 1
    store.write("tpm", "permanent", b"B" * 500)      # slot 1, seq 2
    off = store.info("tpm", "permanent").slots[slot].offset
    img.write(off + where, bytes([img.read(off + where, 1)[0] ^ 4]))
    img.flush()
    img2, again = reopen(img)
    expected = b"A" * 500 if slot == 1 else b"B" * 500
    assert again.read("tpm", "permanent") == expected
    report = again.check()
    assert report.status is CheckStatus.OLD_COPY_USED
    assert len(report.problems) == 1
    other = 1 - slot
    assert report.problems[0].startswith(
        f"blob tpm/permanent: slot {slot} is damaged (")
    assert f"the copy in slot {other} (sequence {other + 1}) is used" in report.problems[0]
    fixed = again.check(repair=True)
    assert fixed.repaired == [f"blob tpm/permanent: slot {slot} rewritten"]
    _, third = reopen(img2)
    assert third.check().status is CheckStatus.CLEAN
    assert third.read("tpm", "permanent") == expected
    info = third.info("tpm", "permanent")
    assert all(s.state is SlotState.VALID for s in info.slots)


def test_bit_flip_while_open_is_caught_on_the_next_read():
    img, store = fresh()
    store.write("tpm", "permanent", b"A")
    store.write("tpm", "permanent", b"B")
    assert store.read("tpm", "permanent") == b"B"
    off = store.info("tpm", "permanent").slots[1].offset
    img.write(off + 88, b"X")
    assert store.read("tpm", "permanent") == b"A"


def test_blob_with_no_valid_copy_is_damaged_until_rewritten():
    img, store = fresh()
    store.write("tpm", "permanent", b"A")
    for s in store.info("tpm", "permanent").slots:
        flip(img, s.offset + 60)                   # in the timestamp
    img.flush()
    img2, again = reopen(img)
    assert again.read("tpm", "volatile") is None          # other blobs unaffected
    with pytest.raises(DamagedError, match="blob tpm/permanent is damaged: no valid copy"):
        again.read("tpm", "permanent")
    report = again.check(repair=True)
    assert report.status is CheckStatus.DAMAGED
    assert report.repaired == []
    assert "blob tpm/permanent: no valid copy (slot 0: damaged, checksum mismatch" \
        in report.problems[0]
    again.write("tpm", "permanent", b"fresh")
    assert again.read("tpm", "permanent") == b"fresh"
    _, third = reopen(img2)
    assert third.read("tpm", "permanent") == b"fresh"


def test_both_slots_blank_is_damage():
    img, store = fresh()
    for s in store.info("tpm", "volatile").slots:
        img.write(s.offset, bytes(88))
    img.flush()
    _, again = reopen(img)
    assert again.check().status is CheckStatus.DAMAGED
    assert "slot 0: blank; slot 1: blank" in again.check().problems[0]


def test_sequence_numbers_wrap():
    img, store = fresh()
    store.write("tpm", "permanent", b"x")
    info = store.info("tpm", "permanent")
    top = (1 << 64) - 1
    for number, seq, data in ((0, top, b"newest"), (1, top - 1, b"older")):
        h = fmt.SlotHeader(uuid=store.superblock.uuid, entry_index=0, slot_number=number,
                           seq=seq, length=len(data), mtime_ns=1)
        img.write(info.slots[number].offset, fmt.encode_slot(h, data))
    img.flush()
    img2, again = reopen(img)
    assert again.read("tpm", "permanent") == b"newest"
    again.write("tpm", "permanent", b"after wrap")
    assert again.info("tpm", "permanent").current_header.seq == 0
    assert again.info("tpm", "permanent").current == 1
    _, third = reopen(img2)
    assert third.read("tpm", "permanent") == b"after wrap"
    third.write("tpm", "permanent", b"again")
    assert third.info("tpm", "permanent").current_header.seq == 1


# -- I/O errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["fail_writes", "fail_flushes"])
def test_failed_update_keeps_the_previous_copy(fault):
    img, store = fresh()
    store.write("tpm", "permanent", b"old")
    setattr(img, fault, 1)
    with pytest.raises(ImageError, match="injected"):
        store.write("tpm", "permanent", b"new")
    assert store.read("tpm", "permanent") == b"old"
    # The failed write may or may not be on the medium; after a crash either copy is fine,
    # but the acknowledged one is never lost.
    assert reopen(img)[1].read("tpm", "permanent") in (b"old", b"new")
    store.write("tpm", "permanent", b"retry")
    assert store.read("tpm", "permanent") == b"retry"
    assert reopen(img)[1].read("tpm", "permanent") == b"retry"


def test_read_error_is_an_image_error():
    img, store = fresh()
    store.write("tpm", "permanent", b"old")
    img2 = img.crash("none")
    img2.fail_reads = 1
    with pytest.raises(ImageError, match="injected read error"):
        BlobStore.open(img2, TPM)


# -- registration changes ----------------------------------------------------------------------


def test_new_registration_is_added_when_the_image_has_room():
    img, store = fresh(extra=8192)
    store.write("tpm", "permanent", b"p")
    regs = TPM + [Registration("vdev", "nvram", 4000)]
    img2, again = reopen(img, regs)
    assert again.read("tpm", "permanent") == b"p"
    assert again.read("vdev", "nvram") is None
    again.write("vdev", "nvram", b"n")
    _, third = reopen(img2, regs)
    assert third.read("vdev", "nvram") == b"n"
    assert third.check().status is CheckStatus.CLEAN
    assert third.directory_generation == 2


def test_new_registration_without_room_names_both_sizes_and_changes_nothing():
    img, store = fresh()
    store.write("tpm", "permanent", b"p")
    regs = TPM + [Registration("vdev", "nvram", 4000)]
    img2 = img.crash("none")
    before = img2.durable
    need = required_size(regs)
    with pytest.raises(ImageTooSmallError) as exc:
        BlobStore.open(img2, regs)
    assert (exc.value.required, exc.value.actual) == (need, need - 8192)
    assert "vdev/nvram is new" in str(exc.value)
    assert img2.durable == before
    assert BlobStore.open(img2, TPM).required_size(regs) == need
    img2.resize(need)
    grown = BlobStore.open(img2, regs)
    assert grown.read("tpm", "permanent") == b"p"
    assert grown.end == need


def test_grown_max_size_within_the_slot_needs_no_move():
    regs = [Registration("d", "x", 1000)]
    img, store = fresh(regs)
    store.write("d", "x", b"1" * 1000)
    bigger = [Registration("d", "x", 4096 - 88)]
    img2, again = reopen(img, bigger)
    assert again.end == store.end
    again.write("d", "x", b"2" * (4096 - 88))
    assert reopen(img2, bigger)[1].read("d", "x") == b"2" * (4096 - 88)
    # The directory remembers the new maximum for users without registrations (the tool).
    assert reopen(img2, [])[1].info("d", "x").max_size == 4096 - 88


def test_grown_max_size_moves_the_blob_and_keeps_its_data():
    regs = [Registration("d", "x", 1000), Registration("d", "y", 10)]
    img, store = fresh(regs, extra=5 * 8192)
    store.write("d", "x", b"keep me")
    mtime = store.info("d", "x").current_header.mtime_ns
    store.write("d", "y", b"y")
    bigger = [Registration("d", "x", 8000), Registration("d", "y", 10)]
    img2, again = reopen(img, bigger)
    assert again.read("d", "x") == b"keep me"
    info = again.info("d", "x")
    assert info.slots[0].offset >= store.end
    assert info.current_header.mtime_ns == mtime
    again.write("d", "x", b"z" * 8000)
    _, third = reopen(img2, bigger)
    assert third.read("d", "x") == b"z" * 8000
    assert third.read("d", "y") == b"y"
    assert third.check().status is CheckStatus.CLEAN


def test_grown_max_size_without_room():
    regs = [Registration("d", "x", 1000)]
    img, store = fresh(regs)
    store.write("d", "x", b"keep me")
    with pytest.raises(ImageTooSmallError, match="d/x grew to 9000 bytes.*format the store"):
        reopen(img, [Registration("d", "x", 9000)])
    assert reopen(img, regs)[1].read("d", "x") == b"keep me"


def test_shrunk_registration_limits_writes_but_keeps_the_data():
    regs = [Registration("d", "x", 1000)]
    img, store = fresh(regs)
    store.write("d", "x", b"q" * 900)
    img2, again = reopen(img, [Registration("d", "x", 100)])
    assert again.read("d", "x") == b"q" * 900
    with pytest.raises(BlobTooLargeError):
        again.write("d", "x", b"q" * 101)


def test_unregistered_blobs_are_kept_and_listed():
    img, store = fresh()
    store.write("tpm", "savestate", b"s")
    img2, again = reopen(img, [Registration("tpm", "permanent", 65536)])
    infos = {(b.owner, b.name): b for b in again.blobs()}
    assert infos[("tpm", "permanent")].registered
    assert not infos[("tpm", "savestate")].registered
    assert again.read("tpm", "savestate") == b"s"
    assert reopen(img2)[1].read("tpm", "savestate") == b"s"


def test_directory_full():
    regs = [Registration("d", f"b{i}", 0) for i in range(31)]
    img, _ = fresh(regs, extra=1 << 16)
    with pytest.raises(RegistrationError, match="holds 31 blobs; 32 would not fit"):
        reopen(img, regs + [Registration("d", "one more", 0)])
