"""PCR administration and the physical presence list: TPM2_PCR_Allocate, PCR_SetAuthPolicy,
PCR_SetAuthValue (Part 3 §22.5-22.7) and TPM2_PP_Commands (Part 3 §26.2).

Differentially against the real swtpm 0.7.1 (the same raw commands, responses compared; a TPM
Reset through the control channel's INIT), in-process for what swtpm cannot show (localities
that may extend PCR 20-22, physical presence), and through tpm2-tools and tpm2-pytss.
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
from tpm2_pytss.types import (TPM2B_DIGEST, TPML_CC, TPML_DIGEST_VALUES, TPML_PCR_SELECTION,
                              TPMT_HA, TPMU_HA)

from emulator import Emulator
from sessclient import Use, call, start_session
from tpmcmd import (cmd, pcr_read, pcr_values, power_on, pw_session, rc, shutdown, startup,
                    with_auth)

from swtpm_py.tpm import Platform
from swtpm_py.tpm.constants import ALG, CAP, CC, PT_PCR, RC, RH
from swtpm_py.tpm.registry import COMMANDS

CTRL_INIT = 0x02
SUCCESS = 0
PCR_RC = RC.PCR                                # 0x127: no H-CRTM or DRTM PCR left
VALUE_P1 = RC.VALUE + 0x040 + 0x100
VALUE_P3 = RC.VALUE + 0x040 + 0x300
SIZE_P1 = RC.SIZE + 0x040 + 0x100
HASH_P1 = RC.HASH + 0x040 + 0x100
VALUE_H1 = RC.VALUE + 0x100
BAD_AUTH_S1 = RC.BAD_AUTH + 0x800 + 0x100
PP_S1 = RC.PP + 0x800 + 0x100                  # 0x990
LOCALITY = 0x907                               # TPM_RC_LOCALITY (a warning)
BANKS = (ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512)
ALL, NONE = b"\xff\xff\xff", b"\x00\x00\x00"
TOOLS_TIMEOUT = 60


# ---------------------------------------------------------------------------- commands


def selection(*banks: tuple[int, bytes]) -> bytes:
    """TPML_PCR_SELECTION of (hash, pcrSelect) pairs."""
    return struct.pack(">I", len(banks)) + b"".join(
        struct.pack(">HB", alg, len(sel)) + sel for alg, sel in banks)


def allocate(*banks: tuple[int, bytes], handle: int = RH.PLATFORM) -> bytes:
    """TPM2_PCR_Allocate with an empty platform password."""
    return with_auth(CC.PCR_Allocate, struct.pack(">I", handle), selection(*banks))


def allocate_result(response: bytes) -> tuple[int, int, int, int]:
    """allocationSuccess, maxPCR, sizeNeeded, sizeAvailable of a PCR_Allocate response."""
    return struct.unpack_from(">BIII", response, 14)


def set_auth_value(pcr: int, auth: bytes, password: bytes = b"") -> bytes:
    """TPM2_PCR_SetAuthValue authorized with the PCR's password."""
    return with_auth(CC.PCR_SetAuthValue, struct.pack(">I", pcr),
                     struct.pack(">H", len(auth)) + auth, pw_session(password))


def set_auth_policy(pcr: int, policy: bytes, alg: int = ALG.SHA256,
                    handle: int = RH.PLATFORM) -> bytes:
    """TPM2_PCR_SetAuthPolicy with an empty platform password."""
    return with_auth(CC.PCR_SetAuthPolicy, struct.pack(">I", handle),
                     struct.pack(">H", len(policy)) + policy + struct.pack(">HI", alg, pcr))


def extend(pcr: int, password: bytes = b"", alg: int = ALG.SHA1) -> bytes:
    """TPM2_PCR_Extend of one digest of ``alg`` with a password session."""
    size = hashlib.new({ALG.SHA1: "sha1", ALG.SHA256: "sha256"}[alg]).digest_size
    return with_auth(CC.PCR_Extend, struct.pack(">I", pcr),
                     struct.pack(">IH", 1, alg) + b"\x01" * size, pw_session(password))


def pp_commands(set_list: list[int], clear_list: list[int], password: bytes = b"") -> bytes:
    """TPM2_PP_Commands with platform authorization."""
    def tpml_cc(codes: list[int]) -> bytes:
        return struct.pack(f">I{len(codes)}I", len(codes), *codes)
    return with_auth(CC.PP_Commands, struct.pack(">I", RH.PLATFORM),
                     tpml_cc(set_list) + tpml_cc(clear_list), pw_session(password))


def getcap(cap: int, prop: int = 0, count: int = 100) -> bytes:
    return cmd(CC.GetCapability, struct.pack(">III", cap, prop, count))


def cc_list(response: bytes) -> list[int]:
    """The TPML_CC of a GetCapability(PP_COMMANDS / AUDIT_COMMANDS) response."""
    count = struct.unpack_from(">I", response, 15)[0]
    return list(struct.unpack_from(f">{count}I", response, 19))


def pcrs_allocation(response: bytes) -> dict[int, bytes]:
    """The TPML_PCR_SELECTION of a GetCapability(PCRS) response, by bank."""
    count = struct.unpack_from(">I", response, 15)[0]
    out, off = {}, 19
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", response, off)
        out[alg] = response[off + 3:off + 3 + size]
        off += 3 + size
    return out


def tpm_reset(emu: Emulator) -> None:
    """Power cycle through the control channel (CMD_INIT) and TPM2_Startup(CLEAR)."""
    assert emu.ctrl(CTRL_INIT, b"\0\0\0\0", 4) == b"\0\0\0\0"
    assert rc(emu.command(startup())) == SUCCESS


# ---------------------------------------------------------------------------- differential


ALLOCATIONS = [
    ((ALG.SHA256, ALL),),
    ((ALG.SHA256, ALL), (ALG.SHA1, NONE)),
    (),
    ((ALG.SHA256, ALL), (ALG.SHA256, NONE)),
    ((ALG.SHA1, NONE), (ALG.SHA256, NONE), (ALG.SHA384, NONE), (ALG.SHA512, NONE)),
    ((ALG.SHA1, NONE), (ALG.SHA256, NONE), (ALG.SHA384, NONE), (ALG.SHA512, b"\xff\xff\x01")),
    ((ALG.SHA1, NONE), (ALG.SHA256, NONE), (ALG.SHA384, NONE), (ALG.SHA512, b"\xfe\xff\xff")),
    ((ALG.SHA256, b"\xff\xff"),),
    ((ALG.SHA256, b"\xff\xff\xff\xff"),),
    ((0x0012, ALL),),
]


def test_allocate_answers_as_swtpm(pair: dict[str, Emulator]) -> None:
    """Every PCR_Allocate answer (success with sizeNeeded/sizeAvailable, TPM_RC_PCR without
    PCR 0 or 17, bad selections, wrong hierarchy) is byte-identical to swtpm's; GetCapability
    (PCRS) still shows the allocation in effect."""
    cases = [allocate(*banks) for banks in ALLOCATIONS]
    cases.append(allocate((ALG.SHA256, ALL), handle=RH.OWNER))
    cases.append(getcap(CAP.PCRS, 0, 1))
    answers = {kind: [emu.command(c) for c in cases] for kind, emu in pair.items()}
    assert answers["swtpm_py"] == answers["swtpm"]
    got = answers["swtpm_py"]
    assert allocate_result(got[0]) == (1, 24, 24 * 164, 24 * 164)
    assert allocate_result(got[1]) == (1, 24, 24 * (32 + 48 + 64), 24 * 164)
    assert [rc(r) for r in got[4:10]] == [PCR_RC, PCR_RC, PCR_RC, VALUE_P1, VALUE_P1, HASH_P1]
    assert rc(got[10]) == VALUE_H1
    assert pcrs_allocation(got[11]) == {alg: ALL for alg in BANKS}


def test_allocation_takes_effect_at_tpm_reset(any_emulator: Emulator) -> None:
    """sha1:none+sha384:none takes effect at the next TPM Reset only; afterwards
    GetCapability(PCRS) lists the emptied banks with no PCR, PCR_Read returns nothing for them
    and extending them is a no-op. Allocating them again restores them at the next reset."""
    emu = any_emulator
    r = emu.command(allocate((ALG.SHA1, NONE), (ALG.SHA384, NONE)))
    assert allocate_result(r) == (1, 24, 24 * (32 + 64), 24 * 164)
    assert pcrs_allocation(emu.command(getcap(CAP.PCRS, 0, 1))) == {a: ALL for a in BANKS}
    assert rc(emu.command(shutdown())) == SUCCESS
    tpm_reset(emu)
    assert pcrs_allocation(emu.command(getcap(CAP.PCRS, 0, 1))) == {
        ALG.SHA1: NONE, ALG.SHA256: ALL, ALG.SHA384: NONE, ALG.SHA512: ALL}
    assert pcr_values(emu.command(pcr_read(ALG.SHA1, [0, 1]))) == []
    assert pcr_values(emu.command(pcr_read(ALG.SHA256, [1]))) == [bytes(32)]
    assert rc(emu.command(extend(1, alg=ALG.SHA1))) == SUCCESS
    assert pcr_values(emu.command(pcr_read(ALG.SHA1, [1]))) == []
    # Allocating a bank again restores it (at zeros) at the next TPM Reset.
    assert rc(emu.command(allocate((ALG.SHA1, ALL)))) == SUCCESS
    tpm_reset(emu)
    assert pcrs_allocation(emu.command(getcap(CAP.PCRS, 0, 1)))[ALG.SHA1] == ALL
    assert pcr_values(emu.command(pcr_read(ALG.SHA1, [1]))) == [bytes(20)]


def test_allocation_in_process(platform: Platform) -> None:
    """The pending allocation is persistent (it survives a power cycle before the reset) and
    replaces the banks only at TPM Reset. Partial banks are TPM_RC_VALUE here (swtpm 0.7.1
    accepts them: a documented deviation)."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert rc(tpm.execute(allocate((ALG.SHA256, b"\xff\x00\x00")))) == VALUE_P1
    assert rc(tpm.execute(allocate((ALG.SHA512, NONE)))) == SUCCESS
    assert tpm.perm.pcr_allocation == [ALG.SHA1, ALG.SHA256, ALG.SHA384]
    assert tpm.pcrs.banks == list(BANKS)
    tpm = power_on(platform)     # power lost without shutdown: the allocation is in NV
    assert rc(tpm.execute(startup())) == SUCCESS
    assert tpm.pcrs.banks == [ALG.SHA1, ALG.SHA256, ALG.SHA384]
    assert tpm.vol.pcr_reconfig is False
    assert rc(tpm.execute(allocate((ALG.SHA512, ALL)))) == SUCCESS
    assert tpm.vol.pcr_reconfig is True
    assert rc(tpm.execute(shutdown())) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert tpm.pcrs.banks == list(BANKS)


def test_pcr_properties_as_swtpm(pair: dict[str, Emulator]) -> None:
    """TPM_PT_PCR_POLICY and TPM_PT_PCR_AUTH list PCRs 20-22, as swtpm."""
    request = getcap(CAP.PCR_PROPERTIES, PT_PCR.DRTM_RESET, 5)
    answers = {kind: emu.command(request) for kind, emu in pair.items()}
    assert answers["swtpm_py"] == answers["swtpm"]
    assert answers["swtpm_py"].endswith(struct.pack(">IB", PT_PCR.POLICY, 3) + b"\0\0\x70"
                                        + struct.pack(">IB", PT_PCR.AUTH, 3) + b"\0\0\x70")


def test_set_auth_value_and_policy_as_swtpm(any_emulator: Emulator) -> None:
    """SetAuthValue/SetAuthPolicy only for PCRs 20-22 (TPM_RC_VALUE otherwise), one value for the
    whole group; a PCR with an authPolicy needs a policy session (TPM_RC_AUTH_TYPE for a
    password); removing the policy gives the authValue back. Codes measured on swtpm 0.7.1."""
    emu = any_emulator
    codes = [rc(emu.command(c)) for c in (
        set_auth_value(0, b"abc"), set_auth_value(23, b"abc"), set_auth_value(20, b"abc"),
        extend(21), extend(22, b"abc"), extend(20, b"abc\0"),
        set_auth_policy(19, b"\x11" * 32), set_auth_policy(20, b"\x11" * 31),
        set_auth_policy(24, b""), set_auth_policy(20, b"\x11" * 32, handle=RH.OWNER),
        set_auth_policy(21, b"\x11" * 32), extend(20, b"abc"), set_auth_value(22, b"x", b"abc"),
        set_auth_policy(22, b"", ALG.NULL), extend(22, b"abc"),
        set_auth_value(21, b"", b"abc"), extend(20))]
    assert codes == [RC.VALUE, RC.VALUE, SUCCESS,
                     BAD_AUTH_S1, LOCALITY, LOCALITY,
                     VALUE_P3, SIZE_P1, VALUE_P3, VALUE_H1,
                     SUCCESS, RC.AUTH_TYPE, RC.AUTH_TYPE,
                     SUCCESS, LOCALITY,
                     SUCCESS, LOCALITY]


def test_pcr_auth_lifecycle(platform: Platform) -> None:
    """The authValue is state-clear data (kept by TPM Resume, gone after TPM Restart), the
    authPolicy persistent (kept across power cycles and TPM Reset). At locality 2, which may
    extend PCR 20, the right password or a satisfied policy session extends it."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert rc(tpm.execute(set_auth_value(20, b"secret"))) == SUCCESS
    assert rc(tpm.execute(extend(20), 2)) == BAD_AUTH_S1
    assert rc(tpm.execute(extend(21, b"secret"), 2)) == SUCCESS    # one value for 20-22
    assert rc(tpm.execute(extend(20, b"secret"), 2)) == SUCCESS
    assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup(clear=False))) == SUCCESS        # TPM Resume
    assert rc(tpm.execute(extend(20, b"secret"), 2)) == SUCCESS
    assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS                   # TPM Restart
    assert rc(tpm.execute(extend(20, b"secret"), 2)) == BAD_AUTH_S1
    assert rc(tpm.execute(extend(20), 2)) == SUCCESS

    # A policy: PolicyCommandCode(PCR_Extend) in a SHA-256 policy session.
    policy = hashlib.sha256(bytes(32) + struct.pack(">II", CC.PolicyCommandCode,
                                                    CC.PCR_Extend)).digest()
    assert rc(tpm.execute(set_auth_policy(21, policy))) == SUCCESS
    tpm = power_on(platform)                                       # power cycle: persistent
    assert rc(tpm.execute(startup())) == SUCCESS
    assert tpm.perm.pcr_policies[22].digest == policy
    assert rc(tpm.execute(extend(20), 2)) == RC.AUTH_TYPE

    def send(c: bytes) -> bytes:
        return tpm.execute(c, 2)

    session = start_session(send, session_type=1)
    assert rc(send(cmd(CC.PolicyCommandCode,
                       struct.pack(">II", session.handle, CC.PCR_Extend)))) == SUCCESS
    (before,) = pcr_values(tpm.execute(pcr_read(ALG.SHA1, [20])))
    digest = struct.pack(">IH", 1, ALG.SHA1) + b"\x02" * 20
    result = call(send, CC.PCR_Extend, [(20, struct.pack(">I", 20))], digest,
                  [Use(session, auth=None)])
    assert result.rc == SUCCESS
    expected = hashlib.sha1(before + b"\x02" * 20).digest()
    assert pcr_values(tpm.execute(pcr_read(ALG.SHA1, [20]))) == [expected]


# ---------------------------------------------------------------------------- PP_Commands


def test_pp_commands_as_swtpm(pair: dict[str, Emulator]) -> None:
    """The physical presence list of a new TPM is TPM2_PP_Commands alone, and without physical
    presence (which neither platform asserts) TPM2_PP_Commands fails with TPM_RC_PP."""
    cases = [getcap(CAP.PP_COMMANDS), getcap(CAP.PP_COMMANDS, CC.PP_Commands + 1),
             pp_commands([CC.Clear], []), pp_commands([], [CC.PP_Commands]),
             pp_commands([], []), getcap(CAP.PP_COMMANDS)]
    answers = {kind: [emu.command(c) for c in cases] for kind, emu in pair.items()}
    assert answers["swtpm_py"] == answers["swtpm"]
    got = answers["swtpm_py"]
    assert cc_list(got[0]) == [CC.PP_Commands] and cc_list(got[1]) == []
    assert [rc(r) for r in got[2:5]] == [PP_S1] * 3


def test_pp_commands_with_physical_presence(platform: Platform) -> None:
    """With a platform that asserts physical presence: setList adds commands that may require
    it (others and unimplemented codes are ignored), clearList removes them but never
    TPM2_PP_Commands; the list is persistent."""
    platform.physical_presence = lambda: True  # type: ignore[attr-defined]
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    r = tpm.execute(pp_commands([CC.Clear, CC.PCR_Allocate, CC.GetRandom, 0x1999], []))
    assert rc(r) == SUCCESS
    assert cc_list(tpm.execute(getcap(CAP.PP_COMMANDS))) == sorted(
        c for c in (CC.Clear, CC.PCR_Allocate, CC.PP_Commands) if c in COMMANDS)
    assert rc(tpm.execute(pp_commands([], [CC.PP_Commands, CC.PCR_Allocate]))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert cc_list(tpm.execute(getcap(CAP.PP_COMMANDS))) == sorted(
        c for c in (CC.Clear, CC.PP_Commands) if c in COMMANDS)
    assert rc(tpm.execute(pp_commands([], [], b"wrong"))) == BAD_AUTH_S1


# ---------------------------------------------------------------------------- tpm2-tools


def _tool(emu: Emulator, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
    return subprocess.run(list(args), env=env, capture_output=True, text=True,
                          timeout=TOOLS_TIMEOUT)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tpm2_pcrallocate(tmp_path: Path, kind: str) -> None:
    """tpm2_pcrallocate sha1:none+sha256:all, then a TPM Reset: tpm2_getcap pcrs shows sha1
    without PCRs; the same on both emulators."""
    with Emulator(kind, tmp_path / "state").start() as emu:
        out = _tool(emu, "tpm2_pcrallocate", "sha1:none+sha256:all")
        assert out.returncode == 0, out.stderr
        before = _tool(emu, "tpm2_getcap", "pcrs")
        assert before.returncode == 0 and "sha1: [ 0, 1" in before.stdout
        # tpm2_shutdown's default Shutdown(STATE) is refused after an allocation (TPM_RC_TYPE
        # on swtpm); Shutdown(CLEAR) before the power cycle.
        assert _tool(emu, "tpm2_shutdown", "-c").returncode == 0
        assert emu.ctrl(CTRL_INIT, b"\0\0\0\0", 4) == b"\0\0\0\0"
        assert _tool(emu, "tpm2_startup", "-c").returncode == 0
        after = _tool(emu, "tpm2_getcap", "pcrs")
        assert after.returncode == 0, after.stderr
        lines = {line.split(":")[0].strip(" -"): line for line in after.stdout.splitlines()
                 if ":" in line}
        assert "0," not in lines["sha1"] and "sha256: [ 0, 1, 2" in lines["sha256"]
        assert "sha384: [ 0, 1" in lines["sha384"]


# ---------------------------------------------------------------------------- tpm2-pytss


@pytest.fixture
def esapi(any_emulator: Emulator):
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def test_pytss_pcr_admin(esapi: ESAPI) -> None:
    """pcr_allocate, pcr_set_auth_value, pcr_set_auth_policy and pp_commands through ESAPI,
    the values checked, on both emulators."""
    success, max_pcr, needed, available = esapi.pcr_allocate(
        TPML_PCR_SELECTION.parse("sha1:all+sha256:all+sha384:all+sha512:all"))
    assert (success, max_pcr, needed, available) == (1, 24, 24 * 164, 24 * 164)
    esapi.pcr_set_auth_value(ESYS_TR.PCR20, b"pcrauth")
    esapi.tr_set_auth(ESYS_TR.PCR21, b"wrong")
    with pytest.raises(TSS2_Exception) as info:
        esapi.pcr_extend(ESYS_TR.PCR21, _digests())
    assert info.value.rc & 0xFFF == BAD_AUTH_S1
    esapi.pcr_set_auth_policy(TPM2B_DIGEST(b"\x33" * 32), TPM2_ALG.SHA256, ESYS_TR.PCR22)
    with pytest.raises(TSS2_Exception) as info:
        esapi.pcr_set_auth_policy(TPM2B_DIGEST(b"\x33" * 32), TPM2_ALG.SHA256, ESYS_TR.PCR1)
    assert info.value.rc & 0xFFF == VALUE_P3
    with pytest.raises(TSS2_Exception) as info:
        esapi.pp_commands(TPML_CC([TPM2_CC.Clear]), TPML_CC([]), session1=ESYS_TR.PASSWORD)
    assert info.value.rc & 0xFFF == PP_S1
    more, data = esapi.get_capability(TPM2_CAP.PP_COMMANDS, 0, 10)
    assert [int(c) for c in data.data.ppCommands] == [CC.PP_Commands]


def _digests() -> TPML_DIGEST_VALUES:
    """One SHA-1 digest to extend."""
    return TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA1,
                                       digest=TPMU_HA(sha1=b"\x01" * 20))])
