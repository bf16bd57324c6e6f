"""``python -m benchmarks.attest`` runs its workloads against both emulators: its client checks
every attestation (magic, type, the nonce as extraData) and verifies every signature with
``cryptography``, so it only completes if each emulator attests as the spec says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_attest_benchmarks_run_against_both_emulators() -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.attest", "--iterations", "10"],
                       cwd=REPO, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    rows = {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+)\s+[\d,]+\s+[\d,]+\s+([\d.]+)", r.stdout, re.M)}
    assert set(rows) == {"quote_rsa", "quote_ecc", "certify"}, r.stdout
    assert all(ratio > 0 for ratio in rows.values())
