#!/usr/bin/env python3
"""A TPM driver at the register level, written the way Linux's tpm_tis_core / tpm_crb do it,
against swtpm_py's TIS and CRB register models (swtpm_py.tis, swtpm_py.crb).

TIS (tpm_tis_core.c): request the locality (ACCESS.requestUse, wait for activeLocality), make
the TPM ready (STS.commandReady, wait for it), write all but the last command byte in
burstCount-sized chunks checking stsValid + Expect after each, write the last byte and check
that Expect dropped, tpmGo, poll stsValid + dataAvail, read the 10-byte header and then the
rest in burstCount chunks, check that no data is left, commandReady (drop the response), and
relinquish the locality (ACCESS.activeLocality).

CRB (tpm_crb.c): LOC_CTRL.requestAccess, wait for LOC_STS.Granted, CTRL_REQ.cmdReady, wait for
CTRL_STS.tpmIdle to clear, copy the command into the buffer, CTRL_START = 1, poll until it
reads 0, read the response out of the buffer, CTRL_REQ.goIdle, LOC_CTRL.relinquish.

Usage::

    python3 examples/tis_driver.py [--interface tis|crb|both] [--state DIR] [--trace]

sends Startup(CLEAR), GetRandom(16), PCR_Extend(16, SHA-256) and PCR_Read(16) through the
chosen interface(s) of an in-process TPM (state in DIR, or in memory) and prints each response.
``--trace`` prints every register access. Any object with ``mmio_read(offset, size)`` and
``mmio_write(offset, size, value)`` can be driven, e.g. QEMU's own tpm-tis over qtest
(tests/test_tis_qtest.py does so).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

if importlib.util.find_spec("swtpm_py") is None:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swtpm_py.crb import CrbDevice
from swtpm_py.tis import Access, Reg, Sts, TisDevice
from swtpm_py.crb import (CTRL_REQ_CMD_READY, CTRL_REQ_GO_IDLE, CTRL_START_INVOKE,
                          CTRL_STS_IDLE, LOC_CTRL_RELINQUISH, LOC_CTRL_REQUEST_ACCESS,
                          LOC_STS_GRANTED)
from swtpm_py.crb import Reg as CrbReg
from swtpm_py.tpm import Platform, Tpm

#: TPM 2.0 command codes and constants the sequence uses (Part 2).
TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS = 0x8001, 0x8002
TPM_CC_STARTUP, TPM_CC_GET_RANDOM = 0x144, 0x17B
TPM_CC_PCR_EXTEND, TPM_CC_PCR_READ = 0x182, 0x17E
TPM_RS_PW, TPM_ALG_SHA256 = 0x40000009, 0x000B

#: Seconds a status bit is polled for before the driver gives up (the models answer at once;
#: QEMU runs commands on a backend thread). Linux's TIS timeouts are of this order.
POLL_TIMEOUT = 30.0


def poll(read: Callable[[], int], done: Callable[[int], bool], what: str) -> int:
    """Read until ``done(value)``; sleep 1 ms between reads after the first."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DriverError(f"timeout waiting for {what} (last value 0x{value:x})")
        time.sleep(0.001)


class Mmio(Protocol):
    """What a driver needs from a device: MMIO reads and writes at offsets from its base."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class DriverError(RuntimeError):
    """The device did not behave as the interface specification says."""


class Tracing:
    """Wraps a device and prints every access (``--trace``)."""

    def __init__(self, dev: Mmio, out: Callable[[str], None] = print) -> None:
        self.dev, self.out = dev, out

    def mmio_read(self, offset: int, size: int) -> int:
        value = self.dev.mmio_read(offset, size)
        self.out(f"read{size}  0x{offset:04x} -> 0x{value:0{2 * size}x}")
        return value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.out(f"write{size} 0x{offset:04x} <- 0x{value:0{2 * size}x}")
        self.dev.mmio_write(offset, size, value)


class TisDriver:
    """A tpm_tis_core-style driver for the FIFO interface of ``dev`` at ``locality``."""

    def __init__(self, dev: Mmio, locality: int = 0) -> None:
        self.dev = dev
        self.locality = locality
        self.base = locality << 12

    def _read(self, reg: int, size: int = 4) -> int:
        return self.dev.mmio_read(self.base + reg, size)

    def _write(self, reg: int, value: int, size: int = 1) -> None:
        self.dev.mmio_write(self.base + reg, size, value)

    def _wait(self, reg: int, mask: int, size: int = 4) -> int:
        return poll(lambda: self._read(reg, size), lambda v: v & mask == mask,
                    f"0x{mask:x} in register 0x{reg:x}")

    def status(self) -> int:
        """The low byte of TPM_STS (tpm_tis_status)."""
        return self._read(Reg.STS, 1)

    def burst_count(self) -> int:
        """TPM_STS.burstCount (get_burstcount: one 32-bit read, bits 8-23)."""
        return poll(lambda: (self._read(Reg.STS) >> 8) & 0xFFFF, bool, "a burstCount")

    def request_locality(self) -> None:
        """ACCESS.requestUse, then wait for activeLocality (+ tpmRegValidSts)."""
        self._write(Reg.ACCESS, Access.REQUEST_USE)
        self._wait(Reg.ACCESS, Access.ACTIVE_LOCALITY | Access.REG_VALID_STS, 1)

    def relinquish_locality(self) -> None:
        """ACCESS.activeLocality written 1 gives the locality up."""
        self._write(Reg.ACCESS, Access.ACTIVE_LOCALITY)

    def ready(self) -> None:
        """STS.commandReady (tpm_tis_ready)."""
        self._write(Reg.STS, Sts.COMMAND_READY)

    def send(self, cmd: bytes) -> None:
        """tpm_tis_send_data + tpmGo."""
        if not self.status() & Sts.COMMAND_READY:
            self.ready()
            self._wait(Reg.STS, Sts.COMMAND_READY, 1)
        count = 0
        while count < len(cmd) - 1:
            burst = min(self.burst_count(), len(cmd) - 1 - count)
            for byte in cmd[count:count + burst]:
                self._write(Reg.DATA_FIFO, byte)
            count += burst
            status = self._wait(Reg.STS, Sts.VALID, 1)
            if not status & Sts.EXPECT:
                raise DriverError("the TPM stopped expecting data early")
        self._write(Reg.DATA_FIFO, cmd[-1])
        status = self._wait(Reg.STS, Sts.VALID, 1)
        if status & Sts.EXPECT:
            raise DriverError("the TPM still expects data after the last byte")
        self._write(Reg.STS, Sts.TPM_GO)

    def _recv_data(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            self._wait(Reg.STS, Sts.VALID | Sts.DATA_AVAIL, 1)
            burst = min(self.burst_count(), count - len(out))
            out += bytes(self._read(Reg.DATA_FIFO, 1) for _ in range(burst))
        return bytes(out)

    def recv(self) -> bytes:
        """tpm_tis_recv: header, then the rest; no data may be left."""
        self._wait(Reg.STS, Sts.VALID | Sts.DATA_AVAIL, 1)
        header = self._recv_data(10)
        size = struct.unpack_from(">I", header, 2)[0]
        rsp = header + self._recv_data(size - 10)
        status = self._wait(Reg.STS, Sts.VALID, 1)
        if status & Sts.DATA_AVAIL:
            raise DriverError("response longer than its header says")
        return rsp

    def transmit(self, cmd: bytes) -> bytes:
        """One command: locality, send, poll, receive, ready, relinquish."""
        self.request_locality()
        try:
            self.send(cmd)
            rsp = self.recv()
            self.ready()
            return rsp
        finally:
            self.relinquish_locality()


class CrbDriver:
    """A tpm_crb-style driver for the CRB interface of ``dev`` (locality 0)."""

    def __init__(self, dev: Mmio) -> None:
        self.dev = dev

    def _wait(self, reg: int, mask: int, value: int) -> None:
        poll(lambda: self.dev.mmio_read(reg, 4), lambda v: v & mask == value,
             f"0x{value:x}/0x{mask:x} in register 0x{reg:x}")

    def transmit(self, cmd: bytes) -> bytes:
        """One command through the command/response buffer."""
        size = self.dev.mmio_read(CrbReg.CTRL_CMD_SIZE, 4)
        if len(cmd) > size:
            raise DriverError(f"command of {len(cmd)} bytes > buffer of {size}")
        self.dev.mmio_write(CrbReg.LOC_CTRL, 4, LOC_CTRL_REQUEST_ACCESS)
        self._wait(CrbReg.LOC_STS, LOC_STS_GRANTED, LOC_STS_GRANTED)
        try:
            self.dev.mmio_write(CrbReg.CTRL_REQ, 4, CTRL_REQ_CMD_READY)
            self._wait(CrbReg.CTRL_STS, CTRL_STS_IDLE, 0)
            base = self.dev.mmio_read(CrbReg.CTRL_CMD_LADDR, 4) & 0xFFF
            padded = cmd + b"\x00" * (-len(cmd) % 4)
            for at in range(0, len(padded), 4):
                self.dev.mmio_write(base + at, 4, int.from_bytes(padded[at:at + 4], "little"))
            self.dev.mmio_write(CrbReg.CTRL_START, 4, CTRL_START_INVOKE)
            self._wait(CrbReg.CTRL_START, CTRL_START_INVOKE, 0)
            rbase = self.dev.mmio_read(CrbReg.CTRL_RSP_ADDR, 4) & 0xFFF
            header = b"".join(self.dev.mmio_read(rbase + at, 4).to_bytes(4, "little")
                              for at in range(0, 12, 4))[:10]
            size = struct.unpack_from(">I", header, 2)[0]
            words = b"".join(self.dev.mmio_read(rbase + at, 4).to_bytes(4, "little")
                             for at in range(0, size + 3 & ~3, 4))
            self.dev.mmio_write(CrbReg.CTRL_REQ, 4, CTRL_REQ_GO_IDLE)
            return words[:size]
        finally:
            self.dev.mmio_write(CrbReg.LOC_CTRL, 4, LOC_CTRL_RELINQUISH)


# ---------------------------------------------------------------------------- the sequence

def _cmd(code: int, body: bytes = b"", tag: int = TPM_ST_NO_SESSIONS) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


#: The digest extended into PCR 16 by the sequence.
EXTEND_DIGEST = hashlib.sha256(b"swtpm_py tis_driver example").digest()


def command_sequence() -> list[tuple[str, bytes]]:
    """Startup(CLEAR), GetRandom(16), PCR_Extend(16, SHA-256), PCR_Read(SHA-256, PCR 16)."""
    pw = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)       # empty password session
    extend = _cmd(TPM_CC_PCR_EXTEND,
                  struct.pack(">II", 16, len(pw)) + pw
                  + struct.pack(">IH", 1, TPM_ALG_SHA256) + EXTEND_DIGEST, TPM_ST_SESSIONS)
    read = _cmd(TPM_CC_PCR_READ, struct.pack(">IHB3s", 1, TPM_ALG_SHA256, 3, b"\x00\x00\x01"))
    return [("Startup(CLEAR)", _cmd(TPM_CC_STARTUP, struct.pack(">H", 0))),
            ("GetRandom(16)", _cmd(TPM_CC_GET_RANDOM, struct.pack(">H", 16))),
            ("PCR_Extend(16)", extend),
            ("PCR_Read(16)", read)]


def run_sequence(transmit: Callable[[bytes], bytes]) -> list[tuple[str, bytes]]:
    """Send :func:`command_sequence` through ``transmit``; (name, response) pairs."""
    return [(name, transmit(cmd)) for name, cmd in command_sequence()]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interface", choices=("tis", "crb", "both"), default="both")
    parser.add_argument("--state", help="directory for the TPM state (default: in memory)")
    parser.add_argument("--trace", action="store_true", help="print every register access")
    args = parser.parse_args(argv)
    for kind in ("tis", "crb") if args.interface == "both" else (args.interface,):
        platform = Platform()
        if args.state:
            from swtpm_py.storage import DirStorage
            state = Path(args.state) / kind
            state.mkdir(parents=True, exist_ok=True)
            platform = Platform(storage=DirStorage(state))
        tpm = Tpm(platform)
        tpm.power_on()
        dev: Mmio = TisDevice(tpm) if kind == "tis" else CrbDevice(tpm)
        if args.trace:
            dev = Tracing(dev)
        driver = TisDriver(dev) if kind == "tis" else CrbDriver(dev)
        print(f"== {kind.upper()}")
        for name, rsp in run_sequence(driver.transmit):
            rc = struct.unpack_from(">I", rsp, 6)[0]
            print(f"{name:16} rc=0x{rc:03x} {rsp.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
