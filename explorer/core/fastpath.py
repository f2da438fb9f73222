"""The compiled fast path: a system's vector field in structure-of-arrays form.

Systems are written naturally on ``(..., D)`` tensors (``x.unbind(-1)`` ... ``torch.stack``).
Compiled as is, every stage of a Runge-Kutta step materialises an interleaved ``(B, D)``
buffer, which the CPU code generator can only read with stride ``D``: the loops stay
scalar. Here the field is traced once (``make_fx``) and rewritten to take and return the
``D`` component vectors (each ``(B,)``, contiguous), which compile to vectorised loops.

The rewrite only touches the input's ``unbind``/``select`` and the output ``stack``; a
field that does anything else with the whole state (or whose trace depends on the batch
size) is reported unsupported and the caller keeps the tensor form. Every conversion is
verified against the original field on a fresh random batch before use.
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Callable

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .system import DynamicalSystem

log = logging.getLogger(__name__)
aten = torch.ops.aten


#: ``torch.compile`` options for :func:`make_soa_chunk` (Inductor, C++ on the CPU).
#:
#: ``max_fusion_size``: Inductor fuses at most 64 nodes into one kernel loop by default, which
#: cuts a 32-step chunk into a loop per recorded state (about 4 steps each): every loop
#: reloads and stores the whole state and the masks, and ends in an OpenMP barrier. Raised,
#: the whole chunk is one loop over the batch and each vector of trajectories does all its
#: steps in registers. Measured on Lorenz-63 RK4 (4096 trajectories, float32, 2-core
#: AVX-512): 235 -> 320 M steps/s on one thread, and compile time no worse.
#: ``cpp.enable_floating_point_contract_flag``: ``a * b + c`` as fused multiply-adds (fewer
#: instructions, shorter dependency chains; results differ from eager by rounding only).
COMPILE_OPTIONS = {
    "max_fusion_size": 4096,
    "cpp.enable_floating_point_contract_flag": "fast",
}


class Unsupported(Exception):
    """The field cannot be split into components; use the tensor form."""


def _float_params(template: DynamicalSystem) -> list[str]:
    return [p.name for p in template.parameters if not p.integer]


def component_field(template: DynamicalSystem, dtype: torch.dtype) -> Callable:
    """``g(comps, pvals) -> comps``: the field on a list of D (B,) tensors.

    ``pvals`` are the float parameters (tensors broadcasting against (B,)) in the order of
    ``template.parameters``; structural integers are fixed by ``template``.

    Raises:
        Unsupported: when the field's trace does not have the unbind ... stack shape.
    """
    D = template.dim
    names = _float_params(template)
    fixed = {p.name: template.params[p.name] for p in template.parameters if p.integer}

    def field(x, *pv):
        return template.rhs(x, {**fixed, **dict(zip(names, pv))})

    gen = torch.Generator().manual_seed(0)
    x_ex = template.initial_state(dtype).expand(7, D) + 0.01 * torch.randn(7, D, generator=gen, dtype=dtype)
    p_ex = [torch.tensor(float(template.defaults()[n]), dtype=dtype) for n in names]
    try:
        gm = make_fx(field)(x_ex, *p_ex)
    except Exception as e:  # data-dependent control flow, unsupported ops, ...
        raise Unsupported(f"trace failed: {type(e).__name__}") from e
    g = gm.graph
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    x_node = placeholders[0]
    comps = []
    anchor = placeholders[-1]
    for i in range(D):                       # new inputs after the parameters: (x, *p, *c)
        with g.inserting_after(anchor):
            anchor = g.placeholder(f"c{i}")
        comps.append(anchor)
    for use in list(x_node.users):
        dim_ok = lambda d: d in (-1, 1)  # noqa: E731  (x is (7, D) in the trace)
        if use.target is aten.unbind.int and dim_ok(use.args[1] if len(use.args) > 1 else 0):
            for gi in list(use.users):
                if gi.target is not operator.getitem:
                    raise Unsupported("unbind result used whole")
                gi.replace_all_uses_with(comps[gi.args[1]])
                g.erase_node(gi)
            g.erase_node(use)
        elif use.target is aten.select.int and dim_ok(use.args[1]):
            use.replace_all_uses_with(comps[use.args[2] % D])
            g.erase_node(use)
        else:
            raise Unsupported(f"state used by {use.target}")
    out = next(n for n in g.nodes if n.op == "output")
    res = out.args[0]
    if not (hasattr(res, "target") and res.target is aten.stack.default
            and (res.args[1] if len(res.args) > 1 else 0) in (-1, 1) and len(res.args[0]) == D):
        raise Unsupported("field does not end in a stack over the last axis")
    out.args = (list(res.args[0]),)
    g.erase_node(res)
    g.eliminate_dead_code()
    g.lint()
    gm.recompile()

    def split(cs, pv):
        return list(gm(torch.empty(0), *pv, *cs))

    # verify on another batch size (catches shapes baked into the trace)
    x_chk = template.initial_state(dtype).expand(13, D) + 0.05 * torch.randn(13, D, generator=gen, dtype=dtype)
    try:
        got = torch.stack([c.expand(13) for c in split(list(x_chk.unbind(-1)), p_ex)], -1)
    except Exception as e:
        raise Unsupported(f"split field failed: {type(e).__name__}") from e
    want = field(x_chk, *p_ex)
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True):
        raise Unsupported("split field disagrees with the original")
    return split


def make_soa_chunk(template: DynamicalSystem, solver: str, n_steps: int, record_every: int,
                   bound: float, dtype: torch.dtype) -> Callable:
    """``n_steps`` fixed steps on components, the state after every ``record_every``-th
    step returned.

    ``chunk(comps, ok, n_ok, dt, pvals) -> (states (n_steps // record_every, D, B), comps,
    ok, n_ok)``. Returned states also make the compiler materialise the chain at those
    points: a long chain of steps with no outputs gets inlined into ever larger expressions.
    Compile with :data:`COMPILE_OPTIONS` (the whole chunk then becomes one loop). Divergence
    masking as in :func:`explorer.core.simulate._make_chunk`: with a finite ``bound`` the test
    is ``|x_i| <= bound`` alone, which is False for NaN and inf too.
    """
    if template.stochastic:
        raise Unsupported("stochastic systems (SDEs) run on eager torch")
    g = component_field(template, dtype)
    finite_bound = math.isfinite(bound)

    def step(cs, dt, pv):
        if solver == "map":
            return g(cs, pv)
        k1 = g(cs, pv)
        if solver == "euler":
            return [a + dt * b for a, b in zip(cs, k1)]
        k2 = g([a + (0.5 * dt) * b for a, b in zip(cs, k1)], pv)
        k3 = g([a + (0.5 * dt) * b for a, b in zip(cs, k2)], pv)
        k4 = g([a + dt * b for a, b in zip(cs, k3)], pv)
        return [a + (dt / 6.0) * (b1 + 2.0 * (b2 + b3) + b4)
                for a, b1, b2, b3, b4 in zip(cs, k1, k2, k3, k4)]

    def chunk(cs, ok, n_ok, dt, pv):
        outs = []
        for i in range(n_steps):
            new = step(cs, dt, pv)
            good = ok
            for c in new:
                if finite_bound:
                    good = good & (c.abs() <= bound)
                else:
                    good = good & torch.isfinite(c) & (c.abs() <= bound)
            cs = [torch.where(good, a, b) for a, b in zip(new, cs)]
            n_ok = n_ok + good.to(n_ok.dtype)
            ok = good
            if (i + 1) % record_every == 0:
                outs.extend(cs)
        # one flat stack: every recorded component is written straight into the output (a
        # stack of per-record stacks is copied twice)
        D = len(cs)
        xs = torch.stack(outs, 0).view(len(outs) // D, D, -1)       # (n_steps / R, D, B)
        return xs, cs, ok, n_ok

    return chunk
