"""GET_STATEBLOB / SET_STATEBLOB: the sans-I/O device, the real ``swtpm_ioctl --save/--load``
against both emulators, QEMU's split writes, and migration of a TPM between two processes.

Measured on swtpm 0.7.1 and asserted here (for both emulators where the blobs' contents do not
matter): GET only while running, SET only while not running (else 0x0a); types 1 permanent,
2 volatile, 3 savestate; a missing savestate (or a type that is not 1-3) is TPM_RETRY (0x800)
with flags, totlength and length 0; totlength counts the bytes from ``offset`` on; the reply's
state_flags is 0 (not encrypted); a SET with garbage or an unknown type is TPM_BAD_PARAMETER
(0x03); a SET flagged ENCRYPTED without a key is 0x0d; an empty SET succeeds. swtpm's TPM 2
never has a savestate blob (libtpms keeps the Shutdown(STATE) data in the permanent state).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from emulator import SWTPM, SWTPM_PY, Emulator, free_port_pair, recv_exact
from tpmcmd import cmd, pcr_extend, pcr_read, pcr_values, rc, read_clock_info, shutdown, startup

from swtpm_py.control import (STATEBLOB_MAX, Cmd, Device, DeviceOptions, Request, RequestParser,
                              Res, RunState)
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC
from swtpm_py.tpm.state import FORMAT_VERSION, MAGIC, BlobKind

PERMANENT, VOLATILE, SAVESTATE = 1, 2, 3
BANKS = (ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512)


def make_blob(kind: int, body: dict, version: int = FORMAT_VERSION) -> bytes:
    """A swtpm_py state blob built from its documented format (swtpm_py/tpm/state.py): magic,
    kind u8, version u16, length u32, SHA-256 over those fields and the body; a JSON body."""
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    fields = MAGIC + bytes([kind]) + version.to_bytes(2, "big") + len(raw).to_bytes(4, "big")
    return fields + hashlib.sha256(fields + raw).digest() + raw


def blob_body(blob: bytes) -> dict:
    return json.loads(blob[len(MAGIC) + 1 + 2 + 4 + 32:])


def res(reply: bytes) -> int:
    return struct.unpack_from(">I", reply)[0]


def get_req(kind: int, offset: int = 0, flags: int = 1) -> bytes:
    return struct.pack(">III", flags, kind, offset)


def set_req(kind: int, data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">III", flags, kind, len(data)) + data


def parse_get(reply: bytes) -> tuple[int, int, int, bytes]:
    if len(reply) == 4:                  # an error other than TPM_RETRY: the result only
        return res(reply), 0, 0, b""
    result, flags, total, length = struct.unpack_from(">IIII", reply)
    data = reply[16:]
    assert len(data) == length
    return result, flags, total, data


class Dev:
    """A sans-I/O device on in-memory storage, with request helpers."""

    def __init__(self, storage: MemoryStorage | None = None) -> None:
        self.storage = storage or MemoryStorage()
        self.device = Device(Tpm(Platform(storage=self.storage)), DeviceOptions())

    def ctl(self, code: int, body: bytes = b"") -> bytes:
        return self.device.control(Request(code, body)).data

    def init(self, flags: int = 0) -> None:
        assert res(self.ctl(Cmd.INIT, struct.pack(">I", flags))) == Res.SUCCESS

    def run(self, command: bytes) -> bytes:
        return self.device.data(command)

    def get(self, kind: int, offset: int = 0) -> tuple[int, int, int, bytes]:
        return parse_get(self.ctl(Cmd.GET_STATEBLOB, get_req(kind, offset)))

    def set(self, kind: int, data: bytes, flags: int = 0) -> int:
        return res(self.ctl(Cmd.SET_STATEBLOB, set_req(kind, data, flags)))

    def pcrs(self) -> list[bytes]:
        return [v for alg in BANKS for v in pcr_values(self.run(pcr_read(alg, list(range(8)))))]


def started(storage: MemoryStorage | None = None) -> Dev:
    d = Dev(storage)
    d.init()
    assert rc(d.run(startup())) == 0
    return d


# ---------------------------------------------------------------------------- sans-I/O


def test_get_each_blob_type() -> None:
    d = started()
    assert rc(d.run(pcr_extend(3, ALG.SHA256, b"\x11" * 32))) == 0
    result, flags, total, perm = d.get(PERMANENT)
    assert (result, flags, total) == (Res.SUCCESS, 0, len(perm))
    assert perm == d.storage.blobs[BlobKind.PERMANENT] == d.device.tpm.permanent_blob()
    result, flags, total, vol = d.get(VOLATILE)
    assert (result, flags, total) == (Res.SUCCESS, 0, len(vol))
    # The volatile blob is the running state: the extended PCR is in it.
    assert blob_body(vol)["pcrs"][str(int(ALG.SHA256))][3] != "00" * 32
    for kind in (SAVESTATE, 0, 4):                       # none yet / no such type
        assert d.get(kind) == (Res.RETRY, 0, 0, b"")
    assert rc(d.run(shutdown(clear=False))) == 0
    result, _flags, total, saved = d.get(SAVESTATE)
    assert result == Res.SUCCESS and saved == d.storage.blobs[BlobKind.SAVESTATE]


def test_get_from_an_offset() -> None:
    d = started()
    _r, _f, _t, perm = d.get(PERMANENT)
    assert d.get(PERMANENT, 100) == (Res.SUCCESS, 0, len(perm) - 100, perm[100:])
    assert d.get(PERMANENT, len(perm) + 5) == (Res.SUCCESS, 0, 0, b"")


def test_set_only_while_not_running_and_takes_effect_at_init() -> None:
    source = started()
    assert rc(source.run(pcr_extend(7, ALG.SHA1, b"\x22" * 20))) == 0
    perm, vol = source.get(PERMANENT)[3], source.get(VOLATILE)[3]

    target = started()
    assert target.set(PERMANENT, perm) == Res.BAD_ORDINAL          # running
    before = target.pcrs()
    assert res(target.ctl(Cmd.STOP)) == Res.SUCCESS
    assert target.set(PERMANENT, perm) == Res.SUCCESS
    assert target.set(VOLATILE, vol) == Res.SUCCESS
    assert target.storage.blobs[BlobKind.PERMANENT] == perm       # committed to storage
    assert target.device.state is RunState.STOPPED                 # ... not yet in effect
    assert target.get(PERMANENT)[0] == Res.BAD_ORDINAL              # GET only while running
    target.init(flags=1)                                           # DELETE_VOLATILE
    assert target.pcrs() == source.pcrs() != before
    assert BlobKind.VOLATILE not in target.storage.blobs          # consumed by INIT
    assert target.device.tpm.perm.eps == source.device.tpm.perm.eps


def test_set_before_the_first_init() -> None:
    source = started()
    perm = source.get(PERMANENT)[3]
    fresh = Dev()
    assert fresh.device.state is RunState.NOT_INITIALIZED
    assert fresh.set(PERMANENT, perm) == Res.SUCCESS
    fresh.init()
    assert fresh.device.tpm.perm.sps == source.device.tpm.perm.sps


@pytest.mark.parametrize("kind,data", [
    (PERMANENT, b"garbage!"),
    (PERMANENT, b"\0" * 200),
    (VOLATILE, b"swtpmpy\0" + b"\x02" * 60),
    (4, b"garbage!"),
    (0, b""),
])
def test_garbage_is_refused_and_changes_nothing(kind: int, data: bytes) -> None:
    d = started()
    assert res(d.ctl(Cmd.STOP)) == Res.SUCCESS      # (its automatic Shutdown writes state)
    stored = dict(d.storage.blobs)
    assert d.set(kind, data) == Res.BAD_PARAMETER
    assert d.storage.blobs == stored


def test_blob_of_another_kind_or_damaged_or_newer_is_refused() -> None:
    d = started()
    perm, vol = d.get(PERMANENT)[3], d.get(VOLATILE)[3]
    assert res(d.ctl(Cmd.STOP)) == Res.SUCCESS
    stored = dict(d.storage.blobs)
    assert d.set(VOLATILE, perm) == Res.BAD_PARAMETER              # a permanent blob
    damaged = bytearray(vol)
    damaged[-2] ^= 1
    assert d.set(VOLATILE, bytes(damaged)) == Res.BAD_PARAMETER    # checksum
    assert d.set(PERMANENT, perm[:-1]) == Res.BAD_PARAMETER        # truncated
    newer = make_blob(PERMANENT, blob_body(perm), version=FORMAT_VERSION + 1)
    assert d.set(PERMANENT, newer) == Res.BAD_PARAMETER
    assert d.storage.blobs == stored
    # A blob written under the documented format is accepted (the check is not a byte compare).
    assert d.set(PERMANENT, make_blob(PERMANENT, blob_body(perm))) == Res.SUCCESS


def test_blob_of_an_older_swtpm_py_is_accepted() -> None:
    """Fields added since (with defaults) are missing from an older blob: they take their
    defaults and everything else is kept."""
    source = started()
    assert rc(source.run(pcr_extend(4, ALG.SHA384, b"\x33" * 48))) == 0
    body = blob_body(source.get(VOLATILE)[3])
    for newer_field in ("sessions", "loaded_objects", "startup_locality"):
        body.pop(newer_field, None)
    old = make_blob(VOLATILE, body)
    target = Dev()
    assert target.set(PERMANENT, source.get(PERMANENT)[3]) == Res.SUCCESS
    assert target.set(VOLATILE, old) == Res.SUCCESS
    target.init(flags=1)
    assert target.pcrs() == source.pcrs()


def test_flags_and_sizes() -> None:
    d = started()
    perm = d.get(PERMANENT)[3]
    assert res(d.ctl(Cmd.STOP)) == Res.SUCCESS
    assert d.set(PERMANENT, perm, flags=1) == Res.SUCCESS           # DECRYPTED: plain
    assert d.set(PERMANENT, perm, flags=2) == Res.KEYNOTFOUND       # ENCRYPTED: no key
    too_big = struct.pack(">III", 0, PERMANENT, STATEBLOB_MAX + 1)
    assert res(d.ctl(Cmd.SET_STATEBLOB, too_big + b"x")) == Res.BAD_PARAMETER
    # The length field must match the data.
    assert res(d.ctl(Cmd.SET_STATEBLOB, struct.pack(">III", 0, 1, 10) + b"x" * 9)) \
        == Res.BAD_PARAMETER
    assert res(d.ctl(Cmd.GET_STATEBLOB, b"\0" * 8)) == Res.BAD_ORDINAL   # stopped first
    # An empty blob deletes the stored one (QEMU skips empty blobs; swtpm accepts them).
    d.storage.blobs[BlobKind.VOLATILE] = d.device.tpm.volatile_blob()
    assert d.set(VOLATILE, b"") == Res.SUCCESS
    assert BlobKind.VOLATILE not in d.storage.blobs


def test_storage_failure_is_an_io_error() -> None:
    d = started()
    perm = d.get(PERMANENT)[3]
    assert res(d.ctl(Cmd.STOP)) == Res.SUCCESS
    d.storage.fail_with = OSError("disk full")
    assert d.set(PERMANENT, perm) == Res.IOERROR


def test_parser_reassembles_a_split_set_stateblob() -> None:
    """QEMU writes SET_STATEBLOB's header and its data separately."""
    blob = started().get(VOLATILE)[3]
    assert len(blob) > 4096
    request = struct.pack(">I", Cmd.SET_STATEBLOB) + set_req(VOLATILE, blob)
    p = RequestParser()
    assert p.feed(request[:16]) == [] and p.pending
    pieces = [request[16:1000], request[1000:5000], request[5000:]]
    assert p.feed(pieces[0]) == [] and p.feed(pieces[1]) == []
    (req,) = p.feed(pieces[2])
    assert (req.code, req.body) == (Cmd.SET_STATEBLOB, request[4:]) and not p.pending
    # An oversized length is not waited for: the stream is refused (the server closes the
    # connection, as swtpm does) and nothing after it is parsed.
    p = RequestParser()
    assert p.feed(struct.pack(">IIII", Cmd.SET_STATEBLOB, 0, 1, STATEBLOB_MAX + 1)) == []
    assert p.refused and p.feed(struct.pack(">I", Cmd.GET_CONFIG)) == []
    p = RequestParser()
    assert p.feed(struct.pack(">III", Cmd.HASH_DATA, STATEBLOB_MAX + 1, 0)) == [] and p.refused
    # GET_STATEBLOB waits for its 12 bytes.
    p = RequestParser()
    assert p.feed(struct.pack(">III", Cmd.GET_STATEBLOB, 1, 1)) == []
    assert len(p.feed(b"\0\0\0\0")) == 1


# ---------------------------------------------------------------------------- processes


def ioctl(emu: Emulator, *args: str) -> tuple[int, str]:
    p = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}", *args],
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr


def all_pcrs(emu: Emulator) -> list[bytes]:
    return [v for alg in BANKS for first in (0, 8, 16)
            for v in pcr_values(emu.command(pcr_read(alg, list(range(first, first + 8)))))]


def counters(emu: Emulator) -> tuple[int, int]:
    info = read_clock_info(emu.command(cmd(CC.ReadClock)))
    return info["reset_count"], info["restart_count"]


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_swtpm_ioctl_save_and_load_each_type(kind: str, tmp_path: Path) -> None:
    with Emulator(kind, tmp_path / "state") as emu:
        assert rc(emu.command(pcr_extend(2, ALG.SHA256, b"\x44" * 32))) == 0
        files = {t: tmp_path / f"{t}.bin" for t in ("permanent", "volatile", "savestate")}
        for t, f in files.items():
            assert ioctl(emu, "--save", t, str(f)) == (0, "")
        assert files["permanent"].stat().st_size > 0 and files["volatile"].stat().st_size > 0
        assert files["savestate"].stat().st_size == 0          # TPM_RETRY: none yet
        pcrs = all_pcrs(emu)
        assert ioctl(emu, "--load", "permanent", str(files["permanent"])) == \
            (1, "TPM result from PTM_SET_STATEBLOB: 0xa\n")    # running
        assert ioctl(emu, "--stop") == (0, "")
        junk = tmp_path / "junk"
        junk.write_bytes(b"junk" * 10)
        assert ioctl(emu, "--load", "permanent", str(junk)) == \
            (1, "TPM result from PTM_SET_STATEBLOB: 0x3\n")
        for t, f in files.items():
            assert ioctl(emu, "--load", t, str(f)) == (0, "")
        assert ioctl(emu, "-i") == (0, "")
        assert all_pcrs(emu) == pcrs
        # After Shutdown(STATE), the saved state loaded back lets Startup(STATE) resume with
        # the PCRs kept. swtpm_py keeps it in the savestate blob; libtpms' TPM 2 keeps it in
        # the permanent state and has no savestate blob at all (measured: still TPM_RETRY).
        assert rc(emu.command(shutdown(clear=False))) == 0
        assert ioctl(emu, "--save", "savestate", str(files["savestate"])) == (0, "")
        assert (files["savestate"].stat().st_size > 0) == (kind == "swtpm_py")
        assert ioctl(emu, "--save", "permanent", str(files["permanent"])) == (0, "")
        assert ioctl(emu, "--stop") == (0, "")
        assert ioctl(emu, "--load", "permanent", str(files["permanent"])) == (0, "")
        assert ioctl(emu, "--load", "savestate", str(files["savestate"])) == (0, "")
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        assert ioctl(emu, "--load", "volatile", str(empty)) == (0, "")   # no volatile state
        assert ioctl(emu, "-i") == (0, "")
        assert rc(emu.command(startup(clear=False))) == 0
        assert all_pcrs(emu)[:len(pcrs)] == pcrs


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_migration_between_two_processes(kind: str, tmp_path: Path) -> None:
    """QEMU's outgoing/incoming migration done by hand: GET_STATEBLOB from a running source,
    SET_STATEBLOB into a stopped destination, INIT(DELETE_VOLATILE) — PCRs, resetCount and
    restartCount come back; the destination continues without a new Startup."""
    with Emulator(kind, tmp_path / "src") as src, Emulator(kind, tmp_path / "dst") as dst:
        for pcr in (0, 5, 7):
            assert rc(src.command(pcr_extend(pcr, ALG.SHA512, bytes([pcr]) * 64))) == 0
        # A TPM Reset (Shutdown(CLEAR), INIT, Startup(CLEAR)) and then INIT + Startup(CLEAR)
        # again on the source, so that its counters differ from a fresh TPM's.
        assert rc(src.command(shutdown())) == 0
        assert ioctl(src, "-i") == (0, "")
        assert rc(src.command(startup())) == 0
        assert ioctl(src, "-i") == (0, "")
        assert rc(src.command(startup())) == 0
        assert rc(src.command(pcr_extend(1, ALG.SHA1, b"\x55" * 20))) == 0
        pcrs, (resets, restarts) = all_pcrs(src), counters(src)
        # swtpm_py: 2 resets and 1 restart; swtpm 0.7.1 sends no automatic Shutdown(STATE)
        # at INIT, so its second INIT is a TPM Reset too (3 resets, 0 restarts).
        assert (resets, restarts) == ((2, 1) if kind == "swtpm_py" else (3, 0))
        files = {t: tmp_path / f"{t}.bin" for t in ("permanent", "volatile")}
        for t, f in files.items():
            assert ioctl(src, "--save", t, str(f)) == (0, "")
        assert all_pcrs(dst) != pcrs
        assert ioctl(dst, "--stop") == (0, "")
        for t, f in files.items():
            assert ioctl(dst, "--load", t, str(f)) == (0, "")
        assert dst.ctrl(Cmd.INIT, struct.pack(">I", 1), reply_size=4) == b"\0\0\0\0"
        assert all_pcrs(dst) == pcrs
        assert counters(dst) == (resets, restarts)
        assert rc(dst.command(startup())) == 0x100          # already started: it resumed


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_split_set_stateblob_over_the_socket(kind: str, tmp_path: Path) -> None:
    """Header and data in two writes with a pause between them, as QEMU sends them."""
    with Emulator(kind, tmp_path / "state") as emu:
        assert rc(emu.command(pcr_extend(6, ALG.SHA256, b"\x66" * 32))) == 0
        with socket.create_connection(("127.0.0.1", emu.ctrl_port), timeout=10) as s:
            s.sendall(struct.pack(">I", Cmd.GET_STATEBLOB) + get_req(VOLATILE))
            head = recv_exact(s, 16)
            result, _flags, total, length = struct.unpack(">IIII", head)
            vol = recv_exact(s, length)
            assert result == 0 and total == length
            pcrs = all_pcrs(emu)
            s.sendall(struct.pack(">I", Cmd.STOP))
            assert recv_exact(s, 4) == b"\0\0\0\0"
            s.sendall(struct.pack(">IIII", Cmd.SET_STATEBLOB, 0, VOLATILE, len(vol)))
            time.sleep(0.1)
            s.sendall(vol)
            assert recv_exact(s, 4) == b"\0\0\0\0"
            s.sendall(struct.pack(">II", Cmd.INIT, 1))
            assert recv_exact(s, 4) == b"\0\0\0\0"
        assert all_pcrs(emu) == pcrs


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_swtpm_ioctl_save_and_load_over_unixio(kind: str, tmp_path: Path) -> None:
    """The same blobs through ``--ctrl type=unixio`` (what QEMU and libvirt use): saved from
    one process, loaded into a second one on another state directory."""
    exe = SWTPM_PY if kind == "swtpm_py" else SWTPM
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    procs = []

    def start(name: str) -> tuple[Path, int]:
        state, sock, port = tmp_path / name, tmp_path / f"{name}.sock", free_port_pair()
        state.mkdir()
        procs.append(subprocess.Popen(
            exe + ["socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                   "--ctrl", f"type=unixio,path={sock}", "--tpmstate", f"dir={state}",
                   "--flags", "not-need-init,startup-clear"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and procs[-1].poll() is None
            time.sleep(0.02)
        return sock, port

    def unix_ioctl(sock: Path, *args: str) -> tuple[int, str]:
        p = subprocess.run(["swtpm_ioctl", "--unix", str(sock), *args], capture_output=True,
                           text=True, timeout=30)
        return p.returncode, p.stderr

    def data(port: int, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(command)
            head = recv_exact(s, 10)
            return head + recv_exact(s, struct.unpack_from(">I", head, 2)[0] - 10)

    def read(port: int) -> list[bytes]:
        return [v for alg in BANKS for v in pcr_values(data(port, pcr_read(alg, list(range(8)))))]

    try:
        src_sock, src_port = start("src")
        dst_sock, dst_port = start("dst")
        assert rc(data(src_port, pcr_extend(4, ALG.SHA384, b"\x77" * 48))) == 0
        files = [(t, tmp_path / f"{t}.bin") for t in ("permanent", "volatile")]
        for t, f in files:
            assert unix_ioctl(src_sock, "--save", t, str(f)) == (0, "")
        assert read(dst_port) != read(src_port)
        assert unix_ioctl(dst_sock, "--stop") == (0, "")
        for t, f in files:
            assert unix_ioctl(dst_sock, "--load", t, str(f)) == (0, "")
        assert unix_ioctl(dst_sock, "-i") == (0, "")
        assert read(dst_port) == read(src_port)
        for sock in (src_sock, dst_sock):
            assert unix_ioctl(sock, "-s") == (0, "")
        for proc in procs:
            assert proc.wait(10) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_oversized_set_stateblob_closes_the_connection(kind: str, tmp_path: Path) -> None:
    """More than 512 KiB announced: no reply, the connection is closed; the emulator serves
    the next connection as before."""
    with Emulator(kind, tmp_path / "state") as emu:
        assert emu.ctrl(Cmd.STOP, reply_size=4) == b"\0\0\0\0"
        with socket.create_connection(("127.0.0.1", emu.ctrl_port), timeout=5) as s:
            s.sendall(struct.pack(">IIII", Cmd.SET_STATEBLOB, 0, PERMANENT, STATEBLOB_MAX + 1))
            assert s.recv(16) == b""
        assert emu.ctrl(Cmd.INIT, b"\0\0\0\0", reply_size=4) == b"\0\0\0\0"
