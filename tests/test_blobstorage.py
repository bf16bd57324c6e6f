"""The TPM's state through a blobstore: registration sizes, persistence, failure mode."""

from __future__ import annotations

from blobstore.memory import MemoryImage
from blobstore.store import BlobStore, required_size

from swtpm_py.blobstorage import BlobstoreStorage, blob_max_sizes, registrations
from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, RC
from swtpm_py.tpm.properties import CAPACITY, Capacity
from swtpm_py.tpm.state import BlobKind

from tpmcmd import cmd, pcr_extend, pcr_read, pcr_values, rc, read_clock_info, shutdown, startup


def make_store() -> BlobstoreStorage:
    regs = registrations()
    image = MemoryImage(required_size(regs))
    return BlobstoreStorage(BlobStore.format(image, regs))


def reopen(storage: BlobstoreStorage) -> BlobstoreStorage:
    return BlobstoreStorage(BlobStore.open(storage.blobstore.image, registrations()))


def test_sizes_grow_with_capacity():
    small = blob_max_sizes(Capacity(nv_bytes=4096))
    big = blob_max_sizes(Capacity(nv_bytes=1 << 20))
    assert big[BlobKind.PERMANENT] > small[BlobKind.PERMANENT]
    assert {r.name for r in registrations()} == {"permanent", "volatile", "savestate"}


def test_state_survives_reopen_and_resume():
    storage = make_store()
    tpm = Tpm(Platform(storage=storage))
    tpm.power_on()
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(pcr_extend(1, ALG.SHA256, b"\x05" * 32))) == 0
    assert rc(tpm.execute(shutdown(clear=False))) == 0
    value = pcr_values(tpm.execute(pcr_read(ALG.SHA256, [1])))
    tpm2 = Tpm(Platform(storage=reopen(storage)))
    tpm2.power_on()
    assert rc(tpm2.execute(startup(clear=False))) == 0
    assert pcr_values(tpm2.execute(pcr_read(ALG.SHA256, [1]))) == value
    info = read_clock_info(tpm2.execute(cmd(CC.ReadClock)))
    assert info["reset_count"] == 1 and info["restart_count"] == 1


def test_blobs_fit_their_registration_at_capacity():
    """A permanent blob at the largest NV use the capacity allows still fits its slot."""
    tpm = Tpm(Platform(storage=make_store()))
    tpm.power_on()
    tpm.execute(startup())
    # Fill persistent data with the most bytes NV may hold, as hex-encoded JSON would.
    tpm.perm.audit_commands = list(range(CAPACITY.nv_bytes // 8))
    assert rc(tpm.execute(shutdown())) == 0
    assert len(tpm.permanent_blob()) <= blob_max_sizes()[BlobKind.PERMANENT]


def test_store_failure_is_failure_mode_and_old_blob_stays():
    storage = make_store()
    tpm = Tpm(Platform(storage=storage))
    tpm.power_on()
    tpm.execute(startup())
    before = storage.load(BlobKind.PERMANENT)
    storage.blobstore.image.fail_writes = 1  # the next write raises an I/O error
    assert rc(tpm.execute(shutdown())) == RC.FAILURE
    assert tpm.failure is not None
    assert reopen(storage).load(BlobKind.PERMANENT) == before
