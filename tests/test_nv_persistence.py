"""NV indices across process restarts, kill -9 and image snapshots, end to end.

What a user of the TPM's NVRAM relies on (issue 6 "Persistence", issue 3 "Cold reboot" and
"Snapshots follow"), checked on real emulator processes with raw TPM commands:

* NV contents, counter values, index auth values, write locks and the owner's auth survive a
  stop/start of the process on the same state (directory backend, blobstore raw and qcow2
  images), and a cold reboot (``kill -9``, no TPM2_Shutdown) as well: non-orderly NV data is
  committed before the command's response.
* ``kill -9`` at random moments of a client writing increasing values and incrementing a
  counter as fast as it can: after the restart the last acknowledged value is read (or the next
  one, when the kill raced a response), never an older one and never a mixture.
* A qcow2 image reverted to an internal snapshot (``qemu-img snapshot -a`` or ``python -m
  blobstore snapshot -a``) holds exactly the snapshot's NV state.

The directory backend runs on both emulators with the same argv; the blobstore backends are
swtpm_py's only (the real swtpm has none). Every qcow2 image a test writes must pass
``qemu-img check`` (an autouse fixture runs it).
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tpmcmd as T
from emulator import Emulator
from swtpm_py.tpm.constants import CC, RH

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
BLOBSTORE = [sys.executable, "-m", "blobstore"]

#: (emulator, backend) combinations: the real swtpm only has directories.
BACKENDS = [("swtpm_py", "dir"), ("swtpm", "dir"), ("swtpm_py", "raw"), ("swtpm_py", "qcow2")]

# TPMA_NV bits (Part 2 §13.4).
OWNERWRITE, AUTHWRITE, WRITEDEFINE, WRITE_STCLEAR = 1 << 1, 1 << 2, 1 << 13, 1 << 14
OWNERREAD, AUTHREAD, NO_DA, ORDERLY = 1 << 17, 1 << 18, 1 << 25, 1 << 26
WRITELOCKED = 1 << 11
NT_COUNTER = 1 << 4
SHA256 = 0x000B

TPM_RC_NV_LOCKED = 0x148
TPM_RC_HANDLE_1 = 0x18B
#: A wrong password for a NO_DA index (no lockout accounting: TPM_RC_BAD_AUTH, session 1).
TPM_RC_BAD_AUTH_SESSION_1 = 0x9A2

DATA_INDEX, COUNTER_INDEX, LOCKED_INDEX, STCLEAR_INDEX = 0x1500200, 0x1500201, 0x1500202, 0x1500203


# ---------------------------------------------------------------------------- raw NV commands


def b2(data: bytes) -> bytes:
    """A TPM2B: UINT16 size, then the bytes."""
    return struct.pack(">H", len(data)) + data


def nv_define(index: int, size: int, attributes: int, auth: bytes = b"",
              owner_auth: bytes = b"") -> bytes:
    """TPM2_NV_DefineSpace(TPM_RH_OWNER) of a SHA-256-named index without policy."""
    public = struct.pack(">IHI", index, SHA256, attributes) + b2(b"") + struct.pack(">H", size)
    return T.with_auth(CC.NV_DefineSpace, struct.pack(">I", RH.OWNER), b2(auth) + b2(public),
                       T.pw_session(owner_auth))


def nv_undefine(index: int) -> bytes:
    """TPM2_NV_UndefineSpace(TPM_RH_OWNER, index)."""
    return T.with_auth(CC.NV_UndefineSpace, struct.pack(">II", RH.OWNER, index), b"")


def nv_write(index: int, data: bytes, offset: int = 0, auth: bytes = b"",
             auth_handle: int | None = None) -> bytes:
    """TPM2_NV_Write authorized by the index itself (or ``auth_handle``) with a password."""
    handles = struct.pack(">II", auth_handle or index, index)
    return T.with_auth(CC.NV_Write, handles, b2(data) + struct.pack(">H", offset),
                       T.pw_session(auth))


def nv_read(index: int, size: int, offset: int = 0, auth: bytes = b"",
            auth_handle: int | None = None) -> bytes:
    """TPM2_NV_Read authorized by the index itself (or ``auth_handle``) with a password."""
    handles = struct.pack(">II", auth_handle or index, index)
    return T.with_auth(CC.NV_Read, handles, struct.pack(">HH", size, offset), T.pw_session(auth))


def nv_increment(index: int, auth_handle: int = RH.OWNER, auth: bytes = b"") -> bytes:
    """TPM2_NV_Increment with a password."""
    return T.with_auth(CC.NV_Increment, struct.pack(">II", auth_handle, index), b"",
                       T.pw_session(auth))


def nv_write_lock(index: int) -> bytes:
    """TPM2_NV_WriteLock(TPM_RH_OWNER, index)."""
    return T.with_auth(CC.NV_WriteLock, struct.pack(">II", RH.OWNER, index), b"")


def nv_read_public(index: int) -> bytes:
    """TPM2_NV_ReadPublic(index)."""
    return T.cmd(CC.NV_ReadPublic, struct.pack(">I", index))


def change_owner_auth(old: bytes, new: bytes) -> bytes:
    """TPM2_HierarchyChangeAuth(TPM_RH_OWNER)."""
    return T.with_auth(CC.HierarchyChangeAuth, struct.pack(">I", RH.OWNER), b2(new),
                       T.pw_session(old))


def ok(emu: Emulator, command: bytes) -> bytes:
    """Send a command that must succeed; returns the response."""
    response = emu.command(command)
    assert T.rc(response) == 0, (emu.kind, hex(T.rc(response)), command[6:10].hex())
    return response


def read_data(response: bytes) -> bytes:
    """The TPM2B_MAX_NV_BUFFER of an NV_Read response (after parameterSize)."""
    (size,) = struct.unpack_from(">H", response, 14)
    return response[16:16 + size]


def attributes_of(emu: Emulator, index: int) -> int:
    """TPMA_NV of an index, from NV_ReadPublic (TPM2B_NV_PUBLIC: size, handle, nameAlg, attrs)."""
    response = ok(emu, nv_read_public(index))
    return struct.unpack_from(">I", response, 10 + 2 + 4 + 2)[0]


def counter_value(emu: Emulator, index: int = COUNTER_INDEX, owner_auth: bytes = b"") -> int:
    """An NV counter's value, read with owner authorization."""
    response = ok(emu, nv_read(index, 8, auth=owner_auth, auth_handle=RH.OWNER))
    return struct.unpack(">Q", read_data(response))[0]


# ---------------------------------------------------------------------------- emulators


@pytest.fixture(autouse=True)
def _qcow2_images_pass_qemu_img_check(tmp_path: Path) -> Iterator[None]:
    """After each test: every qcow2 image it wrote passes ``qemu-img check``."""
    yield
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path.read_bytes()[:4] == b"QFI\xfb":
            r = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0 and "No errors were found" in r.stdout, (path, r.stdout,
                                                                              r.stderr)


def make_emulator(tmp_path: Path, kind: str, backend: str,
                  flags: str = "not-need-init,startup-clear") -> Emulator:
    """An unstarted emulator on ``backend``: a state directory, or a blobstore image created on
    first start (``--blobstore name=tpm,drive=d0,create --drive id=d0,file=...``). Restarting
    the same object reopens the same state."""
    if backend == "dir":
        return Emulator(kind, tmp_path / f"{kind}-state", flags=flags)
    image = tmp_path / f"tpm.{backend}"
    args = ["--blobstore", "name=tpm,drive=d0,create",
            "--drive", f"id=d0,file={image},format={backend}"]
    return Emulator(kind, tmp_path / "logs", flags=flags, extra_args=args, tpmstate=False)


def restart(emu: Emulator) -> None:
    """Start a stopped emulator again on its state. A blobstore image is reopened without
    ``create`` (it exists now): a store that did not open would be an error, never a new one."""
    emu.extra_args = [a.replace(",create", "") for a in emu.extra_args]
    emu.start()


def power_cycle(emu: Emulator, how: str) -> None:
    """Stop the process (SIGTERM, or ``kill -9``: a power loss) and start it again; the new
    process runs Startup(CLEAR) itself (``startup-clear``)."""
    if how == "kill":
        emu.kill()
    else:
        emu.stop()
    restart(emu)


# ---------------------------------------------------------------------------- (a), (d) restarts


@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.parametrize("kind,backend", BACKENDS)
def test_nv_state_survives_restarts(tmp_path: Path, kind: str, backend: str, how: str) -> None:
    """Data (1 KiB, index auth), a counter, a WRITEDEFINE lock and the owner auth survive a
    restart of the process, orderly (SIGTERM) or not (kill -9: a cold reboot without
    TPM2_Shutdown). A WRITE_STCLEAR lock is released by the TPM Reset (Part 3 §31.11)."""
    emu = make_emulator(tmp_path, kind, backend).start()
    try:
        data = os.urandom(1024)
        ok(emu, nv_define(DATA_INDEX, 1024, AUTHREAD | AUTHWRITE | OWNERREAD | NO_DA, b"idx"))
        ok(emu, nv_write(DATA_INDEX, data, auth=b"idx"))
        ok(emu, nv_define(COUNTER_INDEX, 8, OWNERREAD | OWNERWRITE | NT_COUNTER))
        for _ in range(5):
            ok(emu, nv_increment(COUNTER_INDEX))
        ok(emu, nv_define(LOCKED_INDEX, 8, OWNERREAD | OWNERWRITE | WRITEDEFINE))
        ok(emu, nv_write(LOCKED_INDEX, b"locked!!", auth_handle=RH.OWNER))
        ok(emu, nv_write_lock(LOCKED_INDEX))
        ok(emu, nv_define(STCLEAR_INDEX, 8, OWNERREAD | OWNERWRITE | WRITE_STCLEAR))
        ok(emu, nv_write(STCLEAR_INDEX, b"stclear!", auth_handle=RH.OWNER))
        ok(emu, nv_write_lock(STCLEAR_INDEX))
        assert T.rc(emu.command(nv_write(STCLEAR_INDEX, b"x", auth_handle=RH.OWNER))) == \
            TPM_RC_NV_LOCKED
        ok(emu, change_owner_auth(b"", b"owner"))
        value = counter_value(emu, owner_auth=b"owner")
        assert value == 5

        power_cycle(emu, how)
        assert read_data(ok(emu, nv_read(DATA_INDEX, 1024, auth=b"idx"))) == data
        assert T.rc(emu.command(nv_read(DATA_INDEX, 8, auth=b"wrong"))) == \
            TPM_RC_BAD_AUTH_SESSION_1
        # The owner auth changed before the restart is the one that works now.
        assert read_data(ok(emu, nv_read(DATA_INDEX, 4, auth=b"owner",
                                         auth_handle=RH.OWNER))) == data[:4]
        assert counter_value(emu, owner_auth=b"owner") == value
        ok(emu, nv_increment(COUNTER_INDEX, auth=b"owner"))
        assert counter_value(emu, owner_auth=b"owner") == value + 1
        # WRITEDEFINE: locked for good; WRITE_STCLEAR: unlocked by the TPM Reset.
        assert attributes_of(emu, LOCKED_INDEX) & WRITELOCKED
        assert T.rc(emu.command(nv_write(LOCKED_INDEX, b"x", auth=b"owner",
                                         auth_handle=RH.OWNER))) == TPM_RC_NV_LOCKED
        assert read_data(ok(emu, nv_read(LOCKED_INDEX, 8, auth=b"owner",
                                         auth_handle=RH.OWNER))) == b"locked!!"
        assert not attributes_of(emu, STCLEAR_INDEX) & WRITELOCKED
        ok(emu, nv_write(STCLEAR_INDEX, b"again", auth=b"owner", auth_handle=RH.OWNER))

        # An undefine is as durable as a define.
        ok(emu, T.with_auth(CC.NV_UndefineSpace, struct.pack(">II", RH.OWNER, DATA_INDEX), b"",
                            T.pw_session(b"owner")))
        power_cycle(emu, how)
        assert T.rc(emu.command(nv_read_public(DATA_INDEX))) == TPM_RC_HANDLE_1
        assert counter_value(emu, owner_auth=b"owner") == value + 1
    finally:
        emu.cleanup()


def counter_scenario(tmp_path: Path, kind: str) -> list[int]:
    """The counter values one emulator returns along :func:`test_counters_never_go_back`'s
    scenario; the invariants are asserted on the way."""
    emu = make_emulator(tmp_path, kind, "dir").start()
    values: list[int] = []
    try:
        ok(emu, nv_define(COUNTER_INDEX, 8, OWNERREAD | OWNERWRITE | NT_COUNTER | ORDERLY))
        for _ in range(3):
            ok(emu, nv_increment(COUNTER_INDEX))
        values.append(counter_value(emu))
        assert values[-1] == 3                      # a fresh TPM's first count is 1
        ok(emu, T.shutdown())                       # orderly: the RAM copy is saved
        power_cycle(emu, "kill")
        values.append(counter_value(emu))
        assert values[-1] == 3
        for _ in range(4):
            ok(emu, nv_increment(COUNTER_INDEX))
        values.append(counter_value(emu))
        assert values[-1] == 7
        power_cycle(emu, "kill")                    # no Shutdown: the RAM copy is lost
        values.append(counter_value(emu))
        assert values[-1] >= 7
        ok(emu, nv_increment(COUNTER_INDEX))
        values.append(counter_value(emu))
        assert values[-1] == values[-2] + 1
        # Undefine it; a new counter starts above every value the old one held.
        ok(emu, nv_undefine(COUNTER_INDEX))
        power_cycle(emu, "kill")
        ok(emu, nv_define(DATA_INDEX, 8, OWNERREAD | OWNERWRITE | NT_COUNTER))
        ok(emu, nv_increment(DATA_INDEX))
        values.append(counter_value(emu, DATA_INDEX))
        assert values[-1] > values[-2]
    finally:
        emu.cleanup()
    return values


def test_counters_never_go_back(tmp_path: Path) -> None:
    """Counter high-water rules (Part 1, NV counter indices; Part 3 §31.8): an ORDERLY
    counter may keep its count in RAM; after an orderly Shutdown it reads exactly the last
    value, after a power loss it still never reads less than any value it returned, and a
    counter defined after another was undefined starts above that one's last value. swtpm_py
    returns exactly the real swtpm's values (libtpms: [3, 3, 7, 255, 256, 257] measured)."""
    ours = counter_scenario(tmp_path / "ours", "swtpm_py")
    reference = counter_scenario(tmp_path / "ref", "swtpm")
    assert ours == reference


# ---------------------------------------------------------------------------- (b) kill -9 loop


def record(n: int) -> bytes:
    """The 1 KiB written for value ``n``: the value repeated, so a torn or mixed write shows."""
    return struct.pack(">Q", n) * 128


@pytest.mark.parametrize("kind,backend", [("swtpm_py", "qcow2"), ("swtpm_py", "dir"),
                                          ("swtpm", "dir")])
def test_kill_9_during_a_write_loop(tmp_path: Path, kind: str, backend: str) -> None:
    """A client writes increasing values to a 1 KiB index and increments a counter as fast as
    it can; the emulator is killed (SIGKILL) at a random moment; after the restart the index
    holds the last acknowledged value or the one after it (the kill raced that response),
    never an older one and never a mixture, and the counter likewise. Repeated."""
    emu = make_emulator(tmp_path, kind, backend).start()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    try:
        ok(emu, nv_define(DATA_INDEX, 1024, OWNERREAD | OWNERWRITE))
        ok(emu, nv_define(COUNTER_INDEX, 8, OWNERREAD | OWNERWRITE | NT_COUNTER))
        ok(emu, nv_write(DATA_INDEX, record(0), auth_handle=RH.OWNER))
        ok(emu, nv_increment(COUNTER_INDEX))
        value, count = 0, counter_value(emu)
        acknowledged_total = 0
        for _round in range(4):
            acked = {"value": value, "count": count}
            stop = threading.Event()

            def writer() -> None:
                n = acked["value"]
                try:
                    while not stop.is_set():
                        n += 1
                        if T.rc(emu.command(nv_write(DATA_INDEX, record(n),
                                                     auth_handle=RH.OWNER), timeout=5)) != 0:
                            return
                        acked["value"] = n
                        if T.rc(emu.command(nv_increment(COUNTER_INDEX), timeout=5)) != 0:
                            return
                        acked["count"] += 1
                except (OSError, ConnectionError):
                    return                                  # the process is gone

            worker = threading.Thread(target=writer, daemon=True)
            worker.start()
            time.sleep(rng.uniform(0.1, 0.5))
            emu.kill()
            stop.set()
            worker.join(10)
            assert not worker.is_alive()
            acknowledged_total += acked["value"] - value
            if backend == "qcow2":
                # The image exactly as the crash left it: consistent for qemu-img too (leaked
                # clusters, which qemu-img reports with exit code 3, are allowed after a crash).
                r = subprocess.run(["qemu-img", "check", str(tmp_path / "tpm.qcow2")],
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode in (0, 3) and "ERROR" not in r.stdout + r.stderr, r.stdout
            restart(emu)
            got = read_data(ok(emu, nv_read(DATA_INDEX, 1024, auth_handle=RH.OWNER)))
            n = struct.unpack_from(">Q", got)[0]
            assert got == record(n), "a mixture of two writes"
            assert n in (acked["value"], acked["value"] + 1), (acked, n)
            c = counter_value(emu)
            assert c in (acked["count"], acked["count"] + 1), (acked, c)
            value, count = n, c
        assert acknowledged_total >= 4, "the kills came before any write was acknowledged"
    finally:
        emu.cleanup()
    if backend != "dir":
        check = subprocess.run(BLOBSTORE + ["check", str(tmp_path / f"tpm.{backend}")],
                               capture_output=True, text=True, timeout=30, env=ENV)
        assert check.returncode in (0, 1), check.stdout + check.stderr


# ---------------------------------------------------------------------------- (c) snapshots


def snapshot(tool: str, verb: str, name: str, image: Path) -> None:
    """``qemu-img snapshot VERB NAME IMAGE`` or ``python -m blobstore snapshot ...``."""
    base = ["qemu-img", "snapshot"] if tool == "qemu-img" else BLOBSTORE + ["snapshot"]
    r = subprocess.run(base + [verb, name, str(image)], capture_output=True, text=True,
                       timeout=30, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("tool", ["qemu-img", "blobstore"])
def test_nv_state_follows_qcow2_snapshots(tmp_path: Path, tool: str) -> None:
    """Define an index and write A, snapshot s1, write B and define another index, stop,
    revert to s1, start: the index reads A and the later index does not exist; forward to
    s2 (taken after B): B and both indices again."""
    emu = make_emulator(tmp_path, "swtpm_py", "qcow2").start()
    image = tmp_path / "tpm.qcow2"
    later = 0x1500210
    try:
        ok(emu, nv_define(DATA_INDEX, 1024, OWNERREAD | OWNERWRITE))
        ok(emu, nv_define(COUNTER_INDEX, 8, OWNERREAD | OWNERWRITE | NT_COUNTER))
        ok(emu, nv_write(DATA_INDEX, record(0xA), auth_handle=RH.OWNER))
        ok(emu, nv_increment(COUNTER_INDEX))
        emu.stop()
        snapshot(tool, "-c", "s1", image)
        restart(emu)
        ok(emu, nv_write(DATA_INDEX, record(0xB), auth_handle=RH.OWNER))
        ok(emu, nv_increment(COUNTER_INDEX))
        ok(emu, nv_define(later, 16, OWNERREAD | OWNERWRITE))
        emu.stop()
        snapshot(tool, "-c", "s2", image)
        snapshot(tool, "-a", "s1", image)
        restart(emu)
        assert read_data(ok(emu, nv_read(DATA_INDEX, 1024, auth_handle=RH.OWNER))) == \
            record(0xA)
        assert counter_value(emu) == 1
        assert T.rc(emu.command(nv_read_public(later))) == TPM_RC_HANDLE_1
        emu.stop()
        snapshot(tool, "-a", "s2", image)
        restart(emu)
        assert read_data(ok(emu, nv_read(DATA_INDEX, 1024, auth_handle=RH.OWNER))) == \
            record(0xB)
        assert counter_value(emu) == 2
        ok(emu, nv_read_public(later))
        emu.stop()
        for name in ("s1", "s2"):
            snapshot(tool, "-d", name, image)
    finally:
        emu.cleanup()
