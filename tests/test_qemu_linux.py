"""A Linux guest uses the TPM: Debian 12's kernel in QEMU against swtpm_py (issue 7).

QEMU (TCG, SeaBIOS) boots Debian's own kernel (``tests/guest/build.py`` fetches it with apt and
checks that the TPM drivers are built in) with a busybox initramfs whose ``/init``
(``tests/guest/init``) reports on the serial console what the guest sees and sends raw TPM
commands through ``/dev/tpm0`` and ``/dev/tpmrm0``. The TPM is swtpm_py, started with libvirt's
command line, attached with ``-tpmdev emulator``: ``tpm-tis`` on ``pc``, ``tpm-crb`` on ``q35``.

Before /init runs, the kernel's own drivers talk to the TPM: tpm_tis / tpm_crb probe it
(TPM2_SelfTest, GetCapability, PCR bank discovery), the hwrng reads it (TPM2_GetRandom), IMA
reads PCR 0-9 for its ``boot_aggregate`` and extends PCR 10. Every one of these must work
within the driver's timeouts: the kernel log must show no TPM error or timeout.

The main guest runs against swtpm_py *and* the real swtpm with the same command line; both
must pass the same checks, and what the guest reads that is not random (PCR values, the
firmware's event log, IMA's boot_aggregate) must be the same bytes with both (differential).
NV written in one boot is read in the next, with the state in a directory and in a qcow2
blobstore image; and QEMU's LOCK_STORAGE after savevm/loadvm is answered.

KVM is not used by default: TCG boots the guest in about 5 s here, and /dev/kvm where it exists
is not always usable (in this project's sandbox QEMU hangs with it). ``SWTPM_PY_GUEST_ACCEL=kvm``
runs the guests with KVM.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from guest import build
from test_qemu import BANKS, EV_NO_ACTION, Vm, replay
from tpmcmd import cmd, pcr_read, pcr_values, rc, with_auth

from swtpm_py.tpm.constants import ALG, CC, RH, NvAttr

REPO = Path(__file__).resolve().parent.parent
#: Seconds a guest may take from QEMU's start to its power-off (TCG on a loaded machine).
GUEST_TIMEOUT = 90.0
ACCEL = os.environ.get("SWTPM_PY_GUEST_ACCEL", "tcg")
GUEST_MB = 256
#: Kernel messages that mean a TPM command failed or timed out in the guest's driver.
TPM_TROUBLE = re.compile(r"tpm.*(time[d ]?\s*out|error|fail)|A TPM error|Operation Timed out",
                         re.I)

#: The NV index the guest defines in one boot and reads in the next, and what it writes.
NV_INDEX = 0x01500020
NV_DATA = b"written by a Linux guest, boot 1"
NV_ATTRS = NvAttr.OWNERWRITE | NvAttr.OWNERREAD | NvAttr.AUTHWRITE | NvAttr.AUTHREAD


# ---------------------------------------------------------------------------- raw commands


def get_random(n: int) -> bytes:
    return cmd(CC.GetRandom, struct.pack(">H", n))


def nv_define(index: int, size: int) -> bytes:
    """TPM2_NV_DefineSpace by the owner (empty password), no auth value, no policy."""
    public = struct.pack(">IHIHH", index, ALG.SHA256, NV_ATTRS, 0, size)
    return with_auth(CC.NV_DefineSpace, struct.pack(">I", RH.OWNER),
                     struct.pack(">H", 0) + struct.pack(">H", len(public)) + public)


def nv_write(index: int, data: bytes) -> bytes:
    return with_auth(CC.NV_Write, struct.pack(">II", RH.OWNER, index),
                     struct.pack(">H", len(data)) + data + struct.pack(">H", 0))


def nv_read(index: int, size: int) -> bytes:
    """TPM2_NV_Read authorized by the index itself (AUTHREAD, empty auth value)."""
    return with_auth(CC.NV_Read, struct.pack(">II", index, index), struct.pack(">HH", size, 0))


def nv_read_data(response: bytes) -> bytes:
    """The data of an NV_Read response (TPM_ST_SESSIONS: parameterSize, then TPM2B)."""
    (size,) = struct.unpack_from(">H", response, 14)
    return response[16:16 + size]


def random_bytes(response: bytes) -> bytes:
    (size,) = struct.unpack_from(">H", response, 10)
    return response[12:12 + size]


#: What every boot sends (the names sort in sending order; "-rm": through /dev/tpmrm0).
COMMON = {
    "10-getrandom": get_random(32),
    "11-getrandom-rm": get_random(32),
    "20-pcrread-0-7": pcr_read(ALG.SHA256, list(range(8))),
    "21-pcrread-8-15": pcr_read(ALG.SHA256, list(range(8, 16))),
}


# ---------------------------------------------------------------------------- the guest


@dataclass
class Boot:
    """What one boot of the guest reported on its serial console."""

    serial: str
    #: Seconds from QEMU's start to the guest's last marker.
    seconds: float
    kind: str
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = [line.strip()[2:] for line in self.serial.splitlines()
                      if line.strip().startswith("@@")]

    def values(self, key: str) -> list[str]:
        """The text after ``key`` of every marker line starting with it."""
        return [line[len(key):].strip() for line in self.lines
                if line == key or line.startswith(key + " ")]

    def value(self, key: str) -> str:
        found = self.values(key)
        assert len(found) == 1, f"{key}: {found}\n{self.serial}"
        return found[0]

    def response(self, name: str) -> bytes:
        rsps = dict(v.partition(" ")[::2] for v in self.values("RSP"))
        assert name in rsps, f"no response to {name}\n{self.serial}"
        return bytes.fromhex(rsps[name])

    @property
    def dmesg(self) -> list[str]:
        return self.values("DMESG")

    def pcrs(self) -> list[bytes]:
        """PCR 0-15 of the SHA-256 bank as the guest read them."""
        return (pcr_values(self.response("20-pcrread-0-7"))
                + pcr_values(self.response("21-pcrread-8-15")))


def emulator_argv(kind: str, ctrl: Path, state: Path, log: Path,
                  image: Path | None = None) -> list[str]:
    """The emulator's command line: libvirt 9's (``socket --ctrl ... --tpmstate ... --log ...
    --terminate --tpm2``) plus level=20, which logs every command and response."""
    exe = [sys.executable, "-m", "swtpm_py"] if kind == "swtpm_py" else ["swtpm"]
    where = (["--tpmstate", f"dir={state},mode=0600"] if image is None else
             ["--blobstore", "name=tpm,drive=d0,create",
              "--drive", f"id=d0,file={image},format=qcow2"])
    return exe + ["socket", "--ctrl", f"type=unixio,path={ctrl},mode=0600", *where,
                  "--log", f"file={log},level=20", "--terminate", "--tpm2"]


def boot(workdir: Path, commands: dict[str, bytes], kind: str = "swtpm_py",
         machine: str = "pc", image: Path | None = None, state: Path | None = None) -> Boot:
    """Boot the guest once against a new emulator process (on ``state`` or ``image``, kept
    between boots) and return what it reported; fail with the serial log if it did not
    finish in :data:`GUEST_TIMEOUT` seconds."""
    workdir.mkdir(parents=True)
    state = state or workdir / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    ctrl, serial, log = workdir / "swtpm.sock", workdir / "serial.log", workdir / "swtpm.log"
    initrd = build.initramfs(workdir / "initrd.gz", commands)
    serial.touch()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tpm = subprocess.Popen(emulator_argv(kind, ctrl, state, log, image), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    qemu = None
    try:
        deadline = time.monotonic() + 20
        while not ctrl.exists():
            assert tpm.poll() is None, f"{kind} exited with {tpm.returncode}"
            assert time.monotonic() < deadline, f"{kind} made no control socket"
            time.sleep(0.02)
        device = "tpm-tis" if machine == "pc" else "tpm-crb"
        # qemu64 is an AMD CPU, for which Linux 6.1's tpm_crb turns the TPM hwrng off (a
        # quirk for AMD's firmware TPMs): an Intel vendor string keeps the guests alike.
        cpu = ["-cpu", "qemu64,vendor=GenuineIntel"] if ACCEL == "tcg" else ["-cpu", "host"]
        argv = ["qemu-system-x86_64", "-machine", machine, "-accel", ACCEL, *cpu,
                "-m", str(GUEST_MB), "-nographic", "-nodefaults", "-no-user-config",
                "-no-reboot", "-serial", f"file:{serial}", "-monitor", "none",
                "-kernel", str(build.kernel()), "-initrd", str(initrd),
                "-append", "console=ttyS0 panic=-1 quiet loglevel=4",
                "-chardev", f"socket,id=chrtpm,path={ctrl}",
                "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", f"{device},tpmdev=tpm0"]
        start = time.monotonic()
        with open(workdir / "qemu.err", "wb") as err:
            qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        seconds = None
        while qemu.poll() is None and time.monotonic() - start < GUEST_TIMEOUT:
            if seconds is None and b"@@END" in serial.read_bytes():
                seconds = time.monotonic() - start
            time.sleep(0.02)
        text = serial.read_bytes().decode(errors="replace")
        assert qemu.poll() is not None, \
            f"the guest did not power off within {GUEST_TIMEOUT}s; serial log:\n{text}"
        assert qemu.returncode == 0, (workdir / "qemu.err").read_text() + text
        assert "@@END" in text, f"the guest's /init did not finish; serial log:\n{text}"
        # QEMU's exit sent SHUTDOWN: the emulator ends by itself (--terminate too).
        assert tpm.wait(20) == 0
        return Boot(text, seconds if seconds is not None else time.monotonic() - start, kind)
    finally:
        for proc in (qemu, tpm):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def check_guest(b: Boot, machine: str) -> None:
    """What a user of the guest checks: the devices, the kernel's use of the TPM, commands
    from user space, and a kernel log without TPM trouble."""
    why = f"({b.kind} on {machine})\n{b.serial}"
    assert b.value("DEV tpm0") == "yes" and b.value("DEV tpmrm0") == "yes", why
    assert b.value("VERSION") == "2", why
    if machine == "pc":
        # tpm_tis logs its probe ("tpm_tis MSFT0101:00: 2.0 TPM (device-id 0x1, rev-id 1)");
        # tpm_crb logs nothing when all is well.
        assert any("tpm_tis" in line and "2.0 TPM" in line for line in b.dmesg), why
    trouble = [line for line in b.dmesg if TPM_TROUBLE.search(line)]
    assert trouble == [], why
    # The kernel's hwrng reads the TPM with TPM2_GetRandom.
    assert b.value("HWRNG") == "tpm-rng-0", why
    hw = bytes.fromhex(b.value("HWRNG_BYTES"))
    assert len(hw) == 32 and len(set(hw)) > 8, why
    for name in ("10-getrandom", "11-getrandom-rm"):
        r = b.response(name)
        assert rc(r) == 0 and len(random_bytes(r)) == 32, why
    assert random_bytes(b.response("10-getrandom")) != random_bytes(b.response("11-getrandom-rm"))
    for name in ("20-pcrread-0-7", "21-pcrread-8-15"):
        assert rc(b.response(name)) == 0, why
    pcrs = b.pcrs()
    assert len(pcrs) == 16 and all(len(p) == 32 for p in pcrs), why
    # The firmware's event log (as the kernel exports it) replays to PCR 0-7.
    events = parse_event_log(bytes.fromhex(b.value("EVENTLOG")))
    assert {p for p, t, _d in events if t != EV_NO_ACTION} == set(range(8)), why
    assert replay(events)[ALG.SHA256] == pcrs[:8], why
    # IMA read PCR 0-9 through the driver for its boot_aggregate and extended PCR 10.
    (ima,) = b.values("IMA")
    aggregate = hashlib.sha256(b"".join(pcrs[:10])).hexdigest()
    assert f"sha256:{aggregate} boot_aggregate" in ima, why
    assert pcrs[10] != bytes(32), why


def parse_event_log(log: bytes) -> list[tuple[int, int, dict[int, bytes]]]:
    """(pcr, event type, digests) of each event of a crypto-agile TCG event log as Linux
    exports it (binary_bios_measurements: the SHA-1-format Spec ID event, then TCG_PCR_EVENT2
    records)."""
    pcr, etype = struct.unpack_from("<II", log, 0)
    (size,) = struct.unpack_from("<I", log, 28)
    spec = log[32:32 + size]
    assert (pcr, etype) == (0, EV_NO_ACTION) and spec.startswith(b"Spec ID Event03\0")
    (nalgs,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(nalgs))
    assert ALG.SHA256 in sizes and set(sizes) <= set(BANKS)
    pos, events = 32 + size, []
    while pos < len(log):
        pcr, etype, count = struct.unpack_from("<III", log, pos)
        pos += 12
        digests = {}
        for _ in range(count):
            (alg,) = struct.unpack_from("<H", log, pos)
            digests[alg] = log[pos + 2:pos + 2 + sizes[alg]]
            pos += 2 + sizes[alg]
        (esize,) = struct.unpack_from("<I", log, pos)
        pos += 4 + esize
        events.append((pcr, etype, digests))
    return events


def same_measurements(a: Boot, b: Boot) -> None:
    """Two boots of the same guest measured the same: the bytes are the TPM's, not random."""
    assert a.pcrs() == b.pcrs()
    assert a.value("EVENTLOG") == b.value("EVENTLOG")
    assert a.values("IMA") == b.values("IMA")


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_linux_guest_uses_the_tpm(tmp_path, machine: str) -> None:
    """pc/tpm-tis and q35/tpm-crb: the kernel finds and uses the TPM, user space sends
    commands through both character devices; same results with the real swtpm."""
    ours = boot(tmp_path / "swtpm_py", COMMON, machine=machine)
    ref = boot(tmp_path / "swtpm", COMMON, kind="swtpm", machine=machine)
    check_guest(ref, machine)
    check_guest(ours, machine)
    same_measurements(ours, ref)
    print(f"\n{machine}: boot to the last marker {ours.seconds:.2f} s with swtpm_py, "
          f"{ref.seconds:.2f} s with swtpm")
    # The guest's commands reached swtpm_py: its log has them with their responses.
    log = (tmp_path / "swtpm_py" / "swtpm.log").read_text()
    for name in ("10-getrandom", "20-pcrread-0-7"):
        assert COMMON[name].hex() in log


@pytest.mark.parametrize("where", ["dir", "qcow2"])
def test_nv_written_in_one_boot_is_read_in_the_next(tmp_path, where: str) -> None:
    """The guest defines and writes an NV index; the VM and the emulator end; a new emulator
    on the same state (a directory, or a qcow2 blobstore image) and a new boot read it."""
    image = tmp_path / "tpm.qcow2" if where == "qcow2" else None
    state = tmp_path / "state"
    first = boot(tmp_path / "boot1", {
        "30-nvdefine": nv_define(NV_INDEX, len(NV_DATA)),
        "31-nvwrite": nv_write(NV_INDEX, NV_DATA),
        "32-nvread": nv_read(NV_INDEX, len(NV_DATA)),
    }, image=image, state=state)
    assert [rc(first.response(n)) for n in ("30-nvdefine", "31-nvwrite", "32-nvread")] \
        == [0, 0, 0], first.serial
    second = boot(tmp_path / "boot2", {
        "30-nvread": nv_read(NV_INDEX, len(NV_DATA)),
        "31-nvdefine-again": nv_define(NV_INDEX, len(NV_DATA)),
    }, image=image, state=state)
    read = second.response("30-nvread")
    assert rc(read) == 0 and nv_read_data(read) == NV_DATA, second.serial
    # The index exists: defining it again is TPM_RC_NV_DEFINED (format 0, 0x14c).
    assert rc(second.response("31-nvdefine-again")) == 0x14C, second.serial
    trouble = [line for b in (first, second) for line in b.dmesg if TPM_TROUBLE.search(line)]
    assert trouble == []
    if image is not None:
        check = subprocess.run(["qemu-img", "check", str(image)], capture_output=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout


def control_exchanges(log: Path) -> list[tuple[str, str]]:
    """(request, reply) of every control command in a swtpm_py log (level 20): the code and
    body in hex, the reply in hex."""
    out, pending = [], None
    for line in log.read_text().splitlines():
        if "ctrl cmd: " in line:
            pending = line.split("ctrl cmd: ")[1].strip()
        elif "ctrl rsp: " in line and pending is not None:
            out.append((pending, line.split("ctrl rsp: ")[1].strip()))
            pending = None
    return out


def test_qemu_relocks_the_storage_after_savevm_and_loadvm(tmp_path) -> None:
    """QEMU (>= 7.1) asks for the storage lock again (LOCK_STORAGE, 300 retries) when the VM
    runs after its TPM state was taken -- because the capability says swtpm_py has the
    command -- and the VM must go on running: swtpm_py holds the lock and says so at once."""
    disk = tmp_path / "vmstate.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True,
                   timeout=30)
    vm = Vm(tmp_path / "vm", extra=["-drive", f"file={disk},format=qcow2,if=none,id=vmstate"])
    try:
        assert vm.qmp is not None
        vm.wait_firmware_done()
        assert "Error" not in vm.qmp.hmp("savevm snap1")
        assert "Error" not in vm.qmp.hmp("loadvm snap1")
        assert vm.qmp.execute("query-status").get("status") == "running"
        exchanges = control_exchanges(vm.tpm_log)
        locks = [(req, rsp) for req, rsp in exchanges if req.startswith("00000013")]
        assert locks and all(req == f"00000013 {300:08x}" and rsp == "00000000"
                             for req, rsp in locks), exchanges
        # The capability QEMU read at start announced it (bit 16).
        assert exchanges[1] == ("00000001", f"{0x1FFFF:016x}")
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
