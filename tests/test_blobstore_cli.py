"""The `blobstore` tool end to end on raw and qcow2 files (as a subprocess, the way users run
it), its exit codes, and its interplay with qemu-img / qemu-io. Every qcow2 image a test leaves
behind must pass `qemu-img check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blobstore.image.open import open_image
from blobstore.store import BlobStore, Registration, required_size

BLOBS = ["--blob", "tpm/permanent=64k", "--blob", "tpm/volatile=32k",
         "--blob", "tpm/savestate=16k"]
NEED = required_size([Registration("tpm", "permanent", 65536),
                      Registration("tpm", "volatile", 32768),
                      Registration("tpm", "savestate", 16384)])
FORMATS = ["raw", "qcow2"]


@pytest.fixture(autouse=True)
def qemu_img_check(tmp_path):
    """After each test, every qcow2 image it wrote passes `qemu-img check`."""
    yield
    for path in sorted(tmp_path.glob("*.qcow2")):
        r = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"qemu-img check {path.name}: {r.stdout}{r.stderr}"


def bs(*args: str, input: bytes | None = None, check: int | None = 0
       ) -> subprocess.CompletedProcess:
    """Run `python -m blobstore ARGS`; assert the exit code when ``check`` is not None."""
    r = subprocess.run([sys.executable, "-m", "blobstore", *map(str, args)], input=input,
                       capture_output=True, timeout=60)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout.decode()


def err(r: subprocess.CompletedProcess) -> str:
    return r.stderr.decode()


def info(path: Path) -> dict:
    return json.loads(out(bs("info", "--output", "json", path)))


def created(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"store.{fmt}"
    r = bs("create", "-f", fmt, path, *BLOBS, "--name", "tpm0")
    assert f"Created {fmt} image {path} ({NEED} bytes)" in out(r)
    return path


def slot_offset(path: Path, blob: str, slot: int) -> int:
    b = next(b for b in info(path)["blobs"] if f"{b['owner']}/{b['name']}" == blob)
    return b["slots"][slot]["offset"]


def qemu_io(path: Path, fmt: str, command: str) -> str:
    r = subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], capture_output=True,
                       text=True, timeout=60, check=True)
    return r.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_put_get_list_info(tmp_path, fmt):
    path = created(tmp_path, fmt)
    qinfo = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(path)],
                                      capture_output=True, text=True, check=True).stdout)
    assert qinfo["format"] == fmt and qinfo["virtual-size"] == NEED

    bs("put", path, "tpm/permanent", input=b"from stdin")
    (tmp_path / "in.bin").write_bytes(bytes(range(256)) * 100)
    bs("put", path, "tpm/volatile", "-i", tmp_path / "in.bin")
    bs("put", path, "tpm/volatile", "-i", tmp_path / "in.bin")
    assert bs("get", path, "tpm/permanent").stdout == b"from stdin"
    bs("get", path, "tpm/volatile", "-o", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == bytes(range(256)) * 100

    lines = out(bs("list", path)).splitlines()
    assert lines[0].split() == ["BLOB", "SIZE", "MAX", "MODIFIED"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:3] for r in rows] == [["tpm/permanent", "10", "65536"],
                                     ["tpm/volatile", "25600", "32768"],
                                     ["tpm/savestate", "-", "16384"]]

    i = info(path)
    assert i["format_version"] == 1 and i["sector_size"] == 4096 and i["label"] == "tpm0"
    assert i["image_format"] == fmt and i["image_size"] == NEED == i["store_size"]
    assert i["directory"]["capacity"] == 31
    vol = i["blobs"][1]
    assert (vol["size"], vol["max_size"], vol["sequence"], vol["current_slot"]) == \
        (25600, 32768, 2, 1)
    assert [s["state"] for s in vol["slots"]] == ["valid", "valid"]
    assert [s["sequence"] for s in vol["slots"]] == [1, 2]
    assert vol["modified"] >= vol["created"]
    assert i["blobs"][2]["present"] is False

    human = out(bs("info", path))
    assert "blobstore format version: 1" in human
    assert "blob tpm/volatile: 25600 bytes, max 32768, sequence 2" in human
    assert "slot 1 at" in human and "valid (current), sequence 2, 25600 bytes" in human


def test_console_script_is_installed(tmp_path):
    exe = Path(sys.executable).with_name("blobstore")
    r = subprocess.run([str(exe), "showsize", *BLOBS], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == f"Blobstore requires {NEED // 1024}kb.\n"


def test_showsize(tmp_path):
    r = bs("showsize", *BLOBS, "--name", "tpm0", "--drive", "d0")
    assert out(r) == f"Blobstore tpm0 on drive with ID d0 requires {NEED // 1024}kb.\n"
    r = bs("showsize", *BLOBS, "--sector-size", "512")
    # 512-byte sectors: superblock 512, two 4608-byte directories (17 entries), two slots
    # each of 65536+88, 32768+88, 16384+88 rounded up to 512: 242176 bytes = 236.5 KiB, and
    # the printed size rounds up to whole KiB.
    end = 512 + 2 * 4608 + 2 * (66048 + 33280 + 16896)
    assert end == 242176 and out(r) == "Blobstore requires 237kb.\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_exit_codes_and_repair(tmp_path, fmt):
    path = created(tmp_path, fmt)
    bs("put", path, "tpm/permanent", input=b"A" * 1000)
    bs("put", path, "tpm/permanent", input=b"B" * 1000)
    r = bs("check", path)
    assert out(r).strip() == f"{path}: 3 blob(s) checked: no errors were found"

    # Damage the newer copy (slot 1) through QEMU: the old one is used, exit 1.
    qemu_io(path, fmt, f"write -P 0x41 {slot_offset(path, 'tpm/permanent', 1) + 100} 1")
    r = bs("check", path, check=1)
    assert "blob tpm/permanent: slot 1 is damaged (checksum mismatch); the copy in slot 0 " \
           "(sequence 1) is used" in out(r)
    assert "--repair rewrites it" in out(r)
    assert bs("get", path, "tpm/permanent").stdout == b"A" * 1000
    r = bs("check", "--repair", path, check=1)
    assert "repaired: blob tpm/permanent: slot 1 rewritten" in out(r)
    bs("check", path, check=0)
    assert bs("get", path, "tpm/permanent").stdout == b"A" * 1000

    # Both copies: exit 2, and get fails with a clear message.
    for slot in (0, 1):
        qemu_io(path, fmt, f"write -P 0x42 {slot_offset(path, 'tpm/permanent', slot) + 95} 1")
    r = bs("check", path, check=2)
    assert "blob tpm/permanent: no valid copy" in out(r)
    assert "the store is damaged" in out(r)
    r = bs("get", path, "tpm/permanent", check=1)
    assert "blob tpm/permanent is damaged: no valid copy" in err(r)
    bs("put", path, "tpm/permanent", input=b"fresh")
    bs("check", path, check=1)            # the other slot is still damaged
    bs("check", "-r", path, check=1)
    bs("check", path, check=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_of_unformatted_garbage_and_missing_images(tmp_path, fmt):
    path = tmp_path / f"zero.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "1M"], check=True)
    r = bs("check", path, check=2)
    assert "not formatted" in err(r) and "blobstore format" in err(r)
    r = bs("info", path, check=1)
    assert "not formatted" in err(r)
    qemu_io(path, fmt, "write -P 0x99 0 512")
    r = bs("check", path, check=2)
    assert "not a blobstore" in err(r)
    r = bs("check", tmp_path / "nope.img", check=3)
    assert "no such file" in err(r)


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_in_use(tmp_path, fmt):
    path = created(tmp_path, fmt)
    with BlobStore.open(open_image(str(path), fmt)) as store:
        store.write("tpm", "permanent", b"live")
        r = bs("check", path, check=3)
        assert "lock" in err(r) and "add -U" in err(r)
        r = bs("put", path, "tpm/permanent", input=b"x", check=1)
        assert "lock" in err(r)
        assert bs("get", "-U", path, "tpm/permanent").stdout == b"live"
        bs("check", "-U", path, check=0)
    bs("check", path, check=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_erases(tmp_path, fmt):
    path = created(tmp_path, fmt)
    bs("put", path, "tpm/permanent", input=b"secret")
    old_uuid = info(path)["uuid"]
    r = bs("format", path, "--blob", "other/blob=1k")
    assert "Formatted" in out(r)
    i = info(path)
    assert i["uuid"] != old_uuid
    assert [(b["owner"], b["name"]) for b in i["blobs"]] == [("other", "blob")]
    r = bs("format", path, *BLOBS, "--blob", "big/one=1M", check=1)
    assert "too small" in err(r) and f"has {NEED} bytes" in err(r)


def test_put_errors_and_adding_a_blob(tmp_path):
    path = created(tmp_path, "raw")
    r = bs("put", path, "tpm/volatile", input=b"v" * 32769, check=1)
    assert "32769 bytes exceed its max size of 32768 bytes" in err(r)
    r = bs("put", path, "tpm/nv", input=b"x", check=1)
    assert "no blob tpm/nv" in err(r) and "--max-size" in err(r)
    r = bs("put", path, "tpm/nv", "--max-size", "1k", input=b"x", check=1)
    assert f"needs {NEED + 8192} bytes" in err(r) and "qemu-img resize -f raw" in err(r)
    subprocess.run(["qemu-img", "resize", "-q", "-f", "raw", str(path), str(NEED + 8192)],
                   check=True)
    bs("put", path, "tpm/nv", "--max-size", "1k", input=b"x")
    assert bs("get", path, "tpm/nv").stdout == b"x"
    r = bs("get", path, "tpm/savestate", check=1)
    assert "blob tpm/savestate is absent" in err(r)
    r = bs("put", path, "tpm/nv", "-i", tmp_path / "missing", check=1)
    assert "cannot read" in err(r)


def test_create_refuses_to_overwrite_and_a_size_too_small(tmp_path):
    path = created(tmp_path, "raw")
    r = bs("create", path, *BLOBS, check=1)
    assert "already exists" in err(r)
    r = bs("create", tmp_path / "x.img", *BLOBS, "--size", "64k", check=1)
    assert f"--size 65536 is too small: these blobs need {NEED} bytes" in err(r)
    bs("create", tmp_path / "big.qcow2", *BLOBS, "--size", "1M", "--cluster-size", "4k")
    assert info(tmp_path / "big.qcow2")["image_size"] == 1 << 20


def test_snapshots_interoperate_with_qemu_img(tmp_path):
    path = created(tmp_path, "qcow2")
    bs("put", path, "tpm/permanent", input=b"A")
    bs("snapshot", "-c", "s1", path)
    bs("put", path, "tpm/permanent", input=b"B")
    subprocess.run(["qemu-img", "snapshot", "-c", "q1", str(path)], check=True)
    bs("put", path, "tpm/permanent", input=b"C")

    listing = out(bs("snapshot", "-l", path))
    assert [line.split()[:2] for line in listing.splitlines()[2:]] == [["1", "s1"],
                                                                       ["2", "q1"]]
    ql = subprocess.run(["qemu-img", "snapshot", "-l", str(path)], capture_output=True,
                        text=True, check=True).stdout
    assert " s1 " in ql and " q1 " in ql

    bs("snapshot", "-a", "s1", path)
    assert bs("get", path, "tpm/permanent").stdout == b"A"
    subprocess.run(["qemu-img", "snapshot", "-a", "q1", str(path)], check=True)
    assert bs("get", path, "tpm/permanent").stdout == b"B"
    bs("snapshot", "-a", "2", path)       # by id
    assert bs("get", path, "tpm/permanent").stdout == b"B"
    bs("snapshot", "-d", "s1", path)
    subprocess.run(["qemu-img", "snapshot", "-d", "q1", str(path)], check=True)
    assert out(bs("snapshot", "-l", path)).splitlines()[2:] == []
    bs("check", path, check=0)
    r = bs("snapshot", "-a", "nosuch", path, check=1)
    assert "nosuch" in err(r)


def test_snapshot_of_a_raw_image_is_a_clear_error(tmp_path):
    path = created(tmp_path, "raw")
    r = bs("snapshot", "-c", "s1", path, check=1)
    assert err(r).strip() == (f"blobstore: {path}: raw images have no internal snapshots "
                              f"(use a qcow2 image)")


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: VERB"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["create", "x.img", "--blob", "tpm/permanent"], "OWNER/NAME=MAXSIZE"),
    (["create", "x.img", "--blob", "tpm=1k"], "write it as OWNER/NAME"),
    (["create", "x.img", "--blob", "tpm/p=lots"], "invalid size 'lots'"),
    (["create", "x.img", "--blob", "a/b=1k", "--blob", "a/b=2k"], "a/b is given twice"),
    (["create", "x.img", "--sector-size", "1000"], "power of two"),
    (["create", "x.img", "--name", "n" * 65], "--name must be at most 64"),
    (["get", "x.img"], "the following arguments are required: OWNER/NAME"),
    (["snapshot", "x.qcow2"], "one of the arguments -c -a -l -d is required"),
    (["snapshot", "-c", "a", "-d", "b", "x.qcow2"], "not allowed with argument"),
    (["check", "-r", "-U", "x.img"], "--repair writes the image"),
    (["showsize"], "the following arguments are required: --blob"),
    (["info", "-f", "vmdk", "x"], "invalid choice: 'vmdk'"),
])
def test_usage_errors_exit_2(tmp_path, argv, message):
    r = subprocess.run([sys.executable, "-m", "blobstore", *argv], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: blobstore")
    assert message in r.stderr
    assert not os.listdir(tmp_path)
