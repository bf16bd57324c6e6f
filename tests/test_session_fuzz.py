"""Property test (hypothesis): random sequences of session operations against the in-process
``Tpm`` never raise, never fail internally, always answer with a well-formed response, keep
the session table consistent with what the client did, and leave a TPM that keeps serving.

The operations: StartAuthSession of random types, authHashes, symmetric definitions, binds
and salts (an ECC tpmKey, with a correct or a corrupted salt); commands using the sessions
with correct HMACs (tests/sessclient.py, which also verifies every response HMAC and decrypts
encrypted responses) or wrong ones, with random session attributes (continueSession, decrypt,
encrypt, audit, auditReset, auditExclusive) and up to three sessions; every policy command
with random, and sometimes valid, arguments (PolicySigned with a real signature over the
session's nonce, PolicySecret tickets fed to PolicyTicket, NV indices for PolicyNV and
PolicyAuthorizeNV ...); ContextSave / ContextLoad (of intact and of corrupted contexts) /
FlushContext of sessions; Shutdown, power cycles and Startup(CLEAR|STATE).

tests/test_sessions.py has a smaller property test (raw authorization areas, no contexts, no
power cycles); tests/test_fuzz.py fuzzes command bytes.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings, strategies as st

import sessclient as sc
from nvcmd import OWNER_RW, define_space, write
from objcmd import create_primary, ecc_template
from sessclient import (AUDIT, AUDIT_EXCLUSIVE, AUDIT_RESET, CONTINUE, DECRYPT, ENCRYPT, Use,
                        b2, u16, u32)
from test_fuzz import InternalErrors, check_response
from test_policy_signed import ECC_KEY, a_hash, ecdsa_sign
from test_signing import ecc_public, loaded
from tpmcmd import FakeClock, cmd, power_on, shutdown, startup, with_auth

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import CC, RC, RH
from swtpm_py.tpm.state import BlobKind

SHA1, SHA256, SHA384, SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
HMAC_SESSION, POLICY_SESSION, TRIAL_SESSION = 0, 1, 3
SYMS = [(sc.ALG_AES, 128), (sc.ALG_NULL, 0), (sc.ALG_XOR, SHA256), (sc.ALG_XOR, SHA1),
        (sc.ALG_AES, 256)]
NV_DATA, NV_APPROVED = 0x01500B01, 0x01500B02
PCR16 = 16
FIRST_HMAC, FIRST_POLICY = 0x02000000, 0x03000000


# ---------------------------------------------------------------------------- the client's model


@dataclass
class Model:
    """What the client did: its sessions (sessclient view) and where each is."""

    platform: Platform
    tpm: Tpm
    salt_key: int = 0
    salt_point: tuple[bytes, bytes] = (b"", b"")
    sign_key: int = 0
    sign_name: bytes = b""
    #: handle -> the client's session, for sessions it believes loaded.
    loaded: dict[int, sc.Session] = field(default_factory=dict)
    #: Saved contexts: (session, TPMS_CONTEXT octets).
    saved: list[tuple[sc.Session, bytes]] = field(default_factory=list)
    #: (timeout, ticket, authName, policyRef) of PolicySecret calls with a negative
    #: expiration.
    tickets: list[tuple[bytes, bytes, bytes, bytes]] = field(default_factory=list)
    #: Policy sessions after a PolicyPassword (no PolicyAuthValue or PolicyRestart since):
    #: their response HMAC is empty (Part 1 §19.6.6 with §19.7.8; swtpm's too), which this
    #: client cannot tell from a wrong one, so they are left out of commands.
    password: set[int] = field(default_factory=set)

    def send(self, command: bytes) -> bytes:
        """Execute and check that the response is well formed (tests/test_fuzz.py)."""
        response = self.tpm.execute(command)
        check_response(command, response)
        return response

    def indices(self) -> set[int]:
        """The session indices the client holds, loaded or saved."""
        return {index(h) for h in self.loaded} | {index(s.handle) for s, _ in self.saved}

    def session(self, pick: int) -> sc.Session | None:
        """The pick-th loaded session (modulo), or None when none is loaded."""
        if not self.loaded:
            return None
        handles = sorted(self.loaded)
        return self.loaded[handles[pick % len(handles)]]

    def policy_handle(self, pick: int, raw: int) -> int:
        """A loaded policy or trial session's handle (any loaded session's when there is none),
        or ``raw`` when none is loaded or for every eighth ``pick``."""
        policy = sorted(h for h in self.loaded if h >> 24 == 3) or sorted(self.loaded)
        return policy[pick % len(policy)] if policy and pick % 8 else raw


def index(handle: int) -> int:
    """A session handle's index (its slot in the context array)."""
    return handle & 0xFFFFFF


def setup(platform: Platform) -> Model:
    """A started TPM with an ECC storage primary (the salt key), an external ECC signing key
    and two NV indices (8 data octets; a TPMT_HA)."""
    tpm = power_on(platform)
    model = Model(platform, tpm)
    assert sc.rc_of(model.send(startup())) == 0
    make_keys(model)
    for nv_index, value in ((NV_DATA, bytes(range(8))),
                            (NV_APPROVED, u16(SHA256) + bytes(32))):
        assert sc.rc_of(model.send(define_space(nv_index, OWNER_RW, len(value)))) == 0
        assert sc.rc_of(model.send(write(nv_index, value))) == 0
    return model


# ---------------------------------------------------------------------------- operations


def op_start(model: Model, session_type: int, auth_hash: int, sym: int, bind: int,
             salt: int, nonce_size: int) -> None:
    """StartAuthSession; salt 0: none, 1: a correct ECC salt, 2: a corrupted one."""
    sym_alg, sym_bits = SYMS[sym]
    bind_handle = (RH.NULL, RH.OWNER, PCR16, RH.ENDORSEMENT)[bind]
    kwargs = {}
    if salt:
        encrypted, secret = sc.ecc_salt(auth_hash, *model.salt_point)
        if salt == 2:
            encrypted = encrypted[:-1] + bytes([encrypted[-1] ^ 1])
        kwargs = dict(tpm_key=model.salt_key, encrypted_salt=encrypted, salt=secret)
    try:
        s = sc.start_session(model.send, session_type=session_type, auth_hash=auth_hash,
                             bind=bind_handle, sym_alg=sym_alg, sym_bits=sym_bits,
                             nonce=os.urandom(nonce_size), **kwargs)
    except sc.TpmFailure:
        return
    assert salt != 2, "a corrupted salt was accepted"
    assert index(s.handle) not in model.indices()
    model.loaded[s.handle] = s


COMMAND_KINDS = ["event", "hash", "nv_read", "random"]


def op_use(model: Model, picks: list[int], attributes: list[int], kind: str,
           wrong_hmac: bool) -> None:
    """A command with up to three of the loaded sessions; the first authorizes the command's
    handle (all authValues are empty) when it has one."""
    sessions: list[sc.Session] = []
    for pick in picks:
        s = model.session(pick)
        if s is not None and s not in sessions and s.handle not in model.password:
            sessions.append(s)
    if not sessions:
        return
    if kind == "random":
        code, handles, params = CC.GetRandom, [], u16(16)
    elif kind == "event":
        code, handles, params = CC.PCR_Event, [(PCR16, u32(PCR16))], b2(b"fuzzed event")
    elif kind == "hash":
        code, handles, params = CC.Hash, [], b2(b"data") + u16(SHA256) + u32(RH.NULL)
    else:
        code, handles = CC.NV_Read, [(RH.OWNER, u32(RH.OWNER)), (NV_DATA, b"")]
        names = model.send(cmd(CC.NV_ReadPublic, u32(NV_DATA)))
        if sc.rc_of(names) == 0:
            public_size = struct.unpack_from(">H", names, 10)[0]
            name = names[14 + public_size:]
            handles = [(RH.OWNER, u32(RH.OWNER)), (NV_DATA, name)]
        params = u16(8) + u16(0)
    uses = []
    for i, s in enumerate(sessions):
        attrs = attributes[i % len(attributes)]
        authorizes = i == 0 and bool(handles)
        uses.append(Use(s, attrs, auth=b"" if authorizes else None,
                        hmac_override=os.urandom(32) if wrong_hmac and i == 0 else None))
    result = sc.call(model.send, code, handles, params, uses)
    if result.rc == 0:
        for use in uses:
            if not use.attributes & CONTINUE:
                del model.loaded[use.session.handle]


def op_policy(model: Model, code: int, pick: int, raw_handle: int, data: bytes,
              choice: int) -> None:
    """A policy command on a loaded session (or a random handle) with random arguments —
    valid ones where ``choice`` says so."""
    handle = model.policy_handle(pick, raw_handle)
    s = model.loaded.get(handle)
    if code == CC.PolicySigned:
        nonce = s.nonce_tpm if s is not None and choice % 2 else data[:16]
        expiration = (0, -10, 100, -(2 ** 31))[choice % 4]
        signature = ecdsa_sign(a_hash(nonce, expiration, b"", b"ref"))
        if choice % 3 == 0:
            signature = data[:8] + signature[8:]
        body = (u32(model.sign_key if choice % 5 else model.salt_key) + u32(handle) + b2(nonce)
                + b2(b"") + b2(b"ref") + struct.pack(">i", expiration) + signature)
        model.send(cmd(code, body))
    elif code == CC.PolicySecret:
        expiration = (0, -100, 100, -1)[choice % 4]
        auth = (RH.OWNER, RH.ENDORSEMENT, NV_DATA, PCR16)[choice // 4 % 4]
        nonce = s.nonce_tpm if s is not None and choice % 2 else b""
        resp = model.send(with_auth(code, u32(auth) + u32(handle),
                                    b2(nonce) + b2(b"") + b2(data[:4])
                                    + struct.pack(">i", expiration)))
        if sc.rc_of(resp) == 0 and expiration < 0:
            size = struct.unpack_from(">H", resp, 14)[0]
            model.tickets.append((resp[16:16 + size], resp[16 + size:-5], u32(auth), data[:4]))
    elif code == CC.PolicyTicket:
        if model.tickets and choice % 3:
            timeout, ticket, name, ref = model.tickets[choice % len(model.tickets)]
            if choice % 2:
                ticket = ticket[:-1] + data[:1]
        else:
            timeout, ticket = data[:8], u16(0x8023) + u32(RH.OWNER) + b2(data[8:40])
            name, ref = u32(RH.OWNER), data[:4]
        model.send(cmd(code, u32(handle) + b2(timeout) + b2(b"") + b2(ref) + b2(name)
                       + ticket))
    elif code == CC.PolicyAuthorize:
        ticket = u16(0x8022) + u32((RH.NULL, RH.OWNER)[choice % 2]) + b2(data[:choice % 33])
        model.send(cmd(code, u32(handle) + b2(data[:32]) + b2(b"") + b2(model.sign_name)
                       + ticket))
    elif code == CC.PolicyNV:
        nv_index = (NV_DATA, NV_APPROVED, 0x01500BFF)[choice % 3]
        model.send(with_auth(code, u32((RH.OWNER, nv_index)[choice % 2]) + u32(nv_index)
                             + u32(handle), b2(data[:choice % 12]) + u16(choice % 10)
                             + u16(choice % 13)))
    elif code == CC.PolicyAuthorizeNV:
        nv_index = (NV_APPROVED, NV_DATA)[choice % 2]
        model.send(with_auth(code, u32(RH.OWNER) + u32(nv_index) + u32(handle), b""))
    elif code == CC.PolicyCounterTimer:
        model.send(cmd(code, u32(handle) + b2(data[:choice % 10]) + u16(choice % 30)
                       + u16(choice % 13)))
    elif code == CC.PolicyDuplicationSelect:
        model.send(cmd(code, u32(handle) + b2(u16(SHA256) + data[:32]) + b2(model.sign_name)
                       + bytes([choice % 3])))
    elif code == CC.PolicyOR:
        count = choice % 10
        model.send(cmd(code, u32(handle) + u32(count)
                       + b"".join(b2(data[i:i + 32]) for i in range(count))))
    elif code == CC.PolicyPCR:
        model.send(cmd(code, u32(handle) + b2(data[:choice % 40]) + u32(1) + u16(SHA256)
                       + b"\x03" + (1 << (choice % 24)).to_bytes(3, "little")))
    elif code in (CC.PolicyCpHash, CC.PolicyNameHash, CC.PolicyTemplate):
        model.send(cmd(code, u32(handle) + b2(data[:(32, 20, 0, 33)[choice % 4]])))
    elif code == CC.PolicyCommandCode:
        model.send(cmd(code, u32(handle) + u32((CC.PCR_Event, CC.GetRandom, CC.NV_Read,
                                                 0x1FF)[choice % 4])))
    elif code == CC.PolicyLocality:
        model.send(cmd(code, u32(handle) + bytes([data[0] if data else 0])))
    elif code == CC.PolicyNvWritten:
        model.send(cmd(code, u32(handle) + bytes([choice % 3])))
    else:  # no parameters: PolicyRestart, GetDigest, AuthValue, Password, PhysicalPresence
        resp = model.send(cmd(code, u32(handle)))
        if sc.rc_of(resp) == 0 and code == CC.PolicyPassword:
            model.password.add(handle)
        elif sc.rc_of(resp) == 0 and code in (CC.PolicyAuthValue, CC.PolicyRestart):
            model.password.discard(handle)


def op_save(model: Model, pick: int) -> None:
    """ContextSave of a loaded session: it stays assigned but is no longer loaded."""
    s = model.session(pick)
    if s is None:
        return
    resp = model.send(cmd(CC.ContextSave, u32(s.handle)))
    if sc.rc_of(resp) == 0:
        del model.loaded[s.handle]
        model.saved.append((s, resp[10:]))


def op_load(model: Model, pick: int, corrupt: int) -> None:
    """ContextLoad of a saved context (intact, or with one octet changed)."""
    if not model.saved:
        return
    s, context = model.saved[pick % len(model.saved)]
    if corrupt:
        i = corrupt % len(context)
        context = context[:i] + bytes([context[i] ^ 0x5A]) + context[i + 1:]
    resp = model.send(cmd(CC.ContextLoad, context))
    if sc.rc_of(resp) == 0:
        assert not corrupt, "a corrupted context was accepted"
        handle = struct.unpack_from(">I", resp, 10)[0]
        assert handle == s.handle
        model.saved = [(x, c) for x, c in model.saved if x is not s]
        model.loaded[handle] = s


def op_flush(model: Model, pick: int, raw_handle: int) -> None:
    """FlushContext of a loaded or saved session (or any handle)."""
    targets = sorted(model.loaded) + [s.handle for s, _ in model.saved]
    handle = targets[pick % len(targets)] if targets and pick % 4 else raw_handle
    resp = model.send(cmd(CC.FlushContext, u32(handle)))
    if sc.rc_of(resp) == 0:
        # The session's index is what counts (swtpm: flushing 0x02000002 flushes the policy
        # session 0x03000002, see tests/test_sessions.py).
        model.loaded = {h: x for h, x in model.loaded.items() if index(h) != index(handle)}
        model.password = {h for h in model.password if index(h) != index(handle)}
        model.saved = [(x, c) for x, c in model.saved if index(x.handle) != index(handle)]


def op_power(model: Model, shutdown_type: int, startup_state: bool) -> None:
    """Optional Shutdown (0: none, 1: CLEAR, 2: STATE), _TPM_Init (a new Tpm over the same
    storage) and Startup (STATE when asked; CLEAR when that fails). Loaded sessions end; saved
    ones survive a TPM Resume or TPM Restart — any Startup after Shutdown(STATE) — not a TPM
    Reset (Part 1 §30.5, tests/test_session_contexts.py)."""
    if shutdown_type:
        assert sc.rc_of(model.send(shutdown(clear=shutdown_type == 1))) == 0
    model.tpm = power_on(model.platform)
    resumed = sc.rc_of(model.send(startup(clear=not startup_state))) == 0 and startup_state
    if not resumed and startup_state:
        assert sc.rc_of(model.send(startup())) == 0
    model.loaded.clear()
    if shutdown_type != 2:
        model.saved.clear()
    model.password &= {s.handle for s, _ in model.saved}
    # Every _TPM_Init ends the transient objects: make the keys again.
    make_keys(model)


def make_keys(model: Model) -> None:
    """An ECC storage primary (the salt key) and an external ECC signing key."""
    resp = model.send(create_primary(ecc_template()))
    assert sc.rc_of(resp) == 0
    model.salt_key = struct.unpack_from(">I", resp, 10)[0]
    size = struct.unpack_from(">H", resp, 18)[0]
    public = resp[20:20 + size]
    model.salt_point = (public[-66:-34], public[-32:])
    model.sign_key, model.sign_name = loaded(model.send, ecc_public(ECC_KEY, 3))


def listed_sessions(model: Model) -> tuple[set[int], set[int]]:
    """GetCapability(HANDLES): (loaded sessions, saved sessions)."""
    found = []
    for first in (FIRST_HMAC, FIRST_POLICY):
        resp = model.send(cmd(CC.GetCapability, u32(1) + u32(first) + u32(64)))
        count = struct.unpack_from(">I", resp, 15)[0]
        found.append(set(struct.unpack_from(f">{count}I", resp, 19)))
    return found[0], found[1]


# ---------------------------------------------------------------------------- strategies

POLICY_CODES = [CC.PolicySigned, CC.PolicySecret, CC.PolicyTicket, CC.PolicyAuthorize,
                CC.PolicyNV, CC.PolicyAuthorizeNV, CC.PolicyNvWritten, CC.PolicyCounterTimer,
                CC.PolicyDuplicationSelect, CC.PolicyOR, CC.PolicyPCR, CC.PolicyCpHash,
                CC.PolicyNameHash, CC.PolicyTemplate, CC.PolicyCommandCode, CC.PolicyLocality,
                CC.PolicyRestart, CC.PolicyGetDigest, CC.PolicyAuthValue, CC.PolicyPassword,
                CC.PolicyPhysicalPresence]
ATTRIBUTES = st.sampled_from([CONTINUE, CONTINUE | DECRYPT, CONTINUE | ENCRYPT,
                              CONTINUE | DECRYPT | ENCRYPT, CONTINUE | AUDIT,
                              CONTINUE | AUDIT | AUDIT_RESET, CONTINUE | AUDIT | AUDIT_EXCLUSIVE,
                              AUDIT_EXCLUSIVE, 0, DECRYPT, AUDIT, CONTINUE | 0x18])
RAW_HANDLES = st.sampled_from([FIRST_HMAC, FIRST_HMAC + 1, FIRST_POLICY, FIRST_POLICY + 2,
                               RH.PW, 0x80000000, 0x02FFFFFF])
#: Handles to flush besides the client's sessions (transient objects stay: the keys are used).
SESSION_HANDLES = st.sampled_from([FIRST_HMAC, FIRST_HMAC + 1, FIRST_HMAC + 2, FIRST_POLICY,
                                   FIRST_POLICY + 1, FIRST_POLICY + 2, 0x02FFFFFF, RH.PW])

STRATEGIES = {
    "start": st.tuples(
        st.sampled_from([POLICY_SESSION, HMAC_SESSION, TRIAL_SESSION, POLICY_SESSION, 2]),
        st.sampled_from([SHA256, SHA1, SHA384, SHA512]), st.integers(0, len(SYMS) - 1),
        st.integers(0, 3), st.sampled_from([0, 0, 1, 2]),
        st.sampled_from([32, 16, 20, 48, 64, 32, 15, 65])),
    "use": st.tuples(st.lists(st.integers(0, 7), min_size=1, max_size=3),
                     st.lists(ATTRIBUTES, min_size=1, max_size=3),
                     st.sampled_from(COMMAND_KINDS), st.sampled_from([False, False, True])),
    "policy": st.tuples(st.sampled_from(POLICY_CODES), st.integers(0, 63), RAW_HANDLES,
                        st.binary(min_size=0, max_size=48), st.integers(0, 60)),
    "save": st.tuples(st.integers(0, 7)),
    "load": st.tuples(st.integers(0, 7), st.sampled_from([0, 0, 0, 3, 9, 17, 40, 200])),
    "flush": st.tuples(st.integers(0, 7), SESSION_HANDLES),
    "power": st.tuples(st.sampled_from([0, 1, 2, 2]), st.booleans()),
}
#: How often each kind of operation is drawn.
WEIGHTS = {"start": 3, "use": 4, "policy": 6, "save": 2, "load": 2, "flush": 1, "power": 1}
#: Each sequence begins with one to three policy or trial sessions started (valid
#: arguments, so that the policy commands find sessions), then mixes everything.
SEQUENCES = st.tuples(
    st.lists(st.tuples(st.just("start"), st.sampled_from([POLICY_SESSION, TRIAL_SESSION]),
                       st.sampled_from([SHA256, SHA1, SHA384, SHA512]),
                       st.integers(0, len(SYMS) - 1), st.integers(0, 3), st.sampled_from([0, 1]),
                       st.just(32)), min_size=1, max_size=3),
    st.lists(st.sampled_from([k for k, n in WEIGHTS.items() for _ in range(n)]).flatmap(
        lambda kind: STRATEGIES[kind].map(lambda args: (kind, *args))), min_size=5,
        max_size=40)).map(lambda parts: parts[0] + parts[1])
RUN = {"start": op_start, "use": op_use, "policy": op_policy, "save": op_save,
       "load": op_load, "flush": op_flush, "power": op_power}


@contextmanager
def no_internal_errors() -> Iterator[list[logging.LogRecord]]:
    """Collect what the core logs at ERROR (an internal error's traceback)."""
    handler = InternalErrors()
    logger = logging.getLogger("swtpm_py.tpm")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@given(ops=SEQUENCES)
@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_random_session_operations(ops: list[tuple]) -> None:
    """After each operation the TPM's loaded and saved sessions are the client's; at the end
    every session can be flushed, a new salted AES session authorizes a command with a
    verified response HMAC, and the volatile state round-trips."""
    platform = Platform(MemoryStorage(), clock=FakeClock())
    with no_internal_errors() as errors:
        model = setup(platform)
        for op in ops:
            RUN[op[0]](model, *op[1:])
            platform.clock.now += 1000
            loaded, saved = listed_sessions(model)
            assert {index(h) for h in loaded} == {index(h) for h in model.loaded}, op
            assert {index(h) for h in saved} == {index(s.handle) for s, _ in model.saved}, op
        for handle in sorted(loaded | saved):
            assert sc.rc_of(model.send(cmd(CC.FlushContext, u32(handle)))) == 0
        encrypted, secret = sc.ecc_salt(SHA256, *model.salt_point)
        s = sc.start_session(model.send, tpm_key=model.salt_key, encrypted_salt=encrypted,
                             salt=secret, sym_alg=sc.ALG_AES, sym_bits=128)
        result = sc.call(model.send, CC.PCR_Event, [(PCR16, u32(PCR16))], b2(b"still serving"),
                         [Use(s, CONTINUE | DECRYPT)])
        assert result.rc == 0
        blob = model.tpm.volatile_blob()
        platform.storage.store(BlobKind.VOLATILE, blob)
        assert power_on(platform).volatile_blob() == blob
        assert sc.rc_of(model.send(cmd(CC.GetRandom, u16(8)))) == RC.SUCCESS
    assert not errors, [r.getMessage() for r in errors]
