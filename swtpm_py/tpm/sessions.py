"""Authorization sessions: the session table, session creation, and the session side of command
processing (Part 1 §19.6-19.7 HMAC and policy sessions, §21 parameter encryption, §32.4 audit
sessions), in the order of the reference implementation (Session.c, SessionProcess.c), which
swtpm 0.7.1 exhibits.

The table
    Loaded sessions live in ``VolatileData.sessions`` (:class:`~swtpm_py.tpm.state.SessionTable`),
    so they travel in the volatile blob; a TPM2_Startup builds a new VolatileData, which flushes
    them (Part 1 §19.6.1). A session's handle is HMAC_SESSION_FIRST or POLICY_SESSION_FIRST plus
    the lowest index (0..active_sessions-1) that no active session uses, so HMAC and policy
    sessions share one index space, as in the reference (0x02000000, then 0x03000001 ...).

Command processing, driven by the dispatcher (:mod:`.core`):

1. :func:`check_entry` — each HMAC/policy entry of the authorization area as it is unmarshalled
   (the reference's RetrieveSessionData()).
2. :class:`CommandAuth` + :func:`authorize` — one check per session, in order: the HMAC over
   cpHash (Part 1 §19.6.5), or the policy checks then the HMAC or password (Part 1 §19.7).
3. :func:`decrypt_parameter` — the first command parameter, when a session has *decrypt*.
4. :func:`respond` — after the command: new nonceTPM for every session, the first response
   parameter encrypted, audit digests extended, the response HMACs (over rpHash), policy data
   reset, and the sessions without continueSession flushed.
"""

from __future__ import annotations

import hmac as _hmac
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import da, nv, paramenc
from .constants import ALG, CC, HR_HMAC_SESSION, HR_POLICY_SESSION, HT, RC, RH, SE, SessionAttr
from .crypto import HASHES, kdfa
from .entity import Entity, permanent_entity, register_resolver, resolve
from .errors import TpmError, for_session
from .registry import Auth, CommandSpec
from .state import SessionState

if TYPE_CHECKING:
    from .core import CommandContext, Tpm

#: The index part of a session handle (Part 2 §7.1: the low 24 bits).
INDEX_MASK = 0x00FFFFFF

#: Part 1 §19.6.8: the label of the session key derivation.
SESSION_KEY_LABEL = b"ATH"

# ---------------------------------------------------------------------------- the table


def loaded(tpm: Tpm) -> list[SessionState]:
    """The loaded sessions, in the order they were loaded."""
    return tpm.vol.sessions.loaded


def loaded_handles(tpm: Tpm) -> list[int]:
    """The handles of the loaded sessions (GetCapability(HANDLES) of TPM_HT_LOADED_SESSION)."""
    return [s.handle for s in loaded(tpm)]


def saved_handles(tpm: Tpm) -> list[int]:
    """The handles of the saved sessions (GetCapability(HANDLES) of TPM_HT_SAVED_SESSION;
    Part 1 §30.5: a saved session keeps its handle until it is loaded or flushed). Like the
    reference's SessionCapGetSaved(), which knows only the slot, every one is listed with the
    HMAC session type (measured on swtpm 0.7.1: a saved 0x03000001 is listed as 0x02000001)."""
    return [HR_HMAC_SESSION | (h & INDEX_MASK) for h in tpm.vol.state_reset.saved_sessions]


def by_index(tpm: Tpm, handle: int) -> SessionState | None:
    """The loaded session whose index is that of ``handle``, whatever its type.

    The reference finds a session by the index alone (SessionIsLoaded() masks the type), and
    reports the type mismatch separately where it matters (TPM_RC_HANDLE)."""
    index = handle & INDEX_MASK
    for session in loaded(tpm):
        if session.handle & INDEX_MASK == index:
            return session
    return None


def get(tpm: Tpm, handle: int) -> SessionState | None:
    """The loaded session ``handle`` refers to, or None."""
    session = by_index(tpm, handle)
    return session if session is not None and session.handle == handle else None


def is_loaded(tpm: Tpm, handle: int) -> bool:
    """Whether a session is loaded at ``handle``'s index (the reference's SessionIsLoaded())."""
    return by_index(tpm, handle) is not None


def flush(tpm: Tpm, handle: int) -> bool:
    """Remove the session at ``handle``; False when none is loaded there.

    Like the reference's TPM2_FlushContext() (swtpm 0.7.1: FlushContext(0x02000002) flushes the
    policy session 0x03000002), the session is found by its index alone. Flushing the exclusive
    audit session leaves no exclusive audit session (Part 3 §28.4)."""
    session = by_index(tpm, handle)
    table = tpm.vol.sessions
    if session is None:
        # Part 3 §28.4: a saved session is flushed too (its contexts then never load again);
        # measured on swtpm 0.7.1: FlushContext of a saved session succeeds.
        saved = tpm.vol.state_reset.saved_sessions
        for other in list(saved):
            if other & INDEX_MASK == handle & INDEX_MASK:
                del saved[other]
                if table.exclusive_audit == other:
                    table.exclusive_audit = 0
                return True
        return False
    table.loaded.remove(session)
    if table.exclusive_audit == handle:
        table.exclusive_audit = 0
    return True


def flush_context(tpm: Tpm, handle: int) -> None:
    """TPM2_FlushContext of a session handle: TPM_RC_HANDLE when nothing is loaded there (the
    flusher registered with :func:`swtpm_py.tpm.commands.object.register_flusher`)."""
    if not flush(tpm, handle):
        raise TpmError(RC.HANDLE, detail=f"no session at 0x{handle:08x}")


def _resolve_session(tpm: Tpm, handle: int) -> Entity:
    """A session handle in a command's handle area (policy commands' policySession): its Name
    is the handle (Part 1 §16). Not loaded is TPM_RC_REFERENCE_H0; a loaded session of the
    other type TPM_RC_HANDLE (the reference's EntityGetLoadStatus())."""
    session = by_index(tpm, handle)
    if session is None:
        raise TpmError(RC.REFERENCE_H0, detail=f"session 0x{handle:08x} not loaded")
    if session.handle != handle:
        raise TpmError(RC.HANDLE, detail=f"0x{handle:08x} is a session of the other type")
    return Entity(handle, handle.to_bytes(4, "big"))


register_resolver(HT.HMAC_SESSION, _resolve_session)
register_resolver(HT.POLICY_SESSION, _resolve_session)

# ---------------------------------------------------------------------------- creation

def auth_value(entity: Entity) -> bytes:
    """The authValue of ``entity`` with trailing zero octets removed (Part 1 §19.6.4 / the
    reference's EntityGetAuthValue())."""
    return entity.auth_value.rstrip(b"\x00")


def bind_value(entity: Entity) -> bytes:
    """What a bound session remembers of its bind entity: its Name and its authValue at binding
    time, so that a changed authValue (or another entity of the same Name) ends the binding
    (Part 1 §19.6.10; the reference's SessionComputeBoundEntity())."""
    return len(entity.name).to_bytes(2, "big") + entity.name + auth_value(entity)


def start(tpm: Tpm, *, session_type: int, auth_hash: int, nonce_caller: bytes,
          sym: paramenc.SymDef, bind: int, salt: bytes, index: int) -> SessionState:
    """Create and load a session at ``index`` (the caller has checked the slots): the
    reference's SessionCreate().

    Part 1 §19.6.8: nonceTPM is as long as nonceCaller; a bound or salted session has the key
    sessionKey = KDFa(authHash, bind.authValue || salt, "ATH", nonceTPM, nonceCaller, digest
    bits), an unbound unsalted one an empty key. Only an HMAC session is *bound* (its HMACs
    omit the bind entity's authValue); any bind makes the session subject to the dictionary
    attack logic when the bind entity is (Part 1 §19.8.5)."""
    h = HASHES[auth_hash]
    policy = session_type != SE.HMAC
    first = HR_POLICY_SESSION if policy else HR_HMAC_SESSION
    nonce_tpm = tpm.drbg.generate(len(nonce_caller))
    entity = resolve(tpm, bind)
    session_key = b""
    if bind != RH.NULL or salt:
        key = (auth_value(entity) if bind != RH.NULL else b"") + salt
        session_key = kdfa(auth_hash, key, SESSION_KEY_LABEL, nonce_tpm, nonce_caller, 8 * h.size)
    da_bound = bind != RH.NULL and not entity.no_da
    session = SessionState(
        handle=first + index, policy=policy, trial=session_type == SE.TRIAL,
        auth_hash=auth_hash, nonce_tpm=nonce_tpm, session_key=session_key,
        sym_alg=sym.alg, sym_key_bits=sym.key_bits, sym_mode=sym.mode,
        bound_entity=bind_value(entity) if bind != RH.NULL and not policy else b"",
        da_bound=da_bound, lockout_bound=da_bound and bind == RH.LOCKOUT)
    if policy:
        session.policy_digest = bytes(h.size)
        session.start_time = tpm.time_ms()
    loaded(tpm).append(session)
    return session


def reset_policy(session: SessionState) -> None:
    """Part 3 §23.13 TPM2_PolicyRestart (and after each use that continues the session): the
    policy digest back to zeros and every policy assertion forgotten; the nonce, the bind
    attributes and the type stay (the reference's SessionResetPolicyData())."""
    session.policy_digest = bytes(HASHES[session.auth_hash].size)
    session.command_code = 0
    session.locality = 0
    session.pcr_counter = 0
    session.cp_hash = b""
    session.cp_hash_defined = False
    session.template_set = False
    session.auth_value_needed = False
    session.password_needed = False
    session.pp_required = False
    session.nv_written_check = False
    session.nv_written_state = False
    session.timeout = 0


def policy_update(session: SessionState, code: int, *parts: bytes) -> None:
    """policyDigest_new := H(policyDigest_old || commandCode || parts) (Part 1 §19.7.2)."""
    session.policy_digest = HASHES[session.auth_hash].digest(
        session.policy_digest, code.to_bytes(4, "big"), *parts)


def sym_def(session: SessionState) -> paramenc.SymDef:
    """The session's parameter-encryption algorithm."""
    return paramenc.SymDef(session.sym_alg, session.sym_key_bits, session.sym_mode)

# ---------------------------------------------------------------------------- commands


def check_entry(tpm: Tpm, spec: CommandSpec, prior: list, entry: object, n: int) -> None:
    """Part 1 §18.7 / the reference's RetrieveSessionData(): checks of the loaded HMAC or policy
    session ``entry`` (a parsed TPMS_AUTH_COMMAND with handle, nonce, attributes, hmac) that is
    session number ``n``, after the sessions ``prior``.

    The handle type must match the session (TPM_RC_HANDLE); a session appears once; decrypt,
    encrypt and audit each in one session, only where the command allows it (a TPM2B first
    parameter / response parameter), and not with symmetric TPM_ALG_NULL (TPM_RC_SYMMETRIC);
    a policy session cannot audit; an exclusive-audit claim must be true (TPM_RC_EXCLUSIVE).
    """
    handle, attributes = entry.handle, entry.attributes  # type: ignore[attr-defined]
    session = by_index(tpm, handle)
    assert session is not None  # the dispatcher checked that it is loaded
    policy_handle = handle >> 24 == HT.POLICY_SESSION
    if session.policy != policy_handle:
        raise TpmError(RC.HANDLE, session=n, detail="session type does not match the handle")
    if any(p.handle == handle for p in prior):
        raise TpmError(RC.HANDLE, session=n, detail="session used twice")
    for bit, allowed in ((SessionAttr.DECRYPT, spec.decrypt), (SessionAttr.ENCRYPT, spec.encrypt)):
        if attributes & bit:
            if not allowed or any(p.attributes & bit for p in prior):
                raise TpmError(RC.ATTRIBUTES, session=n, detail=f"{bit.name} not allowed")
            if session.sym_alg == ALG.NULL:
                raise TpmError(RC.SYMMETRIC, session=n, detail="session has no cipher")
    if attributes & SessionAttr.AUDIT:
        if any(p.attributes & SessionAttr.AUDIT for p in prior) or policy_handle:
            raise TpmError(RC.ATTRIBUTES, session=n, detail="audit not allowed")
        if (not attributes & SessionAttr.AUDIT_RESET and session.audit
                and attributes & SessionAttr.AUDIT_EXCLUSIVE
                and tpm.vol.sessions.exclusive_audit != handle):
            raise TpmError(RC.EXCLUSIVE, detail="audit session is no longer exclusive")


@dataclass
class Use:
    """One entry of a command's authorization area as this command uses it."""

    handle: int
    nonce_caller: bytes
    #: TPMA_SESSION as sent; the response echoes it (auditExclusive as the TPM sets it).
    attributes: int
    hmac: bytes
    #: The loaded session (None for the password session TPM_RS_PW).
    session: SessionState | None
    #: The handle this session authorizes, None for an audit/encrypt/decrypt-only session.
    associated: int | None = None
    role: Auth = Auth.NONE
    #: Whether the authValue of ``associated`` is part of the HMAC key (Part 1 §19.6.5).
    include_auth: bool = False

    @property
    def continue_session(self) -> bool:
        """TPMA_SESSION.continueSession: keep the session loaded after the command."""
        return bool(self.attributes & SessionAttr.CONTINUE_SESSION)


class CommandAuth:
    """The sessions of one command and what their checks need: the command code, the handles
    (for their Names), the parameter area *as sent* (for cpHash) and the locality."""

    def __init__(self, ctx: CommandContext, spec: CommandSpec, handles: list[int],
                 entries: list, parameters: bytes) -> None:
        self.tpm = ctx.tpm
        self.code = ctx.code
        self.locality = ctx.locality
        self.spec = spec
        self.handles = handles
        self.parameters = parameters
        auth_slots = [(h, hs.auth) for h, hs in zip(handles, spec.handles) if hs.auth is not Auth.NONE]
        self.uses: list[Use] = []
        for n, e in enumerate(entries):
            use = Use(e.handle, e.nonce, e.attributes, e.hmac,
                      None if e.handle == RH.PW else get(self.tpm, e.handle))
            if n < len(auth_slots):
                use.associated, use.role = auth_slots[n]
            self.uses.append(use)
        #: Index (0-based) of the session that decrypts the first parameter, or None.
        self.decrypt = self._index_of(SessionAttr.DECRYPT)
        #: Index of the session that encrypts the first response parameter, or None.
        self.encrypt = self._index_of(SessionAttr.ENCRYPT)
        self._cp_hashes: dict[int, bytes] = {}
        self._names: list[bytes] | None = None

    def _index_of(self, bit: SessionAttr) -> int | None:
        for i, use in enumerate(self.uses):
            if use.session is not None and use.attributes & bit:
                return i
        return None

    def names(self) -> list[bytes]:
        """The Names of the command's handles (Part 1 §16), in handle order."""
        if self._names is None:
            self._names = [resolve(self.tpm, h).name for h in self.handles]
        return self._names

    def cp_hash(self, alg: int) -> bytes:
        """Part 1 §18.7 cpHash := H_alg(commandCode || Name1 || Name2 || Name3 || parameters),
        over the parameters as sent (before parameter decryption)."""
        if alg not in self._cp_hashes:
            self._cp_hashes[alg] = HASHES[alg].digest(
                self.code.to_bytes(4, "big"), *self.names(), self.parameters)
        return self._cp_hashes[alg]

    def name_hash(self, alg: int) -> bytes:
        """Part 3 §23.8 nameHash := H_alg(Name1 || Name2 || Name3)."""
        return HASHES[alg].digest(*self.names())

    def rp_hash(self, alg: int, parameters: bytes) -> bytes:
        """Part 1 §18.8 rpHash := H_alg(responseCode || commandCode || parameters), responseCode
        being TPM_RC_SUCCESS (only successful responses carry HMACs)."""
        return HASHES[alg].digest(bytes(4), self.code.to_bytes(4, "big"), parameters)


def authorize(auth: CommandAuth, n: int) -> None:
    """Check HMAC or policy session number ``n`` (1-based) of the command (the reference's
    ParseSessionBuffer() loop body for a session that is not TPM_RS_PW). Errors carry the
    session number where the code is format 1."""
    use = auth.uses[n - 1]
    session = use.session
    assert session is not None
    if session.trial:
        # Part 3 §11.1: a trial session only computes a digest; it authorizes nothing.
        raise TpmError(RC.ATTRIBUTES, session=n, detail="trial session in the auth area")
    if use.attributes & SessionAttr.AUDIT:
        # The audit digest covers cpHash as it is now (before the command runs).
        auth.cp_hash(session.auth_hash)
    try:
        if use.associated is not None:
            _check_auth_session(auth, n - 1)
        else:
            # Part 1 §19.6.2: a session that authorizes no handle must audit, encrypt or
            # decrypt; its HMAC is keyed with the sessionKey alone.
            if not use.attributes & (SessionAttr.AUDIT | SessionAttr.ENCRYPT
                                     | SessionAttr.DECRYPT):
                raise TpmError(RC.ATTRIBUTES, detail="session has no purpose")
            use.include_auth = False
            _check_hmac(auth, n - 1)
    except TpmError as exc:
        raise TpmError(for_session(exc.rc, n), detail=exc.detail) from None


def _policy_required(handle: int, entity: Entity, role: Auth) -> bool:
    """Part 1 §19.7.1 (IsPolicySessionRequired()): the DUP role always, the ADMIN role unless the
    entity is an object without adminWithPolicy, and a PCR with an authPolicy need a policy."""
    if role is Auth.DUP:
        return True
    if role is Auth.ADMIN:
        return handle >> 24 != HT.TRANSIENT or entity.admin_with_policy
    if handle >> 24 == HT.PCR:
        return entity.auth_policy.alg != ALG.NULL
    return False


#: The permanent handles that have an authValue (hierarchies, lockout and the empty NULL one).
_PERMANENT_AUTH = frozenset({RH.OWNER, RH.ENDORSEMENT, RH.PLATFORM, RH.LOCKOUT, RH.NULL})


def _auth_value_available(auth: CommandAuth, handle: int, entity: Entity, role: Auth) -> bool:
    """Part 1 §19.7.1 (IsAuthValueAvailable()): whether an HMAC or password session may use the
    entity's authValue for ``role`` in this command."""
    handle_type = handle >> 24
    if handle_type == HT.NV_INDEX:
        return nv.auth_value_available(auth.tpm, handle, auth.code)
    if handle_type == HT.PERMANENT:
        return handle in _PERMANENT_AUTH
    if handle_type == HT.PCR:
        return True
    if handle_type == HT.TRANSIENT:
        return not entity.public_only and (
            entity.user_with_auth or (role is Auth.ADMIN and not entity.admin_with_policy))
    return entity.user_with_auth


def _policy_available(auth: CommandAuth, handle: int, entity: Entity) -> bool:
    """Part 1 §19.7.1 (IsAuthPolicyAvailable()): an object always has an authPolicy (an empty
    one matches no policy); an NV index per its POLICYREAD/POLICYWRITE; other entities only
    when it is set."""
    if handle >> 24 == HT.NV_INDEX:
        return nv.policy_available(auth.tpm, handle, auth.code)
    if handle >> 24 == HT.TRANSIENT:
        return True
    if handle >> 24 == HT.PCR:
        return entity.auth_policy.alg != ALG.NULL
    return bool(entity.auth_policy.digest)


def check_password_role(auth: CommandAuth, n: int) -> None:
    """Part 1 §19.7.1 for the password session number ``n``: the role must not need a policy
    session (TPM_RC_AUTH_TYPE) and the entity's authValue must be usable for it
    (TPM_RC_AUTH_UNAVAILABLE) — the checks the reference's CheckAuthSession() makes before it
    compares the password."""
    use = auth.uses[n - 1]
    assert use.associated is not None
    entity = resolve(auth.tpm, use.associated)
    if _policy_required(use.associated, entity, use.role):
        raise TpmError(RC.AUTH_TYPE, detail="a policy session is required")
    if not _auth_value_available(auth, use.associated, entity, use.role):
        raise TpmError(RC.AUTH_UNAVAILABLE, detail="authValue may not be used")


def _check_auth_session(auth: CommandAuth, i: int) -> None:
    """Part 1 §19.6-19.7 (the reference's CheckAuthSession()) for a session with an associated
    handle."""
    use = auth.uses[i]
    session = use.session
    assert session is not None and use.associated is not None
    entity = resolve(auth.tpm, use.associated)
    if session.policy:
        use.include_auth = session.auth_value_needed or session.password_needed
    else:
        # Part 1 §19.6.10: a bound session's HMAC omits the authValue of its bind entity.
        use.include_auth = not (session.bound_entity
                                and session.bound_entity == bind_value(entity))
    # Part 1 §19.8.6: an authorization that uses a DA-protected authValue is refused in lockout
    # before anything else is checked.
    da.check_authorization(auth.tpm, use.associated, use.include_auth)
    if session.policy:
        if not _policy_available(auth, use.associated, entity):
            raise TpmError(RC.AUTH_UNAVAILABLE, detail="entity has no authPolicy")
        _check_policy(auth, use, entity)
    else:
        if _policy_required(use.associated, entity, use.role):
            raise TpmError(RC.AUTH_TYPE, detail="a policy session is required")
        if not _auth_value_available(auth, use.associated, entity, use.role):
            raise TpmError(RC.AUTH_UNAVAILABLE, detail="authValue may not be used")
    if session.policy and session.password_needed:
        # Part 3 §23.18 PolicyPassword: the hmac field carries the authValue in the clear.
        if not _hmac.compare_digest(use.hmac.rstrip(b"\x00"), auth_value(entity)):
            raise _auth_failure(auth, use)
    else:
        _check_hmac(auth, i)


def _check_policy(auth: CommandAuth, use: Use, entity: Entity) -> None:
    """Part 1 §19.7.3 (the reference's CheckPolicyAuthSession()): the policy session's digest
    and every condition its policy commands recorded."""
    session = use.session
    assert session is not None
    tpm = auth.tpm
    if (auth.code == CC.PolicySecret and not session.password_needed
            and not session.auth_value_needed):
        raise TpmError(RC.MODE, detail="PolicySecret needs PolicyAuthValue/PolicyPassword")
    if session.pcr_counter and session.pcr_counter != tpm.vol.state_reset.pcr_counter:
        raise TpmError(RC.PCR_CHANGED, detail="PCRs changed since PolicyPCR")
    if not _hmac.compare_digest(session.policy_digest, entity.auth_policy.digest):
        raise TpmError(RC.POLICY_FAIL, detail="policyDigest does not match authPolicy")
    if entity.auth_policy.alg != session.auth_hash:
        raise TpmError(RC.POLICY_FAIL, detail="authPolicy of another hash")
    if session.timeout and session.timeout < tpm.time_ms():
        raise TpmError(RC.EXPIRED, detail="policy session expired")
    if session.command_code:
        if session.command_code != auth.code:
            raise TpmError(RC.POLICY_CC, detail="policy is for another command")
    elif use.role in (Auth.ADMIN, Auth.DUP):
        raise TpmError(RC.POLICY_FAIL, detail="ADMIN/DUP role needs PolicyCommandCode")
    if session.locality and not locality_allowed(session.locality, auth.locality):
        raise TpmError(RC.LOCALITY, detail=f"locality {auth.locality} not in the policy")
    if session.pp_required:
        # This platform never asserts physical presence (as swtpm).
        raise TpmError(RC.PP, detail="physical presence required")
    if session.nv_written_check and nv.written(tpm, use.associated) != session.nv_written_state:
        raise TpmError(RC.POLICY_FAIL, detail="TPMA_NV_WRITTEN is not as PolicyNvWritten asked")
    if session.cp_hash:
        if session.cp_hash_defined:
            ok = session.cp_hash == auth.cp_hash(session.auth_hash)
        elif session.template_set:
            ok = session.cp_hash == _template_hash(auth, session.auth_hash)
        else:
            ok = session.cp_hash == auth.name_hash(session.auth_hash)
        if not ok:
            raise TpmError(RC.POLICY_FAIL, detail="cpHash/nameHash/template mismatch")


def locality_allowed(setting: int, locality: int) -> bool:
    """Whether TPMA_LOCALITY ``setting`` (Part 2 §8.5: bits 0-4 for localities 0-4, or an
    extended locality 32-255 as a value) admits ``locality``."""
    if locality < 5:
        return setting < 32 and bool(setting & (1 << locality))
    if locality > 31:
        return setting == locality
    return False


def _template_hash(auth: CommandAuth, alg: int) -> bytes:
    """Part 3 §23.21 PolicyTemplate at use: H(the template) of TPM2_Create, CreatePrimary or
    CreateLoaded, whose second parameter it is (after the TPM2B first parameter)."""
    if auth.code not in (CC.Create, CC.CreatePrimary, CC.CreateLoaded):
        return b""
    data = auth.parameters
    if len(data) < 2:
        return b""
    offset = 2 + int.from_bytes(data[:2], "big")
    if len(data) < offset + 2:
        return b""
    size = int.from_bytes(data[offset:offset + 2], "big")
    if size > len(data) - offset - 2:
        return b""
    return HASHES[alg].digest(data[offset + 2:offset + 2 + size])


def _auth_after_command(tpm: Tpm, handle: int) -> bytes:
    """The authValue for keys computed after the command ran: a hierarchy's authValue even when
    the command just disabled that hierarchy (TPM2_HierarchyControl)."""
    if handle >> 24 == HT.PERMANENT:
        return auth_value(permanent_entity(tpm, handle))
    return auth_value(resolve(tpm, handle))


def _hmac_key(auth: CommandAuth, use: Use) -> bytes:
    """sessionKey || authValue of the associated entity when it is included (Part 1 §19.6.5).
    After the command the entity may be gone (e.g. an undefined NV index): then it has none."""
    session = use.session
    assert session is not None
    if not use.include_auth or use.associated is None:
        return session.session_key
    try:
        return session.session_key + _auth_after_command(auth.tpm, use.associated)
    except TpmError:
        return session.session_key


def _check_hmac(auth: CommandAuth, i: int) -> None:
    """Part 1 §19.6.5: hmac = HMAC_authHash(sessionKey || authValue, cpHash || nonceCaller ||
    nonceTPM || nonceTPM_decrypt || nonceTPM_encrypt || sessionAttributes).

    The nonces of the decrypt and encrypt sessions enter only the first session's HMAC, when
    that session authorizes a handle and is not itself the decrypt/encrypt session (Part 1
    §19.6.5, so that the authorizing session vouches for them). With an empty key an empty
    HMAC is accepted (nothing secret to prove)."""
    use = auth.uses[i]
    session = use.session
    assert session is not None
    extra = b""
    if i == 0 and use.associated is not None:
        if auth.decrypt is not None and auth.decrypt != i:
            extra += _nonce_of(auth, auth.decrypt)
        if auth.encrypt is not None and auth.encrypt != i and auth.encrypt != auth.decrypt:
            extra += _nonce_of(auth, auth.encrypt)
    key = _hmac_key(auth, use)
    if not key and not use.hmac:
        return
    expected = HASHES[session.auth_hash].hmac(
        key, auth.cp_hash(session.auth_hash), use.nonce_caller, session.nonce_tpm, extra,
        bytes([use.attributes]))
    if not _hmac.compare_digest(expected, use.hmac):
        raise _auth_failure(auth, use)


def _nonce_of(auth: CommandAuth, i: int) -> bytes:
    session = auth.uses[i].session
    assert session is not None
    return session.nonce_tpm


def _auth_failure(auth: CommandAuth, use: Use) -> TpmError:
    """Part 1 §19.8.5 (the reference's IncrementLockout()): TPM_RC_AUTH_FAIL when the failure
    involves a DA-protected authValue (the associated entity's, or a DA-protected bind entity's),
    TPM_RC_BAD_AUTH otherwise."""
    session = use.session
    assert session is not None
    return TpmError(da.increment_lockout(auth.tpm, use.associated, session, use.include_auth),
                    detail="wrong HMAC")


def decrypt_parameter(auth: CommandAuth) -> bytes | None:
    """Part 1 §21: the parameter area with the first parameter's data decrypted, or None when
    no session decrypts. The key is sessionKey || authValue of the entity the session
    authorizes (if any), whether or not the session is bound to it."""
    if auth.decrypt is None:
        return None
    n = auth.decrypt + 1
    use = auth.uses[auth.decrypt]
    session = use.session
    assert session is not None
    data = auth.parameters
    if len(data) < 2:
        raise TpmError(RC.INSUFFICIENT, session=n, detail="no first parameter to decrypt")
    size = int.from_bytes(data[:2], "big")
    if size > len(data) - 2:
        raise TpmError(RC.SIZE, session=n, detail="encrypted parameter larger than the area")
    key = _encryption_key(auth, use)
    plain = paramenc.decrypt_command_parameter(sym_def(session), session.auth_hash, key,
                                               use.nonce_caller, session.nonce_tpm,
                                               data[2:2 + size])
    return data[:2] + plain + data[2 + size:]


def _encryption_key(auth: CommandAuth, use: Use) -> bytes:
    session = use.session
    assert session is not None
    if use.associated is None:
        return session.session_key
    try:
        return session.session_key + _auth_after_command(auth.tpm, use.associated)
    except TpmError:
        return session.session_key


def respond(auth: CommandAuth, parameters: bytes) -> tuple[bytes, bytes]:
    """After a successful command: (the response parameters, first one encrypted if a session
    has *encrypt*; the response authorization area). Part 1 §18.8 and the reference's
    BuildResponseSession(): every session gets a new nonceTPM, then parameter encryption, the
    audit digests, each session's response HMAC (policy sessions are reset, sessions without
    continueSession flushed)."""
    tpm = auth.tpm
    for use in auth.uses:
        if use.session is not None:
            use.session.nonce_tpm = tpm.drbg.generate(len(use.session.nonce_tpm))
    if auth.encrypt is not None:
        parameters = _encrypt_parameter(auth, auth.uses[auth.encrypt], parameters)
    _update_audit(auth, parameters)
    area = bytearray()
    for use in auth.uses:
        session = use.session
        if session is None:
            # Part 1 §19.8.4: a password session always continues; no nonce, no HMAC.
            area += _auth_response(b"", use.attributes | SessionAttr.CONTINUE_SESSION, b"")
            continue
        if session.policy and session.password_needed:
            mac = b""
        else:
            mac = _response_hmac(auth, use, parameters)
        if session.policy and use.continue_session:
            # Part 1 §19.7.2: a policy session starts over after each use.
            reset_policy(session)
            session.start_time = tpm.time_ms()
        area += _auth_response(session.nonce_tpm, use.attributes, mac)
        if not use.continue_session and session in loaded(tpm):
            loaded(tpm).remove(session)
    return parameters, bytes(area)


def end_exclusive_audit(tpm: Tpm) -> None:
    """A successful command that could have had an audit session but had none: no session is
    the exclusive audit session any more (Part 1 §32.4.4)."""
    tpm.vol.sessions.exclusive_audit = 0


def _auth_response(nonce: bytes, attributes: int, mac: bytes) -> bytes:
    """TPMS_AUTH_RESPONSE (Part 2 §10.13.3)."""
    return (struct.pack(">H", len(nonce)) + nonce + bytes([attributes])
            + struct.pack(">H", len(mac)) + mac)


def _encrypt_parameter(auth: CommandAuth, use: Use, parameters: bytes) -> bytes:
    """Part 1 §21: encrypt the data of the first response parameter (a TPM2B) with the new
    nonceTPM as the newer nonce."""
    session = use.session
    assert session is not None
    size = int.from_bytes(parameters[:2], "big")
    cipher = paramenc.encrypt_response_parameter(sym_def(session), session.auth_hash,
                                                 _encryption_key(auth, use), session.nonce_tpm,
                                                 use.nonce_caller, parameters[2:2 + size])
    return parameters[:2] + cipher + parameters[2 + size:]


def _update_audit(auth: CommandAuth, parameters: bytes) -> None:
    """Part 1 §32.4 (the reference's UpdateAuditSessionStatus()): the audit session's digest
    becomes H(digest || cpHash || rpHash); its first use (or auditReset) starts it at zeros and
    makes it the exclusive audit session, which it stays while every audited command uses it."""
    table = auth.tpm.vol.sessions
    audited = 0
    for use in auth.uses:
        session = use.session
        if session is None or not use.attributes & SessionAttr.AUDIT:
            continue
        audited = session.handle
        h = HASHES[session.auth_hash]
        if not session.audit or use.attributes & SessionAttr.AUDIT_RESET:
            session.audit = True
            # An audit session is no longer bound (its HMACs use the authValue again).
            session.bound_entity = b""
            session.audit_digest = bytes(h.size)
            table.exclusive_audit = session.handle
        elif table.exclusive_audit != session.handle:
            table.exclusive_audit = 0
        if table.exclusive_audit == session.handle:
            use.attributes |= SessionAttr.AUDIT_EXCLUSIVE
        else:
            use.attributes &= ~SessionAttr.AUDIT_EXCLUSIVE
        session.audit_digest = h.digest(session.audit_digest, auth.cp_hash(session.auth_hash),
                                        auth.rp_hash(session.auth_hash, parameters))
    if not audited:
        table.exclusive_audit = 0


def _response_hmac(auth: CommandAuth, use: Use, parameters: bytes) -> bytes:
    """Part 1 §19.6.6: HMAC_authHash(sessionKey || authValue, rpHash || nonceTPM || nonceCaller
    || sessionAttributes), with the new nonceTPM and the entity's authValue as it is after the
    command (TPM2_HierarchyChangeAuth answers with the new one). Empty when the key and the
    command's HMAC were both empty."""
    session = use.session
    assert session is not None
    key = _hmac_key(auth, use)
    if not key and not use.hmac:
        return b""
    return HASHES[session.auth_hash].hmac(
        key, auth.rp_hash(session.auth_hash, parameters), session.nonce_tpm, use.nonce_caller,
        bytes([use.attributes]))
