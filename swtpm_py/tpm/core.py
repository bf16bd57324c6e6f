"""The TPM 2.0 core: sans-I/O, ``Tpm.execute(command, locality) -> response``.

Clock, entropy and storage are injected (:class:`Platform`), so tests can freeze time, seed the
randomness and fail storage. Nothing here opens a socket or a file.

Command processing follows Part 3 §5 ("Command processing") and Part 1 §18, in the order of
the reference implementation's ExecuteCommand(), which swtpm exhibits (tests/test_differential.py
pins every step against the real swtpm):

1. header: tag (TPM_RC_BAD_TAG, or TPM_RC_VALUE for a value that is no TPM_ST), size
   (TPM_RC_COMMAND_SIZE), command code (TPM_RC_COMMAND_CODE), then TPM_RC_INITIALIZE for
   anything but Startup before TPM2_Startup and for a second Startup; in failure mode only
   GetTestResult and GetCapability run.
2. handles: all unmarshalled (TPMI type checks, format-1 code + handle number), then each
   looked up.
3. authorization area (tag TPM_ST_SESSIONS): sizes (TPM_RC_SIZE), then each session in turn
   (session number on every error), then one session per authorized handle and the
   authorization checks (password sessions here; HMAC and policy sessions in
   :mod:`.sessions`), then the decryption of the first parameter (Part 1 §21).
4. parameters, each unmarshalled in turn (format-1 code + parameter number); bytes left over
   are TPM_RC_SIZE. Then the handler.
5. if the command changed persistent data, commit the permanent blob *before* responding.

No exception escapes :meth:`Tpm.execute`: TpmError becomes its code, anything else
TPM_RC_FAILURE with the traceback logged, and the TPM keeps serving.
"""

from __future__ import annotations

import hmac as _hmac
import io
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .constants import CC, RC, RH, SU, ST, SessionAttr
from .crypto import HASHES, Drbg
from . import audit as _audit
from . import da as _da
from . import nv as _nv
from . import sessions as _sessions
from .entity import resolve
from .errors import TpmError, for_handle, for_parameter, for_session
from .pcr import HCRTM_PCR, PCR_ATTRIBUTES, PcrBanks, counts_update, startup_updates
from .registry import COMMANDS, Auth, CommandSpec
from .state import (SU_NONE, BlobKind, PersistentData, SavedState, StateClearData, StateError,
                    StateResetData, VolatileData, decode_blob, encode_blob)
from .wire import parse_auth_command, parse_stream

log = logging.getLogger("swtpm_py.tpm")

#: Largest command and response the TPM accepts/produces (TPM_PT_MAX_COMMAND/RESPONSE_SIZE).
MAX_COMMAND_SIZE = 4096
MAX_RESPONSE_SIZE = 4096
#: Part 1 §18.1: at most three sessions per command.
MAX_SESSIONS = 3
#: Seeds and proofs are the size of the largest digest (Part 1 §14.3 / PROOF_SIZE).
SEED_SIZE = 64
#: The reference platform's clock rate units (PlatformData.h): CLOCK_NOMINAL counts are the
#: nominal rate, TPM2_ClockRateAdjust may move it by at most CLOCK_ADJUST_LIMIT (16.7%).
CLOCK_NOMINAL = 30000
CLOCK_ADJUST_LIMIT = 5000
#: log2 of TPM_PT_CLOCK_UPDATE (the reference's NV_CLOCK_UPDATE_INTERVAL): Clock reaches NV
#: whenever it crosses a multiple of 2^12 ms.
CLOCK_UPDATE_BITS = 12

#: Flag kept with the orderly state after a Shutdown(STATE) that followed a Startup from
#: locality 3 (the reference implementation's STARTUP_LOCALITY_3).
STARTUP_LOCALITY_3 = 0x4000

#: The PCR a DRTM sequence (_TPM_Hash_End after Startup) measures into (PC Client profile).
DRTM_PCR = 17

#: Commands accepted in failure mode (Part 1 §9.4.3.2 / Part 3 §10.4).
FAILURE_MODE_COMMANDS = {CC.GetTestResult, CC.GetCapability}

#: The two command tags (TPMI_ST_COMMAND_TAG, Part 2 §9.27).
COMMAND_TAGS = frozenset({ST.NO_SESSIONS, ST.SESSIONS})
#: The TPM_ST values the reference implementation's TPM_ST unmarshalling accepts: any other
#: tag is TPM_RC_VALUE rather than TPM_RC_BAD_TAG (measured on swtpm 0.7.1).
KNOWN_TAGS = frozenset({ST.RSP_COMMAND, ST.NULL, ST.NO_SESSIONS, ST.SESSIONS,
                        *range(ST.ATTEST_NV, ST.ATTEST_CREATION + 1),
                        *range(ST.CREATION, ST.AUTH_SIGNED + 1)})
#: Commands whose tag must be TPM_ST_NO_SESSIONS (Part 3: Startup, ContextSave, ContextLoad,
#: FlushContext): an authorization area is TPM_RC_AUTH_CONTEXT.
SESSIONLESS_COMMANDS = frozenset({CC.Startup, CC.ContextSave, CC.ContextLoad, CC.FlushContext})
#: TPMA_SESSION bits a password session must not set (Part 1 §19.8.3).
PW_FORBIDDEN_ATTRIBUTES = (SessionAttr.AUDIT_EXCLUSIVE | SessionAttr.AUDIT_RESET
                           | SessionAttr.DECRYPT | SessionAttr.ENCRYPT | SessionAttr.AUDIT)


class StateStorage(Protocol):
    """Where the three state blobs live. ``store`` must be durable when it returns."""

    def load(self, kind: BlobKind) -> bytes | None:
        """The stored blob of ``kind``, or None when there is none."""

    def store(self, kind: BlobKind, data: bytes) -> None:
        """Durably replace the blob of ``kind`` (raises OSError on failure)."""

    def delete(self, kind: BlobKind) -> None:
        """Remove the blob of ``kind`` if present."""


class MemoryStorage:
    """A :class:`StateStorage` in a dict, for tests and embedding."""

    def __init__(self) -> None:
        self.blobs: dict[BlobKind, bytes] = {}
        #: Set to an exception to make the next ``store`` calls fail (fault injection).
        self.fail_with: Exception | None = None

    def load(self, kind: BlobKind) -> bytes | None:
        """See :class:`StateStorage`."""
        return self.blobs.get(kind)

    def store(self, kind: BlobKind, data: bytes) -> None:
        """See :class:`StateStorage`."""
        if self.fail_with is not None:
            raise self.fail_with
        self.blobs[kind] = bytes(data)

    def delete(self, kind: BlobKind) -> None:
        """See :class:`StateStorage`."""
        self.blobs.pop(kind, None)


def monotonic_ms() -> int:
    """Default clock: milliseconds from a monotonic source."""
    return time.monotonic_ns() // 1_000_000


@dataclass
class Platform:
    """What the TPM gets from its platform: storage, a millisecond clock and entropy."""

    storage: StateStorage = field(default_factory=MemoryStorage)
    clock: Callable[[], int] = monotonic_ms
    entropy: Callable[[int], bytes] = os.urandom
    #: Whether physical presence is asserted now (Part 1 §19.3); swtpm never asserts it.
    physical_presence: Callable[[], bool] = lambda: False


@dataclass
class CommandContext:
    """What a handler may know about the command being executed."""

    tpm: "Tpm"
    code: int
    locality: int
    #: The entity authorized in each handle slot (None for handles without authorization).
    authorized: list[int | None] = field(default_factory=list)
    #: The command's authorization sessions (None for a command without an authorization area).
    auth: "_sessions.CommandAuth | None" = None
    #: Run after the response is built (the reference's ObjectCleanupEvict()): e.g. a completed
    #: sequence is flushed after the response HMACs have used its authValue.
    after_response: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class _Session:
    """One parsed entry of the authorization area."""

    handle: int
    nonce: bytes
    attributes: int
    hmac: bytes


def error_response(rc: int) -> bytes:
    """A response carrying only ``rc`` (Part 1 §18.10: always tag TPM_ST_NO_SESSIONS)."""
    return struct.pack(">HII", ST.NO_SESSIONS, 10, rc)


class Tpm:
    """A TPM 2.0. Call :meth:`power_on` (``_TPM_Init``), then :meth:`execute` commands."""

    def __init__(self, platform: Platform | None = None) -> None:
        self.platform = platform or Platform()
        self.perm = PersistentData()
        self.vol = VolatileData()
        self.pcrs = PcrBanks({})
        self.drbg = Drbg(self.platform.entropy)
        #: Why the TPM is in failure mode, or None when it is not.
        self.failure: str | None = None
        self.powered = False
        self._committed_perm: bytes = b""
        self._clock_base = 0
        self._clock_start = 0
        self._time_start = 0
        #: The TPM timer (:meth:`_timer_ms`) runs at CLOCK_NOMINAL / _clock_rate of the
        #: platform clock's speed (TPM2_ClockRateAdjust); it read _clock_timer_base when the
        #: platform clock read _clock_timer_real.
        self._clock_rate = CLOCK_NOMINAL
        self._clock_timer_base = 0
        self._clock_timer_real = 0
        #: Code of the last command executed (for the swtpm control channel's auto-shutdown).
        self.last_command: int | None = None

    # ------------------------------------------------------------------ power and state

    def power_on(self, *, delete_volatile: bool = False) -> None:
        """``_TPM_Init``: load the permanent state (manufacturing the TPM on first use) and,
        when a volatile blob exists, resume exactly where it left off (swtpm semantics)."""
        self.failure = None
        self.drbg = Drbg(self.platform.entropy)
        storage = self.platform.storage
        blob = storage.load(BlobKind.PERMANENT)
        if blob is None:
            self._manufacture()
        else:
            try:
                self.perm = decode_blob(BlobKind.PERMANENT, blob, PersistentData)
            except StateError as exc:
                self.enter_failure(f"permanent state unreadable: {exc}")
                self.powered = True
                return
            self._committed_perm = blob
        now = self.platform.clock()
        # _TPM_Init resets the rate adjustment (the reference's _plat__TimerReset()); the TPM
        # timer then reads what the platform clock reads.
        self._clock_rate, self._clock_timer_base, self._clock_timer_real = CLOCK_NOMINAL, now, now
        self._clock_base, self._clock_start, self._time_start = self.perm.clock, now, now
        self.vol = VolatileData(pcr_banks=list(self.perm.pcr_allocation))
        self.pcrs = PcrBanks.fresh(self.vol.pcr_banks)
        vblob = storage.load(BlobKind.VOLATILE)
        if vblob is not None:
            try:
                self._restore_volatile(decode_blob(BlobKind.VOLATILE, vblob, VolatileData))
            except StateError as exc:
                self.enter_failure(f"volatile state unreadable: {exc}")
            if delete_volatile:
                storage.delete(BlobKind.VOLATILE)
        self.last_command = None
        self.powered = True

    def _manufacture(self) -> None:
        """First power-on: new seeds and proofs (Part 1 §14.3), committed at once."""
        rand = self.drbg.generate
        self.perm = PersistentData(
            eps=rand(SEED_SIZE), sps=rand(SEED_SIZE), pps=rand(SEED_SIZE),
            eh_proof=rand(SEED_SIZE), sh_proof=rand(SEED_SIZE), ph_proof=rand(SEED_SIZE),
            # A new TPM counts as orderly: its first Startup is no attack on the DA logic.
            orderly_state=SU.CLEAR,
        )
        self._commit_permanent()

    def _restore_volatile(self, vol: VolatileData) -> None:
        self.vol = vol
        self.pcrs = PcrBanks(vol.pcrs)
        vol.pcrs = {}
        now = self.platform.clock()
        self._clock_base, self._clock_start = vol.clock, now
        self._time_start = now - vol.time

    def volatile_blob(self) -> bytes:
        """The volatile blob: the whole RAM state of the TPM (swtpm's volatile state)."""
        self.vol.pcrs = self.pcrs.values
        self.vol.clock = self.clock_ms()
        self.vol.time = self.time_ms()
        try:
            return encode_blob(BlobKind.VOLATILE, self.vol)
        finally:
            self.vol.pcrs = {}

    def permanent_blob(self) -> bytes:
        """The permanent blob as last committed."""
        return self._committed_perm

    def _commit_permanent(self) -> None:
        """Write the permanent blob through storage before the response leaves (DESIGN.md).

        On a storage failure the in-memory persistent data goes back to the last committed
        copy and the TPM enters failure mode: nothing unacknowledged is ever reported done.
        """
        if self.powered:
            self.perm.clock = self.clock_ms()
        blob = encode_blob(BlobKind.PERMANENT, self.perm)
        if blob == self._committed_perm:
            return
        try:
            self.platform.storage.store(BlobKind.PERMANENT, blob)
        except Exception as exc:  # noqa: BLE001 - any storage failure means failure mode
            log.error("committing permanent state failed: %s", exc)
            if self._committed_perm:
                self.perm = decode_blob(BlobKind.PERMANENT, self._committed_perm, PersistentData)
            self.enter_failure(f"storage failure: {exc}")
            raise TpmError(RC.FAILURE, detail="storage failure") from None
        self._committed_perm = blob

    def enter_failure(self, reason: str) -> None:
        """Enter failure mode (Part 1 §9.4.3.2): until the next _TPM_Init only GetTestResult
        and GetCapability run; every other command answers TPM_RC_FAILURE."""
        log.error("TPM enters failure mode: %s", reason)
        self.failure = reason

    # ------------------------------------------------------------------ clock

    def _timer_ms(self) -> int:
        """The TPM's tick timer (the reference's _plat__TimerRead()): the platform clock, sped
        up or slowed down by TPM2_ClockRateAdjust. Time and Clock both advance with it."""
        elapsed = self.platform.clock() - self._clock_timer_real
        return self._clock_timer_base + elapsed * CLOCK_NOMINAL // self._clock_rate

    def clock_ms(self) -> int:
        """TPMS_CLOCK_INFO.clock: ms the TPM has been powered, persisted across power loss."""
        return self._clock_base + (self._timer_ms() - self._clock_start)

    def set_clock(self, value: int) -> None:
        """Move Clock to ``value`` ms (TPM2_ClockSet, TPM2_Clear); the command commits it.

        As the reference's TimeClockUpdate(): a value that Clock reaches NV with (it crosses a
        TPM_PT_CLOCK_UPDATE boundary) makes Clock safe again."""
        if value >> CLOCK_UPDATE_BITS > self.clock_ms() >> CLOCK_UPDATE_BITS:
            self.vol.clock_safe = True
        self._clock_base, self._clock_start = value, self._timer_ms()

    def adjust_clock_rate(self, step: int) -> None:
        """TPM2_ClockRateAdjust (Part 3 §29.3): add ``step`` to the rate divisor, in the
        reference platform's units (CLOCK_NOMINAL counts are the nominal rate; a positive step
        slows Time and Clock down), bounded to CLOCK_NOMINAL +/- CLOCK_ADJUST_LIMIT."""
        now = self._timer_ms()
        self._clock_timer_base, self._clock_timer_real = now, self.platform.clock()
        self._clock_rate = min(max(self._clock_rate + step, CLOCK_NOMINAL - CLOCK_ADJUST_LIMIT),
                               CLOCK_NOMINAL + CLOCK_ADJUST_LIMIT)

    def _maybe_update_clock(self) -> None:
        """TPM_PT_CLOCK_UPDATE: once Clock has crossed a 2^CLOCK_UPDATE_BITS ms boundary since
        it was last written to NV, commit the permanent blob, so a power loss costs less than
        that much Clock (Part 1 §36.4). As the reference's TimeClockUpdate(), the write makes
        Clock safe again. Called at the start of every command after TPM2_Startup (not in
        failure mode, where nothing is written)."""
        if not self.vol.started or self.failure is not None:
            return
        if self.clock_ms() >> CLOCK_UPDATE_BITS > self.perm.clock >> CLOCK_UPDATE_BITS:
            self.vol.clock_safe = True
            self._commit_permanent()

    def time_ms(self) -> int:
        """TPMS_TIME_INFO.time: ms since the last _TPM_Init."""
        return self._timer_ms() - self._time_start

    # ------------------------------------------------------------------ lifecycle

    def startup(self, startup_type: int, locality: int = 0) -> None:
        """TPM2_Startup (Part 3 §9.3; Part 1 §12.2): TPM Reset, Restart or Resume."""
        if self.vol.started:
            raise TpmError(RC.INITIALIZE, detail="TPM already started")
        # PC Client profile: Startup only from locality 0 or 3 (TPM_RC_LOCALITY otherwise).
        if locality not in (0, 3):
            raise TpmError(RC.LOCALITY, detail=f"Startup from locality {locality}")
        # An H-CRTM sequence before this Startup (see hash_end): PCR 0 keeps its measurement,
        # and the Startup counts as one from locality 0 (the reference's TPM2_Startup).
        hcrtm = self._hcrtm_pcrs is not None and self._hcrtm_pcrs is self.pcrs
        if hcrtm:
            locality = 0
        storage = self.platform.storage
        saved: SavedState | None = None
        raw = storage.load(BlobKind.SAVESTATE)
        shut_state = self.perm.orderly_state & ~STARTUP_LOCALITY_3 == SU.STATE
        if raw is not None and shut_state:
            try:
                saved = decode_blob(BlobKind.SAVESTATE, raw, SavedState)
            except StateError as exc:
                log.warning("ignoring savestate: %s", exc)
        orderly = self.perm.orderly_state != SU_NONE
        if startup_type == SU.STATE:
            if saved is None:
                # Part 3 §9.3.1: Startup(STATE) needs a preceding Shutdown(STATE).
                raise TpmError(RC.VALUE, parameter=1, detail="no saved state to resume")
            # ... and a resume happens at the locality of the Startup it resumes.
            if bool(self.perm.orderly_state & STARTUP_LOCALITY_3) != (locality == 3):
                raise TpmError(RC.LOCALITY, detail="resume from another startup locality")
        banks = list(self.perm.pcr_allocation)
        if saved is None:  # TPM Reset
            self.perm.reset_count += 1
            state_reset = StateResetData(null_proof=self.drbg.generate(SEED_SIZE),
                                         null_seed=self.drbg.generate(SEED_SIZE))
            state_clear = StateClearData()
        else:
            state_reset = saved.state_reset
            state_reset.restart_count += 1
            if startup_type == SU.CLEAR:
                # TPM Restart (Part 1 §12.2.3): objects with stClear saved before it must not
                # load again (TimeStartup() counts it in clearCount).
                state_reset.clear_count += 1
            banks = self.vol.pcr_banks or banks
            state_clear = saved.state_clear if startup_type == SU.STATE else StateClearData()
        resume = saved is not None and startup_type == SU.STATE
        pcrs = PcrBanks.fresh(banks, startup_locality=locality)
        if hcrtm and not resume:
            for alg, bank in pcrs.values.items():
                if alg in self.pcrs.values:
                    bank[HCRTM_PCR] = self.pcrs.values[alg][HCRTM_PCR]
        self._hcrtm_pcrs = None
        if resume:
            pcrs.restore_saved(saved.pcrs)
        # Part 3 §22.4: (re)initialising a PCR changes it, so pcrUpdateCounter advances.
        state_reset.pcr_counter = (state_reset.pcr_counter + startup_updates(resume)) & 0xFFFFFFFF
        if not orderly:
            # Part 1 §36.8 (DA) and §36.4 (Clock): an unorderly shutdown may be an attack on the DA logic, and Clock
            # may have lost time. failedTries is incremented by _da.startup below, like libtpms
            # (USE_DA_USED) only when a DA-protected authorization was used before it.
            self.vol.clock_safe = False
        self.vol = VolatileData(started=True, ph_enable=True, pcr_banks=banks,
                                state_clear=state_clear, state_reset=state_reset,
                                clock_safe=self.vol.clock_safe,
                                established=self.vol.established,
                                self_tested=self.vol.self_tested,
                                startup_orderly=orderly, startup_locality=locality)
        self.pcrs = pcrs
        _da.startup(self, orderly)
        _nv.on_startup(self, resume=resume, reset=saved is None, orderly=orderly)
        self.perm.orderly_state = SU_NONE
        storage.delete(BlobKind.SAVESTATE)

    def shutdown(self, shutdown_type: int) -> None:
        """TPM2_Shutdown (Part 3 §9.4): record an orderly shutdown; STATE saves what the next
        Startup(STATE) resumes."""
        if shutdown_type == SU.STATE and self.vol.pcr_reconfig:
            # Part 3 §9.4.1: after TPM2_PCR_Allocate the saved PCRs would not match the new
            # allocation, so only Shutdown(CLEAR) until _TPM_Init (swtpm 0.7.1: TPM_RC_TYPE).
            raise TpmError(RC.TYPE, parameter=1, detail="the PCR allocation changed")
        if shutdown_type == SU.STATE:
            saved = SavedState(state_clear=self.vol.state_clear,
                               state_reset=self.vol.state_reset, pcrs=self.pcrs.saved())
            self.platform.storage.store(BlobKind.SAVESTATE, encode_blob(BlobKind.SAVESTATE, saved))
            # The reference implementation keeps the startup locality with the orderly state,
            # so that TPM Resume can insist on the same one.
            if self.vol.startup_locality == 3:
                shutdown_type |= STARTUP_LOCALITY_3
        _nv.on_shutdown(self)
        self.perm.orderly_state = shutdown_type
        _da.shutdown(self)

    def clear_orderly(self) -> None:
        """Cancel a preceding Shutdown (Part 3 §9.4.1): a command that changes state the
        Shutdown(STATE) saved (e.g. extending a stateSave PCR) makes the next Startup a TPM
        Reset after an unorderly shutdown. Committed before the response leaves."""
        if self.perm.orderly_state != SU_NONE:
            self.perm.orderly_state = SU_NONE
            self._commit_permanent()

    # ------------------------------------------------------------------ _TPM_Hash_Start/Data/End

    #: The running DRTM (or H-CRTM) event sequence: one hash state per allocated bank, or None
    #: when no sequence runs (the reference's g_DRTMHandle == TPM_RH_UNASSIGNED).
    _drtm: "dict[int, Any] | None" = None
    #: The PCR banks an H-CRTM sequence measured into before TPM2_Startup (the reference's
    #: g_DrtmPreStartup). _TPM_Init replaces :attr:`pcrs`, so after a power cycle this no longer
    #: *is* the current bank set and the flag is void without power_on having to clear it.
    _hcrtm_pcrs: "PcrBanks | None" = None

    def hash_start(self) -> None:
        """_TPM_Hash_Start (Part 3 §9.5; PC Client PTP: a locality-4 indication): start a new
        event sequence, dropping one already running, and set TPM_ACCESS.tpmEstablishment.

        swtpm 0.7.1 sets the established bit at _TPM_Hash_Start already, even when no
        _TPM_Hash_End follows (measured)."""
        self._drtm = {alg: HASHES[alg].new() for alg in self.pcrs.banks}
        self.vol.established = True

    def hash_data(self, data: bytes) -> None:
        """_TPM_Hash_Data (Part 3 §9.6): add ``data`` to the sequence in every allocated bank;
        without a sequence (no _TPM_Hash_Start, or it was aborted) nothing happens."""
        if self._drtm is None:
            return
        for state in self._drtm.values():
            state.update(data)

    def hash_end(self) -> None:
        """_TPM_Hash_End (Part 3 §9.7): complete the sequence and measure it.

        * After TPM2_Startup (DRTM): PCRs 17-22 (those locality 4 resets) become zero,
          restartCount is incremented, then PCR 17 := H(0...0 || digest) in every bank.
        * Before TPM2_Startup (H-CRTM): PCR 0 := H(0...04 || digest) in every bank, and the
          next TPM2_Startup (other than a resume) keeps that value instead of initialising it.

        Each extend counts as a PCR change for pcrUpdateCounter (PCRExtend() per bank; the reset
        of the dynamic PCRs does not), which makes swtpm's counter advance by 4 with four banks
        (measured). Without a sequence nothing happens.
        """
        if self._drtm is None:
            return
        states, self._drtm = self._drtm, None
        if self.vol.started:
            for pcr, attrs in enumerate(PCR_ATTRIBUTES):
                if attrs.drtm:
                    self.pcrs.reset(pcr)
            self.vol.state_reset.restart_count += 1
            pcr, start = DRTM_PCR, 0
        else:
            # PC Client profile: an H-CRTM event is recorded as coming from locality 4.
            pcr, start = HCRTM_PCR, 4
            self._hcrtm_pcrs = self.pcrs
        for alg, state in states.items():
            size = HASHES[alg].size
            self.pcrs.values[alg][pcr] = b"\x00" * (size - 1) + bytes([start])
            self.pcrs.extend(pcr, alg, state.digest())
            if counts_update(pcr):
                reset = self.vol.state_reset
                reset.pcr_counter = (reset.pcr_counter + 1) & 0xFFFFFFFF

    def hash_abort(self) -> None:
        """Drop a running event sequence: a TPM command between _TPM_Hash_Start and
        _TPM_Hash_End ends it, and the _TPM_Hash_End that follows measures nothing (swtpm
        0.7.1, measured: PCR 17 keeps its value)."""
        self._drtm = None

    # ------------------------------------------------------------------ dispatch

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Execute one TPM command and return its response. Never raises."""
        if 4 < locality < 32:
            # Localities 5-31 do not exist in TPM 2.0 (32-255 are extended localities): the
            # reference platform (_plat__LocalitySet) takes them as locality 0, as swtpm does.
            locality = 0
        try:
            response = self._dispatch(bytes(command), locality)
        except TpmError as exc:
            response = error_response(exc.rc)
        except Exception:  # noqa: BLE001 - the contract: no exception reaches the wire
            log.exception("internal error executing command %s", command[:10].hex())
            response = error_response(RC.FAILURE)
        return response

    def _dispatch(self, cmd: bytes, locality: int) -> bytes:
        # The order of the checks below is the reference implementation's (ExecuteCommand(),
        # Part 4 §6.6 / Part 3 §5), which swtpm 0.7.1 exhibits and the differential test pins.
        tag, size, code = struct.unpack_from(">HII", cmd) if len(cmd) >= 10 else (0, 0, 0)
        if self.failure is not None and (code not in FAILURE_MODE_COMMANDS or size != len(cmd)
                                         or tag not in COMMAND_TAGS):
            # Part 1 §9.4.3.2: in failure mode only well-formed GetTestResult and
            # GetCapability run; everything else is TPM_RC_FAILURE.
            raise TpmError(RC.FAILURE, detail=self.failure)
        if len(cmd) < 10:
            # Not even a header: the unmarshalling of the header runs out of octets.
            raise TpmError(RC.INSUFFICIENT, detail="command shorter than its header")
        if tag not in COMMAND_TAGS:
            # TPMI_ST_COMMAND_TAG: a TPM_ST value that is no command tag is TPM_RC_BAD_TAG; a
            # value that is no TPM_ST at all fails TPM_ST's own unmarshalling, TPM_RC_VALUE
            # (swtpm 0.7.1 answers 0x084 for e.g. tag 0x8003; Part 1 §18.2 names only BAD_TAG).
            raise TpmError(RC.BAD_TAG if tag in KNOWN_TAGS else RC.VALUE)
        if size != len(cmd) or size > MAX_COMMAND_SIZE:
            raise TpmError(RC.COMMAND_SIZE, detail=f"size field {size}, got {len(cmd)} bytes")
        spec = COMMANDS.get(code)
        if spec is None:
            # Checked before TPM_RC_INITIALIZE: an unknown code is TPM_RC_COMMAND_CODE even
            # before Startup.
            raise TpmError(RC.COMMAND_CODE, detail=f"command 0x{code:x} not implemented")
        if self.failure is None and self.vol.started == (code == CC.Startup):
            # Part 3 §9.3: only Startup before Startup, and Startup only once.
            raise TpmError(RC.INITIALIZE)
        self._maybe_update_clock()
        stream = io.BytesIO(cmd)
        stream.seek(10)
        handles = self._parse_handles(spec, stream, size)
        sessions = self._parse_sessions(spec, tag, stream, size)
        ctx = CommandContext(self, code, locality)
        # Authorization comes before the parameters are unmarshalled (Part 3 §5.6-5.7): a
        # wrong password is reported even when a parameter is malformed.
        self._authorize(ctx, spec, handles, sessions, stream)
        # Part 1 §32.2 command audit: cpHash over the Names and parameters as sent.
        audit_cp_hash = _audit.begin(ctx, handles, cmd[stream.tell():])
        params = self._parse_params(spec, stream, size)
        self.last_command = code
        try:
            result = spec.handler(ctx, *handles, *params)
        except TpmError:
            if spec.nv:
                self._rollback_permanent()
            raise
        if spec.nv:
            if code not in (CC.Startup, CC.Shutdown):
                # Part 3 §9.4.1: a command that changes NV after Shutdown cancels it.
                self.perm.orderly_state = SU_NONE
            self._commit_permanent()
        response = self._build_response(spec, tag, result, ctx)
        if audit_cp_hash is not None:
            _audit.finish(self, spec, audit_cp_hash, response)
        for action in ctx.after_response:
            action()
        return response

    def _rollback_permanent(self) -> None:
        """A failed NV command leaves persistent data as last committed."""
        if self._committed_perm and encode_blob(BlobKind.PERMANENT, self.perm) != self._committed_perm:
            self.perm = decode_blob(BlobKind.PERMANENT, self._committed_perm, PersistentData)

    def _parse_handles(self, spec: CommandSpec, stream: io.BytesIO, size: int) -> list[int]:
        """Part 3 §5.5: unmarshal every handle (TPMI type check, TPM_RC_VALUE + handle number),
        then check that each references a loaded entity."""
        handles: list[int] = []
        for n, hspec in enumerate(spec.handles, start=1):
            raw = stream.read(4)
            if len(raw) < 4:
                raise TpmError(RC.INSUFFICIENT, handle=n, detail="handle area truncated")
            handle = int.from_bytes(raw, "big")
            try:
                hspec.check(handle)
            except TpmError as exc:
                raise TpmError(for_handle(exc.rc, n), detail=exc.detail) from None
            handles.append(handle)
        for n, handle in enumerate(handles, start=1):
            try:
                self.check_handle_loaded(handle)
            except TpmError as exc:
                # TPM_RC_REFERENCE_H0 (a warning, no number field) counts up to _H6 instead.
                rc = (exc.rc + n - 1 if exc.rc == RC.REFERENCE_H0
                      else for_handle(exc.rc, n))
                raise TpmError(rc, detail=exc.detail) from None
        return handles

    def check_handle_loaded(self, handle: int) -> None:
        """Part 3 §5.6.2: a handle must reference a loaded entity (TPM_RC_HANDLE), and a
        hierarchy handle an enabled hierarchy (TPM_RC_HIERARCHY)."""
        resolve(self, handle)

    def _parse_sessions(self, spec: CommandSpec, tag: int, stream: io.BytesIO,
                        size: int) -> list[_Session]:
        """Part 1 §18.7 / Part 3 §5.6: the authorization area, one TPMS_AUTH_COMMAND after the
        other, each checked as it is unmarshalled (session number on every error)."""
        if tag == ST.NO_SESSIONS:
            if spec.auth_count:
                raise TpmError(RC.AUTH_MISSING)
            return []
        raw = stream.read(4)
        if len(raw) < 4:
            raise TpmError(RC.INSUFFICIENT, detail="no authorizationSize")
        auth_size = int.from_bytes(raw, "big")
        # The smallest session is 9 octets and the area must fit in the command: otherwise
        # TPM_RC_SIZE (the reference implementation's check; TPM_RC_AUTHSIZE is never used).
        if auth_size < 9 or auth_size > size - stream.tell():
            raise TpmError(RC.SIZE, detail=f"authorizationSize {auth_size}")
        if spec.code in SESSIONLESS_COMMANDS:
            raise TpmError(RC.AUTH_CONTEXT, detail="command takes no sessions")
        area = io.BytesIO(stream.read(auth_size))
        sessions: list[_Session] = []
        while area.tell() < auth_size:
            n = len(sessions) + 1
            if n > MAX_SESSIONS:
                # Part 1 §18.7: at most three sessions; the error names the fourth.
                raise TpmError(RC.SIZE, session=n, detail="more than three sessions")
            try:
                session = _Session(*parse_auth_command(area))
            except TpmError as exc:
                raise TpmError(for_session(exc.rc, n), detail=exc.detail) from None
            if session.handle == RH.PW:
                # Part 1 §19.8.3: a password session is only an authorization: no audit,
                # encrypt or decrypt, and an empty nonce.
                if session.attributes & PW_FORBIDDEN_ATTRIBUTES:
                    raise TpmError(RC.ATTRIBUTES, session=n)
                if session.nonce:
                    raise TpmError(RC.NONCE, session=n)
            elif not self._session_loaded(session.handle):
                raise TpmError(RC.REFERENCE_S0 + n - 1, detail="session not loaded")
            else:
                _sessions.check_entry(self, spec, sessions, session, n)
            sessions.append(session)
        return sessions

    def _parse_params(self, spec: CommandSpec, stream: io.BytesIO, size: int) -> list[Any]:
        params = []
        for n, con in enumerate(spec.params, start=1):
            try:
                params.append(parse_stream(con, stream))
            except TpmError as exc:
                raise TpmError(for_parameter(exc.rc, n), detail=exc.detail) from None
        if stream.tell() != size:
            raise TpmError(RC.SIZE, detail="bytes left after the last parameter")
        return params

    def auth_value(self, handle: int) -> bytes:
        """The authValue of the entity ``handle`` refers to (Part 1 §19.6)."""
        return resolve(self, handle).auth_value

    def _session_loaded(self, handle: int) -> bool:
        """Whether the HMAC or policy session ``handle`` is loaded (by its index, as the
        reference's SessionIsLoaded(); a type mismatch is _sessions.check_entry's error)."""
        return _sessions.is_loaded(self, handle)

    def da_exempt(self, handle: int) -> bool:
        """Part 1 §19.8.5 (IsDAExempted): PCRs and permanent handles other than TPM_RH_LOCKOUT
        are not protected by the dictionary-attack logic; objects and NV indices say so in
        their attributes (see :class:`~swtpm_py.tpm.entity.Entity`). An entity that is not
        loaded counts as protected."""
        try:
            return resolve(self, handle).no_da
        except TpmError:
            return False

    def _authorize(self, ctx: CommandContext, spec: CommandSpec, handles: list[int],
                   sessions: list[_Session], stream: io.BytesIO) -> None:
        """Check each session in turn, the n-th authorizing the n-th handle that needs
        authorization (Part 1 §19.6), then decrypt the first parameter in ``stream`` if a
        session has the decrypt attribute (Part 1 §21: last, so that cpHash covers the
        parameters as sent).

        Password sessions (TPM_RS_PW) are checked here, HMAC and policy sessions by
        :func:`._sessions.authorize`.
        """
        auth_handles = [h for h, hs in zip(handles, spec.handles) if hs.auth is not Auth.NONE]
        if len(sessions) < len(auth_handles):
            raise TpmError(RC.AUTH_MISSING)
        if sessions:
            ctx.auth = _sessions.CommandAuth(ctx, spec, handles, sessions,
                                             stream.getvalue()[stream.tell():])
            _da.check_bound_sessions(self, ctx.auth)
        for n, s in enumerate(sessions, start=1):
            if (n <= len(auth_handles) and auth_handles[n - 1] == RH.PLATFORM
                    and spec.code in self.perm.pp_commands
                    and not self.platform.physical_presence()):
                # Part 1 §19.3 (the reference's CheckAuthSession()): a command on the physical
                # presence list needs physical presence when TPM_RH_PLATFORM authorizes it,
                # checked before the authorization (swtpm 0.7.1: TPM_RC_PP, session number).
                raise TpmError(RC.PP, session=n)
            if s.handle != RH.PW:
                _sessions.authorize(ctx.auth, n)
                continue
            if n > len(auth_handles):
                # Part 1 §19.8.3: a password session must authorize a handle; the reference
                # implementation reports TPM_RC_HANDLE for the session.
                raise TpmError(RC.HANDLE, session=n, detail="session authorizes no handle")
            # Part 1 §19.8.6: a locked-out entity is refused before anything else is checked.
            _da.check_authorization(self, auth_handles[n - 1])
            _sessions.check_password_role(ctx.auth, n)
            expected = self.auth_value(auth_handles[n - 1]).rstrip(b"\x00")
            if not _hmac.compare_digest(expected, s.hmac.rstrip(b"\x00")):
                # Part 1 §19.8.5: TPM_RC_BAD_AUTH where the dictionary-attack logic does not
                # apply, TPM_RC_AUTH_FAIL (counted as a failure) where it does.
                raise TpmError(_da.increment_lockout(self, auth_handles[n - 1]), session=n)
        ctx.authorized = auth_handles
        if ctx.auth is not None:
            plain = _sessions.decrypt_parameter(ctx.auth)
            if plain is not None:
                start = stream.tell()
                stream.write(plain)
                stream.seek(start)

    def _build_response(self, spec: CommandSpec, tag: int, result: Any,
                        ctx: CommandContext) -> bytes:
        if result is None:
            values: tuple = ()
        elif isinstance(result, tuple):
            values = result
        else:
            values = (result,)
        handle_area = b""
        if spec.response_handle:
            handle_area, values = struct.pack(">I", values[0]), values[1:]
        params = b"".join(con.build(v) for con, v in zip(spec.response, values))
        if tag == ST.SESSIONS and ctx.auth is not None:
            # Part 1 §18.8: parameterSize, the parameters (the first one possibly encrypted)
            # and one TPMS_AUTH_RESPONSE per session.
            params, auth_area = _sessions.respond(ctx.auth, params)
            body = handle_area + struct.pack(">I", len(params)) + params + auth_area
        else:
            if spec.code not in SESSIONLESS_COMMANDS:
                _sessions.end_exclusive_audit(self)
            body = handle_area + params
        if len(body) + 10 > MAX_RESPONSE_SIZE:
            raise TpmError(RC.FAILURE, detail="response too large")
        return struct.pack(">HII", tag, len(body) + 10, RC.SUCCESS) + body


