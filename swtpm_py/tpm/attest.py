"""Attestation structures (Part 2 §10.12 TPMS_ATTEST) and what every attestation command does
with them (Part 1 "Attestation", Part 4 Attest_spt.c: FillInAttestInfo(), SignAttestInfo()).

Every attestation starts with TPM_GENERATED_VALUE, so a restricted signing key signs it (the
TPM made it) while TPM2_Sign refuses it such data without a hash-check ticket. The common part
holds the signer's Qualified Name, the caller's extraData, the clock and the firmware version;
for a signer outside the endorsement and platform hierarchies (and an unsigned attestation),
resetCount, restartCount and firmwareVersion are obfuscated (Part 1 "Privacy": the owner's keys
must not let one correlate the TPM's resets): an offset from KDFa(contextHash, shProof,
"OBFUSCATE", qualifiedSigner, -, 128) is added to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import construct as c

from . import properties, sequences
from .constants import ALG, PT, RC, RH, ST, TPM_GENERATED_VALUE
from .crypto import HASHES, kdfa
from .errors import TpmError
from .objects import TpmObject, check_object_handle
from .signatures import is_signing_key, select_scheme, sign
from .wire import (TPM2B_DATA, TPM2B_DIGEST, TPM2B_MAX_NV_BUFFER, TPM2B_NAME,
                   TPML_PCR_SELECTION, TPMS_CLOCK_INFO, TPMS_TIME_INFO, UINT16, UINT32, UINT64,
                   UINT8)

if TYPE_CHECKING:
    from .core import CommandContext, Tpm

# ---------------------------------------------------------------------------- wire types


#: TPMU_ATTEST (Part 2 §10.12.11) by TPMI_ST_ATTEST (§10.12.10).
TPMU_ATTEST = {
    ST.ATTEST_CERTIFY: c.Struct("name" / TPM2B_NAME, "qualifiedName" / TPM2B_NAME),
    ST.ATTEST_CREATION: c.Struct("objectName" / TPM2B_NAME, "creationHash" / TPM2B_DIGEST),
    ST.ATTEST_QUOTE: c.Struct("pcrSelect" / TPML_PCR_SELECTION, "pcrDigest" / TPM2B_DIGEST),
    ST.ATTEST_COMMAND_AUDIT: c.Struct("auditCounter" / UINT64, "digestAlg" / UINT16,
                                      "auditDigest" / TPM2B_DIGEST,
                                      "commandDigest" / TPM2B_DIGEST),
    ST.ATTEST_SESSION_AUDIT: c.Struct("exclusiveSession" / UINT8,
                                      "sessionDigest" / TPM2B_DIGEST),
    ST.ATTEST_TIME: c.Struct("time" / TPMS_TIME_INFO, "firmwareVersion" / UINT64),
    ST.ATTEST_NV: c.Struct("indexName" / TPM2B_NAME, "offset" / UINT16,
                           "nvContents" / TPM2B_MAX_NV_BUFFER),
    ST.ATTEST_NV_DIGEST: c.Struct("indexName" / TPM2B_NAME, "nvDigest" / TPM2B_DIGEST),
}

#: TPMS_ATTEST (Part 2 §10.12.12).
TPMS_ATTEST = c.Struct(
    "magic" / UINT32,
    "type" / UINT16,
    "qualifiedSigner" / TPM2B_NAME,
    "extraData" / TPM2B_DATA,
    "clockInfo" / TPMS_CLOCK_INFO,
    "firmwareVersion" / UINT64,
    "attested" / c.Switch(c.this.type, {int(k): v for k, v in TPMU_ATTEST.items()}),
)

#: TPM2B_ATTEST (Part 2 §10.12.13): the marshalled TPMS_ATTEST, as signed.
TPM2B_ATTEST = c.Prefixed(UINT16, c.GreedyBytes)

#: KDFa label of the clock obfuscation (the reference's OBFUSCATE_STRING).
OBFUSCATE = b"OBFUSCATE"


# ---------------------------------------------------------------------------- handles


def check_sign_handle(handle: int) -> None:
    """TPMI_DH_OBJECT+ (Part 2 §9.3): an object handle, or TPM_RH_NULL for an unsigned
    attestation; anything else is TPM_RC_VALUE."""
    if handle != RH.NULL:
        check_object_handle(handle)


# ---------------------------------------------------------------------------- signer


class Signer:
    """The signing key of an attestation command and its scheme (the first checks of every
    attestation command in the reference: IsSigningObject(), then CryptSelectSignScheme()).

    ``key`` is None for TPM_RH_NULL: the attestation is then unsigned and its scheme is
    TPM_ALG_NULL whatever inScheme says. A loaded object that cannot sign (no sign attribute,
    a symmetric key, a sequence, a public-only key) is TPM_RC_KEY on ``handle_number``; a
    scheme conflict TPM_RC_SCHEME on ``scheme_parameter``.
    """

    def __init__(self, tpm: Tpm, handle: int, in_scheme: Any, *, handle_number: int,
                 scheme_parameter: int) -> None:
        self.handle = handle
        self.in_scheme = in_scheme
        self.key: TpmObject | None = None
        self.scheme, self.hash_alg = ALG.NULL, ALG.NULL
        if handle == RH.NULL:
            return
        key = sequences.loaded_object(tpm, handle)
        if key is None or not is_signing_key(key) or key.public_only:
            raise TpmError(RC.KEY, handle=handle_number, detail="not a signing key")
        try:
            self.scheme, self.hash_alg = select_scheme(key, in_scheme)
        except TpmError as exc:
            raise TpmError(exc.rc, parameter=scheme_parameter, detail=exc.detail) from None
        self.key = key

    @property
    def anonymous(self) -> bool:
        """An anonymous scheme (ECDAA, the reference's CryptIsSchemeAnonymous()): the
        attestation must not identify the signer."""
        return self.scheme == ALG.ECDAA

    @property
    def qualified_name(self) -> bytes:
        """qualifiedSigner: the key's Qualified Name; TPM_RH_NULL's handle when unsigned;
        empty for an anonymous scheme."""
        if self.key is None:
            return int(RH.NULL).to_bytes(4, "big")
        return b"" if self.anonymous else self.key.qualified_name

    @property
    def obfuscated(self) -> bool:
        """Whether the clock and firmware fields are obfuscated: a signer outside the
        endorsement and platform hierarchies, or no signer."""
        return self.key is None or self.key.hierarchy not in (RH.ENDORSEMENT, RH.PLATFORM)


def firmware_version(tpm: Tpm) -> int:
    """TPM_PT_FIRMWARE_VERSION_1 || TPM_PT_FIRMWARE_VERSION_2 as a UINT64."""
    return (properties.value(tpm, PT.FIRMWARE_VERSION_1) << 32
            | properties.value(tpm, PT.FIRMWARE_VERSION_2))


def obfuscation(tpm: Tpm, qualified_signer: bytes) -> tuple[int, int]:
    """The two 64-bit offsets of the obfuscation: KDFa(contextHash, shProof, "OBFUSCATE",
    qualifiedSigner, -, 128), read as two UINT64 in the byte order the reference reads them
    (it copies the octets into a UINT64 array: little-endian on the x86 swtpm runs on)."""
    # contexts imports the command modules: imported here, when the first command runs.
    from .contexts import CONTEXT_INTEGRITY_HASH
    stream = kdfa(CONTEXT_INTEGRITY_HASH, tpm.perm.sh_proof, OBFUSCATE, qualified_signer, b"",
                  128)
    return int.from_bytes(stream[:8], "little"), int.from_bytes(stream[8:16], "little")


def attest_info(ctx: CommandContext, signer: Signer, qualifying_data: bytes, st: int,
                attested: dict) -> dict:
    """FillInAttestInfo(): the TPMS_ATTEST of type ``st`` with its ``attested`` part. With an
    anonymous scheme extraData stays empty: the qualifying data goes into the signed digest
    instead (:func:`sign_attest`)."""
    tpm = ctx.tpm
    qualified_signer = signer.qualified_name
    clock = dict(clock=tpm.clock_ms(), resetCount=tpm.perm.reset_count,
                 restartCount=tpm.vol.state_reset.restart_count,
                 safe=int(tpm.vol.clock_safe))
    firmware = firmware_version(tpm)
    if signer.obfuscated:
        first, second = obfuscation(tpm, qualified_signer)
        firmware = (firmware + first) & 0xFFFFFFFFFFFFFFFF
        clock["resetCount"] = (clock["resetCount"] + (second >> 32)) & 0xFFFFFFFF
        clock["restartCount"] = (clock["restartCount"] + second) & 0xFFFFFFFF
    return dict(magic=TPM_GENERATED_VALUE, type=st, qualifiedSigner=qualified_signer,
                extraData=b"" if signer.anonymous else qualifying_data, clockInfo=clock, firmwareVersion=firmware,
                attested=attested)


def sign_attest(ctx: CommandContext, signer: Signer, info: dict,
                qualifying_data: bytes) -> tuple[bytes, dict]:
    """SignAttestInfo(): the marshalled TPMS_ATTEST and its signature, H_scheme(attest)
    signed with the signer's scheme; the qualifying data is inside as extraData, except with
    an anonymous scheme, where H(qualifyingData || H(attest)) is signed. An ECDAA signature
    uses (and retires) the commit of the scheme's count. The TPM_ALG_NULL signature for no
    signer. A signature cancels a preceding Shutdown."""
    data = TPMS_ATTEST.build(info)
    if signer.key is None:
        return data, dict(sigAlg=ALG.NULL, signature=None)
    h = HASHES[signer.hash_alg]
    digest = h.digest(data)
    if signer.anonymous and qualifying_data:
        digest = h.digest(qualifying_data, digest)
    if signer.scheme == ALG.ECDAA:
        # commands.ecc imports this module's neighbours: imported when first needed.
        from .commands.ecc import ecdaa_sign
        signature = ecdaa_sign(ctx.tpm, signer.key, signer.in_scheme, signer.hash_alg, digest)
    else:
        signature = sign(signer.key, signer.scheme, signer.hash_alg, digest, ctx.tpm.drbg)
    # A signed attestation reveals the clock: after a Shutdown the state is no longer the
    # orderly one (the reference's NvClearOrderly() in SignAttestInfo()).
    ctx.tpm.clear_orderly()
    return data, signature


def attest(ctx: CommandContext, signer: Signer, qualifying_data: bytes, st: int,
           attested: dict) -> tuple[bytes, dict]:
    """Build and sign an attestation: the response (TPM2B_ATTEST, TPMT_SIGNATURE) of every
    attestation command."""
    return sign_attest(ctx, signer, attest_info(ctx, signer, qualifying_data, st, attested),
                       qualifying_data)
