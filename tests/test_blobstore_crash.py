"""Crash safety: a power cut at any byte of an update, with any subset of the unflushed sectors
reaching the medium, leaves the old or the new blob -- never damage, never a false "valid" --
and an acknowledged update is never lost. Also for deletions, first writes, registration
changes and format itself."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blobstore.format import SLOT_HEADER_SIZE, DamagedError, NotFormattedError
from blobstore.image.base import ImageError
from blobstore.memory import MemoryImage, PowerFailure
from blobstore.store import BlobStore, CheckStatus, Registration, SlotState, required_size

SECTOR = 512          # the simulated medium's sector: finer than the store's 4 KiB alignment
REGS = [Registration("dev", "a", 6000), Registration("dev", "b", 6000),
        Registration("dev", "c", 100)]

OLDER = b"older " * 700      # in the slot the update overwrites
OLD = b"old! " * 500         # the current copy
NEW = b"NEW: " * 1100        # the update (5500 bytes + header: 11 media sectors)


def base_image() -> MemoryImage:
    """A store where dev/a has OLDER in slot 0 (seq 1) and OLD in slot 1 (seq 2), so the next
    update overwrites a valid older copy -- the hardest case for "never a mixture"."""
    img = MemoryImage(required_size(REGS), sector_size=SECTOR)
    store = BlobStore.format(img, REGS)
    store.write("dev", "a", OLDER)
    store.write("dev", "a", OLD)
    store.write("dev", "b", b"bystander")
    return img.crash("none")


BASE = base_image().durable


def run_update(cut: int, data: bytes | None, keep="all") -> tuple[bool, MemoryImage]:
    """Open the base store, cut the power after ``cut`` bytes of the update (``data``, or a
    deletion when None), and return (acknowledged, the image after restart)."""
    img = MemoryImage(data=BASE, sector_size=SECTOR)
    store = BlobStore.open(img, REGS)
    store.read("dev", "a")           # resolve before arming, so only the update is cut
    img.cut_power_after(cut)
    try:
        if data is None:
            store.delete("dev", "a")
        else:
            store.write("dev", "a", data)
        acknowledged = True
    except PowerFailure:
        acknowledged = False
    return acknowledged, img.crash(keep)


def assert_old_or_new(img: MemoryImage, acknowledged: bool, new: bytes | None) -> None:
    """After restart: dev/a is OLD or ``new`` (``new`` if acknowledged), nothing is damaged,
    and every slot reported valid holds exactly a version that was really written."""
    store = BlobStore.open(img, REGS)
    got = store.read("dev", "a")
    assert got in (OLD, new)
    if acknowledged:
        assert got == new
    report = store.check()
    assert report.status in (CheckStatus.CLEAN, CheckStatus.OLD_COPY_USED), report.problems
    assert store.read("dev", "b") == b"bystander"
    assert store.read("dev", "c") is None
    info = store.info("dev", "a")
    written = {1: OLDER, 2: OLD, 3: new}
    for s in info.slots:
        if s.state is SlotState.VALID:
            h = s.header
            data = img.read(s.offset + SLOT_HEADER_SIZE, h.length)
            assert (None if h.deleted else data) == written[h.seq]
    # The store stays usable: the next update succeeds and survives a restart.
    store.write("dev", "a", b"after")
    assert BlobStore.open(img.crash("none"), REGS).read("dev", "a") == b"after"


UPDATE_SIZE = SLOT_HEADER_SIZE + len(NEW)


@pytest.mark.parametrize("cut", sorted(set(range(0, UPDATE_SIZE + 1, SECTOR))
                                       | {1, 55, 56, 87, 88, 89, UPDATE_SIZE - 1, UPDATE_SIZE}))
@pytest.mark.parametrize("keep", ["all", "none"])
def test_torn_update_at_every_sector_boundary(cut, keep):
    acknowledged, img = run_update(cut, NEW, keep)
    assert acknowledged is False         # the flush never happened
    assert_old_or_new(img, acknowledged, NEW)


def test_completed_update_is_never_lost():
    acknowledged, img = run_update(UPDATE_SIZE + 1, NEW, "none")
    assert acknowledged
    assert_old_or_new(img, acknowledged, NEW)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, UPDATE_SIZE + 1), kept=st.sets(st.integers(0, 100)),
       delete=st.booleans())
def test_torn_update_at_random_bytes_with_reordered_sectors(cut, kept, delete):
    """Any cut, and any subset of the written sectors reaching the medium (disks reorder)."""
    data = None if delete else NEW
    acknowledged, img = run_update(cut, data, keep=lambda s: s % 101 in kept)
    assert_old_or_new(img, acknowledged, data)


@pytest.mark.parametrize("cut", range(0, SLOT_HEADER_SIZE + 101, 8))
def test_torn_first_write_reads_as_absent_or_new(cut):
    img = MemoryImage(data=BASE, sector_size=SECTOR)
    store = BlobStore.open(img, REGS)
    img.cut_power_after(cut)
    with pytest.raises(PowerFailure):
        store.write("dev", "c", b"first" * 20)
    after = BlobStore.open(img.crash("all"), REGS)
    assert after.read("dev", "c") in (None, b"first" * 20)
    assert after.check().status is not CheckStatus.DAMAGED


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.binary(max_size=100),
                              st.integers(1, 40)), min_size=1, max_size=12),
       cut=st.integers(0, 20000), kept=st.sets(st.integers(0, 50)))
def test_power_cut_during_a_run_of_updates(ops, cut, kept):
    """A sequence of updates to several blobs with the power cut somewhere: every blob holds
    its last acknowledged value, or the value being written when the power failed."""
    img = MemoryImage(data=BASE, sector_size=SECTOR)
    store = BlobStore.open(img, REGS)
    for name in "abc":
        store.read("dev", name)
    acked = {"a": OLD, "b": b"bystander", "c": None}
    in_flight: tuple[str, bytes] | None = None
    img.cut_power_after(cut)
    try:
        for name, payload, repeat in ops:
            value = (payload * repeat)[:100]
            in_flight = (name, value)
            store.write("dev", name, value)
            acked[name] = value
            in_flight = None
    except PowerFailure:
        pass
    after = BlobStore.open(img.crash(lambda s: s % 51 in kept), REGS)
    assert after.check().status is not CheckStatus.DAMAGED
    for name in "abc":
        allowed = {acked[name]}
        if in_flight and in_flight[0] == name:
            allowed.add(in_flight[1])
        assert after.read("dev", name) in allowed


# -- registration changes and format -------------------------------------------------------


def test_torn_registration_change_leaves_the_old_or_the_new_directory():
    regs2 = REGS + [Registration("dev", "d", 3000)]
    base = MemoryImage(data=BASE + bytes(required_size(regs2) - len(BASE)), sector_size=SECTOR)
    total = 0
    probe = MemoryImage(data=base.durable, sector_size=SECTOR)
    BlobStore.open(probe, regs2)
    total = sum(n for _, n in probe.writes)
    assert total > 0
    for cut in list(range(0, total + 1, SECTOR)) + [total + 1]:
        for keep in ("all", "none"):
            img = MemoryImage(data=base.durable, sector_size=SECTOR)
            img.cut_power_after(cut)
            try:
                BlobStore.open(img, regs2)
            except PowerFailure:
                pass
            after_img = img.crash(keep)
            old_view = BlobStore.open(after_img, [])
            assert old_view.read("dev", "a") == OLD
            assert set(old_view.names()) in ({("dev", n) for n in "abc"},
                                              {("dev", n) for n in "abcd"})
            assert old_view.check().status is not CheckStatus.DAMAGED
            new_view = BlobStore.open(after_img, regs2)
            assert new_view.read("dev", "d") is None
            assert new_view.read("dev", "a") == OLD
            new_view.write("dev", "d", b"d")
            assert new_view.check().status is CheckStatus.CLEAN


def test_torn_move_to_bigger_slots_keeps_the_blob():
    bigger = [Registration("dev", "a", 9000), REGS[1], REGS[2]]
    base = BASE + bytes(2 * 12288)
    probe = MemoryImage(data=base, sector_size=SECTOR)
    BlobStore.open(probe, bigger)
    total = sum(n for _, n in probe.writes)
    for cut in range(0, total + 1, SECTOR // 2):
        img = MemoryImage(data=base, sector_size=SECTOR)
        img.cut_power_after(cut)
        try:
            BlobStore.open(img, bigger)
        except PowerFailure:
            pass
        for keep in ("all", "none"):
            after = BlobStore.open(img.crash(keep), bigger)
            assert after.read("dev", "a") == OLD
            assert after.check().status is CheckStatus.CLEAN


def test_torn_format_leaves_the_old_store_or_no_store_or_the_new_one():
    probe = MemoryImage(data=BASE, sector_size=SECTOR)
    BlobStore.format(probe, REGS)
    total = sum(n for _, n in probe.writes)
    outcomes = set()
    for cut in sorted(set(range(0, total + 1, 4096)) | {1, 511, 512, 513, total - 1, total}):
        img = MemoryImage(data=BASE, sector_size=SECTOR)
        img.cut_power_after(cut)
        with pytest.raises(PowerFailure):
            BlobStore.format(img, REGS)
        for keep in ("all", "none"):
            try:
                store = BlobStore.open(img.crash(keep), REGS)
            except NotFormattedError:
                outcomes.add("unformatted")
                continue
            except DamagedError as e:
                # The old superblock is zeroed first and the new one written last, so an
                # interrupted format shows as a missing or torn superblock -- never as an old
                # superblock in front of new directories or slots.
                assert "superblock" in str(e) or "not a blobstore" in str(e), e
                assert "directory" not in str(e), e
                outcomes.add("interrupted")
                continue
            assert store.check().status is CheckStatus.CLEAN
            a = store.read("dev", "a")
            if a == OLD:
                outcomes.add("old")
                assert store.read("dev", "b") == b"bystander"
            else:
                outcomes.add("new")
                assert a is None and store.read("dev", "b") is None
    assert outcomes == {"old", "interrupted", "new"}


def test_the_fault_model_of_the_memory_image():
    """What the tests above rely on: unflushed writes may be lost, a cut tears a write at the
    exact byte, flushed data survives, and I/O errors are ImageErrors."""
    img = MemoryImage(4096, sector_size=SECTOR)
    img.write(0, b"a" * 600)
    img.flush()
    img.write(1000, b"b" * 100)
    assert img.read(1000, 100) == b"b" * 100                  # reads see the cache
    assert img.dirty_sectors == {1, 2}                        # bytes 1000..1099
    assert img.crash("none").read(1000, 100) == bytes(100)   # lost unflushed write
    assert img.crash("all").read(1000, 100) == b"b" * 100
    assert img.crash([]).read(0, 600) == b"a" * 600           # flushed data survives
    img.cut_power_after(10)
    with pytest.raises(PowerFailure):
        img.write(2000, b"c" * 50)
    with pytest.raises(PowerFailure):
        img.flush()
    after = img.crash("all")
    assert after.read(2000, 50) == b"c" * 10 + bytes(40)
    after.fail_flushes = 1
    with pytest.raises(ImageError, match="injected flush error"):
        after.flush()
    after.flush()
