"""TPMI handle types (Part 2 §9) as checks, used both for handles and handle-valued parameters.

A trailing ``_NULL`` in a name stands for the spec's ``+`` (TPM_RH_NULL allowed). A value outside
the type is TPM_RC_VALUE (Part 2 §9: "TPM_RC_VALUE ... response code when the value is not
in the allowed set").
"""

from __future__ import annotations

from typing import Callable

import construct as c

from .constants import HT, RC, RH
from .errors import TpmError
from .wire import PCR_COUNT, TPM2B_DIGEST, UINT16, UINT32, Checked, check_nv_index


def _one_of(name: str, *allowed: int) -> Callable[[int], None]:
    allowed_set = frozenset(allowed)

    def check(handle: int) -> None:
        if handle not in allowed_set:
            raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a {name}")

    check.__name__ = name
    return check


def _pcr(allow_null: bool) -> Callable[[int], None]:
    def check(handle: int) -> None:
        if handle < PCR_COUNT or (allow_null and handle == RH.NULL):
            return
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a PCR")

    return check


def any_handle(handle: int) -> None:
    """TPMI_DH_ENTITY-style placeholder for handles validated when they are resolved."""


TPMI_DH_PCR = _pcr(False)
TPMI_DH_PCR_NULL = _pcr(True)
TPMI_RH_HIERARCHY = _one_of("TPMI_RH_HIERARCHY", RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM)
TPMI_RH_HIERARCHY_NULL = _one_of("TPMI_RH_HIERARCHY", RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM,
                                 RH.NULL)
TPMI_RH_PLATFORM = _one_of("TPMI_RH_PLATFORM", RH.PLATFORM)
TPMI_RH_OWNER = _one_of("TPMI_RH_OWNER", RH.OWNER)
TPMI_RH_ENDORSEMENT = _one_of("TPMI_RH_ENDORSEMENT", RH.ENDORSEMENT)
TPMI_RH_PROVISION = _one_of("TPMI_RH_PROVISION", RH.OWNER, RH.PLATFORM)
TPMI_RH_CLEAR = _one_of("TPMI_RH_CLEAR", RH.LOCKOUT, RH.PLATFORM)
TPMI_RH_LOCKOUT = _one_of("TPMI_RH_LOCKOUT", RH.LOCKOUT)
TPMI_RH_ENABLES = _one_of("TPMI_RH_ENABLES", RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM,
                          RH.PLATFORM_NV)
TPMI_RH_HIERARCHY_AUTH = _one_of("TPMI_RH_HIERARCHY_AUTH", RH.OWNER, RH.ENDORSEMENT,
                                 RH.PLATFORM, RH.LOCKOUT)


def handle_param(check: Callable[[int], None]) -> c.Construct:
    """A handle-valued command parameter (e.g. TPM2_Hash's hierarchy) of the given TPMI type."""
    return Checked(UINT32, check)


#: Part 2 §9.24: an NV index handle (also the nvIndex of TPMS_NV_PUBLIC, hence in wire).
TPMI_RH_NV_INDEX = check_nv_index


def TPMI_RH_NV_AUTH(handle: int) -> None:  # noqa: N802 - named as the spec's type
    """Part 2 §9.23: what may authorize an NV access: the platform, the owner or an index."""
    if handle not in (RH.PLATFORM, RH.OWNER) and handle >> 24 != HT.NV_INDEX:
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_RH_NV_AUTH")


def ticket_param(what: str, *tags: int) -> c.Construct:
    """A TPMT_TK_* ticket as a command parameter (Part 2 §10.7): its tag must be one of
    ``tags`` (TPM_RC_TAG otherwise) and its hierarchy a TPMI_RH_HIERARCHY+ (TPM_RC_VALUE);
    then a TPM2B_DIGEST. ``what`` names the ticket in error details."""
    allowed = frozenset(tags)

    def check_tag(tag: int) -> None:
        if tag not in allowed:
            raise TpmError(RC.TAG, detail=f"tag 0x{tag:04x} is no {what} ticket")

    return c.Struct("tag" / Checked(UINT16, check_tag),
                    "hierarchy" / handle_param(TPMI_RH_HIERARCHY_NULL),
                    "digest" / TPM2B_DIGEST)
