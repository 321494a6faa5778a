"""The recorder's GPU path: pinned buffers, non-blocking copies, CUDA events (run: -m gpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.recording import Recorder, RecordSpec
from trainers.trajectory import read_trajectory

pytestmark = pytest.mark.gpu


def test_rows_recorded_from_the_gpu_are_the_values_at_each_step(tmp_path, cuda):
    w = torch.zeros(1000, device=cuda)
    rec = Recorder(tmp_path, chunk_steps=8)
    expected = []
    for step in range(50):
        w.add_(torch.randn(1000, device=cuda))  # mutated in place right after each record
        rec.record(
            "w", step, [w[:400], w[400:]], {"a": [0, 400], "b": [400, 1000]}, RecordSpec(probe="w")
        )
        rec.record("h", step, w, {}, RecordSpec(probe="w", dtype="float16", project=64))
        expected.append(w.cpu().numpy().copy())
    rec.close()
    traj = read_trajectory(tmp_path / "w")
    np.testing.assert_array_equal(traj.values, np.stack(expected))
    assert rec.series["w"].buffer.is_pinned()
    half = read_trajectory(tmp_path / "h")
    sketch = half.projection()
    np.testing.assert_allclose(
        half.values.astype(np.float32),
        sketch(torch.tensor(np.stack(expected))).numpy(),
        rtol=2e-3,
        atol=0.5,
    )
