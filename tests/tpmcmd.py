"""Builders for raw TPM 2.0 commands used by in-process tests (Part 3 wire layout)."""

from __future__ import annotations

import struct

from swtpm_py.tpm import Platform, Tpm
from swtpm_py.tpm.constants import CC, RH, ST


class FakeClock:
    """A settable millisecond clock for in-process TPMs."""

    def __init__(self) -> None:
        self.now = 1000

    def __call__(self) -> int:
        return self.now


def power_on(platform: Platform) -> Tpm:
    """_TPM_Init of a new TPM instance over ``platform`` (as after a power loss)."""
    tpm = Tpm(platform)
    tpm.power_on()
    return tpm


def cmd(code: int, body: bytes = b"", tag: int = ST.NO_SESSIONS) -> bytes:
    """A command with ``body`` after the 10-byte header."""
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def pw_session(password: bytes = b"", attributes: int = 1) -> bytes:
    """One TPMS_AUTH_COMMAND for the password session TPM_RS_PW."""
    return (struct.pack(">IH", RH.PW, 0) + bytes([attributes])
            + struct.pack(">H", len(password)) + password)


def with_auth(code: int, handles: bytes, params: bytes, *sessions: bytes) -> bytes:
    """A TPM_ST_SESSIONS command: handles, authorization area, parameters."""
    area = b"".join(sessions or (pw_session(),))
    return cmd(code, handles + struct.pack(">I", len(area)) + area + params, ST.SESSIONS)


def rc(response: bytes) -> int:
    """The response code of a response."""
    return struct.unpack(">I", response[6:10])[0]


def startup(clear: bool = True) -> bytes:
    """TPM2_Startup(CLEAR|STATE)."""
    return cmd(CC.Startup, struct.pack(">H", 0 if clear else 1))


def shutdown(clear: bool = True) -> bytes:
    """TPM2_Shutdown(CLEAR|STATE)."""
    return cmd(CC.Shutdown, struct.pack(">H", 0 if clear else 1))


def pcr_extend(pcr: int, alg: int, digest: bytes) -> bytes:
    """TPM2_PCR_Extend of one digest with an empty password."""
    return with_auth(CC.PCR_Extend, struct.pack(">I", pcr),
                     struct.pack(">IH", 1, alg) + digest)


def pcr_read(alg: int, pcrs: list[int]) -> bytes:
    """TPM2_PCR_Read of ``pcrs`` in one bank."""
    sel = bytearray(3)
    for p in pcrs:
        sel[p // 8] |= 1 << (p % 8)
    return cmd(CC.PCR_Read, struct.pack(">IHB", 1, alg, 3) + bytes(sel))


def pcr_values(response: bytes) -> list[bytes]:
    """The digests of a PCR_Read response."""
    off = 10 + 4
    count = struct.unpack_from(">I", response, off)[0]
    off += 4
    for _ in range(count):
        off += 3
        size = response[off - 1]
        off += size
    n = struct.unpack_from(">I", response, off)[0]
    off += 4
    out = []
    for _ in range(n):
        size = struct.unpack_from(">H", response, off)[0]
        out.append(response[off + 2:off + 2 + size])
        off += 2 + size
    return out


def read_clock_info(response: bytes) -> dict:
    """Fields of a ReadClock response."""
    time_, clock, reset, restart, safe = struct.unpack_from(">QQIIB", response, 10)
    return dict(time=time_, clock=clock, reset_count=reset, restart_count=restart, safe=safe)
