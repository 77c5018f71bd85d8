"""The benchmark in small: every row, ratio and replicas line comes out, with numbers in it.

How fast the gateway is is the script's business on a quiet machine (README, "Benchmark"); this
only keeps the script working, so that its numbers can always be taken.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\((?:a|b|c|d)\) .+ +(1|16)  p50 +[\d.]+ ms  p99 +[\d.]+ ms  first p50 +[\d.]+ ms +\d+ req/s  cpu +[\d.]+ ms/req$")


def test_the_benchmark_prints_every_row_ratio_and_replica_line():
    done = subprocess.run(
        [sys.executable, str(TOP / "scripts" / "bench.py"), "--requests", "64", "--replicas", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if ROW.match(line)]
    assert len(rows) == 12 + 4, done.stdout  # 6 rows at c=1 and c=16; then one process and the replicas, twice
    ratios = [line for line in lines if re.match(r"^(added p50|req/s), .+ +[\d.]+x  \(goal (<=|>=) [\d.]+x: (met|NOT met)\)$", line)]
    assert len(ratios) == 4, done.stdout
    assert all(float(re.search(r" ([\d.]+)x ", line).group(1)) > 0 for line in ratios), done.stdout
    combined = [line for line in lines if re.match(r"^  combined \d+ req/s = [\d.]+x one process$", line)]
    assert len(combined) == 2, done.stdout
