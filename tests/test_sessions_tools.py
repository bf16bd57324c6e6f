"""tpm2-tools over HMAC sessions: tpm2_pcrevent (tpm2-tools 5.4) always starts an unsalted,
unbound HMAC session with symmetric TPM_ALG_NULL, authorizes TPM2_PCR_Event with it and
flushes it — even with an empty password. The PCR values it leaves are recomputed with hashlib.
Both emulators run the same assertions.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from emulator import Emulator
from sessclient import start_session

BANKS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
         "sha512": hashlib.sha512}


def tool(emu: Emulator, *args: str, stdin: object = None) -> subprocess.CompletedProcess:
    """Run a tpm2-tools binary against ``emu``; it must succeed."""
    proc = subprocess.run([args[0], "-T", emu.tcti, *args[1:]], stdin=stdin,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def pcr_values(emu: Emulator, index: int) -> dict[str, bytes]:
    """PCR ``index`` of every bank, by ``tpm2_pcrread``."""
    spec = "+".join(f"{bank}:{index}" for bank in BANKS)
    out = yaml.safe_load(tool(emu, "tpm2_pcrread", spec).stdout)
    return {bank: out[bank][index].to_bytes(BANKS[bank]().digest_size, "big") for bank in BANKS}


def loaded_sessions(emu: Emulator) -> list[int]:
    """``tpm2_getcap handles-loaded-session``."""
    return yaml.safe_load(tool(emu, "tpm2_getcap", "handles-loaded-session").stdout) or []


def printed_digests(stdout: bytes) -> dict[str, bytes]:
    """tpm2_pcrevent's ``bank: hex`` lines."""
    lines = (line.partition(":") for line in stdout.decode().splitlines())
    return {bank.strip(): bytes.fromhex(value.strip()) for bank, _, value in lines}


def expect_extended(before: dict[str, bytes], data: bytes) -> dict[str, bytes]:
    """PCR := H(PCR || H(data)) in every bank."""
    return {bank: h(before[bank] + h(data).digest()).digest() for bank, h in BANKS.items()}


def test_pcrevent_file_through_an_hmac_session(any_emulator: Emulator, tmp_path: Path) -> None:
    """``tpm2_pcrevent 9 FILE``: the digests it prints are the file's, and PCR 9 of every bank
    is extended with them; a second event chains on the first."""
    for n, data in enumerate((b"first event\n", bytes(range(256)) * 3)):
        event = tmp_path / f"event{n}.bin"
        event.write_bytes(data)
        before = pcr_values(any_emulator, 9)
        out = printed_digests(tool(any_emulator, "tpm2_pcrevent", "9", str(event)).stdout)
        assert out == {bank: h(data).digest() for bank, h in BANKS.items()}
        assert pcr_values(any_emulator, 9) == expect_extended(before, data)
        # The tool flushed its session.
        assert loaded_sessions(any_emulator) == []


def test_getcap_lists_loaded_sessions(any_emulator: Emulator) -> None:
    """``tpm2_getcap handles-loaded-session`` lists a session started with raw commands."""
    start_session(any_emulator.command)
    start_session(any_emulator.command, session_type=1)
    assert loaded_sessions(any_emulator) == [0x02000000, 0x03000001]


def test_pcrevent_from_stdin_through_an_hmac_session(any_emulator: Emulator,
                                                      tmp_path: Path) -> None:
    """``tpm2_pcrevent 16 < FILE``: standard input redirected from a file of known size goes
    through the same session-authorized TPM2_PCR_Event."""
    data = b"stdin event data"
    event = tmp_path / "stdin.bin"
    event.write_bytes(data)
    before = pcr_values(any_emulator, 16)
    with event.open("rb") as stdin:
        out = printed_digests(tool(any_emulator, "tpm2_pcrevent", "16", stdin=stdin).stdout)
    assert out == {bank: h(data).digest() for bank, h in BANKS.items()}
    assert pcr_values(any_emulator, 16) == expect_extended(before, data)
