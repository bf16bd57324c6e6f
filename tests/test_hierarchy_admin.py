"""Hierarchy administration: TPM2_SetPrimaryPolicy, TPM2_ChangeEPS, TPM2_ChangePPS, TPM2_Clear
and TPM2_ClearControl (Part 3 §24.3-24.7).

In-process against :class:`swtpm_py.tpm.Tpm` (the effects on seeds, objects, NV indices,
auths, policies, counters and Clock), differentially against the real swtpm 0.7.1 (the same
raw commands, responses compared), across process restarts and kill -9, through tpm2-tools
(tpm2_clear, tpm2_clearcontrol, tpm2_changeeps, tpm2_changepps, tpm2_setprimarypolicy) and
through tpm2-pytss ESAPI.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_SE
from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE, TPMT_SYM_DEF

from emulator import Emulator
from objcmd import STORAGE, create_primary, ecc_template, evict_control, read_public
from objcmd import parse_create_primary
from test_hierarchy import (change_auth, command_attributes_cmd, control, get_property,
                            handle_list, property_value, tpma_cc, transient_handles_cmd)
from tpmcmd import (cmd, pcr_read, power_on, pw_session, rc, read_clock_info, shutdown,
                    startup, with_auth)

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, PT, RC, RH, NvAttr
from swtpm_py.tpm.state import NvIndexState, Policy

SUCCESS = 0
VALUE_H1 = RC.VALUE + 0x100
VALUE_P1 = RC.VALUE + 0x040 + 0x100
SIZE_P1 = RC.SIZE + 0x040 + 0x100
HASH_P2 = RC.HASH + 0x040 + 0x200
HANDLE_H1 = RC.HANDLE + 0x100
BAD_AUTH_S1 = RC.BAD_AUTH + 0x800 + 0x100
DISABLE_CLEAR = 0x100        # TPMA_PERMANENT.disableClear (Part 2 §8.6)
OWNER_AUTH_SET, ENDORSEMENT_AUTH_SET, LOCKOUT_AUTH_SET = 1, 2, 4
SH_ENABLE, EH_ENABLE = 2, 4  # TPMA_STARTUP_CLEAR
TOOLS_TIMEOUT = 60

#: Persistent handles of the three hierarchies' objects in these tests (PC Client ranges).
OWNER_PERSISTENT, EK_PERSISTENT, PLATFORM_PERSISTENT = 0x81000001, 0x81010001, 0x81800001
#: An owner index and a platform index (TPMA_NV_PLATFORMCREATE).
OWNER_INDEX, PLATFORM_INDEX = 0x01000001, 0x01400001


# ---------------------------------------------------------------------------- commands


def handle(h: int) -> bytes:
    """A handle in the handle area."""
    return struct.pack(">I", h)


def set_primary_policy(h: int, digest: bytes, alg: int, password: bytes = b"") -> bytes:
    """TPM2_SetPrimaryPolicy with a password session."""
    return with_auth(CC.SetPrimaryPolicy, handle(h),
                     struct.pack(">H", len(digest)) + digest + struct.pack(">H", alg),
                     pw_session(password))


def clear(h: int = RH.PLATFORM, password: bytes = b"") -> bytes:
    """TPM2_Clear with a password session."""
    return with_auth(CC.Clear, handle(h), b"", pw_session(password))


def clear_control(h: int, disable: int, password: bytes = b"") -> bytes:
    """TPM2_ClearControl with a password session."""
    return with_auth(CC.ClearControl, handle(h), bytes([disable]), pw_session(password))


def change_eps(password: bytes = b"", h: int = RH.PLATFORM) -> bytes:
    """TPM2_ChangeEPS with a password session."""
    return with_auth(CC.ChangeEPS, handle(h), b"", pw_session(password))


def change_pps(password: bytes = b"", h: int = RH.PLATFORM) -> bytes:
    """TPM2_ChangePPS with a password session."""
    return with_auth(CC.ChangePPS, handle(h), b"", pw_session(password))


def read_clock() -> bytes:
    """TPM2_ReadClock."""
    return cmd(CC.ReadClock)


def primary(hierarchy: int, password: bytes = b"") -> bytes:
    """TPM2_CreatePrimary of an ECC storage key (deterministic from the hierarchy's seed)."""
    return create_primary(ecc_template(STORAGE), hierarchy, hierarchy_auth=password)


def primary_name(tpm: Tpm, hierarchy: int, password: bytes = b"") -> bytes:
    """The Name of the ECC storage primary of ``hierarchy`` (flushed again)."""
    response = tpm.execute(primary(hierarchy, password))
    assert rc(response) == SUCCESS
    created = parse_create_primary(response)
    assert rc(tpm.execute(cmd(CC.FlushContext, handle(created["handle"])))) == SUCCESS
    return created["name"]


def permanent(tpm: Tpm) -> int:
    """TPMA_PERMANENT via GetCapability."""
    return property_value(tpm.execute(get_property(PT.PERMANENT)), PT.PERMANENT)


def startup_clear(tpm: Tpm) -> int:
    """TPMA_STARTUP_CLEAR via GetCapability."""
    return property_value(tpm.execute(get_property(PT.STARTUP_CLEAR)), PT.STARTUP_CLEAR)


def pcr_counter(tpm: Tpm) -> int:
    """pcrUpdateCounter from a PCR_Read."""
    response = tpm.execute(pcr_read(ALG.SHA256, [0]))
    assert rc(response) == SUCCESS
    return struct.unpack_from(">I", response, 10)[0]


def persist_one_per_hierarchy(tpm: Tpm) -> None:
    """An owner, an endorsement and a platform object made persistent; the transient copies
    stay loaded (0x80000000-0x80000002)."""
    for n, (hierarchy, auth, target) in enumerate([
            (RH.OWNER, RH.OWNER, OWNER_PERSISTENT),
            (RH.ENDORSEMENT, RH.OWNER, EK_PERSISTENT),
            (RH.PLATFORM, RH.PLATFORM, PLATFORM_PERSISTENT)]):
        assert rc(tpm.execute(primary(hierarchy))) == SUCCESS
        assert rc(tpm.execute(evict_control(auth, 0x80000000 + n, target))) == SUCCESS


def define_indices(tpm: Tpm) -> None:
    """An owner NV index and a platform (PLATFORMCREATE) one, put in the NV model directly:
    what TPM2_Clear and TPM2_ChangePPS remove is decided by that attribute alone."""
    tpm.perm.nv_indices[OWNER_INDEX] = NvIndexState(
        handle=OWNER_INDEX, attributes=NvAttr.OWNERWRITE | NvAttr.OWNERREAD, data_size=8)
    tpm.perm.nv_indices[PLATFORM_INDEX] = NvIndexState(
        handle=PLATFORM_INDEX, data_size=8,
        attributes=NvAttr.PPWRITE | NvAttr.PPREAD | NvAttr.PLATFORMCREATE)


# ---------------------------------------------------------------------------- SetPrimaryPolicy


@pytest.mark.parametrize("h, where", [
    (RH.OWNER, lambda t: t.perm.owner_policy),
    (RH.ENDORSEMENT, lambda t: t.perm.endorsement_policy),
    (RH.LOCKOUT, lambda t: t.perm.lockout_policy),
    (RH.PLATFORM, lambda t: t.vol.state_clear.platform_policy),
])
def test_set_primary_policy(tpm: Tpm, h: int, where: Callable[[Tpm], Policy]) -> None:
    """The policy is stored with its algorithm; a digest of the wrong size for the algorithm
    is TPM_RC_SIZE + P1 and changes nothing; TPM_ALG_NULL with an empty digest removes it."""
    digest = hashlib.sha384(b"policy").digest()
    assert rc(tpm.execute(set_primary_policy(h, digest, ALG.SHA384))) == SUCCESS
    assert where(tpm) == Policy(ALG.SHA384, digest)
    assert rc(tpm.execute(set_primary_policy(h, digest[:32], ALG.SHA384))) == SIZE_P1
    assert rc(tpm.execute(set_primary_policy(h, digest[:32], ALG.NULL))) == SIZE_P1
    assert where(tpm) == Policy(ALG.SHA384, digest)
    assert rc(tpm.execute(set_primary_policy(h, b"", ALG.NULL))) == SUCCESS
    assert where(tpm) == Policy()


def test_set_primary_policy_argument_checks(tpm: Tpm) -> None:
    """TPMI_RH_HIERARCHY_POLICY admits the four hierarchies (TPM_RC_VALUE + H1 otherwise);
    hashAlg must be a hash or NULL (TPM_RC_HASH + P2); the digest fits a TPMU_HA."""
    for h in (RH.NULL, 0x40000110, 0x81000001):
        assert rc(tpm.execute(set_primary_policy(h, b"", ALG.NULL))) == VALUE_H1
    assert rc(tpm.execute(set_primary_policy(RH.OWNER, b"", ALG.RSA))) == HASH_P2
    assert rc(tpm.execute(set_primary_policy(RH.OWNER, b"\x01" * 65, ALG.SHA512))) == SIZE_P1


def test_platform_policy_is_state_clear(platform: Platform) -> None:
    """platformPolicy survives a TPM Resume only; ownerPolicy is persistent, and in the
    permanent blob as soon as the command answered (power lost right after)."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    digest = hashlib.sha256(b"p").digest()
    for h in (RH.PLATFORM, RH.OWNER):
        assert rc(tpm.execute(set_primary_policy(h, digest, ALG.SHA256))) == SUCCESS
    assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup(clear=False))) == SUCCESS
    assert tpm.vol.state_clear.platform_policy == Policy(ALG.SHA256, digest)
    tpm = power_on(platform)  # power lost: the next Startup is a TPM Reset
    assert rc(tpm.execute(startup())) == SUCCESS
    assert tpm.vol.state_clear.platform_policy == Policy()
    assert tpm.perm.owner_policy == Policy(ALG.SHA256, digest)


# ---------------------------------------------------------------------------- ChangeEPS / PPS


def test_change_eps(tpm: Tpm) -> None:
    """A new EPS: the endorsement primary changes, the owner's does not; endorsementAuth and
    endorsementPolicy are emptied, ehEnable SET; the endorsement hierarchy's loaded and
    persistent objects are gone, the others stay."""
    ek, srk = primary_name(tpm, RH.ENDORSEMENT), primary_name(tpm, RH.OWNER)
    persist_one_per_hierarchy(tpm)
    assert rc(tpm.execute(change_auth(RH.ENDORSEMENT, b"ek"))) == SUCCESS
    policy = hashlib.sha256(b"e").digest()
    assert rc(tpm.execute(set_primary_policy(RH.ENDORSEMENT, policy, ALG.SHA256,
                                             b"ek"))) == SUCCESS
    assert rc(tpm.execute(control(RH.PLATFORM, RH.ENDORSEMENT, 0))) == SUCCESS
    assert rc(tpm.execute(change_eps(h=RH.OWNER))) == VALUE_H1
    assert rc(tpm.execute(change_eps())) == SUCCESS
    assert startup_clear(tpm) & EH_ENABLE
    assert permanent(tpm) & ENDORSEMENT_AUTH_SET == 0
    assert tpm.perm.endorsement_policy == Policy()
    assert handle_list(tpm.execute(transient_handles_cmd())) == [0x80000000, 0x80000002]
    assert rc(tpm.execute(read_public(EK_PERSISTENT))) == HANDLE_H1
    for kept in (OWNER_PERSISTENT, PLATFORM_PERSISTENT):
        assert rc(tpm.execute(read_public(kept))) == SUCCESS
    assert primary_name(tpm, RH.ENDORSEMENT) != ek
    assert primary_name(tpm, RH.OWNER) == srk


def test_change_pps(tpm: Tpm) -> None:
    """A new PPS: the platform primary changes; platformPolicy is emptied but platformAuth
    kept; the platform hierarchy's objects and the PLATFORMCREATE indices are gone."""
    pk, srk = primary_name(tpm, RH.PLATFORM), primary_name(tpm, RH.OWNER)
    persist_one_per_hierarchy(tpm)
    define_indices(tpm)
    assert rc(tpm.execute(change_auth(RH.PLATFORM, b"pp"))) == SUCCESS
    policy = hashlib.sha256(b"p").digest()
    assert rc(tpm.execute(set_primary_policy(RH.PLATFORM, policy, ALG.SHA256, b"pp"))) == 0
    tpm.perm.pcr_policies = {pcr: Policy(ALG.SHA256, policy) for pcr in (20, 21, 22)}
    assert rc(tpm.execute(change_pps(b"pp"))) == SUCCESS
    assert tpm.vol.state_clear.platform_policy == Policy()
    assert tpm.vol.state_clear.platform_auth == b"pp"
    assert tpm.perm.pcr_policies == {}
    assert handle_list(tpm.execute(transient_handles_cmd())) == [0x80000000, 0x80000001]
    assert rc(tpm.execute(read_public(PLATFORM_PERSISTENT))) == HANDLE_H1
    for kept in (OWNER_PERSISTENT, EK_PERSISTENT):
        assert rc(tpm.execute(read_public(kept))) == SUCCESS
    assert sorted(tpm.perm.nv_indices) == [OWNER_INDEX]
    assert primary_name(tpm, RH.PLATFORM, b"pp") != pk
    assert primary_name(tpm, RH.OWNER) == srk


# ---------------------------------------------------------------------------- Clear


def test_clear(platform: Platform) -> None:
    """TPM2_Clear (Part 3 §24.6): a new SPS (the storage primary changes, the EK does not);
    the owner and endorsement objects and the owner's NV indices are gone, the platform's
    stay; all three auths and policies emptied, shEnable/ehEnable SET; DA parameters back to
    their defaults; Clock 0 and safe; resetCount, restartCount 0; PCR authValues emptied,
    pcrUpdateCounter + 1 — and all of it in NV when the response arrives."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    # A TPM Restart, so that restartCount is not zero.
    assert rc(tpm.execute(shutdown(clear=False))) == SUCCESS
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    ek, srk = primary_name(tpm, RH.ENDORSEMENT), primary_name(tpm, RH.OWNER)
    persist_one_per_hierarchy(tpm)
    define_indices(tpm)
    for h, secret in ((RH.OWNER, b"o"), (RH.ENDORSEMENT, b"e"), (RH.LOCKOUT, b"l")):
        assert rc(tpm.execute(set_primary_policy(h, bytes(32), ALG.SHA256))) == SUCCESS
        assert rc(tpm.execute(change_auth(h, secret))) == SUCCESS
    assert rc(tpm.execute(control(RH.PLATFORM, RH.OWNER, 0))) == SUCCESS
    assert rc(tpm.execute(with_auth(CC.ClockSet, handle(RH.PLATFORM),
                                    struct.pack(">Q", 10**7)))) == SUCCESS
    tpm.perm.failed_tries, tpm.perm.max_tries, tpm.perm.recovery_time = 2, 10, 5
    tpm.perm.lockout_auth_enabled, tpm.perm.audit_counter = False, 5
    tpm.vol.state_clear.pcr_auth[16] = b"pcr"
    before = read_clock_info(tpm.execute(read_clock()))
    assert (before["reset_count"], before["restart_count"]) == (1, 1)
    counter = pcr_counter(tpm)
    assert permanent(tpm) & 7 == 7

    assert rc(tpm.execute(clear(RH.LOCKOUT, b"l"))) == RC.LOCKOUT  # lockoutAuth disabled
    assert rc(tpm.execute(clear(RH.PLATFORM))) == SUCCESS
    after = read_clock_info(tpm.execute(read_clock()))
    assert after["clock"] < 1000 and after["safe"] == 1
    assert (after["reset_count"], after["restart_count"]) == (0, 0)
    assert tpm.vol.state_reset.clear_count == 0
    assert pcr_counter(tpm) == counter + 1
    assert tpm.vol.state_clear.pcr_auth == {}
    assert startup_clear(tpm) & (SH_ENABLE | EH_ENABLE) == SH_ENABLE | EH_ENABLE
    tpm = power_on(platform)  # power lost right after the response: the rest is in NV
    assert rc(tpm.execute(startup())) == SUCCESS
    assert read_clock_info(tpm.execute(read_clock()))["reset_count"] == 1
    assert permanent(tpm) & 7 == 0
    p = tpm.perm
    assert (p.owner_policy, p.endorsement_policy, p.lockout_policy) == (Policy(),) * 3
    assert (p.failed_tries, p.max_tries, p.recovery_time, p.lockout_recovery) == (0, 3, 1000,
                                                                                  1000)
    assert (p.lockout_auth_enabled, p.audit_counter) == (True, 0)
    assert sorted(p.persistent_objects) == [PLATFORM_PERSISTENT]
    assert sorted(p.nv_indices) == [PLATFORM_INDEX]
    assert primary_name(tpm, RH.OWNER) != srk
    assert primary_name(tpm, RH.ENDORSEMENT) == ek


def test_clear_flushes_loaded_owner_and_endorsement_objects(tpm: Tpm) -> None:
    """Loaded objects of the owner and endorsement hierarchies are flushed; a platform
    object stays loaded."""
    for hierarchy in (RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM):
        assert rc(tpm.execute(primary(hierarchy))) == SUCCESS
    assert rc(tpm.execute(clear())) == SUCCESS
    assert handle_list(tpm.execute(transient_handles_cmd())) == [0x80000002]


def test_clear_control(tpm: Tpm) -> None:
    """disableClear: lockout may SET it but not CLEAR it (TPM_RC_AUTH_FAIL, the reference's
    answer), platform may do both; while SET, TPM2_Clear is TPM_RC_DISABLED whoever
    authorizes it. TPMA_PERMANENT.disableClear follows."""
    assert rc(tpm.execute(clear_control(RH.OWNER, 1))) == VALUE_H1
    assert rc(tpm.execute(clear_control(RH.LOCKOUT, 2))) == VALUE_P1
    assert rc(tpm.execute(clear_control(RH.LOCKOUT, 1))) == SUCCESS
    assert permanent(tpm) & DISABLE_CLEAR
    assert rc(tpm.execute(clear_control(RH.LOCKOUT, 0))) == RC.AUTH_FAIL
    assert rc(tpm.execute(clear(RH.LOCKOUT))) == RC.DISABLED
    assert rc(tpm.execute(clear(RH.PLATFORM))) == RC.DISABLED
    assert rc(tpm.execute(clear(RH.OWNER))) == VALUE_H1
    assert rc(tpm.execute(clear_control(RH.PLATFORM, 0))) == SUCCESS
    assert permanent(tpm) & DISABLE_CLEAR == 0
    assert rc(tpm.execute(clear_control(RH.PLATFORM, 1))) == SUCCESS
    assert rc(tpm.execute(clear_control(RH.PLATFORM, 0))) == SUCCESS
    assert rc(tpm.execute(clear(RH.LOCKOUT))) == SUCCESS


def test_failed_storage_leaves_everything_unchanged(platform: Platform) -> None:
    """When the permanent blob cannot be written, TPM2_Clear is not acknowledged and the
    persistent data stays what storage holds (the TPM enters failure mode)."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == SUCCESS
    assert rc(tpm.execute(change_auth(RH.OWNER, b"o"))) == SUCCESS
    stored = platform.storage.blobs.copy()
    sps = tpm.perm.sps
    assert isinstance(platform.storage, MemoryStorage)
    platform.storage.fail_with = OSError("disk full")
    assert rc(tpm.execute(clear())) == RC.FAILURE
    assert platform.storage.blobs == stored
    assert (tpm.perm.sps, tpm.perm.owner_auth) == (sps, b"o")


# ---------------------------------------------------------------------------- differential


def _scenario() -> list[tuple[str, bytes]]:
    """Raw commands whose responses must be identical on swtpm and swtpm_py."""
    digest = hashlib.sha256(b"policy").digest()
    perm = ("permanent", get_property(PT.PERMANENT))
    return [
        *[(f"attrs {code.name}", command_attributes_cmd(code))
          for code in (CC.ChangeEPS, CC.ChangePPS, CC.Clear, CC.ClearControl, CC.ClockSet,
                       CC.SetPrimaryPolicy, CC.ClockRateAdjust)],
        ("primary owner", primary(RH.OWNER)),
        ("persist owner", evict_control(RH.OWNER, 0x80000000, OWNER_PERSISTENT)),
        ("primary platform", primary(RH.PLATFORM)),
        ("persist platform", evict_control(RH.PLATFORM, 0x80000001, PLATFORM_PERSISTENT)),
        ("primary endorsement", primary(RH.ENDORSEMENT)),
        ("persist endorsement", evict_control(RH.OWNER, 0x80000002, EK_PERSISTENT)),
        ("spp act", set_primary_policy(0x40000110, b"", ALG.NULL)),
        ("spp null handle", set_primary_policy(RH.NULL, b"", ALG.NULL)),
        ("spp owner", set_primary_policy(RH.OWNER, digest, ALG.SHA256)),
        ("spp size", set_primary_policy(RH.OWNER, digest[:20], ALG.SHA256)),
        ("spp null with digest", set_primary_policy(RH.OWNER, digest[:20], ALG.NULL)),
        ("spp bad alg", set_primary_policy(RH.OWNER, b"", ALG.RSA)),
        ("spp too big", set_primary_policy(RH.OWNER, b"\x01" * 65, ALG.SHA512)),
        ("spp lockout", set_primary_policy(RH.LOCKOUT, b"\x01" * 64, ALG.SHA512)),
        ("spp platform", set_primary_policy(RH.PLATFORM, b"\x01" * 48, ALG.SHA384)),
        ("spp endorsement", set_primary_policy(RH.ENDORSEMENT, b"", ALG.NULL)),
        ("owner auth", change_auth(RH.OWNER, b"owner")),
        ("lockout auth", change_auth(RH.LOCKOUT, b"lock")),
        perm,
        ("cc owner", clear_control(RH.OWNER, 1)),
        ("cc lockout 2", clear_control(RH.LOCKOUT, 2, b"lock")),
        ("cc lockout no", clear_control(RH.LOCKOUT, 0, b"lock")),
        ("cc lockout yes", clear_control(RH.LOCKOUT, 1, b"lock")),
        perm,
        ("clear disabled", clear(RH.LOCKOUT, b"lock")),
        ("clear platform disabled", clear(RH.PLATFORM)),
        ("clear owner", clear(RH.OWNER, b"owner")),
        ("clear without sessions", cmd(CC.Clear, handle(RH.PLATFORM))),
        ("cc platform no", clear_control(RH.PLATFORM, 0)),
        perm,
        ("eps owner", change_eps(h=RH.OWNER)),
        ("eps", change_eps()),
        ("persistent ek after eps", read_public(EK_PERSISTENT)),
        ("transient after eps", transient_handles_cmd()),
        ("pps", change_pps()),
        ("persistent platform after pps", read_public(PLATFORM_PERSISTENT)),
        ("transient after pps", transient_handles_cmd()),
        ("clear", clear(RH.LOCKOUT, b"lock")),
        perm,
        ("startup clear", get_property(PT.STARTUP_CLEAR)),
        ("persistent owner after clear", read_public(OWNER_PERSISTENT)),
        ("transient after clear", transient_handles_cmd()),
        ("clock after clear", read_clock()),
        ("owner empty after clear", change_auth(RH.OWNER, b"")),
        ("lockout empty after clear", change_auth(RH.LOCKOUT, b"")),
        ("spp after clear", set_primary_policy(RH.OWNER, b"", ALG.NULL)),
    ]


def _comparable(label: str, response: bytes) -> bytes:
    """What both emulators must agree on: everything, but the created key (the seeds differ:
    the header and the new handle only), the clock's values (timing: the counters and the
    safe flag only) and TPMA_PERMANENT bits besides the authSet and disableClear bits
    (libtpms leaves tpmGeneratedEPS CLEAR)."""
    if label.startswith("primary"):
        return response[:14]
    if label.startswith("clock") and rc(response) == SUCCESS:
        info = read_clock_info(response)
        return struct.pack(">IIB", info["reset_count"], info["restart_count"], info["safe"])
    if label == "permanent" and rc(response) == SUCCESS:
        value = property_value(response, PT.PERMANENT)
        return struct.pack(">I", value & (7 | DISABLE_CLEAR))
    return response


def run_scenario(emu: Emulator) -> list[tuple[str, bytes]]:
    """The scenario's responses from ``emu``."""
    return [(label, emu.command(command)) for label, command in _scenario()]


def test_scenario_equals_swtpm(pair: dict[str, Emulator]) -> None:
    """Every response of the scenario is the real swtpm's (every TPMA_CC bit of the new
    commands included), and the reference's codes are the ones Part 3 and libtpms give."""
    ref = run_scenario(pair["swtpm"])
    ours = run_scenario(pair["swtpm_py"])
    mismatches = [(label, r.hex(), o.hex()) for (label, r), (_, o) in zip(ref, ours)
                  if _comparable(label, r) != _comparable(label, o)]
    assert mismatches == []
    codes = {label: rc(r) for label, r in ref}
    assert codes["spp act"] == codes["spp null handle"] == VALUE_H1
    assert codes["spp size"] == codes["spp null with digest"] == codes["spp too big"] == SIZE_P1
    assert codes["spp bad alg"] == HASH_P2
    assert codes["cc lockout no"] == RC.AUTH_FAIL
    assert codes["clear disabled"] == codes["clear platform disabled"] == RC.DISABLED
    assert codes["persistent ek after eps"] == HANDLE_H1
    assert codes["persistent platform after pps"] == HANDLE_H1
    assert codes["persistent owner after clear"] == HANDLE_H1
    assert codes["clear"] == codes["owner empty after clear"] == SUCCESS
    attrs = {label[6:]: tpma_cc(r) for label, r in ref if label.startswith("attrs")}
    assert attrs == {"ChangeEPS": 0x02C00124, "ChangePPS": 0x02C00125, "Clear": 0x02C00126,
                     "ClearControl": 0x02400127, "ClockSet": 0x02400128,
                     "SetPrimaryPolicy": 0x0240012E, "ClockRateAdjust": 0x02000130}


def test_saved_contexts_die_with_the_proof(pair: dict[str, Emulator]) -> None:
    """A context saved before ChangeEPS / ChangePPS / Clear no longer loads after it (the
    hierarchy's proof protects it, Part 1 §30.3): the same code on both emulators; one saved
    in a hierarchy the command leaves alone still loads."""
    cases = [(RH.ENDORSEMENT, change_eps()), (RH.OWNER, change_eps()),
             (RH.PLATFORM, change_pps()), (RH.OWNER, clear()), (RH.PLATFORM, clear())]
    results = {}
    for kind, emu in pair.items():
        codes = []
        for hierarchy, command in cases:
            created = emu.command(primary(hierarchy))
            assert rc(created) == SUCCESS
            h = parse_create_primary(created)["handle"]
            saved = emu.command(cmd(CC.ContextSave, handle(h)))
            assert rc(saved) == SUCCESS
            assert rc(emu.command(cmd(CC.FlushContext, handle(h)))) == SUCCESS
            assert rc(emu.command(command)) == SUCCESS
            loaded = emu.command(cmd(CC.ContextLoad, saved[10:]))
            codes.append(rc(loaded))
            if rc(loaded) == SUCCESS:
                assert rc(emu.command(cmd(CC.FlushContext, loaded[10:14]))) == SUCCESS
        results[kind] = codes
    assert results["swtpm_py"] == results["swtpm"]
    integrity_p1 = RC.INTEGRITY + 0x040 + 0x100
    assert results["swtpm"] == [integrity_p1, SUCCESS, integrity_p1, integrity_p1, SUCCESS]


# ---------------------------------------------------------------------------- processes


@pytest.mark.parametrize("kind, ending", [("swtpm_py", "stop"), ("swtpm_py", "kill"),
                                          ("swtpm", "kill")])
def test_admin_state_survives_process_end(tmp_path: Path, kind: str, ending: str) -> None:
    """disableClear and ownerPolicy are in NV when acknowledged: after SIGTERM or SIGKILL and
    a new process, Clear is still disabled and the policy still set; platformPolicy is not
    (the new process's Startup(CLEAR) is a TPM Reset)."""
    state = tmp_path / "state"
    digest = hashlib.sha256(b"o").digest()
    with Emulator(kind, state) as emu:
        assert rc(emu.command(clear_control(RH.LOCKOUT, 1))) == SUCCESS
        assert rc(emu.command(set_primary_policy(RH.OWNER, digest, ALG.SHA256))) == SUCCESS
        emu.kill() if ending == "kill" else emu.stop()
    with Emulator(kind, state) as emu:
        assert property_value(emu.command(get_property(PT.PERMANENT)),
                              PT.PERMANENT) & DISABLE_CLEAR
        assert rc(emu.command(clear(RH.LOCKOUT))) == RC.DISABLED
        assert rc(emu.command(clear_control(RH.PLATFORM, 0))) == SUCCESS
        assert rc(emu.command(clear(RH.PLATFORM))) == SUCCESS
    with Emulator(kind, state) as emu:
        assert property_value(emu.command(get_property(PT.PERMANENT)),
                              PT.PERMANENT) & DISABLE_CLEAR == 0


# ---------------------------------------------------------------------------- tpm2-tools


def _tool(emu: Emulator, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
    return subprocess.run(list(args), env=env, capture_output=True, text=True, cwd=cwd,
                          timeout=TOOLS_TIMEOUT)


def _ok(emu: Emulator, *args: str, cwd: Path | None = None) -> str:
    out = _tool(emu, *args, cwd=cwd)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


def _variables(emu: Emulator) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in _ok(emu, "tpm2_getcap", "properties-variable").splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and value.strip():
            values[key.strip()] = value.strip()
    return values


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tpm2_tools_clear(tmp_path: Path, kind: str) -> None:
    """tpm2_clearcontrol and tpm2_clear (lockout with a password: the tools check the response
    HMAC, keyed with the new, empty lockoutAuth; then platform), checked with tpm2_getcap."""
    with Emulator(kind, tmp_path / "state") as emu:
        _ok(emu, "tpm2_changeauth", "-c", "owner", "ownerpw")
        _ok(emu, "tpm2_changeauth", "-c", "lockout", "lockpw")
        v = _variables(emu)
        assert (v["ownerAuthSet"], v["lockoutAuthSet"], v["disableClear"]) == ("1", "1", "0")
        _ok(emu, "tpm2_clearcontrol", "-C", "l", "-P", "lockpw", "s")
        assert _variables(emu)["disableClear"] == "1"
        refused = _tool(emu, "tpm2_clear", "-c", "l", "lockpw")
        assert refused.returncode != 0 and "0x120" in refused.stderr.lower()
        refused = _tool(emu, "tpm2_clearcontrol", "-C", "l", "-P", "lockpw", "c")
        assert refused.returncode != 0
        _ok(emu, "tpm2_clearcontrol", "-C", "p", "c")
        assert _variables(emu)["disableClear"] == "0"
        _ok(emu, "tpm2_clear", "-c", "l", "lockpw")
        v = _variables(emu)
        assert (v["ownerAuthSet"], v["lockoutAuthSet"], v["disableClear"]) == ("0", "0", "0")
        _ok(emu, "tpm2_changeauth", "-c", "owner", "again")
        _ok(emu, "tpm2_clear", "-c", "p")
        assert _variables(emu)["ownerAuthSet"] == "0"


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tpm2_tools_seeds_and_policy(tmp_path: Path, kind: str) -> None:
    """tpm2_changeeps changes the endorsement primary, tpm2_changepps the platform primary
    (tpm2_createprimary's output compared); tpm2_setprimarypolicy sets a policy that then
    authorizes tpm2_changeauth of the owner hierarchy through a policy session."""
    work = tmp_path / "work"
    work.mkdir()
    with Emulator(kind, tmp_path / "state") as emu:
        def key(hierarchy: str, name: str) -> bytes:
            _ok(emu, "tpm2_createprimary", "-C", hierarchy, "-G", "ecc", "-c", f"{name}.ctx",
                "-o", f"{name}.pub", cwd=work)
            _ok(emu, "tpm2_flushcontext", "-t", cwd=work)
            return (work / f"{name}.pub").read_bytes()

        ek, pk, srk = key("e", "ek1"), key("p", "pk1"), key("o", "srk1")
        _ok(emu, "tpm2_changeeps", cwd=work)
        assert key("e", "ek2") != ek and key("p", "pk2") == pk and key("o", "srk2") == srk
        _ok(emu, "tpm2_changepps", cwd=work)
        assert key("p", "pk3") != pk and key("e", "ek3") == key("e", "ek4")

        _ok(emu, "tpm2_startauthsession", "-S", "trial.ctx", cwd=work)
        _ok(emu, "tpm2_policycommandcode", "-S", "trial.ctx", "-L", "cc.policy",
            "TPM2_CC_HierarchyChangeAuth", cwd=work)
        _ok(emu, "tpm2_flushcontext", "trial.ctx", cwd=work)
        _ok(emu, "tpm2_changeauth", "-c", "owner", "secret", cwd=work)
        _ok(emu, "tpm2_setprimarypolicy", "-C", "o", "-P", "secret", "-L", "cc.policy",
            "-g", "sha256", cwd=work)
        _ok(emu, "tpm2_startauthsession", "--policy-session", "-S", "s.ctx", cwd=work)
        _ok(emu, "tpm2_policycommandcode", "-S", "s.ctx", "TPM2_CC_HierarchyChangeAuth",
            cwd=work)
        # The owner's password is not given: the policy alone authorizes the change.
        _ok(emu, "tpm2_changeauth", "-c", "owner", "-p", "session:s.ctx", cwd=work)
        _ok(emu, "tpm2_flushcontext", "s.ctx", cwd=work)
        assert _variables(emu)["ownerAuthSet"] == "0"


# ---------------------------------------------------------------------------- tpm2-pytss


@pytest.fixture
def esys(tmp_path: Path) -> Iterator[dict[str, ESAPI]]:
    """An ESAPI context to each of a fresh swtpm_py and a fresh swtpm."""
    emus = {kind: Emulator(kind, tmp_path / kind).start() for kind in ("swtpm_py", "swtpm")}
    ctxs = {kind: ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
            for kind, emu in emus.items()}
    yield ctxs
    for kind, ctx in ctxs.items():
        ctx.close()
        emus[kind].cleanup()


def outcome(action: Callable[[], object]) -> int:
    """0 when ``action`` succeeds, else the TPM's response code."""
    try:
        action()
    except TSS2_Exception as exc:
        return exc.rc
    return 0


NULL_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)


def test_pytss_admin(esys: dict[str, ESAPI]) -> None:
    """ESAPI set_primary_policy (a PolicyCommandCode policy then authorizes the owner),
    change_eps, change_pps, clear_control and clear: the same outcomes on both emulators, and
    the keys change where the seeds did."""
    def public(ctx: ESAPI, hierarchy: ESYS_TR) -> bytes:
        h, pub, *_ = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), "ecc256",
                                        primary_handle=hierarchy)
        ctx.flush_context(h)
        return bytes(pub.marshal())

    def scenario(ctx: ESAPI) -> list[object]:
        results: list[object] = []
        keys = {h: public(ctx, h) for h in (ESYS_TR.ENDORSEMENT, ESYS_TR.OWNER,
                                             ESYS_TR.PLATFORM)}
        trial = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, NULL_SYM,
                                       TPM2_ALG.SHA256)
        ctx.policy_command_code(trial, TPM2_CC.HierarchyChangeAuth)
        digest = bytes(ctx.policy_get_digest(trial))
        ctx.flush_context(trial)
        ctx.set_primary_policy(ESYS_TR.OWNER, digest, TPM2_ALG.SHA256)
        ctx.hierarchy_change_auth(ESYS_TR.OWNER, b"owner")
        ctx.tr_set_auth(ESYS_TR.OWNER, b"wrong")
        s = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, NULL_SYM,
                                   TPM2_ALG.SHA256)
        ctx.policy_command_code(s, TPM2_CC.HierarchyChangeAuth)
        results.append(outcome(lambda: ctx.hierarchy_change_auth(ESYS_TR.OWNER, b"",
                                                                 session1=s)))
        ctx.flush_context(s)
        ctx.tr_set_auth(ESYS_TR.OWNER, b"")
        ctx.change_eps()
        ctx.change_pps()
        results.append([public(ctx, h) != k for h, k in keys.items()])
        results.append(outcome(lambda: ctx.clear_control(ESYS_TR.LOCKOUT, True)))
        results.append(outcome(lambda: ctx.clear(ESYS_TR.LOCKOUT)))
        results.append(outcome(lambda: ctx.clear_control(ESYS_TR.LOCKOUT, False)))
        results.append(outcome(lambda: ctx.clear_control(ESYS_TR.PLATFORM, False)))
        owner = public(ctx, ESYS_TR.OWNER)
        results.append(outcome(lambda: ctx.clear(ESYS_TR.LOCKOUT)))
        results.append(public(ctx, ESYS_TR.OWNER) != owner)
        return results

    got = {kind: scenario(ctx) for kind, ctx in esys.items()}
    assert got["swtpm_py"] == got["swtpm"]
    assert got["swtpm"] == [0, [True, False, True], 0, RC.DISABLED, RC.AUTH_FAIL, 0, 0, True]


# ---------------------------------------------------------------------------- SetAlgorithmSet


def set_algorithm_set(value: int, auth_handle: int = RH.PLATFORM) -> bytes:
    """TPM2_SetAlgorithmSet with an empty password."""
    return with_auth(CC.SetAlgorithmSet, struct.pack(">I", auth_handle),
                     struct.pack(">I", value), pw_session())


def test_set_algorithm_set_as_swtpm(any_emulator: Emulator) -> None:
    """The platform records an algorithm set (TPM_PT_ALGORITHM_SET reports it); the owner may
    not (TPM_RC_VALUE on the handle: not a TPMI_RH_PLATFORM); the command's TPMA_CC is
    swtpm's (checked for every command by test_capability)."""
    send = any_emulator.command
    assert property_value(send(get_property(PT.ALGORITHM_SET)), PT.ALGORITHM_SET) == 0
    assert rc(send(set_algorithm_set(5))) == 0
    assert property_value(send(get_property(PT.ALGORITHM_SET)), PT.ALGORITHM_SET) == 5
    assert rc(send(set_algorithm_set(7, RH.OWNER))) == RC.VALUE + 0x100


def test_algorithm_set_is_persistent(platform: Platform) -> None:
    """The value is persistent data: it survives power cycles."""
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    assert rc(tpm.execute(set_algorithm_set(0x12345678))) == 0
    tpm = power_on(platform)
    assert rc(tpm.execute(startup())) == 0
    value = property_value(tpm.execute(get_property(PT.ALGORITHM_SET)), PT.ALGORITHM_SET)
    assert value == 0x12345678
