"""Run the same workloads against swtpm_py and the real swtpm and print ops/s and the ratio.

Usage: ``python -m benchmarks [--duration S] [--iterations N] [--workloads a,b] [--profile W]``

Each workload is a TPM command (or a short sequence) sent over the data socket the way real
clients do:

* ``connect``: a new TCP connection per command, as tpm2-tss's swtpm TCTI does;
* ``persistent``: one connection for all commands, as QEMU and swtpm_setup do;
* ``core`` (swtpm_py only): ``Tpm.execute`` called in-process, the cost without any transport.

The NV workloads (``nv_write``, ``nv_read``, ``nv_increment`` on a 1 KiB index and a counter)
change or read the TPM's NVRAM, so where the state lives matters: swtpm_py runs them on each
of its backends (a directory, a blobstore raw image, a blobstore qcow2 image: the ``state``
column) against the real swtpm's directory backend.

The ratio is swtpm_py ops/s divided by swtpm ops/s: higher is better, 1.0 is parity.
``--profile W`` runs workload W through the in-process core under cProfile and prints where
the time goes, grouped by package.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable

from .emulators import Emulator, read_response

NO_SESSIONS, SESSIONS = 0x8001, 0x8002
RS_PW, RH_OWNER = 0x40000009, 0x40000001
SHA256 = 0x000B
CTRL_INIT = 0x02
#: TPM_RC_NV_DEFINED: a set-up NV_DefineSpace of an index an earlier workload defined.
RC_NV_DEFINED = 0x14C


def command(code: int, body: bytes = b"", tag: int = NO_SESSIONS) -> bytes:
    """A TPM 2.0 command: header, then ``body``."""
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def with_password(code: int, handle: int, params: bytes, *more_handles: int) -> bytes:
    """A command whose first handle is authorized by an empty password (TPM_RS_PW);
    ``more_handles`` follow it without authorization."""
    session = struct.pack(">IHBH", RS_PW, 0, 0x01, 0)
    handles = struct.pack(f">{1 + len(more_handles)}I", handle, *more_handles)
    return command(code, handles + struct.pack(">I", len(session)) + session + params,
                   SESSIONS)


#: The NV workloads' indices (owner-authorized, SHA-256 names): 1 KiB of data, and a counter.
NV_DATA, NV_COUNTER, NV_SIZE = 0x01500F00, 0x01500F01, 1024
OWNERWRITE, OWNERREAD, NO_DA, NT_COUNTER = 1 << 1, 1 << 17, 1 << 25, 1 << 4


def nv_define(index: int, attributes: int, size: int) -> bytes:
    """TPM2_NV_DefineSpace(TPM_RH_OWNER, empty auth, no policy)."""
    public = struct.pack(">IHIHH", index, SHA256, attributes, 0, size)
    return with_password(0x12A, RH_OWNER, struct.pack(">H", 0)
                         + struct.pack(">H", len(public)) + public)


NV_PAYLOAD = bytes(range(256)) * (NV_SIZE // 256)
NV_SETUP = (nv_define(NV_DATA, OWNERREAD | OWNERWRITE | NO_DA, NV_SIZE),
            nv_define(NV_COUNTER, OWNERREAD | OWNERWRITE | NO_DA | NT_COUNTER, 8),
            with_password(0x137, RH_OWNER, struct.pack(">H", NV_SIZE) + NV_PAYLOAD
                          + struct.pack(">H", 0), NV_DATA),
            with_password(0x134, RH_OWNER, b"", NV_COUNTER))
#: The swtpm_py state backends the NV workloads are measured on.
NV_BACKENDS = ("dir", "raw", "qcow2")


STARTUP_CLEAR = command(0x144, b"\x00\x00")
SHUTDOWN_CLEAR = command(0x145, b"\x00\x00")


@dataclass(frozen=True)
class Workload:
    """One operation: the commands it sends and whether it first re-initialises the TPM
    through the control channel (INIT)."""

    name: str
    description: str
    commands: tuple[bytes, ...]
    init: bool = False
    #: Commands sent once before measuring (TPM_RC_NV_DEFINED is accepted from them).
    setup: tuple[bytes, ...] = ()
    #: swtpm_py's state backends to measure on (the real swtpm always uses a directory).
    backends: tuple[str, ...] = ("dir",)


WORKLOADS = (
    Workload("getrandom", "GetRandom(32)", (command(0x17B, struct.pack(">H", 32)),)),
    Workload("pcr_extend", "PCR_Extend(16, sha256), password session",
             (with_password(0x182, 16, struct.pack(">IH", 1, SHA256) + b"\x5a" * 32),)),
    Workload("pcr_read", "PCR_Read(sha256: 0-7)",
             (command(0x17E, struct.pack(">IHB", 1, SHA256, 3) + b"\xff\x00\x00"),)),
    Workload("hash", "Hash(1 KiB, sha256, owner ticket)",
             (command(0x17D, struct.pack(">H", 1024) + bytes(range(256)) * 4
                      + struct.pack(">HI", SHA256, RH_OWNER)),)),
    Workload("getcap", "GetCapability(TPM_PROPERTIES, PT_FIXED, 64)",
             (command(0x17A, struct.pack(">III", 6, 0x100, 64)),)),
    Workload("readclock", "ReadClock", (command(0x181),)),
    Workload("init_cycle", "ctrl INIT + Startup(CLEAR) + Shutdown(CLEAR)",
             (STARTUP_CLEAR, SHUTDOWN_CLEAR), init=True),
    # Two writes of different contents per operation: libtpms skips writing NV data that
    # does not change (NvConditionallyWrite), so rewriting the same bytes would measure
    # nothing on the real swtpm.
    Workload("nv_write", "2 x NV_Write(1 KiB index, 1 KiB at offset 0, alternating "
             "contents), owner password",
             tuple(with_password(0x137, RH_OWNER, struct.pack(">H", NV_SIZE) + payload
                                 + struct.pack(">H", 0), NV_DATA)
                   for payload in (NV_PAYLOAD[::-1], NV_PAYLOAD)),
             setup=NV_SETUP, backends=NV_BACKENDS),
    Workload("nv_read", "NV_Read(1 KiB index, 1 KiB at offset 0), owner password",
             (with_password(0x14E, RH_OWNER, struct.pack(">HH", NV_SIZE, 0), NV_DATA),),
             setup=NV_SETUP, backends=NV_BACKENDS),
    Workload("nv_increment", "NV_Increment(counter index), owner password",
             (with_password(0x134, RH_OWNER, b"", NV_COUNTER),),
             setup=NV_SETUP, backends=NV_BACKENDS),
)


class Unsupported(Exception):
    """The emulator cannot run the workload (it answered an error)."""


def check(response: bytes, also: int | None = None) -> None:
    """Every operation must succeed: a workload is only comparable if it does. ``also`` is
    one more acceptable TPM_RC (for set-up commands)."""
    rc = struct.unpack_from(">I", response, 6)[0]
    if rc != 0 and rc != also:
        raise Unsupported(f"TPM_RC 0x{rc:03x}")


def over_socket(emu: Emulator, workload: Workload,
                persistent: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """An operation over ``emu``'s data socket and a function that releases its resources."""
    # Set-up first, on connections of its own: an emulator serves one connection at a time.
    for cmd in workload.setup:
        check(emu.command(cmd), also=RC_NV_DEFINED)
    sock: socket.socket | None = emu.connect() if persistent else None

    def op() -> None:
        if workload.init:
            if emu.ctrl(CTRL_INIT, b"\x00\x00\x00\x00") != bytes(4):
                raise Unsupported("INIT failed")
        for cmd in workload.commands:
            if sock is not None:
                sock.sendall(cmd)
                check(read_response(sock))
            else:
                check(emu.command(cmd))

    def close() -> None:
        if sock is not None:
            sock.close()

    return op, close


def in_process(workload: Workload) -> Callable[[], None]:
    """The operation through swtpm_py's core, without any transport."""
    from swtpm_py.tpm import MemoryStorage, Platform, Tpm

    tpm = Tpm(Platform(MemoryStorage()))
    tpm.power_on()
    check(tpm.execute(STARTUP_CLEAR))
    for cmd in workload.setup:
        check(tpm.execute(cmd), also=RC_NV_DEFINED)

    def op() -> None:
        if workload.init:
            tpm.power_on()
        for cmd in workload.commands:
            check(tpm.execute(cmd))

    return op


def measure(op: Callable[[], None], duration: float, iterations: int | None) -> float:
    """Operations per second: ``iterations`` runs, or as many as fit in ``duration``."""
    for _ in range(3):  # warm-up, and the check that the workload works at all
        op()
    count = 0
    start = time.perf_counter()
    if iterations:
        for _ in range(iterations):
            op()
        count = iterations
    else:
        end = start + duration
        while True:
            op()
            count += 1
            if time.perf_counter() >= end:
                break
    return count / (time.perf_counter() - start)


def fmt(value: float | str | None) -> str:
    """An ops/s cell."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.0f}"


def profile(workload: Workload, duration: float) -> None:
    """cProfile the in-process core on ``workload`` and print the hot spots by package."""
    op = in_process(workload)
    profiler = cProfile.Profile()
    count = 0
    end = time.perf_counter() + duration
    profiler.enable()
    while time.perf_counter() < end:
        op()
        count += 1
    profiler.disable()
    stats = pstats.Stats(profiler)
    groups: dict[str, float] = {}
    total = 0.0
    for (filename, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "/construct/" in filename:
            group = "construct (parse/build)"
        elif "swtpm_py/tpm/" in filename:
            group = "swtpm_py.tpm." + filename.rsplit("swtpm_py/tpm/", 1)[1][:-3].replace("/", ".")
        elif filename == "~":
            group = f"builtins ({func.split(' ')[-1].rstrip('>')})" if "hash" in func or "hmac" in func else "builtins (other)"
        else:
            group = "python stdlib (" + filename.rsplit("/", 1)[-1] + ")"
        groups[group] = groups.get(group, 0.0) + tottime
        total += tottime
    print(f"\ncProfile of {workload.name} ({workload.description}) through Tpm.execute: "
          f"{count} operations, {total / count * 1e6:.1f} us each under the profiler")
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {seconds / total:6.1%}  {group}")
    print()
    stats.sort_stats("tottime").print_stats(15)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=0.8,
                        help="seconds per measurement (default 0.8; the run takes ~50 s)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="a fixed number of operations per measurement instead")
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS),
                        help="comma-separated subset of: "
                             + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--modes", default="connect,persistent,core",
                        help="comma-separated subset of connect, persistent, core")
    parser.add_argument("--profile", metavar="WORKLOAD",
                        help="only profile WORKLOAD in the in-process core")
    args = parser.parse_args(argv)
    by_name = {w.name: w for w in WORKLOADS}
    try:
        workloads = [by_name[n] for n in args.workloads.split(",") if n]
    except KeyError as exc:
        parser.error(f"unknown workload {exc}")
    if args.profile:
        if args.profile not in by_name:
            parser.error(f"unknown workload {args.profile!r}")
        profile(by_name[args.profile], max(args.duration, 2.0))
        return 0
    modes = [m for m in args.modes.split(",") if m]

    rows: list[tuple[str, str, str, float | str | None, float | str | None]] = []
    # One process per (emulator, state backend): swtpm_py on every backend a selected
    # workload asks for, the real swtpm on its directory backend.
    wanted = [("swtpm_py", b) for b in dict.fromkeys(b for w in workloads for b in w.backends)]
    wanted.append(("swtpm", "dir"))
    emulators: dict[tuple[str, str], Emulator] = {}
    try:
        if {"connect", "persistent"} & set(modes):
            for kind, backend in wanted:
                emu = Emulator(kind, backend=backend)
                try:
                    emulators[kind, backend] = emu.start()
                except RuntimeError as exc:
                    emu.stop()
                    print(f"{kind} ({backend}) did not start: {exc}", file=sys.stderr)

        def run_on(key: tuple[str, str], workload: Workload, mode: str) -> float | str:
            emu = emulators.get(key)
            if emu is None:
                return "not running"
            try:
                op, close = over_socket(emu, workload, mode == "persistent")
            except Unsupported as exc:
                return f"n/a ({exc})"
            try:
                return measure(op, args.duration, args.iterations)
            except Unsupported as exc:
                return f"n/a ({exc})"
            finally:
                close()

        for workload in workloads:
            for mode in ("connect", "persistent"):
                if mode not in modes or (workload.init and mode == "persistent"):
                    continue
                theirs = run_on(("swtpm", "dir"), workload, mode)
                for backend in workload.backends:
                    ours = run_on(("swtpm_py", backend), workload, mode)
                    rows.append((workload.name, mode, backend, ours, theirs))
            if "core" in modes:
                try:
                    core: float | str = measure(in_process(workload), args.duration,
                                                args.iterations)
                except Unsupported as exc:
                    core = f"n/a ({exc})"
                rows.append((workload.name, "core", "memory", core, None))
    finally:
        for emu in emulators.values():
            emu.stop()

    print(f"{'workload':<12} {'transport':<11} {'state':<7} {'swtpm_py ops/s':>16} "
          f"{'swtpm ops/s':>16} {'ratio':>7}")
    for name, mode, backend, ours, theirs in rows:
        ratio = (f"{ours / theirs:.2f}" if isinstance(ours, float) and isinstance(theirs, float)
                 else "-")
        print(f"{name:<12} {mode:<11} {backend:<7} {fmt(ours):>16} {fmt(theirs):>16} "
              f"{ratio:>7}")
    print("\nconnect: new TCP connection per command (tpm2-tss swtpm TCTI); persistent: one "
          "connection;\ncore: swtpm_py's Tpm.execute in-process. state: swtpm_py's state "
          "backend (the real swtpm\nalways uses a directory). ratio = swtpm_py / swtpm, "
          "higher is better.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
