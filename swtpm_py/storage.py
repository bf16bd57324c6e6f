"""Where the TPM's three state blobs live: a directory (``--tpmstate dir=D``).

:class:`DirStorage` implements the core's :class:`~swtpm_py.tpm.core.StateStorage` protocol.
Rules it keeps:

* **Durable, atomic writes.** A blob is written to a temporary file in the same directory,
  flushed and fsync'ed, renamed over the old file, and then the directory is fsync'ed, so
  after a crash or power loss the file holds either the old or the new blob, never a mixture
  and never nothing (DESIGN.md: an acknowledged write is never lost).
* **One emulator per state.** The directory's ``.lock`` file is locked exclusively when the
  storage is opened, with the same ``fcntl`` record lock swtpm takes on the same file, so a
  second swtpm_py *or* a real swtpm on the same directory is refused at once. The lock is an
  open-file-description lock (``F_OFD_SETLK``) where Linux has it: it conflicts with swtpm's
  POSIX lock, but unlike a POSIX lock it also conflicts within one process and survives the
  fork of ``--daemon``.
* **Never misread foreign state.** swtpm's own blobs (``tpm2-00.permall`` ...) are in libtpms'
  format, which swtpm_py cannot read: a directory holding them and none of ours is refused
  rather than silently given a fresh TPM.

``--tpmstate`` parsing (:func:`parse_tpmstate`) follows swtpm's option syntax
(``dir=D[,mode=0600][,lock][,fsync]`` or ``backend-uri=dir://D``); the ``file://`` backend
(Proxmox) belongs to the blobstore and is refused with a clear message for now.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .tpm.state import BlobKind

#: File name of each blob inside the state directory. Deliberately not swtpm's names: the
#: content is swtpm_py's blob format (swtpm_py.tpm.state), not libtpms'.
BLOB_FILES: dict[BlobKind, str] = {
    BlobKind.PERMANENT: "swtpm_py-permanent.blob",
    BlobKind.VOLATILE: "swtpm_py-volatile.blob",
    BlobKind.SAVESTATE: "swtpm_py-savestate.blob",
}

#: The names swtpm's ``--print-states`` and GET/SET_STATEBLOB give the three blobs.
SWTPM_STATE_NAMES: dict[BlobKind, str] = {
    BlobKind.PERMANENT: "permall",
    BlobKind.VOLATILE: "volatilestate",
    BlobKind.SAVESTATE: "savestate",
}

#: The lock file swtpm locks in a state directory (same name, so the two exclude each other).
LOCK_FILE = ".lock"
#: swtpm's TPM 2 permanent-state file: its presence marks a directory written by libtpms.
LIBTPMS_PERMANENT = "tpm2-00.permall"
#: swtpm's default mode for state files (``--tpmstate mode=`` overrides it).
DEFAULT_MODE = 0o640


class StorageError(Exception):
    """The state directory cannot be used (missing, foreign, unwritable or locked)."""


class StateLocked(StorageError):
    """Another process holds the state directory's lock."""


def _flock_struct(lock_type: int) -> bytes:
    """A ``struct flock`` covering the whole file (Linux layout: short, short, off_t, off_t,
    pid_t, padded to the alignment of off_t)."""
    return struct.pack("@hhqqi4x", lock_type, os.SEEK_SET, 0, 0, 0)


def _lock_exclusive(fd: int) -> None:
    """Take a non-blocking exclusive record lock on all of ``fd``; OSError(EAGAIN/EACCES)
    when another holder exists."""
    cmd = getattr(fcntl, "F_OFD_SETLK", None)
    if cmd is None:  # not Linux: a classic POSIX lock (not inherited by a forked daemon)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    fcntl.fcntl(fd, cmd, _flock_struct(fcntl.F_WRLCK))


def _lock_holder(fd: int) -> int | None:
    """The pid of a process holding a conflicting POSIX lock (swtpm's kind), if known; an
    open-file-description lock (swtpm_py's kind) has no owner pid."""
    try:
        raw = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_struct(fcntl.F_WRLCK))
    except OSError:
        return None
    lock_type, _whence, _start, _len, pid = struct.unpack("@hhqqi4x", raw)
    if lock_type == fcntl.F_UNLCK or pid <= 0:
        return None
    return pid


def _fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or unlink inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirStorage:
    """The three blobs as files in one directory, locked for exclusive use while open.

    ``mode`` is applied to every blob file (swtpm's ``--tpmstate mode=``; default 0640).
    ``lock=False`` skips the lock (swtpm's ``lock=false``): only for callers that arbitrate
    access themselves.
    """

    def __init__(self, path: str | os.PathLike[str], mode: int = DEFAULT_MODE,
                 lock: bool = True) -> None:
        self.path = Path(path).absolute()
        self.mode = mode
        self._lock_fd: int | None = None
        if not self.path.is_dir():
            raise StorageError(f"TPM state directory {self.path} does not exist "
                               "(create it first)")
        if lock:
            self._lock_fd = self._take_lock()
        if self.sizes() == {} and (self.path / LIBTPMS_PERMANENT).exists():
            self.close()
            raise StorageError(
                f"{self.path} holds the state of the real swtpm ({LIBTPMS_PERMANENT}, libtpms "
                "format), which swtpm_py cannot read; refusing to start a different TPM on "
                "it. Use another directory for swtpm_py.")

    def _take_lock(self) -> int:
        lock_path = self.path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file {lock_path}: {exc.strerror}") from None
        try:
            _lock_exclusive(fd)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise StorageError(f"cannot lock {lock_path}: {exc.strerror}") from None
            holder = _lock_holder(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another emulator"
            raise StateLocked(f"TPM state directory {self.path} is locked by {who} "
                              f"(lock on {lock_path}); two emulators must never share one "
                              "state") from None
        return fd

    @property
    def locked(self) -> bool:
        """Whether this storage holds the directory's lock."""
        return self._lock_fd is not None

    def file_of(self, kind: BlobKind) -> Path:
        """The file that holds the blob of ``kind``."""
        return self.path / BLOB_FILES[kind]

    def load(self, kind: BlobKind) -> bytes | None:
        """See StateStorage: the stored blob of ``kind`` or None."""
        try:
            return self.file_of(kind).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, kind: BlobKind, data: bytes) -> None:
        """See StateStorage: durably replace the blob (temp file, fsync, rename, fsync dir)."""
        target = self.file_of(kind)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.path)
        try:
            try:
                os.fchmod(fd, self.mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(self.path)

    def delete(self, kind: BlobKind) -> None:
        """See StateStorage: remove the blob if present (the unlink is made durable)."""
        try:
            self.file_of(kind).unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.path)

    def sizes(self) -> dict[BlobKind, int]:
        """Size in bytes of each blob that exists."""
        return sizes_in(self.path)

    def close(self) -> None:
        """Release the lock (the files stay)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "DirStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sizes_in(path: str | os.PathLike[str]) -> dict[BlobKind, int]:
    """Size of each swtpm_py blob in the directory ``path`` (no lock taken: reading sizes
    cannot disturb a running emulator)."""
    out: dict[BlobKind, int] = {}
    for kind, name in BLOB_FILES.items():
        try:
            out[kind] = os.stat(Path(path) / name).st_size
        except FileNotFoundError:
            continue
    return out


# ---------------------------------------------------------------------------- option parsing


class OptionError(ValueError):
    """A malformed ``--option key=value,...`` string (message as swtpm words it)."""


def parse_options(text: str, spec: dict[str, str], what: str) -> dict[str, object]:
    """Parse swtpm's ``name[=value],...`` option syntax.

    ``spec`` maps each allowed name to its type: ``str``, ``int``, ``uint``, ``bool`` (a bare
    name is true; ``=true``/``=1`` true, any other value false) or ``mode`` (octal, at most
    0777). An unknown name is an error (``Unknown option 'x'``), as in swtpm.
    """
    values: dict[str, object] = {}
    for token in text.split(",") if text else []:
        name, eq, raw = token.partition("=")
        kind = spec.get(name)
        if kind is None or (eq and not raw):
            raise OptionError(f"Error parsing {what} options: Unknown option '{token}'")
        if not eq:
            if kind != "bool":
                raise OptionError(f"Error parsing {what} options: Unknown option '{token}'")
            values.setdefault(name, True)
            continue
        if kind == "str":
            value: object = raw
        elif kind == "bool":
            value = raw.lower() in ("true", "1")
        elif kind == "mode":
            try:
                value = int(raw, 8)
            except ValueError:
                raise OptionError(f"Error parsing {what} options: invalid mode type "
                                  f"'{raw}'") from None
            if not 0 <= value <= 0o777:
                raise OptionError(f"Error parsing {what} options: mode {raw} is invalid")
        else:
            try:
                value = int(raw, 10)
            except ValueError:
                raise OptionError(f"Error parsing {what} options: invalid number "
                                  f"'{raw}'") from None
            if kind == "uint" and value < 0:
                raise OptionError(f"Error parsing {what} options: number {raw} outside "
                                  "valid range")
        # swtpm returns the first occurrence of a repeated name.
        values.setdefault(name, value)
    return values


TPMSTATE_OPTIONS = {"dir": "str", "mode": "mode", "backend-uri": "str", "lock": "bool",
                    "fsync": "bool"}


#: ``TpmStateConfig.backend`` values: a state directory, a blobstore image whose format is
#: probed (``blobstore://``), and a raw volume holding a blobstore (``file://``).
STATE_BACKENDS = ("dir", "blobstore", "file")


@dataclass(frozen=True)
class TpmStateConfig:
    """Parsed ``--tpmstate``: where the state is (a directory, or an image for the
    ``blobstore`` and ``file`` backends), the file mode and whether to lock (``mode`` and
    ``lock`` apply to directories; images always take QEMU's image locks)."""

    path: Path
    mode: int = DEFAULT_MODE
    lock: bool = True
    backend: str = "dir"


def parse_tpmstate(text: str) -> TpmStateConfig:
    """Parse ``--tpmstate dir=D[,mode=0600][,lock][,fsync]`` or ``backend-uri=URI``.

    URI is ``dir://D`` (a state directory, as ``dir=D``), ``blobstore://PATH`` (a blobstore
    in the raw or qcow2 image PATH, format probed; created when missing -- qcow2 when the
    name ends in .qcow2 -- and formatted when empty or all zero) or ``file://PATH`` (swtpm's
    single-file backend, which Proxmox VE uses with a raw volume: here a blobstore in the raw
    file or block device PATH, created/formatted when missing, empty or all zero; a volume
    holding anything else -- swtpm's own format included -- is refused, never reformatted).
    ``fsync`` is accepted for compatibility with newer swtpm; swtpm_py always fsyncs.
    """
    opts = parse_options(text, TPMSTATE_OPTIONS, "tpmstate")
    mode = opts.get("mode", DEFAULT_MODE)
    assert isinstance(mode, int)
    lock = bool(opts.get("lock", True))
    if "dir" in opts:
        return TpmStateConfig(Path(str(opts["dir"])).absolute(), mode, lock)
    if "backend-uri" in opts:
        uri = str(opts["backend-uri"])
        if uri.startswith("dir://"):
            return TpmStateConfig(Path(uri[len("dir://"):]).absolute(), mode, lock)
        for backend in ("blobstore", "file"):
            prefix = f"{backend}://"
            if uri.startswith(prefix):
                if not uri[len(prefix):]:
                    raise OptionError(f"Error parsing tpmstate options: {uri} names no file")
                return TpmStateConfig(Path(uri[len(prefix):]).absolute(), mode, lock, backend)
        raise OptionError(f"Unsupported backend URI '{uri}' (swtpm_py supports dir://, "
                          "blobstore:// and file://)")
    raise OptionError("The dir or backend-uri parameters is required for the tpmstate option.")


def default_state_image(env: dict[str, str] | None = None) -> Path:
    """The per-user blobstore image used when neither --tpmstate, --blobstore nor TPM_PATH is
    given (issue 3 item 7): ``${XDG_DATA_HOME:-~/.local/share}/swtpm_py/tpm.qcow2``."""
    return default_state_dir(env).parent / "tpm.qcow2"


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    """The per-user state directory of earlier versions (used when neither --tpmstate nor
    TPM_PATH was given): ``${XDG_DATA_HOME:-~/.local/share}/swtpm_py/default-state``. The
    default is now :func:`default_state_image`."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_DATA_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return Path(base) / "swtpm_py" / "default-state"
