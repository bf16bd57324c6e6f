"""The TPM-TIS FIFO register model (swtpm_py.tis) bit by bit, and the example driver through
TIS, CRB and the socket (REFERENCE.md §4; PTP §6.3, §6.5; QEMU 7.2's tpm_tis_common.c where
the specification leaves freedom). tests/test_tis_qtest.py replays sequences against QEMU."""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from pathlib import Path

import pytest

from emulator import Emulator
from tpmcmd import (FakeClock, cmd, pcr_extend, pcr_read, pcr_values, pw_session, rc, startup,
                    with_auth)

from swtpm_py.crb import CrbDevice
from swtpm_py.storage import DirStorage
from swtpm_py.tis import Access, Int, Reg, Sts, TisDevice
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, RC, RH

REPO = Path(__file__).resolve().parent.parent


def load_example(name: str):
    """Import examples/NAME.py (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = load_example("tis_driver")

GET_RANDOM = cmd(CC.GetRandom, struct.pack(">H", 8))
#: A 12-byte command (GetRandom(8)); its response is 10 + 2 + 8 bytes.
GET_RANDOM_RSP_LEN = 20
FAMILY = 0x04000000
ALL_ONES = 0xFFFFFFFF


def new_tpm(storage: MemoryStorage | None = None) -> Tpm:
    tpm = Tpm(Platform(storage=storage or MemoryStorage(), clock=FakeClock()))
    tpm.power_on()
    return tpm


@pytest.fixture
def dev() -> TisDevice:
    """A TIS device over a powered-on TPM after Startup(CLEAR) (sent through the core)."""
    tpm = new_tpm()
    assert rc(tpm.execute(startup())) == 0
    return TisDevice(tpm)


def base(locality: int) -> int:
    return locality << 12


def read(dev, locality: int, reg: int, size: int = 4) -> int:
    return dev.mmio_read(base(locality) + reg, size)


def write(dev, locality: int, reg: int, value: int, size: int = 1) -> None:
    dev.mmio_write(base(locality) + reg, size, value)


def access(dev, locality: int) -> int:
    return read(dev, locality, Reg.ACCESS, 1)


def sts(dev, locality: int) -> int:
    return read(dev, locality, Reg.STS)


def request(dev, locality: int) -> None:
    write(dev, locality, Reg.ACCESS, Access.REQUEST_USE)


def relinquish(dev, locality: int) -> None:
    write(dev, locality, Reg.ACCESS, Access.ACTIVE_LOCALITY)


def fifo_write(dev, locality: int, data: bytes) -> None:
    for byte in data:
        write(dev, locality, Reg.DATA_FIFO, byte)


def fifo_read(dev, locality: int, count: int) -> bytes:
    return bytes(read(dev, locality, Reg.DATA_FIFO, 1) for _ in range(count))


def burst(value: int) -> int:
    return (value >> 8) & 0xFFFF


def run_command(dev, locality: int, command: bytes) -> bytes:
    """commandReady, the command, tpmGo, the whole response (locality already active)."""
    write(dev, locality, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, locality, command)
    write(dev, locality, Reg.STS, Sts.TPM_GO)
    count = burst(sts(dev, locality))
    return fifo_read(dev, locality, count)


# ---------------------------------------------------------------------------- reset values


@pytest.mark.parametrize("locality", range(5))
def test_reset_values(dev, locality):
    """REFERENCE.md §4: every locality after reset, none active."""
    assert access(dev, locality) == 0x81           # tpmRegValidSts | not established
    assert read(dev, locality, Reg.INT_ENABLE) == 0x08
    assert read(dev, locality, Reg.INT_VECTOR) == 5
    assert read(dev, locality, Reg.INT_STATUS) == 0
    assert read(dev, locality, Reg.INTF_CAPABILITY) == 0x30000697
    assert read(dev, locality, Reg.INTERFACE_ID) == 0x00002100
    assert read(dev, locality, Reg.DID_VID) == 0x00011014
    assert read(dev, locality, Reg.RID) == 0x01
    # No locality is active: STS and the FIFO read all ones; so does an unknown register.
    assert sts(dev, locality) == ALL_ONES
    assert read(dev, locality, Reg.DATA_FIFO) == ALL_ONES
    assert read(dev, locality, 0x40) == ALL_ONES
    assert read(dev, locality, 0x41, 1) == 0xFF


def test_sub_register_reads(dev):
    """Byte and word reads return the addressed bytes of the 32-bit register."""
    assert read(dev, 0, Reg.DID_VID, 2) == 0x1014
    assert read(dev, 0, Reg.DID_VID + 2, 2) == 0x0001
    assert read(dev, 0, Reg.INTF_CAPABILITY + 3, 1) == 0x30
    assert read(dev, 0, Reg.INTERFACE_ID + 1, 1) == 0x21
    assert read(dev, 0, Reg.ACCESS + 1, 1) == 0      # ACCESS is one byte wide


def test_invalid_accesses_are_refused(dev):
    with pytest.raises(ValueError):
        dev.mmio_read(0x19, 2)          # unaligned
    with pytest.raises(ValueError):
        dev.mmio_read(0x18, 3)
    with pytest.raises(ValueError):
        dev.mmio_write(0x5000, 1, 0)    # beyond locality 4


# ---------------------------------------------------------------------------- ACCESS


def test_request_and_relinquish(dev):
    request(dev, 0)
    assert access(dev, 0) == 0xA1                   # valid | activeLocality | not established
    assert sts(dev, 0) == FAMILY | (4096 << 8)      # idle: 0x04100000
    for other in (1, 2, 3, 4):
        assert access(dev, other) == 0x81
        assert sts(dev, other) == ALL_ONES          # a non-active locality reads all ones
        assert read(dev, other, Reg.DATA_FIFO) == ALL_ONES
    relinquish(dev, 0)
    assert access(dev, 0) == 0x81
    assert sts(dev, 0) == ALL_ONES


def test_pending_request_of_a_second_locality(dev):
    request(dev, 0)
    request(dev, 2)
    # Locality 0 sees that someone else waits; locality 2 sees its own requestUse only.
    assert access(dev, 0) == 0xA1 | Access.PENDING_REQUEST
    assert access(dev, 2) == 0x81 | Access.REQUEST_USE
    assert access(dev, 1) == 0x81 | Access.PENDING_REQUEST
    request(dev, 1)
    relinquish(dev, 0)
    # The highest requesting locality gets it next.
    assert access(dev, 2) & (Access.ACTIVE_LOCALITY | Access.REQUEST_USE) == Access.ACTIVE_LOCALITY
    assert access(dev, 0) == 0x81 | Access.PENDING_REQUEST
    assert access(dev, 1) == 0x81 | Access.REQUEST_USE
    assert sts(dev, 2) != ALL_ONES and sts(dev, 0) == ALL_ONES
    # A waiting locality withdraws its request by writing activeLocality.
    relinquish(dev, 1)
    assert access(dev, 1) == 0x81
    assert access(dev, 2) == 0xA1


def test_request_by_the_active_locality_changes_nothing(dev):
    request(dev, 1)
    request(dev, 1)
    assert access(dev, 1) == 0xA1


def test_seize_by_a_higher_locality(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    write(dev, 2, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 2) == 0xA1                   # seized; SEIZE itself never reads back
    assert access(dev, 0) == 0x81 | Access.BEEN_SEIZED
    assert sts(dev, 0) == ALL_ONES
    # beenSeized is write-1-to-clear.
    write(dev, 0, Reg.ACCESS, Access.BEEN_SEIZED)
    assert access(dev, 0) == 0x81
    # The new owner can run a command.
    rsp = run_command(dev, 2, GET_RANDOM)
    assert rc(rsp) == 0 and len(rsp) == GET_RANDOM_RSP_LEN


def test_seize_by_a_lower_locality_is_ignored(dev):
    request(dev, 3)
    write(dev, 1, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 3) == 0xA1
    assert access(dev, 1) == 0x81


def test_seize_without_an_active_locality(dev):
    write(dev, 1, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 1) == 0xA1


def test_seize_ignores_request_use_in_the_same_write(dev):
    request(dev, 0)
    write(dev, 2, Reg.ACCESS, Access.SEIZE | Access.REQUEST_USE)
    assert access(dev, 2) == 0xA1
    assert access(dev, 0) == 0x91


def test_seize_during_reception_aborts_the_transfer(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM[:6])
    write(dev, 3, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 3) == 0xA1
    # The seizing locality starts from an empty FIFO.
    assert burst(sts(dev, 3)) == 4096
    assert rc(run_command(dev, 3, GET_RANDOM)) == 0


# ---------------------------------------------------------------------------- STS / FIFO


def test_command_ready_expect_stsvalid_and_go(dev):
    request(dev, 0)
    assert sts(dev, 0) & 0xFF == 0
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert sts(dev, 0) == FAMILY | (4096 << 8) | Sts.COMMAND_READY
    # The first byte: Reception, stsValid + Expect (commandReady drops).
    write(dev, 0, Reg.DATA_FIFO, GET_RANDOM[0])
    assert sts(dev, 0) == FAMILY | (4095 << 8) | Sts.VALID | Sts.EXPECT
    fifo_write(dev, 0, GET_RANDOM[1:-1])
    assert sts(dev, 0) & 0xFF == Sts.VALID | Sts.EXPECT
    # tpmGo while Expect is set is ignored.
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    assert sts(dev, 0) & 0xFF == Sts.VALID | Sts.EXPECT
    # The header's commandSize has arrived: Expect clears.
    write(dev, 0, Reg.DATA_FIFO, GET_RANDOM[-1])
    assert sts(dev, 0) == FAMILY | ((4096 - 12) << 8) | Sts.VALID
    # Bytes beyond the command are dropped.
    write(dev, 0, Reg.DATA_FIFO, 0x55)
    assert burst(sts(dev, 0)) == 4096 - 12
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    # Executed synchronously: the response is there.
    assert sts(dev, 0) == FAMILY | (GET_RANDOM_RSP_LEN << 8) | Sts.VALID | Sts.DATA_AVAIL
    rsp = fifo_read(dev, 0, GET_RANDOM_RSP_LEN)
    assert rc(rsp) == 0 and struct.unpack_from(">IIH", rsp, 2) == (GET_RANDOM_RSP_LEN, 0, 8)
    # All read: dataAvail drops; further FIFO reads give 0xff.
    assert sts(dev, 0) & 0xFF == Sts.VALID
    assert read(dev, 0, Reg.DATA_FIFO, 1) == 0xFF
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert sts(dev, 0) == FAMILY | (4096 << 8) | Sts.COMMAND_READY


def test_fifo_writes_before_command_ready_are_dropped(dev):
    request(dev, 0)
    fifo_write(dev, 0, GET_RANDOM)
    assert sts(dev, 0) == FAMILY | (4096 << 8)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    assert sts(dev, 0) & Sts.DATA_AVAIL == 0


def test_two_status_bits_in_one_write_do_nothing(dev):
    """Exactly one of commandReady / tpmGo / responseRetry per write (QEMU)."""
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY | Sts.RESPONSE_RETRY)
    assert sts(dev, 0) & 0xFF == 0


def test_burst_count_with_byte_reads(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    # 4096 free bytes: a byte read of burstCount's low byte gives 0xff, not 0x00 (QEMU).
    assert read(dev, 0, Reg.STS + 1, 1) == 0xFF
    assert read(dev, 0, Reg.STS + 2, 1) == 0x00
    assert read(dev, 0, Reg.STS + 2, 2) == (FAMILY >> 16) | 0x10   # 16-bit: not clamped
    assert read(dev, 0, Reg.STS, 1) == Sts.COMMAND_READY
    assert read(dev, 0, Reg.STS + 3, 1) == FAMILY >> 24
    # Fill the FIFO to 4000 of 4096 bytes (a command announcing 4096): 96 left.
    big = struct.pack(">HII", 0x8001, 4096, CC.GetRandom) + bytes(3990)
    for at in range(0, len(big), 4):
        write(dev, 0, Reg.DATA_FIFO, int.from_bytes(big[at:at + 4], "little"), 4)
    assert read(dev, 0, Reg.STS + 1, 1) == 96
    assert burst(sts(dev, 0)) == 96
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    # With a response: the bytes left, byte by byte.
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    for left in range(GET_RANDOM_RSP_LEN, 0, -1):
        assert read(dev, 0, Reg.STS + 1, 1) == left
        read(dev, 0, Reg.DATA_FIFO, 1)
    assert read(dev, 0, Reg.STS, 1) == Sts.VALID


def test_full_fifo_drops_expect(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    big = struct.pack(">HII", 0x8001, 5000, CC.GetRandom) + bytes(4086)
    for at in range(0, len(big), 4):
        write(dev, 0, Reg.DATA_FIFO, int.from_bytes(big[at:at + 4], "little"), 4)
    assert sts(dev, 0) & 0xFF == Sts.VALID | Sts.EXPECT
    assert burst(sts(dev, 0)) == 0
    write(dev, 0, Reg.DATA_FIFO, 0)      # no room: Expect drops
    assert sts(dev, 0) & 0xFF == Sts.VALID


def test_multibyte_fifo_and_xdata_fifo(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    for at in range(0, 12, 4):
        write(dev, 0, Reg.XDATA_FIFO + 4, int.from_bytes(GET_RANDOM[at:at + 4], "little"), 4)
    assert sts(dev, 0) & 0xFF == Sts.VALID
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    words = b"".join(read(dev, 0, Reg.XDATA_FIFO, 4).to_bytes(4, "little") for _ in range(5))
    assert words[:10] == struct.pack(">HII", 0x8001, 20, 0)
    # A 2-byte read at DATA_FIFO + 2 reads two bytes (no byte of it is lost).
    write(dev, 0, Reg.STS, Sts.RESPONSE_RETRY)
    assert read(dev, 0, Reg.DATA_FIFO + 2, 2) == 0x0180


def test_response_retry(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    first = fifo_read(dev, 0, 7)
    assert burst(sts(dev, 0)) == GET_RANDOM_RSP_LEN - 7
    write(dev, 0, Reg.STS, Sts.RESPONSE_RETRY)
    assert sts(dev, 0) == FAMILY | (GET_RANDOM_RSP_LEN << 8) | Sts.VALID | Sts.DATA_AVAIL
    whole = fifo_read(dev, 0, GET_RANDOM_RSP_LEN)
    assert whole[:7] == first
    # After the last byte, retry makes the whole response available again.
    write(dev, 0, Reg.STS, Sts.RESPONSE_RETRY)
    assert fifo_read(dev, 0, GET_RANDOM_RSP_LEN) == whole
    # Outside Completion, responseRetry is ignored.
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    write(dev, 0, Reg.STS, Sts.RESPONSE_RETRY)
    assert sts(dev, 0) & 0xFF == Sts.COMMAND_READY


def test_command_ready_mid_reception_aborts(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM[:5])
    assert burst(sts(dev, 0)) == 4091
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert sts(dev, 0) == FAMILY | (4096 << 8) | Sts.COMMAND_READY
    rsp = run_command(dev, 0, GET_RANDOM)
    assert rc(rsp) == 0 and len(rsp) == GET_RANDOM_RSP_LEN


def test_command_ready_after_completion_drops_the_response(dev):
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    fifo_read(dev, 0, 3)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert sts(dev, 0) == FAMILY | (4096 << 8) | Sts.COMMAND_READY
    assert read(dev, 0, Reg.DATA_FIFO, 1) == 0xFF
    write(dev, 0, Reg.STS, Sts.RESPONSE_RETRY)
    assert sts(dev, 0) & Sts.DATA_AVAIL == 0


def test_command_ready_during_execution():
    """With a deferred backend (``synchronous=False``), commandReady while the command
    executes makes the completion drop the response and go to Ready (QEMU)."""
    tpm = new_tpm()
    assert rc(tpm.execute(startup())) == 0
    dev = TisDevice(tpm, synchronous=False)
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    # Executing: neither dataAvail nor commandReady; the FIFO has nothing.
    assert sts(dev, 0) & 0xFF == Sts.VALID
    assert read(dev, 0, Reg.DATA_FIFO, 1) == 0xFF
    fifo_write(dev, 0, b"\x00")                       # dropped while executing
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert sts(dev, 0) & 0xFF == Sts.VALID            # the abort waits for completion
    dev.complete()
    assert sts(dev, 0) == FAMILY | (4096 << 8) | Sts.COMMAND_READY
    assert read(dev, 0, Reg.DATA_FIFO, 1) == 0xFF
    # Without the abort the response arrives at completion.
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    dev.complete()
    assert sts(dev, 0) & 0xFF == Sts.VALID | Sts.DATA_AVAIL
    assert rc(fifo_read(dev, 0, GET_RANDOM_RSP_LEN)) == 0


def test_relinquish_to_a_waiting_locality_during_execution():
    tpm = new_tpm()
    assert rc(tpm.execute(startup())) == 0
    dev = TisDevice(tpm, synchronous=False)
    request(dev, 0)
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    request(dev, 1)
    relinquish(dev, 0)
    assert access(dev, 0) & Access.ACTIVE_LOCALITY     # until the command completes
    dev.complete()
    assert access(dev, 1) == 0xA1
    assert access(dev, 0) == 0x81


def test_writes_from_a_non_active_locality_are_ignored(dev):
    request(dev, 0)
    write(dev, 1, Reg.STS, Sts.COMMAND_READY)
    write(dev, 1, Reg.INT_ENABLE, 0x80000087, 4)
    write(dev, 1, Reg.DATA_FIFO, 0x80)
    request(dev, 1)
    relinquish(dev, 0)
    assert read(dev, 1, Reg.INT_ENABLE) == 0x08
    assert sts(dev, 1) == FAMILY | (4096 << 8)


def test_commands_run_at_the_locality_of_the_access(dev):
    """PCR 20 may be extended from localities 1-3, not 0 (PC Client PCR attributes)."""
    digest = hashlib.sha256(b"x").digest()
    request(dev, 0)
    assert rc(run_command(dev, 0, pcr_extend(20, ALG.SHA256, digest))) == RC.LOCALITY
    request(dev, 1)
    relinquish(dev, 0)
    assert rc(run_command(dev, 1, pcr_extend(20, ALG.SHA256, digest))) == 0


# ---------------------------------------------------------------------------- locality 4


def test_locality_4_writes_are_ignored(dev):
    """QEMU: every MMIO write to locality 4 is dropped (only the platform reaches it)."""
    write(dev, 4, Reg.ACCESS, Access.REQUEST_USE)
    assert access(dev, 4) == 0x81
    write(dev, 4, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 4) == 0x81
    request(dev, 0)
    write(dev, 4, Reg.ACCESS, Access.SEIZE)
    assert access(dev, 0) == 0xA1
    # TPM_HASH_START / HASH_DATA / HASH_END from a guest do nothing either.
    write(dev, 4, Reg.HASH_START, 0)
    write(dev, 4, Reg.DATA_FIFO, 0x41)
    write(dev, 4, Reg.HASH_END, 0)
    assert access(dev, 0) & Access.ESTABLISHMENT
    # Reads work.
    assert read(dev, 4, Reg.DID_VID) == 0x00011014


def test_platform_locality_4(dev):
    """A platform with locality-4 cycles (``platform_locality4=True``) uses it like any
    other locality; commands from it run at locality 4."""
    pdev = TisDevice(dev.tpm, platform_locality4=True)
    request(pdev, 4)
    assert access(pdev, 4) == 0xA1
    # PCR 17 may be extended from locality 4 only.
    assert rc(run_command(pdev, 4, pcr_extend(17, ALG.SHA256, bytes(32)))) == 0
    request(pdev, 0)
    relinquish(pdev, 4)
    assert rc(run_command(pdev, 0, pcr_extend(17, ALG.SHA256, bytes(32)))) == RC.LOCALITY


def pcr_sha256(dev, locality: int, pcr: int) -> bytes:
    return pcr_values(run_command(dev, locality, pcr_read(ALG.SHA256, [pcr])))[0]


def test_hash_sequence_sets_established_and_reset_establishment(dev):
    pdev = TisDevice(dev.tpm, platform_locality4=True)
    request(pdev, 0)
    assert pcr_sha256(pdev, 0, 17) == b"\xff" * 32
    relinquish(pdev, 0)
    data = b"SINIT measurement"
    write(pdev, 4, Reg.HASH_START, 0)
    # Established at _TPM_Hash_Start already: ACCESS bit 0 reads 0 on every locality.
    for loc in range(5):
        assert access(pdev, loc) == 0x80
    for byte in data:
        write(pdev, 4, Reg.DATA_FIFO, byte)        # TPM_HASH_DATA
    write(pdev, 4, Reg.HASH_END, 0)
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(data).digest()).digest()
    request(pdev, 0)
    assert pcr_sha256(pdev, 0, 17) == expected
    # resetEstablishment from localities 0-2 is ignored ...
    for loc in (0, 1, 2):
        if loc:
            request(pdev, loc)
            relinquish(pdev, loc - 1)
        write(pdev, loc, Reg.STS + 3, Sts.RESET_ESTABLISHMENT >> 24)
        assert access(pdev, loc) & Access.ESTABLISHMENT == 0
    # ... and honoured from locality 3 (and 4).
    request(pdev, 3)
    relinquish(pdev, 2)
    write(pdev, 3, Reg.STS, Sts.RESET_ESTABLISHMENT, 4)
    assert access(pdev, 3) == 0xA1
    assert access(pdev, 0) == 0x81
    pdev.hash_start()
    pdev.hash_end()
    assert access(pdev, 3) == 0xA0
    request(pdev, 4)
    relinquish(pdev, 3)
    write(pdev, 4, Reg.STS + 3, Sts.RESET_ESTABLISHMENT >> 24)
    assert access(pdev, 4) == 0xA1


def test_reset_establishment_guest_device(dev):
    """Through a guest-only device (QEMU): locality 3 resets the bit, locality 4 cannot
    write at all, localities 0-2 are ignored."""
    dev.hash_start()
    dev.hash_data(b"abc")
    dev.hash_end()
    assert access(dev, 0) == 0x80
    request(dev, 2)
    write(dev, 2, Reg.STS, Sts.RESET_ESTABLISHMENT, 4)
    assert access(dev, 2) == 0xA0
    write(dev, 4, Reg.STS, Sts.RESET_ESTABLISHMENT, 4)
    assert access(dev, 2) == 0xA0
    request(dev, 3)
    relinquish(dev, 2)
    write(dev, 3, Reg.STS, Sts.RESET_ESTABLISHMENT, 4)
    assert access(dev, 3) == 0xA1


def test_a_command_aborts_a_hash_sequence(dev):
    """A command between _TPM_Hash_Start and _TPM_Hash_End ends the sequence: the
    _TPM_Hash_End measures nothing (as on the data channel)."""
    pdev = TisDevice(dev.tpm, platform_locality4=True)
    write(pdev, 4, Reg.HASH_START, 0)
    request(pdev, 0)
    run_command(pdev, 0, GET_RANDOM)
    write(pdev, 4, Reg.HASH_END, 0)
    assert pcr_sha256(pdev, 0, 17) == b"\xff" * 32


# ---------------------------------------------------------------------------- interrupts


def test_int_enable_bits_and_byte_writes(dev):
    request(dev, 0)
    write(dev, 0, Reg.INT_ENABLE, ALL_ONES, 4)
    # globalIntEnable, typePolarity and the four supported interrupts.
    assert read(dev, 0, Reg.INT_ENABLE) == 0x8000009F
    write(dev, 0, Reg.INT_ENABLE, 0x00, 1)
    assert read(dev, 0, Reg.INT_ENABLE) == 0x80000000
    write(dev, 0, Reg.INT_ENABLE + 3, 0x00, 1)
    assert read(dev, 0, Reg.INT_ENABLE) == 0
    # INT_VECTOR is hard-wired.
    write(dev, 0, Reg.INT_VECTOR, 9, 1)
    assert read(dev, 0, Reg.INT_VECTOR) == 5


def test_interrupt_status_and_callback():
    tpm = new_tpm()
    assert rc(tpm.execute(startup())) == 0
    events: list[bool] = []
    dev = TisDevice(tpm, irq=events.append)
    request(dev, 0)
    # Without globalIntEnable nothing is latched.
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert read(dev, 0, Reg.INT_STATUS) == 0 and events == []
    write(dev, 0, Reg.INT_ENABLE, int(Int.GLOBAL_ENABLE | Int.POLARITY_LOW_LEVEL | Int.DATA_AVAIL
                                      | Int.STS_VALID | Int.COMMAND_READY
                                      | Int.LOCALITY_CHANGE), 4)
    fifo_write(dev, 0, GET_RANDOM)
    write(dev, 0, Reg.STS, Sts.TPM_GO)
    assert read(dev, 0, Reg.INT_STATUS) == Int.DATA_AVAIL | Int.STS_VALID
    assert events == [True]
    # Write 1 to clear, one bit at a time; the line drops when none is left.
    write(dev, 0, Reg.INT_STATUS, Int.DATA_AVAIL, 4)
    assert read(dev, 0, Reg.INT_STATUS) == Int.STS_VALID and events == [True]
    write(dev, 0, Reg.INT_STATUS, Int.STS_VALID, 4)
    assert read(dev, 0, Reg.INT_STATUS) == 0 and events == [True, False]
    write(dev, 0, Reg.STS, Sts.COMMAND_READY)
    assert read(dev, 0, Reg.INT_STATUS) == Int.COMMAND_READY
    # INT_STATUS of a non-active locality cannot be cleared.
    write(dev, 0, Reg.INT_STATUS, 0xFF, 1)
    # A locality change is signalled to the new active locality if it enables it.
    relinquish(dev, 0)
    request(dev, 0)
    assert read(dev, 0, Reg.INT_STATUS) & Int.LOCALITY_CHANGE


def test_interface_id_sel_lock(dev):
    write(dev, 0, Reg.INTERFACE_ID, 1 << 19, 4)
    for loc in range(5):
        assert read(dev, loc, Reg.INTERFACE_ID) == 0x00082100
    write(dev, 0, Reg.DID_VID, 0, 4)
    write(dev, 0, Reg.RID, 0, 4)
    write(dev, 0, Reg.INTF_CAPABILITY, 0, 4)
    assert read(dev, 0, Reg.DID_VID) == 0x00011014 and read(dev, 0, Reg.RID) == 1
    assert read(dev, 0, Reg.INTF_CAPABILITY) == 0x30000697


def test_reset_restores_registers_and_inits_the_tpm(dev):
    request(dev, 2)
    dev.hash_start()
    dev.reset()
    not_established = 0 if dev.tpm.vol.established else 1
    assert access(dev, 2) == 0x80 | not_established
    assert sts(dev, 2) == ALL_ONES
    request(dev, 0)
    # The core was re-initialised: it needs Startup again.
    assert rc(run_command(dev, 0, GET_RANDOM)) == RC.INITIALIZE
    assert rc(run_command(dev, 0, startup())) == 0


# ---------------------------------------------------------------------------- the example driver


def results(responses: list[tuple[str, bytes]]) -> list[tuple[str, int, bytes]]:
    """What must agree between interfaces: rc and size of each response, and the whole
    response of every command but GetRandom (whose bytes are random)."""
    return [(name, rc(rsp), len(rsp), b"" if name.startswith("GetRandom") else rsp)
            for name, rsp in responses]


def test_driver_through_tis_crb_and_socket():
    tis_tpm, crb_tpm = new_tpm(), new_tpm()
    tis = driver.run_sequence(driver.TisDriver(TisDevice(tis_tpm)).transmit)
    crb = driver.run_sequence(driver.CrbDriver(CrbDevice(crb_tpm)).transmit)
    # A fresh emulator process without a Startup of its own: the sequence sends it.
    with Emulator(flags="not-need-init") as emu:
        sock = driver.run_sequence(emu.command)
    assert results(tis) == results(crb) == results(sock)
    assert [rc(r) for _, r in tis] == [0, 0, 0, 0]
    expected = hashlib.sha256(bytes(32) + driver.EXTEND_DIGEST).digest()
    assert pcr_values(tis[3][1]) == [expected]
    assert len(tis[1][1]) == 10 + 2 + 16


def test_driver_at_locality_2(dev):
    """The driver at another locality; PCR 20 extends work from there."""
    drv = driver.TisDriver(dev, locality=2)
    digest = hashlib.sha256(b"loc2").digest()
    assert rc(drv.transmit(pcr_extend(20, ALG.SHA256, digest))) == 0
    assert access(dev, 2) == 0x81           # relinquished


def test_repl_tool(capsys):
    """examples/tis_repl.py pokes registers and sends commands."""
    repl_mod = load_example("tis_repl")
    tpm = new_tpm()
    repl = repl_mod.Repl(TisDevice(tpm), is_crb=False)
    for line in ("w 0 2", "r 0 1", "regs 0", "startup", "send 80010000000c0000017b0008 1",
                 "r 0x19 1", "r zz"):
        assert not repl.onecmd(line)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0xa1"
    assert any(line.startswith("STS ") and "burstCount=4096" in line for line in out)
    assert "rc=0x0 80010000000a00000000" in out
    assert any(line.startswith("rc=0x0 800100000014") for line in out)
    assert out[-2] == "0xff" and out[-1].startswith("error:")
    assert repl.onecmd("quit") is True
    crb_repl = repl_mod.Repl(CrbDevice(new_tpm()), is_crb=True)
    crb_repl.onecmd("startup")
    crb_repl.onecmd("regs")
    out = capsys.readouterr().out
    assert "rc=0x0 80010000000a00000000" in out and "INTF_ID          0x00025811" in out


def test_state_persists_through_the_platform_storage(tmp_path):
    """The device feeds the same core and storage: a new owner auth set through TIS survives
    a platform reset (the permanent blob in the state directory)."""
    def change_owner_auth(old: bytes, new: bytes) -> bytes:
        return with_auth(CC.HierarchyChangeAuth, struct.pack(">I", RH.OWNER),
                         struct.pack(">H", len(new)) + new, pw_session(old))

    storage = DirStorage(tmp_path)
    try:
        tpm = Tpm(Platform(storage=storage, clock=FakeClock()))
        tpm.power_on()
        drv = driver.TisDriver(TisDevice(tpm))
        assert rc(drv.transmit(startup())) == 0
        assert rc(drv.transmit(change_owner_auth(b"", b"secret"))) == 0
        drv.dev.reset()
        assert rc(drv.transmit(startup())) == 0
        assert rc(drv.transmit(change_owner_auth(b"secret", b""))) == 0
    finally:
        storage.close()
    assert (tmp_path / "swtpm_py-permanent.blob").exists()
