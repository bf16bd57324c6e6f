"""The TPM-TIS (FIFO) register interface in front of the TPM core: the device a firmware or an
OS driver sees at 0xFED40000 (TCG PC Client Platform TPM Profile (PTP) for TPM 2.0, §6.3 "FIFO
Interface"; REFERENCE.md §4).

:class:`TisDevice` wraps a :class:`swtpm_py.tpm.Tpm` and offers ``mmio_read(offset, size)`` and
``mmio_write(offset, size, value)`` with offsets relative to the TIS base: 4 KiB per locality,
localities 0-4 (0x0000-0x4fff), little-endian accesses of 1, 2 or 4 bytes, naturally aligned.

Where the PTP leaves freedom, the model does exactly what QEMU 7.2's tpm-tis does
(hw/tpm/tpm_tis_common.c); tests/test_tis_qtest.py replays register sequences against QEMU
itself and compares. The choices, in one place:

* A read of an unknown register, and of STS or the FIFO from a locality that is not the active
  one, returns all ones (0xff per byte). Writes from a non-active locality to INT_ENABLE,
  INT_STATUS, STS and the FIFO are ignored; ACCESS works from every locality.
* **Locality 4.** Every write to locality 4 (0x4000-0x4fff) is ignored and reads work, as in
  QEMU: locality 4 is reserved to the platform (PTP §6.5.2.5: only special CPU cycles
  (DRTM/SINIT) reach it), and a guest's MMIO write never is such a cycle. A platform that does
  have locality-4 cycles (a DRTM test harness) constructs the device with
  ``platform_locality4=True``: then locality-4 writes work like any other locality, and the
  PTP's TPM_HASH_END (0x4020), TPM_HASH_DATA (0x4024) and TPM_HASH_START (0x4028) registers
  drive the core's _TPM_Hash_Start/Data/End. The same indications are also available as the
  methods :meth:`TisDevice.hash_start`, :meth:`~TisDevice.hash_data`,
  :meth:`~TisDevice.hash_end` (what swtpm's control channel HASH_* do).
* **Execution.** A command runs synchronously when tpmGo is written (``synchronous=True``,
  the default): the write returns with the response in the FIFO, STS = stsValid | dataAvail.
  With ``synchronous=False`` the device stays in the Execution state (STS shows neither
  dataAvail nor commandReady) until :meth:`TisDevice.complete` runs the command, the way QEMU's
  backend thread finishes later; a commandReady written meanwhile aborts: at completion the
  response is dropped and the locality goes to Ready (QEMU's tpm_tis_prep_abort/abort).
  commandCancel has no effect on the core (swtpm's CANCEL_TPM_CMD does nothing either).
* selfTestDone (STS bit 2) is never set: QEMU sets it only after TPM 1.2's
  TPM_ContinueSelfTest, so a TPM 2 behind QEMU's tpm-tis never shows it (checked by
  tests/test_tis_qtest.py).
* burstCount: while receiving, the free FIFO space (4096 minus the bytes written), clamped to
  0xff for a 1-byte read (QEMU: "byte-sized reads should not return 0x00 for 0x100 available
  bytes"); while a response is available, the bytes left to read (not clamped).
* A FIFO access reads/writes ``size`` bytes, at most up to the end of the 4-byte register;
  XDATA_FIFO (0x80-0xbf) is the same FIFO. A FIFO read without response data returns 0xff.
* Interrupts: an event latches in INT_STATUS only when globalIntEnable and its enable bit are
  set; events raised together (dataAvail and stsValid at completion) latch together if either
  is enabled (QEMU's tpm_tis_raise_irq). INT_VECTOR reads the configured vector (QEMU's ISA default
  5) and ignores writes. There is no IRQ line: ``irq`` is called with True when an interrupt
  is raised and with False when INT_STATUS is cleared to zero.
* tpmEstablishment (ACCESS bit 0, STS.resetEstablishmentBit): ACCESS bit 0 reads 1 while the
  TPM is *not* established (PTP: "0 = a dynamic OS has been established"); the bit comes live
  from the core (``tpm.vol.established``, set by _TPM_Hash_Start). resetEstablishment written
  to STS is honoured from localities 3 and 4 only (PTP §6.5.2.7), ignored from 0-2.
  Two QEMU quirks are *not* copied: QEMU caches the established flag it reads from swtpm once
  and only re-reads it after a reset-establishment (the model reads it live), and QEMU's
  emulator backend sends RESET_TPMESTABLISHED with the locality of the *last command*
  (tpm_emulator.c: ``cur_locty_number``), not of the STS write, so from QEMU a locality-3
  write only works if locality 3 also sent the last command (the model uses the writer's
  locality, as the PTP says).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Callable

from .tpm import Tpm

#: Bytes of register space per locality; the locality is bits 12-14 of the offset.
LOCALITY_SIZE = 0x1000
NUM_LOCALITIES = 5
#: Size of the whole TIS window (QEMU's TPM_TIS_ADDR_SIZE).
TIS_SIZE = NUM_LOCALITIES * LOCALITY_SIZE
#: No locality is active (QEMU's TPM_TIS_NO_LOCALITY).
NO_LOCALITY = 0xFF
#: The FIFO buffer: the largest command or response (QEMU: min(backend 4096, 4096)).
BUFFER_SIZE = 4096
#: What a FIFO read returns when there is no response byte.
NO_DATA_BYTE = 0xFF


class Reg(enum.IntEnum):
    """Register offsets within a locality's 4 KiB (PTP Table 19)."""

    ACCESS = 0x00
    INT_ENABLE = 0x08
    INT_VECTOR = 0x0C
    INT_STATUS = 0x10
    INTF_CAPABILITY = 0x14
    STS = 0x18
    HASH_END = 0x20          # locality 4 only
    DATA_FIFO = 0x24         # TPM_HASH_DATA in locality 4
    HASH_START = 0x28        # locality 4 only
    INTERFACE_ID = 0x30
    XDATA_FIFO = 0x80        # 0x80-0xbf (QEMU: up to the dword at 0xbc)
    XDATA_FIFO_END = 0xBC
    DID_VID = 0xF00
    RID = 0xF04


class Access(enum.IntFlag):
    """TPM_ACCESS_x bits (PTP Table 20)."""

    ESTABLISHMENT = 1 << 0      # reads 1 while NOT established
    REQUEST_USE = 1 << 1
    PENDING_REQUEST = 1 << 2
    SEIZE = 1 << 3
    BEEN_SEIZED = 1 << 4
    ACTIVE_LOCALITY = 1 << 5
    REG_VALID_STS = 1 << 7


class Sts(enum.IntFlag):
    """TPM_STS_x bits (PTP Table 23); burstCount is bits 8-23."""

    RESPONSE_RETRY = 1 << 1
    SELFTEST_DONE = 1 << 2
    EXPECT = 1 << 3
    DATA_AVAIL = 1 << 4
    TPM_GO = 1 << 5
    COMMAND_READY = 1 << 6
    VALID = 1 << 7
    COMMAND_CANCEL = 1 << 24
    RESET_ESTABLISHMENT = 1 << 25
    FAMILY_TPM2 = 1 << 26
    FAMILY_MASK = 3 << 26


class Int(enum.IntFlag):
    """TPM_INT_ENABLE_x / TPM_INT_STATUS_x bits (PTP Tables 24, 25)."""

    DATA_AVAIL = 1 << 0
    STS_VALID = 1 << 1
    LOCALITY_CHANGE = 1 << 2
    POLARITY_LOW_LEVEL = 1 << 3    # typePolarity = 01
    POLARITY_MASK = 3 << 3
    COMMAND_READY = 1 << 7
    GLOBAL_ENABLE = 1 << 31


#: The interrupts the device can raise.
INTERRUPTS = Int.DATA_AVAIL | Int.STS_VALID | Int.LOCALITY_CHANGE | Int.COMMAND_READY
#: TPM_INTF_CAPABILITY: low-level interrupts, dynamic burstCount, 64-byte transfers,
#: interface version "1.3 for TPM 2.0" and the four interrupts (REFERENCE.md §4: 0x30000697).
INTF_CAPABILITY = (1 << 4) | (3 << 9) | (3 << 28) | int(INTERRUPTS)
#: TPM_INTERFACE_ID: FIFO interface, 5 localities, TIS (FIFO) supported (0x00002100).
INTERFACE_ID = (1 << 8) | (1 << 13)
#: TPM_INTERFACE_ID.IntfSelLock.
INTERFACE_ID_SEL_LOCK = 1 << 19
#: TPM_DID_VID: device 0x0001, vendor IBM 0x1014; TPM_RID 0x01 (QEMU's values).
DID_VID = (0x0001 << 16) | 0x1014
RID = 0x01
#: QEMU's ISA tpm-tis interrupt (TPM_TIS_IRQ).
DEFAULT_IRQ = 5


class State(enum.Enum):
    """Per-locality FIFO state (PTP §5.5.2.3 "Command Execution": QEMU's TPMTISState)."""

    IDLE = "idle"
    READY = "ready"
    RECEPTION = "reception"
    EXECUTION = "execution"
    COMPLETION = "completion"


@dataclass
class _Locality:
    access: int = int(Access.REG_VALID_STS)
    sts: int = int(Sts.FAMILY_TPM2)
    inte: int = int(Int.POLARITY_LOW_LEVEL)
    ints: int = 0
    iface_id: int = INTERFACE_ID
    state: State = State.IDLE


def size_mask(size: int) -> int:
    """The value mask of a ``size``-byte access."""
    return (1 << (8 * size)) - 1


def check_access(offset: int, size: int, limit: int) -> None:
    """Accesses are 1, 2 or 4 bytes, naturally aligned, inside the window (QEMU's
    MemoryRegionOps.valid: 1..4 bytes, unaligned accesses refused)."""
    if size not in (1, 2, 4):
        raise ValueError(f"access size {size} is not 1, 2 or 4")
    if offset % size:
        raise ValueError(f"unaligned {size}-byte access at 0x{offset:x}")
    if not 0 <= offset < limit:
        raise ValueError(f"offset 0x{offset:x} outside the register window")


class TisDevice:
    """A TPM-TIS FIFO interface over ``tpm`` (see the module doc for every choice).

    ``tpm`` must be powered on (``tpm.power_on()``) before commands are sent; :meth:`reset`
    is the platform reset (all registers to their reset values, _TPM_Init of the core).
    """

    def __init__(self, tpm: Tpm, *, synchronous: bool = True, platform_locality4: bool = False,
                 irq: Callable[[bool], None] | None = None, irq_num: int = DEFAULT_IRQ) -> None:
        self.tpm = tpm
        self.synchronous = synchronous
        self.platform_locality4 = platform_locality4
        self.irq = irq
        self.irq_num = irq_num
        self._reset_registers()

    # ------------------------------------------------------------------ reset

    def _reset_registers(self) -> None:
        self.loc = [_Locality() for _ in range(NUM_LOCALITIES)]
        self.active = NO_LOCALITY
        #: The locality that becomes active when a pending abort completes, and the one whose
        #: command is being aborted (QEMU's next_locty / aborting_locty).
        self._next = NO_LOCALITY
        self._aborting = NO_LOCALITY
        self.buffer = bytearray(BUFFER_SIZE)
        #: Bytes written into / read from :attr:`buffer` (QEMU's rw_offset).
        self.offset = 0
        #: The locality whose command is executing (valid in the Execution state).
        self._cmd_locality = NO_LOCALITY
        #: Length of the command handed to the core.
        self._cmd_len = 0
        #: A TPM_HASH_START was written: locality 4's DATA_FIFO is TPM_HASH_DATA until
        #: TPM_HASH_END (PTP §6.5.2.9 (locality-4 hash registers)).
        self._hashing = False

    def reset(self) -> None:
        """Platform reset: every register to its reset value, the core re-initialised
        (_TPM_Init), as QEMU's tpm_tis_reset followed by the backend's INIT. Like a real
        reset, no TPM2_Shutdown is sent first (swtpm_py's control channel INIT adds an
        automatic Shutdown(STATE); send one through the FIFO for an orderly reset)."""
        self._reset_registers()
        self.tpm.hash_abort()
        self.tpm.power_on()

    # ------------------------------------------------------------------ helpers

    @property
    def established(self) -> bool:
        """Whether the TPM is established (a _TPM_Hash_Start happened since the last reset
        of the flag)."""
        return bool(self.tpm.vol.established)

    def _set_sts(self, loc: _Locality, flags: int) -> None:
        # QEMU's tpm_tis_sts_set: every status bit is replaced except selfTestDone and the
        # family bits.
        loc.sts = (loc.sts & (Sts.SELFTEST_DONE | Sts.FAMILY_MASK)) | flags

    def _raise_irq(self, locality: int, mask: int) -> None:
        if locality >= NUM_LOCALITIES:
            return
        loc = self.loc[locality]
        if loc.inte & Int.GLOBAL_ENABLE and loc.inte & mask:
            loc.ints |= mask
            if self.irq is not None:
                self.irq(True)

    def _pending_request_except(self, locality: int) -> bool:
        return any(loc.access & Access.REQUEST_USE
                   for n, loc in enumerate(self.loc) if n != locality)

    def _response_len(self) -> int:
        size = struct.unpack_from(">I", self.buffer, 2)[0]
        return min(size, BUFFER_SIZE)

    def _new_active_locality(self, new: int) -> None:
        """Make ``new`` (or no locality) the active one (QEMU's tpm_tis_new_active_locality):
        the old one loses activeLocality, and gets beenSeized when ``new`` seized it."""
        change = self.active != new
        if change and self.active < NUM_LOCALITIES:
            seize = new < NUM_LOCALITIES and bool(self.loc[new].access & Access.SEIZE)
            old = self.loc[self.active]
            if seize:
                old.access &= ~int(Access.ACTIVE_LOCALITY)
                old.access |= Access.BEEN_SEIZED
            else:
                old.access &= ~int(Access.ACTIVE_LOCALITY | Access.REQUEST_USE)
        self.active = new
        if new < NUM_LOCALITIES:
            self.loc[new].access |= Access.ACTIVE_LOCALITY
            self.loc[new].access &= ~int(Access.REQUEST_USE | Access.SEIZE)
        if change:
            self._raise_irq(self.active, Int.LOCALITY_CHANGE)

    def _abort(self) -> None:
        """Finish an abort: the aborting locality goes to Ready (if it stays the active one),
        then the next locality becomes active (QEMU's tpm_tis_abort)."""
        self.offset = 0
        if self._aborting == self._next:
            loc = self.loc[self._aborting]
            loc.state = State.READY
            self._set_sts(loc, Sts.COMMAND_READY)
            self._raise_irq(self._aborting, Int.COMMAND_READY)
        self._new_active_locality(self._next)
        self._next = NO_LOCALITY
        self._aborting = NO_LOCALITY

    def _prep_abort(self, locality: int, new: int) -> None:
        """Abort the command of ``locality`` and hand over to ``new``; while a command
        executes, the abort completes when it does (QEMU's tpm_tis_prep_abort)."""
        self._aborting = locality
        self._next = new
        if any(loc.state is State.EXECUTION for loc in self.loc):
            return  # the core cannot be interrupted: see complete()
        self._abort()

    # ------------------------------------------------------------------ execution

    def _send(self, locality: int) -> None:
        """tpmGo: hand the received command to the core with the locality it came from."""
        self.loc[locality].state = State.EXECUTION
        self._cmd_locality = locality
        self._cmd_len = self.offset
        if self.synchronous:
            self.complete()

    def complete(self) -> None:
        """Run the command in the Execution state, if any, and make its response available
        (or drop it if it was aborted meanwhile). Called by tpmGo in synchronous mode."""
        locality = self._cmd_locality
        if locality >= NUM_LOCALITIES or self.loc[locality].state is not State.EXECUTION:
            return
        # A TPM command between _TPM_Hash_Start and _TPM_Hash_End ends the sequence (as on the
        # data channel, swtpm_py.control.Device).
        self.tpm.hash_abort()
        self._hashing = False
        command = bytes(self.buffer[:self._cmd_len])
        # selfTestDone is never set: QEMU's backend only recognises TPM 1.2's
        # TPM_ContinueSelfTest (tpm_util_is_selftest), never TPM2_SelfTest.
        response = self.tpm.execute(command, locality)[:BUFFER_SIZE]
        self.buffer[:len(response)] = response
        self._cmd_locality = NO_LOCALITY
        loc = self.loc[locality]
        self._set_sts(loc, Sts.VALID | Sts.DATA_AVAIL)
        loc.state = State.COMPLETION
        self.offset = 0
        if self._next < NUM_LOCALITIES:
            self._abort()
        self._raise_irq(locality, Int.DATA_AVAIL | Int.STS_VALID)

    # ------------------------------------------------------------------ platform indications

    def hash_start(self) -> None:
        """_TPM_Hash_Start (a locality-4 indication from the platform): sets the
        established bit in the core and starts the event sequence."""
        self.tpm.hash_start()

    def hash_data(self, data: bytes) -> None:
        """_TPM_Hash_Data: add ``data`` to the running event sequence."""
        self.tpm.hash_data(bytes(data))

    def hash_end(self) -> None:
        """_TPM_Hash_End: measure the event sequence (PCR 17, or PCR 0 before Startup)."""
        self.tpm.hash_end()

    # ------------------------------------------------------------------ MMIO read

    def mmio_read(self, offset: int, size: int) -> int:
        """Read ``size`` bytes (1, 2 or 4) at ``offset`` from the TIS base."""
        check_access(offset, size, TIS_SIZE)
        locality = offset >> 12
        reg = offset & 0xFFC
        shift = (offset & 3) * 8
        loc = self.loc[locality]
        val = 0xFFFFFFFF
        if reg == Reg.ACCESS:
            # SEIZE is internal; pendingRequest and tpmEstablishment are computed.
            val = loc.access & ~int(Access.SEIZE) & 0xFF
            if self._pending_request_except(locality):
                val |= Access.PENDING_REQUEST
            if not self.established:
                val |= Access.ESTABLISHMENT
        elif reg == Reg.INT_ENABLE:
            val = loc.inte
        elif reg == Reg.INT_VECTOR:
            val = self.irq_num
        elif reg == Reg.INT_STATUS:
            val = loc.ints
        elif reg == Reg.INTF_CAPABILITY:
            val = INTF_CAPABILITY
        elif reg == Reg.STS:
            if self.active == locality:
                if loc.sts & Sts.DATA_AVAIL:
                    avail = self._response_len() - self.offset
                else:
                    avail = BUFFER_SIZE - self.offset
                    if size == 1 and avail > 0xFF:
                        avail = 0xFF
                val = (avail << 8) | loc.sts
        elif reg == Reg.DATA_FIFO or Reg.XDATA_FIFO <= reg <= Reg.XDATA_FIFO_END:
            if self.active == locality:
                count = min(size, 4 - (offset & 3))
                val = 0
                for i in range(count):
                    val |= self._fifo_read_byte(locality) << (8 * i)
                shift = 0
        elif reg == Reg.INTERFACE_ID:
            val = loc.iface_id
        elif reg == Reg.DID_VID:
            val = DID_VID
        elif reg == Reg.RID:
            val = RID
        return (int(val) >> shift) & size_mask(size)

    def _fifo_read_byte(self, locality: int) -> int:
        loc = self.loc[locality]
        if loc.state is not State.COMPLETION or not loc.sts & Sts.DATA_AVAIL:
            return NO_DATA_BYTE
        value = self.buffer[self.offset]
        self.offset += 1
        if self.offset >= self._response_len():
            # The last byte: dataAvail drops, stsValid stays.
            self._set_sts(loc, Sts.VALID)
            self._raise_irq(locality, Int.STS_VALID)
        return value

    # ------------------------------------------------------------------ MMIO write

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` bytes (1, 2 or 4) of ``value`` at ``offset`` from the TIS base."""
        check_access(offset, size, TIS_SIZE)
        locality = offset >> 12
        if locality == 4 and not self.platform_locality4:
            return  # only the platform reaches locality 4 (module doc)
        reg = offset & 0xFFC
        shift = (offset & 3) * 8
        mask = size_mask(size)
        val = (value & mask) << shift
        keep = ~(mask << shift) & 0xFFFFFFFF   # the bytes this access does not write
        if reg == Reg.ACCESS:
            self._write_access(locality, val)
        elif reg == Reg.INT_ENABLE:
            if self.active != locality:
                return
            loc = self.loc[locality]
            loc.inte = (loc.inte & keep) | (val & (Int.GLOBAL_ENABLE | Int.POLARITY_MASK
                                                   | INTERRUPTS))
        elif reg == Reg.INT_STATUS:
            if self.active != locality:
                return
            loc = self.loc[locality]
            # Write 1 to clear; the IRQ line drops when nothing is left.
            had = loc.ints
            loc.ints &= ~int(val & INTERRUPTS)
            if had and val & INTERRUPTS and loc.ints == 0 and self.irq is not None:
                self.irq(False)
        elif reg == Reg.STS:
            self._write_sts(locality, val)
        elif reg == Reg.DATA_FIFO or Reg.XDATA_FIFO <= reg <= Reg.XDATA_FIFO_END:
            if locality == 4 and reg == Reg.DATA_FIFO and self._hashing:
                # TPM_HASH_DATA: during a locality-4 event sequence the FIFO feeds it.
                self.hash_data((value & mask).to_bytes(size, "little"))
                return
            self._write_fifo(locality, offset, size, val >> shift)
        elif reg == Reg.HASH_START and locality == 4:
            self.hash_start()
            self._hashing = True
        elif reg == Reg.HASH_END and locality == 4:
            self.hash_end()
            self._hashing = False
        elif reg == Reg.INTERFACE_ID:
            if val & INTERFACE_ID_SEL_LOCK:
                for loc in self.loc:
                    loc.iface_id |= INTERFACE_ID_SEL_LOCK
        # INT_VECTOR is hard-wired; INTF_CAPABILITY, DID_VID, RID are read-only.

    def _write_access(self, locality: int, val: int) -> None:
        """TPM_ACCESS_x (PTP §6.5.2.5): request/relinquish/seize, beenSeized write-1-clear."""
        loc = self.loc[locality]
        if val & Access.SEIZE:
            # A seize ignores requestUse and activeLocality in the same write.
            val &= ~int(Access.REQUEST_USE | Access.ACTIVE_LOCALITY)
        new_active = self.active
        set_new = True
        if val & Access.ACTIVE_LOCALITY:
            if self.active == locality:
                # Relinquish: the highest locality with a pending request gets it next.
                nxt = next((n for n in range(NUM_LOCALITIES - 1, -1, -1)
                            if self.loc[n].access & Access.REQUEST_USE), NO_LOCALITY)
                if nxt != NO_LOCALITY:
                    set_new = False
                    self._prep_abort(locality, nxt)
                else:
                    new_active = NO_LOCALITY
            else:
                # Not the owner: writing activeLocality withdraws a pending request.
                loc.access &= ~int(Access.REQUEST_USE)
        if val & Access.BEEN_SEIZED:
            loc.access &= ~int(Access.BEEN_SEIZED)
        if val & Access.SEIZE:
            # Seize works when no locality is active or the active one is lower; a seize
            # already pending here or by a higher locality wins; lower seizes are cancelled.
            if (self.active >= NUM_LOCALITIES or locality > self.active) \
                    and not loc.access & Access.SEIZE \
                    and not any(self.loc[n].access & Access.SEIZE
                                for n in range(locality + 1, NUM_LOCALITIES)):
                for n in range(locality):
                    self.loc[n].access &= ~int(Access.SEIZE)
                loc.access |= Access.SEIZE
                set_new = False
                self._prep_abort(self.active, locality)
        if val & Access.REQUEST_USE and self.active != locality:
            if self.active < NUM_LOCALITIES:
                loc.access |= Access.REQUEST_USE
            else:
                new_active = locality   # nobody holds it: granted at once
        if set_new:
            self._new_active_locality(new_active)

    def _write_sts(self, locality: int, val: int) -> None:
        """TPM_STS_x writes (PTP §6.5.2.7): exactly one of commandReady, tpmGo or
        responseRetry per write; commandCancel and resetEstablishment alongside."""
        if self.active != locality:
            return
        loc = self.loc[locality]
        if val & Sts.COMMAND_CANCEL:
            pass  # the core runs commands to completion (module doc)
        if val & Sts.RESET_ESTABLISHMENT and locality in (3, 4):
            # PTP §6.5.2.7: only localities 3 and 4 may reset tpmEstablishment.
            self.tpm.vol.established = False
        val &= int(Sts.COMMAND_READY | Sts.TPM_GO | Sts.RESPONSE_RETRY)
        if val == Sts.COMMAND_READY:
            if loc.state is State.READY:
                self.offset = 0
            elif loc.state is State.IDLE:
                self._set_sts(loc, Sts.COMMAND_READY)
                loc.state = State.READY
                self._raise_irq(locality, Int.COMMAND_READY)
            elif loc.state in (State.EXECUTION, State.RECEPTION):
                self._prep_abort(locality, locality)
            elif loc.state is State.COMPLETION:
                # The response is dropped; straight to Ready.
                self.offset = 0
                loc.state = State.READY
                if not loc.sts & Sts.COMMAND_READY:
                    self._set_sts(loc, Sts.COMMAND_READY)
                    self._raise_irq(locality, Int.COMMAND_READY)
                loc.sts &= ~int(Sts.DATA_AVAIL)
        elif val == Sts.TPM_GO:
            if loc.state is State.RECEPTION and not loc.sts & Sts.EXPECT:
                self._send(locality)
        elif val == Sts.RESPONSE_RETRY:
            if loc.state is State.COMPLETION:
                self.offset = 0
                self._set_sts(loc, Sts.VALID | Sts.DATA_AVAIL)

    def _write_fifo(self, locality: int, offset: int, size: int, data: int) -> None:
        """TPM_DATA_FIFO_x writes: command bytes while Ready/Reception (Expect set until the
        header's commandSize bytes are in); dropped in every other state."""
        if self.active != locality:
            return
        loc = self.loc[locality]
        if loc.state not in (State.READY, State.RECEPTION):
            return
        if loc.state is State.READY:
            loc.state = State.RECEPTION
            self._set_sts(loc, Sts.EXPECT | Sts.VALID)
        count = min(size, 4 - (offset & 3))
        while loc.sts & Sts.EXPECT and count > 0:
            if self.offset < BUFFER_SIZE:
                self.buffer[self.offset] = data & 0xFF
                self.offset += 1
                data >>= 8
                count -= 1
            else:
                # Buffer full: Expect drops, the surplus is lost.
                self._set_sts(loc, Sts.VALID)
        if self.offset > 5 and loc.sts & Sts.EXPECT:
            need_irq = not loc.sts & Sts.VALID
            size_field = struct.unpack_from(">I", self.buffer, 2)[0]
            if size_field > self.offset:
                self._set_sts(loc, Sts.EXPECT | Sts.VALID)
            else:
                self._set_sts(loc, Sts.VALID)   # the whole command is in
            if need_irq:
                self._raise_irq(locality, Int.STS_VALID)
