"""Start swtpm_py and the real swtpm with the same swtpm argv, and talk to them as clients do.

A copy of the launching logic of tests/emulator.py, kept here so that the benchmarks depend on
nothing but the installed programs: data port P and control port P+1 on 127.0.0.1, flags
``not-need-init,startup-clear`` (what tpm2-tss users run), a throw-away state directory (or,
for swtpm_py, a blobstore image in it).
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: How each emulator is started: the same `socket` argv follows.
COMMANDS = {"swtpm_py": [sys.executable, "-m", "swtpm_py"], "swtpm": ["swtpm"]}


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                # Both emulators listen with SO_REUSEADDR, so a port in TIME_WAIT is fine.
                s2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` octets from ``sock`` (ConnectionError on EOF)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} octets")
        buf += chunk
    return bytes(buf)


#: SO_LINGER with a zero timeout: close() resets the connection instead of leaving it in
#: TIME_WAIT. A benchmark opening tens of thousands of connections would otherwise exhaust
#: the ephemeral ports of the machine (and disturb whatever else runs on it).
NO_LINGER = struct.pack("ii", 1, 0)


def short_lived(address: tuple[str, int]) -> socket.socket:
    """A client connection whose close() leaves no TIME_WAIT behind."""
    s = socket.create_connection(address)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
    return s


def read_response(sock: socket.socket) -> bytes:
    """One TPM response: the header, then the rest its size field announces."""
    header = recv_exact(sock, 10)
    (size,) = struct.unpack_from(">I", header, 2)
    return header + recv_exact(sock, size - 10)


class Emulator:
    """One emulator process on a free port pair, with a temporary state directory."""

    def __init__(self, kind: str, program: list[str] | None = None,
                 backend: str = "dir") -> None:
        """``backend`` is where the state lives: ``dir`` (``--tpmstate dir=...``, both
        emulators) or, for swtpm_py, ``raw`` / ``qcow2``: a blobstore image created in the
        throw-away directory on first start (``--blobstore name=tpm,drive=d0,create --drive
        id=d0,file=...,format=...``)."""
        self.kind = kind
        self.program = program or COMMANDS[kind]
        self.backend = backend
        self.port = 0
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        self.proc: subprocess.Popen | None = None

    def state_args(self) -> list[str]:
        """The command-line options that say where the TPM state lives."""
        if self.backend == "dir":
            return ["--tpmstate", f"dir={self.state_dir}"]
        image = self.state_dir / f"tpm.{self.backend}"
        return ["--blobstore", "name=tpm,drive=d0,create",
                "--drive", f"id=d0,file={image},format={self.backend}"]

    @property
    def ctrl_port(self) -> int:
        """The control channel's port."""
        return self.port + 1

    def start(self, timeout: float = 10.0) -> "Emulator":
        """Start the process and wait until both ports accept connections."""
        self.port = free_port_pair()
        argv = self.program + [
            "socket", "--tpm2",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
            *self.state_args(),
            "--flags", "not-need-init,startup-clear"]
        log = open(self.state_dir / "emulator.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                text = (self.state_dir / "emulator.log").read_text(errors="replace")
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {text}")
            try:
                # Both channels must listen before the first workload connects (swtpm binds
                # the control port first); an empty connection to the data port is harmless
                # (tpm2-tss's swtpm TCTI makes one itself).
                with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5):
                    pass
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.kind} did not listen within {timeout} s")
                time.sleep(0.02)
        return self

    def command(self, command: bytes) -> bytes:
        """One command on a new data connection (what tpm2-tss's swtpm TCTI does)."""
        with short_lived(("127.0.0.1", self.port)) as s:
            s.sendall(command)
            return read_response(s)

    def connect(self) -> socket.socket:
        """A data connection to keep for many commands."""
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def ctrl(self, code: int, body: bytes = b"", reply_size: int = 4) -> bytes:
        """One control-channel request on a new connection."""
        with short_lived(("127.0.0.1", self.ctrl_port)) as s:
            s.sendall(struct.pack(">I", code) + body)
            return recv_exact(s, reply_size)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s), then remove the state directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
