r"""Image sequences of moving objects: the data of the latent-dynamics-from-frames page.

Pure torch, batched over time with distance fields (no loop over pixels or frames); frames
are float32 in [0, 1] on any device. Geometry lives in a box :math:`[-1, 1]^2` with x to the
right and y up; a frame of ``size`` pixels maps it onto pixel coordinates (column, row)
whose pixel *centres* are the integers ``0 .. size - 1``:

.. math:: c = \tfrac{x + 1}{2}\,S - \tfrac12, \qquad r = \tfrac{1 - y}{2}\,S - \tfrac12 .

* :func:`render_blobs`: a Gaussian blob or a hard-edged square at given box positions.
* :func:`render_scene`: a whole seeded scene (a pendulum, a damped pendulum, a mass on a
  spring, two bodies on a ring, a blob driven by any 2D/3D system of the library, a square
  moving by less than a pixel per frame) as a :class:`FrameSet`, with the simulated states
  as ground truth. ``render_scene(**frameset.settings)`` rebuilds it exactly.
* :func:`centre_of_mass`: the intensity-weighted centre of frames, in pixels.

Sizes are checked before anything is allocated (:class:`~explorer.core.errors.ParameterError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import ParameterError

#: the scenes :func:`render_scene` draws
SCENES = ("pendulum", "damped-pendulum", "spring", "two-bodies", "blob", "moving-square")
#: blob shapes of :func:`render_blobs`
SHAPES = ("gaussian", "square")
#: frame side in pixels: inclusive range
MIN_SIZE, MAX_SIZE = 16, 64
#: most frames in one scene
MAX_FRAMES = 20_000
#: most pixel values (T * H * W) in one scene
MAX_VALUES = 20_000_000
#: default frame side of each scene (the moving square is MNIST-sized)
DEFAULT_SIZE = {"moving-square": 28}

#: the pendulum's pivot and drawn rod length (box units); the bob is at
#: ``PIVOT + PENDULUM_LENGTH * (sin theta, -cos theta)``
PENDULUM_PIVOT = (0.0, 0.0)
PENDULUM_LENGTH = 0.7
#: radius of the ring of the two-bodies scene (box units, centred at the origin)
RING_RADIUS = 0.7
#: the spring scene: the wall's x, the block's rest position, box units per unit of MassSpring's x
SPRING_WALL = -0.9
SPRING_REST = 0.2
SPRING_SCALE = 0.5
#: the moving square's default motion: x = A sin(2 pi t / P + phase), y = Ay sin(2 pi t / Py + phase_y)
SQUARE_MOTION = {"amplitude": 0.6, "period": 4.0, "amplitude_y": 0.0, "period_y": 9.0}


# ----------------------------------------------------------------------------- geometry
def to_pixels(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Box coordinates (..., 2) (x right, y up, in [-1, 1]) -> pixel coordinates (column, row)."""
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([(x + 1.0) * (0.5 * size) - 0.5, (1.0 - y) * (0.5 * size) - 0.5], -1)


def _grid(size: int, device, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates 0 .. size - 1, (size,)."""
    return torch.arange(size, device=device, dtype=dtype)


def _coverage(signed: torch.Tensor) -> torch.Tensor:
    """Antialiased coverage of a pixel from the signed distance (pixels) to a shape's edge,
    positive inside: a linear ramp one pixel wide, 0.5 on the edge."""
    return (signed + 0.5).clamp(0.0, 1.0)


def _disk(cr: torch.Tensor, radius: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Antialiased disks of ``radius`` pixels centred at ``cr`` (..., 2) -> (..., H, W)."""
    du = u - cr[..., 0, None, None]                                   # (..., 1, W)
    dv = v - cr[..., 1, None, None]                                   # (..., H, 1)
    return _coverage(radius - torch.sqrt(du * du + dv * dv))


def _segment(a: torch.Tensor, b: torch.Tensor, half_width: float, u: torch.Tensor,
             v: torch.Tensor) -> torch.Tensor:
    """Antialiased thick segments from ``a`` to ``b`` (..., 2) pixel coords -> (..., H, W)."""
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    ex, ey = b[..., 0, None, None] - ax, b[..., 1, None, None] - ay  # segment vector
    pu, pv = u - ax, v - ay                                           # pixel - a
    L2 = (ex * ex + ey * ey).clamp_min(1e-12)
    s = ((pu * ex + pv * ey) / L2).clamp(0.0, 1.0)                    # (..., H, W) projection
    dx, dy = pu - s * ex, pv - s * ey
    return _coverage(half_width - torch.sqrt(dx * dx + dy * dy))


def render_blobs(xy: torch.Tensor, size: int, *, shape: str = "gaussian",
                 width: float | None = None) -> torch.Tensor:
    r"""One blob per position: (..., 2) box coordinates -> (..., size, size) float32 frames.

    * ``"gaussian"``: :math:`I = \exp(-\lVert p - c\rVert^2 / 2\sigma^2)` with
      ``sigma = width`` pixels (default ``size / 16``), peak 1 at the centre ``c``.
    * ``"square"``: a hard-edged square of side ``width`` pixels (default ``size / 7``): a
      pixel is lit (1) iff its centre lies inside, ``-w/2 <= p - c < w/2`` on both axes, so
      sub-pixel motion changes nothing until an edge crosses a pixel centre.

    Runs on ``xy``'s device; separable (an outer product of two 1-D profiles).
    """
    _check_size(size)
    shape = _check_shape(shape)
    w = _default_width(shape, size) if width is None else _check_width(width)
    xy = torch.as_tensor(xy)
    if xy.ndim == 0 or xy.shape[-1] != 2:
        raise ParameterError(f"blob positions must be (..., 2), got shape {tuple(xy.shape)}")
    cr = to_pixels(xy.to(torch.float64), size)                        # (..., 2) pixels
    g = _grid(size, xy.device, torch.float64)                          # (S,)
    du = g - cr[..., 0, None]                                          # (..., W)
    dv = g - cr[..., 1, None]                                          # (..., H)
    if shape == "gaussian":
        pu, pv = torch.exp(-0.5 * (du / w) ** 2), torch.exp(-0.5 * (dv / w) ** 2)
    else:
        h = 0.5 * w
        pu = ((du >= -h) & (du < h)).to(torch.float64)
        pv = ((dv >= -h) & (dv < h)).to(torch.float64)
    return (pv[..., :, None] * pu[..., None, :]).to(torch.float32)    # (..., H, W)


def centre_of_mass(frames: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre (column, row) in pixels of (..., H, W) frames -> (..., 2).

    NaN for an all-dark frame. Computed in float64.
    """
    f = torch.as_tensor(frames).to(torch.float64)
    H, W = f.shape[-2:]
    total = f.sum((-2, -1))                                            # (...)
    col = (f.sum(-2) * _grid(W, f.device, torch.float64)).sum(-1)      # (...)
    row = (f.sum(-1) * _grid(H, f.device, torch.float64)).sum(-1)
    out = torch.stack([col, row], -1) / total[..., None]
    return torch.where(total[..., None] > 0, out, torch.full_like(out, math.nan))


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class FrameSet:
    """An image sequence with what is known about it.

    Attributes:
        frames: (T, H, W) float32 in [0, 1].
        states: (T, D) float64 ground-truth states of the simulated system, ``None`` for
            uploads.
        dt: time between frames (1 for maps and unknown sampling).
        variables: names of the D state variables (``()`` when there are no states).
        scene: one of :data:`SCENES`, or ``"upload"``.
        settings: plain data; ``render_scene(**settings)`` rebuilds a rendered set exactly
            (an upload's holds its file name and ``dt``).
        positions: (T, 2) float64 centre (column, row) in pixels of the drawn object (the
            blob, the square, the pendulum's bob, the spring's block, the ring's first body),
            ``None`` for uploads.
    """

    frames: torch.Tensor
    states: torch.Tensor | None = None
    dt: float = 1.0
    variables: tuple[str, ...] = ()
    scene: str = "upload"
    settings: dict[str, Any] = field(default_factory=dict)
    positions: torch.Tensor | None = None

    def __post_init__(self):
        if self.frames.ndim != 3:
            raise ParameterError(f"frames must be (T, H, W), got shape {tuple(self.frames.shape)}")
        T = self.frames.shape[0]
        for name, a, d in (("states", self.states, None), ("positions", self.positions, 2)):
            if a is not None and (a.ndim != 2 or a.shape[0] != T or (d and a.shape[1] != d)):
                raise ParameterError(f"{name} of shape {tuple(a.shape)} do not match {T} frames")

    @property
    def length(self) -> int:
        """T, the number of frames."""
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W), the frame's height and width in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def rendered(self) -> bool:
        """Whether ``render_scene(**settings)`` rebuilds the frames (else they are an upload)."""
        return bool(self.settings) and self.scene != "upload"

    def as_dict(self) -> dict[str, Any]:
        """Plain data and CPU tensors (loadable with ``torch.load(weights_only=True)``)."""
        def cpu(t):
            return None if t is None else t.detach().cpu().clone()
        return {"frames": cpu(self.frames), "states": cpu(self.states), "dt": float(self.dt),
                "variables": list(self.variables), "scene": self.scene,
                "settings": plain_data(self.settings), "positions": cpu(self.positions)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrameSet:
        def t(key, dtype):
            return None if d.get(key) is None else torch.as_tensor(d[key], dtype=dtype)
        return cls(frames=torch.as_tensor(d["frames"], dtype=torch.float32),
                   states=t("states", torch.float64), dt=float(d["dt"]),
                   variables=tuple(str(v) for v in d.get("variables", ())),
                   scene=str(d.get("scene", "upload")), settings=dict(d.get("settings") or {}),
                   positions=t("positions", torch.float64))


def plain_data(x):
    """Settings as plain containers (lists for tuples, tensors and numpy scalars as numbers)
    for checkpoints and JSON."""
    if isinstance(x, Mapping):
        return {str(k): plain_data(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_data(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


# ----------------------------------------------------------------------------- validation
def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ParameterError(f"frame size must be an integer from {MIN_SIZE} to {MAX_SIZE} "
                             f"pixels, got {size!r}")
    return int(size)


def _check_shape(shape) -> str:
    if shape not in SHAPES:
        raise ParameterError(f"unknown blob shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return shape


def _check_width(width) -> float:
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise ParameterError(f"width must be a number of pixels, got {width!r}") from None
    if not (math.isfinite(w) and 0.5 <= w <= 32.0):
        raise ParameterError(f"width must be from 0.5 to 32 pixels, got {width!r}")
    return w


def _default_width(shape: str, size: int) -> float:
    return size / 16.0 if shape == "gaussian" else float(max(2, round(size / 7.0)))


def _check_frames(steps, size: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ParameterError(f"the number of frames must be an integer of at least 2, got {steps!r}")
    steps = int(steps)
    if steps > MAX_FRAMES:
        raise ParameterError(f"{steps:,} frames exceed the limit of {MAX_FRAMES:,}")
    if steps * size * size > MAX_VALUES:
        raise ParameterError(f"{steps:,} frames of {size}x{size} pixels are {steps * size * size:,} "
                             f"values, over the limit of {MAX_VALUES:,}; use fewer or smaller frames")
    return steps


def _number(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
        lo = f"above {low:g}" if low_open else f"from {low:g}"
        raise ParameterError(f"{name} must be {lo} to {high:g}, got {value!r}")
    return v


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent CPU generator per purpose (start state, background, noise) of a seed."""
    s = int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(s)


def _uniform(gen: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _sign(gen: torch.Generator) -> float:
    return 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0


# ----------------------------------------------------------------------------- simulation
def _trajectory(system, x0: torch.Tensor, steps: int, dt: float, transient_time: float = 0.0,
                seed: int = 0):
    """(T, D) float64 states at frame spacing ``dt`` (RK4 substeps no longer than the
    system's recommended step), and the frame spacing actually used."""
    from .simulate import simulate
    if system.is_map:
        k, h, dt = 1, 1.0, 1.0
    else:
        k = max(1, min(100, math.ceil(dt / system.default_dt - 1e-9)))
        h = dt / k
    transient = math.ceil(transient_time / h) if transient_time else 0
    kw = {"seed": seed} if system.stochastic else {}
    tr = simulate(system, x0, steps=(steps - 1) * k, dt=h, save_every=k, transient=transient,
                  dtype=torch.float64, device="cpu", **kw)
    x = tr.x[:, 0]                                                    # (T, D)
    if tr.status != "ok" or not torch.isfinite(x).all():
        raise ParameterError(f"the {system.title or system.name} trajectory diverged: {tr.message}")
    return x, dt


def _start(x0, default: Sequence[float], dim: int, what: str) -> torch.Tensor:
    if x0 is None:
        return torch.tensor(default, dtype=torch.float64)
    try:
        x = torch.as_tensor(x0, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ParameterError(f"x0 of the {what} scene must be numbers, got {x0!r}") from None
    if x.numel() != dim or not torch.isfinite(x).all():
        raise ParameterError(f"x0 of the {what} scene must be {dim} finite numbers, got {x0!r}")
    return x


# ----------------------------------------------------------------------------- scenes
def _background(size: int, gen: torch.Generator, device) -> torch.Tensor:
    """A fixed faint distractor: three blurry blobs and a stripe pattern, (H, W) in [0, 0.4]."""
    g = _grid(size, "cpu", torch.float64)
    u, v = g[None, :], g[:, None]
    bg = torch.zeros(size, size, dtype=torch.float64)
    for _ in range(3):
        c = _uniform(gen, 0.0, size - 1.0, 2)
        s = float(_uniform(gen, 0.08, 0.2)) * size
        a = float(_uniform(gen, 0.12, 0.25))
        bg = bg + a * torch.exp(-((u - c[0]) ** 2 + (v - c[1]) ** 2) / (2 * s * s))
    ang = float(_uniform(gen, 0.0, math.pi))
    lam = float(_uniform(gen, 6.0, 12.0))
    ph = float(_uniform(gen, 0.0, 2 * math.pi))
    bg = bg + 0.06 * (1.0 + torch.sin(2 * math.pi * (u * math.cos(ang) + v * math.sin(ang)) / lam + ph))
    return bg.clamp(0.0, 0.4).to(device=device, dtype=torch.float32)


def _pendulum(states, size, width, u, v, device):
    th = states[:, 0]
    bob = torch.stack([PENDULUM_PIVOT[0] + PENDULUM_LENGTH * torch.sin(th),
                       PENDULUM_PIVOT[1] - PENDULUM_LENGTH * torch.cos(th)], -1)   # (T, 2) box
    bob_px = to_pixels(bob, size)                                                  # (T, 2)
    piv = to_pixels(torch.tensor(PENDULUM_PIVOT, dtype=torch.float64), size).expand_as(bob_px)
    b32, p32 = bob_px.to(device, torch.float32), piv.to(device, torch.float32)
    rod = 0.45 * _segment(p32, b32, max(0.5, 0.02 * size), u, v)                   # (T, H, W)
    return torch.maximum(rod, _disk(b32, width, u, v)), bob_px


def _two_bodies(states, size, width, u, v, device):
    pos = [to_pixels(RING_RADIUS * torch.stack([torch.cos(states[:, i]), torch.sin(states[:, i])], -1),
                     size) for i in (0, 1)]                                        # 2 x (T, 2)
    c = (size - 1) / 2.0
    r_px = RING_RADIUS * size / 2.0
    ring = 0.25 * _coverage(max(0.5, 0.02 * size) - (torch.sqrt((u - c) ** 2 + (v - c) ** 2) - r_px).abs())
    b1 = _disk(pos[0].to(device, torch.float32), width, u, v)
    b2 = 0.8 * _disk(pos[1].to(device, torch.float32), 0.75 * width, u, v)
    return torch.maximum(torch.maximum(b1, b2), ring.expand_as(b1)), pos[0]


def _spring(states, size, width, u, v, device):
    xb = SPRING_REST + SPRING_SCALE * states[:, 0]                                 # (T,) box x
    centre = to_pixels(torch.stack([xb, torch.zeros_like(xb)], -1), size)          # (T, 2)
    c32 = centre.to(device, torch.float32)
    h = 0.5 * width
    cu, cv = c32[:, 0, None, None], c32[:, 1, None, None]
    block = _coverage(h - (u - cu).abs()) * _coverage(h - (v - cv).abs())         # (T, H, W)
    wall_u = float(to_pixels(torch.tensor([SPRING_WALL, 0.0]), size)[0])
    hw = max(0.5, 0.02 * size)
    wall = 0.35 * _coverage(hw - (u - wall_u).abs()).expand(1, size, size)        # (1, H, W)
    left = cu - h                                                                  # (T, 1, 1)
    span = (left - wall_u).clamp_min(1.0)
    s = (u - wall_u) / span                                                        # (T, 1, W)
    amp, coils = 0.08 * size / 2.0, 6.0
    ys = cv + amp * torch.sin(2 * math.pi * coils * s)                             # (T, 1, W)
    slope = amp * 2 * math.pi * coils / span * torch.cos(2 * math.pi * coils * s)
    d = (v - ys).abs() / torch.sqrt(1.0 + slope * slope)                           # (T, H, W)
    inside = ((s >= 0) & (s <= 1)).to(torch.float32)
    coil = 0.5 * _coverage(hw - d) * inside
    return torch.maximum(torch.maximum(block, coil), wall), centre


#: frames drawn at once by the scene painters (bounds the temporaries' memory, ~8 MB each)
CHUNK_VALUES = 2_000_000


def _in_chunks(paint, states, size, width, u, v, device):
    """Run a painter on blocks of frames: its distance fields need several (T, H, W)
    temporaries, so long sequences are drawn a block at a time."""
    n = max(1, CHUNK_VALUES // (size * size))
    parts = [paint(states[i:i + n], size, width, u, v, device) for i in range(0, len(states), n)]
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])


def _square_states(steps: int, dt: float, motion: Mapping[str, float], phase: torch.Tensor):
    t = dt * torch.arange(steps, dtype=torch.float64)                              # (T,)
    x = motion["amplitude"] * torch.sin(2 * math.pi * t / motion["period"] + phase[0])
    y = motion["amplitude_y"] * torch.sin(2 * math.pi * t / motion["period_y"] + phase[1])
    return torch.stack([x, y], -1)                                                 # (T, 2)


def scene_settings(scene: str = "pendulum", *, system: str | None = None,
                   size: int | None = None, steps: int = 1000, dt: float = 0.05,
                   shape: str = "gaussian", width: float | None = None, noise: float = 0.0,
                   background: bool = False, seed: int = 0, x0=None,
                   params: Mapping[str, float] | None = None,
                   axes: Sequence[int] | None = None) -> dict[str, Any]:
    """The canonical settings of :func:`render_scene` for these arguments, validated, without
    rendering anything: every key, defaults resolved (``size``, ``width``), plain data.

    ``render_scene(...).settings == scene_settings(...)`` for the same arguments, so a caller
    can tell whether frames it holds are those its current settings would render.

    Raises:
        ParameterError: as :func:`render_scene`, before anything is allocated.
    """
    from .registry import get_system

    if scene not in SCENES:
        raise ParameterError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    size = _check_size(DEFAULT_SIZE.get(scene, 32) if size is None else size)
    steps = _check_frames(steps, size)
    dt = _number("dt", dt, 0.0, 10.0, low_open=True)
    shape = _check_shape(shape)
    noise = _number("noise", noise, 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    if scene != "blob" and (system is not None or axes is not None):
        raise ParameterError(f"system and axes apply to the 'blob' scene only, not {scene!r}")
    if params is not None and not isinstance(params, Mapping):
        raise ParameterError(f"params must be a mapping of names to numbers, got {params!r}")
    params = {str(k): _number(str(k), v, -math.inf, math.inf) for k, v in (params or {}).items()}
    if width is None:
        width = (_default_width("square" if scene == "moving-square" else shape, size)
                 if scene in ("blob", "moving-square")
                 else max(3.0, 0.2 * size) if scene == "spring" else max(1.5, 0.07 * size))
    width = _check_width(width)
    if x0 is not None:
        try:
            x0 = [float(v) for v in torch.as_tensor(x0, dtype=torch.float64).reshape(-1)]
        except (TypeError, ValueError, RuntimeError):
            raise ParameterError(f"x0 of the {scene} scene must be numbers, got {x0!r}") from None
    if scene == "blob":
        if system is not None and not isinstance(system, str):
            raise ParameterError(f"system must be a registered system's name, got {system!r}")
        sys = _system(get_system, "lorenz63" if system is None else system, params)
        if axes is not None:
            axes = [int(a) for a in axes]
            if len(axes) != 2 or len(set(axes)) != 2 or not all(0 <= a < sys.dim for a in axes):
                raise ParameterError(f"axes must be two different coordinates of "
                                     f"{sys.title or sys.name} in 0..{sys.dim - 1}, got {axes!r}")
    elif scene == "moving-square":
        for k, val in params.items():
            if k not in SQUARE_MOTION:
                raise ParameterError(f"the moving square has no parameter {k!r} "
                                     f"(parameters: {', '.join(SQUARE_MOTION)})")
            params[k] = (_number(k, val, 0.0, 1.0) if k.startswith("amplitude")
                         else _number(k, val, 0.0, 1e6, low_open=True))
        dim = 2 if x0 is None or len(x0) != 1 else 1
    else:
        sys = _system(get_system, _SCENE_SYSTEM[scene], params)
    if x0 is not None:
        dim = sys.dim if scene != "moving-square" else dim
        if len(x0) != dim or not all(math.isfinite(v) for v in x0):
            want = "1 or 2 phases (radians)" if scene == "moving-square" else f"{dim} finite numbers"
            raise ParameterError(f"x0 of the {scene} scene must be {want}, got {x0!r}")
    return {"scene": scene, "system": system, "size": size, "steps": steps, "dt": dt,
            "shape": shape, "width": width, "noise": noise, "background": bool(background),
            "seed": int(seed), "x0": x0, "params": params, "axes": axes}


_SCENE_SYSTEM = {"pendulum": "pendulum", "damped-pendulum": "pendulum", "spring": "mass_spring",
                 "two-bodies": "two_bodies_ring"}


def render_scene(scene: str = "pendulum", *, system: str | None = None, size: int | None = None,
                 steps: int = 1000, dt: float = 0.05, shape: str = "gaussian",
                 width: float | None = None, noise: float = 0.0, background: bool = False,
                 seed: int = 0, x0=None, params: Mapping[str, float] | None = None,
                 axes: Sequence[int] | None = None, device=None) -> FrameSet:
    r"""Render a seeded scene as a :class:`FrameSet` of ``steps`` frames, ``dt`` apart.

    Scenes (ground-truth ``states`` in brackets):

    * ``"pendulum"``, ``"damped-pendulum"``: a rod from the centre and a bob,
      :class:`~explorer.core.flows.Pendulum` (theta, omega); the damped one defaults to
      ``gamma = 0.3``. The bob is at ``PENDULUM_PIVOT + PENDULUM_LENGTH (sin θ, -cos θ)``.
    * ``"spring"``: a block tied to a wall by a coil,
      :class:`~explorer.core.flows.MassSpring` (x, v); block centre at
      ``SPRING_REST + SPRING_SCALE x``.
    * ``"two-bodies"``: a faint ring and two bobs (the second smaller and dimmer),
      :class:`~explorer.core.flows.RingBodies` (phi1, phi2, w1, w2).
    * ``"blob"``: a blob (``shape``) at two coordinates (``axes``, default (0, 1)) of any
      system of the library (``system``, default ``"lorenz63"``; its ``states``), after a
      transient, each axis scaled from the trajectory's min/max into the box with a margin.
    * ``"moving-square"``: a hard-edged square (the continuity test's data), default 28
      pixels wide: ``x = A sin(2πt/P + φ)``, ``y = A_y sin(2πt/P_y + φ_y)`` (states x, y);
      ``params`` may set ``amplitude`` (0.6), ``period`` (4), ``amplitude_y`` (0),
      ``period_y`` (9). By default it moves at most 0.66 pixels per frame.

    Args:
        scene: one of :data:`SCENES`.
        system, axes: the ``"blob"`` scene's system name and observed coordinates.
        size: frame side in pixels, 16..64 (default 32; 28 for ``"moving-square"``).
        steps: number of frames (at most 20,000 and ``steps * size**2 <= 20,000,000``).
        dt: time between frames (maps: 1); flows take RK4 substeps of at most their
            recommended step.
        shape, width: the ``"blob"`` scene's shape and width in pixels (Gaussian sigma,
            square side); elsewhere ``width`` is the bob's radius (pendulum, two bodies),
            the square's or the block's side. ``None``: scaled with ``size``.
        noise: standard deviation of additive Gaussian pixel noise (frames clipped to [0, 1]).
        background: add a fixed faint distractor (seeded blobs and stripes).
        seed: seeds the start state (unless ``x0``), the background and the noise, each from
            its own stream: the same seed gives identical tensors.
        x0: start state of the scene's system; the moving square's start phase(s) in radians.
        params: parameters of the scene's system (or of the square's motion).
        device: where frames are rendered (default the session's device); the simulation
            runs on the CPU in float64.

    Raises:
        ParameterError: unknown scene or system, a size or count out of range (before any
            allocation), a bad start state or parameter, a diverging trajectory.
    """
    from .device import default_device, parse_device
    from .registry import get_system

    st = scene_settings(scene, system=system, size=size, steps=steps, dt=dt, shape=shape,
                        width=width, noise=noise, background=background, seed=seed, x0=x0,
                        params=params, axes=axes)
    scene, size, steps, dt, shape, width, noise, seed, x0, params = (
        st[k] for k in ("scene", "size", "steps", "dt", "shape", "width", "noise", "seed", "x0",
                        "params"))
    system, axes, background = st["system"], st["axes"], st["background"]
    dev = default_device() if device is None else parse_device(device)
    gen = _generator(seed, 0)

    g = _grid(size, dev)
    u, v = g[None, None, :], g[None, :, None]                          # (1, 1, W), (1, H, 1)
    if scene in ("pendulum", "damped-pendulum"):
        pdef = {"gamma": 0.3} if scene == "damped-pendulum" else {}
        sys = _system(get_system, "pendulum", {**pdef, **params})
        default = (_sign(gen) * float(_uniform(gen, 0.7, 1.5)), float(_uniform(gen, -0.5, 0.5)))
        states, dt = _trajectory(sys, _start(x0, default, 2, scene), steps, dt)
        frames, pos = _in_chunks(_pendulum, states, size, width, u, v, dev)
    elif scene == "spring":
        sys = _system(get_system, "mass_spring", params)
        default = (_sign(gen) * float(_uniform(gen, 0.4, 1.0)), float(_uniform(gen, -0.3, 0.3)))
        states, dt = _trajectory(sys, _start(x0, default, 2, scene), steps, dt)
        frames, pos = _in_chunks(_spring, states, size, width, u, v, dev)
    elif scene == "two-bodies":
        sys = _system(get_system, "two_bodies_ring", params)
        p1 = float(_uniform(gen, 0.0, 2 * math.pi))
        default = (p1, p1 + _sign(gen) * float(_uniform(gen, 1.0, 2.0)),
                   *(float(w) for w in _uniform(gen, -0.6, 0.6, 2)))
        states, dt = _trajectory(sys, _start(x0, default, 4, scene), steps, dt)
        frames, pos = _in_chunks(_two_bodies, states, size, width, u, v, dev)
    elif scene == "blob":
        sys = _system(get_system, "lorenz63" if system is None else system, params)
        ax = (0, 1) if axes is None else tuple(axes)
        base = sys.initial_state(torch.float64)
        default = base + 1e-3 * (1.0 + base.abs()) * torch.randn(sys.dim, generator=gen,
                                                                 dtype=torch.float64)
        start = default if x0 is None else _start(x0, (), sys.dim, f"blob ({sys.name})")
        transient = 20.0 * (sys.period or 1.0) if sys.continuous_time else 1000.0
        states, dt = _trajectory(sys, start, steps, dt, transient, seed)
        xy = states[:, list(ax)]                                                   # (T, 2)
        lo, hi = xy.min(0).values, xy.max(0).values
        margin = min(0.5, (3.0 * width if shape == "gaussian" else 0.5 * width + 1.0) / (size / 2.0))
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        box = (1.0 - margin) * (2.0 * (xy - lo) / span - 1.0)
        box = torch.where(hi > lo, box, torch.zeros_like(box))
        frames = render_blobs(box.to(dev), size, shape=shape, width=width)
        pos = to_pixels(box, size)
    else:  # moving-square
        motion = {**SQUARE_MOTION, **params}
        default = tuple(float(p) for p in _uniform(gen, 0.0, 2 * math.pi, 2))
        phase = _start(x0 if x0 is None or len(x0) != 1 else [x0[0], 0.0], default, 2, scene)
        states = _square_states(steps, dt, motion, phase)
        sys = None
        frames = render_blobs(states.to(dev), size, shape="square", width=width)
        pos = to_pixels(states, size)
    variables = ("x", "y") if sys is None else tuple(sys.variables)

    if background:
        bg = _background(size, _generator(seed, 1), dev)                          # (H, W)
        frames = frames + bg * (1.0 - frames)
    if noise > 0:
        eps = torch.randn(frames.shape, generator=_generator(seed, 2), dtype=torch.float32)
        frames = frames + noise * eps.to(dev)
    frames = frames.clamp(0.0, 1.0).to(torch.float32).contiguous()
    return FrameSet(frames=frames, states=states.to(torch.float64), dt=float(dt),
                    variables=variables, scene=scene, settings=st,
                    positions=pos.to(torch.float64))


def _system(get_system, name: str, params: Mapping[str, Any]):
    try:
        return get_system(name, **{k: float(v) for k, v in params.items()})
    except ParameterError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise ParameterError(str(e.args[0]) if e.args else f"bad parameters for {name}") from None
