"""Every registered trainer passes the same contract (STYLE 12)."""

from __future__ import annotations

import math

import pytest
import torch

from trainers import TRAINERS, get_trainer_class
from trainers.local import LocalContext
from trainers.packing import host_metrics

# flaky_diffusion (a test fixture) is the diffusion trainer with one injected crash; subspace
# samples around a paths run's model, so it has no default input (tests/trainers/test_paths.py).
# Their default models take ~1 min for the round trip: in the slow tier (test_diffusion.py and
# test_koopman.py train small ones in the quick tier).
HEAVY = {"diffusion", "koopman"}


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
        for name in sorted(set(TRAINERS) - {"flaky_diffusion", "subspace"})
    ]
)
def trainer_cls(request):
    return get_trainer_class(request.param)


def test_config_has_defaults_and_rejects_unknown_keys(trainer_cls):
    trainer_cls.Config()
    with pytest.raises(ValueError):
        trainer_cls.Config(surely_not_a_field=1)


def test_step_evaluate_probe_and_state_round_trip(trainer_cls, tmp_path):
    a = trainer_cls(trainer_cls.Config())
    a.setup(LocalContext(tmp_path))
    for _ in range(3):
        metrics = host_metrics(a.step())  # floats or tensors, read as the loop reads them
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert all(k.startswith("train/") for k in metrics)
    assert all(k.startswith("val/") for k in a.evaluate())
    for name in a.probes:
        probe = a.probe(name)
        parts = [probe] if isinstance(probe, torch.Tensor) else probe
        assert parts and all(isinstance(p, torch.Tensor) for p in parts)

    b = trainer_cls(trainer_cls.Config())
    b.setup(LocalContext(tmp_path))  # same seed: same data split; fresh weights
    state = a.state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    b.load_state_dict(torch.load(path, weights_only=True))
    # Same next step (up to float reductions, whose order multi-threaded kernels may change).
    assert host_metrics(b.step()) == pytest.approx(host_metrics(a.step()), rel=1e-4)


@pytest.mark.parametrize(
    "name, files",
    [
        ("autoencoder", {"reconstructions.png", "spectral_error.png"}),
        ("paths", {"loss_along_t.png"}),
    ],
)
def test_trainers_draw_their_figures(name, files, tmp_path):
    from PIL import Image

    cls = get_trainer_class(name)
    trainer = cls(cls.Config())
    trainer.setup(LocalContext(tmp_path))
    for _ in range(2):
        trainer.step()
        trainer.evaluate()
    folder = tmp_path / "figures"
    folder.mkdir()
    written = trainer.write_artifacts(folder)
    assert {p.name for p in written} == files
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400
