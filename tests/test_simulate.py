"""simulate(): batching, parameter sweeps, divergence status, limits, compiled vs eager."""

from __future__ import annotations

import threading

import pytest
import torch

from explorer.core.errors import ParameterError, ShapeError, SizeLimitError
from explorer.core.registry import get_system
from explorer.core.simulate import iterate, simulate


def test_shapes_and_time_grid():
    tr = simulate(get_system("lorenz63"), steps=100, save_every=10, transient=50)
    assert tr.x.shape == (11, 1, 3) and tr.states.shape == (11, 3)
    torch.testing.assert_close(tr.t, (50 + 10 * torch.arange(11, dtype=torch.float64)) * 0.01)
    assert tr.status == "ok"


def test_transient_and_save_every_are_consistent_with_a_plain_run():
    s = get_system("lorenz63")
    full = simulate(s, steps=300)
    part = simulate(s, steps=200, transient=100, save_every=4)
    torch.testing.assert_close(part.x, full.x[100::4])


def test_batch_of_perturbed_copies_uses_the_explicit_generator():
    s = get_system("lorenz63")
    a = simulate(s, steps=10, batch=5, generator=torch.Generator().manual_seed(3))
    b = simulate(s, steps=10, batch=5, generator=torch.Generator().manual_seed(3))
    c = simulate(s, steps=10, batch=5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.x, b.x)
    assert not torch.allclose(a.x, c.x)
    torch.testing.assert_close(a.x[0, 0], s.initial_state())     # first member exact


def test_parameter_sweep_equals_separate_runs():
    rhos = torch.tensor([10.0, 20.0, 28.0], dtype=torch.float64)
    sweep = simulate(get_system("lorenz63", rho=rhos), steps=100)
    assert sweep.x.shape == (101, 3, 3)
    for i, r in enumerate(rhos.tolist()):
        single = simulate(get_system("lorenz63", rho=r), steps=100)
        torch.testing.assert_close(sweep.x[:, i], single.states)


def test_diverging_member_is_frozen_and_flagged_others_go_on():
    x0 = torch.tensor([[0.1, 0.1], [2.0, 2.0], [0.0, 0.2]], dtype=torch.float64)
    tr = simulate(get_system("henon"), x0, steps=50)
    assert tr.diverged.tolist() == [False, True, False]
    assert tr.status == "partly diverged" and "1 of 3" in tr.message
    t_div = tr.diverged_at[1].item()
    # samples up to the divergence are kept, later ones are NaN
    before = tr.t < t_div
    assert torch.isfinite(tr.x[before, 1]).all()
    assert torch.isnan(tr.x[~before, 1]).all()
    # the iterate at t_div really leaves the bound (|x| > 1e3) from the last kept state
    last = tr.x[before, 1][-1]
    nxt = get_system("henon").f(last)
    assert (nxt.abs() > get_system("henon").bound).any() or not torch.isfinite(nxt).all()
    assert torch.isfinite(tr.x[:, [0, 2]]).all()


def test_nan_parameters_and_states_are_refused():
    with pytest.raises(ParameterError, match="finite"):
        get_system("lorenz63", rho=float("nan"))
    with pytest.raises(ShapeError, match="NaN"):
        simulate(get_system("lorenz63"), [float("nan"), 0, 0], steps=2)
    with pytest.raises(ShapeError, match="dimension 3"):
        simulate(get_system("lorenz63"), [1.0, 2.0], steps=2)


def test_out_of_range_parameter_names_the_range():
    with pytest.raises(ParameterError, match=r"allowed range \[0, 500\]"):
        get_system("lorenz63", rho=1000)
    with pytest.raises(ParameterError, match="outside"):
        get_system("lorenz63", rho=torch.tensor([10.0, 600.0]))


def test_absurd_sizes_are_refused_before_allocation():
    s = get_system("lorenz63")
    with pytest.raises(SizeLimitError, match="limit"):
        simulate(s, steps=10, batch=10**9)
    with pytest.raises(SizeLimitError, match="GiB"):
        simulate(s, steps=10**9, batch=100)


def test_wrong_solver_for_kind():
    with pytest.raises(ParameterError, match="map"):
        simulate(get_system("henon"), steps=5, solver="rk4")
    with pytest.raises(ParameterError, match="unknown solver"):
        simulate(get_system("lorenz63"), steps=5, solver="leapfrog2")


@pytest.mark.parametrize("compile_, steps, every", [(False, 20_000, 1), (None, 5_000_000, 10)])
def test_stop_event_returns_what_was_computed(compile_, steps, every):
    stop = threading.Event()
    seen = []

    def progress(frac):
        seen.append(frac)
        if frac > 0.3:
            stop.set()

    tr = simulate(get_system("lorenz63"), steps=steps, save_every=every, progress=progress,
                  stop=stop, compile=compile_, dtype=torch.float32)
    assert 1 < tr.x.shape[0] < steps // every + 1
    assert seen == sorted(seen)


def test_float32_speed_path_dtype():
    tr = simulate(get_system("lorenz63"), steps=10, dtype=torch.float32, batch=3)
    assert tr.x.dtype == torch.float32


def test_iterate_follows_parameter_changes():
    s = get_system("lorenz63")
    gen = iterate(s, batch=4, steps_per_frame=5, dtype=torch.float64)
    t0, x0 = next(gen)
    t1, x1 = next(gen)
    assert t1 == pytest.approx(0.05) and x1.shape == (4, 3)
    ref = simulate(s, x0, steps=5)
    torch.testing.assert_close(x1, ref.x[-1])
    t2, x2 = gen.send(s.with_params(rho=10.0))
    ref2 = simulate(s.with_params(rho=10.0), x1, steps=5)
    torch.testing.assert_close(x2, ref2.x[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "inductor"])
def test_compiled_path_agrees_with_eager(backend):
    s = get_system("lorenz63", rho=torch.tensor([20.0, 28.0, 35.0, 28.0]))
    x0 = torch.tensor([[1.0, 1.0, 1.0]] * 4)
    eager = simulate(s, x0, steps=200, dtype=torch.float32, compile=False)
    fast = simulate(s, x0, steps=200, dtype=torch.float32, compile=backend)
    # early samples agree to rounding; chaos amplifies later differences
    torch.testing.assert_close(fast.x[:50], eager.x[:50], rtol=1e-4, atol=1e-4)
    assert fast.status == eager.status == "ok"
    # a diverging member is handled identically in compiled code
    h = get_system("henon")
    x0 = torch.tensor([[0.1, 0.1], [2.0, 2.0]], dtype=torch.float64)
    e, f = simulate(h, x0, steps=64, compile=False), simulate(h, x0, steps=64, compile=backend)
    torch.testing.assert_close(f.diverged_at, e.diverged_at, equal_nan=True)
    torch.testing.assert_close(f.x, e.x, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "inductor"])
@pytest.mark.parametrize("transient,every,steps", [(0, 1, 100), (45, 7, 300), (70, 40, 400), (3, 3, 33)])
def test_compiled_recording_grid_matches_eager(transient, every, steps, backend):
    s = get_system("lorenz63", rho=torch.tensor([20.0, 28.0]))
    x0 = torch.tensor([[1.0, 1.0, 1.0], [-8.0, 7.0, 27.0]], dtype=torch.float64)
    kw = dict(steps=steps, transient=transient, save_every=every)
    e = simulate(s, x0, compile=False, **kw)
    f = simulate(s, x0, compile=backend, **kw)
    assert f.x.shape == e.x.shape
    torch.testing.assert_close(f.t, e.t)
    torch.testing.assert_close(f.x, e.x, rtol=1e-9, atol=1e-9)


def test_ragged_initial_states_are_a_shape_error():
    from explorer.core.errors import ShapeError
    from explorer.core.registry import system_class as _cls
    with pytest.raises(ShapeError, match="numeric"):
        simulate(_cls("lorenz63")(), [[1, 2, 3], [1, 2]], steps=10)
