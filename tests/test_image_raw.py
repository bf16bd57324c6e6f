"""The raw driver: regular files and block devices, interoperating with qemu-io."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from blobstore.image import ImageError, UnsupportedError, create_image, open_image, probe_format
from blobstore.image.raw import RawImage


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing text output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def qemu_io(path: Path, *cmds: str) -> str:
    """qemu-io -f raw; pattern mismatches fail the test."""
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = run(*args, str(path))
    assert r.returncode == 0 and "failed" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    return r.stdout


def test_create_is_sparse_and_exact(tmp_path: Path) -> None:
    """A raw image is a sparse file of the requested size rounded up to 512 bytes, exactly
    like ``qemu-img create -f raw`` makes it; qemu-img agrees on the size."""
    path, theirs = tmp_path / "a.raw", tmp_path / "theirs.raw"
    create_image(str(path), "raw", 10_000_001)
    assert run("qemu-img", "create", "-q", "-f", "raw", str(theirs), "10000001").returncode == 0
    st = path.stat()
    assert st.st_size == theirs.stat().st_size == 10_000_384
    assert st.st_blocks * 512 < 1 << 20
    info = json.loads(run("qemu-img", "info", "--output=json", "-f", "raw", str(path)).stdout)
    assert info["virtual-size"] == 10_000_384 and info["format"] == "raw"
    assert probe_format(str(path)) == "raw"
    with open_image(str(path)) as im:
        assert isinstance(im, RawImage)
        assert im.size() == 10_000_384
        assert im.read(0, 4096) == bytes(4096)
        assert im.info() == {"format": "raw", "virtual_size": 10_000_384, "block_device": False}
        assert not im.supports_snapshots
        with pytest.raises(UnsupportedError):
            im.snapshot_create("s")


def test_create_refuses_non_empty_and_unknown_format(tmp_path: Path) -> None:
    """create_image never overwrites data and names the formats it knows; an existing empty
    file is accepted."""
    path = tmp_path / "a.raw"
    path.write_bytes(b"data")
    with pytest.raises(ImageError, match="not empty"):
        create_image(str(path), "raw", 4096)
    assert path.read_bytes() == b"data"
    with pytest.raises(ImageError, match="raw, qcow2"):
        create_image(str(tmp_path / "b.img"), "vmdk", 4096)
    empty = tmp_path / "empty.raw"
    empty.touch()
    create_image(str(empty), "raw", 8192)
    assert empty.stat().st_size == 8192


def test_read_write_and_qemu_io_interop(tmp_path: Path) -> None:
    """Our writes are read by qemu-io and qemu-io's writes are read by us."""
    path = tmp_path / "a.raw"
    create_image(str(path), "raw", 1 << 20)
    with open_image(str(path), "raw") as im:
        im.write(1000, b"\x5a" * 5000)
        im.write((1 << 20) - 3, b"end")
        im.flush()
        assert im.read(1000, 5000) == b"\x5a" * 5000
    qemu_io(path, "read -P 0x5a 1000 5000", "read -P 0 0 1000", "read -v 1048573 3")
    assert path.read_bytes()[-3:] == b"end"
    qemu_io(path, "write -P 0xab 300000 70000")
    with open_image(str(path), "raw") as im:
        assert im.read(300000, 70000) == b"\xab" * 70000
        assert im.read(299999, 1) == b"\0"


def test_bounds_and_read_only(tmp_path: Path) -> None:
    """Access beyond the end is refused with the image size in the message; a read-only
    image refuses writes and resizes; a closed image refuses everything."""
    path = tmp_path / "a.raw"
    create_image(str(path), "raw", 4096)
    with open_image(str(path)) as im:
        with pytest.raises(ImageError, match="4096 bytes"):
            im.read(4000, 100)
        with pytest.raises(ImageError, match="outside"):
            im.write(4096, b"x")
        with pytest.raises(ImageError):
            im.read(-1, 1)
    with open_image(str(path), readonly=True) as im:
        with pytest.raises(ImageError, match="read-only"):
            im.write(0, b"x")
        with pytest.raises(ImageError, match="read-only"):
            im.resize(8192)
    im.close()  # idempotent
    with pytest.raises(ImageError, match="closed"):
        im.read(0, 1)
    assert path.read_bytes() == bytes(4096)


def test_resize_grows_regular_files(tmp_path: Path) -> None:
    """Growing keeps the data and reads zeros beyond; shrinking is refused; qemu-img sees
    the new size."""
    path = tmp_path / "a.raw"
    create_image(str(path), "raw", 4096)
    with open_image(str(path)) as im:
        im.write(0, b"keep")
        im.resize(3 << 20)
        assert im.size() == 3 << 20
        assert im.read(0, 4) == b"keep" and im.read(4096, 10) == bytes(10)
        im.write((3 << 20) - 1, b"z")
        with pytest.raises(ImageError, match="shrinking"):
            im.resize(4096)
    assert path.stat().st_size == 3 << 20
    info = json.loads(run("qemu-img", "info", "--output=json", "-f", "raw", str(path)).stdout)
    assert info["virtual-size"] == 3 << 20


def test_not_a_file(tmp_path: Path) -> None:
    """Directories, character devices and missing paths are refused with clear errors."""
    with pytest.raises(ImageError, match="is a directory"):
        open_image(str(tmp_path), "raw")
    with pytest.raises(ImageError, match="neither a regular file nor a block device"):
        open_image(str(tmp_path), "raw", readonly=True)
    with pytest.raises(ImageError, match="neither a regular file nor a block device"):
        open_image("/dev/null", "raw")
    with pytest.raises(ImageError, match="no such file"):
        open_image(str(tmp_path / "missing.raw"))


def test_probe_refuses_foreign_formats(tmp_path: Path) -> None:
    """Probing recognises qcow2, treats anything else as raw, but refuses images of other
    formats (here a vmdk from qemu-img) instead of overwriting them as raw."""
    vmdk = tmp_path / "a.vmdk"
    assert run("qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M").returncode == 0
    with pytest.raises(ImageError, match="vmdk"):
        open_image(str(vmdk))
    with open_image(str(vmdk), "raw", readonly=True) as im:  # explicit raw is allowed
        assert im.read(0, 4) == b"KDMV"
    q = tmp_path / "a.qcow2"
    create_image(str(q), "qcow2", 1 << 20)
    assert probe_format(str(q)) == "qcow2"
    with open_image(str(q)) as im:
        assert im.format_name == "qcow2"


@pytest.mark.skipif(os.geteuid() != 0, reason="attaching a loop device needs root")
def test_block_device(tmp_path: Path) -> None:
    """A loop block device: size from BLKGETSIZE64, reads and writes reach the backing file,
    resize is refused, and QEMU's locks apply."""
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\x11" * (3 << 20))
    r = run("losetup", "--find", "--show", str(backing))
    assert r.returncode == 0, r.stderr
    dev = r.stdout.strip()
    try:
        with open_image(dev, "raw") as im:
            assert im.info()["block_device"] is True
            assert im.size() == 3 << 20
            assert im.read(0, 4) == b"\x11" * 4
            im.write(4096, b"blockdev")
            im.flush()
            with pytest.raises(ImageError, match="block device"):
                im.resize(4 << 20)
            r = run("qemu-io", "-f", "raw", "-c", "write 0 512", dev)
            assert 'Failed to get "write" lock' in r.stderr
    finally:
        run("losetup", "-d", dev)
    assert backing.read_bytes()[4096:4104] == b"blockdev"


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_created_images_are_private(tmp_path: Path, fmt: str) -> None:
    """An image the blobstore creates holds secrets (a TPM's seeds): only its owner may read
    it, whatever the umask allows; an existing empty file keeps the mode its owner gave it."""
    path = tmp_path / f"new.{fmt}"
    old = os.umask(0o022)
    try:
        create_image(str(path), fmt, 1 << 20)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    mine = tmp_path / f"mine.{fmt}"
    mine.touch(mode=0o644)
    os.chmod(mine, 0o640)
    create_image(str(mine), fmt, 1 << 20)
    assert mine.stat().st_mode & 0o777 == 0o640
