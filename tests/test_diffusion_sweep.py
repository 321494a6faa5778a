"""A diffusion sweep over forward maps, ending with FID and ELBO on every finished run."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import BASE, merge, run_cli, store, sweep_runs

pytestmark = pytest.mark.e2e


def test_forward_map_grid_then_fid_and_elbo(ray_session, workdir):
    config = {
        "forward": {"name": {"grid": ["heat", "random_product"]}, "K": 6, "sigma_max": 4.0},
        "model": {"channels": 8, "num_res_blocks": 1, "mult": [1, 2], "attention_levels": []},
        "optimizer": {"lr": 1e-3, "warmup": 5, "ema": 0.9},
        "batch_size": 32,
        "samples": 9,
        "sample_modes": ["random", "interpolate"],
    }
    spec = merge(
        {**BASE, "config": config},
        {
            "trainer": "diffusion",
            "metric": "val/loss",
            "mode": "min",
            "stop": {"iterations": 30},
            "loop": {"report_every": 10, "checkpoint_every": 15, "eval_every": 15},
            "max_failures": 0,
            "analysis": [
                {
                    "step": "fid",
                    "params": {"samples": 40, "extractor": "classifier", "batch_size": 20},
                },
                {"step": "elbo", "params": {"images": 16}},
            ],
        },
    )
    path = workdir / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run_cli("sweep", str(path)) == 0
    client = store(workdir)
    _, children = sweep_runs(client)
    by_map = {r.data.params["config.forward.name"]: r for r in children}
    heat, unstable = by_map["heat"], by_map["random_product"]

    assert unstable.info.status == "FAILED"
    assert "numerically unstable" in unstable.data.tags["dynsweep.error"]

    assert heat.info.status == "FINISHED"
    metrics = heat.data.metrics
    assert metrics["analysis/fid/fid"] > 0
    assert metrics["analysis/elbo/bits_per_dim"] > 0
    figures = {a.path for a in client.list_artifacts(heat.info.run_id, "figures")}
    assert figures == {
        "figures/samples_random.png",
        "figures/samples_interpolate.png",
        "figures/learning_curves.png",
    }
