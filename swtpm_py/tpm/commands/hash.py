"""TPM2_Hash (Part 3 §15.4) and the hash-check ticket it returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import ALG, CC, RH, ST, TPM_GENERATED_VALUE
from ..crypto import HASHES
from ..handles import TPMI_RH_HIERARCHY_NULL, handle_param
from ..registry import command
from ..wire import TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPMI_ALG_HASH, TPMT_TK_HASHCHECK

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

#: Part 2 TPM_PT_CONTEXT_HASH: the hash used for tickets and context integrity.
TICKET_HASH = ALG.SHA512


def hierarchy_proof(tpm: Tpm, hierarchy: int) -> bytes:
    """The proof value of ``hierarchy`` (Part 1 §14.4), the key of its tickets."""
    proofs = {RH.OWNER: tpm.perm.sh_proof, RH.ENDORSEMENT: tpm.perm.eh_proof,
              RH.PLATFORM: tpm.perm.ph_proof, RH.NULL: tpm.vol.state_reset.null_proof}
    return proofs[hierarchy]


def hashcheck_ticket(tpm: Tpm, hierarchy: int, hash_alg: int, digest: bytes) -> dict:
    """TPMT_TK_HASHCHECK (Part 2 §10.7.6), or the NULL ticket for TPM_RH_NULL.

    The HMAC, keyed with the hierarchy's proof, covers TPM_ST_HASHCHECK || hashAlg || digest:
    Part 4's TicketComputeHashCheck() adds the algorithm that Part 2's formula leaves out, and
    the tickets must verify the same way wherever they are checked (TPM2_Sign).
    """
    if hierarchy == RH.NULL:
        return dict(tag=ST.HASHCHECK, hierarchy=RH.NULL, digest=b"")
    mac = HASHES[TICKET_HASH].hmac(hierarchy_proof(tpm, hierarchy),
                                   int(ST.HASHCHECK).to_bytes(2, "big"),
                                   hash_alg.to_bytes(2, "big"), digest)
    return dict(tag=ST.HASHCHECK, hierarchy=hierarchy, digest=mac)


@command(CC.Hash, params=(TPM2B_MAX_BUFFER, TPMI_ALG_HASH, handle_param(TPMI_RH_HIERARCHY_NULL)),
         response=(TPM2B_DIGEST, TPMT_TK_HASHCHECK))
def hash_(ctx: CommandContext, data: bytes, hash_alg: int, hierarchy: int) -> tuple:
    """Part 3 §15.4: digest ``data``; the ticket says the data did not start with
    TPM_GENERATED_VALUE (so a restricted key may sign the digest).

    Part 3 does not require the hierarchy to be enabled, and swtpm 0.7.1 issues the ticket
    for a disabled hierarchy too (a key of that hierarchy could not be used anyway).
    """
    digest = HASHES[hash_alg].digest(data)
    generated = data[:4] == TPM_GENERATED_VALUE.to_bytes(4, "big")
    ticket = hashcheck_ticket(ctx.tpm, RH.NULL if generated else hierarchy, hash_alg, digest)
    return digest, ticket
