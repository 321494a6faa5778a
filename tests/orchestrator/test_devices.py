"""Device requests checked before Ray starts, the pending-trial watch on a cluster, and the
device an analysis step that runs a model is given."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from analysis import runner
from dynsweep.errors import ConfigError
from orchestrator import cli, devices, progress
from orchestrator.spec import AnalysisStepSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
NO_GPU = {"CPU": 2.0, "GPU": 0.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_gpus_asked_of_a_local_machine_without_them_exit_2_before_ray(workdir, capsys, no_ray):
    code = cli.main(["sweep", str(QUICKSTART), "--set", "resources.gpus=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "resources.gpus: each trial asks for 1 GPU; this machine has 0 GPUs" in err
    assert "--set resources.gpus=0" in err and "--address" in err
    assert not (workdir / "mlflow.db").exists()  # refused before anything was written


def test_what_a_local_machine_lacks_is_named_by_its_field():
    spec = load_spec(QUICKSTART, ["resources.analysis_gpus=2"])
    with pytest.raises(ConfigError, match="resources.analysis_gpus: each analysis task asks for 2"):
        devices.check_local(spec, None, NO_GPU)
    spec = load_spec(QUICKSTART, ["resources.cpus=8"])
    with pytest.raises(ConfigError, match="resources.cpus: each trial asks for 8 CPUs; .* has 2"):
        devices.check_local(spec, None, NO_GPU)
    ddp = load_spec(
        ROOT / "configs" / "heat_digits.yaml",
        ["resources.workers=2", "resources.gpus_per_worker=1"],
    )
    with pytest.raises(ConfigError, match="resources.gpus_per_worker: each trial asks for 2 GPUs"):
        devices.check_local(ddp, None, NO_GPU)
    devices.check_local(ddp, None, {"CPU": 4.0, "GPU": 2.0})  # fits
    devices.check_local(ddp, "auto", NO_GPU)  # a cluster may have (or add) them
    assert devices.check_local(load_spec(QUICKSTART), None, NO_GPU) is None


class _Trial(SimpleNamespace):
    def __str__(self) -> str:
        return self.name


def test_the_pending_watch_says_it_once_and_ends_the_sweep_after_its_timeout(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_nodes", lambda: [{"CPU": 2.0}, {"CPU": 1.0}])
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    watch = progress.PendingWatch({"CPU": 1.0, "GPU": 1.0}, timeout_s=60, notice_s=10)
    waiting = [_Trial(name=f"trial_{i}", status="PENDING") for i in range(2)]
    for t in (0, 5, 11, 30, 59):
        clock[0] = 100.0 + t
        watch.on_step_begin(0, waiting)
        assert not watch.stopper.stop_all()
    err = capsys.readouterr().err
    assert err.count("no trial can be placed") == 1
    assert "each needs 1 CPU, 1 GPU, the largest node has 2 CPU, 0 GPU; waiting up to 60" in err
    clock[0] = 160.0
    watch.on_step_begin(0, waiting)
    assert watch.stopper.stop_all()
    assert "not scheduled within 60 s: 2 trials (trial_0, trial_1)" in watch.expired


def test_trials_that_could_be_placed_are_not_reported(monkeypatch):
    monkeypatch.setattr(progress, "_nodes", lambda: [NO_GPU])
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    watch = progress.PendingWatch({"CPU": 1.0}, timeout_s=10, notice_s=5)
    behind = [_Trial(name="a", status="RUNNING"), _Trial(name="b", status="PENDING")]
    starting = [_Trial(name="a", status="PENDING"), _Trial(name="b", status="PENDING")]
    for t in range(0, 100, 5):  # the queue waits behind a running trial; actors start slowly
        clock[0] = float(t)
        watch.on_step_begin(0, behind if t < 50 else starting)
    assert watch.expired is None and not watch.noticed


def test_a_model_step_gets_the_analysis_device_and_its_gpus():
    fid = AnalysisStepSpec(step="fid", params={"extractor": "classifier"})
    params, uses_model = runner._params(fid, "data", gpus=1)
    assert uses_model and params["device"] == "cuda"
    assert runner._params(fid, "data", gpus=0)[0]["device"] == "cpu"
    mine = AnalysisStepSpec(step="elbo", params={"device": "cpu"})
    assert runner._params(mine, "data", gpus=1)[0]["device"] == "cpu"  # the user's choice
    edm = AnalysisStepSpec(step="edm")
    params, uses_model = runner._params(edm, "data", gpus=1)
    assert not uses_model and "device" not in params


def test_pack_auto_on_a_gpu_sizes_packs_by_device_memory(monkeypatch):
    from orchestrator import plan
    from orchestrator.packing import make_packs
    from trainers.paths.trainer import PathsTrainer

    toy = ROOT / "configs" / "paths_toy_grid.yaml"  # 60 points in 10 groups of 6 seeds x t
    spec = load_spec(toy, ["resources.gpus=1", "resources.gpu_memory_gb=1"])
    cpu = load_spec(toy)
    assert [len(p) for p in make_packs(cpu, slots=2)][:3] == [6, 6, 6]  # 15 a pack: groups of 6
    assert {len(p) for p in make_packs(spec, slots=1)} == {6}  # one pack a GPU: whole groups
    monkeypatch.setattr(PathsTrainer, "member_bytes", classmethod(lambda cls, c: 200 * 2**20))
    cap, why = plan.member_cap(spec)
    assert cap == 4  # 80 % of 1 GiB / 200 MiB
    assert "at most 4 members: 80% of 1 GiB × 1 GPU / 200 MiB a member" in why
    assert max(len(p) for p in make_packs(spec, slots=1, cap=cap)) == 3  # 6 cut evenly: 3 + 3
    assert plan.member_cap(cpu) == (None, "")
    half = load_spec(toy, ["resources.gpus=0.5", "resources.gpu_memory_gb=1"])
    assert plan.member_cap(half)[0] == 2
    monkeypatch.setattr(PathsTrainer, "member_bytes", classmethod(lambda cls, c: None))
    assert "gives no member footprint" in plan.member_cap(spec)[1]


def test_a_paths_members_footprint_counts_its_control_points_and_its_batch():
    from trainers.paths.trainer import PathsConfig, PathsTrainer

    small = PathsTrainer.member_bytes(PathsConfig(order=2, width=16))
    params = 1 * 16 + 16 + 16 * 16 + 16 + 16 * 1 + 1  # the 1-16-16-1 MLP
    activations = 3 * 210 * 8 * (1 + 32)  # whole toy split, 8 points of t, inputs + hidden
    assert small == 4 * (4 * 3 * params + activations)
    assert PathsTrainer.member_bytes(PathsConfig(order=4, width=16, dtype="float64")) > 2 * small
    assert PathsTrainer.member_bytes(PathsConfig(dataset="csv", csv_path="x.csv")) is None


def test_an_mpi_rank_asking_for_a_gpu_its_node_lacks_is_refused(monkeypatch):
    from orchestrator.mpi import check_rank_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    spec = load_spec(raw={"name": "t", "trainer": "classifier", "resources": {"gpus": 1}})
    check_rank_devices(spec, 1)  # ranks 0 and 1 each have a device
    with pytest.raises(ConfigError, match=r"resources.gpus: rank 2 on .* this node has 2 CUDA"):
        check_rank_devices(spec, 2)
    cpu = load_spec(raw={"name": "t", "trainer": "classifier"})
    check_rank_devices(cpu, 5)  # no GPU asked for: nothing to check
