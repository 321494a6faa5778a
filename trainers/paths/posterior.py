"""The subspace posterior of many chains at once, batched by hand.

log p(q | train) = log p(train | θ(q), σ) / T + log p(q) + log p(log σ), up to a constant, for
C chains (q: C×dim, one row a chain, each with its own temperature T): one forward and one
backward pass for every chain, with no per-chain Python and no ``vmap``. An MLP's first layer
is one matrix product of the shared inputs with every chain's weights (N×in @ in×(C·width)),
the hidden layers batched matrix products, the output layer a product and a sum; ``autograd``
differentiates the whole batch at once (the chains are independent, so the gradient of the
summed log density is each chain's own). A CNN path falls back to ``vmap`` over the chains.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from trainers.paths.model import unflatten
from trainers.paths.sampling import Space

# In place, on the temporaries of the batched MLP (their backward needs only the output)
ACTIVATIONS = {"relu": torch.relu_, "elu": F.elu_, "tanh": torch.tanh_}


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of returning them to the
    system. The batched MLP allocates and frees tensors of a few MB every gradient (90 chains ×
    537 points × 16 floats: 3 MB); by default glibc serves blocks that large with ``mmap`` and
    returns them at ``free``, so every new one page-faults (measured here: half of an MCLMC
    step's time). Up to 64 MB now come from the heap, which is trimmed only beyond 256 MB. Once
    per process; False where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim, pad, mmap = -1, -2, -3  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
        return all(
            libc.mallopt(k, v) == 1
            for k, v in ((mmap, 64 << 20), (trim, 256 << 20), (pad, 64 << 20))
        )
    except (OSError, AttributeError):
        return False


def mlp_batch(
    flats: torch.Tensor, layers: list[tuple[int, int]], x: torch.Tensor, activation: str
) -> torch.Tensor:
    """The MLP with each row of ``flats`` (C×P: weight, bias, weight, bias, … as
    ``nn.Linear`` stores them) on shared inputs x (N×in): C×N×outputs."""
    chains, n = len(flats), len(x)
    sizes = [k for out_f, in_f in layers for k in (out_f * in_f, out_f)]
    pieces = flats.split(sizes, -1)
    act = ACTIVATIONS[activation]
    h = x
    for i, (out_f, in_f) in enumerate(layers):
        weight = pieces[2 * i].unflatten(-1, (out_f, in_f))  # C×out×in
        bias = pieces[2 * i + 1][:, None, :]
        if i == 0:  # shared inputs: one product for every chain
            h = (x @ weight.permute(2, 0, 1).reshape(in_f, -1)).view(n, chains, out_f)
            h = h.transpose(0, 1) + bias
        elif out_f == 1:
            h = (h * weight).sum(-1, keepdim=True) + bias
        else:
            h = torch.baddbmm(bias, h, weight.mT)
        if i < len(layers) - 1:
            h = act(h)
    return h


class Posterior:
    """The log density of C chains' positions and its gradient (see the module docstring).

    ``path``: a set-up :class:`~trainers.paths.trainer.PathsTrainer` (its network and data);
    ``temperature``: C; ``log_scale``: the fixed log σ, or ``None`` when the last coordinate
    of q is log σ under the N(loc, scale²) prior ``noise_prior`` = (loc, scale)."""

    def __init__(
        self,
        path,
        space: Space,
        temperature: torch.Tensor,
        log_scale: torch.Tensor | None,
        noise_prior: tuple[float, float],
        part: str = "train",
    ) -> None:
        keep_freed_memory()
        self.path, self.space = path, space
        self.temperature = temperature
        self.log_scale, self.noise_prior = log_scale, noise_prior
        self.x, self.y = path.data[part]
        shapes = list(path.shapes.values())
        self.layers = None
        if path.config.architecture == "mlp":
            self.layers = [tuple(s) for s in shapes[::2]]

    def outputs(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network of each row of ``weights`` (C×P) on x: C×N×outputs."""
        if self.layers is not None:
            return mlp_batch(weights, self.layers, x, self.path.config.activation)
        template, shapes = self.path.template, self.path.shapes
        return torch.vmap(lambda w: functional_call(template, unflatten(w, shapes), (x,)))(weights)

    def pointwise(
        self, weights: torch.Tensor, log_scale: torch.Tensor, x=None, y=None
    ) -> torch.Tensor:
        """Pointwise log-likelihood, C×N, of (x, y) (default: this posterior's split)."""
        x = self.x if x is None else x
        y = self.y if y is None else y
        out = self.outputs(weights, x)
        if self.path.classify:
            labels = y[None, :, None].expand(len(out), -1, 1)
            return F.log_softmax(out, -1).gather(-1, labels).squeeze(-1)
        resid = y.flatten()[None] - out.flatten(1)
        ls = log_scale[:, None]
        return -0.5 * (math.log(2 * math.pi) + 2 * ls + resid**2 * torch.exp(-2 * ls))

    def split(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the space's coordinates, log σ) of each row of q."""
        if self.log_scale is None:
            return q[:, :-1], q[:, -1]
        return q, self.log_scale.expand(len(q))

    def log_density(self, q: torch.Tensor) -> torch.Tensor:
        """C: log p(train | θ(q))/T + log p(q) (+ log p(log σ)), differentiable."""
        x, log_scale = self.split(q)
        log_lik = self.pointwise(self.space.weights_batch(x), log_scale).sum(-1)
        prior = self.space.log_prior_batch(x)
        if self.log_scale is None:
            loc, scale = self.noise_prior
            prior = prior - 0.5 * ((log_scale - loc) / scale) ** 2
            prior = prior - math.log(scale * math.sqrt(2 * math.pi))
        return log_lik / self.temperature + prior

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log density C, its gradient C×dim), detached: what MCLMC asks for."""
        with torch.enable_grad():
            q = q.detach().requires_grad_(True)
            logp = self.log_density(q)
            (grad,) = torch.autograd.grad(logp.sum(), q)
        return logp.detach(), grad
