"""The CRB register model (swtpm_py.crb) as QEMU 7.2's tpm-crb behaves (PTP §6.4)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tpmcmd import FakeClock, cmd, pcr_extend, pcr_read, pcr_values, rc, startup

from swtpm_py import crb
from swtpm_py.crb import CrbDevice, Reg
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, RC

GET_RANDOM = cmd(CC.GetRandom, struct.pack(">H", 8))


@pytest.fixture
def dev() -> CrbDevice:
    tpm = Tpm(Platform(storage=MemoryStorage(), clock=FakeClock()))
    tpm.power_on()
    return CrbDevice(tpm)


def put(dev: CrbDevice, data: bytes) -> None:
    """The command into the buffer, 32 bits at a time."""
    data += b"\x00" * (-len(data) % 4)
    for at in range(0, len(data), 4):
        dev.mmio_write(Reg.DATA_BUFFER + at, 4, int.from_bytes(data[at:at + 4], "little"))


def get(dev: CrbDevice, count: int) -> bytes:
    """``count`` bytes of the buffer, byte by byte."""
    return bytes(dev.mmio_read(Reg.DATA_BUFFER + at, 1) for at in range(count))


def execute(dev: CrbDevice, command: bytes) -> bytes:
    put(dev, command)
    dev.mmio_write(Reg.CTRL_START, 4, crb.CTRL_START_INVOKE)
    assert dev.mmio_read(Reg.CTRL_START, 4) == 0
    size = struct.unpack(">I", get(dev, 6)[2:])[0]
    return get(dev, size)


def test_reset_values(dev):
    r = dev.mmio_read
    assert r(Reg.LOC_STATE, 4) == 0x81            # tpmRegValidSts | not established
    assert r(Reg.LOC_STS, 4) == 0
    assert r(Reg.INTF_ID, 4) == 0x00025811
    assert r(Reg.INTF_ID2, 4) == 0x00001014
    assert r(Reg.CTRL_REQ, 4) == 0
    assert r(Reg.CTRL_STS, 4) == crb.CTRL_STS_IDLE
    assert r(Reg.CTRL_START, 4) == 0
    assert r(Reg.CTRL_CMD_SIZE, 4) == 0xF80
    assert r(Reg.CTRL_CMD_LADDR, 4) == 0xFED40080
    assert r(Reg.CTRL_CMD_HADDR, 4) == 0
    assert r(Reg.CTRL_RSP_SIZE, 4) == 0xF80
    assert r(Reg.CTRL_RSP_ADDR, 4) == 0xFED40080
    # Sub-register reads.
    assert r(Reg.INTF_ID + 1, 1) == 0x58
    assert r(Reg.CTRL_CMD_LADDR + 2, 2) == 0xFED4


def test_locality_request_and_relinquish(dev):
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS)
    assert dev.mmio_read(Reg.LOC_STATE, 4) == 0x83       # locAssigned, activeLocality 0
    assert dev.mmio_read(Reg.LOC_STS, 4) == crb.LOC_STS_GRANTED
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_RELINQUISH)
    assert dev.mmio_read(Reg.LOC_STATE, 4) == 0x81
    assert dev.mmio_read(Reg.LOC_STS, 4) == 0
    # Two requests in one write are no request (QEMU compares the whole value).
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS | crb.LOC_CTRL_SEIZE)
    assert dev.mmio_read(Reg.LOC_STS, 4) == 0


def test_cmd_ready_and_go_idle(dev):
    dev.mmio_write(Reg.CTRL_REQ, 4, crb.CTRL_REQ_CMD_READY)
    assert dev.mmio_read(Reg.CTRL_STS, 4) == 0
    assert dev.mmio_read(Reg.CTRL_REQ, 4) == 0
    dev.mmio_write(Reg.CTRL_REQ, 4, crb.CTRL_REQ_GO_IDLE)
    assert dev.mmio_read(Reg.CTRL_STS, 4) == crb.CTRL_STS_IDLE


def test_start_needs_the_locality(dev):
    put(dev, startup())
    dev.mmio_write(Reg.CTRL_START, 4, crb.CTRL_START_INVOKE)
    assert get(dev, 12) == startup()                      # nothing ran
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS)
    assert rc(execute(dev, startup())) == 0
    assert rc(execute(dev, startup())) == RC.INITIALIZE   # really executed twice


def test_commands_and_buffer(dev):
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS)
    dev.mmio_write(Reg.CTRL_REQ, 4, crb.CTRL_REQ_CMD_READY)
    assert rc(execute(dev, startup())) == 0
    rsp = execute(dev, GET_RANDOM)
    assert rc(rsp) == 0 and len(rsp) == 20
    digest = hashlib.sha256(b"crb").digest()
    assert rc(execute(dev, pcr_extend(16, ALG.SHA256, digest))) == 0
    value = pcr_values(execute(dev, pcr_read(ALG.SHA256, [16])))[0]
    assert value == hashlib.sha256(bytes(32) + digest).digest()
    # The buffer is plain memory: byte/word writes read back; the last byte is 0xfff.
    dev.mmio_write(0xFFE, 2, 0xBEEF)
    assert dev.mmio_read(0xFFC, 4) >> 16 == 0xBEEF
    with pytest.raises(ValueError):
        dev.mmio_read(0x1000, 1)                         # no locality 1


def test_read_only_registers_ignore_writes(dev):
    for reg in (Reg.INTF_ID, Reg.CTRL_CMD_SIZE, Reg.CTRL_RSP_ADDR, Reg.LOC_STS, Reg.CTRL_STS):
        before = dev.mmio_read(reg, 4)
        dev.mmio_write(reg, 4, 0x12345678)
        assert dev.mmio_read(reg, 4) == before


def test_established_bit(dev):
    assert dev.mmio_read(Reg.LOC_STATE, 1) & 1
    dev.tpm.hash_start()
    dev.tpm.hash_end()
    assert dev.mmio_read(Reg.LOC_STATE, 1) & 1 == 0
    # resetEstablishment from locality 0 is ignored.
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_RESET_ESTABLISHMENT)
    assert dev.mmio_read(Reg.LOC_STATE, 1) & 1 == 0


def test_reset(dev):
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS)
    dev.mmio_write(Reg.CTRL_REQ, 4, crb.CTRL_REQ_CMD_READY)
    assert rc(execute(dev, startup())) == 0
    dev.reset()
    assert dev.mmio_read(Reg.LOC_STATE, 4) & ~1 == 0x80
    assert dev.mmio_read(Reg.CTRL_STS, 4) == crb.CTRL_STS_IDLE
    dev.mmio_write(Reg.LOC_CTRL, 4, crb.LOC_CTRL_REQUEST_ACCESS)
    assert rc(execute(dev, GET_RANDOM)) == RC.INITIALIZE
