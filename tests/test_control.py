"""The control channel and the device rules, sans-I/O (swtpm_py.control).

Every expected value here was measured on the reference swtpm 0.7.1 with raw requests (the
same requests run against both emulators in tests/test_server.py and test_swtpm_ioctl.py).
"""

from __future__ import annotations

import json
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swtpm_py.control import (BUFFER_SIZE_MAX, BUFFER_SIZE_MIN, CAPABILITIES, FAILURE_REPLY,
                              REQUEST_BUFFER, Cap, Cmd, Device, DeviceOptions, Request,
                              RequestParser, Res, RunState, has_send_command_prefix, info_json)
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CC, SU
from swtpm_py.tpm.state import BlobKind, VolatileData, decode_blob
from emulator import Emulator
from tpmcmd import cmd, pcr_extend, pcr_read, pcr_values, rc, read_clock_info, shutdown, startup, with_auth

READ_CLOCK = cmd(CC.ReadClock)
TPM_RC_INITIALIZE = 0x100
TPM_RC_LOCALITY = 0x907
TPM_RC_INSUFFICIENT = 0x9A
TPM_RC_VALUE_P1 = 0x1C4


def pcr_reset(pcr: int) -> bytes:
    """TPM2_PCR_Reset with an empty password."""
    return with_auth(CC.PCR_Reset, struct.pack(">I", pcr), b"")


def make_device(storage: MemoryStorage | None = None, **options: object) -> Device:
    return Device(Tpm(Platform(storage=storage or MemoryStorage())), DeviceOptions(**options))


def ctl(device: Device, code: int, body: bytes = b"", **kw: object) -> bytes:
    return device.control(Request(code, body), **kw).data


def res(reply: bytes) -> int:
    return struct.unpack_from(">I", reply)[0]


def running_device(storage: MemoryStorage | None = None, **options: object) -> Device:
    """INIT done and TPM2_Startup(CLEAR) executed."""
    dev = make_device(storage, **options)
    assert res(ctl(dev, Cmd.INIT, b"\0\0\0\0")) == Res.SUCCESS
    assert rc(dev.data(startup())) == 0
    return dev


# ---------------------------------------------------------------------------- request parser


def test_parser_waits_for_the_known_body_size_of_init() -> None:
    p = RequestParser()
    assert p.feed(b"\x00\x00") == [] and p.pending
    assert p.feed(b"\x00\x02\x00\x00") == []
    (req,) = p.feed(b"\x00\x01")
    assert (req.code, req.body) == (Cmd.INIT, b"\x00\x00\x00\x01")
    assert not p.pending


def test_parser_codes_without_body_are_complete_after_four_bytes() -> None:
    p = RequestParser()
    assert [r.code for r in p.feed(struct.pack(">I", Cmd.GET_CAPABILITY))] == [Cmd.GET_CAPABILITY]


def test_parser_takes_everything_of_one_read_as_the_request() -> None:
    # swtpm: the bytes of one read beyond the minimum belong to the body (STOP + 4 bytes is
    # a STOP with a bad body, not a STOP followed by another request).
    (req,) = RequestParser().feed(struct.pack(">I", Cmd.STOP) + b"\0\0\0\0")
    assert req.body == b"\0\0\0\0"
    assert res(ctl(make_device(), req.code, req.body)) == Res.BAD_PARAMETER


def test_parser_set_locality_one_byte_or_qemu_padding() -> None:
    p = RequestParser()
    (one,) = p.feed(struct.pack(">IB", Cmd.SET_LOCALITY, 3))
    (four,) = p.feed(struct.pack(">IB3x", Cmd.SET_LOCALITY, 2))
    assert (one.body, four.body) == (b"\x03", b"\x02\0\0\0")


def test_parser_caps_a_request_at_swtpms_buffer() -> None:
    p = RequestParser()
    data = struct.pack(">I", Cmd.GET_CAPABILITY) + b"\xaa" * (REQUEST_BUFFER + 10)
    first, second = p.feed(data)
    assert len(first.body) == REQUEST_BUFFER - 4
    assert second.code == 0xAAAAAAAA and len(second.body) == 10


def test_parser_attaches_received_fds_to_the_request() -> None:
    p = RequestParser()
    assert p.feed(b"\x00\x00", fds=[7]) == []
    (req,) = p.feed(b"\x00\x10")
    assert (req.code, req.fds) == (Cmd.SET_DATAFD, [7])


# ---------------------------------------------------------------------------- run states


#: (code, body, result while not running, result while running), measured on swtpm 0.7.1.
STATE_TABLE = [
    (Cmd.GET_TPMESTABLISHED, b"", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.CANCEL_TPM_CMD, b"", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.STORE_VOLATILE, b"", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.RESET_TPMESTABLISHED, b"\x03", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.GET_CONFIG, b"", Res.SUCCESS, Res.SUCCESS),
    (Cmd.SET_LOCALITY, b"\x01", Res.SUCCESS, Res.SUCCESS),
    (Cmd.SET_BUFFERSIZE, struct.pack(">I", 3000), Res.SUCCESS, Res.BAD_ORDINAL),
    (Cmd.SET_BUFFERSIZE, struct.pack(">I", 0), Res.SUCCESS, Res.SUCCESS),
    (Cmd.GET_INFO, struct.pack(">QII", 1, 0, 0), Res.SUCCESS, Res.SUCCESS),
    (Cmd.HASH_START, b"", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.HASH_DATA, b"\0" * 4, Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.HASH_END, b"", Res.BAD_ORDINAL, Res.SUCCESS),
    (Cmd.GET_STATEBLOB, struct.pack(">III", 1, 1, 0), Res.BAD_ORDINAL, Res.SUCCESS),
    # A savestate that does not exist: TPM_RETRY (QEMU takes any result with 0x800 as "none").
    (Cmd.GET_STATEBLOB, struct.pack(">III", 1, 3, 0), Res.BAD_ORDINAL, Res.RETRY),
    # SET_STATEBLOB is the other way round: only while the TPM is not running.
    (Cmd.SET_STATEBLOB, struct.pack(">III", 0, 3, 0), Res.SUCCESS, Res.BAD_ORDINAL),
    # Newer swtpm's (0.7.1 does not know it: TPM_BAD_ORDINAL); any run state.
    (Cmd.LOCK_STORAGE, b"\0" * 4, Res.SUCCESS, Res.SUCCESS),
    (0x14, b"", Res.BAD_ORDINAL, Res.BAD_ORDINAL),
    (0xFFFFFFFF, b"", Res.BAD_ORDINAL, Res.BAD_ORDINAL),
]


@pytest.mark.parametrize("code,body,before,after", STATE_TABLE,
                         ids=[f"{c:#x}-{len(b)}" for c, b, _x, _y in STATE_TABLE])
def test_run_state_rules(code: int, body: bytes, before: int, after: int) -> None:
    dev = make_device()
    assert dev.state is RunState.NOT_INITIALIZED
    assert res(ctl(dev, code, body)) == before
    assert res(ctl(dev, Cmd.INIT, b"\0\0\0\0")) == Res.SUCCESS
    assert res(ctl(dev, code, body)) == after
    assert res(ctl(dev, Cmd.STOP)) == Res.SUCCESS
    assert res(ctl(dev, code, body)) == before


@pytest.mark.parametrize("code", [Cmd.GET_TPMESTABLISHED, Cmd.CANCEL_TPM_CMD,
                                  Cmd.STORE_VOLATILE, Cmd.GET_CONFIG, Cmd.STOP, Cmd.SHUTDOWN])
def test_commands_without_body_refuse_a_body(code: int) -> None:
    dev = make_device()
    ctl(dev, Cmd.INIT, b"\0\0\0\0")
    assert ctl(dev, code, b"\0\0\0\0") == struct.pack(">I", Res.BAD_PARAMETER)


def test_data_channel_fails_until_init_and_after_stop() -> None:
    dev = make_device()
    assert dev.data(READ_CLOCK) == FAILURE_REPLY == bytes.fromhex("80010000000a00000101")
    ctl(dev, Cmd.INIT, b"\0\0\0\0")
    assert rc(dev.data(READ_CLOCK)) == TPM_RC_INITIALIZE   # running, but no Startup yet
    assert rc(dev.data(startup())) == 0
    assert rc(dev.data(READ_CLOCK)) == 0
    ctl(dev, Cmd.STOP)
    assert dev.state is RunState.STOPPED
    assert dev.data(READ_CLOCK) == FAILURE_REPLY


def test_init_needs_exactly_four_bytes() -> None:
    dev = make_device()
    assert res(ctl(dev, Cmd.INIT, b"\0" * 8)) == Res.BAD_PARAMETER
    assert dev.state is RunState.NOT_INITIALIZED
    assert res(ctl(dev, Cmd.INIT, b"\0" * 4)) == Res.SUCCESS
    assert dev.running


def test_init_resumes_from_stored_volatile_state_unless_deleted() -> None:
    storage = MemoryStorage()
    dev = running_device(storage)
    digest = bytes(range(32))
    assert rc(dev.data(pcr_extend(5, ALG.SHA256, digest))) == 0
    extended = pcr_values(dev.data(pcr_read(ALG.SHA256, [5])))
    assert res(ctl(dev, Cmd.STORE_VOLATILE)) == Res.SUCCESS
    vol = decode_blob(BlobKind.VOLATILE, storage.blobs[BlobKind.VOLATILE], VolatileData)
    assert vol.started

    # A new process on the same storage: INIT resumes, no Startup needed, PCR 5 kept.
    dev2 = make_device(storage)
    assert res(ctl(dev2, Cmd.INIT, struct.pack(">I", 0))) == Res.SUCCESS
    assert pcr_values(dev2.data(pcr_read(ALG.SHA256, [5]))) == extended
    assert BlobKind.VOLATILE in storage.blobs
    # INIT with DELETE_VOLATILE resumes once more and removes the blob.
    dev3 = make_device(storage)
    assert res(ctl(dev3, Cmd.INIT, struct.pack(">I", 1))) == Res.SUCCESS
    assert pcr_values(dev3.data(pcr_read(ALG.SHA256, [5]))) == extended
    assert BlobKind.VOLATILE not in storage.blobs
    dev4 = make_device(storage)
    ctl(dev4, Cmd.INIT, struct.pack(">I", 0))
    assert rc(dev4.data(READ_CLOCK)) == TPM_RC_INITIALIZE


def test_shutdown_replies_then_asks_to_exit() -> None:
    dev = make_device()
    reply = dev.control(Request(Cmd.SHUTDOWN, b""))
    assert (reply.data, reply.exit) == (struct.pack(">I", 0), True)


# ---------------------------------------------------------------------------- capabilities


def test_capabilities_are_exactly_the_implemented_commands() -> None:
    dev = make_device()
    reply = ctl(dev, Cmd.GET_CAPABILITY)
    # 0x1ffff: what swtpm >= 0.8 reports (0.7.1: 0xffff, everything but LOCK_STORAGE).
    assert len(reply) == 8 and struct.unpack(">Q", reply)[0] == CAPABILITIES == 0x1FFFF
    bit_for = {Cmd.INIT: Cap.INIT, Cmd.SHUTDOWN: Cap.SHUTDOWN,
               Cmd.GET_TPMESTABLISHED: Cap.GET_TPMESTABLISHED, Cmd.SET_LOCALITY: Cap.SET_LOCALITY,
               Cmd.HASH_START: Cap.HASHING, Cmd.CANCEL_TPM_CMD: Cap.CANCEL_TPM_CMD,
               Cmd.STORE_VOLATILE: Cap.STORE_VOLATILE,
               Cmd.RESET_TPMESTABLISHED: Cap.RESET_TPMESTABLISHED,
               Cmd.GET_STATEBLOB: Cap.GET_STATEBLOB, Cmd.SET_STATEBLOB: Cap.SET_STATEBLOB,
               Cmd.STOP: Cap.STOP, Cmd.GET_CONFIG: Cap.GET_CONFIG, Cmd.SET_DATAFD: Cap.SET_DATAFD,
               Cmd.SET_BUFFERSIZE: Cap.SET_BUFFERSIZE, Cmd.GET_INFO: Cap.GET_INFO,
               Cmd.LOCK_STORAGE: Cap.LOCK_STORAGE}
    for code, bit in bit_for.items():
        ctl(dev, Cmd.INIT, b"\0\0\0\0")
        if code == Cmd.SET_STATEBLOB:      # only while stopped
            ctl(dev, Cmd.STOP)
        body = {Cmd.INIT: b"\0\0\0\0", Cmd.SET_LOCALITY: b"\0", Cmd.RESET_TPMESTABLISHED: b"\3",
                Cmd.SET_BUFFERSIZE: b"\0" * 4, Cmd.GET_INFO: b"\0" * 16,
                Cmd.HASH_DATA: b"\0" * 4, Cmd.GET_STATEBLOB: struct.pack(">III", 1, 1, 0),
                Cmd.SET_STATEBLOB: struct.pack(">III", 0, 3, 0),
                Cmd.LOCK_STORAGE: b"\0" * 4}.get(code, b"")
        known = res(ctl(dev, code, body, data_fd_allowed=True)) != Res.BAD_ORDINAL
        assert known == bool(CAPABILITIES & bit), code.name
    # QEMU refuses a TPM 2 backend without these (REFERENCE.md §1).
    assert CAPABILITIES & 0x348F == 0x348F


# ---------------------------------------------------------------------------- locality


@pytest.mark.parametrize("body,expected", [
    (b"\x00", Res.SUCCESS), (b"\x04", Res.SUCCESS), (b"\x05", Res.BAD_LOCALITY),
    (b"\xff", Res.BAD_LOCALITY), (b"\x02\x00\x00\x00", Res.SUCCESS), (b"\x01" * 8, Res.SUCCESS),
])
def test_set_locality(body: bytes, expected: int) -> None:
    dev = make_device()
    assert res(ctl(dev, Cmd.SET_LOCALITY, body)) == expected
    assert dev.locality == (body[0] if expected == Res.SUCCESS else 0)


def test_reject_locality_4() -> None:
    dev = make_device(reject_locality_4=True)
    assert res(ctl(dev, Cmd.SET_LOCALITY, b"\x04")) == Res.BAD_LOCALITY
    assert res(ctl(dev, Cmd.SET_LOCALITY, b"\x03")) == Res.SUCCESS


def test_locality_applies_to_commands_and_is_sticky() -> None:
    # PC Client: PCR 20 is resettable from locality 2 only (measured on swtpm as well).
    dev = running_device()
    assert rc(dev.data(pcr_reset(20))) == TPM_RC_LOCALITY
    ctl(dev, Cmd.SET_LOCALITY, b"\x02")
    assert rc(dev.data(pcr_reset(20))) == 0
    assert rc(dev.data(pcr_reset(20))) == 0
    ctl(dev, Cmd.SET_LOCALITY, b"\x00")
    assert rc(dev.data(pcr_reset(20))) == TPM_RC_LOCALITY


def test_send_command_prefix_framing_and_sticky_locality() -> None:
    dev = running_device()
    inner = pcr_reset(20)
    reply = dev.data(struct.pack(">IBI", 8, 2, len(inner)) + inner)
    size = struct.unpack_from(">I", reply)[0]
    response = reply[4:4 + size]
    assert struct.unpack_from(">I", response, 2)[0] == size and rc(response) == 0
    assert reply[4 + size:] == b"\0\0\0\0" and len(reply) == size + 8
    assert dev.locality == 2
    assert rc(dev.data(inner)) == 0        # plain command, locality 2 still
    # The prefix also frames the failure reply of a stopped TPM.
    ctl(dev, Cmd.STOP)
    reply = dev.data(struct.pack(">IBI", 8, 0, len(READ_CLOCK)) + READ_CLOCK)
    assert reply == struct.pack(">I", 10) + FAILURE_REPLY + b"\0" * 4


def test_prefix_detection() -> None:
    assert has_send_command_prefix(struct.pack(">IBI", 8, 0, 10) + READ_CLOCK)
    assert not has_send_command_prefix(READ_CLOCK)
    assert not has_send_command_prefix(struct.pack(">IBI", 9, 0, 10) + READ_CLOCK)
    assert not has_send_command_prefix(b"\0\0\0\x08\0")   # shorter than a header


def test_vendor_set_locality_command() -> None:
    setloc = lambda loc: bytes.fromhex("80010000000b20001000") + bytes([loc])  # noqa: E731
    plain = running_device()
    assert plain.data(setloc(3)) == FAILURE_REPLY          # not allowed without the flag
    dev = running_device(allow_set_locality=True, reject_locality_4=True)
    assert rc(dev.data(setloc(2))) == 0 and dev.locality == 2
    assert rc(dev.data(setloc(4))) == 0x107                # swtpm's TPM_RC_LOCALITY value
    assert rc(dev.data(setloc(5))) == 0x107
    assert rc(dev.data(bytes.fromhex("80010000000a20001000"))) == TPM_RC_INSUFFICIENT
    assert dev.locality == 2


# ---------------------------------------------------------------------------- established bit


def test_tpm_established_bit_and_its_reset() -> None:
    dev = running_device()
    assert ctl(dev, Cmd.GET_TPMESTABLISHED) == bytes(8)
    dev.tpm.vol.established = True
    assert ctl(dev, Cmd.GET_TPMESTABLISHED) == struct.pack(">IB3x", 0, 1)
    for loc in (0, 1, 2, 5):
        assert res(ctl(dev, Cmd.RESET_TPMESTABLISHED, bytes([loc]))) == Res.BAD_LOCALITY
    assert dev.tpm.vol.established
    assert res(ctl(dev, Cmd.RESET_TPMESTABLISHED, b"\x04\x00\x00\x00")) == Res.SUCCESS
    assert ctl(dev, Cmd.GET_TPMESTABLISHED) == bytes(8)
    assert dev.locality == 0     # the reset's locality is not kept


# ---------------------------------------------------------------------------- buffer size, config, info


def test_set_buffersize_clamps_and_is_only_settable_when_stopped() -> None:
    dev = make_device()

    def setbuf(size: int) -> tuple[int, ...]:
        return struct.unpack(">IIII", ctl(dev, Cmd.SET_BUFFERSIZE, struct.pack(">I", size)))

    assert setbuf(0) == (0, 4096, 2808, 4096)
    assert setbuf(1) == (0, BUFFER_SIZE_MIN, 2808, 4096)
    assert setbuf(3000) == (0, 3000, 2808, 4096)
    assert setbuf(0xFFFFFFFF) == (0, BUFFER_SIZE_MAX, 2808, 4096)
    setbuf(3000)
    ctl(dev, Cmd.INIT, b"\0\0\0\0")
    assert ctl(dev, Cmd.SET_BUFFERSIZE, struct.pack(">I", 4096)) == struct.pack(">I", 0x0A)
    assert setbuf(0) == (0, 3000, 2808, 4096)
    assert res(ctl(dev, Cmd.SET_BUFFERSIZE, b"\0\0")) == Res.BAD_PARAMETER


def test_get_config_reports_no_keys() -> None:
    assert ctl(make_device(), Cmd.GET_CONFIG) == bytes(8)


def test_cancel_succeeds_while_running() -> None:
    assert ctl(running_device(), Cmd.CANCEL_TPM_CMD) == bytes(4)


def test_get_info_formats_like_swtpm() -> None:
    dev = make_device()

    def info(flags: int, offset: int = 0, extra: bytes = b"") -> bytes:
        return ctl(dev, Cmd.GET_INFO, struct.pack(">QII", flags, offset, 0) + extra)

    spec = '{"TPMSpecification":{"family":"2.0","level":0,"revision":164}}'
    reply = info(1)
    assert reply == struct.pack(">III", 0, len(spec) + 1, len(spec) + 1) + spec.encode() + b"\0"
    both = json.loads(info(3)[12:-1])
    assert list(both) == ["TPMSpecification", "TPMAttributes"]
    assert both["TPMAttributes"]["manufacturer"] == "id:00001014"
    assert both["TPMAttributes"]["model"] == "swtpm"
    assert info_json(0) == info_json(8) == info_json(16) == "{}"   # as libtpms 0.9
    assert list(json.loads(info_json(4))["TPMFeatures"]) == ["RSAKeySizes", "CamelliaKeySizes"]
    # offset: the rest of the text (with its NUL), totlength the whole; past the end: 0x03.
    tail = info(1, 10)
    assert struct.unpack_from(">III", tail) == (0, len(spec) + 1, len(spec) + 1 - 10)
    assert tail[12:] == spec.encode()[10:] + b"\0"
    assert info(1, len(spec)) == struct.pack(">I", Res.BAD_PARAMETER)
    assert ctl(dev, Cmd.GET_INFO, struct.pack(">QI", 1, 0)) == struct.pack(">I", 3)
    assert info(1, extra=b"abcd")[12:] == spec.encode() + b"\0"   # extra bytes are ignored


# ---------------------------------------------------------------------------- LOCK_STORAGE


@pytest.mark.parametrize("body,expected", [
    (b"", Res.BAD_PARAMETER), (b"\0" * 3, Res.BAD_PARAMETER), (b"\0" * 5, Res.BAD_PARAMETER),
    (struct.pack(">I", 0), Res.SUCCESS), (struct.pack(">I", 300), Res.SUCCESS)])
def test_lock_storage_takes_exactly_a_retry_count(body: bytes, expected: int) -> None:
    assert res(ctl(make_device(), Cmd.LOCK_STORAGE, body)) == expected


def test_parser_waits_for_the_retry_count_of_lock_storage() -> None:
    parser = RequestParser()
    assert parser.feed(struct.pack(">I", Cmd.LOCK_STORAGE)) == []
    assert parser.pending
    (req,) = parser.feed(struct.pack(">I", 300))
    assert (req.code, req.body) == (Cmd.LOCK_STORAGE, struct.pack(">I", 300))


def _lock_storage(emu: Emulator) -> tuple[int, float]:
    """LOCK_STORAGE with QEMU's 300 retries over the emulator's control socket: the result
    and the seconds it took."""
    start = time.monotonic()
    reply = emu.ctrl(Cmd.LOCK_STORAGE, struct.pack(">I", 300), reply_size=4)
    return res(reply), time.monotonic() - start


@pytest.mark.parametrize("state", ["dir", "qcow2"])
def test_lock_storage_answers_with_the_state_locked(tmp_path, state: str) -> None:
    """swtpm_py locks its state at start: LOCK_STORAGE succeeds at once (no retry), and the
    lock it reports is real: neither a second swtpm_py nor the real swtpm can open the same
    state while it runs. The real swtpm 0.7.1 does not know the command (TPM_BAD_ORDINAL);
    newer swtpm answers success in the same situation."""
    if state == "dir":
        emu = Emulator("swtpm_py", tmp_path / "state")
        rivals = [Emulator("swtpm_py", tmp_path / "state"), Emulator("swtpm", tmp_path / "state")]
    else:
        image = tmp_path / "tpm.qcow2"
        args = ["--tpmstate", f"backend-uri=blobstore://{image}"]
        emu = Emulator("swtpm_py", tmp_path / "logs", extra_args=args, tpmstate=False)
        rivals = [Emulator("swtpm_py", tmp_path / "logs2", extra_args=args, tpmstate=False)]
    with emu:
        result, seconds = _lock_storage(emu)
        assert result == Res.SUCCESS and seconds < 0.3
        for rival in rivals:
            with pytest.raises(RuntimeError, match="exited with 1"):
                rival.start(timeout=20)
        # Still the one TPM, serving.
        assert rc(emu.command(READ_CLOCK)) == 0
        assert _lock_storage(emu)[0] == Res.SUCCESS
    with Emulator("swtpm", tmp_path / "reference") as ref:
        assert _lock_storage(ref)[0] == Res.BAD_ORDINAL


def test_set_datafd_rules() -> None:
    dev = make_device()
    assert ctl(dev, Cmd.SET_DATAFD) == struct.pack(">I", Res.IOERROR)   # --server in use
    assert ctl(dev, Cmd.SET_DATAFD, data_fd_allowed=True) == struct.pack(">I", Res.BAD_PARAMETER)
    reply = dev.control(Request(Cmd.SET_DATAFD, b"", [11, 12]), data_fd_allowed=True)
    assert (reply.data, reply.data_fd) == (bytes(4), 11)


# ---------------------------------------------------------------------------- start and auto-shutdown


def test_start_with_startup_clear_runs_the_tpm() -> None:
    dev = make_device(need_init=False, startup=SU.CLEAR)
    dev.start()
    assert dev.running and rc(dev.data(READ_CLOCK)) == 0


def test_start_with_failing_startup_state_leaves_tpm_unstarted() -> None:
    # swtpm 0.7.1 with startup-state on a new TPM: running, Startup failed, commands 0x100.
    dev = make_device(need_init=False, startup=SU.STATE)
    dev.start()
    assert dev.running and rc(dev.data(READ_CLOCK)) == TPM_RC_INITIALIZE


def test_need_init_start_does_nothing() -> None:
    dev = make_device()
    dev.start()
    assert dev.state is RunState.NOT_INITIALIZED


@pytest.mark.parametrize("stopper", [Cmd.INIT, Cmd.STOP])
def test_auto_shutdown_state_before_init_and_stop(stopper: int) -> None:
    storage = MemoryStorage()
    dev = running_device(storage)
    reset_count = read_clock_info(dev.data(READ_CLOCK))["reset_count"]
    assert rc(dev.data(pcr_extend(1, ALG.SHA256, b"\x11" * 32))) == 0
    ctl(dev, stopper, b"\0\0\0\0" if stopper == Cmd.INIT else b"")
    assert BlobKind.SAVESTATE in storage.blobs       # TPM2_Shutdown(STATE) ran
    ctl(dev, Cmd.INIT, b"\0\0\0\0")
    assert rc(dev.data(startup(clear=False))) == 0   # so Startup(STATE) resumes
    info = read_clock_info(dev.data(READ_CLOCK))
    assert info["reset_count"] == reset_count and info["restart_count"] == 1


def test_auto_shutdown_at_close_and_not_after_a_shutdown() -> None:
    storage = MemoryStorage()
    dev = running_device(storage)
    dev.close()
    assert BlobKind.SAVESTATE in storage.blobs
    storage2 = MemoryStorage()
    dev2 = running_device(storage2)
    assert rc(dev2.data(shutdown(clear=True))) == 0
    ctl(dev2, Cmd.STOP)
    assert BlobKind.SAVESTATE not in storage2.blobs  # Shutdown(CLEAR) stayed the last word
    ctl(dev2, Cmd.INIT, b"\0\0\0\0")
    assert rc(dev2.data(startup(clear=False))) == TPM_RC_VALUE_P1


def test_disable_auto_shutdown() -> None:
    # What swtpm 0.7.1 does always: INIT without a Shutdown, then Startup(STATE) fails.
    dev = running_device(auto_shutdown=False)
    ctl(dev, Cmd.INIT, b"\0\0\0\0")
    assert rc(dev.data(startup(clear=False))) == TPM_RC_VALUE_P1


def test_store_volatile_failure_is_reported() -> None:
    storage = MemoryStorage()
    dev = running_device(storage)
    storage.fail_with = OSError("disk full")
    assert ctl(dev, Cmd.STORE_VOLATILE) == struct.pack(">I", Res.FAIL)


# ---------------------------------------------------------------------------- robustness


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_control_requests_always_get_a_result(chunks: list[bytes]) -> None:
    dev = make_device()
    parser = RequestParser()
    for chunk in chunks:
        for req in parser.feed(chunk):
            if req.code == Cmd.SHUTDOWN:
                continue
            reply = dev.control(req, data_fd_allowed=False)
            assert len(reply.data) >= 4 and reply.data_fd is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_random_data_messages_always_get_a_response(raw: bytes, prefixed: bool) -> None:
    dev = running_device()
    msg = struct.pack(">IBI", 8, raw[0] if raw else 0, len(raw)) + raw if prefixed else raw
    reply = dev.data(msg)
    body = reply[4:-4] if prefixed and len(msg) >= 10 else reply
    assert len(body) >= 10 and struct.unpack_from(">I", body, 2)[0] == len(body)
