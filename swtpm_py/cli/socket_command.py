"""``swtpm_py socket``: the emulator process, with swtpm's command line (REFERENCE.md §5).

Order of start-up (each step fails promptly with a message and exit code 1):

1. parse the options (an unknown option is a usage error, exit 1, as swtpm);
2. ``--print-capabilities`` / ``--print-states`` / ``--print-info`` print and exit;
3. open the state -- lock the state directory, or open (and lock, as QEMU does) the blobstore
   image, creating or formatting it as the options ask (a second emulator on the same state
   stops here; ``--blobstore ...,showsize`` prints the size and ends here with exit code 0);
4. bind the sockets (a port in use stops here), then ``--daemon`` forks, ``--pid`` is
   written, and the TPM is powered on (``not-need-init``): clients may connect from the
   moment the sockets are bound, they are served once the TPM is up;
5. serve until SHUTDOWN, SIGTERM/SIGINT or a terminating disconnect; remove the pid file and
   the unix sockets.

``--key`` and ``--migration-key`` encrypt the state at rest and in migration (see
:mod:`swtpm_py.statecrypt`). Options swtpm has that swtpm_py cannot honour yet (``--migration``,
``--runas``) are refused with a clear message rather than ignored.
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn, TextIO

from blobstore.image.base import ImageError
from blobstore.image.open import open_image
from blobstore.options import (BlobstoreOption, DriveOption, SetupError, open_blobstore,
                               parse_blobstore, parse_drives)
from blobstore.store import BlobStore, DamagedError, NotFormattedError, StoreError

from .. import __version__
from ..blobstorage import BLOB_NAMES, OWNER, BlobstoreStorage, registrations
from ..control import Device, DeviceOptions, info_json
from ..statecrypt import EncryptedStorage, SealError, StateKey, is_sealed, parse_key
from ..server import (Server, ServerConfig, StopSignals, TransportError, is_listening,
                      socket_from_fd, tcp_listener, unix_listener)
from ..storage import (SWTPM_STATE_NAMES, DirStorage, OptionError, StorageError,
                       TpmStateConfig, default_state_image, parse_options, parse_tpmstate,
                       sizes_in)
from ..tpm import Platform, Tpm, algorithms
from ..tpm.constants import ALG, SU
from ..tpm.state import BlobKind

log = logging.getLogger("swtpm_py")

PROG = "swtpm_py"

HELP = f"""Usage: {PROG} socket [options]

The following options are supported (swtpm's):

-p|--port <port> : use the given port (TCP, closing the connection after each response)
-f|--fd <fd>     : use the given connected socket file descriptor for TPM commands
-t|--terminate   : terminate the TPM once the data connection has been lost
-d|--daemon      : daemonize the TPM (after the sockets are bound)
--ctrl type=[unixio|tcp][,path=<path>][,port=<port>[,bindaddr=address[,ifname=ifname]]][,fd=<filedescriptor>|clientfd=<filedescriptor>][,mode=0...][,uid=uid][,gid=gid][,terminate]
                 : TPM control channel using UnixIO or TCP sockets; TCP binds to
                   127.0.0.1 unless bindaddr is given; fd is a listening socket,
                   clientfd a connected one (UnixIO only); terminate ends the TPM
                   when the control connection is lost
--server [type=tcp][,port=port[,bindaddr=address[,ifname=ifname]]][,fd=fd][,disconnect]
--server type=unixio[,path=path][,fd=fd][,mode=0...][,uid=uid][,gid=gid]
                 : TPM data channel; TPM_PORT is the default port; fd is a connected
                   socket for TCP and a listening one for UnixIO
--tpmstate dir=<dir>[,mode=0...][,lock][,fsync]|backend-uri=dir://<dir>
                 : keep the TPM state in a directory (TPM_PATH is the default directory)
--tpmstate backend-uri=blobstore://<image>|file://<raw volume>
                 : keep the TPM state in a blobstore in a raw or qcow2 image (format
                   probed; file:// is always raw), created when missing and formatted
                   when empty or all zero; anything else in it is refused, never
                   reformatted
--drive id=<id>,file=<path>[,format=raw|qcow2]
                 : an image (repeatable); the format is probed when omitted
--blobstore name=<name>,drive=<id>[,showsize|create|format|formatifbad]
                 : keep the TPM state in the blobstore <name> on drive <id>; showsize
                   prints the size it needs and exits; create creates a missing/empty
                   file (and grows a small one); format always formats (a clean TPM);
                   formatifbad formats only an image without a valid store
                 (without --tpmstate, --blobstore and TPM_PATH the state is kept in
                   ${{XDG_DATA_HOME:-~/.local/share}}/swtpm_py/tpm.qcow2, created on first
                   use)
--flags [not-need-init][,startup-clear|startup-state|startup-deactivated|startup-none][,disable-auto-shutdown]
--locality [reject-locality-4][,allow-set-locality]
--pid file=<path>|fd=<filedescriptor>
--log file=<path>|fd=<filedescriptor>[,level=n][,prefix=<prefix>][,truncate]
--key file=<path>|fd=<fd>[,mode=aes-cbc|aes-256-cbc][,format=hex|binary][,remove[=true|false]]
--key pwdfile=<path>|pwdfd=<fd>[,mode=aes-cbc|aes-256-cbc][,remove[=true|false]][,kdf=sha512|pbkdf2]
                 : encrypt the TPM state at rest with this key (or passphrase); mode
                   chooses a 128- or 256-bit key; blobs are sealed with AES-GCM
--migration-key <the same forms>
                 : seal the blobs GET_STATEBLOB hands out (and open ENCRYPTED ones
                   SET_STATEBLOB receives) with this key
--tpm2           : choose TPM 2 (the only TPM swtpm_py emulates)
--print-capabilities
                 : print capabilities and terminate
--print-states   : print existing TPM states and terminate
--print-info <flags>
                 : print the GET_INFO JSON for the flags and terminate
-h|--help        : display this help screen and terminate

Not supported yet (refused): --migration, --runas, --seccomp action=kill|log.
"""

#: Exit code of every start-up failure (swtpm's EXIT_FAILURE).
EXIT_FAILURE = 1


class Fatal(Exception):
    """A start-up error: printed as ``swtpm_py: <message>``, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with swtpm's reactions: usage on stderr and exit code 1 for bad options."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG} socket: {message}\n{HELP}")
        raise SystemExit(EXIT_FAILURE)


def _build_parser() -> _Parser:
    p = _Parser(prog=f"{PROG} socket", add_help=False, allow_abbrev=True)
    add = p.add_argument
    add("-h", "--help", action="store_true")
    add("-p", "--port")
    add("-f", "--fd")
    add("-t", "--terminate", action="store_true")
    add("-d", "--daemon", action="store_true")
    add("-r", "--runas")
    add("--server")
    add("--ctrl")
    add("--tpmstate")
    add("--drive", action="append", default=[])
    add("--blobstore")
    add("--flags")
    add("--locality")
    add("--pid")
    add("--log")
    add("--key")
    add("--migration-key")
    add("--migration")
    add("--seccomp")
    add("--tpm2", action="store_true")
    add("--print-capabilities", action="store_true")
    add("--print-states", action="store_true")
    add("--print-info")
    add("extra", nargs="*")
    return p


# ---------------------------------------------------------------------------- option groups


def _id(value: object, lookup: Callable[[str], int], what: str) -> int:
    """A uid/gid given as a number or a name (-1 when absent)."""
    if value is None:
        return -1
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise Fatal(f"{what} '{text}' does not exist.") from None


def _uid(value: object) -> int:
    return _id(value, lambda n: pwd.getpwnam(n).pw_uid, "User")


def _gid(value: object) -> int:
    return _id(value, lambda n: grp.getgrnam(n).gr_gid, "Group")


def _int(opts: dict[str, object], name: str, default: int) -> int:
    """An integer option's value (``default`` when absent)."""
    value = opts.get(name, default)
    assert isinstance(value, int)
    return value


def _str(opts: dict[str, object], name: str) -> str | None:
    """A string option's value (None when absent)."""
    value = opts.get(name)
    return None if value is None else str(value)


def _check_port(port: int, what: str) -> int:
    if not 0 <= port < 0x10000:
        raise Fatal(f"{what} port outside valid range")
    return port


@dataclass
class Channel:
    """A parsed ``--server`` or ``--ctrl``: what to open, not yet opened."""

    kind: str
    port: int | None = None
    bindaddr: str = "127.0.0.1"
    ifname: str | None = None
    path: str | None = None
    fd: int | None = None
    clientfd: int | None = None
    mode: int = 0o770
    uid: int = -1
    gid: int = -1
    disconnect: bool = False
    terminate: bool = False


SERVER_OPTIONS = {"type": "str", "path": "str", "port": "int", "bindaddr": "str",
                  "ifname": "str", "fd": "int", "disconnect": "bool", "mode": "mode",
                  "uid": "str", "gid": "str"}
CTRL_OPTIONS = {"type": "str", "path": "str", "port": "int", "bindaddr": "str",
                "ifname": "str", "fd": "int", "clientfd": "int", "mode": "mode",
                "uid": "str", "gid": "str", "terminate": "bool"}


def parse_server(text: str, env: dict[str, str]) -> Channel:
    """``--server``: type defaults to tcp; a TCP port defaults to $TPM_PORT."""
    o = parse_options(text, SERVER_OPTIONS, "server")
    kind = str(o.get("type", "tcp"))
    ch = Channel(kind, bindaddr=str(o.get("bindaddr", "127.0.0.1")), ifname=_str(o, "ifname"),
                 disconnect=bool(o.get("disconnect", False)), mode=_int(o, "mode", 0o770),
                 uid=_uid(o.get("uid")), gid=_gid(o.get("gid")))
    fd = _int(o, "fd", -1)
    if kind == "unixio":
        if fd >= 0:
            ch.fd = fd
        elif "path" in o:
            ch.path = str(Path(str(o["path"])).absolute())
        else:
            raise Fatal("Missing path and file descriptor option for UnixIO socket")
    elif kind == "tcp":
        if fd >= 0:
            ch.fd = fd
        else:
            if "port" in o:
                port = _int(o, "port", -1)
            else:
                try:
                    port = int(env["TPM_PORT"])
                except (KeyError, ValueError):
                    raise Fatal("TPM_PORT is not set or contains an invalid integer "
                                "value.") from None
            if port < 0:
                raise Fatal("No valid port number provided for TCP socket.")
            ch.port = _check_port(port, "TCP socket")
    else:
        raise Fatal(f"Unsupported socket type: {kind}")
    return ch


def parse_ctrl(text: str) -> Channel:
    """``--ctrl``: the type is required; unixio takes path, fd or clientfd, tcp port or fd."""
    o = parse_options(text, CTRL_OPTIONS, "ctrl")
    if "type" not in o:
        raise Fatal("Missing type parameter for control channel")
    kind = str(o["type"])
    ch = Channel(kind, bindaddr=str(o.get("bindaddr", "127.0.0.1")), ifname=_str(o, "ifname"),
                 mode=_int(o, "mode", 0o770), uid=_uid(o.get("uid")), gid=_gid(o.get("gid")),
                 terminate=bool(o.get("terminate", False)))
    fd = _int(o, "fd", -1)
    clientfd = _int(o, "clientfd", -1)
    if kind == "unixio":
        if fd >= 0:
            ch.fd = fd
        elif clientfd >= 0:
            ch.clientfd = clientfd
        elif "path" in o:
            ch.path = str(Path(str(o["path"])).absolute())
        else:
            raise Fatal("Missing path and fd options for UnixIO control channel")
    elif kind == "tcp":
        if fd >= 0:
            ch.fd = fd
        elif _int(o, "port", -1) >= 0:
            ch.port = _check_port(_int(o, "port", -1), "TCP control channel")
        else:
            raise Fatal("Missing port and fd options for TCP control channel")
    else:
        raise Fatal(f"Unsupported control channel type: {kind}")
    return ch


FLAGS_OPTIONS = {"not-need-init": "bool", "startup-none": "bool", "startup-clear": "bool",
                 "startup-state": "bool", "startup-deactivated": "bool",
                 "disable-auto-shutdown": "bool"}


@dataclass(frozen=True)
class Flags:
    """Parsed ``--flags``."""

    need_init: bool = True
    #: "clear", "state", "deactivated" or None.
    startup: str | None = None
    auto_shutdown: bool = True


def parse_flags(text: str | None) -> Flags:
    """``--flags``: any startup-* but startup-none implies not-need-init (swtpm(8))."""
    if text is None:
        return Flags()
    o = parse_options(text, FLAGS_OPTIONS, "flags")
    startup = next((kind for kind in ("clear", "state", "deactivated")
                    if o.get(f"startup-{kind}")), None)
    need_init = not o.get("not-need-init", False) and startup is None
    return Flags(need_init, startup, not o.get("disable-auto-shutdown", False))


def parse_locality(text: str | None) -> tuple[bool, bool]:
    """``--locality``: (reject-locality-4, allow-set-locality)."""
    if text is None:
        return False, False
    o = parse_options(text, {"reject-locality-4": "bool", "allow-set-locality": "bool"},
                      "locality")
    return bool(o.get("reject-locality-4", False)), bool(o.get("allow-set-locality", False))


@dataclass
class PidTarget:
    """Where ``--pid`` writes the process id."""

    path: str | None = None
    fd: int | None = None


def parse_pid(text: str | None) -> PidTarget | None:
    """``--pid file=<path>|fd=<fd>`` (an fd must be a regular file)."""
    if text is None:
        return None
    o = parse_options(text, {"file": "str", "fd": "int"}, "pid")
    if "file" in o:
        return PidTarget(path=str(Path(str(o["file"])).absolute()))
    fd = _int(o, "fd", -1)
    if fd < 0:
        raise Fatal("The file or fd parameter is required for the pid option.")
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        raise Fatal(f"Bad filedescriptor {fd} for pid file")
    return PidTarget(fd=fd)


LOG_OPTIONS = {"file": "str", "fd": "int", "level": "uint", "prefix": "str", "truncate": "bool"}


def setup_logging(text: str | None) -> None:
    """``--log``: Python logging to a file or fd. Without it, warnings and errors go to
    stderr. Level 1 (the default with a file) logs events, 2 and above also every command
    and response in hex; ``file=-`` logs nothing."""
    root = logging.getLogger("swtpm_py")
    root.handlers.clear()
    root.propagate = False
    prefix = f"{PROG}: "
    if text is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        root.setLevel(logging.WARNING)
    else:
        o = parse_options(text, LOG_OPTIONS, "logging")
        level = _int(o, "level", 0)
        prefix = str(o.get("prefix", ""))
        if "file" in o and o["file"] == "-":
            root.addHandler(logging.NullHandler())
            root.setLevel(logging.CRITICAL + 1)
            return
        stream: TextIO
        if "file" in o:
            try:
                stream = open(str(o["file"]), "w" if o.get("truncate") else "a", buffering=1)
            except OSError as exc:
                raise Fatal(f"Could not open logfile for writing: {exc.strerror}") from None
        elif _int(o, "fd", -1) >= 0:
            fd = _int(o, "fd", -1)
            try:
                stream = os.fdopen(fd, "a", buffering=1)
            except OSError as exc:
                raise Fatal(f"Could not access logfile using fd {fd}: {exc.strerror}") from None
        else:
            stream = sys.stderr
        handler = logging.StreamHandler(stream)
        level = level or 1
        root.setLevel(logging.INFO if level == 1 else logging.DEBUG)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    root.addHandler(handler)


# ---------------------------------------------------------------------------- print-* options


def capabilities_json() -> str:
    """``--print-capabilities``: one line of JSON in swtpm's layout, listing only what
    swtpm_py has."""
    features = ["tpm-2.0", "tpm-send-command-header", "flags-opt-startup",
                "flags-opt-disable-auto-shutdown", "ctrl-opt-terminate", "cmdarg-key-fd",
                "cmdarg-pwd-fd", "cmdarg-print-states", "nvram-backend-dir"]
    rsa = algorithms.ALGORITHMS.get(ALG.RSA)
    features += [f"rsa-keysize-{bits}" for bits in (rsa.key_bits if rsa else ())]
    features += ["cmdarg-print-info", "tpmstate-opt-lock", "tpmstate-dir-backend-opt-fsync"]
    listed = ", ".join(f'"{f}"' for f in features)
    return f'{{ "type": "swtpm", "features": [ {listed} ], "version": "{__version__}" }}'


def blobstore_sizes(store: BlobStore) -> dict[BlobKind, int]:
    """Size in bytes of each TPM state blob present in ``store``."""
    present = {(b.owner, b.name): b.length for b in store.blobs() if b.present}
    sizes: dict[BlobKind, int] = {}
    for kind, name in BLOB_NAMES.items():
        length = present.get((OWNER, name))
        if length is not None:
            sizes[kind] = length
    return sizes


def states_json(path: Path | dict[BlobKind, int]) -> str:
    """``--print-states``: the blobs present (in the directory ``path``, or the given sizes),
    named as swtpm names them."""
    sizes = path if isinstance(path, dict) else sizes_in(path)
    items = [f'{{"name": "{SWTPM_STATE_NAMES[kind]}", "size": {size}}}'
             for kind, size in sorted(sizes.items())]
    body = "[ " + ", ".join(items) + " ]" if items else "[]"
    return f'{{ "type": "swtpm", "states": {body} }}'


# ---------------------------------------------------------------------------- run


@dataclass
class _Resources:
    """What must be released at exit."""

    storage: DirStorage | BlobstoreStorage | EncryptedStorage | None = None
    sockets: list[socket.socket] = field(default_factory=list)
    unlink_paths: list[str] = field(default_factory=list)
    pidfile: str | None = None

    def release(self) -> None:
        for sock in self.sockets:
            sock.close()
        for path in self.unlink_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass
        if self.storage is not None:
            self.storage.close()


def _fatal(message: str) -> int:
    """Report a start-up error on stderr (and in the --log target, if that is elsewhere)."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
    for handler in logging.getLogger("swtpm_py").handlers:
        if getattr(handler, "stream", sys.stderr) is not sys.stderr:
            log.error("%s", message)
            break
    return EXIT_FAILURE


#: Store name (label) and drive id the ``--tpmstate backend-uri=blobstore://|file://``
#: shorthand and the default image use.
SHORTHAND_STORE = "tpm"
SHORTHAND_DRIVE = "tpmstate"


@dataclass(frozen=True)
class StatePlan:
    """Where the state is kept: a directory (``dir``) or a blobstore (``store``/``drives``).
    ``shorthand`` is the ``--tpmstate`` text the blobstore came from, if any."""

    dir: TpmStateConfig | None = None
    store: BlobstoreOption | None = None
    drives: dict[str, DriveOption] = field(default_factory=dict)
    shorthand: str | None = None

    def describe(self) -> str:
        """Where the state is, for messages."""
        if self.dir is not None:
            return str(self.dir.path)
        assert self.store is not None
        drive = self.drives[self.store.drive]
        return f"blobstore {self.store.name} in {drive.file}"


def _shorthand(cfg: TpmStateConfig, text: str | None) -> StatePlan:
    """``blobstore://PATH`` / ``file://PATH`` as a ``--drive``/``--blobstore`` pair with
    ``create``: a missing or empty file is created, an all-zero one formatted, and anything
    that is not a valid store (garbage, swtpm's own file format) refused."""
    fmt = "raw" if cfg.backend == "file" else None
    drive = DriveOption(id=SHORTHAND_DRIVE, file=str(cfg.path), format=fmt)
    return StatePlan(store=BlobstoreOption(SHORTHAND_STORE, SHORTHAND_DRIVE, "create"),
                     drives={drive.id: drive}, shorthand=text)


def _state_plan(args: argparse.Namespace, env: dict[str, str]) -> StatePlan:
    """Decide where the state is kept (nothing is opened yet)."""
    if args.blobstore is not None:
        if args.tpmstate is not None:
            raise Fatal("--tpmstate and --blobstore both say where the TPM state is; give "
                        "only one of them")
        return StatePlan(store=parse_blobstore(args.blobstore), drives=parse_drives(args.drive))
    if args.drive:
        raise Fatal("--drive is given but no --blobstore uses it (add --blobstore "
                    "name=NAME,drive=ID)")
    if args.tpmstate is not None:
        cfg = parse_tpmstate(args.tpmstate)
        return StatePlan(dir=cfg) if cfg.backend == "dir" else _shorthand(cfg, args.tpmstate)
    if env.get("TPM_PATH"):
        return StatePlan(dir=TpmStateConfig(Path(env["TPM_PATH"]).absolute()))
    # Issue 3 item 7: the default is a qcow2 blobstore image in the per-user data directory.
    image = default_state_image(env)
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    drive = DriveOption(id=SHORTHAND_DRIVE, file=str(image), format="qcow2")
    plan = StatePlan(store=BlobstoreOption(SHORTHAND_STORE, SHORTHAND_DRIVE, "create"),
                     drives={drive.id: drive}, shorthand=f"backend-uri=blobstore://{image}")
    sys.stderr.write(f"{PROG}: no --tpmstate, --blobstore or TPM_PATH given: keeping the TPM "
                     f"state in the blobstore image {image}\n")
    return plan


def _open_state(plan: StatePlan) -> DirStorage | BlobstoreStorage | None:
    """Open the planned state; None after ``showsize`` printed its sentence."""
    if plan.dir is not None:
        return DirStorage(plan.dir.path, plan.dir.mode, plan.dir.lock)
    assert plan.store is not None
    try:
        store = open_blobstore(plan.store, plan.drives, registrations(), out=sys.stdout,
                               producer=f"swtpm_py {__version__}")
        if store is not None:
            store = _first_read(plan, store)
    except SetupError as exc:
        message = str(exc)
        if plan.shorthand is not None:
            drive = plan.drives[plan.store.drive]
            fmt = f",format={drive.format}" if drive.format else ""
            message += (f" (--tpmstate {plan.shorthand} stands for --drive id={drive.id},"
                        f"file={drive.file}{fmt} --blobstore name={plan.store.name},"
                        f"drive={drive.id},create)")
        raise Fatal(message) from None
    if store is None:
        return None
    return BlobstoreStorage(store)


def _encrypted(storage: DirStorage | BlobstoreStorage, key: StateKey) -> EncryptedStorage:
    """``storage`` with its blobs sealed by ``key`` (``--key``); every stored blob is opened
    once now, so that a wrong key or a tampered blob stops the start with a clear message
    instead of giving the TPM unreadable state."""
    wrapped = EncryptedStorage(storage, key)
    for kind in BlobKind:
        try:
            wrapped.load(kind)
        except SealError as exc:
            raise Fatal(f"--key: {exc}") from None
    return wrapped


def _refuse_sealed(storage: DirStorage | BlobstoreStorage) -> None:
    """Without ``--key``, sealed state cannot be read: say so instead of starting a TPM that
    can only enter failure mode."""
    for kind in BlobKind:
        data = storage.load(kind)
        if data is not None and is_sealed(data):
            raise Fatal(f"the TPM state ({kind.name.lower()} blob) is encrypted: start with "
                        f"the --key it was written with")


def _first_read(plan: StatePlan, store: BlobStore) -> BlobStore:
    """Read every TPM blob once. The store opens on a sound superblock and directory, but a
    blob without any valid copy (both slots damaged) is damage too: ``formatifbad`` formats
    the store then; otherwise it is a start-up error naming the fix, never a TPM that starts
    in failure mode or a silent reformat (SetupError)."""
    assert plan.store is not None
    try:
        for name in BLOB_NAMES.values():
            store.read(OWNER, name)
        return store
    except DamagedError as exc:
        drive = plan.drives[plan.store.drive]
        where = f"blobstore {plan.store.name} on drive {drive.id} ({drive.file})"
        if plan.store.action == "formatifbad":
            sys.stderr.write(f"{PROG}: {where}: {exc}; formatting it (formatifbad)\n")
            try:
                return BlobStore.format(store.image, registrations(), label=plan.store.name,
                                        producer=f"swtpm_py {__version__}")
            except BaseException:
                store.close()
                raise
        store.close()
        raise SetupError(f"{where}: {exc}; inspect it with `blobstore check {drive.file}`, "
                         f"or add ',formatifbad' to --blobstore to format it (losing its "
                         f"content)") from None


def _print_states(plan: StatePlan) -> str:
    """``--print-states`` for a directory or a blobstore. The image is opened read-only and
    shared (like ``qemu-img info -U``), so a running emulator's state can be listed."""
    if plan.dir is not None:
        if not plan.dir.path.is_dir():
            raise Fatal(f"TPM state directory {plan.dir.path} does not exist")
        return states_json(plan.dir.path)
    assert plan.store is not None
    try:
        drive = plan.drives[plan.store.drive]
    except KeyError:
        raise Fatal(f"--blobstore name={plan.store.name}: no --drive has "
                    f"id={plan.store.drive}") from None
    if not os.path.exists(drive.file) or os.path.getsize(drive.file) == 0:
        return states_json({})       # nothing created yet: no states (as an empty directory)
    try:
        image = open_image(drive.file, drive.format, readonly=True, force_share=True)
    except ImageError as exc:
        raise Fatal(f"--print-states: {exc}") from None
    try:
        return states_json(blobstore_sizes(BlobStore.open(image, label=plan.store.name)))
    except NotFormattedError:
        return states_json({})       # all zero: no store yet, hence no states
    except StoreError as exc:
        raise Fatal(f"--print-states: blobstore {plan.store.name} on {drive.file}: "
                    f"{exc}") from None
    finally:
        image.close()


def _open_channel(ch: Channel, what: str, res: _Resources) -> tuple[socket.socket | None,
                                                                     socket.socket | None]:
    """Open a channel: (listening socket, connected socket)."""
    if ch.clientfd is not None:
        sock = socket_from_fd(ch.clientfd, f"UnixIO client {what}")
        res.sockets.append(sock)
        return None, sock
    if ch.fd is not None:
        label = f"{'UnixIO' if ch.kind == 'unixio' else 'TCP'} {what}"
        sock = socket_from_fd(ch.fd, label)
        res.sockets.append(sock)
        if what == "socket" and ch.kind == "tcp":
            return None, sock  # swtpm: a TCP server fd is a connection (swtpm_setup)
        if not is_listening(sock):
            raise Fatal(f"Bad filedescriptor {ch.fd} for {label}: not a listening socket")
        return sock, None
    if ch.kind == "unixio":
        assert ch.path is not None
        sock = unix_listener(ch.path, ch.mode, ch.uid, ch.gid)
        res.unlink_paths.append(ch.path)
    else:
        assert ch.port is not None
        sock = tcp_listener(ch.port, ch.bindaddr, ch.ifname)
    res.sockets.append(sock)
    return sock, None


def _daemonize() -> Callable[[], None]:
    """Double fork; the original process exits 0 once the daemon reports it is ready (its
    pid file written), or 1 if the daemon dies first. Returns the daemon's "ready" call."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        status = os.read(read_end, 1)
        os._exit(0 if status == b"1" else EXIT_FAILURE)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)

    def ready() -> None:
        os.write(write_end, b"1")
        os.close(write_end)

    return ready


def _write_pid(target: PidTarget, res: _Resources) -> None:
    text = str(os.getpid()).encode()
    if target.fd is not None:
        os.write(target.fd, text)
        os.close(target.fd)
        return
    assert target.path is not None
    try:
        with open(target.path, "wb") as f:
            f.write(text)
    except OSError as exc:
        raise Fatal(f"Could not open pidfile {target.path}: {exc.strerror}") from None
    res.pidfile = target.path


def _refuse_unsupported(args: argparse.Namespace) -> None:
    if args.migration is not None:
        raise Fatal("--migration is not supported yet")
    if args.runas is not None:
        raise Fatal("--runas is not supported: start swtpm_py as the user it should run as")
    if args.seccomp is not None:
        opts = parse_options(args.seccomp, {"action": "str"}, "seccomp")
        if opts.get("action", "kill") != "none":
            raise Fatal("--seccomp: swtpm_py has no seccomp profile; only action=none can "
                        "be honoured")


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    """``swtpm_py socket`` with ``argv``; returns the exit code."""
    env = dict(os.environ) if env is None else env
    args = _build_parser().parse_args(argv)
    if args.help:
        sys.stdout.write(HELP)
        return 0
    if args.extra:
        return _fatal(f"Unknown parameter '{args.extra[0]}'")
    res = _Resources()
    try:
        return _run(args, env, res)
    except (Fatal, OptionError, StorageError, StoreError, ImageError) as exc:
        return _fatal(str(exc))
    except OSError as exc:
        return _fatal(str(exc))
    finally:
        res.release()


def _run(args: argparse.Namespace, env: dict[str, str], res: _Resources) -> int:
    setup_logging(args.log)
    _refuse_unsupported(args)
    if args.print_capabilities:
        sys.stdout.write(capabilities_json() + "\n")
        return 0
    if args.print_states:
        if args.tpmstate is None and args.blobstore is None:
            raise Fatal("Error: --tpmstate option is required for --print-states (or "
                        "--blobstore with its --drive)")
        sys.stdout.write(_print_states(_state_plan(args, env)))
        return 0
    if args.print_info is not None:
        try:
            info_flags = int(args.print_info, 0)
        except ValueError:
            raise Fatal(f"Invalid flags '{args.print_info}' for --print-info") from None
        sys.stdout.write(info_json(info_flags) + "\n")
        return 0

    # Option groups: everything is checked before anything is opened.
    if args.port is not None:
        try:
            port = int(args.port, 0)
        except ValueError:
            raise Fatal(f"Cannot parse socket port number '{args.port}'.") from None
        if not 0 <= port < 0x10000:
            raise Fatal("Port is outside valid range.")
        env["TPM_PORT"] = str(port)
    server_text = args.server
    if server_text is None and args.port is not None:
        server_text = "type=tcp,disconnect"
    server = parse_server(server_text, env) if server_text is not None else None
    data_fd = _parse_data_fd(args.fd)
    ctrl = parse_ctrl(args.ctrl) if args.ctrl is not None else None
    flags = parse_flags(args.flags)
    reject_4, allow_set = parse_locality(args.locality)
    pid = parse_pid(args.pid)
    state = _state_plan(args, env)
    state_key = parse_key(args.key, "--key") if args.key is not None else None
    migration_key = (parse_key(args.migration_key, "--migration-key")
                     if args.migration_key is not None else None)

    signals = StopSignals()
    res.storage = _open_state(state)
    if res.storage is None:      # --blobstore ...,showsize: the sentence is printed
        return 0
    if state_key is not None:
        res.storage = _encrypted(res.storage, state_key)
    else:
        _refuse_sealed(res.storage)
    try:
        data_listener, data_conn = (_open_channel(server, "socket", res) if server
                                    else (None, None))
        ctrl_listener, ctrl_conn = (_open_channel(ctrl, "control channel", res) if ctrl
                                    else (None, None))
    except TransportError as exc:
        raise Fatal(str(exc)) from None
    if data_fd is not None:
        try:
            data_conn = socket_from_fd(data_fd, "the TPM data connection")
        except TransportError as exc:
            raise Fatal(str(exc)) from None
        res.sockets.append(data_conn)

    if flags.startup == "deactivated":
        # swtpm: a TPM 2 has no deactivated startup; it says so and ends (exit code 0).
        sys.stderr.write(f"{PROG}: TPM 2 does not support startup deactivated.\n")
        return 0

    ready = _daemonize() if args.daemon else None
    if pid is not None:
        _write_pid(pid, res)
    if ready is not None:
        ready()

    startup = {"clear": SU.CLEAR, "state": SU.STATE}.get(flags.startup or "")
    device = Device(Tpm(Platform(storage=res.storage)),
                    DeviceOptions(need_init=flags.need_init, startup=startup,
                                  auto_shutdown=flags.auto_shutdown,
                                  reject_locality_4=reject_4, allow_set_locality=allow_set,
                                  state_key=state_key, migration_key=migration_key))
    config = ServerConfig(
        disconnect=bool(server and server.disconnect),
        # swtpm: -t, and an inherited data connection, end the process when it closes.
        terminate=args.terminate or data_conn is not None,
        ctrl_terminate=bool(ctrl and ctrl.terminate),
        unlink_paths=list(res.unlink_paths))
    srv = Server(device, config, data_listener=data_listener, data_conn=data_conn,
                 ctrl_listener=ctrl_listener, ctrl_conn=ctrl_conn)
    res.sockets.clear()  # the server owns and closes them now
    res.unlink_paths.clear()
    signals.attach(srv)
    device.start()
    log.info("swtpm_py %s serving (state in %s)", __version__, state.describe())
    srv.serve()
    return 0


def _parse_data_fd(text: str | None) -> int | None:
    """``-f/--fd N``: an inherited connection for TPM commands (not 0, 1 or 2)."""
    if text is None:
        return None
    try:
        fd = int(text, 10)
    except ValueError:
        raise Fatal("Cannot parse socket file descriptor.") from None
    if 0 <= fd < 3:
        raise Fatal("Error: Cannot accept file descriptors with values 0, 1, or 2")
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise Fatal(f"Cannot stat file descriptor: {exc.strerror}") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISBLK(mode) or stat.S_ISLNK(mode):
        raise Fatal("Given file descriptor type is not supported.")
    return fd
