"""PLRNN, shallow PLRNN and AL-RNN: Jacobians, the Map conformance check, exact PWL analysis."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
import test_conformance as conformance
import torch

from explorer.core.analysis import fixed_points, lyapunov_spectrum, orbit_diagram
from explorer.core.errors import ParameterError, ShapeError, SizeLimitError
from explorer.core.system import Map
from explorer.models import (ALRNN, PLRNN, ALRNNConfig, PLRNNConfig, ShallowPLRNN,
                             ShallowPLRNNConfig, all_patterns, build_model, config_from_dict,
                             pwl_cycles, pwl_fixed_points, subregions, symbolic_sequence,
                             transition_graph)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


CONFIGS = {
    "plrnn": PLRNNConfig(obs_dim=3, latent_dim=6),
    "shplrnn": ShallowPLRNNConfig(hidden_dim=20),
    "shplrnn-clipped": ShallowPLRNNConfig(hidden_dim=20, clipped=True),
    "alrnn": ALRNNConfig(obs_dim=3, latent_dim=8, n_relu=3),
    "alrnn-linear-obs": ALRNNConfig(obs_dim=2, latent_dim=5, n_relu=2, observation="linear"),
}


def _model(name, seed=0):
    m = build_model(CONFIGS[name], generator=_gen(seed))
    with torch.no_grad():                       # non-trivial weights: every term matters
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=_gen(seed + 1)))
    return m


def _states(m, n=16, seed=3):
    return 1.5 * torch.randn(n, m.latent_dim, generator=_gen(seed))


# ----------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("name", CONFIGS)
def test_jacobian_matches_jacrev(name):
    m = _model(name)
    z = _states(m)
    J = m.jacobian(z)
    ref = torch.func.vmap(torch.func.jacrev(m.step))(z)
    assert J.shape == (16, m.latent_dim, m.latent_dim)
    torch.testing.assert_close(J, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_step_forward_generate_shapes(name):
    m = _model(name)
    z = _states(m, 4)
    zs = m.forward(z, 7)
    assert zs.shape == (7, 4, m.latent_dim)
    torch.testing.assert_close(zs[0], m.step(z))
    torch.testing.assert_close(zs[1], m.step(m.step(z)))
    x = torch.randn(4, m.obs_dim, generator=_gen(5))
    obs = m.generate(x, 5)
    assert obs.shape == (6, 4, m.obs_dim)
    torch.testing.assert_close(obs[0], x, atol=1e-5, rtol=1e-5)     # observe(init_state(x)) = x
    with pytest.raises(ShapeError):
        m.step(torch.zeros(4, m.latent_dim + 1))


def test_equations_of_each_model_by_hand():
    g = _gen(7)
    z = torch.randn(5, 6, generator=g)
    m = PLRNN(PLRNNConfig(latent_dim=6), generator=g)
    W = m.W * (1 - torch.eye(6))                                      # zero diagonal
    torch.testing.assert_close(m.step(z), m.A * z + torch.relu(z) @ W.T + m.h)
    s = ShallowPLRNN(ShallowPLRNNConfig(latent_dim=6, hidden_dim=9, clipped=True), generator=g)
    u = z @ s.W2.T
    torch.testing.assert_close(s.step(z), s.A * z + (torch.relu(u + s.h2) - torch.relu(u)) @ s.W1.T + s.h1)
    a = ALRNN(ALRNNConfig(latent_dim=6, n_relu=2), generator=g)
    phi = torch.cat([z[:, :4], torch.relu(z[:, 4:])], 1)
    torch.testing.assert_close(a.step(z), a.A * z + phi @ a.W.T + a.h)


def test_alrnn_initialisation_follows_the_reference():
    a = ALRNN(ALRNNConfig(latent_dim=20, n_relu=2), generator=_gen(0))
    assert torch.all((a.A > 0) & (a.A < 1))                            # diag of a normalised PD matrix
    assert a.W.std().item() == pytest.approx(0.01, rel=0.15)
    assert torch.all(a.h == 0)


def test_configs_validate_and_round_trip():
    with pytest.raises(ParameterError):
        PLRNNConfig(obs_dim=5, latent_dim=3)                           # identity needs M >= N
    with pytest.raises(ParameterError):
        ALRNNConfig(latent_dim=3, n_relu=4)
    with pytest.raises(ParameterError):
        ShallowPLRNNConfig(observation="softmax")
    for cfg in CONFIGS.values():
        assert config_from_dict(cfg.as_dict()) == cfg
    with pytest.raises(ParameterError):
        config_from_dict({"kind": "lstm"})


# ----------------------------------------------------------------------------- as a Map
@pytest.mark.parametrize("name", CONFIGS)
def test_as_system_passes_the_shared_conformance_check(name, monkeypatch):
    system = _model(name).as_system()
    assert isinstance(system, Map) and system.kind == "map"
    monkeypatch.setattr(conformance, "system_class", lambda _: type(system))
    conformance.test_metadata(name)
    conformance.test_shapes_dtypes_batching_and_jacobian(name)
    conformance.test_parameter_sweep_broadcasts(name)


def test_as_system_is_a_frozen_float64_snapshot():
    m = _model("shplrnn")
    system = m.as_system()
    z = _states(m, 3).double()
    before = system.f(z)
    torch.testing.assert_close(before, m.double().step(z))
    with torch.no_grad():
        m.h1.add_(1.0)                                                 # training goes on ...
    torch.testing.assert_close(system.f(z), before)                   # ... the snapshot does not
    # with_params rebuilds the same snapshot; coupling = 0 leaves the linear part
    lin = system.with_params(coupling=0.0)
    torch.testing.assert_close(lin.f(z), system.model_weights["A"] * z + system.model_weights["h1"])
    # picklable (for worker processes)
    again = pickle.loads(pickle.dumps(system))
    torch.testing.assert_close(again.f(z), before)


def test_core_analysis_runs_on_a_trained_model():
    m = _model("alrnn")
    with torch.no_grad():
        m.A.mul_(0.5)
        m.W.mul_(0.2)                                                  # a contracting model
    system = m.as_system()
    res = lyapunov_spectrum(system, k=2, steps=500, transient=100, batch=4, generator=_gen())
    assert res.exponents.shape == (2,) and res.exponents[0] < 0
    od = orbit_diagram(system, "coupling", 0.5, 1.0, n_values=4, n_points=20, transient=50)
    assert od.values.shape == (4,)
    # Newton (core) and the exact PWL solver find the same fixed points
    newton = fixed_points(system, n_starts=64, generator=_gen())
    exact = pwl_fixed_points(m)
    assert len(newton) >= 1
    for fp in newton:
        assert any((fp.x - e.z).norm() < 1e-6 for e in exact)


# ----------------------------------------------------------------------------- PWL analysis
@pytest.mark.parametrize("name", CONFIGS)
def test_linear_pieces_agree_with_direct_evaluation(name):
    m = _model(name)
    z = _states(m, 64).double()
    md = m.double()
    d = subregions(m, z)
    assert d.shape == (64, m.n_switches)
    Ad, c = m.linear_piece(d)
    torch.testing.assert_close((Ad @ z.unsqueeze(-1)).squeeze(-1) + c, md.step(z))
    torch.testing.assert_close(Ad, md.jacobian(z))


def test_subregions_are_the_relu_signs():
    a = _model("alrnn")
    z = _states(a, 32)
    assert torch.equal(subregions(a, z), z[:, -3:] > 0)
    s = _model("shplrnn")
    z = _states(s, 32)
    assert torch.equal(subregions(s, z), (z.double() @ s.W2.double().T + s.h2.double()) > 0)
    P = all_patterns(3)
    assert P.shape == (8, 3) and len(torch.unique(P, dim=0)) == 8
    assert P[5].tolist() == [True, False, True]                       # binary order
    with pytest.raises(SizeLimitError):
        all_patterns(40)


def test_analytic_fixed_points_are_fixed_and_consistent():
    for name in ("plrnn", "alrnn", "shplrnn-clipped"):
        m = _model(name, seed=11)
        pats = None if m.n_switches <= 16 else symbolic_sequence(m, m.forward(_states(m, 1)[0], 500))
        fps = pwl_fixed_points(m, pats)
        assert len(fps) >= 1
        for fp in fps:
            z = fp.z
            torch.testing.assert_close(m.double().step(z), z, rtol=1e-9, atol=1e-9)
            ev = torch.linalg.eigvals(m.linear_piece(fp.pattern)[0])
            assert fp.stable == bool((ev.abs() < 1).all())
        m.float()


def _tent():
    """AL-RNN with M = P = 1 equal to the tent map z' = 1 - 2|z| = 1 + 2z - 4 relu(z)."""
    m = ALRNN(ALRNNConfig(obs_dim=1, latent_dim=1, n_relu=1))
    with torch.no_grad():
        m.A.fill_(2.0)
        m.W.fill_(-4.0)
        m.h.fill_(1.0)
    return m


def test_tent_map_fixed_points_and_cycles_in_closed_form():
    m = _tent()
    fps = pwl_fixed_points(m)
    assert sorted(float(f.z) for f in fps) == pytest.approx([-1.0, 1 / 3])
    assert all(not f.stable for f in fps)
    (c2,) = pwl_cycles(m, 2)
    assert sorted(c2.points.flatten().tolist()) == pytest.approx([-0.2, 0.6])
    assert c2.eigenvalues[0].real.item() == pytest.approx(-4.0)       # 2 * (-2)
    c3 = pwl_cycles(m, 3)
    assert len(c3) == 2                                               # (2^3 - 2) / 3 orbits
    f = lambda z: 1 - 2 * abs(z)                                       # noqa: E731
    for cyc in c3:
        for z in cyc.points.flatten().tolist():
            assert f(f(f(z))) == pytest.approx(z, abs=1e-12)
            assert f(z) != pytest.approx(z)
        assert abs(cyc.eigenvalues[0].item()) == pytest.approx(8.0)
    with pytest.raises(ParameterError):
        pwl_cycles(m, 4)


def test_symbolic_sequence_and_transition_graph():
    m = _tent()
    z = torch.tensor([[-0.2], [0.6]] * 10, dtype=torch.float64)       # the 2-cycle, 20 steps
    seq = symbolic_sequence(m, z)
    assert seq.n_regions == 2 and seq.counts.tolist() == [10, 10]
    assert seq.codes == ("0", "1")                                     # tie: first visit first
    assert seq.symbols.tolist() == [0, 1] * 10
    G = transition_graph(seq.symbols)
    assert G.tolist() == [[0, 10], [9, 0]]
    # a generic AL-RNN trajectory: regions ordered by visits, counts add up
    a = _model("alrnn", seed=4)
    traj = _states(a, 300)                                            # states spread over regions
    seq = symbolic_sequence(a, traj)
    assert seq.counts.sum() == 300
    assert seq.counts.tolist() == sorted(seq.counts.tolist(), reverse=True)
    G = transition_graph(seq.symbols, seq.n_regions)
    assert G.sum() == 299
    assert torch.equal(G.sum(1), torch.bincount(seq.symbols[:-1], minlength=seq.n_regions))
    # a batch (T, B, M): symbols (T, B), transitions counted within each member only
    batch = torch.stack([z, z.roll(1, 0)], 1)                         # two phases of the 2-cycle
    seq = symbolic_sequence(m, batch)
    assert seq.symbols.shape == (20, 2)
    assert transition_graph(seq.symbols).tolist() == [[0, 19], [19, 0]]


def test_models_and_training_do_not_import_ui_and_keep_the_layering():
    ui = ("panel", "holoviews", "bokeh", "param", "hvplot", "datashader")
    code = ("import sys, importlib; importlib.import_module({m!r}); "
            "print(','.join(k for k in {bad!r} if k in sys.modules))")
    cases = [("explorer.models", ui + ("explorer.training",)),
             ("explorer.training", ui),
             ("explorer.core.analysis.invariants", ui + ("explorer.models", "explorer.training"))]
    for module, bad in cases:
        out = subprocess.run([sys.executable, "-c", code.format(m=module, bad=bad)],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "", f"{module} pulled in {out.stdout.strip()}"


def test_untrained_model_lyapunov_is_finite():
    m = build_model(CONFIGS["shplrnn"], generator=_gen(0))           # reference initialisation
    res = lyapunov_spectrum(m.as_system(), k=1, steps=200, transient=50, batch=2)
    assert math.isfinite(float(res.exponents[0]))
