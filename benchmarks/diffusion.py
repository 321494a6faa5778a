"""Diffusion training speed: the U-Net through dynsweep against a plain PyTorch loop.

    python -m benchmarks.diffusion [--steps 20] [--repeats 7] [--bf16] [--compile] [--paper]

(a) a plain PyTorch loop: heat forward process, the U-Net, Adam, gradient clipping and an EMA
    update, exactly the work of one diffusion step, on synthetic 28×28 images;
(b) the ``diffusion`` trainer through dynsweep's loop, logging its metrics to a real MLflow
    sqlite store (what a trial does; Ray's per-trial cost is P2's).
``--bf16`` trains both under bfloat16 autocast, ``--compile`` wraps both forwards in
``torch.compile`` (compilation happens in the warm-up steps, outside the timing); ``--paper``
uses the paper's MNIST U-Net (GPU-sized). Rates are images/s after warm-up, from repeats
interleaved a, b, a, b, …; the ratio is given for the best repeat of each and as the median of
the per-repeat ratios (this VM's speed drifts by ±10 % within minutes, which the pairing of
neighbouring repeats cancels). Goal: b ≥ 0.97 × a. The ratio line is printed last.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Timer, machine
from benchmarks.recording import MlflowContext
from trainers.diffusion.forward import ForwardConfig, build_forward
from trainers.diffusion.trainer import DiffusionConfig, DiffusionTrainer
from trainers.diffusion.unet import UNet
from trainers.loop import LoopConfig, StopRule, fit

SMALL = {"channels": 32, "mult": [1, 2, 2], "num_res_blocks": 2, "attention_levels": [2]}
PAPER = {"channels": 128, "mult": [1, 2, 2], "num_res_blocks": 4, "attention_levels": [2]}


def images(n: int = 2048) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


class SyntheticDiffusion(DiffusionTrainer):
    """The diffusion trainer on synthetic 28×28 images (no dataset to load)."""

    def load_data(self, ctx):
        data = images()
        return data[256:], data[:256]


def config(args) -> DiffusionConfig:
    return DiffusionConfig.model_validate(
        {
            "batch_size": args.batch,
            "forward": {"K": 100},
            "model": {**(PAPER if args.paper else SMALL), "dropout": 0.1},
            "optimizer": {"warmup": 10},
            "autocast_bf16": args.bf16,
            "compile": args.compile,
            "samples": 0,
            "eval_batch": 16,
        }
    )


def plain(cfg: DiffusionConfig, steps: int, warmup: int, device: torch.device) -> float:
    torch.manual_seed(0)
    data = images().to(device)
    forward = build_forward(ForwardConfig(K=cfg.forward.K), (1, 28, 28)).to(device)
    model = UNet(cfg.model, 1).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    fn = torch.compile(model) if cfg.compile else model
    gen = torch.Generator().manual_seed(1)
    timer = Timer()
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            timer.__enter__()
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen).to(device)
        x = data[idx]
        k = torch.randint(1, cfg.forward.K + 1, (len(x),), generator=gen).to(device)
        eps = torch.randn(x.shape, generator=gen).to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.autocast_bf16):
            noisy = forward(x, k) + cfg.sigma * eps
            pred = noisy + fn(noisy, k)
            loss = (forward(x, k - 1) - pred).pow(2).reshape(len(x), -1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - cfg.optimizer.ema)
        loss.item()
    _sync(device)
    timer.__exit__()
    return steps * cfg.batch_size / timer.seconds


class WarmTimedContext(MlflowContext):
    """Starts the clock after ``warmup`` steps (compilation, allocator warm-up)."""

    warmup = 0

    def log_metrics(self, step, metrics):
        if step == self.warmup:
            _sync(self.device)
            self.timer = Timer().__enter__()
        self.run.log_metrics(step, metrics)

    def finish(self, result, checkpoint, export):
        self.run.close()
        _sync(self.device)
        self.timer.__exit__()
        self.result = result


def through_dynsweep(cfg, steps: int, warmup: int, device: torch.device, store: Path) -> float:
    import tracking

    uri = f"sqlite:///{store / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "bench")
    parent = tracking.start_sweep_run(uri, exp, "bench", {}, {})
    run = tracking.TrialRun.open(uri, exp, parent, "t", "t", {}, {})
    ctx = WarmTimedContext(store, run)
    ctx.device, ctx.warmup = device, warmup
    loop = LoopConfig(eval_every=10**9, report_every=10, checkpoint_every=10**9)
    fit(SyntheticDiffusion(cfg), ctx, loop, StopRule(iterations=warmup + steps))
    return steps * cfg.batch_size / ctx.timer.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--paper", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = config(args)
    print(machine(), f"device: {device}")
    print(
        f"U-Net {'paper' if args.paper else 'small'} "
        f"({sum(p.numel() for p in UNet(cfg.model, 1).parameters()):,} parameters), "
        f"batch {args.batch}, 28x28, bf16 autocast {args.bf16}, torch.compile {args.compile}"
    )
    rates: dict[str, list[float]] = {"a plain": [], "b dynsweep": []}
    for _ in range(args.repeats):
        rates["a plain"].append(plain(cfg, args.steps, args.warmup, device))
        with tempfile.TemporaryDirectory() as tmp:
            rates["b dynsweep"].append(
                through_dynsweep(cfg, args.steps, args.warmup, device, Path(tmp))
            )
    for name, values in rates.items():
        print(
            f"{name:>12}: best {max(values):8.1f} images/s, median {statistics.median(values):.1f}"
        )
    a, b = rates["a plain"], rates["b dynsweep"]
    paired = statistics.median(y / x for x, y in zip(a, b))
    print(
        f"ratio: b/a = {max(b) / max(a):.3f} (best), {paired:.3f} (median of pairs)  "
        "(goal: >= 0.97)"
    )


if __name__ == "__main__":
    main()
