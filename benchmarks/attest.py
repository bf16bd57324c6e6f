"""Attestation benchmarks (issue 8): TPM2_Quote and TPM2_Certify, side by side with the real
swtpm.

```
python -m benchmarks.attest                    # every workload, ~10 s
python -m benchmarks.attest --duration 2       # longer measurements
```

Each workload runs on one persistent data connection to each emulator (started as in
``python -m benchmarks``: ``not-need-init,startup-clear``, a throw-away state directory),
with a restricted signing key (an AK) created once in the endorsement hierarchy:

* ``quote_rsa``: Quote(sha256: PCRs 0-7, a fresh 32-octet nonce) with an RSA-2048
  RSASSA-SHA256 AK.
* ``quote_ecc``: the same with an ECC P-256 ECDSA-SHA256 AK.
* ``certify``: Certify of the RSA AK by itself (a fresh nonce).

Every response is checked by the client: TPM_RC_SUCCESS, the attestation's magic, type and
extraData (the nonce), and its signature verified with ``cryptography`` against the AK's public
key — the same client work in both columns. The ratio is swtpm_py ops/s divided by swtpm ops/s.
"""

from __future__ import annotations

import os
import struct
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from . import sidebyside
from .sidebyside import Send, Workload

SHA256, RSA, ECC, RSASSA, ECDSA, NULL = 0x000B, 0x0001, 0x0023, 0x0014, 0x0018, 0x0010
TPM_RH_ENDORSEMENT, TPM_RS_PW = 0x4000000B, 0x40000009
CC_CREATE_PRIMARY, CC_QUOTE, CC_CERTIFY = 0x131, 0x158, 0x148
ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE = 0x8017, 0x8018
MAGIC = 0xFF544347
#: sign | restricted | fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA
AK_ATTRIBUTES = 0x00050472
#: TPML_PCR_SELECTION of sha256 PCRs 0-7.
PCRS_0_7 = struct.pack(">IHB", 1, SHA256, 3) + b"\xff\x00\x00"



def _b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _authed(code: int, handles: list[int], params: bytes) -> bytes:
    """A command with one empty password session per handle."""
    area = struct.pack(">IHBH", TPM_RS_PW, 0, 1, 0) * len(handles)
    body = (b"".join(struct.pack(">I", h) for h in handles) + struct.pack(">I", len(area))
            + area + params)
    return struct.pack(">HII", 0x8002, 10 + len(body), code) + body


def _checked(send: Send, command: bytes) -> bytes:
    response = send(command)
    rc = struct.unpack_from(">I", response, 6)[0]
    if rc:
        raise RuntimeError(f"TPM_RC 0x{rc:03x}")
    return response


class _Reader:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.off = data, offset

    def take(self, n: int) -> bytes:
        out = self.data[self.off:self.off + n]
        self.off += n
        return out

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def b2(self) -> bytes:
        return self.take(self.int(2))


def _ak(send: Send, ecc: bool) -> tuple[int, object]:
    """CreatePrimary of an AK in the endorsement hierarchy: (handle, cryptography key)."""
    if ecc:
        params = struct.pack(">HHHHH", NULL, ECDSA, SHA256, 3, NULL) + _b2(b"") + _b2(b"")
    else:
        params = struct.pack(">HHHHI", NULL, RSASSA, SHA256, 2048, 0) + _b2(b"")
    template = struct.pack(">HHI", ECC if ecc else RSA, SHA256, AK_ATTRIBUTES) + _b2(b"") \
        + params
    sensitive = _b2(_b2(b"") + _b2(b""))
    response = _checked(send, _authed(CC_CREATE_PRIMARY, [TPM_RH_ENDORSEMENT],
                                      sensitive + _b2(template) + _b2(b"")
                                      + struct.pack(">I", 0)))
    handle = struct.unpack_from(">I", response, 10)[0]
    r = _Reader(response, 18)             # handle, parameterSize
    public = _Reader(r.b2())
    public.take(8)                        # type, nameAlg, objectAttributes
    public.b2()                           # authPolicy
    if ecc:
        public.take(10)
        x, y = public.b2(), public.b2()
        key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                            ec.SECP256R1()).public_key()
    else:
        public.take(12)
        key = rsa.RSAPublicNumbers(65537, int.from_bytes(public.b2(), "big")).public_key()
    return handle, key


def _verify(response: bytes, key: object, st: int, nonce: bytes) -> None:
    """Check the attestation and its signature (RSASSA or ECDSA, SHA-256)."""
    r = _Reader(response, 14)             # header, parameterSize
    attest = r.b2()
    a = _Reader(attest)
    if a.int(4) != MAGIC or a.int(2) != st:
        raise RuntimeError("not the expected attestation")
    a.b2()                                # qualifiedSigner
    if a.b2() != nonce:
        raise RuntimeError("extraData is not the nonce")
    sig_alg, _ = r.int(2), r.int(2)
    if sig_alg == RSASSA:
        key.verify(r.b2(), attest, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig_r, sig_s = int.from_bytes(r.b2(), "big"), int.from_bytes(r.b2(), "big")
        key.verify(utils.encode_dss_signature(sig_r, sig_s), attest, ec.ECDSA(hashes.SHA256()))


def _quote_workload(ecc: bool) -> Workload:
    def workload(send: Send) -> Callable[[], None]:
        handle, key = _ak(send, ecc)

        def op() -> None:
            nonce = os.urandom(32)
            response = _checked(send, _authed(CC_QUOTE, [handle],
                                              _b2(nonce) + struct.pack(">H", NULL) + PCRS_0_7))
            _verify(response, key, ST_ATTEST_QUOTE, nonce)

        return op

    return workload


def certify_workload(send: Send) -> Callable[[], None]:
    """Certify of the RSA AK by itself."""
    handle, key = _ak(send, False)

    def op() -> None:
        nonce = os.urandom(32)
        response = _checked(send, _authed(CC_CERTIFY, [handle, handle],
                                          _b2(nonce) + struct.pack(">H", NULL)))
        _verify(response, key, ST_ATTEST_CERTIFY, nonce)

    return op


WORKLOADS: dict[str, tuple[str, Workload]] = {
    "quote_rsa": ("Quote sha256:0-7, RSA-2048 RSASSA AK", _quote_workload(False)),
    "quote_ecc": ("Quote sha256:0-7, ECC P-256 ECDSA AK", _quote_workload(True)),
    "certify": ("Certify of the RSA AK by itself", certify_workload),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.attest``."""
    return sidebyside.main("python -m benchmarks.attest", __doc__, WORKLOADS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
