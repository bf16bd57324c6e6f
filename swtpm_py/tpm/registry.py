"""The command registry: every command is declared here once, by its handler module.

A declaration names the command code, its handles (with the TPMI type check and the
authorization role of each, Part 1 §19.2 / Part 3 "Authorization Role"), its parameter and
response structures, whether it has a response handle and whether it writes NV (TPMA_CC.nv).
The dispatcher does all common work from it, and GetCapability(COMMANDS) is generated from it,
so the TPM never reports a command it does not implement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import construct as c

from .constants import CC, CommandAttr
from .wire import CompiledBuild

if TYPE_CHECKING:
    from .core import CommandContext


class Auth(enum.Enum):
    """Authorization role a handle requires (Part 1 §19.2)."""

    NONE = "none"
    USER = "user"
    ADMIN = "admin"
    DUP = "dup"


@dataclass(frozen=True)
class HandleSpec:
    """One handle of a command: its name, the TPMI type check and the role it is used in.

    ``check`` raises TpmError (TPM_RC_VALUE for a value outside the TPMI type) before the
    handle is looked up.
    """

    name: str
    check: Callable[[int], None]
    auth: Auth = Auth.NONE


@dataclass(frozen=True)
class CommandSpec:
    """A declared command (see :func:`command`)."""

    code: CC
    handler: Callable[..., Any]
    handles: tuple[HandleSpec, ...]
    params: tuple[c.Construct, ...]
    response: tuple[c.Construct, ...]
    response_handle: bool
    nv: bool

    @property
    def auth_count(self) -> int:
        """How many handles need an authorization session."""
        return sum(1 for h in self.handles if h.auth is not Auth.NONE)

    @property
    def decrypt(self) -> bool:
        """Part 1 §21.1: whether the first command parameter may be encrypted by a session with
        the decrypt attribute — it must be a TPM2B (the reference's DECRYPT_2 attribute).
        Otherwise the decrypt attribute is TPM_RC_ATTRIBUTES for the session."""
        return bool(self.params) and is_tpm2b(self.params[0])

    @property
    def encrypt(self) -> bool:
        """Part 1 §21.1: whether the first response parameter (after a response handle) may be
        encrypted by a session with the encrypt attribute — it must be a TPM2B (ENCRYPT_2)."""
        return bool(self.response) and is_tpm2b(self.response[0])

    @property
    def attributes(self) -> int:
        """TPMA_CC for GetCapability(COMMANDS) (Part 2 §8.9)."""
        attrs = int(self.code) & 0xFFFF
        attrs |= len(self.handles) << 25
        if self.nv:
            attrs |= CommandAttr.NV
        if self.response_handle:
            attrs |= CommandAttr.R_HANDLE
        if self.code in FLUSHING:
            attrs |= CommandAttr.FLUSHED
        if self.code in EXTENSIVE:
            attrs |= CommandAttr.EXTENSIVE
        return attrs


def is_tpm2b(con: c.Construct) -> bool:
    """Whether ``con`` is a TPM2B on the wire (Part 2 §10.4): a 16-bit size, then that many
    octets. Recognised: a ``construct.Prefixed`` with a two-octet length, or any construct
    whose class or instance sets ``tpm2b = True`` (sized structures); names and compiled
    builders are looked through."""
    while isinstance(con, (c.Renamed, CompiledBuild)):
        con = con.subcon
    if getattr(con, "tpm2b", False):
        return True
    if isinstance(con, c.Prefixed):
        try:
            return con.lengthfield.sizeof() == 2
        except c.SizeofError:
            return False
    return False


#: Commands that flush a handle from the TPM (TPMA_CC.flushed, Part 2 §8.9.2).
FLUSHING = {CC.SequenceComplete, CC.EventSequenceComplete}
#: Commands that may flush many objects (TPMA_CC.extensive, Part 2 §8.9.2), as swtpm reports.
EXTENSIVE = {CC.HierarchyControl, CC.ChangeEPS, CC.ChangePPS, CC.Clear}

#: All registered commands by code, filled as the command modules are imported.
COMMANDS: dict[int, CommandSpec] = {}


def command(code: CC, *, handles: tuple[HandleSpec, ...] = (), params: tuple[c.Construct, ...] = (),
            response: tuple[c.Construct, ...] = (), response_handle: bool = False,
            nv: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the decorated function as the handler of command ``code``.

    The handler is called as ``handler(ctx, *handles, *params)`` with handles as integers and
    parameters as parsed by their constructs. It returns the response values in declared order
    (the response handle first when ``response_handle``): a tuple, a single value when there is
    exactly one, or None when there are none.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if code in COMMANDS:
            raise RuntimeError(f"command {code.name} declared twice")
        COMMANDS[code] = CommandSpec(code, fn, handles, params, response, response_handle, nv)
        return fn

    return register
