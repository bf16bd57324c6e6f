"""TPM2_ContextSave / TPM2_ContextLoad of HMAC and policy sessions (Part 1 §30.5, Part 3
§28.2-28.4).

* The same raw command sequence against swtpm_py in process, swtpm_py as a process and the
  real swtpm 0.7.1: sequences from the session context counter (first MAX_LOADED_SESSIONS + 1
  = 4), savedHandle = the session handle, hierarchy TPM_RH_NULL, GetCapability(HANDLES) of
  loaded and saved sessions, only the latest context loads (replay: TPM_RC_HANDLE + P1),
  saving a saved session (TPM_RC_REFERENCE_H0), tampering (TPM_RC_INTEGRITY + P1), full
  session memory (TPM_RC_SESSION_MEMORY), flushing a saved session.
* In process: saved sessions survive TPM Restart and Resume, not TPM Reset.
* tpm2-pytss ESAPI on both emulators: save, load and use an HMAC session (ESAPI checks the
  response HMAC).
"""

from __future__ import annotations

import os
import struct
from typing import Callable

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import TPMT_SYM_DEF

from swtpm_py.tpm import MemoryStorage, Platform, Tpm
from swtpm_py.tpm.constants import ALG, CAP, CC, RC, RH, SE

from emulator import Emulator
from objcmd import b2, cmd, rc, u16

P1 = 0x140
HANDLE_P1 = RC.HANDLE | P1
INTEGRITY_P1 = RC.INTEGRITY | P1
#: TPM_RC_REFERENCE_H0 (0x910): the dispatcher's answer for a handle with nothing loaded.
REFERENCE_H0 = RC.REFERENCE_H0

Run = Callable[[bytes], bytes]


def start_session(session_type: int = SE.HMAC) -> bytes:
    """TPM2_StartAuthSession(TPM_RH_NULL, TPM_RH_NULL, 16-octet nonce, no salt, no cipher,
    SHA-256)."""
    return cmd(CC.StartAuthSession,
               struct.pack(">II", RH.NULL, RH.NULL) + b2(os.urandom(16)) + b2(b"")
               + bytes([session_type]) + u16(ALG.NULL) + u16(ALG.SHA256))


def started(run: Run, session_type: int = SE.HMAC) -> int:
    """Start a session; its handle."""
    response = run(start_session(session_type))
    assert rc(response) == 0, hex(rc(response))
    return struct.unpack_from(">I", response, 10)[0]


def save(run: Run, handle: int) -> dict:
    """ContextSave(handle), which must succeed, parsed."""
    response = run(cmd(CC.ContextSave, struct.pack(">I", handle)))
    assert rc(response) == 0, hex(rc(response))
    sequence, saved, hierarchy, size = struct.unpack_from(">QIIH", response, 10)
    return dict(sequence=sequence, savedHandle=saved, hierarchy=hierarchy,
                contextBlob=response[28:28 + size])


def load(run: Run, ctx: dict) -> bytes:
    """ContextLoad(ctx)."""
    return run(cmd(CC.ContextLoad, struct.pack(">QII", ctx["sequence"], ctx["savedHandle"],
                                               ctx["hierarchy"]) + b2(ctx["contextBlob"])))


def handles(run: Run, handle_type: int) -> list[int]:
    """GetCapability(HANDLES) of ``handle_type``."""
    response = run(cmd(CC.GetCapability, struct.pack(">III", CAP.HANDLES, handle_type << 24, 64)))
    assert rc(response) == 0, hex(rc(response))
    count = struct.unpack_from(">I", response, 15)[0]
    return list(struct.unpack_from(f">{count}I", response, 19))


def flush(run: Run, handle: int) -> int:
    """FlushContext(handle): its response code."""
    return rc(run(cmd(CC.FlushContext, struct.pack(">I", handle))))


def scenario(run: Run) -> None:
    """Save, load, replay, tamper, flush and fill the session memory; asserts every value."""
    h = started(run)
    assert h == 0x02000000
    ctx = save(run, h)
    assert (ctx["sequence"], ctx["savedHandle"], ctx["hierarchy"]) == (4, h, RH.NULL)
    assert handles(run, 0x02) == [] and handles(run, 0x03) == [h]
    # Saved, so no longer loaded: saving it again finds nothing.
    assert rc(run(cmd(CC.ContextSave, struct.pack(">I", h)))) == REFERENCE_H0
    blob = ctx["contextBlob"]
    bad = dict(ctx, contextBlob=blob[:70] + bytes([blob[70] ^ 1]) + blob[71:])
    assert rc(load(run, bad)) == INTEGRITY_P1
    response = load(run, ctx)
    assert rc(response) == 0 and struct.unpack_from(">I", response, 10)[0] == h
    assert handles(run, 0x02) == [h] and handles(run, 0x03) == []
    # The context of a loaded session is a replay.
    assert rc(load(run, ctx)) == HANDLE_P1
    newer = save(run, h)
    assert newer["sequence"] == 5
    assert rc(load(run, ctx)) == HANDLE_P1
    # A policy session gets another handle: 0x02000000's index stays reserved while saved.
    p = started(run, SE.POLICY)
    assert p == 0x03000001
    # GetCapability(HANDLES) lists a loaded session with its own handle, a saved one with the
    # HMAC session type whatever its type (the reference's SessionCapGetSaved()).
    assert handles(run, 0x02) == [0x03000001]
    pctx = save(run, p)
    assert (pctx["sequence"], pctx["savedHandle"]) == (6, p)
    assert handles(run, 0x03) == [h, 0x02000001]
    assert flush(run, p) == 0 and handles(run, 0x03) == [h]
    assert rc(load(run, pctx)) == HANDLE_P1
    # Three loaded sessions fill the session memory.
    others = [started(run) for _ in range(3)]
    assert others == [0x02000001, 0x02000002, 0x02000003]
    assert rc(load(run, newer)) == RC.SESSION_MEMORY
    assert flush(run, others[0]) == 0
    response = load(run, newer)
    assert rc(response) == 0 and struct.unpack_from(">I", response, 10)[0] == h
    for handle in (h, *others[1:]):
        assert flush(run, handle) == 0
    assert handles(run, 0x02) == handles(run, 0x03) == []


def new_tpm(storage: MemoryStorage) -> Tpm:
    """A TPM powered on and started with Startup(CLEAR)."""
    tpm = Tpm(Platform(storage))
    tpm.power_on()
    assert rc(tpm.execute(cmd(CC.Startup, u16(0)))) == 0
    return tpm


def test_in_process() -> None:
    """The scenario against the TPM core."""
    scenario(new_tpm(MemoryStorage()).execute)


def test_restart_resume_reset() -> None:
    """Part 1 §30.5: saved sessions survive TPM Restart and TPM Resume, not TPM Reset (their
    contexts then fail the integrity check: the null proof and resetCount changed)."""
    storage = MemoryStorage()
    tpm = new_tpm(storage)

    def cycle(shutdown: int, startup: int) -> Tpm:
        assert rc(tpm.execute(cmd(CC.Shutdown, u16(shutdown)))) == 0
        again = Tpm(Platform(storage))
        again.power_on()
        assert rc(again.execute(cmd(CC.Startup, u16(startup)))) == 0
        return again

    h = started(tpm.execute)
    ctx = save(tpm.execute, h)
    for shutdown, startup in ((1, 0), (1, 1)):  # TPM Restart, TPM Resume
        tpm = cycle(shutdown, startup)
        assert handles(tpm.execute, 0x03) == [h]
        assert rc(load(tpm.execute, ctx)) == 0
        ctx = save(tpm.execute, h)
    assert ctx["sequence"] == 6  # the counter is state-reset data and survived
    tpm = cycle(0, 0)  # TPM Reset
    assert handles(tpm.execute, 0x03) == []
    assert rc(load(tpm.execute, ctx)) == INTEGRITY_P1
    assert started(tpm.execute) == h
    assert save(tpm.execute, h)["sequence"] == 4


@pytest.fixture(scope="module")
def both(pair: dict[str, Emulator]) -> dict[str, Emulator]:
    """swtpm_py and the real swtpm, started (conftest's module-scoped pair)."""
    return pair


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_differential(both: dict, kind: str) -> None:
    """The same raw sequence gives the same values on swtpm_py and swtpm 0.7.1."""
    emu = both[kind]
    assert rc(emu.command(cmd(CC.Startup, u16(0)))) in (0, RC.INITIALIZE)
    scenario(emu.command)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_pytss_save_load_use(both: dict, kind: str) -> None:
    """ESAPI: an HMAC session saved, loaded and used to audit GetRandom; ESAPI verifies the
    response HMAC, so a session restored with the wrong key or nonce fails here."""
    emu = both[kind]
    with ESAPI(emu.tcti) as esys:
        sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
        session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym,
                                          TPM2_ALG.SHA256)
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.AUDIT)
        first = esys.get_random(8, session1=session)
        handle = esys.tr_get_tpm_handle(session)
        ctx = esys.context_save(session)
        assert ctx.savedHandle == handle and ctx.hierarchy == RH.NULL
        restored = esys.context_load(ctx)
        esys.trsess_set_attributes(restored, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.AUDIT)
        second = esys.get_random(8, session1=restored)
        assert len(first) == len(second) == 8 and bytes(first) != bytes(second)
        esys.flush_context(restored)


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_differential_restart_resume_reset(kind: str, tmp_path) -> None:
    """Over the control channel's _TPM_Init (CMD_INIT): a saved session and its latest context
    survive TPM Restart and TPM Resume; after TPM Reset the saved list is empty, the context
    is TPM_RC_INTEGRITY + P1 and the counter starts again at 4 (as swtpm 0.7.1)."""
    emu = Emulator(kind, tmp_path / "state").start()
    try:
        run = emu.command
        assert rc(run(cmd(CC.Startup, u16(0)))) in (0, RC.INITIALIZE)
        h = started(run)
        ctx = save(run, h)
        for shutdown, startup, sequence in ((1, 0, 5), (1, 1, 6)):
            assert rc(run(cmd(CC.Shutdown, u16(shutdown)))) == 0
            assert emu.ctrl(0x02, struct.pack(">I", 0), 4) == bytes(4)  # CMD_INIT
            assert rc(run(cmd(CC.Startup, u16(startup)))) == 0
            assert handles(run, 0x03) == [h]
            assert rc(load(run, ctx)) == 0
            ctx = save(run, h)
            assert ctx["sequence"] == sequence
        assert rc(run(cmd(CC.Shutdown, u16(0)))) == 0
        assert emu.ctrl(0x02, struct.pack(">I", 0), 4) == bytes(4)
        assert rc(run(cmd(CC.Startup, u16(0)))) == 0
        assert handles(run, 0x03) == []
        assert rc(load(run, ctx)) == INTEGRITY_P1
        assert started(run) == h and save(run, h)["sequence"] == 4
    finally:
        emu.cleanup()
