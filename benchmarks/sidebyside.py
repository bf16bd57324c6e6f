"""The runner shared by ``python -m benchmarks.sessions``, ``.objects`` and ``.attest``.

Each of those modules defines named workloads: a function that takes ``send`` (one command
in, its response out, over a kept data connection) and returns the operation to measure. The
runner starts a fresh emulator of each kind per workload (so no session or object is left
from the last one), measures, and prints ops/s and the ratio swtpm_py / swtpm.
"""

from __future__ import annotations

import argparse
import socket
from typing import Callable

from .emulators import Emulator, read_response
from .run import fmt, measure

Send = Callable[[bytes], bytes]
Workload = Callable[[Send], Callable[[], None]]


def sender(sock: socket.socket) -> Send:
    """``send`` over the kept data connection ``sock``."""
    def send(command: bytes) -> bytes:
        sock.sendall(command)
        return read_response(sock)

    return send


def _cell(value: float) -> str:
    """An ops/s cell; slow operations keep two decimals."""
    return f"{value:.2f}" if value < 10 else fmt(value)


def main(prog: str, doc: str | None, workloads: dict[str, tuple[str, Workload]],
         argv: list[str] | None = None) -> int:
    """Parse ``--duration/--iterations/--workloads``, run the chosen ``workloads`` (name ->
    (description, workload)) on both emulators and print the table; the exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=1.0,
                        help="seconds per measurement (default 1)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="a fixed number of operations per measurement instead")
    parser.add_argument("--workloads", default=",".join(workloads),
                        help="comma-separated subset of: " + ", ".join(workloads))
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    for name in names:
        if name not in workloads:
            parser.error(f"unknown workload {name!r}")
    results: dict[str, dict[str, float]] = {name: {} for name in names}
    for kind in ("swtpm_py", "swtpm"):
        for name in names:
            with Emulator(kind) as emu, emu.connect() as sock:
                op = workloads[name][1](sender(sock))
                results[name][kind] = measure(op, args.duration, args.iterations)
    width = max(len("workload"), *(len(n) for n in names))
    print(f"{'workload':<{width}} {'swtpm_py ops/s':>15} {'swtpm ops/s':>12} {'ratio':>6}  what")
    for name in names:
        ours, theirs = results[name]["swtpm_py"], results[name]["swtpm"]
        print(f"{name:<{width}} {_cell(ours):>15} {_cell(theirs):>12} {ours / theirs:>6.2f}  "
              f"{workloads[name][0]}")
    return 0
