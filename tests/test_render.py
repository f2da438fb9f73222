"""Rendered image sequences (explorer.core.render) and the mechanical systems behind them."""

from __future__ import annotations

import io
import math

import pytest
import torch

from explorer.core import render
from explorer.core.errors import ParameterError
from explorer.core.registry import get_system
from explorer.core.render import (
    PENDULUM_LENGTH,
    PENDULUM_PIVOT,
    SCENES,
    FrameSet,
    centre_of_mass,
    render_blobs,
    render_scene,
    to_pixels,
)
from explorer.core.simulate import simulate

F64 = torch.float64
# positions (box units) from the centre to near the edges; with these widths the blob is
# never cut by the frame's border (3 sigma, or the square's half side, stays inside)
POSITIONS = torch.tensor([[0.0, 0.0], [0.33, -0.1], [-0.75, 0.75], [0.72, -0.74],
                          [-0.5, -0.78], [0.78, 0.4]], dtype=F64)


@pytest.mark.parametrize("shape,width", [("gaussian", 1.0), ("gaussian", 1.7), ("square", 3.0),
                                         ("square", 4.0), ("square", 2.5)])
def test_blob_centre_of_mass_is_recovered(shape, width):
    size = 32
    frames = render_blobs(POSITIONS, size, shape=shape, width=width)        # (N, H, W)
    assert frames.shape == (len(POSITIONS), size, size) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    want = to_pixels(POSITIONS, size)                                     # (N, 2)
    got = centre_of_mass(frames)
    err = (got - want).abs().max().item()
    assert err < (0.25 if shape == "gaussian" else 0.5 + 1e-9), err
    if shape == "square":                        # hard edges: 0/1 pixels, side**2 of them lit
        assert set(frames.unique().tolist()) <= {0.0, 1.0}
        if width == int(width):
            assert (frames.sum((-2, -1)) == width * width).all()


def test_pixel_mapping_and_batching():
    # the box's corners are the outer pixel edges; y points up, rows down
    px = to_pixels(torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=F64), 20)
    torch.testing.assert_close(px, torch.tensor([[-0.5, -0.5], [19.5, 19.5]], dtype=F64))
    xy = POSITIONS.reshape(2, 3, 2)
    f = render_blobs(xy, 16)
    assert f.shape == (2, 3, 16, 16)
    torch.testing.assert_close(f[1, 2], render_blobs(xy[1, 2], 16))


def test_scenes_have_the_documented_shapes():
    for scene in SCENES:
        fs = render_scene(scene, steps=40, device="cpu")
        size = 28 if scene == "moving-square" else 32
        assert fs.frames.shape == (40, size, size) and fs.frames.dtype == torch.float32
        assert fs.size == (size, size) and fs.length == 40 and fs.scene == scene
        assert fs.states.shape[0] == 40 and fs.states.dtype == F64
        assert fs.states.shape[1] == len(fs.variables)
        assert fs.positions.shape == (40, 2) and fs.positions.dtype == F64
        assert 0.0 <= fs.frames.min() and fs.frames.max() <= 1.0
        assert fs.dt == pytest.approx(0.05)


def test_frames_are_deterministic_for_a_seed():
    kw = dict(steps=60, noise=0.1, background=True, device="cpu")
    for scene in ("pendulum", "blob", "moving-square"):
        a = render_scene(scene, seed=5, **kw)
        b = render_scene(scene, seed=5, **kw)
        c = render_scene(scene, seed=6, **kw)
        assert torch.equal(a.frames, b.frames) and torch.equal(a.states, b.states)
        assert not torch.equal(a.frames, c.frames)
        # the settings rebuild the set exactly
        d = render_scene(**a.settings, device="cpu")
        assert torch.equal(a.frames, d.frames) and torch.equal(a.positions, d.positions)
    # noise does not move the start state: the same seed draws it from its own stream
    clean = render_scene("pendulum", seed=5, steps=20, device="cpu")
    noisy = render_scene("pendulum", seed=5, steps=20, noise=0.2, device="cpu")
    assert torch.equal(clean.states, noisy.states)
    assert not torch.equal(clean.frames, noisy.frames)


def test_pendulum_bob_follows_the_simulated_angle():
    for scene in ("pendulum", "damped-pendulum"):
        fs = render_scene(scene, steps=300, size=32, seed=2, device="cpu")
        th = fs.states[:, 0]
        bob = torch.stack([PENDULUM_PIVOT[0] + PENDULUM_LENGTH * torch.sin(th),
                           PENDULUM_PIVOT[1] - PENDULUM_LENGTH * torch.cos(th)], -1)
        want = to_pixels(bob, 32)                                         # (T, 2)
        torch.testing.assert_close(fs.positions, want)
        # locate the bob in the pixels: brighter than the rod (0.45)
        mask = (fs.frames > 0.75).to(F64)
        got = centre_of_mass(mask)
        assert (got - want).norm(dim=-1).max().item() < 1.0
    # the damped pendulum loses energy, the undamped one keeps it
    def energy(s):
        return 0.5 * s[:, 1] ** 2 - 9.81 * torch.cos(s[:, 0])
    free = render_scene("pendulum", steps=400, seed=2, device="cpu").states
    damped = render_scene("damped-pendulum", steps=400, seed=2, device="cpu").states
    assert abs(energy(free)[-1] - energy(free)[0]) < 1e-4
    assert energy(damped)[-1] < energy(damped)[0] - 1.0


def test_spring_block_is_where_the_state_says():
    fs = render_scene("spring", steps=200, seed=1, device="cpu")
    xb = render.SPRING_REST + render.SPRING_SCALE * fs.states[:, 0]
    want = to_pixels(torch.stack([xb, torch.zeros_like(xb)], -1), 32)
    torch.testing.assert_close(fs.positions, want)
    got = centre_of_mass((fs.frames > 0.75).to(F64))
    assert (got - want).norm(dim=-1).max().item() < 1.0


def _zero_crossing_period(x: torch.Tensor, t: torch.Tensor) -> float:
    """Mean spacing of the upward zero crossings of x(t), linearly interpolated."""
    up = ((x[:-1] < 0) & (x[1:] >= 0)).nonzero().flatten()
    tc = t[up] - x[up] * (t[up + 1] - t[up]) / (x[up + 1] - x[up])
    return float((tc[-1] - tc[0]) / (len(tc) - 1))


@pytest.mark.parametrize("g,L", [(9.81, 1.0), (9.81, 2.5), (3.7, 0.5)])
def test_pendulum_small_amplitude_period(g, L):
    sys = get_system("pendulum", g=g, L=L)
    want = 2 * math.pi * math.sqrt(L / g)
    tr = simulate(sys, [0.05, 0.0], steps=int(10.5 * want / 0.005), dt=0.005)
    got = _zero_crossing_period(tr.states[:, 0], tr.t)
    assert abs(got / want - 1) < 0.01, (got, want)


@pytest.mark.parametrize("k,m", [(4.0, 1.0), (9.0, 2.0)])
def test_mass_spring_frequency(k, m):
    sys = get_system("mass_spring", k=k, m=m)
    want = 2 * math.pi / math.sqrt(k / m)
    tr = simulate(sys, [0.7, 0.0], steps=int(8.5 * want / 0.01), dt=0.01)
    got = _zero_crossing_period(tr.states[:, 0], tr.t)
    assert abs(got / want - 1) < 1e-3, (got, want)


def test_ring_bodies_conserve_angular_momentum():
    sys = get_system("two_bodies_ring", k=3.0)
    tr = simulate(sys, [0.3, 2.0, 1.2, -0.4], steps=4000, dt=0.005)
    L = tr.states[:, 2] + tr.states[:, 3]                                 # w1 + w2
    assert (L - L[0]).abs().max().item() < 1e-10
    assert (tr.states[:, 0] - tr.states[:, 1]).std() > 0.1               # they do move apart
    # damping: each angular velocity decays at rate gamma, so the total does too
    damped = get_system("two_bodies_ring", k=3.0, gamma=0.2)
    tr = simulate(damped, [0.3, 2.0, 1.2, -0.4], steps=2000, dt=0.005)
    L = tr.states[:, 2] + tr.states[:, 3]
    torch.testing.assert_close(L, L[0] * torch.exp(-0.2 * tr.t), rtol=1e-8, atol=1e-10)


def test_moving_square_moves_by_less_than_a_pixel():
    fs = render_scene("moving-square", steps=400, seed=3, device="cpu")
    assert fs.size == (28, 28)
    step = (fs.positions[1:] - fs.positions[:-1]).norm(dim=-1)
    assert 0 < step.max().item() < 1.0
    assert set(fs.frames.unique().tolist()) <= {0.0, 1.0}          # hard edges
    same = (fs.frames[1:] == fs.frames[:-1]).all(-1).all(-1)
    assert same.any() and not same.all()                            # pixel discreteness shows
    got = centre_of_mass(fs.frames)
    assert (got - fs.positions).abs().max().item() <= 0.5 + 1e-9
    # a phase given as x0 fixes the start
    a = render_scene("moving-square", steps=10, x0=0.0, seed=1, device="cpu")
    b = render_scene("moving-square", steps=10, x0=0.0, seed=2, device="cpu")
    assert torch.equal(a.frames, b.frames) and a.states[0, 0] == 0.0


def test_blob_scene_any_system():
    fs = render_scene("blob", steps=300, device="cpu")
    assert fs.settings["system"] is None and fs.variables == ("x", "y", "z")
    torch.testing.assert_close(centre_of_mass(fs.frames), fs.positions, atol=0.05, rtol=0)
    # the blob stays inside the frame (the margin)
    assert fs.positions.min() >= 3 * 2.0 - 0.5 - 1e-9 and fs.positions.max() <= 31 - 3 * 2.0 + 0.5 + 1e-9
    xz = render_scene("blob", system="lorenz63", axes=(0, 2), steps=50, device="cpu")
    assert not torch.equal(xz.positions, render_scene("blob", steps=50, device="cpu").positions)
    henon = render_scene("blob", system="henon", steps=50, shape="square", device="cpu")
    assert henon.dt == 1.0 and henon.variables == ("x", "y")
    with pytest.raises(ParameterError, match="unknown system"):
        render_scene("blob", system="no_such_system", steps=10)
    with pytest.raises(ParameterError, match="axes"):
        render_scene("blob", system="henon", axes=(0, 2), steps=10)
    with pytest.raises(ParameterError, match="blob"):
        render_scene("pendulum", system="lorenz63", steps=10)


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if a refused request got as far as simulating."""
    import explorer.core.simulate as sim

    def boom(*a, **k):
        raise AssertionError("simulated (and allocated) before refusing")
    monkeypatch.setattr(sim, "simulate", boom)


@pytest.mark.parametrize("kw,match", [
    (dict(size=15), "16 to 64"), (dict(size=65), "16 to 64"), (dict(size=32.0), "16 to 64"),
    (dict(steps=20_001, size=16), "20,000"), (dict(size=64, steps=5_000), "20,000,000"),
    (dict(steps=1), "at least 2"), (dict(dt=0.0), "dt"), (dict(noise=-0.1), "noise"),
    (dict(scene="cartpole"), "unknown scene"), (dict(shape="circle"), "shape"),
    (dict(seed=-1), "seed"), (dict(width=0.0), "width"), (dict(x0=[1.0, 2.0, 3.0]), "x0"),
    (dict(scene="two-bodies", x0=[0.0, 1.0]), "4 finite numbers"),
    (dict(scene="moving-square", params={"period": 0.0}), "period"),
    (dict(scene="blob", system="lorenz63", params={"rho": -5.0}), "rho"),
])
def test_limits_are_refused_before_allocating(no_simulation, kw, match):
    with pytest.raises(ParameterError, match=match):
        render_scene(**kw)


def test_scene_settings_are_the_rendered_settings():
    kw = dict(scene="blob", system="rossler", steps=30, size=24, noise=0.1, seed=3)
    fs = render_scene(**kw, device="cpu")
    assert fs.settings == render.scene_settings(**kw)
    assert render.scene_settings("moving-square")["size"] == 28      # the scene's default size
    assert render.scene_settings("pendulum", x0=(1, 0))["x0"] == [1.0, 0.0]


def test_render_blobs_refuses_bad_sizes():
    with pytest.raises(ParameterError, match="16 to 64"):
        render_blobs(POSITIONS, 100)
    with pytest.raises(ParameterError, match="shape"):
        render_blobs(POSITIONS, 32, shape="disk")
    with pytest.raises(ParameterError, match=r"\(\.\.\., 2\)"):
        render_blobs(torch.zeros(4, 3), 32)


def test_bad_start_states_and_parameters_are_refused():
    with pytest.raises(ParameterError, match="x0"):
        render_scene("pendulum", x0=[1.0, 2.0, 3.0], steps=10)
    with pytest.raises(ParameterError, match="gamma"):
        render_scene("pendulum", params={"gamma": -1.0}, steps=10)
    with pytest.raises(ParameterError, match="no parameter"):
        render_scene("moving-square", params={"speed": 2.0}, steps=10)


def test_frameset_round_trips_through_a_weights_only_checkpoint():
    fs = render_scene("two-bodies", steps=30, noise=0.05, seed=4, device="cpu")
    buf = io.BytesIO()
    torch.save(fs.as_dict(), buf)
    buf.seek(0)
    back = FrameSet.from_dict(torch.load(buf, weights_only=True))
    assert torch.equal(back.frames, fs.frames) and torch.equal(back.states, fs.states)
    assert torch.equal(back.positions, fs.positions)
    assert (back.dt, back.variables, back.scene) == (fs.dt, fs.variables, fs.scene)
    rebuilt = render_scene(**back.settings, device="cpu")
    assert torch.equal(rebuilt.frames, fs.frames)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_renders_on_the_gpu_like_on_the_cpu():
    for scene in SCENES:
        cpu = render_scene(scene, steps=50, noise=0.05, background=True, device="cpu")
        gpu = render_scene(scene, steps=50, noise=0.05, background=True, device="cuda")
        assert gpu.frames.device.type == "cuda"
        torch.testing.assert_close(gpu.frames.cpu(), cpu.frames, atol=1e-5, rtol=0)
