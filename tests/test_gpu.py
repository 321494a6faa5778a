"""The GPU tier (run: -m gpu): every trainer on CUDA, the loop's batched metrics without
per-step syncs, the FID extractor on CUDA and DDP over NCCL. Without a CUDA device every test
skips with its reason (``DYNSWEEP_REQUIRE_GPU=1``: fail instead, for a GPU CI runner)."""

from __future__ import annotations

import inspect
import math
import socket
from pathlib import Path

import pytest
import torch

from trainers.distributed import Parallel
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import Recorder, RecordSpec
from trainers.trajectory import read_trajectory

pytestmark = pytest.mark.gpu

TINY_DIFFUSION = {
    "forward": {"K": 10},
    "model": {"channels": 16, "num_res_blocks": 1, "mult": [1, 2], "attention_levels": [1]},
    "optimizer": {"lr": 1e-3, "warmup": 5, "ema": 0.9},
    "samples": 0,
    "batch_size": 4,
    "eval_batch": 4,
}


def _tiny_diffusion():
    from trainers.diffusion.trainer import DiffusionTrainer

    class TinyDiffusion(DiffusionTrainer):
        def load_data(self, ctx):
            images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
            return images[8:], images[:8]

    return TinyDiffusion


def _trainer(name: str):
    """A small instance of trainer ``name`` (``packed_paths``: three packed members)."""
    from trainers import get_trainer_class
    from trainers.diffusion.trainer import DiffusionConfig

    if name == "diffusion":
        return _tiny_diffusion()(DiffusionConfig.model_validate(TINY_DIFFUSION))
    if name == "packed_paths":
        from trainers.paths.packed import PackedPathsTrainer
        from trainers.paths.trainer import PathsConfig

        configs = [PathsConfig(order=2, width=8, lr=lr) for lr in (0.01, 0.02, 0.03)]
        return PackedPathsTrainer(configs, [0, 1, 2])
    cls = get_trainer_class(name)
    small = {
        "classifier": {"model": {"widths": [32]}},
        "paths": {"order": 2, "width": 8},
        "autoencoder": {"model": {"bottleneck": 8}, "spectra": {"eigenimages": 10}},
        "koopman": {"oracle_steps": 30, "latent_dim": 8},
    }
    return cls(cls.Config.model_validate(small[name]))


@pytest.mark.parametrize(
    "name", ["classifier", "paths", "autoencoder", "diffusion", "koopman", "packed_paths"]
)
def test_each_trainer_trains_and_records_on_cuda(name, cuda, tmp_path):
    trainer = _trainer(name)
    members = trainer.pack_size
    kwargs = {"device": cuda, "data_dir": tmp_path / "data"}
    ctx = (
        LocalContext.packed(tmp_path, members, **kwargs)
        if members > 1
        else LocalContext(tmp_path, **kwargs)
    )
    probe = type(trainer).probes[0]
    record = (RecordSpec(probe=probe),)
    loop = LoopConfig(report_every=4, eval_every=3, chunk_steps=4, record=record)
    result = fit(trainer, ctx, loop, StopRule(iterations=6))
    assert result.step == 6
    for member in ctx.members:
        assert [s for s, _ in member.metrics] == list(range(7))
        values = [v for _, m in member.metrics for v in m.values()]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        traj = read_trajectory(member.trajectory_dir / probe)
        assert list(traj.steps) == list(range(7))


def test_classifier_steps_and_recording_never_wait_for_the_gpu(cuda, tmp_path):
    """Between reports, a step (and recording all weights) queues work without a sync."""
    from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer

    trainer = ClassifierTrainer(ClassifierConfig(model={"widths": [64, 64]}, batch_size=32))
    trainer.setup(LocalContext(tmp_path, device=cuda))
    recorder = Recorder(tmp_path / "trajectories", chunk_steps=64)
    spec, columns = RecordSpec(probe="weights"), trainer.probe_columns("weights")
    for step in range(3):  # warm-up: lazy initialisation may sync
        trainer.step()
        recorder.record("weights", step, trainer.probe("weights"), columns, spec)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = [trainer.step() for _ in range(5)]
        for step in range(3, 8):
            recorder.record("weights", step, trainer.probe("weights"), columns, spec)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    recorder.close()
    assert all(torch.is_tensor(v) and v.is_cuda for m in metrics for v in m.values())
    assert list(read_trajectory(tmp_path / "trajectories" / "weights").steps) == list(range(8))


def test_tensor_metrics_on_cuda_equal_their_float_values(cuda, tmp_path):
    from tests.trainers.test_loop_sync import FloatClassifier
    from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer

    cfg = ClassifierConfig(model={"widths": [32]}, batch_size=32)
    loop = LoopConfig(report_every=7, eval_every=5, checkpoint_every=10)
    runs = []
    for cls in (ClassifierTrainer, FloatClassifier):
        ctx = LocalContext(tmp_path / cls.__name__, device=cuda)
        fit(cls(cfg), ctx, loop, StopRule(iterations=25))
        runs.append(ctx)
    tensors, floats = runs
    assert [s for s, _ in tensors.metrics] == [s for s, _ in floats.metrics] == list(range(26))
    for (_, got), (_, want) in zip(tensors.metrics, floats.metrics):
        assert got == pytest.approx(want, rel=1e-5)


def test_nan_on_cuda_fails_at_its_step(cuda, tmp_path):
    from dynsweep.errors import TrialFailure
    from tests.trainers.test_loop_sync import nan_at
    from trainers.classifier.trainer import ClassifierConfig, ClassifierTrainer

    ctx = LocalContext(tmp_path, device=cuda)
    trainer = nan_at(ClassifierTrainer, 6)(ClassifierConfig(model={"widths": [32]}))
    with pytest.raises(TrialFailure, match=r"^non-finite metric at step 6: train/loss = nan$"):
        fit(trainer, ctx, LoopConfig(report_every=10), StopRule(iterations=30))
    assert [s for s, _ in ctx.metrics] == list(range(6))


def test_fid_classifier_extractor_on_cuda(cuda, tmp_path):
    pytest.importorskip("cleanfid")
    from analysis.generative import ClassifierFeatures, auto_classifier, fid_between
    from trainers.data import load_dataset

    if "device" not in inspect.signature(fid_between).parameters:
        pytest.skip("TODO: analysis.generative.fid_between takes no device argument yet")
    path = auto_classifier("digits", str(tmp_path / "data"), steps=50)
    extractor = ClassifierFeatures(torch.load(path, weights_only=True))
    (images, _), _ = load_dataset("digits", tmp_path / "data", 0.2, 0)
    real = images[:300]
    fake = (real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    on_cpu = fid_between(real, fake, extractor, lambda image: image)
    on_cuda = fid_between(real, fake, extractor.to(cuda), lambda image: image, device=cuda)
    assert on_cuda == pytest.approx(on_cpu, rel=1e-3, abs=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from trainers.diffusion.trainer import DiffusionConfig

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        device = torch.device("cuda", rank)
        parallel = Parallel(world_size=2, rank=rank)
        ctx = LocalContext(Path(folder) / f"rank{rank}", device=device, parallel=parallel)
        trainer = _tiny_diffusion()(DiffusionConfig.model_validate(TINY_DIFFUSION))
        fit(trainer, ctx, LoopConfig(eval_every=10**6), StopRule(iterations=5))
        params = trainer.engine.module.parameters()
        flat = torch.cat([p.detach().reshape(-1) for p in params]).cpu()
        torch.save({"weights": flat, "metrics": ctx.metrics}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_over_nccl_keeps_the_ranks_equal(cuda, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"DDP over NCCL needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"])
    assert [s for s, _ in ranks[0]["metrics"]] == list(range(6))
