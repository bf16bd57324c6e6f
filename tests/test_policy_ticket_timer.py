"""TPM2_PolicyTicket, TPM2_PolicyCounterTimer and TPM2_PolicyDuplicationSelect (Part 3 §23.5,
§23.9, §23.15), against swtpm_py and the real swtpm 0.7.1 side by side: the same raw commands,
the same response codes, the same policy digests — which are also computed here with hashlib
and with tpm2-tools' policy tools (trial sessions)."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator import Emulator
from sessclient import Use, b2, call, rc_of, start_session, u16, u32
from test_policy import flush_everything
from tpmcmd import cmd

CC_POLICY_SECRET, CC_POLICY_TICKET = 0x151, 0x172
CC_POLICY_COMMAND_CODE, CC_POLICY_CP_HASH = 0x16C, 0x16E
CC_POLICY_COUNTER_TIMER, CC_POLICY_DUPLICATION_SELECT = 0x16D, 0x188
CC_POLICY_GET_DIGEST, CC_READ_CLOCK = 0x189, 0x181
OWNER, ENDORSEMENT = 0x40000001, 0x4000000B
ST_AUTH_SECRET, ST_AUTH_SIGNED = 0x8023, 0x8025
POLICY_SESSION, TRIAL_SESSION = 1, 3
# Response codes (Part 2 §6.6; measured on swtpm 0.7.1).
TICKET_P5, SIZE_P1, TAG_P5, ATTRIBUTES_H1 = 0x5E0, 0x1D5, 0x5D7, 0x182
POLICY, RANGE, VALUE_P2, VALUE_P3 = 0x126, 0x08D, 0x2C4, 0x3C4
CPHASH, COMMAND_CODE = 0x151, 0x143
EO_EQ, EO_NEQ, EO_UNSIGNED_GT, EO_UNSIGNED_LT, EO_BITSET, EO_BITCLEAR = 0, 1, 3, 5, 0xA, 0xB
TOOLS_TIMEOUT = 60

Send = Callable[[bytes], bytes]


def policy_digest(send: Send, handle: int) -> bytes:
    """TPM2_PolicyGetDigest."""
    resp = send(cmd(CC_POLICY_GET_DIGEST, u32(handle)))
    assert rc_of(resp) == 0
    return resp[12:]


def update(digest: bytes, code: int, *parts: bytes) -> bytes:
    """policyDigest_new := SHA-256(policyDigest_old || code || parts)."""
    return hashlib.sha256(digest + u32(code) + b"".join(parts)).digest()


def policy_secret(send: Send, session: int, expiration: int,
                  auth_handle: int = OWNER) -> tuple[int, bytes, bytes]:
    """TPM2_PolicySecret with a password session; (rc, timeout, ticket bytes)."""
    params = b2(b"") + b2(b"") + b2(b"") + struct.pack(">i", expiration)
    r = call(send, CC_POLICY_SECRET, [(auth_handle, u32(auth_handle)), (session, u32(session))],
             params, [Use(None)])
    if r.rc:
        return r.rc, b"", b""
    size = struct.unpack_from(">H", r.parameters)[0]
    return 0, r.parameters[2:2 + size], r.parameters[2 + size:]


def policy_ticket(send: Send, session: int, timeout: bytes, auth_name: bytes, ticket: bytes,
                  cp_hash: bytes = b"", policy_ref: bytes = b"") -> int:
    """TPM2_PolicyTicket; its response code."""
    body = u32(session) + b2(timeout) + b2(cp_hash) + b2(policy_ref) + b2(auth_name) + ticket
    return rc_of(send(cmd(CC_POLICY_TICKET, body)))


def counter_timer(send: Send, session: int, operand: bytes, offset: int, operation: int) -> int:
    """TPM2_PolicyCounterTimer; its response code."""
    body = u32(session) + b2(operand) + u16(offset) + u16(operation)
    return rc_of(send(cmd(CC_POLICY_COUNTER_TIMER, body)))


def duplication_select(send: Send, session: int, object_name: bytes, parent_name: bytes,
                       include: int) -> int:
    """TPM2_PolicyDuplicationSelect; its response code."""
    body = u32(session) + b2(object_name) + b2(parent_name) + bytes([include])
    return rc_of(send(cmd(CC_POLICY_DUPLICATION_SELECT, body)))


def time_info(send: Send) -> bytes:
    """TPMS_TIME_INFO as TPM2_ReadClock returns it (25 octets)."""
    resp = send(cmd(CC_READ_CLOCK))
    assert rc_of(resp) == 0 and len(resp) == 35
    return resp[10:]


def power_cycle(emu: Emulator) -> None:
    """Shutdown(CLEAR), _TPM_Init over the control channel, Startup(CLEAR)."""
    assert rc_of(emu.command(cmd(0x145, u16(0)))) == 0
    assert emu.ctrl(0x02, u32(0), 4) == bytes(4)
    assert rc_of(emu.command(cmd(0x144, u16(0)))) == 0


# ---------------------------------------------------------------------------- PolicyTicket


def test_policy_ticket_replaces_policy_secret(pair: dict[str, Emulator]) -> None:
    """A ticket from PolicySecret(expiration < 0) gives another session PolicySecret's digest
    without the authorization; a changed ticket, timeout, policyRef or tag, a trial session and
    a TPM Reset (for a ticket that expires on reset) are refused with swtpm's codes."""
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        first = start_session(send, session_type=POLICY_SESSION).handle
        rc, timeout, ticket = policy_secret(send, first, -100)
        assert rc == 0 and len(timeout) == 8 and timeout[0] & 0x80  # expires on reset
        assert struct.unpack_from(">HI", ticket) == (ST_AUTH_SECRET, OWNER)
        expected = policy_digest(send, first)
        second = start_session(send, session_type=POLICY_SESSION).handle
        trial = start_session(send, session_type=TRIAL_SESSION).handle
        name = u32(OWNER)
        tampered = ticket[:-1] + bytes([ticket[-1] ^ 1])
        signed_tag = u16(ST_AUTH_SIGNED) + ticket[2:]
        codes = [
            policy_ticket(send, second, timeout, name, tampered),
            policy_ticket(send, second, timeout[:7], name, ticket),
            policy_ticket(send, second, timeout, name, ticket, policy_ref=b"other"),
            policy_ticket(send, second, timeout, u32(ENDORSEMENT), ticket),
            policy_ticket(send, second, timeout, name, signed_tag),
            policy_ticket(send, second, timeout, name, u16(0x8021) + ticket[2:]),
            policy_ticket(send, trial, timeout, name, ticket),
            policy_ticket(send, second, timeout, name, ticket),
        ]
        same = policy_digest(send, second) == expected
        power_cycle(emu)
        third = start_session(send, session_type=POLICY_SESSION).handle
        codes.append(policy_ticket(send, third, timeout, name, ticket))
        results[kind] = (codes, same)
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    codes, same = results["swtpm"]
    assert codes == [TICKET_P5, SIZE_P1, TICKET_P5, TICKET_P5, TICKET_P5, TAG_P5,
                     ATTRIBUTES_H1, 0, TICKET_P5]
    assert same


# ---------------------------------------------------------------------------- PolicyCounterTimer


def test_policy_counter_timer_conditions(pair: dict[str, Emulator]) -> None:
    """Conditions on resetCount (offset 16), Clock (offset 8) and the safe flag (offset 24) of
    TPMS_TIME_INFO hold or fail as on swtpm; offsets and operands outside the 25 octets and an
    unknown operation are refused with swtpm's codes; the digest is the spec's."""
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        info = time_info(send)
        reset_count = info[16:20]
        p = start_session(send, session_type=POLICY_SESSION).handle
        codes = [
            counter_timer(send, p, reset_count, 16, EO_EQ),
            counter_timer(send, p, reset_count, 16, EO_NEQ),
            counter_timer(send, p, (1 << 62).to_bytes(8, "big"), 8, EO_UNSIGNED_LT),
            counter_timer(send, p, bytes(8), 8, EO_UNSIGNED_GT),
            counter_timer(send, p, b"\x01", 24, EO_BITSET),
            counter_timer(send, p, b"\x01", 24, EO_BITCLEAR),
            counter_timer(send, p, b"\x01", 26, EO_EQ),
            counter_timer(send, p, bytes(8), 20, EO_EQ),
            counter_timer(send, p, b"\x01", 25, EO_EQ),
            counter_timer(send, p, reset_count, 16, 0x0C),
        ]
        t = start_session(send, session_type=TRIAL_SESSION).handle
        codes.append(counter_timer(send, t, b"\xff\xff\xff\xff", 16, EO_EQ))  # trial: unchecked
        codes.append(counter_timer(send, t, bytes(8), 20, EO_EQ))            # but bounds are
        results[kind] = (codes, policy_digest(send, t), policy_digest(send, p))
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    codes, trial_digest, _ = results["swtpm"]
    assert codes == [0, POLICY, 0, 0, 0, POLICY, VALUE_P2, RANGE, RANGE, VALUE_P3, 0, RANGE]
    arg = hashlib.sha256(b"\xff\xff\xff\xff" + u16(16) + u16(EO_EQ)).digest()
    assert trial_digest == update(bytes(32), CC_POLICY_COUNTER_TIMER, arg)


def test_policy_counter_timer_digest_equals_tpm2_tools(pair: dict[str, Emulator],
                                                      tmp_path: Path) -> None:
    """`tpm2_policycountertimer --ult 60000` (Time < 60 s) in a trial session gives the
    digest computed here, on both emulators."""
    arg = hashlib.sha256((60000).to_bytes(8, "big") + u16(0) + u16(EO_UNSIGNED_LT)).digest()
    expected = update(bytes(32), CC_POLICY_COUNTER_TIMER, arg)
    for kind, emu in pair.items():
        env = dict(os.environ, TPM2TOOLS_TCTI=emu.tcti)
        ctx, out = tmp_path / f"{kind}.ctx", tmp_path / f"{kind}.policy"
        for args in (["tpm2_startauthsession", "-S", str(ctx)],
                     ["tpm2_policycountertimer", "-S", str(ctx), "-L", str(out), "--ult",
                      "60000"],
                     ["tpm2_flushcontext", str(ctx)]):
            r = subprocess.run(args, env=env, capture_output=True, text=True,
                               timeout=TOOLS_TIMEOUT)
            assert r.returncode == 0, (kind, args, r.stderr)
        assert out.read_bytes() == expected, kind


# ---------------------------------------------------------------------------- PolicyDuplicationSelect


@pytest.mark.parametrize("include", [0, 1])
def test_policy_duplication_select_digest(pair: dict[str, Emulator], include: int) -> None:
    """The digest with and without the object's Name, as swtpm and the spec compute it."""
    object_name = u16(0x000B) + hashlib.sha256(b"object").digest()
    parent_name = u16(0x000B) + hashlib.sha256(b"parent").digest()
    digests = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        for session_type in (TRIAL_SESSION, POLICY_SESSION):
            s = start_session(send, session_type=session_type).handle
            assert duplication_select(send, s, object_name, parent_name, include) == 0
            digests[kind, session_type] = policy_digest(send, s)
        flush_everything(send)
    selected = object_name if include else b""
    expected = update(bytes(32), CC_POLICY_DUPLICATION_SELECT, selected, parent_name,
                      bytes([include]))
    assert set(digests.values()) == {expected}


def test_policy_duplication_select_errors(pair: dict[str, Emulator], tmp_path: Path) -> None:
    """A session with a command code or a cpHash already set, and includeObject 2, are refused
    with swtpm's codes; tpm2_policyduplicationselect computes the same digest."""
    name = u16(0x000B) + bytes(32)
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        p = start_session(send, session_type=POLICY_SESSION).handle
        codes = [duplication_select(send, p, name, name, 2)]
        codes.append(rc_of(send(cmd(CC_POLICY_COMMAND_CODE, u32(p) + u32(0x17B)))))
        codes.append(duplication_select(send, p, name, name, 1))
        q = start_session(send, session_type=POLICY_SESSION).handle
        assert rc_of(send(cmd(CC_POLICY_CP_HASH, u32(q) + b2(bytes(32))))) == 0
        codes.append(duplication_select(send, q, name, name, 1))
        r = start_session(send, session_type=POLICY_SESSION).handle
        codes.append(duplication_select(send, r, name, name, 1))
        codes.append(duplication_select(send, r, name, name, 1))
        results[kind] = codes
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == [VALUE_P3, 0, COMMAND_CODE, CPHASH, 0, CPHASH]
