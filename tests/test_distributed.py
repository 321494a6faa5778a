"""Distributed trials: a TorchTrainer started from the Tune function, DDP and DeepSpeed on CPU."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import BASE, history, merge, run_cli, store, sweep_runs

pytestmark = pytest.mark.e2e

TINY = {
    "forward": {"K": 8},
    "model": {"channels": 8, "num_res_blocks": 1, "mult": [1, 2], "attention_levels": []},
    "optimizer": {"lr": 1e-3, "warmup": 2},
    "batch_size": 16,
    "eval_batch": 32,
    "samples": 4,
}


def diffusion_sweep(folder, resources, **extra):
    spec = merge(
        {**BASE, "config": TINY},
        dict(
            trainer="diffusion",
            metric="val/loss",
            mode="min",
            stop={"iterations": 12},
            loop={
                "report_every": 3,
                "checkpoint_every": 6,
                "eval_every": 6,
                "chunk_steps": 4,
                "record": [{"probe": "weights", "every": 3, "dtype": "float16"}],
            },
            resources=resources,
            max_concurrent_trials=1,
            **extra,
        ),
    )
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "resources",
    [
        {"workers": 2, "cpus_per_worker": 1},
        {"workers": 2, "cpus_per_worker": 1, "strategy": "deepspeed", "zero_stage": 2},
    ],
    ids=["ddp", "deepspeed-zero2"],
)
def test_two_cpu_workers_train_and_report_through_tune(ray_session, workdir, resources):
    assert run_cli("sweep", str(diffusion_sweep(workdir, resources))) == 0
    client = store(workdir)
    parents, children = sweep_runs(client)
    assert len(children) == 1  # one MLflow run per trial, whatever the number of workers
    run = children[0]
    assert run.info.status == "FINISHED"
    assert history(client, run.info.run_id, "train/loss") == list(range(1, 13))
    assert history(client, run.info.run_id, "val/loss") == [0, 6, 12]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "figures", "trajectories"} <= names
    assert parents[0].data.metrics["best/val/loss"] == pytest.approx(run.data.metrics["val/loss"])
