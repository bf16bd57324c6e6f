"""The TPM CRB (Command Response Buffer) interface in front of the TPM core, as QEMU 7.2's
tpm-crb implements it (hw/tpm/tpm_crb.c; TCG PC Client Platform TPM Profile (PTP) for TPM 2.0,
§6.4 "CRB Interface").

:class:`CrbDevice` has the interface of :class:`swtpm_py.tis.TisDevice`: ``mmio_read(offset,
size)`` and ``mmio_write(offset, size, value)``, offsets relative to 0xFED40000, 1/2/4-byte
naturally aligned little-endian accesses. QEMU's choices, mirrored:

* Only locality 0 exists (INTF_ID.CapLocality = 0): the window is 4 KiB, the control area
  0x00-0x7f and the command/response buffer 0x80-0xfff (3968 bytes, plain memory: any access
  reads or writes its bytes). Accesses beyond 4 KiB raise ValueError (QEMU maps nothing there).
* LOC_CTRL: requestAccess (exactly the value 1) grants locality 0 (LOC_STS.Granted,
  LOC_STATE.locAssigned, beenSeized cleared); relinquish (2) releases it; seize and
  resetEstablishment are ignored (the only locality is 0, and localities 0-2 may not reset
  the established bit).
* CTRL_REQ: cmdReady (1) clears CTRL_STS.tpmIdle, goIdle (2) sets it; CTRL_REQ itself reads 0.
* CTRL_START: Start (1) written while locality 0 is assigned and no command runs sends the
  command in the buffer (its header's commandSize, at most the buffer) to the core; the command
  runs synchronously and the response overwrites the start of the buffer, then CTRL_START
  reads 0 again. Without an assigned locality the write is ignored.
* CTRL_CANCEL: accepted, no effect (the core runs commands to completion).
* LOC_STATE bit 0 reads 1 while the TPM is *not* established (QEMU:
  ``!tpm_backend_get_tpm_established_flag()``), live from the core.
* Control registers other than the ones above are read-only (writes ignored).
"""

from __future__ import annotations

import enum
import struct

from .tis import check_access, size_mask
from .tpm import Tpm

#: Base address of the CRB (and TIS) window.
CRB_BASE = 0xFED40000
#: Size of the window QEMU maps (locality 0 only).
CRB_SIZE = 0x1000


class Reg(enum.IntEnum):
    """CRB register offsets (PTP Table 37 / QEMU's include/hw/acpi/tpm.h)."""

    LOC_STATE = 0x00
    LOC_CTRL = 0x08
    LOC_STS = 0x0C
    INTF_ID = 0x30
    INTF_ID2 = 0x34
    CTRL_EXT = 0x38
    CTRL_REQ = 0x40
    CTRL_STS = 0x44
    CTRL_CANCEL = 0x48
    CTRL_START = 0x4C
    INT_ENABLED = 0x50
    INT_STS = 0x54
    CTRL_CMD_SIZE = 0x58
    CTRL_CMD_LADDR = 0x5C
    CTRL_CMD_HADDR = 0x60
    CTRL_RSP_SIZE = 0x64
    CTRL_RSP_ADDR = 0x68
    DATA_BUFFER = 0x80


#: Bytes of control registers before the data buffer.
CONTROL_SIZE = Reg.DATA_BUFFER
#: The command/response buffer size (QEMU's CRB_CTRL_CMD_SIZE: 0x1000 - 0x80).
BUFFER_SIZE = CRB_SIZE - Reg.DATA_BUFFER

# LOC_STATE fields
LOC_STATE_NOT_ESTABLISHED = 1 << 0
LOC_STATE_ASSIGNED = 1 << 1
LOC_STATE_REG_VALID = 1 << 7
# LOC_CTRL values
LOC_CTRL_REQUEST_ACCESS = 1 << 0
LOC_CTRL_RELINQUISH = 1 << 1
LOC_CTRL_SEIZE = 1 << 2
LOC_CTRL_RESET_ESTABLISHMENT = 1 << 3
# LOC_STS fields
LOC_STS_GRANTED = 1 << 0
LOC_STS_BEEN_SEIZED = 1 << 1
# CTRL_REQ values, CTRL_STS fields, CTRL_START / CTRL_CANCEL values
CTRL_REQ_CMD_READY = 1 << 0
CTRL_REQ_GO_IDLE = 1 << 1
CTRL_STS_FATAL = 1 << 0
CTRL_STS_IDLE = 1 << 1
CTRL_START_INVOKE = 1 << 0
CTRL_CANCEL_INVOKE = 1 << 0

#: CRB_INTF_ID as QEMU 7.2 sets it: InterfaceType CRB active (1), InterfaceVersion CRB (1),
#: CapLocality 0 (locality 0 only), CapCRBIdleBypass 0, CapDataXferSizeSupport 64 bytes (3),
#: CapFIFO 0, CapCRB 1, InterfaceSelector CRB (1), RID 0.
INTF_ID = 1 | (1 << 4) | (3 << 11) | (1 << 14) | (1 << 17)
#: CRB_INTF_ID2: VID IBM (0x1014), DID 0.
INTF_ID2 = 0x1014


class CrbDevice:
    """A TPM CRB interface over ``tpm`` (see the module doc).

    ``tpm`` must be powered on before commands are sent; :meth:`reset` is the platform reset.
    """

    def __init__(self, tpm: Tpm) -> None:
        self.tpm = tpm
        self.buffer = bytearray(BUFFER_SIZE)
        self._reset_registers()

    def _reset_registers(self) -> None:
        """QEMU's tpm_crb_reset: registers zeroed, then the fixed values."""
        self.regs = [0] * (CONTROL_SIZE // 4)
        self._set(Reg.LOC_STATE, LOC_STATE_REG_VALID)
        self._set(Reg.CTRL_STS, CTRL_STS_IDLE)
        self._set(Reg.INTF_ID, INTF_ID)
        self._set(Reg.INTF_ID2, INTF_ID2)
        self._set(Reg.CTRL_CMD_SIZE, BUFFER_SIZE)
        self._set(Reg.CTRL_CMD_LADDR, CRB_BASE + Reg.DATA_BUFFER)
        self._set(Reg.CTRL_RSP_SIZE, BUFFER_SIZE)
        self._set(Reg.CTRL_RSP_ADDR, CRB_BASE + Reg.DATA_BUFFER)

    def reset(self) -> None:
        """Platform reset: registers to their reset values, the core re-initialised."""
        self._reset_registers()
        self.tpm.hash_abort()
        self.tpm.power_on()

    def _get(self, reg: int) -> int:
        return self.regs[reg // 4]

    def _set(self, reg: int, value: int) -> None:
        self.regs[reg // 4] = value & 0xFFFFFFFF

    def _update(self, reg: int, bits: int, on: bool) -> None:
        value = self._get(reg)
        self._set(reg, value | bits if on else value & ~bits)

    @property
    def locality_assigned(self) -> bool:
        """Whether locality 0 is assigned (LOC_STATE.locAssigned)."""
        return bool(self._get(Reg.LOC_STATE) & LOC_STATE_ASSIGNED)

    # ------------------------------------------------------------------ MMIO

    def mmio_read(self, offset: int, size: int) -> int:
        """Read ``size`` bytes (1, 2 or 4) at ``offset`` from the CRB base."""
        check_access(offset, size, CRB_SIZE)
        if offset >= CONTROL_SIZE:
            at = offset - CONTROL_SIZE
            return int.from_bytes(self.buffer[at:at + size], "little")
        val = self._get(offset & ~3) >> (8 * (offset & 3))
        if offset == Reg.LOC_STATE and not self.tpm.vol.established:
            val |= LOC_STATE_NOT_ESTABLISHED
        return val & size_mask(size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` bytes (1, 2 or 4) of ``value`` at ``offset`` from the CRB base.

        As in QEMU, a control register reacts to a write at its own offset, whatever the
        access size; the value must then be exactly the request's bit.
        """
        check_access(offset, size, CRB_SIZE)
        value &= size_mask(size)
        if offset >= CONTROL_SIZE:
            at = offset - CONTROL_SIZE
            self.buffer[at:at + size] = value.to_bytes(size, "little")
            return
        if offset == Reg.CTRL_REQ:
            if value == CTRL_REQ_CMD_READY:
                self._update(Reg.CTRL_STS, CTRL_STS_IDLE, False)
            elif value == CTRL_REQ_GO_IDLE:
                self._update(Reg.CTRL_STS, CTRL_STS_IDLE, True)
        elif offset == Reg.CTRL_CANCEL:
            pass  # the core runs commands to completion (module doc)
        elif offset == Reg.CTRL_START:
            if (value == CTRL_START_INVOKE and not self._get(Reg.CTRL_START) & CTRL_START_INVOKE
                    and self.locality_assigned):
                self._start()
        elif offset == Reg.LOC_CTRL:
            if value == LOC_CTRL_RELINQUISH:
                self._update(Reg.LOC_STATE, LOC_STATE_ASSIGNED, False)
                self._update(Reg.LOC_STS, LOC_STS_GRANTED, False)
            elif value == LOC_CTRL_REQUEST_ACCESS:
                self._update(Reg.LOC_STS, LOC_STS_GRANTED, True)
                self._update(Reg.LOC_STS, LOC_STS_BEEN_SEIZED, False)
                self._update(Reg.LOC_STATE, LOC_STATE_ASSIGNED, True)
            # LOC_CTRL_SEIZE / RESET_ESTABLISHMENT: ignored (module doc).

    def _start(self) -> None:
        """CTRL_START.Start: run the command in the buffer, put the response there."""
        self._update(Reg.CTRL_START, CTRL_START_INVOKE, True)
        length = min(struct.unpack_from(">I", self.buffer, 2)[0], BUFFER_SIZE)
        # A TPM command ends a _TPM_Hash_Start sequence (as on the data channel).
        self.tpm.hash_abort()
        response = self.tpm.execute(bytes(self.buffer[:length]), 0)[:BUFFER_SIZE]
        self.buffer[:len(response)] = response
        self._update(Reg.CTRL_START, CTRL_START_INVOKE, False)
