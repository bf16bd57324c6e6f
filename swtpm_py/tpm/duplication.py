"""Credential protection and duplication blobs (Part 1 §23 "Duplication", §24 "Credential
Protection"; the reference's SecretToCredential() / CredentialToSecret() and
SensitiveToDuplicate() / DuplicateToSensitive()).

Both send a secret to a protector key, usually of another TPM, through the outer wrapper of
:mod:`swtpm_py.tpm.protection` with a seed shared by :func:`~swtpm_py.tpm.secret.encrypt_secret`
(label "IDENTITY" for credentials, "DUPLICATE" for duplication):

* a credential blob (TPMS_ID_OBJECT) is the outer wrapper, for the Name of the object the
  credential is bound to, around the TPM2B_DIGEST credential;
* a duplication blob (TPM2B_PRIVATE) is, from the inside out: the TPM2B_SENSITIVE of the object,
  an optional inner wrapper (integrity H_nameAlg(TPM2B_SENSITIVE || Name) in front, then all of
  it CFB-encrypted with a caller's symmetric key and a zero IV — Part 1 §23.3.2.2), and an
  optional outer wrapper to the new parent.
"""

from __future__ import annotations

import hmac
from typing import Any

from .constants import ALG, RC
from .crypto import HASHES
from .errors import TpmError
from .objects_wire import parse_sensitive
from .protection import outer_unwrap, outer_wrap, split_digest
from .symcipher import BLOCK_SIZES, cfb_decrypt, cfb_encrypt

#: Part 1 §24.4: the label of a credential's seed (with its NUL, as a TPM2B_STRING).
IDENTITY_LABEL = b"IDENTITY\x00"
#: Part 1 §23.3.2.3: the label of a duplication seed.
DUPLICATE_LABEL = b"DUPLICATE\x00"


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


# ---------------------------------------------------------------------------- credentials


def make_credential_blob(protector_public: Any, seed: bytes, object_name: bytes,
                         credential: bytes) -> bytes:
    """SecretToCredential(): the TPM2B_ID_OBJECT contents carrying ``credential`` to the
    holder of the protector key for the object ``object_name``."""
    return outer_wrap(protector_public, seed, object_name, _sized(credential))


def credential_from_blob(protector_public: Any, seed: bytes, object_name: bytes,
                         blob: bytes) -> bytes:
    """CredentialToSecret(): the credential inside ``blob``. A changed blob, another object's
    Name or another seed are TPM_RC_INTEGRITY; a decrypted area that is not exactly one
    TPM2B_DIGEST is TPM_RC_INSUFFICIENT / TPM_RC_SIZE."""
    plain = outer_unwrap(protector_public, seed, object_name, blob)
    credential, rest = split_digest(plain)
    if rest:
        raise TpmError(RC.SIZE, detail="octets after the credential")
    return credential


# ---------------------------------------------------------------------------- duplication


def inner_wrap(name_alg: int, sym_def: Any, key: bytes, name: bytes, data: bytes) -> bytes:
    """The inner duplication wrapper (Part 1 §23.3.2.2): H_nameAlg(data || Name) as a
    TPM2B_DIGEST in front of ``data``, all encrypted with ``key`` in CFB mode, zero IV."""
    integrity = HASHES[name_alg].digest(data, name)
    iv = bytes(BLOCK_SIZES[sym_def.algorithm])
    return cfb_encrypt(sym_def.algorithm, key, iv, _sized(integrity) + data)


def inner_unwrap(name_alg: int, sym_def: Any, key: bytes, name: bytes, blob: bytes) -> bytes:
    """Invert :func:`inner_wrap` (the reference's CheckInnerIntegrity()): a wrong key, Name or
    changed octet is TPM_RC_INTEGRITY."""
    plain = cfb_decrypt(sym_def.algorithm, key, bytes(BLOCK_SIZES[sym_def.algorithm]), blob)
    integrity, data = split_digest(plain)
    if not hmac.compare_digest(integrity, HASHES[name_alg].digest(data, name)):
        raise TpmError(RC.INTEGRITY, detail="inner integrity check failed")
    return data


def sensitive_to_duplicate(sensitive: bytes, name: bytes, name_alg: int,
                           new_parent_public: Any | None, seed: bytes, sym_def: Any,
                           inner_key: bytes) -> bytes:
    """SensitiveToDuplicate(): the TPM2B_PRIVATE contents of a duplicated object (marshalled
    TPMT_SENSITIVE ``sensitive``, Name ``name``). The inner wrapper is applied when
    ``sym_def`` is not TPM_ALG_NULL, the outer one when there is a new parent (``seed``
    shared with it)."""
    data = _sized(sensitive)
    if sym_def.algorithm != ALG.NULL:
        data = inner_wrap(name_alg, sym_def, inner_key, name, data)
    if new_parent_public is not None:
        data = outer_wrap(new_parent_public, seed, name, data)
    return data


def duplicate_to_sensitive(blob: bytes, name: bytes, name_alg: int, parent_public: Any | None,
                           seed: bytes, sym_def: Any, inner_key: bytes) -> Any:
    """DuplicateToSensitive(): the parsed TPMT_SENSITIVE inside a duplication blob, removing
    the outer wrapper when there is a ``seed`` and the inner one when ``sym_def`` is not
    TPM_ALG_NULL. Errors: TPM_RC_INTEGRITY, TPM_RC_INSUFFICIENT, TPM_RC_SIZE (format-0; the
    command numbers them)."""
    data = blob
    if seed:
        data = outer_unwrap(parent_public, seed, name, data)
    if sym_def.algorithm != ALG.NULL:
        data = inner_unwrap(name_alg, sym_def, inner_key, name, data)
    if len(data) < 2:
        raise TpmError(RC.INSUFFICIENT, detail="no sensitive area")
    if int.from_bytes(data[:2], "big") + 2 != len(data):
        raise TpmError(RC.SIZE, detail="sensitive area size mismatch")
    return parse_sensitive(data[2:])
