"""tpm2-pytss end to end: ESAPI over the swtpm TCTI (``TCTILdr("swtpm", "host=...,port=P")``).

The same commands as tests/test_tools.py, through the Python binding a user would script with;
values are checked against hashlib and against each other. Error cases start both emulators in
the same test and require the same TPM_RC from each (the exact values measured on swtpm 0.7.1 /
libtpms 0.9.2 are asserted as well, so a common regression cannot hide).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPM2_ST, TPM2_SU
from tpm2_pytss.types import TPML_ALG, TPML_DIGEST_VALUES, TPML_PCR_SELECTION, TPMT_HA, TPMU_HA

from emulator import Emulator

HASHES = {TPM2_ALG.SHA1: ("sha1", hashlib.sha1), TPM2_ALG.SHA256: ("sha256", hashlib.sha256),
          TPM2_ALG.SHA384: ("sha384", hashlib.sha384),
          TPM2_ALG.SHA512: ("sha512", hashlib.sha512)}
PCR_HANDLES = {n: getattr(ESYS_TR, f"PCR{n}") for n in range(32)}
TPM_RC_LOCALITY = 0x907
TPM_RC_INITIALIZE = 0x100
#: TPM_RC_VALUE for handle 1 (format 1: 0x084 + (1 << 8)), what libtpms answers for a PCR
#: handle above the last PCR (TPMI_DH_PCR unmarshalling, Part 2 §9.5).
TPM_RC_VALUE_HANDLE_1 = 0x184
#: TPM_RC_VALUE for parameter 1 (0x084 + TPM_RC_P + (1 << 8)).
TPM_RC_VALUE_PARAM_1 = 0x1C4
#: TPM_RC_SIZE for parameter 1 (0x095 + TPM_RC_P + (1 << 8)).
TPM_RC_SIZE_PARAM_1 = 0x1D5


def connect(emu: Emulator) -> ESAPI:
    """An ESAPI context over tpm2-tss's swtpm TCTI to ``emu``."""
    return ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))


@pytest.fixture
def esapi(any_emulator: Emulator) -> Iterator[ESAPI]:
    """ESAPI to each emulator in turn (already started with Startup(CLEAR))."""
    ctx = connect(any_emulator)
    yield ctx
    ctx.close()


def selection(spec: str) -> TPML_PCR_SELECTION:
    """A PCR selection in tpm2-tools syntax, e.g. ``sha256:0,1+sha1:16``."""
    return TPML_PCR_SELECTION.parse(spec)


def read_pcrs(ctx: ESAPI, alg: TPM2_ALG, pcrs: list[int]) -> tuple[int, dict[int, bytes]]:
    """PCR_Read of up to 8 PCRs of one bank: (pcrUpdateCounter, {pcr: value})."""
    name = HASHES[alg][0]
    counter, _, digests = ctx.pcr_read(selection(f"{name}:{','.join(map(str, pcrs))}"))
    return counter, dict(zip(sorted(pcrs), (bytes(d) for d in digests), strict=True))


def digest_values(digests: dict[TPM2_ALG, bytes]) -> TPML_DIGEST_VALUES:
    """TPML_DIGEST_VALUES with one digest per bank."""
    return TPML_DIGEST_VALUES([
        TPMT_HA(hashAlg=alg, digest=TPMU_HA(**{HASHES[alg][0]: value}))
        for alg, value in digests.items()])


def extended(old: bytes, alg: TPM2_ALG, digest: bytes) -> bytes:
    """Part 1 §17.2: PCR_new = H(PCR_old || digest)."""
    return HASHES[alg][1](old + digest).digest()


def size(alg: TPM2_ALG) -> int:
    """Digest size of a bank's hash."""
    return HASHES[alg][1]().digest_size


def raw_rc(ctx_emu: Emulator, command: bytes) -> int:
    """Send raw bytes through tpm2-pytss's TCTI layer (below ESAPI) and return the TPM_RC."""
    tcti = TCTILdr("swtpm", f"host=127.0.0.1,port={ctx_emu.port}")
    try:
        tcti.transmit(command)
        response = tcti.receive()
    finally:
        tcti.close()
    return struct.unpack(">I", bytes(response)[6:10])[0]


def both(tmp_path: Path, flags: str = "not-need-init,startup-clear") -> list[Emulator]:
    """swtpm_py and the reference swtpm, started with the same argv on fresh state."""
    emus: list[Emulator] = []
    try:
        for kind in ("swtpm_py", "swtpm"):
            emus.append(Emulator(kind, tmp_path / kind, flags=flags).start())
    except BaseException:
        for emu in emus:
            emu.cleanup()
        raise
    return emus


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[Emulator]]:
    """Both emulators at once, started (Startup(CLEAR)), for comparing error codes."""
    emus = both(tmp_path)
    yield emus
    for emu in emus:
        emu.cleanup()


def error_of(emu: Emulator, call: Callable[[ESAPI], object]) -> int:
    """The TSS2 return code of ``call`` through ESAPI (it must fail)."""
    ctx = connect(emu)
    try:
        with pytest.raises(TSS2_Exception) as info:
            call(ctx)
        return info.value.rc
    finally:
        ctx.close()


def codes(emus: list[Emulator], call: Callable[[ESAPI], object]) -> dict[str, int]:
    """{kind: return code} of the same failing call on each emulator."""
    return {emu.kind: error_of(emu, call) for emu in emus}


# ---------------------------------------------------------------------------- lifecycle


def test_second_startup_is_initialize(pair: list[Emulator]) -> None:
    """Part 3 §9.3: Startup on a started TPM is TPM_RC_INITIALIZE (0x100) — seen raw through
    pytss's TCTI. ESAPI's startup() passes it as success (clients rely on that), and the TPM
    is not reset."""
    for emu in pair:
        assert raw_rc(emu, struct.pack(">HIIH", TPM2_ST.NO_SESSIONS, 12, 0x144, TPM2_SU.CLEAR)) \
            == TPM_RC_INITIALIZE, emu.kind
        assert raw_rc(emu, struct.pack(">HIIH", TPM2_ST.NO_SESSIONS, 12, 0x144, TPM2_SU.STATE)) \
            == TPM_RC_INITIALIZE, emu.kind
        ctx = connect(emu)
        try:
            ctx.startup(TPM2_SU.CLEAR)
            info = ctx.read_clock().clockInfo
            assert (info.resetCount, info.restartCount) == (1, 0), emu.kind
        finally:
            ctx.close()


def test_commands_before_startup_are_initialize(tmp_path: Path) -> None:
    """Without Startup every command but Startup is TPM_RC_INITIALIZE; ESAPI startup() then
    starts the TPM (a first TPM Reset: resetCount 1)."""
    emus = both(tmp_path, flags="not-need-init")
    try:
        assert codes(emus, lambda ctx: ctx.get_random(8)) == {
            "swtpm_py": TPM_RC_INITIALIZE, "swtpm": TPM_RC_INITIALIZE}
        assert codes(emus, lambda ctx: ctx.read_clock()) == {
            "swtpm_py": TPM_RC_INITIALIZE, "swtpm": TPM_RC_INITIALIZE}
        for emu in emus:
            ctx = connect(emu)
            try:
                ctx.startup(TPM2_SU.CLEAR)
                info = ctx.read_clock().clockInfo
                assert (info.resetCount, info.restartCount) == (1, 0), emu.kind
                assert len(ctx.get_random(16)) == 16
            finally:
                ctx.close()
    finally:
        for emu in emus:
            emu.cleanup()


def test_startup_state_without_saved_state(tmp_path: Path) -> None:
    """A new TPM has no state saved by Shutdown(STATE): Startup(STATE) is TPM_RC_VALUE on
    parameter 1 (Part 3 §9.3.1), the exact code from both."""
    emus = both(tmp_path, flags="not-need-init")
    try:
        got = codes(emus, lambda ctx: ctx.startup(TPM2_SU.STATE))
        assert got == {"swtpm_py": TPM_RC_VALUE_PARAM_1, "swtpm": TPM_RC_VALUE_PARAM_1}
        exc = TSS2_Exception(TPM_RC_VALUE_PARAM_1)
        assert (exc.error, exc.parameter) == (TPM2_RC.VALUE, 1)
    finally:
        for emu in emus:
            emu.cleanup()


def test_shutdown_keeps_serving(esapi: ESAPI) -> None:
    """Shutdown(STATE) and Shutdown(CLEAR) succeed and the TPM keeps answering until power
    goes (the state they record is tested in tests/test_restart.py)."""
    esapi.shutdown(TPM2_SU.STATE)
    assert len(esapi.get_random(8)) == 8
    esapi.shutdown(TPM2_SU.CLEAR)
    assert esapi.read_clock().clockInfo.resetCount == 1


# ---------------------------------------------------------------------------- random


@pytest.mark.parametrize("count", [1, 16, 32, 64])
def test_get_random(esapi: ESAPI, count: int) -> None:
    """GetRandom returns exactly the bytes asked for, different every time."""
    draws = [bytes(esapi.get_random(count)) for _ in range(4)]
    assert all(len(d) == count for d in draws)
    if count >= 16:
        assert len(set(draws)) == 4


def test_get_random_is_capped_at_the_largest_digest(esapi: ESAPI) -> None:
    """Part 3 §16.1: more than the largest digest (64) yields 64 bytes, no error."""
    assert len(esapi.get_random(65)) == 64
    assert len(esapi.get_random(1000)) == 64


def test_stir_random(esapi: ESAPI) -> None:
    """StirRandom accepts up to 128 bytes; the RNG still works after it."""
    esapi.stir_random(b"\x00" * 128)
    esapi.stir_random(b"extra entropy")
    assert len(esapi.get_random(32)) == 32


def test_stir_random_too_large(pair: list[Emulator]) -> None:
    """129 bytes do not fit TPM2B_SENSITIVE_DATA: TPM_RC_SIZE on parameter 1 from both."""
    got = codes(pair, lambda ctx: ctx.stir_random(b"\x00" * 129))
    assert got == {"swtpm_py": TPM_RC_SIZE_PARAM_1, "swtpm": TPM_RC_SIZE_PARAM_1}


# ---------------------------------------------------------------------------- PCRs


def test_pcr_read_initial_values_and_limit(esapi: ESAPI) -> None:
    """Zeros, all ones for PCRs 17-22; at most 8 values per read, with the selection trimmed
    to what was returned (Part 3 §22.4)."""
    for alg in HASHES:
        _, values = read_pcrs(esapi, alg, [0, 7, 16, 17, 22, 23])
        n = size(alg)
        assert values == {0: bytes(n), 7: bytes(n), 16: bytes(n), 17: b"\xff" * n,
                          22: b"\xff" * n, 23: bytes(n)}
    _, returned, digests = esapi.pcr_read(selection("sha256:0,1,2,3,4,5,6,7,8,9,10"))
    assert len(digests) == 8
    assert [list(s.pcrSelect)[:s.sizeofSelect] for s in returned] == [[0xFF, 0, 0]]


def test_pcr_extend_all_banks(esapi: ESAPI) -> None:
    """PCR_Extend with four digests updates each bank; pcrUpdateCounter advances once per
    digest extended (the reference implementation calls PCRChanged per bank), 12 here."""
    counter0, _ = read_pcrs(esapi, TPM2_ALG.SHA256, [5])
    expected = {alg: bytes(size(alg)) for alg in HASHES}
    for i in range(3):
        digests = {alg: h(f"measurement {i}".encode()).digest() for alg, (_, h) in HASHES.items()}
        esapi.pcr_extend(PCR_HANDLES[5], digest_values(digests))
        expected = {alg: extended(expected[alg], alg, digests[alg]) for alg in HASHES}
    for alg in HASHES:
        counter, values = read_pcrs(esapi, alg, [5])
        assert values[5] == expected[alg]
    assert counter == counter0 + 12


UPDATES: dict[str, Callable[[ESAPI, int], object]] = {
    "extend-sha1": lambda ctx, pcr: ctx.pcr_extend(
        PCR_HANDLES[pcr], digest_values({TPM2_ALG.SHA1: bytes(20)})),
    "extend-sha256-sha384": lambda ctx, pcr: ctx.pcr_extend(
        PCR_HANDLES[pcr], digest_values({TPM2_ALG.SHA256: bytes(32), TPM2_ALG.SHA384: bytes(48)})),
    "event": lambda ctx, pcr: ctx.pcr_event(PCR_HANDLES[pcr], b"event"),
}


@pytest.mark.parametrize("update", list(UPDATES))
@pytest.mark.parametrize("pcr", [0, 7, 15, 16, 23])
def test_pcr_update_counter(pair: list[Emulator], pcr: int, update: str) -> None:
    """How far a PCR change advances pcrUpdateCounter must match the reference: by the number
    of banks changed, except for PCR 16 and 23 (libtpms's PC Client "TCB group", which never
    counts) — measured on both emulators in one test."""
    deltas = {}
    for emu in pair:
        ctx = connect(emu)
        try:
            before, _ = read_pcrs(ctx, TPM2_ALG.SHA1, [pcr])
            UPDATES[update](ctx, pcr)
            after, _ = read_pcrs(ctx, TPM2_ALG.SHA1, [pcr])
            deltas[emu.kind] = after - before
        finally:
            ctx.close()
    banks = {"extend-sha1": 1, "extend-sha256-sha384": 2, "event": 4}[update]
    expected = 0 if pcr in (16, 23) else banks
    assert deltas == {"swtpm_py": expected, "swtpm": expected}


def test_pcr_event(esapi: ESAPI) -> None:
    """PCR_Event digests the data with every bank's hash and extends each bank with it."""
    data = b"event data " * 50
    result = esapi.pcr_event(PCR_HANDLES[9], data)
    got = {TPM2_ALG(entry.hashAlg): bytes(getattr(entry.digest, HASHES[entry.hashAlg][0]))
           for entry in result}
    assert got == {alg: h(data).digest() for alg, (_, h) in HASHES.items()}
    for alg in HASHES:
        _, values = read_pcrs(esapi, alg, [9])
        assert values[9] == extended(bytes(size(alg)), alg, got[alg])


def test_pcr_event_null_handle_only_digests(esapi: ESAPI) -> None:
    """PCR_Event on TPM_RH_NULL (ESYS_TR.NONE is not a PCR; tpm2-tss maps NULL) returns the
    digests and changes no PCR."""
    before = {alg: read_pcrs(esapi, alg, list(range(8)))[1] for alg in HASHES}
    result = esapi.pcr_event(ESYS_TR.NULL, b"no pcr")
    assert {TPM2_ALG(e.hashAlg) for e in result} == set(HASHES)
    assert {alg: read_pcrs(esapi, alg, list(range(8)))[1] for alg in HASHES} == before


@pytest.mark.parametrize("pcr", [16, 23])
def test_pcr_reset(esapi: ESAPI, pcr: int) -> None:
    """PCR_Reset of PCR 16 / 23 from locality 0 zeroes all banks."""
    esapi.pcr_extend(PCR_HANDLES[pcr], digest_values(
        {alg: b"\x5a" * size(alg) for alg in HASHES}))
    assert read_pcrs(esapi, TPM2_ALG.SHA256, [pcr])[1][pcr] != bytes(32)
    esapi.pcr_reset(PCR_HANDLES[pcr])
    for alg in HASHES:
        assert read_pcrs(esapi, alg, [pcr])[1] == {pcr: bytes(size(alg))}


def test_pcr_reset_bad_handle(pair: list[Emulator]) -> None:
    """PCR_Reset of handle 24 (no such PCR): the exact code of the reference, TPM_RC_VALUE on
    handle 1 (0x184), from both."""
    got = codes(pair, lambda ctx: ctx.pcr_reset(ESYS_TR.PCR24))
    assert got == {"swtpm_py": TPM_RC_VALUE_HANDLE_1, "swtpm": TPM_RC_VALUE_HANDLE_1}
    exc = TSS2_Exception(TPM_RC_VALUE_HANDLE_1)
    assert (exc.error, exc.handle) == (TPM2_RC.VALUE, 1)
    got = codes(pair, lambda ctx: ctx.pcr_reset(ESYS_TR.PCR31))
    assert got == {"swtpm_py": TPM_RC_VALUE_HANDLE_1, "swtpm": TPM_RC_VALUE_HANDLE_1}


@pytest.mark.parametrize("pcr", [0, 7, 17, 20])
def test_pcr_reset_wrong_locality(pair: list[Emulator], pcr: int) -> None:
    """PC Client profile: PCRs 0-15 are never resettable, 17-20 not from locality 0:
    TPM_RC_LOCALITY (0x907) from both, and the value stays."""
    got = codes(pair, lambda ctx: ctx.pcr_reset(PCR_HANDLES[pcr]))
    assert got == {"swtpm_py": TPM_RC_LOCALITY, "swtpm": TPM_RC_LOCALITY}
    assert TSS2_Exception(TPM_RC_LOCALITY).error == TPM2_RC.LOCALITY


def test_pcr_extend_wrong_locality(pair: list[Emulator]) -> None:
    """PCR 17 (DRTM) cannot be extended from locality 0: TPM_RC_LOCALITY from both, value
    unchanged."""
    got = codes(pair, lambda ctx: ctx.pcr_extend(
        PCR_HANDLES[17], digest_values({TPM2_ALG.SHA256: bytes(32)})))
    assert got == {"swtpm_py": TPM_RC_LOCALITY, "swtpm": TPM_RC_LOCALITY}
    for emu in pair:
        ctx = connect(emu)
        try:
            assert read_pcrs(ctx, TPM2_ALG.SHA256, [17])[1] == {17: b"\xff" * 32}
        finally:
            ctx.close()


# ---------------------------------------------------------------------------- hash


@pytest.mark.parametrize("alg", list(HASHES))
def test_hash(esapi: ESAPI, alg: TPM2_ALG) -> None:
    """Hash: hashlib's digest, a HASHCHECK ticket for the hierarchy, keyed per hierarchy."""
    data = b"The quick brown fox " * 30
    digest, ticket = esapi.hash(data, alg, ESYS_TR.OWNER)
    assert bytes(digest) == HASHES[alg][1](data).digest()
    assert (ticket.tag, ticket.hierarchy) == (TPM2_ST.HASHCHECK, 0x40000001)
    assert len(bytes(ticket.digest)) == 64
    _, again = esapi.hash(data, alg, ESYS_TR.OWNER)
    assert bytes(again.digest) == bytes(ticket.digest)
    _, endorsement = esapi.hash(data, alg, ESYS_TR.ENDORSEMENT)
    assert endorsement.hierarchy == 0x4000000B
    assert bytes(endorsement.digest) != bytes(ticket.digest)
    _, null = esapi.hash(data, alg, ESYS_TR.NULL)
    assert (null.hierarchy, bytes(null.digest)) == (0x40000007, b"")


def test_hash_unsupported_algorithm(pair: list[Emulator]) -> None:
    """SM3 is implemented by neither: TPM_RC_HASH on parameter 2 (0x2C3) from both."""
    got = codes(pair, lambda ctx: ctx.hash(b"abc", TPM2_ALG.SM3_256, ESYS_TR.OWNER))
    assert got == {"swtpm_py": 0x2C3, "swtpm": 0x2C3}
    exc = TSS2_Exception(0x2C3)
    assert (exc.error, exc.parameter) == (TPM2_RC.HASH, 2)


# ---------------------------------------------------------------------------- self test, clock


def test_self_tests(esapi: ESAPI) -> None:
    """SelfTest(full), then IncrementalSelfTest has nothing left and GetTestResult says
    success; the to-do list before the full test only names algorithms."""
    todo = esapi.incremental_self_test(TPML_ALG([]))
    assert all(isinstance(int(alg), int) for alg in todo)
    esapi.self_test(True)
    assert len(esapi.incremental_self_test(TPML_ALG([TPM2_ALG.SHA256, TPM2_ALG.SHA1]))) == 0
    assert len(esapi.incremental_self_test(TPML_ALG([]))) == 0
    out_data, result = esapi.get_test_result()
    assert result == TPM2_RC.SUCCESS
    assert isinstance(bytes(out_data), bytes)
    esapi.self_test(False)
    assert esapi.get_test_result()[1] == TPM2_RC.SUCCESS


def test_read_clock(esapi: ESAPI) -> None:
    """ReadClock: counters of a fresh TPM after one Startup(CLEAR); time and clock advance."""
    first = esapi.read_clock()
    info = first.clockInfo
    assert (info.resetCount, info.restartCount, info.safe) == (1, 0, 1)
    assert first.time <= info.clock
    time.sleep(0.25)
    second = esapi.read_clock()
    assert 200 <= second.time - first.time <= 5000
    assert second.clockInfo.clock - info.clock >= 200
