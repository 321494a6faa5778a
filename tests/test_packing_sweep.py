"""A packed sweep: every grid point its own MLflow run, equal to the unpacked sweep's."""

from __future__ import annotations

import pytest
import torch

from dynsweep.errors import ConfigError
from orchestrator.packing import make_packs
from orchestrator.spec import load_spec
from tests.helpers import BASE, run_cli, store, sweep_runs
from tests.test_paths_sweep import write

pytestmark = pytest.mark.e2e

GRID = {
    "order": {"grid": [2, 3]},
    "width": 8,
    "t_samples": 4,
    "lr": {"grid": [0.01, 1e30]},  # lr = 1e30 diverges: that point fails, alone
    "uniform_t": {"grid": [False, True]},
    "noise_init": 1.0,  # float32 losses ~1: the 1e-5 comparisons below are absolute
}
EXTRA = {
    "metric": "val/best_loss",
    "mode": "min",
    "stop": {"iterations": 30},
    "loop": {"report_every": 10, "eval_every": 10, "checkpoint_every": 20},
    "seed": {"grid": [0, 1]},
    "max_failures": 0,
}


def by_point(runs):
    return {
        tuple(
            r.data.params[k] for k in ("config.order", "config.lr", "config.uniform_t", "seed")
        ): r
        for r in runs
    }


def test_packed_sweep_gives_each_point_its_own_run_equal_to_the_unpacked_sweep(
    ray_session, workdir
):
    packed = write(workdir, "packed", "paths", GRID, pack="auto", **EXTRA)
    plain = write(workdir, "plain", "paths", GRID, **EXTRA)
    spec = load_spec(packed)
    packs = make_packs(spec, slots=2)
    assert sorted(map(len, packs)) == [4, 4, 4, 4]  # two packs per curve order, two per slot
    assert all(len({p["config"]["order"] for p in pack}) == 1 for pack in packs)
    assert run_cli("sweep", str(packed)) == 0
    assert run_cli("sweep", str(plain)) == 0
    client = store(workdir)
    _, packed_runs = sweep_runs(client, "packed")
    _, plain_runs = sweep_runs(client, "plain")
    assert len(packed_runs) == len(plain_runs) == 16
    assert len({r.data.tags["dynsweep.pack"] for r in packed_runs}) == 4
    a, b = by_point(packed_runs), by_point(plain_runs)
    assert a.keys() == b.keys()
    for point, run in a.items():
        alone = b[point]
        assert run.info.status == alone.info.status, point
        if point[1] == "1e+30":  # diverged: failed with the unpacked run's message
            assert run.info.status == "FAILED"
            assert run.data.tags["dynsweep.fatal"] == alone.data.tags["dynsweep.fatal"]
            continue
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/best_loss"):
            got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            want = [(m.step, m.value) for m in client.get_metric_history(alone.info.run_id, key)]
            assert [s for s, _ in sorted(got)] == [s for s, _ in sorted(want)]
            assert max(abs(x - y) for (_, x), (_, y) in zip(sorted(got), sorted(want))) < 1e-5
        models = [
            torch.load(
                client.download_artifacts(r.info.run_id, "model/model.pt", str(workdir / k)),
                weights_only=True,
            )
            for k, r in (("p", run), ("u", alone))
        ]
        assert models[0]["config"] == models[1]["config"]
        assert models[0]["seed"] == models[1]["seed"]
        assert torch.allclose(models[0]["state"]["theta"], models[1]["state"]["theta"], atol=1e-5)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"trainer": "classifier", "config": BASE["config"]}, "cannot pack"),
        ({"scheduler": {"name": "asha"}}, "scheduler.name fifo"),
        ({"config": {"lr": {"uniform": [0.001, 0.1]}}, "search": {"algorithm": "random"}}, "grid"),
    ],
)
def test_packing_rules_are_checked_before_anything_runs(workdir, extra, match):
    spec = {**BASE, "trainer": "paths", "config": {"order": 2}, "metric": "val/loss", "pack": 4}
    spec.update(extra)
    with pytest.raises(ConfigError, match=match):
        load_spec(raw=spec)
