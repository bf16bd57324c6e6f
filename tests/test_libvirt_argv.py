"""swtpm_py where libvirt expects swtpm (examples/libvirt/).

libvirt has no setting for the emulator's path: it runs the first ``swtpm`` on its PATH, and so
does swtpm_setup, which libvirt runs to create a new TPM. ``examples/libvirt/swtpm`` is a
wrapper that execs swtpm_py; here it is put first on PATH, and everything libvirt does with
"swtpm" is done exactly as libvirt 9.0 (Debian 12) does it, from its qemu_tpm.c:

* ``swtpm socket --print-capabilities``: one line of JSON whose features libvirt reads;
* on the first start, ``swtpm_setup --tpm2 --tpm-state D --vmid V --logfile L --createek
  --create-ek-cert --create-platform-cert --lock-nvram --not-overwrite`` (the real swtpm_setup
  0.7.1, which starts "swtpm" itself and provisions it: EKs, certificates in NV, PCR banks),
  and ``--pcr-banks ... --reconfigure`` when the domain names its active PCR banks;
* ``swtpm socket --ctrl type=unixio,path=S,mode=0600 --tpmstate dir=D,mode=0600 --log file=L
  --terminate --tpm2`` (newer libvirt adds ``,lock`` to --tpmstate), with a 1 s deadline for
  the socket to appear;
* ``swtpm_ioctl --unix S -s`` to stop it.

Then a Linux guest boots on that state and reads the EK certificate swtpm_setup stored.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from test_qemu_linux import COMMON, boot, check_guest, nv_read_data
from tpmcmd import cmd, pcr_read, pcr_values, rc, startup, with_auth

from swtpm_py.control import CAPABILITIES, Cmd, Res
from swtpm_py.tpm.constants import ALG, CC

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "libvirt"
#: Where swtpm_setup puts the RSA 2048 EK, its certificate and the platform certificate (TCG
#: EK Credential Profile handles).
EK_HANDLE = 0x81010001
EK_CERT_INDEX = 0x01C00002
PLATFORM_CERT_INDEX = 0x01C08000
#: libvirt waits this long for the control socket after starting swtpm (qemu_tpm.c).
LIBVIRT_SOCKET_DEADLINE = 1.0


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH starts with examples/libvirt/swtpm, as libvirtd's would
    with the wrapper installed as /usr/local/bin/swtpm."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy2(EXAMPLES / "swtpm", bindir / "swtpm")
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
                SWTPM_PY_PYTHON=sys.executable,
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def swtpm_setup(state: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    """swtpm_setup as libvirt 9.0 runs it for a new TPM 2 (qemuTPMEmulatorRunSetup)."""
    state.mkdir(mode=0o700, exist_ok=True)
    return run(["swtpm_setup", "--tpm2", "--tpm-state", str(state),
                "--vmid", "vm1:5a9f3a2e-6f8e-4a0b-9d5c-0f3e2b1a7c44",
                "--logfile", str(state.parent / "setup.log"), "--createek",
                "--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--not-overwrite",
                *extra], env)


def libvirt_argv(sock: Path, state: Path, log: Path, lock: bool = False) -> list[str]:
    """qemuTPMEmulatorBuildCommand's command line (libvirt 9.0; ``lock``: libvirt 12 with
    the tpmstate-opt-lock capability)."""
    return ["swtpm", "socket", "--ctrl", f"type=unixio,path={sock},mode=0600",
            "--tpmstate", f"dir={state},mode=0600" + (",lock" if lock else ""),
            "--log", f"file={log}", "--terminate", "--tpm2"]


class Attached:
    """What QEMU does with the control socket: SET_DATAFD with one end of a socketpair, then
    control commands on the socket and TPM commands on the pair."""

    def __init__(self, path: Path) -> None:
        self.ctrl = socket.socket(socket.AF_UNIX)
        self.ctrl.settimeout(20)
        self.ctrl.connect(str(path))
        self.data, theirs = socket.socketpair()
        self.data.settimeout(20)
        socket.send_fds(self.ctrl, [struct.pack(">I", Cmd.SET_DATAFD)], [theirs.fileno()])
        theirs.close()
        assert self._recv(4) == b"\0\0\0\0"

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.ctrl.recv(n - len(out))
            assert chunk, "control connection closed"
            out += chunk
        return out

    def control(self, code: int, body: bytes = b"", size: int = 4) -> bytes:
        self.ctrl.sendall(struct.pack(">I", code) + body)
        return self._recv(size)

    def command(self, raw: bytes) -> bytes:
        self.data.sendall(raw)
        rsp = self.data.recv(8192)
        (size,) = struct.unpack_from(">I", rsp, 2)
        while len(rsp) < size:
            rsp += self.data.recv(8192)
        return rsp

    def close(self) -> None:
        self.data.close()
        self.ctrl.close()


def nv_read_public(index: int) -> bytes:
    return cmd(CC.NV_ReadPublic, struct.pack(">I", index))


def nv_public_size(response: bytes) -> int:
    """dataSize of an NV_ReadPublic response (TPM2B_NV_PUBLIC: size, index, nameAlg,
    attributes, authPolicy, dataSize)."""
    (policy_size,) = struct.unpack_from(">H", response, 10 + 2 + 4 + 2 + 4)
    (size,) = struct.unpack_from(">H", response, 10 + 2 + 4 + 2 + 4 + 2 + policy_size)
    return size


def nv_read(index: int, size: int, offset: int = 0) -> bytes:
    """TPM2_NV_Read authorized by the index (AUTHREAD; swtpm_setup leaves its auth empty)."""
    return with_auth(CC.NV_Read, struct.pack(">II", index, index),
                     struct.pack(">HH", size, offset))


# ---------------------------------------------------------------------------- tests


def test_the_example_domain_snippet_is_an_emulated_tpm2() -> None:
    tpm = ET.parse(EXAMPLES / "domain-tpm.xml").getroot()
    backend = tpm.find("backend")
    assert tpm.tag == "tpm" and tpm.get("model") in ("tpm-crb", "tpm-tis")
    assert backend is not None and backend.get("type") == "emulator"
    assert backend.get("version") == "2.0"


def test_print_capabilities_as_libvirt_reads_them(env: dict[str, str]) -> None:
    """One line of JSON, type "swtpm"; every feature named is one swtpm_py has: libvirt passes
    --migration only with "cmdarg-migration", which swtpm_py does not offer (it refuses the
    option)."""
    out = run(["swtpm", "socket", "--print-capabilities"], env)
    assert out.returncode == 0 and out.stdout.count("\n") == 1
    caps = json.loads(out.stdout)
    assert caps["type"] == "swtpm" and "tpm-2.0" in caps["features"]
    assert all(isinstance(f, str) for f in caps["features"]) and caps["version"]
    assert "cmdarg-migration" not in caps["features"]
    refused = run(["swtpm", "socket", "--tpm2", "--migration", "release-lock-outgoing",
                   "--tpmstate", f"dir={env['PATH'].split(os.pathsep)[0]}"], env)
    assert refused.returncode == 1 and "--migration" in refused.stderr


@pytest.mark.parametrize("lock", [False, True], ids=["libvirt9", "libvirt12-lock"])
def test_libvirt_starts_drives_and_stops_swtpm_py(tmp_path: Path, env: dict[str, str],
                                                  lock: bool) -> None:
    state = tmp_path / "swtpm" / "tpm2"
    state.parent.mkdir()
    setup = swtpm_setup(state, env)
    assert setup.returncode == 0, setup.stderr + (tmp_path / "swtpm" / "setup.log").read_text()
    log = (tmp_path / "swtpm" / "setup.log").read_text()
    assert "Successfully created RSA 2048 EK with handle 0x81010001" in log
    assert "swtpm_py" in log                          # the wrapper's emulator did the work
    assert (state / "swtpm_py-permanent.blob").exists()
    assert not (state / "tpm2-00.permall").exists()

    sock, tpm_log = tmp_path / "swtpm.sock", tmp_path / "swtpm.log"
    start = time.monotonic()
    proc = subprocess.Popen(libvirt_argv(sock, state, tpm_log, lock), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not sock.exists() and time.monotonic() - start < 10:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        # libvirt gives up on swtpm when the socket is not there within a second.
        assert time.monotonic() - start < LIBVIRT_SOCKET_DEADLINE
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        vm = Attached(sock)
        try:
            caps = vm.control(Cmd.GET_CAPABILITY, size=8)
            assert struct.unpack(">Q", caps)[0] == CAPABILITIES
            assert vm.control(Cmd.INIT, b"\0\0\0\0") == b"\0\0\0\0"
            assert rc(vm.command(startup())) == 0
            # What swtpm_setup provisioned: the EK, persistent, and its certificate in NV.
            assert rc(vm.command(cmd(CC.ReadPublic, struct.pack(">I", EK_HANDLE)))) == 0
            for index in (EK_CERT_INDEX, PLATFORM_CERT_INDEX):
                public = vm.command(nv_read_public(index))
                assert rc(public) == 0 and nv_public_size(public) > 100
            assert vm.control(Cmd.LOCK_STORAGE, struct.pack(">I", 300)) == b"\0\0\0\0"
            # The control channel serves one client at a time: QEMU's goes, swtpm_ioctl's
            # comes. (Had the data connection closed first, --terminate would have ended
            # the emulator already, as when QEMU exits.)
            vm.ctrl.close()
            stop = run(["swtpm_ioctl", "--unix", str(sock), "-s"], env, timeout=30)
            assert stop.returncode == 0, stop.stderr
            assert proc.wait(10) == 0
        finally:
            vm.close()
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    # --not-overwrite: a second swtpm_setup leaves the TPM as it is.
    before = (state / "swtpm_py-permanent.blob").read_bytes()
    again = swtpm_setup(state, env)
    assert again.returncode == 0 and (state / "swtpm_py-permanent.blob").read_bytes() == before


def test_active_pcr_banks_reconfigure(tmp_path: Path, env: dict[str, str]) -> None:
    """<active_pcr_banks><sha256/></active_pcr_banks>: libvirt runs swtpm_setup --pcr-banks
    sha256 --reconfigure before the start; the TPM then has only the SHA-256 bank."""
    state = tmp_path / "tpm2"
    assert swtpm_setup(state, env).returncode == 0
    again = run(["swtpm_setup", "--tpm2", "--tpm-state", str(state), "--logfile",
                 str(tmp_path / "re.log"), "--pcr-banks", "sha256", "--reconfigure"], env)
    assert again.returncode == 0, again.stderr + (tmp_path / "re.log").read_text()
    sock = tmp_path / "swtpm.sock"
    proc = subprocess.Popen(libvirt_argv(sock, state, tmp_path / "swtpm.log"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        vm = Attached(sock)
        try:
            assert vm.control(Cmd.INIT, b"\0\0\0\0") == b"\0\0\0\0"
            assert rc(vm.command(startup())) == 0
            assert len(pcr_values(vm.command(pcr_read(ALG.SHA256, [0])))) == 1
            assert pcr_values(vm.command(pcr_read(ALG.SHA1, [0]))) == []
            assert vm.control(Cmd.SHUTDOWN) == struct.pack(">I", Res.SUCCESS)
        finally:
            vm.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_linux_guest_reads_the_ek_certificate_swtpm_setup_stored(tmp_path: Path,
                                                                  env: dict[str, str]) -> None:
    """The whole libvirt life of a TPM: swtpm_setup provisions swtpm_py, then the VM boots on
    that state with libvirt's command line and the guest reads the EK certificate from NV
    through /dev/tpm0: a DER certificate of the size the index has. (swtpm_setup left only
    the SHA-256 PCR bank active, its default: the firmware's log has that bank alone.)"""
    state = tmp_path / "tpm2"
    assert swtpm_setup(state, env).returncode == 0
    guest = boot(tmp_path / "boot", {
        **COMMON,
        "40-nvreadpublic": nv_read_public(EK_CERT_INDEX),
        "41-nvread": nv_read(EK_CERT_INDEX, 512),
    }, state=state)
    check_guest(guest, "pc")
    public = guest.response("40-nvreadpublic")
    assert rc(public) == 0
    data = nv_read_data(guest.response("41-nvread"))
    assert rc(guest.response("41-nvread")) == 0 and len(data) == 512
    # A DER SEQUENCE with a two-byte length: header + length == the index's data size.
    assert data[:2] == b"\x30\x82"
    assert 4 + struct.unpack_from(">H", data, 2)[0] == nv_public_size(public)
