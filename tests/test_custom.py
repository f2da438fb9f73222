"""Custom systems typed as equations: parser, compiler, errors and safety."""

from __future__ import annotations

import ast
import builtins
import contextlib
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.core import custom
from explorer.core.custom import (MAX_CHARS, MAX_DEPTH, ParsedEquations, generic_x0, line_column,
                                  parse_equations,
                                  parse_system, validate_equations)
from explorer.core.errors import EquationError, ParameterError
from explorer.core.registry import get_system
from explorer.core.system import Flow, Map

LORENZ = "dx/dt = sigma*(y - x); dy/dt = x*(rho - z) - y; dz/dt = x*y - beta*z"
LORENZ_P = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
HENON = "x' = 1 - a*x**2 + y; y' = b*x"
HENON_P = {"a": 1.4, "b": 0.3}


def _states(n: int, d: int, scale: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g, dtype=dtype)


def _value(expr: str, x: float = 0.0, **params) -> float:
    sys = parse_system(f"x' = {expr}", params)
    return sys.f(torch.tensor([x], dtype=torch.float64)).item()


# ----------------------------------------------------------------------------- vs built-ins
def test_lorenz_as_text_matches_builtin():
    sys = parse_system(LORENZ, LORENZ_P)
    ref = get_system("lorenz63")
    assert isinstance(sys, Flow) and sys.kind == "flow" and sys.origin == "custom"
    assert sys.variables == ("x", "y", "z") and sys.dim == 3
    x = _states(64, 3, 10.0)
    torch.testing.assert_close(sys.f(x), ref.f(x))
    torch.testing.assert_close(sys.jac(x), ref.jac(x))
    # time-major (T, B, D)
    xt = x.reshape(4, 16, 3)
    torch.testing.assert_close(sys.f(xt), ref.f(xt))


def test_henon_as_text_matches_builtin_in_every_lhs_style():
    ref = get_system("henon")
    x = _states(50, 2, 1.0)
    for text in (HENON,
                 "x_{n+1} = 1 - a*x_n^2 + y_n\ny_{n+1} = b*x_n",
                 "x[n+1] = 1 - a * x ^ 2 + y ; y[n + 1] = b * x"):
        sys = parse_system(text, HENON_P)
        assert isinstance(sys, Map) and sys.kind == "map" and sys.default_dt == 1.0
        torch.testing.assert_close(sys.f(x), ref.f(x))
        torch.testing.assert_close(sys.jac(x), ref.jac(x))


def test_jacobian_agrees_with_finite_differences_and_vmap():
    text = "dx/dt = sin(x)*y^2 - exp(-z/3); dy/dt = atan2(y, x) + sqrt(1 + x^2); dz/dt = tanh(x*y*z)"
    sys = parse_system(text)
    x = _states(8, 3, 1.0, seed=3)
    J = sys.jac(x)
    h = 1e-6
    fd = torch.stack([(sys.f(x + h * e) - sys.f(x - h * e)) / (2 * h)
                      for e in torch.eye(3, dtype=x.dtype)], -1)
    torch.testing.assert_close(J, fd, rtol=1e-6, atol=1e-7)
    ref = torch.func.vmap(torch.func.jacrev(sys.f))(x)
    torch.testing.assert_close(J, ref)


def test_float32_and_parameter_sweeps():
    sys = parse_system(LORENZ, LORENZ_P)
    x = _states(5, 3, 5.0)
    out = sys.f(x.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sys.f(x).float(), rtol=1e-5, atol=1e-4)
    rho = torch.linspace(20.0, 30.0, 5, dtype=torch.float64)
    swept = sys.with_params(rho=rho)
    ref = get_system("lorenz63").with_params(rho=rho)
    torch.testing.assert_close(swept.f(x), ref.f(x))
    torch.testing.assert_close(swept.jac(x), ref.jac(x))
    # one state against a (B,) parameter: broadcasts to (B, D)
    x0 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert swept.f(x0).shape == (5, 3) and swept.jac(x0).shape == (5, 3, 3)
    torch.testing.assert_close(swept.f(x0), ref.f(x0.expand(5, 3)))
    torch.testing.assert_close(swept.jac(x0), ref.jac(x0.expand(5, 3)))
    assert swept.f(x.float()).dtype == torch.float32
    # validation of values still uses the Param list
    with pytest.raises(ParameterError):
        sys.with_params(rho=float("nan"))
    with pytest.raises(ParameterError):
        sys.with_params(nope=1.0)


def test_constant_components_broadcast_and_have_zero_jacobian():
    sys = parse_system("dx/dt = 1; dy/dt = a; dz/dt = -2*pi", {"a": 2.0})
    x = torch.zeros(4, 3)
    out = sys.f(x)
    assert out.shape == (4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, -2 * math.pi]]).expand(4, 3))
    assert sys.jac(x).shape == (4, 3, 3) and not sys.jac(x).any()
    swept = sys.with_params(a=torch.arange(3.0))
    torch.testing.assert_close(swept.f(torch.zeros(3))[:, 1], torch.arange(3.0))
    mixed = parse_system("dx/dt = y; dy/dt = 3")
    J = mixed.jac(torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(J, torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64).expand(2, 2, 2))


def test_metadata_defaults_and_pickling():
    sys = parse_system(LORENZ, LORENZ_P, name="my-lorenz", x0=(1, 2, 3), dt=0.005)
    assert sys.name == "my-lorenz" and sys.title == "Custom flow"
    assert sys.default_x0 == (1.0, 2.0, 3.0) and sys.default_dt == 0.005
    assert [p.name for p in sys.parameters] == ["sigma", "rho", "beta"]
    assert all(p.low <= p.default <= p.high and p.doc for p in sys.parameters)
    assert sys.params == LORENZ_P
    assert r"\dot{x} = \sigma \left(y - x\right)" in sys.latex
    assert r"\dot{z} = x y - \beta z" in sys.latex
    assert "dy/dt = x*(rho - z) - y" in sys.description
    info = sys.info()
    assert info["origin"] == "custom" and info["kind"] == "flow" and info["dimension"] == 3
    m = parse_system(HENON, HENON_P)
    assert m.default_x0 == generic_x0(2) and m.title == "Custom map"
    assert m.latex == r"x_{n+1} = 1 - a x_{n}^{2} + y_{n} \\ y_{n+1} = b x_{n}"
    big = parse_system("dx/dt = -k*x", {"k": 5e7})
    assert big.parameters[0].high >= 5e7
    # pickles (the class is rebuilt from the text), sweeps included
    sw = sys.with_params(rho=torch.linspace(1, 2, 3))
    back = pickle.loads(pickle.dumps(sw))
    x = _states(3, 3, 1.0)
    torch.testing.assert_close(back.f(x), sw.f(x))
    assert back.default_dt == 0.005


def test_latex_rendering_details():
    p = parse_equations("dtheta/dt = omega_1; domega_1/dt = -g/L*sin(theta) - 2e-3*abs(omega_1)^2 "
                        "+ sqrt(mass)/(1 + x2)")
    tex = p.latex()
    assert r"\dot{\theta} = \omega_{1}" in tex
    assert r"\dot{\omega}_{1} = " in tex
    assert r"\frac{-g}{L} \sin\left(\theta\right)" in tex
    assert r"2 \cdot 10^{-3} \left|\omega_{1}\right|^{2}" in tex
    assert r"\frac{\sqrt{\mathrm{mass}}}{1 + x_{2}}" in tex


def test_parse_equations_reports_structure_and_canonical_round_trip():
    p = parse_equations("# Lorenz\n" + LORENZ.replace("; ", "\n") + "  # done\n")
    assert isinstance(p, ParsedEquations)
    assert p.kind == "flow" and p.variables == ("x", "y", "z")
    assert p.parameters == ("sigma", "rho", "beta")
    assert [e.variable for e in p.equations] == ["x", "y", "z"]
    assert p.unused({"sigma": 1, "rho": 2, "beta": 3, "extra": 4}) == ["extra"]
    q = parse_equations("x' = r*sin(pi*x) + e; y' = max(x, y)")
    assert q.functions == ("sin", "max") and q.constants == ("pi", "e") and q.parameters == ("r",)
    assert set(q.names) == {"x", "y", "r", "pi", "e", "sin", "max"}
    again = parse_equations(p.canonical())
    assert again.canonical() == p.canonical()


def test_newlines_inside_parentheses_continue_the_equation():
    sys = parse_system("dx/dt = sigma*(y\n   - x)\ndy/dt = (x*(rho - z)  # comment\n  - y)\n"
                       "dz/dt = x*y - beta*z\n\n", LORENZ_P)
    x = _states(4, 3, 3.0)
    torch.testing.assert_close(sys.f(x), get_system("lorenz63").f(x))


def test_unused_parameters_are_allowed_and_kept():
    sys = parse_system("dx/dt = -x", {"k": 2.0})
    assert [p.name for p in sys.parameters] == ["k"]
    assert sys.with_params(k=3.0).params["k"] == 3.0
    assert validate_equations("dx/dt = -x", {"k": 2.0}) == []


# ----------------------------------------------------------------------------- precedence
@pytest.mark.parametrize("expr, expected", [
    ("2**3**2", 512.0), ("2^3^2", 512.0), ("(2**3)**2", 64.0), ("-2**2", -4.0), ("(-2)**2", 4.0),
    ("2^3", 8.0), ("1-2-3", -4.0), ("1-(2-3)", 2.0), ("8/4/2", 1.0), ("8/(4/2)", 4.0),
    ("2*3+4*5", 26.0), ("2+3*4", 14.0), ("(2+3)*4", 20.0), ("2**-1", 0.5), ("2**-1*3", 1.5),
    ("-3*-2", 6.0), ("--2", 2.0), ("+-+2", -2.0), ("2*-x", -6.0), ("-x^2", -9.0),
    ("1e-3*1000", 1.0), (".5 + 2.", 2.5), ("1.5E+2", 150.0), ("pi", math.pi), ("e", math.e),
    ("sin(pi/2)", 1.0), ("cos(0)", 1.0), ("exp(1)", math.e), ("log(e^2)", 2.0), ("ln(1)", 0.0),
    ("sqrt(16)", 4.0), ("abs(-x)", 3.0), ("sign(-x)", -1.0), ("sign(0)", 0.0),
    ("heaviside(x)", 1.0), ("heaviside(0)", 0.5), ("atan(1)*4", math.pi), ("arctan(1)*4", math.pi),
    ("asin(1)", math.pi / 2), ("arccos(1)", 0.0), ("atan2(1, 1)", math.pi / 4),
    ("arctan2(0, -1)", math.pi), ("min(x, 2)", 2.0), ("max(x, 2)", 3.0), ("mod(7, x)", 1.0),
    ("mod(-1, x)", 2.0), ("tanh(0) + sinh(0) + cosh(0) + tan(0)", 1.0), ("2*x^2/6", 3.0),
    ("1/0", math.inf), ("sqrt(-1)", math.nan), ("x**0.5**2", 3.0 ** 0.25), ("(x)(", None),
])
def test_precedence_associativity_and_functions(expr, expected):
    if expected is None:
        with pytest.raises(EquationError):
            _value(expr, 3.0)
        return
    got = _value(expr, 3.0)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_precedence_with_parameter_tensors():
    sys = parse_system("x' = -a**2 + mod(x, a) + max(a, 2)", {"a": 3.0})
    got = sys.f(torch.tensor([4.0], dtype=torch.float64)).item()
    assert got == -9.0 + 1.0 + 3.0


# ----------------------------------------------------------------------------- errors
ERRORS = [
    # text, params, token, position, message fragment
    ("", None, "", 0, "no equations"),
    ("  \n ; # nothing\n", None, "", 0, "no equations"),
    ("dx/dt = (x + 1", None, "(", 8, "never closed"),
    ("dx/dt = x*(y + 1\ndy/dt = x", None, "(", 10, "never closed"),
    ("dx/dt = sin(x", None, "(", 11, "never closed"),
    ("dx/dt = x)", None, ")", 9, "no matching '('"),
    ("dx/dt = x\ndx/dt = 2", None, "x", 11, "duplicate equation for 'x'"),
    ("dx/dt = x\ny' = 1", None, "y'", 10, "cannot mix"),
    ("x' = x; dy/dt = 1", None, "dy/dt", 8, "cannot mix"),
    ("dx/dt = sin(x, x)", None, "sin", 8, "takes 1 argument, got 2"),
    ("dx/dt = atan2(x)", None, "atan2", 8, "takes 2 arguments, got 1"),
    ("dx/dt = max()", None, "max", 8, "takes 2 arguments, got 0"),
    ("dx/dt = x 2", None, "2", 10, "missing operator"),
    ("dx/dt = 2x", None, "x", 9, "missing operator"),
    ("dx/dt = x +", None, "+", 10, "incomplete expression"),
    ("dx/dt = x * * 2", None, "*", 12, "unexpected '*'"),
    ("dx/dt = foo(x)", None, "foo", 8, "unknown function 'foo'"),
    ("dx/dt = sinn(x)", None, "sinn", 8, "did you mean 'sin'"),
    ("dx/dt = sin", None, "sin", 8, "needs arguments"),
    ("dx/dt = x(1 - x)", None, "x", 8, "is not a function"),
    ("dx/dt = os.system('x')", None, ".", 10, "attribute access"),
    ("dx/dt = x.__class__", None, ".", 9, "attribute access"),
    ("dx/dt = __import__('os')", None, "__import__", 8, "must start with a letter"),
    ("dx/dt = a__b", None, "a__b", 8, "double underscores"),
    ("dx/dt = x % 2", None, "%", 10, "mod(a, b)"),
    ("dx/dt = 'x'", None, "'", 8, "unexpected"),
    ('dx/dt = "x"', None, '"', 8, "strings"),
    ("dx/dt = x[0]", None, "[", 9, "unexpected '['"),
    ("dx/dt = lambda: x", None, ":", 14, "not allowed"),
    ("dx/dt = x if x else 1", {}, "if", 10, "missing operator"),
    ("dx/dt = σ*x", None, "σ", 8, "ASCII"),
    ("dx/dt = 1e999", None, "1e999", 8, "too large"),
    ("dx/dt = x < 1", None, "<", 10, "comparisons"),
    ("x = 1", None, "x", 0, "left-hand side"),
    ("dx/dx = 1", None, "dx/dx", 0, "left-hand side"),
    ("= 1", None, "=", 0, "missing left-hand side"),
    ("dx/dt = ", None, "=", 6, "missing right-hand side"),
    ("dx/dt 1", None, "dx", 0, "missing '='"),
    ("dx/dt = 1 = 2", None, "=", 10, "second '='"),
    ("dx/dt == 2", None, "=", 7, "second '='"),
    ("dsin/dt = 1", None, "sin", 1, "reserved"),
    ("de/dt = 1", None, "e", 1, "reserved"),
    ("dx/dt = -x + t", {}, "t", 13, "time is not a variable"),
    ("dx/dt = -k*x", {}, "k", 9, "unknown name 'k'"),
    ("dx/dt = -k*x", {"k": math.nan}, "k", 9, "must be a finite number"),
    ("dx/dt = -k*x", {"k": math.inf}, "k", 9, "must be a finite number"),
    ("dx/dt = -k*x", {"k": "ten"}, "k", 9, "must be a finite number"),
    ("dx/dt = -k*x", {"k": 1.0, "x": 2.0}, "x", 1, "same name as the state variable"),
    ("dx/dt = -k*x", {"k": 1.0, "sin": 2.0}, "sin", None, "same name as a function"),
    ("dx/dt = -k*x", {"k": 1.0, "pi": 2.0}, "pi", None, "same name as a constant"),
    ("dx/dt = -k*x", {"k": 1.0, "1k": 2.0}, "1k", None, "invalid parameter name"),
    ("dx/dt = -k*x", {"k": 1.0, "_k": 2.0}, "_k", None, "invalid parameter name"),
    ("x' = a*x_n", {"a": 1.0, "x_n": 2.0}, "x_n", None, "collides with the map variable"),
]


@pytest.mark.parametrize("text, params, token, position, fragment", ERRORS)
def test_error_cases(text, params, token, position, fragment):
    with pytest.raises(EquationError) as info:
        parse_system(text, params)
    e = info.value
    msg = str(e)
    assert fragment in msg
    assert e.token == token and e.position == position, (e.token, e.position, msg)
    assert "\n" not in msg
    if position is not None:
        line, col = line_column(text, position)
        assert f"line {line}, column {col}" in msg and (e.line, e.column) == (line, col)
    # validate_equations reports it too, without raising
    errs = validate_equations(text, {} if params is None else params)
    assert errs and all(isinstance(x, EquationError) for x in errs)
    assert str(errs[0]) == msg


def test_unknown_name_message_lists_names():
    text = LORENZ.replace("rho - z", "rh0 - z")
    with pytest.raises(EquationError) as info:
        parse_system(text, LORENZ_P)
    e = info.value
    assert (e.token, e.position) == ("rh0", 34)
    msg = str(e)
    # the message locates the token as an editor does (line, column), checked against the text
    line, col = line_column(text, 34)
    assert msg.startswith(f"unknown name 'rh0' at line {line}, column {col}; did you mean 'rho'?")
    assert text.splitlines()[line - 1][col - 1: col + 2] == "rh0"
    assert "(variables: x, y, z; parameters: beta, rho, sigma; functions: sin, cos," in msg


def test_limits_raise_equation_error_not_recursion_error():
    long = "dx/dt = " + "+".join(["x"] * 6000)
    with pytest.raises(EquationError) as info:
        parse_system(long)
    assert info.value.position == MAX_CHARS and "too long" in str(info.value)
    # a long flat sum is fine (chains are n-ary, not nested)
    ok = parse_system("dx/dt = " + "+".join(["x"] * 3000))
    assert ok.f(torch.ones(1)).item() == 3000.0
    nested = 300
    for text in ("dx/dt = " + "(" * nested + "x" + ")" * nested,
                 "dx/dt = " + "-" * 1000 + "x",
                 "dx/dt = " + "2**" * 400 + "x",
                 "dx/dt = " + "sin(" * 300 + "x" + ")" * 300,
                 "dx/dt = " + "(" * 5000):
        with pytest.raises(EquationError) as info:
            parse_system(text)
        assert "nested too deeply" in str(info.value)
    e = validate_equations("dx/dt = " + "(" * nested + "x" + ")" * nested)[0]
    assert e.token == "(" and e.position == 8 + MAX_DEPTH
    # just inside the limit works
    depth_ok = MAX_DEPTH // 2
    sys = parse_system("dx/dt = " + "(" * depth_ok + "x" + ")" * depth_ok)
    assert sys.f(torch.ones(1)).item() == 1.0


def test_validate_collects_errors_from_several_equations():
    errs = validate_equations("dx/dt = rh0*x + (y; dy/dt = q; dz/dt = 1 +", {"rho": 1.0})
    assert [(e.token, e.position) for e in errs] == [("(", 16), ("q", 28), ("+", 41)]
    # an unclosed parenthesis continues over new lines, and is what gets reported
    errs = validate_equations("dx/dt = rh0*x + (y\ndy/dt = q\ndz/dt = 1", {"rho": 1.0})
    assert [(e.token, e.position) for e in errs] == [("(", 16)]
    errs = validate_equations("dx/dt = rh0*x + y; dy/dt = q; dz/dt = w", {"rho": 1.0})
    assert [(e.token, e.position) for e in errs] == [("rh0", 8), ("q", 27), ("w", 38)]
    # without a parameter mapping, free names are parameters
    assert validate_equations("dx/dt = rh0*x") == []
    # a broken left-hand side does not cascade into unknown-name errors
    errs = validate_equations("dx/dt = y; dy/d = x", {})
    assert [e.token for e in errs] == ["dy/d"]


def test_bad_arguments():
    with pytest.raises(EquationError, match="x0 must be 3"):
        parse_system(LORENZ, LORENZ_P, x0=(1, 2))
    with pytest.raises(EquationError, match="x0 must be 3"):
        parse_system(LORENZ, LORENZ_P, x0=(1, 2, math.nan))
    with pytest.raises(EquationError, match="dt must be"):
        parse_system(LORENZ, LORENZ_P, dt=0)
    with pytest.raises(EquationError):
        parse_system(None)  # type: ignore[arg-type]


def test_module_never_evaluates_code():
    """Static check of our own source: no eval/exec/compile/__import__/ast on user input."""
    src = Path(custom.__file__).read_text()
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                assert f.id not in {"eval", "exec", "compile", "__import__", "getattr", "setattr"}, f.id
            if isinstance(f, ast.Attribute):
                assert f.attr not in {"literal_eval", "eval", "exec"}, f.attr
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            assert "ast" not in names and "builtins" not in names


# ----------------------------------------------------------------------------- properties
@contextlib.contextmanager
def _tripwires():
    """Replace the builtins that run code by functions that fail the test."""
    saved = {k: getattr(builtins, k) for k in ("eval", "exec", "compile")}

    def trip(*a, **k):
        raise AssertionError("user text reached eval/exec/compile")
    try:
        for k in saved:
            setattr(builtins, k, trip)
        yield
    finally:
        for k, v in saved.items():
            setattr(builtins, k, v)


_WARM = parse_system(LORENZ, LORENZ_P)
SENTINEL = Path(__file__).with_name("_custom_sentinel_must_not_exist")
FRAGMENTS = [
    "x", "y", "z", "a", "b", "t", "d", "dx/dt", "dy/dt", "x'", "y'", "x_{n+1}", "x[n+1]", "=", ";",
    "\n", " ", "(", ")", "+", "-", "*", "/", "**", "^", ",", ".", "_", "__", "'", '"', "[", "]",
    "{", "}", "0", "1", "2.5", "1e-3", ".5", "1e400", "e", "pi", "sin(", "atan2(", "max(", "mod(",
    "sqrt", "import", "import os", "__class__", "__import__('os')", "os.system('x')", "lambda",
    "lambda: 0", "exec", "eval(", "getattr(", "().__class__.__bases__[0]", "#", "\\", "%", "@",
    "σ", "\t", "!", "<", "==", f"open('{SENTINEL}', 'w').write('x')", "x_n", "ln", "abs(",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=25).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_random_text_compiles_or_raises_equation_error(text):
    params = {"a": 1.0, "b": 2.0, "sigma": 10.0, "rho": 28.0, "beta": 8 / 3}
    _WARM.jac(torch.ones(1, 3, dtype=torch.float64))  # torch's own lazy imports happen here
    error = None
    with _tripwires():  # only our code runs under the tripwires
        try:
            sys = parse_system(text, params)
        except EquationError as e:
            error = e
        errs = validate_equations(text, params)
        try:
            parse_equations(text)
        except EquationError:
            pass
        if error is None:
            x = _states(3, sys.dim, 1.0)
            fx, jx = sys.f(x), sys.jac(x)
            again = parse_system(sys.equations.canonical(), params).f(x)
    assert not SENTINEL.exists()
    if error is not None:
        msg = str(error)
        assert msg and "\n" not in msg
        if error.position is not None:
            assert 0 <= error.position <= len(text)
            line, col = line_column(text, error.position)
            assert f"line {line}, column {col}" in msg
            if error.token:
                # the token really is at that position (left-hand sides without spaces)
                assert re.sub(r"\s", "", text[error.position:]).startswith(re.sub(r"\s", "", error.token))
        assert errs and str(errs[0]) == msg
    else:
        assert errs == []
        assert fx.shape == (3, sys.dim) and jx.shape == (3, sys.dim, sys.dim)
        assert sys.latex and sys.description
        torch.testing.assert_close(again, fx, equal_nan=True, rtol=0, atol=0)


@st.composite
def _mutated(draw):
    """Valid systems with a few random edits: reaches the deeper parser paths."""
    text = draw(st.sampled_from([LORENZ, HENON, "x_{n+1} = a*x_n*(1 - x_n)",
                                 "dx/dt = y\ndy/dt = -sin(x) - b*y + a*cos(z)\ndz/dt = 1"]))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 3)))
        text = text[:i] + draw(st.one_of(st.just(""), st.sampled_from(FRAGMENTS))) + text[j:]
    return text


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_systems_compile_or_raise_equation_error(text):
    test_random_text_compiles_or_raises_equation_error.hypothesis.inner_test(text)


# Random valid expression trees, rendered to text and evaluated independently with numpy.
NP1 = {"sin": np.sin, "cos": np.cos, "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh,
       "tanh": np.tanh, "exp": np.exp, "log": np.log, "ln": np.log, "sqrt": np.sqrt,
       "abs": np.abs, "atan": np.arctan, "arctan": np.arctan, "asin": np.arcsin,
       "arcsin": np.arcsin, "acos": np.arccos, "arccos": np.arccos}
NP1_LEAF = {"sign": np.sign, "heaviside": lambda v: np.heaviside(v, 0.5)}  # discontinuous
NP2 = {"min": np.minimum, "max": np.maximum}
NP2_LEAF = {"atan2": np.arctan2, "arctan2": np.arctan2, "mod": np.mod}
BINOPS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
          "**": np.power, "^": np.power}
PVALS = {"a": 1.5, "b": -0.75}
NUMBERS = st.one_of(st.sampled_from(["0", "1", "2", "3.", ".25", "1.5e0", "2.5e-1", "1E1", "10"]),
                    st.floats(0, 100, allow_nan=False).map(repr),
                    st.integers(0, 50).map(str))
LEAVES = st.one_of(NUMBERS.map(lambda s: ("num", s)),
                   st.sampled_from(["x", "y", "a", "b", "pi", "e"]).map(lambda s: ("name", s)))


def _extend(sub):
    return st.one_of(
        sub.map(lambda t: ("neg", t)),
        st.tuples(st.sampled_from(["+", "-", "*", "/"]), sub, sub).map(lambda t: ("bin",) + t),
        # exponents are leaves so a last-ulp difference cannot turn a real power into NaN
        st.tuples(st.sampled_from(["**", "^"]), sub, LEAVES).map(lambda t: ("bin",) + t),
        st.tuples(st.sampled_from(sorted(NP1)), sub).map(lambda t: ("f1",) + t),
        st.tuples(st.sampled_from(sorted(NP1_LEAF)), LEAVES).map(lambda t: ("f1",) + t),
        st.tuples(st.sampled_from(sorted(NP2)), sub, sub).map(lambda t: ("f2",) + t),
        st.tuples(st.sampled_from(sorted(NP2_LEAF)), LEAVES, LEAVES).map(lambda t: ("f2",) + t),
    )


TREES = st.recursive(LEAVES, _extend, max_leaves=12)


def _render(t, sp: str) -> str:
    k = t[0]
    if k in ("num", "name"):
        return t[1]
    if k == "neg":
        return f"(-{sp}{_render(t[1], sp)})"
    if k == "bin":
        return f"({_render(t[2], sp)}{sp}{t[1]}{sp}{_render(t[3], sp)})"
    if k == "f1":
        return f"{t[1]}({sp}{_render(t[2], sp)}{sp})"
    return f"{t[1]}({_render(t[2], sp)},{sp}{_render(t[3], sp)})"


def _ref(t, env):
    k = t[0]
    if k == "num":
        return np.full_like(env["x"], float(t[1]))
    if k == "name":
        return np.full_like(env["x"], env[t[1]])
    if k == "neg":
        return -_ref(t[1], env)
    if k == "bin":
        return BINOPS[t[1]](_ref(t[2], env), _ref(t[3], env))
    if k == "f1":
        return {**NP1, **NP1_LEAF}[t[1]](_ref(t[2], env))
    return {**NP2, **NP2_LEAF}[t[1]](_ref(t[2], env), _ref(t[3], env))


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(TREES, TREES, st.sampled_from(["", " ", "  "]))
def test_random_valid_trees_match_reference(t1, t2, sp):
    text = f"dx/dt{sp}={sp}{_render(t1, sp)}\ndy/dt = {_render(t2, sp)}"
    sys = parse_system(text, PVALS)
    X = np.array([[0.3, -1.2], [1.7, 0.4], [-0.8, -0.1], [2.0, 1.0]])
    env = {"x": X[:, 0], "y": X[:, 1], "pi": math.pi, "e": math.e, **PVALS}
    with np.errstate(all="ignore"):
        ref = np.stack([_ref(t1, env), _ref(t2, env)], -1)
    got = sys.f(torch.tensor(X)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9, equal_nan=True, err_msg=text)
    # float32 in, float32 out
    assert sys.f(torch.tensor(X, dtype=torch.float32)).dtype == torch.float32


def test_parameter_assignments_parse_and_name_the_bad_entry():
    from explorer.core.custom import parse_param_assignments
    from explorer.core.errors import ParameterError

    assert parse_param_assignments("a = 1; b=2.5\nc = -3e-2,") == {"a": 1.0, "b": 2.5, "c": -0.03}
    for text, needle in [("a 1", "'a 1'"), ("1a = 2", "'1a'"), ("a = x", "'x'"), ("a = inf", "finite")]:
        with pytest.raises(ParameterError, match=needle):
            parse_param_assignments(text)


def test_default_initial_condition_is_off_the_symmetric_diagonal():
    """Thomas' flow is symmetric under cyclic permutation: the diagonal x = y = z is
    invariant and attracts to a fixed point there. The default start must leave it and
    reach the chaotic attractor (largest Lyapunov exponent about 0.055 at b = 0.208)."""
    import torch
    from explorer.core.simulate import simulate
    thomas = parse_system("dx/dt = sin(y) - b*x\ndy/dt = sin(z) - b*y\ndz/dt = sin(x) - b*z",
                          {"b": 0.208})
    x0 = thomas.default_x0
    assert len(set(x0)) == 3 and all(v != 0 for v in x0)
    traj = simulate(thomas, steps=20_000, dt=0.05, dtype=torch.float64, compile=False)
    x = traj.x[-2000:, 0]                                              # (T, 3)
    off_diagonal = (x - x.mean(-1, keepdim=True)).abs().max()
    assert off_diagonal > 0.5, "the trajectory stayed on the invariant diagonal"
    assert x.std(0).min() > 0.3, "the trajectory settled on a fixed point"
