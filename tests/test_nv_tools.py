"""NV indices through real clients: tpm2-tools 5.4 and tpm2-pytss ESAPI over the swtpm TCTI.

Every test runs against swtpm_py and against the real swtpm (swtpm 0.7.1 / libtpms 0.9.2) with
the same client calls, and checks what a user would: the values read back (counter values,
extend digests computed here with hashlib, OR-ed bits, bytes written at offsets), the public
area and Name that ``tpm2_nvreadpublic`` prints (the Name recomputed from the printed public
area, Part 1 §16: nameAlg || H(TPMS_NV_PUBLIC)), the handle and property counts of
``tpm2_getcap``, and the TPM_RC a refused operation returns (visible in the tool's stderr as
``(0x148)``, or as ``TSS2_Exception.rc`` through ESAPI).

The error codes asserted are the ones measured on the real swtpm (Part 2 §6.6):
TPM_RC_NV_RANGE 0x146, TPM_RC_NV_LOCKED 0x148, TPM_RC_NV_AUTHORIZATION 0x149,
TPM_RC_NV_UNINITIALIZED 0x14A, TPM_RC_NV_DEFINED 0x14C, TPM_RC_HANDLE on handle 1 0x18B,
TPM_RC_AUTH_FAIL on session 1 0x98E (TPM_RC_BAD_AUTH 0x9A2 for a NO_DA index),
TPM_RC_ATTRIBUTES on handle 2 0x282 and without a number 0x082.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_NT, TPM2_SE, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC, TPMT_SYM_DEF

from emulator import Emulator

KINDS = ["swtpm_py", "swtpm"]

TPM_RC_NV_RANGE = 0x146
TPM_RC_NV_LOCKED = 0x148
TPM_RC_NV_AUTHORIZATION = 0x149
TPM_RC_NV_UNINITIALIZED = 0x14A
TPM_RC_NV_DEFINED = 0x14C
TPM_RC_HANDLE_1 = 0x18B
TPM_RC_AUTH_FAIL_SESSION_1 = 0x98E
#: A wrong auth for a NO_DA entity is TPM_RC_BAD_AUTH instead (Part 1, dictionary attack
#: protection: no lockout accounting).
TPM_RC_BAD_AUTH_SESSION_1 = 0x9A2
TPM_RC_ATTRIBUTES_HANDLE_2 = 0x282
#: TPM_RC_ATTRIBUTES without a handle number: libtpms' NV_Write on a counter, bits or extend
#: index (Part 3 §31.7 lists it without one too).
TPM_RC_ATTRIBUTES = 0x082

#: TPMA_NV bits (Part 2 §13.4) for recomputing what the tools print.
WRITTEN = 1 << 29
NT_SHIFT = 4


@pytest.fixture(params=KINDS)
def emu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Emulator]:
    """Each emulator in turn, started (Startup(CLEAR)) on fresh state."""
    e = Emulator(request.param, tmp_path / f"{request.param}-state").start()
    yield e
    e.cleanup()


class Tools:
    """tpm2-tools run against one emulator (``TPM2TOOLS_TCTI``) in a scratch directory."""

    def __init__(self, emu: Emulator, cwd: Path) -> None:
        self.emu = emu
        self.cwd = cwd
        self.env = {**os.environ, "TPM2TOOLS_TCTI": emu.tcti}

    def run(self, name: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        """Run ``tpm2_<name> ARGS``; returns the finished process (bytes output)."""
        return subprocess.run([f"tpm2_{name}", *args], input=stdin, capture_output=True,
                              timeout=60, cwd=self.cwd, env=self.env)

    def ok(self, name: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run a tool that must succeed; returns its stdout."""
        p = self.run(name, *args, stdin=stdin)
        assert p.returncode == 0, (self.emu.kind, name, args, p.stderr.decode(errors="replace"))
        return p.stdout

    def fails(self, code: int, name: str, *args: str, stdin: bytes | None = None) -> None:
        """Run a tool that must fail with TPM_RC ``code``, which it prints as ``(0xNNN)``."""
        p = self.run(name, *args, stdin=stdin)
        err = p.stderr.decode(errors="replace")
        assert p.returncode != 0, (self.emu.kind, name, args, "succeeded")
        assert f"(0x{code:x})" in err.lower(), (self.emu.kind, name, err)

    def fails_client_side(self, name: str, *args: str) -> None:
        """Run a tool that must refuse the operation itself, before any TPM command."""
        p = self.run(name, *args)
        assert p.returncode != 0 and b"Esys" not in p.stderr, (self.emu.kind, name, p.stderr)

    def file(self, name: str, data: bytes) -> str:
        """Write ``data`` to a file in the scratch directory; returns its name."""
        (self.cwd / name).write_bytes(data)
        return name

    def readpublic(self, index: int) -> dict:
        """``tpm2_nvreadpublic INDEX`` parsed: {name: bytes, attributes: int, size: int,
        hash: int}."""
        out = yaml.safe_load(self.ok("nvreadpublic", hex(index)))
        entry = out[index]
        return {"name": bytes.fromhex(entry["name"]), "attributes": entry["attributes"]["value"],
                "size": entry["size"], "hash": entry["hash algorithm"]["value"]}

    def nv_handles(self) -> list[int]:
        """``tpm2_getcap handles-nv-index``."""
        return yaml.safe_load(self.ok("getcap", "handles-nv-index")) or []

    def variable(self, prop: str) -> int:
        """One value of ``tpm2_getcap properties-variable``."""
        return yaml.safe_load(self.ok("getcap", "properties-variable"))[prop]

    def policy_cc(self, command: str, policy: str, session: str = "s.ctx") -> None:
        """A policy digest for PolicyCommandCode(``command``) written to ``policy``
        (trial session), as tpm2-tools' own tests build it."""
        self.ok("startauthsession", "-S", session)
        self.ok("policycommandcode", "-S", session, "-L", policy, command)
        self.ok("flushcontext", session)

    def policy_session(self, command: str, session: str = "s.ctx") -> str:
        """A policy session satisfying PolicyCommandCode(``command``); returns its file."""
        self.ok("startauthsession", "--policy-session", "-S", session)
        self.ok("policycommandcode", "-S", session, command)
        return session


@pytest.fixture
def tools(emu: Emulator, tmp_path: Path) -> Tools:
    """tpm2-tools against ``emu``."""
    return Tools(emu, tmp_path)


def nv_name(index: int, name_alg: int, attributes: int, policy: bytes, size: int) -> bytes:
    """Part 1 §16 / Part 2 §13.5: Name = nameAlg || H_nameAlg(TPMS_NV_PUBLIC)."""
    public = (struct.pack(">IHI", index, name_alg, attributes)
              + struct.pack(">H", len(policy)) + policy + struct.pack(">H", size))
    assert name_alg == TPM2_ALG.SHA256
    return struct.pack(">H", name_alg) + hashlib.sha256(public).digest()


def extend_value(*chunks: bytes) -> bytes:
    """Part 3 §31.9: an extend index starts as zeros and becomes H(old || data)."""
    value = bytes(32)
    for chunk in chunks:
        value = hashlib.sha256(value + chunk).digest()
    return value


# ---------------------------------------------------------------------------- tpm2-tools


def test_define_readpublic_and_undefine(tools: Tools) -> None:
    """tpm2_nvdefine with sizes, attributes and an index auth; tpm2_nvreadpublic shows the
    public area and a Name recomputed from it; WRITTEN appears after the first write and changes
    the Name; tpm2_getcap lists the indices and counts them (TPM_PT_HR_NV_INDEX);
    tpm2_nvundefine removes them; defining a defined index is TPM_RC_NV_DEFINED."""
    before = tools.variable("TPM2_PT_HR_NV_INDEX")
    sizes = {0x01500001: 1, 0x01500002: 64, 0x01500003: 2048}
    attrs = "ownerread|ownerwrite|authread|authwrite|no_da"
    for index, size in sizes.items():
        tools.ok("nvdefine", hex(index), "-C", "o", "-s", str(size), "-a", attrs, "-p", "pw")
    assert sorted(tools.nv_handles()) == sorted(sizes)
    assert tools.variable("TPM2_PT_HR_NV_INDEX") == before + 3
    expected_attrs = 0x00060006 | (1 << 25)   # OWNERWRITE|AUTHWRITE|OWNERREAD|AUTHREAD|NO_DA
    for index, size in sizes.items():
        pub = tools.readpublic(index)
        assert (pub["size"], pub["attributes"], pub["hash"]) == (size, expected_attrs,
                                                                  TPM2_ALG.SHA256)
        assert pub["name"] == nv_name(index, TPM2_ALG.SHA256, expected_attrs, b"", size)
    tools.ok("nvwrite", "0x1500002", "-P", "pw", "-i", tools.file("d", b"x" * 10))
    pub = tools.readpublic(0x01500002)
    assert pub["attributes"] == expected_attrs | WRITTEN
    assert pub["name"] == nv_name(0x01500002, TPM2_ALG.SHA256, expected_attrs | WRITTEN, b"", 64)
    tools.fails(TPM_RC_NV_DEFINED, "nvdefine", "0x1500002", "-C", "o", "-s", "8", "-a", attrs)
    for index in sizes:
        tools.ok("nvundefine", hex(index), "-C", "o")
    assert tools.nv_handles() == []
    assert tools.variable("TPM2_PT_HR_NV_INDEX") == before
    tools.fails(TPM_RC_HANDLE_1, "nvreadpublic", "0x1500002")


def test_write_read_offsets_files_and_large_data(tools: Tools) -> None:
    """tpm2_nvwrite / tpm2_nvread: from files and stdin, at offsets, and data larger than
    TPM_PT_NV_BUFFER_MAX that the tools split into several NV_Write / NV_Read commands."""
    fixed = yaml.safe_load(tools.ok("getcap", "properties-fixed"))
    buffer_max = fixed["TPM2_PT_NV_BUFFER_MAX"]["raw"]
    index_max = fixed["TPM2_PT_NV_INDEX_MAX"]["raw"]
    assert buffer_max < index_max
    size = index_max
    tools.ok("nvdefine", "0x1500010", "-C", "o", "-s", str(size), "-a",
             "ownerread|ownerwrite|authread|authwrite", "-p", "idx")
    data = os.urandom(size)
    tools.ok("nvwrite", "0x1500010", "-C", "o", "-i", tools.file("big", data))
    assert tools.ok("nvread", "0x1500010", "-C", "o") == data
    # The index auth works as well as the owner's, and offsets address bytes.
    tools.ok("nvwrite", "0x1500010", "-P", "idx", "--offset", "1000", "-i", "-",
             stdin=b"hello, NV")
    expected = data[:1000] + b"hello, NV" + data[1009:]
    assert tools.ok("nvread", "0x1500010", "-P", "idx", "-s", "29", "--offset", "990") == \
        expected[990:1019]
    tools.ok("nvread", "0x1500010", "-C", "o", "-o", "out")
    assert (tools.cwd / "out").read_bytes() == expected
    # A wrong index auth is refused (the TPM's answer, session 1).
    tools.fails(TPM_RC_AUTH_FAIL_SESSION_1, "nvread", "0x1500010", "-P", "bad", "-s", "4")


def test_counter(tools: Tools) -> None:
    """tpm2_nvincrement: a counter is TPM_RC_NV_UNINITIALIZED until its first increment,
    then counts by one (a fresh TPM's first value is 1); TPM_PT_NV_COUNTERS counts it; a
    counter cannot be written with tpm2_nvwrite (TPM_RC_ATTRIBUTES)."""
    counters = tools.variable("TPM2_PT_NV_COUNTERS")
    tools.ok("nvdefine", "0x1500020", "-C", "o", "-a", "nt=counter|ownerread|ownerwrite")
    assert tools.readpublic(0x1500020)["size"] == 8
    assert tools.variable("TPM2_PT_NV_COUNTERS") == counters + 1
    tools.fails(TPM_RC_NV_UNINITIALIZED, "nvread", "0x1500020", "-C", "o", "-s", "8")
    values = []
    for _ in range(3):
        tools.ok("nvincrement", "0x1500020", "-C", "o")
        values.append(struct.unpack(">Q", tools.ok("nvread", "0x1500020", "-C", "o"))[0])
    assert values == [1, 2, 3]
    tools.fails(TPM_RC_ATTRIBUTES, "nvwrite", "0x1500020", "-C", "o", "-i", "-",
                stdin=bytes(8))
    tools.ok("nvundefine", "0x1500020")
    assert tools.variable("TPM2_PT_NV_COUNTERS") == counters


def test_extend_and_bits(tools: Tools) -> None:
    """tpm2_nvextend: value = H(old || data) from zeros (checked with hashlib);
    tpm2_nvsetbits: the 64-bit value is the OR of all bits set."""
    tools.ok("nvdefine", "0x1500030", "-C", "o", "-a", "nt=extend|ownerread|ownerwrite")
    assert tools.readpublic(0x1500030)["size"] == 32
    tools.fails(TPM_RC_NV_UNINITIALIZED, "nvread", "0x1500030", "-C", "o", "-s", "32")
    chunks = [b"first measurement", os.urandom(100)]
    for chunk in chunks:
        tools.ok("nvextend", "0x1500030", "-C", "o", "-i", tools.file("chunk", chunk))
    assert tools.ok("nvread", "0x1500030", "-C", "o") == extend_value(*chunks)

    tools.ok("nvdefine", "0x1500031", "-C", "o", "-a", "nt=bits|ownerread|ownerwrite")
    tools.fails(TPM_RC_NV_UNINITIALIZED, "nvread", "0x1500031", "-C", "o", "-s", "8")
    bits = [0x5, 0x100000000, 0x4, 0x8000000000000000]
    total = 0
    for b in bits:
        tools.ok("nvsetbits", "0x1500031", "-C", "o", "-i", hex(b))
        total |= b
        assert struct.unpack(">Q", tools.ok("nvread", "0x1500031", "-C", "o"))[0] == total


def test_write_locks_and_read_lock(tools: Tools) -> None:
    """tpm2_nvwritelock on WRITEDEFINE and WRITE_STCLEAR indices, --global on GLOBALLOCK ones,
    tpm2_nvreadlock on READ_STCLEAR: the locked operation is TPM_RC_NV_LOCKED, the other one
    still works, and readpublic shows WRITELOCKED / READLOCKED."""
    rw = "ownerread|ownerwrite"
    tools.ok("nvdefine", "0x1500040", "-C", "o", "-s", "16", "-a", rw + "|writedefine")
    tools.ok("nvdefine", "0x1500041", "-C", "o", "-s", "16", "-a", rw + "|write_stclear")
    tools.ok("nvdefine", "0x1500042", "-C", "o", "-s", "16", "-a", rw + "|globallock")
    tools.ok("nvdefine", "0x1500043", "-C", "o", "-s", "16", "-a", rw)
    tools.ok("nvdefine", "0x1500044", "-C", "o", "-s", "16", "-a", rw + "|read_stclear")
    data = tools.file("d", b"0123456789abcdef")
    for index in ("0x1500040", "0x1500041", "0x1500042", "0x1500043", "0x1500044"):
        tools.ok("nvwrite", index, "-C", "o", "-i", data)
    # WRITEDEFINE: NV_WriteLock locks it until it is undefined (Part 3 §31.11).
    tools.ok("nvwritelock", "0x1500040", "-C", "o")
    tools.fails(TPM_RC_NV_LOCKED, "nvwrite", "0x1500040", "-C", "o", "-i", data)
    assert tools.readpublic(0x1500040)["attributes"] & (1 << 11)       # WRITELOCKED
    assert tools.ok("nvread", "0x1500040", "-C", "o") == b"0123456789abcdef"
    tools.ok("nvwritelock", "0x1500041", "-C", "o")
    tools.fails(TPM_RC_NV_LOCKED, "nvwrite", "0x1500041", "-C", "o", "-i", data)
    # An index without WRITEDEFINE / WRITE_STCLEAR cannot be write-locked.
    tools.fails(TPM_RC_ATTRIBUTES_HANDLE_2, "nvwritelock", "0x1500043", "-C", "o")
    # GlobalWriteLock (Part 3 §31.12) locks every GLOBALLOCK index, and only those.
    tools.ok("nvwritelock", "--global", "-C", "o")
    tools.fails(TPM_RC_NV_LOCKED, "nvwrite", "0x1500042", "-C", "o", "-i", data)
    tools.ok("nvwrite", "0x1500043", "-C", "o", "-i", data)
    # ReadLock (Part 3 §31.14) on READ_STCLEAR.
    tools.ok("nvreadlock", "0x1500044", "-C", "o")
    assert tools.readpublic(0x1500044)["attributes"] & (1 << 28)       # READLOCKED
    tools.fails(TPM_RC_NV_LOCKED, "nvread", "0x1500044", "-C", "o", "-s", "16")
    tools.ok("nvwrite", "0x1500044", "-C", "o", "-i", data)
    tools.fails(TPM_RC_ATTRIBUTES_HANDLE_2, "nvreadlock", "0x1500043", "-C", "o")


def test_authorization_refusals(tools: Tools) -> None:
    """Owner authorization of an index without OWNERWRITE / OWNERREAD is
    TPM_RC_NV_AUTHORIZATION; a write beyond the index is TPM_RC_NV_RANGE (sent through a raw
    command: the tools check sizes themselves)."""
    tools.ok("nvdefine", "0x1500050", "-C", "o", "-s", "8", "-a", "authread|authwrite",
             "-p", "idx")
    tools.fails(TPM_RC_NV_AUTHORIZATION, "nvwrite", "0x1500050", "-C", "o", "-i", "-",
                stdin=b"abc")
    tools.ok("nvwrite", "0x1500050", "-P", "idx", "-i", "-", stdin=b"abc")
    tools.fails(TPM_RC_NV_AUTHORIZATION, "nvread", "0x1500050", "-C", "o", "-s", "3")
    assert tools.ok("nvread", "0x1500050", "-P", "idx", "-s", "3") == b"abc"
    # NV_Write(authHandle = nvIndex = 0x1500050, offset 4, 8 bytes): past the end.
    session = struct.pack(">IHBH", 0x40000009, 0, 1, 3) + b"idx"
    body = (struct.pack(">II", 0x1500050, 0x1500050) + struct.pack(">I", len(session)) + session
            + struct.pack(">H", 8) + bytes(8) + struct.pack(">H", 4))
    response = tools.emu.command(struct.pack(">HII", 0x8002, 10 + len(body), 0x137) + body)
    assert struct.unpack(">I", response[6:10])[0] == TPM_RC_NV_RANGE


def test_platform_indices_and_policy_delete(tools: Tools) -> None:
    """Platform indices (PLATFORMCREATE) are defined and undefined with -C p; the owner cannot
    undefine one (TPM_RC_NV_AUTHORIZATION); a POLICY_DELETE index is refused to
    NV_UndefineSpace (TPM_RC_ATTRIBUTES) and deleted by tpm2_nvundefine with a policy session
    (NV_UndefineSpaceSpecial)."""
    tools.ok("nvdefine", "0x1500060", "-C", "p", "-s", "32",
             "-a", "ppread|ppwrite|platformcreate|ownerread")
    pub = tools.readpublic(0x1500060)
    assert pub["attributes"] & (1 << 30)                                 # PLATFORMCREATE
    tools.ok("nvwrite", "0x1500060", "-C", "p", "-i", "-", stdin=b"platform data")
    assert tools.ok("nvread", "0x1500060", "-C", "o", "-s", "13") == b"platform data"
    tools.fails(TPM_RC_NV_AUTHORIZATION, "nvundefine", "0x1500060", "-C", "o")
    tools.ok("nvundefine", "0x1500060", "-C", "p")
    assert 0x1500060 not in tools.nv_handles()

    tools.policy_cc("TPM2_CC_NV_UndefineSpaceSpecial", "delete.policy")
    policy = (tools.cwd / "delete.policy").read_bytes()
    assert policy == hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x11F)).digest()
    tools.ok("nvdefine", "0x1500061", "-C", "p", "-s", "8", "-L", "delete.policy",
             "-a", "ppread|ppwrite|platformcreate|policydelete")
    attributes = tools.readpublic(0x1500061)["attributes"]
    assert tools.readpublic(0x1500061)["name"] == nv_name(0x1500061, TPM2_ALG.SHA256,
                                                          attributes, policy, 8)
    # The tool refuses to send NV_UndefineSpace for it; the TPM's answer, sent raw
    # (Part 3 §31.4.1: TPM_RC_ATTRIBUTES on nvIndex).
    tools.fails_client_side("nvundefine", "0x1500061", "-C", "p")
    session_area = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    body = (struct.pack(">II", 0x4000000C, 0x1500061) + struct.pack(">I", len(session_area))
            + session_area)
    response = tools.emu.command(struct.pack(">HII", 0x8002, 10 + len(body), 0x122) + body)
    assert struct.unpack(">I", response[6:10])[0] == TPM_RC_ATTRIBUTES_HANDLE_2
    session = tools.policy_session("TPM2_CC_NV_UndefineSpaceSpecial")
    tools.ok("nvundefine", "0x1500061", "-S", session)
    assert 0x1500061 not in tools.nv_handles()


def test_changeauth(tools: Tools) -> None:
    """tpm2_changeauth of an NV index: NV_ChangeAuth needs the ADMIN role, i.e. a policy
    session satisfying the index's authPolicy (Part 3 §31.15; here
    PolicyCommandCode(NV_ChangeAuth)); afterwards the new auth works and the old one fails."""
    tools.policy_cc("TPM2_CC_NV_ChangeAuth", "change.policy")
    tools.ok("nvdefine", "0x1500070", "-C", "o", "-s", "16", "-a", "authread|authwrite",
             "-p", "old", "-L", "change.policy")
    tools.ok("nvwrite", "0x1500070", "-P", "old", "-i", "-", stdin=b"secret")
    session = tools.policy_session("TPM2_CC_NV_ChangeAuth")
    tools.ok("changeauth", "-c", "0x1500070", "-p", f"session:{session}", "new")
    tools.ok("flushcontext", session)
    tools.fails(TPM_RC_AUTH_FAIL_SESSION_1, "nvread", "0x1500070", "-P", "old", "-s", "6")
    assert tools.ok("nvread", "0x1500070", "-P", "new", "-s", "6") == b"secret"


# ---------------------------------------------------------------------------- tpm2-pytss


@pytest.fixture
def esapi(emu: Emulator) -> Iterator[ESAPI]:
    """ESAPI over the swtpm TCTI to ``emu``."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
    yield ctx
    ctx.close()


def nv_public(index: int, attributes: int, size: int, policy: bytes = b"") -> TPM2B_NV_PUBLIC:
    """A TPM2B_NV_PUBLIC with nameAlg SHA-256."""
    return TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(nvIndex=index, nameAlg=TPM2_ALG.SHA256,
                                                   attributes=attributes, authPolicy=policy,
                                                   dataSize=size))


def rc_of(call) -> int:
    """The TPM_RC of an ESAPI call that must fail."""
    with pytest.raises(TSS2_Exception) as info:
        call()
    return info.value.rc


def nv_indices(ctx: ESAPI) -> list[int]:
    """GetCapability(TPM_CAP_HANDLES, NV indices): the defined NV index handles."""
    _more, caps = ctx.get_capability(1, 0x01000000, 64)   # keep caps alive while reading
    return sorted(int(h) for h in caps.data.handles)


def hmac_session(ctx: ESAPI) -> ESYS_TR:
    """An unbound, unsalted HMAC session with AES-128-CFB parameter encryption."""
    sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
    sym.keyBits.aes = 128
    sym.mode.aes = TPM2_ALG.CFB
    session = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym,
                                     TPM2_ALG.SHA256)
    ctx.trsess_set_attributes(session, 0x01 | 0x20 | 0x40)   # continue, decrypt, encrypt
    return session


def test_pytss_ordinary_index(esapi: ESAPI) -> None:
    """ESAPI nv_define_space / nv_write / nv_read / nv_read_public / nv_undefine_space, owner
    and index authorization, an HMAC session with parameter encryption, and NV_RANGE."""
    attrs = (TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE | TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE
             | TPMA_NV.NO_DA)
    handle = esapi.nv_define_space(b"index-pw", nv_public(0x1500100, attrs, 1024))
    data = os.urandom(1024)
    esapi.nv_write(handle, data[:512], 0, auth_handle=ESYS_TR.OWNER)
    esapi.tr_set_auth(handle, b"index-pw")
    session = hmac_session(esapi)
    esapi.nv_write(handle, data[512:], 512, auth_handle=handle, session1=session)
    assert bytes(esapi.nv_read(handle, 1024, 0, auth_handle=handle, session1=session)) == data
    assert bytes(esapi.nv_read(handle, 100, 900)) == data[900:1000]
    public, name = esapi.nv_read_public(handle)
    assert public.nvPublic.dataSize == 1024
    assert int(public.nvPublic.attributes) == int(attrs) | WRITTEN
    assert bytes(name) == nv_name(0x1500100, TPM2_ALG.SHA256, int(attrs) | WRITTEN, b"", 1024)
    assert rc_of(lambda: esapi.nv_write(handle, b"x" * 8, 1020)) == TPM_RC_NV_RANGE
    esapi.tr_set_auth(handle, b"wrong")
    assert rc_of(lambda: esapi.nv_read(handle, 8, 0, auth_handle=handle)) == \
        TPM_RC_BAD_AUTH_SESSION_1
    esapi.flush_context(session)
    esapi.nv_undefine_space(handle)
    assert nv_indices(esapi) == []


def test_pytss_counter_extend_bits(esapi: ESAPI) -> None:
    """ESAPI nv_increment, nv_extend and nv_set_bits, values checked."""
    base = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
    counter = esapi.nv_define_space(None, nv_public(
        0x1500110, base | (TPM2_NT.COUNTER << NT_SHIFT), 8))
    assert rc_of(lambda: esapi.nv_read(counter, 8, 0, auth_handle=ESYS_TR.OWNER)) == \
        TPM_RC_NV_UNINITIALIZED
    for expected in (1, 2, 3, 4):
        esapi.nv_increment(counter, auth_handle=ESYS_TR.OWNER)
        value = bytes(esapi.nv_read(counter, 8, 0, auth_handle=ESYS_TR.OWNER))
        assert struct.unpack(">Q", value)[0] == expected

    extend = esapi.nv_define_space(None, nv_public(
        0x1500111, base | (TPM2_NT.EXTEND << NT_SHIFT), 32))
    chunks = [b"a", os.urandom(64), b"\x00" * 32]
    for chunk in chunks:
        esapi.nv_extend(extend, chunk, auth_handle=ESYS_TR.OWNER)
    assert bytes(esapi.nv_read(extend, 32, 0, auth_handle=ESYS_TR.OWNER)) == \
        extend_value(*chunks)

    bits = esapi.nv_define_space(None, nv_public(
        0x1500112, base | (TPM2_NT.BITS << NT_SHIFT), 8))
    total = 0
    for b in (1 << 63, 0x3, 0x300, 0x1):
        esapi.nv_set_bits(bits, b, auth_handle=ESYS_TR.OWNER)
        total |= b
    assert struct.unpack(">Q", bytes(esapi.nv_read(bits, 8, 0, auth_handle=ESYS_TR.OWNER)))[0] \
        == total
    for handle in (counter, extend, bits):
        esapi.nv_undefine_space(handle)


def test_pytss_change_auth(esapi: ESAPI) -> None:
    """ESAPI nv_change_auth through a policy session (PolicyCommandCode(NV_ChangeAuth) +
    PolicyAuthValue, so the old auth is needed too); then the new auth authorizes reads
    through an HMAC session, and the old one fails."""
    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, None,
                                     TPM2_ALG.SHA256)
    esapi.policy_command_code(trial, TPM2_CC.NV_ChangeAuth)
    esapi.policy_auth_value(trial)
    policy = bytes(esapi.policy_get_digest(trial))
    esapi.flush_context(trial)
    expected = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x13B)).digest()
    assert policy == hashlib.sha256(expected + struct.pack(">I", 0x16B)).digest()

    attrs = TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA
    handle = esapi.nv_define_space(b"old", nv_public(0x1500120, attrs, 16, policy))
    esapi.tr_set_auth(handle, b"old")
    esapi.nv_write(handle, b"sixteen bytes!!!", 0, auth_handle=handle)
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, None,
                                       TPM2_ALG.SHA256)
    esapi.policy_command_code(session, TPM2_CC.NV_ChangeAuth)
    esapi.policy_auth_value(session)
    esapi.nv_change_auth(handle, b"new", session1=session)
    esapi.flush_context(session)
    esapi.tr_set_auth(handle, b"new")
    hmac = hmac_session(esapi)
    assert bytes(esapi.nv_read(handle, 16, 0, auth_handle=handle, session1=hmac)) == \
        b"sixteen bytes!!!"
    esapi.tr_set_auth(handle, b"old")
    assert rc_of(lambda: esapi.nv_read(handle, 16, 0, auth_handle=handle, session1=hmac)) == \
        TPM_RC_BAD_AUTH_SESSION_1
    esapi.nv_undefine_space(handle)


def test_pytss_locks_and_policy_delete(esapi: ESAPI, emu: Emulator) -> None:
    """ESAPI nv_write_lock (WRITEDEFINE), nv_global_write_lock (GLOBALLOCK), nv_read_lock
    (READ_STCLEAR): the locked operation is TPM_RC_NV_LOCKED; a second ESAPI context finds an
    index with tr_from_tpmpublic; a platform POLICY_DELETE index is removed with
    nv_undefine_space_special and a PolicyCommandCode(NV_UndefineSpaceSpecial) session."""
    rw = TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE
    define = TPMA_NV.WRITEDEFINE | rw
    handles = {name: esapi.nv_define_space(None, nv_public(index, attrs, 8))
               for name, index, attrs in (("define", 0x1500130, define),
                                          ("global", 0x1500131, rw | TPMA_NV.GLOBALLOCK),
                                          ("read", 0x1500132, rw | TPMA_NV.READ_STCLEAR))}
    for handle in handles.values():
        esapi.nv_write(handle, b"12345678", 0, auth_handle=ESYS_TR.OWNER)
    esapi.nv_write_lock(handles["define"], auth_handle=ESYS_TR.OWNER)
    assert rc_of(lambda: esapi.nv_write(handles["define"], b"x", 0,
                                        auth_handle=ESYS_TR.OWNER)) == TPM_RC_NV_LOCKED
    esapi.nv_write(handles["global"], b"still ok", 0, auth_handle=ESYS_TR.OWNER)
    esapi.nv_global_write_lock()
    assert rc_of(lambda: esapi.nv_write(handles["global"], b"x", 0,
                                        auth_handle=ESYS_TR.OWNER)) == TPM_RC_NV_LOCKED
    esapi.nv_read_lock(handles["read"], auth_handle=ESYS_TR.OWNER)
    assert rc_of(lambda: esapi.nv_read(handles["read"], 8, 0,
                                       auth_handle=ESYS_TR.OWNER)) == TPM_RC_NV_LOCKED
    other = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
    try:
        found = other.tr_from_tpmpublic(0x1500131)
        assert bytes(other.nv_read(found, 8, 0, auth_handle=ESYS_TR.OWNER)) == b"still ok"
        public, _ = other.nv_read_public(found)
        assert int(public.nvPublic.attributes) & int(TPMA_NV.WRITELOCKED)
    finally:
        other.close()

    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, None,
                                     TPM2_ALG.SHA256)
    esapi.policy_command_code(trial, TPM2_CC.NV_UndefineSpaceSpecial)
    policy = bytes(esapi.policy_get_digest(trial))
    esapi.flush_context(trial)
    attrs = (TPMA_NV.PPREAD | TPMA_NV.PPWRITE | TPMA_NV.PLATFORMCREATE
             | TPMA_NV.POLICY_DELETE)
    special = esapi.nv_define_space(None, nv_public(0x1500133, attrs, 8, policy),
                                    auth_handle=ESYS_TR.PLATFORM)
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, None,
                                       TPM2_ALG.SHA256)
    esapi.policy_command_code(session, TPM2_CC.NV_UndefineSpaceSpecial)
    esapi.nv_undefine_space_special(special, session1=session)
    assert nv_indices(esapi) == [0x1500130, 0x1500131, 0x1500132]
