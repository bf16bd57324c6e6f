"""State encryption at rest (``--key``) and in migration (``--migration-key``), swtpm's options.

* The envelope: round trips, and every way opening must fail (another key, a changed byte, a
  blob sealed for another purpose, a newer format) fails with a message saying which.
* The option parsing of every form swtpm documents (key file hex/binary, fd, passphrase file
  and fd with both KDFs, remove=), and its errors.
* End to end: an emulator started with ``--key`` on a state directory and on a qcow2 blobstore
  keeps nothing readable on disk, comes back with the same key, refuses to start without it
  or with another one; libvirt's argv (``--key pwdfd=N,mode=aes-256-cbc --migration-key
  pwdfd=M,...``) works; GET_STATEBLOB with a migration key hands out sealed blobs flagged
  ENCRYPTED that a second emulator with the same migration key accepts, and one without it
  refuses with swtpm's TPM_KEYNOTFOUND.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from emulator import Emulator, recv_exact
from tpmcmd import cmd, pw_session, rc, with_auth

from swtpm_py.control import Cmd, Res
from swtpm_py.statecrypt import (ENVELOPE_HEADER, HEADER_SIZE, MAGIC, EncryptedStorage,
                                 SealError, StateKey, is_sealed, parse_key)
from swtpm_py.storage import OptionError
from swtpm_py.tpm import MemoryStorage
from swtpm_py.tpm.constants import CC, PT, RH
from swtpm_py.tpm.state import BlobKind

KEY_128 = bytes(range(16))
KEY_256 = bytes(range(32))
OWNER_AUTH_SET = 0x1
STATE_FLAG_DECRYPTED, STATE_FLAG_ENCRYPTED = 1, 2


# ---------------------------------------------------------------------------- envelope


def test_seal_and_open() -> None:
    """A sealed blob opens with its key and purpose, hides its content, and every seal is
    new (random nonce)."""
    key = StateKey(32, secret=KEY_256)
    data = b'{"owner_auth":"73656372657421"}' * 10
    sealed = key.seal("permanent", data)
    assert is_sealed(sealed) and data not in sealed and b"owner_auth" not in sealed
    assert key.open("permanent", sealed) == data
    assert key.seal("permanent", data) != sealed
    assert StateKey(32, secret=KEY_256).open("permanent", sealed) == data


def test_open_failures_say_why() -> None:
    key = StateKey(32, secret=KEY_256)
    sealed = key.seal("permanent", b"state" * 20)
    with pytest.raises(SealError, match="another key"):
        StateKey(32, secret=bytes(32)).open("permanent", sealed)
    with pytest.raises(SealError, match="128-bit key"):
        StateKey(32, secret=KEY_256).open("permanent", StateKey(16, secret=KEY_128).seal(
            "permanent", b"x"))
    for at in (HEADER_SIZE - 1, HEADER_SIZE, len(sealed) - 1):  # nonce, ciphertext, tag
        damaged = bytearray(sealed)
        damaged[at] ^= 0x01
        with pytest.raises(SealError, match="tampered"):
            key.open("permanent", bytes(damaged))
    with pytest.raises(SealError, match="tampered"):
        key.open("volatile", sealed)           # a permanent blob is not a volatile one
    newer = bytearray(sealed)
    newer[len(MAGIC):len(MAGIC) + 2] = (2).to_bytes(2, "big")
    with pytest.raises(SealError, match="upgrade swtpm_py"):
        key.open("permanent", bytes(newer))
    with pytest.raises(SealError, match="truncated"):
        key.open("permanent", sealed[:HEADER_SIZE])


def test_passphrase_keys() -> None:
    """PBKDF2: the salt is in the envelope, one per state (adopted from the first blob
    opened), so another process with the same passphrase opens it; SHA-512: no salt."""
    a = StateKey(32, kdf=2, secret=b"correct horse")
    sealed = a.seal("permanent", b"data")
    header = ENVELOPE_HEADER.parse(sealed)
    assert header.kdf == 2 and header.iterations >= 100_000 and header.salt != bytes(16)
    b = StateKey(32, kdf=2, secret=b"correct horse")
    assert b.open("permanent", sealed) == b"data"
    assert ENVELOPE_HEADER.parse(b.seal("volatile", b"v")).salt == header.salt
    with pytest.raises(SealError, match="another key"):
        StateKey(32, kdf=2, secret=b"wrong horse").open("permanent", sealed)
    s = StateKey(16, kdf=1, secret=b"pw")
    assert ENVELOPE_HEADER.parse(s.seal("savestate", b"z")).salt == bytes(16)
    assert StateKey(16, kdf=1, secret=b"pw").open("savestate", s.seal("savestate", b"z")) == b"z"


def test_encrypted_storage_seals_and_refuses_plain_blobs() -> None:
    """Every blob is stored sealed; a blob in the clear is refused with --key (swtpm 0.7.1
    refuses to start on unencrypted state with --key too: measured), since accepting it would
    let anyone who can write the image substitute the state."""
    inner = MemoryStorage()
    storage = EncryptedStorage(inner, StateKey(16, secret=KEY_128))
    assert storage.load(BlobKind.PERMANENT) is None
    storage.store(BlobKind.PERMANENT, b"new")
    assert is_sealed(inner.blobs[BlobKind.PERMANENT])
    assert storage.load(BlobKind.PERMANENT) == b"new"
    inner.store(BlobKind.VOLATILE, b"plain")
    with pytest.raises(SealError, match="not encrypted"):
        storage.load(BlobKind.VOLATILE)
    storage.delete(BlobKind.PERMANENT)
    assert storage.load(BlobKind.PERMANENT) is None


# ---------------------------------------------------------------------------- options


def test_parse_key_forms(tmp_path: Path) -> None:
    hexfile = tmp_path / "key.hex"
    hexfile.write_text(KEY_256.hex() + "\n")
    assert parse_key(f"file={hexfile},mode=aes-256-cbc").secret == KEY_256
    binfile = tmp_path / "key.bin"
    binfile.write_bytes(KEY_128)
    assert parse_key(f"file={binfile},format=binary").secret == KEY_128   # aes-cbc: 128
    r, w = os.pipe()
    os.write(w, KEY_128.hex().encode())
    os.close(w)
    assert parse_key(f"fd={r}").secret == KEY_128
    pwd = tmp_path / "pwd"
    pwd.write_bytes(b"passphrase\n")
    k = parse_key(f"pwdfile={pwd},mode=aes-256-cbc,remove=true")
    assert (k.size, k.kdf, k.secret) == (32, 2, b"passphrase") and not pwd.exists()
    r, w = os.pipe()
    os.write(w, b"passphrase")
    os.close(w)
    assert parse_key(f"pwdfd={r},kdf=sha512").kdf == 1


@pytest.mark.parametrize("text, message", [
    ("file=MISSING", "cannot read"),
    ("file=HEX,mode=aes-256-cbc", "needs a 32-byte key"),
    ("file=HEX,mode=aes-xts", "unknown mode"),
    ("file=HEX,format=base64", "unknown format"),
    ("file=HEX,kdf=sha512", "kdf= applies to passphrases"),
    ("pwdfile=HEX,format=hex", "format= applies to key files"),
    ("pwdfile=HEX,kdf=md5", "unknown kdf"),
    ("file=HEX,pwdfile=HEX", "exactly one"),
    ("mode=aes-cbc", "exactly one"),
    ("file=HEX,colour=blue", "Unknown option"),
])
def test_parse_key_errors(tmp_path: Path, text: str, message: str) -> None:
    hexfile = tmp_path / "key.hex"
    hexfile.write_text(KEY_128.hex())
    text = text.replace("HEX", str(hexfile)).replace("MISSING", str(tmp_path / "missing"))
    with pytest.raises(OptionError, match=message):
        parse_key(text)


# ---------------------------------------------------------------------------- end to end


def set_owner_auth(emu: Emulator, auth: bytes) -> None:
    """TPM2_HierarchyChangeAuth(owner): persistent state that must survive restarts."""
    body = struct.pack(">H", len(auth)) + auth
    assert rc(emu.command(with_auth(CC.HierarchyChangeAuth, struct.pack(">I", RH.OWNER), body,
                                    pw_session()))) == 0


def owner_auth_set(emu: Emulator) -> bool:
    """TPMA_PERMANENT.ownerAuthSet through GetCapability(TPM_PROPERTIES)."""
    resp = emu.command(cmd(CC.GetCapability, struct.pack(">III", 6, PT.PERMANENT, 1)))
    assert rc(resp) == 0
    return bool(struct.unpack_from(">I", resp, 23)[0] & OWNER_AUTH_SET)


def get_stateblob(emu: Emulator, kind: int,
                  request: int = STATE_FLAG_DECRYPTED) -> tuple[int, bytes]:
    """GET_STATEBLOB of ``kind`` (DECRYPTED, as QEMU asks): (state_flags, data), all of it."""
    with socket.create_connection(("127.0.0.1", emu.ctrl_port), timeout=10) as s:
        s.sendall(struct.pack(">IIII", Cmd.GET_STATEBLOB, request, kind, 0))
        result, flags, _total, length = struct.unpack(">IIII", recv_exact(s, 16))
        assert result == Res.SUCCESS
        return flags, recv_exact(s, length)


def start_fails(args: list[str], tmp_path: Path) -> str:
    """Run ``swtpm_py socket`` expecting it to refuse to start; its stderr."""
    emu = Emulator("swtpm_py", tmp_path / "unused", extra_args=args, tpmstate=False)
    emu.port = 20000
    r = subprocess.run(emu.argv(), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert r.returncode == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("backend", ["dir", "qcow2"])
def test_state_at_rest_is_sealed(backend: str, tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY_256.hex())
    other = tmp_path / "other"
    other.write_text(bytes(32).hex())
    if backend == "dir":
        where = ["--tpmstate", f"dir={tmp_path / 'state'}"]
        (tmp_path / "state").mkdir()
    else:
        where = ["--tpmstate", f"backend-uri=blobstore://{tmp_path / 'tpm.qcow2'}"]
    key = ["--key", f"file={keyfile},mode=aes-256-cbc"]
    with Emulator("swtpm_py", tmp_path / "state", extra_args=where + key,
                  tpmstate=False) as emu:
        set_owner_auth(emu, b"secret owner auth")
    files = ([tmp_path / "tpm.qcow2"] if backend == "qcow2"
             else list((tmp_path / "state").glob("*.blob")))
    disk = b"".join(f.read_bytes() for f in files)
    assert MAGIC in disk
    assert b"owner_auth" not in disk and b"secret owner auth".hex().encode() not in disk
    if backend == "qcow2":
        assert subprocess.run(["qemu-img", "check", str(files[0])],
                              capture_output=True).returncode == 0
    with Emulator("swtpm_py", tmp_path / "state", extra_args=where + key,
                  tpmstate=False) as emu:
        assert owner_auth_set(emu)
    assert "encrypted with another key" in start_fails(
        where + ["--key", f"file={other},mode=aes-256-cbc"], tmp_path)
    assert "needs a 16-byte key" in start_fails(
        where + ["--key", f"file={keyfile},mode=aes-cbc"], tmp_path)
    assert "encrypted" in start_fails(where, tmp_path)


def test_libvirt_passphrase_fds_and_migration(tmp_path: Path) -> None:
    """libvirt's argv for an encrypted vTPM (passphrases on inherited fds), then a migration
    by hand as QEMU does it (GET_STATEBLOB with DECRYPTED, SET_STATEBLOB with the flags
    received): the blobs travel sealed with the migration key (state_flags 0, as swtpm), a
    destination with the same migration passphrase takes them (the owner auth came along),
    one without a migration key or with another refuses them (TPM_BAD_PARAMETER), and an
    ENCRYPTED flag without a state key is TPM_KEYNOTFOUND."""
    def passphrase_fd(name: str, text: bytes) -> int:
        path = tmp_path / name
        path.write_bytes(text)
        return os.open(path, os.O_RDONLY)

    state_fd = passphrase_fd("state-pw", b"state passphrase")
    mig_fd = passphrase_fd("mig-pw", b"migration passphrase")
    args = ["--key", f"pwdfd={state_fd},mode=aes-256-cbc",
            "--migration-key", f"pwdfd={mig_fd},mode=aes-256-cbc"]
    blobs = {}
    with Emulator("swtpm_py", tmp_path / "src", extra_args=args,
                  pass_fds=(state_fd, mig_fd)) as src:
        set_owner_auth(src, b"migrated")
        for kind in (BlobKind.PERMANENT, BlobKind.VOLATILE):
            flags, blobs[kind] = get_stateblob(src, kind)
            assert flags == 0 and is_sealed(blobs[kind])

    def load_into(dst: Emulator, flags: int = 0) -> list[int]:
        results = []
        assert dst.ctrl(Cmd.STOP, b"", 4) == bytes(4)
        for kind, data in blobs.items():
            msg = struct.pack(">III", flags, kind, len(data)) + data
            results.append(struct.unpack(">I", dst.ctrl(Cmd.SET_STATEBLOB, msg, 4))[0])
        return results

    mig2 = passphrase_fd("mig-pw-2", b"migration passphrase")
    with Emulator("swtpm_py", tmp_path / "dst", pass_fds=(mig2,),
                  extra_args=["--migration-key", f"pwdfd={mig2},mode=aes-256-cbc"]) as dst:
        assert set(load_into(dst)) == {Res.SUCCESS}
        assert dst.ctrl(Cmd.INIT, struct.pack(">I", 1), 4) == bytes(4)
        assert owner_auth_set(dst)
    with Emulator("swtpm_py", tmp_path / "none") as dst:
        assert set(load_into(dst)) == {Res.BAD_PARAMETER}
        assert set(load_into(dst, STATE_FLAG_ENCRYPTED)) == {0x0D}     # TPM_KEYNOTFOUND
    wrong = passphrase_fd("wrong-pw", b"another passphrase")
    with Emulator("swtpm_py", tmp_path / "wrong", pass_fds=(wrong,),
                  extra_args=["--migration-key", f"pwdfd={wrong},mode=aes-256-cbc"]) as dst:
        assert set(load_into(dst)) == {Res.BAD_PARAMETER}


@pytest.mark.parametrize("keys", ["key", "migration", "both"])
def test_stateblob_flags_match_swtpm(keys: str, tmp_path: Path) -> None:
    """GET_STATEBLOB's state_flags for requests with and without DECRYPTED, with a state
    key, a migration key or both, are swtpm 0.7.1's; the data is never the plain blob the
    same emulator hands out without keys (longer by the encryption's overhead)."""
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY_128.hex())
    args = {"key": ["--key", f"file={keyfile}"],
            "migration": ["--migration-key", f"file={keyfile}"],
            "both": ["--key", f"file={keyfile}", "--migration-key", f"file={keyfile}"]}[keys]
    results = {}
    for kind in ("swtpm_py", "swtpm"):
        with Emulator(kind, tmp_path / f"{kind}-plain") as plain:
            _, clear = get_stateblob(plain, BlobKind.PERMANENT, 0)
        with Emulator(kind, tmp_path / kind, extra_args=args) as emu:
            row = []
            for request in (0, STATE_FLAG_DECRYPTED):
                flags, data = get_stateblob(emu, BlobKind.PERMANENT, request)
                encrypted = not (keys == "key" and request == STATE_FLAG_DECRYPTED)
                assert (len(data) > len(clear)) == encrypted, (kind, request)
                row.append(flags)
            results[kind] = row
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == {"key": [2, 0], "migration": [0, 0], "both": [2, 0]}[keys]


def test_encrypted_flag_without_a_key_is_refused_as_swtpm(tmp_path: Path) -> None:
    """SET_STATEBLOB flagged ENCRYPTED without a state key: the emulator's own permanent blob
    is TPM_KEYNOTFOUND, junk TPM_BAD_PARAMETER, on both emulators."""
    results = {}
    for kind in ("swtpm_py", "swtpm"):
        with Emulator(kind, tmp_path / kind) as emu:
            _, own = get_stateblob(emu, BlobKind.PERMANENT)
            assert emu.ctrl(Cmd.STOP, b"", 4) == bytes(4)
            codes = []
            for data in (own, b"junk" * 50):
                msg = struct.pack(">III", STATE_FLAG_ENCRYPTED, BlobKind.PERMANENT,
                                  len(data)) + data
                codes.append(struct.unpack(">I", emu.ctrl(Cmd.SET_STATEBLOB, msg, 4))[0])
            results[kind] = codes
    assert results["swtpm_py"] == results["swtpm"] == [0x0D, Res.BAD_PARAMETER]
