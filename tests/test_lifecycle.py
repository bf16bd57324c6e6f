"""In-process lifecycle tests: TPM Reset / Restart / Resume (Part 1 §12.2, Part 3 §9.3-9.4),
the savestate blob, orderly vs unorderly shutdown, and persistence through storage."""

from __future__ import annotations

import hashlib


from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, RC, RH
from swtpm_py.tpm.state import BlobKind

from tpmcmd import (cmd, power_on, pcr_extend, pcr_read, pcr_values, rc, read_clock_info, shutdown,
                    startup)


power_cycle = power_on


def clock_info(tpm: Tpm) -> dict:
    resp = tpm.execute(cmd(CC.ReadClock))
    assert rc(resp) == 0
    return read_clock_info(resp)


def extended(value: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(value + digest).digest()


def test_commands_before_startup_are_initialize(platform):
    tpm = power_cycle(platform)
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\x00\x08"))) == RC.INITIALIZE
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(startup())) == RC.INITIALIZE


def test_first_startup_counts_one_reset_and_is_orderly(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    info = clock_info(tpm)
    assert info["reset_count"] == 1 and info["restart_count"] == 0
    assert tpm.perm.failed_tries == 0  # manufacture counts as orderly


def test_tpm_reset_after_unorderly_power_loss(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    d = b"\x11" * 32
    assert rc(tpm.execute(pcr_extend(0, ALG.SHA256, d))) == 0
    tpm = power_cycle(platform)  # no Shutdown: unorderly
    assert rc(tpm.execute(startup())) == 0
    info = clock_info(tpm)
    assert info["reset_count"] == 2 and info["safe"] == 0
    assert pcr_values(tpm.execute(pcr_read(ALG.SHA256, [0]))) == [b"\x00" * 32]
    # Like libtpms (USE_DA_USED), an unorderly shutdown with no DA-protected authorization
    # since the last orderly one does not count as an authorization failure.
    assert tpm.perm.failed_tries == 0


def test_startup_state_needs_shutdown_state(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    tpm.execute(shutdown(clear=True))
    tpm = power_cycle(platform)
    # Part 3 §9.3: TPM_RC_VALUE on parameter 1.
    assert rc(tpm.execute(startup(clear=False))) == RC.VALUE | 0x140
    assert rc(tpm.execute(startup(clear=True))) == 0


def test_tpm_resume_restores_saved_pcrs(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    d = b"\x22" * 32
    for pcr in (0, 15, 16, 23):
        assert rc(tpm.execute(pcr_extend(pcr, ALG.SHA256, d))) == 0
    assert rc(tpm.execute(shutdown(clear=False))) == 0
    assert platform.storage.load(BlobKind.SAVESTATE) is not None
    tpm = power_cycle(platform)
    assert rc(tpm.execute(startup(clear=False))) == 0
    values = pcr_values(tpm.execute(pcr_read(ALG.SHA256, [0, 15, 16, 23])))
    ext = extended(b"\x00" * 32, d)
    # PCR 0-15 have the stateSave attribute; 16 and 23 do not (PC Client profile).
    assert values == [ext, ext, b"\x00" * 32, b"\x00" * 32]
    info = clock_info(tpm)
    assert info["reset_count"] == 1 and info["restart_count"] == 1 and info["safe"] == 1
    # The savestate is consumed: a second resume is impossible.
    assert platform.storage.load(BlobKind.SAVESTATE) is None


def test_tpm_restart_resets_pcrs_keeps_reset_count(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    tpm.execute(pcr_extend(0, ALG.SHA256, b"\x33" * 32))
    tpm.execute(shutdown(clear=False))
    tpm = power_cycle(platform)
    assert rc(tpm.execute(startup(clear=True))) == 0
    assert pcr_values(tpm.execute(pcr_read(ALG.SHA256, [0]))) == [b"\x00" * 32]
    info = clock_info(tpm)
    # Part 1 §12.2.3: TPM Restart increments restartCount, not resetCount.
    assert info["reset_count"] == 1 and info["restart_count"] == 1


def test_drtm_pcrs_start_at_all_ones(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    values = pcr_values(tpm.execute(pcr_read(ALG.SHA256, [16, 17, 22, 23])))
    assert values == [b"\x00" * 32, b"\xff" * 32, b"\xff" * 32, b"\x00" * 32]


def test_clock_continues_across_power_cycles(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    platform.clock.now += 5000
    tpm.execute(shutdown())  # an NV command: Clock is written
    tpm = power_cycle(platform)
    platform.clock.now += 250
    tpm.execute(startup())
    info = clock_info(tpm)
    assert info["clock"] >= 5250 and info["time"] == 250


def test_command_after_shutdown_cancels_orderly(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    tpm.execute(shutdown(clear=False))
    # Startup again in the same power cycle is refused; the state stays shut down.
    assert rc(tpm.execute(startup())) == RC.INITIALIZE


def test_storage_failure_enters_failure_mode_and_keeps_committed_state(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    committed = platform.storage.load(BlobKind.PERMANENT)
    platform.storage.fail_with = OSError("disk on fire")
    assert rc(tpm.execute(shutdown())) == RC.FAILURE
    assert platform.storage.load(BlobKind.PERMANENT) == committed
    # Failure mode: everything but GetTestResult / GetCapability answers TPM_RC_FAILURE.
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\x00\x08"))) == RC.FAILURE
    platform.storage.fail_with = None
    tpm = power_cycle(platform)  # the stored state is intact and usable
    assert rc(tpm.execute(startup())) == 0


def test_unreadable_permanent_state_is_failure_mode_not_reformat(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    good = platform.storage.load(BlobKind.PERMANENT)
    platform.storage.blobs[BlobKind.PERMANENT] = good[:-1] + bytes([good[-1] ^ 1])
    tpm = power_cycle(platform)
    assert tpm.failure is not None
    assert rc(tpm.execute(startup())) == RC.FAILURE
    # Nothing was overwritten: the damaged blob is still there for inspection.
    assert platform.storage.load(BlobKind.PERMANENT) != good


def test_volatile_blob_resumes_running_tpm(platform):
    tpm = power_cycle(platform)
    tpm.execute(startup())
    tpm.execute(pcr_extend(16, ALG.SHA256, b"\x44" * 32))
    platform.storage.store(BlobKind.VOLATILE, tpm.volatile_blob())
    tpm2 = Tpm(platform)
    tpm2.power_on(delete_volatile=True)
    # Already started: no Startup needed, PCR 16 intact, volatile blob consumed.
    assert pcr_values(tpm2.execute(pcr_read(ALG.SHA256, [16]))) == [
        extended(b"\x00" * 32, b"\x44" * 32)]
    assert platform.storage.load(BlobKind.VOLATILE) is None


def test_seeds_survive_and_differ_between_tpms(platform):
    tpm = power_cycle(platform)
    seeds = (tpm.perm.eps, tpm.perm.sps, tpm.perm.pps)
    assert len(set(seeds)) == 3 and all(len(s) == 64 for s in seeds)
    assert power_cycle(platform).perm.eps == tpm.perm.eps
    other = Tpm(Platform(storage=MemoryStorage()))
    other.power_on()
    assert other.perm.eps != tpm.perm.eps


def test_hash_ticket_uses_hierarchy_proof(platform):
    import hmac
    import struct
    tpm = power_cycle(platform)
    tpm.execute(startup())
    data = b"abc"
    body = struct.pack(">H", len(data)) + data + struct.pack(">HI", ALG.SHA256, RH.OWNER)
    resp = tpm.execute(cmd(CC.Hash, body))
    assert rc(resp) == 0
    digest = resp[12:44]
    assert digest == hashlib.sha256(data).digest()
    tag, hierarchy, size = struct.unpack_from(">HIH", resp, 44)
    mac = resp[52:52 + size]
    assert (tag, hierarchy) == (0x8024, RH.OWNER)
    # Part 4 TicketComputeHashCheck(): HMAC(proof, TPM_ST_HASHCHECK || hashAlg || digest).
    assert mac == hmac.new(tpm.perm.sh_proof, b"\x80\x24\x00\x0b" + digest, "sha512").digest()
