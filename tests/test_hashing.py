"""_TPM_Hash_Start/Data/End: the core (in process) and the control channel's HASH_START /
HASH_DATA / HASH_END, compared with the real swtpm 0.7.1 through the real ``swtpm_ioctl -h``.

Measured on swtpm 0.7.1 (libtpms 0.9.2) and asserted below for both emulators:

* after TPM2_Startup (DRTM): PCRs 17-22 are zero, PCR 17 = H(0...0 || H(data)) in every bank,
  restartCount + 1, pcrUpdateCounter + 4 (one per bank extended), tpmEstablished = 1;
* before TPM2_Startup (H-CRTM): PCR 0 = H(0...04 || H(data)) in every bank and the Startup that
  follows keeps it; tpmEstablished = 1;
* HASH_START alone sets tpmEstablished; a TPM command or an INIT between HASH_START and
  HASH_END aborts the sequence (HASH_END then changes nothing); HASH_DATA/END without
  HASH_START do nothing;
* all three are TPM_BAD_ORDINAL (0x0a) before INIT and while stopped.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess

import pytest

from emulator import Emulator
from tpmcmd import cmd, pcr_read, pcr_values, rc, read_clock_info, startup

from swtpm_py.control import Cmd, Device, DeviceOptions, Request, Res
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC

BANKS = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384", ALG.SHA512: "sha512"}


def drtm_value(alg: int, data: bytes, start: int = 0) -> bytes:
    """H(0...0start || H(data)) in bank ``alg``."""
    name = BANKS[alg]
    size = hashlib.new(name).digest_size
    return hashlib.new(name, b"\0" * (size - 1) + bytes([start])
                       + hashlib.new(name, data).digest()).digest()


def read_all(execute, alg: int) -> list[bytes]:
    """PCR 0-23 of one bank (three PCR_Reads of eight)."""
    out: list[bytes] = []
    for first in (0, 8, 16):
        out += pcr_values(execute(pcr_read(alg, list(range(first, first + 8)))))
    return out


def pcr_counter(execute) -> int:
    return struct.unpack_from(">I", execute(pcr_read(ALG.SHA256, [0])), 10)[0]


# ---------------------------------------------------------------------------- in process


def test_drtm_after_startup(tpm: Tpm) -> None:
    assert rc(tpm.execute(pcr_read(ALG.SHA256, [16]))) == 0
    before = {alg: read_all(tpm.execute, alg) for alg in BANKS}
    clock = read_clock_info(tpm.execute(cmd(CC.ReadClock)))
    counter = pcr_counter(tpm.execute)
    assert before[ALG.SHA256][17] == b"\xff" * 32
    tpm.hash_start()
    tpm.hash_data(b"measured ")
    tpm.hash_data(b"launch")
    tpm.hash_end()
    for alg in BANKS:
        after = read_all(tpm.execute, alg)
        assert after[17] == drtm_value(alg, b"measured launch")
        size = len(after[0])
        assert after[18:23] == [b"\0" * size] * 5          # 18-22 reset to zero
        assert after[:17] == before[alg][:17] and after[23] == before[alg][23]
    assert tpm.vol.established
    now = read_clock_info(tpm.execute(cmd(CC.ReadClock)))
    assert now["restart_count"] == clock["restart_count"] + 1
    assert now["reset_count"] == clock["reset_count"]
    assert pcr_counter(tpm.execute) == counter + 4


def test_hcrtm_before_startup_survives_startup(platform: Platform) -> None:
    tpm = Tpm(platform)
    tpm.power_on()
    tpm.hash_start()
    tpm.hash_data(b"h-crtm")
    tpm.hash_end()
    # Startup from locality 3 counts as locality 0 after an H-CRTM: PCR 0 keeps the event.
    assert rc(tpm.execute(startup(), locality=3)) == 0
    for alg in BANKS:
        values = read_all(tpm.execute, alg)
        assert values[0] == drtm_value(alg, b"h-crtm", start=4)
        assert values[17] == b"\xff" * len(values[17])          # no DRTM happened
    assert tpm.vol.established and tpm.vol.startup_locality == 0


def test_hcrtm_is_forgotten_by_tpm_init(platform: Platform) -> None:
    tpm = Tpm(platform)
    tpm.power_on()
    tpm.hash_start()
    tpm.hash_end()
    tpm.power_on()                                   # _TPM_Init before the Startup
    assert rc(tpm.execute(startup())) == 0
    assert read_all(tpm.execute, ALG.SHA256)[0] == b"\0" * 32


def test_sequence_without_start_and_aborted_sequence_change_nothing(tpm: Tpm) -> None:
    before = read_all(tpm.execute, ALG.SHA1)
    tpm.hash_data(b"x")
    tpm.hash_end()
    assert read_all(tpm.execute, ALG.SHA1) == before and not tpm.vol.established
    dev = Device(tpm, DeviceOptions())
    dev.state = dev.state.RUNNING
    tpm.hash_start()
    assert tpm.vol.established                       # set by _TPM_Hash_Start already
    dev.data(cmd(CC.GetRandom, b"\0\x08"))           # a TPM command aborts the sequence
    tpm.hash_data(b"x")
    tpm.hash_end()
    assert read_all(tpm.execute, ALG.SHA1) == before


def test_control_requests_and_run_states() -> None:
    dev = Device(Tpm(Platform(storage=MemoryStorage())), DeviceOptions())

    def ctl(code: int, body: bytes = b"") -> int:
        return struct.unpack_from(">I", dev.control(Request(code, body)).data)[0]

    hdata = struct.pack(">I", 3) + b"abc"
    for code, body in ((Cmd.HASH_START, b""), (Cmd.HASH_DATA, hdata), (Cmd.HASH_END, b"")):
        assert ctl(code, body) == Res.BAD_ORDINAL              # before INIT
    assert ctl(Cmd.INIT, b"\0\0\0\0") == Res.SUCCESS
    assert rc(dev.data(startup())) == 0
    assert ctl(Cmd.HASH_START) == Res.SUCCESS
    assert ctl(Cmd.HASH_DATA, struct.pack(">I", 4) + b"abc") == Res.BAD_PARAMETER
    assert ctl(Cmd.HASH_DATA, hdata) == Res.SUCCESS
    assert ctl(Cmd.HASH_END) == Res.SUCCESS
    assert read_all(dev.tpm.execute, ALG.SHA384)[17] == drtm_value(ALG.SHA384, b"abc")
    assert ctl(Cmd.STOP) == Res.SUCCESS
    for code, body in ((Cmd.HASH_START, b""), (Cmd.HASH_DATA, hdata), (Cmd.HASH_END, b"")):
        assert ctl(code, body) == Res.BAD_ORDINAL              # stopped


# ---------------------------------------------------------------------------- both emulators


def ioctl(emu: Emulator, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    p = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}", *args],
                       input=stdin, capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode()


def observe(emu: Emulator) -> dict:
    """Everything hashing may change, as a client sees it."""
    clock = read_clock_info(emu.command(cmd(CC.ReadClock)))
    return {"pcrs": {alg: read_all(emu.command, alg) for alg in BANKS},
            "counter": pcr_counter(emu.command),
            "restart": clock["restart_count"], "reset": clock["reset_count"],
            "established": ioctl(emu, "-e")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Run the same swtpm_ioctl -h scenario on both emulators; yield their observations."""
    results: dict[str, list] = {}
    big = bytes(range(256)) * 40                     # 10240 bytes: several HASH_DATA requests
    for kind in ("swtpm_py", "swtpm"):
        steps = []
        with Emulator(kind, tmp_path_factory.mktemp(kind) / "state") as emu:
            steps.append(observe(emu))
            steps.append(ioctl(emu, "-h", "first launch"))
            steps.append(observe(emu))
            steps.append(ioctl(emu, "-h", "-", stdin=big))
            steps.append(observe(emu))
        with Emulator(kind, tmp_path_factory.mktemp(kind) / "hcrtm", flags="not-need-init") as emu:
            steps.append(ioctl(emu, "-h", "h-crtm"))
            steps.append(rc(emu.command(startup())))
            steps.append(observe(emu))
        with Emulator(kind, tmp_path_factory.mktemp(kind) / "noinit", flags=None) as emu:
            steps.append(ioctl(emu, "-h", "x"))          # before INIT
        results[kind] = steps
    return results, big


def test_swtpm_ioctl_hash_matches_the_reference(pair) -> None:
    results, big = pair
    ours, ref = results["swtpm_py"], results["swtpm"]
    start, hashed, after1, hashed2, after2, hcrtm, st, after3, noinit = ref
    # The reference's behaviour, as documented above.
    assert start["established"] == (0, "tpmEstablished is 0\n")
    assert hashed == (0, "") and hashed2 == (0, "")
    assert after1["established"] == (0, "tpmEstablished is 1\n")
    for alg in BANKS:
        assert after1["pcrs"][alg][17] == drtm_value(alg, b"first launch")
        assert after2["pcrs"][alg][17] == drtm_value(alg, big)
        assert after3["pcrs"][alg][0] == drtm_value(alg, b"h-crtm", start=4)
    assert after1["restart"] == start["restart"] + 1 and after2["restart"] == start["restart"] + 2
    assert after1["counter"] == start["counter"] + 4
    assert st == 0 and after3["established"] == (0, "tpmEstablished is 1\n")
    assert noinit[0] != 0
    # ... and ours does exactly the same.
    for mine, theirs in zip(ours, ref):
        assert mine == theirs


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_raw_hash_requests(kind: str, tmp_path) -> None:
    """Raw control requests: the abort rule and the run-state rule, on both emulators."""
    with Emulator(kind, tmp_path / "state") as emu:
        def ctl(code: int, body: bytes = b"") -> bytes:
            return emu.ctrl(code, body, reply_size=4)

        ok = struct.pack(">I", 0)
        assert ctl(Cmd.HASH_DATA, struct.pack(">I", 1) + b"a") == ok      # no sequence: no-op
        assert ctl(Cmd.HASH_END) == ok
        assert read_all(emu.command, ALG.SHA256)[17] == b"\xff" * 32
        assert ctl(Cmd.HASH_START) == ok
        assert ctl(Cmd.HASH_DATA, struct.pack(">I", 2) + b"ab") == ok
        assert rc(emu.command(cmd(CC.GetRandom, b"\0\x08"))) == 0           # aborts it
        assert ctl(Cmd.HASH_DATA, struct.pack(">I", 1) + b"c") == ok
        assert ctl(Cmd.HASH_END) == ok
        assert read_all(emu.command, ALG.SHA256)[17] == b"\xff" * 32
        # INIT (_TPM_Init) ends a sequence too: the HASH_END after it measures nothing.
        assert ctl(Cmd.HASH_START) == ok
        assert ctl(Cmd.HASH_DATA, struct.pack(">I", 1) + b"a") == ok
        assert ctl(Cmd.INIT, b"\0\0\0\0") == ok
        assert ctl(Cmd.HASH_END) == ok
        assert rc(emu.command(startup())) == 0
        values = read_all(emu.command, ALG.SHA256)
        assert values[0] == b"\0" * 32 and values[17] == b"\xff" * 32
        assert ctl(Cmd.STOP) == ok
        bad = struct.pack(">I", Res.BAD_ORDINAL)
        assert ctl(Cmd.HASH_START) == bad
        assert ctl(Cmd.HASH_DATA, struct.pack(">I", 1) + b"c") == bad
        assert ctl(Cmd.HASH_END) == bad
