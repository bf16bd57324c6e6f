"""TPM2_GetCapability (Part 3 §30.2): what the TPM implements and holds, generated from the
command registry, the algorithm registry, the PCR profile, the properties and the state.

Common rules of every capability (Part 3 §30.2.1, and what swtpm 0.7.1 does):

* ``property`` is where the list starts: the first entry at or after it is returned first;
* at most ``propertyCount`` entries come back, and never more than fit in MAX_CAP_BUFFER
  (the per-capability MAX_CAP_* limits below);
* ``moreData`` is YES exactly when entries remain after the last one returned (so a count of
  zero answers YES and an empty list when there is anything to list).

In failure mode (Part 3 §5.2: only GetTestResult and GetCapability run) GetCapability answers
what depends only on the implementation — algorithms, commands, fixed properties, PCR
properties, curves, PCR and permanent handles — and TPM_RC_FAILURE for what depends on state the
failure may have made untrustworthy (variable properties, the other handles, PCR allocation,
audit list, policies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .. import algorithms, properties
from ..constants import CAP, CC, HT, PT_PCR, RC, RH
from ..errors import TpmError
from ..pcr import PCR_ATTRIBUTES, PCR_AUTH_GROUPS, PCR_POLICY_GROUPS, counts_update
from ..properties import MAX_CAP_BUFFER
from ..registry import COMMANDS, command
from ..wire import (MAX_DIGEST_SIZE, PCR_COUNT, PCR_SELECT_MAX, TPMS_CAPABILITY_DATA, UINT8,
                    UINT32, Checked, bitmap_of)

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

# ---------------------------------------------------------------------------- wire

#: Part 2 §10.10.2: what a TPMU_CAPABILITIES may hold after the capability and count fields.
MAX_CAP_DATA = MAX_CAP_BUFFER - 4 - 4
#: Entries of each list that fit in MAX_CAP_DATA (Part 2 Table "Implementation values"),
#: computed from each entry's marshalled size.
MAX_CAP_ALGS = MAX_CAP_DATA // (2 + 4)
MAX_CAP_HANDLES = MAX_CAP_DATA // 4
MAX_CAP_CC = MAX_CAP_DATA // 4
MAX_TPM_PROPERTIES = MAX_CAP_DATA // (4 + 4)
MAX_PCR_PROPERTIES = MAX_CAP_DATA // (4 + 1 + PCR_SELECT_MAX)
MAX_ECC_CURVES = MAX_CAP_DATA // 2
MAX_TAGGED_POLICIES = MAX_CAP_DATA // (4 + 2 + MAX_DIGEST_SIZE)
MAX_ACT_DATA = MAX_CAP_DATA // (4 + 4 + 4)

#: TPMA_CC.V (Part 2 §8.9): a vendor-specific command code.
CC_VENDOR = 0x20000000
#: TPM_RH_ACT_0 .. TPM_RH_ACT_F (Part 2 §7.4): the handles TPM_CAP_ACT starts from.
RH_ACT_FIRST, RH_ACT_LAST = 0x40000110, 0x4000011F




def _check_cap(value: int) -> None:
    # TPM_CAP unmarshalling: a value that is no TPM_CAP is TPM_RC_VALUE.
    if value not in CAP._value2member_map_:
        raise TpmError(RC.VALUE, detail=f"capability 0x{value:x}")


#: TPM_CAP (Part 2 §6.12): the capability selector.
TPM_CAP = Checked(UINT32, _check_cap)

# ---------------------------------------------------------------------------- helpers


def _page(entries: list, count: int, limit: int) -> tuple[bool, list]:
    """The first ``min(count, limit)`` of ``entries`` (all those at or after the start) and
    whether any remain."""
    n = min(count, limit)
    return len(entries) > n, entries[:n]


def _property_error(rc: RC) -> TpmError:
    """An error about ``property``, the command's second parameter."""
    return TpmError(rc, parameter=2)


def _command_key(code: int) -> tuple[bool, int]:
    """Order of command codes: library commands, then vendor ones, each by index."""
    return bool(code & CC_VENDOR), code & 0xFFFF


def _commands_from(codes: list[int], start: int) -> list[int]:
    """The codes at or after ``start`` in command order; a start with bits outside the
    index and TPMA_CC.V selects nothing (as swtpm)."""
    if start & ~(CC_VENDOR | 0xFFFF):
        return []
    first = _command_key(start)
    return sorted((cc for cc in codes if _command_key(cc) >= first), key=_command_key)


def pcr_properties() -> list[tuple[int, list[int]]]:
    """(TPM_PT_PCR tag, PCRs that have it) for every PCR property (Part 2 §6.14), from the
    profile's attribute table."""
    attrs = list(enumerate(PCR_ATTRIBUTES))
    out = [(PT_PCR.SAVE, [i for i, a in attrs if a.state_save])]
    for loc in range(5):
        out.append((PT_PCR.EXTEND_L0 + 2 * loc,
                    [i for i, a in attrs if a.extend_localities >> loc & 1]))
        out.append((PT_PCR.RESET_L0 + 2 * loc,
                    [i for i, a in attrs if a.reset_localities >> loc & 1]))
    out.append((PT_PCR.NO_INCREMENT, [i for i in range(PCR_COUNT) if not counts_update(i)]))
    out.append((PT_PCR.DRTM_RESET, [i for i, a in attrs if a.drtm]))
    # The PCRs that TPM2_PCR_SetAuthPolicy / SetAuthValue can give an authPolicy / authValue.
    out.append((PT_PCR.POLICY, sorted(p for g in PCR_POLICY_GROUPS for p in g)))
    out.append((PT_PCR.AUTH, sorted(p for g in PCR_AUTH_GROUPS for p in g)))
    return out


def hierarchy_policies(tpm: Tpm) -> list[tuple[int, Any]]:
    """(handle, Policy) of every permanent entity that has an authPolicy, by handle."""
    p = tpm.perm
    return [(RH.OWNER, p.owner_policy), (RH.LOCKOUT, p.lockout_policy),
            (RH.ENDORSEMENT, p.endorsement_policy),
            (RH.PLATFORM, tpm.vol.state_clear.platform_policy)]


# ---------------------------------------------------------------------------- capabilities

#: A capability's lister: (tpm, property, propertyCount) -> (moreData, entries).
Lister = Callable[["Tpm", int, int], tuple[bool, list]]


def _algs(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # Part 3 §30.2: the property is a TPM_ALG_ID (the low 16 bits).
    start = prop & 0xFFFF
    entries = [dict(alg=a.alg, algProperties=int(a.attributes))
               for a in algorithms.implemented() if a.alg >= start]
    return _page(entries, count, MAX_CAP_ALGS)


def _handles(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    htype = prop >> 24
    if htype not in properties.HANDLE_SOURCES:
        raise _property_error(RC.HANDLE)
    if tpm.failure is not None and htype not in (HT.PCR, HT.PERMANENT):
        raise TpmError(RC.FAILURE, detail=tpm.failure)
    # Within a type the low 24 bits order the handles (a loaded-session list may mix HMAC
    # and policy session handles).
    start = prop & 0xFFFFFF
    entries = sorted((h for h in properties.handles(tpm, htype) if h & 0xFFFFFF >= start),
                     key=lambda h: h & 0xFFFFFF)
    return _page(entries, count, MAX_CAP_HANDLES)


def _commands(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    codes = _commands_from(list(COMMANDS), prop)
    return _page([COMMANDS[cc].attributes for cc in codes], count, MAX_CAP_CC)


def _pp_commands(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # The physical presence list (TPM2_PP_Commands), implemented commands only.
    codes = [cc for cc in tpm.perm.pp_commands if cc in COMMANDS]
    return _page(_commands_from(codes, prop), count, MAX_CAP_CC)


def _audit_commands(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    codes = [cc for cc in tpm.perm.audit_commands if cc in COMMANDS]
    return _page(_commands_from(codes, prop), count, MAX_CAP_CC)


def _pcrs(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # Part 3 §30.2: for TPM_CAP_PCRS the property must be zero; the allocation is one value,
    # returned whole for any nonzero count.
    if prop != 0:
        raise _property_error(RC.VALUE)
    selection = tpm.pcrs.selection()
    if count == 0:
        return bool(selection), []
    return False, selection


def _tpm_properties(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    props = properties.in_group(prop)
    if tpm.failure is not None and props and not properties.is_fixed(props[0]):
        raise TpmError(RC.FAILURE, detail=tpm.failure)
    more, page = _page(props, count, MAX_TPM_PROPERTIES)
    return more, [dict(property=p, value=properties.value(tpm, p)) for p in page]


def _pcr_properties(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    entries = [dict(tag=tag, sizeofSelect=PCR_SELECT_MAX, pcrSelect=bitmap_of(pcrs,
                                                                              PCR_SELECT_MAX))
               for tag, pcrs in pcr_properties() if tag >= prop]
    return _page(entries, count, MAX_PCR_PROPERTIES)


def _ecc_curves(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # The property is a TPM_ECC_CURVE (the low 16 bits).
    start = prop & 0xFFFF
    return _page([cv for cv in sorted(algorithms.ECC_CURVES) if cv >= start], count,
                 MAX_ECC_CURVES)


def _auth_policies(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # Part 3 §30.2: the property must be a permanent handle (TPM_RC_VALUE otherwise).
    if prop >> 24 != HT.PERMANENT:
        raise _property_error(RC.VALUE)
    entries = [dict(handle=h, policyHash=dict(hashAlg=pol.alg, digest=pol.digest))
               for h, pol in hierarchy_policies(tpm) if h >= prop]
    return _page(entries, count, MAX_TAGGED_POLICIES)


def _act(tpm: Tpm, prop: int, count: int) -> tuple[bool, list]:
    # The property must be an ACT handle; this TPM implements no authenticated countdown
    # timer, so there is nothing to list.
    if not RH_ACT_FIRST <= prop <= RH_ACT_LAST:
        raise _property_error(RC.VALUE)
    return _page([], count, MAX_ACT_DATA)


#: Each capability: how to list it, and whether it reports state (refused in failure mode).
CAPABILITIES: dict[int, tuple[Lister, bool]] = {
    CAP.ALGS: (_algs, False),
    CAP.HANDLES: (_handles, False),  # decides per handle type
    CAP.COMMANDS: (_commands, False),
    CAP.PP_COMMANDS: (_pp_commands, False),
    CAP.AUDIT_COMMANDS: (_audit_commands, True),
    CAP.PCRS: (_pcrs, True),
    CAP.TPM_PROPERTIES: (_tpm_properties, False),  # decides per group
    CAP.PCR_PROPERTIES: (_pcr_properties, False),
    CAP.ECC_CURVES: (_ecc_curves, False),
    CAP.AUTH_POLICIES: (_auth_policies, True),
    CAP.ACT: (_act, False),
}


@command(CC.GetCapability, params=(TPM_CAP, UINT32, UINT32),
         response=(UINT8, TPMS_CAPABILITY_DATA))
def get_capability(ctx: CommandContext, capability: int, prop: int, count: int) -> tuple:
    """Part 3 §30.2: up to ``count`` values of ``capability`` starting at ``prop``, and
    whether more follow."""
    entry = CAPABILITIES.get(capability)
    if entry is None:
        # TPM_CAP_VENDOR_PROPERTY: no vendor properties.
        raise TpmError(RC.VALUE, parameter=1, detail=f"capability 0x{capability:x}")
    lister, stateful = entry
    tpm = ctx.tpm
    if stateful and tpm.failure is not None:
        raise TpmError(RC.FAILURE, detail=tpm.failure)
    more, data = lister(tpm, prop, count)
    return int(more), dict(capability=capability, data=data)
