"""Command audit: TPM2_SetCommandCodeAuditStatus (Part 3 §21.2), GetCapability(AUDIT_COMMANDS),
TPM_PT_AUDIT_COUNTER_0/1 and the command audit digest (Part 1 §32.2).

The digest is computed here from the commands and responses as the client sees them:
digest := H(digest || cpHash || rpHash) from zeros. That computation is first checked
against the real swtpm 0.7.1 (whose TPM2_GetCommandAuditDigest reports its digest), then
swtpm_py's in-process digest is compared with it. Settings and errors are compared with swtpm
byte for byte; tpm2-tools and tpm2-pytss change the settings too.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_CC
from tpm2_pytss.types import TPML_CC

from emulator import Emulator
from tpmcmd import cmd, pcr_read, power_on, pw_session, rc, shutdown, startup, with_auth

from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.constants import ALG, CAP, CC, PT, RC, RH

SUCCESS = 0
VALUE_P1 = RC.VALUE + 0x040 + 0x100
HASH_P1 = RC.HASH + 0x040 + 0x100
SIZE_P2 = RC.SIZE + 0x040 + 0x200
VALUE_H1 = RC.VALUE + 0x100
BAD_AUTH_S1 = RC.BAD_AUTH + 0x800 + 0x100
HASH_NAMES = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384",
              ALG.SHA512: "sha512"}
CTRL_INIT = 0x02


# ---------------------------------------------------------------------------- commands


def tpml_cc(codes: list[int]) -> bytes:
    return struct.pack(f">I{len(codes)}I", len(codes), *codes)


def set_audit(alg: int = ALG.NULL, set_list: list[int] = (), clear_list: list[int] = (),
              handle: int = RH.OWNER, password: bytes = b"") -> bytes:
    """TPM2_SetCommandCodeAuditStatus with a password session."""
    return with_auth(CC.SetCommandCodeAuditStatus, struct.pack(">I", handle),
                     struct.pack(">H", alg) + tpml_cc(list(set_list)) + tpml_cc(list(clear_list)),
                     pw_session(password))


def getcap(cap: int, prop: int = 0, count: int = 100) -> bytes:
    return cmd(CC.GetCapability, struct.pack(">III", cap, prop, count))


def cc_list(response: bytes) -> list[int]:
    count = struct.unpack_from(">I", response, 15)[0]
    return list(struct.unpack_from(f">{count}I", response, 19))


def audit_counter(send) -> int:
    """auditCounter from TPM_PT_AUDIT_COUNTER_0 (high) and _1 (low)."""
    r = send(getcap(CAP.TPM_PROPERTIES, PT.AUDIT_COUNTER_0, 2))
    (count,) = struct.unpack_from(">I", r, 15)
    assert count == 2
    tag0, high, tag1, low = struct.unpack_from(">IIII", r, 19)
    assert (tag0, tag1) == (PT.AUDIT_COUNTER_0, PT.AUDIT_COUNTER_1)
    return high << 32 | low


def get_command_audit_digest(send) -> tuple[int, int, bytes, bytes]:
    """swtpm's TPM2_GetCommandAuditDigest, unsigned: (auditCounter, digestAlg, auditDigest,
    commandDigest) from the TPMS_COMMAND_AUDIT_INFO of its attestation."""
    body = struct.pack(">HH", 0, ALG.NULL)  # qualifyingData, inScheme TPM_ALG_NULL
    r = send(with_auth(CC.GetCommandAuditDigest, struct.pack(">II", RH.ENDORSEMENT, RH.NULL),
                       body, pw_session(), pw_session()))
    assert rc(r) == SUCCESS, hex(rc(r))
    off = 10 + 4 + 2 + 4 + 2          # parameterSize, TPM2B_ATTEST size, magic, type
    off += 2 + struct.unpack_from(">H", r, off)[0]     # qualifiedSigner
    off += 2 + struct.unpack_from(">H", r, off)[0]     # extraData
    off += 17 + 8                                     # clockInfo, firmwareVersion
    counter, alg = struct.unpack_from(">QH", r, off)
    off += 10
    size = struct.unpack_from(">H", r, off)[0]
    digest = r[off + 2:off + 2 + size]
    off += 2 + size
    size = struct.unpack_from(">H", r, off)[0]
    return counter, alg, digest, r[off + 2:off + 2 + size]


# ---------------------------------------------------------------------------- the client side


class AuditLog:
    """The command audit digest as the client computes it (Part 1 §32.2)."""

    def __init__(self, alg: int) -> None:
        self.name = HASH_NAMES[alg]
        self.digest = b""
        self.started = 0

    def h(self, *parts: bytes) -> bytes:
        return hashlib.new(self.name, b"".join(parts)).digest()

    def record(self, command: bytes, response: bytes, names: list[bytes]) -> None:
        """Extend with a successful command and its response (names of its handles given)."""
        tag, _, code = struct.unpack_from(">HII", command)
        off = 10 + 4 * len(names)
        if tag == 0x8002:
            off += 4 + struct.unpack_from(">I", command, off)[0]
        cp = self.h(struct.pack(">I", code), *names, command[off:])
        rtag = struct.unpack_from(">H", response)[0]
        if rtag == 0x8002:
            params = response[14:14 + struct.unpack_from(">I", response, 10)[0]]
        else:
            params = response[10:]
        rp = self.h(bytes(4), struct.pack(">I", code), params)
        if not self.digest:
            self.digest = bytes(hashlib.new(self.name).digest_size)
            self.started += 1
        self.digest = self.h(self.digest, cp, rp)


def audited_sequence(send) -> AuditLog:
    """Switch command audit to SHA-256, audit PCR_Read and PCR_Extend and run some of them;
    returns the client-side log of what was audited."""
    assert rc(send(set_audit(ALG.SHA256))) == SUCCESS          # not audited: digest restarts
    log = AuditLog(ALG.SHA256)
    c = set_audit(set_list=[CC.PCR_Read, CC.PCR_Extend])
    r = send(c)
    assert rc(r) == SUCCESS
    log.record(c, r, [struct.pack(">I", RH.OWNER)])
    for c, names in [(pcr_read(ALG.SHA256, [0, 16]), []),
                     (with_auth(CC.PCR_Extend, struct.pack(">I", 16),
                                struct.pack(">IH", 1, ALG.SHA1) + b"\x05" * 20), [b"\0\0\0\x10"]),
                     (pcr_read(ALG.SHA1, [16]), [])]:
        r = send(c)
        assert rc(r) == SUCCESS
        log.record(c, r, names)
    # Not audited: GetCapability; audited but failing: nothing recorded.
    assert rc(send(getcap(CAP.AUDIT_COMMANDS))) == SUCCESS
    assert rc(send(with_auth(CC.PCR_Extend, struct.pack(">I", 17),
                             struct.pack(">IH", 1, ALG.SHA1) + b"\x05" * 20))) == 0x907
    return log


def test_client_digest_is_swtpms(reference: Emulator) -> None:
    """The client-side computation gives exactly the digest swtpm reports, with the counter
    started once and commandDigest the hash of the audited codes."""
    log = audited_sequence(reference.command)
    counter, alg, digest, command_digest = get_command_audit_digest(reference.command)
    assert (counter, alg, digest) == (1, ALG.SHA256, log.digest)
    codes = [CC.SetCommandCodeAuditStatus, CC.PCR_Extend, CC.PCR_Read]
    assert command_digest == hashlib.sha256(struct.pack(">3I", *sorted(codes))).digest()


def test_swtpm_py_digest(tpm: Tpm) -> None:
    """swtpm_py's command audit digest is the client-side one for the same commands; the
    counter started once."""
    log = audited_sequence(tpm.execute)
    assert tpm.vol.state_reset.command_audit_digest == log.digest
    assert tpm.perm.audit_counter == 1 == audit_counter(tpm.execute)
    assert tpm.perm.audit_hash_alg == ALG.SHA256


def test_digest_lifecycle(platform: Platform) -> None:
    """TPM Resume and Restart keep the digest (state-reset data), TPM Reset clears it; the
    counter is persistent and advances when a new digest starts; changing the algorithm
    clears the digest without auditing that command."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert tpm.perm.audit_hash_alg == ALG.SHA512 and tpm.perm.audit_counter == 0
    assert rc(tpm.execute(set_audit(set_list=[CC.GetRandom]))) == SUCCESS
    first = tpm.vol.state_reset.command_audit_digest
    assert len(first) == 64 and tpm.perm.audit_counter == 1
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\0\x08"))) == SUCCESS
    digest = tpm.vol.state_reset.command_audit_digest
    assert digest not in (first, bytes(64)) and tpm.perm.audit_counter == 1
    assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    for clear in (False, True):                      # TPM Resume, then TPM Restart
        tpm = power_on(platform)
        assert rc(tpm.execute(startup(clear=clear))) == SUCCESS
        assert tpm.vol.state_reset.command_audit_digest == digest
        assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup(clear=False))) == SUCCESS
    assert rc(tpm.execute(shutdown())) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS     # TPM Reset
    assert tpm.vol.state_reset.command_audit_digest == b""
    assert audit_counter(tpm.execute) == 1
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\0\x08"))) == SUCCESS
    assert audit_counter(tpm.execute) == 2
    assert len(tpm.vol.state_reset.command_audit_digest) == 64
    assert rc(tpm.execute(set_audit(ALG.SHA1))) == SUCCESS
    assert tpm.vol.state_reset.command_audit_digest == b""
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\0\x08"))) == SUCCESS
    assert len(tpm.vol.state_reset.command_audit_digest) == 20
    assert audit_counter(tpm.execute) == 3
    # The counter was committed with the command that advanced it.
    assert power_on(platform).perm.audit_counter == 3


def test_state_from_before_command_audit(tpm: Tpm) -> None:
    """A permanent state written before command audit existed (algorithm TPM_ALG_NULL, empty
    list) audits with SHA-512 once commands are added."""
    tpm.perm.audit_hash_alg, tpm.perm.audit_commands = ALG.NULL, []
    assert rc(tpm.execute(set_audit(set_list=[CC.GetRandom]))) == SUCCESS
    assert rc(tpm.execute(cmd(CC.GetRandom, b"\0\x08"))) == SUCCESS
    assert len(tpm.vol.state_reset.command_audit_digest) == 64
    assert tpm.perm.audit_counter == 1


def test_settings_as_swtpm(pair: dict[str, Emulator]) -> None:
    """The audit list of a new TPM, the list rules (unimplemented codes ignored, TPM2_Shutdown
    never audited, TPM2_SetCommandCodeAuditStatus never removed), the errors and the counter
    properties give byte-identical answers on both emulators."""
    cases = [getcap(CAP.AUDIT_COMMANDS), getcap(CAP.TPM_PROPERTIES, PT.AUDIT_COUNTER_0, 2),
             set_audit(ALG.SHA1, [CC.GetRandom]), set_audit(handle=RH.ENDORSEMENT),
             set_audit(0x0005), set_audit(ALG.NULL, list(range(255))),
             set_audit(password=b"wrong"),
             set_audit(set_list=[CC.Startup, CC.Shutdown, 0x999, CC.PCR_Read, CC.GetRandom],
                       clear_list=[CC.SetCommandCodeAuditStatus, CC.GetRandom]),
             getcap(CAP.AUDIT_COMMANDS), getcap(CAP.AUDIT_COMMANDS, CC.Startup + 1, 1),
             getcap(CAP.TPM_PROPERTIES, PT.AUDIT_COUNTER_0, 2),
             set_audit(ALG.SHA384, handle=RH.PLATFORM), set_audit(ALG.SHA384),
             set_audit(clear_list=[CC.Startup, CC.PCR_Read]), getcap(CAP.AUDIT_COMMANDS),
             getcap(CAP.TPM_PROPERTIES, PT.AUDIT_COUNTER_0, 2)]
    answers = {kind: [emu.command(c) for c in cases] for kind, emu in pair.items()}
    assert answers["swtpm_py"] == answers["swtpm"]
    got = answers["swtpm_py"]
    assert cc_list(got[0]) == [CC.SetCommandCodeAuditStatus]
    assert [rc(r) for r in got[2:8]] == [VALUE_P1, VALUE_H1, HASH_P1, SIZE_P2, BAD_AUTH_S1,
                                         SUCCESS]
    assert cc_list(got[8]) == [CC.SetCommandCodeAuditStatus, CC.Startup, CC.PCR_Read]
    assert cc_list(got[9]) == [CC.PCR_Read]
    assert cc_list(got[14]) == [CC.SetCommandCodeAuditStatus]


# ---------------------------------------------------------------------------- tools, pytss


def _tool(emu: Emulator, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tpm2_setcommandauditstatus(tmp_path: Path, kind: str) -> None:
    """tpm2_setcommandauditstatus adds and removes commands (checked with GetCapability) and
    audited commands run by tpm2-tools advance the audit counter shown by tpm2_getcap."""
    with Emulator(kind, tmp_path / "state").start() as emu:
        for args in (["TPM2_CC_GetRandom"], ["-C", "p", "TPM2_CC_PCR_Read"],
                     ["-c", "TPM2_CC_PCR_Read"], ["-g", "sha384"]):
            out = _tool(emu, "tpm2_setcommandauditstatus", *args)
            assert out.returncode == 0, out.stderr
        assert cc_list(emu.command(getcap(CAP.AUDIT_COMMANDS))) == [
            CC.SetCommandCodeAuditStatus, CC.GetRandom]
        assert _tool(emu, "tpm2_getrandom", "--hex", "8").returncode == 0
        out = _tool(emu, "tpm2_getcap", "properties-variable")
        assert out.returncode == 0, out.stderr
        props = {k.strip(): v.strip() for k, _, v in
                 (line.partition(":") for line in out.stdout.splitlines())}
        assert int(props["TPM2_PT_AUDIT_COUNTER_0"], 0) == 0
        assert int(props["TPM2_PT_AUDIT_COUNTER_1"], 0) == audit_counter(emu.command) >= 1


@pytest.fixture
def esapi(any_emulator: Emulator):
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def test_pytss_set_command_code_audit_status(esapi: ESAPI) -> None:
    """set_command_code_audit_status through ESAPI, the list read back with get_capability."""
    esapi.set_command_code_audit_status(TPM2_ALG.NULL, TPML_CC([TPM2_CC.Hash, TPM2_CC.Unseal]),
                                        TPML_CC([]))
    _, data = esapi.get_capability(TPM2_CAP.AUDIT_COMMANDS, 0, 10)
    codes = [int(c) for c in data.data.auditCommands]
    assert codes == sorted({CC.SetCommandCodeAuditStatus, CC.Hash, CC.Unseal} & _listed(esapi))
    with pytest.raises(TSS2_Exception) as info:
        esapi.set_command_code_audit_status(TPM2_ALG.SHA1, TPML_CC([TPM2_CC.Hash]), TPML_CC([]),
                                            auth=ESYS_TR.PLATFORM)
    assert info.value.rc & 0xFFF == VALUE_P1
    esapi.set_command_code_audit_status(TPM2_ALG.SHA1, TPML_CC([]), TPML_CC([]))


def _listed(esapi: ESAPI) -> set[int]:
    """The command codes the TPM implements (GetCapability(COMMANDS))."""
    _, data = esapi.get_capability(TPM2_CAP.COMMANDS, 0, 1000)
    return {int(a) & 0xFFFF for a in data.data.command}
