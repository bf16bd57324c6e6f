"""The emulator keeps its state in a blobstore (issue 3 items 4, 5 and 7), end to end.

Every test runs real ``python -m swtpm_py socket`` processes on raw and qcow2 images and checks
what a user would: the showsize sentence and the exact size, what create / format /
formatifbad / no action do to missing, empty, all-zero, garbage and valid images, that state
follows qcow2 snapshots (taken with qemu-img and with ``blobstore snapshot``), that every
acknowledged change survives ``kill -9``, and that an image in use is refused to a second
emulator and to qemu-img. Every qcow2 image a test leaves behind must pass ``qemu-img check``
(an autouse fixture runs it).

The TPM state used as a marker, before NV indices exist: ``resetCount`` (ReadClock), which
every TPM Reset (Startup(CLEAR) after an unorderly or CLEAR shutdown) increments and commits
to the permanent blob before the response, and PCR 0, which Shutdown(STATE) saves and
Startup(STATE) restores.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tpmcmd as T
from blobstore.memory import MemoryImage
from blobstore.store import BlobStore, Registration, required_size
from emulator import Emulator, free_port_pair
from swtpm_py.blobstorage import registrations
from swtpm_py.tpm.constants import ALG, CC

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SWTPM_PY = [sys.executable, "-m", "swtpm_py", "socket", "--tpm2"]
BLOBSTORE = [sys.executable, "-m", "blobstore"]
FORMATS = ["raw", "qcow2"]
#: Emulator flags for tests that drive Startup/Shutdown themselves.
MANUAL = "not-need-init,disable-auto-shutdown"
#: Flags for tests where every start is a TPM Reset (resetCount + 1, committed at start-up).
RESETTING = "not-need-init,startup-clear,disable-auto-shutdown"
READ_CLOCK = T.cmd(CC.ReadClock)
CTRL_INIT = 0x02
CTRL_STORE_VOLATILE = 0x0A
NEED = required_size(registrations())


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _qcow2_images_pass_qemu_img_check(tmp_path: Path) -> Iterator[None]:
    """After each test: every qcow2 image it wrote passes ``qemu-img check``."""
    yield
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path.read_bytes()[:4] == b"QFI\xfb":
            r = subprocess.run(["qemu-img", "check", str(path)], capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0 and "No errors were found" in r.stdout, (path, r.stdout,
                                                                              r.stderr)


def drive_args(path: Path, fmt: str | None, action: str | None = None) -> list[str]:
    """``--blobstore name=tpm,drive=d0[,action] --drive id=d0,file=PATH[,format=F]``."""
    store = "name=tpm,drive=d0" + (f",{action}" if action else "")
    drive = f"id=d0,file={path}" + (f",format={fmt}" if fmt else "")
    return ["--blobstore", store, "--drive", drive]


def emulator(tmp_path: Path, state_args: list[str], flags: str | None = RESETTING) -> Emulator:
    """An (unstarted) swtpm_py emulator whose state option is ``state_args``."""
    return Emulator("swtpm_py", state_dir=tmp_path / "logs", flags=flags,
                    extra_args=state_args, tpmstate=False)


def run_socket(args: list[str], timeout: float = 30, **kw: object) -> subprocess.CompletedProcess:
    """Run ``swtpm_py socket --tpm2 ARGS`` to completion (for start-up failures and showsize).
    A control channel on a free port is added unless ARGS has one."""
    extra = [] if "--ctrl" in args else ["--ctrl", f"type=tcp,port={free_port_pair()}"]
    return subprocess.run(SWTPM_PY + extra + args, capture_output=True, text=True,
                          timeout=timeout, env=kw.pop("env", ENV), **kw)  # type: ignore[arg-type]


def make_image(path: Path, fmt: str, size: int = NEED) -> None:
    """An all-zero image of ``size`` virtual bytes (qemu-img's own qcow2 layout)."""
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(size)
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                       check=True, timeout=30)


def fill_garbage(path: Path, fmt: str) -> None:
    """Non-store bytes where the store's superblock and directories would be: random ones
    written directly for raw, a qemu-io pattern for qcow2 (guest data)."""
    data = random.Random(7).randbytes(64 * 1024)
    if fmt == "raw":
        with open(path, "r+b") as f:
            f.write(data)
    else:
        # Guest data written by qemu-io (a repeated byte: qemu-io writes patterns).
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(path)],
                       check=True, timeout=30, capture_output=True)


def guest_bytes(path: Path, fmt: str) -> bytes:
    """The image's first 64 KiB as a guest sees them."""
    if fmt == "raw":
        return path.read_bytes()[:65536]
    out = path.with_suffix(".dump")
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(path), str(out)],
                   check=True, timeout=30)
    try:
        return out.read_bytes()[:65536]
    finally:
        out.unlink()


def reset_count(emu: Emulator) -> int:
    """ReadClock's resetCount (the TPM must be started)."""
    r = emu.command(READ_CLOCK)
    assert T.rc(r) == 0
    return T.read_clock_info(r)["reset_count"]


def ctrl_init(emu: Emulator) -> None:
    """The control channel's INIT (_TPM_Init): the TPM then needs a Startup."""
    assert emu.ctrl(CTRL_INIT, bytes(4), reply_size=4) == bytes(4)


def measured(label: bytes) -> bytes:
    """PCR 0 (SHA-256) after one extend of SHA-256(label) from zeros."""
    return hashlib.sha256(bytes(32) + hashlib.sha256(label).digest()).digest()


def pcr0(emu: Emulator) -> bytes:
    """PCR 0 of the SHA-256 bank."""
    r = emu.command(T.pcr_read(ALG.SHA256, [0]))
    assert T.rc(r) == 0
    return T.pcr_values(r)[0]


def started_value(tmp_path: Path, state_args: list[str]) -> int:
    """Start (a TPM Reset), read resetCount, stop."""
    with emulator(tmp_path, state_args) as emu:
        return reset_count(emu)


# ---------------------------------------------------------------------------- showsize


@pytest.mark.parametrize("fmt", FORMATS)
def test_showsize_is_the_size_the_emulator_needs(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    r = run_socket(drive_args(img, fmt, "showsize"))
    assert r.returncode == 0, r.stderr
    kib = NEED // 1024
    assert r.stdout == f"Blobstore tpm on drive with ID d0 requires {kib}kb.\n"
    assert not img.exists()                                 # showsize touches nothing

    make_image(img, fmt, kib * 1024)                        # exactly that size works
    fresh = started_value(tmp_path, drive_args(img, fmt, "formatifbad"))
    assert started_value(tmp_path, drive_args(img, fmt)) == fresh + 1

    # One step less is refused with both sizes (qcow2 images are sized in 512-byte sectors,
    # so that is its smallest step; raw files shrink by one byte).
    small = tmp_path / f"small.{fmt}"
    less = kib * 1024 - (1 if fmt == "raw" else 512)
    make_image(small, fmt, less)
    for action in (None, "format", "formatifbad"):
        r = run_socket(drive_args(small, fmt, action))
        assert r.returncode == 1, r.stderr
        assert str(NEED) in r.stderr and str(less) in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert guest_bytes(small, fmt) == bytes(65536)          # nothing was written


# ---------------------------------------------------------------------------- actions


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_action_never_formats(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    r = run_socket(drive_args(img, fmt))
    assert r.returncode == 1 and "does not exist" in r.stderr and "',create'" in r.stderr
    assert not img.exists()
    img.touch()
    r = run_socket(drive_args(img, fmt))
    assert r.returncode == 1 and "is empty" in r.stderr and "',create'" in r.stderr
    assert img.stat().st_size == 0
    img.unlink()
    make_image(img, fmt)
    r = run_socket(drive_args(img, fmt))
    assert r.returncode == 1, r.stderr
    assert "not formatted" in r.stderr and "',formatifbad'" in r.stderr, r.stderr
    assert guest_bytes(img, fmt) == bytes(65536)
    fill_garbage(img, fmt)
    before = guest_bytes(img, fmt)
    r = run_socket(drive_args(img, fmt))
    assert r.returncode == 1, r.stderr
    assert "blobstore check" in r.stderr and "',formatifbad'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert guest_bytes(img, fmt) == before                  # never a silent reformat


@pytest.mark.parametrize("fmt", FORMATS)
def test_create(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    first = started_value(tmp_path, drive_args(img, fmt, "create"))   # missing: created
    head = img.read_bytes()[:4]
    assert (head == b"QFI\xfb") == (fmt == "qcow2")
    assert started_value(tmp_path, drive_args(img, fmt, "create")) == first + 1  # kept
    assert started_value(tmp_path, drive_args(img, fmt)) == first + 2
    empty = tmp_path / f"empty.{fmt}"
    empty.touch()                                            # empty: created in place
    assert started_value(tmp_path, drive_args(empty, fmt, "create")) == first
    zeros = tmp_path / f"zeros.{fmt}"
    make_image(zeros, fmt)                                   # all zero: formatted
    assert started_value(tmp_path, drive_args(zeros, fmt, "create")) == first
    small = tmp_path / f"small.{fmt}"
    make_image(small, fmt, 64 * 1024)                        # too small: grown, formatted
    assert started_value(tmp_path, drive_args(small, fmt, "create")) == first
    info = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, str(small)],
                          capture_output=True, text=True, check=True, timeout=30).stdout
    assert f'"virtual-size": {NEED}' in info
    garbage = tmp_path / f"garbage.{fmt}"
    make_image(garbage, fmt)
    fill_garbage(garbage, fmt)
    before = guest_bytes(garbage, fmt)
    r = run_socket(drive_args(garbage, fmt, "create"))
    assert r.returncode == 1 and "',formatifbad'" in r.stderr, r.stderr
    assert guest_bytes(garbage, fmt) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_and_formatifbad(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    make_image(img, fmt)
    fill_garbage(img, fmt)
    first = started_value(tmp_path, drive_args(img, fmt, "formatifbad"))  # damaged: formatted
    # A valid store is never touched by formatifbad ...
    assert started_value(tmp_path, drive_args(img, fmt, "formatifbad")) == first + 1
    assert started_value(tmp_path, drive_args(img, fmt, "formatifbad")) == first + 2
    # ... and always by format: a clean TPM.
    assert started_value(tmp_path, drive_args(img, fmt, "format")) == first
    assert started_value(tmp_path, drive_args(img, fmt)) == first + 1
    zeros = tmp_path / f"zeros.{fmt}"
    make_image(zeros, fmt)
    assert started_value(tmp_path, drive_args(zeros, fmt, "formatifbad")) == first


def test_truncated_store_is_an_error_until_formatted(tmp_path: Path) -> None:
    img = tmp_path / "tpm.raw"
    first = started_value(tmp_path, drive_args(img, "raw", "create"))
    with open(img, "r+b") as f:
        f.truncate(8192)
    before = img.read_bytes()
    for action in (None, "create"):                          # damaged: never reformatted
        r = run_socket(drive_args(img, "raw", action))
        assert r.returncode == 1 and "truncated" in r.stderr, r.stderr
        assert "blobstore check" in r.stderr
    for action in ("formatifbad", "format"):                 # too small to format in place
        r = run_socket(drive_args(img, "raw", action))
        assert r.returncode == 1 and str(NEED) in r.stderr and "8192" in r.stderr, r.stderr
        assert "qemu-img resize" in r.stderr
    assert img.read_bytes() == before
    with open(img, "r+b") as f:          # grown back: the superblock and directory copy A
        f.truncate(NEED)                  # are sound, every blob's slots are blank (damage)
    r = run_socket(drive_args(img, "raw"))
    assert r.returncode == 1 and "tpm/permanent" in r.stderr and "no valid copy" in r.stderr
    assert "',formatifbad'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert started_value(tmp_path, drive_args(img, "raw", "formatifbad")) == first


@pytest.mark.parametrize("cluster_size", ["512", "4k", "64k", "2M"])
def test_qemu_img_created_images_of_any_cluster_size(tmp_path: Path, cluster_size: str) -> None:
    img = tmp_path / "tpm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"cluster_size={cluster_size}", str(img), str(NEED)], check=True,
                   timeout=30)
    first = started_value(tmp_path, drive_args(img, None, "formatifbad"))   # format probed
    assert started_value(tmp_path, drive_args(img, "qcow2")) == first + 1


# ---------------------------------------------------------------------------- shorthands


def test_default_is_a_qcow2_image_in_the_data_directory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TPM_PATH", raising=False)
    image = tmp_path / "xdg" / "swtpm_py" / "tpm.qcow2"
    first = started_value(tmp_path, [])
    log = (tmp_path / "logs-swtpm_py.log").read_text()
    assert f"keeping the TPM state in the blobstore image {image}" in log
    assert image.read_bytes()[:4] == b"QFI\xfb"
    assert image.parent.stat().st_mode & 0o777 == 0o700
    assert started_value(tmp_path, []) == first + 1         # the same TPM next time
    # An explicit directory still works and is a different TPM.
    state = tmp_path / "dir"
    state.mkdir()
    assert started_value(tmp_path, ["--tpmstate", f"dir={state}"]) == first
    assert (state / "swtpm_py-permanent.blob").exists()


def test_blobstore_uri(tmp_path: Path) -> None:
    img = tmp_path / "vm.qcow2"
    first = started_value(tmp_path, ["--tpmstate", f"backend-uri=blobstore://{img}"])
    assert img.read_bytes()[:4] == b"QFI\xfb"
    assert started_value(tmp_path, drive_args(img, None)) == first + 1  # same store
    raw = tmp_path / "vm.img"
    assert started_value(tmp_path, ["--tpmstate", f"backend-uri=blobstore://{raw}"]) == first
    assert raw.stat().st_size == NEED


def test_file_uri_on_a_proxmox_style_raw_volume(tmp_path: Path) -> None:
    vol = tmp_path / "vm-100-disk-1.raw"
    with open(vol, "wb") as f:                               # Proxmox: 4 MiB, zeroed
        f.truncate(4 << 20)
    uri = ["--tpmstate", f"backend-uri=file://{vol}"]
    first = started_value(tmp_path, uri)
    assert started_value(tmp_path, uri) == first + 1
    assert vol.stat().st_size == 4 << 20
    # A volume that is a qcow2 image is still read as raw (file:// volumes are raw): the
    # qcow2 header is not a store, and it is not reformatted.
    q = tmp_path / "q.qcow2"
    make_image(q, "qcow2")
    before = q.read_bytes()
    r = run_socket(["--tpmstate", f"backend-uri=file://{q}"])
    assert r.returncode == 1 and "--blobstore name=tpm" in r.stderr, r.stderr
    assert q.read_bytes() == before


def test_file_uri_refuses_swtpm_own_state(tmp_path: Path) -> None:
    vol = tmp_path / "swtpm.vol"
    with open(vol, "wb") as f:
        f.truncate(1 << 20)
    port = free_port_pair()
    # Let swtpm write its own linear-file format there (startup-clear writes permall).
    proc = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate",
                             f"backend-uri=file://{vol}", "--server", f"type=tcp,port={port}",
                             "--ctrl", f"type=tcp,port={port + 1}", "--flags",
                             "not-need-init,startup-clear"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while vol.read_bytes()[:4096] == bytes(4096):
            assert time.monotonic() < deadline, "swtpm wrote nothing"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    before = vol.read_bytes()
    r = run_socket(["--tpmstate", f"backend-uri=file://{vol}"])
    assert r.returncode == 1, r.stderr
    assert "blobstore check" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert vol.read_bytes() == before                       # swtpm's state is untouched


def test_option_misuse(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    cases = [
        (["--drive", f"id=d0,file={img}"], "no --blobstore uses it"),
        (["--tpmstate", f"dir={tmp_path}"] + drive_args(img, "raw"), "give only one"),
        (["--blobstore", "name=tpm,drive=d1", "--drive", f"id=d0,file={img}"],
         "no --drive has id=d1"),
        (["--blobstore", "name=tpm,drive=d0,create,format", "--drive", f"id=d0,file={img}"],
         "at most one"),
        (["--blobstore", "name=tpm,drive=d0", "--drive", f"id=d0,file={img},format=vmdk"],
         "format=vmdk is not supported"),
        (["--tpmstate", "backend-uri=blobstore://"], "names no file"),
    ]
    for args, message in cases:
        r = run_socket(args)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not img.exists()


# ---------------------------------------------------------------------------- state flow


@pytest.mark.parametrize("fmt", FORMATS)
def test_print_states_and_store_volatile(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    args = drive_args(img, fmt)
    r = run_socket(["--print-states"] + args)               # no image yet
    assert (r.returncode, r.stdout) == (0, '{ "type": "swtpm", "states": [] }')
    make_image(img, fmt)                                     # not formatted yet
    r = run_socket(["--print-states"] + args)
    assert (r.returncode, r.stdout) == (0, '{ "type": "swtpm", "states": [] }')
    with emulator(tmp_path, drive_args(img, fmt, "create"), flags=MANUAL) as emu:
        assert T.rc(emu.command(T.startup())) == 0
        # While it runs (the image is shared read-only, like qemu-img -U).
        r = run_socket(["--print-states"] + args)
        assert r.returncode == 0 and '"name": "permall"' in r.stdout, r.stderr
        assert "volatilestate" not in r.stdout
        assert emu.ctrl(CTRL_STORE_VOLATILE, reply_size=4) == bytes(4)
        assert T.rc(emu.command(T.shutdown(clear=False))) == 0
    r = run_socket(["--print-states"] + args)
    assert r.returncode == 0
    names = [n for n in ("permall", "volatilestate", "savestate") if f'"{n}"' in r.stdout]
    assert names == ["permall", "volatilestate", "savestate"], r.stdout
    g = subprocess.run(BLOBSTORE + ["get", str(img), "tpm/permanent"], capture_output=True,
                       timeout=30)
    assert g.returncode == 0 and f'"size": {len(g.stdout)}' in r.stdout


def snapshot_cmd(tool: str, verb: str, name: str, img: Path) -> list[str]:
    """A snapshot command of qemu-img or of our blobstore tool."""
    base = ["qemu-img", "snapshot"] if tool == "qemu-img" else BLOBSTORE + ["snapshot"]
    return base + [verb, name, str(img)]


@pytest.mark.parametrize("tool", ["qemu-img", "blobstore"])
def test_state_follows_snapshots(tmp_path: Path, tool: str) -> None:
    img = tmp_path / "tpm.qcow2"
    args = drive_args(img, "qcow2", "create")
    # State A: resetCount rA (committed by Startup) and PCR 0 saved by Shutdown(STATE).
    with emulator(tmp_path, args, flags=MANUAL) as emu:
        assert T.rc(emu.command(T.startup())) == 0
        r_a = reset_count(emu)
        assert T.rc(emu.command(T.pcr_extend(0, ALG.SHA256,
                                             hashlib.sha256(b"A").digest()))) == 0
        assert T.rc(emu.command(T.shutdown(clear=False))) == 0
    subprocess.run(snapshot_cmd(tool, "-c", "s1", img), check=True, timeout=30)
    # State B: a TPM Reset (resetCount + 1) and another PCR 0.
    with emulator(tmp_path, args, flags=MANUAL) as emu:
        assert T.rc(emu.command(T.startup())) == 0        # resume-less restart
        assert T.rc(emu.command(T.shutdown())) == 0
        ctrl_init(emu)
        assert T.rc(emu.command(T.startup())) == 0        # TPM Reset
        assert reset_count(emu) == r_a + 1
        assert T.rc(emu.command(T.pcr_extend(0, ALG.SHA256,
                                             hashlib.sha256(b"B").digest()))) == 0
        assert T.rc(emu.command(T.shutdown(clear=False))) == 0
    subprocess.run(snapshot_cmd(tool, "-c", "s2", img), check=True, timeout=30)
    subprocess.run(snapshot_cmd(tool, "-a", "s1", img), check=True, timeout=30)
    with emulator(tmp_path, args, flags=MANUAL) as emu:
        assert T.rc(emu.command(T.startup(clear=False))) == 0   # resume A
        assert reset_count(emu) == r_a
        assert pcr0(emu) == measured(b"A")
    subprocess.run(snapshot_cmd(tool, "-a", "s2", img), check=True, timeout=30)
    with emulator(tmp_path, args, flags=MANUAL) as emu:
        assert T.rc(emu.command(T.startup(clear=False))) == 0   # and forward to B
        assert reset_count(emu) == r_a + 1
        assert pcr0(emu) == measured(b"B")
    for name in ("s1", "s2"):
        subprocess.run(snapshot_cmd(tool, "-d", name, img), check=True, timeout=30)
    listed = subprocess.run(["qemu-img", "snapshot", "-l", str(img)], capture_output=True,
                            text=True, check=True, timeout=30).stdout
    assert "s1" not in listed and "s2" not in listed
    assert started_value(tmp_path, args) == r_a + 2          # still a working store


@pytest.mark.parametrize("fmt", FORMATS)
def test_second_emulator_and_qemu_img_are_refused(tmp_path: Path, fmt: str) -> None:
    img = tmp_path / f"tpm.{fmt}"
    with emulator(tmp_path, drive_args(img, fmt, "create")) as emu:
        first = reset_count(emu)
        r = run_socket(drive_args(img, fmt), timeout=30)
        assert r.returncode == 1, r.stderr
        assert "lock" in r.stderr and "in use" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        if fmt == "qcow2":
            q = subprocess.run(["qemu-img", "snapshot", "-c", "s1", str(img)],
                               capture_output=True, text=True, timeout=30)
            assert q.returncode != 0 and 'Failed to get "write" lock' in q.stderr, q.stderr
        w = subprocess.run(["qemu-io", "-f", fmt, "-c", "write 0 512", str(img)],
                           capture_output=True, text=True, timeout=30)
        assert w.returncode != 0 and "lock" in w.stderr, w.stderr
        assert reset_count(emu) == first                     # unharmed
    if fmt == "qcow2":
        listed = subprocess.run(["qemu-img", "snapshot", "-l", str(img)], capture_output=True,
                                text=True, check=True, timeout=30).stdout
        assert "s1" not in listed
    assert started_value(tmp_path, drive_args(img, fmt)) == first + 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_kill_9_keeps_every_acknowledged_change(tmp_path: Path, fmt: str) -> None:
    """A stream of TPM Resets (INIT, Startup(CLEAR), ReadClock, Shutdown(CLEAR)), each of which
    commits resetCount + 1 before Startup's response, killed at random moments."""
    img = tmp_path / f"tpm.{fmt}"
    args = drive_args(img, fmt, "create")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acked = started_value(tmp_path, args)
    total = 0
    for _round in range(5):
        emu = emulator(tmp_path, drive_args(img, fmt), flags=MANUAL).start()
        seen: list[int] = []
        stop = threading.Event()

        def stream() -> None:
            try:
                while not stop.is_set():
                    if T.rc(emu.command(T.startup(), timeout=5)) != 0:
                        return
                    seen.append(reset_count(emu))
                    emu.command(T.shutdown(), timeout=5)
                    ctrl_init(emu)
            except (OSError, AssertionError):
                return                                      # the process is gone

        worker = threading.Thread(target=stream, daemon=True)
        worker.start()
        time.sleep(rng.uniform(0.05, 0.6))
        emu.kill()
        stop.set()
        worker.join(10)
        assert not worker.is_alive()
        if seen:
            assert seen == list(range(acked + 1, acked + 1 + len(seen)))
            acked = seen[-1]
            total += len(seen)
        # The store always opens, and holds every acknowledged reset (one more may have been
        # committed without its response reaching us).
        after = started_value(tmp_path, drive_args(img, fmt))
        assert after in (acked + 1, acked + 2), (acked, after)
        acked = after
        c = subprocess.run(BLOBSTORE + ["check", str(img)], capture_output=True, text=True,
                           timeout=30)
        assert c.returncode in (0, 1), c.stdout + c.stderr
    assert total >= 5, "the kills came before any change was acknowledged"


# ---------------------------------------------------------------------------- commit cost


@pytest.mark.parametrize("size", [1300, 65536])
def test_commit_work_does_not_grow_with_the_number_of_blobs(size: int) -> None:
    """What benchmarks/blobstore.py measures, as a count that cannot be noisy: one commit
    writes the same bytes in the same number of writes, and flushes the same number of times,
    whether the store holds 3 or 300 blobs."""
    work = {}
    for blobs in (3, 30, 300):
        regs = [Registration("bench", f"blob{i}", 128 * 1024) for i in range(blobs)]
        image = MemoryImage(required_size(regs))
        store = BlobStore.format(image, regs)
        for i in range(blobs):
            store.write("bench", f"blob{i}", bytes([i % 251]) * 512)
        target = f"blob{blobs // 2}"
        store.write("bench", target, b"\1" * size)
        image.writes.clear()
        image.flushes = 0
        store.write("bench", target, b"\2" * size)
        work[blobs] = (len(image.writes), sum(n for _, n in image.writes), image.flushes)
        assert store.read("bench", target) == b"\2" * size
    assert work[3] == work[30] == work[300], work
    writes, written, flushes = work[3]
    assert flushes == 1 and written < size + 8192, work      # the slot, nothing else
