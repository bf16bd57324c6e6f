"""tpm2-tools end to end: the real tpm2_* binaries over the swtpm TCTI.

Each test runs the binaries a user would run (``tpm2_pcrread -T swtpm:host=127.0.0.1,port=P``)
against an emulator process and checks what they print or write: PCR values recomputed here with
hashlib, digests of the same files, ticket structures, clock fields. The tests take
``any_emulator``, so the same assertions run against swtpm_py and against the real swtpm: where
they pass for both, swtpm_py is a drop-in for these commands.

GetCapability's details are tests/test_getcap*.py's business; here only what the PCR and hash
tests rely on (the four banks) is checked.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from emulator import Emulator

BANKS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
         "sha512": hashlib.sha512}
SIZES = {name: h().digest_size for name, h in BANKS.items()}
#: PC Client profile: PCRs 17-22 (DRTM) start at all ones, the others at zero.
DRTM_PCRS = range(17, 23)
TPM_ST_HASHCHECK = 0x8024
TPM_RH_OWNER = 0x40000001
TPM_RH_NULL = 0x40000007
TPM_RH_ENDORSEMENT = 0x4000000B
TPM_RC_INITIALIZE = 0x100
TPM_RC_LOCALITY = 0x907
#: TPM_GENERATED_VALUE (Part 2 §6.2), the prefix of every structure the TPM signs.
TPM_GENERATED = b"\xffTCG"


def tool(emu: Emulator, name: str, *args: str, check: bool = True, stdin: bytes | None = None,
         timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` over the swtpm TCTI."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], input=stdin, capture_output=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {proc.returncode}:\n"
                             + proc.stderr.decode(errors="replace"))
    return proc


def tool_yaml(emu: Emulator, name: str, *args: str) -> object:
    """Run a tool whose standard output is YAML and parse it."""
    return yaml.safe_load(tool(emu, name, *args).stdout)


def digest_lines(stdout: bytes) -> dict[str, bytes]:
    """``bank: hex`` lines (tpm2_pcrevent's output) as {bank: digest}. Not YAML: a hex digest
    of only decimal digits would load as an integer."""
    out = {}
    for line in stdout.decode().splitlines():
        bank, _, value = line.partition(":")
        out[bank.strip()] = bytes.fromhex(value.strip())
    return out


def pcrread(emu: Emulator, spec: str) -> dict[str, dict[int, bytes]]:
    """``tpm2_pcrread SPEC`` as {bank: {pcr: value}} (the tool prints 0x-prefixed hex)."""
    out = tool_yaml(emu, "tpm2_pcrread", spec)
    assert isinstance(out, dict)
    return {bank: {pcr: value.to_bytes(SIZES[bank], "big") for pcr, value in pcrs.items()}
            for bank, pcrs in out.items()}


def extended(old: bytes, bank: str, digest: bytes) -> bytes:
    """Part 1 §17.2: PCR_new = H(PCR_old || digest)."""
    return BANKS[bank](old + digest).digest()


def initial(pcr: int, bank: str) -> bytes:
    """The value of ``pcr`` after Startup(CLEAR) at locality 0."""
    return (b"\xff" if pcr in DRTM_PCRS else b"\x00") * SIZES[bank]


def all_banks(pcrs: str) -> str:
    """A tpm2_pcrread/pcrextend selection of ``pcrs`` in the four banks."""
    return "+".join(f"{bank}:{pcrs}" for bank in BANKS)


def readclock(emu: Emulator) -> dict:
    """``tpm2_readclock`` parsed."""
    out = tool_yaml(emu, "tpm2_readclock")
    assert isinstance(out, dict)
    return out


# ---------------------------------------------------------------------------- startup, shutdown


def test_startup_on_started_tpm_is_refused_and_changes_nothing(any_emulator: Emulator) -> None:
    """The emulator already ran Startup(CLEAR) (startup-clear): another Startup gets
    TPM_RC_INITIALIZE, which tpm2_startup reports as success, and nothing is reset."""
    digest = hashlib.sha256(b"measured before the second Startup").digest()
    tool(any_emulator, "tpm2_pcrextend", f"8:sha256={digest.hex()}")
    before = readclock(any_emulator)["clock_info"]
    for args in (["-c"], []):
        proc = tool(any_emulator, "tpm2_startup", *args)
        assert proc.returncode == 0
    after = readclock(any_emulator)["clock_info"]
    assert (after["reset_count"], after["restart_count"]) == (before["reset_count"],
                                                              before["restart_count"])
    expected = extended(bytes(32), "sha256", digest)
    assert pcrread(any_emulator, "sha256:8")["sha256"][8] == expected


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_startup_starts_an_unstarted_tpm(kind: str, tmp_path: Path) -> None:
    """Without startup-clear the TPM answers TPM_RC_INITIALIZE until tpm2_startup -c; then the
    first TPM Reset of a new TPM shows resetCount 1."""
    with Emulator(kind, tmp_path / "state", flags="not-need-init") as emu:
        proc = tool(emu, "tpm2_getrandom", "8", check=False)
        assert proc.returncode != 0
        assert f"0x{TPM_RC_INITIALIZE:x}" in proc.stderr.decode()
        tool(emu, "tpm2_startup", "-c")
        clock = readclock(emu)["clock_info"]
        assert (clock["reset_count"], clock["restart_count"]) == (1, 0)
        assert len(bytes.fromhex(tool(emu, "tpm2_getrandom", "8", "--hex").stdout.decode())) == 8


def test_shutdown_state_then_init_and_startup_state_resumes(any_emulator: Emulator) -> None:
    """tpm2_shutdown (STATE), the host's INIT (swtpm_ioctl -i), tpm2_startup (STATE): a TPM
    Restart keeps PCRs 0-15, resets 16-23 and counts restartCount (Part 1 §12.2.3)."""
    digest = hashlib.sha256(b"kernel").digest()
    tool(any_emulator, "tpm2_pcrextend", f"4:sha256={digest.hex()}", f"16:sha256={digest.hex()}")
    tool(any_emulator, "tpm2_shutdown")
    ioctl = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{any_emulator.ctrl_port}", "-i"],
                           capture_output=True, timeout=30)
    assert ioctl.returncode == 0, ioctl.stderr
    tool(any_emulator, "tpm2_startup")
    clock = readclock(any_emulator)["clock_info"]
    assert (clock["reset_count"], clock["restart_count"]) == (1, 1)
    values = pcrread(any_emulator, "sha256:4,16")["sha256"]
    assert values == {4: extended(bytes(32), "sha256", digest), 16: bytes(32)}


def test_shutdown_clear_then_startup_clear_is_a_tpm_reset(any_emulator: Emulator) -> None:
    """tpm2_shutdown -c, INIT, tpm2_startup -c: PCRs back to their initial values, resetCount
    counts and Clock is still safe (the shutdown was orderly)."""
    digest = hashlib.sha1(b"x").digest()
    tool(any_emulator, "tpm2_pcrextend", f"0:sha1={digest.hex()}")
    tool(any_emulator, "tpm2_shutdown", "-c")
    subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{any_emulator.ctrl_port}", "-i"],
                   check=True, capture_output=True, timeout=30)
    tool(any_emulator, "tpm2_startup", "-c")
    clock = readclock(any_emulator)["clock_info"]
    assert (clock["reset_count"], clock["restart_count"], clock["safe"]) == (2, 0, True)
    assert pcrread(any_emulator, "sha1:0")["sha1"][0] == bytes(20)


# ---------------------------------------------------------------------------- random


@pytest.mark.parametrize("size", [1, 8, 20, 32, 48, 64])
def test_getrandom_sizes(any_emulator: Emulator, size: int, tmp_path: Path) -> None:
    """tpm2_getrandom N writes exactly N bytes (-o) or 2N hex digits (--hex)."""
    out = tmp_path / "random.bin"
    tool(any_emulator, "tpm2_getrandom", str(size), "-o", str(out))
    assert out.stat().st_size == size
    text = tool(any_emulator, "tpm2_getrandom", str(size), "--hex").stdout.decode()
    assert len(text) == 2 * size
    bytes.fromhex(text)


def test_getrandom_is_random(any_emulator: Emulator) -> None:
    """Ten 64-byte draws are all different and not constant."""
    draws = {tool(any_emulator, "tpm2_getrandom", "64", "--hex").stdout for _ in range(10)}
    assert len(draws) == 10
    assert all(len(set(bytes.fromhex(d.decode()))) > 8 for d in draws)


def test_getrandom_is_bounded_by_the_largest_digest(any_emulator: Emulator) -> None:
    """Part 3 §16.1: at most the largest digest size (64, SHA-512) per call. The tool reads
    TPM_PT_MAX_DIGEST and refuses more; with --force the TPM returns 64 bytes."""
    proc = tool(any_emulator, "tpm2_getrandom", "65", "--hex", check=False)
    assert proc.returncode != 0
    assert b"max hash size, which is: 64" in proc.stderr
    # tpm2-tools 5.4 declares the long option --force with an argument: use -f.
    forced = tool(any_emulator, "tpm2_getrandom", "-f", "65", "--hex").stdout.decode()
    assert len(bytes.fromhex(forced)) == 64


def test_stirrandom_from_file_and_stdin(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_stirrandom takes up to 128 bytes (TPM2B_SENSITIVE_DATA) from a file or stdin; the
    RNG keeps working afterwards."""
    data = tmp_path / "entropy.bin"
    data.write_bytes(bytes(range(128)))
    tool(any_emulator, "tpm2_stirrandom", str(data))
    tool(any_emulator, "tpm2_stirrandom", stdin=b"more entropy")
    out = tool(any_emulator, "tpm2_getrandom", "32", "--hex").stdout.decode()
    assert len(bytes.fromhex(out)) == 32


# ---------------------------------------------------------------------------- PCRs


def test_pcrread_initial_values(any_emulator: Emulator) -> None:
    """After Startup(CLEAR) at locality 0 every PCR of the four banks has its profile initial
    value: zeros, all ones for the DRTM PCRs 17-22."""
    values = pcrread(any_emulator, all_banks("all"))
    assert set(values) == set(BANKS)
    for bank, pcrs in values.items():
        assert pcrs == {pcr: initial(pcr, bank) for pcr in range(24)}, bank


def test_pcrextend_all_banks(any_emulator: Emulator) -> None:
    """tpm2_pcrextend with one digest per bank, twice; pcrread shows the hashlib chain."""
    pcr = 7
    expected = {bank: initial(pcr, bank) for bank in BANKS}
    for round_ in range(2):
        digests = {bank: BANKS[bank](f"event {round_} {bank}".encode()).digest()
                   for bank in BANKS}
        spec = f"{pcr}:" + ",".join(f"{bank}={d.hex()}" for bank, d in digests.items())
        tool(any_emulator, "tpm2_pcrextend", spec)
        expected = {bank: extended(expected[bank], bank, digests[bank]) for bank in BANKS}
    values = pcrread(any_emulator, all_banks(str(pcr)))
    assert {bank: values[bank][pcr] for bank in BANKS} == expected
    # Neighbours are untouched.
    assert pcrread(any_emulator, "sha256:6,8")["sha256"] == {6: bytes(32), 8: bytes(32)}


def test_pcrextend_one_bank_leaves_the_others(any_emulator: Emulator) -> None:
    """Extending only SHA-384 of PCR 23 changes only that bank."""
    digest = hashlib.sha384(b"only sha384").digest()
    tool(any_emulator, "tpm2_pcrextend", f"23:sha384={digest.hex()}")
    values = pcrread(any_emulator, all_banks("23"))
    assert values["sha384"][23] == extended(bytes(48), "sha384", digest)
    assert all(values[bank][23] == bytes(SIZES[bank]) for bank in ("sha1", "sha256", "sha512"))


def test_pcrextend_drtm_pcr_from_locality_0_fails(any_emulator: Emulator) -> None:
    """PC Client profile: PCR 17 may be extended only from localities 2-4."""
    proc = tool(any_emulator, "tpm2_pcrextend", f"17:sha1={'11' * 20}", check=False)
    assert proc.returncode != 0
    assert f"0x{TPM_RC_LOCALITY:x}".encode() in proc.stderr
    assert pcrread(any_emulator, "sha1:17")["sha1"][17] == b"\xff" * 20


def test_pcrevent_digests_and_extends(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_pcrevent PCR FILE: the TPM digests the event with every bank's hash (printed by the
    tool) and extends each bank with its digest. tpm2-tools 5.4 authorizes this PCR_Event with
    an HMAC session even for the empty password (GetCapability, StartAuthSession unsalted and
    unbound, PCR_Event, FlushContext; measured on swtpm's command log)."""
    event = tmp_path / "event.bin"
    event.write_bytes(b"an event of the boot log\n" * 40)  # 1000 bytes: one TPM2_PCR_Event
    out = digest_lines(tool(any_emulator, "tpm2_pcrevent", "9", str(event)).stdout)
    data = event.read_bytes()
    expected = {bank: BANKS[bank](data).digest() for bank in BANKS}
    assert out == expected
    values = pcrread(any_emulator, all_banks("9"))
    assert {bank: values[bank][9] for bank in BANKS} == {
        bank: extended(bytes(SIZES[bank]), bank, expected[bank]) for bank in BANKS}


def test_pcrevent_from_stdin_and_without_pcr(any_emulator: Emulator) -> None:
    """From stdin into PCR 16; without a PCR index the tool only digests (nothing changes)."""
    data = b"stdin event"
    tool(any_emulator, "tpm2_pcrevent", "16", stdin=data)
    after = pcrread(any_emulator, all_banks("16,15"))
    for bank in BANKS:
        assert after[bank][16] == extended(bytes(SIZES[bank]), bank, BANKS[bank](data).digest())
    out = digest_lines(tool(any_emulator, "tpm2_pcrevent", stdin=data).stdout)
    assert out == {bank: BANKS[bank](data).digest() for bank in BANKS}
    assert pcrread(any_emulator, all_banks("16,15")) == after


@pytest.mark.parametrize("pcr", [16, 23])
def test_pcrreset_resettable_pcr(any_emulator: Emulator, pcr: int) -> None:
    """PC Client profile: PCRs 16 (debug) and 23 (application) are resettable from locality 0;
    all four banks read back zero."""
    spec = f"{pcr}:" + ",".join(f"{bank}={'ab' * SIZES[bank]}" for bank in BANKS)
    tool(any_emulator, "tpm2_pcrextend", spec)
    assert all(v[pcr] != bytes(SIZES[b]) for b, v in pcrread(any_emulator,
                                                             all_banks(str(pcr))).items())
    tool(any_emulator, "tpm2_pcrreset", str(pcr))
    assert pcrread(any_emulator, all_banks(str(pcr))) == {
        bank: {pcr: bytes(SIZES[bank])} for bank in BANKS}


@pytest.mark.parametrize("pcr", [0, 17])
def test_pcrreset_not_from_locality_0(any_emulator: Emulator, pcr: int) -> None:
    """PCR 0 is never resettable and PCR 17 only from locality 4: TPM_RC_LOCALITY, and the value
    stays."""
    if pcr == 0:
        tool(any_emulator, "tpm2_pcrextend", f"0:sha256={'cd' * 32}")
    before = pcrread(any_emulator, all_banks(str(pcr)))
    proc = tool(any_emulator, "tpm2_pcrreset", str(pcr), check=False)
    assert proc.returncode != 0
    assert f"0x{TPM_RC_LOCALITY:x}".encode() in proc.stderr
    assert b"bad locality" in proc.stderr
    assert pcrread(any_emulator, all_banks(str(pcr))) == before


# ---------------------------------------------------------------------------- self test


def test_selftest_and_results(any_emulator: Emulator) -> None:
    """tpm2_selftest (full and not), then the test result is success and nothing remains for
    tpm2_incrementalselftest to do."""
    tool(any_emulator, "tpm2_selftest")
    tool(any_emulator, "tpm2_selftest", "--fulltest")
    assert tool_yaml(any_emulator, "tpm2_gettestresult") == {"status": "success"}
    assert tool_yaml(any_emulator, "tpm2_incrementalselftest") == {"status": "complete"}
    assert tool_yaml(any_emulator, "tpm2_incrementalselftest", "sha256",
                     "sha1") == {"status": "complete"}


def test_incrementalselftest_drains_the_todo_list(any_emulator: Emulator) -> None:
    """Without a prior full self test: testing everything the TPM still lists empties its
    to-do list (Part 3 §10.3)."""
    out = tool_yaml(any_emulator, "tpm2_incrementalselftest")
    assert isinstance(out, dict)
    remaining = out.get("remaining") or []
    if isinstance(remaining, str):
        remaining = remaining.split()
    assert out.get("status", "complete") == "complete" or remaining
    if remaining:
        tool(any_emulator, "tpm2_incrementalselftest", *remaining)
    assert tool_yaml(any_emulator, "tpm2_incrementalselftest") == {"status": "complete"}
    assert tool_yaml(any_emulator, "tpm2_gettestresult") == {"status": "success"}


# ---------------------------------------------------------------------------- testparms


#: tpm2_testparms arguments and the algorithms (tpm2_getcap names) each one needs.
TESTPARMS = {
    "hmac": {"keyedhash", "hmac", "sha256"},
    "keyedhash": {"keyedhash"},
    "xor": {"keyedhash", "xor", "sha256", "kdf1_sp800_108"},
    "aes128cfb": {"symcipher", "aes", "cfb"},
    "camellia256cfb": {"symcipher", "camellia", "cfb"},
    "rsa2048": {"rsa"},
    "sm4128cfb": {"symcipher", "sm4", "cfb"},
}


def test_testparms_agrees_with_the_algorithm_list(any_emulator: Emulator) -> None:
    """TPM2_TestParms succeeds exactly for the parameters whose algorithms GetCapability(ALGS)
    lists (both are generated from what is implemented). Keyed hashes (HMAC, XOR) are in both
    TPMs; SM4 is in neither."""
    listed = tool_yaml(any_emulator, "tpm2_getcap", "algorithms")
    assert isinstance(listed, dict)
    results = {}
    for spec, needs in TESTPARMS.items():
        proc = tool(any_emulator, "tpm2_testparms", spec, check=False)
        results[spec] = proc.returncode == 0
        assert results[spec] == needs.issubset(listed), (spec, proc.stderr)
    assert results["hmac"] and results["keyedhash"] and results["xor"]
    assert not results["sm4128cfb"]


# ---------------------------------------------------------------------------- hash


def parse_hashcheck(ticket: bytes) -> tuple[int, int, bytes]:
    """TPMT_TK_HASHCHECK: tag, hierarchy, TPM2B digest (Part 2 §10.7.6)."""
    tag, hierarchy, size = struct.unpack_from(">HIH", ticket)
    assert len(ticket) == 8 + size
    return tag, hierarchy, ticket[8:]


@pytest.mark.parametrize("bank", list(BANKS))
def test_hash_digest_and_ticket(any_emulator: Emulator, bank: str, tmp_path: Path) -> None:
    """tpm2_hash: the digest is hashlib's; the ticket is an owner-hierarchy HASHCHECK ticket
    whose HMAC has the context hash's size (SHA-512, as libtpms: 64 bytes)."""
    data = tmp_path / "data.bin"
    data.write_bytes(b"hash me " * 100)
    out, ticket = tmp_path / "digest.bin", tmp_path / "ticket.bin"
    tool(any_emulator, "tpm2_hash", "-g", bank, "-o", str(out), "-t", str(ticket), str(data))
    assert out.read_bytes() == BANKS[bank](data.read_bytes()).digest()
    tag, hierarchy, hmac = parse_hashcheck(ticket.read_bytes())
    assert (tag, hierarchy, len(hmac)) == (TPM_ST_HASHCHECK, TPM_RH_OWNER, 64)
    hexed = tool(any_emulator, "tpm2_hash", "-g", bank, "--hex", str(data)).stdout.decode()
    assert bytes.fromhex(hexed) == out.read_bytes()


def test_hash_tickets_by_hierarchy(any_emulator: Emulator, tmp_path: Path) -> None:
    """-C e gives an endorsement ticket, -C n the NULL ticket (empty digest); data that starts
    with TPM_GENERATED_VALUE always gets the NULL ticket (Part 3 §15.4), and the same data under
    the same hierarchy always the same ticket."""
    data, gen = tmp_path / "data.bin", tmp_path / "generated.bin"
    data.write_bytes(b"ordinary data")
    gen.write_bytes(TPM_GENERATED + b"looks like a TPM attestation")
    tickets = {}
    for name, hierarchy, path in (("e", "e", data), ("e2", "e", data), ("o", "o", data),
                                  ("n", "n", data), ("gen", "o", gen)):
        ticket = tmp_path / f"ticket-{name}.bin"
        tool(any_emulator, "tpm2_hash", "-C", hierarchy, "-g", "sha256", "-t", str(ticket),
             str(path))
        tickets[name] = parse_hashcheck(ticket.read_bytes())
    assert tickets["e"][:2] == (TPM_ST_HASHCHECK, TPM_RH_ENDORSEMENT)
    assert tickets["e"] == tickets["e2"]
    assert tickets["e"][2] != tickets["o"][2]
    assert tickets["n"] == (TPM_ST_HASHCHECK, TPM_RH_NULL, b"")
    assert tickets["gen"] == (TPM_ST_HASHCHECK, TPM_RH_NULL, b"")


# ---------------------------------------------------------------------------- clock


def test_readclock(any_emulator: Emulator) -> None:
    """tpm2_readclock: a fresh TPM after its first Startup(CLEAR) has resetCount 1,
    restartCount 0, a safe clock; time and clock advance with wall time and time <= clock."""
    first = readclock(any_emulator)
    assert set(first) == {"time", "clock_info"}
    info = first["clock_info"]
    assert set(info) == {"clock", "reset_count", "restart_count", "safe"}
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (1, 0, True)
    assert 0 <= first["time"] <= info["clock"]
    time.sleep(0.3)
    second = readclock(any_emulator)
    elapsed = second["time"] - first["time"]
    assert 250 <= elapsed <= 5000
    assert second["clock_info"]["clock"] - info["clock"] >= 250
    assert second["clock_info"]["reset_count"] == 1


# ---------------------------------------------------------------------------- getcap


def test_getcap_algorithms_has_the_hashes(any_emulator: Emulator) -> None:
    """The algorithm list names the four bank hashes, each with the hash attribute."""
    algs = tool_yaml(any_emulator, "tpm2_getcap", "algorithms")
    assert isinstance(algs, dict)
    expected = {"sha1": 0x4, "sha256": 0xB, "sha384": 0xC, "sha512": 0xD}
    for name, value in expected.items():
        assert algs[name]["value"] == value
        assert algs[name]["hash"] == 1


def test_getcap_pcrs_lists_four_full_banks(any_emulator: Emulator) -> None:
    """TPM_CAP_PCRS: SHA-1, SHA-256, SHA-384 and SHA-512 banks, each with PCRs 0-23."""
    out = tool_yaml(any_emulator, "tpm2_getcap", "pcrs")
    assert isinstance(out, dict)
    banks = {}
    for entry in out["selected-pcrs"]:
        banks.update(entry)
    assert banks == {bank: list(range(24)) for bank in BANKS}
