"""Entities that handles refer to, and how the core finds them (Part 1 §15, §16, §19).

The core resolves every handle it must authorize or name through :func:`resolve`. PCRs and
permanent handles are built in; modules that add entities (objects, NV indices, sessions)
register a resolver for their handle type with :func:`register_resolver`, so the dispatcher
never needs to know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .constants import HT, RC, RH
from .errors import TpmError
from .state import Policy

if TYPE_CHECKING:
    from .core import Tpm


@dataclass
class Entity:
    """What authorization and cpHash need to know about the entity behind a handle."""

    handle: int
    #: Part 1 §16: the Name (the handle itself for PCRs, permanent handles and sessions).
    name: bytes
    auth_value: bytes = b""
    auth_policy: Policy = field(default_factory=Policy)
    #: Part 1 §19.7: authValue may authorize USER role (objects: TPMA_OBJECT.userWithAuth).
    user_with_auth: bool = True
    #: Part 1 §19.7: ADMIN role needs a policy session (objects: TPMA_OBJECT.adminWithPolicy).
    admin_with_policy: bool = False
    #: Part 1 §19.8.5: exempt from dictionary-attack counting (TPMA_OBJECT.noDA, NV NO_DA).
    no_da: bool = True
    #: An object loaded without its sensitive area: it has no authValue for any role (the
    #: reference's IsAuthValueAvailable()).
    public_only: bool = False


Resolver = Callable[["Tpm", int], Entity]
_RESOLVERS: dict[int, Resolver] = {}


def register_resolver(handle_type: HT, resolver: Resolver) -> None:
    """Let ``resolver(tpm, handle)`` find entities of ``handle_type``; it raises
    TpmError(TPM_RC_HANDLE) for a handle that is not loaded/defined."""
    _RESOLVERS[int(handle_type)] = resolver


def resolve(tpm: Tpm, handle: int) -> Entity:
    """The entity ``handle`` refers to; TPM_RC_HANDLE if none, TPM_RC_HIERARCHY if its
    hierarchy is disabled (Part 3 §5.6.2)."""
    resolver = _RESOLVERS.get(handle >> 24)
    if resolver is None:
        raise TpmError(RC.HANDLE, detail=f"handle 0x{handle:08x} not loaded")
    return resolver(tpm, handle)


def _pcr(tpm: Tpm, handle: int) -> Entity:
    # A PCR's authValue (TPM2_PCR_SetAuthValue, state-clear) and authPolicy
    # (TPM2_PCR_SetAuthPolicy, persistent) are those of its group; without them both are empty.
    return Entity(handle, handle.to_bytes(4, "big"),
                  auth_value=tpm.vol.state_clear.pcr_auth.get(handle, b""),
                  auth_policy=tpm.perm.pcr_policies.get(handle, Policy()))


def _permanent(tpm: Tpm, handle: int) -> Entity:
    enabled = {RH.OWNER: tpm.vol.state_clear.sh_enable,
               RH.ENDORSEMENT: tpm.vol.state_clear.eh_enable,
               RH.PLATFORM: tpm.vol.ph_enable}.get(handle, True)
    if not enabled:
        raise TpmError(RC.HIERARCHY)
    return permanent_entity(tpm, handle)


def permanent_entity(tpm: Tpm, handle: int) -> Entity:
    """The entity of a permanent handle whether or not its hierarchy is enabled — what a
    response HMAC needs after a command that disabled the hierarchy it authorized (the
    reference's EntityGetAuthValue() ignores the enables)."""
    perm, sc = tpm.perm, tpm.vol.state_clear
    name = handle.to_bytes(4, "big")
    if handle == RH.OWNER:
        return Entity(handle, name, perm.owner_auth, perm.owner_policy)
    if handle == RH.ENDORSEMENT:
        return Entity(handle, name, perm.endorsement_auth, perm.endorsement_policy)
    if handle == RH.PLATFORM:
        return Entity(handle, name, sc.platform_auth, sc.platform_policy)
    if handle == RH.LOCKOUT:
        # Part 1 §19.8.5: lockoutAuth failures lock lockoutAuth itself (DA-protected).
        return Entity(handle, name, perm.lockout_auth, perm.lockout_policy, no_da=False)
    if handle in (RH.NULL, RH.PLATFORM_NV):
        return Entity(handle, name)
    raise TpmError(RC.HANDLE, detail=f"handle 0x{handle:08x} not loaded")


register_resolver(HT.PCR, _pcr)
register_resolver(HT.PERMANENT, _permanent)
