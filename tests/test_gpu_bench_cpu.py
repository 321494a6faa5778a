"""benchmarks/gpu.py in its reduced CPU form (slow tier, ~1 min on 2 cores): every part runs
and prints its line."""

from __future__ import annotations

import pytest

from benchmarks import gpu

pytestmark = pytest.mark.slow

PARTS = [
    "trainer classifier",
    "trainer paths",
    "trainer autoencoder",
    "trainer diffusion",
    "trainer koopman",
    "trainer subspace",
    "diffusion fp32",
    "diffusion bf16",
    "diffusion compile",
    "MLP loop overhead",
    "paths 2 members",
    "FID classifier extractor",
    "pytest -m gpu",
    "total",
]


def test_quick_cpu_run_prints_a_line_for_every_part(capsys):
    gpu.main(["--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    for part in PARTS:
        assert any(line.startswith(part) for line in lines), (part, out)
    assert "failed:" not in out and "device: cpu" in lines[0], out
