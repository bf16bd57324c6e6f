"""The one exception type of the TPM core: it carries the response code that goes on the wire.

Part 2 §6.6.3: a format-1 code (bit 7 set) names what it refers to — handle *n* (bits 8-10,
bit 6 = 0, bit 11 = 0), parameter *n* (bits 8-11, bit 6 = 1) or session *n* (bits 8-10,
bit 11 = 1). Format-0 codes and warnings never carry a number.
"""

from __future__ import annotations

from .constants import RC, RC_FMT1, RC_H, RC_N_SHIFT, RC_P, RC_S


def is_format1(rc: int) -> bool:
    """True when ``rc`` is a format-1 code that can carry a handle/parameter/session number."""
    return bool(rc & RC_FMT1)


def _numbered(rc: int, kind: int, n: int) -> int:
    if not is_format1(rc) or rc & 0xF40:
        # Format-0 codes and codes that already carry a number are returned unchanged.
        return rc
    return rc | kind | (n << RC_N_SHIFT)


def for_handle(rc: int, n: int) -> int:
    """Attach handle number ``n`` (1-7) to a format-1 ``rc``."""
    return _numbered(rc, RC_H, n)


def for_parameter(rc: int, n: int) -> int:
    """Attach parameter number ``n`` (1-15) to a format-1 ``rc``."""
    return _numbered(rc, RC_P, n)


def for_session(rc: int, n: int) -> int:
    """Attach session number ``n`` (1-7) to a format-1 ``rc``."""
    return _numbered(rc, RC_S, n)


class TpmError(Exception):
    """A TPM command failed with response code ``rc``.

    Raise it anywhere in the core. The dispatcher attaches the number of the parameter, handle
    or session being processed when the code is format-1 and does not yet carry one; pass an
    explicit ``parameter=``/``handle=``/``session=`` to point elsewhere.
    """

    def __init__(self, rc: int, *, parameter: int = 0, handle: int = 0, session: int = 0,
                 detail: str = "") -> None:
        if parameter:
            rc = for_parameter(rc, parameter)
        elif handle:
            rc = for_handle(rc, handle)
        elif session:
            rc = for_session(rc, session)
        self.rc = int(rc)
        self.detail = detail
        super().__init__(f"TPM_RC 0x{self.rc:03x}{': ' + detail if detail else ''}")

    @property
    def numbered(self) -> bool:
        """True once the code names a handle, parameter or session."""
        return is_format1(self.rc) and bool(self.rc & 0xF40)


def rc_name(rc: int) -> str:
    """A readable name for a response code, e.g. ``VALUE+P1`` for 0x1c4 (for logs and tests)."""
    if rc == 0:
        return "SUCCESS"
    for base, letter in ((RC.REFERENCE_H0, "H"), (RC.REFERENCE_S0, "S")):
        if base <= rc <= base + 6:
            return f"REFERENCE_{letter}{rc - base}"
    if is_format1(rc):
        base = rc & 0x0BF
        if rc & RC_P:
            base = rc & 0x0BF
            suffix = f"+P{(rc >> RC_N_SHIFT) & 0xF}" if rc & 0xF00 else ""
        elif rc & RC_S:
            base = rc & 0x0BF
            suffix = f"+S{(rc >> RC_N_SHIFT) & 0x7}"
        else:
            suffix = f"+H{(rc >> RC_N_SHIFT) & 0x7}" if rc & 0x700 else ""
        try:
            return RC(base).name + suffix
        except ValueError:
            return f"0x{rc:03x}"
    try:
        return RC(rc).name
    except ValueError:
        return f"0x{rc:03x}"
