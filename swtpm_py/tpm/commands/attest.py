"""Attestation commands (Part 3 §18): TPM2_Certify, TPM2_CertifyCreation, TPM2_Quote,
TPM2_GetSessionAuditDigest, TPM2_GetCommandAuditDigest, TPM2_GetTime, TPM2_NV_Certify
(Part 3 §31.16), and TPM2_CertifyX509 (an X.509 certificate instead of a TPMS_ATTEST).

Each returns a TPMS_ATTEST (built and signed by :mod:`swtpm_py.tpm.attest`) and its signature.
The checks come in the reference implementation's order (libtpms, which swtpm 0.7.1 runs): the
signing key (TPM_RC_KEY on its handle), its scheme (TPM_RC_SCHEME on inScheme), then the
command's own checks. tests/test_attest.py compares the codes with swtpm's.
"""

from __future__ import annotations

import hmac
import struct
from typing import TYPE_CHECKING, Any

from .. import audit, nv, sessions, x509
from ..attest import (TPM2B_ATTEST, TPM2B_DATA, Signer, attest, check_sign_handle,
                      firmware_version)
from ..constants import ALG, CC, HR_HMAC_SESSION, RC, ST
from ..crypto import HASHES
from ..errors import TpmError
from ..handles import TPMI_RH_ENDORSEMENT, TPMI_RH_NV_AUTH, TPMI_RH_NV_INDEX, ticket_param
from ..objects import check_object_handle, lookup
from ..registry import Auth, HandleSpec, command
from ..signatures import TPMT_SIG_SCHEME, TPMT_SIGNATURE_NULL, sign
from ..wire import (MAX_ACTIVE_SESSIONS, MAX_NV_BUFFER_SIZE, TPM2B_DIGEST, TPM2B_MAX_BUFFER,
                    TPML_PCR_SELECTION, UINT16)
from .clock import time_info
from .object import pcr_digest, creation_ticket

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: The response of every attestation command: TPM2B_ATTEST, TPMT_SIGNATURE.
RESPONSE = (TPM2B_ATTEST, TPMT_SIGNATURE_NULL)

#: TPMT_TK_CREATION as a command parameter (Part 2 §10.7.3): the tag must be TPM_ST_CREATION.
TPMT_TK_CREATION_IN = ticket_param("creation", ST.CREATION)


def _check_hmac_session(handle: int) -> None:
    # Part 2 §9.8 TPMI_SH_HMAC: an HMAC session handle in the implemented range.
    if not 0 <= handle - HR_HMAC_SESSION < MAX_ACTIVE_SESSIONS:
        raise TpmError(RC.VALUE, detail=f"0x{handle:08x} is not an HMAC session handle")


def _sign_handle(auth: Auth = Auth.USER) -> HandleSpec:
    """signHandle: TPMI_DH_OBJECT+ in the USER role."""
    return HandleSpec("signHandle", check_sign_handle, auth)


_PRIVACY_ADMIN = HandleSpec("privacyAdminHandle", TPMI_RH_ENDORSEMENT, Auth.USER)


@command(CC.Certify,
         handles=(HandleSpec("objectHandle", check_object_handle, Auth.ADMIN), _sign_handle()),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME),
         response=RESPONSE)
def certify(ctx: CommandContext, object_handle: int, sign_handle: int, qualifying_data: bytes,
            in_scheme: Any) -> tuple:
    """Part 3 §18.2: prove that an object is loaded in this TPM (TPM_ST_ATTEST_CERTIFY: its
    Name and Qualified Name). Authorizing the object in the ADMIN role shows the caller may
    certify it."""
    signer = Signer(ctx.tpm, sign_handle, in_scheme, handle_number=2, scheme_parameter=2)
    obj = lookup(ctx.tpm, object_handle)
    # An anonymous scheme leaves the Qualified Name out (it would correlate the keys).
    qualified = b"" if signer.anonymous else obj.qualified_name
    return attest(ctx, signer, qualifying_data, ST.ATTEST_CERTIFY,
                  dict(name=obj.name, qualifiedName=qualified))


@command(CC.CertifyCreation,
         handles=(_sign_handle(), HandleSpec("objectHandle", check_object_handle)),
         params=(TPM2B_DATA, TPM2B_DIGEST, TPMT_SIG_SCHEME, TPMT_TK_CREATION_IN),
         response=RESPONSE)
def certify_creation(ctx: CommandContext, sign_handle: int, object_handle: int,
                     qualifying_data: bytes, creation_hash: bytes, in_scheme: Any,
                     ticket: Any) -> tuple:
    """Part 3 §18.3: prove that the TPM created an object with the given creationHash: the
    creation ticket must be the one TPM2_Create/CreatePrimary gave for this Name and hash
    (TPM_RC_TICKET + P4)."""
    tpm = ctx.tpm
    signer = Signer(tpm, sign_handle, in_scheme, handle_number=1, scheme_parameter=3)
    obj = lookup(tpm, object_handle)
    expected = creation_ticket(tpm, ticket.hierarchy, obj.name, creation_hash)["digest"]
    if not hmac.compare_digest(expected, ticket.digest):
        raise TpmError(RC.TICKET, parameter=4, detail="creation ticket does not match")
    return attest(ctx, signer, qualifying_data, ST.ATTEST_CREATION,
                  dict(objectName=obj.name, creationHash=creation_hash))


@command(CC.Quote,
         handles=(_sign_handle(),),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME, TPML_PCR_SELECTION),
         response=RESPONSE)
def quote(ctx: CommandContext, sign_handle: int, qualifying_data: bytes, in_scheme: Any,
          selection: list) -> tuple:
    """Part 3 §18.4: sign the digest of the selected PCRs (TPM_ST_ATTEST_QUOTE), computed
    with the signing scheme's hash; without one (an unsigned quote) there is no digest to make:
    TPM_RC_SCHEME + P2. Unallocated banks and unimplemented PCRs drop out of the selection."""
    signer = Signer(ctx.tpm, sign_handle, in_scheme, handle_number=1, scheme_parameter=2)
    if signer.hash_alg == ALG.NULL:
        raise TpmError(RC.SCHEME, parameter=2, detail="no hash for the PCR digest")
    selected, digest = pcr_digest(ctx.tpm, signer.hash_alg, selection)
    return attest(ctx, signer, qualifying_data, ST.ATTEST_QUOTE,
                  dict(pcrSelect=selected, pcrDigest=digest))


@command(CC.GetSessionAuditDigest,
         handles=(_PRIVACY_ADMIN, _sign_handle(),
                  HandleSpec("sessionHandle", _check_hmac_session)),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME),
         response=RESPONSE)
def get_session_audit_digest(ctx: CommandContext, privacy_admin: int, sign_handle: int,
                             session_handle: int, qualifying_data: bytes,
                             in_scheme: Any) -> tuple:
    """Part 3 §18.5: the audit digest of an audit session (TPM_ST_ATTEST_SESSION_AUDIT) and
    whether it is the exclusive audit session; a session that never audited is TPM_RC_TYPE
    on its handle. The endorsement hierarchy authorizes it (privacy)."""
    tpm = ctx.tpm
    signer = Signer(tpm, sign_handle, in_scheme, handle_number=2, scheme_parameter=2)
    session = sessions.get(tpm, session_handle)
    if session is None or not session.audit:
        raise TpmError(RC.TYPE, handle=3, detail="not an audit session")
    exclusive = int(tpm.vol.sessions.exclusive_audit == session_handle)
    return attest(ctx, signer, qualifying_data, ST.ATTEST_SESSION_AUDIT,
                  dict(exclusiveSession=exclusive, sessionDigest=session.audit_digest))


def command_digest(tpm: Tpm) -> bytes:
    """The reference's CommandAuditGetDigest(): H_auditAlg of the audited command codes, each
    a UINT32, in ascending order."""
    codes = b"".join(struct.pack(">I", code) for code in sorted(tpm.perm.audit_commands))
    return HASHES[audit.hash_alg(tpm)].digest(codes)


@command(CC.GetCommandAuditDigest,
         handles=(HandleSpec("privacyHandle", TPMI_RH_ENDORSEMENT, Auth.USER), _sign_handle()),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME),
         response=RESPONSE, nv=True)
def get_command_audit_digest(ctx: CommandContext, privacy_handle: int, sign_handle: int,
                             qualifying_data: bytes, in_scheme: Any) -> tuple:
    """Part 3 §18.6: the command audit digest, the audit counter and algorithm, and the
    digest of the list of audited commands (TPM_ST_ATTEST_COMMAND_AUDIT). A signed report
    clears the digest (Part 1 §32.2: the next audited command starts a new one and counts);
    an unsigned one leaves it (the reference's behaviour)."""
    tpm = ctx.tpm
    signer = Signer(tpm, sign_handle, in_scheme, handle_number=2, scheme_parameter=2)
    result = attest(ctx, signer, qualifying_data, ST.ATTEST_COMMAND_AUDIT, dict(
        auditCounter=tpm.perm.audit_counter, digestAlg=audit.hash_alg(tpm),
        auditDigest=tpm.vol.state_reset.command_audit_digest,
        commandDigest=command_digest(tpm)))
    if signer.key is not None:
        audit.reset_digest(tpm)
    return result


@command(CC.GetTime,
         handles=(_PRIVACY_ADMIN, _sign_handle()),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME),
         response=RESPONSE)
def get_time(ctx: CommandContext, privacy_admin: int, sign_handle: int, qualifying_data: bytes,
             in_scheme: Any) -> tuple:
    """Part 3 §18.7: Time, Clock and the firmware version, in plain text inside the attested
    part (TPM_ST_ATTEST_TIME) whatever the obfuscation of the common part; the endorsement
    hierarchy authorizes it (privacy)."""
    signer = Signer(ctx.tpm, sign_handle, in_scheme, handle_number=2, scheme_parameter=2)
    return attest(ctx, signer, qualifying_data, ST.ATTEST_TIME,
                  dict(time=time_info(ctx), firmwareVersion=firmware_version(ctx.tpm)))


@command(CC.NV_Certify,
         handles=(_sign_handle(), HandleSpec("authHandle", TPMI_RH_NV_AUTH, Auth.USER),
                  HandleSpec("nvIndex", TPMI_RH_NV_INDEX)),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME, UINT16, UINT16),
         response=RESPONSE)
def nv_certify(ctx: CommandContext, sign_handle: int, auth_handle: int, nv_index: int,
               qualifying_data: bytes, in_scheme: Any, size: int, offset: int) -> tuple:
    """Part 3 §31.16: certify the contents of an NV index. The read rules of TPM2_NV_Read
    apply (NV_LOCKED, NV_AUTHORIZATION, NV_UNINITIALIZED); a range beyond the index is
    TPM_RC_NV_RANGE, more than MAX_NV_BUFFER_SIZE TPM_RC_VALUE + P3. ``size`` and ``offset``
    both zero ask for the digest of the whole index with the scheme's hash
    (TPM_ST_ATTEST_NV_DIGEST); otherwise the octets themselves are attested (TPM_ST_ATTEST_NV)."""
    tpm = ctx.tpm
    index = nv.lookup(tpm, nv_index)
    if auth_handle == index.handle and nv.is_pin(index.attributes):
        # A PIN index that authorized the command with its authValue counts the use before
        # any check of the command (the reference does it in its authorization code, as
        # TPM2_NV_Read here), committed at once: a failing command still counts.
        nv.pin_authorized(tpm, index)
        tpm._commit_permanent()
    signer = Signer(tpm, sign_handle, in_scheme, handle_number=1, scheme_parameter=2)
    nv.check_read_access(auth_handle, index)
    if size + offset > index.data_size:
        raise TpmError(RC.NV_RANGE, detail="range beyond the end of the index")
    if size > MAX_NV_BUFFER_SIZE:
        raise TpmError(RC.VALUE, parameter=3, detail=f"size {size}")
    data = nv.read_data(tpm, index)
    name = nv.name(index)
    if size or offset:
        return attest(ctx, signer, qualifying_data, ST.ATTEST_NV,
                      dict(indexName=name, offset=offset, nvContents=data[offset:offset + size]))
    # An unsigned certification has no hash: the digest is empty (CryptHashStart() of
    # TPM_ALG_NULL has size zero).
    digest = HASHES[signer.hash_alg].digest(data) if signer.hash_alg != ALG.NULL else b""
    return attest(ctx, signer, qualifying_data, ST.ATTEST_NV_DIGEST,
                  dict(indexName=name, nvDigest=digest))


#: swtpm 0.7.1 (libtpms 0.9, measured) numbers the handles of TPM2_CertifyX509 in its error
#: codes the other way round: objectHandle H2, signHandle H1.
_X509_OBJECT, _X509_SIGNER = 2, 1


@command(CC.CertifyX509,
         handles=(HandleSpec("objectHandle", check_object_handle, Auth.ADMIN), _sign_handle()),
         params=(TPM2B_DATA, TPMT_SIG_SCHEME, TPM2B_MAX_BUFFER),
         response=(TPM2B_MAX_BUFFER, TPM2B_DIGEST, TPMT_SIGNATURE_NULL))
def certify_x509(ctx: CommandContext, object_handle: int, sign_handle: int, reserved: bytes,
                 in_scheme: Any, partial_certificate: bytes) -> tuple:
    """Part 3 §18.8: sign an X.509 certificate of a loaded key. The caller's
    partialCertificate gives issuer, validity, subject and extensions (optionally the
    signature algorithm first); the TPM adds (addedToCertificate) the version, a serial
    number H_nameAlg(signKey)(the TBS parts || signKey's Name || the key's Name) cut to 20
    octets, the signature algorithm when not given, and the key's subjectPublicKeyInfo, and
    signs the digest of the TBSCertificate (tbsDigest) they make together.

    The checks and their order are the reference's (libtpms TPM2_CertifyX509()): reserved
    must be empty (TPM_RC_SIZE + P1), the signer and scheme as for every attestation, an
    object that is not an RSA or ECC key (with a curve OID) is TPM_RC_ASYMMETRIC on
    objectHandle, then the partialCertificate (:func:`swtpm_py.tpm.x509.split_partial`), a
    signature algorithm the TPM cannot name TPM_RC_SCHEME on signHandle, and the extensions
    against the key's attributes (:func:`swtpm_py.tpm.x509.check_extensions`)."""
    tpm = ctx.tpm
    if reserved:
        raise TpmError(RC.SIZE, parameter=1, detail="reserved must be empty")
    signer = Signer(tpm, sign_handle, in_scheme, handle_number=_X509_SIGNER, scheme_parameter=2)
    obj = lookup(tpm, object_handle)
    if not x509.can_encode_public_key(obj):
        raise TpmError(RC.ASYMMETRIC, handle=_X509_OBJECT,
                       detail="no subjectPublicKeyInfo for the key")
    try:
        partial = x509.split_partial(partial_certificate)
    except TpmError as exc:
        raise TpmError(exc.rc, parameter=3, detail=exc.detail) from None
    key = signer.key
    # signHandle takes TPM_RH_NULL (as in swtpm 0.7.1), but a certificate needs a signer:
    # where the reference would use the missing key (the algorithm identifier it makes for
    # three SEQUENCEs, else the serial number after the extensions; swtpm 0.7.1 dies there of
    # a NULL dereference) this TPM answers TPM_RC_KEY on signHandle.
    no_signer = TpmError(RC.KEY, handle=_X509_SIGNER, detail="TPM_RH_NULL cannot sign")
    algorithm = None
    if len(partial.sequences) == 3:
        if key is None:
            raise no_signer
        algorithm = x509.signing_algorithm(key, signer.scheme, signer.hash_alg)
        if algorithm is None:
            raise TpmError(RC.SCHEME, handle=_X509_SIGNER,
                           detail="no signature algorithm identifier")
    try:
        x509.check_extensions(int(obj.attributes), partial.extensions)
    except TpmError as exc:
        if exc.rc == RC.ATTRIBUTES:
            raise TpmError(exc.rc, handle=_X509_OBJECT, detail=exc.detail) from None
        raise TpmError(exc.rc, parameter=3, detail=exc.detail) from None
    if key is None:
        raise no_signer
    issuer, validity, subject = partial.sequences[-3:]
    public_key = x509.subject_public_key_info(obj)
    body = ((algorithm or partial.sequences[0]) + issuer + validity + subject + public_key
            + partial.extensions)
    serial = HASHES[key.public.nameAlg].digest(body, key.name, obj.name)[:20]
    version = x509.tlv(x509.CONTEXT_0, x509.integer(b"\x02"))
    serial_number = x509.integer(serial)
    tbs = x509.tlv(x509.SEQUENCE, version + serial_number + body)
    tbs_digest = HASHES[signer.hash_alg].digest(tbs)
    added = x509.tlv(x509.SEQUENCE, version + serial_number + (algorithm or b"") + public_key)
    if signer.scheme == ALG.ECDAA:
        # commands.ecc imports this module's neighbours: imported when first needed.
        from .ecc import ecdaa_sign
        signature = ecdaa_sign(tpm, key, in_scheme, signer.hash_alg, tbs_digest)
    else:
        signature = sign(key, signer.scheme, signer.hash_alg, tbs_digest, tpm.drbg)
    return added, tbs_digest, signature
