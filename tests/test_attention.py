"""Tiny transformer: attention matrices and their spectra, QK/OV circuits, parameter budget.

Known answers from ``docs/notes/ssm_spectra.md`` §8.
"""

import pytest
import torch

from explorer.core.analysis.driven import perturbation_response
from explorer.core.errors import ParameterError, ShapeError, SizeLimitError
from explorer.models.attention import (
    TinyTransformer,
    TransformerConfig,
    attention_eigenvalues,
    budget_configs,
    build_transformer,
)


def _model(**kw):
    return TinyTransformer(TransformerConfig(**kw)).double()


def _x(T, B, d=1, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(T, B, d, generator=g, dtype=torch.float64)


def _sharpen(model, factor):
    """Scale W_Q so that attention is far from uniform (a stricter spectral test)."""
    with torch.no_grad():
        for b in model.blocks:
            b.attn.q.weight.mul_(factor)


def test_config_validation_and_round_trip():
    for bad in ({"n_heads": 9}, {"n_heads": 0}, {"layers": 5}, {"d_ff": -1},
                {"readout": "first"}, {"causal": 1}, {"positional": "rotary"}, {"d_head": 2.0}):
        with pytest.raises(ParameterError):
            TransformerConfig(**bad)
    c = TransformerConfig(n_heads=4, d_head=3, d_ff=16)
    assert c.d_model == 12
    m = build_transformer({"kind": "transformer", **c.as_dict()})
    assert m.config == c and m.kind == "transformer"
    state = torch.get_rng_state()
    a, b = TinyTransformer(c), TinyTransformer(c)
    assert torch.equal(torch.get_rng_state(), state)               # no global RNG
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("causal", [True, False])
def test_attention_rows_are_stochastic(causal):
    m = _model(n_heads=3, d_head=4, layers=2, causal=causal, d_ff=8)
    _sharpen(m, 5.0)
    P = m.attention_maps(_x(7, 2, scale=2.0))
    assert P.shape == (2, 2, 3, 7, 7)                               # (layers, B, heads, T, T)
    assert (P >= 0).all()
    assert torch.allclose(P.sum(-1), torch.ones(2, 2, 3, 7, dtype=P.dtype), atol=1e-12)
    assert causal == bool((torch.triu(P, 1) == 0).all())


def test_noncausal_spectrum_leading_one_inside_unit_disk():
    m = _model(n_heads=2, d_head=4, layers=2, causal=False)
    _sharpen(m, 4.0)
    P = m.attention_maps(_x(9, 3, scale=2.0))
    ev = attention_eigenvalues(P)
    assert ev.shape == (2, 3, 2, 9) and ev.dtype == torch.complex128
    assert torch.allclose(ev[..., 0], torch.ones_like(ev[..., 0]), atol=1e-9)
    assert (ev.abs() <= 1 + 1e-9).all()
    mods = ev.abs()
    assert (mods[..., :-1] >= mods[..., 1:]).all()                   # sorted by modulus
    # the same eigenvalues as LAPACK, as multisets
    ref = torch.linalg.eigvals(P)
    for e, r in zip(ev.reshape(-1, 9), ref.reshape(-1, 9)):
        d = (e[:, None] - r[None, :]).abs()
        assert d.min(1).values.max() < 1e-9 and d.min(0).values.max() < 1e-9


def test_causal_spectrum_is_the_diagonal():
    m = _model(n_heads=2, d_head=4, causal=True)
    _sharpen(m, 3.0)
    P = m.attention_maps(_x(6, 2, scale=2.0))
    assert torch.equal(P[..., 0, 0], torch.ones_like(P[..., 0, 0]))
    ev = attention_eigenvalues(P)
    diag = torch.diagonal(P, dim1=-2, dim2=-1)
    want = torch.sort(diag, -1, descending=True).values
    assert torch.allclose(ev.real, want, atol=0) and (ev.imag == 0).all()
    assert (ev[..., 0] == 1).all() and (ev.abs() <= 1).all()
    # LAPACK on the same triangular matrices agrees (well conditioned at T = 6)
    ref = torch.sort(torch.linalg.eigvals(P).real, -1, descending=True).values
    assert torch.allclose(ref, want, atol=1e-8)
    with pytest.raises(ShapeError):
        attention_eigenvalues(torch.zeros(3, 4))


def test_circuits_rank_at_most_d_head():
    m = _model(n_heads=4, d_head=2, layers=2)                       # d_model = 8
    c = m.circuits()
    assert c["qk"].shape == (2, 4, 8) and c["ov"].shape == (2, 4, 8)
    assert c["qk"].dtype == torch.complex128
    dh = 2
    for li, blk in enumerate(m.blocks):
        a = blk.attn
        for h in range(4):
            sl = slice(h * dh, (h + 1) * dh)
            qk = a.q.weight[sl].T @ a.k.weight[sl]                  # W_Q,h W_K,hᵀ (row conv.)
            ov = a.o.weight[:, sl] @ a.v.weight[sl]                 # W_O,h W_V,h (column conv.)
            for name, M in (("qk", qk), ("ov", ov)):
                M = M.detach()
                assert torch.linalg.matrix_rank(M) <= dh
                full = torch.linalg.eigvals(M)
                full = full[torch.argsort(-full.abs(), stable=True)]
                got = c[name][li, h]
                assert (got[dh:] == 0).all()                        # ≤ d_head nonzero
                assert (got[:dh].abs() > 1e-8).all()        # generic weights: exactly d_head
                assert (full.abs()[dh:] < 1e-10).all()
                d = (got[:dh, None] - full[None, :dh]).abs()
                assert d.min(1).values.max() < 1e-10


def test_budget_configs_keep_heads_times_width():
    cfgs = budget_configs(16, heads=(1, 2, 3, 4, 8), layers=2, d_ff=32)
    assert [c.n_heads for c in cfgs] == [1, 2, 4, 8]                # 3 does not divide 16
    assert {c.n_heads * c.d_head for c in cfgs} == {16}
    counts = set()
    for c in cfgs:
        m = TinyTransformer(c)
        D, h, dh = c.d_model, c.n_heads, c.d_head
        assert m.attention_parameter_count() == c.layers * 4 * D * h * dh == 2 * 4 * 16 ** 2
        counts.add(m.parameter_count())
    assert len(counts) == 1                                         # same total at fixed budget
    with pytest.raises(ParameterError):
        budget_configs(16, n_heads=2)
    with pytest.raises(ParameterError):
        budget_configs(7, heads=(2, 4))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "none"])
def test_forward_shape_and_causality(positional):
    m = _model(d_input=2, d_output=3, n_heads=2, d_head=3, layers=2, d_ff=8,
               positional=positional)
    x = _x(10, 2, d=2)
    y = m(x)
    assert y.shape == (10, 2, 3)
    x2 = x.clone()
    x2[6:] += 1.0
    y2 = m(x2)
    assert torch.equal(y[:6], y2[:6])                               # no leak from the future
    assert (y[6:] - y2[6:]).abs().max() > 1e-3
    r = perturbation_response(m, x, position=4)
    assert torch.all(r[:4] == 0) and (r[4:] > 0).all()


def test_noncausal_model_sees_the_future_and_readout_last():
    m = _model(causal=False, readout="last", max_len=16)
    x = _x(10, 2)
    x2 = x.clone()
    x2[6:] += 1.0
    assert (m(x)[:6] - m(x2)[:6]).abs().max() > 1e-6               # the causality test can fail
    y = m(x)
    assert y.shape == (10, 2, 1) and m.select_readout(y).shape == (1, 2, 1)
    assert _model().select_readout(y).shape == (10, 2, 1)
    with pytest.raises(SizeLimitError):
        m(_x(17, 1))
    with pytest.raises(ShapeError):
        m(_x(5, 1, d=2))
