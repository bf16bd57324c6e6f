"""The native qcow2 driver against the real qemu-img / qemu-io (QEMU 7.2).

Every image a test writes must pass ``qemu-img check`` with no errors and no leaks; data and
snapshots must interoperate in both directions.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from blobstore.image import ImageError, create_image, open_image, probe_format
from blobstore.image import qcow2_format as f
from blobstore.image.qcow2 import Qcow2Image

CLUSTER_SIZES = [512, 4096, 65536, 2 << 20]


# ------------------------------------------------------------------------------ helpers


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a QEMU tool, capturing text output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def assert_clean(path: Path) -> str:
    """qemu-img check: exit 0, no errors, no leaks."""
    r = run("qemu-img", "check", str(path))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "No errors were found on the image." in r.stdout
    assert "leaked" not in r.stdout
    return r.stdout


def qemu_io(path: Path, *cmds: str, fmt: str = "qcow2") -> str:
    """Run qemu-io commands; pattern mismatches (exit 1, "Pattern verification failed")
    fail the test."""
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = run(*args, str(path))
    assert r.returncode == 0 and "failed" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    return r.stdout


def qemu_info(path: Path) -> dict:
    """qemu-img info --output=json."""
    r = run("qemu-img", "info", "--output=json", str(path))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def qemu_create(path: Path, size: int, *opts: str) -> None:
    """qemu-img create -f qcow2 [-o opts]."""
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", ",".join(opts)]
    r = run(*args, str(path), str(size))
    assert r.returncode == 0, r.stderr


def snapshot_content(path: Path, name: str, tmp: Path) -> bytes:
    """The disk contents of snapshot ``name`` as qemu-img itself reads them."""
    out = tmp / f"snap-{name}.raw"
    r = run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-l", f"snapshot.name={name}",
            str(path), str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def active_content(path: Path, tmp: Path) -> bytes:
    """The current disk contents as qemu-img reads them."""
    out = tmp / "active.raw"
    r = run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(path), str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def header(path: Path) -> dict:
    """The parsed qcow2 header."""
    with open(path, "rb") as fh:
        return dict(f.Header.parse(fh.read(104)))


def patch_header(path: Path, offset: int, fmt: str, value: int) -> None:
    """Overwrite one big-endian header field."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))


# --------------------------------------------------------------------- format structures


def test_format_structures_round_trip_qemu_bytes(tmp_path: Path) -> None:
    """Header, header extension, feature name and snapshot entry parse the bytes qemu-img
    wrote and build them back identically."""
    img = tmp_path / "a.qcow2"
    qemu_create(img, 1 << 20)
    assert run("qemu-img", "snapshot", "-c", "snap1", str(img)).returncode == 0
    raw = img.read_bytes()
    hdr = f.Header.parse(raw[:104])
    assert (hdr.version, hdr.cluster_bits, hdr.size, hdr.refcount_order, hdr.header_length,
            hdr.nb_snapshots) == (3, 16, 1 << 20, 4, 112, 1)
    assert f.Header.build(hdr) == raw[:104]
    assert f.Header.sizeof() == 104
    ext = f.HeaderExtension.parse(raw[112:])
    assert ext.type == f.EXT_FEATURE_TABLE and ext.length == 8 * 48
    assert f.HeaderExtension.build(ext) == raw[112:112 + 8 + ext.length]
    assert ext.data == f.feature_table_bytes()
    names = [f.FeatureName.parse(ext.data[i:i + 48]) for i in range(0, 384, 48)]
    assert [(n.type, n.bit, n.name) for n in names] == list(f.FEATURE_NAMES)
    assert f.FeatureName.build(names[0]) == ext.data[:48]
    so = hdr.snapshots_offset
    # QEMU does not write the padding of the table's last entry when it ends the file.
    stored = raw[so:so + 72].ljust(72, b"\0")
    entry = f.SnapshotEntry.parse(stored)
    assert (entry.id_str, entry.name, entry.extra_data_size) == (b"1", b"snap1", 24)
    built = f.SnapshotEntry.build(entry)
    assert len(built) == 72 and built == stored
    extra = f.SnapshotExtra.parse(entry.extra_data)
    assert (extra.vm_state_size_large, extra.disk_size) == (0, 1 << 20)
    assert f.SnapshotExtra.build(extra) == entry.extra_data


# ---------------------------------------------------------------------------- creation


@pytest.mark.parametrize("cs", [512, 65536])
def test_create_is_laid_out_like_qemu_img(tmp_path: Path, cs: int) -> None:
    """Header cluster, refcount table and refcount block are byte-identical to what
    ``qemu-img create -f qcow2`` writes (L1 table from cluster 3)."""
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    create_image(str(ours), "qcow2", 100 << 20, cs)
    qemu_create(theirs, 100 << 20, f"cluster_size={cs}")
    a, b = ours.read_bytes(), theirs.read_bytes()
    assert a[:3 * cs] == b[:3 * cs]
    l1_size = header(ours)["l1_size"]
    assert a[3 * cs:3 * cs + 8 * l1_size] == b[3 * cs:3 * cs + 8 * l1_size]
    assert_clean(ours)


@pytest.mark.parametrize("cs", CLUSTER_SIZES)
def test_created_image_read_by_qemu(tmp_path: Path, cs: int) -> None:
    """qemu-img info reads our new image; qemu-io reads what we write, we read what it
    writes; qemu-img check stays clean."""
    img = tmp_path / "a.qcow2"
    size = 8 << 20
    create_image(str(img), "qcow2", size, cs)
    info = qemu_info(img)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == size and info["cluster-size"] == cs
    spec = info["format-specific"]["data"]
    assert (spec["compat"], spec["refcount-bits"], spec["compression-type"]) == ("1.1", 16,
                                                                                  "zlib")
    assert info["dirty-flag"] is False
    with open_image(str(img)) as im:
        assert im.format_name == "qcow2" and im.size() == size
        im.write(1000, b"\x5a" * 3000)  # crosses cluster boundaries for small clusters
        im.write(size - 700, b"\x6b" * 700)  # the very end of the disk
        assert im.read(1000, 3000) == b"\x5a" * 3000
    assert_clean(img)
    qemu_io(img, "read -P 0x5a 1000 3000", f"read -P 0x6b {size - 700} 700",
            "read -P 0 0 1000", f"read -P 0 4000 {size - 4700}")
    qemu_io(img, "write -P 0xab 123456 70000", "write -P 0xcd 4000000 1")
    with open_image(str(img)) as im:
        assert im.read(123456, 70000) == b"\xab" * 70000
        assert im.read(4000000, 2) == b"\xcd\x00"
        assert im.read(1000, 3000) == b"\x5a" * 3000
    assert_clean(img)


def test_create_refuses_existing_and_bad_arguments(tmp_path: Path) -> None:
    """A non-empty file is never overwritten; cluster sizes follow QEMU's limits; the size is
    rounded up to 512 bytes like qemu-img does; an existing empty file is fine."""
    img = tmp_path / "a.qcow2"
    img.write_bytes(b"precious")
    with pytest.raises(ImageError, match="not empty"):
        create_image(str(img), "qcow2", 1 << 20)
    assert img.read_bytes() == b"precious"
    for cs in (256, 3000, 4 << 20):
        with pytest.raises(ImageError, match="cluster size"):
            create_image(str(tmp_path / f"c{cs}.qcow2"), "qcow2", 1 << 20, cs)
    with pytest.raises(ImageError, match="larger cluster size"):
        create_image(str(tmp_path / "huge.qcow2"), "qcow2", 1 << 50, 512)
    assert not (tmp_path / "huge.qcow2").exists()
    empty = tmp_path / "empty.qcow2"
    empty.touch()
    create_image(str(empty), "qcow2", 1001)
    assert qemu_info(empty)["virtual-size"] == 1024
    assert probe_format(str(empty)) == "qcow2"
    assert_clean(empty)


# ------------------------------------------------------------------- qemu-img's images


@pytest.mark.parametrize("cs", CLUSTER_SIZES)
def test_qemu_img_created_images(tmp_path: Path, cs: int) -> None:
    """Images from ``qemu-img create -f qcow2`` with several cluster sizes: opened, written
    (across L2 table boundaries), read back by qemu-io, clean."""
    img = tmp_path / "q.qcow2"
    size = 16 << 20
    qemu_create(img, size, f"cluster_size={cs}")
    l2_span = cs * (cs // 8)  # guest bytes one L2 table maps
    offsets = sorted(o for o in {0, cs - 3, l2_span - 5, 2 * l2_span + 17, size - 10}
                     if o < size)
    with open_image(str(img)) as im:
        for i, off in enumerate(offsets):
            im.write(off, bytes([0x10 + i]) * min(4096, size - off))
    assert_clean(img)
    qemu_io(img, *(f"read -P {0x10 + i} {off} {min(4096, size - off)}"
                   for i, off in enumerate(offsets)
                   if all(not (o > off and o < off + min(4096, size - off)) for o in offsets)))


@pytest.mark.parametrize("bits", [1, 2, 8, 64])
def test_other_refcount_widths(tmp_path: Path, bits: int) -> None:
    """Refcount widths other than 16 are read and written; a snapshot needs refcount 2, which
    1-bit refcounts cannot store: refused cleanly, image still clean."""
    img = tmp_path / "r.qcow2"
    qemu_create(img, 4 << 20, "cluster_size=4096", f"refcount_bits={bits}")
    with open_image(str(img)) as im:
        assert im.info()["refcount_bits"] == bits
        im.write(0, b"\x01" * 50000)
        if bits == 1:
            with pytest.raises(ImageError, match="refcount_bits=1"):
                im.snapshot_create("s")
            im.write(8192, b"\x02" * 10)
        else:
            im.snapshot_create("s")
            im.write(8192, b"\x02" * 10)
    assert_clean(img)
    qemu_io(img, "read -P 1 0 8192", "read -P 2 8192 10", "read -P 1 8202 41798")
    if bits != 1:
        assert snapshot_content(img, "s", tmp_path)[:50000] == b"\x01" * 50000


def test_compressed_and_zero_clusters(tmp_path: Path) -> None:
    """Compressed clusters (zlib, written by qemu-io -c) and zero clusters (with and without
    a preallocated host cluster) read correctly; writing into them allocates ordinary
    clusters and frees the old ones (no leaks)."""
    img = tmp_path / "c.qcow2"
    qemu_create(img, 1 << 20)
    qemu_io(img, "write -c -P 0x11 0 64k", "write -c -P 0x22 64k 64k", "write -z 128k 64k",
            "write -P 0x33 192k 64k", "write -z 192k 64k")
    mapping = json.loads(run("qemu-img", "map", "--output=json", str(img)).stdout)
    assert any(m["zero"] and "offset" in m for m in mapping)  # a preallocated zero cluster
    with open_image(str(img)) as im:
        data = im.read(0, 256 << 10)
        assert data == b"\x11" * 65536 + b"\x22" * 65536 + bytes(131072)
        im.write(100, b"x" * 10)
        im.write(65536 + 100, b"y")
        im.write(131072 + 5, b"z")
        im.write(196608 + 7, b"w")
        im.read(0, 256 << 10)
    assert_clean(img)
    assert "0.00% compressed" in run("qemu-img", "check", str(img)).stdout
    qemu_io(img, "read -P 0x11 0 100", "read -P 0x78 100 10", "read -P 0x11 110 65426",
            "read -P 0x22 65536 100", "read -P 0x79 65636 1", "read -P 0 131072 5",
            "read -P 0x7a 131077 1", "read -P 0 131078 65535", "read -P 0 196608 7",
            "read -P 0x77 196615 1", "read -P 0 196616 65528")


def test_lazy_refcounts_image_stays_clean(tmp_path: Path) -> None:
    """An image with the lazy-refcounts compatible feature is written with exact refcounts:
    the dirty bit is never set and the image stays clean."""
    img = tmp_path / "l.qcow2"
    qemu_create(img, 1 << 20, "lazy_refcounts=on")
    with open_image(str(img)) as im:
        im.write(0, b"\x01" * 100000)
        assert header(img)["incompatible_features"] & f.INCOMPAT_DIRTY == 0
        im.snapshot_create("s")
        im.write(0, b"\x02" * 10)
    assert qemu_info(img)["dirty-flag"] is False
    assert qemu_info(img)["format-specific"]["data"]["lazy-refcounts"] is True
    assert_clean(img)


# ----------------------------------------------------------------------------- refusals


def _make_v2(p: Path) -> None:
    qemu_create(p, 1 << 20, "compat=0.10")


def _make_encrypted(p: Path) -> None:
    # qemu-img's LUKS set-up benchmarks PBKDF and fails on busy machines ("Unable to get
    # accurate CPU usage"); the refusal only looks at crypt_method (1 AES, 2 LUKS).
    qemu_create(p, 1 << 20)
    patch_header(p, 32, ">I", 2)


def _make_backing(p: Path) -> None:
    base = p.with_name("base.qcow2")
    qemu_create(base, 1 << 20)
    r = run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(p))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("make,message", [
    (_make_v2, "qemu-img amend"),
    (_make_encrypted, "encrypted"),
    (_make_backing, "backing file"),
    (lambda p: qemu_create(p, 1 << 20, f"data_file={p.with_suffix('.raw')}"),
     "external data file"),
    (lambda p: qemu_create(p, 1 << 20, "compression_type=zstd"), "zstd"),
    (lambda p: qemu_create(p, 1 << 20, "extended_l2=on"), "extended L2"),
])
def test_unsupported_images_are_refused_clearly(tmp_path: Path, make: Callable[[Path], None],
                                                message: str) -> None:
    """What the driver does not implement is refused with a message naming it (and, where
    one exists, the qemu-img command that converts the image)."""
    img = tmp_path / "x.qcow2"
    make(img)
    for readonly in (False, True):
        with pytest.raises(ImageError, match=message):
            open_image(str(img), readonly=readonly)
    # A refused open releases its locks: qemu-io can write the image afterwards.
    if message != "encrypted":
        qemu_io(img, "write -P 1 0 512")


def test_unknown_incompatible_feature_named_from_feature_table(tmp_path: Path) -> None:
    """Spec: an unknown incompatible bit must make the open fail; its name comes from the
    feature name table."""
    img = tmp_path / "u.qcow2"
    qemu_create(img, 1 << 20)
    raw = bytearray(img.read_bytes())
    # Rename the table's entry for incompatible bit 4 to a made-up bit 9 feature.
    ext = f.HeaderExtension.parse(raw[112:])
    entries = [f.FeatureName.parse(ext.data[i:i + 48]) for i in range(0, len(ext.data), 48)]
    entries.append({"type": 0, "bit": 9, "name": "time travel"})
    data = b"".join(f.FeatureName.build(e) for e in entries)
    blob = f.HeaderExtension.build({"type": f.EXT_FEATURE_TABLE, "length": len(data),
                                    "data": data}) + bytes(8)
    raw[112:112 + len(blob)] = blob
    img.write_bytes(bytes(raw))
    patch_header(img, 72, ">Q", 1 << 9)
    with pytest.raises(ImageError, match="time travel"):
        open_image(str(img))


@pytest.mark.parametrize("bit,word", [(f.INCOMPAT_CORRUPT, "corrupt"),
                                      (f.INCOMPAT_DIRTY, "dirty")])
def test_corrupt_or_dirty_images_are_read_only(tmp_path: Path, bit: int, word: str) -> None:
    """The corrupt bit forbids writing; the dirty bit means refcounts may be wrong. Both are
    refused for writing with the repair command, and still readable."""
    img = tmp_path / "d.qcow2"
    qemu_create(img, 1 << 20)
    qemu_io(img, "write -P 0x42 0 4096")
    patch_header(img, 72, ">Q", bit)
    with pytest.raises(ImageError, match=f"{word}.*qemu-img check -r all"):
        open_image(str(img))
    with open_image(str(img), readonly=True) as im:
        assert im.read(0, 4096) == b"\x42" * 4096
        with pytest.raises(ImageError, match="read-only"):
            im.write(0, b"x")
    assert header(img)["incompatible_features"] == bit  # untouched


def test_not_qcow2(tmp_path: Path) -> None:
    """A file that is not qcow2 is refused by the qcow2 driver."""
    img = tmp_path / "n.img"
    img.write_bytes(b"\0" * 65536)
    with pytest.raises(ImageError, match="not a qcow2 image"):
        open_image(str(img), "qcow2")


def test_unknown_extension_preserved_and_autoclear_cleared(tmp_path: Path) -> None:
    """Spec: unknown header extensions are kept when the header is rewritten; unknown
    autoclear bits are cleared before the first write (and left alone read-only)."""
    img = tmp_path / "e.qcow2"
    create_image(str(img), "qcow2", 1 << 20)
    raw = bytearray(img.read_bytes())
    ext = f.HeaderExtension.parse(raw[112:])
    end = 112 + 8 + ext.length
    unknown = f.HeaderExtension.build({"type": 0x12345678, "length": 5, "data": b"hello"})
    raw[end:end + len(unknown) + 8] = unknown + bytes(8)
    img.write_bytes(bytes(raw))
    patch_header(img, 88, ">Q", 1 << 5)
    with open_image(str(img), readonly=True) as im:
        im.read(0, 512)
    assert header(img)["autoclear_features"] == 1 << 5
    with open_image(str(img)) as im:
        assert header(img)["autoclear_features"] == 0
        im.write(0, b"\x01" * 512)
        im.snapshot_create("s")  # rewrites the header
    raw2 = img.read_bytes()
    assert raw2[end:end + len(unknown)] == unknown
    assert header(img)["nb_snapshots"] == 1
    assert_clean(img)


# ---------------------------------------------------------------------------- snapshots


def test_our_snapshots_listed_and_applied_by_qemu(tmp_path: Path) -> None:
    """Snapshots we create are listed by qemu-img (id, name, date, disk size) and
    ``qemu-img snapshot -a`` reverts data we wrote afterwards."""
    img = tmp_path / "s.qcow2"
    create_image(str(img), "qcow2", 4 << 20)
    before = time.time()
    with open_image(str(img)) as im:
        im.write(0, b"A" * 100000)
        s1 = im.snapshot_create("s1")
        im.write(0, b"B" * 50000)
        im.write(2 << 20, b"B" * 10)
        s2 = im.snapshot_create("s2")
        im.write(0, b"C" * 10)
        assert [s.name for s in im.snapshot_list()] == ["s1", "s2"]
    assert (s1.id, s2.id) == ("1", "2") and s1.disk_size == 4 << 20
    assert_clean(img)
    snaps = qemu_info(img)["snapshots"]
    assert [(s["id"], s["name"], s["vm-state-size"]) for s in snaps] == [("1", "s1", 0),
                                                                         ("2", "s2", 0)]
    assert all(before - 2 <= s["date-sec"] <= time.time() + 2 for s in snaps)
    listing = run("qemu-img", "snapshot", "-l", str(img)).stdout
    assert "s1" in listing and "s2" in listing
    assert snapshot_content(img, "s1", tmp_path)[:100001] == b"A" * 100000 + b"\0"
    assert run("qemu-img", "snapshot", "-a", "s1", str(img)).returncode == 0
    qemu_io(img, "read -P 0x41 0 100000", "read -P 0 2097152 10")
    with open_image(str(img)) as im:
        assert im.read(0, 100001) == b"A" * 100000 + b"\0"
    assert run("qemu-img", "snapshot", "-a", "2", str(img)).returncode == 0
    qemu_io(img, "read -P 0x42 0 50000", "read -P 0x41 50000 50000", "read -P 0x42 2097152 10")
    assert_clean(img)


def test_qemu_snapshots_listed_applied_deleted_by_us(tmp_path: Path) -> None:
    """Snapshots qemu-img creates are listed, applied and deleted by us; qemu-img sees the
    result and the image stays clean."""
    img = tmp_path / "q.qcow2"
    qemu_create(img, 2 << 20)
    qemu_io(img, "write -P 0x0a 0 200k")
    assert run("qemu-img", "snapshot", "-c", "q1", str(img)).returncode == 0
    qemu_io(img, "write -P 0x0b 0 100k")
    assert run("qemu-img", "snapshot", "-c", "q2", str(img)).returncode == 0
    qemu_io(img, "write -P 0x0c 0 10k")
    with open_image(str(img)) as im:
        lst = im.snapshot_list()
        assert [(s.id, s.name, s.vm_state_size, s.disk_size) for s in lst] == [
            ("1", "q1", 0, 2 << 20), ("2", "q2", 0, 2 << 20)]
        assert im.read(0, 10240) == b"\x0c" * 10240
        im.snapshot_apply("q1")
        assert im.read(0, 204800) == b"\x0a" * 204800
        im.write(0, b"\x0d" * 5)
        im.snapshot_apply("q2")
        assert im.read(0, 102400) == b"\x0b" * 102400
        assert im.read(102400, 10) == b"\x0a" * 10
        im.snapshot_delete("q1")
        assert [s.name for s in im.snapshot_list()] == ["q2"]
    assert_clean(img)
    assert [s["name"] for s in qemu_info(img)["snapshots"]] == ["q2"]
    qemu_io(img, "read -P 0x0b 0 100k", "read -P 0x0a 100k 100k")
    assert run("qemu-img", "snapshot", "-d", "q2", str(img)).returncode == 0
    assert_clean(img)


def test_snapshot_delete_frees_everything(tmp_path: Path) -> None:
    """Deleting a snapshot returns the clusters only it used: the allocation count drops back
    and repeated snapshot/overwrite/delete cycles reuse space instead of growing the file."""
    img = tmp_path / "d.qcow2"
    create_image(str(img), "qcow2", 4 << 20, 4096)
    with open_image(str(img)) as im:
        im.write(0, b"\x01" * (1 << 20))
    base_alloc = run("qemu-img", "check", str(img)).stdout.split("/")[0]
    sizes = []
    for cycle in range(5):
        with open_image(str(img)) as im:
            im.snapshot_create(f"s{cycle}")
            im.write(0, bytes([cycle + 2]) * (1 << 20))
            im.flush()
            im.snapshot_delete(f"s{cycle}")
        out = assert_clean(img)
        assert out.split("/")[0] == base_alloc
        sizes.append(img.stat().st_size)
    assert sizes[-1] == sizes[1]
    qemu_io(img, "read -P 6 0 1M")


def test_snapshot_errors(tmp_path: Path) -> None:
    """Duplicate, empty and unknown names are refused with useful messages; nothing
    changes."""
    img = tmp_path / "e.qcow2"
    create_image(str(img), "qcow2", 1 << 20)
    with open_image(str(img)) as im:
        im.snapshot_create("a")
        with pytest.raises(ImageError, match="already exists"):
            im.snapshot_create("a")
        with pytest.raises(ImageError, match="1-65535"):
            im.snapshot_create("")
        with pytest.raises(ImageError, match=r"no snapshot .*'zz'.*1:a"):
            im.snapshot_apply("zz")
        with pytest.raises(ImageError, match="no snapshot"):
            im.snapshot_delete("zz")
        assert im.supports_snapshots
    with open_image(str(img), readonly=True) as im:
        assert [s.name for s in im.snapshot_list()] == ["a"]
        with pytest.raises(ImageError, match="read-only"):
            im.snapshot_create("b")
    assert_clean(img)


def test_resize(tmp_path: Path) -> None:
    """Growing keeps data, reads zeros beyond, moves the L1 table when it must grow (512-byte
    clusters: 32 KiB per L1 entry), survives snapshots (applying an older snapshot restores
    its size, as qemu-img does); shrinking and odd sizes are refused."""
    img = tmp_path / "r.qcow2"
    create_image(str(img), "qcow2", 1 << 20, 512)
    with open_image(str(img)) as im:
        im.write(0, b"\x01" * 70000)
        im.snapshot_create("small")
        old_l1 = header(img)["l1_table_offset"]
        im.resize(100 << 20)
        assert header(img)["l1_table_offset"] != old_l1
        assert im.size() == 100 << 20
        im.write((100 << 20) - 512, b"\x02" * 512)
        assert im.read(0, 70001) == b"\x01" * 70000 + b"\0"
        assert im.read(50 << 20, 4096) == bytes(4096)
        with pytest.raises(ImageError, match="shrinking"):
            im.resize(1 << 20)
        with pytest.raises(ImageError, match="multiple of 512"):
            im.resize((200 << 20) + 1)
    assert_clean(img)
    info = qemu_info(img)
    assert info["virtual-size"] == 100 << 20
    qemu_io(img, f"read -P 2 {(100 << 20) - 512} 512", "read -P 1 0 70000",
            f"read -P 0 70000 {(100 << 20) - 70512}")
    with open_image(str(img)) as im:
        im.snapshot_apply("small")
        assert im.size() == 1 << 20
    assert qemu_info(img)["virtual-size"] == 1 << 20
    assert_clean(img)


def test_refcount_table_grows(tmp_path: Path) -> None:
    """With 512-byte clusters one refcount table cluster covers 8 MiB of file; writing more
    moves the table to a larger place, and everything stays consistent."""
    img = tmp_path / "g.qcow2"
    create_image(str(img), "qcow2", 32 << 20, 512)
    assert header(img)["refcount_table_clusters"] == 1
    with open_image(str(img)) as im:
        for i in range(10):
            im.write(i << 20, bytes([i + 1]) * (1 << 20))
        im.snapshot_create("s")
        im.write(0, b"\xff" * (1 << 20))
    assert header(img)["refcount_table_clusters"] > 1
    assert_clean(img)
    qemu_io(img, "read -P 0xff 0 1M", "read -P 10 9M 1M")
    assert snapshot_content(img, "s", tmp_path)[:1 << 20] == b"\x01" * (1 << 20)


@pytest.mark.parametrize("seed,cs,size", [(1, 512, 300_032), (2, 4096, 600_064),
                                          (3, 65536, 1_000_448), (4, 512, 150_016),
                                          (5, 2 << 20, 4 << 20), (6, 1024, 200_192)])
def test_random_sequences_against_model(tmp_path: Path, seed: int, cs: int, size: int) -> None:
    """Random writes, snapshot create/apply/delete, flushes and reopens against a reference
    model (one bytearray per snapshot). Afterwards qemu-img check is clean and qemu-img reads
    the active disk and every snapshot exactly as the model says."""
    rng = random.Random(seed)
    img = tmp_path / "m.qcow2"
    create_image(str(img), "qcow2", size, cs)
    model = bytearray(size)
    snaps: dict[str, bytes] = {}
    im = open_image(str(img))
    try:
        for step in range(80):
            op = rng.random()
            if op < 0.6:
                off = rng.randrange(size)
                n = rng.randint(1, min(size - off, 3 * cs))
                data = bytes([rng.randrange(1, 256)]) * n
                im.write(off, data)
                model[off:off + n] = data
            elif op < 0.75:
                name = f"s{step}"
                im.snapshot_create(name)
                snaps[name] = bytes(model)
            elif op < 0.87 and snaps:
                name = rng.choice(sorted(snaps))
                im.snapshot_apply(name)
                model[:] = snaps[name]
            elif snaps:
                name = rng.choice(sorted(snaps))
                im.snapshot_delete(name)
                del snaps[name]
            if rng.random() < 0.3:
                im.flush()
            if rng.random() < 0.08:
                im.close()
                assert_clean(img)
                im = open_image(str(img))
            assert im.read(0, size) == model, step
    finally:
        im.close()
    assert_clean(img)
    assert active_content(img, tmp_path) == model
    assert sorted(s["name"] for s in qemu_info(img).get("snapshots", [])) == sorted(snaps)
    for name, data in snaps.items():
        assert snapshot_content(img, name, tmp_path) == data, name


# ------------------------------------------------------------ write-through and crashes


def test_in_place_write_is_one_pwrite_and_flush_one_sync(tmp_path: Path) -> None:
    """Metadata is cached: rewriting an allocated, unshared cluster is a single pwrite with no
    barrier, and flush is a single fdatasync."""
    img = tmp_path / "p.qcow2"
    create_image(str(img), "qcow2", 1 << 20)
    with open_image(str(img)) as im:
        assert isinstance(im, Qcow2Image)
        im.write(0, b"\x01" * 4096)
        im.flush()
        calls: list[str] = []
        orig_pwrite, orig_barrier = im._pwrite, im._barrier
        im._pwrite = lambda off, data: (calls.append("w"), orig_pwrite(off, data))[1]
        im._barrier = lambda: (calls.append("b"), orig_barrier())[1]
        im.write(100, b"\x02" * 200)
        assert calls == ["w"]
        im.flush()
        assert calls == ["w", "b"]
    assert_clean(img)


class _Recorder:
    """Records every write and barrier of an open Qcow2Image, in order, and which operation
    each belongs to."""

    def __init__(self, im: Qcow2Image) -> None:
        self.log: list[tuple[int, bytes] | None] = []  # None is a barrier
        self.ops: list[tuple[int, int, str]] = []  # (first, end) log index of an operation
        orig_pwrite, orig_barrier = im._pwrite, im._barrier

        def pwrite(off: int, data) -> None:
            self.log.append((off, bytes(data)))
            orig_pwrite(off, data)

        def barrier() -> None:
            self.log.append(None)
            orig_barrier()

        im._pwrite = pwrite  # type: ignore[method-assign]
        im._barrier = barrier  # type: ignore[method-assign]

    def op(self, kind: str, fn, *args) -> None:
        """Run one image operation and remember its span in the log."""
        first = len(self.log)
        fn(*args)
        self.ops.append((first, len(self.log), kind))

    def kind_at(self, k: int) -> str:
        """The operation during which a crash after ``k`` log entries happens."""
        return next((kind for a, b, kind in self.ops if a < k < b), "between")


class _CrashImages:
    """Disk states after a crash: everything written before the last barrier is on disk; of
    the writes after it, an arbitrary subset made it. Crash points must be asked in
    increasing order (the durable prefix is kept incrementally)."""

    def __init__(self, base: bytes, log: list, rng: random.Random) -> None:
        self.log, self.rng = log, rng
        self.durable = bytearray(base)
        self.applied = 0  # log entries folded into self.durable

    @staticmethod
    def _apply(state: bytearray, entry: tuple[int, bytes]) -> None:
        off, data = entry
        if off + len(data) > len(state):
            state.extend(bytes(off + len(data) - len(state)))
        state[off:off + len(data)] = data

    def at(self, k: int) -> bytes:
        """The file after a crash once ``k`` log entries were issued."""
        last = max((i for i in range(self.applied, k) if self.log[i] is None), default=-1)
        if last >= 0:
            for entry in self.log[self.applied:last]:
                if entry is not None:
                    self._apply(self.durable, entry)
            self.applied = last + 1
        state = bytearray(self.durable)
        for entry in self.log[self.applied:k]:
            if entry is not None and self.rng.random() < 0.5:
                self._apply(state, entry)
        return bytes(state)


def _check_errors(path: Path) -> tuple[int, list[str]]:
    r = run("qemu-img", "check", str(path))
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "ERROR" in line]
    return r.returncode, errors


@pytest.mark.parametrize("cs,refcount_bits", [(512, 64), (65536, 16)])
def test_crash_at_any_point_leaks_at_most(tmp_path: Path, cs: int, refcount_bits: int) -> None:
    """Crash model: all writes before the last barrier are durable, any subset of the later
    ones is. Crashes throughout writes with allocation, copy-on-write, flush, resize and
    refcount-table growth leave an image qemu-img check finds no error in (leaked clusters
    are allowed: exit 0 or 3). Inside a snapshot create/apply/delete the only errors allowed
    are COPIED flags disagreeing with over-counted refcounts (QEMU has the same window; data
    is safe); our next writable open repairs them. Every crash image opens and reads.
    (512-byte clusters with 64-bit refcounts: one refcount table cluster covers only 2 MiB,
    so the big write moves the table.)"""
    img = tmp_path / "c.qcow2"
    qemu_create(img, 4 << 20, f"cluster_size={cs}", f"refcount_bits={refcount_bits}")
    with open_image(str(img)) as im:
        im.write(0, b"\x01" * 200000)
        im.snapshot_create("old")
    base = img.read_bytes()
    im = open_image(str(img))
    assert isinstance(im, Qcow2Image)
    rec = _Recorder(im)
    rec.op("write", im.write, 100, b"\x02" * 300)  # copy-on-write of shared clusters
    rec.op("write", im.write, 1 << 20, b"\x03" * 100000)  # fresh allocation
    rec.op("flush", im.flush)
    rec.op("snapshot", im.snapshot_create, "mid")
    rec.op("write", im.write, 0, b"\x04" * 70000)
    rec.op("snapshot", im.snapshot_delete, "old")
    rec.op("resize", im.resize, 16 << 20)
    rec.op("write", im.write, (12 << 20) + 5, b"\x05" * (2 << 20 if cs == 512 else 300000))
    if cs == 512:
        assert header(img)["refcount_table_clusters"] > 1
    rec.op("snapshot", im.snapshot_apply, "mid")
    rec.op("write", im.write, 5000, b"\x06" * 10)
    rec.op("close", im.close)
    assert_clean(img)
    log = rec.log
    assert log.count(None) > 10
    rng = random.Random(cs)
    # Crash points: around every barrier, the start of every snapshot operation (where its
    # refcounts and flags change), and a random sample.
    must = {i for i, e in enumerate(log) if e is None}
    must |= {k for a, b, kind in rec.ops if kind == "snapshot" for k in range(a, min(b, a + 30))}
    points = sorted({k for k in must if k <= len(log)}
                    | set(rng.sample(range(len(log) + 1), min(60, len(log) + 1))))
    crash = tmp_path / "crash.qcow2"
    states = _CrashImages(base, log, rng)
    seen = set()
    for k in points:
        crash.write_bytes(states.at(k))
        rc, errors = _check_errors(crash)
        kind = rec.kind_at(k)
        if kind == "snapshot":
            assert rc in (0, 2, 3), (k, kind, errors)
            assert all("OFLAG_COPIED" in e for e in errors), (k, kind, errors)
            seen.add(bool(errors))
        else:
            assert rc in (0, 3) and not errors, (k, kind, errors)
        with open_image(str(crash), readonly=True) as ro:
            for off in (0, 1 << 20, 12 << 20):
                if off < ro.size():
                    ro.read(off, 300000)
        if errors:
            open_image(str(crash)).close()  # the writable open repairs the flags
            rc, errors = _check_errors(crash)
            assert rc in (0, 3) and not errors, (k, "after reopen", errors)
    assert True in seen  # the window exists and the repair was exercised


def test_interrupted_snapshot_mark_kept_by_qemu_and_repaired(tmp_path: Path) -> None:
    """The mark of an interrupted snapshot operation is an unknown header extension to QEMU:
    qemu-img keeps it when it rewrites the header; our next writable open fixes the COPIED
    flags and removes it."""
    img = tmp_path / "m.qcow2"
    create_image(str(img), "qcow2", 1 << 20)
    im = open_image(str(img))
    assert isinstance(im, Qcow2Image)
    im.write(0, b"a" * 1000)
    im.flush()
    im._begin_flag_update()
    # Simulate the crash: drop the descriptor (and its locks) without finishing.
    im._lock.release()
    os.close(im._fd)
    im._fd = -1
    assert f.FLAG_UPDATE_NOTE in img.read_bytes()
    assert run("qemu-img", "snapshot", "-c", "x", str(img)).returncode == 0
    assert f.FLAG_UPDATE_NOTE in img.read_bytes()
    with open_image(str(img), readonly=True):
        pass
    assert f.FLAG_UPDATE_NOTE in img.read_bytes()  # read-only opens change nothing
    open_image(str(img)).close()
    assert f.FLAG_UPDATE_NOTE not in img.read_bytes()
    assert_clean(img)
    qemu_io(img, "read -P 0x61 0 1000")
