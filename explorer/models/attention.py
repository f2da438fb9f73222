r"""A tiny transformer for sequence tasks, its attention matrices and their spectra.

Pre-norm transformer, time-major (T, B, ·):

.. math::

    x^{(0)}_t = W_e u_t + p_t,\qquad
    x \leftarrow x + \mathrm{MHA}(\mathrm{LN}(x)),\qquad
    x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))\ (d_{ff} > 0),\qquad
    y_t = W_r\,\mathrm{LN}(x_t),

.. math::

    \mathrm{MHA}(x) = \sum_{h} P_h\, x W_{V,h} W_{O,h},\qquad
    P_h = \mathrm{softmax}\!\Big(\frac{x W_{Q,h} (x W_{K,h})^\top}{\sqrt{d_{\rm head}}} + M\Big),

with ``n_heads`` heads of width ``d_head``, ``d_model = n_heads * d_head``, ``M`` the causal mask
(−∞ above the diagonal) when ``causal``, and sinusoidal positions ``p_t`` (Vaswani et al.;
``positional="learned"``: a trained (max_len, d_model) table; ``"none"``: no positions). All
four attention projections have no bias, so attention holds exactly
:math:`4\,d_{\rm model}\,h\,d_{\rm head}` parameters per layer (``4 d_model²`` here).

Spectra (``docs/notes/ssm_spectra.md`` §8):

* every attention matrix ``P`` is row-stochastic, so 1 is an eigenvalue and every
  :math:`|\lambda| \le \|P\|_\infty = 1`; causal ``P`` is lower triangular, its eigenvalues are
  its diagonal and :math:`P_{00} = 1` (:func:`attention_eigenvalues`);
* the QK circuit :math:`W_{Q,h} W_{K,h}^\top` and the OV circuit :math:`W_{V,h} W_{O,h}`
  (d_model × d_model) have rank ≤ d_head, so at most d_head nonzero eigenvalues
  (:meth:`TinyTransformer.circuits`).

References:
    A. Vaswani et al., "Attention Is All You Need", NeurIPS (2017).
    N. Elhage et al., "A Mathematical Framework for Transformer Circuits", Anthropic (2021).
    S. Bhojanapalli et al., "Low-Rank Bottleneck in Multi-head Attention Models",
    ICML (2020), arXiv:2002.07028.
    Yu, Jiang, Bao, Yu, Li, "The Effect of Attention Head Count on Transformer
    Approximation", arXiv:2510.06662.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError, SizeLimitError
from .selective import _linear  # seeded PyTorch-default initialisation, one place

__all__ = [
    "TinyTransformer",
    "TransformerConfig",
    "attention_eigenvalues",
    "budget_configs",
    "build_transformer",
]


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a :class:`TinyTransformer` (plain data; stored in checkpoints)."""

    d_input: int = 1            # input features per time step
    d_output: int = 1           # output features per time step
    n_heads: int = 2            # attention heads h (1..8)
    d_head: int = 8             # width of each head; d_model = n_heads * d_head
    layers: int = 1             # transformer blocks (1..4)
    causal: bool = True         # causal mask: position t attends to positions <= t only
    d_ff: int = 0               # 0: attention-only blocks; else a GELU MLP of this width
    max_len: int = 4096         # longest sequence accepted (size of the positional table)
    readout: str = "all"        # "all": every position is an output; "last": tasks read only
    #                             the last position (forward still returns (T, B, d_output))
    positional: str = "sinusoidal"  # "sinusoidal" (fixed), "learned" (a table) or "none"
    seed: int = 0               # initialisation seed (an explicit torch.Generator)

    def __post_init__(self):
        def bad(msg):
            raise ParameterError(f"transformer config: {msg}")

        limits = {"d_input": (1, 4096), "d_output": (1, 4096), "n_heads": (1, 8),
                  "d_head": (1, 1024), "layers": (1, 4), "d_ff": (0, 16384),
                  "max_len": (1, 65536), "seed": (0, 2**63 - 1)}
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if not isinstance(self.causal, bool):
            bad(f"causal must be True or False, got {self.causal!r}")
        if self.readout not in ("all", "last"):
            bad(f"readout must be 'all' or 'last', got {self.readout!r}")
        if self.positional not in ("sinusoidal", "learned", "none"):
            bad(f"positional must be 'sinusoidal', 'learned' or 'none', got {self.positional!r}")

    @property
    def d_model(self) -> int:
        """Width of the residual stream, ``n_heads * d_head``."""
        return self.n_heads * self.d_head

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformerConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise ParameterError(f"transformer config: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def replace(self, **changes) -> TransformerConfig:
        return type(self)(**{**self.as_dict(), **changes})


def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """Sinusoidal positions (T, d): :math:`p_{t,2i} = \\sin(t/10000^{2i/d})`,
    :math:`p_{t,2i+1} = \\cos(t/10000^{2i/d})`."""
    t = torch.arange(T, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ang = t / torch.pow(10000.0, i / d)                                   # (T, ceil(d/2))
    p = torch.zeros(T, d, dtype=torch.float64)
    p[:, 0::2] = torch.sin(ang)
    p[:, 1::2] = torch.cos(ang[:, : d // 2])
    return p.float()


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention without biases on a time-major (T, B, d_model) sequence."""

    def __init__(self, config: TransformerConfig, generator: torch.Generator):
        super().__init__()
        D, H, dh = config.d_model, config.n_heads, config.d_head
        self.n_heads, self.d_head, self.causal = H, dh, config.causal
        self.q = _linear(D, H * dh, False, generator)
        self.k = _linear(D, H * dh, False, generator)
        self.v = _linear(D, H * dh, False, generator)
        self.o = _linear(H * dh, D, False, generator)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (T, B, D) -> output (T, B, D) and attention matrices P (B, H, T, T)."""
        T, B, _ = x.shape
        H, dh = self.n_heads, self.d_head

        def heads(z):                                                     # (T,B,H*dh)->(B,H,T,dh)
            return z.reshape(T, B, H, dh).permute(1, 2, 0, 3)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)                  # (B, H, T, T)
        if self.causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        P = torch.softmax(scores, dim=-1)                                 # row-stochastic
        out = (P @ v).permute(2, 0, 1, 3).reshape(T, B, H * dh)           # (T, B, H*dh)
        return self.o(out), P


class TransformerBlock(nn.Module):
    def __init__(self, config: TransformerConfig, generator: torch.Generator):
        super().__init__()
        D = config.d_model
        self.ln1 = nn.LayerNorm(D)
        self.attn = MultiHeadAttention(config, generator)
        self.mlp = None
        if config.d_ff > 0:
            self.ln2 = nn.LayerNorm(D)
            self.mlp = nn.Sequential(_linear(D, config.d_ff, True, generator), nn.GELU(),
                                     _linear(config.d_ff, D, True, generator))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, P = self.attn(self.ln1(x))
        x = x + a                                                         # (T, B, D)
        if self.mlp is not None:
            x = x + self.mlp(self.ln2(x))
        return x, P


class TinyTransformer(nn.Module):
    """A small pre-norm transformer, (T, B, d_input) -> (T, B, d_output).

    Initialised from ``generator`` if given, else from ``torch.Generator().manual_seed(seed)``.
    With ``causal`` the output at t depends on inputs up to t only. ``readout="last"`` changes
    nothing in :meth:`forward`; :meth:`select_readout` then keeps only the last position (what
    a retrieval loss compares).
    """

    kind = "transformer"
    title = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig | None = None, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.config = c = config or TransformerConfig()
        g = generator if generator is not None else torch.Generator().manual_seed(c.seed)
        D = c.d_model
        self.embed = _linear(c.d_input, D, True, g)
        if c.positional == "learned":
            self.pos = nn.Parameter(torch.randn(c.max_len, D, generator=g) * 0.02)
        elif c.positional == "sinusoidal":
            self.register_buffer("pos", sinusoidal_positions(c.max_len, D), persistent=False)
        else:
            self.pos = None
        self.blocks = nn.ModuleList(TransformerBlock(c, g) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(D)
        self.head = _linear(D, c.d_output, True, g)

    def _check(self, x: torch.Tensor) -> None:
        c = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != c.d_input:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"transformer: expected inputs (T, B, {c.d_input}), got {shape}")
        if x.shape[0] < 1:
            raise ShapeError("transformer: the sequence is empty (T = 0)")
        if x.shape[0] > c.max_len:
            raise SizeLimitError(f"transformer: the sequence has {x.shape[0]} positions, more "
                                 f"than max_len = {c.max_len}")

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check(x)
        T = x.shape[0]
        h = self.embed(x)                                                 # (T, B, D)
        if self.pos is not None:
            h = h + self.pos[:T].to(h.dtype).unsqueeze(1)
        maps = []
        for blk in self.blocks:
            h, P = blk(h)
            maps.append(P)
        return self.head(self.ln_f(h)), maps                             # (T, B, d_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, d_input) -> (T, B, d_output)."""
        return self._run(x)[0]

    def select_readout(self, y: torch.Tensor) -> torch.Tensor:
        """The positions a loss compares: ``y`` (T, B, d) itself for ``readout="all"``, the last
        position (1, B, d) for ``"last"``."""
        return y[-1:] if self.config.readout == "last" else y

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Attention matrices :math:`P = \\mathrm{softmax}(QK^\\top/\\sqrt{d_{head}} + M)` of every
        layer and head for inputs ``x`` (T, B, d_input): (layers, B, heads, T, T), rows sum to 1
        (row t: how position t reads the positions s)."""
        with torch.no_grad():
            return torch.stack(self._run(x)[1])

    def circuits(self) -> dict[str, torch.Tensor]:
        """Eigenvalues of the QK and OV circuits of every head (Elhage et al. 2021).

        .. math:: \\mathrm{QK}_h = W_{Q,h} W_{K,h}^\\top,\\qquad \\mathrm{OV}_h = W_{V,h} W_{O,h}

        in the row convention of the module docstring (:math:`W_{Q,h}, W_{K,h}, W_{V,h}`
        d_model × d_head, :math:`W_{O,h}` d_head × d_model): the score is
        :math:`x_t^\\top \\mathrm{QK}_h x_s/\\sqrt{d_{head}}` and the head writes
        :math:`\\mathrm{OV}_h^\\top x_s` (the column-convention :math:`W_O W_V`; same
        eigenvalues). Each is d_model × d_model of rank ≤ d_head: its nonzero eigenvalues are
        those of the d_head × d_head products :math:`W_{K,h}^\\top W_{Q,h}` and
        :math:`W_{O,h} W_{V,h}` (AB and BA share them), computed in float64 and padded with
        exact zeros.

        Returns:
            dict ``{"qk", "ov"}`` of complex128 (layers, heads, d_model), each row sorted by
            modulus, largest first.
        """
        H, dh, D = self.config.n_heads, self.config.d_head, self.config.d_model
        out: dict[str, list] = {"qk": [], "ov": []}
        with torch.no_grad():
            for blk in self.blocks:
                a = blk.attn
                Wq = a.q.weight.double().reshape(H, dh, D)                # rows: W_{Q,h}ᵀ
                Wk = a.k.weight.double().reshape(H, dh, D)
                Wv = a.v.weight.double().reshape(H, dh, D)                # W_{V,h} (dh, D)
                Wo = a.o.weight.double().reshape(D, H, dh).permute(1, 0, 2)   # W_{O,h} (D, dh)
                small = {"qk": Wk @ Wq.transpose(-1, -2),                 # (H, dh, dh)
                         "ov": Wv @ Wo}
                for name, M in small.items():
                    ev = torch.linalg.eigvals(M)                          # (H, dh)
                    ev = torch.cat([ev, ev.new_zeros(H, D - dh)], -1) if D > dh else ev
                    order = torch.argsort(-ev.abs(), dim=-1, stable=True)
                    out[name].append(torch.gather(ev, -1, order))
        return {k: torch.stack(v) for k, v in out.items()}

    def attention_parameter_count(self) -> int:
        """Parameters of the attention projections, ``layers * 4 * d_model * h * d_head``."""
        return sum(p.numel() for b in self.blocks for p in b.attn.parameters())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_transformer(config: Mapping[str, Any] | TransformerConfig | None = None
                      ) -> TinyTransformer:
    """A :class:`TinyTransformer` from a config dict (the checkpoint registry's builder)."""
    if config is None or isinstance(config, TransformerConfig):
        return TinyTransformer(config)
    return TinyTransformer(TransformerConfig.from_dict(config))


def attention_eigenvalues(P: torch.Tensor) -> torch.Tensor:
    r"""Eigenvalues of attention matrices, sorted by modulus, largest first.

    For row-stochastic ``P`` the leading eigenvalue is 1 and all :math:`|\lambda| \le 1`
    (:math:`\|P\|_\infty = 1`; Perron–Frobenius). When every matrix is triangular (causal
    attention) the eigenvalues are read off the diagonal exactly, without an eigensolver
    (the non-normal triangular eigenproblem is ill-conditioned for sharp attention);
    otherwise ``torch.linalg.eigvals`` in float64.

    Args:
        P: (..., T, T) matrices.

    Returns:
        complex128 (..., T).
    """
    if not isinstance(P, torch.Tensor) or P.ndim < 2 or P.shape[-1] != P.shape[-2]:
        raise ShapeError(f"attention eigenvalues: expected square matrices (..., T, T), got "
                         f"{tuple(P.shape) if isinstance(P, torch.Tensor) else type(P).__name__}")
    P = P.detach()
    P = P.to(torch.complex128) if P.is_complex() else P.to(torch.float64)
    if bool((torch.triu(P, 1) == 0).all()) or bool((torch.tril(P, -1) == 0).all()):
        ev = torch.diagonal(P, dim1=-2, dim2=-1).to(torch.complex128)
    else:
        ev = torch.linalg.eigvals(P)
    order = torch.argsort(-ev.abs(), dim=-1, stable=True)
    return torch.gather(ev, -1, order)


def budget_configs(budget: int, heads=(1, 2, 4, 8), **kw: Any) -> list[TransformerConfig]:
    r"""Configs with the same attention budget ``n_heads * d_head = budget`` (= d_model).

    Attention costs :math:`4\,d_{\rm model}\,h\,d_{\rm head}` parameters per layer, which with
    :math:`h\,d_{\rm head} = d_{\rm model}` is :math:`4\,d_{\rm model}^2`, independent of h; every
    other parameter depends on d_model only, so all configs have the same parameter count and
    trade heads against head width (the "loss vs heads at fixed budget" sweep of
    ``docs/notes/ssm_spectra.md`` §8). Head counts that do not divide ``budget`` are skipped.

    Args:
        budget: d_model = n_heads * d_head.
        heads: head counts to try (each 1..8).
        **kw: the other :class:`TransformerConfig` fields.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ParameterError(f"budget configs: budget must be a positive integer, got {budget!r}")
    clash = sorted({"n_heads", "d_head"} & set(kw))
    if clash:
        raise ParameterError(f"budget configs: {', '.join(clash)} is set by the budget")
    configs = [TransformerConfig(n_heads=h, d_head=budget // h, **kw)
               for h in heads if isinstance(h, int) and h >= 1 and budget % h == 0]
    if not configs:
        raise ParameterError(f"budget configs: no head count in {tuple(heads)} divides {budget}")
    return configs
