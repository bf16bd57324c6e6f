"""Shared fixtures: emulators (ours and the reference swtpm) on free ports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulator  # noqa: E402
from tpmcmd import FakeClock, power_on, rc, startup  # noqa: E402

from swtpm_py.tpm import MemoryStorage, Platform, Tpm  # noqa: E402


@pytest.fixture
def platform() -> Platform:
    """In-memory storage and a settable clock shared by the power cycles of one test."""
    return Platform(storage=MemoryStorage(), clock=FakeClock())


@pytest.fixture
def tpm(platform: Platform) -> Tpm:
    """An in-process TPM, manufactured, after Startup(CLEAR) sent as raw bytes."""
    t = power_on(platform)
    assert rc(t.execute(startup())) == 0
    return t


@pytest.fixture
def emulator(tmp_path):
    """A started swtpm_py (not-need-init, startup-clear) with a fresh state directory."""
    emu = Emulator("swtpm_py", tmp_path / "state").start()
    yield emu
    emu.cleanup()


@pytest.fixture
def reference(tmp_path):
    """A started real swtpm (the reference) with a fresh state directory."""
    emu = Emulator("swtpm", tmp_path / "ref-state").start()
    yield emu
    emu.cleanup()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """swtpm_py and the real swtpm side by side for a module's tests: {kind: Emulator}."""
    emus: dict[str, Emulator] = {}
    try:
        for kind in ("swtpm_py", "swtpm"):
            emus[kind] = Emulator(kind, tmp_path_factory.mktemp(kind) / "state").start()
        yield emus
    finally:
        for emu in emus.values():
            emu.cleanup()


@pytest.fixture(params=["swtpm_py", "swtpm"])
def any_emulator(request, tmp_path):
    """Both emulators in turn: a test using it asserts behaviour the two must share."""
    emu = Emulator(request.param, tmp_path / f"{request.param}-state").start()
    yield emu
    emu.cleanup()
