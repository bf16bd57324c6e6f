"""Encryption of the TPM state at rest (``--key``) and in migration (``--migration-key``).

swtpm's options, with swtpm's syntax, so that libvirt's encrypted vTPMs (``--key pwdfd=N,
mode=aes-256-cbc --migration-key pwdfd=M,mode=aes-256-cbc``) start unchanged::

    --key file=PATH|fd=N[,format=hex|binary][,mode=aes-cbc|aes-256-cbc][,remove[=true|false]]
    --key pwdfile=PATH|pwdfd=N[,mode=aes-cbc|aes-256-cbc][,remove[=true|false]][,kdf=sha512|pbkdf2]

``mode`` chooses the key size (aes-cbc: 128 bits, aes-256-cbc: 256 bits), as in swtpm. The
cipher is not CBC, though: every blob is sealed with AES-GCM, so that a changed byte is an
authentication failure rather than garbage fed to the TPM ("authenticated encryption at rest",
DESIGN.md). A key file holds the key in hex (default) or binary; a passphrase becomes a key
with PBKDF2-HMAC-SHA512 (default; the salt is random per state and stored in every envelope)
or, with ``kdf=sha512``, the leading bytes of its SHA-512 digest.

The sealed form of a blob (:data:`ENVELOPE_HEADER`, version 1) is self-describing: magic,
format version, cipher, key size, KDF with its iterations and salt, a key identifier (so a
wrong key is reported as such, not as damage), the nonce, then ciphertext and tag. The
whole header and the purpose of the blob (e.g. ``permanent``) are authenticated data, so a
sealed permanent blob cannot be passed off as the volatile one. Unknown versions, ciphers
or KDFs are refused: a reader never guesses.

What is not protected: a whole older envelope put back in place of the current one (a
rollback) still opens; nothing short of a monotonic counter outside the image could tell.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import construct as c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .storage import OptionError, parse_options
from .tpm.state import BlobKind

MAGIC = b"swtpmpyE"
#: Bumped for any change a version-1 reader could not follow.
ENVELOPE_VERSION = 1
CIPHER_AES_GCM = 1
#: How the key was obtained: given as bytes, SHA-512 of a passphrase, PBKDF2 of a passphrase.
KDF_NONE, KDF_SHA512, KDF_PBKDF2 = 0, 1, 2
#: PBKDF2-HMAC-SHA512 iterations for new envelopes (about 0.2 s once per start).
PBKDF2_ITERATIONS = 200_000
NONCE_SIZE = 12
SALT_SIZE = 16
TAG_SIZE = 16

ENVELOPE_HEADER = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int16ub,
    "cipher" / c.Int16ub,
    "key_bits" / c.Int16ub,
    "kdf" / c.Int8ub,
    "reserved" / c.Const(b"\x00"),
    "iterations" / c.Int32ub,
    "salt" / c.Bytes(SALT_SIZE),
    "key_id" / c.Bytes(8),
    "nonce" / c.Bytes(NONCE_SIZE),
)
HEADER_SIZE = ENVELOPE_HEADER.sizeof()

#: ``mode=`` values and the key size each means (swtpm's names).
MODES = {"aes-cbc": 16, "aes-128-cbc": 16, "aes-256-cbc": 32}


class SealError(Exception):
    """A sealed blob cannot be opened: no key, another key, damage or an unknown format.
    The message says which and what to do."""


@dataclass
class StateKey:
    """A key for sealing state blobs: either fixed bytes or a passphrase (then one key per
    salt, derived once and cached)."""

    size: int
    kdf: int = KDF_NONE
    secret: bytes = b""
    _derived: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    #: The salt new envelopes use (that of the first envelope opened, else a random one), so
    #: that one derivation serves the whole state.
    _salt: bytes = b""

    def key_for(self, salt: bytes, iterations: int) -> bytes:
        """The AES key for an envelope with ``salt``/``iterations`` (PBKDF2 only)."""
        if self.kdf == KDF_NONE:
            return self.secret
        if self.kdf == KDF_SHA512:
            return hashlib.sha512(self.secret).digest()[:self.size]
        cache = salt + iterations.to_bytes(4, "big")
        if cache not in self._derived:
            self._derived[cache] = hashlib.pbkdf2_hmac("sha512", self.secret, salt, iterations,
                                                       self.size)
        return self._derived[cache]

    def seal(self, purpose: str, data: bytes) -> bytes:
        """``data`` sealed in a version-1 envelope bound to ``purpose``."""
        salt = iterations = None
        if self.kdf == KDF_PBKDF2:
            self._salt = self._salt or os.urandom(SALT_SIZE)
            salt, iterations = self._salt, PBKDF2_ITERATIONS
        key = self.key_for(salt or b"", iterations or 0)
        header = ENVELOPE_HEADER.build(dict(
            version=ENVELOPE_VERSION, cipher=CIPHER_AES_GCM, key_bits=8 * self.size,
            kdf=self.kdf, iterations=iterations or 0, salt=salt or bytes(SALT_SIZE),
            key_id=key_id(key), nonce=os.urandom(NONCE_SIZE)))
        nonce = header[-NONCE_SIZE:]
        return header + AESGCM(key).encrypt(nonce, data, header + purpose.encode())

    def open(self, purpose: str, sealed: bytes) -> bytes:
        """The plaintext of an envelope made by :meth:`seal` for ``purpose``."""
        h = parse_header(sealed)
        if h.key_bits != 8 * self.size or h.kdf != self.kdf:
            raise SealError(f"the {purpose} state was sealed with a {h.key_bits}-bit key "
                            f"({_KDF_NAMES.get(h.kdf, h.kdf)}); the key given is "
                            f"{8 * self.size}-bit ({_KDF_NAMES[self.kdf]}): check --key's mode "
                            f"and kind")
        key = self.key_for(h.salt, h.iterations)
        if not hmac.compare_digest(key_id(key), h.key_id):
            raise SealError(f"the {purpose} state is encrypted with another key")
        try:
            plain = AESGCM(key).decrypt(h.nonce, sealed[HEADER_SIZE:],
                                        sealed[:HEADER_SIZE] + purpose.encode())
        except InvalidTag:
            raise SealError(f"the encrypted {purpose} state is damaged or was tampered with "
                            f"(authentication failed)") from None
        if self.kdf == KDF_PBKDF2 and not self._salt:
            self._salt = h.salt
        return plain


_KDF_NAMES = {KDF_NONE: "key", KDF_SHA512: "passphrase, kdf=sha512",
              KDF_PBKDF2: "passphrase, kdf=pbkdf2"}


def key_id(key: bytes) -> bytes:
    """A short public identifier of ``key`` (it reveals nothing usable about the key)."""
    return hmac.new(key, b"swtpm_py state key id", hashlib.sha256).digest()[:8]


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` is an envelope (of any version)."""
    return data[:len(MAGIC)] == MAGIC


def parse_header(sealed: bytes) -> Any:
    """The envelope header of ``sealed``; SealError for a format this reader must not guess."""
    if len(sealed) < HEADER_SIZE + TAG_SIZE or not is_sealed(sealed):
        raise SealError("not an encrypted swtpm_py state blob (truncated or no envelope)")
    try:
        h = ENVELOPE_HEADER.parse(sealed)
    except c.ConstructError:
        raise SealError("the encrypted state's header is malformed") from None
    if h.version > ENVELOPE_VERSION:
        raise SealError(f"the state is encrypted in envelope version {h.version}; this "
                        f"swtpm_py reads up to {ENVELOPE_VERSION}: upgrade swtpm_py")
    if h.cipher != CIPHER_AES_GCM or h.kdf not in _KDF_NAMES or h.key_bits not in (128, 256):
        raise SealError(f"the state is encrypted with cipher {h.cipher}/kdf {h.kdf}/"
                        f"{h.key_bits} bits, which this swtpm_py does not know")
    return h


# ---------------------------------------------------------------------------- --key parsing

_KEY_OPTIONS = {"file": "str", "fd": "int", "pwdfile": "str", "pwdfd": "int", "format": "str",
                "mode": "str", "remove": "bool", "kdf": "str"}


def parse_key(text: str, what: str = "--key") -> StateKey:
    """Read the key ``--key``/``--migration-key`` names, as swtpm does: the file or file
    descriptor is read now (and a file removed with ``remove``)."""
    opts = parse_options(text, _KEY_OPTIONS, what)
    mode = str(opts.get("mode", "aes-cbc"))
    if mode not in MODES:
        raise OptionError(f"{what}: unknown mode '{mode}' (use aes-cbc or aes-256-cbc)")
    size = MODES[mode]
    sources = [k for k in ("file", "fd", "pwdfile", "pwdfd") if k in opts]
    if len(sources) != 1:
        raise OptionError(f"{what}: give exactly one of file=, fd=, pwdfile=, pwdfd=")
    source = sources[0]
    passphrase = source.startswith("pwd")
    if passphrase and "format" in opts:
        raise OptionError(f"{what}: format= applies to key files, not to passphrases")
    if not passphrase and "kdf" in opts:
        raise OptionError(f"{what}: kdf= applies to passphrases, not to key files")
    raw = _read_secret(opts, source, what)
    if passphrase:
        kdf_name = str(opts.get("kdf", "pbkdf2"))
        kdf = {"pbkdf2": KDF_PBKDF2, "sha512": KDF_SHA512}.get(kdf_name)
        if kdf is None:
            raise OptionError(f"{what}: unknown kdf '{kdf_name}' (use pbkdf2 or sha512)")
        if not raw:
            raise OptionError(f"{what}: the passphrase is empty")
        return StateKey(size, kdf, raw)
    fmt = str(opts.get("format", "hex"))
    if fmt == "hex":
        try:
            key = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise OptionError(f"{what}: the key file does not hold a hex string") from None
    elif fmt == "binary":
        key = raw
    else:
        raise OptionError(f"{what}: unknown format '{fmt}' (use hex or binary)")
    if len(key) != size:
        raise OptionError(f"{what}: mode={mode} needs a {size}-byte key, the key has "
                          f"{len(key)} bytes")
    return StateKey(size, KDF_NONE, key)


def _read_secret(opts: dict[str, object], source: str, what: str) -> bytes:
    if source in ("fd", "pwdfd"):
        fd = int(str(opts[source]))
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                # A regular file holds nothing but the key: read all of it, wherever an
                # earlier reader of the same open file left the offset (a pipe is read on).
                os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as exc:
            raise OptionError(f"{what}: cannot read file descriptor {fd}: {exc.strerror}") \
                from None
    path = Path(str(opts[source]))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OptionError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if opts.get("remove"):
        try:
            path.unlink()
        except OSError as exc:
            raise OptionError(f"{what}: cannot remove {path}: {exc.strerror}") from None
    return data.rstrip(b"\n") if source == "pwdfile" else data


# ---------------------------------------------------------------------------- storage


#: The purpose each blob kind is sealed for (authenticated with it).
PURPOSES = {BlobKind.PERMANENT: "permanent", BlobKind.VOLATILE: "volatile",
            BlobKind.SAVESTATE: "savestate"}


class EncryptedStorage:
    """A StateStorage that seals every blob it stores with ``key`` and opens the blobs it
    loads. A blob in the clear is refused (SealError), as swtpm refuses unencrypted state when
    it has a ``--key``: otherwise anyone who can write the image could replace the sealed
    state with state of their choosing."""

    def __init__(self, inner: Any, key: StateKey) -> None:
        self.inner = inner
        self.key = key

    def load(self, kind: BlobKind) -> bytes | None:
        """The stored blob, opened."""
        data = self.inner.load(kind)
        if data is None:
            return None
        if not is_sealed(data):
            raise SealError(f"the {PURPOSES[kind]} state is not encrypted, but a key was "
                            f"given (start without --key, or from a fresh state)")
        return self.key.open(PURPOSES[kind], data)

    def store(self, kind: BlobKind, data: bytes) -> None:
        """Seal and durably store ``data``."""
        self.inner.store(kind, self.key.seal(PURPOSES[kind], data))

    def delete(self, kind: BlobKind) -> None:
        """Remove the blob."""
        self.inner.delete(kind)

    def __getattr__(self, name: str) -> Any:
        # Everything else (close, the blobstore handle, paths) is the inner storage's.
        return getattr(self.inner, name)
