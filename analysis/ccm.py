"""Convergent cross mapping between many series at once, the way pyEDM computes it.

``pyEDM.CCM`` (2.5) embeds one series, draws ``sample`` random libraries of each size L, finds
each point's E+1 nearest library neighbours (a KDTree per library) and cross-maps the other
series from them; one call handles one pair, and all pairs of n series cost n(n−1)/2 calls.
Here the neighbours of a series' shadow manifold do not depend on which series is cross-mapped
from them, so they are found once per series (from one distance matrix, in torch), and every
other series is predicted from them at once. The random libraries are drawn exactly as pyEDM
draws them for a given ``seed``, so the result equals pyEDM's, pair by pair (the tests check it
to 1e-6); pyEDM stays the reference.

``cross_map(series, ...)`` returns ``skill[a, b, l]``: the mean over samples of the correlation
between series b and its cross-map estimate from a's shadow manifold at library size
``lib_sizes[l]`` (pyEDM's ``"a:b"`` column) — evidence that b drives a when it grows with L.
"""

from __future__ import annotations

import numpy as np
import torch

from dynsweep.errors import DataError


def _embedding(x: torch.Tensor, E: int, tau: int) -> tuple[torch.Tensor, int]:
    """Delay embedding of every series (n × N → n × M × E) and the first valid row."""
    shifts = [k * tau for k in range(E)]
    lo = max([-s for s in shifts if s < 0], default=0)
    hi = max([s for s in shifts if s > 0], default=0)
    N = x.shape[1]
    cols = [x[:, lo + s : N - hi + s] for s in shifts]
    return torch.stack(cols, dim=2), lo


def _library_indices(M: int, lib_sizes: list[int], sample: int, seed: int, task: int):
    """pyEDM's random libraries for task ``task`` (2l: forward, 2l+1: reverse of size l)."""
    children = np.random.SeedSequence(seed).spawn(2 * len(lib_sizes))
    rng = np.random.default_rng(np.random.SeedSequence(children[task].entropy))
    L = min(lib_sizes[task // 2], M)
    return [np.sort(rng.choice(M, size=L, replace=False)) for _ in range(sample)]


def _pearson(pred: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Correlation of each column pair (… × M): pyEDM's, 0 where a series is constant."""
    pm = pred - pred.mean(-1, keepdim=True)
    am = actual - actual.mean(-1, keepdim=True)
    denom = torch.sqrt((pm * pm).sum(-1) * (am * am).sum(-1))
    num = (pm * am).sum(-1)
    return torch.where(denom == 0, torch.zeros_like(num), num / torch.where(denom == 0, 1, denom))


def _skill(
    emb: torch.Tensor, targets: torch.Tensor, libraries: list[np.ndarray], k: int
) -> torch.Tensor:
    """Mean cross-map correlation over libraries: emb (n × M × E) → n × n_targets."""
    n, M, _ = emb.shape
    dist = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")  # n × M × M
    rows = torch.arange(M)[:, None]
    total = torch.zeros(n, targets.shape[0], dtype=emb.dtype)
    for lib in libraries:
        lib_t = torch.from_numpy(lib)
        sub = dist[:, :, lib_t]  # n × M × L
        sub = sub.masked_fill(lib_t[None, :] == rows, float("inf"))  # no self-matches
        d, local = torch.topk(sub, min(k, len(lib) - 1), dim=2, largest=False)
        neighbours = lib_t[local]  # n × M × k, in the library's global rows
        d_min = d[:, :, :1]
        w = torch.exp(-d / torch.where(d_min > 0, d_min, 1.0))
        w = torch.where(d_min == 0, (d == 0).to(d.dtype), w)
        w = w / w.sum(2, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        # predictions of every target from every embedding: n × n_targets × M
        pred = torch.einsum("amk,tamk->atm", w, targets[:, neighbours])
        total += _pearson(pred, targets[None, :, :])
    return total / len(libraries)


def cross_map(
    series: np.ndarray,
    E: int,
    lib_sizes: list[int],
    sample: int = 30,
    seed: int = 0,
    tau: int = -1,
    Tp: int = 0,
    chunk: int = 16,
) -> np.ndarray:
    """``skill[a, b, l]`` for all ordered pairs of the rows of ``series`` (n × N), as
    ``pyEDM.CCM(columns=a, target=b, E, Tp, tau, libSizes, sample, seed)`` gives it for a < b
    (its "a:b" and "b:a" columns); the diagonal is each series cross-mapping itself."""
    x = torch.as_tensor(np.asarray(series, dtype=np.float64))
    if x.ndim != 2 or not torch.isfinite(x).all():
        raise DataError("cross_map: expected a finite 2-D array, one series per row")
    if E < 1 or tau == 0:
        raise DataError(f"cross_map: E must be ≥ 1 and tau non-zero (got E={E}, tau={tau})")
    emb, first = _embedding(x, E, tau)
    # rows whose target at t + Tp exists
    M_all = emb.shape[1]
    times = torch.arange(first, first + M_all)
    keep = (times + Tp >= 0) & (times + Tp < x.shape[1])
    emb, times = emb[:, keep], times[keep]
    M = emb.shape[1]
    if M < E + 2 or min(lib_sizes) < E + 2:
        raise DataError(f"cross_map: need library sizes ≥ E + 2 = {E + 2} and as many points")
    targets = x[:, times + Tp]  # n × M
    n = x.shape[0]
    skill = np.empty((n, n, len(lib_sizes)))
    for l_index in range(len(lib_sizes)):
        forward = _library_indices(M, lib_sizes, sample, seed, 2 * l_index)
        reverse = _library_indices(M, lib_sizes, sample, seed, 2 * l_index + 1)
        for start in range(0, n, chunk):
            part = slice(start, min(start + chunk, n))
            fwd = _skill(emb[part], targets, forward, E + 1).numpy()
            rev = _skill(emb[part], targets, reverse, E + 1).numpy()
            for a in range(part.start, part.stop):
                # pyEDM's call for the pair (a, b), a < b: a's manifold uses the forward
                # libraries, b's the reverse ones.
                row = np.where(np.arange(n) > a, fwd[a - start], rev[a - start])
                skill[a, :, l_index] = row
    return skill
