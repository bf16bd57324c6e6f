"""TPM2_GetRandom and TPM2_StirRandom (Part 3 §16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import CC
from ..registry import command
from ..wire import MAX_DIGEST_SIZE, TPM2B_DIGEST, TPM2B_SENSITIVE_DATA, UINT16

if TYPE_CHECKING:
    from ..core import CommandContext


@command(CC.GetRandom, params=(UINT16,), response=(TPM2B_DIGEST,))
def get_random(ctx: CommandContext, bytes_requested: int) -> bytes:
    """Part 3 §16.1: at most sizeof(TPMU_HA) octets are returned, whatever is asked."""
    return ctx.tpm.drbg.generate(min(bytes_requested, MAX_DIGEST_SIZE))


@command(CC.StirRandom, params=(TPM2B_SENSITIVE_DATA,))
def stir_random(ctx: CommandContext, in_data: bytes) -> None:
    """Part 3 §16.2: mix caller data into the RNG state."""
    ctx.tpm.drbg.stir(in_data)
