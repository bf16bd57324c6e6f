"""Object and crypto benchmarks (issue 4): keys and the commands that use them, side by side
with the real swtpm.

```
python -m benchmarks.objects                    # every workload, ~40 s
python -m benchmarks.objects --duration 2       # longer measurements
python -m benchmarks.objects --workloads sign_ecdsa,rsa_decrypt
```

Each workload runs on one persistent data connection to a fresh emulator of each kind (started
as in ``python -m benchmarks``: ``not-need-init,startup-clear``, a throw-away state directory,
the directory backend for both). The keys a workload uses are made before the measurement, and
checked there from outside the TPM (a signature verified with ``cryptography``); every measured
response must be TPM_RC_SUCCESS, and decryptions and digests are compared with the expected
values on every operation.

* ``primary_ecc`` / ``primary_rsa``: CreatePrimary (owner, ECC P-256 / RSA-2048 storage key)
  then FlushContext, the same template every time. swtpm_py caches derived primaries (the result
  is a function of seed and template), so this is its cache hit.
* ``primary_ecc_fresh`` / ``primary_rsa_fresh``: the same with a template whose unique field
  changes on every operation: a new key is derived each time (for RSA, the prime search).
* ``create_load``: Create of an ECC P-256 signing key under an ECC storage primary, Load of the
  result, FlushContext.
* ``sign_ecdsa`` / ``sign_rsassa``: Sign of a SHA-256 digest with a loaded ECDSA P-256 /
  RSASSA-2048 key (password session).
* ``rsa_decrypt``: RSA_Decrypt (OAEP-SHA256) of a 2048-bit ciphertext made with
  ``cryptography``; the plaintext is compared.
* ``hash_sequence``: HashSequenceStart(SHA-256), 4 SequenceUpdate of 1 KiB, SequenceComplete
  (TPM_RH_NULL); the digest is compared with hashlib's.
* ``context_save_load``: ContextSave of a loaded key, ContextLoad of the blob, FlushContext of
  the new handle.

The ratio is swtpm_py ops/s divided by swtpm ops/s.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import sys
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from swtpm_py.tpm.objects_wire import parse_public

from . import sidebyside
from .sidebyside import Send, Workload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from objcmd import (NULL_SYM, SIGNING, A, authed, b2, cmd, create,  # noqa: E402
                    create_primary, ecc_template, flush, load, parse_create,
                    parse_load, rc, rsa_template, u16)

SHA256, RSASSA, ECDSA, OAEP, NULL = 0x000B, 0x0014, 0x0018, 0x0017, 0x0010
TPM_RH_NULL = 0x40000007
TPM_ST_HASHCHECK = 0x8024
CC_SIGN, CC_RSA_DECRYPT = 0x15D, 0x159
CC_HASH_SEQUENCE_START, CC_SEQUENCE_UPDATE, CC_SEQUENCE_COMPLETE = 0x186, 0x15C, 0x13E
CC_CONTEXT_SAVE, CC_CONTEXT_LOAD = 0x162, 0x161
#: A TPMT_TK_HASHCHECK that is the NULL ticket (Part 2 §10.7.6): the digest was not made by
#: the TPM, allowed for an unrestricted key.
NULL_TICKET = struct.pack(">HI", TPM_ST_HASHCHECK, TPM_RH_NULL) + b2(b"")
DIGEST = hashlib.sha256(b"benchmark").digest()
PREHASHED = Prehashed(hashes.SHA256())



def _checked(send: Send, command: bytes) -> bytes:
    response = send(command)
    if rc(response):
        raise RuntimeError(f"TPM_RC 0x{rc(response):03x}")
    return response


def _handle(response: bytes) -> int:
    return struct.unpack(">I", response[10:14])[0]


def _params(response: bytes, handle: bool = False) -> bytes:
    """The parameter area of a TPM_ST_SESSIONS response."""
    start = 14 if handle else 10
    size = struct.unpack(">I", response[start:start + 4])[0]
    return response[start + 4:start + 4 + size]


def _primary_workload(template: Callable[[int], bytes]) -> Workload:
    def workload(send: Send) -> Callable[[], None]:
        counter = itertools.count()

        def op() -> None:
            response = _checked(send, create_primary(template(next(counter))))
            _checked(send, flush(_handle(response)))

        return op

    return workload


def _ecc_storage(n: int | None = None) -> bytes:
    # A unique x of 8 octets is part of the template only: it changes the template's Name.
    return ecc_template(x=b"" if n is None else n.to_bytes(8, "big"))


def _rsa_storage(n: int | None = None) -> bytes:
    return rsa_template(unique=b"" if n is None else n.to_bytes(8, "big"))


ECDSA_KEY = ecc_template(SIGNING | A.NO_DA, sym=NULL_SYM, scheme=u16(ECDSA, SHA256))
RSASSA_KEY = rsa_template(SIGNING | A.NO_DA, sym=NULL_SYM, scheme=u16(RSASSA, SHA256))
OAEP_KEY = rsa_template(A.DECRYPT | A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
                        | A.USER_WITH_AUTH | A.NO_DA, sym=NULL_SYM, scheme=u16(OAEP, SHA256))


def _loaded_key(send: Send, template: bytes) -> tuple[int, int, object]:
    """(storage primary, loaded child, child's parsed public area)."""
    srk = _handle(_checked(send, create_primary(ecc_template())))
    made = parse_create(_checked(send, create(srk, template)))
    handle, _ = parse_load(_checked(send, load(srk, made["private"], made["public"])))
    return srk, handle, parse_public(made["public"])


def create_load_workload(send: Send) -> Callable[[], None]:
    """Create + Load + FlushContext of an ECC P-256 signing key."""
    srk = _handle(_checked(send, create_primary(ecc_template())))

    def op() -> None:
        made = parse_create(_checked(send, create(srk, ECDSA_KEY)))
        handle, _ = parse_load(_checked(send, load(srk, made["private"], made["public"])))
        _checked(send, flush(handle))

    return op


def _repeat(send: Send, command: bytes) -> Callable[[], None]:
    def op() -> None:
        _checked(send, command)

    return op


def _sign(key: int) -> bytes:
    return authed(CC_SIGN, struct.pack(">I", key), b2(DIGEST) + u16(NULL) + NULL_TICKET)


def sign_ecdsa_workload(send: Send) -> Callable[[], None]:
    """Sign(SHA-256 digest) with an ECDSA P-256 key; the first signature is verified."""
    _, key, public = _loaded_key(send, ECDSA_KEY)
    sig = _params(_checked(send, _sign(key)))
    # TPMT_SIGNATURE: sigAlg, hash, TPM2B r, TPM2B s.
    r_len = struct.unpack(">H", sig[4:6])[0]
    r = int.from_bytes(sig[6:6 + r_len], "big")
    s = int.from_bytes(sig[8 + r_len:], "big")
    ec.EllipticCurvePublicNumbers(int.from_bytes(public.unique.x, "big"),
                                  int.from_bytes(public.unique.y, "big"),
                                  ec.SECP256R1()).public_key().verify(
        encode_dss_signature(r, s), DIGEST, ec.ECDSA(PREHASHED))
    return _repeat(send, _sign(key))


def sign_rsassa_workload(send: Send) -> Callable[[], None]:
    """Sign(SHA-256 digest) with an RSASSA-2048 key; the first signature is verified."""
    _, key, public = _loaded_key(send, RSASSA_KEY)
    sig = _params(_checked(send, _sign(key)))
    rsa.RSAPublicNumbers(65537, int.from_bytes(public.unique, "big")).public_key().verify(
        sig[6:], DIGEST, padding.PKCS1v15(), PREHASHED)
    return _repeat(send, _sign(key))


def rsa_decrypt_workload(send: Send) -> Callable[[], None]:
    """RSA_Decrypt (OAEP-SHA256, empty label) of a ciphertext made outside the TPM."""
    _, key, public = _loaded_key(send, OAEP_KEY)
    message = b"a 32-octet secret for decryption"
    pub = rsa.RSAPublicNumbers(65537, int.from_bytes(public.unique, "big")).public_key()
    ciphertext = pub.encrypt(message, padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                   hashes.SHA256(), None))
    command = authed(CC_RSA_DECRYPT, struct.pack(">I", key),
                     b2(ciphertext) + u16(OAEP, SHA256) + b2(b""))

    def op() -> None:
        if _params(_checked(send, command))[2:] != message:
            raise RuntimeError("wrong plaintext")

    return op


def hash_sequence_workload(send: Send) -> Callable[[], None]:
    """HashSequenceStart, 4 SequenceUpdate of 1 KiB, SequenceComplete."""
    chunk = bytes(range(256)) * 4
    expected = hashlib.sha256(chunk * 4).digest()
    start = cmd(CC_HASH_SEQUENCE_START, b2(b"") + u16(SHA256))

    def op() -> None:
        seq = struct.pack(">I", _handle(_checked(send, start)))
        for _ in range(4):
            _checked(send, authed(CC_SEQUENCE_UPDATE, seq, b2(chunk)))
        done = _checked(send, authed(CC_SEQUENCE_COMPLETE, seq,
                                     b2(b"") + struct.pack(">I", TPM_RH_NULL)))
        if _params(done)[2:34] != expected:
            raise RuntimeError("wrong digest")

    return op


def context_save_load_workload(send: Send) -> Callable[[], None]:
    """ContextSave of a loaded key, ContextLoad, FlushContext of the loaded copy."""
    _, key, _ = _loaded_key(send, ECDSA_KEY)
    save = cmd(CC_CONTEXT_SAVE, struct.pack(">I", key))

    def op() -> None:
        context = _checked(send, save)[10:]
        _checked(send, flush(_handle(_checked(send, cmd(CC_CONTEXT_LOAD, context)))))

    return op


WORKLOADS: dict[str, tuple[str, Workload]] = {
    "primary_ecc": ("CreatePrimary ECC P-256 + flush, same template",
                    _primary_workload(lambda n: _ecc_storage())),
    "primary_ecc_fresh": ("CreatePrimary ECC P-256 + flush, new template each time",
                          _primary_workload(_ecc_storage)),
    "primary_rsa": ("CreatePrimary RSA-2048 + flush, same template (cache hit)",
                    _primary_workload(lambda n: _rsa_storage())),
    "primary_rsa_fresh": ("CreatePrimary RSA-2048 + flush, new template each time",
                          _primary_workload(_rsa_storage)),
    "create_load": ("Create + Load + flush, ECC P-256 signing key", create_load_workload),
    "sign_ecdsa": ("Sign, ECDSA P-256 / SHA-256", sign_ecdsa_workload),
    "sign_rsassa": ("Sign, RSASSA-2048 / SHA-256", sign_rsassa_workload),
    "rsa_decrypt": ("RSA_Decrypt, OAEP-SHA256 2048", rsa_decrypt_workload),
    "hash_sequence": ("HashSequenceStart + 4 x SequenceUpdate(1 KiB) + SequenceComplete",
                      hash_sequence_workload),
    "context_save_load": ("ContextSave + ContextLoad + flush of a loaded key",
                          context_save_load_workload),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.objects``."""
    return sidebyside.main("python -m benchmarks.objects", __doc__, WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
