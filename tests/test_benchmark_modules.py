"""``python -m benchmarks.sessions``, ``.objects`` and ``.attest`` run their workloads against
both emulators. Each workload checks its results from outside the TPM — the session client
verifies every response HMAC and a salted session's key, signatures are verified with
``cryptography``, OAEP plaintexts and sequence digests compared, attestations checked (magic,
type, the nonce as extraData) — so a ratio means both emulators did the work correctly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module, iterations, workloads", [
    ("sessions", 20, {"hmac", "salted_cfb", "policy"}),
    ("objects", 2, {"primary_ecc", "primary_ecc_fresh", "primary_rsa", "primary_rsa_fresh",
                    "create_load", "sign_ecdsa", "sign_rsassa", "rsa_decrypt",
                    "hash_sequence", "context_save_load"}),
    ("attest", 10, {"quote_rsa", "quote_ecc", "certify"}),
])
def test_benchmarks_run_against_both_emulators(module: str, iterations: int,
                                               workloads: set[str]) -> None:
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{module}",
                        "--iterations", str(iterations)],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    rows = {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+)\s+[\d.,]+\s+[\d.,]+\s+([\d.]+)", r.stdout, re.M)}
    assert set(rows) == workloads, r.stdout
    assert all(ratio > 0 for ratio in rows.values())
