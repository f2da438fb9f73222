r"""I-OnsagerNet: an identifiable neural Itô SDE whose potential is its stationary density.

The model (Zhu, Soh, Pavliotis, Li, *Identifiable learning of dissipative dynamics*,
arXiv:2510.24160; parameterisation after the authors' ``onsagernet-jax`` library,
MLDS-NUS/onsagernet-jax, ``OnsagerNetFD``; see ``docs/notes/ionsagernet.md``) is

.. math::

    dX_t = b(X_t)\,dt + \sqrt{2\varepsilon}\,M(X_t)^{1/2}\,dB_t,\qquad
    b = -(M + W)\nabla V + \varepsilon\,\nabla\!\cdot M + \varepsilon\,\nabla\!\cdot W,

with :math:`(\nabla\!\cdot A)_i = \sum_j \partial_j A_{ij}` (row-wise divergence),
:math:`M = M^\top \succ 0` (the mobility), :math:`W = -W^\top` and a fixed temperature
:math:`\varepsilon` (``eps``). The generator's diffusion matrix is :math:`D = \varepsilon M`.
The Fokker–Planck flux of :math:`\rho_s = \mathcal Z^{-1} e^{-V/\varepsilon}` is
:math:`J_s = \varepsilon\nabla\!\cdot(W\rho_s)`, which is divergence-free, so
:math:`e^{-V/\varepsilon}` is stationary for *every* choice of the three networks. (The
:math:`\varepsilon\nabla\!\cdot M` correction is onsagernet-jax's; the
:math:`\varepsilon\nabla\!\cdot W` term is derived in the note, since without it a state-dependent
W breaks that stationarity; the paper's method section could not be read.) The drift
splits (Helmholtz) into

.. math::

    b_{\rm rev} = -M\nabla V + \varepsilon\nabla\!\cdot M = D\nabla\log\rho_s + \nabla\!\cdot D,
    \qquad b_{\rm irr} = -W\nabla V + \varepsilon\nabla\!\cdot W = J_s/\rho_s ,

and the entropy production rate (:math:`k_B = 1`, per unit time) is

.. math:: e_p = \int b_{\rm irr}^\top D^{-1} b_{\rm irr}\,\rho_s\,dx ,

with local density :math:`\sigma(x) = b_{\rm irr}^\top D^{-1} b_{\rm irr}\,\rho_s(x) \ge 0`.
:math:`W \equiv 0` is detailed balance (:math:`e_p = 0`).

Identifiability: :math:`(V, M, W, \varepsilon) \mapsto (cV, M/c, W/c, c\varepsilon)` leaves the
process unchanged, so only :math:`V/\varepsilon` is identifiable and :math:`\varepsilon` is
*fixed* (a constructor argument: the known temperature / noise scale, else 1). The networks
therefore output :math:`\Phi = V/\varepsilon`, :math:`D = \varepsilon M` and
:math:`A = \varepsilon W` directly, and :math:`V = \varepsilon\Phi`, :math:`M = D/\varepsilon`,
:math:`W = A/\varepsilon`:

* potential, ``potential="mlp"``: :math:`\Phi(x) = \mathrm{MLP}(\tilde x) + \alpha|\tilde x|^2`;
  ``"resmlp"``: :math:`\Phi = \alpha|\tilde x|^2 + \tfrac12|\mathrm{MLP}(\tilde x) + \Gamma\tilde x|^2`
  (``PotentialMLP`` / ``PotentialResMLP`` of onsagernet-jax). The activations grow at most
  linearly (``tanh``, ``softplus``, ``srequ``), so :math:`\alpha > 0` makes
  :math:`e^{-\Phi}` normalisable;
* mobility: :math:`D(x) = R\,(\alpha_M I + L(\tilde x) L(\tilde x)^\top)\,R^\top` with ``L``
  lower triangular (``mobility="field"``: an MLP plus a constant; ``"constant"``: a constant),
  :math:`\alpha_M` = ``mobility_floor`` > 0 (so :math:`D \succ 0`);
* antisymmetric part: :math:`A(x) = R\,\tilde A(\tilde x)\,R^\top` with
  :math:`\tilde A = \sum_k a_k(\tilde x)\,(E_{i_k j_k} - E_{j_k i_k})` over the pairs
  :math:`i_k < j_k` of the band (``band``; 0: all pairs). In 2D that is one scalar field,
  :math:`\tilde A = a(x)\begin{psmallmatrix}0&1\\-1&0\end{psmallmatrix}`; in 1D
  :math:`W \equiv 0`. ``antisymmetric="field"`` (an MLP), ``"constant"`` or ``"none"``.

Here :math:`\tilde x = (x - \mu)/s` are standardised coordinates and ``R`` a fixed factor of
the data's diffusion scale (buffers set from the data by :meth:`IOnsagerNet.set_data_scales`;
identity by default). They only condition the networks: every field is a function of the
physical state and all derivatives are with respect to it (chain rule included).

Divergences: the Jacobians of the network outputs are propagated forward through the MLPs
together with their values (exact forward-mode differentiation in closed form, batched over
(N, d), differentiable with respect to the weights). This gives :math:`\nabla\Phi`,
:math:`\nabla\!\cdot D` and :math:`\nabla\!\cdot A` in one pass, also under ``torch.no_grad``
(evaluation) and without ``create_graph`` bookkeeping; ``tests/test_onsager.py`` checks them
against autograd through the Fokker–Planck residual.

Noise, ``diffusion="tied"`` (default): the noise covariance per unit time is :math:`2D`, the
fluctuation–dissipation link, and :math:`e^{-V/\varepsilon}` is the stationary density.
``diffusion="learned"``: the drift keeps the form above but the noise has its own learned
constant diffusion matrix :math:`D_{\rm noise}` (S-OnsagerNet-like); :math:`V` is then **no
longer** tied to the stationary density, and :meth:`entropy_production` evaluates the same
formula with :math:`D_{\rm noise}` (a diagnostic, not the process's exact rate).

Train in float32; ``model.to(torch.float64)`` (or ``dtype=torch.float64`` of
:meth:`grid_fields`) for evaluation.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError

__all__ = ["IOnsagerNet", "OnsagerConfig", "OnsagerFields", "build_onsager"]

_ACTIVATIONS = ("tanh", "softplus", "srequ")


def _act(name: str, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation value and derivative."""
    if name == "tanh":
        h = torch.tanh(z)
        return h, 1.0 - h * h
    if name == "softplus":
        return nn.functional.softplus(z), torch.sigmoid(z)
    # srequ (onsagernet-jax): relu(z)^2 - relu(z - 1/2)^2, linear growth, C^1
    r, r2 = torch.relu(z), torch.relu(z - 0.5)
    return r * r - r2 * r2, 2.0 * (r - r2)


class _JacMLP(nn.Module):
    """An MLP that returns its output and its Jacobian with respect to the input.

    ``forward(x)`` with ``x`` (N, d) gives ``y`` (N, out) and ``J`` (N, out, d),
    ``J[n, o, k] = dy_o/dx_k`` (forward-mode, exact; differentiable in the weights)."""

    def __init__(self, d: int, out: int, hidden: int, layers: int, activation: str,
                 zero_last: bool = False):
        super().__init__()
        sizes = [d] + [hidden] * layers + [out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.activation = activation
        if zero_last:
            nn.init.zeros_(self.linears[-1].weight)
            nn.init.zeros_(self.linears[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, d = x.shape
        h, Jt = x, None                                   # Jt (N, d, width) = J transposed
        last = len(self.linears) - 1
        for i, lin in enumerate(self.linears):
            z = torch.nn.functional.linear(h, lin.weight, lin.bias)
            Jt = lin.weight.T.unsqueeze(0).expand(N, -1, -1) if Jt is None else \
                (Jt.reshape(N * d, -1) @ lin.weight.T).reshape(N, d, -1)    # one GEMM
            if i < last:
                h, dh = _act(self.activation, z)
                Jt = Jt * dh.unsqueeze(1)
            else:
                h = z
        return h, Jt.transpose(1, 2)


@dataclass(frozen=True)
class OnsagerConfig:
    """Architecture of an :class:`IOnsagerNet` (plain data; stored in checkpoints).

    Attributes:
        dim: state dimension d (1-4 tested; any d >= 1 works).
        eps: the fixed temperature :math:`\\varepsilon` (only V/eps is identifiable).
        hidden, layers: width and number of hidden layers of every MLP.
        activation: ``"tanh"``, ``"softplus"`` or ``"srequ"`` (linear growth at most).
        potential: ``"resmlp"`` (default) or ``"mlp"``; n_pot: the ResMLP's inner width.
            The ResMLP form starts from the data's Gaussian (Γ = I in standardised
            coordinates) and represents quadratics exactly; with the plain MLP the (bounded)
            network must first grow to the potential's range, which costs hundreds of steps
            (measured: potential error 0.13 against 0.065 after 450 steps on the double well).
        alpha: confinement :math:`\\alpha|\\tilde x|^2` of V/eps (standardised coordinates).
        mobility: ``"field"`` (M(x)) or ``"constant"``; mobility_floor: :math:`\\alpha_M`.
        antisymmetric: ``"field"``, ``"constant"`` or ``"none"`` (W = 0: detailed balance).
        band: d >= 3: W couples coordinates at most this far apart (0: all pairs).
        diffusion: ``"tied"`` (noise from M) or ``"learned"`` (its own constant noise).
    """

    dim: int = 2
    eps: float = 1.0
    hidden: int = 16
    layers: int = 2
    activation: str = "tanh"
    potential: str = "resmlp"
    n_pot: int = 16
    alpha: float = 0.05
    mobility: str = "field"
    mobility_floor: float = 0.01
    antisymmetric: str = "field"
    band: int = 0
    diffusion: str = "tied"

    def __post_init__(self):
        def bad(msg):
            raise ParameterError(f"I-OnsagerNet config: {msg}")

        for name in ("dim", "hidden", "layers", "n_pot"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.band, bool) or not isinstance(self.band, int) or self.band < 0:
            bad(f"band must be an integer >= 0, got {self.band!r}")
        for name in ("eps", "mobility_floor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(f"{name} must be a positive number, got {v!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            bad(f"alpha must be > 0 (it makes exp(-V/eps) normalisable), got {self.alpha!r}")
        choices = {"activation": _ACTIVATIONS, "potential": ("mlp", "resmlp"),
                   "mobility": ("field", "constant"),
                   "antisymmetric": ("field", "constant", "none"),
                   "diffusion": ("tied", "learned")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> OnsagerConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise ParameterError(f"I-OnsagerNet config: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def replace(self, **changes) -> OnsagerConfig:
        return type(self)(**{**self.as_dict(), **changes})


class OnsagerFields(NamedTuple):
    """Everything the drift needs at a batch of states (N, d), in physical coordinates.

    ``phi`` = V/eps (N,), ``grad_phi`` (N, d), ``D`` = eps M (N, d, d), ``div_D`` (N, d),
    ``A`` = eps W (N, d, d), ``div_A`` (N, d)."""

    phi: torch.Tensor
    grad_phi: torch.Tensor
    D: torch.Tensor
    div_D: torch.Tensor
    A: torch.Tensor
    div_A: torch.Tensor

    @property
    def b_rev(self) -> torch.Tensor:
        """:math:`-D\\nabla\\Phi + \\nabla\\cdot D` (= :math:`-M\\nabla V + \\varepsilon\\nabla\\cdot M`)."""
        return -torch.einsum("nij,nj->ni", self.D, self.grad_phi) + self.div_D

    @property
    def b_irr(self) -> torch.Tensor:
        """:math:`-A\\nabla\\Phi + \\nabla\\cdot A` (= :math:`-W\\nabla V + \\varepsilon\\nabla\\cdot W`)."""
        return -torch.einsum("nij,nj->ni", self.A, self.grad_phi) + self.div_A

    @property
    def drift(self) -> torch.Tensor:
        return -torch.einsum("nij,nj->ni", self.D + self.A, self.grad_phi) + self.div_D + self.div_A


def _tril_basis(d: int) -> torch.Tensor:
    """(K, d, d) unit matrices of the lower triangle (K = d(d+1)/2), row-major."""
    idx = [(i, j) for i in range(d) for j in range(i + 1)]
    E = torch.zeros(len(idx), d, d)
    for k, (i, j) in enumerate(idx):
        E[k, i, j] = 1.0
    return E


def _antisym_basis(d: int, band: int) -> torch.Tensor:
    """(K, d, d) matrices E_ij - E_ji for the pairs i < j with j - i <= band (0: all)."""
    idx = [(i, j) for i in range(d) for j in range(i + 1, d) if band == 0 or j - i <= band]
    E = torch.zeros(len(idx), d, d)
    for k, (i, j) in enumerate(idx):
        E[k, i, j], E[k, j, i] = 1.0, -1.0
    return E


class IOnsagerNet(nn.Module):
    """The I-OnsagerNet SDE (see the module docstring for the equations).

    Args:
        config: an :class:`OnsagerConfig` (or keyword arguments for one).

    States are (..., d) tensors of the model's dtype; every method accepts any leading shape
    and returns fields with the same leading shape. ``forward(x)`` is the drift.
    """

    kind: ClassVar[str] = "ionsagernet"

    def __init__(self, config: OnsagerConfig | None = None, **kw: Any):
        super().__init__()
        cfg = config if config is not None else OnsagerConfig(**kw)
        if config is not None and kw:
            cfg = cfg.replace(**kw)
        self.config = cfg
        d, h, n = cfg.dim, cfg.hidden, cfg.layers
        # data scales (buffers: saved with the weights)
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("noise_factor", math.sqrt(cfg.eps) * torch.eye(d))   # R, R R^T = D0
        # potential Phi = V / eps
        if cfg.potential == "mlp":
            self.pot = _JacMLP(d, 1, h, n, cfg.activation)
        else:
            # (a random output layer: a zero one learns a double well several times slower)
            self.pot = _JacMLP(d, cfg.n_pot, h, n, cfg.activation)
            self.gamma = nn.Parameter(torch.zeros(cfg.n_pot, d))
            with torch.no_grad():
                self.gamma[:min(d, cfg.n_pot), :min(d, cfg.n_pot)] = torch.eye(min(d, cfg.n_pot))
        # mobility D = R (alpha_M I + L L^T) R^T, L lower triangular = L0 + MLP
        self.register_buffer("tril_basis", _tril_basis(d))
        K = d * (d + 1) // 2
        self.L0 = nn.Parameter(math.sqrt(max(1.0 - cfg.mobility_floor, 1e-3)) * torch.eye(d))
        self.mob = _JacMLP(d, K, h, n, cfg.activation, zero_last=True) \
            if cfg.mobility == "field" else None
        # antisymmetric A = R (sum_k a_k E_k) R^T
        self.register_buffer("antisym_basis", _antisym_basis(d, cfg.band))
        Ka = self.antisym_basis.shape[0]
        mode = cfg.antisymmetric if Ka > 0 else "none"
        self._anti_mode = mode
        self.anti = _JacMLP(d, Ka, h, n, cfg.activation, zero_last=True) if mode == "field" else None
        self.a0 = nn.Parameter(torch.zeros(Ka)) if mode == "constant" else None
        # learned noise (diffusion="learned"): D_noise = R (alpha_M I + C C^T) R^T
        self.noise_L = nn.Parameter(math.sqrt(max(1.0 - cfg.mobility_floor, 1e-3)) * torch.eye(d)) \
            if cfg.diffusion == "learned" else None

    # ------------------------------------------------------------------ setup
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def eps(self) -> float:
        return float(self.config.eps)

    @torch.no_grad()
    def set_data_scales(self, shift=None, scale=None, diffusion=None) -> IOnsagerNet:
        """Condition the networks on the data (physical meaning unchanged): inputs are
        standardised as ``(x - shift) / scale`` and ``D``, ``A`` are expressed relative to
        ``diffusion`` (d, d) SPD, a rough estimate of the diffusion matrix (at initialisation
        the mobility field then is ``D = diffusion`` exactly). Call before training."""
        d = self.dim
        if shift is not None:
            self.shift.copy_(torch.as_tensor(shift, dtype=self.shift.dtype).reshape(d))
        if scale is not None:
            s = torch.as_tensor(scale, dtype=self.scale.dtype).reshape(d)
            if not bool((s > 0).all() and torch.isfinite(s).all()):
                raise ParameterError("data scales must be positive and finite")
            self.scale.copy_(s)
        if diffusion is not None:
            D0 = torch.as_tensor(diffusion, dtype=torch.float64).reshape(d, d)
            D0 = 0.5 * (D0 + D0.T)
            floor = 1e-8 * float(torch.linalg.eigvalsh(D0).abs().max().clamp_min(1e-30))
            R = torch.linalg.cholesky(D0 + floor * torch.eye(d, dtype=torch.float64))
            self.noise_factor.copy_(R.to(self.noise_factor.dtype))
        return self

    # ------------------------------------------------------------------ fields
    def _flat(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=self.shift.dtype, device=self.shift.device)
        if x.shape[-1] != self.dim:
            raise ShapeError(f"I-OnsagerNet of dimension {self.dim} got states of shape "
                             f"{tuple(x.shape)}")
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, self.dim), lead

    def _mobility(self, x: torch.Tensor, xt: torch.Tensor, inv_s: torch.Tensor,
                  divergence: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``D = eps M`` (N, d, d) and, if asked, its row divergence (N, d)."""
        cfg, R = self.config, self.noise_factor
        N, d = x.shape
        L = torch.tril(self.L0).expand(N, d, d)
        if self.mob is not None:
            l, Jl = self.mob(xt)                                              # (N,K), (N,K,d)
            L = L + torch.einsum("nk,kij->nij", l, self.tril_basis)
        RL = torch.matmul(R, L)                                               # (N, d, d)
        D = cfg.mobility_floor * (R @ R.T) + RL @ RL.transpose(-1, -2)
        if not divergence:
            return D, None
        if self.mob is None:
            return D, torch.zeros_like(x)
        JL = torch.einsum("nkc,kij->nijc", Jl * inv_s, self.tril_basis)       # dL_ij/dx_c
        RJL = torch.einsum("ia,najc->nijc", R, JL)
        # div_i = sum_j d_j (RL RL^T)_ij = sum_{j,m} dRL_im/dx_j RL_jm + RL_im dRL_jm/dx_j
        div_D = torch.einsum("nimj,njm->ni", RJL, RL) + torch.einsum("nim,njmj->ni", RL, RJL)
        return D, div_D

    def fields(self, x: torch.Tensor) -> OnsagerFields:
        """:class:`OnsagerFields` at states ``x`` (N, d) (flat batch)."""
        cfg = self.config
        N, d = x.shape
        inv_s = 1.0 / self.scale                                              # (d,)
        xt = (x - self.shift) * inv_s
        # potential
        if cfg.potential == "mlp":
            y, J = self.pot(xt)
            phi = y[:, 0] + cfg.alpha * (xt * xt).sum(-1)
            g = J[:, 0, :] + 2.0 * cfg.alpha * xt
        else:
            y, J = self.pot(xt)
            u = y + xt @ self.gamma.T                                         # (N, n_pot)
            Ju = J + self.gamma                                               # (N, n_pot, d)
            phi = cfg.alpha * (xt * xt).sum(-1) + 0.5 * (u * u).sum(-1)
            g = 2.0 * cfg.alpha * xt + torch.einsum("npk,np->nk", Ju, u)
        grad_phi = g * inv_s
        R = self.noise_factor
        D, div_D = self._mobility(x, xt, inv_s, divergence=True)
        # antisymmetric part
        E = self.antisym_basis
        if self._anti_mode == "field":
            a, Ja = self.anti(xt)
            At = torch.einsum("nk,kij->nij", a, E)
            JA = torch.einsum("nkc,kij->nijc", Ja * inv_s, E)
            A = R @ At @ R.T
            div_A = torch.einsum("ia,nabj,jb->ni", R, JA, R)
        elif self._anti_mode == "constant":
            A = (R @ torch.einsum("k,kij->ij", self.a0, E) @ R.T).expand(N, d, d)
            div_A = torch.zeros_like(x)
        else:
            A = x.new_zeros(N, d, d)
            div_A = torch.zeros_like(x)
        return OnsagerFields(phi, grad_phi, D, div_D, A, div_A)

    def _map(self, fn, x):
        flat, lead = self._flat(x)
        out = fn(flat)
        return out.reshape(*lead, *out.shape[1:])

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """V(x) = eps * Phi(x), shape (...)."""
        return self._map(lambda z: self.eps * self.fields(z).phi, x)

    def reduced_potential(self, x: torch.Tensor) -> torch.Tensor:
        """V(x)/eps = -log rho_s(x) + const, shape (...)."""
        return self._map(lambda z: self.fields(z).phi, x)

    def mobility(self, x: torch.Tensor) -> torch.Tensor:
        """M(x) = D(x)/eps, (..., d, d), symmetric positive definite."""
        return self._map(lambda z: self.fields(z).D / self.eps, x)

    def antisymmetric(self, x: torch.Tensor) -> torch.Tensor:
        """W(x), (..., d, d), antisymmetric."""
        return self._map(lambda z: self.fields(z).A / self.eps, x)

    def drift(self, x: torch.Tensor) -> torch.Tensor:
        """b(x) = -(M + W) grad V + eps div M + eps div W, (..., d)."""
        return self._map(lambda z: self.fields(z).drift, x)

    forward = drift

    def drift_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b_rev, b_irr)``, each (..., d): b_rev = -M grad V + eps div M,
        b_irr = -W grad V + eps div W; b = b_rev + b_irr."""
        flat, lead = self._flat(x)
        f = self.fields(flat)
        return f.b_rev.reshape(*lead, -1), f.b_irr.reshape(*lead, -1)

    def _noise_D(self, f: OnsagerFields) -> torch.Tensor:
        if self.noise_L is None:
            return f.D
        return self._noise_D_const(f.D.dtype).expand_as(f.D)

    def diffusion_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The generator's diffusion matrix (..., d, d): eps M (``"tied"``) or the learned
        noise's (``"learned"``); the noise covariance per unit time is twice it."""
        return self._map(lambda z: self._noise_D(self.fields(z)), x)

    def noise_factor_at(self, x: torch.Tensor) -> torch.Tensor:
        """``G(x)`` with ``G G^T = 2 D(x)`` (Cholesky), (..., d, d): ``dX = b dt + G dB``."""
        def G(z):
            N, d = z.shape
            if self.noise_L is not None or self.mob is None:            # constant
                D = self._noise_D_const(z.dtype)
                return torch.linalg.cholesky(2.0 * D).expand(N, d, d)
            inv_s = 1.0 / self.scale
            D, _ = self._mobility(z, (z - self.shift) * inv_s, inv_s, divergence=False)
            return torch.linalg.cholesky(2.0 * D)

        return self._map(G, x)

    def _noise_D_const(self, dtype) -> torch.Tensor:
        """The constant noise diffusion matrix (``"learned"`` noise or constant mobility)."""
        R = self.noise_factor
        C = self.noise_L if self.noise_L is not None else self.L0
        RC = R @ torch.tril(C)
        return (self.config.mobility_floor * (R @ R.T) + RC @ RC.T).to(dtype)

    def _local_ep(self, f: OnsagerFields) -> torch.Tensor:
        b = f.b_irr
        C = torch.linalg.cholesky(self._noise_D(f))
        y = torch.linalg.solve_triangular(C, b.unsqueeze(-1), upper=False).squeeze(-1)
        return (y * y).sum(-1)

    def entropy_density(self, x: torch.Tensor) -> torch.Tensor:
        """Local rate b_irr^T D^{-1} b_irr (...,) (multiply by rho_s to integrate)."""
        return self._map(lambda z: self._local_ep(self.fields(z)), x)

    @torch.no_grad()
    def entropy_production(self, samples: torch.Tensor, chunk: int = 65_536) -> float:
        """e_p estimated as the mean of b_irr^T D^{-1} b_irr over stationary samples
        (..., d) (estimator 1 of the note; no normalising constant needed)."""
        flat, _ = self._flat(torch.as_tensor(samples).to(self.shift))
        if flat.shape[0] == 0:
            raise ShapeError("entropy_production needs at least one sample")
        total = 0.0
        for i in range(0, flat.shape[0], chunk):
            total += float(self._local_ep(self.fields(flat[i:i + chunk])).double().sum())
        return total / flat.shape[0]

    # ------------------------------------------------------------------ evaluation copies
    def evaluation_copy(self, dtype: torch.dtype = torch.float64) -> IOnsagerNet:
        """A detached copy in ``dtype`` (default float64), in eval mode."""
        m = copy.deepcopy(self).to(dtype=dtype).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        return m

    @torch.no_grad()
    def grid_fields(self, bounds, n: int = 64, *, dtype: torch.dtype = torch.float64) -> dict[str, Any]:
        """Fields on a regular grid for plots (d = 1 or 2), as numpy arrays.

        Args:
            bounds: 2D: ``((xmin, xmax), (ymin, ymax))`` or ``(xmin, xmax, ymin, ymax)``;
                1D: ``(xmin, xmax)``.
            n: points per axis.
            dtype: evaluation precision (default float64).

        Returns:
            ``x``, ``y`` (n,) axes (2D: arrays (n, n) are indexed ``[iy, ix]``);
            ``V`` (min shifted to 0), ``V_over_eps`` (min 0), ``b_rev`` and ``b_irr``
            (..., d) and their components ``b_rev_x``, ``b_rev_y``, ``b_irr_x``, ``b_irr_y``,
            ``rho`` (:math:`\\propto e^{-V/\\varepsilon}` normalised on the grid),
            ``sigma`` = :math:`b_{\\rm irr}^\\top D^{-1} b_{\\rm irr}\\rho_s` and ``ep``
            (the grid quadrature of sigma, a float), ``eps``.
        """
        import numpy as np

        d = self.dim
        if d not in (1, 2):
            raise ShapeError(f"grid_fields is for 1D and 2D models, this one has d = {d}")
        b = [float(v) for v in np.asarray(bounds, dtype=float).reshape(-1)]
        if len(b) != 2 * d or not all(math.isfinite(v) for v in b) or \
                any(b[2 * i + 1] <= b[2 * i] for i in range(d)):
            raise ParameterError(f"bounds must be {d} increasing (min, max) pairs, got {bounds!r}")
        n = int(n)
        if n < 2:
            raise ParameterError(f"n must be at least 2, got {n}")
        m = self.evaluation_copy(dtype)
        dev = m.shift.device
        axes = [torch.linspace(b[2 * i], b[2 * i + 1], n, dtype=dtype, device=dev) for i in range(d)]
        if d == 2:
            Y, X = torch.meshgrid(axes[1], axes[0], indexing="ij")
            pts = torch.stack([X, Y], -1).reshape(-1, 2)
            shape = (n, n)
            cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
        else:
            pts = axes[0].reshape(-1, 1)
            shape = (n,)
            cell = float(axes[0][1] - axes[0][0])
        f = m.fields(pts)
        phi = f.phi - f.phi.min()
        w = torch.exp(-phi)
        rho = w / (w.sum() * cell)
        local = m._local_ep(f)
        sigma = local * rho
        out: dict[str, Any] = {"x": axes[0].cpu().numpy()}
        if d == 2:
            out["y"] = axes[1].cpu().numpy()
        out.update(
            V=(m.eps * phi).reshape(shape).cpu().numpy(),
            V_over_eps=phi.reshape(shape).cpu().numpy(),
            b_rev=f.b_rev.reshape(*shape, d).cpu().numpy(),
            b_irr=f.b_irr.reshape(*shape, d).cpu().numpy(),
            rho=rho.reshape(shape).cpu().numpy(),
            local_ep=local.reshape(shape).cpu().numpy(),
            sigma=sigma.reshape(shape).cpu().numpy(),
            ep=float(sigma.sum() * cell),
            eps=m.eps)
        for i, c in enumerate("xy"[:d]):
            out[f"b_rev_{c}"] = out["b_rev"][..., i]
            out[f"b_irr_{c}"] = out["b_irr"][..., i]
        return out

    # ------------------------------------------------------------------ as a system
    def as_system(self, *, x0=None, dt: float = 0.01, name: str = "ionsagernet",
                  title: str | None = None):
        """A float64 snapshot of the learned SDE as an :class:`explorer.core.system.SDE`
        (general noise ``G = chol(2 D)``), so :func:`explorer.core.simulate.simulate` and the
        library's SDE tools run on it. Training of this model may go on."""
        from ..core.system import SDE

        snap = self.evaluation_copy(torch.float64)
        d = self.dim
        x0_t = snap.shift.clone() if x0 is None else torch.as_tensor(x0, dtype=torch.float64).reshape(d)
        variables = ("x", "y", "z")[:d] if d <= 3 else tuple(f"x{i + 1}" for i in range(d))

        def rhs(self_, x, p):
            return snap._cast(x).drift(x)

        def diffusion(self_, x, p):
            return snap._cast(x).noise_factor_at(x)

        attrs = {
            "__module__": __name__,
            "__doc__": "Snapshot of a trained I-OnsagerNet as an SDE.",
            "name": name, "title": title or "Learned I-OnsagerNet SDE",
            "variables": variables, "parameters": (), "default_x0": tuple(x0_t.tolist()),
            "default_dt": float(dt), "noise": "general", "noise_dim": d, "origin": "trained",
            "latex": (r"dX = [-(M+W)\nabla V + \varepsilon\nabla\cdot M + \varepsilon\nabla\cdot W]"
                      r"\,dt + \sqrt{2\varepsilon}M^{1/2}dB"),
            "description": ("An I-OnsagerNet learned from trajectories: potential V (the "
                            "stationary density is exp(-V/eps)), mobility M and antisymmetric W."),
            "citation": ("A. Zhu, B. W. Soh, G. A. Pavliotis, Q. Li, Identifiable learning of "
                         "dissipative dynamics, arXiv:2510.24160 (2025)"),
            "model": snap, "rhs": rhs, "diffusion": diffusion,
            "__reduce__": lambda self_: (_rebuild_learned, (
                snap.config.as_dict(), dict(snap.state_dict()), tuple(x0_t.tolist()), float(dt),
                name, title, dict(self_.params))),
        }
        cls = type("LearnedOnsagerSDE", (SDE,), attrs)
        return cls()

    def _cast(self, like: torch.Tensor) -> IOnsagerNet:
        """Self, or a cached copy in ``like``'s dtype/device."""
        if like.dtype == self.shift.dtype and like.device == self.shift.device:
            return self
        cache = self.__dict__.setdefault("_casts", {})
        key = (like.dtype, like.device)
        if key not in cache:
            cache[key] = copy.deepcopy(self).to(device=like.device, dtype=like.dtype)
        return cache[key]


def _rebuild_learned(config, state, x0, dt, name, title, params):
    """Unpickle :meth:`IOnsagerNet.as_system`'s snapshot."""
    m = build_onsager(config).to(torch.float64)
    m.load_state_dict(state)
    s = m.as_system(x0=x0, dt=dt, name=name, title=title)
    return type(s)(**params)


def build_onsager(config) -> IOnsagerNet:
    """An :class:`IOnsagerNet` from a config dict (the checkpoint registry's builder)."""
    return IOnsagerNet(OnsagerConfig.from_dict(config))
