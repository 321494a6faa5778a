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

import warnings

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


def _pearson(pred: torch.Tensor, actual: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlations along ``dim``: pyEDM's, 0 where a series is constant."""
    pm = pred - pred.mean(dim, keepdim=True)
    am = actual - actual.mean(dim, keepdim=True)
    denom = torch.sqrt((pm * pm).sum(dim) * (am * am).sum(dim))
    num = (pm * am).sum(dim)
    return torch.where(denom == 0, torch.zeros_like(num), num / torch.where(denom == 0, 1, denom))


class _Neighbours:
    """Distances between the points of each shadow manifold (n × M × M), and each point's
    neighbour list sorted by distance, for finding nearest library neighbours fast."""

    def __init__(self, emb: torch.Tensor) -> None:
        self.dist = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")
        self.sorted, self.order = self.dist.sort(dim=2)
        self.M = emb.shape[1]
        self.rows = torch.arange(self.M)[None, :, None]

    def nearest(self, lib: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances and rows of each point's k nearest library points (itself excluded).

        A small library: the library's columns of the distance matrix, then top-k. A large
        one: the first k library members along each sorted neighbour list, scanning its
        first R ≈ 3 (k+1) M / L entries (all M when a row finds fewer than k there).
        """
        lib_t = torch.from_numpy(lib)
        R = min(self.M, int(3 * (k + 1) * self.M / len(lib)) + 10)
        if len(lib) <= R:
            sub = self.dist[:, :, lib_t].masked_fill(
                lib_t[None, None, :] == self.rows, float("inf")
            )
            d, local = torch.topk(sub, k, dim=2, largest=False)
            return d, lib_t[local]
        in_lib = torch.zeros(self.M, dtype=torch.bool)
        in_lib[lib_t] = True
        cand = self.order[:, :, :R]
        ok = in_lib[cand] & (cand != self.rows)
        if bool((ok.sum(2) < k).any()):
            R, cand = self.M, self.order
            ok = in_lib[cand] & (cand != self.rows)
        pick = torch.argsort((~ok).to(torch.int8), dim=2, stable=True)[:, :, :k]
        return self.sorted[:, :, :R].gather(2, pick), cand.gather(2, pick)


def _skill(
    near: _Neighbours, targets_t: torch.Tensor, libraries: list[np.ndarray], k: int
) -> torch.Tensor:
    """Mean cross-map correlation over libraries (``targets_t``: M × n_targets): n ×
    n_targets."""
    total = torch.zeros(near.dist.shape[0], targets_t.shape[1], dtype=near.dist.dtype)
    for lib in libraries:
        d, neighbours = near.nearest(lib, min(k, len(lib) - 1))  # n × M × k, nearest first
        d_min = d[:, :, :1]
        w = torch.exp(-d / torch.where(d_min > 0, d_min, 1.0))
        w = torch.where(d_min == 0, (d == 0).to(d.dtype), w)
        w = w / w.sum(2, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        # Predictions of every target from every embedding: one sparse (n·M × M, k entries a
        # row) times dense (M × n_targets) product; n × M × n_targets.
        n, M, kk = neighbours.shape
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            weights = torch.sparse_csr_tensor(
                torch.arange(0, n * M * kk + 1, kk),
                neighbours.reshape(-1),
                w.reshape(-1),
                size=(n * M, M),
                check_invariants=False,
            )
        pred = (weights @ targets_t).reshape(n, M, -1)
        total += _pearson(pred, targets_t[None], dim=1)
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
    targets_t = x[:, times + Tp].T.contiguous()  # M × n
    n = x.shape[0]
    skill = np.empty((n, n, len(lib_sizes)))
    libraries = [
        (
            _library_indices(M, lib_sizes, sample, seed, 2 * i),
            _library_indices(M, lib_sizes, sample, seed, 2 * i + 1),
        )
        for i in range(len(lib_sizes))
    ]
    after = torch.arange(n)[None, :] > torch.arange(n)[:, None]  # b > a
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        near = _Neighbours(emb[part])
        for i, (forward, reverse) in enumerate(libraries):
            fwd = _skill(near, targets_t, forward, E + 1)
            rev = _skill(near, targets_t, reverse, E + 1)
            # pyEDM's call for the pair (a, b), a < b: a's manifold uses the forward
            # libraries, b's the reverse ones.
            skill[part, :, i] = torch.where(after[part], fwd, rev).numpy()
    return skill
