"""Benchmarks: the same workloads against swtpm_py and the real swtpm (see run.py)."""
