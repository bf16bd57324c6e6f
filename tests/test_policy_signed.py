"""TPM2_PolicySigned and TPM2_PolicyAuthorize (Part 3 §23.3, §23.16), against swtpm_py and the
real swtpm 0.7.1 side by side: the same keys (made here with ``cryptography`` and loaded with
TPM2_LoadExternal), signatures made outside the TPM, the same response codes and digests,
the digests also computed here with hashlib."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from emulator import Emulator
from sessclient import b2, rc_of, start_session, u16, u32
from test_policy import flush_everything
from test_signing import (ecc_public, ecc_signature, loaded, rsa_public, rsa_signature,
                          verify_signature)
from tpmcmd import cmd

from swtpm_py.tpm.constants import ALG, CC, RH, ST

Send = Callable[[bytes], bytes]
POLICY_SESSION, TRIAL_SESSION = 1, 3
RSA_KEY = rsa.generate_private_key(65537, 2048)
ECC_KEY = ec.generate_private_key(ec.SECP256R1())
# Response codes (Part 2 §6.6; measured on swtpm 0.7.1).
SIGNATURE_P5, NONCE_P1, VALUE_P1, VALUE_P4 = 0x5DB, 0x1CF, 0x1C4, 0x4C4
HASH_P3, SIZE_P3, TAG_P4, TICKET_P5 = 0x3C3, 0x3D5, 0x4D7, 0x5E0


def digest_of(send: Send, session: int) -> bytes:
    """TPM2_PolicyGetDigest."""
    resp = send(cmd(CC.PolicyGetDigest, u32(session)))
    assert rc_of(resp) == 0
    return resp[12:]


def rsa_sign(a_hash: bytes) -> bytes:
    """RSASSA-SHA256 signature of a digest, as a TPMT_SIGNATURE."""
    sig = RSA_KEY.sign(a_hash, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return rsa_signature(ALG.RSASSA, ALG.SHA256, sig)


def ecdsa_sign(a_hash: bytes) -> bytes:
    """ECDSA-SHA256 signature of a digest, as a TPMT_SIGNATURE."""
    r, s = decode_dss_signature(ECC_KEY.sign(a_hash, ec.ECDSA(Prehashed(hashes.SHA256()))))
    return ecc_signature(ALG.ECDSA, ALG.SHA256, r, s, 32)


def policy_signed(send: Send, key: int, session: int, signature: bytes, nonce: bytes = b"",
                  cp_hash: bytes = b"", policy_ref: bytes = b"",
                  expiration: int = 0) -> tuple[int, bytes, bytes]:
    """TPM2_PolicySigned; (rc, timeout, ticket octets)."""
    body = (u32(key) + u32(session) + b2(nonce) + b2(cp_hash) + b2(policy_ref)
            + struct.pack(">i", expiration) + signature)
    resp = send(cmd(CC.PolicySigned, body))
    if rc_of(resp):
        return rc_of(resp), b"", b""
    size = struct.unpack_from(">H", resp, 10)[0]
    return 0, resp[12:12 + size], resp[12 + size:]


def a_hash(nonce: bytes, expiration: int, cp_hash: bytes, policy_ref: bytes) -> bytes:
    """Part 3 §23.3: aHash = SHA-256(nonceTPM || expiration || cpHashA || policyRef)."""
    return hashlib.sha256(nonce + struct.pack(">i", expiration) + cp_hash + policy_ref).digest()


def expected_digest(code: int, name: bytes, policy_ref: bytes,
                    start: bytes = bytes(32)) -> bytes:
    """H(H(digest || code || name) || policyRef) (the reference's PolicyContextUpdate())."""
    inner = hashlib.sha256(start + u32(code) + name).digest()
    return hashlib.sha256(inner + policy_ref).digest()


def test_policy_signed_with_outside_signatures(pair: dict[str, Emulator]) -> None:
    """RSASSA and ECDSA signatures made outside over aHash satisfy PolicySigned (the digest is
    the trial session's and the spec's); a signature over another nonce or policyRef, or a
    stale nonceTPM, is refused with swtpm's codes; expiration < 0 gives a ticket that
    PolicyTicket accepts in a fresh session."""
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        rsa_handle, rsa_name = loaded(send, rsa_public(RSA_KEY))
        ecc_handle, ecc_name = loaded(send, ecc_public(ECC_KEY, 3))
        ref = b"approved by the key holder"
        codes, digests = [], []
        for handle, name, signer in ((rsa_handle, rsa_name, rsa_sign),
                                     (ecc_handle, ecc_name, ecdsa_sign)):
            trial = start_session(send, session_type=TRIAL_SESSION)
            codes.append(policy_signed(send, handle, trial.handle, signer(bytes(32)),
                                       policy_ref=ref)[0])
            digests.append(digest_of(send, trial.handle))
            s = start_session(send, session_type=POLICY_SESSION)
            good = signer(a_hash(s.nonce_tpm, 0, b"", ref))
            codes += [
                policy_signed(send, handle, s.handle, signer(a_hash(b"", 0, b"", ref)),
                              s.nonce_tpm, policy_ref=ref)[0],
                policy_signed(send, handle, s.handle, good, s.nonce_tpm)[0],
                policy_signed(send, handle, s.handle, good, b"x" * 32, policy_ref=ref)[0],
                policy_signed(send, handle, s.handle, good, s.nonce_tpm, policy_ref=ref)[0],
            ]
            digests.append(digest_of(send, s.handle))
            assert digests[-1] == digests[-2] == expected_digest(CC.PolicySigned, name, ref)
            for session in (trial, s):
                assert rc_of(send(cmd(CC.FlushContext, u32(session.handle)))) == 0
        # A ticket: expiration < 0 without nonceTPM (valid until the next TPM Reset).
        s = start_session(send, session_type=POLICY_SESSION)
        code, timeout, ticket = policy_signed(send, rsa_handle, s.handle,
                                              rsa_sign(a_hash(b"", -60, b"", ref)),
                                              policy_ref=ref, expiration=-60)
        assert code == 0 and len(timeout) == 8 and timeout[0] & 0x80
        assert struct.unpack_from(">HI", ticket) == (ST.AUTH_SIGNED, RH.NULL)
        t = start_session(send, session_type=POLICY_SESSION)
        body = u32(t.handle) + b2(timeout) + b2(b"") + b2(ref) + b2(rsa_name)
        codes.append(rc_of(send(cmd(CC.PolicyTicket, body + ticket))))
        codes.append(rc_of(send(cmd(CC.PolicyTicket, body[:-len(rsa_name) - 2]
                                    + b2(ecc_name) + ticket))))
        assert digest_of(send, t.handle) == digest_of(send, s.handle)
        results[kind] = codes
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == [0, SIGNATURE_P5, SIGNATURE_P5, NONCE_P1, 0] * 2 \
        + [0, TICKET_P5]


def test_policy_signed_with_a_tpm_key(any_emulator: Emulator) -> None:
    """The authorizing key can live in the TPM: TPM2_Sign over aHash, then PolicySigned with
    the same key handle."""
    from objcmd import SIGNING, A, create_primary, ecc_template, parse_create_primary
    from test_signing import scheme, signature_of, sign

    send = any_emulator.command
    flush_everything(send)
    # noDA: the first use of a DA-protected key after Startup answers TPM_RC_RETRY.
    key = parse_create_primary(send(create_primary(ecc_template(
        SIGNING | A.NO_DA, sym=u16(ALG.NULL), scheme=scheme(ALG.ECDSA, ALG.SHA256)))))
    s = start_session(send, session_type=POLICY_SESSION)
    signature = signature_of(send(sign(key["handle"], a_hash(s.nonce_tpm, 0, b"", b""))))
    assert policy_signed(send, key["handle"], s.handle, signature, s.nonce_tpm)[0] == 0
    assert digest_of(send, s.handle) == expected_digest(CC.PolicySigned, key["name"], b"")
    flush_everything(send)


def test_policy_authorize(pair: dict[str, Emulator]) -> None:
    """The authority signs aHash = H(approvedPolicy || policyRef); VerifySignature of a key
    in the owner hierarchy gives the ticket; PolicyAuthorize then replaces the session's
    digest by H(H(0 || TPM_CC_PolicyAuthorize || keyName) || policyRef) — on both emulators,
    the digest equal and computed here too. A different policy reached, a changed ticket,
    keySign of an unknown hash or the wrong size and a ticket of the wrong tag are refused
    with swtpm's codes; a trial session checks only keySign."""
    results = {}
    ref = os.urandom(8)
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        handle, name = loaded(send, rsa_public(RSA_KEY), hierarchy=RH.OWNER)
        approved = hashlib.sha256(bytes(32) + u32(CC.PolicyCommandCode)
                                  + u32(CC.Unseal)).digest()
        a = hashlib.sha256(approved + ref).digest()
        resp = send(verify_signature(handle, a, rsa_sign(a)))
        assert rc_of(resp) == 0
        ticket = resp[10:]
        assert struct.unpack_from(">HI", ticket) == (ST.VERIFIED, RH.OWNER)
        s = start_session(send, session_type=POLICY_SESSION)

        def authorize(policy: bytes, key_sign: bytes = name, tk: bytes = ticket,
                      session: int = s.handle) -> int:
            body = u32(session) + b2(policy) + b2(ref) + b2(key_sign) + tk
            return rc_of(send(cmd(CC.PolicyAuthorize, body)))

        codes = [authorize(approved)]                       # the policy is not reached yet
        assert rc_of(send(cmd(CC.PolicyCommandCode, u32(s.handle) + u32(CC.Unseal)))) == 0
        assert digest_of(send, s.handle) == approved
        tampered = ticket[:-1] + bytes([ticket[-1] ^ 1])
        codes += [authorize(approved, tk=tampered),
                  authorize(approved, key_sign=u16(0x0099) + name[2:]),
                  authorize(approved, key_sign=name[:-1]),
                  authorize(approved, tk=u16(ST.HASHCHECK) + ticket[2:]),
                  authorize(approved)]
        results[kind] = (codes, digest_of(send, s.handle))
        trial = start_session(send, session_type=TRIAL_SESSION)
        results[kind] += (authorize(b"anything", session=trial.handle),
                          authorize(b"", key_sign=name[:-1], session=trial.handle),
                          digest_of(send, trial.handle))
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    codes, digest, trial_code, trial_size_code, trial_digest = results["swtpm"]
    assert codes == [VALUE_P1, VALUE_P4, HASH_P3, SIZE_P3, TAG_P4, 0]
    assert trial_code == 0 and trial_size_code == SIZE_P3
    assert digest == trial_digest
