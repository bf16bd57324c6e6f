"""``python -m benchmarks.objects`` runs its workloads against both emulators: each workload
checks its results from outside the TPM (a signature verified with ``cryptography``, an OAEP
plaintext, a sequence digest compared with hashlib), so a ratio means both emulators did the
work correctly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = {"primary_ecc", "primary_ecc_fresh", "primary_rsa", "primary_rsa_fresh",
             "create_load", "sign_ecdsa", "sign_rsassa", "rsa_decrypt", "hash_sequence",
             "context_save_load"}


def test_object_benchmarks_run_against_both_emulators() -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.objects", "--iterations", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    rows = {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+)\s+[\d.,]+\s+[\d.,]+\s+([\d.]+)", r.stdout, re.M)}
    assert set(rows) == WORKLOADS, r.stdout
    assert all(ratio > 0 for ratio in rows.values())
