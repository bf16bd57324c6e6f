"""The swtpm control channel and data-channel rules, sans-I/O (REFERENCE.md §1, §2).

Two pieces, neither of which touches a socket:

* :class:`RequestParser` reassembles control requests from what the transport reads. swtpm's
  framing is kept exactly: a request is a u32 command code and a body whose *minimum* size is
  known per code (INIT 4, SET_LOCALITY 1 ...) or, for HASH_DATA and SET_STATEBLOB, given by
  the length field in it; bytes are collected until that size is reached, and everything
  received by then (up to swtpm's 4104-byte buffer, or the request's size if larger) is the
  request — so extra bytes in the same read make the body too long (TPM_BAD_PARAMETER), as
  with swtpm. A request still incomplete after :data:`REQUEST_DEADLINE` seconds, or one that
  announces more than :data:`STATEBLOB_MAX` bytes, makes the server close the connection
  (swtpm 0.7.1 does the same).
* :class:`Device` is the emulated TPM *device* around the sans-I/O core
  (:class:`swtpm_py.tpm.Tpm`): run state (not initialized / running / stopped), the locality
  commands execute in, the TPM-established bit, the buffer size, the control commands and
  the data-channel rules (the TPM_SEND_COMMAND prefix, the failure reply before INIT, the
  in-band SetLocality vendor command).

Every rule below was measured on swtpm 0.7.1 (libtpms 0.9.2) with raw requests; the tests in
tests/test_control.py and tests/test_swtpm_ioctl.py pin them down. Where swtpm_py does what a
newer swtpm does instead, the code says so (auto-shutdown, ``--ctrl ...,terminate``).
"""

from __future__ import annotations

import enum
import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .statecrypt import PURPOSES, SealError, StateKey, is_sealed
from .tpm import Tpm, algorithms, properties
from .tpm.constants import ALG, CC, RC, SU
from .tpm.state import (BlobKind, PersistentData, SavedState, StateError, VolatileData,
                        decode_blob)

log = logging.getLogger("swtpm_py.control")


class Cmd(enum.IntEnum):
    """Control-channel command codes (swtpm's tpm_ioctl.h ``CMD_*``)."""

    GET_CAPABILITY = 0x01
    INIT = 0x02
    SHUTDOWN = 0x03
    GET_TPMESTABLISHED = 0x04
    SET_LOCALITY = 0x05
    HASH_START = 0x06
    HASH_DATA = 0x07
    HASH_END = 0x08
    CANCEL_TPM_CMD = 0x09
    STORE_VOLATILE = 0x0A
    RESET_TPMESTABLISHED = 0x0B
    GET_STATEBLOB = 0x0C
    SET_STATEBLOB = 0x0D
    STOP = 0x0E
    GET_CONFIG = 0x0F
    SET_DATAFD = 0x10
    SET_BUFFERSIZE = 0x11
    GET_INFO = 0x12
    LOCK_STORAGE = 0x13


class Res(enum.IntEnum):
    """Result codes of control replies (TPM 1.2 codes, as swtpm uses them)."""

    SUCCESS = 0x00
    BAD_PARAMETER = 0x03
    FAIL = 0x09
    BAD_ORDINAL = 0x0A
    #: swtpm's answer to an ENCRYPTED SET_STATEBLOB when it has no key to decrypt it with.
    KEYNOTFOUND = 0x0D
    IOERROR = 0x1F
    BAD_LOCALITY = 0x3D
    RETRY = 0x800


class Cap(enum.IntFlag):
    """GET_CAPABILITY bits (``PTM_CAP_*``)."""

    INIT = 1 << 0
    SHUTDOWN = 1 << 1
    GET_TPMESTABLISHED = 1 << 2
    SET_LOCALITY = 1 << 3
    HASHING = 1 << 4
    CANCEL_TPM_CMD = 1 << 5
    STORE_VOLATILE = 1 << 6
    RESET_TPMESTABLISHED = 1 << 7
    GET_STATEBLOB = 1 << 8
    SET_STATEBLOB = 1 << 9
    STOP = 1 << 10
    GET_CONFIG = 1 << 11
    SET_DATAFD = 1 << 12
    SET_BUFFERSIZE = 1 << 13
    GET_INFO = 1 << 14
    SEND_COMMAND_HEADER = 1 << 15
    LOCK_STORAGE = 1 << 16


#: Exactly the capabilities implemented below: 0x1ffff, what swtpm >= 0.8 reports (0.7.1
#: reports 0xffff: it has no LOCK_STORAGE).
CAPABILITIES = (Cap.INIT | Cap.SHUTDOWN | Cap.GET_TPMESTABLISHED | Cap.SET_LOCALITY
                | Cap.HASHING | Cap.CANCEL_TPM_CMD | Cap.STORE_VOLATILE
                | Cap.RESET_TPMESTABLISHED | Cap.GET_STATEBLOB | Cap.SET_STATEBLOB
                | Cap.STOP | Cap.GET_CONFIG | Cap.SET_DATAFD | Cap.SET_BUFFERSIZE
                | Cap.GET_INFO | Cap.SEND_COMMAND_HEADER | Cap.LOCK_STORAGE)

#: swtpm's receive buffer: the code plus the largest body (ptm_hdata: length + 4096 bytes).
REQUEST_BUFFER = 4 + 4 + 4096
#: Seconds a request may take to arrive completely before the connection is closed.
REQUEST_DEADLINE = 0.5

#: Minimum body size of the codes whose body is read before they are processed (swtpm's
#: ctrlchannel_recv_cmd); every other code is processed as soon as its 4 bytes are in.
BODY_SIZE: dict[int, int] = {
    Cmd.INIT: 4,                  # u32 init flags
    Cmd.SET_LOCALITY: 1,          # u8 locality (QEMU pads it to 4 bytes)
    Cmd.RESET_TPMESTABLISHED: 1,  # u8 locality
    Cmd.GET_STATEBLOB: 12,        # state_flags, type, offset
    Cmd.LOCK_STORAGE: 4,          # u32 retries
}

#: Codes whose body carries a u32 length at this offset followed by that many bytes: the
#: request is complete once all of them are in (QEMU writes SET_STATEBLOB's header and its
#: data separately; swtpm 0.7.1 waits for all of HASH_DATA's bytes too, measured).
LENGTH_FIELD: dict[int, int] = {
    Cmd.HASH_DATA: 0,             # length, data
    Cmd.SET_STATEBLOB: 8,         # state_flags, type, length, data
}
#: Largest SET_STATEBLOB (and HASH_DATA) payload (swtpm's limit for a state blob).
STATEBLOB_MAX = 512 * 1024

#: GET/SET_STATEBLOB state_flags: the blob is (to be) decrypted / is encrypted.
STATE_FLAG_DECRYPTED = 0x1
STATE_FLAG_ENCRYPTED = 0x2

#: SET_BUFFERSIZE limits (libtpms' TPM 2: TPM_BUFFER_MIN ... TPM_BUFFER_MAX, default max).
BUFFER_SIZE_MIN = 2808
BUFFER_SIZE_MAX = 4096
#: GET_INFO returns at most this many bytes of the JSON text per reply (PTM_GETINFO_SIZE).
GETINFO_CHUNK = 3 * 1024

#: INIT flag: delete the volatile state after loading it.
INIT_FLAG_DELETE_VOLATILE = 0x1
#: GET_CONFIG flags (no state encryption keys exist in swtpm_py yet: always 0).
CONFIG_FLAG_FILE_KEY = 0x1
CONFIG_FLAG_MIGRATION_KEY = 0x2

#: GET_INFO flags (TPMLIB_INFO_*). libtpms 0.9 answers only these three; 8 (runtime
#: algorithms) and 16 (runtime commands) came with libtpms 0.10 profiles and give ``{}`` on
#: the reference, as here.
INFO_TPMSPECIFICATION = 1
INFO_TPMATTRIBUTES = 2
INFO_TPMFEATURES = 4

#: The answer to every data-channel command while the TPM is not running (TPM_RC_FAILURE).
FAILURE_REPLY = bytes.fromhex("80010000000a00000101")

#: TPM_SEND_COMMAND of the MS simulator protocol: the optional 9-byte data-channel prefix.
TPM_SEND_COMMAND = 8
SEND_COMMAND_PREFIX = struct.Struct(">IBI")  # command, locality, size
#: swtpm's in-band vendor command that sets the locality (with --locality allow-set-locality).
TPM2_CC_SET_LOCALITY = 0x20001000
#: What swtpm answers a refused vendor SetLocality with: its TPM_RC_LOCALITY constant is
#: 0x107 (measured on 0.7.1), not the TPM 2.0 warning TPM_RC_LOCALITY (0x907).
SWTPM_RC_LOCALITY = 0x107


def tpm_command(code: int, body: bytes = b"") -> bytes:
    """A TPM 2.0 command without sessions."""
    return struct.pack(">HII", 0x8001, 10 + len(body), code) + body


def error_reply(rc: int) -> bytes:
    """A 10-byte TPM 2.0 response carrying only ``rc``."""
    return struct.pack(">HII", 0x8001, 10, rc)


def has_send_command_prefix(data: bytes) -> bool:
    """swtpm's test for the TPM_SEND_COMMAND prefix: at least a header's worth of bytes, a
    first u16 that is no TPM 2.0 tag, and TPM_SEND_COMMAND as the first u32."""
    if len(data) < 10 or data[:2] in (b"\x80\x01", b"\x80\x02"):
        return False
    return struct.unpack_from(">I", data)[0] == TPM_SEND_COMMAND


@dataclass
class Request:
    """One reassembled control request: its code, the body and any file descriptors that
    arrived with it (SCM_RIGHTS)."""

    code: int
    body: bytes
    fds: list[int] = field(default_factory=list)


class RequestParser:
    """Reassembles control requests from the chunks the transport reads (see module doc)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fds: list[int] = []
        #: Why the stream cannot be parsed any further (the connection must be closed), or
        #: None. Set by a length field above :data:`STATEBLOB_MAX`: the bytes that follow
        #: cannot be told apart from requests.
        self.refused: str | None = None

    @property
    def pending(self) -> bool:
        """Whether part of a request has arrived (the deadline runs)."""
        return bool(self._buf)

    def take_fds(self) -> list[int]:
        """File descriptors received with an incomplete request (to close them)."""
        fds, self._fds = self._fds, []
        return fds

    @staticmethod
    def needed(head: bytes) -> int:
        """Total bytes a request starting with ``head`` needs before it is processed."""
        if len(head) < 4:
            return 4
        code = struct.unpack_from(">I", head)[0]
        at = LENGTH_FIELD.get(code)
        if at is None:
            return 4 + BODY_SIZE.get(code, 0)
        if len(head) < 4 + at + 4:
            return 4 + at + 4
        (length,) = struct.unpack_from(">I", head, 4 + at)
        return 4 + at + 4 + length

    @staticmethod
    def oversized(head: bytes) -> bool:
        """Whether a request starting with ``head`` announces more than
        :data:`STATEBLOB_MAX` bytes of data."""
        code = struct.unpack_from(">I", head)[0] if len(head) >= 4 else None
        at = LENGTH_FIELD.get(code) if code is not None else None
        if at is None or len(head) < 4 + at + 4:
            return False
        return struct.unpack_from(">I", head, 4 + at)[0] > STATEBLOB_MAX

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> list[Request]:
        """Add one read's worth of bytes (and received fds); return the completed requests."""
        self._buf += data
        self._fds.extend(fds)
        out: list[Request] = []
        while self._buf and self.refused is None:
            head = bytes(self._buf[:16])
            need = self.needed(head)
            if self.oversized(head):
                self.refused = f"control request 0x{head[3]:02x} announces too many bytes"
                break
            if len(self._buf) < need:
                break
            # Everything received up to the larger of the request's size and swtpm's buffer
            # belongs to it: surplus bytes make the body too long.
            chunk = bytes(self._buf[:max(need, REQUEST_BUFFER)])
            del self._buf[:len(chunk)]
            code = struct.unpack_from(">I", chunk)[0]
            out.append(Request(code, chunk[4:], self.take_fds()))
        return out


@dataclass
class Reply:
    """What the transport must do with a control request's outcome.

    ``data`` is written in one write; then, if ``exit`` is set, the process exits (SHUTDOWN);
    ``data_fd`` is a received descriptor the transport adopts as the data connection
    (SET_DATAFD).
    """

    data: bytes
    exit: bool = False
    data_fd: int | None = None


def result(res: int) -> Reply:
    """A reply that is only a result code."""
    return Reply(struct.pack(">I", res))


class RunState(enum.Enum):
    """The device's run state (qemu.qmp style: explicit, with guards)."""

    #: Before the first INIT (started without not-need-init): data commands fail.
    NOT_INITIALIZED = "not initialized"
    #: After INIT (or at start with not-need-init): the TPM executes commands.
    RUNNING = "running"
    #: After STOP or a failed INIT: data commands fail until the next INIT.
    STOPPED = "stopped"


@dataclass(frozen=True)
class DeviceOptions:
    """The command-line choices that shape the device (``--flags``, ``--locality``)."""

    #: False with ``--flags not-need-init`` (or any startup-* but startup-none).
    need_init: bool = True
    #: TPM2_Startup type sent when the device starts (``startup-clear``/``startup-state``).
    startup: SU | None = None
    #: Send TPM2_Shutdown(STATE) before INIT/STOP/SHUTDOWN and at exit when the last command
    #: was not a Shutdown (off with ``--flags disable-auto-shutdown``).
    auto_shutdown: bool = True
    #: ``--locality reject-locality-4``: SET_LOCALITY and SetLocality refuse locality 4.
    reject_locality_4: bool = False
    #: ``--locality allow-set-locality``: the in-band SetLocality vendor command works.
    allow_set_locality: bool = False
    #: ``--key``: the key the state is sealed with at rest (swtpm_py.statecrypt); GET/
    #: SET_STATEBLOB use it for blobs flagged ENCRYPTED.
    state_key: StateKey | None = None
    #: ``--migration-key``: every blob GET_STATEBLOB hands out is sealed with it, and every
    #: blob SET_STATEBLOB receives must be.
    migration_key: StateKey | None = None


def info_json(flags: int) -> str:
    """The GET_INFO / ``--print-info`` JSON document for ``flags``, formatted as libtpms
    formats it (compact, members in flag order)."""
    parts: list[str] = []
    if flags & INFO_TPMSPECIFICATION:
        parts.append('"TPMSpecification":' + json.dumps(
            {"family": properties.SPEC_FAMILY, "level": properties.SPEC_LEVEL,
             "revision": properties.SPEC_REVISION}, separators=(",", ":")))
    if flags & INFO_TPMATTRIBUTES:
        # manufacturer: the TCG vendor id swtpm reports (TPM_PT_MANUFACTURER is swtpm's "IBM"
        # too); version: TPM_PT_FIRMWARE_VERSION_1, as libtpms derives it; model: swtpm's.
        version = properties.firmware_version()[0]
        parts.append('"TPMAttributes":' + json.dumps(
            {"manufacturer": "id:00001014", "version": f"id:{version:08X}", "model": "swtpm"},
            separators=(",", ":")))
    if flags & INFO_TPMFEATURES:
        # Only key sizes the core implements (libtpms 0.9: RSA 1024-3072, Camellia 128/256).
        rsa = algorithms.ALGORITHMS.get(ALG.RSA)
        camellia = algorithms.ALGORITHMS.get(ALG.CAMELLIA)
        parts.append('"TPMFeatures":' + json.dumps(
            {"RSAKeySizes": list(rsa.key_bits) if rsa else [],
             "CamelliaKeySizes": list(camellia.key_bits) if camellia else []},
            separators=(",", ":")))
    return "{" + ",".join(parts) + "}"


class Device:
    """The emulated TPM device: the core plus the swtpm device rules (see module doc).

    ``tpm`` must have its platform storage set; STORE_VOLATILE writes through it.
    """

    def __init__(self, tpm: Tpm, options: DeviceOptions = DeviceOptions()) -> None:
        self.tpm = tpm
        self.options = options
        self.state = RunState.NOT_INITIALIZED
        #: The locality data-channel commands execute in (sticky; QEMU caches it).
        self.locality = 0
        #: SET_BUFFERSIZE's value: the largest command the data channel accepts.
        self.buffer_size = BUFFER_SIZE_MAX

    @property
    def running(self) -> bool:
        """Whether the TPM executes data-channel commands."""
        return self.state is RunState.RUNNING

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Power the TPM on at process start when INIT is not needed, then send the
        configured TPM2_Startup (swtpm: startup-* imply not-need-init; a failing Startup is
        logged and the TPM keeps running)."""
        if self.options.need_init:
            return
        self._power_on(0)
        if self.running and self.options.startup is not None:
            rsp = self.tpm.execute(tpm_command(CC.Startup, struct.pack(">H", self.options.startup)),
                                   self.locality)
            rc = struct.unpack_from(">I", rsp, 6)[0]
            if rc != RC.SUCCESS:
                log.warning("TPM2_Startup(%s) at start failed: TPM_RC 0x%x",
                            self.options.startup.name, rc)

    def close(self) -> None:
        """Process exit: the automatic Shutdown(STATE) if the TPM is running (newer swtpm;
        0.7.1 sends none). The volatile state is *not* stored, as in swtpm."""
        self._auto_shutdown()

    def _power_on(self, init_flags: int) -> int:
        # _TPM_Init ends a _TPM_Hash_Start sequence (swtpm 0.7.1: a HASH_END after INIT
        # measures nothing).
        self.tpm.hash_abort()
        try:
            self.tpm.power_on(delete_volatile=bool(init_flags & INIT_FLAG_DELETE_VOLATILE))
        except Exception:  # noqa: BLE001 - a storage failure fails INIT, not the process
            log.exception("could not initialize the TPM")
            self.state = RunState.STOPPED
            return Res.FAIL
        self.state = RunState.RUNNING
        return Res.SUCCESS

    def _auto_shutdown(self) -> None:
        """TPM2_Shutdown(STATE) before the TPM stops, unless the last command was a Shutdown:
        a host-side restart then is an orderly shutdown, not a DA-lockout event."""
        if not (self.running and self.options.auto_shutdown):
            return
        if self.tpm.last_command == CC.Shutdown:
            return
        rsp = self.tpm.execute(tpm_command(CC.Shutdown, struct.pack(">H", SU.STATE)),
                               self.locality)
        log.debug("automatic TPM2_Shutdown(STATE): %s", rsp.hex())

    # ------------------------------------------------------------------ data channel

    def data(self, raw: bytes) -> bytes:
        """Execute one data-channel message and return the bytes to send back (one write).

        With the TPM_SEND_COMMAND prefix the prefix's locality becomes the current one
        (sticky, not range-checked: swtpm passes it as is) and the reply is framed as
        size + response + four zero bytes.
        """
        prefixed = has_send_command_prefix(raw)
        cmd = raw
        if prefixed:
            self.locality = raw[4]
            cmd = raw[SEND_COMMAND_PREFIX.size:]
        response = self._execute(cmd)
        if prefixed:
            return struct.pack(">I", len(response)) + response + b"\x00" * 4
        return response

    def _execute(self, cmd: bytes) -> bytes:
        if not self.running:
            return FAILURE_REPLY
        if len(cmd) < 10:
            # swtpm answers anything shorter than a header itself.
            return error_reply(RC.INSUFFICIENT)
        code = struct.unpack_from(">I", cmd, 6)[0]
        if code == TPM2_CC_SET_LOCALITY:
            return self._set_locality_command(cmd)
        # A TPM command between _TPM_Hash_Start and _TPM_Hash_End aborts the sequence.
        self.tpm.hash_abort()
        return self.tpm.execute(cmd, self.locality)

    def _set_locality_command(self, cmd: bytes) -> bytes:
        """swtpm's vendor command 0x20001000: one byte after the header is the locality."""
        if len(cmd) < 11:
            return error_reply(RC.INSUFFICIENT)
        if not self.options.allow_set_locality:
            return FAILURE_REPLY
        locality = cmd[10]
        if locality > 4 or (locality == 4 and self.options.reject_locality_4):
            return error_reply(SWTPM_RC_LOCALITY)
        self.locality = locality
        return error_reply(RC.SUCCESS)

    # ------------------------------------------------------------------ control channel

    def control(self, req: Request, *, data_fd_allowed: bool = False) -> Reply:
        """Execute one control request. ``data_fd_allowed`` tells whether the transport can
        take a data connection from SET_DATAFD (no --server and none set yet).

        The guards of :data:`CONTROL_COMMANDS` run first, in swtpm's order: an unknown code,
        then the run state (TPM_BAD_ORDINAL), then the body size (TPM_BAD_PARAMETER).
        """
        spec = CONTROL_COMMANDS.get(req.code)
        try:
            if spec is None:
                log.warning("unknown control command 0x%08x", req.code)
                raise ControlError(Res.BAD_ORDINAL)
            if (spec.running and not self.running) or (spec.stopped and self.running):
                raise ControlError(Res.BAD_ORDINAL)
            low, high = spec.body
            if len(req.body) < low or (high is not None and len(req.body) > high):
                raise ControlError(Res.BAD_PARAMETER)
            return spec.handler(self, req, data_fd_allowed)
        except ControlError as exc:
            return result(exc.res)

    def _get_capability(self, req: Request, _fd_ok: bool) -> Reply:
        # QEMU reads the reply as one u64; its first four bytes are the zero result.
        return Reply(struct.pack(">Q", int(CAPABILITIES)))

    def _init(self, req: Request, _fd_ok: bool) -> Reply:
        (flags,) = struct.unpack(">I", req.body)
        self._auto_shutdown()
        return result(self._power_on(flags))

    def _stop(self, req: Request, _fd_ok: bool) -> Reply:
        self._auto_shutdown()
        self.state = RunState.STOPPED
        return result(Res.SUCCESS)

    def _shutdown(self, req: Request, _fd_ok: bool) -> Reply:
        self._auto_shutdown()
        self.state = RunState.STOPPED
        return Reply(struct.pack(">I", Res.SUCCESS), exit=True)

    def _get_tpmestablished(self, req: Request, _fd_ok: bool) -> Reply:
        return Reply(struct.pack(">IB3x", Res.SUCCESS, int(self.tpm.vol.established)))

    def _set_locality(self, req: Request, _fd_ok: bool) -> Reply:
        locality = req.body[0]
        if locality > 4 or (locality == 4 and self.options.reject_locality_4):
            raise ControlError(Res.BAD_LOCALITY)
        self.locality = locality
        return result(Res.SUCCESS)

    def _cancel(self, req: Request, _fd_ok: bool) -> Reply:
        # Commands run to completion between control requests: nothing is ever in flight.
        return result(Res.SUCCESS)

    def _store_volatile(self, req: Request, _fd_ok: bool) -> Reply:
        try:
            self.tpm.platform.storage.store(BlobKind.VOLATILE, self.tpm.volatile_blob())
        except Exception:  # noqa: BLE001 - reported as the result code
            log.exception("storing the volatile state failed")
            raise ControlError(Res.FAIL) from None
        return result(Res.SUCCESS)

    def _reset_tpmestablished(self, req: Request, _fd_ok: bool) -> Reply:
        # PC Client PTP: only localities 3 and 4 may reset tpmEstablished.
        if req.body[0] not in (3, 4):
            raise ControlError(Res.BAD_LOCALITY)
        self.tpm.vol.established = False
        return result(Res.SUCCESS)

    def _hash_start(self, req: Request, _fd_ok: bool) -> Reply:
        # PC Client PTP: _TPM_Hash_Start/Data/End are locality-4 indications; the control
        # channel stands for the platform hardware, so no SET_LOCALITY is involved.
        self.tpm.hash_start()
        return result(Res.SUCCESS)

    def _hash_data(self, req: Request, _fd_ok: bool) -> Reply:
        (length,) = struct.unpack_from(">I", req.body)
        if length > STATEBLOB_MAX or len(req.body) != 4 + length:
            raise ControlError(Res.BAD_PARAMETER)
        self.tpm.hash_data(req.body[4:])
        return result(Res.SUCCESS)

    def _hash_end(self, req: Request, _fd_ok: bool) -> Reply:
        self.tpm.hash_end()
        return result(Res.SUCCESS)

    def _get_stateblob(self, req: Request, _fd_ok: bool) -> Reply:
        """The blob of the requested type, from ``offset`` on (all of it in one reply: the
        socket variant of the protocol).

        Encryption as swtpm 0.7.1 does it (measured): with ``--key`` and a request without
        DECRYPTED the blob stays sealed with the state key and state_flags is ENCRYPTED (QEMU
        always asks DECRYPTED); with ``--migration-key`` the blob is then sealed with the
        migration key too, which state_flags does not show.

        As swtpm 0.7.1 (measured): a type that is not 1-3, and a savestate blob that does not
        exist, give TPM_RETRY with nothing; totlength counts the bytes from ``offset`` on; an
        offset past the end gives success with nothing; request flags are not checked."""
        req_flags, kind, offset = struct.unpack_from(">III", req.body)
        blob: bytes | None
        if kind == BlobKind.PERMANENT:
            blob = self.tpm.permanent_blob()
        elif kind == BlobKind.VOLATILE:
            blob = self.tpm.volatile_blob()
        elif kind == BlobKind.SAVESTATE:
            try:
                blob = self.tpm.platform.storage.load(BlobKind.SAVESTATE)
            except Exception:  # noqa: BLE001 - reported as the result code
                log.exception("reading the savestate blob failed")
                raise ControlError(Res.IOERROR) from None
        else:
            blob = None
        if not blob:
            return Reply(struct.pack(">IIII", Res.RETRY, 0, 0, 0))
        flags = 0
        purpose = PURPOSES[BlobKind(kind)]
        if self.options.state_key is not None and not req_flags & STATE_FLAG_DECRYPTED:
            blob, flags = self.options.state_key.seal(purpose, blob), STATE_FLAG_ENCRYPTED
        if self.options.migration_key is not None:
            blob = self.options.migration_key.seal(purpose, blob)
        data = blob[offset:]
        return Reply(struct.pack(">IIII", Res.SUCCESS, flags, len(data), len(data)) + data)

    def _set_stateblob(self, req: Request, _fd_ok: bool) -> Reply:
        """Replace a stored blob while the TPM is stopped; it takes effect at the next INIT.

        The blob is decoded first: garbage, a blob of another kind or of a newer format
        version is refused with TPM_BAD_PARAMETER and nothing changes. An empty blob deletes
        the stored one (QEMU skips empty blobs; swtpm accepts them).

        Encryption mirrors GET_STATEBLOB: with ``--migration-key`` the blob must be sealed with
        it; a blob flagged ENCRYPTED is then opened with the state key (``--key``), and
        without one it cannot be: TPM_KEYNOTFOUND, as swtpm answers (TPM_BAD_PARAMETER when
        the bytes are not even state). A blob that does not open (another key, damage), or a
        sealed one this emulator has no key for, is TPM_BAD_PARAMETER."""
        flags, kind, length = struct.unpack_from(">III", req.body)
        data = req.body[12:]
        if length > STATEBLOB_MAX or len(data) != length or kind not in BLOB_TYPES:
            raise ControlError(Res.BAD_PARAMETER)
        blob_kind = BlobKind(kind)
        if data:
            data = self._open_stateblob(blob_kind, flags, data)
        storage = self.tpm.platform.storage
        try:
            if data:
                decode_blob(blob_kind, data, BLOB_TYPES[kind])
                storage.store(blob_kind, data)
            else:
                storage.delete(blob_kind)
        except StateError as exc:
            log.warning("SET_STATEBLOB refused: %s", exc)
            raise ControlError(Res.BAD_PARAMETER) from None
        except Exception:  # noqa: BLE001 - reported as the result code
            log.exception("storing the %s blob failed", blob_kind.name.lower())
            raise ControlError(Res.IOERROR) from None
        return result(Res.SUCCESS)

    def _open_stateblob(self, kind: BlobKind, flags: int, data: bytes) -> bytes:
        """The plain blob inside what SET_STATEBLOB received (see :meth:`_set_stateblob`)."""
        purpose = PURPOSES[kind]
        try:
            if self.options.migration_key is not None:
                data = self.options.migration_key.open(purpose, data)
            if flags & STATE_FLAG_ENCRYPTED:
                if self.options.state_key is None:
                    # swtpm 0.7.1 (measured): TPM_KEYNOTFOUND for state it recognises,
                    # TPM_BAD_PARAMETER for anything else.
                    raise ControlError(Res.KEYNOTFOUND if _recognised(kind, data)
                                       else Res.BAD_PARAMETER)
                data = self.options.state_key.open(purpose, data)
        except SealError as exc:
            log.warning("SET_STATEBLOB refused: %s", exc)
            raise ControlError(Res.BAD_PARAMETER) from None
        if is_sealed(data):
            log.warning("SET_STATEBLOB refused: the %s blob is sealed (with a migration key?) "
                        "and this emulator has no key to open it", purpose)
            raise ControlError(Res.BAD_PARAMETER)
        return data

    def _get_config(self, req: Request, _fd_ok: bool) -> Reply:
        return Reply(struct.pack(">II", Res.SUCCESS, 0))

    def _set_datafd(self, req: Request, fd_ok: bool) -> Reply:
        if not fd_ok:
            raise ControlError(Res.IOERROR)
        if not req.fds:
            raise ControlError(Res.BAD_PARAMETER)
        fd = req.fds.pop(0)
        return Reply(struct.pack(">I", Res.SUCCESS), data_fd=fd)

    def _set_buffersize(self, req: Request, _fd_ok: bool) -> Reply:
        (size,) = struct.unpack_from(">I", req.body)
        if size and self.running:
            raise ControlError(Res.BAD_ORDINAL)
        if size:
            self.buffer_size = min(max(size, BUFFER_SIZE_MIN), BUFFER_SIZE_MAX)
        return Reply(struct.pack(">IIII", Res.SUCCESS, self.buffer_size, BUFFER_SIZE_MIN,
                                 BUFFER_SIZE_MAX))

    def _lock_storage(self, req: Request, _fd_ok: bool) -> Reply:
        """Newer swtpm's CMD_LOCK_STORAGE: make sure this process holds the lock on the TPM
        state, retrying every 10 ms up to ``retries`` times (QEMU >= 7.1 sends it with 300
        when the VM runs again after its TPM state was saved -- savevm, a migration that fell
        back -- since swtpm ``--migration release-lock-outgoing`` lets go of the lock once the
        state is out).

        swtpm_py takes the lock when it opens the state, before it serves anything (the
        directory's ``.lock``, or the blobstore image's locks), and releases it only when the
        process ends: it has no ``--migration release-lock-outgoing``. So the lock is held
        whenever this runs and no retry is ever needed. With locking turned off (``--tpmstate
        ...,lock=false``) there is nothing to lock; swtpm answers success then too."""
        (retries,) = struct.unpack(">I", req.body)
        log.debug("LOCK_STORAGE (%d retries): the state has been locked since start", retries)
        return result(Res.SUCCESS)

    def _get_info(self, req: Request, _fd_ok: bool) -> Reply:
        flags, offset = struct.unpack_from(">QI", req.body)
        text = info_json(flags).encode()
        if offset >= len(text):
            raise ControlError(Res.BAD_PARAMETER)
        total = text + b"\x00"
        chunk = total[offset:offset + GETINFO_CHUNK]
        return Reply(struct.pack(">III", Res.SUCCESS, len(total), len(chunk)) + chunk)


class ControlError(Exception):
    """A control request fails with the result code ``res`` (the layer's one error type)."""

    def __init__(self, res: Res) -> None:
        super().__init__(res.name)
        self.res = res


def _recognised(kind: BlobKind, data: bytes) -> bool:
    """Whether ``data`` is state of ``kind``: sealed, or a blob that decodes."""
    if is_sealed(data):
        return True
    try:
        decode_blob(kind, data, BLOB_TYPES[kind])
    except StateError:
        return False
    return True


#: The state each GET/SET_STATEBLOB type decodes to (SET_STATEBLOB validates with it).
BLOB_TYPES: dict[int, type] = {
    BlobKind.PERMANENT: PersistentData,
    BlobKind.VOLATILE: VolatileData,
    BlobKind.SAVESTATE: SavedState,
}


@dataclass(frozen=True)
class ControlSpec:
    """One control command: its handler and its guards (measured on swtpm 0.7.1)."""

    handler: Callable[[Device, Request, bool], Reply]
    #: TPM_BAD_ORDINAL unless the TPM is running.
    running: bool = False
    #: TPM_BAD_ORDINAL while the TPM is running (SET_STATEBLOB: only when stopped).
    stopped: bool = False
    #: Allowed body length (min, max; None: no maximum); else TPM_BAD_PARAMETER.
    body: tuple[int, int | None] = (0, 0)


#: The implemented control commands (exactly :data:`CAPABILITIES`).
CONTROL_COMMANDS: dict[int, ControlSpec] = {
    Cmd.GET_CAPABILITY: ControlSpec(Device._get_capability, body=(0, None)),
    Cmd.INIT: ControlSpec(Device._init, body=(4, 4)),
    Cmd.SHUTDOWN: ControlSpec(Device._shutdown),
    Cmd.GET_TPMESTABLISHED: ControlSpec(Device._get_tpmestablished, running=True),
    Cmd.SET_LOCALITY: ControlSpec(Device._set_locality, body=(1, None)),
    Cmd.HASH_START: ControlSpec(Device._hash_start, running=True),
    Cmd.HASH_DATA: ControlSpec(Device._hash_data, running=True, body=(4, None)),
    Cmd.HASH_END: ControlSpec(Device._hash_end, running=True),
    Cmd.CANCEL_TPM_CMD: ControlSpec(Device._cancel, running=True),
    Cmd.STORE_VOLATILE: ControlSpec(Device._store_volatile, running=True),
    Cmd.RESET_TPMESTABLISHED: ControlSpec(Device._reset_tpmestablished, running=True,
                                          body=(1, None)),
    Cmd.GET_STATEBLOB: ControlSpec(Device._get_stateblob, running=True, body=(12, None)),
    Cmd.SET_STATEBLOB: ControlSpec(Device._set_stateblob, stopped=True, body=(12, None)),
    Cmd.STOP: ControlSpec(Device._stop),
    Cmd.GET_CONFIG: ControlSpec(Device._get_config),
    Cmd.SET_DATAFD: ControlSpec(Device._set_datafd, body=(0, None)),
    Cmd.SET_BUFFERSIZE: ControlSpec(Device._set_buffersize, body=(4, None)),
    Cmd.GET_INFO: ControlSpec(Device._get_info, body=(16, None)),
    Cmd.LOCK_STORAGE: ControlSpec(Device._lock_storage, body=(4, 4)),
}
