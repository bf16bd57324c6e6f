"""In-process tests of the first commands: Startup, Shutdown, GetRandom, StirRandom, ReadClock,
Hash, PCR_Read, PCR_Extend, PCR_Event, PCR_Reset — values recomputed independently (hashlib,
hmac), locality rules of the PC Client profile, and the dispatcher's authorization checks."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, RC, RH, TPM_GENERATED_VALUE

from test_differential import (BANKS, EXTEND_LOCALITIES, H1, P1, P3, RESET_LOCALITIES, S1, S2,
                               authed, b2, cmd, digest_values, get_random, hash_cmd, pcr_event,
                               pcr_extend, pcr_read, pcr_reset, read_clock, response_code,
                               session, shutdown, startup, stir_random, u16, u32)

HASHLIB = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384", ALG.SHA512: "sha512"}


def size(alg: int) -> int:
    """Digest size of a bank."""
    return hashlib.new(HASHLIB[alg]).digest_size


class FakeClock:
    """A settable millisecond clock."""

    def __init__(self) -> None:
        self.now = 5000

    def __call__(self) -> int:
        return self.now


class CountingEntropy:
    """Deterministic 'entropy': two TPMs built with it draw the same bytes."""

    def __init__(self) -> None:
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self.counter += 1
            out += hashlib.sha256(self.counter.to_bytes(8, "big")).digest()
        return out[:n]


def new_tpm(started: bool = True, locality: int = 0) -> Tpm:
    """A freshly manufactured TPM, started with Startup(CLEAR) unless ``started`` is False."""
    tpm = Tpm(Platform(MemoryStorage(), clock=FakeClock(), entropy=CountingEntropy()))
    tpm.power_on()
    if started:
        assert ok(tpm, startup(0), locality)
    return tpm


def power_cycle(tpm: Tpm) -> Tpm:
    """_TPM_Init: a new TPM over the same platform (storage, clock)."""
    again = Tpm(tpm.platform)
    again.power_on()
    return again


def run(tpm: Tpm, command: bytes, locality: int = 0) -> bytes:
    """Execute and check the response is well formed."""
    response = tpm.execute(command, locality)
    assert len(response) >= 10
    assert struct.unpack_from(">I", response, 2)[0] == len(response)
    return response


def rc(tpm: Tpm, command: bytes, locality: int = 0) -> int:
    """The response code of ``command``."""
    return response_code(run(tpm, command, locality))


def ok(tpm: Tpm, command: bytes, locality: int = 0) -> bytes:
    """Execute a command that must succeed; returns its response."""
    response = run(tpm, command, locality)
    assert response_code(response) == 0, hex(response_code(response))
    return response


def read_pcr(tpm: Tpm, pcr: int, alg: int = ALG.SHA256) -> bytes:
    """One PCR value."""
    counter, selection, digests = parse_pcr_read(ok(tpm, pcr_read((alg, [pcr]))))
    assert len(digests) == 1
    return digests[0]


def parse_pcr_read(response: bytes) -> tuple[int, list[tuple[int, bytes]], list[bytes]]:
    """pcrUpdateCounter, [(alg, pcrSelect)], [digest] of a PCR_Read response."""
    off = 10
    counter, count = struct.unpack_from(">II", response, off)
    off += 8
    selection = []
    for _ in range(count):
        alg, sz = struct.unpack_from(">HB", response, off)
        selection.append((alg, response[off + 3:off + 3 + sz]))
        off += 3 + sz
    (n,) = struct.unpack_from(">I", response, off)
    off += 4
    digests = []
    for _ in range(n):
        (sz,) = struct.unpack_from(">H", response, off)
        digests.append(response[off + 2:off + 2 + sz])
        off += 2 + sz
    assert off == len(response)
    return counter, selection, digests


def counter(tpm: Tpm) -> int:
    """pcrUpdateCounter."""
    return parse_pcr_read(ok(tpm, pcr_read()))[0]


def extended(alg: int, value: bytes, *digests: bytes) -> bytes:
    """PCR value after extending ``digests`` into ``value`` (Part 1 §17.2)."""
    for d in digests:
        value = hashlib.new(HASHLIB[alg], value + d).digest()
    return value


def clock_info(tpm: Tpm) -> dict:
    """The fields of ReadClock."""
    response = ok(tpm, read_clock())
    assert len(response) == 10 + 25
    t, c, reset, restart, safe = struct.unpack_from(">QQIIB", response, 10)
    return dict(time=t, clock=c, reset_count=reset, restart_count=restart, safe=safe)


# ---------------------------------------------------------------------------- Startup/Shutdown


def test_startup_rules():
    tpm = new_tpm(started=False)
    assert rc(tpm, get_random(8)) == RC.INITIALIZE
    assert rc(tpm, cmd(0x1FF)) == RC.COMMAND_CODE  # the code is checked first
    assert rc(tpm, startup(2)) == RC.VALUE + P1
    assert rc(tpm, startup(1)) == RC.VALUE + P1  # nothing to resume
    ok(tpm, startup(0))
    assert rc(tpm, startup(0)) == RC.INITIALIZE
    assert clock_info(tpm)["reset_count"] == 1


@pytest.mark.parametrize("locality", range(5))
def test_startup_locality(locality):
    tpm = new_tpm(started=False)
    if locality not in (0, 3):
        assert rc(tpm, startup(0), locality) == RC.LOCALITY
        assert rc(tpm, get_random(1)) == RC.INITIALIZE
        return
    ok(tpm, startup(0), locality)
    # PC Client: PCR 0 starts at 0...0 || startup locality, in every bank.
    for alg in BANKS:
        assert read_pcr(tpm, 0, alg) == bytes(size(alg) - 1) + bytes([locality])


def test_resume_restores_saved_pcrs_and_needs_the_startup_locality():
    tpm = new_tpm(started=False)
    ok(tpm, startup(0), locality=3)
    ok(tpm, pcr_extend(1, (ALG.SHA256, b"\x01" * 32)))
    ok(tpm, pcr_extend(16, (ALG.SHA256, b"\x02" * 32)))
    value1 = read_pcr(tpm, 1)
    ok(tpm, shutdown(1))
    tpm = power_cycle(tpm)
    assert rc(tpm, startup(1), locality=0) == RC.LOCALITY
    ok(tpm, startup(1), locality=3)
    assert read_pcr(tpm, 1) == value1
    assert read_pcr(tpm, 0) == bytes(31) + b"\x03"
    assert read_pcr(tpm, 16) == bytes(32)  # not stateSave
    info = clock_info(tpm)
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (1, 1, 1)


def test_shutdown_state_is_cancelled_by_extending_a_saved_pcr():
    tpm = new_tpm()
    ok(tpm, shutdown(1))
    ok(tpm, pcr_extend(16))  # not saved: the saved state stays valid
    ok(tpm, pcr_extend(RH.NULL))
    tpm2 = power_cycle(tpm)
    ok(tpm2, startup(1))
    ok(tpm2, shutdown(1))
    ok(tpm2, pcr_event(7, b"late"))  # saved PCR: the saved state no longer matches
    tpm3 = power_cycle(tpm2)
    assert rc(tpm3, startup(1)) == RC.VALUE + P1
    ok(tpm3, startup(0))
    info = clock_info(tpm3)
    # The cancelled shutdown counts as unorderly: a TPM Reset with Clock not safe.
    assert (info["reset_count"], info["restart_count"], info["safe"]) == (2, 0, 0)


def test_commands_after_shutdown_still_run():
    tpm = new_tpm()
    ok(tpm, shutdown(0))
    assert len(ok(tpm, get_random(16))) == 10 + 2 + 16
    ok(tpm, pcr_extend(4))
    assert rc(tpm, startup(0)) == RC.INITIALIZE


def test_pcr_update_counter():
    tpm = new_tpm()
    # Startup (TPM Reset) re-initialises 24 PCRs; 16 and 21-23 do not count (libtpms' PC
    # Client "TCB group").
    assert counter(tpm) == 20
    ok(tpm, pcr_extend(0, *((alg, bytes(size(alg))) for alg in BANKS)))
    assert counter(tpm) == 24  # one per bank extended
    ok(tpm, pcr_extend(0))
    assert counter(tpm) == 25
    ok(tpm, authed(CC.PCR_Extend, u32(0), u32(0)))  # no digests: no change
    assert counter(tpm) == 25
    ok(tpm, pcr_event(1))
    assert counter(tpm) == 29
    for pcr in (16, 23):
        ok(tpm, pcr_extend(pcr))
        ok(tpm, pcr_reset(pcr))
    ok(tpm, pcr_extend(21), locality=2)
    ok(tpm, pcr_extend(RH.NULL))
    assert counter(tpm) == 29
    ok(tpm, pcr_extend(20), locality=1)
    ok(tpm, pcr_reset(20), locality=2)
    assert counter(tpm) == 31
    ok(tpm, shutdown(1))
    tpm = power_cycle(tpm)
    ok(tpm, startup(1))  # TPM Resume: PCR 16-23 re-initialised, 17-20 count
    assert counter(tpm) == 35
    ok(tpm, shutdown(1))
    tpm = power_cycle(tpm)
    ok(tpm, startup(0))  # TPM Restart: the counter continues
    assert counter(tpm) == 55
    tpm = power_cycle(tpm)
    ok(tpm, startup(0))  # TPM Reset
    assert counter(tpm) == 20


# ---------------------------------------------------------------------------- random


@pytest.mark.parametrize("requested, returned", [(0, 0), (1, 1), (32, 32), (64, 64), (65, 64),
                                                 (4096, 64), (0xFFFF, 64)])
def test_get_random_size(requested, returned):
    response = ok(new_tpm(), get_random(requested))
    assert struct.unpack_from(">H", response, 10)[0] == returned
    assert len(response) == 12 + returned


def test_get_random_values_differ():
    tpm = new_tpm()
    values = {ok(tpm, get_random(32))[12:] for _ in range(20)}
    assert len(values) == 20


def test_stir_random_changes_the_stream():
    a, b = new_tpm(), new_tpm()
    assert ok(a, get_random(32)) == ok(b, get_random(32))  # same entropy, same state
    ok(a, stir_random(b"caller data"))
    ok(b, stir_random(b"caller data"))
    assert ok(a, get_random(32)) == ok(b, get_random(32))
    ok(a, stir_random(b"other data"))
    assert ok(a, get_random(32)) != ok(b, get_random(32))


@pytest.mark.parametrize("n, expect", [(0, 0), (128, 0), (129, RC.SIZE + P1)])
def test_stir_random_limit(n, expect):
    assert rc(new_tpm(), stir_random(b"x" * n)) == expect


# ---------------------------------------------------------------------------- ReadClock


def test_read_clock_counts_time():
    tpm = new_tpm()
    first = clock_info(tpm)
    tpm.platform.clock.now += 1234
    second = clock_info(tpm)
    assert second["time"] - first["time"] == 1234
    assert second["clock"] - first["clock"] == 1234
    assert (second["reset_count"], second["restart_count"], second["safe"]) == (1, 0, 1)


# ---------------------------------------------------------------------------- Hash


def parse_hash(response: bytes) -> tuple[bytes, int, int, bytes]:
    """outHash, ticket tag, ticket hierarchy, ticket digest."""
    (n,) = struct.unpack_from(">H", response, 10)
    digest = response[12:12 + n]
    tag, hierarchy, m = struct.unpack_from(">HIH", response, 12 + n)
    ticket = response[12 + n + 8:12 + n + 8 + m]
    assert 12 + n + 8 + m == len(response)
    return digest, tag, hierarchy, ticket


def proof(tpm: Tpm, hierarchy: int) -> bytes:
    """The hierarchy proof the ticket must be keyed with."""
    return {RH.OWNER: tpm.perm.sh_proof, RH.ENDORSEMENT: tpm.perm.eh_proof,
            RH.PLATFORM: tpm.perm.ph_proof}[hierarchy]


@pytest.mark.parametrize("alg", BANKS)
@pytest.mark.parametrize("hierarchy", [RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM])
def test_hash_ticket_is_hmac_with_hierarchy_proof(alg, hierarchy):
    tpm = new_tpm()
    data = b"the quick brown fox"
    digest, tag, h, ticket = parse_hash(ok(tpm, hash_cmd(data, alg, hierarchy)))
    assert digest == hashlib.new(HASHLIB[alg], data).digest()
    assert (tag, h) == (0x8024, hierarchy)
    # Part 4 TicketComputeHashCheck(): HMAC-SHA512(proof, TPM_ST_HASHCHECK || hashAlg || digest)
    expected = hmac.new(proof(tpm, hierarchy), u16(0x8024) + u16(alg) + digest,
                        "sha512").digest()
    assert ticket == expected


def test_hash_null_and_generated_value_tickets():
    tpm = new_tpm()
    for data, hierarchy in ((b"abc", RH.NULL), (u32(TPM_GENERATED_VALUE) + b"abc", RH.OWNER),
                            (u32(TPM_GENERATED_VALUE), RH.PLATFORM)):
        digest, tag, h, ticket = parse_hash(ok(tpm, hash_cmd(data, ALG.SHA256, hierarchy)))
        assert digest == hashlib.sha256(data).digest()
        assert (tag, h, ticket) == (0x8024, RH.NULL, b"")
    # Three octets of the magic are not the magic.
    _, _, h, ticket = parse_hash(ok(tpm, hash_cmd(u32(TPM_GENERATED_VALUE)[:3], ALG.SHA1,
                                                  RH.OWNER)))
    assert h == RH.OWNER and len(ticket) == 64


def test_hash_of_disabled_hierarchy_still_has_a_ticket():
    # Measured on swtpm 0.7.1: TPM2_Hash does not check that the hierarchy is enabled.
    tpm = new_tpm()
    tpm.vol.state_clear.sh_enable = False
    digest, _, h, ticket = parse_hash(ok(tpm, hash_cmd(b"x", ALG.SHA256, RH.OWNER)))
    assert h == RH.OWNER
    assert ticket == hmac.new(tpm.perm.sh_proof, u16(0x8024) + u16(ALG.SHA256) + digest,
                              "sha512").digest()


@pytest.mark.parametrize("command, expect", [
    (hash_cmd(b"x" * 1025), RC.SIZE + P1),
    (hash_cmd(b"x", ALG.NULL), RC.HASH + 0x240),
    (hash_cmd(b"x", ALG.SHA3_256), RC.HASH + 0x240),
    (hash_cmd(b"x", hierarchy=RH.LOCKOUT), RC.VALUE + P3),
])
def test_hash_errors(command, expect):
    assert rc(new_tpm(), command) == expect


def test_hash_max_buffer():
    data = bytes(range(256)) * 4
    digest, *_ = parse_hash(ok(new_tpm(), hash_cmd(data, ALG.SHA384)))
    assert digest == hashlib.sha384(data).digest()


# ---------------------------------------------------------------------------- PCRs


def test_pcr_extend_every_bank_recomputed():
    tpm = new_tpm()
    entries = [(alg, bytes([alg]) * size(alg)) for alg in BANKS]
    ok(tpm, pcr_extend(9, *entries))
    ok(tpm, pcr_extend(9, (ALG.SHA1, b"\x07" * 20), (ALG.SHA1, b"\x08" * 20)))
    for alg, d in entries:
        expect = extended(alg, bytes(size(alg)), d)
        if alg == ALG.SHA1:
            expect = extended(alg, expect, b"\x07" * 20, b"\x08" * 20)
        assert read_pcr(tpm, 9, alg) == expect


def test_pcr_event_returns_and_extends_every_digest():
    tpm = new_tpm()
    event = b"boot loader measured"
    response = ok(tpm, pcr_event(8, event))
    # Response: parameterSize, TPML_DIGEST_VALUES, then the password session's response.
    off = 14
    (count,) = struct.unpack_from(">I", response, off)
    off += 4
    returned = {}
    for _ in range(count):
        (alg,) = struct.unpack_from(">H", response, off)
        returned[alg] = response[off + 2:off + 2 + size(alg)]
        off += 2 + size(alg)
    assert response[off:] == b"\x00\x00\x01\x00\x00"
    assert returned == {alg: hashlib.new(HASHLIB[alg], event).digest() for alg in BANKS}
    for alg in BANKS:
        assert read_pcr(tpm, 8, alg) == extended(alg, bytes(size(alg)), returned[alg])


def test_pcr_event_null_returns_digests_changes_nothing():
    tpm = new_tpm()
    before = [read_pcr(tpm, p) for p in range(24)]
    response = ok(tpm, pcr_event(RH.NULL, b"x"))
    assert struct.unpack_from(">I", response, 14)[0] == 4
    assert [read_pcr(tpm, p) for p in range(24)] == before


def test_pcr_read_returns_at_most_eight():
    tpm = new_tpm()
    for p in range(10):
        ok(tpm, pcr_extend(p, (ALG.SHA1, bytes([p]) * 20)))
    count, selection, digests = parse_pcr_read(ok(tpm, pcr_read((ALG.SHA1, list(range(24))),
                                                                (ALG.SHA256, [0]))))
    assert selection == [(ALG.SHA1, b"\xff\x00\x00"), (ALG.SHA256, b"\x00\x00\x00")]
    assert digests == [extended(ALG.SHA1, bytes(20), bytes([p]) * 20) for p in range(8)]


def test_initial_pcr_values():
    tpm = new_tpm()
    for alg in BANKS:
        for p in range(24):
            initial = b"\xff" if 17 <= p <= 22 else b"\x00"
            assert read_pcr(tpm, p, alg) == initial * size(alg), (alg, p)


@pytest.mark.parametrize("pcr", sorted(EXTEND_LOCALITIES))
@pytest.mark.parametrize("locality", range(5))
def test_extend_locality(pcr, locality):
    tpm = new_tpm()
    before = read_pcr(tpm, pcr)
    allowed = EXTEND_LOCALITIES[pcr] >> locality & 1
    assert rc(tpm, pcr_extend(pcr, (ALG.SHA256, b"\x5a" * 32)), locality) == (
        0 if allowed else RC.LOCALITY)
    assert read_pcr(tpm, pcr) == (extended(ALG.SHA256, before, b"\x5a" * 32) if allowed
                                  else before)


@pytest.mark.parametrize("pcr", sorted(RESET_LOCALITIES))
@pytest.mark.parametrize("locality", range(5))
def test_reset_locality(pcr, locality):
    tpm = new_tpm()
    setup = min(loc for loc in range(5) if EXTEND_LOCALITIES[pcr] >> loc & 1)
    ok(tpm, pcr_extend(pcr), setup)
    before = read_pcr(tpm, pcr)
    allowed = RESET_LOCALITIES[pcr] >> locality & 1
    assert rc(tpm, pcr_reset(pcr), locality) == (0 if allowed else RC.LOCALITY)
    # A reset PCR is zero in every bank, DRTM PCRs included.
    assert read_pcr(tpm, pcr) == (bytes(32) if allowed else before)


def test_undefined_localities_act_as_zero_and_extended_ones_extend_nothing():
    tpm = new_tpm()
    ok(tpm, pcr_extend(0), locality=5)
    assert rc(tpm, pcr_extend(17), locality=31) == RC.LOCALITY
    for loc in (32, 128, 255):
        assert rc(tpm, pcr_extend(0), locality=loc) == RC.LOCALITY


# ---------------------------------------------------------------------------- dispatcher


@pytest.mark.parametrize("sessions, expect", [
    ((session(auth=b"wrong"),), RC.BAD_AUTH + S1),
    ((session(nonce=b"n"),), RC.NONCE + S1),
    ((session(attrs=0x40),), RC.ATTRIBUTES + S1),
    ((session(attrs=0x08),), RC.RESERVED_BITS + S1),
    ((session(), session()), RC.HANDLE + S2),
    ((session(0x02000000),), RC.REFERENCE_S0),
    ((session(0x02000040),), RC.VALUE + S1),
    ((session(),) * 4, RC.SIZE + 0xC00),
])
def test_password_session_errors(sessions, expect):
    tpm = new_tpm()
    before = read_pcr(tpm, 0)
    assert rc(tpm, pcr_extend(0, sessions=sessions)) == expect
    assert read_pcr(tpm, 0) == before


def test_pcr_auth_value_is_checked():
    tpm = new_tpm()
    tpm.vol.state_clear.pcr_auth[20] = b"secret"
    bad = authed(CC.PCR_Reset, u32(20), b"", session(auth=b"guess"))
    assert rc(tpm, bad, locality=2) == RC.BAD_AUTH + S1  # PCRs are DA-exempt
    good = authed(CC.PCR_Reset, u32(20), b"", session(auth=b"secret\x00\x00"))
    ok(tpm, good, locality=2)


def test_da_exemption():
    tpm = new_tpm()
    assert tpm.da_exempt(0) and tpm.da_exempt(RH.OWNER) and tpm.da_exempt(RH.PLATFORM)
    assert not tpm.da_exempt(RH.LOCKOUT)
    assert not tpm.da_exempt(0x81000001)


@pytest.mark.parametrize("command, expect", [
    (b"\x80\x01\x00", RC.INSUFFICIENT),
    (cmd(CC.GetRandom, u16(8), tag=0x8000), RC.BAD_TAG),
    (cmd(CC.GetRandom, u16(8), tag=0x8003), RC.VALUE),
    (cmd(CC.GetRandom, u16(8), size=11), RC.COMMAND_SIZE),
    (cmd(0x20000000), RC.COMMAND_CODE),
    (cmd(CC.PCR_Extend, b"\x00", 0x8002), RC.INSUFFICIENT + H1),
    (cmd(CC.PCR_Extend, u32(0) + digest_values()), RC.AUTH_MISSING),
    (authed(CC.PCR_Extend, u32(0), b"", auth_size=4), RC.SIZE),
    (authed(CC.PCR_Extend, u32(24), b""), RC.VALUE + H1),
    (authed(CC.PCR_Extend, u32(0), u32(1) + u16(0x99), session(auth=b"x")), RC.BAD_AUTH + S1),
    (authed(CC.GetRandom, b"", u16(1)), RC.HANDLE + S1),
    (cmd(CC.Startup, u32(9) + session() + u16(0), 0x8002), RC.INITIALIZE),
    (cmd(CC.StirRandom, b2(b"abc") + b"\x00"), RC.SIZE),
])
def test_dispatcher_errors(command, expect):
    assert rc(new_tpm(), command) == expect


def test_failure_mode_answers_failure_to_everything():
    tpm = new_tpm()
    tpm.failure = "test"
    for command in (get_random(8), b"\x00", cmd(CC.GetRandom, u16(8), tag=0x8003),
                    cmd(0x20000000)):
        assert rc(tpm, command) == RC.FAILURE


# ---------------------------------------------------------------------------- wire speed-ups


def test_compiled_builders_build_what_the_interpreted_ones_do():
    """wire.CompiledBuild (and wire.PairList's one-pack builder): the fast builder must
    produce the octets of the declared construct, and parsing must stay strict (a short read
    is TPM_RC_INSUFFICIENT, never a short value)."""
    import io

    from swtpm_py.tpm import wire
    from swtpm_py.tpm.errors import TpmError

    samples = {
        "TPML_PCR_SELECTION": [dict(hash=ALG.SHA256, sizeofSelect=3, pcrSelect=b"\x0f\x00\x80")],
        "TPML_DIGEST_VALUES": [dict(hashAlg=alg, digest=bytes([alg]) * size(alg))
                               for alg in BANKS],
        "TPML_DIGEST": [b"\x01" * 32, b"\x02" * 20],
        "TPMS_TIME_INFO": dict(time=1, clockInfo=dict(clock=2, resetCount=3, restartCount=4,
                                                      safe=1)),
        "TPMT_TK_HASHCHECK": dict(tag=0x8024, hierarchy=RH.OWNER, digest=b"\x33" * 64),
        "TPMS_AUTH_RESPONSE": dict(nonce=b"n" * 16, sessionAttributes=1, hmac=b"h" * 32),
        "TPML_TAGGED_TPM_PROPERTY": [dict(property=0x100 + i, value=i) for i in range(46)],
        "TPML_CC": [0x144, 0x17B],
    }
    for name, value in samples.items():
        con = getattr(wire, name)
        assert isinstance(con, (wire.CompiledBuild, wire.PairList)), name
        built = con.build(value)
        assert built == con.subcon.build(value), name
        assert con.build(con.parse(built)) == built, name
        for cut in range(len(built)):
            with pytest.raises(TpmError) as err:
                wire.parse_stream(con, io.BytesIO(built[:cut]))
            assert err.value.rc == RC.INSUFFICIENT, (name, cut)
