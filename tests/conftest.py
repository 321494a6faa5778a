"""Shared fixtures: one Ray session for the whole test run, a scratch working directory."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Ray workers inherit the environment at ray.init: make the test-only trainers importable and
# registered there too, and keep Ray's and MLflow's noise down.
os.environ["DYNSWEEP_TRAINERS"] = (
    "flaky=tests.fixtures.trainers:FlakyTrainer,"
    "flaky_diffusion=tests.fixtures.trainers:FlakyDiffusionTrainer,"
    "gated=tests.fixtures.trainers:GatedTrainer"
)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
# FID reference statistics and extractor models: a fresh cache, not the user's ~/.cache.
os.environ["DYNSWEEP_CACHE"] = tempfile.mkdtemp(prefix="dynsweep-test-cache-")
os.environ.pop("RAY_ADDRESS", None)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance with 2 CPUs for every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        from dynsweep import logs

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            **logs.ray_init_options(),  # as the CLI starts Ray: quiet workers, warnings shown
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def cuda():
    """The CUDA device of a ``gpu`` test. Without one the test skips with its reason, or fails
    where ``DYNSWEEP_REQUIRE_GPU`` is set (a GPU runner, where a missing device is an error)."""
    import torch

    if not torch.cuda.is_available():
        if os.environ.get("DYNSWEEP_REQUIRE_GPU"):
            pytest.fail("DYNSWEEP_REQUIRE_GPU is set and there is no CUDA device")
        pytest.skip("no CUDA device (the gpu tier runs where there is one)")
    return torch.device("cuda")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder, so mlflow.db and dynsweep_runs/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_ray(monkeypatch):
    """Fail if anything starts or joins Ray."""
    import ray

    def forbidden(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def pytest_collection_modifyitems(config, items):
    """Keep the quick tier quick: a test that starts or joins Ray must be marked e2e (or slow)."""
    unmarked = [
        item.nodeid
        for item in items
        if "ray_session" in getattr(item, "fixturenames", ())
        and not any(item.get_closest_marker(m) for m in ("e2e", "slow", "gpu"))
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests using ray_session must be marked e2e (tiers: see README): " + ", ".join(unmarked)
        )
