"""QEMU-compatible image locking, checked against the real qemu-img / qemu-io (QEMU 7.2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobstore.image import ImageLockedError, create_image, open_image
from blobstore.image.lock import Perm, permissions

FORMATS = ["qcow2", "raw"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a QEMU tool, capturing text output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def locked_bytes(path: Path) -> set[int]:
    """The byte offsets of the image file that hold OFD locks right now (/proc/locks)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: OFDLCK ADVISORY READ -1 fe:00:2148239 100 101"
        if len(fields) >= 8 and fields[1] == "OFDLCK" and fields[5] == dev:
            assert fields[3] == "READ"  # QEMU only ever takes shared locks
            found |= set(range(int(fields[6]), int(fields[7]) + 1))
    return found


class QemuIo:
    """qemu-io kept running on an image (interactive stdin), so it holds its locks."""

    def __init__(self, path: Path, fmt: str, *flags: str) -> None:
        self.proc = subprocess.Popen(["qemu-io", "-f", fmt, *flags, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.path = path
        deadline = time.monotonic() + 10
        while 100 not in locked_bytes(path):
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "qemu-io did not lock the image"
            time.sleep(0.02)

    def close(self) -> None:
        """Quit qemu-io and wait for it."""
        try:
            self.proc.communicate(b"quit\n", timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def image(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A fresh 1 MiB image in the requested format."""
    fmt = request.param
    path = tmp_path / f"disk.{fmt}"
    create_image(str(path), fmt, 1 << 20)
    return path, fmt


def test_permission_sets_match_qemu() -> None:
    """The permission sets we open with are the ones QEMU's qcow2 driver takes on its file
    (bdrv_default_perms_for_storage): writer CR+W+RESIZE sharing CR+WU; reader CR sharing
    CR+WU; -U reader CR sharing everything; force_share needs read-only."""
    cr, w, wu, rs = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE
    assert permissions(True) == (cr | w | rs, cr | wu)
    assert permissions(False) == (cr, cr | wu)
    assert permissions(False, True) == (cr, cr | w | wu | rs)
    with pytest.raises(ValueError):
        permissions(True, True)


@pytest.mark.parametrize("flags,readonly,force_share", [
    ((), False, False), (("-r",), True, False), (("-r", "-U"), True, True)])
def test_same_lock_bytes_as_qemu_io(tmp_path: Path, flags: tuple[str, ...], readonly: bool,
                                    force_share: bool) -> None:
    """Opened the same way, we hold exactly the lock bytes qemu-io holds on a qcow2 image
    (writer: 100, 101, 103, 201, 203; reader: 100, 201, 203; -U: 100)."""
    theirs, ours = tmp_path / "theirs.qcow2", tmp_path / "ours.qcow2"
    create_image(str(theirs), "qcow2", 1 << 20)
    create_image(str(ours), "qcow2", 1 << 20)
    q = QemuIo(theirs, "qcow2", *flags)
    try:
        expected = locked_bytes(theirs)
    finally:
        q.close()
    with open_image(str(ours), readonly=readonly, force_share=force_share):
        assert locked_bytes(ours) == expected
    assert expected == {(): {100, 101, 103, 201, 203}, ("-r",): {100, 201, 203},
                        ("-r", "-U"): {100}}[flags]
    assert locked_bytes(ours) == set()


@pytest.mark.parametrize("image", FORMATS, indirect=True)
def test_qemu_refused_while_we_write(image: tuple[Path, str]) -> None:
    """While we hold the image for writing, qemu-img snapshot -c and qemu-io write fail with
    QEMU's lock error; qemu-img info on qcow2 needs -U (QEMU's raw driver shares writes with
    readers, so plain info works on raw); after we close, QEMU works again."""
    path, fmt = image
    with open_image(str(path), fmt) as im:
        im.write(0, b"\x42" * 512)
        im.flush()
        r = run("qemu-io", "-f", fmt, "-c", "write -P 0x99 0 512", str(path))
        assert r.returncode != 0 and 'Failed to get "write" lock' in r.stderr
        if fmt == "qcow2":
            r = run("qemu-img", "snapshot", "-c", "x", str(path))
            assert r.returncode != 0 and 'Failed to get "write" lock' in r.stderr
        r = run("qemu-img", "info", "-f", fmt, str(path))
        if fmt == "qcow2":
            assert r.returncode != 0 and 'Failed to get shared "write" lock' in r.stderr
        else:
            assert r.returncode == 0 and "virtual size: 1 MiB" in r.stdout
        r = run("qemu-img", "info", "-U", "-f", fmt, str(path))
        assert r.returncode == 0 and "virtual size: 1 MiB" in r.stdout
        r = run("qemu-io", "-r", "-U", "-f", fmt, "-c", "read -P 0x42 0 512", str(path))
        assert r.returncode == 0 and "failed" not in r.stdout
        assert im.read(0, 512) == b"\x42" * 512  # nothing overwrote our data
    if fmt == "qcow2":
        assert run("qemu-img", "snapshot", "-c", "x", str(path)).returncode == 0
    r = run("qemu-io", "-f", fmt, "-c", "write -P 0x99 0 512", str(path))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("image", FORMATS, indirect=True)
def test_we_are_refused_while_qemu_writes(image: tuple[Path, str]) -> None:
    """While qemu-io holds the image for writing, our writable and plain read-only opens fail
    with ImageLockedError naming the lock and the image; a sharing reader works; after qemu-io
    quits we can open it. (qemu-io on qcow2 refuses to share write, so our writer cannot get
    "write"; on raw it shares everything but holds write, which our writer refuses to share.)"""
    path, fmt = image
    q = QemuIo(path, fmt)
    try:
        with pytest.raises(ImageLockedError) as e:
            open_image(str(path), fmt)
        msg = str(e.value)
        want = 'Failed to get "write" lock' if fmt == "qcow2" else 'shared "write" lock'
        assert want in msg and str(path) in msg
        with pytest.raises(ImageLockedError, match='shared "write" lock'):
            open_image(str(path), fmt, readonly=True)
        with open_image(str(path), fmt, readonly=True, force_share=True) as ro:
            assert ro.size() == 1 << 20
        # A refused open leaves no lock bytes of its own behind.
        assert locked_bytes(path) == ({100, 101, 103, 201, 203} if fmt == "qcow2"
                                      else {100, 101})
    finally:
        q.close()
    with open_image(str(path), fmt) as im:
        im.write(0, b"ok")


def test_qemu_reader_blocks_our_writer(tmp_path: Path) -> None:
    """qemu-io -r (no -U) does not share write: our writable open is refused; a sharing
    reader (-U) does not block us."""
    path = tmp_path / "r.qcow2"
    create_image(str(path), "qcow2", 1 << 20)
    q = QemuIo(path, "qcow2", "-r")
    try:
        with pytest.raises(ImageLockedError, match='"write" lock'):
            open_image(str(path))
    finally:
        q.close()
    q = QemuIo(path, "qcow2", "-r", "-U")
    try:
        with open_image(str(path)) as im:
            im.write(0, b"x")
    finally:
        q.close()


def test_two_opens_in_one_process(tmp_path: Path) -> None:
    """OFD locks belong to the open, not the process: two writers in one process conflict,
    a plain reader conflicts with a writer, sharing readers coexist with a writer, plain
    readers coexist with each other."""
    path = tmp_path / "p.qcow2"
    create_image(str(path), "qcow2", 1 << 20)
    w = open_image(str(path))
    try:
        with pytest.raises(ImageLockedError):
            open_image(str(path))
        with pytest.raises(ImageLockedError):
            open_image(str(path), readonly=True)
        with open_image(str(path), readonly=True, force_share=True), \
                open_image(str(path), readonly=True, force_share=True):
            pass
    finally:
        w.close()
    with open_image(str(path), readonly=True), open_image(str(path), readonly=True):
        with pytest.raises(ImageLockedError):
            open_image(str(path))
    with open_image(str(path)):
        pass


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    """A writer killed with SIGKILL holds nothing: the kernel drops OFD locks with the last
    descriptor, so a crashed emulator never leaves its image locked."""
    path = tmp_path / "k.qcow2"
    create_image(str(path), "qcow2", 1 << 20)
    code = ("import sys, time\n"
            "from blobstore.image import open_image\n"
            f"im = open_image({str(path)!r})\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parent.parent))
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(ImageLockedError):
            open_image(str(path))
        r = run("qemu-io", "-c", "write 0 512", str(path))
        assert 'Failed to get "write" lock' in r.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert locked_bytes(path) == set()
    with open_image(str(path)) as im:
        im.write(0, b"mine")
    assert run("qemu-img", "check", str(path)).returncode == 0


def test_failed_open_releases_locks(tmp_path: Path) -> None:
    """An open that fails after locking (here: not a qcow2 file) releases its bytes."""
    path = tmp_path / "junk.img"
    path.write_bytes(b"\x01" * 4096)
    with pytest.raises(Exception, match="not a qcow2 image"):
        open_image(str(path), "qcow2")
    assert locked_bytes(path) == set()
    r = run("qemu-io", "-f", "raw", "-c", "write 0 512", str(path))
    assert r.returncode == 0, r.stderr
