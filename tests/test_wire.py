"""Every wire structure: parse, build and size agree (construct's own testing pattern)."""

from __future__ import annotations

import io
import struct

import construct as c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swtpm_py.tpm import wire
from swtpm_py.tpm.constants import ALG, RC
from swtpm_py.tpm.errors import TpmError


def roundtrip(con: c.Construct, value, expected: bytes) -> None:
    """Assert ``value`` builds to ``expected``, which parses back to an equal value."""
    built = con.build(value)
    assert built == expected
    parsed = con.parse(built)
    assert con.build(parsed) == expected
    try:
        assert con.sizeof() == len(expected)
    except c.SizeofError:
        pass  # variable-size structure


SHA1 = ALG.SHA1

CASES = [
    (wire.TPM2B_DIGEST, b"ab", b"\x00\x02ab"),
    (wire.TPM2B_MAX_BUFFER, b"", b"\x00\x00"),
    (wire.TPMS_PCR_SELECTION, dict(hash=SHA1, sizeofSelect=3, pcrSelect=b"\x01\x00\x80"),
     b"\x00\x04\x03\x01\x00\x80"),
    (wire.TPML_PCR_SELECTION, [dict(hash=SHA1, sizeofSelect=3, pcrSelect=b"\xff\xff\xff")],
     b"\x00\x00\x00\x01\x00\x04\x03\xff\xff\xff"),
    (wire.TPMT_HA, dict(hashAlg=SHA1, digest=b"\x11" * 20), b"\x00\x04" + b"\x11" * 20),
    (wire.TPML_DIGEST_VALUES, [dict(hashAlg=SHA1, digest=b"\x11" * 20)],
     b"\x00\x00\x00\x01\x00\x04" + b"\x11" * 20),
    (wire.TPML_DIGEST, [b"x", b"yz"], b"\x00\x00\x00\x02\x00\x01x\x00\x02yz"),
    (wire.TPMS_CLOCK_INFO, dict(clock=5, resetCount=1, restartCount=2, safe=1),
     bytes.fromhex("0000000000000005000000010000000201")),
    (wire.TPMS_TIME_INFO, dict(time=7, clockInfo=dict(clock=5, resetCount=1, restartCount=2,
                                                      safe=0)),
     bytes.fromhex("0000000000000007" "0000000000000005000000010000000200")),
    (wire.TPMT_TK_HASHCHECK, dict(tag=0x8024, hierarchy=0x40000007, digest=b""),
     bytes.fromhex("8024400000070000")),
    (wire.COMMAND_HEADER, dict(tag=0x8001, commandSize=12, commandCode=0x17B),
     bytes.fromhex("80010000000c0000017b")),
    (wire.TPMS_AUTH_COMMAND, dict(sessionHandle=0x40000009, nonce=b"", sessionAttributes=1,
                                  hmac=b"pw"), bytes.fromhex("40000009000001000270" "77")),
    (wire.TPMS_AUTH_RESPONSE, dict(nonce=b"", sessionAttributes=1, hmac=b""),
     bytes.fromhex("0000010000")),
    (wire.TPMS_CAPABILITY_DATA, dict(capability=6, data=[dict(property=0x100, value=1)]),
     bytes.fromhex("00000006" "00000001" "00000100" "00000001")),
    (wire.TPML_ALG, [4, 11], bytes.fromhex("00000002" "0004" "000b")),
]


@pytest.mark.parametrize("con, value, encoded", CASES, ids=lambda v: getattr(v, "name", None))
def test_roundtrip(con, value, encoded):
    roundtrip(con, value, encoded)


def test_tpm2b_over_capacity_is_size_error():
    with pytest.raises(TpmError) as err:
        wire.TPM2B_DIGEST.parse(b"\x00\x41" + b"\x00" * 65)
    assert err.value.rc == RC.SIZE


def test_truncated_is_insufficient():
    import io
    with pytest.raises(TpmError) as err:
        wire.parse_stream(wire.TPM2B_DIGEST, io.BytesIO(b"\x00\x05ab"))
    assert err.value.rc == RC.INSUFFICIENT


def test_unknown_hash_is_hash_error():
    with pytest.raises(TpmError) as err:
        wire.TPMT_HA.parse(b"\x00\x99" + b"\x00" * 20)
    assert err.value.rc == RC.HASH


def test_pcr_select_size_limits():
    with pytest.raises(TpmError) as err:
        wire.TPMS_PCR_SELECTION.parse(b"\x00\x04\x05" + b"\x00" * 5)
    assert err.value.rc == RC.VALUE


def _outcome(parse, data: bytes) -> tuple:
    """(value, bytes consumed) of a parse, or the TPM_RC it raised."""
    stream = io.BytesIO(data)
    try:
        value = parse(stream)
    except TpmError as exc:
        return ("rc", exc.rc)
    return (value, stream.tell())


def _by_construct(stream: io.BytesIO) -> tuple[int, bytes, int, bytes]:
    s = wire.parse_stream(wire.TPMS_AUTH_COMMAND, stream)
    return s.sessionHandle, s.nonce, s.sessionAttributes, s.hmac


_SESSION_HANDLES = st.sampled_from([0x40000009, 0x02000000, 0x0200003F, 0x02000040,
                                    0x03000001, 0x03000040, 0x40000001, 0])


@given(handle=_SESSION_HANDLES, nonce=st.binary(max_size=70), attrs=st.integers(0, 255),
       mac=st.binary(max_size=70), cut=st.integers(0, 160), junk=st.binary(max_size=8))
def test_fast_auth_command_parser_is_the_construct_one(handle: int, nonce: bytes, attrs: int,
                                                       mac: bytes, cut: int,
                                                       junk: bytes) -> None:
    """The dispatcher's hand-written TPMS_AUTH_COMMAND parser answers exactly as the construct
    declaration: the same values and octets consumed, or the same TPM_RC (handle VALUE, nonce
    and hmac SIZE, RESERVED_BITS, INSUFFICIENT when cut short) — for oversized TPM2Bs too."""
    data = (struct.pack(">IH", handle, len(nonce)) + nonce + bytes([attrs])
            + struct.pack(">H", len(mac)) + mac + junk)[:cut]
    assert _outcome(wire.parse_auth_command, data) == _outcome(_by_construct, data)


@given(pairs=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
                      max_size=130))
def test_pair_list_builds_as_its_declaration(pairs: list[tuple[int, int]]) -> None:
    """TPML_TAGGED_TPM_PROPERTY's one-pack builder gives the octets of the construct it
    declares, and parses them back."""
    values = [dict(property=p, value=v) for p, v in pairs]
    declared = c.PrefixedArray(wire.UINT32, wire.TPMS_TAGGED_PROPERTY)
    data = wire.TPML_TAGGED_TPM_PROPERTY.build(values)
    assert data == declared.build(values)
    parsed = wire.TPML_TAGGED_TPM_PROPERTY.parse(data)
    assert [(e.property, e.value) for e in parsed] == pairs
