"""Start a TPM emulator (ours or the real swtpm) as a subprocess on free ports, for tests.

Both take the same argv (swtpm's), which is the point: whatever a test does to swtpm_py it can
do to the reference swtpm. The data port is P and the control port P+1, as tpm2-tss's swtpm TCTI
expects.
"""

from __future__ import annotations

import os
import shutil
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWTPM_PY = [sys.executable, "-m", "swtpm_py"]
SWTPM = ["swtpm"]


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1.

    Ports come from below Linux's ephemeral range (32768-60999), so that the many short client
    connections the tests make (one per command, as tpm2-tss does) never occupy them.
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000, 2)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free port pair")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes or raise ConnectionError."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


class PortTaken(RuntimeError):
    """The emulator could not bind its ports (someone else took them meanwhile)."""


class Emulator:
    """One emulator process. ``kind`` is "swtpm_py" or "swtpm" (the reference)."""

    def __init__(self, kind: str = "swtpm_py", state_dir: str | Path | None = None,
                 flags: str | None = "not-need-init,startup-clear",
                 extra_args: list[str] | None = None, tpmstate: bool = True,
                 pass_fds: tuple[int, ...] = ()) -> None:
        """``tpmstate=False`` leaves ``--tpmstate dir=...`` out of the command line (the state
        option then comes from ``extra_args``, e.g. ``--blobstore``/``--drive``); the state
        directory still holds the log."""
        self.kind = kind
        self.tpmstate = tpmstate
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix=f"{kind}-state-")
            state_dir = self._tmp
        self.state_dir = Path(state_dir)
        self.flags = flags
        self.extra_args = extra_args or []
        #: File descriptors the process inherits (e.g. ``--key pwdfd=N``).
        self.pass_fds = pass_fds
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-{kind}.log"

    @property
    def ctrl_port(self) -> int:
        """The control channel's TCP port."""
        return self.port + 1

    @property
    def tcti(self) -> str:
        """The tpm2-tss TCTI configuration string (``swtpm:...``)."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def argv(self) -> list[str]:
        """The full command line used to start the emulator."""
        exe = SWTPM_PY if self.kind == "swtpm_py" else SWTPM
        args = exe + ["socket", "--tpm2",
                      "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                      "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1"]
        if self.tpmstate:
            args += ["--tpmstate", f"dir={self.state_dir}"]
        if self.flags:
            args += ["--flags", self.flags]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> "Emulator":
        """Start the process and wait until both ports accept connections. A port taken by
        someone else between choosing and binding it is retried with another pair."""
        for attempt in range(5):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "Emulator":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port_pair()
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            log_start = log.tell()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, pass_fds=self.pass_fds)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                with open(self.log_path, "rb") as log:
                    log.seek(log_start)
                    output = log.read().decode(errors="replace")
                if "Address already in use" in output:
                    raise PortTaken(output)
                raise RuntimeError(f"{self.kind} exited with {rc}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5):
                    pass
                # Both channels must listen: an empty probe of the data port is harmless
                # (tpm2-tss's swtpm TCTI sends one itself).
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.kind} did not listen within {timeout}s")
                time.sleep(0.02)
        return self

    def command(self, cmd: bytes, timeout: float = 30.0) -> bytes:
        """Send one raw TPM command on a new data connection and return the response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(cmd)
            header = recv_exact(s, 10)
            size = struct.unpack(">I", header[2:6])[0]
            return header + recv_exact(s, size - 10)

    def ctrl(self, code: int, body: bytes = b"", reply_size: int | None = None,
             timeout: float = 10.0) -> bytes:
        """Send one control-channel request; read ``reply_size`` bytes (or one recv)."""
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=timeout) as s:
            s.sendall(struct.pack(">I", code) + body)
            if reply_size is not None:
                return recv_exact(s, reply_size)
            return s.recv(4096)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process and wait for it; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        """SIGKILL the process (power loss)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cleanup(self) -> None:
        """Stop and remove a temporary state directory."""
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Emulator":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
