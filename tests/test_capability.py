"""TPM2_GetCapability (Part 3 §30.2): truthful, generated from what is implemented.

In process (``Tpm.execute``): every capability against the registries and state it is generated
from, paging (propertyCount, moreData) against a single big request, the per-capability limits,
error codes, and failure mode. Over processes (``any_emulator``: swtpm_py and the reference
swtpm with the same argv): tpm2_getcap's outputs, every listed command implemented, tpm2-pytss
paging one entry at a time, and — with both emulators at once — the values and error codes
the two must share.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import TPM2_CAP

from swtpm_py import __version__
from swtpm_py.tpm import (MemoryStorage, Platform, Tpm, algorithms, contexts, core, crypto,
                          properties)
from swtpm_py.tpm.commands import capability
from swtpm_py.tpm.wire import TPMS_CAPABILITY_DATA
from swtpm_py.tpm.constants import ALG, CAP, CC, ECC_CURVE, HT, PT, PT_PCR, RC, RH
from swtpm_py.tpm.pcr import PCR_ATTRIBUTES, counts_update
from swtpm_py.tpm.registry import COMMANDS
from swtpm_py.tpm.state import Policy

from emulator import Emulator, recv_exact
from tpmcmd import power_on, cmd, rc, shutdown, startup

Send = Callable[[bytes], bytes]

#: TPMA_ALGORITHM of the algorithms swtpm_py implements, as swtpm 0.7.1 reports them
#: (measured with GetCapability(ALGS)); the TCG Algorithm Registry's classification.
SWTPM_ALG_ATTRIBUTES = {ALG.RSA: 0x9, ALG.SHA1: 0x4, ALG.HMAC: 0x104, ALG.AES: 0x2,
                        ALG.KEYEDHASH: 0x30C, ALG.XOR: 0x6, ALG.SHA256: 0x4, ALG.SHA384: 0x4,
                        ALG.SHA512: 0x4, ALG.RSASSA: 0x101, ALG.RSAES: 0x201,
                        ALG.RSAPSS: 0x101, ALG.OAEP: 0x201, ALG.ECDSA: 0x101, ALG.ECDH: 0x401,
                        ALG.ECSCHNORR: 0x101, ALG.ECDAA: 0x101, ALG.KDF1_SP800_108: 0x404,
                        ALG.ECC: 0x9,
                        ALG.SYMCIPHER: 0x8, ALG.CTR: 0x202, ALG.OFB: 0x202,
                        ALG.CBC: 0x202, ALG.CFB: 0x202, ALG.ECB: 0x202}
#: Fixed properties whose value is the same choice in swtpm 0.7.1 and swtpm_py.
SHARED_FIXED = {
    PT.FAMILY_INDICATOR: 0x322E3000, PT.LEVEL: 0, PT.REVISION: 164, PT.DAY_OF_YEAR: 75,
    PT.YEAR: 2021, PT.MANUFACTURER: 0x49424D00, PT.VENDOR_STRING_1: 0x53572020,
    PT.VENDOR_STRING_2: 0x2054504D, PT.VENDOR_TPM_TYPE: 1, PT.INPUT_BUFFER: 1024,
    PT.HR_TRANSIENT_MIN: 3, PT.HR_PERSISTENT_MIN: 7, PT.HR_LOADED_MIN: 3,
    PT.ACTIVE_SESSIONS_MAX: 64, PT.PCR_COUNT: 24, PT.PCR_SELECT_MIN: 3,
    PT.CONTEXT_GAP_MAX: 0xFFFF, PT.NV_COUNTERS_MAX: 0, PT.NV_INDEX_MAX: 2048, PT.MEMORY: 6,
    PT.CLOCK_UPDATE: 4096, PT.CONTEXT_HASH: ALG.SHA512, PT.ORDERLY_COUNT: 255,
    PT.MAX_COMMAND_SIZE: 4096, PT.MAX_RESPONSE_SIZE: 4096, PT.MAX_DIGEST: 64,
    PT.PS_FAMILY_INDICATOR: 0x322E3000, PT.PS_LEVEL: 0, PT.PS_REVISION: 164,
    PT.PS_DAY_OF_YEAR: 75, PT.PS_YEAR: 2021, PT.VENDOR_COMMANDS: 0, PT.NV_BUFFER_MAX: 1024,
    PT.MODES: 0, PT.MAX_CAP_BUFFER: 1024,
}
#: Variable properties of a fresh, started TPM that swtpm 0.7.1 and swtpm_py share.
SHARED_VARIABLE = {
    PT.PERMANENT: 0x400, PT.STARTUP_CLEAR: 0x8000000F, PT.HR_NV_INDEX: 0, PT.HR_LOADED: 0,
    PT.HR_LOADED_AVAIL: 3, PT.HR_ACTIVE: 0, PT.HR_ACTIVE_AVAIL: 64, PT.HR_TRANSIENT_AVAIL: 3,
    PT.HR_PERSISTENT: 0, PT.NV_COUNTERS: 0, PT.ALGORITHM_SET: 0, PT.LOCKOUT_COUNTER: 0,
    PT.MAX_AUTH_FAIL: 3, PT.LOCKOUT_INTERVAL: 1000, PT.LOCKOUT_RECOVERY: 1000,
    PT.NV_WRITE_RECOVERY: 0, PT.AUDIT_COUNTER_0: 0, PT.AUDIT_COUNTER_1: 0,
}
#: GetCapability(PCR_PROPERTIES) of the PC Client profile as swtpm 0.7.1 reports it.
PC_CLIENT_PCR_PROPERTIES = {
    PT_PCR.SAVE: "ffff00", PT_PCR.EXTEND_L0: "ffff81", PT_PCR.RESET_L0: "000081",
    PT_PCR.EXTEND_L1: "ffff91", PT_PCR.RESET_L1: "000081", PT_PCR.EXTEND_L2: "ffffff",
    PT_PCR.RESET_L2: "0000f1", PT_PCR.EXTEND_L3: "ffff9f", PT_PCR.RESET_L3: "000081",
    PT_PCR.EXTEND_L4: "ffff87", PT_PCR.RESET_L4: "00007e", PT_PCR.NO_INCREMENT: "0000e1",
    PT_PCR.DRTM_RESET: "00007e", PT_PCR.POLICY: "000070", PT_PCR.AUTH: "000070",
}
PERMANENT_HANDLES = [RH.OWNER, RH.NULL, RH.PW, RH.LOCKOUT, RH.ENDORSEMENT, RH.PLATFORM,
                     RH.PLATFORM_NV]
HIERARCHIES_WITH_POLICY = [RH.OWNER, RH.LOCKOUT, RH.ENDORSEMENT, RH.PLATFORM]


# ---------------------------------------------------------------------------- helpers


def getcap_cmd(cap: int, prop: int, count: int) -> bytes:
    """A TPM2_GetCapability command."""
    return cmd(CC.GetCapability, struct.pack(">III", cap, prop, count))


def getcap(send: Send, cap: int, prop: int = 0, count: int = 1000) -> tuple[bool, list]:
    """(moreData, list) of a successful GetCapability."""
    resp = send(getcap_cmd(cap, prop, count))
    assert rc(resp) == 0, f"GetCapability(0x{cap:x}, 0x{prop:x}, {count}): 0x{rc(resp):x}"
    assert resp[10] in (0, 1)
    data = TPMS_CAPABILITY_DATA.parse(resp[11:])
    assert data.capability == cap
    assert len(TPMS_CAPABILITY_DATA.build(data)) == len(resp) - 11
    return bool(resp[10]), list(data.data)


def getcap_rc(send: Send, cap: int, prop: int, count: int) -> int:
    """The response code of a GetCapability."""
    return rc(send(getcap_cmd(cap, prop, count)))


def key_of(cap: int, entry) -> int:
    """The property value an entry of ``cap`` stands at (the next page starts after it)."""
    if cap == CAP.ALGS:
        return entry.alg
    if cap in (CAP.COMMANDS,):
        return entry & 0xFFFF | entry & 0x20000000
    if cap == CAP.TPM_PROPERTIES:
        return entry.property
    if cap == CAP.PCR_PROPERTIES:
        return entry.tag
    if cap == CAP.AUTH_POLICIES:
        return entry.handle
    return int(entry)


def walk(send: Send, cap: int, start: int, step: int = 1) -> list:
    """Every entry of ``cap`` from ``start``, ``step`` entries per request, following
    moreData; each page must be non-empty while moreData says more follow."""
    out: list = []
    prop = start
    for _ in range(1000):
        more, page = getcap(send, cap, prop, step)
        assert len(page) <= step
        out += page
        if not more:
            return out
        assert page, "moreData YES but nothing returned"
        prop = key_of(cap, page[-1]) + 1
    raise AssertionError("moreData never ended")


def props(send: Send, start: int) -> dict[int, int]:
    """The TPM properties of the group of ``start`` as {property: value}."""
    more, page = getcap(send, CAP.TPM_PROPERTIES, start, 1000)
    assert not more
    return {p.property: p.value for p in page}


# ---------------------------------------------------------------------------- commands


def test_commands_are_the_registry(tpm: Tpm) -> None:
    """The command list is the registry: every declared command with its TPMA_CC, in order."""
    more, listed = getcap(tpm.execute, CAP.COMMANDS)
    assert not more
    assert listed == [COMMANDS[c].attributes for c in sorted(COMMANDS)]
    assert [a & 0xFFFF for a in listed] == sorted(COMMANDS)
    for attrs in listed:
        spec = COMMANDS[attrs & 0xFFFF]
        assert attrs >> 25 & 7 == len(spec.handles)
        assert bool(attrs & 1 << 22) == spec.nv
        assert bool(attrs & 1 << 28) == spec.response_handle
    p = props(tpm.execute, PT.FAMILY_INDICATOR)
    assert p[PT.TOTAL_COMMANDS] == p[PT.LIBRARY_COMMANDS] == len(COMMANDS)
    assert p[PT.VENDOR_COMMANDS] == 0


def test_the_testing_commands_are_listed(tpm: Tpm) -> None:
    """This issue's commands are registered, with the attributes Part 3 gives them."""
    _, listed = getcap(tpm.execute, CAP.COMMANDS)
    codes = {a & 0xFFFF: a for a in listed}
    for code in (CC.GetCapability, CC.SelfTest, CC.IncrementalSelfTest, CC.GetTestResult,
                 CC.TestParms):
        assert codes[code] == code  # no handles, no NV, no response handle


def test_listed_commands_answer_and_unlisted_ones_do_not(tpm: Tpm) -> None:
    """Every listed command is implemented (anything but TPM_RC_COMMAND_CODE for a bare
    header), and every TPM_CC that is not listed answers TPM_RC_COMMAND_CODE."""
    _, listed = getcap(tpm.execute, CAP.COMMANDS)
    listed_codes = {a & 0xFFFF for a in listed}
    for code in listed_codes:
        assert rc(tpm.execute(cmd(code))) != RC.COMMAND_CODE, hex(code)
    unlisted = [c for c in CC if c not in listed_codes]
    assert unlisted
    for code in unlisted:
        assert rc(tpm.execute(cmd(code))) == RC.COMMAND_CODE, CC(code).name


def test_command_start_values(tpm: Tpm) -> None:
    """The list starts at the given code; codes with bits outside the index and TPMA_CC.V
    list nothing; vendor codes (V set) list the vendor commands (none)."""
    _, from_getcap = getcap(tpm.execute, CAP.COMMANDS, CC.GetCapability)
    assert [a & 0xFFFF for a in from_getcap] == [c for c in sorted(COMMANDS)
                                                 if c >= CC.GetCapability]
    for start in (0x1017A, 0x8000017A, 0x40000000, 0x20000000, 0xFFFF, 0xFFFFFFFF):
        assert getcap(tpm.execute, CAP.COMMANDS, start) == (False, [])


def test_pp_and_audit_commands(tpm: Tpm) -> None:
    """A new TPM requires physical presence for TPM2_PP_Commands and audits
    TPM2_SetCommandCodeAuditStatus (as swtpm); the audit list is the persistent state's."""
    assert getcap(tpm.execute, CAP.PP_COMMANDS) == (False, [CC.PP_Commands])
    assert getcap(tpm.execute, CAP.AUDIT_COMMANDS) == (False, [CC.SetCommandCodeAuditStatus])
    tpm.perm.audit_commands = [CC.PCR_Extend, CC.GetRandom, CC.Hash]
    assert getcap(tpm.execute, CAP.AUDIT_COMMANDS) == (
        False, [CC.GetRandom, CC.Hash, CC.PCR_Extend])
    assert getcap(tpm.execute, CAP.AUDIT_COMMANDS, CC.GetRandom + 1, 1) == (True, [CC.Hash])


# ---------------------------------------------------------------------------- algorithms


def test_algorithms_are_the_registry(tpm: Tpm) -> None:
    """The algorithm list is the registry, in TPM_ALG_ID order, with each algorithm's
    TPMA_ALGORITHM; the values agree with swtpm's for the same algorithms."""
    more, listed = getcap(tpm.execute, CAP.ALGS)
    assert not more
    assert [(a.alg, a.algProperties) for a in listed] == [
        (a.alg, int(a.attributes)) for a in algorithms.implemented()]
    assert {a.alg: a.algProperties for a in listed} == SWTPM_ALG_ATTRIBUTES


def test_only_algorithms_a_command_can_use_are_listed(tpm: Tpm) -> None:
    """Nothing is listed before it is implemented (no MGF1, SM2, CMAC ...); the hashes
    are those of the banks and of TPM2_Hash; every listed hash is accepted by TPM2_Hash."""
    listed = {a.alg for a in getcap(tpm.execute, CAP.ALGS)[1]}
    for alg in (ALG.MGF1, ALG.SM2, ALG.CMAC, ALG.NULL):
        assert alg not in listed
    hashes = [a for a in listed if algorithms.ALGORITHMS[a].attributes == 0x4]
    assert sorted(hashes) == [ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512]
    for alg in hashes:
        resp = tpm.execute(cmd(CC.Hash, struct.pack(">H", 3) + b"abc"
                               + struct.pack(">HI", alg, RH.NULL)))
        assert rc(resp) == 0
        assert resp[12:12 + len(hashlib.new(ALG(alg).name.lower()).digest())] == \
            hashlib.new(ALG(alg).name.lower(), b"abc").digest()


def test_algorithm_start_is_a_tpm_alg_id(tpm: Tpm) -> None:
    """Part 3 §30.2 casts the property to TPM_ALG_ID: only its low 16 bits count."""
    assert getcap(tpm.execute, CAP.ALGS, ALG.SHA256)[1][0].alg == ALG.SHA256
    assert getcap(tpm.execute, CAP.ALGS, 0x10000 + ALG.SHA256)[1][0].alg == ALG.SHA256
    assert getcap(tpm.execute, CAP.ALGS, ALG.ECB + 1) == (False, [])


def test_registering_an_algorithm_lists_it(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """One registration makes an algorithm appear, in order, with its attributes."""
    monkeypatch.setattr(algorithms, "ALGORITHMS", dict(algorithms.ALGORITHMS))
    algorithms.register(algorithms.Algorithm(ALG.TDES, algorithms.AlgAttr.SYMMETRIC))
    listed = getcap(tpm.execute, CAP.ALGS)[1]
    assert [a.alg for a in listed][:3] == [ALG.RSA, ALG.TDES, ALG.SHA1]
    assert listed[1].algProperties == 0x2


# ---------------------------------------------------------------------------- paging

PAGED = [(CAP.ALGS, 0), (CAP.HANDLES, 0), (CAP.HANDLES, HT.PERMANENT << 24), (CAP.COMMANDS, 0),
         (CAP.TPM_PROPERTIES, PT.FAMILY_INDICATOR), (CAP.TPM_PROPERTIES, PT.PERMANENT),
         (CAP.PCR_PROPERTIES, 0), (CAP.AUTH_POLICIES, HT.PERMANENT << 24)]


@pytest.mark.parametrize("cap,start", PAGED)
@pytest.mark.parametrize("step", [1, 2, 7])
def test_paging_gives_what_one_request_gives(tpm: Tpm, cap: int, start: int,
                                             step: int) -> None:
    """Walking a capability ``step`` entries at a time, following moreData, yields exactly
    the entries of one large request."""
    more, whole = getcap(tpm.execute, cap, start, 10000)
    assert not more and whole
    assert walk(tpm.execute, cap, start, step) == whole


@pytest.mark.parametrize("cap,start", PAGED + [(CAP.PCRS, 0)])
def test_more_data_semantics(tpm: Tpm, cap: int, start: int) -> None:
    """moreData is YES exactly when entries remain: count 0 gives none and YES; a count equal
    to what is left gives all and NO."""
    _, whole = getcap(tpm.execute, cap, start)
    assert getcap(tpm.execute, cap, start, 0) == (True, [])
    assert getcap(tpm.execute, cap, start, len(whole)) == (False, whole)
    if cap != CAP.PCRS:  # the allocation is one value
        assert getcap(tpm.execute, cap, start, len(whole) - 1) == (True, whole[:-1])


def test_empty_lists_have_no_more_data(tpm: Tpm) -> None:
    """Where nothing is at or after the start, the answer is empty and NO, whatever the
    count."""
    for cap, start in [(CAP.ECC_CURVES, ECC_CURVE.BN_P256 + 1),
                       (CAP.HANDLES, HT.TRANSIENT << 24),
                       (CAP.HANDLES, 24), (CAP.PP_COMMANDS, CC.PP_Commands + 1),
                       (CAP.PCR_PROPERTIES, PT_PCR.AUTH + 1), (CAP.ACT, 0x40000110)]:
        for count in (0, 1, 0xFFFFFFFF):
            assert getcap(tpm.execute, cap, start, count) == (False, [])


def test_counts_are_capped_to_what_fits(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """propertyCount above the per-capability maximum returns that maximum and moreData YES,
    and the response stays within MAX_CAP_BUFFER (Part 3 §30.2)."""
    many = [0x80000000 + i for i in range(capability.MAX_CAP_HANDLES + 10)]
    monkeypatch.setitem(properties.HANDLE_SOURCES, HT.TRANSIENT, lambda t: many)
    resp = tpm.execute(getcap_cmd(CAP.HANDLES, HT.TRANSIENT << 24, 0xFFFFFFFF))
    assert rc(resp) == 0 and resp[10] == 1
    page = TPMS_CAPABILITY_DATA.parse(resp[11:]).data
    assert list(page) == many[:capability.MAX_CAP_HANDLES]
    assert len(resp) - 11 <= properties.MAX_CAP_BUFFER
    assert walk(tpm.execute, CAP.HANDLES, HT.TRANSIENT << 24, 1000) == many
    assert capability.MAX_CAP_HANDLES == capability.MAX_CAP_CC == 254
    assert capability.MAX_TPM_PROPERTIES == capability.MAX_PCR_PROPERTIES == 127
    assert capability.MAX_CAP_ALGS == 169 and capability.MAX_TAGGED_POLICIES == 14


# ---------------------------------------------------------------------------- properties


def test_fixed_properties(tpm: Tpm) -> None:
    """The fixed group: swtpm's values where the choice is the same, the implementation's own
    numbers elsewhere."""
    p = props(tpm.execute, 0)
    assert set(p) == {q for q in properties.PROPERTIES if properties.is_fixed(q)}
    for prop, value in SHARED_FIXED.items():
        assert p[prop] == value, prop.name
    assert p[PT.FAMILY_INDICATOR].to_bytes(4, "big") == b"2.0\x00"
    assert p[PT.MANUFACTURER].to_bytes(4, "big") == b"IBM\x00"
    vendor = b"".join(p[PT.VENDOR_STRING_1 + i].to_bytes(4, "big") for i in range(4))
    assert vendor == b"SW   TPMswtpm_py"
    major, minor, patch = (int(n) for n in __version__.split(".")[:3])
    assert p[PT.FIRMWARE_VERSION_1] == major << 16 | minor
    assert p[PT.FIRMWARE_VERSION_2] == patch << 16
    assert p[PT.MAX_COMMAND_SIZE] == core.MAX_COMMAND_SIZE
    assert p[PT.MAX_RESPONSE_SIZE] == core.MAX_RESPONSE_SIZE
    # Object contexts are AES-256 encrypted (swtpm_py.tpm.contexts); no session contexts
    # yet; no ECC: no split signing.
    assert (p[PT.CONTEXT_SYM], p[PT.CONTEXT_SYM_SIZE]) == (ALG.AES, 256)
    assert p[PT.MAX_OBJECT_CONTEXT] == contexts.MAX_OBJECT_CONTEXT
    assert p[PT.MAX_SESSION_CONTEXT] == contexts.MAX_OBJECT_CONTEXT
    assert p[PT.SPLIT_MAX] == 0


def test_capacity_drives_the_hr_properties(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """TPM_PT_HR_*_MIN, ACTIVE_SESSIONS_MAX and the *_AVAIL values come from Capacity."""
    cap = properties.Capacity(loaded_objects=5, loaded_sessions=4, active_sessions=9,
                              persistent_min=2, nv_bytes=10 * 2048)
    monkeypatch.setattr(properties, "CAPACITY", cap)
    f, v = props(tpm.execute, PT.FAMILY_INDICATOR), props(tpm.execute, PT.PERMANENT)
    assert (f[PT.HR_TRANSIENT_MIN], f[PT.HR_LOADED_MIN], f[PT.ACTIVE_SESSIONS_MAX],
            f[PT.HR_PERSISTENT_MIN]) == (5, 4, 9, 2)
    assert (v[PT.HR_TRANSIENT_AVAIL], v[PT.HR_LOADED_AVAIL], v[PT.HR_ACTIVE_AVAIL],
            v[PT.HR_PERSISTENT_AVAIL]) == (5, 4, 9, 10)
    # Counter indices fit in what is left after room for the two guaranteed persistent objects.
    assert v[PT.NV_COUNTERS_AVAIL] == (8 * 2048) // (cap.nv_index_overhead + 8)


def test_variable_properties_of_a_fresh_tpm(tpm: Tpm) -> None:
    """The variable group of a manufactured, started TPM."""
    p = props(tpm.execute, PT.PERMANENT)
    assert set(p) == {q for q in properties.PROPERTIES if not properties.is_fixed(q)}
    for prop, value in SHARED_VARIABLE.items():
        assert p[prop] == value, prop.name
    assert p[PT.LOADED_CURVES] == len(algorithms.ECC_CURVES) == 4
    assert p[PT.HR_PERSISTENT_AVAIL] == properties.CAPACITY.nv_bytes // 2048


def test_permanent_follows_the_persistent_data(tpm: Tpm) -> None:
    """TPMA_PERMANENT: the auth-set flags, disableClear and inLockout follow the state."""
    def permanent() -> int:
        return props(tpm.execute, PT.PERMANENT)[PT.PERMANENT]

    assert permanent() == 0x400  # tpmGeneratedEPS
    tpm.perm.owner_auth = b"owner"
    assert permanent() == 0x401
    tpm.perm.endorsement_auth, tpm.perm.lockout_auth = b"e", b"l"
    tpm.perm.disable_clear = True
    assert permanent() == 0x507
    tpm.perm.failed_tries = tpm.perm.max_tries
    assert permanent() == 0x707
    v = props(tpm.execute, PT.PERMANENT)
    assert v[PT.LOCKOUT_COUNTER] == tpm.perm.max_tries
    tpm.perm.max_tries, tpm.perm.recovery_time, tpm.perm.lockout_recovery = 10, 7, 86400
    v = props(tpm.execute, PT.PERMANENT)
    assert (v[PT.MAX_AUTH_FAIL], v[PT.LOCKOUT_INTERVAL], v[PT.LOCKOUT_RECOVERY]) == (10, 7, 86400)
    assert not v[PT.PERMANENT] & 0x200


def test_startup_clear_follows_enables_and_orderliness(platform: Platform) -> None:
    """TPMA_STARTUP_CLEAR: the hierarchy enables, and orderly only when the last Startup
    followed an orderly Shutdown (a fresh TPM counts as orderly, as swtpm)."""
    tpm = power_on(platform)
    tpm.execute(startup())
    assert props(tpm.execute, PT.PERMANENT)[PT.STARTUP_CLEAR] == 0x8000000F
    tpm.vol.state_clear.sh_enable = False
    tpm.vol.ph_enable = False
    assert props(tpm.execute, PT.PERMANENT)[PT.STARTUP_CLEAR] == 0x8000000C
    tpm = power_on(platform)  # power lost without Shutdown
    tpm.execute(startup())
    assert props(tpm.execute, PT.PERMANENT)[PT.STARTUP_CLEAR] == 0x0000000F
    assert rc(tpm.execute(shutdown())) == 0
    tpm = power_on(platform)
    tpm.execute(startup())
    assert props(tpm.execute, PT.PERMANENT)[PT.STARTUP_CLEAR] == 0x8000000F


def test_groups_are_not_mixed(tpm: Tpm) -> None:
    """A request stops at the end of its group (as swtpm): the fixed group ends with NO even
    though variable properties exist; a start between groups, or past the last, is empty."""
    assert getcap(tpm.execute, CAP.TPM_PROPERTIES, PT.MAX_CAP_BUFFER, 5) == (
        False, [dict(property=PT.MAX_CAP_BUFFER, value=1024)])
    for start in (PT.MAX_CAP_BUFFER + 1, 0x1FF, PT.AUDIT_COUNTER_1 + 1, 0x300, 0xFFFFFFFF):
        assert getcap(tpm.execute, CAP.TPM_PROPERTIES, start, 5) == (False, [])
    more, page = getcap(tpm.execute, CAP.TPM_PROPERTIES, 0, 1)
    assert more and page[0].property == PT.FAMILY_INDICATOR
    _, gap = getcap(tpm.execute, CAP.TPM_PROPERTIES, 0x115, 1)
    assert gap[0].property == PT.NV_COUNTERS_MAX  # 0x115 is not defined


def test_a_provider_replaces_a_value(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature module reports its state by providing the property (e.g. command audit)."""
    monkeypatch.setattr(properties, "PROPERTIES", dict(properties.PROPERTIES))
    properties.provide(PT.AUDIT_COUNTER_1, lambda t: t.perm.reset_count + 41)
    assert props(tpm.execute, PT.PERMANENT)[PT.AUDIT_COUNTER_1] == 42
    with pytest.raises(KeyError):
        properties.provide(0x115, lambda t: 0)  # type: ignore[arg-type]


def test_nv_usage_drives_the_avail_values(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """HR_PERSISTENT_AVAIL and NV_COUNTERS(_AVAIL) follow the NV module's usage report."""
    cap = properties.CAPACITY
    monkeypatch.setattr(properties, "_nv_usage",
                        lambda t: properties.NvUsage(bytes_used=cap.nv_bytes - 3 * 2048,
                                                     counters=4))
    v = props(tpm.execute, PT.PERMANENT)
    assert v[PT.HR_PERSISTENT_AVAIL] == 3
    assert v[PT.NV_COUNTERS] == 4
    assert v[PT.NV_COUNTERS_AVAIL] == 0  # the room left is kept for persistent objects


def test_firmware_version_encoding() -> None:
    """major.minor in FIRMWARE_VERSION_1, patch in the high half of FIRMWARE_VERSION_2."""
    assert properties.firmware_version("1.2.3") == (0x00010002, 0x00030000)
    assert properties.firmware_version("0.10.0rc1") == (0x0000000A, 0)
    assert properties.chars("SW  ") == 0x53572020
    with pytest.raises(ValueError):
        properties.chars("toolong")


# ---------------------------------------------------------------------------- handles


def test_pcr_and_permanent_handles(tpm: Tpm) -> None:
    """PCR handles 0-23; the permanent handles the TPM implements, each of which (but the
    password session) resolves as a command handle."""
    assert getcap(tpm.execute, CAP.HANDLES, 0) == (False, list(range(24)))
    assert getcap(tpm.execute, CAP.HANDLES, 0x17, 1) == (False, [0x17])
    assert getcap(tpm.execute, CAP.HANDLES, 0xFFFFFF) == (False, [])
    assert getcap(tpm.execute, CAP.HANDLES, HT.PERMANENT << 24) == (False, PERMANENT_HANDLES)
    assert getcap(tpm.execute, CAP.HANDLES, RH.OWNER + 1) == (False, PERMANENT_HANDLES[1:])
    for handle in PERMANENT_HANDLES:
        if handle != RH.PW:
            tpm.check_handle_loaded(handle)


def test_other_handle_types_come_from_their_sources(tpm: Tpm,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Transient, persistent, NV and session handles are listed from the registered sources,
    and the TPM_PT_HR_* counts agree with the lists."""
    for htype in (HT.TRANSIENT, HT.PERSISTENT, HT.NV_INDEX, HT.HMAC_SESSION,
                  HT.POLICY_SESSION):
        assert getcap(tpm.execute, CAP.HANDLES, htype << 24) == (False, [])
    held = {HT.TRANSIENT: [0x80000001, 0x80000000], HT.PERSISTENT: [0x81000001],
            HT.NV_INDEX: [0x01C00002, 0x01500000],
            properties.LOADED_SESSION: [0x03000001, 0x02000000],
            properties.SAVED_SESSION: [0x02000005]}
    for htype, hs in held.items():
        monkeypatch.setitem(properties.HANDLE_SOURCES, htype, lambda t, hs=hs: hs)
    assert getcap(tpm.execute, CAP.HANDLES, HT.TRANSIENT << 24)[1] == [0x80000000, 0x80000001]
    assert getcap(tpm.execute, CAP.HANDLES, 0x80000001)[1] == [0x80000001]
    assert getcap(tpm.execute, CAP.HANDLES, HT.NV_INDEX << 24)[1] == [0x01500000, 0x01C00002]
    # Loaded sessions of both kinds, ordered by their low 24 bits.
    assert getcap(tpm.execute, CAP.HANDLES, 0x02000000)[1] == [0x02000000, 0x03000001]
    assert getcap(tpm.execute, CAP.HANDLES, 0x03000000)[1] == [0x02000005]
    v = props(tpm.execute, PT.PERMANENT)
    assert (v[PT.HR_TRANSIENT_AVAIL], v[PT.HR_PERSISTENT], v[PT.HR_NV_INDEX]) == (1, 1, 2)
    assert (v[PT.HR_LOADED], v[PT.HR_LOADED_AVAIL]) == (2, 1)
    assert (v[PT.HR_ACTIVE], v[PT.HR_ACTIVE_AVAIL]) == (3, 61)


def test_a_handle_type_registers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each handle type has one source."""
    monkeypatch.setattr(properties, "HANDLE_SOURCES", dict(properties.HANDLE_SOURCES))
    with pytest.raises(RuntimeError):  # registered by the object store
        properties.register_handle_source(HT.TRANSIENT, lambda t: [])
    with pytest.raises(RuntimeError):
        properties.register_handle_source(HT.PCR, lambda t: [])


@pytest.mark.parametrize("start", [0x04000000, 0x41000000, 0x90000000, 0xFF000000])
def test_handles_of_an_unknown_type(tpm: Tpm, start: int) -> None:
    """A handle type GetCapability does not list is TPM_RC_HANDLE on the property
    (parameter 2), as swtpm answers."""
    assert getcap_rc(tpm.execute, CAP.HANDLES, start, 1) == RC.HANDLE | 0x40 | 2 << 8


# ---------------------------------------------------------------------------- PCRs


def test_pcrs_are_the_allocation(platform: Platform) -> None:
    """TPM_CAP_PCRS reports every bank, those in use with all 24 PCRs and the others with
    none (as swtpm after TPM2_PCR_Allocate); a changed allocation shows after the next TPM
    Reset. The property must be zero."""
    tpm = power_on(platform)
    tpm.execute(startup())
    every = b"\xff\xff\xff"
    assert [(s.hash, s.pcrSelect) for s in getcap(tpm.execute, CAP.PCRS)[1]] == [
        (ALG.SHA1, every), (ALG.SHA256, every), (ALG.SHA384, every), (ALG.SHA512, every)]
    tpm.perm.pcr_allocation = [ALG.SHA256]
    tpm.execute(shutdown())
    tpm = power_on(platform)
    tpm.execute(startup())
    assert [(s.hash, s.pcrSelect) for s in getcap(tpm.execute, CAP.PCRS)[1]] == [
        (ALG.SHA1, bytes(3)), (ALG.SHA256, every), (ALG.SHA384, bytes(3)),
        (ALG.SHA512, bytes(3))]
    assert getcap_rc(tpm.execute, CAP.PCRS, 1, 1) == RC.VALUE | 0x40 | 2 << 8


def test_pcr_properties_are_the_profile(tpm: Tpm) -> None:
    """TPM_CAP_PCR_PROPERTIES: every TPM_PT_PCR tag with the PCRs the profile table gives it
    (the PC Client values swtpm reports)."""
    _, listed = getcap(tpm.execute, CAP.PCR_PROPERTIES)
    got = {p.tag: p.pcrSelect.hex() for p in listed}
    assert [p.tag for p in listed] == sorted(got)
    assert {t: v for t, v in got.items() if t in PC_CLIENT_PCR_PROPERTIES} == \
        PC_CLIENT_PCR_PROPERTIES
    assert got[PT_PCR.POLICY] == got[PT_PCR.AUTH] == "000070"

    def bitmap(pcrs: list[int]) -> str:
        return sum(1 << p for p in pcrs).to_bytes(3, "little").hex()

    assert got[PT_PCR.SAVE] == bitmap([i for i, a in enumerate(PCR_ATTRIBUTES) if a.state_save])
    assert got[PT_PCR.NO_INCREMENT] == bitmap([i for i in range(24) if not counts_update(i)])
    _, tail = getcap(tpm.execute, CAP.PCR_PROPERTIES, PT_PCR.RESET_L4 + 1)
    assert [p.tag for p in tail] == [PT_PCR.NO_INCREMENT, PT_PCR.DRTM_RESET, PT_PCR.POLICY,
                                     PT_PCR.AUTH]


# ---------------------------------------------------------------------------- policies, curves, ACT


def test_auth_policies(tpm: Tpm) -> None:
    """Each hierarchy with an authPolicy field is listed: TPM_ALG_NULL and no digest when
    unset (as swtpm), the policy when set. The property must be a permanent handle."""
    _, listed = getcap(tpm.execute, CAP.AUTH_POLICIES, HT.PERMANENT << 24)
    assert [(p.handle, p.policyHash.hashAlg, p.policyHash.digest) for p in listed] == [
        (h, ALG.NULL, b"") for h in HIERARCHIES_WITH_POLICY]
    digest = hashlib.sha256(b"policy").digest()
    tpm.perm.endorsement_policy = Policy(ALG.SHA256, digest)
    _, listed = getcap(tpm.execute, CAP.AUTH_POLICIES, RH.LOCKOUT + 1)
    assert [(p.handle, p.policyHash.hashAlg, p.policyHash.digest) for p in listed] == [
        (RH.ENDORSEMENT, ALG.SHA256, digest), (RH.PLATFORM, ALG.NULL, b"")]
    assert getcap(tpm.execute, CAP.AUTH_POLICIES, RH.PLATFORM + 1) == (False, [])
    for bad in (0, 0x3FFFFFFF, 0x41000000, 0x81000000):
        assert getcap_rc(tpm.execute, CAP.AUTH_POLICIES, bad, 1) == RC.VALUE | 0x40 | 2 << 8


def test_ecc_curves(tpm: Tpm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NIST curves and BN P-256, the curves ECC keys use; registered curves are listed
    in order and counted by TPM_PT_LOADED_CURVES."""
    assert getcap(tpm.execute, CAP.ECC_CURVES) == (False, [ECC_CURVE.NIST_P256,
                                                           ECC_CURVE.NIST_P384,
                                                           ECC_CURVE.NIST_P521,
                                                           ECC_CURVE.BN_P256])
    monkeypatch.setattr(algorithms, "ECC_CURVES", {})
    algorithms.register_curve(ECC_CURVE.NIST_P384, 384)
    algorithms.register_curve(ECC_CURVE.NIST_P256, 256)
    assert getcap(tpm.execute, CAP.ECC_CURVES) == (False, [ECC_CURVE.NIST_P256,
                                                           ECC_CURVE.NIST_P384])
    assert getcap(tpm.execute, CAP.ECC_CURVES, 0x10000 + 4) == (False, [ECC_CURVE.NIST_P384])
    assert props(tpm.execute, PT.PERMANENT)[PT.LOADED_CURVES] == 2


def test_act(tpm: Tpm) -> None:
    """TPM_CAP_ACT: no authenticated countdown timer; the property must be an ACT handle."""
    for start in (0x40000110, 0x4000011F):
        assert getcap(tpm.execute, CAP.ACT, start) == (False, [])
    for bad in (0x40000000, 0x40000120, 0x41000000):
        assert getcap_rc(tpm.execute, CAP.ACT, bad, 1) == RC.VALUE | 0x40 | 2 << 8


# ---------------------------------------------------------------------------- errors, failure mode


@pytest.mark.parametrize("body,code", [
    (struct.pack(">III", 0xB, 0, 1), RC.VALUE | 0x40 | 1 << 8),  # not a TPM_CAP
    (struct.pack(">III", 0xFF, 0, 1), RC.VALUE | 0x40 | 1 << 8),
    (struct.pack(">III", CAP.VENDOR_PROPERTY, 0, 1), RC.VALUE | 0x40 | 1 << 8),
    (struct.pack(">I", 0xB), RC.VALUE | 0x40 | 1 << 8),  # capability checked first
    (struct.pack(">I", CAP.TPM_PROPERTIES), RC.INSUFFICIENT | 0x40 | 2 << 8),
    (struct.pack(">II", CAP.TPM_PROPERTIES, 0x100), RC.INSUFFICIENT | 0x40 | 3 << 8),
    (b"", RC.INSUFFICIENT | 0x40 | 1 << 8),
    (struct.pack(">IIIB", CAP.TPM_PROPERTIES, 0x100, 1, 0), RC.SIZE),
])
def test_malformed_requests(tpm: Tpm, body: bytes, code: int) -> None:
    """Error codes of GetCapability's parameters (measured on swtpm 0.7.1)."""
    assert rc(tpm.execute(cmd(CC.GetCapability, body))) == code


def test_failure_mode_answers_what_the_implementation_defines(tpm: Tpm) -> None:
    """In failure mode GetCapability still lists algorithms, commands, fixed properties, PCR
    properties, curves, PCR and permanent handles, but refuses what reports state."""
    healthy = {(cap, start): getcap(tpm.execute, cap, start) for cap, start in [
        (CAP.ALGS, 0), (CAP.COMMANDS, 0), (CAP.PP_COMMANDS, 0), (CAP.TPM_PROPERTIES, 0),
        (CAP.PCR_PROPERTIES, 0), (CAP.ECC_CURVES, 0), (CAP.HANDLES, 0),
        (CAP.HANDLES, HT.PERMANENT << 24), (CAP.ACT, 0x40000110)]}
    tpm.failure = "injected for the test"
    for (cap, start), answer in healthy.items():
        assert getcap(tpm.execute, cap, start) == answer
    for cap, start in [(CAP.TPM_PROPERTIES, PT.PERMANENT), (CAP.PCRS, 0),
                       (CAP.AUDIT_COMMANDS, 0), (CAP.AUTH_POLICIES, HT.PERMANENT << 24),
                       (CAP.HANDLES, HT.TRANSIENT << 24), (CAP.HANDLES, HT.NV_INDEX << 24)]:
        assert getcap_rc(tpm.execute, cap, start, 10) == RC.FAILURE
    assert rc(tpm.execute(cmd(CC.ReadClock))) == RC.FAILURE


def test_capability_data_round_trips() -> None:
    """The response structure parses and builds back, including the NULL policy arm."""
    for value in [dict(capability=CAP.AUTH_POLICIES, data=[
                      dict(handle=RH.OWNER, policyHash=dict(hashAlg=ALG.NULL, digest=b"")),
                      dict(handle=RH.PLATFORM, policyHash=dict(hashAlg=ALG.SHA1,
                                                               digest=b"\x01" * 20))]),
                  dict(capability=CAP.ACT, data=[dict(handle=0x40000110, timeout=5,
                                                      attributes=1)]),
                  dict(capability=CAP.ALGS, data=[dict(alg=4, algProperties=4)])]:
        raw = TPMS_CAPABILITY_DATA.build(value)
        assert TPMS_CAPABILITY_DATA.build(TPMS_CAPABILITY_DATA.parse(raw)) == raw


# ============================================================================ over processes


def send_all(emu: Emulator, commands: list[bytes], timeout: float = 30.0) -> list[bytes]:
    """Send ``commands`` one after the other on one data connection (as a TSS keeping its
    connection open does) and return the responses; one connection instead of one per
    command keeps the test from filling the host with TIME_WAIT sockets."""
    responses = []
    with socket.create_connection(("127.0.0.1", emu.port), timeout=timeout) as sock:
        for command in commands:
            sock.sendall(command)
            header = recv_exact(sock, 10)
            size = struct.unpack(">I", header[2:6])[0]
            responses.append(header + recv_exact(sock, size - 10))
    return responses


def tool_yaml(emu: Emulator, *args: str) -> object:
    """Run ``tpm2_getcap`` (or another tool) against ``emu`` and parse its YAML output."""
    proc = subprocess.run([args[0], "-T", emu.tcti, *args[1:]], capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return yaml.safe_load(proc.stdout)


def fresh_tpm() -> Tpm:
    """An in-process TPM in the state a freshly started emulator is in."""
    t = power_on(Platform(storage=MemoryStorage()))
    assert rc(t.execute(startup())) == 0
    return t


def test_tool_commands(any_emulator: Emulator) -> None:
    """tpm2_getcap commands: swtpm_py lists exactly its registry; on either TPM every listed
    command is implemented and an unlisted TPM_CC answers TPM_RC_COMMAND_CODE."""
    out = tool_yaml(any_emulator, "tpm2_getcap", "commands")
    assert isinstance(out, dict)
    values = sorted((entry["value"] for entry in out.values()), key=lambda v: v & 0xFFFF)
    if any_emulator.kind == "swtpm_py":
        assert values == [COMMANDS[c].attributes for c in sorted(COMMANDS)]
    codes = sorted({v & 0xFFFF for v in values})
    for code, resp in zip(codes, send_all(any_emulator, [cmd(code) for code in codes])):
        assert rc(resp) != RC.COMMAND_CODE, hex(code)
    unlisted = [c for c in CC if c not in codes][:5] + [0x1FF]
    for code, resp in zip(unlisted, send_all(any_emulator, [cmd(code) for code in unlisted])):
        assert rc(resp) == RC.COMMAND_CODE, hex(code)


def test_tool_algorithms(any_emulator: Emulator) -> None:
    """tpm2_getcap algorithms: swtpm_py lists its registry; the algorithms both implement have
    the same attributes on either TPM."""
    out = tool_yaml(any_emulator, "tpm2_getcap", "algorithms")
    assert isinstance(out, dict)
    listed = {entry["value"]: entry for entry in out.values()}
    if any_emulator.kind == "swtpm_py":
        assert sorted(listed) == [a.alg for a in algorithms.implemented()]
    for alg, attrs in SWTPM_ALG_ATTRIBUTES.items():
        entry = listed[alg]
        assert entry["hash"] == bool(attrs & 0x4)
        assert entry["symmetric"] == bool(attrs & 0x2)
        assert entry["object"] == bool(attrs & 0x8)
        assert entry["signing"] == bool(attrs & 0x100)
        assert entry["encrypting"] == bool(attrs & 0x200)
        assert entry["method"] == bool(attrs & 0x400)


def tool_properties(emu: Emulator, which: str) -> dict[str, object]:
    """tpm2_getcap properties-fixed|properties-variable as {TPM2_PT_* name: value}."""
    out = tool_yaml(emu, "tpm2_getcap", f"properties-{which}")
    assert isinstance(out, dict)
    return out


def test_tool_properties_fixed(any_emulator: Emulator) -> None:
    """tpm2_getcap properties-fixed: the shared values on either TPM; on swtpm_py, every
    value the in-process TPM computes."""
    out = tool_properties(any_emulator, "fixed")
    assert out["TPM2_PT_FAMILY_INDICATOR"]["value"] == "2.0"
    assert out["TPM2_PT_MANUFACTURER"]["value"] == "IBM"
    assert out["TPM2_PT_VENDOR_STRING_1"]["value"] == "SW"
    assert out["TPM2_PT_REVISION"]["value"] == 1.64
    for prop, value in SHARED_FIXED.items():
        name = f"TPM2_PT_{prop.name}"
        if name in out:  # tpm2-tools 5.4 does not print TPM_PT_MAX_CAP_BUFFER
            entry = out[name]
            assert (entry["raw"] if isinstance(entry, dict) else entry) == value, name
    if any_emulator.kind == "swtpm_py":
        local = fresh_tpm()
        for name, entry in out.items():
            prop = PT[name.removeprefix("TPM2_PT_")]
            assert entry["raw"] == properties.value(local, prop), name


def test_tool_properties_variable(any_emulator: Emulator) -> None:
    """tpm2_getcap properties-variable of a fresh, started TPM."""
    out = tool_properties(any_emulator, "variable")
    permanent = out["TPM2_PT_PERMANENT"]
    assert permanent["tpmGeneratedEPS"] == 1
    assert not any(permanent[k] for k in ("ownerAuthSet", "endorsementAuthSet",
                                          "lockoutAuthSet", "disableClear", "inLockout"))
    assert out["TPM2_PT_STARTUP_CLEAR"] == {"phEnable": 1, "shEnable": 1, "ehEnable": 1,
                                            "phEnableNV": 1, "reserved1": 0, "orderly": 1}
    for prop, value in SHARED_VARIABLE.items():
        if prop not in (PT.PERMANENT, PT.STARTUP_CLEAR):
            assert out[f"TPM2_PT_{prop.name}"] == value, prop.name


def test_tool_pcrs_and_handles(any_emulator: Emulator) -> None:
    """tpm2_getcap pcrs, handles-pcr, handles-permanent, ecc-curves and the empty handle
    lists."""
    banks = {}
    for entry in tool_yaml(any_emulator, "tpm2_getcap", "pcrs")["selected-pcrs"]:
        banks.update(entry)
    assert banks == {b: list(range(24)) for b in ("sha1", "sha256", "sha384", "sha512")}
    assert tool_yaml(any_emulator, "tpm2_getcap", "handles-pcr") == list(range(24))
    assert tool_yaml(any_emulator, "tpm2_getcap", "handles-permanent") == PERMANENT_HANDLES
    for which in ("transient", "persistent", "nv-index", "loaded-session", "saved-session"):
        assert tool_yaml(any_emulator, "tpm2_getcap", f"handles-{which}") is None
    curves = tool_yaml(any_emulator, "tpm2_getcap", "ecc-curves")
    if any_emulator.kind == "swtpm_py":
        assert curves == {"TPM2_ECC_NIST_P256": ECC_CURVE.NIST_P256,
                          "TPM2_ECC_NIST_P384": ECC_CURVE.NIST_P384,
                          "TPM2_ECC_NIST_P521": ECC_CURVE.NIST_P521,
                          "TPM2_ECC_BN_P256": ECC_CURVE.BN_P256}
    else:
        assert curves["TPM2_ECC_NIST_P256"] == ECC_CURVE.NIST_P256


# ---------------------------------------------------------------------------- pytss paging

PYTSS_LISTS = {
    TPM2_CAP.ALGS: (0, lambda d: [(int(a.alg), int(a.algProperties)) for a in d.algorithms],
                    lambda e: e[0]),
    TPM2_CAP.HANDLES: (0, lambda d: [int(h) for h in d.handles], lambda e: e),
    TPM2_CAP.COMMANDS: (0, lambda d: [int(c) for c in d.command], lambda e: e & 0xFFFF),
    TPM2_CAP.TPM_PROPERTIES: (PT.FAMILY_INDICATOR,
                              lambda d: [(int(p.property), int(p.value))
                                         for p in d.tpmProperties], lambda e: e[0]),
    TPM2_CAP.PCR_PROPERTIES: (0, lambda d: [(int(p.tag), bytes(p.pcrSelect)[:p.sizeofSelect])
                                            for p in d.pcrProperties], lambda e: e[0]),
}


@pytest.fixture
def esapi(any_emulator: Emulator) -> Iterator[ESAPI]:
    """ESAPI over the swtpm TCTI to each emulator in turn."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


@pytest.mark.parametrize("cap", list(PYTSS_LISTS))
def test_pytss_paging_one_at_a_time(esapi: ESAPI, cap: TPM2_CAP) -> None:
    """get_capability one entry at a time, following moreData to the end, gives what one big
    request gives (and the big request has no more data)."""
    start, entries, key = PYTSS_LISTS[cap]
    more, data = esapi.get_capability(cap, start, 1000)
    assert not more
    whole = entries(data.data)
    assert whole
    walked, prop = [], start
    while True:
        more, data = esapi.get_capability(cap, prop, 1)
        page = entries(data.data)
        assert len(page) <= 1
        walked += page
        if not more:
            break
        prop = key(page[-1]) + 1
    assert walked == whole


def test_pytss_pcrs_count_zero(esapi: ESAPI) -> None:
    """The PCR allocation is one value: count 0 answers moreData YES and nothing."""
    more, data = esapi.get_capability(TPM2_CAP.PCRS, 0, 0)
    assert more and data.data.assignedPCR.count == 0
    more, data = esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
    assert not more and data.data.assignedPCR.count == 4


# ---------------------------------------------------------------------------- both at once


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, Emulator]]:
    """swtpm_py and the reference swtpm, started with the same argv on fresh state."""
    emus: dict[str, Emulator] = {}
    try:
        for kind in ("swtpm_py", "swtpm"):
            emus[kind] = Emulator(kind, tmp_path / kind).start()
        yield emus
    finally:
        for emu in emus.values():
            emu.cleanup()


SAME_ANSWER = [
    (CAP.HANDLES, 0, 1000), (CAP.HANDLES, 0x10, 3), (CAP.HANDLES, HT.PERMANENT << 24, 1000),
    (CAP.HANDLES, RH.LOCKOUT, 2), (CAP.HANDLES, HT.TRANSIENT << 24, 10),
    (CAP.HANDLES, HT.PERSISTENT << 24, 10), (CAP.HANDLES, HT.NV_INDEX << 24, 10),
    (CAP.HANDLES, 0x02000000, 10), (CAP.HANDLES, 0x03000000, 10),
    (CAP.PCRS, 0, 0), (CAP.PCRS, 0, 1), (CAP.PCRS, 0, 100),
    (CAP.PCR_PROPERTIES, 0, 15), (CAP.PCR_PROPERTIES, 3, 2),
    (CAP.AUTH_POLICIES, HT.PERMANENT << 24, 1000), (CAP.AUTH_POLICIES, RH.LOCKOUT, 1),
    (CAP.ACT, 0x40000110, 5),
    (CAP.TPM_PROPERTIES, PT.FAMILY_INDICATOR, 5), (CAP.TPM_PROPERTIES, PT.PCR_COUNT, 3),
    (CAP.TPM_PROPERTIES, PT.MAX_CAP_BUFFER, 2), (CAP.TPM_PROPERTIES, 0x12F, 2),
    (CAP.TPM_PROPERTIES, PT.PERMANENT, 2), (CAP.TPM_PROPERTIES, PT.LOCKOUT_COUNTER, 100),
    (CAP.TPM_PROPERTIES, 0x300, 2),
]
SAME_ERROR = [
    (CAP.HANDLES, 0x90000000, 1), (CAP.HANDLES, 0x41000000, 1), (CAP.PCRS, 1, 1),
    (CAP.AUTH_POLICIES, 0, 1), (CAP.AUTH_POLICIES, 0x41000000, 1), (CAP.ACT, 0x40000000, 1),
    (0xB, 0, 1), (CAP.VENDOR_PROPERTY, 0, 1),
]


def test_same_answers_as_swtpm(pair: dict[str, Emulator]) -> None:
    """Byte-identical responses where both TPMs implement the same thing, and the same error
    codes for the same mistakes."""
    answers = {k: send_all(e, [getcap_cmd(*case) for case in SAME_ANSWER + SAME_ERROR])
               for k, e in pair.items()}
    for i, (cap, prop, count) in enumerate(SAME_ANSWER):
        ours, theirs = answers["swtpm_py"][i], answers["swtpm"][i]
        assert ours == theirs, (hex(cap), hex(prop), count)
    for i, (cap, prop, count) in enumerate(SAME_ERROR, start=len(SAME_ANSWER)):
        ours, theirs = rc(answers["swtpm_py"][i]), rc(answers["swtpm"][i])
        assert ours == theirs != 0, (hex(cap), hex(prop), hex(ours), hex(theirs))


def test_shared_algorithms_and_commands_agree_with_swtpm(pair: dict[str, Emulator]) -> None:
    """Every algorithm swtpm_py lists, swtpm lists with the same attributes; every command
    swtpm_py lists, swtpm implements with the same handle count and response handle."""
    algs = {k: {a.alg: a.algProperties for a in getcap(e.command, CAP.ALGS)[1]}
            for k, e in pair.items()}
    for alg, attrs in algs["swtpm_py"].items():
        assert algs["swtpm"][alg] == attrs, ALG(alg).name
    ccs = {k: {a & 0xFFFF: a for a in getcap(e.command, CAP.COMMANDS)[1]}
           for k, e in pair.items()}
    shape = 7 << 25 | 1 << 28 | 1 << 24
    for code, attrs in ccs["swtpm_py"].items():
        assert ccs["swtpm"][code] & shape == attrs & shape, CC(code).name


# ---------------------------------------------------------------------------- property-based


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.one_of(st.sampled_from(list(CAP)), st.integers(0, 0xFFFFFFFF)),
       prop=st.one_of(st.sampled_from([0, 0x100, 0x200, 0x40000000, 0x40000110, 0x80000000,
                                       0x01000000, 0x02000000, 0x03000000, 0x81000000]),
                      st.integers(0, 0xFFFFFFFF)),
       count=st.one_of(st.integers(0, 3), st.integers(0, 0xFFFFFFFF)))
def test_any_request_gets_a_well_formed_answer(tpm: Tpm, cap: int, prop: int,
                                               count: int) -> None:
    """Whatever the capability, property and count, the answer is a success that parses,
    holds at most ``count`` entries (the PCR allocation: every bank for any nonzero count) and
    fits MAX_CAP_BUFFER, or a parameter error — never an internal failure."""
    resp = tpm.execute(getcap_cmd(cap, prop, count))
    code = rc(resp)
    assert len(resp) == struct.unpack(">I", resp[2:6])[0]
    if code:
        assert code in (RC.VALUE | 0x40 | 1 << 8, RC.VALUE | 0x40 | 2 << 8,
                        RC.HANDLE | 0x40 | 2 << 8)
        return
    assert len(resp) - 11 <= properties.MAX_CAP_BUFFER
    data = TPMS_CAPABILITY_DATA.parse(resp[11:])
    assert data.capability == cap
    if cap == CAP.PCRS:  # the allocation is one value: every bank for any nonzero count
        assert len(data.data) == (len(crypto.HASHES) if count else 0)
    else:
        assert len(data.data) <= count
