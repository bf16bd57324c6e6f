"""Audit sessions and salted, bound, encrypting sessions through tpm2-pytss ESAPI (Part 1 §19.6,
§21, §32.4).

* Audit: an HMAC session with TPMA_SESSION audit|continueSession audits a few commands (alone,
  and as the authorization session too); the audit digest computed here — digest :=
  H(digest || cpHash || rpHash) from zeros, with cpHash and rpHash over the marshalled
  parameters — must be what TPM2_GetSessionAuditDigest reports, on swtpm_py and on the real
  swtpm. In one test swtpm_py runs in this process behind its own socket server
  (swtpm_py.server), so the test reads the session's digest from its state as well as through
  TPM2_GetSessionAuditDigest. ESAPI verifies every response HMAC of the audit session (whose
  key is not bound any more) on both.
* Salted (RSA-OAEP and ECDH tpmKey) *and* bound (to an object with an authValue) sessions with
  XOR or AES-CFB: Create sends the sensitive data encrypted (decrypt), Unseal returns it
  encrypted (encrypt); the round trip gives the data back, on both emulators. tests/
  test_sessions.py covers unsalted XOR/AES and salted AES-128 sessions bound to a hierarchy
  with TPM2_Hash; this adds XOR with salts, AES-256, binding to objects and the sensitive
  round trip, and salted policy sessions.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterator

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import (ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_SE, TPMA_OBJECT,
                                  TPMA_SESSION)
from tpm2_pytss.types import (TPM2B_AUTH, TPM2B_EVENT, TPM2B_MAX_BUFFER, TPM2B_PUBLIC,
                              TPM2B_SENSITIVE_CREATE, TPM2B_SENSITIVE_DATA, TPMS_ATTEST,
                              TPMS_SENSITIVE_CREATE)

import sessclient as sc
from emulator import Emulator, free_port_pair
from sessclient import b2, u16, u32
from test_sessions import sym_def

from swtpm_py.control import Device, DeviceOptions
from swtpm_py.server import Server, ServerConfig, TransportError, tcp_listener
from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import SU

HASHLIB = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384",
           TPM2_ALG.SHA512: "sha512"}
PCR16_NAME = struct.pack(">I", 16)
OWNER, ENDORSEMENT, RH_NULL, RS_PW = 0x40000001, 0x4000000B, 0x40000007, 0x40000009
ST_ATTEST_SESSION_AUDIT = 0x8016


# ---------------------------------------------------------------------------- swtpm_py in-process


class InProcess:
    """swtpm_py's device and socket server over an in-process :class:`Tpm`, in a thread: ESAPI
    talks to it over the swtpm TCTI like to the emulator process, and the test can look at the
    TPM's state between commands (the server is idle while no command is pending)."""

    def __init__(self) -> None:
        self.tpm = Tpm(Platform(storage=MemoryStorage()))
        self.device = Device(self.tpm, DeviceOptions(need_init=False, startup=SU.CLEAR))
        for _ in range(5):  # another process may take the free ports meanwhile
            self.port = free_port_pair()
            try:
                data = tcp_listener(self.port)
            except TransportError:
                continue
            try:
                ctrl = tcp_listener(self.port + 1)
            except TransportError:
                data.close()
                continue
            break
        else:
            raise RuntimeError("no free port pair")
        self.server = Server(self.device, ServerConfig(), data_listener=data,
                             ctrl_listener=ctrl)
        self.device.start()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """End the server loop and wait for the thread."""
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def in_process() -> Iterator[InProcess]:
    """swtpm_py serving from this process."""
    target = InProcess()
    yield target
    target.stop()


def connect(port: int) -> ESAPI:
    """ESAPI over tpm2-tss's swtpm TCTI."""
    return ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={port}"))


# ---------------------------------------------------------------------------- audit


class AuditChain:
    """The audit digest as the client computes it (Part 1 §32.4.3)."""

    def __init__(self, alg: TPM2_ALG) -> None:
        self.name = HASHLIB[alg]
        self.digest = bytes(hashlib.new(self.name).digest_size)

    def h(self, *parts: bytes) -> bytes:
        return hashlib.new(self.name, b"".join(parts)).digest()

    def add(self, code: int, names: bytes, parameters: bytes, response: bytes) -> None:
        """cpHash := H(commandCode || names || parameters); rpHash := H(responseCode(0) ||
        commandCode || response parameters); digest := H(digest || cpHash || rpHash)."""
        cp = self.h(u32(code), names, parameters)
        rp = self.h(u32(0), u32(code), response)
        self.digest = self.h(self.digest, cp, rp)


def audited_commands(ctx: ESAPI, s: ESYS_TR, chain: AuditChain) -> None:
    """GetRandom, Hash and ReadClock with ``s`` as an audit-only session, PCR_Event with ``s``
    authorizing PCR 16 and auditing; every step added to ``chain``."""
    random = bytes(ctx.get_random(12, session1=s))
    chain.add(TPM2_CC.GetRandom, b"", u16(12), b2(random))
    data = os.urandom(40)
    digest, ticket = ctx.hash(TPM2B_MAX_BUFFER(data), TPM2_ALG.SHA256, ESYS_TR.OWNER, session1=s)
    assert bytes(digest) == hashlib.sha256(data).digest()
    chain.add(TPM2_CC.Hash, b"", b2(data) + u16(TPM2_ALG.SHA256) + u32(OWNER),
              b2(bytes(digest)) + ticket.marshal())
    clock = ctx.read_clock(session1=s)
    chain.add(TPM2_CC.ReadClock, b"", b"", clock.marshal())
    values = ctx.pcr_event(ESYS_TR.PCR16, TPM2B_EVENT(b"audited event"), session1=s)
    chain.add(TPM2_CC.PCR_Event, PCR16_NAME, b2(b"audited event"), values.marshal())


def reported_digest(ctx: ESAPI, s: ESYS_TR) -> tuple[int, bytes]:
    """(exclusiveSession, sessionDigest) of an unsigned TPM2_GetSessionAuditDigest (signHandle
    TPM_RH_NULL, the endorsement hierarchy as privacy administrator)."""
    attest, _ = ctx.get_session_audit_digest(ESYS_TR.RH_NULL, s, b"audit qualifier")
    info, _ = TPMS_ATTEST.unmarshal(bytes(attest))
    assert info.type == ST_ATTEST_SESSION_AUDIT
    assert bytes(info.extraData) == b"audit qualifier"
    audit = info.attested.sessionAudit
    return int(audit.exclusiveSession), bytes(audit.sessionDigest)


def audit_scenario(ctx: ESAPI, alg: TPM2_ALG, bind: ESYS_TR) -> tuple[ESYS_TR, AuditChain]:
    """An audit session of ``alg`` (bound to ``bind``) used on the audited commands."""
    s = ctx.start_auth_session(ESYS_TR.NONE, bind, TPM2_SE.HMAC, sym_def("null"), alg)
    ctx.trsess_set_attributes(s, TPMA_SESSION.AUDIT | TPMA_SESSION.CONTINUESESSION)
    chain = AuditChain(alg)
    audited_commands(ctx, s, chain)
    return s, chain


ALGS = [TPM2_ALG.SHA1, TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512]


@pytest.mark.parametrize("bind", [ESYS_TR.NONE, ESYS_TR.OWNER])
def test_audit_digest_reported(any_emulator: Emulator, bind: ESYS_TR) -> None:
    """The client's chain equals TPM2_GetSessionAuditDigest's for every authHash, and the
    session is the exclusive audit session; after one command without it, it is not — on
    swtpm_py and on swtpm."""
    ctx = connect(any_emulator.port)
    try:
        for alg in ALGS:
            s, chain = audit_scenario(ctx, alg, bind)
            assert reported_digest(ctx, s) == (1, chain.digest), alg
            ctx.get_random(4)
            assert reported_digest(ctx, s) == (0, chain.digest), alg
            ctx.flush_context(s)
    finally:
        ctx.close()


@pytest.mark.parametrize("bind", [ESYS_TR.NONE, ESYS_TR.OWNER])
def test_audit_digest_held_by_swtpm_py(in_process: InProcess, bind: ESYS_TR) -> None:
    """The same scenario on swtpm_py seen from inside: the session's audit digest in the TPM's
    state is the client's chain (and what TPM2_GetSessionAuditDigest reports), it is the
    exclusive audit session until a command without it."""
    ctx = connect(in_process.port)
    table = in_process.tpm.vol.sessions
    try:
        for alg in ALGS:
            s, chain = audit_scenario(ctx, alg, bind)
            handle = ctx.tr_get_tpm_handle(s)
            (state,) = [x for x in table.loaded if x.handle == handle]
            assert state.audit and state.audit_digest == chain.digest, alg
            assert table.exclusive_audit == handle
            assert reported_digest(ctx, s) == (1, chain.digest), alg
            ctx.get_random(4)
            assert table.exclusive_audit == 0
            ctx.flush_context(s)
    finally:
        ctx.close()


def test_audit_reset_restarts_the_chain(any_emulator: Emulator) -> None:
    """auditReset: the digest starts again from zeros with that command (Part 1 §32.4.3)."""
    ctx = connect(any_emulator.port)
    try:
        s, _ = audit_scenario(ctx, TPM2_ALG.SHA256, ESYS_TR.NONE)
        ctx.trsess_set_attributes(s, TPMA_SESSION.AUDIT | TPMA_SESSION.AUDITRESET
                                  | TPMA_SESSION.CONTINUESESSION)
        chain = AuditChain(TPM2_ALG.SHA256)
        random = bytes(ctx.get_random(8, session1=s))
        chain.add(TPM2_CC.GetRandom, b"", u16(8), b2(random))
        assert reported_digest(ctx, s) == (1, chain.digest)
        ctx.flush_context(s)
    finally:
        ctx.close()


def test_a_wrong_chain_is_detected(reference: Emulator) -> None:
    """The comparison above can fail: leaving one command out of the chain (or giving it other
    parameters) gives another digest than the TPM's."""
    ctx = connect(reference.port)
    try:
        s, chain = audit_scenario(ctx, TPM2_ALG.SHA256, ESYS_TR.NONE)
        wrong = AuditChain(TPM2_ALG.SHA256)
        wrong.add(TPM2_CC.GetRandom, b"", u16(13), b2(b"x" * 13))
        assert reported_digest(ctx, s)[1] not in (wrong.digest, bytes(32))
        assert reported_digest(ctx, s)[1] == chain.digest
        ctx.flush_context(s)
    finally:
        ctx.close()


def raw_session_audit_digest(send: sc.Send, handle: int) -> bytes:
    """sessionDigest of an unsigned TPM2_GetSessionAuditDigest as a raw command (two password
    sessions: the endorsement hierarchy, and signHandle TPM_RH_NULL)."""
    handles = u32(ENDORSEMENT) + u32(RH_NULL) + u32(handle)
    area = (u32(RS_PW) + b2(b"") + b"\x01" + b2(b"")) * 2
    params = b2(b"") + u16(TPM2_ALG.NULL)
    body = handles + u32(len(area)) + area + params
    resp = send(struct.pack(">HII", 0x8002, 10 + len(body), TPM2_CC.GetSessionAuditDigest)
                + body)
    assert sc.rc_of(resp) == 0, hex(sc.rc_of(resp))
    size = struct.unpack_from(">H", resp, 14)[0]
    attest = resp[16:16 + size]
    digest_size = struct.unpack_from(">H", attest, len(attest) - 34)[0]
    assert digest_size == 32
    return attest[-32:]


@pytest.mark.parametrize("sym", [(sc.ALG_AES, 128), (sc.ALG_XOR, 0x000B)])
def test_audit_covers_parameters_as_encrypted(any_emulator: Emulator, sym: tuple[int, int]
                                              ) -> None:
    """With another session decrypting the command parameter or encrypting the response
    parameter (of another authHash), the audited cpHash and rpHash are over the parameter
    areas as they travel, encrypted (Part 1 §18: they are computed on the command and response
    buffers; measured so on swtpm 0.7.1) — the raw client of tests/sessclient.py, on swtpm_py
    and on swtpm."""
    send = any_emulator.command
    audit = sc.start_session(send, auth_hash=0x000B)
    crypt = sc.start_session(send, auth_hash=0x000C, bind=OWNER, sym_alg=sym[0],
                             sym_bits=sym[1])
    expected = bytes(32)
    # PCR_Event(PCR 16) by password, audited, its eventData encrypted by the other session.
    data = b"an audited secret event"
    dec = sc.Use(crypt, sc.DECRYPT | sc.CONTINUE, auth=None)
    key = crypt.session_key
    if sym[0] == sc.ALG_XOR:
        sent = sc.xor_crypt(crypt.auth_hash, key, dec.nonce, crypt.nonce_tpm, data)
    else:
        sent = sc.cfb_crypt(crypt.auth_hash, key, 128, dec.nonce, crypt.nonce_tpm, data, True)
    assert sent != data
    r = sc.call(send, TPM2_CC.PCR_Event, [(16, PCR16_NAME)], b2(data),
                [sc.Use(None), sc.Use(audit, sc.AUDIT | sc.CONTINUE, auth=None), dec])
    assert r.rc == 0
    cp = sc.digest(0x000B, u32(TPM2_CC.PCR_Event), PCR16_NAME, b2(sent))
    rp = sc.digest(0x000B, u32(0), u32(TPM2_CC.PCR_Event), r.parameters)
    expected = sc.digest(0x000B, expected, cp, rp)
    # GetRandom, audited, its randomBytes encrypted by the other session.
    enc = sc.Use(crypt, sc.ENCRYPT | sc.CONTINUE, auth=None)
    r = sc.call(send, TPM2_CC.GetRandom, [], u16(16),
                [sc.Use(audit, sc.AUDIT | sc.CONTINUE, auth=None), enc])
    assert r.rc == 0
    plain = r.parameters[2:]
    if sym[0] == sc.ALG_XOR:
        travelled = sc.xor_crypt(crypt.auth_hash, key, crypt.nonce_tpm, enc.nonce, plain)
    else:
        travelled = sc.cfb_crypt(crypt.auth_hash, key, 128, crypt.nonce_tpm, enc.nonce, plain,
                                 True)
    cp = sc.digest(0x000B, u32(TPM2_CC.GetRandom), u16(16))
    rp = sc.digest(0x000B, u32(0), u32(TPM2_CC.GetRandom), b2(travelled))
    expected = sc.digest(0x000B, expected, cp, rp)
    assert raw_session_audit_digest(send, audit.handle) == expected
    for handle in (audit.handle, crypt.handle):
        assert sc.rc_of(send(struct.pack(">HIII", 0x8001, 14, 0x165, handle))) == 0


# ---------------------------------------------------------------------------- salted + bound

_STORAGE = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA)
SEALED = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=TPMA_OBJECT.FIXEDTPM
                            | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH
                            | TPMA_OBJECT.NODA)
PARENT_AUTH = b"parent auth"
OBJECT_AUTH = b"object auth"


def salted_round_trips(ctx: ESAPI) -> list[str]:
    """For RSA and ECC tpmKeys and XOR / AES-128 / AES-256: a session salted by the tpmKey
    and bound to the parent (authValue PARENT_AUTH) creates a sealed object with the secret
    sent encrypted, loads it, and unseals it (another authValue: the bound session's HMAC
    then includes it) with the response encrypted. Returns what each round trip gave back."""
    outcome = []
    parent = ctx.create_primary(
        TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(PARENT_AUTH))),
        TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=_STORAGE))[0]
    ctx.tr_set_auth(parent, PARENT_AUTH)
    for template in ("rsa2048:aes128cfb", "ecc256:aes128cfb"):
        # Three object slots (swtpm's too): the parent, the tpmKey, the loaded sealed object.
        salt_key = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
            template, objectAttributes=_STORAGE))[0]
        for kind in ("xor", "aes128", "aes256"):
            for alg in (TPM2_ALG.SHA256, TPM2_ALG.SHA384):
                s = ctx.start_auth_session(salt_key, parent, TPM2_SE.HMAC, sym_def(kind), alg)
                ctx.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION
                                          | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
                secret = os.urandom(32)
                sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(
                    userAuth=TPM2B_AUTH(OBJECT_AUTH), data=TPM2B_SENSITIVE_DATA(secret)))
                private, public, *_ = ctx.create(parent, sensitive, SEALED, session1=s)
                obj = ctx.load(parent, private, public, session1=s)
                ctx.tr_set_auth(obj, OBJECT_AUTH)
                ctx.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION
                                          | TPMA_SESSION.ENCRYPT)
                got = bytes(ctx.unseal(obj, session1=s))
                outcome.append(f"{template}/{kind}/{HASHLIB[alg]}:"
                               f"{'ok' if got == secret else 'wrong'}")
                ctx.flush_context(obj)
                ctx.flush_context(s)
        ctx.flush_context(salt_key)
    ctx.flush_context(parent)
    return outcome


def test_salted_bound_sessions_round_trip_sensitive_data(emulator: Emulator,
                                                         reference: Emulator) -> None:
    """Every round trip gives the secret back, on swtpm_py and on swtpm."""
    results = {}
    for emu in (emulator, reference):
        ctx = connect(emu.port)
        try:
            results[emu.kind] = salted_round_trips(ctx)
        finally:
            ctx.close()
    assert results["swtpm_py"] == results["swtpm"]
    assert len(results["swtpm"]) == 12
    assert all(r.endswith(":ok") for r in results["swtpm"]), results


def test_salted_policy_session_unseals_encrypted(emulator: Emulator,
                                                 reference: Emulator) -> None:
    """A salted (RSA and ECC) AES-CFB policy session with PolicyCommandCode(Unseal) +
    PolicyAuthValue unseals an object whose authPolicy that is, with the response encrypted;
    the same session without PolicyAuthValue fails the policy (TPM_RC_POLICY_FAIL, session 1),
    on both emulators."""
    results = {}
    for emu in (emulator, reference):
        ctx = connect(emu.port)
        try:
            got = []
            trial = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
                                           sym_def("null"), TPM2_ALG.SHA256)
            ctx.policy_command_code(trial, TPM2_CC.Unseal)
            ctx.policy_auth_value(trial)
            policy = bytes(ctx.policy_get_digest(trial))
            ctx.flush_context(trial)
            parent = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
                "ecc256:aes128cfb", objectAttributes=_STORAGE))[0]
            public = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=TPMA_OBJECT.FIXEDTPM
                                        | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA)
            public.publicArea.authPolicy = policy
            secret = os.urandom(24)
            private, public_out, *_ = ctx.create(parent, TPM2B_SENSITIVE_CREATE(
                TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(OBJECT_AUTH),
                                      data=TPM2B_SENSITIVE_DATA(secret))), public)
            obj = ctx.load(parent, private, public_out)
            ctx.tr_set_auth(obj, OBJECT_AUTH)
            for template in ("rsa2048:aes128cfb", "ecc256:aes128cfb"):
                key = ctx.create_primary(TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse(
                    template, objectAttributes=_STORAGE))[0]
                for with_auth_value in (True, False):
                    s = ctx.start_auth_session(key, ESYS_TR.NONE, TPM2_SE.POLICY,
                                               sym_def("aes128"), TPM2_ALG.SHA256)
                    ctx.trsess_set_attributes(s, TPMA_SESSION.CONTINUESESSION
                                              | TPMA_SESSION.ENCRYPT)
                    ctx.policy_command_code(s, TPM2_CC.Unseal)
                    if with_auth_value:
                        ctx.policy_auth_value(s)
                    try:
                        got.append(bytes(ctx.unseal(obj, session1=s)) == secret)
                    except TSS2_Exception as exc:
                        got.append(exc.rc)
                    ctx.flush_context(s)
                ctx.flush_context(key)
            for handle in (obj, parent):
                ctx.flush_context(handle)
            results[emu.kind] = got
        finally:
            ctx.close()
    assert results["swtpm_py"] == results["swtpm"] == [True, 0x99D, True, 0x99D]
