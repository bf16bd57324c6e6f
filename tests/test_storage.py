"""The state directory (swtpm_py.storage): atomic durable writes, the lock, --tpmstate."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from swtpm_py.storage import (BLOB_FILES, DirStorage, OptionError, StateLocked, StorageError,
                              default_state_image, parse_tpmstate)
from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.state import BlobKind, PersistentData, decode_blob
from test_server import READ_CLOCK, connect, free_port_pair, output, spawn, stop, tcp_args, tpm_call
from tpmcmd import rc


def test_store_load_delete_round_trip(tmp_path: Path) -> None:
    with DirStorage(tmp_path) as storage:
        assert storage.load(BlobKind.PERMANENT) is None
        storage.store(BlobKind.PERMANENT, b"one")
        storage.store(BlobKind.SAVESTATE, b"three" * 100)
        assert storage.load(BlobKind.PERMANENT) == b"one"
        assert (tmp_path / BLOB_FILES[BlobKind.PERMANENT]).read_bytes() == b"one"
        assert storage.sizes() == {BlobKind.PERMANENT: 3, BlobKind.SAVESTATE: 500}
        storage.delete(BlobKind.SAVESTATE)
        storage.delete(BlobKind.VOLATILE)          # absent: nothing happens
        assert storage.load(BlobKind.SAVESTATE) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".lock", BLOB_FILES[BlobKind.PERMANENT]]


def test_file_mode(tmp_path: Path) -> None:
    with DirStorage(tmp_path) as storage:
        storage.store(BlobKind.PERMANENT, b"x")
    assert (tmp_path / BLOB_FILES[BlobKind.PERMANENT]).stat().st_mode & 0o777 == 0o640
    with DirStorage(tmp_path, mode=0o600) as storage:
        storage.store(BlobKind.PERMANENT, b"y")
    assert (tmp_path / BLOB_FILES[BlobKind.PERMANENT]).stat().st_mode & 0o777 == 0o600


def test_store_is_an_fsynced_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        replaced.append((os.path.basename(src), os.path.basename(dst)))
        assert Path(src).read_bytes() == b"new"     # complete before it takes the name
        real_replace(src, dst)

    with DirStorage(tmp_path) as storage:
        storage.store(BlobKind.PERMANENT, b"old")
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        storage.store(BlobKind.PERMANENT, b"new")
    target = str(tmp_path / BLOB_FILES[BlobKind.PERMANENT])
    (tmp_name, final), = replaced
    assert final == os.path.basename(target) and tmp_name.startswith(".")
    # The data is synced under its temporary name, then the directory after the rename.
    assert [os.path.basename(p) for p in synced] == [tmp_name, tmp_path.name]
    assert Path(target).read_bytes() == b"new"


def test_failed_store_keeps_the_old_blob_and_no_debris(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with DirStorage(tmp_path) as storage:
        storage.store(BlobKind.PERMANENT, b"old")

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError):
            storage.store(BlobKind.PERMANENT, b"new")
        monkeypatch.undo()
        assert storage.load(BlobKind.PERMANENT) == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", BLOB_FILES[BlobKind.PERMANENT]]


def test_second_open_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = DirStorage(tmp_path)
    with pytest.raises(StateLocked, match="is locked by"):
        DirStorage(tmp_path)
    first.close()
    DirStorage(tmp_path).close()


def test_lock_false_does_not_lock(tmp_path: Path) -> None:
    with DirStorage(tmp_path):
        unlocked = DirStorage(tmp_path, lock=False)
        assert not unlocked.locked


def test_missing_and_foreign_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        DirStorage(tmp_path / "nope")
    (tmp_path / "tpm2-00.permall").write_bytes(b"libtpms state")
    with pytest.raises(StorageError, match="real swtpm"):
        DirStorage(tmp_path)
    # Once swtpm_py's own state is there the directory is swtpm_py's.
    (tmp_path / BLOB_FILES[BlobKind.PERMANENT]).write_bytes(b"ours")
    DirStorage(tmp_path).close()


def test_tpm_core_on_dir_storage(tmp_path: Path) -> None:
    with DirStorage(tmp_path) as storage:
        tpm = Tpm(Platform(storage=storage))
        tpm.power_on()
        seeds = tpm.perm.eps
    blob = (tmp_path / BLOB_FILES[BlobKind.PERMANENT]).read_bytes()
    assert decode_blob(BlobKind.PERMANENT, blob, PersistentData).eps == seeds
    with DirStorage(tmp_path) as storage:
        again = Tpm(Platform(storage=storage))
        again.power_on()
        assert again.perm.eps == seeds and len(seeds) == 64


# ---------------------------------------------------------------------------- with processes


def test_second_emulator_on_the_same_state_exits_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port_pair()
    first = spawn("swtpm_py", tcp_args(port, state), tmp_path)
    try:
        connect(("127.0.0.1", port + 1), proc=first).close()
        second_port = free_port_pair()
        t0 = time.monotonic()
        second_proc = spawn("swtpm_py", tcp_args(second_port, state), tmp_path)
        assert second_proc.wait(10) == 1
        assert time.monotonic() - t0 < 1.5
        assert f"{state} is locked by" in output(tmp_path, "swtpm_py")
        with pytest.raises(OSError):        # it never listened
            connect(("127.0.0.1", second_port + 1), timeout=0.2)
        assert first.poll() is None
    finally:
        assert stop(first) == 0


def test_swtpm_py_and_swtpm_exclude_each_other(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port_pair()
    ref = spawn("swtpm", tcp_args(port, state), tmp_path)   # not-need-init: locks at start
    try:
        with connect(("127.0.0.1", port), proc=ref) as s:    # serving: past its start-up
            assert rc(tpm_call(s, READ_CLOCK)) == 0
        with pytest.raises(StateLocked, match=f"process {ref.pid}"):
            DirStorage(state)
    finally:
        assert stop(ref) == 0
    fresh = tmp_path / "fresh"            # (state now holds libtpms blobs: not ours to use)
    fresh.mkdir()
    with DirStorage(fresh):
        port = free_port_pair()
        ref = spawn("swtpm", tcp_args(port, fresh), tmp_path)
        assert ref.wait(10) == 1
        assert "Could not lock access to lockfile" in output(tmp_path, "swtpm")


def test_default_state_image_is_announced(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("TPM_PATH", None)
    expected = tmp_path / "xdg" / "swtpm_py" / "tpm.qcow2"
    assert default_state_image(env) == expected
    assert default_state_image({"HOME": "/home/u"}) == Path(
        "/home/u/.local/share/swtpm_py/tpm.qcow2")
    port = free_port_pair()
    proc = spawn("swtpm_py", ["--tpm2", "--server", f"type=tcp,port={port}",
                              "--ctrl", f"type=tcp,port={port + 1}",
                              "--flags", "not-need-init,startup-clear"], tmp_path, env=env)
    try:
        connect(("127.0.0.1", port), proc=proc).close()
    finally:
        assert stop(proc) == 0
    assert (f"keeping the TPM state in the blobstore image {expected}"
            in output(tmp_path, "swtpm_py"))
    assert expected.read_bytes()[:4] == b"QFI\xfb"
    assert expected.parent.stat().st_mode & 0o777 == 0o700


# ---------------------------------------------------------------------------- --tpmstate


def test_parse_tpmstate_forms(tmp_path: Path) -> None:
    cfg = parse_tpmstate(f"dir={tmp_path},mode=0600")
    assert (cfg.path, cfg.mode, cfg.lock) == (tmp_path, 0o600, True)
    cfg = parse_tpmstate(f"backend-uri=dir://{tmp_path},lock")
    assert (cfg.path, cfg.mode, cfg.lock) == (tmp_path, 0o640, True)
    assert parse_tpmstate(f"dir={tmp_path},lock=false").lock is False
    assert parse_tpmstate(f"dir={tmp_path},fsync").path == tmp_path
    assert parse_tpmstate("dir=relative").path == Path.cwd() / "relative"
    assert parse_tpmstate(f"dir={tmp_path}").backend == "dir"
    cfg = parse_tpmstate("backend-uri=file:///var/lib/vol.raw")
    assert (cfg.path, cfg.backend) == (Path("/var/lib/vol.raw"), "file")
    cfg = parse_tpmstate("backend-uri=blobstore://tpm.qcow2")
    assert (cfg.path, cfg.backend) == (Path.cwd() / "tpm.qcow2", "blobstore")


@pytest.mark.parametrize("text,message", [
    ("backend-uri=file://", "names no file"),
    ("backend-uri=nbd://x", "Unsupported backend"),
    ("mode=0600", "The dir or backend-uri parameters is required"),
    ("dir=/x,mode=999", "invalid mode type '999'"),
    ("dir=/x,mode=1777", "mode 1777 is invalid"),
    ("dir=/x,backup", "Unknown option 'backup'"),
])
def test_parse_tpmstate_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        parse_tpmstate(text)


def test_lock_record_covers_the_whole_file(tmp_path: Path) -> None:
    # Checked from another process with a classic POSIX test lock, as swtpm takes it.
    with DirStorage(tmp_path):
        probe = ("import fcntl,os,struct,sys\n"
                 f"fd=os.open({str(tmp_path / '.lock')!r},os.O_RDWR)\n"
                 "r=fcntl.fcntl(fd,fcntl.F_GETLK,struct.pack('@hhqqi4x',fcntl.F_WRLCK,0,0,0,0))\n"
                 "t,w,s,l,p=struct.unpack('@hhqqi4x',r)\n"
                 "print(t==fcntl.F_WRLCK,s,l)\n")
        out = subprocess.run(["python3", "-c", probe], capture_output=True, text=True,
                             timeout=30).stdout
    assert out.split() == ["True", "0", "0"]
    assert struct.calcsize("@hhqqi4x") == 32
