"""GPU benchmark: every trainer, the loop's overhead, packing and FID on one device.

    python -m benchmarks.gpu [--device cuda|cpu] [--quick] [--steps 200] [--no-compile]
                             [--no-pytest]

One line per measurement, in this order (about 4 minutes on one H100/H200; ``--quick``: a few
steps of each, seconds, what CI runs on CPU):

1. each trainer (classifier, paths, autoencoder, diffusion, koopman, subspace) through
   ``trainers.loop.fit`` for ``--steps`` steps, recording its first probe every step;
2. diffusion, a plain PyTorch loop (a) against the trainer through the loop (b), fp32, bf16
   autocast and ``torch.compile`` (the work of ``benchmarks.diffusion``, metrics in memory);
3. the loop's overhead on the 784-256-256-10 MLP, batch 128: a plain loop that syncs once per
   report (a), the loop without recording (b) and recording all weights every step (c);
4. packed against one-at-a-time ``paths`` members;
5. FID of 1,000 images with the classifier extractor, CPU against the device;
6. ``pytest -m gpu`` on the GPU test files.

Rates are after warm-up steps, timed between device syncs. The device defaults to CUDA when
there is one. A part whose optional package is missing prints ``skipped: ... not installed``.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import MLP, SyntheticTrainer, machine
from trainers.local import LocalContext
from trainers.loop import LoopConfig, StopRule, fit
from trainers.recording import RecordSpec

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"channels": 8, "mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1]}
SMALL_UNET = {"channels": 32, "mult": [1, 2, 2], "num_res_blocks": 2, "attention_levels": [2]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(cls, warmup: int, device: torch.device):
    """``cls`` whose instances time their steps after the first ``warmup`` up to the end of
    training (``started``, ``stopped``; device synced). Figures are not drawn: a per-trial
    cost, not a per-step one."""

    class Timed(cls):
        def step(self):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == warmup + 1:
                sync(device)
                self.started = time.perf_counter()
            return super().step()

        def write_artifacts(self, folder: Path) -> list[Path]:
            sync(device)
            self.stopped = time.perf_counter()
            return []

    Timed.__name__ = cls.__name__
    return Timed


def run_timed(trainer, steps: int, warmup: int, device, workdir: Path, loop=None) -> float:
    """Steps/s of ``trainer`` (from :func:`timed`) over ``steps`` steps after ``warmup``."""
    ctx = LocalContext(workdir, device=device, data_dir=workdir / "data")
    loop = loop or LoopConfig(report_every=50, eval_every=10**9, checkpoint_every=10**9)
    fit(trainer, ctx, loop, StopRule(iterations=warmup + steps))
    return steps / (trainer.stopped - trainer.started)


def recording(probe: str) -> LoopConfig:
    record = (RecordSpec(probe=probe),)
    return LoopConfig(report_every=50, eval_every=10**9, checkpoint_every=10**9, record=record)


_last = [time.perf_counter()]


def say(label: str, text: str) -> None:
    """One result line, with the seconds since the previous one (set-up included)."""
    now = time.perf_counter()
    print(f"{label:<26} {text}  [{now - _last[0]:.1f} s]", flush=True)
    _last[0] = now


def guarded(label: str, fn) -> None:
    """Run one measurement; a missing package or a failure is one line, not the end."""
    try:
        fn()
    except ImportError as exc:
        say(label, f"skipped: {exc.name or exc} not installed")
    except Exception as exc:  # report and go on to the next measurement
        say(label, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")


# --- 1. every trainer -------------------------------------------------------------------------
def synthetic_diffusion(size: int):
    """The diffusion trainer on random ``size``×``size`` images (no dataset to load)."""
    from trainers.diffusion.trainer import DiffusionTrainer

    class SyntheticDiffusion(DiffusionTrainer):
        def load_data(self, ctx):
            data = torch.rand(2048, 1, size, size, generator=torch.Generator().manual_seed(0))
            return data[256:], data[:256]

    return SyntheticDiffusion


def trainer_configs(quick: bool) -> dict:
    from trainers import get_trainer_class

    diffusion = {
        "forward": {"K": 100},
        "model": {**(TINY_UNET if quick else SMALL_UNET), "dropout": 0.1},
        "batch_size": 8 if quick else 32,
        "samples": 0,
        "eval_batch": 16,
    }
    out = {
        "classifier": (get_trainer_class("classifier"), MLP.model_dump()),
        "paths": (get_trainer_class("paths"), {}),
        "autoencoder": (get_trainer_class("autoencoder"), {}),
        "diffusion": (synthetic_diffusion(8 if quick else 28), diffusion),
        "koopman": (get_trainer_class("koopman"), {"oracle_steps": 5 if quick else 300}),
    }
    return out


def every_trainer(args, device, tmp: Path) -> None:
    warmup = 1 if args.quick else 5
    configs = trainer_configs(args.quick)
    for name, (cls, overrides) in configs.items():

        def one(cls=cls, overrides=overrides, name=name):
            trainer = timed(cls, warmup, device)(cls.Config.model_validate(overrides))
            probe = cls.probes[0]
            rate = run_timed(trainer, args.steps, warmup, device, tmp / name, recording(probe))
            say(f"trainer {name}", f"{rate:9.1f} steps/s  (recording {probe} every step)")

        guarded(f"trainer {name}", one)
    guarded("trainer subspace", lambda: subspace(args, device, tmp / "subspace"))


def subspace(args, device, tmp: Path) -> None:
    from trainers.paths.subspace_trainer import SubspaceConfig, SubspaceTrainer
    from trainers.paths.trainer import PathsConfig, PathsTrainer

    cfg, trained = PathsConfig(order=2, width=8), 10 if args.quick else 100
    ctx = LocalContext(tmp / "path", device=device, data_dir=tmp / "data")
    path = timed(PathsTrainer, 0, device)(cfg)  # (draws no figure)
    fit(path, ctx, LoopConfig(eval_every=trained), StopRule(iterations=trained))
    model = tmp / "model.pt"
    header = {"trainer": "paths", "config": cfg.model_dump(mode="json"), "seed": 0}
    torch.save({**header, "step": trained, "state": ctx.export}, model)
    chains, per_draw = (2, 5) if args.quick else (4, 10)
    draws, warm = (6, 10) if args.quick else (args.steps, 20)  # (less tuning: NaN potential)
    sub = SubspaceConfig(
        path_model=str(model),
        sampler="mclmc",
        steps_per_draw=per_draw,
        chains=chains,
        warmup=warm,
        draws=draws,
    )
    steps = warm + 1 + draws
    trainer = timed(SubspaceTrainer, 0, device)(sub)
    rate = run_timed(trainer, steps, 0, device, tmp / "run")
    say("trainer subspace", f"{rate:9.1f} steps/s  (mclmc: {per_draw} steps of {chains} chains)")


# --- 2. diffusion: plain against dynsweep -----------------------------------------------------
def diffusion(args, device, tmp: Path) -> None:
    from benchmarks.diffusion import plain
    from trainers.diffusion.trainer import DiffusionConfig

    steps, warmup = (1, 1) if args.quick else (max(args.steps // 4, 20), 5)
    variants = {"fp32": {}, "bf16": {"autocast_bf16": True}, "compile": {"compile": True}}
    for label, extra in variants.items():
        if label == "compile" and (args.quick or args.no_compile):
            say("diffusion compile", "skipped (--quick or --no-compile)")
            continue

        def one(label=label, extra=extra):
            cfg = DiffusionConfig.model_validate(
                {
                    "forward": {"K": 100},
                    "model": {**(TINY_UNET if args.quick else SMALL_UNET), "dropout": 0.1},
                    "optimizer": {"warmup": 10},
                    "batch_size": 2 if args.quick else 32,
                    "samples": 0,
                    "eval_batch": 2 if args.quick else 16,
                    **extra,
                }
            )
            a = plain(cfg, steps, warmup, device)
            trainer = timed(synthetic_diffusion(28), warmup, device)(cfg)
            b = run_timed(trainer, steps, warmup, device, tmp / label) * cfg.batch_size
            text = f"plain (a) {a:9.1f} images/s, dynsweep (b) {b:9.1f}: b/a {b / a:.3f}"
            say(f"diffusion {label}", text)

        guarded(f"diffusion {label}", one)


# --- 3. the loop's overhead on a small MLP ----------------------------------------------------
class DeviceMLP(SyntheticTrainer):
    """The benchmarks' synthetic-MNIST MLP, on the context's device."""

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.device = ctx.device
        for name in ("train_x", "train_y", "val_x", "val_y", "probe_x"):
            setattr(self, name, getattr(self, name).to(self.device))
        self.model.to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.config.optimizer.lr)


def plain_mlp(steps: int, warmup: int, every: int, device, tmp: Path) -> float:
    """A plain loop on the same trainer's data and model, reading the loss every ``every``."""
    trainer = DeviceMLP(MLP)
    trainer.setup(LocalContext(tmp, device=device))
    model, opt = trainer.model, trainer.optimizer
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = trainer._next_batch()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0:
            loss.item()
    sync(device)
    return steps / (time.perf_counter() - start)


def loop_overhead(args, device, tmp: Path) -> None:
    steps, warmup, every = (20, 2, 10) if args.quick else (2000, 50, 50)
    base = {"report_every": every, "eval_every": 10**9, "checkpoint_every": 10**9}
    rates = {}
    for _ in range(1 if args.quick else 3):  # interleaved repeats, best of each
        for label, record in (("a", ()), ("b", ()), ("c", (RecordSpec(probe="weights"),))):
            if label == "a":
                rate = plain_mlp(steps, warmup, every, device, tmp / "a")
            else:
                trainer = timed(DeviceMLP, warmup, device)(MLP)
                loop = LoopConfig(**base, record=record, learning_curves=False)
                rate = run_timed(trainer, steps, warmup, device, tmp / label, loop)
            rates[label] = max(rates.get(label, 0.0), rate)
    a, b, c = rates["a"], rates["b"], rates["c"]
    say(
        "MLP loop overhead",
        f"plain (a) {a:.1f} steps/s, fit (b) {b:.1f} = {b / a:.2f} a, "
        f"recording all weights (c) {c:.1f} = {c / a:.2f} a",
    )


# --- 4. packing -------------------------------------------------------------------------------
def packing(args, device, tmp: Path) -> None:
    from trainers.paths.packed import PackedPathsTrainer
    from trainers.paths.trainer import PathsConfig, PathsTrainer

    members, steps, warmup = (2, 5, 1) if args.quick else (32, args.steps, 5)
    configs = [PathsConfig(order=4, width=16, lr=0.01 * (1 + i % 4)) for i in range(members)]
    loop = LoopConfig(report_every=50, eval_every=50, checkpoint_every=10**9)
    alone = 0.0
    for i, cfg in enumerate(configs):
        trainer = timed(PathsTrainer, warmup, device)(cfg)
        ctx = LocalContext(tmp / f"alone{i}", seed=i, device=device, data_dir=tmp / "data")
        fit(trainer, ctx, loop, StopRule(iterations=warmup + steps))
        alone += trainer.stopped - trainer.started
    packed = timed(PackedPathsTrainer, warmup, device)(configs, list(range(members)))
    ctx = LocalContext.packed(tmp / "pack", members, device=device, data_dir=tmp / "data")
    fit(packed, ctx, loop, StopRule(iterations=warmup + steps))
    one, many = members * steps / alone, members * steps / (packed.stopped - packed.started)
    say(
        f"paths {members} members",
        f"one at a time {one:.1f} member-steps/s, packed {many:.1f}: {many / one:.1f}x",
    )


# --- 5. FID -----------------------------------------------------------------------------------
def fid(args, device, tmp: Path) -> None:
    import cleanfid  # noqa: F401  (the pipeline FID goes through)

    from analysis.generative import ClassifierFeatures, auto_classifier, fid_between
    from trainers.data import load_dataset

    n = 100 if args.quick else 1000
    path = auto_classifier("digits", str(tmp / "data"), steps=20 if args.quick else 600)
    extractor = ClassifierFeatures(torch.load(path, weights_only=True))
    (images, _), _ = load_dataset("digits", tmp / "data", 0.2, 0)
    real = images[:n]
    fake = real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    fake = fake.clamp(0, 1)
    start = time.perf_counter()
    value = fid_between(real, fake, extractor, lambda image: image)
    cpu = time.perf_counter() - start
    text = f"{n} images: cpu {cpu:.2f} s (FID {value:.3f})"
    if device.type == "cpu":
        say("FID classifier extractor", text)
        return
    if "device" not in inspect.signature(fid_between).parameters:
        say("FID classifier extractor", text + f"; {device}: skipped (fid_between has no device)")
        return
    extractor.to(device)
    sync(device)
    start = time.perf_counter()
    on_device = fid_between(real, fake, extractor, lambda image: image, device=device)
    sync(device)
    gpu = time.perf_counter() - start
    say("FID classifier extractor", text + f"; {device} {gpu:.2f} s (FID {on_device:.3f})")


# --- 6. the gpu tests -------------------------------------------------------------------------
def gpu_tests() -> None:
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "mark.gpu" in p.read_text()
    )
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["no output"]
    say("pytest -m gpu", f"{lines[-1]}  (exit {done.returncode}; {len(files)} files)")
    if done.returncode not in (0, 5):
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--quick", action="store_true", help="a few steps of each (CI)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-pytest", action="store_true")
    args = parser.parse_args(argv)
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu)")
    device = torch.device(name)
    args.steps = args.steps or (3 if args.quick else 200)
    gpu = torch.cuda.get_device_name(device) if name == "cuda" else ""
    print(machine(), f"device: {device} {gpu}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        guarded("trainers", lambda: every_trainer(args, device, tmp / "trainers"))
        guarded("diffusion", lambda: diffusion(args, device, tmp / "diffusion"))
        guarded("MLP loop overhead", lambda: loop_overhead(args, device, tmp / "mlp"))
        guarded("paths packing", lambda: packing(args, device, tmp / "packing"))
        guarded("FID classifier extractor", lambda: fid(args, device, tmp / "fid"))
    if args.quick or args.no_pytest:
        say("pytest -m gpu", "skipped (--quick or --no-pytest)")
    else:
        guarded("pytest -m gpu", gpu_tests)
    say("total", f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
