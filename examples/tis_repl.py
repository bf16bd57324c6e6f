#!/usr/bin/env python3
"""Poke the TPM-TIS (or CRB) registers of an in-process swtpm_py TPM by hand.

Usage::

    python3 examples/tis_repl.py [--crb] [--state DIR] [--platform-locality4] [--deferred]

Commands (offsets are relative to 0xFED40000; numbers in hex or decimal):

    r OFFSET [SIZE]          read 1, 2 or 4 bytes (default 4)
    w OFFSET VALUE [SIZE]    write (default size 1)
    regs [LOCALITY]          decode ACCESS, STS, INT_*, ... of one locality (TIS) / all (CRB)
    send HEX [LOCALITY]      run one command the tpm_tis_core way, print the response
    startup                  send TPM2_Startup(CLEAR) through the interface
    complete                 finish a command started with tpmGo (--deferred only)
    hash_start | hash_data HEX | hash_end     the platform's _TPM_Hash_* indications
    reset                    platform reset (registers and _TPM_Init)
    quit

A session (the TIS request/commandReady/tpmGo dance by hand)::

    tis> w 0x0 0x02            # ACCESS_0.requestUse
    tis> w 0x18 0x40           # STS_0.commandReady
    tis> regs 0
    tis> send 80010000000c0000017b0008
"""

from __future__ import annotations

import argparse
import cmd
import importlib.util
import shlex
import struct
import sys
from pathlib import Path

if importlib.util.find_spec("swtpm_py") is None:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tis_driver import CrbDriver, DriverError, TisDriver  # noqa: E402

from swtpm_py import crb  # noqa: E402
from swtpm_py.tis import Access, Reg, Sts, TisDevice  # noqa: E402
from swtpm_py.tpm import Platform, Tpm  # noqa: E402


def _num(text: str) -> int:
    return int(text, 0)


def _flags(value: int, names: dict[int, str]) -> str:
    return " ".join(name for bit, name in names.items() if value & bit) or "-"


ACCESS_NAMES = {Access.REG_VALID_STS: "tpmRegValidSts", Access.ACTIVE_LOCALITY: "activeLocality",
                Access.BEEN_SEIZED: "beenSeized", Access.PENDING_REQUEST: "pendingRequest",
                Access.REQUEST_USE: "requestUse",
                Access.ESTABLISHMENT: "tpmEstablishment(=not established)"}
STS_NAMES = {Sts.FAMILY_TPM2: "family=TPM2", Sts.VALID: "stsValid",
             Sts.COMMAND_READY: "commandReady", Sts.DATA_AVAIL: "dataAvail",
             Sts.EXPECT: "Expect", Sts.SELFTEST_DONE: "selfTestDone"}


class Repl(cmd.Cmd):
    """The register poker (see the module doc)."""

    def __init__(self, device, is_crb: bool) -> None:
        super().__init__()
        self.dev = device
        self.is_crb = is_crb
        self.prompt = "crb> " if is_crb else "tis> "

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except (ValueError, IndexError, DriverError) as exc:
            print(f"error: {exc}")
            return False

    def emptyline(self) -> bool:
        return False

    def do_r(self, arg: str) -> None:
        """r OFFSET [SIZE]: read."""
        args = shlex.split(arg)
        offset, size = _num(args[0]), _num(args[1]) if len(args) > 1 else 4
        print(f"0x{self.dev.mmio_read(offset, size):0{2 * size}x}")

    def do_w(self, arg: str) -> None:
        """w OFFSET VALUE [SIZE]: write."""
        args = shlex.split(arg)
        size = _num(args[2]) if len(args) > 2 else 1
        self.dev.mmio_write(_num(args[0]), size, _num(args[1]))

    def do_regs(self, arg: str) -> None:
        """regs [LOCALITY]: decode the registers."""
        read = self.dev.mmio_read
        if self.is_crb:
            for reg in crb.Reg:
                if reg != crb.Reg.DATA_BUFFER:
                    print(f"{reg.name:16} 0x{read(reg, 4):08x}")
            return
        base = (_num(arg) if arg.strip() else 0) << 12
        acc, sts = read(base + Reg.ACCESS, 1), read(base + Reg.STS, 4)
        print(f"ACCESS          0x{acc:02x}  {_flags(acc, ACCESS_NAMES)}")
        print(f"STS             0x{sts:08x}  burstCount={(sts >> 8) & 0xFFFF} "
              f"{_flags(sts, STS_NAMES) if sts != 0xFFFFFFFF else '(not the active locality)'}")
        for reg in (Reg.INT_ENABLE, Reg.INT_VECTOR, Reg.INT_STATUS, Reg.INTF_CAPABILITY,
                    Reg.INTERFACE_ID, Reg.DID_VID, Reg.RID):
            print(f"{reg.name:16}0x{read(base + reg, 4):08x}")

    def do_send(self, arg: str) -> None:
        """send HEX [LOCALITY]: one command through the interface."""
        args = shlex.split(arg)
        command = bytes.fromhex(args[0])
        if self.is_crb:
            rsp = CrbDriver(self.dev).transmit(command)
        else:
            rsp = TisDriver(self.dev, _num(args[1]) if len(args) > 1 else 0).transmit(command)
        print(f"rc=0x{struct.unpack_from('>I', rsp, 6)[0]:x} {rsp.hex()}")

    def do_startup(self, arg: str) -> None:
        """startup: TPM2_Startup(CLEAR)."""
        self.do_send("80010000000c000001440000")

    def do_complete(self, arg: str) -> None:
        """complete: run the command waiting in the Execution state (--deferred)."""
        if self.is_crb:
            print("error: CRB commands always run at once")
            return
        self.dev.complete()

    def do_hash_start(self, arg: str) -> None:
        """hash_start: _TPM_Hash_Start."""
        self.dev.tpm.hash_start()

    def do_hash_data(self, arg: str) -> None:
        """hash_data HEX: _TPM_Hash_Data."""
        self.dev.tpm.hash_data(bytes.fromhex(arg.strip()))

    def do_hash_end(self, arg: str) -> None:
        """hash_end: _TPM_Hash_End."""
        self.dev.tpm.hash_end()

    def do_reset(self, arg: str) -> None:
        """reset: platform reset."""
        self.dev.reset()

    def do_quit(self, arg: str) -> bool:
        """quit."""
        return True

    do_EOF = do_quit


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module doc)."""
    parser = argparse.ArgumentParser(description="Poke TPM-TIS/CRB registers.")
    parser.add_argument("--crb", action="store_true", help="the CRB interface instead of TIS")
    parser.add_argument("--state", help="directory for the TPM state (default: in memory)")
    parser.add_argument("--platform-locality4", action="store_true",
                        help="let writes reach locality 4 (TIS; a DRTM platform)")
    parser.add_argument("--deferred", action="store_true",
                        help="tpmGo leaves the command executing until 'complete' (TIS)")
    args = parser.parse_args(argv)
    platform = Platform()
    if args.state:
        from swtpm_py.storage import DirStorage
        Path(args.state).mkdir(parents=True, exist_ok=True)
        platform = Platform(storage=DirStorage(args.state))
    tpm = Tpm(platform)
    tpm.power_on()
    if args.crb:
        device = crb.CrbDevice(tpm)
    else:
        device = TisDevice(tpm, synchronous=not args.deferred,
                           platform_locality4=args.platform_locality4)
    Repl(device, args.crb).cmdloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
