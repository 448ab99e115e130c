"""benchmarks/gpu.sh, the one prepared GPU benchmark command, runs on CPU as a smoke test."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_sh_runs_on_cpu_and_prints_one_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--device", "cpu", "--steps", "2", "--repeats", "2", "--batch-sizes", "8", "16"]
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args, "--n-windows", "64"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# gpu bench") and "torch" in lines[0]
    assert "2 timed steps x 2 interleaved repeats" in lines[1]
    rows = [ln for ln in lines if re.match(r"^\s+\d+ ", ln)]
    assert [int(ln.split()[0]) for ln in rows] == [8, 16]  # one row per batch size
    for ln in rows:  # naive and fp32 cells: median (min-max), then the ratio
        cells = re.findall(r"([\d,]+) \(([\d,]+)-([\d,]+)\)", ln)
        assert len(cells) == 2
        for med, lo, hi in cells:
            med, lo, hi = (int(v.replace(",", "")) for v in (med, lo, hi))
            assert 0 < lo <= med <= hi
        assert ln.rstrip().endswith("x")
    assert re.search(r"^best: [\d,]+ windows/s \(fp32, batch (8|16)\)$", lines[-1])
