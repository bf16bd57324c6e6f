"""Session benchmarks (issue 5): authorization sessions, side by side with the real swtpm.

```
python -m benchmarks.sessions                  # every workload, ~15 s
python -m benchmarks.sessions --duration 2     # longer measurements
```

Each workload runs on one persistent data connection to each emulator (started as in
``python -m benchmarks``: ``not-need-init,startup-clear``, a throw-away state directory):

* ``hmac``: PCR_Extend(16) authorized by an HMAC session (continueSession): the command HMAC,
  nonce rolling and the response HMAC, which the client verifies.
* ``salted_cfb``: Hash(1 KiB) in a session salted with an ECC P-256 storage key (ECDH + KDFe,
  done once), with AES-128-CFB parameter encryption in both directions (decrypt and encrypt:
  the data goes in encrypted, the digest comes back encrypted) — what tpm2-tss does by default
  for sensitive parameters.
* ``policy``: a policy session evaluated from scratch: StartAuthSession(policy), PolicyPCR
  (sha256: 0-7), PolicyCommandCode, PolicyGetDigest, FlushContext — five commands per
  operation.

The client is the project's own session client (tests/sessclient.py), written from the spec
and checked against the real swtpm by the tests; the same client code runs for both emulators,
so its cost is in both columns. The ratio is swtpm_py ops/s divided by swtpm ops/s.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path
from typing import Callable

from . import sidebyside
from .sidebyside import Send, Workload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from objcmd import create_primary, ecc_template, parse_create_primary  # noqa: E402
from sessclient import (ALG_AES, CONTINUE, DECRYPT, ENCRYPT, Use, b2, call,  # noqa: E402
                        ecc_salt, rc_of, start_session, u16, u32)

SHA256 = 0x000B
TPM_RH_NULL = 0x40000007
CC_PCR_EXTEND, CC_HASH, CC_FLUSH = 0x182, 0x17D, 0x165
CC_POLICY_PCR, CC_POLICY_COMMAND_CODE, CC_POLICY_GET_DIGEST = 0x17F, 0x16C, 0x189
CC_CREATE = 0x153
POLICY_SESSION = 1
PCR = 16
#: TPML_PCR_SELECTION of sha256 PCRs 0-7.
PCRS_0_7 = u32(1) + u16(SHA256) + b"\x03\xff\x00\x00"



def _checked(send: Send, command: bytes) -> bytes:
    response = send(command)
    if rc_of(response):
        raise RuntimeError(f"TPM_RC 0x{rc_of(response):03x}")
    return response


def hmac_workload(send: Send) -> Callable[[], None]:
    """PCR_Extend(16) with an HMAC session."""
    session = start_session(send)
    digests = u32(1) + u16(SHA256) + hashlib.sha256(b"event").digest()

    def op() -> None:
        r = call(send, CC_PCR_EXTEND, [(PCR, u32(PCR))], digests, [Use(session)])
        if r.rc:
            raise RuntimeError(f"TPM_RC 0x{r.rc:03x}")

    return op


def salted_cfb_workload(send: Send) -> Callable[[], None]:
    """Hash(1 KiB) in a salted AES-128-CFB session encrypting both ways."""
    primary = parse_create_primary(_checked(send, create_primary(ecc_template())))
    unique = primary["public"].unique
    encrypted_salt, salt = ecc_salt(SHA256, unique.x, unique.y)
    session = start_session(send, tpm_key=primary["handle"], encrypted_salt=encrypted_salt,
                            salt=salt, sym_alg=ALG_AES, sym_bits=128)
    data = bytes(range(256)) * 4
    params = b2(data) + u16(SHA256) + u32(TPM_RH_NULL)
    expected = hashlib.sha256(data).digest()

    def op() -> None:
        use = Use(session, CONTINUE | DECRYPT | ENCRYPT, auth=None)
        r = call(send, CC_HASH, [], params, [use])
        if r.rc or r.parameters[2:34] != expected:
            raise RuntimeError(f"TPM_RC 0x{r.rc:03x} or a wrong digest")

    return op


def policy_workload(send: Send) -> Callable[[], None]:
    """A policy session from start to flush."""
    def op() -> None:
        session = start_session(send, session_type=POLICY_SESSION)
        handle = u32(session.handle)
        _checked(send, _cmd(CC_POLICY_PCR, handle + b2(b"") + PCRS_0_7))
        _checked(send, _cmd(CC_POLICY_COMMAND_CODE, handle + u32(CC_CREATE)))
        _checked(send, _cmd(CC_POLICY_GET_DIGEST, handle))
        _checked(send, _cmd(CC_FLUSH, handle))

    return op


def _cmd(code: int, body: bytes) -> bytes:
    return struct.pack(">HII", 0x8001, 10 + len(body), code) + body


WORKLOADS: dict[str, tuple[str, Workload]] = {
    "hmac": ("PCR_Extend with an HMAC session", hmac_workload),
    "salted_cfb": ("Hash(1 KiB), salted session, AES-CFB both ways", salted_cfb_workload),
    "policy": ("policy session: start, PolicyPCR, PolicyCommandCode, digest, flush",
               policy_workload),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.sessions``."""
    return sidebyside.main("python -m benchmarks.sessions", __doc__, WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
