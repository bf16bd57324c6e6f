"""Property-based tests (hypothesis) of the core's one promise: whatever bytes arrive,
``Tpm.execute`` answers with a well-formed response and nothing else escapes.

A well-formed response: at least 10 octets, its size field equal to its length, tag
TPM_ST_NO_SESSIONS or TPM_ST_SESSIONS; an error is exactly a 10-octet TPM_ST_NO_SESSIONS header;
a success parses completely with the response structures the command declares. No internal
error (TPM_RC_FAILURE with a logged traceback) may happen, and afterwards the TPM still works.

Inputs: random bytes, random bodies behind valid headers of every implemented command, and
mutations (bit flips, truncation, extension, splices, size-field fix-ups) of every valid and
invalid command of the differential table.
"""

from __future__ import annotations

import io
import logging
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import CC, RC, ST
from swtpm_py.tpm.registry import COMMANDS
from swtpm_py.tpm.wire import TPMS_AUTH_RESPONSE

from test_differential import CASES, POWER_CYCLE, get_random, response_code, startup

#: Every command byte string of the differential table (valid and invalid ones).
TABLE = sorted({s.command for case in CASES for s in case.steps if s is not POWER_CYCLE},
               key=lambda c: (len(c), c))
#: The commands of the table that succeed (on a started TPM at locality 0).
VALID = sorted({s.command for case in CASES if case.started for s in case.steps
                if s.expect == 0 and s.locality == 0 and not s.prefixed},
               key=lambda c: (len(c), c))
CODES = sorted(COMMANDS) + [0, 0x11F, 0x19B, 0x20000000, 0xFFFFFFFF]
FUZZ = settings(max_examples=3000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


class InternalErrors(logging.Handler):
    """Collects the tracebacks the core logs when a handler raises something unexpected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors():
    """Internal errors logged by the core while the module runs (must stay empty)."""
    handler = InternalErrors()
    logger = logging.getLogger("swtpm_py.tpm")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def fresh_tpm(started: bool) -> Tpm:
    """A new TPM, started or just powered on."""
    tpm = Tpm(Platform(MemoryStorage()))
    tpm.power_on()
    if started:
        assert response_code(tpm.execute(startup(0))) == 0
    return tpm


#: Long-lived TPMs: state accumulates across examples, as it would on a real machine.
TPMS = {True: fresh_tpm(True), False: fresh_tpm(False)}


def check_response(command: bytes, response: bytes) -> None:
    """Assert ``response`` is a well-formed answer to ``command``."""
    assert isinstance(response, bytes) and len(response) >= 10
    tag, size, rc = struct.unpack_from(">HII", response)
    assert size == len(response) <= 4096
    assert tag in (ST.NO_SESSIONS, ST.SESSIONS)
    assert rc != RC.FAILURE, f"internal failure for {command.hex()}"
    if rc != 0:
        # Part 1 §18.10: an error response is the header alone, without sessions.
        assert (tag, size) == (ST.NO_SESSIONS, 10)
        return
    # A success answers a well-formed command, so its header can be trusted.
    cmd_tag, _, code = struct.unpack_from(">HII", command)
    assert tag == cmd_tag
    spec = COMMANDS[code]
    stream = io.BytesIO(response)
    stream.seek(10)
    if spec.response_handle:
        assert len(stream.read(4)) == 4
    if tag == ST.SESSIONS:
        (param_size,) = struct.unpack(">I", stream.read(4))
        start = stream.tell()
        for con in spec.response:
            con.parse_stream(stream)
        assert stream.tell() - start == param_size
        sessions = 0
        while stream.tell() < len(response):
            TPMS_AUTH_RESPONSE.parse_stream(stream)
            sessions += 1
        assert sessions >= 1
    else:
        for con in spec.response:
            con.parse_stream(stream)
    assert stream.tell() == len(response), "trailing octets in a success response"


def execute(started: bool, command: bytes, locality: int = 0) -> None:
    """Run ``command`` on the shared TPM and check the answer."""
    check_response(command, TPMS[started].execute(command, locality))


def with_size(command: bytes) -> bytes:
    """``command`` with its size field (when it has one) set to its true length."""
    if len(command) < 6:
        return command
    return command[:2] + struct.pack(">I", len(command)) + command[6:]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A command of the table, mutated a few times."""
    data = bytearray(draw(st.sampled_from(TABLE)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "extend", "splice", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "extend":
            data += draw(st.binary(max_size=64))
        elif kind == "splice":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
    command = bytes(data)
    return with_size(command) if draw(st.booleans()) else command


@st.composite
def valid_with_new_values(draw: st.DrawFn) -> bytes:
    """A succeeding command of the table with one or two octets after the header changed
    (size kept), so that most variants still parse and reach the handler."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 2))):
        if len(data) > 10:
            data[draw(st.integers(10, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A valid header of any (mostly implemented) command code, then random octets."""
    tag = draw(st.sampled_from([ST.NO_SESSIONS, ST.SESSIONS]))
    code = draw(st.sampled_from(CODES))
    body = draw(st.binary(max_size=300))
    if tag == ST.SESSIONS and draw(st.booleans()):
        # Often a plausible handle area and password session, so parameters get parsed.
        spec = COMMANDS.get(code)
        count = len(spec.handles) if spec else draw(st.integers(0, 2))
        handles = b"".join(struct.pack(">I", draw(st.sampled_from([0, 16, 23, 0x40000007])))
                           for _ in range(count))
        session = struct.pack(">IHBH", 0x40000009, 0, 0x01, 0)
        body = handles + struct.pack(">I", len(session)) + session + body
    return struct.pack(">HII", tag, 10 + len(body), code) + body


@given(started=st.booleans(), data=st.binary(max_size=5000), locality=st.integers(0, 255))
@FUZZ
def test_random_bytes(errors, started, data, locality):
    execute(started, data, locality)


@given(started=st.booleans(), command=mutated(), locality=st.integers(0, 4))
@FUZZ
def test_mutated_table_commands(errors, started, command, locality):
    execute(started, command, locality)


@given(command=valid_with_new_values(), locality=st.integers(0, 4))
@FUZZ
def test_valid_commands_with_new_values(errors, command, locality):
    execute(True, command, locality)


@given(command=structured(), locality=st.integers(0, 4))
@settings(max_examples=4000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
def test_random_bodies_of_every_command(errors, command, locality):
    execute(True, command, locality)


@given(started=st.booleans(), size=st.integers(4097, 70000))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_oversized(errors, started, size):
    execute(started, struct.pack(">HII", ST.NO_SESSIONS, size, CC.GetRandom) + bytes(size - 10))


def test_table_commands_as_sent(errors):
    """Every command of the table, unmutated, on both TPMs."""
    for command in TABLE:
        for started in (True, False):
            execute(started, command)


def test_still_serving_after_fuzzing(errors):
    """After all of the above: no internal error was logged and GetRandom still works
    (run last in this module)."""
    assert errors == []
    tpm = TPMS[True]
    first, second = tpm.execute(get_random(32)), tpm.execute(get_random(32))
    for response in (first, second):
        assert response_code(response) == 0
        assert struct.unpack_from(">I", response, 2)[0] == 44
        assert struct.unpack_from(">H", response, 10)[0] == 32
    assert first[12:] != second[12:]
