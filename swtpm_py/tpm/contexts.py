"""Saved contexts of transient objects and sequences (Part 1 §30 "Context Management"; the
reference implementation's ComputeContextProtectionKey() and ComputeContextIntegrity()).

A TPMS_CONTEXT (Part 2 §14.5) carries ``sequence`` (UINT64), ``savedHandle``, ``hierarchy`` and
``contextBlob``. The blob made here is, big-endian throughout::

    integrity   TPM2B_DIGEST   HMAC_SHA512(proof, totalResetCount [8] || clearCount [4, stClear
                               objects only] || sequence [8] || savedHandle [4] || encrypted)
    encrypted                  CFB_AES256(symKey, iv, fingerprint || slot record)

with (Part 1 §30.3, "Context Confidentiality" and "Context Integrity")

* proof: the proof of the context's hierarchy (the null proof for TPM_RH_NULL, which TPM Reset
  replaces, so such contexts die with it);
* symKey || iv = KDFa(SHA512, proof, "CONTEXT", sequence, savedHandle, (256 + 128) bits);
* fingerprint: the sequence again (UINT64), checked after decryption;
* the slot record: the object's record (:data:`swtpm_py.tpm.objects.OBJECT_RECORD`) or the
  sequence's (:data:`swtpm_py.tpm.sequences.SEQUENCE_RECORD`, its checkpoint moved forward
  first), as the slot holds it. A sequence record of the previous format (tag 0xF1, all the
  data) saved by an older swtpm_py still loads: sequences converts it when it is used.

totalResetCount (here resetCount) makes every object context invalid after TPM Reset; the
clearCount of a stClear object's context makes it invalid after TPM Restart too (Part 1 §30.2).
Which hierarchy and saved handle a blob was made for is bound through the key and the HMAC, so
changing either field is TPM_RC_INTEGRITY like changing any octet of the blob.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

import construct as c

from . import objects, sequences, sessions
from .commands.hash import hierarchy_proof
from .constants import ALG, HR_HMAC_SESSION, HR_POLICY_SESSION, HT, RC, RH
from .crypto import HASHES, kdfa
from .errors import TpmError
from .handles import TPMI_RH_HIERARCHY_NULL
from .protection import split_digest
from .sequences import is_sequence_record
from .state import SessionState, from_jsonable, to_jsonable
from .symcipher import cfb_decrypt, cfb_encrypt
from .wire import MAX_ACTIVE_SESSIONS, UINT32, UINT64, Checked

if TYPE_CHECKING:
    from .core import Tpm

#: Part 2 TPM_PT_CONTEXT_HASH (CONTEXT_INTEGRITY_HASH_ALG): the HMAC of context integrity.
CONTEXT_INTEGRITY_HASH = ALG.SHA512
#: Part 2 TPM_PT_CONTEXT_SYM / _SYM_SIZE (CONTEXT_ENCRYPT_ALG): AES-256 in CFB mode, as swtpm.
CONTEXT_ENCRYPT_ALG = ALG.AES
CONTEXT_ENCRYPT_KEY_BITS = 256
CONTEXT_IV_SIZE = 16
#: Part 1 §30.3: the KDFa label of the context encryption key.
CONTEXT_LABEL = b"CONTEXT"

#: Part 1 §30.2: savedHandle of an ordinary object, a sequence, and an stClear object.
SAVED_OBJECT = 0x80000000
SAVED_SEQUENCE = 0x80000001
SAVED_ST_CLEAR = 0x80000002

_INTEGRITY_SIZE = 2 + HASHES[CONTEXT_INTEGRITY_HASH].size
_FINGERPRINT_SIZE = 8
#: The largest contextBlob: what lets the ContextSave response and the ContextLoad command
#: fit in 4096 octets (core.MAX_RESPONSE_SIZE / MAX_COMMAND_SIZE: header 10, sequence,
#: savedHandle, hierarchy and blob size 18), below tpm2-tss's TPM2B_CONTEXT_DATA (5120). Object
#: and sequence records are far smaller (a sequence saves its hash state at a checkpoint,
#: swtpm_py.tpm.sequences.compact).
MAX_CONTEXT_SIZE = 4096 - 10 - 18
#: TPM_PT_MAX_OBJECT_CONTEXT: the largest TPMS_CONTEXT of an object (Part 2 §6.13).
MAX_OBJECT_CONTEXT = 8 + 4 + 4 + 2 + MAX_CONTEXT_SIZE


def _check_saved(handle: int) -> None:
    # Part 2 §9.13 TPMI_DH_SAVED: a session handle or one of the three object values.
    if handle in (SAVED_OBJECT, SAVED_SEQUENCE, SAVED_ST_CLEAR):
        return
    for first in (HR_HMAC_SESSION, HR_POLICY_SESSION):
        if 0 <= handle - first < MAX_ACTIVE_SESSIONS:
            return
    raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not a TPMI_DH_SAVED")


def _check_blob_size(size: int) -> None:
    if size > MAX_CONTEXT_SIZE:
        raise TpmError(RC.SIZE, detail=f"contextBlob of {size} octets")


#: TPMS_CONTEXT (Part 2 §14.5), each field checked as it is unmarshalled.
TPMS_CONTEXT = c.Struct(
    "sequence" / UINT64,
    "savedHandle" / Checked(UINT32, _check_saved),
    "hierarchy" / Checked(UINT32, TPMI_RH_HIERARCHY_NULL),
    "contextBlob" / c.Prefixed(Checked(c.Int16ub, _check_blob_size), c.GreedyBytes),
)


def _protection_key(proof: bytes, sequence: int, saved: int) -> tuple[bytes, bytes]:
    """ComputeContextProtectionKey(): (symKey, iv) from the hierarchy proof, the sequence
    number and the saved handle."""
    key_bytes = CONTEXT_ENCRYPT_KEY_BITS // 8
    out = kdfa(CONTEXT_INTEGRITY_HASH, proof, CONTEXT_LABEL, sequence.to_bytes(8, "big"),
               saved.to_bytes(4, "big"), (key_bytes + CONTEXT_IV_SIZE) * 8)
    return out[:key_bytes], out[key_bytes:]


def _integrity(tpm: Tpm, proof: bytes, sequence: int, saved: int, encrypted: bytes) -> bytes:
    """ComputeContextIntegrity(): the HMAC that binds the encrypted context to this TPM's
    boot cycle (and, for stClear objects, to this TPM Restart), sequence and handle."""
    parts = [tpm.perm.reset_count.to_bytes(8, "big")]
    if saved == SAVED_ST_CLEAR:
        parts.append(tpm.vol.state_reset.clear_count.to_bytes(4, "big"))
    parts += [sequence.to_bytes(8, "big"), saved.to_bytes(4, "big"), encrypted]
    return HASHES[CONTEXT_INTEGRITY_HASH].hmac(proof, *parts)


def save(tpm: Tpm, handle: int) -> dict[str, Any]:
    """TPM2_ContextSave of the loaded object or sequence at ``handle``: its TPMS_CONTEXT.

    Part 3 §28.2: every object context takes the next value of the object context counter
    (the reference's gr.objectContextID, state-reset data), so sequence numbers only grow
    until TPM Reset; the object stays loaded.
    """
    record = tpm.vol.loaded_objects[handle]
    if is_sequence_record(record):
        # The sequence's hash state at a checkpoint: bounded, whatever it has hashed.
        record = sequences.compact(tpm, handle)
        saved, hierarchy = SAVED_SEQUENCE, RH.NULL
    else:
        obj = objects.from_record(record)
        saved = SAVED_ST_CLEAR if obj.st_clear else SAVED_OBJECT
        hierarchy = obj.hierarchy
    if _INTEGRITY_SIZE + _FINGERPRINT_SIZE + len(record) > MAX_CONTEXT_SIZE:
        # Unreachable with the records of swtpm_py.tpm.objects and sequences (a sequence's
        # record is at most about 400 octets); kept as the guard of MAX_CONTEXT_SIZE.
        raise TpmError(RC.MEMORY, detail="context larger than TPM2B_CONTEXT_DATA")
    reset = tpm.vol.state_reset
    reset.object_context_id += 1
    sequence = reset.object_context_id
    return _protect(tpm, hierarchy, sequence, saved, record)


def _protect(tpm: Tpm, hierarchy: int, sequence: int, saved: int,
             record: bytes) -> dict[str, Any]:
    """The TPMS_CONTEXT of ``record``: encrypted and HMACed with the proof of ``hierarchy``
    (Part 1 §30.3)."""
    proof = hierarchy_proof(tpm, hierarchy)
    sym_key, iv = _protection_key(proof, sequence, saved)
    encrypted = cfb_encrypt(CONTEXT_ENCRYPT_ALG, sym_key, iv,
                            sequence.to_bytes(_FINGERPRINT_SIZE, "big") + record)
    integrity = _integrity(tpm, proof, sequence, saved, encrypted)
    blob = len(integrity).to_bytes(2, "big") + integrity + encrypted
    return dict(sequence=sequence, savedHandle=saved, hierarchy=hierarchy, contextBlob=blob)


def _is_session(handle: int) -> bool:
    return handle >> 24 in (HT.HMAC_SESSION, HT.POLICY_SESSION)


def first_context_id() -> int:
    """The sequence of the first session context after TPM Reset: MAX_LOADED_SESSIONS + 1,
    as the reference initialises gr.contextCounter (measured on swtpm 0.7.1: 4)."""
    from .properties import CAPACITY
    return CAPACITY.loaded_sessions + 1


def save_session(tpm: Tpm, handle: int) -> dict[str, Any]:
    """TPM2_ContextSave of the loaded session at ``handle`` (Part 1 §30.5, Part 3 §28.2).

    The context takes the next value of the session context counter (state-reset data);
    TPM_RC_TOO_MANY_CONTEXTS when it is exhausted, TPM_RC_CONTEXT_GAP when the new sequence
    would be TPM_PT_CONTEXT_GAP_MAX or more past the oldest saved session's. The session
    leaves TPM memory but keeps its handle: it is *saved*, and only this context (its latest)
    loads it again. It is protected with the null proof (hierarchy TPM_RH_NULL), so TPM Reset
    invalidates it.
    """
    from .properties import CAPACITY
    session = sessions.by_index(tpm, handle)
    if session is None or session.handle != handle:
        raise TpmError(RC.HANDLE, handle=1, detail=f"no session at 0x{handle:08x}")
    reset = tpm.vol.state_reset
    reset.context_counter = max(reset.context_counter, first_context_id())
    sequence = reset.context_counter
    if sequence >= 0xFFFFFFFFFFFFFFFF:
        raise TpmError(RC.TOO_MANY_CONTEXTS, detail="context counter exhausted")
    others = [s for h, s in reset.saved_sessions.items() if h != handle]
    if others and sequence - min(others) >= CAPACITY.context_gap_max:
        raise TpmError(RC.CONTEXT_GAP, detail="oldest saved session too old")
    record = json.dumps(to_jsonable(session), sort_keys=True, separators=(",", ":")).encode()
    context = _protect(tpm, RH.NULL, sequence, handle, record)
    reset.context_counter = sequence + 1
    reset.saved_sessions[handle] = sequence
    sessions.loaded(tpm).remove(session)
    return context


def _load_session(tpm: Tpm, context: Any, record: bytes) -> int:
    """Load a verified session context back into TPM memory with its handle: only the
    latest context of a saved session loads (anything else, a replay, is TPM_RC_HANDLE + P1,
    as swtpm 0.7.1), and a session slot must be free (TPM_RC_SESSION_MEMORY)."""
    from .properties import CAPACITY
    handle = context.savedHandle
    reset = tpm.vol.state_reset
    if reset.saved_sessions.get(handle) != context.sequence:
        raise TpmError(RC.HANDLE, parameter=1, detail="not the latest context of a saved session")
    if len(sessions.loaded(tpm)) >= CAPACITY.loaded_sessions:
        raise TpmError(RC.SESSION_MEMORY, detail="all session slots are in use")
    session = from_jsonable(SessionState, json.loads(record))
    del reset.saved_sessions[handle]
    sessions.loaded(tpm).append(session)
    return handle


def load(tpm: Tpm, context: Any) -> int:
    """TPM2_ContextLoad of an object or sequence context: load it into a free slot and return
    its new handle.

    Checks in the reference's order: the integrity field must be one TPM2B_DIGEST
    (TPM_RC_SIZE or TPM_RC_INSUFFICIENT, unnumbered) of the integrity hash's size
    (TPM_RC_SIZE + P1)
    followed by at least the fingerprint (TPM_RC_SIZE + P1); the HMAC must verify
    (TPM_RC_INTEGRITY + P1); then the hierarchy must be enabled (TPM_RC_HIERARCHY + P1), and
    a slot free (TPM_RC_OBJECT_MEMORY).
    """
    blob = context.contextBlob
    saved = context.savedHandle
    # The reference returns the unmarshalling result of the integrity as it is, so a
    # truncated one is TPM_RC_INSUFFICIENT without a parameter number (measured on swtpm
    # 0.7.1: 0x09A).
    # TPM2B_DIGEST_Unmarshal(): larger than any digest is TPM_RC_SIZE (unnumbered, 0x095).
    integrity, encrypted = split_digest(blob)
    if len(integrity) != HASHES[CONTEXT_INTEGRITY_HASH].size:
        raise TpmError(RC.SIZE, parameter=1, detail="integrity is not a SHA-512 digest")
    if len(encrypted) < _FINGERPRINT_SIZE:
        raise TpmError(RC.SIZE, parameter=1, detail="no room for the fingerprint")
    proof = hierarchy_proof(tpm, context.hierarchy)
    expected = _integrity(tpm, proof, context.sequence, saved, encrypted)
    if not hmac.compare_digest(integrity, expected):
        raise TpmError(RC.INTEGRITY, parameter=1, detail="context integrity check failed")
    sym_key, iv = _protection_key(proof, context.sequence, saved)
    plain = cfb_decrypt(CONTEXT_ENCRYPT_ALG, sym_key, iv, encrypted)
    if plain[:_FINGERPRINT_SIZE] != context.sequence.to_bytes(_FINGERPRINT_SIZE, "big"):
        # The HMAC held, so only a broken TPM gets here (the reference goes into failure
        # mode).
        raise TpmError(RC.FAILURE, detail="context fingerprint mismatch")
    record = plain[_FINGERPRINT_SIZE:]
    if _is_session(saved):
        return _load_session(tpm, context, record)
    if not objects.hierarchy_enabled(tpm, context.hierarchy):
        raise TpmError(RC.HIERARCHY, parameter=1, detail="hierarchy disabled")
    handle = objects.free_handle(tpm)
    tpm.vol.loaded_objects[handle] = record
    return handle
