"""``python -m benchmarks.sessions`` runs its workloads against both emulators: the session
client behind it (HMACs verified on every response, a salted session's key, decrypted
digests compared with hashlib) only works if each emulator computes what the spec says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_session_benchmarks_run_against_both_emulators() -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.sessions", "--iterations", "20"],
                       cwd=REPO, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    rows = {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+)\s+[\d,]+\s+[\d,]+\s+([\d.]+)", r.stdout, re.M)}
    assert set(rows) == {"hmac", "salted_cfb", "policy"}, r.stdout
    assert all(ratio > 0 for ratio in rows.values())
