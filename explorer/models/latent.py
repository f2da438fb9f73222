r"""Latent dynamics from image frames: a convolutional autoencoder with a latent ODE or a
Koopman map (issue 13).

A :class:`LatentDynamicsModel` has three parts:

* an **encoder** :math:`E`: a window of ``frames_in`` consecutive frames, stacked as input
  channels (``frames_in``, H, W), to a latent state :math:`z \in \mathbb R^L`;
* a **decoder** :math:`D`: :math:`z` to the *last* frame of the window (H, W), in [0, 1];
* **latent dynamics**, one frame interval :math:`\Delta t` at a time: a neural ODE
  :math:`\dot z = f_\theta(z)` (an MLP) integrated by RK4 substeps
  (:func:`explorer.core.solvers.rk4_step`), or a Koopman map
  :math:`z_{t+1} = K z_t + c` (LRAN-style, with an offset so that a 2-D latent with a
  nonzero mean can still rotate; :class:`KoopmanMap`).

Why two frames by default: one frame of a mechanical system shows its configuration (the
pendulum's angle) but not its velocity, and a first-order latent ODE
:math:`\dot z = f(z)` needs the whole state: two angles at once on the unit circle of phase
space can move either way. Two consecutive frames make the velocity identifiable (finite
difference over :math:`\Delta t`), so a latent of dimension 2 can hold (angle, velocity).

Two encoders (``autoencoder``):

* ``"cae"``: a plain convolutional autoencoder, 4×4 filters with stride 2 throughout;
* ``"cpae"``: a continuity-preserving autoencoder (CpAE; Zhu, Pan & Li, ICLR 2025, arXiv
  2502.00754): the first two convolutions have *large* filters (side ``kernel``, about half
  the frame, then half that) and are trained with the continuity regulariser
  :func:`continuity_penalty`, so that the filters vary slowly with the pixel position and
  a sub-pixel motion of the scene moves the latent state by a small amount (the paper's
  δ-continuity: the encoder's output changes by O(δ) when the image moves by δ). Later
  layers are Lipschitz maps of a continuous feature map.

The regulariser (:func:`filter_continuity`) is the one of the authors' code
(``Aiqing-Zhu/CpAE``, ``AE_model.py``, ``continuous_regu``): the filter
:math:`W \in \mathbb R^{k\times k}` is zero-padded by one pixel (so that, extended by zero
outside its support, it stays continuous: its border must fade out) and placed on the
grid :math:`x_{ij} \in [0,1]^2` of :math:`(k+2)^2` points; then, averaged over the output and
input channels,

.. math::

    R(W) = \frac{2}{(k+2)^4} \sum_{(i,j),(k,l)} \big(\tilde W_{ij} - \tilde W_{kl}\big)^2\,
    \exp\!\Big(-\frac{\lVert x_{ij} - x_{kl}\rVert^2}{10}\Big),

a nonlocal (all pairs) penalty of filter changes. With :math:`\ell = 10` on the unit square
the weight only falls from 1 to :math:`e^{-0.2} = 0.82`, so :math:`R` is close to a variance
of the zero-padded filter: it shrinks every deviation from the filter's mean (and the mean
towards 0 through the border) and favours agreement of nearby entries only weakly. In
training it removes the random initial noise that leaves unregularised large filters jagged
(and their latents jumpy). The paper's text was not readable here
(only its abstract and summary); the formula above is the code released with it, and the
summary confirms the ingredients (Lipschitz early filters, a nonlocal regulariser of filter
changes, two-step training). The code applies it to every convolution with filters wider
than 10 pixels in the first three blocks; here to the two large-filter convolutions
(:attr:`LatentDynamicsModel.early_convs`).

:func:`encode_decode_attractors` iterates :math:`z \mapsto E(D(z))` (the autoencoder's latent
map, "Navigating the latent space dynamics of neural models"): its attractors carry what the
network memorised. :func:`latent_jump_ratio` and :func:`latent_state_correlation` measure the
continuity of a latent trajectory and how well it encodes the true state.

The model imports only torch and the core; :meth:`LatentDynamicsModel.as_system` wraps the
latent dynamics as a core system (:func:`explorer.models.wrap.module_flow` /
:func:`~explorer.models.wrap.module_map`), so fixed points, Lyapunov spectra and simulations
of :mod:`explorer.core` run on it.

References:
    A. Zhu, Y. Pan, Q. Li. Continuity-preserving convolutional autoencoders for learning
    continuous latent dynamical models from images. ICLR 2025, arXiv:2502.00754.
    S. Otto, C. Rowley. Linearly recurrent autoencoder networks for learning dynamics.
    SIAM J. Appl. Dyn. Syst. 18 (2019) (LRAN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError
from ..core.solvers import rk4_step

__all__ = ["AUTOENCODERS", "DYNAMICS", "MODEL_KIND", "LatentAttractors", "LatentConfig",
           "LatentDynamicsModel", "StateCorrelation", "continuity_measure",
           "continuity_penalty", "encode_decode_attractors", "filter_continuity",
           "latent_jump_ratio", "latent_jumps", "latent_state_correlation"]

#: the model kind recorded in checkpoints (registered by :mod:`explorer.training.latent`)
MODEL_KIND = "latent-dynamics"
#: encoder families: plain convolutional autoencoder, continuity-preserving autoencoder
AUTOENCODERS = ("cae", "cpae")
#: latent dynamics: neural ODE (RK4 substeps) or Koopman linear map
DYNAMICS = ("ode", "koopman")
#: the Koopman matrix is I + KOOPMAN_GAIN * A with A the trained parameter
KOOPMAN_GAIN = 10.0
#: default continuity weight of each encoder family
DEFAULT_CONTINUITY = {"cae": 0.0, "cpae": 1.0}


def _int_in(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ParameterError(f"latent model: {name} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


@dataclass(frozen=True)
class LatentConfig:
    """Configuration of a :class:`LatentDynamicsModel` (plain data; validated on construction)."""

    size: int = 32                  # frame side H = W in pixels (16..64)
    latent: int = 2                 # latent dimension L (2..8)
    frames_in: int = 2              # consecutive frames stacked as input channels (1..4)
    channels: int = 16              # base width C of the convolutions (4..64)
    autoencoder: str = "cpae"       # "cae": 4x4 filters; "cpae": large first filters + continuity
    dynamics: str = "ode"           # "ode": MLP vector field with RK4; "koopman": linear map K
    hidden: int = 64                # width of the ODE field's MLP (two hidden layers, tanh)
    dt: float = 0.1                 # frame interval (time units of the data)
    substeps: int = 2               # RK4 substeps per frame interval (ode)
    continuity: float | None = None  # weight of continuity_penalty (None: 1 for cpae, 0 for cae)
    kernel: int = 0                 # first-layer filter side of a cpae (0: about size/2, 8..16)
    koopman_angle: float = 0.3      # initial rotation of K's 2x2 blocks (rad per frame)
    seed: int = 0                   # seed of the weight initialisation

    def __post_init__(self):
        _int_in("size", self.size, 16, 64)
        _int_in("latent", self.latent, 2, 8)
        _int_in("frames_in", self.frames_in, 1, 4)
        _int_in("channels", self.channels, 4, 64)
        _int_in("hidden", self.hidden, 4, 1024)
        _int_in("substeps", self.substeps, 1, 64)
        _int_in("kernel", self.kernel, 0, 32)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ParameterError(f"latent model: seed must be an integer, got {self.seed!r}")
        if self.autoencoder not in AUTOENCODERS:
            raise ParameterError(f"latent model: unknown autoencoder {self.autoencoder!r}; "
                                 f"choose one of {', '.join(AUTOENCODERS)}")
        if self.dynamics not in DYNAMICS:
            raise ParameterError(f"latent model: unknown dynamics {self.dynamics!r}; "
                                 f"choose one of {', '.join(DYNAMICS)}")
        try:
            dt = float(self.dt)
        except (TypeError, ValueError):
            raise ParameterError(f"latent model: dt must be a number, got {self.dt!r}") from None
        if not (dt > 0 and math.isfinite(dt)):
            raise ParameterError(f"latent model: dt must be positive, got {self.dt!r}")
        object.__setattr__(self, "dt", dt)
        c = DEFAULT_CONTINUITY[self.autoencoder] if self.continuity is None else self.continuity
        try:
            c = float(c)
        except (TypeError, ValueError):
            raise ParameterError(f"latent model: continuity must be a number, got {c!r}") from None
        if not (c >= 0 and math.isfinite(c)):
            raise ParameterError(f"latent model: continuity must be >= 0, got {c!r}")
        object.__setattr__(self, "continuity", c)
        if self.kernel and self.kernel > self.size:
            raise ParameterError(f"latent model: kernel {self.kernel} exceeds the frame size "
                                 f"{self.size}")

    @property
    def first_kernel(self) -> int:
        """Side of the first convolution's filters: 4 (cae) or ``kernel`` / an even number
        near ``size/2`` between 8 and 16 (cpae)."""
        if self.autoencoder == "cae":
            return self.kernel or 4
        return self.kernel or int(min(16, max(8, 2 * round(self.size / 4))))

    @property
    def second_kernel(self) -> int:
        """Side of the second convolution's filters: 4 (cae) or half the first, at least 4,
        rounded to even (cpae)."""
        if self.autoencoder == "cae":
            return 4
        return max(4, 2 * round(self.first_kernel / 4))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in dict(d).items() if k != "kind"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"latent model: unknown config field(s) {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> LatentConfig:
        return type(self)(**{**self.as_dict(), **changes})


class LatentField(nn.Module):
    r"""The latent ODE's vector field in latent coordinates,
    :math:`f(z) = s \odot g\big((z - m)/s\big)` with :math:`g` an MLP (tanh) and the buffers
    :math:`m, s` (shift, scale) set from the data's latent trajectory before the field is fit
    (:meth:`LatentDynamicsModel.set_latent_scale`), so the MLP sees O(1) inputs whatever the
    encoder's scale. The Jacobian is similar to :math:`g'`, so eigenvalues do not depend on
    :math:`m, s`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, dim))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:            # (..., L) -> (..., L)
        u = (z - self.shift) / self.scale
        net = self.net
        if isinstance(net, nn.Sequential) and len(net) == 5:
            # the MLP written out: the same arithmetic without five module calls (a free run
            # calls the field 4 x substeps times per frame)
            a, b, c = net[0], net[2], net[4]
            h = torch.tanh(nn.functional.linear(u, a.weight, a.bias))
            h = torch.tanh(nn.functional.linear(h, b.weight, b.bias))
            return self.scale * nn.functional.linear(h, c.weight, c.bias)
        return self.scale * net(u)


class KoopmanMap(nn.Module):
    r"""The affine Koopman step :math:`z \mapsto K z + c`, :math:`K = I + \gamma A`,
    :math:`c = \gamma b` with the trained
    parameters ``A`` and ``b`` (K starts as rotations by ``angle`` of each 2x2 block plus
    1e-3 noise, c at 0) and the fixed
    gain :math:`\gamma` = :data:`KOOPMAN_GAIN`: Adam moves each weight by about the learning
    rate per step, so the gain lets K turn by a frame's rotation angle (0.1-0.5 rad) within
    tens of steps instead of hundreds. The offset c lets the latent have a nonzero mean
    without spending an eigenvalue 1 of K on it (a 2-D latent then holds one rotation pair);
    the eigenvalues of K are those of the linear part, the fixed point is
    :math:`(I - K)^{-1} c`."""

    def __init__(self, dim: int, generator: torch.Generator, angle: float = 0.0):
        super().__init__()
        R = torch.eye(dim)
        c, s = math.cos(angle), math.sin(angle)
        for i in range(0, dim - 1, 2):                  # rotation blocks by ``angle``
            R[i:i + 2, i:i + 2] = torch.tensor([[c, -s], [s, c]])
        A = (R - torch.eye(dim)) / KOOPMAN_GAIN
        self.A = nn.Parameter(A + 1e-3 / KOOPMAN_GAIN * torch.randn(dim, dim, generator=generator))
        self.b = nn.Parameter(torch.zeros(dim))

    @property
    def K(self) -> torch.Tensor:
        """The Koopman matrix (L, L)."""
        return torch.eye(self.A.shape[0], dtype=self.A.dtype, device=self.A.device) + \
            KOOPMAN_GAIN * self.A

    @torch.no_grad()
    def set_map(self, K: torch.Tensor, c: torch.Tensor | None = None) -> None:
        """Set K (L, L) and the offset c (L,) (e.g. from a least-squares fit)."""
        eye = torch.eye(self.A.shape[0], dtype=torch.float64)
        self.A.copy_(((K.double().cpu() - eye) / KOOPMAN_GAIN).to(self.A))
        if c is not None:
            self.b.copy_((c.double().cpu() / KOOPMAN_GAIN).to(self.b))

    def forward(self, z: torch.Tensor) -> torch.Tensor:            # (..., L) -> (..., L)
        return z @ self.K.T + KOOPMAN_GAIN * self.b


def _init_module(module: nn.Module, generator: torch.Generator) -> None:
    """Seeded PyTorch-default initialisation (uniform ±1/sqrt(fan_in)) of every conv/linear."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight
            if isinstance(m, nn.ConvTranspose2d):
                fan_in = w.shape[0] * w[0, 0].numel()
            else:
                fan_in = w[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                w.copy_((torch.rand(w.shape, generator=generator) * 2 - 1) * bound)
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=generator) * 2 - 1) * bound)


class LatentDynamicsModel(nn.Module):
    r"""Encoder, decoder and latent dynamics of frames (see the module docstring).

    Shapes: frames (T, H, W); windows (N, F, H, W) with ``F = frames_in``; latents (N, L).
    The latent of window ``i`` (frames ``i .. i+F-1``) belongs to frame ``i + F - 1``.

    Attributes:
        config: the :class:`LatentConfig`.
        kind: ``"latent-dynamics"`` (the checkpoint's model kind).
        encoder_conv, encoder_head, decoder_head, decoder_conv: the autoencoder's layers
            (``encoder_conv[0]`` is the first convolution, the one
            :func:`continuity_penalty` regularises).
        vector_field (ode) or koopman (koopman): the latent dynamics.
    """

    kind = MODEL_KIND

    def __init__(self, config: LatentConfig | None = None, **kw):
        super().__init__()
        if config is None:
            config = LatentConfig(**kw)
        elif kw:
            config = config.replace(**kw)
        self.config = config
        c = config
        C, F, L, S = c.channels, c.frames_in, c.latent, c.size
        k1 = c.first_kernel
        act = nn.SiLU
        # encoder: (N, F, S, S) -> (N, C, S/2, S/2) -> (N, 2C, S/4, S/4) -> (N, 2C, S/8, S/8)
        k2 = c.second_kernel
        self.encoder_conv = nn.Sequential(
            nn.Conv2d(F, C, k1, stride=2, padding=(k1 - 2) // 2), act(),
            nn.Conv2d(C, 2 * C, k2, stride=2, padding=(k2 - 2) // 2), act(),
            nn.Conv2d(2 * C, 2 * C, 4, stride=2, padding=1), act())
        with torch.no_grad():
            n_flat = self.encoder_conv(torch.zeros(1, F, S, S)).numel()
        self.encoder_head = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, 4 * C), act(),
                                          nn.Linear(4 * C, L))
        # decoder: (N, L) -> (N, 2C, a, a) -> (N, 2C, 2a, 2a) -> (N, C, 4a, 4a) -> (N, 1, 8a, 8a)
        self._a = a = -(-S // 8)
        self.decoder_head = nn.Sequential(nn.Linear(L, 4 * C), act(),
                                          nn.Linear(4 * C, 2 * C * a * a), act())
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * C, 2 * C, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(2 * C, C, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(C, 1, 4, stride=2, padding=1))
        gen = torch.Generator().manual_seed(int(c.seed))
        for part in (self.encoder_conv, self.encoder_head, self.decoder_head, self.decoder_conv):
            _init_module(part, gen)
        if c.dynamics == "ode":
            self.vector_field = LatentField(L, c.hidden)
            _init_module(self.vector_field, gen)
            with torch.no_grad():                       # start near the zero field
                self.vector_field.net[-1].weight.mul_(0.1)
                self.vector_field.net[-1].bias.zero_()
        else:
            self.koopman = KoopmanMap(L, gen, angle=c.koopman_angle)

    # ------------------------------------------------------------------ autoencoder
    @property
    def first_conv(self) -> nn.Conv2d:
        """The first convolution."""
        return self.encoder_conv[0]

    @property
    def early_convs(self) -> tuple[nn.Conv2d, ...]:
        """The convolutions :func:`continuity_penalty` smooths: the first, and the second
        when its filters are large (side >= 8, a cpae's)."""
        second = self.encoder_conv[2]
        return (self.encoder_conv[0],) + ((second,) if second.kernel_size[0] >= 8 else ())

    def windows(self, frames: torch.Tensor) -> torch.Tensor:
        """Sliding windows of ``frames_in`` consecutive frames: (T, H, W) -> (T-F+1, F, H, W)."""
        F = self.config.frames_in
        if frames.ndim != 3:
            raise ShapeError(f"frames must be (T, H, W), got {tuple(frames.shape)}")
        if frames.shape[0] < F:
            raise ShapeError(f"{frames.shape[0]} frames are fewer than frames_in = {F}")
        return frames.unfold(0, F, 1).permute(0, 3, 1, 2)           # (T-F+1, F, H, W)

    def _check_frames(self, x: torch.Tensor, lead: int) -> None:
        S = self.config.size
        if x.ndim < lead or tuple(x.shape[-2:]) != (S, S):
            raise ShapeError(f"frames of the model are {S}x{S}, got shape {tuple(x.shape)}")

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """Latent states of windows (..., F, H, W) -> (..., L)."""
        self._check_frames(windows, 3)
        F = self.config.frames_in
        if windows.shape[-3] != F:
            raise ShapeError(f"windows must have frames_in = {F} frames at dim -3, "
                             f"got shape {tuple(windows.shape)}")
        lead = windows.shape[:-3]
        x = windows.reshape(-1, *windows.shape[-3:])                 # (N, F, H, W)
        z = self.encoder_head(self.encoder_conv(x))                  # (N, L)
        return z.reshape(*lead, self.config.latent)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoded frames (..., L) -> (..., H, W)."""
        S, a, C = self.config.size, self._a, self.config.channels
        lead = z.shape[:-1]
        h = self.decoder_head(z.reshape(-1, z.shape[-1]))             # (N, 2C a a)
        img = self.decoder_conv(h.reshape(-1, 2 * C, a, a))           # (N, 1, 8a, 8a)
        return img[:, 0, :S, :S].reshape(*lead, S, S)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded frames (the last frame of the window) (..., L) -> (..., H, W) in [0, 1]."""
        if z.shape[-1] != self.config.latent:
            raise ShapeError(f"latent states must be (..., {self.config.latent}), "
                             f"got {tuple(z.shape)}")
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the last frame of each window: (..., F, H, W) -> (..., H, W)."""
        return self.decode(self.encode(windows))

    def encode_decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""The autoencoder's latent map :math:`z \mapsto E(D(z))`, (..., L) -> (..., L).

        :math:`D(z)` is one frame; the encoder needs ``frames_in`` of them, so it sees the
        decoded frame repeated ``frames_in`` times: a *still* scene (zero velocity). For
        ``frames_in = 1`` this is exactly :math:`E(D(z))`."""
        img = self.decode(z)                                          # (..., H, W)
        win = img.unsqueeze(-3).expand(*img.shape[:-2], self.config.frames_in, *img.shape[-2:])
        return self.encode(win)

    def encode_decode_field(self, z: torch.Tensor) -> torch.Tensor:
        r"""The latent field :math:`E(D(z)) - z` (see :meth:`encode_decode`)."""
        return self.encode_decode(z) - z

    # ------------------------------------------------------------------ dynamics
    def field(self, z: torch.Tensor) -> torch.Tensor:
        r"""The latent vector field: :math:`f(z)` (ode) or :math:`((K - I)z + c)/\Delta t`,
        the equivalent discrete field of the Koopman map (koopman); (..., L) -> (..., L)."""
        if self.config.dynamics == "ode":
            return self.vector_field(z)
        return (self.koopman(z) - z) / self.config.dt

    def step(self, z: torch.Tensor) -> torch.Tensor:
        """Advance latent states by one frame interval: ``substeps`` RK4 steps of the field
        (ode) or ``K z + c`` (koopman); (..., L) -> (..., L)."""
        if self.config.dynamics == "koopman":
            return self.koopman(z)
        h = self.config.dt / self.config.substeps
        for _ in range(self.config.substeps):
            z = rk4_step(self.vector_field, z, h)
        return z

    def rollout(self, z0: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` steps from ``z0`` (..., L): (n+1, ..., L), ``z0`` first."""
        n = int(n)
        if n < 0:
            raise ParameterError(f"rollout steps must be >= 0, got {n}")
        out = [z0]
        for _ in range(n):
            out.append(self.step(out[-1]))
        return torch.stack(out)

    @torch.no_grad()
    def free_run(self, z0: torch.Tensor, n: int) -> torch.Tensor:
        """:meth:`rollout` of one state without gradients, in float64 on the CPU: (n+1, L).

        The same arithmetic (RK4 substeps of the field, or ``K z + c``) in numpy, whose
        per-call cost on states this small is a few microseconds instead of the tens of an
        eager torch op (a 200-frame ODE run: ~35 ms instead of ~250 ms); falls back to
        :meth:`rollout` for a field that is not the standard MLP."""
        n = int(n)
        if n < 0:
            raise ParameterError(f"rollout steps must be >= 0, got {n}")
        x = torch.as_tensor(z0).detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        if x.shape != (self.config.latent,):
            raise ShapeError(f"a start state must be ({self.config.latent},), got {tuple(z0.shape)}")
        out = np.empty((n + 1, x.size))
        out[0] = x
        if self.config.dynamics == "koopman":
            K = self.koopman.K.detach().double().cpu().numpy()
            c = (KOOPMAN_GAIN * self.koopman.b).detach().double().cpu().numpy()
            for i in range(n):
                x = K @ x + c
                out[i + 1] = x
            return torch.from_numpy(out)
        vf = self.vector_field
        if not (isinstance(vf.net, nn.Sequential) and len(vf.net) == 5):
            p = next(self.parameters())
            return self.rollout(torch.as_tensor(z0).to(p), n).detach().double().cpu()
        W = [(layer.weight.detach().double().cpu().numpy(), layer.bias.detach().double().cpu().numpy())
             for layer in (vf.net[0], vf.net[2], vf.net[4])]
        m = vf.shift.detach().double().cpu().numpy()
        s = vf.scale.detach().double().cpu().numpy()
        (A1, b1), (A2, b2), (A3, b3) = W

        def f(y):
            h = np.tanh(A1 @ ((y - m) / s) + b1)
            h = np.tanh(A2 @ h + b2)
            return s * (A3 @ h + b3)

        h = self.config.dt / self.config.substeps
        for i in range(n):
            for _ in range(self.config.substeps):
                k1 = f(x)
                k2 = f(x + 0.5 * h * k1)
                k3 = f(x + 0.5 * h * k2)
                k4 = f(x + h * k3)
                x = x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
            if not np.isfinite(x).all():
                out[i + 1:] = np.nan
                break
            out[i + 1] = x
        return torch.from_numpy(out)

    @torch.no_grad()
    def set_latent_scale(self, z: torch.Tensor) -> None:
        """Set the ODE field's shift and scale from a latent trajectory (T, L) (its mean and
        the root-mean-square of its standard deviations, one scale for all coordinates so
        that rotations stay rotations). No effect for the Koopman map."""
        if self.config.dynamics != "ode":
            return
        z = z.reshape(-1, self.config.latent).to(self.vector_field.shift)
        self.vector_field.shift.copy_(z.mean(0))
        s = float(z.std(0).pow(2).mean().sqrt()) if len(z) > 1 else 1.0
        self.vector_field.scale.fill_(s if math.isfinite(s) and s > 1e-8 else 1.0)

    def koopman_eigenvalues(self) -> torch.Tensor | None:
        """Eigenvalues of K (complex, (L,), sorted by decreasing |angle|, then modulus), or
        ``None`` for an ODE model. For an oscillation of angular frequency ω sampled at Δt
        they lie at :math:`e^{\\pm i\\omega\\Delta t}`."""
        if self.config.dynamics != "koopman":
            return None
        ev = torch.linalg.eigvals(self.koopman.K.detach().double().cpu())
        order = sorted(range(len(ev)), key=lambda i: (-abs(float(ev[i].angle())),
                                                      -float(ev[i].abs()), -float(ev[i].imag)))
        return ev[order]

    def as_system(self, *, x0=None, data=None, title: str | None = None):
        """The latent dynamics as a core system (a float64 snapshot): a flow of the field
        :math:`f` (ode; default ``dt`` one RK4 substep) or a map of :math:`K` (koopman).

        Args:
            x0: default initial latent state (L,); default ``data``'s first state.
            data: a latent trajectory (T, L) (for ``x0``).
        """
        from .wrap import module_flow, module_map   # noqa: PLC0415 (wrap imports the core only)

        L = self.config.latent
        names = tuple(f"z{i + 1}" for i in range(L))
        if self.config.dynamics == "ode":
            return module_flow(self.vector_field, dim=L, x0=x0, data=data, variables=names,
                               dt=self.config.dt / self.config.substeps,
                               title=title or f"latent ODE ({self.config.autoencoder})",
                               name="latent-ode")
        return module_map(self.koopman, dim=L, x0=x0, data=data, variables=names,
                          title=title or f"Koopman map ({self.config.autoencoder})",
                          name="latent-koopman")


# ---------------------------------------------------------------------- continuity regulariser
_KERNELS: dict = {}


def _pair_kernel(kh: int, kw: int, length: float, device) -> torch.Tensor:
    """exp(-|x_a - x_b|^2 / length) over the (kh kw) grid points of [0, 1]^2 (cached)."""
    key = (kh, kw, length, str(device))
    k = _KERNELS.get(key)
    if k is None:
        ys = torch.linspace(0.0, 1.0, kh, dtype=torch.float64)
        xs = torch.linspace(0.0, 1.0, kw, dtype=torch.float64)
        Y, X = torch.meshgrid(ys, xs, indexing="ij")                  # (kh, kw)
        P = torch.stack([Y.reshape(-1), X.reshape(-1)], -1)           # (n, 2)
        k = torch.exp(-torch.cdist(P, P).pow(2) / length).to(device)  # (n, n)
        if len(_KERNELS) < 64:
            _KERNELS[key] = k
    return k


def filter_continuity(weight: torch.Tensor, *, pad: bool = True,
                      length: float = 10.0) -> torch.Tensor:
    r"""The CpAE nonlocal regulariser of one convolution's filters ``weight`` (O, I, kh, kw):

    .. math::

        R(W) = 2\,\mathrm{mean}_{o,c,(i,j),(k,l)}\,\big(\tilde W_{ocij} - \tilde W_{ockl}\big)^2
        \exp\!\big(-\lVert x_{ij} - x_{kl}\rVert^2/\ell\big)

    with :math:`\tilde W` the filters zero-padded by one pixel (``pad=True``, as in the
    authors' code: the border must fade to 0 for the filter, extended by zero, to be
    continuous) and :math:`x_{ij}` a uniform grid on :math:`[0, 1]^2`, :math:`\ell = 10`.
    ``pad=False`` compares the filter's own entries only (a constant filter then costs 0).
    """
    if weight.ndim != 4:
        raise ShapeError(f"filters must be (O, I, kh, kw), got {tuple(weight.shape)}")
    w = weight.double()                     # float64: the closed form below subtracts sums
    w = torch.nn.functional.pad(w, (1, 1, 1, 1)) if pad else w
    kh, kw = w.shape[-2:]
    kern = _pair_kernel(kh, kw, float(length), w.device)              # (n, n)
    v = w.reshape(-1, kh * kw)                                        # (O I, n)
    # sum_{a,b} k_ab (v_a - v_b)^2 = 2 (sum_a v_a^2 d_a - v^T K v), d_a = sum_b k_ab
    d = kern.sum(1)
    quad = (v * v * d).sum(1) - ((v @ kern) * v).sum(1)               # (O I,)
    return (2.0 * (2.0 * quad).mean() / (kh * kw) ** 2).to(weight.dtype)


def continuity_penalty(model: LatentDynamicsModel) -> torch.Tensor:
    r"""The CpAE continuity regulariser of a model's early filters: the sum of
    :func:`filter_continuity` over :attr:`~LatentDynamicsModel.early_convs` (a ``"cpae"``'s
    two large-filter convolutions; a ``"cae"``'s first, 4×4, whose default weight
    ``config.continuity`` is 0). Unweighted; the training loss adds
    ``config.continuity ×`` this."""
    return sum(filter_continuity(conv.weight) for conv in model.early_convs)


# ---------------------------------------------------------------------- measures
def latent_jumps(z: torch.Tensor) -> torch.Tensor:
    r"""Per-frame latent steps :math:`\lVert z_{t+1} - z_t\rVert` of a trajectory (T, L) -> (T-1,)."""
    z = torch.as_tensor(z)
    if z.ndim != 2 or len(z) < 2:
        raise ShapeError(f"a latent trajectory must be (T, L) with T >= 2, got {tuple(z.shape)}")
    return (z[1:] - z[:-1]).double().norm(dim=-1)


def latent_jump_ratio(z: torch.Tensor) -> float:
    r"""The largest latent step per frame relative to the trajectory's spread:

    .. math:: \max_t \lVert z_{t+1} - z_t\rVert \Big/ \sqrt{\textstyle\sum_i \mathrm{Var}_t\, z_i}

    (the spread is the root-mean-square distance of the states from their mean: the radius
    of a circular orbit, ``(b - a)/√12`` for a uniform sweep of ``[a, b]``). Scale-free: a
    continuous encoding of a smooth motion sampled finely gives a small value (a circle
    sampled at N points per turn: 2π/N); a discontinuous one a value of order 1."""
    z = torch.as_tensor(z).double()
    jumps = latent_jumps(z)
    spread = float(z.var(0, unbiased=False).sum().sqrt())
    if not spread > 0:
        return math.inf if float(jumps.max()) > 0 else 0.0
    return float(jumps.max()) / spread


#: another name of :func:`latent_jump_ratio`
continuity_measure = latent_jump_ratio


@dataclass(frozen=True)
class StateCorrelation:
    """How well latent states encode the true state variables.

    Attributes:
        best: (D,) for each true variable the largest |Pearson r| with one latent coordinate.
        best_index: (D,) that coordinate.
        linear: (D,) the multiple correlation coefficient of a least-squares linear fit
            (with intercept) of the variable from all latent coordinates, sqrt(R²).
        variables: names of the true variables.
    """

    best: tuple[float, ...]
    best_index: tuple[int, ...]
    linear: tuple[float, ...]
    variables: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latent_state_correlation(z: torch.Tensor, states: torch.Tensor, *,
                             variables: tuple[str, ...] | None = None) -> StateCorrelation:
    """Correlations of a latent trajectory (T, L) with the true states (T, D) at the same
    times (see :class:`StateCorrelation`). A constant latent coordinate gives r = 0; a
    constant true variable (the resting y of a square moving along x) has nothing to encode:
    its ``best`` and ``linear`` are NaN."""
    z = torch.as_tensor(z).detach().double().cpu()
    s = torch.as_tensor(states).detach().double().cpu()
    if s.ndim == 1:
        s = s[:, None]
    if z.ndim != 2 or s.ndim != 2 or len(z) != len(s) or len(z) < 3:
        raise ShapeError(f"latents (T, L) and states (T, D) of the same T >= 3 needed, got "
                         f"{tuple(z.shape)} and {tuple(s.shape)}")
    zc, sc = z - z.mean(0), s - s.mean(0)
    zn, sn = zc.norm(dim=0), sc.norm(dim=0)
    r = (sc.T @ zc) / (sn[:, None] * zn[None, :]).clamp_min(1e-300)  # (D, L)
    r = torch.where((sn[:, None] > 1e-12) & (zn[None, :] > 1e-12), r, torch.zeros_like(r))
    best, idx = r.abs().max(1)
    A = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)       # (T, L+1)
    coef = torch.linalg.lstsq(A, s).solution                          # (L+1, D)
    res = s - A @ coef
    r2 = 1.0 - res.pow(2).sum(0) / sn.pow(2).clamp_min(1e-300)
    lin = torch.where(sn > 1e-12, r2.clamp(0.0, 1.0).sqrt(), torch.full_like(r2, math.nan))
    best = torch.where(sn > 1e-12, best, torch.full_like(best, math.nan))
    names = tuple(variables) if variables is not None else tuple(f"x{i + 1}" for i in range(s.shape[1]))
    return StateCorrelation(tuple(float(v) for v in best), tuple(int(i) for i in idx),
                            tuple(float(v) for v in lin), names)


# ---------------------------------------------------------------------- encode-decode attractors
@dataclass(frozen=True)
class LatentAttractors:
    r"""Attractors of the autoencoder's latent map :math:`z \mapsto E(D(z))`.

    Attributes:
        points: (A, L) the attractors (the mean end point of each cluster), largest basin first.
        basin: (A,) fraction of the converged starts that end at each attractor.
        labels: (N,) attractor index of each start (``-1``: did not converge).
        starts: (N, L) the starting grid; ends: (N, L) where the iteration ended.
        converged: (N,) whether the last iteration moved less than ``tol``.
        iters: iterations run.
    """

    points: torch.Tensor
    basin: torch.Tensor
    labels: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    converged: torch.Tensor
    iters: int


@torch.no_grad()
def encode_decode_attractors(model: LatentDynamicsModel, box, *, n: int = 12,
                             iters: int = 100, tol: float | None = None,
                             radius: float | None = None) -> LatentAttractors:
    r"""Iterate :math:`z \mapsto E(D(z))` (:meth:`~LatentDynamicsModel.encode_decode`) from a
    grid of starts and cluster where the iterations end.

    Args:
        box: ``(low, high)`` latent bounds (L,) each; the grid spans the first two latent
            coordinates with ``n × n`` points (the other coordinates at the box centre).
        n: grid points per axis.
        iters: iterations of the map.
        tol: a start counts as converged when its last step is below ``tol`` (default
            1e-3 × the box diagonal).
        radius: end points closer than this join one cluster (default 5e-2 × the box
            diagonal).
    """
    L = model.config.latent
    lo = torch.as_tensor(box[0], dtype=torch.float64).reshape(-1)
    hi = torch.as_tensor(box[1], dtype=torch.float64).reshape(-1)
    if lo.numel() != L or hi.numel() != L:
        raise ShapeError(f"box bounds must have {L} entries each")
    n = _int_in("n", n, 1, 200)
    diag = float((hi - lo).norm())
    tol = 1e-3 * diag if tol is None else float(tol)
    radius = 5e-2 * diag if radius is None else float(radius)
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    g0, g1 = torch.meshgrid(lo[0] + (hi[0] - lo[0]) * u, lo[1] + (hi[1] - lo[1]) * u,
                            indexing="ij")
    starts = ((lo + hi) / 2).repeat(n * n, 1)                         # (N, L)
    starts[:, 0], starts[:, 1] = g0.reshape(-1), g1.reshape(-1)
    p = next(model.parameters())
    z = starts.to(p)
    last = z
    for _ in range(int(iters)):
        last, z = z, model.encode_decode(z)
    ends = z.double().cpu()
    moved = (z - last).double().cpu().norm(dim=-1)
    converged = torch.isfinite(ends).all(-1) & (moved < tol)
    centres: list[torch.Tensor] = []
    members: list[list[int]] = []
    labels = torch.full((len(ends),), -1, dtype=torch.long)
    for i in torch.nonzero(converged).flatten().tolist():
        for a, c in enumerate(centres):
            if float((ends[i] - c).norm()) < radius:
                members[a].append(i)
                labels[i] = a
                break
        else:
            centres.append(ends[i])
            members.append([i])
            labels[i] = len(centres) - 1
    n_conv = max(1, int(converged.sum()))
    order = sorted(range(len(centres)), key=lambda a: -len(members[a]))
    remap = torch.full((len(centres) + 1,), -1, dtype=torch.long)
    for new, old in enumerate(order):
        remap[old] = new
    labels = torch.where(labels >= 0, remap[labels.clamp_min(0)], labels)
    points = torch.stack([ends[members[a]].mean(0) for a in order]) if order else \
        torch.zeros(0, L, dtype=torch.float64)
    basin = torch.tensor([len(members[a]) / n_conv for a in order], dtype=torch.float64)
    return LatentAttractors(points, basin, labels, starts, ends, converged, int(iters))
