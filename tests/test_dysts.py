"""The dysts catalogue adapter (skipped when the optional ``dysts`` extra is not installed).

The shared checks (shapes, dtypes, Jacobians, sweeps) run for every converted dysts system in
``test_conformance.py``; this file checks the conversion itself: coverage, skip reasons,
metadata, and agreement with dysts's own numpy implementation.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from explorer.core import dysts_adapter
from explorer.core.registry import get_system, load_dysts, system_class, system_names


def test_register_raises_import_error_without_dysts(monkeypatch):
    # runs with or without dysts: the registry relies on this ImportError
    for mod in ("dysts", "dysts.base", "dysts.flows"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError):
        dysts_adapter.register_dysts(lambda cls: cls)


def test_adapter_import_does_not_import_dysts():
    code = ("import sys, explorer.core.dysts_adapter, explorer.core.registry; "
            "assert 'dysts' not in sys.modules, 'dysts imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)


pytestmark = pytest.mark.filterwarnings("ignore:Numba not installed")
HAS_NUMBA = importlib.util.find_spec("numba") is not None


@pytest.fixture(scope="module")
def catalogue():
    """(classes by dysts name, skipped, every dysts flow, metadata); skips without dysts."""
    pytest.importorskip("dysts")
    import dysts.systems

    skipped = load_dysts()
    classes = {system_class(n).dysts_name: system_class(n) for n in system_names(origin="dysts")}
    every = dysts.systems.get_attractor_list("continuous")
    meta = dysts.systems.get_system_data("continuous")
    return classes, skipped, every, meta


def test_most_flows_converted(catalogue):
    classes, skipped, every, _ = catalogue
    print(f"\ndysts flows: {len(every)}, converted {len(classes)}, skipped {len(skipped)}")
    for name, why in sorted(skipped.items()):
        print(f"  skipped {name}: {why}")
    assert set(classes) | set(skipped) == set(every)
    assert not set(classes) & set(skipped)
    assert len(classes) >= 0.8 * len(every)


def test_every_skip_has_a_one_line_reason(catalogue):
    _, skipped, _, _ = catalogue
    import dysts.systems

    for name, why in skipped.items():
        assert isinstance(why, str) and why.strip() and "\n" not in why, name
    for name in dysts.systems.get_attractor_list("delay"):
        assert "delay" in skipped[name]
    assert "Lorenz" not in skipped


def test_names_and_lookup(catalogue):
    classes, _, _, _ = catalogue
    for dname, cls in classes.items():
        assert cls.name == dysts_adapter.flow_name(dname) and cls.name.startswith("dysts_")
        assert cls.title == f"{dname} (dysts)"
    assert dysts_adapter.flow_name("SprottA") == "dysts_sprott_a"
    assert dysts_adapter.flow_name("Lorenz84") == "dysts_lorenz84"
    assert system_class("dysts_lorenz") is classes["Lorenz"]
    assert system_class("Dysts-Lorenz") is classes["Lorenz"]
    assert system_class("Lorenz (dysts)") is classes["Lorenz"]
    assert system_class("lorenz").origin == "builtin"  # built-ins keep their own names


def test_metadata_is_carried(catalogue):
    classes, _, _, meta = catalogue
    for dname, cls in classes.items():
        m = meta[dname]
        sys_ = cls()
        assert cls.origin == "dysts"
        assert sys_.dim == m["embedding_dimension"]
        assert sys_.default_x0 == tuple(float(v) for v in m["initial_conditions"])
        assert cls.dysts_dt == m["dt"]
        assert cls.bound == (1e12 if m["unbounded_indices"] else 1e6)
        assert m["dt"] * (1 - 1e-3) <= cls.default_dt <= max(m["period"] / 100, m["dt"]) * (1 + 1e-3)
        assert cls.period == m["period"]
        assert cls.citation == (m["citation"] or "")
        scalars = {k: float(v) for k, v in m["parameters"].items() if np.isscalar(v)}
        assert sys_.defaults() == scalars
        assert set(cls.fixed_parameters) == set(m["parameters"]) - set(scalars)
        for p in cls.parameters:
            assert (p.low, p.high) == dysts_adapter.param_bounds(p.default) or p.integer
        spectrum = m["lyapunov_spectrum_estimated"]
        if spectrum is not None and len(spectrum) == sys_.dim:
            assert cls.lyapunov_reference.exponents == tuple(sorted(spectrum, reverse=True))
            assert cls.lyapunov_reference.source == dysts_adapter.LYAPUNOV_SOURCE
        else:
            assert cls.lyapunov_reference is None
    lorenz = classes["Lorenz"]
    assert lorenz.variables == ("x", "y", "z")
    assert lorenz.defaults() == {"beta": 2.667, "rho": 28.0, "sigma": 10.0}


def test_param_bounds_rule():
    assert dysts_adapter.param_bounds(2.667) == (0.0, 26.67)
    assert dysts_adapter.param_bounds(-3.0) == (-30.0, 0.0)
    assert dysts_adapter.param_bounds(0.0) == (-1.0, 1.0)


def test_dysts_lorenz_equals_builtin_lorenz63(catalogue):
    gen = torch.Generator().manual_seed(1)
    x = 10 * torch.randn(16, 3, generator=gen, dtype=torch.float64)
    ours = get_system("dysts_lorenz")
    builtin = get_system("lorenz63", **ours.params)
    torch.testing.assert_close(ours.f(x), builtin.f(x), rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(ours.jac(x), builtin.jac(x), rtol=1e-13, atol=1e-12)
    rho = torch.linspace(20, 30, 16, dtype=torch.float64)
    torch.testing.assert_close(get_system("dysts_lorenz", rho=rho).f(x),
                               get_system("lorenz63", beta=2.667, rho=rho).f(x))


def test_agrees_with_dysts_instances(catalogue):
    """Our torch rhs against dysts's own ``DynSys.rhs`` (numba-compiled when installed)."""
    classes, _, _, _ = catalogue
    import dysts.flows

    names = sorted(classes)
    if HAS_NUMBA:  # every instance would jit-compile: sample a few
        names = names[::12]
    gen = np.random.default_rng(0)
    for dname in names:
        cls = classes[dname]
        inst = getattr(dysts.flows, dname)()
        x0 = np.asarray(cls.default_x0)
        for _ in range(2):
            x = x0 + 0.05 * (1 + np.abs(x0)) * gen.standard_normal(x0.shape)
            want = np.asarray(inst.rhs(x, 0.0), dtype=float)
            got = cls().f(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8 * (1 + np.abs(want).max()),
                                       err_msg=dname)


@pytest.mark.parametrize("dname, param", [("MacArthur", "d"), ("Hopfield", "eps")])
def test_array_parameter_systems_batch(catalogue, dname, param):
    """Equations written for one state with array parameters (MacArthur is evaluated under
    vmap, Hopfield's np.matmul(k, X) directly) still take any batch shape and sweeps."""
    classes, _, _, _ = catalogue
    cls = classes[dname]
    assert cls.fixed_parameters
    assert cls._field.vmap == (dname == "MacArthur")
    D = len(cls.variables)
    gen = torch.Generator().manual_seed(0)
    x = cls().initial_state() * (1 + 0.01 * torch.randn(3, 5, D, dtype=torch.float64, generator=gen))
    fx = cls().f(x)
    assert fx.shape == (3, 5, D)
    torch.testing.assert_close(fx[1, 2], cls().f(x[1, 2]))
    v = cls.defaults()[param]
    vals = torch.linspace(0.95 * v, v, 5, dtype=torch.float64)
    fs = cls(**{param: vals}).f(x[0])
    torch.testing.assert_close(fs[4], cls().f(x[0, 4]))
    torch.testing.assert_close(fs[0], cls(**{param: float(vals[0])}).f(x[0, 0]))
    assert cls(**{param: vals}).f(x[0, 0]).shape == (5, D)  # one state, many parameters


def test_short_simulation_stays_finite(catalogue):
    """Fifty RK4 steps at dysts's dt from dysts's initial condition stay bounded."""
    classes, _, _, _ = catalogue
    bad = []
    for dname, cls in classes.items():
        s = cls()
        x, h = s.initial_state(), s.default_dt
        for _ in range(50):
            k1 = s.f(x)
            k2 = s.f(x + 0.5 * h * k1)
            k3 = s.f(x + 0.5 * h * k2)
            k4 = s.f(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if not (torch.isfinite(x).all() and x.abs().max() < s.bound):
            bad.append(dname)
    assert not bad, bad


def test_register_into_a_fresh_registry(catalogue):
    classes, skipped, _, _ = catalogue
    got = []
    again = dysts_adapter.register_dysts(got.append)
    assert again == skipped
    assert sorted(c.dysts_name for c in got) == sorted(classes)
    assert all(math.isfinite(c.default_dt) for c in got)


def test_instances_pickle(catalogue):
    import pickle

    s = get_system("dysts_hopfield", eps=torch.linspace(9, 10, 3, dtype=torch.float64))
    t = pickle.loads(pickle.dumps(s))
    assert type(t) is type(s)
    x = s.initial_state().expand(3, -1)
    torch.testing.assert_close(t.f(x), s.f(x))


def test_every_converted_flow_has_an_exact_traced_jacobian(catalogue):
    """Each flow's Jacobian is differentiated from its traced field (so its Lyapunov spectrum
    steps in generated C) and equals central finite differences of dysts's own equations."""
    from explorer.core.traced import reason, traced_jacobian

    classes, _, _, _ = catalogue
    missing = {}
    for dname, cls in sorted(classes.items()):
        system = cls()
        if traced_jacobian(system) is None:
            missing[dname] = reason(system)
            continue
        gen = torch.Generator().manual_seed(3)
        x0 = system.initial_state(torch.float64)
        x = x0 + 0.02 * (1.0 + x0.abs()) * torch.randn(4, system.dim, generator=gen,
                                                       dtype=torch.float64)
        J = system.jac(x)
        h = 1e-6 * (1.0 + x.abs())
        cols = []
        for j in range(system.dim):
            e = torch.zeros_like(x)
            e[:, j] = h[:, j]
            cols.append((system.f(x + e) - system.f(x - e)) / (2 * h[:, j:j + 1]))
        fd = torch.stack(cols, -1)
        scale = 1.0 + fd.abs().amax()
        assert bool(((J - fd).abs() <= 1e-5 * (fd.abs() + scale)).all()), dname
    assert not missing, missing
