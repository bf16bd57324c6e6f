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
    #: A change does not advance pcrUpdateCounter (the reference implementation's "TCB group",
    #: which the PC Client configuration of libtpms sets to PCR 16 and 21-23).
    no_increment: bool = False

    @property
    def drtm(self) -> bool:
        """Resettable by locality 4 (the DRTM PCRs 17-22): these start at all ones."""
        return bool(self.reset_localities & 0x10)


_STATIC = PcrAttributes(True, 0x00, 0x1F)
#: PC Client profile table; PCR 16 (debug) and 23 (application) are resettable by localities 0-3.
PCR_ATTRIBUTES: tuple[PcrAttributes, ...] = (_STATIC,) * 16 + (
    PcrAttributes(False, 0x0F, 0x1F, True),   # 16 debug
    PcrAttributes(False, 0x10, 0x1C),         # 17 locality 4 (DRTM)
    PcrAttributes(False, 0x10, 0x1C),         # 18 locality 3
    PcrAttributes(False, 0x10, 0x0C),         # 19 locality 2
    PcrAttributes(False, 0x14, 0x0E),         # 20 locality 1
    PcrAttributes(False, 0x14, 0x04, True),   # 21 dynamic OS
    PcrAttributes(False, 0x14, 0x04, True),   # 22 dynamic OS
    PcrAttributes(False, 0x0F, 0x1F, True),   # 23 application
)
assert len(PCR_ATTRIBUTES) == PCR_COUNT

#: The H-CRTM PCR: the PC Client profile resets PCR 0 to the locality of TPM2_Startup in its
#: last octet, so a Startup from locality 3 leaves 0...03 (measured on swtpm 0.7.1).
HCRTM_PCR = 0


def initial_value(pcr: int, size: int, startup_locality: int = 0) -> bytes:
    """Value of ``pcr`` after TPM Reset/Restart: all ones for DRTM PCRs, else zeros, with the
    startup locality in the last octet of PCR 0 (PC Client profile §4.6.2)."""
    if PCR_ATTRIBUTES[pcr].drtm:
        return b"\xff" * size
    if pcr == HCRTM_PCR:
        return b"\x00" * (size - 1) + bytes([startup_locality])
    return b"\x00" * size


#: The DRTM PCR and the H-CRTM PCR: every allocation must keep each of them in some bank
#: (Part 3 §22.5.1; the reference's PCRAllocate(), TPM_RC_PCR otherwise).
DRTM_PCR = 17

#: PC Client profile: PCRs 20-22 form the one group sharing an authValue
#: (TPM2_PCR_SetAuthValue) and the one group sharing an authPolicy (TPM2_PCR_SetAuthPolicy),
#: as libtpms reports them in TPM_PT_PCR_AUTH / TPM_PT_PCR_POLICY.
PCR_AUTH_GROUPS: tuple[tuple[int, ...], ...] = ((20, 21, 22),)
PCR_POLICY_GROUPS: tuple[tuple[int, ...], ...] = ((20, 21, 22),)


def auth_group(pcr: int) -> tuple[int, ...] | None:
    """The PCRs sharing ``pcr``'s authValue, or None when it has none (the reference's
    PCRBelongsAuthGroup())."""
    return next((g for g in PCR_AUTH_GROUPS if pcr in g), None)


def policy_group(pcr: int) -> tuple[int, ...] | None:
    """The PCRs sharing ``pcr``'s authPolicy, or None when it can have none
    (PCRBelongsPolicyGroup())."""
    return next((g for g in PCR_POLICY_GROUPS if pcr in g), None)


#: PCR storage the TPM has for all banks together (the reference's sizeof(s_pcrs): every PCR
#: in every implemented hash), reported as TPM2_PCR_Allocate's sizeAvailable.
PCR_STORAGE = PCR_COUNT * sum(h.size for h in HASHES.values())
FULL_SELECT = bitmap_of(list(range(PCR_COUNT)), PCR_SELECT_MIN)
EMPTY_SELECT = bytes(PCR_SELECT_MIN)


def allocation_request(current: list[int], request: list) -> dict[int, bytes]:
    """The allocation TPM2_PCR_Allocate asks for (Part 3 §22.5.1): one pcrSelect per
    implemented hash, those of ``request`` (the last one of a repeated bank wins) over the
    allocation ``current`` (banks not named keep their allocation)."""
    selects = {alg: FULL_SELECT if alg in current else EMPTY_SELECT for alg in HASHES}
    for sel in request:
        selects[sel.hash] = bytes(sel.pcrSelect)
    return selects


def allocation_size(selects: dict[int, bytes]) -> int:
    """sizeNeeded: the octets the selected PCRs of every bank take."""
    return sum(HASHES[alg].size * len(pcr_bitmap(sel)) for alg, sel in selects.items())


def can_extend(pcr: int, locality: int) -> bool:
    """Whether ``locality`` may extend ``pcr`` (localities above 4 may extend nothing)."""
    return locality < 5 and bool(PCR_ATTRIBUTES[pcr].extend_localities >> locality & 1)


def can_reset(pcr: int, locality: int) -> bool:
    """Whether ``locality`` may reset ``pcr`` with TPM2_PCR_Reset.

    A TPM that supports DRTM never lets TPM2_PCR_Reset run at locality 4: the DRTM PCRs are
    reset by _TPM_Hash_Start only (reference implementation PCRIsResetAllowed; swtpm 0.7.1
    answers TPM_RC_LOCALITY for PCR 17-22 at locality 4).
    """
    if locality >= 4:
        return False
    return bool(PCR_ATTRIBUTES[pcr].reset_localities >> locality & 1)


def counts_update(pcr: int) -> bool:
    """Whether a change of ``pcr`` advances pcrUpdateCounter (Part 3 §22.4)."""
    return not PCR_ATTRIBUTES[pcr].no_increment


def startup_updates(resume: bool) -> int:
    """How much TPM2_Startup advances pcrUpdateCounter: every PCR it (re)initialises counts
    as changed, as in the reference implementation (20 on TPM Reset/Restart with the PC Client
    table, 4 on TPM Resume, where the stateSave PCRs are restored instead)."""
    return sum(1 for a in PCR_ATTRIBUTES
               if not (resume and a.state_save) and not a.no_increment)


class PcrBanks:
    """The PCR values of the allocated banks: ``values[alg][pcr]``."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self.values = values

    @classmethod
    def fresh(cls, banks: list[int], startup_locality: int = 0) -> "PcrBanks":
        """All PCRs of ``banks`` at their initial values."""
        return cls({alg: [initial_value(i, HASHES[alg].size, startup_locality)
                          for i in range(PCR_COUNT)]
                    for alg in banks})

    @property
    def banks(self) -> list[int]:
        """Allocated bank algorithms, in algorithm-id order."""
        return sorted(self.values)

    def extend(self, pcr: int, alg: int, digest: bytes) -> bool:
        """PCR[alg][pcr] := H(PCR || digest) (Part 1 §17.2). Banks not allocated are ignored;
        returns whether a bank was extended."""
        bank = self.values.get(alg)
        if bank is None:
            return False
        bank[pcr] = HASHES[alg].digest(bank[pcr], digest)
        return True

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
        """The current allocation as TPML_PCR_SELECTION: every implemented hash, with all PCRs
        selected for an allocated bank and none for the others (swtpm 0.7.1 lists a bank that
        TPM2_PCR_Allocate emptied with an empty pcrSelect)."""
        return [dict(hash=alg, sizeofSelect=PCR_SELECT_MIN,
                     pcrSelect=FULL_SELECT if alg in self.values else EMPTY_SELECT)
                for alg in HASHES]
