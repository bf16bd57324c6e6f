"""Transports: the data and control channels over TCP, unix sockets and inherited fds.

One thread, one :mod:`selectors` loop, as swtpm's main loop:

* **Data channel** (REFERENCE.md §2): a listening TCP or unix socket (``--server``), an
  inherited connected socket (``--server type=tcp,fd=N``, ``-f N``: swtpm_setup's
  socketpair) or a connection handed over with SET_DATAFD (QEMU). Commands are reassembled by
  the header's size field (:class:`CommandFramer`) and each response leaves in one write;
  ``disconnect`` closes the connection after each response.
* **Control channel** (REFERENCE.md §1): a listening TCP or unix socket (``--ctrl``), an
  inherited listening socket (``fd=N``) or an inherited connection (``clientfd=N``).
  Requests are reassembled by :class:`swtpm_py.control.RequestParser`; file descriptors sent
  with SCM_RIGHTS over a unix socket reach SET_DATAFD.
* One client per channel at a time: while a channel has a client its listening socket is not
  watched, so a second client waits in the backlog until the first leaves (as with swtpm).
* An exception while serving a connection closes that connection, never the loop. A request
  that is still incomplete after 500 ms closes a control connection; an incomplete data
  command is then executed as it stands (the TPM answers TPM_RC_COMMAND_SIZE) so the client
  gets a well-formed reply.
* SIGTERM/SIGINT end the loop at once (swtpm: exit code 0, the volatile state is not saved).
"""

from __future__ import annotations

import array
import errno
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .control import REQUEST_BUFFER, REQUEST_DEADLINE, Device, Request, RequestParser

log = logging.getLogger("swtpm_py.server")

#: Backlog of the listening sockets (clients wait there while another is served).
LISTEN_BACKLOG = 8
#: Seconds a client may take to accept a response before it is disconnected.
WRITE_TIMEOUT = 5.0
#: Largest read from a data connection.
READ_SIZE = 65536
#: An oversized command (size field above the buffer size) is answered at once; up to this
#: many of its remaining bytes are then discarded so they are not taken for new commands.
SKIP_LIMIT = 64 * 1024
#: Most file descriptors accepted with one control message.
MAX_FDS = 4

#: The TPM 2.0 command tags (TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS) as they start a command.
_TAGS = (b"\x80\x01", b"\x80\x02")
_U32 = struct.Struct(">I")


class CommandFramer:
    """Reassembles data-channel messages by the TPM header's size field (sans-I/O).

    A message is a TPM command, optionally behind the 9-byte TPM_SEND_COMMAND prefix (then
    the command's header starts at offset 9). Where the size field is no help, everything
    buffered is one message, as swtpm takes everything one read returns:

    * a size field below 10 or above ``max_size()``: at once (the TPM answers
      TPM_RC_COMMAND_SIZE), and the rest of such an oversized command is skipped;
    * more bytes than the size field says (a client never sends a second command before the
      first one's response): the TPM answers TPM_RC_COMMAND_SIZE, as swtpm does;
    * fewer bytes, once the deadline has passed (:meth:`flush`): swtpm would have answered
      at once; a client that splits a command within 500 ms is served.

    Fewer than 10 bytes are never a message: swtpm waits for a whole header, and so does this.
    """

    def __init__(self, max_size: Callable[[], int]) -> None:
        self._max_size = max_size
        self._buf = bytearray()
        self._skip = 0

    @property
    def pending(self) -> bool:
        """Whether part of a message is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages."""
        if not self._buf and not self._skip and len(data) >= 10 and data[:2] in _TAGS:
            # The common case, one whole plain command in one read: no copies.
            size = _U32.unpack_from(data, 2)[0]
            if size == len(data) and size <= self._max_size():
                return [data]
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            offset = self._header_offset()
            if offset is None or len(self._buf) < offset + 10:
                break
            size = struct.unpack_from(">I", self._buf, offset + 2)[0]
            if size < 10 or size > self._max_size():
                out.append(bytes(self._buf))
                missing = offset + size - len(self._buf)
                if 0 < missing <= SKIP_LIMIT:
                    self._skip = missing
                self._buf.clear()
                break
            total = offset + size
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf))
            self._buf.clear()
        return out

    def _header_offset(self) -> int | None:
        """0 for a plain command, 9 behind a TPM_SEND_COMMAND prefix, None if undecided."""
        if len(self._buf) < 2:
            return None
        if self._buf[:2] in _TAGS:
            return 0
        if len(self._buf) < 4:
            return None
        return 9 if struct.unpack_from(">I", self._buf)[0] == 8 else 0

    def flush(self) -> bytes | None:
        """Everything buffered as one message once the deadline has passed or the peer has
        closed, if it is at least a header's worth (10 bytes); else None and the bytes stay."""
        if len(self._buf) < 10:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        return data


# ---------------------------------------------------------------------------- sockets


class TransportError(Exception):
    """A socket cannot be created, bound or used (message in swtpm's words)."""


def tcp_listener(port: int, bindaddr: str = "127.0.0.1", ifname: str | None = None) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR on ``bindaddr``:``port`` (IPv6 if the address
    has a colon; a link-local IPv6 address needs ``ifname``)."""
    family = socket.AF_INET6 if ":" in bindaddr else socket.AF_INET
    try:
        socket.inet_pton(family, bindaddr)
    except OSError:
        raise TransportError(f"Could not parse the bind address '{bindaddr}'") from None
    address: tuple = (bindaddr, port)
    if family == socket.AF_INET6:
        scope = 0
        if bindaddr.lower().startswith("fe80:"):
            if not ifname:
                raise TransportError("Missing interface name for link local address")
            try:
                scope = socket.if_nametoindex(ifname)
            except OSError as exc:
                raise TransportError(f"Could not convert interface name '{ifname}' to index: "
                                     f"{exc.strerror or exc}") from None
        address = (bindaddr, port, 0, scope)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise TransportError(f"Could not open TCP socket on {bindaddr} port {port}: "
                             f"{exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def unix_listener(path: str, mode: int = 0o770, uid: int = -1, gid: int = -1) -> socket.socket:
    """A listening unix socket at ``path`` (an old socket file there is replaced), with file
    mode ``mode`` and, if given, owner ``uid``/``gid``."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TransportError(f"Could not remove {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise TransportError(f"Could not open UnixIO socket {path}: {exc.strerror or exc}") from None
    return sock


def socket_from_fd(fd: int, what: str) -> socket.socket:
    """The inherited socket ``fd`` (a listening socket or a connection); anything that is no
    socket is refused, as swtpm does."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTSOCK, "not a socket")
        sock = socket.socket(fileno=fd)
    except OSError:
        raise TransportError(f"Bad filedescriptor {fd} for {what}") from None
    sock.set_inheritable(False)
    return sock


def is_listening(sock: socket.socket) -> bool:
    """Whether ``sock`` is a listening socket (SO_ACCEPTCONN)."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


# ---------------------------------------------------------------------------- the loop


class StopSignals:
    """SIGTERM and SIGINT as an orderly stop, from the moment this is created: installed
    before the sockets are bound, a signal that arrives while the process is still starting
    stops the server as soon as it is attached (instead of killing the process)."""

    def __init__(self) -> None:
        self.requested = False
        self._server: Server | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, _signo: int, _frame: object) -> None:
        self.requested = True
        if self._server is not None:
            self._server.stop()

    def attach(self, server: "Server") -> None:
        """Route signals to ``server`` (stopping it at once if one already came)."""
        self._server = server
        if self.requested:
            server.stop()


@dataclass
class _Conn:
    """A connected client of one channel."""

    sock: socket.socket
    #: When the oldest unprocessed byte arrived (monotonic), or None when nothing is pending.
    since: float | None = None
    parser: RequestParser = field(default_factory=RequestParser)
    framer: CommandFramer | None = None


@dataclass
class ServerConfig:
    """How the channels behave (from ``--server``, ``--ctrl`` and ``-t``)."""

    #: ``--server ...,disconnect`` (and ``-p``): close the data connection after a response.
    disconnect: bool = False
    #: swtpm's terminate flag (``-t``, an inherited data connection): exit once the data
    #: connection is lost.
    terminate: bool = False
    #: ``--ctrl ...,terminate`` (newer swtpm): exit once the control connection is lost.
    ctrl_terminate: bool = False
    #: Unix socket paths to remove at exit.
    unlink_paths: list[str] = field(default_factory=list)


class Server:
    """The single-threaded loop serving one :class:`Device` (see module doc)."""

    def __init__(self, device: Device, config: ServerConfig, *,
                 data_listener: socket.socket | None = None,
                 data_conn: socket.socket | None = None,
                 ctrl_listener: socket.socket | None = None,
                 ctrl_conn: socket.socket | None = None) -> None:
        self.device = device
        self.config = config
        self.data_listener = data_listener
        self.ctrl_listener = ctrl_listener
        self.data: _Conn | None = None
        self.ctrl: _Conn | None = None
        self._sel = selectors.DefaultSelector()
        self._registered: dict[Any, Callable[[], None]] = {}
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if data_conn is not None:
            self._adopt_data(data_conn)
        if ctrl_conn is not None:
            self.ctrl = self._new_conn(ctrl_conn)

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def serve(self) -> None:
        """Run until SHUTDOWN, a signal or a terminating disconnect; then clean up."""
        # What is watched depends only on which connections are open: the selector is
        # re-synchronised when one of them came or went, not on every command.
        synced: tuple[_Conn | None, _Conn | None] | None = None
        try:
            while not self._stop:
                data, ctrl = self.data, self.ctrl
                if synced is None or synced[0] is not data or synced[1] is not ctrl:
                    self._sync()
                    synced = (data, ctrl)
                for key, _mask in self._sel.select(self._timeout()):
                    # An earlier callback of this round may have closed or replaced it.
                    if self._stop or ((self.data is not data or self.ctrl is not ctrl)
                                      and self._watched().get(key.fileobj) != key.data):
                        continue
                    try:
                        key.data()
                    except Exception:  # noqa: BLE001 - nothing may end the loop
                        log.exception("internal error in the main loop")
                if self._pending():
                    self._check_deadlines()
        finally:
            self._close_all()

    # ------------------------------------------------------------------ registration

    def _watched(self) -> dict[Any, Callable[[], None]]:
        want: dict[Any, Callable[[], None]] = {self._wake_r: self._drain_wakeup}
        if self.data is not None:
            want[self.data.sock] = self._read_data
        elif self.data_listener is not None:
            want[self.data_listener] = self._accept_data
        if self.ctrl is not None:
            want[self.ctrl.sock] = self._read_ctrl
        elif self.ctrl_listener is not None:
            want[self.ctrl_listener] = self._accept_ctrl
        return want

    def _sync(self) -> None:
        # self._registered mirrors the selector (its own map is slow to query: a miss costs
        # a KeyError with the socket's repr() in its message).
        want = self._watched()
        registered = self._registered
        for sock, callback in list(registered.items()):
            if want.get(sock) != callback:
                self._forget_key(sock)
        for sock, callback in want.items():
            if sock not in registered:
                self._sel.register(sock, selectors.EVENT_READ, callback)
                registered[sock] = callback

    def _forget_key(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (if it is watched)."""
        if self._registered.pop(sock, None) is not None:
            self._sel.unregister(sock)

    def _pending(self) -> bool:
        """Whether a connection holds part of a request (a deadline runs)."""
        data, ctrl = self.data, self.ctrl
        return ((data is not None and data.since is not None)
                or (ctrl is not None and ctrl.since is not None))

    def _timeout(self) -> float | None:
        if not self._pending():
            return None
        times = [c.since + REQUEST_DEADLINE for c in (self.data, self.ctrl)
                 if c is not None and c.since is not None]
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ data channel

    def _new_conn(self, sock: socket.socket) -> _Conn:
        sock.settimeout(WRITE_TIMEOUT)
        return _Conn(sock)

    def _adopt_data(self, sock: socket.socket) -> None:
        # Non-blocking: the selector says when to read, so a read needs no poll() of its own
        # (a socket with a timeout polls before every recv and send); _send_data applies
        # WRITE_TIMEOUT only when a response does not leave in one send.
        sock.setblocking(False)
        conn = _Conn(sock)
        conn.framer = CommandFramer(lambda: self.device.buffer_size)
        self.data = conn

    def _accept_data(self) -> None:
        assert self.data_listener is not None
        try:
            sock, _ = self.data_listener.accept()
        except OSError as exc:
            log.warning("accepting a data connection failed: %s", exc)
            return
        self._adopt_data(sock)

    def _read_data(self) -> None:
        conn = self.data
        assert conn is not None and conn.framer is not None
        try:
            chunk = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return  # a spurious wake-up: nothing to read after all
        except OSError as exc:
            log.info("data connection error: %s", exc)
            chunk = b""
        if not chunk:
            rest = conn.framer.flush()
            if rest is not None:
                self._respond_data(conn, rest)
            self._close_data()
            return
        try:
            for message in conn.framer.feed(chunk):
                if not self._respond_data(conn, message) or self.data is not conn:
                    return
        except Exception:  # noqa: BLE001 - a broken connection must not end the loop
            log.exception("error serving the data connection")
            self._close_data()
            return
        conn.since = (conn.since or time.monotonic()) if conn.framer.pending else None

    def _respond_data(self, conn: _Conn, message: bytes) -> bool:
        """Execute ``message`` and send the reply in one write; False if the connection
        was closed."""
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("data cmd: %s", message.hex())
        reply = self.device.data(message)
        if debug:
            log.debug("data rsp: %s", reply.hex())
        try:
            _send_data(conn.sock, reply)
        except OSError as exc:
            log.info("could not send the response: %s", exc)
            self._close_data()
            return False
        if self.config.disconnect and self.data_listener is not None:
            self._close_data()
            return False
        return True

    def _close_data(self) -> None:
        if self.data is None:
            return
        self._forget(self.data.sock)
        self.data = None
        if self.config.terminate:
            log.info("data connection closed: terminating")
            self.stop()

    # ------------------------------------------------------------------ control channel

    def _accept_ctrl(self) -> None:
        assert self.ctrl_listener is not None
        try:
            sock, _ = self.ctrl_listener.accept()
        except OSError as exc:
            log.warning("accepting a control connection failed: %s", exc)
            return
        self.ctrl = self._new_conn(sock)

    def _recv_ctrl(self, conn: _Conn) -> tuple[bytes, list[int]]:
        sock = conn.sock
        if sock.family != socket.AF_UNIX:
            return sock.recv(REQUEST_BUFFER), []
        fds = array.array("i")
        data, ancdata, _flags, _addr = sock.recvmsg(REQUEST_BUFFER,
                                                    socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        return data, list(fds)

    def _read_ctrl(self) -> None:
        conn = self.ctrl
        assert conn is not None
        try:
            chunk, fds = self._recv_ctrl(conn)
        except OSError as exc:
            log.info("control connection error: %s", exc)
            chunk, fds = b"", []
        if not chunk:
            _close_fds(fds)
            self._close_ctrl()
            return
        try:
            for req in conn.parser.feed(chunk, fds):
                if not self._respond_ctrl(conn, req):
                    return
        except Exception:  # noqa: BLE001 - a malformed frame closes only this connection
            log.exception("error serving the control connection")
            self._close_ctrl()
            return
        if conn.parser.refused is not None:
            log.warning("%s: closing the control connection", conn.parser.refused)
            self._close_ctrl()
            return
        conn.since = (conn.since or time.monotonic()) if conn.parser.pending else None

    def _respond_ctrl(self, conn: _Conn, req: Request) -> bool:
        log.debug("ctrl cmd: %08x %s", req.code, _log_bytes(req.body))
        allowed = self.data_listener is None and self.data is None
        try:
            reply = self.device.control(req, data_fd_allowed=allowed)
        finally:
            # SET_DATAFD takes its descriptor out of req.fds; any other one is not wanted.
            _close_fds(req.fds)
        log.debug("ctrl rsp: %s", _log_bytes(reply.data))
        if reply.data_fd is not None:
            try:
                self._adopt_data(socket.socket(fileno=reply.data_fd))
            except OSError as exc:
                log.warning("SET_DATAFD: unusable descriptor: %s", exc)
                os.close(reply.data_fd)
        try:
            conn.sock.sendall(reply.data)
        except OSError as exc:
            log.info("could not send the control response: %s", exc)
            self._close_ctrl()
            return False
        if reply.exit:
            log.info("SHUTDOWN received: terminating")
            self.stop()
            return False
        return True

    def _close_ctrl(self) -> None:
        if self.ctrl is None:
            return
        _close_fds(self.ctrl.parser.take_fds())
        self._forget(self.ctrl.sock)
        self.ctrl = None
        if self.config.ctrl_terminate:
            log.info("control connection closed: terminating")
            self.stop()

    # ------------------------------------------------------------------ deadlines and exit

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        ctrl = self.ctrl
        if ctrl is not None and ctrl.since is not None and now - ctrl.since >= REQUEST_DEADLINE:
            log.warning("incomplete control request after %.1f s: closing the connection",
                        REQUEST_DEADLINE)
            self._close_ctrl()
        data = self.data
        if (data is not None and data.since is not None and data.framer is not None
                and now - data.since >= REQUEST_DEADLINE):
            data.since = None
            rest = data.framer.flush()
            if rest is not None:
                self._respond_data(data, rest)

    def _forget(self, sock: socket.socket) -> None:
        try:
            self._forget_key(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _close_all(self) -> None:
        try:
            self.device.close()
        except Exception:  # noqa: BLE001 - exit must complete
            log.exception("error while stopping the TPM")
        for sock in (self.data.sock if self.data else None, self.ctrl.sock if self.ctrl else None,
                     self.data_listener, self.ctrl_listener, self._wake_r, self._wake_w):
            if sock is not None:
                self._forget(sock)
        self.data = self.ctrl = None
        for path in self.config.unlink_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._sel.close()


#: Control requests and replies are logged up to this many bytes (state blobs are large).
LOG_BYTES = 64


def _log_bytes(data: bytes) -> str:
    """``data`` in hex for the debug log, cut after :data:`LOG_BYTES` bytes."""
    if len(data) <= LOG_BYTES:
        return data.hex()
    return f"{data[:LOG_BYTES].hex()}... ({len(data)} bytes)"


def _send_data(sock: socket.socket, reply: bytes) -> None:
    """Send ``reply`` on the non-blocking ``sock``: in one send when the socket buffer takes
    it (nearly always), else the rest within :data:`WRITE_TIMEOUT` (socket.timeout, an
    OSError, when the client does not read)."""
    try:
        sent = sock.send(reply)
    except BlockingIOError:
        sent = 0
    if sent == len(reply):
        return
    sock.settimeout(WRITE_TIMEOUT)
    try:
        sock.sendall(memoryview(reply)[sent:])
    finally:
        sock.setblocking(False)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
