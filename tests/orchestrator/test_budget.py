from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynsweep.errors import ConfigError
from orchestrator import budget
from orchestrator.spec import load_spec
from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import RecordSpec

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def test_estimate_matches_what_is_recorded(tmp_path):
    records = [
        {"probe": "weights"},
        {"probe": "grads", "every": 5, "dtype": "float16"},
        {"probe": "activations", "every": "epoch"},
    ]
    spec = load_spec(
        raw={
            "name": "b",
            "trainer": "classifier",
            "stop": {"iterations": 30},
            "config": {"model": {"widths": [16]}},
            "loop": {"record": records},
        }
    )
    per_trial, total = budget.estimate(spec)
    loop = LoopConfig(record=tuple(RecordSpec(**r) for r in records))
    fit(
        ClassifierTrainer(ClassifierConfig(model={"widths": [16]})),
        LocalContext(tmp_path),
        loop,
        StopRule(iterations=30),
    )
    for name, size in per_trial.items():
        chunks = (tmp_path / "trajectories" / name).glob("c*[0-9].npy")
        recorded = sum(np.load(p, mmap_mode="r").nbytes for p in chunks)
        assert recorded == size, name
    assert total == sum(per_trial.values())


def test_over_budget_is_refused_with_the_ways_to_shrink():
    with pytest.raises(ConfigError) as err:
        load_spec(QUICKSTART, ["stop.iterations=1000000", "loop.record_budget_gb=1"])
    message = str(err.value)
    assert "would record about 77.0 GB (4 trials × 19.24 GB: weights 19.24 GB)" in message
    for way in ("dtype: float16", "every: k", "project: d", "select:"):
        assert way in message
    shrunk = load_spec(
        QUICKSTART,
        [
            "stop.iterations=1000000",
            "loop.record_budget_gb=1",
            "loop.record=[{probe: weights, project: 64, every: 10}]",
        ],
    )
    assert budget.estimate(shrunk)[1] < 1e9
