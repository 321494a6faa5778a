"""A deep ensemble trained in one vectorised model: the start of ``fullspace`` chains.

The original (Dold et al., ``train_de``) starts each full-space chain from its own
independently initialised network trained with Adam on the training split, kept at its best
validation NLL, its Gaussian noise scale learnt with it.
"""

from __future__ import annotations

import torch
from torch.func import vmap

from trainers.paths.model import initial_control_points
from trainers.paths.trainer import PathsTrainer


def train_ensemble(
    path: PathsTrainer, members: int, steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``members`` networks of ``path``'s architecture, each from its own initialisation,
    trained together for ``steps`` full-batch Adam steps at the path's learning rate: their
    flat weights (members × P) and log noise scales (members) at each one's best validation
    NLL."""
    cfg = path.config.model_copy(update={"order": 0, "endpoints": None, "uniform_t": False})
    shape = tuple(path.data["train"][0].shape[1:])
    start = [initial_control_points(cfg, shape, seed * 1000 + 333 + m)[0] for m in range(members)]
    dtype, device = path.theta.dtype, path.theta.device
    weights = torch.nn.Parameter(torch.stack(start).to(device, dtype))
    log_scale = torch.nn.Parameter(torch.zeros(members, device=device, dtype=dtype))
    optimizer = torch.optim.Adam([weights, log_scale], lr=cfg.lr)

    def nll(part: str):
        return vmap(lambda w, s: -path.log_likelihood(w, part, s).mean())

    best = (weights.detach().clone(), log_scale.detach().clone())
    with torch.no_grad():
        best_loss = nll("val")(weights, log_scale)
    for _ in range(steps):
        optimizer.zero_grad()
        nll("train")(weights, log_scale).sum().backward()
        optimizer.step()
        with torch.no_grad():
            loss = nll("val")(weights, log_scale)
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best = (
                torch.where(better[:, None], weights, best[0]),
                torch.where(better, log_scale, best[1]),
            )
    return best[0].detach(), best[1].detach()
