r"""Exact analysis of piecewise-linear models: subregions, symbolic dynamics, fixed points, cycles.

A ReLU network map splits the latent space into subregions in which it is affine. The
subregion of a state is the sign pattern :math:`d \in \{0, 1\}^K` of the ReLU
pre-activations (its "bitcode"); inside it

.. math:: F(z) = A_d z + c_d,

(:meth:`~explorer.models.plrnn.ReconstructionModel.linear_piece`). Hence:

* the symbolic sequence of a trajectory is its sequence of subregions; the transition graph
  counts moves between them (for an AL-RNN, with :math:`2^P` subregions, this is the symbolic
  code of the attractor);
* fixed points are found exactly: for each pattern solve :math:`(I - A_d) z = c_d` and keep
  the solution if it lies in subregion ``d`` (a *virtual* fixed point lies elsewhere);
* ``k``-cycles likewise: for a sequence of patterns :math:`d_1, \dots, d_k` compose the affine
  maps and solve :math:`(I - A_{d_k} \cdots A_{d_1}) z_1 = c`, then check every point of the
  orbit lies in its subregion.

Stability from the eigenvalues of :math:`A_d` (or the cycle's product), moduli against 1.
Computed in float64 (analysis).

References:
    Z. Monfared, D. Durstewitz, ICML (2020) (fixed points and cycles of PLRNNs).
    L. Eisenmann, Z. Monfared, N. Göring, D. Durstewitz, NeurIPS (2023) (SCYFI).
    M. Brenner, C. J. Hemmer, Z. Monfared, D. Durstewitz, NeurIPS (2024) (AL-RNN symbolic codes).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..core.analysis.fixed_points import classify
from ..core.errors import ParameterError, ShapeError, SizeLimitError
from .plrnn import ReconstructionModel

#: largest K for which :func:`all_patterns` enumerates every subregion
MAX_ENUMERATED_SWITCHES = 16


def _weights(model: ReconstructionModel) -> dict[str, torch.Tensor]:
    return model.weights64()


def subregions(model: ReconstructionModel, z: torch.Tensor) -> torch.Tensor:
    """Sign patterns (bool, (..., K)) of the ReLU pre-activations at states ``z`` (..., M)."""
    z = torch.as_tensor(z, dtype=torch.float64)
    model._check(z)
    return type(model)._pre(_weights(model), z) > 0


def bitcode(pattern) -> str:
    """A pattern (K,) as a string of 0/1 (``""`` for a linear model), unit 1 first."""
    return "".join("1" if bool(b) else "0" for b in torch.as_tensor(pattern).flatten())


def all_patterns(K: int) -> torch.Tensor:
    """Every sign pattern of ``K`` units, (2^K, K) bool, in binary order (row i = bits of i)."""
    if K > MAX_ENUMERATED_SWITCHES:
        raise SizeLimitError(f"{K} ReLU units make 2^{K} subregions; analyse the visited ones "
                             f"(symbolic_sequence) instead of enumerating all")
    i = torch.arange(2**K).unsqueeze(-1)
    return ((i >> torch.arange(K - 1, -1, -1)) & 1).bool()          # (2^K, K)


@dataclass(frozen=True)
class SymbolicSequence:
    """A trajectory's sequence of subregions.

    Attributes:
        symbols: (T,) (or (T, B) for a batch of trajectories) int64 region index of each
            state; regions are numbered by visit frequency (0 = most visited), ties by first
            visit.
        patterns: (R, K) bool sign pattern of each visited region.
        counts: (R,) visits per region.
        codes: the bitcode string of each region.
    """

    symbols: torch.Tensor
    patterns: torch.Tensor
    counts: torch.Tensor
    codes: tuple[str, ...]

    @property
    def n_regions(self) -> int:
        return int(self.patterns.shape[0])

    def frequencies(self) -> torch.Tensor:
        """(R,) fraction of time spent in each region."""
        return self.counts.to(torch.float64) / self.counts.sum()


def symbolic_sequence(model: ReconstructionModel, z: torch.Tensor) -> SymbolicSequence:
    """The symbolic sequence of a latent trajectory ``z`` (T, M), or of a batch (T, B, M)
    (symbols (T, B), regions shared), with regions ordered by visit frequency."""
    z = torch.as_tensor(z, dtype=torch.float64)
    batch_shape = z.shape[:-1]
    if z.ndim == 3:
        z = z.reshape(-1, z.shape[-1])                                # (T*B, M)
    if z.ndim != 2:
        raise ShapeError(f"a latent trajectory must be (T, M) or (T, B, M), got {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise ParameterError("the trajectory contains NaN or inf (a diverged run?)")
    pat = subregions(model, z)                                        # (T, K)
    uniq, inverse, counts = torch.unique(pat, dim=0, return_inverse=True, return_counts=True)
    T = pat.shape[0]
    first = torch.full((uniq.shape[0],), T, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(T), reduce="amin")
    # most visited first, ties broken by first visit
    order = sorted(range(uniq.shape[0]), key=lambda r: (-int(counts[r]), int(first[r])))
    rank = torch.empty(len(order), dtype=torch.long)
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    patterns = uniq[order]
    return SymbolicSequence(symbols=rank[inverse].reshape(batch_shape), patterns=patterns,
                            counts=counts[order],
                            codes=tuple(bitcode(p) for p in patterns))


def transition_graph(symbols: torch.Tensor, n_regions: int | None = None) -> torch.Tensor:
    """Transition counts between regions: ``G[i, j]`` = number of steps from region i to j.

    Args:
        symbols: (T,) or (T, B) int region indices (e.g. :attr:`SymbolicSequence.symbols`);
            a batch counts transitions along time within each member.
        n_regions: size of the graph (default: ``max(symbols) + 1``).

    Returns:
        (R, R) int64 counts; ``G / G.sum(1, keepdim=True)`` estimates transition probabilities.
    """
    s = torch.as_tensor(symbols, dtype=torch.long)
    if s.ndim not in (1, 2):
        raise ShapeError(f"symbols must be (T,) or (T, B), got shape {tuple(s.shape)}")
    R = (int(s.max()) + 1 if s.numel() else 0) if n_regions is None else int(n_regions)
    if s.shape[0] < 2:
        return torch.zeros(R, R, dtype=torch.long)
    flat = (s[:-1] * R + s[1:]).flatten()
    return torch.bincount(flat, minlength=R * R).reshape(R, R)


@dataclass(frozen=True)
class PWLFixedPoint:
    """An exact fixed point of a PWL model, its subregion and stability."""

    z: torch.Tensor              # (M,)
    pattern: torch.Tensor        # (K,) bool
    region: int                  # index into the patterns searched
    eigenvalues: torch.Tensor    # (M,) complex, of A_d, largest modulus first
    type: str
    stable: bool

    @property
    def code(self) -> str:
        return bitcode(self.pattern)


@dataclass(frozen=True)
class PWLCycle:
    """An exact k-cycle: its k points, their subregions and the stability of the orbit."""

    points: torch.Tensor         # (k, M)
    patterns: torch.Tensor       # (k, K) bool
    regions: tuple[int, ...]     # indices into the patterns searched
    eigenvalues: torch.Tensor    # (M,) complex, of A_{d_k} ... A_{d_1}, largest modulus first
    type: str
    stable: bool

    @property
    def period(self) -> int:
        return int(self.points.shape[0])

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(bitcode(p) for p in self.patterns)


def _patterns(model: ReconstructionModel, patterns) -> torch.Tensor:
    K = model.n_switches
    if patterns is None:
        return all_patterns(K)
    if isinstance(patterns, SymbolicSequence):
        patterns = patterns.patterns
    p = torch.as_tensor(patterns).bool()
    if p.ndim != 2 or p.shape[1] != K:
        raise ShapeError(f"patterns must be (R, {K}), got shape {tuple(p.shape)}")
    return p


def _consistent(model: ReconstructionModel, w, z: torch.Tensor, d: torch.Tensor,
                tol: float) -> torch.Tensor:
    """(...,) True where the states ``z`` lie in (the closure of) subregions ``d``."""
    pre = type(model)._pre(w, z)                                      # (..., K)
    scale = tol * (1.0 + z.abs().amax(-1, keepdim=True))
    return torch.where(d, pre >= -scale, pre <= scale).all(-1)


def _sorted_eigs(M: torch.Tensor) -> torch.Tensor:
    ev = torch.linalg.eigvals(M)
    return ev[torch.argsort(-ev.abs())]


def pwl_fixed_points(model: ReconstructionModel, patterns=None, *,
                     tol: float = 1e-9) -> list[PWLFixedPoint]:
    r"""Exact fixed points: solve :math:`(I - A_d) z = c_d` per subregion and keep the
    solutions inside their subregion.

    Args:
        model: a PLRNN, shallow PLRNN or AL-RNN.
        patterns: the subregions to search, (R, K) bool or a :class:`SymbolicSequence`
            (its visited regions); default every one of the :math:`2^K` (K <= 16).
        tol: relative tolerance of the subregion test (points on a boundary count).

    Returns:
        The fixed points (duplicates on shared boundaries removed), each with the
        eigenvalues of :math:`A_d` and its type (sink, saddle, ...).
    """
    P = _patterns(model, patterns)                                    # (R, K)
    w = _weights(model)
    Ad, c = model.linear_piece(P)                                     # (R, M, M), (R, M)
    M = Ad.shape[-1]
    eye = torch.eye(M, dtype=torch.float64)
    z, info = torch.linalg.solve_ex(eye - Ad, c.unsqueeze(-1))
    z = z.squeeze(-1)                                                 # (R, M)
    ok = (info == 0) & torch.isfinite(z).all(-1)
    ok &= _consistent(model, w, torch.where(ok.unsqueeze(-1), z, 0.0), P, tol)
    out: list[PWLFixedPoint] = []
    for r in torch.nonzero(ok).flatten().tolist():
        zr = z[r]
        if any((zr - f.z).norm() <= 1e-8 * (1 + zr.norm()) for f in out):
            continue
        ev = _sorted_eigs(Ad[r])
        kind, stable = classify(ev, "map")
        out.append(PWLFixedPoint(zr, P[r], r, ev, kind, stable))
    return out


def pwl_cycles(model: ReconstructionModel, k: int, patterns=None, *, tol: float = 1e-9,
               max_sequences: int = 1_000_000) -> list[PWLCycle]:
    r"""Exact ``k``-cycles over sequences of subregions (``k`` = 2 or 3; 1 gives fixed points).

    For each sequence :math:`(d_1, \dots, d_k)` of the given subregions (one per rotation,
    sequences of smaller period skipped), compose :math:`z \mapsto A_{d_i} z + c_{d_i}`, solve
    for the periodic point and keep the orbit if every point lies in its subregion and the
    orbit's least period is ``k``.

    Args:
        k: the period, 1 to 3.
        patterns: the candidate subregions, (R, K) bool or a :class:`SymbolicSequence`
            (default: all :math:`2^K`). :math:`R^k` sequences are tried.
        max_sequences: refuse (:class:`SizeLimitError`) above this many sequences.

    Returns:
        The cycles, each with its points (k, M) and the eigenvalues of the cycle's
        Jacobian product.
    """
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= 3:
        raise ParameterError(f"the period k must be 1, 2 or 3, got {k!r}")
    k = int(k)
    P = _patterns(model, patterns)
    R = P.shape[0]
    if R**k > max_sequences:
        raise SizeLimitError(f"{R} subregions give {R**k:,} sequences of length {k}, over the "
                             f"limit of {max_sequences:,}; pass fewer patterns")
    w = _weights(model)
    Ad, c = model.linear_piece(P)                                     # (R, M, M), (R, M)
    M = Ad.shape[-1]
    seqs = [s for s in itertools.product(range(R), repeat=k)
            if s == min(s[i:] + s[:i] for i in range(k))              # one rotation each
            and not any(s == s[p:] + s[:p] for p in range(1, k) if k % p == 0)]  # least period k
    if not seqs:
        return []
    S = torch.tensor(seqs, dtype=torch.long)                          # (S, k)
    # composite affine map of one round: z -> Mk z + ck
    Mk = torch.eye(M, dtype=torch.float64).expand(len(seqs), M, M)
    ck = torch.zeros(len(seqs), M, dtype=torch.float64)
    for i in range(k):
        A_i, c_i = Ad[S[:, i]], c[S[:, i]]
        Mk = A_i @ Mk
        ck = (A_i @ ck.unsqueeze(-1)).squeeze(-1) + c_i
    eye = torch.eye(M, dtype=torch.float64)
    z1, info = torch.linalg.solve_ex(eye - Mk, ck.unsqueeze(-1))
    z1 = z1.squeeze(-1)                                               # (S, M)
    ok = (info == 0) & torch.isfinite(z1).all(-1)
    z1 = torch.where(ok.unsqueeze(-1), z1, 0.0)
    pts = [z1]
    for i in range(k - 1):
        A_i, c_i = Ad[S[:, i]], c[S[:, i]]
        pts.append((A_i @ pts[-1].unsqueeze(-1)).squeeze(-1) + c_i)
    orbit = torch.stack(pts, 1)                                       # (S, k, M)
    for i in range(k):
        ok &= _consistent(model, w, orbit[:, i], P[S[:, i]], tol)
    # least period k: no two points of the orbit coincide (a fixed point on a boundary)
    gap = (orbit.unsqueeze(1) - orbit.unsqueeze(2)).norm(dim=-1)      # (S, k, k)
    gap = gap + torch.eye(k, dtype=torch.float64) * 1e300
    ok &= (gap.flatten(1).min(-1).values > 1e-8 * (1 + orbit.norm(dim=-1).amax(-1)))
    out: list[PWLCycle] = []
    for s in torch.nonzero(ok).flatten().tolist():
        pts_s = orbit[s]
        if any(_same_cycle(pts_s, cy.points) for cy in out):
            continue
        ev = _sorted_eigs(Mk[s])
        kind, stable = classify(ev, "map")
        regs = tuple(int(r) for r in S[s])
        out.append(PWLCycle(pts_s, P[S[s]], regs, ev, kind, stable))
    return out


def _same_cycle(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the orbits ``a`` and ``b`` (k, M) are the same points up to rotation."""
    k = a.shape[0]
    tol = 1e-8 * (1 + float(a.abs().max()))
    return any(float((torch.roll(a, i, 0) - b).abs().max()) <= tol for i in range(k))
