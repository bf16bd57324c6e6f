"""The testing commands (Part 3 §10): TPM2_SelfTest, IncrementalSelfTest, GetTestResult and
TestParms, and the known-answer self tests behind them.

In process: the vectors are the published ones, a wrong answer from any algorithm puts the TPM
in failure mode (and GetTestResult says why), the to-do list, the parameter error codes, and
TestParms against the algorithm registry (also with RSA, ECC and AES registered, to show the
parser takes them as Part 2 and swtpm do). Over processes: tpm2_selftest,
tpm2_incrementalselftest, tpm2_gettestresult and tpm2_testparms, tpm2-pytss, and the reference
swtpm's answers to the same TestParms cases.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPML_ALG as PyTPML_ALG
from tpm2_pytss.types import TPMT_PUBLIC_PARMS as PyTPMT_PUBLIC_PARMS

from swtpm_py.tpm import Platform, Tpm, algorithms, crypto
from swtpm_py.tpm.algorithms import Algorithm, AlgAttr, Details, Role
from swtpm_py.tpm.wire import TPMS_CAPABILITY_DATA
from swtpm_py.tpm.constants import ALG, CAP, CC, ECC_CURVE, RC
from swtpm_py.tpm.crypto import HashAlg
from swtpm_py.tpm.state import BlobKind

from emulator import Emulator
from test_capability import send_all
from tpmcmd import power_on, cmd, pcr_read, rc, startup

#: What is tested after _TPM_Init: AES (CFB), every hash (with its HMAC) and KDFa.
TESTABLE = [ALG.SHA1, ALG.AES, ALG.SHA256, ALG.SHA384, ALG.SHA512, ALG.KDF1_SP800_108]
P1 = 0x40 | 1 << 8  # format-1 code about parameter 1


def u16s(*values: int) -> bytes:
    """Big-endian UINT16s."""
    return b"".join(struct.pack(">H", v) for v in values)


def self_test(full: int) -> bytes:
    """TPM2_SelfTest(fullTest)."""
    return cmd(CC.SelfTest, bytes([full]))


def incremental(*algs: int) -> bytes:
    """TPM2_IncrementalSelfTest(toTest)."""
    return cmd(CC.IncrementalSelfTest, struct.pack(">I", len(algs)) + u16s(*algs))


def to_do_list(response: bytes) -> list[int]:
    """The toDoList of an IncrementalSelfTest response."""
    assert rc(response) == 0
    (count,) = struct.unpack_from(">I", response, 10)
    assert len(response) == 14 + 2 * count
    return list(struct.unpack_from(f">{count}H", response, 14))


def result_of(response: bytes) -> tuple[bytes, int]:
    """(outData, testResult) of a GetTestResult response."""
    assert rc(response) == 0
    (size,) = struct.unpack_from(">H", response, 10)
    (result,) = struct.unpack_from(">I", response, 12 + size)
    assert len(response) == 16 + size
    return response[12:12 + size], result


def parms_cmd(parms: bytes) -> bytes:
    """TPM2_TestParms of raw TPMT_PUBLIC_PARMS."""
    return cmd(CC.TestParms, parms)


# ---------------------------------------------------------------------------- the vectors


def sp800_108_counter_hmac(name: str, key: bytes, fixed: bytes, bits: int) -> bytes:
    """SP 800-108 KDF in counter mode with HMAC, counter (32 bits) before the fixed input."""
    out = b""
    i = 0
    while len(out) * 8 < bits:
        i += 1
        out += hmac.new(key, i.to_bytes(4, "big") + fixed, name).digest()
    return out[:bits // 8]


def test_vectors_are_the_published_ones() -> None:
    """The known answers agree with an independent computation (hashlib, hmac, SP 800-108 as
    Part 1 §11.4.10.2 frames it for KDFa), so a typo in a vector cannot pass for a failure."""
    for alg in (ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512):
        name = alg.name.lower()
        assert bytes.fromhex(algorithms._HASH_ABC[alg]) == hashlib.new(name, b"abc").digest()
        assert bytes.fromhex(algorithms._HMAC_JEFE[alg]) == hmac.new(
            b"Jefe", b"what do ya want for nothing?", name).digest()
    v = algorithms.KDFA_VECTOR
    fixed = v["label"] + b"\x00" + v["context_u"] + v["context_v"] + v["bits"].to_bytes(4, "big")
    assert sp800_108_counter_hmac("sha256", v["key"], fixed, v["bits"]) == v["expected"]


def test_every_testable_algorithm_passes() -> None:
    """Each registered known-answer test passes with the real implementation."""
    assert [a.alg for a in algorithms.testable()] == TESTABLE
    for alg in algorithms.testable():
        assert alg.self_test is not None and alg.self_test(), alg.name


# ---------------------------------------------------------------------------- the commands


def test_fresh_tpm_has_everything_to_do(tpm: Tpm) -> None:
    """After _TPM_Init and Startup nothing is tested: the to-do list names every testable
    algorithm; naming algorithms without a test (KEYEDHASH, HMAC, XOR) tests nothing."""
    assert to_do_list(tpm.execute(incremental())) == TESTABLE
    assert to_do_list(tpm.execute(incremental(ALG.KEYEDHASH, ALG.HMAC, ALG.XOR))) == TESTABLE
    assert to_do_list(tpm.execute(incremental(ALG.SHA256))) == []
    assert to_do_list(tpm.execute(incremental())) == []
    assert result_of(tpm.execute(cmd(CC.GetTestResult))) == (b"", RC.SUCCESS)


@pytest.mark.parametrize("full", [0, 1])
def test_self_test_completes_the_list(tpm: Tpm, full: int) -> None:
    """TPM2_SelfTest (full or not) runs the tests synchronously: SUCCESS, nothing left."""
    assert rc(tpm.execute(self_test(full))) == 0
    assert to_do_list(tpm.execute(incremental())) == []
    assert rc(tpm.execute(self_test(full))) == 0
    assert result_of(tpm.execute(cmd(CC.GetTestResult))) == (b"", RC.SUCCESS)


def test_get_test_result_runs_pending_tests(tpm: Tpm) -> None:
    """GetTestResult on an untested TPM runs the tests first: SUCCESS means they passed."""
    assert result_of(tpm.execute(cmd(CC.GetTestResult))) == (b"", RC.SUCCESS)
    assert to_do_list(tpm.execute(incremental())) == []


def test_tests_are_due_again_after_tpm_init(platform: Platform) -> None:
    """Test results survive Shutdown/Startup but not _TPM_Init (a new power-on)."""
    tpm = power_on(platform)
    tpm.execute(startup())
    assert rc(tpm.execute(self_test(1))) == 0
    assert rc(tpm.execute(cmd(CC.Shutdown, b"\x00\x00"))) == 0
    tpm = power_on(platform)
    tpm.execute(startup())
    assert to_do_list(tpm.execute(incremental())) == TESTABLE


@pytest.mark.parametrize("alg", [ALG.TDES, ALG.NULL, ALG.SM3_256, ALG.CAMELLIA, 0x0002, 0xFFFF])
def test_incremental_self_test_of_an_unimplemented_algorithm(tpm: Tpm, alg: int) -> None:
    """An algorithm the TPM does not implement is TPM_RC_VALUE on parameter 1 (as swtpm)."""
    assert rc(tpm.execute(incremental(ALG.SHA1, alg))) == RC.VALUE | P1
    assert to_do_list(tpm.execute(incremental())) == TESTABLE  # nothing ran


@pytest.mark.parametrize("body,code", [
    (struct.pack(">I", 64) + u16s(ALG.SHA1) * 64, 0),
    (struct.pack(">I", 65) + u16s(ALG.SHA1) * 65, RC.SIZE | P1),  # MAX_ALG_LIST_SIZE
    (struct.pack(">I", 200), RC.SIZE | P1),
    (struct.pack(">I", 2) + u16s(ALG.SHA1), RC.INSUFFICIENT | P1),
    (b"\x00\x00", RC.INSUFFICIENT | P1),
    (struct.pack(">I", 0) + b"\x00", RC.SIZE),
])
def test_incremental_self_test_list_errors(tpm: Tpm, body: bytes, code: int) -> None:
    """TPML_ALG unmarshalling (measured on swtpm 0.7.1)."""
    assert rc(tpm.execute(cmd(CC.IncrementalSelfTest, body))) == code


@pytest.mark.parametrize("body,code", [
    (b"\x02", RC.VALUE | P1), (b"\xff", RC.VALUE | P1), (b"", RC.INSUFFICIENT | P1),
    (b"\x01\x00", RC.SIZE),
])
def test_self_test_parameter_errors(tpm: Tpm, body: bytes, code: int) -> None:
    """fullTest is a TPMI_YES_NO (measured on swtpm 0.7.1)."""
    assert rc(tpm.execute(cmd(CC.SelfTest, body))) == code


def test_get_test_result_takes_no_parameters(tpm: Tpm) -> None:
    """Bytes after the header are TPM_RC_SIZE."""
    assert rc(tpm.execute(cmd(CC.GetTestResult, b"\x00"))) == RC.SIZE


def test_commands_need_startup(platform: Platform) -> None:
    """Before Startup the testing commands are TPM_RC_INITIALIZE."""
    tpm = power_on(platform)
    for command in (self_test(1), incremental(), cmd(CC.GetTestResult),
                    parms_cmd(u16s(ALG.KEYEDHASH, ALG.NULL))):
        assert rc(tpm.execute(command)) == RC.INITIALIZE


# ---------------------------------------------------------------------------- failure mode


def broken_hash(alg: int) -> HashAlg:
    """A hash that computes the wrong function (SHA3 of the same size)."""
    size = crypto.HASHES[alg].size
    name = {20: "sha3_224", 32: "sha3_256", 48: "sha3_384", 64: "sha3_512"}[size]
    return HashAlg(ALG(alg), name, size, crypto.HASHES[alg].block_size)


def assert_in_failure_mode(tpm: Tpm, what: str) -> None:
    """GetTestResult reports the failure and why; GetCapability still answers; other
    commands are TPM_RC_FAILURE."""
    out, result = result_of(tpm.execute(cmd(CC.GetTestResult)))
    assert result == RC.FAILURE
    assert what.encode() in out and b"self test" in out
    resp = tpm.execute(cmd(CC.GetCapability, struct.pack(">III", CAP.ALGS, 0, 100)))
    assert rc(resp) == 0 and TPMS_CAPABILITY_DATA.parse(resp[11:]).data
    for command in (pcr_read(ALG.SHA256, [0]), self_test(1), incremental(),
                    cmd(CC.GetRandom, b"\x00\x08")):
        assert rc(tpm.execute(command)) == RC.FAILURE


@pytest.mark.parametrize("alg", [ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512])
@pytest.mark.parametrize("trigger", ["selftest", "incremental", "gettestresult"])
def test_a_wrong_hash_puts_the_tpm_in_failure_mode(
        platform: Platform, monkeypatch: pytest.MonkeyPatch, alg: int, trigger: str) -> None:
    """A hash implementation that gives a wrong known answer is caught by whichever command
    runs the tests; the TPM then stays in failure mode until the next _TPM_Init."""
    tpm = power_on(platform)
    tpm.execute(startup())
    monkeypatch.setitem(crypto.HASHES, alg, broken_hash(alg))
    if trigger == "selftest":
        assert rc(tpm.execute(self_test(0))) == RC.FAILURE
    elif trigger == "incremental":
        assert rc(tpm.execute(incremental(alg))) == RC.FAILURE
    else:
        assert result_of(tpm.execute(cmd(CC.GetTestResult)))[1] == RC.FAILURE
    assert_in_failure_mode(tpm, ALG(alg).name)
    monkeypatch.undo()
    tpm = power_on(platform)  # a repaired implementation starts clean
    tpm.execute(startup())
    assert rc(tpm.execute(self_test(1))) == 0


def test_a_wrong_kdfa_puts_the_tpm_in_failure_mode(tpm: Tpm,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """KDFa's known-answer test guards the KDF every key derivation depends on."""
    real = crypto.kdfa

    def off_by_one(hash_alg: int, key: bytes, label: bytes, u: bytes, v: bytes,
                   bits: int) -> bytes:
        return real(hash_alg, key, label, u, v, bits + 8)[1:]

    monkeypatch.setattr(crypto, "kdfa", off_by_one)
    assert rc(tpm.execute(self_test(1))) == RC.FAILURE
    assert_in_failure_mode(tpm, "KDF1_SP800_108")


def test_full_self_test_retests_a_tested_tpm(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """fullTest NO skips what passed; fullTest YES tests again (and finds a new fault)."""
    assert rc(tpm.execute(self_test(0))) == 0
    monkeypatch.setitem(crypto.HASHES, ALG.SHA384, broken_hash(ALG.SHA384))
    assert rc(tpm.execute(self_test(0))) == 0
    assert rc(tpm.execute(self_test(1))) == RC.FAILURE
    assert_in_failure_mode(tpm, "SHA384")


def test_failure_mode_from_unreadable_state(platform: Platform) -> None:
    """A TPM whose permanent state cannot be read starts in failure mode: GetTestResult works
    before any Startup and says why, with testResult TPM_RC_FAILURE."""
    power_on(platform)
    platform.storage.blobs[BlobKind.PERMANENT] = b"garbage"
    tpm = power_on(platform)
    out, result = result_of(tpm.execute(cmd(CC.GetTestResult)))
    assert result == RC.FAILURE and b"permanent state" in out
    assert rc(tpm.execute(startup())) == RC.FAILURE


# ---------------------------------------------------------------------------- TestParms

#: TPMT_PUBLIC_PARMS cases and what swtpm 0.7.1 answers (measured), the codes Part 2 gives
#: each TPMI type: TYPE, VALUE (keyed-hash and RSA scheme, key sizes), HASH, KDF, SYMMETRIC,
#: MODE, SCHEME (ECC scheme), CURVE; INSUFFICIENT when short, SIZE when long.
SWTPM_TEST_PARMS = {
    "keyedhash null": (u16s(0x8, 0x10), 0),
    "keyedhash hmac sha256": (u16s(0x8, 0x5, 0xB), 0),
    "keyedhash hmac sha1": (u16s(0x8, 0x5, 0x4), 0),
    "keyedhash hmac sha512": (u16s(0x8, 0x5, 0xD), 0),
    "keyedhash hmac null": (u16s(0x8, 0x5, 0x10), RC.HASH | P1),
    "keyedhash hmac sm3": (u16s(0x8, 0x5, 0x12), RC.HASH | P1),
    "keyedhash hmac 0x99": (u16s(0x8, 0x5, 0x99), RC.HASH | P1),
    "keyedhash xor sha256 kdfa": (u16s(0x8, 0xA, 0xB, 0x22), 0),
    "keyedhash xor sha384 null": (u16s(0x8, 0xA, 0xC, 0x10), 0),
    "keyedhash xor null kdfa": (u16s(0x8, 0xA, 0x10, 0x22), RC.HASH | P1),
    "keyedhash xor sha256 hmac": (u16s(0x8, 0xA, 0xB, 0x5), RC.KDF | P1),
    "keyedhash xor sha256 mgf1": (u16s(0x8, 0xA, 0xB, 0x7), 0),
    "keyedhash xor sha512 kdf2": (u16s(0x8, 0xA, 0xD, 0x21), 0),
    "keyedhash scheme rsassa": (u16s(0x8, 0x14, 0xB), RC.VALUE | P1),
    "keyedhash scheme aes": (u16s(0x8, 0x6, 0xB), RC.VALUE | P1),
    "keyedhash scheme 0xffff": (u16s(0x8, 0xFFFF), RC.VALUE | P1),
    "keyedhash short": (u16s(0x8), RC.INSUFFICIENT | P1),
    "keyedhash hmac short": (u16s(0x8, 0x5), RC.INSUFFICIENT | P1),
    "keyedhash long": (u16s(0x8, 0x10) + b"\x00", RC.SIZE),
    "type 0x0002": (u16s(0x2), RC.TYPE | P1),
    "type null": (u16s(0x10), RC.TYPE | P1),
    "type sha256": (u16s(0xB), RC.TYPE | P1),
    "type hmac": (u16s(0x5, 0xB), RC.TYPE | P1),
    "type xor": (u16s(0xA), RC.TYPE | P1),
    "empty": (b"", RC.INSUFFICIENT | P1),
    "symcipher aes128 cfb": (u16s(0x25, 0x6, 128, 0x43), 0),
    "symcipher aes256 cfb": (u16s(0x25, 0x6, 256, 0x43), 0),
    "symcipher aes 100 bits": (u16s(0x25, 0x6, 100, 0x43), RC.VALUE | P1),
    "symcipher aes128 ecb": (u16s(0x25, 0x6, 128, 0x44), 0),
    "symcipher aes128 null mode": (u16s(0x25, 0x6, 128, 0x10), 0),
    "symcipher aes128 mode sha1": (u16s(0x25, 0x6, 128, 0x4), RC.MODE | P1),
    "symcipher null": (u16s(0x25, 0x10), RC.SYMMETRIC | P1),
    "symcipher xor": (u16s(0x25, 0xA, 0xB), RC.SYMMETRIC | P1),
    "symcipher sm4": (u16s(0x25, 0x13, 128, 0x43), RC.SYMMETRIC | P1),
    "rsa 2048": (u16s(0x1, 0x10, 0x10, 2048) + b"\0\0\0\0", 0),
    "rsa 2048 aes128cfb": (u16s(0x1, 0x6, 128, 0x43, 0x10, 2048) + b"\0\0\0\0", 0),
    "rsa 1000 bits": (u16s(0x1, 0x10, 0x10, 1000) + b"\0\0\0\0", RC.VALUE | P1),
    "rsa 4096 bits": (u16s(0x1, 0x10, 0x10, 4096) + b"\0\0\0\0", RC.VALUE | P1),
    "rsa rsassa sha256": (u16s(0x1, 0x10, 0x14, 0xB, 2048) + b"\0\0\0\0", 0),
    "rsa rsaes": (u16s(0x1, 0x10, 0x15, 2048) + b"\0\0\0\0", 0),
    "rsa oaep sha1": (u16s(0x1, 0x10, 0x17, 0x4, 2048) + b"\0\0\0\0", 0),
    "rsa scheme ecdsa": (u16s(0x1, 0x10, 0x18, 0xB, 2048) + b"\0\0\0\0", RC.VALUE | P1),
    "rsa exponent 65537": (u16s(0x1, 0x10, 0x10, 2048) + b"\0\1\0\1", 0),
    "ecc p256": (u16s(0x23, 0x10, 0x10, 0x3, 0x10), 0),
    "ecc p256 ecdsa sha256": (u16s(0x23, 0x10, 0x18, 0xB, 0x3, 0x10), 0),
    "ecc p256 ecdaa": (u16s(0x23, 0x10, 0x1A, 0xB, 7, 0x3, 0x10), 0),
    "ecc curve 0x99": (u16s(0x23, 0x10, 0x10, 0x99, 0x10), RC.CURVE | P1),
    "ecc p256 kdf1_sp800_108": (u16s(0x23, 0x10, 0x10, 0x3, 0x22, 0xB), 0),
    "ecc kdf hmac": (u16s(0x23, 0x10, 0x10, 0x3, 0x5, 0xB), RC.KDF | P1),
    "ecc scheme rsassa": (u16s(0x23, 0x10, 0x14, 0xB, 0x3, 0x10), RC.SCHEME | P1),
}
#: What swtpm_py answers differently, because it does not implement the algorithm: RSA, ECC
#: and block ciphers are TPM_RC_TYPE (no such object type), and MGF1/KDF2 TPM_RC_KDF.
NOT_IMPLEMENTED = {
    "keyedhash xor sha256 mgf1": RC.KDF | P1,
    "keyedhash xor sha512 kdf2": RC.KDF | P1,
}


def swtpm_py_expected(name: str) -> int:
    """What swtpm_py answers for a case of :data:`SWTPM_TEST_PARMS`."""
    return NOT_IMPLEMENTED.get(name, SWTPM_TEST_PARMS[name][1])


@pytest.mark.parametrize("name", list(SWTPM_TEST_PARMS))
def test_test_parms(tpm: Tpm, name: str) -> None:
    """TestParms accepts exactly the parameters whose algorithms are implemented, and
    answers swtpm's code wherever the algorithms are implemented in both."""
    parms, _ = SWTPM_TEST_PARMS[name]
    assert rc(tpm.execute(parms_cmd(parms))) == swtpm_py_expected(name)


def register_swtpm_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register, for one test, what libtpms implements beyond swtpm_py (the algorithms the
    TestParms cases use): one line per algorithm, as a later issue will."""
    monkeypatch.setattr(algorithms, "ALGORITHMS", dict(algorithms.ALGORITHMS))
    monkeypatch.setattr(algorithms, "ECC_CURVES", dict(algorithms.ECC_CURVES))
    A, R, D = Algorithm, Role, Details

    def reg(algorithm: Algorithm) -> None:
        if algorithm.alg not in algorithms.ALGORITHMS:  # swtpm_py implements it already
            algorithms.register(algorithm)

    sym, hsh, meth = AlgAttr.SYMMETRIC, AlgAttr.HASH, AlgAttr.METHOD
    asym, obj = AlgAttr.ASYMMETRIC, AlgAttr.OBJECT
    sign, enc = AlgAttr.SIGNING, AlgAttr.ENCRYPTING
    reg(A(ALG.RSA, asym | obj, frozenset({R.PUBLIC}), key_bits=(1024, 2048, 3072)))
    reg(A(ALG.AES, sym, frozenset({R.SYM_OBJECT, R.SYM}), key_bits=(128, 192, 256)))
    reg(A(ALG.MGF1, hsh | meth, frozenset({R.KDF}), D.HASH))
    reg(A(ALG.RSASSA, asym | sign, frozenset({R.RSA_SCHEME, R.SIG_SCHEME}), D.HASH))
    reg(A(ALG.RSAES, asym | enc, frozenset({R.RSA_SCHEME})))
    reg(A(ALG.OAEP, asym | enc, frozenset({R.RSA_SCHEME}), D.HASH))
    reg(A(ALG.ECDSA, asym | sign, frozenset({R.ECC_SCHEME, R.SIG_SCHEME}), D.HASH))
    reg(A(ALG.ECDAA, asym | sign, frozenset({R.ECC_SCHEME, R.SIG_SCHEME}), D.HASH_COUNT))
    reg(A(ALG.KDF2, hsh | meth, frozenset({R.KDF}), D.HASH))
    reg(A(ALG.ECC, asym | obj, frozenset({R.PUBLIC})))
    reg(A(ALG.SYMCIPHER, obj, frozenset({R.PUBLIC})))
    for mode in (ALG.CTR, ALG.OFB, ALG.CBC, ALG.CFB, ALG.ECB):
        reg(A(mode, sym | enc, frozenset({R.SYM_MODE})))
    if ECC_CURVE.NIST_P256 not in algorithms.ECC_CURVES:
        algorithms.register_curve(ECC_CURVE.NIST_P256, 256)


@pytest.mark.parametrize("name", list(SWTPM_TEST_PARMS))
def test_test_parms_with_more_algorithms_registered(tpm: Tpm, monkeypatch: pytest.MonkeyPatch,
                                                    name: str) -> None:
    """With RSA, ECC, AES and their schemes registered, TPMT_PUBLIC_PARMS of all four object
    types unmarshal with exactly swtpm's codes: adding an algorithm is one registration."""
    register_swtpm_algorithms(monkeypatch)
    parms, expected = SWTPM_TEST_PARMS[name]
    assert rc(tpm.execute(parms_cmd(parms))) == expected


# ============================================================================ over processes


def tool(emu: Emulator, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu``."""
    return subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60)


def tool_yaml(emu: Emulator, name: str, *args: str) -> dict:
    """Run a tool that must succeed and parse its YAML output."""
    proc = tool(emu, name, *args)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = yaml.safe_load(proc.stdout)
    assert isinstance(out, dict)
    return out


def remaining(out: dict) -> list[str]:
    """The ``remaining`` algorithms of tpm2_incrementalselftest's output."""
    rest = out.get("remaining") or []
    return rest.split() if isinstance(rest, str) else list(rest)


def test_tools_self_test_cycle(any_emulator: Emulator) -> None:
    """tpm2_gettestresult succeeds on a started TPM (tpm2-tools' own test expects it);
    tpm2_incrementalselftest lists what is untested — swtpm_py AES, its hashes and KDFa — and
    testing those drains the list; tpm2_selftest (full or not) leaves nothing to do."""
    first = tool_yaml(any_emulator, "tpm2_incrementalselftest")
    todo = remaining(first)
    if any_emulator.kind == "swtpm_py":
        assert todo == ["sha1", "aes", "sha256", "sha384", "sha512", "kdf1_sp800_108"]
    assert {"sha1", "aes", "sha256", "sha384", "sha512", "kdf1_sp800_108"} <= set(todo)
    assert tool(any_emulator, "tpm2_incrementalselftest", *todo).returncode == 0
    assert tool_yaml(any_emulator, "tpm2_incrementalselftest") == {"status": "complete"}
    assert tool_yaml(any_emulator, "tpm2_gettestresult") == {"status": "success"}
    for args in ((), ("--fulltest",)):
        proc = tool(any_emulator, "tpm2_selftest", *args)
        assert proc.returncode == 0, proc.stderr
    assert tool_yaml(any_emulator, "tpm2_incrementalselftest", "sha256") == {
        "status": "complete"}


def test_tools_gettestresult_before_any_test(any_emulator: Emulator) -> None:
    """On a just-started TPM, tpm2_gettestresult reports success."""
    assert tool_yaml(any_emulator, "tpm2_gettestresult") == {"status": "success"}


def test_tools_incrementalselftest_unknown_algorithm(any_emulator: Emulator) -> None:
    """An algorithm neither TPM implements: TPM_RC_VALUE on parameter 1."""
    proc = tool(any_emulator, "tpm2_incrementalselftest", "sm3_256")
    assert proc.returncode != 0
    assert b"0x1C4" in proc.stderr


@pytest.mark.parametrize("spec", ["keyedhash", "hmac", "xor", "hmac:sha256", "hmac:sha512",
                                  "xor:sha1", "rsa1024", "rsa2048", "rsa3072", "ecc256",
                                  "ecc384", "ecc521", "aes128cfb", "aes256cfb", "aes128ecb",
                                  "aes256cbc", "rsa2048:rsassa", "ecc256:ecdsa"])
def test_tools_testparms_supported(any_emulator: Emulator, spec: str) -> None:
    """Keyed-hash, RSA, ECC and AES parameters (every mode) both TPMs implement."""
    proc = tool(any_emulator, "tpm2_testparms", spec)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("spec,message", [("hmac:sha3_256", b"hash is unsupported"),
                                          ("sm4", b"unsupported")])
def test_tools_testparms_unsupported(any_emulator: Emulator, spec: str, message: bytes) -> None:
    """SHA3 and SM4: supported by neither."""
    proc = tool(any_emulator, "tpm2_testparms", spec)
    assert proc.returncode != 0
    assert message in proc.stderr.lower()


def test_testparms_aes192_refused_like_swtpm(any_emulator: Emulator) -> None:
    """swtpm 0.7.1 has no AES-192 (TPM_RC_VALUE on the key size); neither does swtpm_py, so a
    template that works on one works on the other."""
    aes = struct.pack(">HHHH", ALG.SYMCIPHER, ALG.AES, 192, ALG.CFB)
    assert rc(any_emulator.command(parms_cmd(aes))) == RC.VALUE | P1
    aes = struct.pack(">HHHH", ALG.SYMCIPHER, ALG.AES, 256, ALG.CFB)
    assert rc(any_emulator.command(parms_cmd(aes))) == RC.SUCCESS


@pytest.fixture
def esapi(any_emulator: Emulator) -> Iterator[ESAPI]:
    """ESAPI over the swtpm TCTI to each emulator in turn."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def test_pytss_self_tests(esapi: ESAPI) -> None:
    """self_test, incremental_self_test and get_test_result through ESAPI."""
    todo = [int(a) for a in esapi.incremental_self_test(PyTPML_ALG([TPM2_ALG.SHA1]))]
    assert TPM2_ALG.SHA1 not in todo
    esapi.self_test(False)
    assert list(esapi.incremental_self_test(PyTPML_ALG([]))) == []
    out, result = esapi.get_test_result()
    assert result == 0
    esapi.self_test(True)
    with pytest.raises(TSS2_Exception) as info:
        esapi.incremental_self_test(PyTPML_ALG([TPM2_ALG.SM3_256]))
    assert info.value.rc == RC.VALUE | P1


def _tss_marshals(parms: bytes) -> bool:
    """Whether tpm2-tss can represent these parameters (it refuses unknown selectors)."""
    try:
        structure, used = PyTPMT_PUBLIC_PARMS.unmarshal(parms)
    except TSS2_Exception:
        return False
    return used == len(parms) and structure.marshal() == parms


#: The TestParms cases a tpm2-tss client can send.
PYTSS_CASES = [n for n, (parms, _) in SWTPM_TEST_PARMS.items() if _tss_marshals(parms)]


@pytest.mark.parametrize("name", PYTSS_CASES)
def test_pytss_test_parms(any_emulator: Emulator, esapi: ESAPI, name: str) -> None:
    """test_parms with parameters tpm2-tss can marshal: each TPM's own answer."""
    parms, swtpm_code = SWTPM_TEST_PARMS[name]
    structure, _ = PyTPMT_PUBLIC_PARMS.unmarshal(parms)
    expected = swtpm_code if any_emulator.kind == "swtpm" else swtpm_py_expected(name)
    if expected == 0:
        esapi.test_parms(structure)
    else:
        with pytest.raises(TSS2_Exception) as info:
            esapi.test_parms(structure)
        assert info.value.rc == expected


def test_reference_answers_the_measured_codes(reference: Emulator) -> None:
    """The table of swtpm's TestParms answers is what the installed swtpm answers."""
    names = list(SWTPM_TEST_PARMS)
    responses = send_all(reference, [parms_cmd(SWTPM_TEST_PARMS[n][0]) for n in names])
    for name, resp in zip(names, responses):
        assert rc(resp) == SWTPM_TEST_PARMS[name][1], name


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parms=st.one_of(
    st.binary(max_size=24),
    st.builds(lambda t, rest: u16s(t) + rest,
              st.sampled_from([ALG.KEYEDHASH, ALG.RSA, ALG.ECC, ALG.SYMCIPHER]),
              st.binary(max_size=20)),
    st.builds(lambda s, h, k: u16s(ALG.KEYEDHASH, s, h, k),
              st.sampled_from([ALG.HMAC, ALG.XOR, ALG.NULL, ALG.SHA256]),
              st.sampled_from([ALG.SHA1, ALG.SHA512, ALG.NULL, 0x99]),
              st.sampled_from([ALG.KDF1_SP800_108, ALG.NULL, ALG.MGF1, 0x99]))))
def test_any_test_parms_gets_a_spec_code(tpm: Tpm, parms: bytes) -> None:
    """Random and near-valid TPMT_PUBLIC_PARMS: success or a format-1 code on parameter 1
    (or TPM_RC_SIZE for trailing bytes) — never an internal failure."""
    code = rc(tpm.execute(parms_cmd(parms)))
    format1_on_parameter_1 = bool(code & 0x80) and code & 0xF40 == P1
    assert code in (0, RC.SIZE) or format1_on_parameter_1, hex(code)


def test_process_in_failure_mode(emulator: Emulator) -> None:
    """swtpm_py started on a damaged permanent state is in failure mode: GetTestResult says
    TPM_RC_FAILURE and why, GetCapability still lists algorithms and fixed properties, and
    refuses the variable ones; tpm2_gettestresult does not report success."""
    emulator.stop()
    damaged = sorted(emulator.state_dir.glob("*permanent*"))
    assert damaged, list(emulator.state_dir.iterdir())
    for path in damaged:
        data = path.read_bytes()
        path.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    emulator.start()
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emulator.port}"))
    try:
        out, result = ctx.get_test_result()
        assert result == RC.FAILURE
        assert b"permanent state" in bytes(out)
        more, data = ctx.get_capability(CAP.TPM_PROPERTIES, 0x105, 1)  # TPM_PT_MANUFACTURER
        assert data.data.tpmProperties[0].value == 0x49424D00
        with pytest.raises(TSS2_Exception) as info:
            ctx.get_capability(CAP.TPM_PROPERTIES, 0x200, 10)
        assert info.value.rc == RC.FAILURE
    finally:
        ctx.close()
    algs = tool_yaml(emulator, "tpm2_getcap", "algorithms")
    assert algs["sha256"]["value"] == ALG.SHA256
    proc = tool(emulator, "tpm2_gettestresult")
    assert proc.returncode != 0 and b"success" not in proc.stdout
