"""The emulator process: transports, start/stop, flags, files (swtpm_py.server, swtpm_py.cli).

Tests that take ``kind`` run against swtpm_py *and* the reference swtpm 0.7.1 with the same
argv and assert the same outcome; the others pin down where swtpm_py deliberately differs
(each says how the reference behaves).
"""

from __future__ import annotations

import array
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from emulator import SWTPM, SWTPM_PY, recv_exact
from swtpm_py.server import CommandFramer
from tpmcmd import cmd, rc, read_clock_info, startup
from swtpm_py.tpm.constants import CC

REPO = Path(__file__).resolve().parent.parent
READ_CLOCK = cmd(CC.ReadClock)
FAILURE_REPLY = bytes.fromhex("80010000000a00000101")
KINDS = ["swtpm_py", "swtpm"]


# ---------------------------------------------------------------------------- helpers


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port P such that P and P+1 are free, taken below Linux's ephemeral range: clients
    that open a connection per command (tpm2-tss) leave thousands of TIME_WAIT sockets on
    ephemeral ports, which block a listening bind there."""
    for _ in range(500):
        port = random.randrange(10000, 32000)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free port pair")


def spawn(kind: str, args: list[str], tmp_path: Path, pass_fds: tuple[int, ...] = (),
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``<kind> socket <args>`` with its output in tmp_path/<kind>.out."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    exe = SWTPM_PY if kind == "swtpm_py" else SWTPM
    out = open(tmp_path / f"{kind}.out", "ab")
    try:
        return subprocess.Popen(exe + ["socket"] + args, stdout=out, stderr=subprocess.STDOUT,
                                env=full_env, pass_fds=pass_fds)
    finally:
        out.close()


def output(tmp_path: Path, kind: str) -> str:
    """What the process printed."""
    return (tmp_path / f"{kind}.out").read_text(errors="replace")


def connect(address: tuple | str, timeout: float = 5.0,
            proc: subprocess.Popen | None = None) -> socket.socket:
    """Connect to a TCP (host, port) or unix path, retrying until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(address)
            return s
        except OSError:
            s.close()
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def ctrl_call(address: tuple | str, code: int, body: bytes = b"", size: int = 4) -> bytes:
    """One control request on a new connection; ``size`` bytes of reply."""
    with connect(address) as s:
        s.sendall(struct.pack(">I", code) + body)
        return recv_exact(s, size)


def tpm_call(sock: socket.socket, command: bytes) -> bytes:
    """Send a command on an open data connection and read one response."""
    sock.sendall(command)
    header = recv_exact(sock, 10)
    return header + recv_exact(sock, struct.unpack(">I", header[2:6])[0] - 10)


def tcp_args(port: int, state: Path, flags: str | None = "not-need-init,startup-clear",
             server_extra: str = "") -> list[str]:
    args = ["--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1{server_extra}",
            "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--tpmstate", f"dir={state}"]
    return args + (["--flags", flags] if flags else [])


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM and wait (kill after 5 s); the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def procs():
    """Processes to stop at the end of a test."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def started_tcp(kind: str, tmp_path: Path, state: Path, procs: list, **kw: object) -> tuple:
    port = free_port_pair()
    proc = spawn(kind, tcp_args(port, state, **kw), tmp_path)  # type: ignore[arg-type]
    procs.append(proc)
    connect(("127.0.0.1", port + 1), proc=proc).close()
    connect(("127.0.0.1", port), proc=proc).close()
    return proc, port


# ---------------------------------------------------------------------------- framer (sans-I/O)


def test_framer_reassembles_by_the_size_field() -> None:
    f = CommandFramer(lambda: 4096)
    command = startup()
    assert f.feed(command[:3]) == [] and f.pending
    assert f.feed(command[3:11]) == []
    assert f.feed(command[11:]) == [command] and not f.pending
    assert f.feed(READ_CLOCK) == [READ_CLOCK]


def test_framer_takes_surplus_bytes_as_part_of_the_message() -> None:
    # swtpm executes what one read returned: a command with trailing bytes is one (bad)
    # command, answered TPM_RC_COMMAND_SIZE, not a command and the start of another.
    f = CommandFramer(lambda: 4096)
    assert f.feed(READ_CLOCK + READ_CLOCK[:4]) == [READ_CLOCK + READ_CLOCK[:4]]
    assert not f.pending


def test_framer_handles_the_send_command_prefix() -> None:
    f = CommandFramer(lambda: 4096)
    message = struct.pack(">IBI", 8, 3, len(READ_CLOCK)) + READ_CLOCK
    assert f.feed(message[:12]) == []
    assert f.feed(message[12:]) == [message]


def test_framer_answers_bad_sizes_at_once_and_skips_the_rest() -> None:
    f = CommandFramer(lambda: 4096)
    big = struct.pack(">HII", 0x8001, 5000, CC.ReadClock) + b"\0" * 100
    assert f.feed(big) == [big] and not f.pending
    assert f.feed(b"\0" * 4890) == []                  # the rest of the oversized command
    assert f.feed(READ_CLOCK) == [READ_CLOCK]          # in step again
    small = struct.pack(">HII", 0x8001, 5, CC.ReadClock)
    assert f.feed(small) == [small]
    g = CommandFramer(lambda: 3000)                    # SET_BUFFERSIZE lowers the limit
    over = struct.pack(">HII", 0x8001, 3001, CC.ReadClock)
    assert g.feed(over) == [over]


def test_framer_flush_returns_a_partial_command_of_at_least_a_header() -> None:
    f = CommandFramer(lambda: 4096)
    f.feed(READ_CLOCK[:6])
    assert f.flush() is None and f.pending            # no header yet: keep waiting
    g = CommandFramer(lambda: 4096)
    partial = startup()[:10]
    assert g.feed(partial) == []
    assert g.flush() == partial and g.flush() is None and not g.pending


# ---------------------------------------------------------------------------- start and stop


@pytest.mark.parametrize("kind", KINDS)
def test_accepts_connections_within_one_second(kind: str, tmp_path: Path, state: Path,
                                               procs: list) -> None:
    port = free_port_pair()
    t0 = time.monotonic()
    proc = spawn(kind, tcp_args(port, state), tmp_path)
    procs.append(proc)
    connect(("127.0.0.1", port + 1), proc=proc).close()
    with connect(("127.0.0.1", port), proc=proc) as s:
        assert time.monotonic() - t0 < 1.0
        assert rc(tpm_call(s, READ_CLOCK)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_exits_within_one_second(kind: str, tmp_path: Path, state: Path,
                                         procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        tpm_call(s, READ_CLOCK)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
    assert time.monotonic() - t0 < 1.0
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("taken", ["data", "ctrl"])
def test_port_in_use_fails_promptly(kind: str, taken: str, tmp_path: Path, state: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        if taken == "ctrl":
            port -= 1
        t0 = time.monotonic()
        proc = spawn(kind, tcp_args(port, state), tmp_path)
        proc.wait(10)
    assert time.monotonic() - t0 < 1.5
    assert proc.returncode == 1
    assert "Address already in use" in output(tmp_path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_replies_then_exits(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    with connect(("127.0.0.1", port + 1)) as c:
        c.sendall(struct.pack(">I", 3))
        assert recv_exact(c, 4) == bytes(4)
        assert c.recv(10) == b""            # then the connection (and the process) ends
    assert proc.wait(5) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_startup_deactivated_is_refused_for_tpm2(kind: str, tmp_path: Path, state: Path) -> None:
    port = free_port_pair()
    proc = spawn(kind, tcp_args(port, state, flags="startup-deactivated"), tmp_path)
    assert proc.wait(10) == 0
    assert "TPM 2 does not support startup deactivated." in output(tmp_path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_option_is_a_usage_error(kind: str, tmp_path: Path) -> None:
    r = subprocess.run((SWTPM_PY if kind == "swtpm_py" else SWTPM)
                       + ["socket", "--tpm2", "--no-such-option"], capture_output=True,
                       text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and r.stdout == ""
    assert "Usage:" in r.stderr and "--no-such-option" in r.stderr


@pytest.mark.parametrize("option", [["--migration", "incoming"], ["--runas", "nobody"]])
def test_options_that_cannot_be_honoured_are_refused(option: list[str], tmp_path: Path,
                                                     state: Path) -> None:
    r = subprocess.run(SWTPM_PY + ["socket"] + tcp_args(free_port_pair(), state) + option,
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1
    assert option[0] in r.stderr and "not supported" in r.stderr


def test_file_backend_never_reformats_a_foreign_volume(tmp_path: Path) -> None:
    vol = tmp_path / "vol.img"
    vol.write_bytes(b"not a blobstore" * 100_000)
    r = subprocess.run(SWTPM_PY + ["socket", "--tpm2", "--ctrl",
                                   f"type=unixio,path={tmp_path}/ctrl",
                                   "--tpmstate", f"backend-uri=file://{vol}"],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1 and "blobstore check" in r.stderr and "formatifbad" in r.stderr
    assert vol.read_bytes() == b"not a blobstore" * 100_000


# ---------------------------------------------------------------------------- data channel


@pytest.mark.parametrize("kind", KINDS)
def test_failure_reply_before_init(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs, flags=None)
    with connect(("127.0.0.1", port)) as s:
        assert tpm_call(s, READ_CLOCK) == FAILURE_REPLY
        assert ctrl_call(("127.0.0.1", port + 1), 2, bytes(4)) == bytes(4)   # INIT
        assert rc(tpm_call(s, READ_CLOCK)) == 0x100      # TPM_RC_INITIALIZE: no Startup yet
        assert rc(tpm_call(s, startup())) == 0
        assert rc(tpm_call(s, READ_CLOCK)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_send_command_prefix(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    pcr_reset_20 = bytes.fromhex("80020000001b0000013d00000014000000094000000900000100" "00")
    with connect(("127.0.0.1", port)) as s:
        s.sendall(struct.pack(">IBI", 8, 2, len(pcr_reset_20)) + pcr_reset_20)
        size = struct.unpack(">I", recv_exact(s, 4))[0]
        response = recv_exact(s, size)
        assert rc(response) == 0 and struct.unpack_from(">I", response, 2)[0] == size
        assert recv_exact(s, 4) == bytes(4)
        # The locality of the prefix stays: a plain PCR_Reset(20) works at locality 2 too,
        assert rc(tpm_call(s, pcr_reset_20)) == 0
        # until SET_LOCALITY(0) (tpm2-tss sends it with a 1-byte body).
        assert ctrl_call(("127.0.0.1", port + 1), 5, b"\x00") == bytes(4)
        assert rc(tpm_call(s, pcr_reset_20)) == 0x907


@pytest.mark.parametrize("kind", KINDS)
def test_disconnect_closes_after_each_response(kind: str, tmp_path: Path, state: Path,
                                               procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs, server_extra=",disconnect")
    for _ in range(2):
        with connect(("127.0.0.1", port)) as s:
            assert rc(tpm_call(s, READ_CLOCK)) == 0
            assert s.recv(10) == b""


@pytest.mark.parametrize("kind", KINDS)
def test_connection_is_kept_without_disconnect(kind: str, tmp_path: Path, state: Path,
                                               procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        clocks = [read_clock_info(tpm_call(s, READ_CLOCK))["clock"] for _ in range(3)]
    assert clocks == sorted(clocks)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_probe_connections_are_tolerated(kind: str, tmp_path: Path, state: Path,
                                               procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    for _ in range(3):   # tpm2-tss connects and closes the data port without a byte
        connect(("127.0.0.1", port)).close()
        connect(("127.0.0.1", port + 1)).close()
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
    assert proc.poll() is None


def _read_response(s: socket.socket) -> bytes:
    header = recv_exact(s, 10)
    return header + recv_exact(s, struct.unpack_from(">I", header, 2)[0] - 10)


GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")


@pytest.mark.parametrize("kind", KINDS)
def test_command_split_inside_the_header(kind: str, tmp_path: Path, state: Path,
                                         procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        s.sendall(READ_CLOCK[:4])
        time.sleep(0.1)
        s.sendall(READ_CLOCK[4:])
        assert rc(_read_response(s)) == 0


def test_command_split_after_the_header(tmp_path: Path, state: Path, procs: list) -> None:
    # swtpm_py reassembles by the size field. (swtpm 0.7.1 executes whatever one read
    # returned once it has 10 bytes, so it answers TPM_RC_COMMAND_SIZE here.)
    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        s.sendall(GET_RANDOM_8[:10])
        time.sleep(0.1)
        s.sendall(GET_RANDOM_8[10:])
        response = _read_response(s)
    assert rc(response) == 0 and struct.unpack_from(">H", response, 10)[0] == 8


def test_truncated_command_is_answered_after_the_deadline(tmp_path: Path, state: Path,
                                                          procs: list) -> None:
    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
        t0 = time.monotonic()
        s.sendall(bytes.fromhex("80010000000c00000144"))  # Startup without its parameter
        header = recv_exact(s, 10)
        assert 0.4 < time.monotonic() - t0 < 2.0
        assert rc(header) == 0x142                        # TPM_RC_COMMAND_SIZE
        assert rc(tpm_call(s, READ_CLOCK)) == 0           # and the connection still serves


def test_oversized_command_gets_one_reply_and_the_stream_stays_in_step(
        tmp_path: Path, state: Path, procs: list) -> None:
    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)
    big = struct.pack(">HII", 0x8001, 5000, CC.GetRandom) + bytes(4990)
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, big)) == 0x142
        assert rc(tpm_call(s, READ_CLOCK)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_one_data_client_at_a_time(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    first = connect(("127.0.0.1", port))
    assert rc(tpm_call(first, READ_CLOCK)) == 0
    second = connect(("127.0.0.1", port))      # waits in the backlog
    second.sendall(READ_CLOCK)
    second.settimeout(0.3)
    with pytest.raises(socket.timeout):
        second.recv(10)
    first.close()
    second.settimeout(5)
    assert rc(recv_exact(second, 10)) == 0
    second.close()


@pytest.mark.parametrize("kind", KINDS)
def test_terminate_exits_when_the_data_connection_closes(kind: str, tmp_path: Path,
                                                         state: Path, procs: list) -> None:
    port = free_port_pair()
    proc = spawn(kind, tcp_args(port, state) + ["-t"], tmp_path)
    procs.append(proc)
    connect(("127.0.0.1", port + 1), proc=proc).close()
    with connect(("127.0.0.1", port), proc=proc) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
        assert proc.poll() is None
    assert proc.wait(5) == 0


# ---------------------------------------------------------------------------- control channel


@pytest.mark.parametrize("kind", KINDS)
def test_control_request_split_in_writes(kind: str, tmp_path: Path, state: Path,
                                         procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs, flags=None)
    with connect(("127.0.0.1", port + 1)) as c:
        for piece in (b"\0\0", b"\0\x02\0\0", b"\0\0"):     # INIT(0) in three writes
            c.sendall(piece)
            time.sleep(0.1)
        assert recv_exact(c, 4) == bytes(4)
        c.sendall(struct.pack(">I", 4))                     # GET_TPMESTABLISHED
        assert recv_exact(c, 8) == bytes(8)


@pytest.mark.parametrize("kind", KINDS)
def test_incomplete_control_request_closes_the_connection(kind: str, tmp_path: Path,
                                                          state: Path, procs: list) -> None:
    proc, port = started_tcp(kind, tmp_path, state, procs)
    with connect(("127.0.0.1", port + 1)) as c:
        c.sendall(struct.pack(">I", 2) + b"\0")            # INIT needs 4 body bytes
        t0 = time.monotonic()
        assert c.recv(10) == b""
        assert 0.4 < time.monotonic() - t0 < 2.0
    assert ctrl_call(("127.0.0.1", port + 1), 1, size=8)[4:] != bytes(4)   # still serving


@pytest.mark.parametrize("kind", KINDS)
def test_unixio_data_and_control(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    data_path, ctrl_path = str(tmp_path / "data.sock"), str(tmp_path / "ctrl.sock")
    proc = spawn(kind, ["--tpm2", "--server", f"type=unixio,path={data_path}",
                        "--ctrl", f"type=unixio,path={ctrl_path},mode=0600",
                        "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"],
                 tmp_path)
    procs.append(proc)
    connect(ctrl_path, proc=proc).close()
    connect(data_path, proc=proc).close()
    assert os.stat(ctrl_path).st_mode & 0o777 == 0o600
    assert os.stat(data_path).st_mode & 0o777 == 0o770     # swtpm's default
    with connect(data_path) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
    assert ctrl_call(ctrl_path, 1, size=8)[:4] == bytes(4)
    assert stop(proc) == 0
    assert not os.path.exists(ctrl_path) and not os.path.exists(data_path)


def _send_fd(sock: socket.socket, code: int, fd: int) -> None:
    sock.sendmsg([struct.pack(">I", code)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


@pytest.mark.parametrize("kind", KINDS)
def test_set_datafd_like_qemu(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    ctrl_path = str(tmp_path / "ctrl.sock")
    proc = spawn(kind, ["--tpm2", "--ctrl", f"type=unixio,path={ctrl_path}",
                        "--tpmstate", f"dir={state}"], tmp_path)
    procs.append(proc)
    with connect(ctrl_path, proc=proc) as c:
        ours, theirs = socket.socketpair()
        with ours:
            _send_fd(c, 0x10, theirs.fileno())
            theirs.close()
            assert recv_exact(c, 4) == bytes(4)
            ours.settimeout(5)
            assert tpm_call(ours, READ_CLOCK) == FAILURE_REPLY       # QEMU's probe
            c.sendall(struct.pack(">I", 0x10))
            assert recv_exact(c, 4) == struct.pack(">I", 0x1F)        # one is already set
            c.sendall(struct.pack(">II", 2, 0))
            assert recv_exact(c, 4) == bytes(4)                       # INIT
            assert rc(tpm_call(ours, startup())) == 0
            assert rc(tpm_call(ours, READ_CLOCK)) == 0
        time.sleep(0.2)                       # the data connection is gone; a new one may come
        assert proc.poll() is None
        c.sendall(struct.pack(">I", 0x10))
        assert recv_exact(c, 4) == struct.pack(">I", 0x03)            # no fd in the message
        c.sendall(struct.pack(">I", 3))
        assert recv_exact(c, 4) == bytes(4)
    assert proc.wait(5) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_inherited_sockets_like_swtpm_setup(kind: str, tmp_path: Path, state: Path,
                                            procs: list) -> None:
    data_ours, data_theirs = socket.socketpair()
    ctrl_ours, ctrl_theirs = socket.socketpair()
    fds = (data_theirs.fileno(), ctrl_theirs.fileno())
    proc = spawn(kind, ["--tpm2", "--flags", "not-need-init,startup-clear",
                        # swtpm_setup adds ",lock" for newer swtpm (0.7.1 refuses it)
                        "--tpmstate", f"backend-uri=dir://{state}"
                        + (",lock" if kind == "swtpm_py" else ""),
                        "--server", f"type=tcp,fd={fds[0]}",
                        "--ctrl", f"type=unixio,clientfd={fds[1]}",
                        "--pid", f"file={tmp_path / 'pid'}"], tmp_path, pass_fds=fds)
    procs.append(proc)
    data_theirs.close()
    ctrl_theirs.close()
    for s in (data_ours, ctrl_ours):
        s.settimeout(5)
    ctrl_ours.sendall(struct.pack(">I", 1))
    assert recv_exact(ctrl_ours, 8)[:4] == bytes(4)
    assert rc(tpm_call(data_ours, READ_CLOCK)) == 0
    data_ours.close()                       # an inherited data connection ends the process
    assert proc.wait(5) == 0
    ctrl_ours.close()
    assert not (tmp_path / "pid").exists()


# ---------------------------------------------------------------------------- files and modes


@pytest.mark.parametrize("kind", KINDS)
def test_pid_file(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    pidfile = tmp_path / "emu.pid"
    port = free_port_pair()
    proc = spawn(kind, tcp_args(port, state) + ["--pid", f"file={pidfile}"], tmp_path)
    procs.append(proc)
    connect(("127.0.0.1", port + 1), proc=proc).close()
    with connect(("127.0.0.1", port), proc=proc) as s:   # serving: past its start-up
        assert rc(tpm_call(s, READ_CLOCK)) == 0
    assert pidfile.read_text() == str(proc.pid)
    assert stop(proc) == 0
    assert not pidfile.exists()


def test_log_file_levels_and_prefix(tmp_path: Path, state: Path, procs: list) -> None:
    log = tmp_path / "emu.log"
    log.write_text("old line\n")
    port = free_port_pair()
    proc = spawn("swtpm_py", tcp_args(port, state)
                 + ["--log", f"file={log},level=2,prefix=[tpm] ,truncate"], tmp_path)
    procs.append(proc)
    connect(("127.0.0.1", port + 1), proc=proc).close()
    with connect(("127.0.0.1", port)) as s:
        tpm_call(s, READ_CLOCK)
    assert stop(proc) == 0
    lines = log.read_text().splitlines()
    assert "old line" not in lines                                     # truncated
    assert all(line.startswith("[tpm] ") for line in lines)
    assert f"[tpm] data cmd: {READ_CLOCK.hex()}" in lines              # level 2: hex dumps
    level1 = tmp_path / "level1.log"
    port = free_port_pair()
    proc = spawn("swtpm_py", tcp_args(port, state) + ["--log", f"file={level1}"], tmp_path)
    procs.append(proc)
    connect(("127.0.0.1", port), proc=proc).close()
    assert stop(proc) == 0
    text = level1.read_text()
    assert "serving" in text and "data cmd" not in text


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_daemon(kind: str, tmp_path: Path, state: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    port = free_port_pair()
    proc = spawn(kind, tcp_args(port, state) + ["--daemon", "--pid", f"file={pidfile}"],
                 tmp_path)
    assert proc.wait(10) == 0
    pid = int(pidfile.read_text())
    try:
        assert pid != proc.pid
        with connect(("127.0.0.1", port)) as s:
            assert rc(tpm_call(s, READ_CLOCK)) == 0
    finally:
        os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid)
    assert not pidfile.exists()


def test_daemon_keeps_the_state_lock(tmp_path: Path, state: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    proc = spawn("swtpm_py", tcp_args(free_port_pair(), state)
                 + ["--daemon", "--pid", f"file={pidfile}"], tmp_path)
    assert proc.wait(10) == 0
    pid = int(pidfile.read_text())
    try:
        second = spawn("swtpm_py", tcp_args(free_port_pair(), state), tmp_path)
        assert second.wait(10) == 1
        assert "is locked by" in output(tmp_path, "swtpm_py")
    finally:
        os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid)


# ---------------------------------------------------------------------------- print options


def test_print_capabilities_lists_only_what_swtpm_py_has() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ours = subprocess.run(SWTPM_PY + ["socket", "--tpm2", "--print-capabilities"],
                          capture_output=True, text=True, timeout=30, env=env)
    ref = subprocess.run(SWTPM + ["socket", "--tpm2", "--print-capabilities"],
                         capture_output=True, text=True, timeout=30)
    assert ours.returncode == ref.returncode == 0
    # Same layout: one line, "{ " ... " }", the same keys in the same order.
    for out in (ours.stdout, ref.stdout):
        assert out.endswith(" }\n") and out.count("\n") == 1 and out.startswith('{ "type": ')
    caps, ref_caps = json.loads(ours.stdout), json.loads(ref.stdout)
    assert list(caps) == list(ref_caps) == ["type", "features", "version"]
    assert caps["type"] == "swtpm"
    assert {"tpm-2.0", "tpm-send-command-header", "flags-opt-startup",
            "cmdarg-print-states", "nvram-backend-dir", "cmdarg-key-fd",
            "cmdarg-pwd-fd"} <= set(caps["features"])
    # No TPM 1.2, no seccomp, no file backend (not implemented).
    assert not {"tpm-1.2", "cmdarg-seccomp", "nvram-backend-file"} & set(caps["features"])
    assert caps["version"] == __import__("swtpm_py").__version__


@pytest.mark.parametrize("kind", KINDS)
def test_print_states(kind: str, tmp_path: Path, state: Path, procs: list) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    exe = SWTPM_PY if kind == "swtpm_py" else SWTPM
    argv = exe + ["socket", "--tpm2", "--print-states", "--tpmstate", f"dir={state}"]
    empty = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert (empty.returncode, empty.stdout) == (0, '{ "type": "swtpm", "states": [] }')
    proc, port = started_tcp(kind, tmp_path, state, procs)
    assert ctrl_call(("127.0.0.1", port + 1), 0x0A) == bytes(4)       # STORE_VOLATILE
    assert stop(proc) == 0
    full = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert full.returncode == 0 and not full.stdout.endswith("\n")
    states = json.loads(full.stdout)
    # swtpm_py's exit sends the automatic Shutdown(STATE) (newer swtpm), which writes the
    # savestate blob; swtpm 0.7.1 sends none.
    expected = ["permall", "volatilestate"] + (["savestate"] if kind == "swtpm_py" else [])
    assert [s["name"] for s in states["states"]] == expected
    assert all(s["size"] > 0 for s in states["states"])
    missing = subprocess.run(exe + ["socket", "--tpm2", "--print-states"], capture_output=True,
                             text=True, timeout=30, env=env)
    assert missing.returncode == 1 and "--tpmstate option is required" in missing.stderr


# ---------------------------------------------------------------------------- state


@pytest.mark.parametrize("kind", KINDS)
def test_permanent_state_survives_kill_9(kind: str, tmp_path: Path, state: Path,
                                         procs: list) -> None:
    reset_counts = []
    for _ in range(3):
        proc, port = started_tcp(kind, tmp_path, state, procs)
        with connect(("127.0.0.1", port)) as s:
            reset_counts.append(read_clock_info(tpm_call(s, READ_CLOCK))["reset_count"])
        proc.kill()                         # power loss right after Startup(CLEAR) answered
        proc.wait()
    assert reset_counts[1] == reset_counts[0] + 1 and reset_counts[2] == reset_counts[1] + 1


def test_tpm_path_environment_variable(tmp_path: Path, state: Path, procs: list) -> None:
    port = free_port_pair()
    args = ["--tpm2", "--server", f"type=tcp,port={port}", "--ctrl", f"type=tcp,port={port + 1}",
            "--flags", "not-need-init,startup-clear"]
    proc = spawn("swtpm_py", args, tmp_path, env={**os.environ, "TPM_PATH": str(state)})
    procs.append(proc)
    connect(("127.0.0.1", port), proc=proc).close()
    assert stop(proc) == 0
    assert (state / "swtpm_py-permanent.blob").stat().st_size > 0
    assert "no --tpmstate" not in output(tmp_path, "swtpm_py")


def test_tpm_port_environment_variable_and_p(tmp_path: Path, state: Path, procs: list) -> None:
    port = free_port_pair()
    proc = spawn("swtpm_py", ["--tpm2", "--server", "type=tcp", "--tpmstate", f"dir={state}",
                              "--flags", "not-need-init,startup-clear"], tmp_path,
                 env={**os.environ, "TPM_PORT": str(port)})
    procs.append(proc)
    with connect(("127.0.0.1", port), proc=proc) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
    assert stop(proc) == 0
    port = free_port_pair()
    proc = spawn("swtpm_py", ["--tpm2", "-p", str(port), "--tpmstate", f"dir={state}",
                              "--flags", "not-need-init,startup-clear"], tmp_path)
    procs.append(proc)
    with connect(("127.0.0.1", port), proc=proc) as s:   # -p implies disconnect (swtpm)
        assert rc(tpm_call(s, READ_CLOCK)) == 0
        assert s.recv(10) == b""


def test_ctrl_terminate_option(tmp_path: Path, state: Path, procs: list) -> None:
    # Newer swtpm's "--ctrl ...,terminate" (0.7.1 does not know it).
    ctrl_path = str(tmp_path / "ctrl.sock")
    proc = spawn("swtpm_py", ["--tpm2", "--ctrl", f"type=unixio,path={ctrl_path},terminate",
                              "--tpmstate", f"dir={state}"], tmp_path)
    procs.append(proc)
    with connect(ctrl_path, proc=proc) as c:
        c.sendall(struct.pack(">I", 1))
        recv_exact(c, 8)
        assert proc.poll() is None
    assert proc.wait(5) == 0


def test_sigterm_sends_the_automatic_shutdown(tmp_path: Path, state: Path, procs: list) -> None:
    # Newer swtpm: TPM2_Shutdown(STATE) at exit when the last command was no Shutdown, so
    # Startup(STATE) can resume after a restart (swtpm 0.7.1 answers TPM_RC_VALUE here).
    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0          # the last command: no Shutdown
    assert stop(proc) == 0
    proc, port = started_tcp("swtpm_py", tmp_path, state, procs, flags="not-need-init")
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, startup(clear=False))) == 0


# ---------------------------------------------------------------------------- robustness


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_random_control_frames_never_break_the_server(tmp_path: Path, state: Path,
                                                      procs: list) -> None:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.one_of(st.binary(max_size=40),
                     st.tuples(st.integers(0, 0x14), st.binary(max_size=24)).map(
                         lambda t: struct.pack(">I", t[0]) + t[1])))
    def check(frame: bytes) -> None:
        assume(frame[:4] != b"\0\0\0\x03")      # SHUTDOWN would (rightly) end the process
        with connect(("127.0.0.1", port + 1)) as c:
            c.sendall(frame)
            c.shutdown(socket.SHUT_WR)
            reply = _read_all(c)
        # Either one well-formed reply (a result code first) or a clean close.
        assert reply == b"" or len(reply) >= 4
        assert proc.poll() is None
        assert ctrl_call(("127.0.0.1", port + 1), 1, size=8)[:4] == bytes(4)

    check()


def test_random_data_messages_get_well_formed_responses(tmp_path: Path, state: Path,
                                                        procs: list) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    proc, port = started_tcp("swtpm_py", tmp_path, state, procs)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.binary(max_size=80), st.booleans(), st.integers(0, 5))
    def check(raw: bytes, prefixed: bool, locality: int) -> None:
        data = struct.pack(">IBI", 8, locality, len(raw)) + raw if prefixed else raw
        with connect(("127.0.0.1", port)) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reply = _read_all(s)
        if len(data) < 10:
            assert reply == b""                  # no header: nothing to answer (as swtpm)
        elif prefixed:
            size = struct.unpack_from(">I", reply)[0]
            assert len(reply) == size + 8 and reply[-4:] == bytes(4)
            assert struct.unpack_from(">I", reply, 6)[0] == size
        else:
            assert len(reply) >= 10 and struct.unpack_from(">I", reply, 2)[0] == len(reply)
        assert proc.poll() is None

    check()
    with connect(("127.0.0.1", port + 1)) as c:     # back to locality 0 for the last check
        c.sendall(struct.pack(">IB", 5, 0))
        recv_exact(c, 4)
    with connect(("127.0.0.1", port)) as s:
        assert rc(tpm_call(s, READ_CLOCK)) in (0, 0x100)


@pytest.mark.parametrize("kind", KINDS)
def test_fd_option_serves_an_inherited_connection(kind: str, tmp_path: Path, state: Path,
                                                  procs: list) -> None:
    ours, theirs = socket.socketpair()
    proc = spawn(kind, ["--tpm2", "-f", str(theirs.fileno()), "--tpmstate", f"dir={state}",
                        "--flags", "not-need-init,startup-clear"], tmp_path,
                 pass_fds=(theirs.fileno(),))
    procs.append(proc)
    theirs.close()
    ours.settimeout(5)
    with ours:
        assert rc(tpm_call(ours, READ_CLOCK)) == 0
    assert proc.wait(5) == 0                   # -f implies terminate (swtpm)


def test_sigterm_during_start_up_is_an_orderly_exit(tmp_path: Path, state: Path) -> None:
    # The handlers are in place before the sockets are bound: a signal that arrives as soon
    # as the port accepts connections still gives exit code 0 (no default-action death).
    for _ in range(3):
        port = free_port_pair()
        proc = spawn("swtpm_py", tcp_args(port, state), tmp_path)
        connect(("127.0.0.1", port), proc=proc).close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_inherited_listening_sockets(kind: str, tmp_path: Path, state: Path,
                                     procs: list) -> None:
    # --server type=unixio,fd=N and --ctrl type=unixio,fd=M are listening sockets.
    data_path, ctrl_path = str(tmp_path / "d.sock"), str(tmp_path / "c.sock")
    listeners = []
    for path in (data_path, ctrl_path):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.listen(4)
        listeners.append(sock)
    fds = tuple(s.fileno() for s in listeners)
    proc = spawn(kind, ["--tpm2", "--server", f"type=unixio,fd={fds[0]}",
                        "--ctrl", f"type=unixio,fd={fds[1]}", "--tpmstate", f"dir={state}",
                        "--flags", "not-need-init,startup-clear"], tmp_path, pass_fds=fds)
    procs.append(proc)
    for sock in listeners:
        sock.close()
    assert ctrl_call(ctrl_path, 1, size=8)[:4] == bytes(4)
    with connect(data_path) as s:
        assert rc(tpm_call(s, READ_CLOCK)) == 0
    assert stop(proc) == 0


def test_inherited_fd_that_is_no_socket_is_refused(tmp_path: Path, state: Path) -> None:
    with open(tmp_path / "plain", "w") as f:
        fd = f.fileno()
        r = subprocess.run(SWTPM_PY + ["socket", "--tpm2", "--ctrl",
                                       f"type=unixio,clientfd={fd}", "--tpmstate", f"dir={state}"],
                           capture_output=True, text=True, timeout=30, pass_fds=(fd,),
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1
    assert f"Bad filedescriptor {fd}" in r.stderr


# ---------------------------------------------------------------------------- send path


def test_framer_passes_a_whole_command_up_to_the_buffer_size_through() -> None:
    # A whole command in one read is the fast path; the buffer size is still its limit.
    f = CommandFramer(lambda: 4096)
    largest = struct.pack(">HII", 0x8001, 4096, CC.ReadClock) + b"\0" * 4086
    assert f.feed(largest) == [largest] and not f.pending
    over = struct.pack(">HII", 0x8001, 4097, CC.ReadClock) + b"\0" * 4087
    assert f.feed(over) == [over] and not f.pending
    assert f.feed(READ_CLOCK) == [READ_CLOCK]          # nothing of `over` was left to skip


def test_send_data_waits_for_a_slow_reader() -> None:
    # A response that does not fit the socket buffer leaves in pieces as the client reads.
    from swtpm_py.server import _send_data
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)
        payload = random.randbytes(1 << 20)
        received = bytearray()

        def read_later() -> None:
            time.sleep(0.2)
            while len(received) < len(payload):
                received.extend(b.recv(65536))

        reader = threading.Thread(target=read_later)
        reader.start()
        _send_data(a, payload)
        reader.join(5)
        assert bytes(received) == payload
        assert a.gettimeout() == 0.0                     # non-blocking again for the loop


def test_send_data_gives_up_on_a_client_that_does_not_read(monkeypatch) -> None:
    import swtpm_py.server as server
    monkeypatch.setattr(server, "WRITE_TIMEOUT", 0.3)
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.setblocking(False)
        start = time.monotonic()
        with pytest.raises(OSError):
            server._send_data(a, b"\0" * (1 << 22))
        assert 0.25 < time.monotonic() - start < 3
