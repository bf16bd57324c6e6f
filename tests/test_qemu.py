"""QEMU + SeaBIOS against swtpm_py over the control channel (REFERENCE.md §3), no KVM needed.

QEMU connects to ``swtpm_py socket --ctrl type=unixio,path=S ...`` (libvirt's command line,
REFERENCE.md §5), hands over the data channel with SET_DATAFD, probes, INITs, and SeaBIOS sends
its TPM 2 initialisation (Startup, SelfTest, GetCapability, PCR_Extend ..., StirRandom,
GetRandom, HierarchyChangeAuth). The VM has no disk: SeaBIOS ends at "No bootable device".

What the tests check, from the emulator's side and from QEMU's:

* the firmware's TPM event log, read out of guest memory through the ACPI TPM2 table (LASA /
  LAML), replayed, equals PCR 0-7 of every bank of the TPM as QEMU migrates it: QEMU's own
  ``migrate`` to a file carries the three blobs it fetched with GET_STATEBLOB (section
  ``tpm-emulator``); they are loaded into a fresh swtpm_py with SET_STATEBLOB and read with
  TPM2_PCR_Read there;
* an incoming migration from that file (QEMU: STOP, SET_STATEBLOB, INIT(DELETE_VOLATILE))
  restores the same PCRs and resetCount in a second swtpm_py;
* ``system_reset`` makes QEMU STOP and re-INIT the TPM and SeaBIOS measure again from scratch;
* QMP ``quit`` sends SHUTDOWN and the emulator exits by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator import Emulator
from tpmcmd import cmd, pcr_read, pcr_values, rc, read_clock_info, startup

from swtpm_py.control import Cmd
from swtpm_py.tpm.constants import ALG, CC
from swtpm_py.tpm.state import BlobKind, PersistentData, VolatileData, decode_blob

REPO = Path(__file__).resolve().parent.parent
BANKS = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384", ALG.SHA512: "sha512"}
#: Memory of the VM: SeaBIOS needs little, and all of it is dumped to find the event log.
GUEST_MB = 32
#: TCG event types SeaBIOS uses that are not extended into a PCR.
EV_NO_ACTION = 3
TIMEOUT = 40.0


# ---------------------------------------------------------------------------- processes


class Qmp:
    """A minimal QMP client: one JSON object per line; events are skipped."""

    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rb")
        assert "QMP" in self._read()
        assert "return" in self.execute_raw("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute_raw(self, name: str, **arguments: object) -> dict:
        req: dict = {"execute": name}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        return self._read()

    def execute(self, name: str, **arguments: object) -> object:
        reply = self.execute_raw(name, **arguments)
        assert "return" in reply, reply
        return reply["return"]

    def hmp(self, line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": line}))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Vm:
    """swtpm_py started as libvirt starts swtpm, and a QEMU/SeaBIOS VM attached to it."""

    def __init__(self, workdir: Path, incoming: Path | None = None,
                 kind: str = "swtpm_py", extra: list[str] | None = None,
                 machine: str = "pc", device: str = "tpm-tis",
                 image: Path | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self.dir / "state"
        self.state.mkdir(mode=0o700)
        self.ctrl = self.dir / "swtpm.sock"
        self.qmp_path = self.dir / "qmp.sock"
        self.bios_log = self.dir / "bios.log"
        self.tpm_log = self.dir / "swtpm.log"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        exe = [sys.executable, "-m", "swtpm_py"] if kind == "swtpm_py" else ["swtpm"]
        self.tpm = subprocess.Popen(
            exe + ["socket", "--tpm2",
             "--ctrl", f"type=unixio,path={self.ctrl},mode=0600",
             *(["--tpmstate", f"dir={self.state},mode=0600"] if image is None else
               ["--blobstore", "name=tpm,drive=d0,create",
                "--drive", f"id=d0,file={image},format=qcow2"]),
             "--log", f"file={self.tpm_log},level=20", "--terminate"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.qemu: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        try:
            wait_for(self.ctrl.exists, "the control socket")
            argv = ["qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-nographic",
                    "-nodefaults", "-no-user-config", "-m", str(GUEST_MB),
                    "-chardev", f"file,id=dbg,path={self.bios_log}",
                    "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
                    "-chardev", f"socket,id=chrtpm,path={self.ctrl}",
                    "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                    "-device", f"{device},tpmdev=tpm0",
                    "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                    "-serial", "none", "-monitor", "none"]
            if incoming is not None:
                argv += ["-incoming", f"exec:cat {incoming}"]
            argv += extra or []
            with open(self.dir / "qemu.err", "wb") as err:
                self.qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
            self.qmp = Qmp(self.qmp_path)
        except BaseException:
            self.close()
            raise

    def wait_firmware_done(self, count: int = 1) -> None:
        """Until SeaBIOS has given up booting ``count`` times (its TPM work is done by then)."""
        wait_for(lambda: self.bios_log.read_bytes().count(b"No bootable device") >= count,
                 "SeaBIOS to finish")

    def migrate_to(self, path: Path) -> None:
        """QMP migrate to a file: QEMU takes the TPM's blobs with GET_STATEBLOB."""
        assert self.qmp is not None
        self.qmp.execute("migrate", uri=f"exec:cat > {path}")
        wait_for(lambda: self.qmp.execute("query-migrate").get("status") == "completed",
                 "the migration")

    def memory(self) -> bytes:
        """All guest RAM (QMP pmemsave)."""
        assert self.qmp is not None
        out = self.dir / "ram.bin"
        self.qmp.execute("pmemsave", val=0, size=GUEST_MB << 20, filename=str(out))
        return out.read_bytes()

    def commands(self) -> list[tuple[int, int]]:
        """(command code, response code) of every data-channel command, from swtpm_py's log."""
        out: list[tuple[int, int]] = []
        code = None
        for line in self.tpm_log.read_text().splitlines():
            if "data cmd: " in line:
                raw = bytes.fromhex(line.split("data cmd: ")[1].split()[0])
                code = struct.unpack_from(">I", raw, 6)[0]
            elif "data rsp: " in line and code is not None:
                raw = bytes.fromhex(line.split("data rsp: ")[1].split()[0])
                out.append((code, struct.unpack_from(">I", raw, 6)[0]))
                code = None
        return out

    def quit(self) -> tuple[int | None, int | None]:
        """QMP quit; the exit codes of QEMU and of the emulator (which SHUTDOWN ends)."""
        assert self.qmp is not None and self.qemu is not None
        try:
            self.qmp.execute_raw("quit")
        except ConnectionError:
            pass
        return self.qemu.wait(TIMEOUT), self.tpm.wait(TIMEOUT)

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
        for proc in (self.qemu, self.tpm):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- what QEMU carries


def tpm_blobs(stream: bytes) -> dict[BlobKind, bytes]:
    """The ``tpm-emulator`` section of a QEMU 7.2 migration stream: instance id and version id,
    then for permanent, volatile and savestate: state_flags u32, size u32, size bytes."""
    name = b"tpm-emulator"
    at = stream.find(bytes([len(name)]) + name)
    assert at > 0, "no tpm-emulator section in the migration stream"
    pos = at + 1 + len(name) + 8
    blobs: dict[BlobKind, bytes] = {}
    for kind in (BlobKind.PERMANENT, BlobKind.VOLATILE, BlobKind.SAVESTATE):
        flags, size = struct.unpack_from(">II", stream, pos)
        assert flags == 0                      # never encrypted
        blobs[kind] = stream[pos + 8:pos + 8 + size]
        pos += 8 + size
    return blobs


def tpm_from_blobs(blobs: dict[BlobKind, bytes], workdir: Path,
                   kind: str = "swtpm_py") -> Emulator:
    """A fresh emulator (TCP) that was given ``blobs`` with the real swtpm_ioctl --load and
    INIT(DELETE_VOLATILE), as a migration target is."""
    emu = Emulator(kind, workdir, flags=None).start()
    names = {BlobKind.PERMANENT: "permanent", BlobKind.VOLATILE: "volatile",
             BlobKind.SAVESTATE: "savestate"}
    for kind, blob in blobs.items():
        f = workdir.parent / f"{workdir.name}-{names[kind]}.bin"
        f.write_bytes(blob)
        p = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}",
                            "--load", names[kind], str(f)], capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr
    assert emu.ctrl(Cmd.INIT, struct.pack(">I", 1), reply_size=4) == b"\0\0\0\0"
    return emu


def pcrs_of(emu: Emulator) -> dict[int, list[bytes]]:
    return {alg: pcr_values(emu.command(pcr_read(alg, list(range(8))))) for alg in BANKS}


# ---------------------------------------------------------------------------- the event log


def event_log(ram: bytes) -> list[tuple[int, int, dict[int, bytes]]]:
    """(pcr, event type, digests by algorithm) of every event of the firmware's crypto-agile
    TCG event log, found through RSDP -> RSDT -> the ACPI TPM2 table's LASA/LAML."""
    rsdp = ram.find(b"RSD PTR ", 0xE0000, 0x100000)
    assert rsdp > 0, "no ACPI RSDP"
    (rsdt,) = struct.unpack_from("<I", ram, rsdp + 16)
    assert ram[rsdt:rsdt + 4] == b"RSDT"
    (length,) = struct.unpack_from("<I", ram, rsdt + 4)
    tables = struct.unpack_from(f"<{(length - 36) // 4}I", ram, rsdt + 36)
    tpm2 = [t for t in tables if ram[t:t + 4] == b"TPM2"]
    assert tpm2, "no ACPI TPM2 table"
    (t,) = tpm2
    (tlen,) = struct.unpack_from("<I", ram, t + 4)
    assert tlen >= 76, "TPM2 table without a log area"
    laml, lasa = struct.unpack_from("<IQ", ram, t + 64)
    log = ram[lasa:lasa + laml]
    # The first event is in the SHA1 format: the Spec ID event with the digest sizes.
    pcr, etype = struct.unpack_from("<II", log, 0)
    (size,) = struct.unpack_from("<I", log, 28)
    spec = log[32:32 + size]
    assert (pcr, etype) == (0, EV_NO_ACTION) and spec.startswith(b"Spec ID Event03\0")
    (nalgs,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(nalgs))
    pos = 32 + size
    events = []
    while pos + 12 <= len(log):
        pcr, etype, count = struct.unpack_from("<III", log, pos)
        if count == 0 or etype == 0:
            break
        pos += 12
        digests: dict[int, bytes] = {}
        for _ in range(count):
            (alg,) = struct.unpack_from("<H", log, pos)
            digests[alg] = log[pos + 2:pos + 2 + sizes[alg]]
            pos += 2 + sizes[alg]
        (esize,) = struct.unpack_from("<I", log, pos)
        pos += 4 + esize
        events.append((pcr, etype, digests))
    return events


def replay(events: list[tuple[int, int, dict[int, bytes]]]) -> dict[int, list[bytes]]:
    """PCR 0-7 of every bank after the events, from their initial value (zero; the Startup
    came from locality 0)."""
    values = {alg: [b"\0" * hashlib.new(n).digest_size for _ in range(8)]
              for alg, n in BANKS.items()}
    for pcr, etype, digests in events:
        if etype == EV_NO_ACTION or pcr > 7:
            continue
        for alg, digest in digests.items():
            values[alg][pcr] = hashlib.new(BANKS[alg], values[alg][pcr] + digest).digest()
    return values


# ---------------------------------------------------------------------------- tests


@pytest.fixture
def booted(tmp_path):
    vm = Vm(tmp_path / "vm")
    try:
        vm.wait_firmware_done()
        yield vm
    finally:
        vm.close()


def test_the_harness_on_the_reference_swtpm(tmp_path) -> None:
    """The same harness with the real swtpm: SeaBIOS's whole TPM set-up works there, its log
    covers PCR 0-7, and the PCRs QEMU migrates equal the log's replay (this proves the event
    log parser and the migration-stream reader on a complete boot)."""
    vm = Vm(tmp_path / "vm", kind="swtpm")
    try:
        vm.wait_firmware_done()
        events = event_log(vm.memory())
        stream = tmp_path / "vm.migration"
        vm.migrate_to(stream)
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
    assert {p for p, t, _d in events if t != EV_NO_ACTION} == set(range(8))
    blobs = tpm_blobs(stream.read_bytes())
    assert blobs[BlobKind.SAVESTATE] == b""          # libtpms' TPM 2 has none
    with tpm_from_blobs(blobs, tmp_path / "copy", kind="swtpm") as copy:
        assert pcrs_of(copy) == replay(events)


def test_seabios_measures_into_swtpm_py_and_migration_carries_it(booted: Vm, tmp_path) -> None:
    vm = booted
    assert vm.qmp is not None
    info = vm.qmp.hmp("info tpm")
    assert "tpm-tis" in info and "emulator" in info
    commands = vm.commands()
    # QEMU's probe before INIT got the failure reply; then SeaBIOS's Startup(CLEAR) worked.
    assert commands[0] == (CC.ReadClock, 0x101)
    assert (CC.Startup, 0) in commands and (CC.SelfTest, 0) in commands
    assert (CC.GetCapability, 0) in commands
    extends = [r for c, r in commands if c == CC.PCR_Extend]
    assert extends and all(r == 0 for r in extends)

    events = event_log(vm.memory())
    assert events and all(set(d) == set(BANKS) for _p, _t, d in events)
    assert len(extends) == sum(1 for _p, t, _d in events if t != EV_NO_ACTION)

    # QEMU's own migration: it fetches the blobs with GET_STATEBLOB while the TPM runs.
    stream = tmp_path / "vm.migration"
    vm.migrate_to(stream)
    blobs = tpm_blobs(stream.read_bytes())
    perm = decode_blob(BlobKind.PERMANENT, blobs[BlobKind.PERMANENT], PersistentData)
    vol = decode_blob(BlobKind.VOLATILE, blobs[BlobKind.VOLATILE], VolatileData)
    assert vol.started and blobs[BlobKind.SAVESTATE] == b""
    qemu_rc, tpm_rc = vm.quit()
    assert qemu_rc == 0 and tpm_rc == 0                 # SHUTDOWN ended the emulator
    log = vm.tpm_log.read_text()
    assert "ctrl cmd: 00000003" in log                  # ... because QEMU sent it

    # The PCRs QEMU carried equal the replay of the firmware's event log, in every bank.
    expected = replay(events)
    with tpm_from_blobs(blobs, tmp_path / "copy") as copy:
        got = pcrs_of(copy)
        assert got == expected
        assert any(v != b"\0" * len(v) for v in got[ALG.SHA256])
        assert rc(copy.command(startup())) == 0x100     # running: Startup already happened
        assert read_clock_info(copy.command(cmd(CC.ReadClock)))["reset_count"] \
            == perm.reset_count

    # An incoming migration from the same file restores all of it in another swtpm_py.
    vm2 = Vm(tmp_path / "vm2", incoming=stream)
    try:
        assert vm2.qmp is not None
        wait_for(lambda: vm2.qmp.execute("query-status").get("status") != "inmigrate",
                 "the incoming migration")
        assert vm2.qmp.execute("query-status").get("status") == "running"
        ctrl = [line.split("ctrl cmd: ")[1].split()[0]
                for line in vm2.tpm_log.read_text().splitlines() if "ctrl cmd: " in line]
        # QEMU's loadvm sequence: STOP, SET_STATEBLOB (non-empty blobs), INIT(DELETE_VOLATILE).
        assert ctrl[-4:] == ["0000000e", "0000000d", "0000000d", "00000002"]
        stream2 = tmp_path / "vm2.migration"
        vm2.migrate_to(stream2)
        blobs2 = tpm_blobs(stream2.read_bytes())
        assert vm2.quit() == (0, 0)
    finally:
        vm2.close()
    assert blobs2[BlobKind.PERMANENT] == blobs[BlobKind.PERMANENT]
    with tpm_from_blobs(blobs2, tmp_path / "copy2") as copy2:
        assert pcrs_of(copy2) == expected


def test_system_reset_reinitialises_the_tpm(booted: Vm, tmp_path) -> None:
    vm = booted
    assert vm.qmp is not None
    first = event_log(vm.memory())
    vm.qmp.execute("system_reset")
    vm.wait_firmware_done(count=2)
    ctrl = [line.split("ctrl cmd: ")[1] for line in vm.tpm_log.read_text().splitlines()
            if "ctrl cmd: " in line]
    # After the start-up (SET_DATAFD, GET_CAPABILITY, then the reset sequence, ...), the
    # reset sequence again: STOP, SET_BUFFERSIZE(0), STOP, SET_BUFFERSIZE(4096), INIT(0).
    # (QEMU 7.2 runs it twice for one system_reset: measured, with swtpm alike.)
    reset = ["0000000e ", "00000011 00000000", "0000000e ", "00000011 00001000",
             "00000002 00000000"]
    assert ctrl[:2] == ["00000010 ", "00000001 "] and ctrl[2:7] == reset
    assert ctrl[7:9] == ["00000004 ", "00000005 00000000"]   # GET_TPMESTABLISHED, locality 0
    assert ctrl[9:14] == reset and "00000003 " not in ctrl
    starts = [r for c, r in vm.commands() if c == CC.Startup]
    assert starts == [0, 0]
    ctrl_tail = ctrl[14:]
    # The firmware measured from scratch: same log (same firmware, same events), and the TPM
    # holds the replay of that log, not of two boots.
    second = event_log(vm.memory())
    assert [(p, t) for p, t, _d in second] == [(p, t) for p, t, _d in first]
    stream = tmp_path / "reset.migration"
    vm.migrate_to(stream)
    with tpm_from_blobs(tpm_blobs(stream.read_bytes()), tmp_path / "copy") as copy:
        assert pcrs_of(copy) == replay(second)
        # The reset's automatic Shutdown(STATE) made SeaBIOS's Startup(CLEAR) a TPM Restart.
        assert counters(copy) == (1, 1)
    assert "0000000d" not in " ".join(ctrl_tail)    # nothing was loaded


def counters(emu: Emulator) -> tuple[int, int]:
    info = read_clock_info(emu.command(cmd(CC.ReadClock)))
    return info["reset_count"], info["restart_count"]


def test_savevm_loadvm_restores_the_tpm(tmp_path) -> None:
    """savevm (into a qcow2 image the VM does not boot from), a system_reset that changes the
    TPM, then loadvm: QEMU loads the blobs back (STOP, SET_STATEBLOB, INIT(DELETE_VOLATILE))
    and the TPM is as it was at savevm: PCRs and counters of the first boot."""
    disk = tmp_path / "vmstate.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True,
                   timeout=30)
    vm = Vm(tmp_path / "vm",
            extra=["-drive", f"file={disk},format=qcow2,if=none,id=vmstate"])
    try:
        assert vm.qmp is not None
        vm.wait_firmware_done()
        first = event_log(vm.memory())
        assert "Error" not in vm.qmp.hmp("savevm snap1")
        assert "snap1" in vm.qmp.hmp("info snapshots")
        vm.qmp.execute("system_reset")
        vm.wait_firmware_done(count=2)
        before = vm.tpm_log.read_text().count("ctrl cmd: 0000000d")
        assert "Error" not in vm.qmp.hmp("loadvm snap1")
        ctrl = [line.split("ctrl cmd: ")[1].split()[0]
                for line in vm.tpm_log.read_text().splitlines() if "ctrl cmd: " in line]
        assert ctrl.count("0000000d") - before == 2             # permanent and volatile
        # ... and as the VM runs again, LOCK_STORAGE (QEMU >= 7.1, the capability is there).
        assert ctrl[-5:] == ["0000000e", "0000000d", "0000000d", "00000002", "00000013"]
        stream = tmp_path / "after-loadvm.migration"
        vm.migrate_to(stream)
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
    with tpm_from_blobs(tpm_blobs(stream.read_bytes()), tmp_path / "copy") as copy:
        assert pcrs_of(copy) == replay(first)
        assert counters(copy) == (1, 0)                        # as at savevm
    check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout


def test_tpm_state_in_a_qcow2_blobstore(tmp_path) -> None:
    """The TPM state in a qcow2 blobstore image (created on first use): two boots of the VM
    are one TPM (same seeds; the second boot's PCRs are its own log's replay), and qemu-img
    finds the image consistent after each. QEMU's SHUTDOWN at quit makes swtpm_py send the
    automatic Shutdown(STATE) (REFERENCE.md §1), so SeaBIOS's Startup(CLEAR) at the second
    boot is a TPM Restart: restartCount + 1, resetCount kept."""
    image = tmp_path / "tpm.qcow2"
    perms, vols = [], []
    for boot in (1, 2):
        vm = Vm(tmp_path / f"vm{boot}", image=image)
        try:
            vm.wait_firmware_done()
            events = event_log(vm.memory())
            stream = tmp_path / f"boot{boot}.migration"
            vm.migrate_to(stream)
            assert vm.quit() == (0, 0)
        finally:
            vm.close()
        check = subprocess.run(["qemu-img", "check", str(image)], capture_output=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout
        blobs = tpm_blobs(stream.read_bytes())
        perms.append(decode_blob(BlobKind.PERMANENT, blobs[BlobKind.PERMANENT], PersistentData))
        vols.append(decode_blob(BlobKind.VOLATILE, blobs[BlobKind.VOLATILE], VolatileData))
        with tpm_from_blobs(blobs, tmp_path / f"copy{boot}") as copy:
            assert pcrs_of(copy) == replay(events)
    assert perms[0].eps == perms[1].eps and perms[0].sps == perms[1].sps
    assert perms[1].reset_count == perms[0].reset_count == 1
    assert (vols[0].state_reset.restart_count, vols[1].state_reset.restart_count) == (0, 1)

    # An incoming migration into a VM whose TPM state is another (new) qcow2 blobstore: the
    # blobs QEMU sets with SET_STATEBLOB are committed to that image, so a later cold start
    # on it is the migrated TPM.
    target = tmp_path / "target.qcow2"
    vm = Vm(tmp_path / "vm3", image=target, incoming=stream)
    try:
        assert vm.qmp is not None
        wait_for(lambda: vm.qmp.execute("query-status").get("status") != "inmigrate",
                 "the incoming migration")
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
    vm = Vm(tmp_path / "vm4", image=target)
    try:
        vm.wait_firmware_done()
        stream4 = tmp_path / "target.migration"
        vm.migrate_to(stream4)
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
    moved = decode_blob(BlobKind.PERMANENT, tpm_blobs(stream4.read_bytes())[BlobKind.PERMANENT],
                        PersistentData)
    assert moved.eps == perms[0].eps and moved.sps == perms[0].sps
    check = subprocess.run(["qemu-img", "check", str(target)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout


def test_q35_with_tpm_crb(tmp_path) -> None:
    """The CRB interface on q35: the same measurements reach the TPM."""
    vm = Vm(tmp_path / "vm", machine="q35", device="tpm-crb")
    try:
        assert vm.qmp is not None
        vm.wait_firmware_done()
        assert "tpm-crb" in vm.qmp.hmp("info tpm")
        events = event_log(vm.memory())
        stream = tmp_path / "vm.migration"
        vm.migrate_to(stream)
        assert vm.quit() == (0, 0)
    finally:
        vm.close()
    assert [r for c, r in vm.commands() if c == CC.Startup] == [0]
    assert any(t != EV_NO_ACTION for _p, t, _d in events)
    with tpm_from_blobs(tpm_blobs(stream.read_bytes()), tmp_path / "copy") as copy:
        assert pcrs_of(copy) == replay(events)


def test_seabios_tpm_initialisation_succeeds(booted: Vm) -> None:
    """SeaBIOS's whole TPM 2 set-up succeeds, as with swtpm: every command answered with
    success, and the boot measured into all of PCR 0-7 (the separators)."""
    failed = [(hex(c), hex(r)) for c, r in booted.commands() if r != 0 and c != CC.ReadClock]
    assert failed == []
    extended = {p for p, t, _d in event_log(booted.memory()) if t != EV_NO_ACTION}
    assert extended >= set(range(8))
