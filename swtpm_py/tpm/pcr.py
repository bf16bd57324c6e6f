"""Platform Configuration Registers (Part 1 §17, PC Client Platform TPM Profile).

PC Client profile attributes of the 24 PCRs: whether Shutdown(STATE) saves them, and the
localities that may reset and extend them (bit n = locality n).
"""

from __future__ import annotations

from dataclasses import dataclass

from .crypto import HASHES
from .wire import PCR_COUNT, PCR_SELECT_MIN, bitmap_of, pcr_bitmap


@dataclass(frozen=True)
class PcrAttributes:
    """Profile attributes of one PCR."""

    state_save: bool
    reset_localities: int
    extend_localities: int

    @property
    def drtm(self) -> bool:
        """Resettable by locality 4 (the DRTM PCRs 17-22): these start at all ones."""
        return bool(self.reset_localities & 0x10)


_STATIC = PcrAttributes(True, 0x00, 0x1F)
#: PC Client profile table; PCR 16 (debug) and 23 (application) are resettable by localities 0-3.
PCR_ATTRIBUTES: tuple[PcrAttributes, ...] = (_STATIC,) * 16 + (
    PcrAttributes(False, 0x0F, 0x1F),  # 16 debug
    PcrAttributes(False, 0x10, 0x1C),  # 17 locality 4 (DRTM)
    PcrAttributes(False, 0x10, 0x1C),  # 18 locality 3
    PcrAttributes(False, 0x10, 0x0C),  # 19 locality 2
    PcrAttributes(False, 0x14, 0x0E),  # 20 locality 1
    PcrAttributes(False, 0x14, 0x04),  # 21 dynamic OS
    PcrAttributes(False, 0x14, 0x04),  # 22 dynamic OS
    PcrAttributes(False, 0x0F, 0x1F),  # 23 application
)
assert len(PCR_ATTRIBUTES) == PCR_COUNT


def initial_value(pcr: int, size: int) -> bytes:
    """Value of ``pcr`` after TPM Reset/Restart: all ones for DRTM PCRs, else zeros (PC Client
    profile §4.6.2)."""
    return (b"\xff" if PCR_ATTRIBUTES[pcr].drtm else b"\x00") * size


def can_extend(pcr: int, locality: int) -> bool:
    """Whether ``locality`` may extend ``pcr``."""
    return bool(PCR_ATTRIBUTES[pcr].extend_localities >> locality & 1)


def can_reset(pcr: int, locality: int) -> bool:
    """Whether ``locality`` may reset ``pcr`` with TPM2_PCR_Reset."""
    return bool(PCR_ATTRIBUTES[pcr].reset_localities >> locality & 1)


class PcrBanks:
    """The PCR values of the allocated banks: ``values[alg][pcr]``."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self.values = values

    @classmethod
    def fresh(cls, banks: list[int]) -> "PcrBanks":
        """All PCRs of ``banks`` at their initial values."""
        return cls({alg: [initial_value(i, HASHES[alg].size) for i in range(PCR_COUNT)]
                    for alg in banks})

    @property
    def banks(self) -> list[int]:
        """Allocated bank algorithms, in algorithm-id order."""
        return sorted(self.values)

    def extend(self, pcr: int, alg: int, digest: bytes) -> None:
        """PCR[alg][pcr] := H(PCR || digest) (Part 1 §17.2). Banks not allocated are ignored."""
        bank = self.values.get(alg)
        if bank is not None:
            bank[pcr] = HASHES[alg].digest(bank[pcr], digest)

    def reset(self, pcr: int) -> None:
        """PCR_Reset: zero ``pcr`` in every bank (Part 3 §22.8; DRTM PCRs reset to zero too)."""
        for alg, bank in self.values.items():
            bank[pcr] = b"\x00" * HASHES[alg].size

    def saved(self) -> dict[int, list[bytes]]:
        """Values that Shutdown(STATE) preserves: the stateSave PCRs of every bank."""
        return {alg: [bank[i] for i in range(PCR_COUNT) if PCR_ATTRIBUTES[i].state_save]
                for alg, bank in self.values.items()}

    def restore_saved(self, saved: dict[int, list[bytes]]) -> None:
        """Put back the values :meth:`saved` returned (TPM Resume)."""
        save_indexes = [i for i in range(PCR_COUNT) if PCR_ATTRIBUTES[i].state_save]
        for alg, values in saved.items():
            bank = self.values.get(alg)
            if bank is None or len(values) != len(save_indexes):
                continue
            for i, value in zip(save_indexes, values):
                bank[i] = value

    def read(self, selection: list) -> tuple[list[dict], list[bytes]]:
        """PCR_Read (Part 3 §22.4): the values selected, at most 8, and the selection actually
        returned (bits of unallocated banks, unimplemented PCRs and values past the eighth
        cleared)."""
        out_sel: list[dict] = []
        digests: list[bytes] = []
        for sel in selection:
            bank = self.values.get(sel.hash)
            returned: list[int] = []
            if bank is not None:
                for pcr in pcr_bitmap(sel.pcrSelect):
                    if pcr >= PCR_COUNT or len(digests) >= 8:
                        continue
                    digests.append(bank[pcr])
                    returned.append(pcr)
            out_sel.append(dict(hash=sel.hash, sizeofSelect=sel.sizeofSelect,
                                pcrSelect=bitmap_of(returned, sel.sizeofSelect)))
        return out_sel, digests

    def selection(self) -> list[dict]:
        """TPML_PCR_SELECTION of every allocated bank with all PCRs selected."""
        every = bitmap_of(list(range(PCR_COUNT)), PCR_SELECT_MIN)
        return [dict(hash=alg, sizeofSelect=PCR_SELECT_MIN, pcrSelect=every)
                for alg in self.banks]
