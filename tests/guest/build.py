"""The Linux guest of tests/test_qemu_linux.py and tests/test_qemu_nv.py: a Debian 12 kernel
and a busybox initramfs.

Both come from Debian's own packages, fetched with ``apt-get download`` the first time and
cached (``$SWTPM_PY_GUEST_DIR``, else ``~/.cache/swtpm_py/guest``): the kernel of the
``linux-image-amd64`` metapackage's current dependency, and ``busybox-static``. Debian's kernel
has the TPM drivers built in (CONFIG_TCG_TPM, CONFIG_TCG_TIS, CONFIG_TCG_CRB,
CONFIG_HW_RANDOM_TPM are ``y``; :func:`kernel` checks its config), so the initramfs needs no
modules: only busybox, ``tests/guest/init`` (or ``tests/guest/init-steps``, which sends the
commands in steps the test starts) and the TPM commands the test wants sent, one file each
under ``/cmds``. The initramfs is a gzipped newc cpio archive written here in Python.

Run ``python tests/guest/build.py`` to fetch the packages ahead of the tests.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT = HERE / "init"
#: The /init of tests/test_qemu_nv.py: commands in steps the test starts (see the script).
INIT_STEPS = HERE / "init-steps"
#: Kernel options the guest needs built in (no modules are loaded).
KERNEL_CONFIG = ("CONFIG_TCG_TPM", "CONFIG_TCG_TIS", "CONFIG_TCG_CRB", "CONFIG_HW_RANDOM_TPM",
                 "CONFIG_DEVTMPFS", "CONFIG_SERIAL_8250", "CONFIG_RD_GZIP")


def cache_dir() -> Path:
    """Where the kernel and busybox are kept between runs."""
    env = os.environ.get("SWTPM_PY_GUEST_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "swtpm_py" / "guest"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _apt(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def _download(package: str, into: Path) -> Path:
    """``apt-get download PACKAGE`` into ``into``; after an ``apt-get update`` if the package
    lists are missing or stale (a superseded security update is gone from the mirror)."""
    for attempt in (1, 2):
        try:
            _apt("apt-get", "download", package, cwd=into)
            break
        except RuntimeError:
            if attempt == 2:
                raise
            _apt("apt-get", "update", "-qq")
    debs = sorted(into.glob(f"{package}_*.deb"))
    assert debs, f"apt-get download {package} left no .deb"
    return debs[-1]


def _kernel_package() -> str:
    """The versioned kernel package the metapackage currently depends on."""
    for attempt in (1, 2):
        out = _apt("apt-cache", "depends", "linux-image-amd64")
        found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)", out)
        if found:
            return found[0]
        if attempt == 1:
            _apt("apt-get", "update", "-qq")
    raise RuntimeError("apt-cache knows no linux-image-amd64 dependency")


def _extract(deb: Path, member_glob: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        _apt("dpkg-deb", "-x", str(deb), tmp)
        found = sorted(Path(tmp).glob(member_glob))
        assert found, f"{deb.name} has no {member_glob}"
        os.replace(found[-1], dest)
    return dest


def kernel() -> Path:
    """The guest kernel (vmlinuz), fetched once; its config must have :data:`KERNEL_CONFIG`."""
    base = cache_dir()
    vmlinuz, config = base / "vmlinuz", base / "config"
    if not (vmlinuz.exists() and config.exists()):
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            deb = _download(_kernel_package(), Path(tmp))
            with tempfile.TemporaryDirectory(dir=base) as x:
                _apt("dpkg-deb", "-x", str(deb), x)
                os.replace(next(Path(x).glob("boot/config-*")), config)
                os.replace(next(Path(x).glob("boot/vmlinuz-*")), vmlinuz)
    options = dict(re.findall(r"^(CONFIG_\w+)=(\S+)$", config.read_text(), re.M))
    missing = [o for o in KERNEL_CONFIG if options.get(o) != "y"]
    assert not missing, f"the guest kernel lacks built-in {missing}"
    return vmlinuz


def busybox() -> Path:
    """Debian's static busybox, fetched once."""
    base = cache_dir()
    path = base / "busybox"
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            _extract(_download("busybox-static", Path(tmp)), "bin/busybox", path)
    return path


class Cpio:
    """A newc ("070701") cpio archive, the format the kernel unpacks an initramfs from."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
               ) -> None:
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self._ino += 1
        self._out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out += name.encode() + b"\0"
        self._out += b"\0" * (-len(self._out) % 4)
        self._out += data
        self._out += b"\0" * (-len(self._out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer."""
        self._entry("TRAILER!!!", 0)
        return bytes(self._out)


def initramfs(path: Path, commands: dict[str, bytes], init: Path = INIT) -> Path:
    """Write the gzipped initramfs to ``path``: busybox, /init (``init``: :data:`INIT`, or
    another script such as :data:`INIT_STEPS`), and ``commands`` (name -> raw TPM command)
    under /cmds, sent by /init in the order of their names."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "cmds"):
        cpio.directory(d)
    # The kernel opens /dev/console for /init's stdin/stdout before devtmpfs is mounted.
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox().read_bytes(), 0o755)
    cpio.file("init", init.read_bytes(), 0o755)
    for name, raw in sorted(commands.items()):
        assert re.fullmatch(r"[\w.-]+", name), name
        cpio.file(f"cmds/{name}", raw)
    path.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return path


if __name__ == "__main__":
    print(kernel())
    print(busybox())
