r"""Piecewise-linear recurrent networks for dynamical-systems reconstruction.

Three latent models, each a map :math:`z_{t+1} = F(z_t)` on an ``M``-dimensional latent state
with ReLU nonlinearities, so the state space splits into linear subregions (analysed exactly in
:mod:`explorer.models.pwl`):

* :class:`PLRNN`: :math:`z_{t+1} = A z_t + W \max(z_t, 0) + h`, ``A`` diagonal, ``W`` with
  zero diagonal.
* :class:`ShallowPLRNN`: :math:`z_{t+1} = A z_t + W_1 \max(W_2 z_t + h_2, 0) + h_1`, optionally
  "clipped": :math:`W_1 [\max(W_2 z + h_2, 0) - \max(W_2 z, 0)]`, which keeps orbits bounded.
* :class:`ALRNN`: :math:`z_{t+1} = A z_t + W \phi(z_t) + h`, where :math:`\phi` applies the
  ReLU only to the last ``P`` of the ``M`` units (:math:`2^P` linear subregions).

Observations: with the identity observation model (default) the first ``N`` latent units are
the observed coordinates (what generalized teacher forcing replaces); the ``"linear"`` model
observes :math:`x = B z` with a learned ``B`` (N, M).

Every model has ``step`` (one map iteration), an analytic ``jacobian``, ``forward`` (free
running) and ``as_system()``, which returns a frozen float64 snapshot as an
:class:`explorer.core.system.Map`, so Lyapunov spectra, fixed points and orbit diagrams are
computed by the same code as for the built-in systems. Training runs in float32; analysis
of the snapshot in float64.

Shapes: states ``(..., M)``; trajectories time-major ``(T, B, M)``.

References:
    G. Koppe, H. Toutounji, P. Kirsch, S. Lis, D. Durstewitz, PLoS Comput. Biol. 15,
    e1007263 (2019) (PLRNN).
    F. Hess, Z. Monfared, M. Brenner, D. Durstewitz, ICML (2023) (shallow PLRNN, GTF).
    M. Brenner, C. J. Hemmer, Z. Monfared, D. Durstewitz, NeurIPS (2024) (AL-RNN).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError
from ..core.system import Map, Param

OBSERVATIONS = ("identity", "linear")


def _check_int(owner: str, name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


def _check_observation(owner: str, observation: str, obs_dim: int, latent_dim: int) -> None:
    if observation not in OBSERVATIONS:
        raise ParameterError(f"{owner}: observation must be one of {', '.join(OBSERVATIONS)}, "
                             f"got {observation!r}")
    if observation == "identity" and obs_dim > latent_dim:
        raise ParameterError(f"{owner}: the identity observation needs latent_dim >= obs_dim "
                             f"(the first obs_dim latent units are observed), got latent_dim="
                             f"{latent_dim} < obs_dim={obs_dim}")


# ============================================================================= configs
@dataclass(frozen=True)
class PLRNNConfig:
    """Vanilla PLRNN: ``z' = A z + W relu(z) + h``."""

    kind: ClassVar[str] = "plrnn"
    obs_dim: int = 3                 # N, observed coordinates
    latent_dim: int = 20             # M, latent units (>= N for the identity observation)
    observation: str = "identity"    # "identity" (first N units observed) or "linear" (x = B z)

    def __post_init__(self):
        _check_int("PLRNN", "obs_dim", self.obs_dim, 1)
        _check_int("PLRNN", "latent_dim", self.latent_dim, 1)
        _check_observation("PLRNN", self.observation, self.obs_dim, self.latent_dim)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ShallowPLRNNConfig:
    """Shallow PLRNN: ``z' = A z + W1 relu(W2 z + h2) + h1`` (or its clipped variant)."""

    kind: ClassVar[str] = "shplrnn"
    obs_dim: int = 3                 # N, observed coordinates
    latent_dim: int = 3              # M, latent units
    hidden_dim: int = 50             # H, width of the ReLU layer
    clipped: bool = False            # use relu(W2 z + h2) - relu(W2 z): bounded orbits
    observation: str = "identity"    # "identity" or "linear"

    def __post_init__(self):
        _check_int("shallow PLRNN", "obs_dim", self.obs_dim, 1)
        _check_int("shallow PLRNN", "latent_dim", self.latent_dim, 1)
        _check_int("shallow PLRNN", "hidden_dim", self.hidden_dim, 1)
        if not isinstance(self.clipped, bool):
            raise ParameterError(f"shallow PLRNN: clipped must be True or False, got {self.clipped!r}")
        _check_observation("shallow PLRNN", self.observation, self.obs_dim, self.latent_dim)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ALRNNConfig:
    """Almost-linear RNN: ``z' = A z + W phi(z) + h``, ReLU on the last ``n_relu`` units."""

    kind: ClassVar[str] = "alrnn"
    obs_dim: int = 3                 # N, observed coordinates
    latent_dim: int = 20             # M, latent units
    n_relu: int = 2                  # P, units passed through the ReLU (2^P subregions)
    observation: str = "identity"    # "identity" or "linear"

    def __post_init__(self):
        _check_int("AL-RNN", "obs_dim", self.obs_dim, 1)
        _check_int("AL-RNN", "latent_dim", self.latent_dim, 1)
        _check_int("AL-RNN", "n_relu", self.n_relu, 0)
        if self.n_relu > self.latent_dim:
            raise ParameterError(f"AL-RNN: n_relu (P={self.n_relu}) cannot exceed latent_dim "
                                 f"(M={self.latent_dim})")
        _check_observation("AL-RNN", self.observation, self.obs_dim, self.latent_dim)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


ModelConfig = PLRNNConfig | ShallowPLRNNConfig | ALRNNConfig
CONFIGS: dict[str, type] = {c.kind: c for c in (PLRNNConfig, ShallowPLRNNConfig, ALRNNConfig)}


def config_from_dict(d: Mapping[str, Any]) -> ModelConfig:
    """Rebuild a model config from :meth:`as_dict` output (checkpoints store plain dicts)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIGS:
        raise ParameterError(f"unknown model kind {kind!r}; choose one of {', '.join(CONFIGS)}")
    cls = CONFIGS[kind]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ParameterError(f"{kind}: unknown config field(s) {', '.join(unknown)}")
    return cls(**d)


# ============================================================================= helpers
def normalized_positive_definite(M: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A random symmetric positive-definite matrix with spectral radius 1:
    :math:`K = (R^\top R / M + I) / \rho(R^\top R / M + I)`, :math:`R_{ij} \sim \mathcal N(0, 1)`.
    Its diagonal initialises ``A`` (entries in (0, 1): slowly decaying units)."""
    R = torch.randn(M, M, generator=generator, dtype=torch.float64)
    K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
    return (K / torch.linalg.eigvalsh(K).abs().max()).float()


def _uniform(shape, bound: float, generator) -> torch.Tensor:
    return (2 * torch.rand(*shape, generator=generator) - 1) * bound


def _lam(lam, like: torch.Tensor, extra: int):
    """The coupling as a number, or a tensor broadcasting against ``like``'s batch dims
    (``extra`` trailing singleton dims appended: 1 for vectors, 2 for matrices)."""
    if lam is None or isinstance(lam, (int, float)):
        return None if lam is None or lam == 1 else float(lam)
    lam = lam.to(like.dtype)
    return lam.reshape(lam.shape + (1,) * extra)


def _scaled(t: torch.Tensor, lam):
    return t if lam is None else lam * t


# ============================================================================= base class
class ReconstructionModel(nn.Module):
    """Base of the latent PWL models. Subclasses are final.

    Subclasses implement the pure functions ``_f(w, z, lam)`` (next state), ``_pre(w, z)``
    (the pre-activations whose signs select the linear subregion) and ``_piece(w, d, lam)``
    (the affine map ``A_d z + c_d`` valid where the sign pattern is ``d``), all on a dict of
    weights ``w``; the module and its :meth:`as_system` snapshot share them. ``lam`` scales the
    nonlinear coupling term (the snapshot's ``coupling`` parameter; ``None`` = 1).
    """

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_class: ClassVar[type] = PLRNNConfig

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ParameterError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                                 f"got {type(config).__name__}")
        self.config = config
        M, N = config.latent_dim, config.obs_dim
        self.register_buffer("z_ref", torch.zeros(M))      # default state of as_system()
        if config.observation == "linear":
            B = torch.zeros(N, M)
            B[:, :min(N, M)] = torch.eye(N, min(N, M))
            self.B = nn.Parameter(B)                         # (N, M), starts as [I 0]
        else:
            self.B = None

    # ------------------------------------------------------------------ sizes
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def obs_dim(self) -> int:
        return self.config.obs_dim

    @property
    def n_switches(self) -> int:
        """K, the number of ReLU units whose signs define a subregion."""
        raise NotImplementedError

    # ------------------------------------------------------------------ weights
    def weights(self) -> dict[str, torch.Tensor]:
        """The effective weights (masks applied) as used by the dynamics, with autograd."""
        raise NotImplementedError

    def weights64(self) -> dict[str, torch.Tensor]:
        """A detached float64 CPU copy of :meth:`weights` (for analysis)."""
        return {k: v.detach().to("cpu", torch.float64).clone() for k, v in self.weights().items()}

    @staticmethod
    def _f(w: Mapping[str, torch.Tensor], z: torch.Tensor, lam=None) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _pre(w: Mapping[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _piece(w: Mapping[str, torch.Tensor], d: torch.Tensor, lam=None):
        raise NotImplementedError

    @classmethod
    def _J(cls, w, z, lam=None) -> torch.Tensor:
        d = (cls._pre(w, z) > 0).to(z.dtype)
        return cls._piece(w, d, lam)[0]

    @staticmethod
    def _latex(config) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ dynamics
    def _check(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 0 or z.shape[-1] != self.latent_dim:
            raise ShapeError(f"{self.title}: latent states must be (..., {self.latent_dim}), "
                             f"got shape {tuple(z.shape)}")
        return z

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """One iteration :math:`z_{t+1} = F(z_t)`; ``z``: (..., M) -> (..., M)."""
        return self._f(self.weights(), self._check(z))

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Analytic Jacobian :math:`\\partial F / \\partial z` at ``z`` (..., M) -> (..., M, M)."""
        return self._J(self.weights(), self._check(z))

    def forward(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """Free-running generation: the states after each of ``steps`` iterations.

        Args:
            z0: initial latent state(s), (..., M).
            steps: number of iterations.

        Returns:
            (steps, ..., M), time-major, excluding ``z0``.
        """
        w = self.weights()
        z = self._check(z0)
        out = []
        for _ in range(int(steps)):
            z = self._f(w, z)
            out.append(z)
        if not out:
            return z0.new_zeros((0,) + tuple(z0.shape))
        return torch.stack(out)                                       # (T, ..., M)

    def generate(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """Observations of a free run started from the state inferred from ``x0`` (..., N).

        Returns (steps + 1, ..., N), including the observation of the initial state."""
        z0 = self.init_state(x0)
        zs = torch.cat([z0.unsqueeze(0), self.forward(z0, steps)])    # (T+1, ..., M)
        return self.observe(zs)

    # ------------------------------------------------------------------ observation
    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """Observation model: (..., M) -> (..., N); the first N units, or ``B z``."""
        if self.B is None:
            return z[..., : self.obs_dim]
        return z @ self.B.T

    def observation_pinv(self) -> torch.Tensor | None:
        """The pseudo-inverse :math:`B^+` (M, N) of the linear observation (``None``: identity)."""
        return None if self.B is None else torch.linalg.pinv(self.B)

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """Latent state inferred from an observation (..., N): identity: ``x`` padded with
        zeros for the unobserved units; linear: :math:`B^+ x`."""
        if x.shape[-1] != self.obs_dim:
            raise ShapeError(f"{self.title}: observations must be (..., {self.obs_dim}), "
                             f"got shape {tuple(x.shape)}")
        if self.B is None:
            pad = self.latent_dim - self.obs_dim
            if pad == 0:
                return x
            return torch.cat([x, x.new_zeros(x.shape[:-1] + (pad,))], -1)
        return x @ self.observation_pinv().T

    # ------------------------------------------------------------------ analysis
    def switches(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-activations (..., K) of the ReLU units; their signs select the subregion."""
        return self._pre(self.weights(), self._check(z))

    def linear_piece(self, d: torch.Tensor, *, dtype: torch.dtype = torch.float64):
        r"""The affine map of subregion ``d``: :math:`F(z) = A_d z + c_d` wherever the ReLU
        pattern is ``d`` (..., K) (0/1 or bool). Returns ``(A_d (..., M, M), c_d (..., M))``
        in ``dtype`` (float64 by default: analysis)."""
        w = {k: v.detach().to(dtype) for k, v in self.weights().items()}
        d = torch.as_tensor(d).to(dtype)
        if d.shape[-1] != self.n_switches:
            raise ShapeError(f"{self.title}: a sign pattern has {self.n_switches} entries, "
                             f"got shape {tuple(d.shape)}")
        return self._piece(w, d)

    def latex(self) -> str:
        """The model equations (KaTeX)."""
        return self._latex(self.config)

    def as_system(self, x0=None, *, variables: tuple[str, ...] | None = None,
                  title: str | None = None, description: str | None = None) -> Map:
        """A float64 snapshot of this model as an :class:`explorer.core.system.Map`.

        The snapshot is frozen (later training does not change it) and carries one
        parameter, ``coupling`` (default 1: the trained model), which scales the nonlinear
        term, so an orbit diagram can sweep a homotopy from the linear part to the model.

        Args:
            x0: default initial latent state (M,); default: the ``z_ref`` buffer (set by the
                trainer to a state inferred from the data).
            variables: names of the M latent units (default ``z1 .. zM``).
            title, description: metadata shown in the UI.
        """
        return make_model_map(self.kind, self.config, self.weights64(),
                              x0=self.z_ref if x0 is None else x0, variables=variables,
                              title=title, description=description)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.as_dict().items() if k != "kind")


# ============================================================================= PLRNN
class PLRNN(ReconstructionModel):
    r"""Vanilla PLRNN :math:`z_{t+1} = A z_t + W \max(z_t, 0) + h`.

    ``A`` (M,) diagonal, ``W`` (M, M) with zero diagonal, ``h`` (M,). Jacobian:
    :math:`\mathrm{diag}(A) + W \mathrm{diag}(\mathbb 1[z > 0])`. Initialisation: ``A`` and
    ``W`` from the diagonal and off-diagonal of a normalised positive-definite matrix,
    ``h = 0``.

    References:
        Koppe et al., PLoS Comput. Biol. 15, e1007263 (2019).
    """

    kind = "plrnn"
    title = "PLRNN"
    config_class = PLRNNConfig

    def __init__(self, config: PLRNNConfig | None = None, *, generator: torch.Generator | None = None):
        super().__init__(config or PLRNNConfig())
        M = self.latent_dim
        K = normalized_positive_definite(M, generator)
        self.A = nn.Parameter(torch.diagonal(K).clone())              # (M,)
        self.W = nn.Parameter(K * (1 - torch.eye(M)))                 # (M, M)
        self.h = nn.Parameter(torch.zeros(M))                         # (M,)
        self.register_buffer("offdiag", 1 - torch.eye(M), persistent=False)

    @property
    def n_switches(self) -> int:
        return self.latent_dim

    def weights(self):
        W = self.W * self.offdiag
        return {"A": self.A, "W": W, "WT": W.T, "h": self.h}

    @staticmethod
    def _f(w, z, lam=None):
        lam = _lam(lam, z, 1)
        if lam is None and z.ndim == 2:                               # fused ops (training)
            return torch.addcmul(torch.addmm(w["h"], torch.relu(z), w["WT"]), w["A"], z)
        return w["A"] * z + _scaled(torch.relu(z) @ w["WT"], lam) + w["h"]

    @staticmethod
    def _pre(w, z):
        return z

    @staticmethod
    def _piece(w, d, lam=None):
        lam = _lam(lam, d, 2)
        A = torch.diag_embed(w["A"].expand(d.shape))                # (..., M, M)
        Ad = A + _scaled(w["W"] * d.unsqueeze(-2), lam)               # W diag(d)
        return Ad, w["h"].expand(d.shape).clone()

    @staticmethod
    def _latex(config):
        return r"z_{t+1} = A z_t + W \max(z_t, 0) + h"


# ============================================================================= shallow PLRNN
class ShallowPLRNN(ReconstructionModel):
    r"""Shallow PLRNN :math:`z_{t+1} = A z_t + W_1 \max(W_2 z_t + h_2, 0) + h_1`.

    ``A`` (M,) diagonal, ``W1`` (M, H), ``W2`` (H, M), ``h1`` (M,), ``h2`` (H,). Jacobian:
    :math:`\mathrm{diag}(A) + W_1 \mathrm{diag}(\mathbb 1[W_2 z + h_2 > 0]) W_2`. The clipped
    variant uses :math:`\max(W_2 z + h_2, 0) - \max(W_2 z, 0)` (bounded for bounded ``A``).
    Initialisation: ``A`` the diagonal of a normalised positive-definite matrix,
    ``W1 ~ U(±1/√H)``, ``W2, h2 ~ U(±1/√M)``, ``h1 = 0``.

    References:
        Hess et al., ICML (2023).
    """

    kind = "shplrnn"
    title = "shallow PLRNN"
    config_class = ShallowPLRNNConfig

    def __init__(self, config: ShallowPLRNNConfig | None = None, *,
                 generator: torch.Generator | None = None):
        super().__init__(config or ShallowPLRNNConfig())
        M, H = self.latent_dim, self.config.hidden_dim
        self.A = nn.Parameter(torch.diagonal(normalized_positive_definite(M, generator)).clone())
        self.W1 = nn.Parameter(_uniform((M, H), 1 / math.sqrt(H), generator))
        self.W2 = nn.Parameter(_uniform((H, M), 1 / math.sqrt(M), generator))
        self.h1 = nn.Parameter(torch.zeros(M))
        self.h2 = nn.Parameter(_uniform((H,), 1 / math.sqrt(M), generator))

    @property
    def n_switches(self) -> int:
        return self.config.hidden_dim * (2 if self.config.clipped else 1)

    def weights(self):
        w = {"A": self.A, "W1": self.W1, "W2": self.W2, "h1": self.h1, "h2": self.h2,
             "W1T": self.W1.T, "W2T": self.W2.T}
        if self.config.clipped:
            w["clipped"] = self.A.new_ones(())                        # a flag the pure fns see
        return w

    @staticmethod
    def _f(w, z, lam=None):
        lam = _lam(lam, z, 1)
        if lam is None and z.ndim == 2 and "clipped" not in w:       # fused ops (training)
            r = torch.relu(torch.addmm(w["h2"], z, w["W2T"]))         # (B, H)
            return torch.addcmul(torch.addmm(w["h1"], r, w["W1T"]), w["A"], z)
        u = z @ w["W2T"]                                              # (..., H)
        r = torch.relu(u + w["h2"])
        if "clipped" in w:
            r = r - torch.relu(u)
        return w["A"] * z + _scaled(r @ w["W1T"], lam) + w["h1"]

    @staticmethod
    def _pre(w, z):
        u = z @ w["W2"].T                                             # (..., H)
        if "clipped" in w:
            return torch.cat([u + w["h2"], u], -1)                    # (..., 2H)
        return u + w["h2"]

    @staticmethod
    def _piece(w, d, lam=None):
        lam = _lam(lam, d, 2)
        H = w["W2"].shape[0]
        if "clipped" in w:
            d1, d2 = d[..., :H], d[..., H:]
        else:
            d1, d2 = d, None
        W1d = w["W1"] * d1.unsqueeze(-2)                              # (..., M, H) = W1 diag(d1)
        W1e = W1d if d2 is None else W1d - w["W1"] * d2.unsqueeze(-2)
        batch = d.shape[:-1]
        M = w["A"].shape[0]
        A = torch.diag_embed(w["A"].expand(batch + (M,)))
        Ad = A + _scaled(W1e @ w["W2"], lam)                          # (..., M, M)
        c = w["h1"] + _scaled((W1d @ w["h2"].unsqueeze(-1)).squeeze(-1), lam[..., 0]
                              if isinstance(lam, torch.Tensor) else lam)
        return Ad, c.expand(batch + (M,)).clone()

    @staticmethod
    def _latex(config):
        if config.clipped:
            return (r"z_{t+1} = A z_t + W_1 \left[\max(W_2 z_t + h_2, 0) - \max(W_2 z_t, 0)"
                    r"\right] + h_1")
        return r"z_{t+1} = A z_t + W_1 \max(W_2 z_t + h_2, 0) + h_1"


# ============================================================================= AL-RNN
class ALRNN(ReconstructionModel):
    r"""Almost-linear RNN :math:`z_{t+1} = A z_t + W \phi(z_t) + h`.

    :math:`\phi(z) = (z_1, \dots, z_{M-P}, \max(z_{M-P+1}, 0), \dots, \max(z_M, 0))`: only the
    last ``P`` units are nonlinear, so there are at most :math:`2^P` linear subregions and the
    sign pattern of those units is the symbolic code of a trajectory. Jacobian:
    :math:`\mathrm{diag}(A) + W \mathrm{diag}(\phi'(z))`. Initialisation: ``A`` the diagonal
    of a normalised positive-definite matrix, :math:`W \sim 0.01\,\mathcal N(0, 1)`,
    ``h = 0``.

    References:
        Brenner et al., NeurIPS (2024).
    """

    kind = "alrnn"
    title = "AL-RNN"
    config_class = ALRNNConfig

    def __init__(self, config: ALRNNConfig | None = None, *, generator: torch.Generator | None = None):
        super().__init__(config or ALRNNConfig())
        M, P = self.latent_dim, self.config.n_relu
        self.A = nn.Parameter(torch.diagonal(normalized_positive_definite(M, generator)).clone())
        self.W = nn.Parameter(0.01 * torch.randn(M, M, generator=generator))
        self.h = nn.Parameter(torch.zeros(M))
        mask = torch.zeros(M)
        mask[M - P:] = 1.0
        self.register_buffer("relu_mask", mask, persistent=False)     # 1 on the last P units

    @property
    def n_switches(self) -> int:
        return self.config.n_relu

    def weights(self):
        return {"A": self.A, "W": self.W, "WT": self.W.T, "h": self.h, "mask": self.relu_mask}

    @staticmethod
    def _f(w, z, lam=None):
        lam = _lam(lam, z, 1)
        phi = z - w["mask"] * torch.clamp(z, max=0.0)                 # relu on the masked units
        if lam is None and z.ndim == 2:                               # fused ops (training)
            return torch.addcmul(torch.addmm(w["h"], phi, w["WT"]), w["A"], z)
        return w["A"] * z + _scaled(phi @ w["WT"], lam) + w["h"]

    @classmethod
    def _J(cls, w, z, lam=None):
        lam = _lam(lam, z, 2)
        mask = w["mask"]
        dphi = 1 - mask + mask * (z > 0).to(z.dtype)                  # (..., M) = phi'(z)
        A = torch.diag_embed(w["A"].expand(z.shape))
        return A + _scaled(w["W"] * dphi.unsqueeze(-2), lam)

    @staticmethod
    def _pre(w, z):
        P = int(w["mask"].sum())
        return z[..., z.shape[-1] - P:]                               # (..., P)

    @staticmethod
    def _piece(w, d, lam=None):
        lam = _lam(lam, d, 2)
        M = w["A"].shape[0]
        P = d.shape[-1]
        batch = d.shape[:-1]
        dphi = torch.cat([d.new_ones(batch + (M - P,)), d], -1)       # (..., M) = phi'(z)
        A = torch.diag_embed(w["A"].expand(batch + (M,)))
        Ad = A + _scaled(w["W"] * dphi.unsqueeze(-2), lam)
        return Ad, w["h"].expand(batch + (M,)).clone()

    @staticmethod
    def _latex(config):
        return (r"z_{t+1} = A z_t + W \phi(z_t) + h, \quad \phi(z)_i = "
                r"\begin{cases} z_i & i \le M - P \\ \max(z_i, 0) & i > M - P \end{cases}")


MODELS: dict[str, type[ReconstructionModel]] = {c.kind: c for c in (PLRNN, ShallowPLRNN, ALRNN)}


def build_model(config: ModelConfig | Mapping[str, Any], *,
                generator: torch.Generator | None = None) -> ReconstructionModel:
    """The model for a config (or its :meth:`as_dict`), initialised from ``generator``."""
    if isinstance(config, Mapping):
        config = config_from_dict(config)
    cls = MODELS.get(getattr(config, "kind", None))
    if cls is None:
        raise ParameterError(f"not a model config: {config!r}")
    return cls(config, generator=generator)


# ============================================================================= as a Map
class ModelMap(Map):
    """Base of the per-snapshot :class:`Map` classes built by :func:`make_model_map`.

    Each snapshot is its own class (as custom systems are) so that ``type(system)(**params)``
    rebuilds it, which :meth:`DynamicalSystem.with_params` and the compiled paths rely on.
    The weights are float64 CPU tensors, cast to the state's dtype and device on use.
    """

    origin: ClassVar[str] = "trained"
    parameters: ClassVar[tuple[Param, ...]] = (
        Param("coupling", 1.0, 0.0, 2.0,
              "scale of the nonlinear (ReLU) term; 1 is the trained model, 0 its linear part"),)
    model_class: ClassVar[type[ReconstructionModel]]
    model_config: ClassVar[Any]
    model_weights: ClassVar[dict[str, torch.Tensor]]
    _cast: ClassVar[dict]
    _meta: ClassVar[dict]

    def _w(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (like.dtype, like.device)
        w = self._cast.get(key)
        if w is None:
            w = {k: v.to(device=like.device, dtype=like.dtype) for k, v in self.model_weights.items()}
            self._cast[key] = w
        return w

    def rhs(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        return self.model_class._f(self._w(x), x, p["coupling"])

    def jacobian(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        lam = p["coupling"]
        if isinstance(lam, torch.Tensor):
            batch = torch.broadcast_shapes(x.shape[:-1], lam.shape)
            x = x.expand(batch + x.shape[-1:])
        return self.model_class._J(self._w(x), x, lam)

    def __reduce__(self):
        return (_rebuild_map, (self.model_class.kind, self.model_config.as_dict(),
                               dict(self.model_weights), self._meta, dict(self.params)))


def _rebuild_map(kind, config, weights, meta, params):
    cls = type(make_model_map(kind, config_from_dict(config), weights, **meta))
    return cls(**params)


def make_model_map(kind: str, config, weights: Mapping[str, torch.Tensor], *, x0=None,
                   variables=None, title=None, description=None) -> Map:
    """A :class:`Map` whose field is the ``kind`` model with these (float64) weights."""
    model_class = MODELS[kind]
    M = config.latent_dim
    if variables is None:
        variables = tuple(f"z{i + 1}" for i in range(M))
    variables = tuple(str(v) for v in variables)
    if len(variables) != M:
        raise ShapeError(f"{len(variables)} variable names for {M} latent units")
    x0 = torch.zeros(M, dtype=torch.float64) if x0 is None else torch.as_tensor(x0, dtype=torch.float64)
    if x0.shape != (M,) or not torch.isfinite(x0).all():
        raise ShapeError(f"x0 must be a finite ({M},) state, got shape {tuple(x0.shape)}")
    w = {k: torch.as_tensor(v).detach().to("cpu", torch.float64).clone() for k, v in weights.items()}
    cfg = ", ".join(f"{k}={v}" for k, v in config.as_dict().items() if k != "kind")
    title = title or f"Trained {model_class.title}"
    obs = (f"the first {config.obs_dim} units are the observed coordinates"
           if config.observation == "identity" else
           f"observations are a learned linear read-out of the {M} units")
    description = description or (
        f"A {model_class.title} ({cfg}) trained by dynamical-systems reconstruction, iterated as a "
        f"map on its {M}-dimensional latent state; {obs}. One iteration is one sampling step "
        f"of the data. A frozen float64 snapshot of the weights.")
    meta = {"x0": tuple(x0.tolist()), "variables": variables, "title": title,
            "description": description}
    attrs = {
        "__module__": __name__,
        "__doc__": f"Snapshot of a trained {model_class.title}.",
        "name": f"trained-{kind}",
        "title": title,
        "variables": variables,
        "default_x0": tuple(x0.tolist()),
        "latex": model_class._latex(config),
        "description": description,
        "model_class": model_class,
        "model_config": config,
        "model_weights": w,
        "_cast": {},
        "_meta": meta,
    }
    cls = type(f"Trained{model_class.__name__}", (ModelMap,), attrs)
    return cls()
