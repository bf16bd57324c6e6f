"""A small, independent TPM 2.0 session client for tests: StartAuthSession, command HMACs,
parameter encryption and response verification written from the specification (Part 1 §19,
§21) with hashlib, hmac and ``cryptography`` only — no code of swtpm_py's. The same client
talks to the real swtpm, so a test that passes against both shows that swtpm_py computes what
the reference computes.

``send`` is anything that takes a command and returns the response: ``Tpm.execute`` or
``Emulator.command``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

try:  # cryptography >= 43 keeps CFB in its "decrepit" module
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[assignment]

Send = Callable[[bytes], bytes]

TPM_RS_PW = 0x40000009
TPM_RH_NULL = 0x40000007
ST_NO_SESSIONS, ST_SESSIONS = 0x8001, 0x8002
CC_START_AUTH_SESSION = 0x176
ALG_NULL, ALG_XOR, ALG_AES, ALG_CFB = 0x0010, 0x000A, 0x0006, 0x0043
HASH_NAMES = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
CRYPTO_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
                 "sha512": hashes.SHA512}
CONTINUE, AUDIT_EXCLUSIVE, AUDIT_RESET = 0x01, 0x02, 0x04
DECRYPT, ENCRYPT, AUDIT = 0x20, 0x40, 0x80


def kdfa(hash_alg: int, key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    """KDFa through cryptography's SP 800-108 counter-mode KBKDF with HMAC (Part 1 §11.4.10.2:
    [i]32 || label || 00 || contextU || contextV || [bits]32), for whole octets."""
    assert bits % 8 == 0
    name = HASH_NAMES[hash_alg]
    if not key:
        # cryptography refuses an empty key; HMAC pads it with zeros to the block size anyway.
        key = bytes(hashlib.new(name).block_size)
    kdf = KBKDFHMAC(algorithm=CRYPTO_HASHES[name](), mode=Mode.CounterMode, length=bits // 8,
                    rlen=4, llen=4, location=CounterLocation.BeforeFixed, label=label,
                    context=u + v, fixed=None)
    return kdf.derive(key)


def digest(hash_alg: int, *parts: bytes) -> bytes:
    """H(parts...)."""
    return hashlib.new(HASH_NAMES[hash_alg], b"".join(parts)).digest()


def mac(hash_alg: int, key: bytes, *parts: bytes) -> bytes:
    """HMAC_H(key, parts...)."""
    return hmac.new(key, b"".join(parts), HASH_NAMES[hash_alg]).digest()


def xor_crypt(hash_alg: int, key: bytes, newer: bytes, older: bytes, data: bytes) -> bytes:
    """Part 1 §21.2 XOR parameter encryption (its own inverse)."""
    if not data:
        return b""
    mask = kdfa(hash_alg, key, b"XOR", newer, older, 8 * len(data))
    return bytes(a ^ b for a, b in zip(data, mask))


def cfb_crypt(hash_alg: int, key: bytes, key_bits: int, newer: bytes, older: bytes, data: bytes,
              encrypt: bool) -> bytes:
    """Part 1 §21.3 AES-CFB parameter encryption: key and IV from KDFa(..., "CFB", ...)."""
    material = kdfa(hash_alg, key, b"CFB", newer, older, key_bits + 128)
    cipher = Cipher(algorithms.AES(material[:key_bits // 8]), CFB(material[key_bits // 8:]))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def b2(data: bytes) -> bytes:
    """A TPM2B."""
    return u16(len(data)) + data


def rc_of(response: bytes) -> int:
    """The response code."""
    return struct.unpack_from(">I", response, 6)[0]


@dataclass
class Session:
    """The caller's view of an HMAC or policy session."""

    handle: int
    auth_hash: int
    nonce_tpm: bytes
    session_key: bytes
    sym_alg: int = ALG_NULL
    sym_bits: int = 0


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3, SP800-56A concatenation KDF): H(counter || Z || label || 0 ||
    PartyUInfo || PartyVInfo) for counter = 1, 2, ... until ``bits`` are produced."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += digest(hash_alg, u32(counter), z, label + b"\x00", party_u, party_v)
        counter += 1
    return out[:(bits + 7) // 8]


def ecc_salt(name_alg: int, tpm_x: bytes, tpm_y: bytes) -> tuple[bytes, bytes]:
    """A salt for a session salted with a NIST P-256 tpmKey (Part 1 §C.6.4 "ECC secret sharing
    for sessions"): (encryptedSalt as TPMS_ECC_POINT contents, salt). The salt is KDFe of the
    ECDH shared x-coordinate with label "SECRET", as long as a ``name_alg`` digest."""
    from cryptography.hazmat.primitives.asymmetric import ec

    curve = ec.SECP256R1()
    peer = ec.EllipticCurvePublicNumbers(int.from_bytes(tpm_x, "big"),
                                         int.from_bytes(tpm_y, "big"), curve).public_key()
    ephemeral = ec.generate_private_key(curve)
    z = ephemeral.exchange(ec.ECDH(), peer)
    numbers = ephemeral.public_key().public_numbers()
    qx, qy = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    bits = 8 * hashlib.new(HASH_NAMES[name_alg]).digest_size
    return b2(qx) + b2(qy), kdfe(name_alg, z, b"SECRET", qx, tpm_x, bits)


def start_session(send: Send, *, session_type: int = 0, auth_hash: int = 0x000B,
                  bind: int = TPM_RH_NULL, bind_auth: bytes = b"", sym_alg: int = ALG_NULL,
                  sym_bits: int = 0, nonce: bytes | None = None, tpm_key: int = TPM_RH_NULL,
                  encrypted_salt: bytes = b"", salt: bytes = b"") -> Session:
    """TPM2_StartAuthSession, salted when ``tpm_key`` is given (with ``encrypted_salt`` and
    the ``salt`` it carries, see :func:`ecc_salt`); the session key computed here (Part 1
    §19.6.8)."""
    nonce = nonce if nonce is not None else os.urandom(hashlib.new(HASH_NAMES[auth_hash]).digest_size)
    if sym_alg == ALG_NULL:
        sym = u16(ALG_NULL)
    elif sym_alg == ALG_XOR:
        sym = u16(ALG_XOR) + u16(sym_bits)
    else:
        sym = u16(sym_alg) + u16(sym_bits) + u16(ALG_CFB)
    body = u32(tpm_key) + u32(bind) + b2(nonce) + b2(encrypted_salt) + bytes([session_type]) \
        + sym + u16(auth_hash)
    resp = send(struct.pack(">HII", ST_NO_SESSIONS, 10 + len(body), CC_START_AUTH_SESSION) + body)
    if rc_of(resp):
        raise TpmFailure(rc_of(resp))
    handle = struct.unpack_from(">I", resp, 10)[0]
    size = struct.unpack_from(">H", resp, 14)[0]
    nonce_tpm = resp[16:16 + size]
    key = b""
    if bind != TPM_RH_NULL or tpm_key != TPM_RH_NULL:
        bits = 8 * hashlib.new(HASH_NAMES[auth_hash]).digest_size
        secret = (bind_auth.rstrip(b"\x00") if bind != TPM_RH_NULL else b"") + salt
        key = kdfa(auth_hash, secret, b"ATH", nonce_tpm, nonce, bits)
    return Session(handle, auth_hash, nonce_tpm, key, sym_alg, sym_bits)


class TpmFailure(Exception):
    """A command failed; ``rc`` is its response code."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"TPM_RC 0x{rc:03x}")
        self.rc = rc


@dataclass
class Use:
    """One session in one command: the session (None for TPM_RS_PW), its attributes, the
    authValue of the entity it authorizes (None for an audit/encrypt/decrypt-only session)."""

    session: Session | None
    attributes: int = CONTINUE
    auth: bytes | None = b""
    #: The session is bound to the entity it authorizes: its HMACs omit the authValue.
    bound: bool = False
    #: Replace the computed HMAC (to send a wrong one).
    hmac_override: bytes | None = None
    nonce: bytes = field(default_factory=lambda: os.urandom(16))


@dataclass
class Result:
    """A command's outcome as the client sees it: rc, response handle, plaintext parameters,
    and per session the response attributes."""

    rc: int
    handle: int | None = None
    parameters: bytes = b""
    attributes: list[int] = field(default_factory=list)


def call(send: Send, code: int, handles: list[tuple[int, bytes]], parameters: bytes,
         uses: list[Use], *, response_handle: bool = False, extra_nonces: bool = True) -> Result:
    """Send command ``code`` with sessions ``uses`` and check the response's HMACs.

    ``handles`` are (handle, Name). The first parameter is encrypted if a session has
    DECRYPT (it must be a TPM2B); the response's first parameter is decrypted if one has
    ENCRYPT. ``extra_nonces=False`` leaves the decrypt/encrypt sessions' nonces out of the
    first session's HMAC (a client error). Raises AssertionError when a response HMAC does not
    verify."""
    names = b"".join(name for _, name in handles)
    dec = next((u for u in uses if u.session and u.attributes & DECRYPT), None)
    enc = next((u for u in uses if u.session and u.attributes & ENCRYPT), None)
    sent = parameters
    if dec is not None and dec.session.sym_alg != ALG_NULL:
        s = dec.session
        size = struct.unpack_from(">H", parameters)[0]
        key = s.session_key + (dec.auth or b"").rstrip(b"\x00")
        data = parameters[2:2 + size]
        if s.sym_alg == ALG_XOR:
            data = xor_crypt(s.auth_hash, key, dec.nonce, s.nonce_tpm, data)
        else:
            data = cfb_crypt(s.auth_hash, key, s.sym_bits, dec.nonce, s.nonce_tpm, data, True)
        sent = parameters[:2] + data + parameters[2 + size:]
    area = b""
    for i, u in enumerate(uses):
        if u.session is None:
            area += u32(TPM_RS_PW) + b2(b"") + bytes([u.attributes]) + b2(u.auth or b"")
            continue
        s = u.session
        cp = digest(s.auth_hash, u32(code), names, sent)
        extra = b""
        if i == 0 and u.auth is not None and extra_nonces:
            if dec is not None and dec is not u:
                extra += dec.session.nonce_tpm
            if enc is not None and enc is not u and enc is not dec:
                extra += enc.session.nonce_tpm
        key = s.session_key + _auth_for(u)
        h = mac(s.auth_hash, key, cp, u.nonce, s.nonce_tpm, extra, bytes([u.attributes]))
        if u.hmac_override is not None:
            h = u.hmac_override
        area += u32(s.handle) + b2(u.nonce) + bytes([u.attributes]) + b2(h)
    body = b"".join(u32(h) for h, _ in handles) + u32(len(area)) + area + sent
    resp = send(struct.pack(">HII", ST_SESSIONS, 10 + len(body), code) + body)
    rc = rc_of(resp)
    if rc:
        return Result(rc)
    off = 10
    handle = None
    if response_handle:
        handle = struct.unpack_from(">I", resp, off)[0]
        off += 4
    psize = struct.unpack_from(">I", resp, off)[0]
    params = resp[off + 4:off + 4 + psize]
    off += 4 + psize
    attrs = []
    for u in uses:
        nsize = struct.unpack_from(">H", resp, off)[0]
        nonce_tpm = resp[off + 2:off + 2 + nsize]
        attr = resp[off + 2 + nsize]
        hsize = struct.unpack_from(">H", resp, off + 3 + nsize)[0]
        rhmac = resp[off + 5 + nsize:off + 5 + nsize + hsize]
        off += 5 + nsize + hsize
        attrs.append(attr)
        if u.session is None:
            assert (nonce_tpm, attr, rhmac) == (b"", u.attributes | CONTINUE, b"")
            continue
        s = u.session
        s.nonce_tpm = nonce_tpm
        rp = digest(s.auth_hash, u32(0), u32(code), params)
        key = s.session_key + _auth_for(u)
        if not key and u.hmac_override == b"":
            expected = b""  # Part 1 §19.6.6: no key and no command HMAC, no response HMAC
        else:
            expected = mac(s.auth_hash, key, rp, nonce_tpm, u.nonce, bytes([attr]))
        assert rhmac == expected, "response HMAC does not verify"
    assert off == len(resp)
    if enc is not None:
        s = enc.session
        size = struct.unpack_from(">H", params)[0]
        key = s.session_key + (enc.auth or b"").rstrip(b"\x00")
        data = params[2:2 + size]
        if s.sym_alg == ALG_XOR:
            data = xor_crypt(s.auth_hash, key, s.nonce_tpm, enc.nonce, data)
        else:
            data = cfb_crypt(s.auth_hash, key, s.sym_bits, s.nonce_tpm, enc.nonce, data, False)
        params = params[:2] + data + params[2 + size:]
    return Result(0, handle, params, attrs)


def _auth_for(u: Use) -> bytes:
    """The authValue part of the HMAC key: the entity's, unless the session is bound to it
    (this client binds only to handles whose Name is the handle)."""
    if u.auth is None or u.session is None or u.bound:
        return b""
    return u.auth.rstrip(b"\x00")
