"""The real swtpm_ioctl binary against swtpm_py and the reference swtpm, over --ctrl type=tcp
and type=unixio: the same sequence of calls must give the same exit codes and output.

The only differences allowed are the ones swtpm_py makes on purpose: the values GET_INFO
reports for the TPM's attributes (firmware version) and features (the key sizes the core
implements), and the capability word: swtpm_py has LOCK_STORAGE too (bit 16, as swtpm >= 0.8),
0x1ffff; swtpm 0.7.1 reports 0xffff.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_server import connect, free_port_pair, spawn, stop

#: (swtpm_ioctl arguments, exit code, stdout, stderr) measured on swtpm 0.7.1; None: the
#: value is checked separately (it legitimately differs).
SEQUENCE: list[tuple[list[str], int, str | None, str]] = [
    (["-c"], 0, None, ""),
    (["-e"], 1, "", "TPM result from PTM_GET_TPMESTABLISHED: 0xa\n"),
    (["-v"], 1, "", "TPM result from PTM_STORE_VOLATILE: 0xa\n"),
    (["-C"], 1, "", "TPM result from PTM_CANCEL_TPM_CMD: 0xa\n"),
    (["-g"], 0, "ptm configuration flags: 0x0\n", ""),
    (["-b", "0"], 0, "TPM buffersize: 4096\nminimum size  : 2808\nmaximum size  : 4096\n", ""),
    (["-b", "3000"], 0, "TPM buffersize: 3000\nminimum size  : 2808\nmaximum size  : 4096\n", ""),
    (["-b", "1"], 0, "TPM buffersize: 2808\nminimum size  : 2808\nmaximum size  : 4096\n", ""),
    (["-l", "3"], 0, "", ""),
    (["-l", "5"], 1, "", "Locality outside valid range of [0..4].\n"),
    (["-r", "0"], 1, "", "TPM result from PTM_RESET_TPMESTABLISHED: 0xa\n"),
    (["--info", "1"], 0, '{"TPMSpecification":{"family":"2.0","level":0,"revision":164}}\n', ""),
    (["--info", "2"], 0, None, ""),
    (["--info", "4"], 0, None, ""),
    (["--info", "0"], 0, "{}\n", ""),
    (["-i"], 0, "", ""),
    (["-e"], 0, "tpmEstablished is 0\n", ""),
    (["-b", "0"], 0, "TPM buffersize: 2808\nminimum size  : 2808\nmaximum size  : 4096\n", ""),
    (["-b", "3000"], 1, "", "TPM result from PTM_SET_BUFFERSIZE: 0xa\n"),
    (["-r", "3"], 0, "", ""),
    (["-r", "2"], 1, "", "TPM result from PTM_RESET_TPMESTABLISHED: 0x3d\n"),
    (["-C"], 0, "", ""),
    (["-v"], 0, "", ""),
    (["--stop"], 0, "", ""),
    (["-e"], 1, "", "TPM result from PTM_GET_TPMESTABLISHED: 0xa\n"),
    (["-v"], 1, "", "TPM result from PTM_STORE_VOLATILE: 0xa\n"),
    (["-b", "4096"], 0, "TPM buffersize: 4096\nminimum size  : 2808\nmaximum size  : 4096\n", ""),
    (["-i"], 0, "", ""),
    (["-e"], 0, "tpmEstablished is 0\n", ""),
]

VOLATILE_FILE = {"swtpm_py": "swtpm_py-volatile.blob", "swtpm": "tpm2-00.volatilestate"}


def _start(kind: str, transport: str, tmp_path: Path, procs: list) -> tuple[list[str], object]:
    state = tmp_path / f"{kind}-state"
    state.mkdir()
    if transport == "tcp":
        port = free_port_pair()
        ctrl, target = f"type=tcp,port={port}", ["--tcp", f"127.0.0.1:{port}"]
        address: object = ("127.0.0.1", port)
    else:
        path = str(tmp_path / f"{kind}.ctrl")
        ctrl, target, address = f"type=unixio,path={path},mode=0600", ["--unix", path], path
    proc = spawn(kind, ["--tpm2", "--ctrl", ctrl, "--tpmstate", f"dir={state}"], tmp_path)
    procs.append(proc)
    connect(address, proc=proc).close()  # type: ignore[arg-type]
    return target, proc


def _ioctl(target: list[str], args: list[str]) -> tuple[int, str, str]:
    r = subprocess.run(["swtpm_ioctl", *target, *args], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def procs():
    started: list = []
    yield started
    for p in started:
        stop(p)


@pytest.mark.parametrize("transport", ["tcp", "unixio"])
def test_swtpm_ioctl_sequence_matches_the_reference(transport: str, tmp_path: Path,
                                                    procs: list) -> None:
    results: dict[str, list[tuple[int, str, str]]] = {}
    for kind in ("swtpm_py", "swtpm"):
        target, proc = _start(kind, transport, tmp_path, procs)
        results[kind] = [_ioctl(target, args) for args, *_ in SEQUENCE]
        state = tmp_path / f"{kind}-state"
        # -v stored the volatile state; the following -i (INIT with DELETE_VOLATILE) read it
        # and removed it.
        assert not (state / VOLATILE_FILE[kind]).exists()
        assert _ioctl(target, ["-v"])[0] == 0
        assert (state / VOLATILE_FILE[kind]).exists()
        assert _ioctl(target, ["-s"]) == (0, "", "")
        assert proc.wait(5) == 0                       # type: ignore[attr-defined]
        assert _ioctl(target, ["-c"])[0] == 1          # gone
    for (args, code, out, err), ours, ref in zip(SEQUENCE, results["swtpm_py"], results["swtpm"]):
        assert ref == (code, ref[1] if out is None else out, err), args
        if out is not None:
            assert ours == ref, args
        else:
            assert ours[0] == ref[0] and ours[2] == ref[2], args
    caps = dict(zip([" ".join(a) for a, *_ in SEQUENCE], results["swtpm_py"]))
    assert caps["-c"][1] == "ptm capability is 0x1ffff\n"
    assert results["swtpm"][0][1] == "ptm capability is 0xffff\n"
    attrs = caps["--info 2"][1]
    assert attrs.startswith('{"TPMAttributes":{"manufacturer":"id:00001014","version":"id:')
    assert attrs.endswith('","model":"swtpm"}}\n')
    assert caps["--info 4"][1].startswith('{"TPMFeatures":{"RSAKeySizes":[')


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_swtpm_ioctl_stop_then_shutdown_over_unixio(kind: str, tmp_path: Path,
                                                     procs: list) -> None:
    # libvirt stops the emulator with "swtpm_ioctl --unix S -s" and expects it gone.
    target, proc = _start(kind, "unixio", tmp_path, procs)
    assert _ioctl(target, ["-i"]) == (0, "", "")
    assert _ioctl(target, ["--stop"]) == (0, "", "")
    assert _ioctl(target, ["-s"]) == (0, "", "")
    assert proc.wait(5) == 0                           # type: ignore[attr-defined]
    assert not Path(target[1]).exists()                # the socket file is removed
