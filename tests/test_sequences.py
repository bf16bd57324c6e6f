"""Hash, HMAC and event sequences (Part 3 §17): HMAC_Start, HashSequenceStart, SequenceUpdate,
SequenceComplete, EventSequenceComplete — in process, through tpm2-tools and tpm2-pytss, and
compared with the real swtpm.

Measured on swtpm 0.7.1 (libtpms 0.9.2) and asserted below for both emulators:

* a sequence takes a transient object slot (handles from 0x80000000; a fourth sequence or
  object is TPM_RC_OBJECT_MEMORY); SequenceComplete and EventSequenceComplete flush it;
* SequenceComplete's ticket is real only if the first block (the first SequenceUpdate, or
  SequenceComplete's own buffer when there was none) is at least four octets long and does not
  start with TPM_GENERATED_VALUE; otherwise, and for hierarchy TPM_RH_NULL, the NULL ticket;
* a hash sequence given to EventSequenceComplete is TPM_RC_MODE on handle 2 (0x289), an event
  sequence given to SequenceComplete TPM_RC_MODE on handle 1 (0x189);
* a wrong password for a sequence is TPM_RC_BAD_AUTH (sequences are noDA), 0x9a2 / 0xaa2;
* EventSequenceComplete into PCR 17 from locality 0 is TPM_RC_LOCALITY (0x907);
* TPM2_ReadPublic of a sequence handle is TPM_RC_SEQUENCE (0x103);
* GetCapability(HANDLES) lists loaded sequences among the transient handles;
* TPM2_HMAC_Start: TPM_RC_TYPE / _ATTRIBUTES / _KEY on the key handle (0x18a, 0x182, 0x19c;
  a sequence handle is TPM_RC_TYPE too), TPM_RC_VALUE on parameter 2 (0x2c4) for a hash other
  than the key scheme's or none; any auth of up to 64 octets is accepted; an HMAC sequence
  completes with the NULL ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_SE
from tpm2_pytss.types import (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMA_OBJECT,
                              TPMS_SENSITIVE_CREATE, TPMT_SYM_DEF)

from emulator import Emulator
from tpmcmd import cmd, pcr_read, pcr_values, power_on, pw_session, rc, with_auth

from swtpm_py.tpm import Platform, Tpm, sequences
from swtpm_py.tpm.commands.hash import TICKET_HASH, hierarchy_proof
from swtpm_py.tpm.constants import ALG, CC, RH, ST
from swtpm_py.tpm.crypto import HASHES
from swtpm_py.tpm.entity import resolve
from swtpm_py.tpm.state import BlobKind

BANKS = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384", ALG.SHA512: "sha512"}
GENERATED = b"\xffTCG"
FIRST = 0x80000000

TPM_RC_BAD_AUTH_1 = 0x9A2
TPM_RC_MODE_HANDLE_1 = 0x189
TPM_RC_MODE_HANDLE_2 = 0x289
TPM_RC_LOCALITY = 0x907
TPM_RC_OBJECT_MEMORY = 0x902
TPM_RC_SEQUENCE = 0x103
TPM_RC_REFERENCE_H0 = 0x910

Execute = Callable[[bytes], bytes]


# ---------------------------------------------------------------------------- raw commands


def start(auth: bytes = b"", alg: int = ALG.SHA256) -> bytes:
    """TPM2_HashSequenceStart(auth, hashAlg)."""
    return cmd(CC.HashSequenceStart, struct.pack(">H", len(auth)) + auth + struct.pack(">H", alg))


def update(handle: int, data: bytes, password: bytes = b"") -> bytes:
    """TPM2_SequenceUpdate with a password session."""
    return with_auth(CC.SequenceUpdate, struct.pack(">I", handle),
                     struct.pack(">H", len(data)) + data, pw_session(password))


def complete(handle: int, data: bytes, hierarchy: int = RH.OWNER,
             password: bytes = b"") -> bytes:
    """TPM2_SequenceComplete with a password session."""
    return with_auth(CC.SequenceComplete, struct.pack(">I", handle),
                     struct.pack(">H", len(data)) + data + struct.pack(">I", hierarchy),
                     pw_session(password))


def event_complete(pcr: int, handle: int, data: bytes, password: bytes = b"") -> bytes:
    """TPM2_EventSequenceComplete: empty password for the PCR, ``password`` for the sequence."""
    return with_auth(CC.EventSequenceComplete, struct.pack(">II", pcr, handle),
                     struct.pack(">H", len(data)) + data, pw_session(), pw_session(password))


def hmac_start(handle: int, auth: bytes, alg: int, password: bytes = b"") -> bytes:
    """TPM2_HMAC_Start(handle, auth, hashAlg) with a password session for the key."""
    return with_auth(CC.HMAC_Start, struct.pack(">I", handle),
                     struct.pack(">H", len(auth)) + auth + struct.pack(">H", alg),
                     pw_session(password))


def hash_cmd(data: bytes, alg: int, hierarchy: int) -> bytes:
    """TPM2_Hash(data, hashAlg, hierarchy)."""
    return cmd(CC.Hash, struct.pack(">H", len(data)) + data + struct.pack(">HI", alg, hierarchy))


def started(response: bytes) -> int:
    """The sequence handle of a successful HashSequenceStart."""
    assert rc(response) == 0, hex(rc(response))
    return struct.unpack_from(">I", response, 10)[0]


def parse_complete(response: bytes, sessions: bool = True) -> tuple[bytes, tuple[int, int, bytes]]:
    """(result, (ticket tag, ticket hierarchy, ticket digest)) of SequenceComplete or Hash."""
    assert rc(response) == 0, hex(rc(response))
    off = 14 if sessions else 10
    size = struct.unpack_from(">H", response, off)[0]
    result = response[off + 2:off + 2 + size]
    off += 2 + size
    tag, hierarchy, dsize = struct.unpack_from(">HIH", response, off)
    return result, (tag, hierarchy, response[off + 8:off + 8 + dsize])


def parse_digest_values(response: bytes) -> dict[int, bytes]:
    """The TPML_DIGEST_VALUES of an EventSequenceComplete response, by algorithm."""
    assert rc(response) == 0, hex(rc(response))
    off = 14
    (count,) = struct.unpack_from(">I", response, off)
    off += 4
    out = {}
    for _ in range(count):
        (alg,) = struct.unpack_from(">H", response, off)
        size = HASHES[alg].size
        out[alg] = response[off + 2:off + 2 + size]
        off += 2 + size
    return out


def run_sequence(execute: Execute, alg: int, chunks: list[bytes], last: bytes,
                 hierarchy: int = RH.OWNER) -> tuple[bytes, tuple[int, int, bytes]]:
    """Start, update with each chunk, complete with ``last``."""
    handle = started(execute(start(b"", alg)))
    for chunk in chunks:
        assert rc(execute(update(handle, chunk))) == 0
    return parse_complete(execute(complete(handle, last, hierarchy)))


def extended(alg: int, old: bytes, digest: bytes) -> bytes:
    """PCR := H(PCR || digest)."""
    return hashlib.new(BANKS[alg], old + digest).digest()


def pcr_counter(execute: Execute) -> int:
    """pcrUpdateCounter."""
    return struct.unpack_from(">I", execute(pcr_read(ALG.SHA256, [0])), 10)[0]


# ---------------------------------------------------------------------------- in process


@pytest.mark.parametrize("alg", list(BANKS))
def test_hash_sequence_digest_and_ticket(tpm: Tpm, alg: int) -> None:
    """The digest is hashlib's over all the data; the ticket is the one TPM2_Hash gives for
    the same data and hierarchy: an HMAC with the hierarchy's proof over
    TPM_ST_HASHCHECK || hashAlg || digest."""
    chunks = [b"first block ", b"", bytes(range(256)) * 4, b"tail"]
    data = b"".join(chunks) + b"!"
    for hierarchy in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM):
        digest, ticket = run_sequence(tpm.execute, alg, chunks, b"!", hierarchy)
        assert digest == hashlib.new(BANKS[alg], data).digest()
        mac = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, hierarchy),
                                       struct.pack(">HH", ST.HASHCHECK, alg), digest)
        assert ticket == (ST.HASHCHECK, hierarchy, mac)
        short = b"first block !"
        assert parse_complete(tpm.execute(hash_cmd(short, alg, hierarchy)), False) == \
            run_sequence(tpm.execute, alg, [], short, hierarchy)


# Measured on swtpm 0.7.1: which first blocks earn a real ticket (hierarchy OWNER) and which
# give the NULL ticket.
TICKET_CASES = [
    ([], b"", False), ([], b"abc", False), ([], b"abcd", True), ([], GENERATED + b"x", False),
    ([b""], b"abcd", False), ([b"abc"], b"abcd", False), ([b"abcd"], b"", True),
    ([GENERATED], b"abcd", False), ([b"abcd"], GENERATED, True), ([b"ab", b"cd"], b"", False),
]


@pytest.mark.parametrize("chunks, last, real", TICKET_CASES)
def test_ticket_decided_by_first_block(tpm: Tpm, chunks: list[bytes], last: bytes,
                                       real: bool) -> None:
    """Part 3 §17.5: only a first block that cannot start with TPM_GENERATED_VALUE earns a
    ticket; otherwise the ticket is the NULL ticket (TPM_RH_NULL, empty digest)."""
    digest, (tag, hierarchy, mac) = run_sequence(tpm.execute, ALG.SHA256, chunks, last)
    assert digest == hashlib.sha256(b"".join(chunks) + last).digest()
    assert tag == ST.HASHCHECK
    if real:
        assert (hierarchy, len(mac)) == (RH.OWNER, 64)
    else:
        assert (hierarchy, mac) == (RH.NULL, b"")


def test_null_hierarchy_gives_null_ticket(tpm: Tpm) -> None:
    """Hierarchy TPM_RH_NULL: no ticket, whatever the data."""
    digest, ticket = run_sequence(tpm.execute, ALG.SHA256, [b"abcdefgh"], b"", RH.NULL)
    assert digest == hashlib.sha256(b"abcdefgh").digest()
    assert ticket == (ST.HASHCHECK, RH.NULL, b"")


@pytest.mark.parametrize("pcr, counts", [(8, True), (16, False)])
def test_event_sequence_extends_every_bank(tpm: Tpm, pcr: int, counts: bool) -> None:
    """Part 3 §17.6: one digest per implemented hash, each bank of the PCR extended with its
    digest; pcrUpdateCounter counts one per bank, except for PCR 16 (as PCR_Event)."""
    before = {alg: pcr_values(tpm.execute(pcr_read(alg, [pcr])))[0] for alg in BANKS}
    counter = pcr_counter(tpm.execute)
    handle = started(tpm.execute(start(b"secret", ALG.NULL)))
    chunks = [b"boot ", b"log " * 256, b"more " * 100, b""]
    for chunk in chunks:
        assert rc(tpm.execute(update(handle, chunk, b"secret"))) == 0
    digests = parse_digest_values(tpm.execute(event_complete(pcr, handle, b"end", b"secret")))
    data = b"".join(chunks) + b"end"
    assert digests == {alg: hashlib.new(name, data).digest() for alg, name in BANKS.items()}
    for alg in BANKS:
        after = pcr_values(tpm.execute(pcr_read(alg, [pcr])))[0]
        assert after == extended(alg, before[alg], digests[alg])
    assert pcr_counter(tpm.execute) == counter + (4 if counts else 0)
    # Flushed: the handle refers to nothing any more.
    assert rc(tpm.execute(update(handle, b"x", b"secret"))) == TPM_RC_REFERENCE_H0


def test_event_sequence_null_pcr_and_locality(tpm: Tpm) -> None:
    """TPM_RH_NULL only digests; PCR 17 from locality 0 is TPM_RC_LOCALITY and leaves the
    sequence loaded (it is flushed only when the command succeeds)."""
    before = pcr_values(tpm.execute(pcr_read(ALG.SHA256, [17])))[0]
    handle = started(tpm.execute(start(b"", ALG.NULL)))
    assert rc(tpm.execute(event_complete(17, handle, b"x"))) == TPM_RC_LOCALITY
    digests = parse_digest_values(tpm.execute(event_complete(RH.NULL, handle, b"x")))
    assert digests[ALG.SHA384] == hashlib.sha384(b"x").digest()
    assert pcr_values(tpm.execute(pcr_read(ALG.SHA256, [17])))[0] == before


def test_wrong_kind_and_wrong_auth(tpm: Tpm) -> None:
    """TPM_RC_MODE for the wrong kind of sequence (on the sequence's handle number), and
    TPM_RC_BAD_AUTH (not AUTH_FAIL: sequences are noDA) for a wrong password."""
    hseq = started(tpm.execute(start(b"pw")))
    eseq = started(tpm.execute(start(b"", ALG.NULL)))
    assert rc(tpm.execute(event_complete(16, hseq, b"", b"pw"))) == TPM_RC_MODE_HANDLE_2
    assert rc(tpm.execute(complete(eseq, b""))) == TPM_RC_MODE_HANDLE_1
    assert rc(tpm.execute(update(hseq, b"data", b"wrong"))) == TPM_RC_BAD_AUTH_1
    # Trailing zeros of a password do not count (Part 1 §19.6.4).
    assert rc(tpm.execute(update(hseq, b"data", b"pw\0\0"))) == 0
    ent = resolve(tpm, hseq)
    assert (ent.name, ent.auth_value, ent.no_da) == (b"", b"pw", True)
    assert rc(tpm.execute(cmd(CC.ReadPublic, struct.pack(">I", hseq)))) == TPM_RC_SEQUENCE
    digest, _ = parse_complete(tpm.execute(complete(hseq, b"", password=b"pw")))
    assert digest == hashlib.sha256(b"data").digest()


def test_sequences_take_object_slots(tpm: Tpm) -> None:
    """Three slots: a fourth sequence is TPM_RC_OBJECT_MEMORY; FlushContext frees a slot and its
    handle is reused; completing frees one too."""
    handles = [started(tpm.execute(start())) for _ in range(3)]
    assert handles == [FIRST, FIRST + 1, FIRST + 2]
    assert rc(tpm.execute(start())) == TPM_RC_OBJECT_MEMORY
    assert rc(tpm.execute(cmd(CC.FlushContext, struct.pack(">I", FIRST + 1)))) == 0
    assert started(tpm.execute(start(b"", ALG.NULL))) == FIRST + 1
    run_complete = tpm.execute(complete(FIRST, b"abcd"))
    assert rc(run_complete) == 0
    assert started(tpm.execute(start())) == FIRST


def test_sequence_survives_volatile_blob(platform: Platform, tpm: Tpm) -> None:
    """A loaded sequence travels in the volatile blob (STORE_VOLATILE / GET_STATEBLOB): a TPM
    powered on from it continues the sequence to the right digest; save -> load -> save is
    byte-stable."""
    hseq = started(tpm.execute(start(b"pw", ALG.SHA512)))
    eseq = started(tpm.execute(start(b"", ALG.NULL)))
    assert rc(tpm.execute(update(hseq, b"first half, ", b"pw"))) == 0
    assert rc(tpm.execute(update(eseq, b"event part 1", b""))) == 0
    blob = tpm.volatile_blob()
    platform.storage.store(BlobKind.VOLATILE, blob)
    again = power_on(platform)
    assert again.volatile_blob() == blob
    assert rc(again.execute(update(hseq, b"second half", b"pw"))) == 0
    digest, (_, hierarchy, _) = parse_complete(again.execute(complete(hseq, b"", password=b"pw")))
    assert digest == hashlib.sha512(b"first half, second half").digest()
    assert hierarchy == RH.OWNER
    digests = parse_digest_values(again.execute(event_complete(RH.NULL, eseq, b", part 2")))
    assert digests[ALG.SHA1] == hashlib.sha1(b"event part 1, part 2").digest()


def test_startup_drops_sequences(platform: Platform, tpm: Tpm) -> None:
    """Sequences are transient objects: a TPM2_Startup after a power cycle loses them."""
    started(tpm.execute(start()))
    assert rc(tpm.execute(cmd(CC.Shutdown, b"\x00\x00"))) == 0
    again = power_on(platform)
    assert rc(again.execute(cmd(CC.Startup, b"\x00\x00"))) == 0
    assert rc(again.execute(update(FIRST, b"x"))) == TPM_RC_REFERENCE_H0


# ---------------------------------------------------------------------------- differential


def differential_steps() -> list[tuple[str, bytes]]:
    """Valid and invalid sequence commands whose response codes swtpm and swtpm_py must share
    (handles as allocated from an empty object store)."""
    a, b, c = FIRST, FIRST + 1, FIRST + 2
    steps = [
        ("start sha256", start(b"pw")), ("start event", start(b"", ALG.NULL)),
        ("start non-hash alg", start(b"", ALG.RSA)), ("start unknown alg", start(b"", 3)),
        ("start auth too long", start(b"a" * 65)), ("start auth 64", start(b"a" * 64)),
        ("start no slot", start()),
        ("update wrong password", update(a, b"abcd", b"xx")),
        ("update", update(a, b"abcd", b"pw")),
        ("update too long", update(a, b"x" * 1025, b"pw")),
        ("update handle past the slots", update(FIRST + 5, b"abcd")),
        ("update permanent handle", update(RH.OWNER, b"abcd")),
        ("event complete of a hash sequence", event_complete(16, a, b"", b"pw")),
        ("complete of an event sequence", complete(b, b"")),
        ("complete bad hierarchy", complete(a, b"", RH.LOCKOUT, b"pw")),
        ("readpublic of a sequence", cmd(CC.ReadPublic, struct.pack(">I", a))),
        ("hmac_start keyed with a sequence", hmac_start(a, b"", ALG.SHA256, b"pw")),
        ("get handles", cmd(CC.GetCapability, struct.pack(">III", 1, FIRST, 8))),
        ("complete", complete(a, b"", RH.OWNER, b"pw")),
        ("complete again", complete(a, b"", RH.OWNER, b"pw")),
        ("event complete pcr 17", event_complete(17, b, b"zz")),
        ("event complete bad pcr", event_complete(30, b, b"zz")),
        ("event complete pcr 0", event_complete(0, b, b"zz")),
        ("flush", cmd(CC.FlushContext, struct.pack(">I", c))),
        ("flush again", cmd(CC.FlushContext, struct.pack(">I", c))),
        ("start event pw", start(b"pw", ALG.NULL)),
        ("event complete wrong password", event_complete(23, a, b"", b"x")),
        ("event complete pcr 23", event_complete(23, a, b"", b"pw")),
    ]
    for i, (chunks, last, _) in enumerate(TICKET_CASES):
        steps.append((f"ticket case {i}: start", start()))
        steps += [(f"ticket case {i}: update", update(a, chunk)) for chunk in chunks]
        steps.append((f"ticket case {i}: complete", complete(a, last)))
    return steps


def comparable(name: str, response: bytes) -> bytes:
    """What of a response both emulators must agree on: all of it, except the ticket HMACs
    (keyed with each TPM's own proofs)."""
    if rc(response) == 0 and name.endswith("complete") and "event" not in name:
        digest, (tag, hierarchy, mac) = parse_complete(response)
        return response[:10] + digest + struct.pack(">HIH", tag, hierarchy, len(mac))
    return response


def test_differential_against_swtpm(tmp_path: Path) -> None:
    """The same sequence commands through the real swtpm and swtpm_py: identical response
    codes and identical responses apart from ticket HMACs."""
    results = {}
    for kind in ("swtpm", "swtpm_py"):
        emu = Emulator(kind, tmp_path / kind).start()
        try:
            results[kind] = [(name, hex(rc(r)), comparable(name, r).hex())
                             for name, r in ((n, emu.command(c)) for n, c in differential_steps())]
        finally:
            emu.cleanup()
    assert results["swtpm_py"] == results["swtpm"]


# ---------------------------------------------------------------------------- tpm2-tools


def tool(emu: Emulator, *argv: str, stdin: bytes | None = None) -> bytes:
    """Run a tpm2-tools binary against ``emu``; its standard output."""
    proc = subprocess.run([argv[0], "-T", emu.tcti, *argv[1:]], input=stdin,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def bank_lines(stdout: bytes) -> dict[str, bytes]:
    """tpm2_pcrevent's ``bank: hex`` lines."""
    out = {}
    for line in stdout.decode().splitlines():
        bank, _, value = line.partition(":")
        out[bank.strip()] = bytes.fromhex(value.strip())
    return out


@pytest.mark.parametrize("size", [11, 1024, 1025, 5000])
def test_pcrevent_from_stdin(any_emulator: Emulator, size: int) -> None:
    """``tpm2_pcrevent 16 < data`` (tpm2-tools streams stdin through an event sequence): the
    printed digests are hashlib's and every bank of PCR 16 is extended with them."""
    data = bytes((i * 7) % 251 for i in range(size))
    execute = any_emulator.command
    before = {alg: pcr_values(execute(pcr_read(alg, [16])))[0] for alg in BANKS}
    out = bank_lines(tool(any_emulator, "tpm2_pcrevent", "16", stdin=data))
    assert out == {name: hashlib.new(name, data).digest() for name in BANKS.values()}
    for alg, name in BANKS.items():
        assert pcr_values(execute(pcr_read(alg, [16])))[0] == extended(alg, before[alg],
                                                                      out[name])
    # Sequences were flushed: all three object slots are free for three more.
    handles = [started(execute(start())) for _ in range(3)]
    assert handles == [FIRST, FIRST + 1, FIRST + 2]


def test_pcrevent_large_file(any_emulator: Emulator, tmp_path: Path) -> None:
    """``tpm2_pcrevent 23 FILE`` with a file over 1024 octets (an event sequence)."""
    event = tmp_path / "kernel.img"
    data = hashlib.sha512(b"seed").digest() * 200   # 12800 octets
    event.write_bytes(data)
    execute = any_emulator.command
    before = {alg: pcr_values(execute(pcr_read(alg, [23])))[0] for alg in BANKS}
    out = bank_lines(tool(any_emulator, "tpm2_pcrevent", "23", str(event)))
    assert out == {name: hashlib.new(name, data).digest() for name in BANKS.values()}
    for alg, name in BANKS.items():
        assert pcr_values(execute(pcr_read(alg, [23])))[0] == extended(alg, before[alg],
                                                                      out[name])


@pytest.mark.parametrize("data, hierarchy", [
    (b"hello from stdin\n" * 100, RH.OWNER),            # 1700 octets: several updates
    (b"short", RH.OWNER),
    (GENERATED + b" looks like an attestation" * 50, RH.NULL),
])
def test_hash_from_stdin(any_emulator: Emulator, tmp_path: Path, data: bytes,
                         hierarchy: int) -> None:
    """``tpm2_hash < data`` (a hash sequence): the digest file is hashlib's; the ticket file is
    a TPMT_TK_HASHCHECK of the owner hierarchy with a 64-octet HMAC (SHA-512 context hash), or
    the NULL ticket when the data starts with TPM_GENERATED_VALUE."""
    out, ticket = tmp_path / "digest.bin", tmp_path / "ticket.bin"
    tool(any_emulator, "tpm2_hash", "-C", "o", "-g", "sha384", "-o", str(out), "-t",
         str(ticket), stdin=data)
    assert out.read_bytes() == hashlib.sha384(data).digest()
    tag, hier, size = struct.unpack_from(">HIH", ticket.read_bytes())
    assert (tag, hier) == (ST.HASHCHECK, hierarchy)
    assert size == (64 if hierarchy == RH.OWNER else 0)
    assert len(ticket.read_bytes()) == 8 + size


# ---------------------------------------------------------------------------- tpm2-pytss


@pytest.fixture
def esapi(any_emulator: Emulator) -> Iterator[ESAPI]:
    """ESAPI over the swtpm TCTI to each emulator in turn."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def hmac_session(ctx: ESAPI) -> ESYS_TR:
    """An unbound, unsalted HMAC session (SHA-256) with AES-128-CFB parameter encryption: its
    HMACs cover the sequence's Name, which tpm2-tss computes itself."""
    sym = TPMT_SYM_DEF.parse("aes128cfb")
    return ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym,
                                  TPM2_ALG.SHA256)


@pytest.mark.parametrize("use_hmac", [False, True])
def test_pytss_hash_sequence(esapi: ESAPI,
                             use_hmac: bool) -> None:
    """hash_sequence_start / sequence_update / sequence_complete: the digest is hashlib's and
    the ticket is the owner's; a wrong auth value is refused."""
    session = hmac_session(esapi) if use_hmac else ESYS_TR.PASSWORD
    seq = esapi.hash_sequence_start(b"seq-auth", TPM2_ALG.SHA256)
    esapi.tr_set_auth(seq, b"seq-auth")
    parts = [b"A" * 1024, b"B" * 1024, b"C" * 10]
    for part in parts:
        esapi.sequence_update(seq, part, session1=session)
    digest, ticket = esapi.sequence_complete(seq, b"last", ESYS_TR.OWNER, session1=session)
    assert bytes(digest) == hashlib.sha256(b"".join(parts) + b"last").digest()
    assert ticket.tag == ST.HASHCHECK and ticket.hierarchy == TPM2_RH.OWNER
    assert len(bytes(ticket.digest)) == 64
    seq = esapi.hash_sequence_start(b"seq-auth", TPM2_ALG.SHA1)
    esapi.tr_set_auth(seq, b"not it")
    with pytest.raises(TSS2_Exception) as exc:
        esapi.sequence_update(seq, b"x", session1=session)
    assert exc.value.rc & 0xFFF == TPM_RC_BAD_AUTH_1   # noDA: BAD_AUTH, never AUTH_FAIL
    esapi.tr_set_auth(seq, b"seq-auth")
    digest, ticket = esapi.sequence_complete(seq, b"ab", ESYS_TR.OWNER, session1=session)
    assert bytes(digest) == hashlib.sha1(b"ab").digest()
    assert ticket.hierarchy == TPM2_RH.NULL and bytes(ticket.digest) == b""


@pytest.mark.parametrize("use_hmac", [False, True])
def test_pytss_event_sequence(esapi: ESAPI,
                              use_hmac: bool) -> None:
    """hash_sequence_start(NULL) / sequence_update / event_sequence_complete into PCR 16: every
    bank's digest, and PCR 16 extended in every bank."""
    session = hmac_session(esapi) if use_hmac else ESYS_TR.PASSWORD
    sel = "+".join(f"{name}:16" for name in BANKS.values())
    _, _, before = esapi.pcr_read(sel)
    seq = esapi.hash_sequence_start(b"ev-auth", TPM2_ALG.NULL)
    esapi.tr_set_auth(seq, b"ev-auth")
    esapi.sequence_update(seq, b"measured " * 100, session1=session)
    digests = esapi.event_sequence_complete(ESYS_TR.PCR16, seq, b"thing",
                                            session1=ESYS_TR.PASSWORD, session2=session)
    data = b"measured " * 100 + b"thing"
    got = {int(d.hashAlg): bytes(getattr(d.digest, BANKS[int(d.hashAlg)])) for d in digests}
    assert got == {alg: hashlib.new(name, data).digest() for alg, name in BANKS.items()}
    _, _, after = esapi.pcr_read(sel)
    for (alg, old, new) in zip(BANKS, before, after):
        assert bytes(new) == extended(alg, bytes(old), got[alg])


# ---------------------------------------------------------------------------- HMAC sequences

HMAC_KEY = bytes(range(100, 132))
KEY_ATTRS = "userwithauth|sign|fixedtpm|fixedparent"


def hmac_key(ctx: ESAPI, spec: str = "hmac:sha256", attrs: str = KEY_ATTRS,
             data: bytes = HMAC_KEY) -> ESYS_TR:
    """A primary keyed-hash object of the owner hierarchy whose secret is ``data`` (no
    sensitiveDataOrigin) and whose authValue is b"key-auth"."""
    sens = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=b"key-auth", data=data))
    pub = TPM2B_PUBLIC.parse(spec, objectAttributes=TPMA_OBJECT.parse(attrs))
    handle = ctx.create_primary(sens, pub, ESYS_TR.OWNER)[0]
    ctx.tr_set_auth(handle, b"key-auth")
    return handle


@pytest.mark.parametrize("spec, requested, used", [
    ("hmac:sha256", TPM2_ALG.NULL, "sha256"),       # the key's scheme decides
    ("hmac:sha256", TPM2_ALG.SHA256, "sha256"),
    ("keyedhash", TPM2_ALG.SHA384, "sha384"),       # no scheme: the requested hash
])
def test_pytss_hmac_sequence(esapi: ESAPI, spec: str, requested: TPM2_ALG, used: str) -> None:
    """hmac_start / sequence_update / sequence_complete: the result is the HMAC (RFC 2104) with
    the key's secret, never with a ticket; the sequence has its own authValue."""
    # Part 2 §12.2.3.6 / SchemeChecks(): a keyed hash that only signs must have the HMAC
    # scheme; one that signs and decrypts has none.
    key = hmac_key(esapi, spec, KEY_ATTRS if spec.startswith("hmac") else KEY_ATTRS + "|decrypt")
    seq = esapi.hmac_start(key, b"seq-auth", requested)
    esapi.tr_set_auth(seq, b"seq-auth")
    parts = [b"x" * 1024, b"y" * 77]
    for part in parts:
        esapi.sequence_update(seq, part)
    digest, ticket = esapi.sequence_complete(seq, b"z", ESYS_TR.OWNER)
    assert bytes(digest) == hmac.new(HMAC_KEY, b"".join(parts) + b"z", used).digest()
    assert ticket.hierarchy == TPM2_RH.NULL and bytes(ticket.digest) == b""


def test_pytss_hmac_start_errors(esapi: ESAPI) -> None:
    """TPM2_HMAC_Start's checks, with the codes swtpm 0.7.1 answers: not a keyed hash
    (TPM_RC_TYPE), restricted (TPM_RC_ATTRIBUTES), not a signing key (TPM_RC_KEY), all on the
    key handle; a hash other than the key's scheme's, or none at all, TPM_RC_VALUE on
    parameter 2."""
    def code(handle: ESYS_TR, alg: TPM2_ALG) -> int:
        with pytest.raises(TSS2_Exception) as exc:
            esapi.hmac_start(handle, b"", alg)
        return exc.value.rc & 0xFFFF

    ecc_pub = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=TPMA_OBJECT.parse(
        KEY_ATTRS + "|sensitivedataorigin"))
    ecc = esapi.create_primary(None, ecc_pub, ESYS_TR.OWNER)[0]
    assert code(ecc, TPM2_ALG.SHA256) == 0x18A                       # TYPE, handle 1
    esapi.flush_context(ecc)
    restricted = hmac_key(esapi, attrs=KEY_ATTRS + "|restricted|sensitivedataorigin", data=b"")
    assert code(restricted, TPM2_ALG.SHA256) == 0x182                # ATTRIBUTES, handle 1
    esapi.flush_context(restricted)
    sealed = hmac_key(esapi, "keyedhash", "userwithauth|fixedtpm|fixedparent")
    assert code(sealed, TPM2_ALG.SHA256) == 0x19C                    # KEY, handle 1
    esapi.flush_context(sealed)
    key = hmac_key(esapi)
    assert code(key, TPM2_ALG.SHA1) == 0x2C4                         # VALUE, parameter 2
    esapi.flush_context(key)
    no_scheme = hmac_key(esapi, "keyedhash", KEY_ATTRS + "|decrypt")
    assert code(no_scheme, TPM2_ALG.NULL) == 0x2C4


def test_hmac_sequence_in_process_and_volatile_blob(platform: Platform, tpm: Tpm) -> None:
    """An HMAC sequence (as TPM2_HMAC_Start loads it) keeps its key in its slot record: it
    survives the volatile blob, completes to the RFC 2104 HMAC with the NULL ticket, and is no
    event sequence (TPM_RC_MODE on handle 2)."""
    key = b"k" * 40
    handle = sequences.start(tpm, ALG.SHA384, b"a", hmac_key=key)
    assert rc(tpm.execute(event_complete(16, handle, b"", b"a"))) == TPM_RC_MODE_HANDLE_2
    assert rc(tpm.execute(update(handle, b"abc", b"a"))) == 0
    platform.storage.store(BlobKind.VOLATILE, tpm.volatile_blob())
    again = power_on(platform)
    digest, ticket = parse_complete(again.execute(complete(handle, b"def", password=b"a")))
    assert digest == hmac.new(key, b"abcdef", "sha384").digest()
    assert ticket == (ST.HASHCHECK, RH.NULL, b"")


@pytest.mark.parametrize("kind", ["swtpm", "swtpm_py"])
def test_sequence_survives_store_volatile_and_restart(tmp_path: Path, kind: str) -> None:
    """A hash sequence and an event sequence loaded at ``swtpm_ioctl -v`` (STORE_VOLATILE),
    then kill -9 and a restart on the same state without Startup: both continue to the
    right digests, as with the real swtpm."""
    state = tmp_path / "state"
    emu = Emulator(kind, state).start()
    try:
        hseq = started(emu.command(start(b"h", ALG.SHA256)))
        eseq = started(emu.command(start(b"", ALG.NULL)))
        assert rc(emu.command(update(hseq, b"before the restart, ", b"h"))) == 0
        assert rc(emu.command(update(eseq, b"event: ", b""))) == 0
        proc = subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{emu.ctrl_port}", "-v"],
                              capture_output=True, timeout=10)
        assert proc.returncode == 0, proc.stderr
        emu.kill()
        emu = Emulator(kind, state, flags="not-need-init").start()
        assert rc(emu.command(update(hseq, b"after it", b"h"))) == 0
        response = emu.command(complete(hseq, b"", password=b"h"))
        digest, (_, hierarchy, mac) = parse_complete(response)
        assert digest == hashlib.sha256(b"before the restart, after it").digest()
        assert (hierarchy, len(mac)) == (RH.OWNER, 64)
        digests = parse_digest_values(emu.command(event_complete(RH.NULL, eseq, b"done")))
        assert digests == {alg: hashlib.new(name, b"event: done").digest()
                           for alg, name in BANKS.items()}
    finally:
        emu.cleanup()


@pytest.mark.parametrize("kind, alg, ticket, auth, key, data", [
    (sequences.Kind.HASH, ALG.SHA256, sequences.Ticket.UNDECIDED, b"", b"", b""),
    (sequences.Kind.HASH, ALG.SHA1, sequences.Ticket.SAFE, b"pw" * 32, b"", b"x" * 5000),
    (sequences.Kind.EVENT, ALG.NULL, sequences.Ticket.UNSAFE, b"\x00", b"", b"abc"),
    (sequences.Kind.HMAC, ALG.SHA512, sequences.Ticket.UNDECIDED, b"a", b"k" * 128, b"\xff"),
])
def test_record_parser_reads_the_declared_layout(kind, alg, ticket, auth, key, data) -> None:
    """The slot record's fast parser and its construct declaration agree: the same sequence
    and the same offset of the data."""
    seq = sequences.Sequence(kind, alg, ticket, auth, key)
    record = seq.header() + data
    declared = sequences._HEADER.parse(record)
    assert sequences._parse(record) == (seq, declared.end)
    assert (declared.kind, declared.hashAlg, declared.ticket, declared.auth, declared.key) == \
        (kind, alg, ticket, auth, key)


# ---------------------------------------------------------------------------- saved contexts
# Resource managers (tpm2-abrmd, /dev/tpmrm0) save every transient object between commands:
# a sequence's context must be saved and loaded back after any amount of data, its size
# bounded (the record keeps a hash-state checkpoint, swtpm_py.tpm.sequences), and the
# sequence must continue exactly.

MIB = 1 << 20


def context_save(handle: int) -> bytes:
    """TPM2_ContextSave(handle)."""
    return cmd(CC.ContextSave, struct.pack(">I", handle))


def context_load(context: bytes) -> bytes:
    """TPM2_ContextLoad(context): the marshalled TPMS_CONTEXT."""
    return cmd(CC.ContextLoad, context)


def cycle_context(execute: Execute, handle: int) -> tuple[int, int]:
    """ContextSave, FlushContext, ContextLoad of ``handle``: (the new handle, the size of the
    TPMS_CONTEXT)."""
    response = execute(context_save(handle))
    assert rc(response) == 0, hex(rc(response))
    context = response[10:]
    assert rc(execute(cmd(CC.FlushContext, struct.pack(">I", handle)))) == 0
    loaded = execute(context_load(context))
    assert rc(loaded) == 0, hex(rc(loaded))
    return struct.unpack_from(">I", loaded, 10)[0], len(context)


def max_object_context(execute: Execute) -> int:
    """TPM_PT_MAX_OBJECT_CONTEXT, from GetCapability(TPM_PROPERTIES)."""
    response = execute(cmd(CC.GetCapability, struct.pack(">III", 6, 0x121, 1)))
    assert rc(response) == 0
    prop, value = struct.unpack_from(">II", response, 19)
    assert prop == 0x121
    return value


def stream(execute: Execute, handle: int, data: bytes, password: bytes = b"",
           chunk: int = 1024) -> tuple[int, set[int]]:
    """SequenceUpdate ``data`` in ``chunk``-octet pieces, the context saved, flushed and
    loaded after every update: (the final handle, the context sizes seen)."""
    sizes = set()
    for off in range(0, len(data), chunk):
        assert rc(execute(update(handle, data[off:off + chunk], password))) == 0
        handle, size = cycle_context(execute, handle)
        sizes.add(size)
    return handle, sizes


def big_data(n: int) -> bytes:
    """``n`` octets that are not periodic (so no shortcut can get the digest right)."""
    return hashlib.shake_256(b"sequence data").digest(n)


def test_hash_sequence_of_1_mib_saved_after_every_update(tpm: Tpm) -> None:
    """1 MiB through a SHA-256 hash sequence in 1 KiB updates, its context saved, flushed
    and loaded after each: SequenceComplete gives hashlib's digest and the owner's real
    ticket, and every context has the same size, below TPM_PT_MAX_OBJECT_CONTEXT."""
    data = big_data(MIB)
    handle = started(tpm.execute(start(b"pw", ALG.SHA256)))
    handle, sizes = stream(tpm.execute, handle, data, b"pw")
    assert len(sizes) == 1 and max(sizes) <= max_object_context(tpm.execute)
    digest, ticket = parse_complete(tpm.execute(complete(handle, b"end", password=b"pw")))
    assert digest == hashlib.sha256(data + b"end").digest()
    mac = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, RH.OWNER),
                                   struct.pack(">HH", ST.HASHCHECK, ALG.SHA256), digest)
    assert ticket == (ST.HASHCHECK, RH.OWNER, mac)


def test_hmac_sequence_of_1_mib_saved_after_every_update(tpm: Tpm) -> None:
    """The same with an HMAC sequence (SHA-384, a 40-octet key): the RFC 2104 HMAC of all
    the data and the NULL ticket."""
    key = bytes(range(40))
    data = big_data(MIB)
    handle = sequences.start(tpm, ALG.SHA384, b"a", hmac_key=key)
    handle, sizes = stream(tpm.execute, handle, data, b"a")
    assert max(sizes) <= max_object_context(tpm.execute)
    digest, ticket = parse_complete(tpm.execute(complete(handle, b"!", password=b"a")))
    assert digest == hmac.new(key, data + b"!", "sha384").digest()
    assert ticket == (ST.HASHCHECK, RH.NULL, b"")


def test_event_sequence_of_1_mib_saved_after_every_update(tpm: Tpm) -> None:
    """The same with an event sequence: every bank's digest of all the data, each bank of
    PCR 16 extended with it."""
    data = big_data(MIB)
    before = {alg: pcr_values(tpm.execute(pcr_read(alg, [16])))[0] for alg in BANKS}
    handle = started(tpm.execute(start(b"", ALG.NULL)))
    handle, sizes = stream(tpm.execute, handle, data)
    assert max(sizes) <= max_object_context(tpm.execute)
    digests = parse_digest_values(tpm.execute(event_complete(16, handle, b"last")))
    assert digests == {alg: hashlib.new(name, data + b"last").digest()
                       for alg, name in BANKS.items()}
    for alg in BANKS:
        assert pcr_values(tpm.execute(pcr_read(alg, [16])))[0] == \
            extended(alg, before[alg], digests[alg])


@pytest.mark.parametrize("chunks", [[5000], [1, 127, 1, 1023, 200, 64], [129] * 40])
@pytest.mark.parametrize("kind", ["hash", "hmac", "event"])
def test_context_size_independent_of_data(tpm: Tpm, kind: str, chunks: list[int]) -> None:
    """Whatever was hashed (odd lengths, more than the live tail's limit), the context of a
    sequence fits TPM_PT_MAX_OBJECT_CONTEXT; contexts taken between some updates only (the
    live hashers and the exportable ones mixed) still give the right result."""
    limit = max_object_context(tpm.execute)
    key = b"k" * 64
    if kind == "hmac":
        handle = sequences.start(tpm, ALG.SHA256, b"", hmac_key=key)
    else:
        handle = started(tpm.execute(start(b"", ALG.NULL if kind == "event" else ALG.SHA1)))
    data = big_data(sum(chunks) * 4)
    fed, off = b"", 0
    for i in range(4):
        for n in chunks:
            for piece in range(0, n, 1024):
                part = data[off + piece:off + min(n, piece + 1024)]
                assert rc(tpm.execute(update(handle, part))) == 0
                fed += part
            off += n
        if i % 2 == 0:
            handle, size = cycle_context(tpm.execute, handle)
            assert size <= limit
    if kind == "event":
        got = parse_digest_values(tpm.execute(event_complete(RH.NULL, handle, b"")))
        assert got == {alg: hashlib.new(name, fed).digest() for alg, name in BANKS.items()}
    else:
        digest, _ = parse_complete(tpm.execute(complete(handle, b"")))
        expected = (hmac.new(key, fed, "sha256") if kind == "hmac" else hashlib.sha1(fed))
        assert digest == expected.digest()


def test_live_tail_is_bounded(tpm: Tpm) -> None:
    """Without any context save, the slot record (what the volatile blob carries) stays
    below the tail limit plus one update, however much was hashed; the sequence continues
    across a volatile blob taken then."""
    handle = started(tpm.execute(start(b"", ALG.SHA512)))
    data = big_data(64 * 1024)
    for off in range(0, len(data), 1000):
        assert rc(tpm.execute(update(handle, data[off:off + 1000]))) == 0
        assert len(tpm.vol.loaded_objects[handle]) < sequences.TAIL_LIMIT + 1024 + 200
    digest, _ = parse_complete(tpm.execute(complete(handle, b"")))
    assert digest == hashlib.sha512(data).digest()


def old_format_record(seq: sequences.Sequence, data: bytes) -> bytes:
    """A slot record as swtpm_py wrote it before the checkpoint format: tag 0xF1, the same
    header, then all the data (built here by hand, field by field)."""
    return (bytes([sequences.OLD_SEQUENCE_TAG, seq.kind]) + struct.pack(">HB", seq.hash_alg,
                                                                      seq.ticket)
            + struct.pack(">H", len(seq.auth_value)) + seq.auth_value
            + struct.pack(">H", len(seq.key)) + seq.key + data)


@pytest.mark.parametrize("size", [10, 40_000])
def test_old_format_record_in_volatile_blob(platform: Platform, tpm: Tpm, size: int) -> None:
    """A sequence record of the previous format in a volatile blob (an older swtpm_py's
    state) loads: the sequence continues to the right digest and its context can be saved."""
    data = big_data(size)
    old = sequences.Sequence(sequences.Kind.HASH, ALG.SHA256, sequences.Ticket.SAFE, b"pw")
    tpm.vol.loaded_objects[FIRST] = old_format_record(old, data)
    hmac_seq = sequences.Sequence(sequences.Kind.HMAC, ALG.SHA1, sequences.Ticket.UNDECIDED,
                                  b"", b"key")
    tpm.vol.loaded_objects[FIRST + 1] = old_format_record(hmac_seq, data)
    platform.storage.store(BlobKind.VOLATILE, tpm.volatile_blob())
    again = power_on(platform)
    assert resolve(again, FIRST).auth_value == b"pw"
    assert rc(again.execute(update(FIRST, b"more", b"pw"))) == 0
    handle, size_ = cycle_context(again.execute, FIRST)
    assert size_ <= max_object_context(again.execute)
    digest, (_, hierarchy, _) = parse_complete(again.execute(complete(handle, b"",
                                                                      password=b"pw")))
    assert digest == hashlib.sha256(data + b"more").digest()
    assert hierarchy == RH.OWNER
    handle, _ = cycle_context(again.execute, FIRST + 1)
    digest, _ = parse_complete(again.execute(complete(handle, b"!")))
    assert digest == hmac.new(b"key", data + b"!", "sha1").digest()


def test_old_format_context_loads(tpm: Tpm) -> None:
    """A context saved by the previous version (its record in the old format, protected as
    contexts protects any record) loads and continues."""
    from swtpm_py.tpm import contexts
    old = sequences.Sequence(sequences.Kind.EVENT, ALG.NULL, sequences.Ticket.UNDECIDED, b"")
    saved = contexts._protect(tpm, RH.NULL, 7, contexts.SAVED_SEQUENCE,
                              old_format_record(old, b"logged "))
    body = (struct.pack(">QIIH", saved["sequence"], saved["savedHandle"], saved["hierarchy"],
                        len(saved["contextBlob"])) + saved["contextBlob"])
    loaded = tpm.execute(context_load(body))
    assert rc(loaded) == 0
    handle = struct.unpack_from(">I", loaded, 10)[0]
    digests = parse_digest_values(tpm.execute(event_complete(RH.NULL, handle, b"event")))
    assert digests == {alg: hashlib.new(name, b"logged event").digest()
                       for alg, name in BANKS.items()}


def test_record_format_tags() -> None:
    """Both record formats are sequences for the object store (SLOT_KINDS) and neither tag
    is an object record's version."""
    from swtpm_py.tpm import objects
    assert {sequences.SEQUENCE_TAG, sequences.OLD_SEQUENCE_TAG} <= set(objects.SLOT_KINDS)
    seq = sequences.Sequence(sequences.Kind.HMAC, ALG.SHA256, sequences.Ticket.UNDECIDED,
                             b"a", b"k")
    record = seq.header() + seq.initial() + b"tail"
    parsed = sequences.SEQUENCE_RECORD.parse(record)
    assert parsed.compressed == 0 and parsed.state.endswith(b"tail")
    assert sequences.is_sequence_record(record)
    assert sequences.is_sequence_record(old_format_record(seq, b""))


@pytest.mark.parametrize("kind", ["hash", "hmac", "event"])
def test_pytss_context_save_load_every_update(esapi: ESAPI, kind: str) -> None:
    """Over the socket with tpm2-pytss, on both emulators: 64 KiB through a sequence in 1 KiB
    sequence_update calls, context_save / flush_context / context_load after each (what a
    resource manager does): the result is hashlib's / hmac's."""
    data = big_data(64 * 1024)
    if kind == "hmac":
        key = hmac_key(esapi)
        seq = esapi.hmac_start(key, b"seq-auth", TPM2_ALG.NULL)
    else:
        seq = esapi.hash_sequence_start(b"seq-auth",
                                        TPM2_ALG.NULL if kind == "event" else TPM2_ALG.SHA256)
    for off in range(0, len(data), 1024):
        esapi.tr_set_auth(seq, b"seq-auth")
        esapi.sequence_update(seq, data[off:off + 1024])
        context = esapi.context_save(seq)
        assert len(context.marshal()) <= 4096
        esapi.flush_context(seq)
        seq = esapi.context_load(context)
    esapi.tr_set_auth(seq, b"seq-auth")
    if kind == "event":
        digests = esapi.event_sequence_complete(ESYS_TR.PCR16, seq, b"end")
        got = {int(d.hashAlg): bytes(getattr(d.digest, BANKS[int(d.hashAlg)]))
               for d in digests}
        assert got == {alg: hashlib.new(name, data + b"end").digest()
                       for alg, name in BANKS.items()}
        return
    digest, ticket = esapi.sequence_complete(seq, b"end", ESYS_TR.OWNER)
    if kind == "hmac":
        assert bytes(digest) == hmac.new(HMAC_KEY, data + b"end", "sha256").digest()
        assert ticket.hierarchy == TPM2_RH.NULL
    else:
        assert bytes(digest) == hashlib.sha256(data + b"end").digest()
        assert ticket.hierarchy == TPM2_RH.OWNER and len(bytes(ticket.digest)) == 64
